//! `--set key.path=value` overrides, applied to the parsed YAML before it is typed, so that
//! layered defaults read: built-in < file < command line.

use serde_yaml::{Mapping, Value};

use super::path::{Segment, YamlPath};

/// One parsed `--set` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The argument as written (for diagnostics).
    pub argument: String,
    /// The path as written (before shorthand resolution).
    pub path: YamlPath,
    /// The value, parsed as YAML (`200` is a number, `true` a boolean, `[a, b]` a list).
    pub value: Value,
}

impl Override {
    /// Parses `key.path=value`.
    pub fn parse(argument: &str) -> Result<Self, String> {
        let Some((path, value)) = argument.split_once('=') else {
            return Err(format!(
                "`--set {argument}` has no `=`: write `--set key.path=value`, e.g. `--set nodes.pick.select.budget=200`"
            ));
        };
        let path = YamlPath::parse_dotted(path.trim()).ok_or_else(|| {
            format!(
                "`--set {argument}`: `{path}` is not a key path like `nodes.pick.select.budget`"
            )
        })?;
        let value =
            serde_yaml::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        Ok(Self {
            argument: argument.to_string(),
            path,
            value,
        })
    }

    /// Applies the override to `document`, resolving the shorthand `<operator>.<key>` (e.g.
    /// `select.budget`) to the one node that has that operator. Returns the full path set.
    pub fn apply(&self, document: &mut Value) -> Result<YamlPath, String> {
        let path = self.resolve_shorthand(document)?;
        let mut cursor = document;
        for segment in &path.0 {
            cursor = match segment {
                Segment::Key(key) => {
                    if cursor.is_null() {
                        *cursor = Value::Mapping(Mapping::new());
                    }
                    let Value::Mapping(map) = cursor else {
                        return Err(format!(
                            "`--set {}`: the value above `{key}` is not a mapping",
                            self.argument
                        ));
                    };
                    map.entry(Value::String(key.clone())).or_insert(Value::Null)
                }
                Segment::Index(index) => match cursor {
                    Value::Sequence(items) if *index < items.len() => &mut items[*index],
                    _ => {
                        return Err(format!(
                            "`--set {}`: there is no list item [{index}] to set",
                            self.argument
                        ));
                    }
                },
            };
        }
        *cursor = self.value.clone();
        Ok(path)
    }

    fn resolve_shorthand(&self, document: &Value) -> Result<YamlPath, String> {
        let Some(Segment::Key(first)) = self.path.0.first() else {
            return Ok(self.path.clone());
        };
        let top_level = document
            .as_mapping()
            .is_some_and(|map| map.contains_key(first.as_str()));
        if top_level || !super::OPERATOR_KEYS.contains(&first.as_str()) {
            return Ok(self.path.clone());
        }
        let nodes = document
            .get("nodes")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten();
        let owners: Vec<&str> = nodes
            .filter(|(_, node)| node.get(first.as_str()).is_some())
            .filter_map(|(id, _)| id.as_str())
            .collect();
        match owners.as_slice() {
            [id] => Ok(YamlPath::keys(&["nodes", id]).join(&self.path)),
            [] => Err(format!(
                "`--set {}`: no node has a `{first}` operator; name the full path `nodes.<id>.{first}...`",
                self.argument
            )),
            _ => Err(format!(
                "`--set {}`: several nodes ({}) have a `{first}` operator; name the full path `nodes.<id>.{first}...`",
                self.argument,
                owners.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_yaml::from_str(
            "seed: 1\nnodes:\n  pick:\n    select: {strategy: random, budget: 10}\n    input: scores\n",
        )
        .unwrap()
    }

    #[test]
    fn full_paths_and_shorthands_set_typed_values() {
        let mut d = doc();
        Override::parse("seed=7").unwrap().apply(&mut d).unwrap();
        let path = Override::parse("select.budget=200")
            .unwrap()
            .apply(&mut d)
            .unwrap();
        assert_eq!(path.to_string(), "nodes.pick.select.budget");
        assert_eq!(d["seed"], Value::from(7));
        assert_eq!(d["nodes"]["pick"]["select"]["budget"], Value::from(200));
    }

    #[test]
    fn missing_intermediate_mappings_are_created() {
        let mut d = doc();
        Override::parse("output.dir=results/x")
            .unwrap()
            .apply(&mut d)
            .unwrap();
        assert_eq!(d["output"]["dir"], Value::from("results/x"));
    }

    #[test]
    fn malformed_arguments_explain_the_form() {
        let err = Override::parse("seed").unwrap_err();
        assert!(err.contains("write `--set key.path=value`"), "{err}");
        let err = Override::parse("score.uncertainty=none")
            .unwrap()
            .apply(&mut doc())
            .unwrap_err();
        assert!(err.contains("no node has a `score` operator"), "{err}");
    }
}
