//! Source locations of every key and value of a YAML document, so that a diagnostic about
//! `nodes.pick.select.budget` can point at `pipelines/x.yaml:17:7`.
//!
//! serde_yaml deserialises values but forgets where they were written; this module reads the
//! same text once more with an event parser that reports spans, and records the position of
//! each mapping key and each value by its [`YamlPath`].

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

use super::path::YamlPath;

/// A position in a file: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column (in characters), from 1.
    pub column: usize,
}

impl Location {
    fn from_span(span: &Span) -> Self {
        Self {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

/// Where each key and value of a document was written.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    keys: HashMap<YamlPath, Location>,
    values: HashMap<YamlPath, Location>,
}

enum Frame {
    Map {
        path: YamlPath,
        key: Option<String>,
    },
    Seq {
        path: YamlPath,
        next: usize,
    },
    /// A complex (non-scalar) mapping key: skipped, with its nesting depth.
    SkipKey(usize),
}

impl SourceMap {
    /// Records the locations in `text`. A syntax error stops the walk: what was read so far
    /// is kept (serde_yaml reports the syntax error itself).
    pub fn build(text: &str) -> Self {
        let mut map = SourceMap::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let here = Location::from_span(&span);
            if let Some(Frame::SkipKey(depth)) = stack.last_mut() {
                match event {
                    Event::MappingStart(..) | Event::SequenceStart(..) => *depth += 1,
                    Event::MappingEnd | Event::SequenceEnd => {
                        *depth -= 1;
                        if *depth == 0 {
                            stack.pop();
                            if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                                *key = Some("?".into());
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) = stack.last_mut()
                    {
                        map.keys.insert(path.key(&value), here);
                        *key = Some(value.into_owned());
                    } else {
                        let path = next_value_path(&mut stack);
                        map.values.insert(path, here);
                    }
                }
                Event::Alias(_) => {
                    let path = next_value_path(&mut stack);
                    map.values.insert(path, here);
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    if let Some(Frame::Map { key: None, .. }) = stack.last() {
                        stack.push(Frame::SkipKey(1));
                        continue;
                    }
                    let path = next_value_path(&mut stack);
                    map.values.insert(path.clone(), here);
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, key: None },
                        _ => Frame::Seq { path, next: 0 },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        map
    }

    /// The best location for a diagnostic about `path`: its key if it is a mapping entry,
    /// else its value, else the nearest ancestor that was written.
    pub fn locate(&self, path: &YamlPath) -> Option<Location> {
        let mut path = path.clone();
        loop {
            if let Some(found) = self.keys.get(&path).or_else(|| self.values.get(&path)) {
                return Some(*found);
            }
            if path.is_root() {
                return None;
            }
            path = path.parent();
        }
    }

    /// Whether the file wrote `path` itself (as a key or a value).
    pub fn written(&self, path: &YamlPath) -> bool {
        self.keys.contains_key(path) || self.values.contains_key(path)
    }

    /// The location of the value at `path`, if it was written.
    pub fn value(&self, path: &YamlPath) -> Option<Location> {
        self.values.get(path).copied()
    }
}

/// The path of the value that comes next in the innermost container, advancing it.
fn next_value_path(stack: &mut [Frame]) -> YamlPath {
    match stack.last_mut() {
        None => YamlPath::root(),
        Some(Frame::Map { path, key }) => path.key(&key.take().unwrap_or_default()),
        Some(Frame::Seq { path, next }) => {
            *next += 1;
            path.index(*next - 1)
        }
        Some(Frame::SkipKey(_)) => YamlPath::root(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
nodes:
  pick:
    select: {strategy: uncertainty, budget: 500}
    input: scores
  model:
    inputs:
      - labelled
      - item_vectors
";

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn keys_are_located_in_block_and_flow_style() {
        let map = SourceMap::build(DOC);
        assert_eq!(map.locate(&YamlPath::keys(&["version"])), at(1, 1));
        assert_eq!(
            map.locate(&YamlPath::keys(&["nodes", "pick", "select", "budget"])),
            at(4, 37)
        );
        assert_eq!(
            map.locate(&YamlPath::keys(&["nodes", "pick", "input"])),
            at(5, 5)
        );
    }

    #[test]
    fn sequence_items_and_values_are_located() {
        let map = SourceMap::build(DOC);
        let inputs = YamlPath::keys(&["nodes", "model", "inputs"]);
        assert_eq!(map.locate(&inputs.index(1)), at(9, 9));
        assert_eq!(
            map.value(&YamlPath::keys(&["nodes", "pick", "input"])),
            at(5, 12)
        );
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_written_ancestor() {
        let map = SourceMap::build(DOC);
        let missing = YamlPath::keys(&["nodes", "pick", "select", "per_user"]);
        assert_eq!(map.locate(&missing), at(4, 5));
    }
}
