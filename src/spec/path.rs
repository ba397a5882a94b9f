//! Paths into a YAML document (`nodes.pick.select.budget`, `nodes.model.inputs[1]`): how
//! diagnostics say *where*, and how `--set` overrides name a value.

use std::fmt;

/// One step of a [`YamlPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path from the document root to a value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YamlPath(pub Vec<Segment>);

impl YamlPath {
    /// The document root.
    pub fn root() -> Self {
        Self::default()
    }

    /// A path of mapping keys only, e.g. `YamlPath::keys(&["nodes", "pick"])`.
    pub fn keys(keys: &[&str]) -> Self {
        Self(
            keys.iter()
                .map(|k| Segment::Key((*k).to_string()))
                .collect(),
        )
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_string()));
        next
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// This path followed by `rest`.
    pub fn join(&self, rest: &YamlPath) -> Self {
        let mut next = self.clone();
        next.0.extend(rest.0.iter().cloned());
        next
    }

    /// The path without its last segment (the root stays the root).
    pub fn parent(&self) -> Self {
        let mut next = self.clone();
        next.0.pop();
        next
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `prefix` is this path or one of its ancestors.
    pub fn starts_with(&self, prefix: &YamlPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// Parses the dotted form used by `--set` (`nodes.pick.select.budget`,
    /// `nodes.model.inputs[0]`). Returns `None` for an empty or malformed path.
    pub fn parse_dotted(text: &str) -> Option<Self> {
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(open) => (&part[..open], &part[open..]),
                None => (part, ""),
            };
            if key.is_empty() && (segments.is_empty() || rest.is_empty()) {
                return None;
            }
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_string()));
            }
            while !rest.is_empty() {
                let close = rest.find(']')?;
                let index = rest[1..close].parse().ok()?;
                segments.push(Segment::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return None;
                }
            }
        }
        Some(Self(segments))
    }

    /// Converts the path recorded by `serde_path_to_error`, relative to `base`.
    pub fn from_serde(base: &YamlPath, path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let mut out = base.clone();
        for segment in path.iter() {
            match segment {
                S::Seq { index } => out.0.push(Segment::Index(*index)),
                S::Map { key } => out.0.push(Segment::Key(key.clone())),
                S::Enum { variant } => out.0.push(Segment::Key(variant.clone())),
                S::Unknown => break,
            }
        }
        out
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document root)");
        }
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if n == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_form_round_trips() {
        for text in [
            "seed",
            "nodes.pick.select.budget",
            "nodes.model.inputs[1]",
            "a[0][2].b",
        ] {
            let path = YamlPath::parse_dotted(text).unwrap();
            assert_eq!(path.to_string(), text);
        }
    }

    #[test]
    fn malformed_dotted_paths_are_rejected() {
        for text in ["", ".a", "a..b", "a[x]", "a[1", "a[1]b"] {
            assert_eq!(YamlPath::parse_dotted(text), None, "{text}");
        }
    }
}
