//! The pipeline YAML exactly as written: parsing, `--set` overrides, typed sections and
//! source locations. Nothing here resolves defaults or checks meaning across sections;
//! that is the planner's job. Every problem found is collected, so `recsift validate`
//! can report them all at once.
//!
//! A file is read section by section: each top-level key and each node is typed on its own,
//! so an error in one node does not hide an error in another.

pub mod diagnostic;
pub mod json_schema;
pub mod location;
pub mod overrides;
pub mod path;
pub mod schema;
pub mod written;

use crate::suggest::closest;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use self::diagnostic::{Diagnostic, Diagnostics, from_serde_message};
use self::location::{Location, SourceMap};
use self::overrides::Override;
use self::path::YamlPath;
use self::schema::{
    CheckpointSpec, ClusterSpec, DataSpec, EmbedSpec, EvaluateSpec, FuseSpec, OutputSpec,
    ProtocolSpec, ScoreSpec, SelectSpec, StudySpec, TrainSpec,
};

/// Top-level keys of a pipeline file.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "name",
    "seed",
    "workers",
    "cluster",
    "device",
    "data",
    "protocol",
    "nodes",
    "output",
    "checkpoint",
    "study",
];

/// Operator keys a node may have (exactly one per node).
pub const OPERATOR_KEYS: &[&str] = &["embed", "train", "fuse", "score", "select", "evaluate"];

/// A node's operator and its options, as written.
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorSpec {
    /// `embed:` item text with a sentence encoder.
    Embed(EmbedSpec),
    /// `train:` a recommender (boxed: three optional families make it the largest).
    Train(Box<TrainSpec>),
    /// `fuse:` several trained models into one.
    Fuse(FuseSpec),
    /// `score:` every pool sample.
    Score(ScoreSpec),
    /// `select:` samples to label.
    Select(SelectSpec),
    /// `evaluate:` on the test set.
    Evaluate(EvaluateSpec),
}

impl OperatorSpec {
    /// The operator key as written in YAML.
    pub fn key(&self) -> &'static str {
        match self {
            OperatorSpec::Embed(_) => "embed",
            OperatorSpec::Train(_) => "train",
            OperatorSpec::Fuse(_) => "fuse",
            OperatorSpec::Score(_) => "score",
            OperatorSpec::Select(_) => "select",
            OperatorSpec::Evaluate(_) => "evaluate",
        }
    }

    /// Types the options of operator `key` (one of [`OPERATOR_KEYS`]).
    fn typed(key: &str, value: &Value, path: &YamlPath, out: &mut Vec<Diagnostic>) -> Option<Self> {
        // An operator written without options (`score:`) takes all defaults.
        let empty = Value::Mapping(serde_yaml::Mapping::new());
        let value = if value.is_null() { &empty } else { value };
        match key {
            "embed" => typed(value, path, out).map(OperatorSpec::Embed),
            "train" => typed(value, path, out).map(|t| OperatorSpec::Train(Box::new(t))),
            "fuse" => typed(value, path, out).map(OperatorSpec::Fuse),
            "score" => typed(value, path, out).map(OperatorSpec::Score),
            "select" => typed(value, path, out).map(OperatorSpec::Select),
            "evaluate" => typed(value, path, out).map(OperatorSpec::Evaluate),
            _ => None,
        }
    }
}

/// One entry of `nodes:`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// The node's id (its key under `nodes:`).
    pub id: String,
    /// What it does.
    pub operator: OperatorSpec,
    /// The ids it reads from (`input:` or `inputs:`), in order.
    pub inputs: Vec<String>,
    /// Where each input was written (`...input` or `...inputs[n]`).
    pub input_paths: Vec<YamlPath>,
    /// Its path in the document, for diagnostics.
    pub path: YamlPath,
}

/// A pipeline file, typed section by section. A section that failed to type is absent and
/// its problems are in [`LoadedSpec::diagnostics`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineSpec {
    /// `version:` (must be 1).
    pub version: Option<u64>,
    /// `name:`.
    pub name: Option<String>,
    /// `seed:`.
    pub seed: Option<u64>,
    /// `workers:` timely worker threads (per process).
    pub workers: Option<usize>,
    /// `cluster:` processes of the run.
    pub cluster: Option<ClusterSpec>,
    /// `device:` `cpu`, `cuda` or `cuda:N`.
    pub device: Option<String>,
    /// `data:`.
    pub data: Option<DataSpec>,
    /// `protocol:`.
    pub protocol: Option<ProtocolSpec>,
    /// `nodes:` in file order.
    pub nodes: Vec<NodeSpec>,
    /// `output:`.
    pub output: Option<OutputSpec>,
    /// `checkpoint:`.
    pub checkpoint: Option<CheckpointSpec>,
    /// `study:` (several arms x seeds of this pipeline; see `crate::study`).
    pub study: Option<StudySpec>,
}

/// A pipeline file read from disk, with what is needed to report problems precisely.
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    /// The file as the user named it.
    pub file: PathBuf,
    /// The directory relative paths in the file resolve against.
    pub base_dir: PathBuf,
    /// The typed sections.
    pub spec: PipelineSpec,
    /// Problems found while typing the sections.
    pub diagnostics: Vec<Diagnostic>,
    /// Where keys and values were written.
    pub source_map: SourceMap,
    /// Paths set on the command line, with their arguments.
    pub overrides: Vec<(YamlPath, String)>,
}

impl LoadedSpec {
    /// Reads `file`, applies `set` overrides (`key.path=value`) and types every section.
    /// Fails only when nothing can be typed at all: the file cannot be read, is not YAML,
    /// is not a mapping, or an override is malformed.
    pub fn load(file: &Path, set: &[String]) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Diagnostics::whole_file(
                file,
                None,
                format!("cannot read the pipeline file: {e}"),
                "check the path; pipelines live in `pipelines/`, e.g. `recsift run pipelines/quickstart.yaml`",
            )
        })?;
        Self::from_text(file, &text, set)
    }

    /// Like [`LoadedSpec::load`], with the file's text already in hand.
    pub fn from_text(file: &Path, text: &str, set: &[String]) -> Result<Self, Diagnostics> {
        let mut document: Value = serde_yaml::from_str(text).map_err(|e| {
            let at = e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
            });
            Diagnostics::whole_file(
                file,
                at,
                format!("not valid YAML: {e}"),
                "fix the syntax at this position (indentation, a missing `:` or an unclosed bracket)",
            )
        })?;
        let source_map = SourceMap::build(text);
        let mut overrides = Vec::new();
        for argument in set {
            let applied = Override::parse(argument).and_then(|o| o.apply(&mut document));
            match applied {
                Ok(path) => overrides.push((path, argument.clone())),
                Err(message) => {
                    return Err(Diagnostics::whole_file(
                        file,
                        None,
                        message,
                        "see `recsift run --help` for the form of --set",
                    ));
                }
            }
        }
        let mut diagnostics = Vec::new();
        let spec = type_document(&document, &mut diagnostics);
        let base_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Self {
            file: file.to_path_buf(),
            base_dir,
            spec,
            diagnostics,
            source_map,
            overrides,
        })
    }

    /// Locates `diagnostics` in this file.
    pub fn locate(&self, diagnostics: Vec<Diagnostic>) -> Diagnostics {
        Diagnostics::locate(&self.file, &self.source_map, &self.overrides, diagnostics)
    }
}

/// Types every section of `document`, collecting problems into `out`.
fn type_document(document: &Value, out: &mut Vec<Diagnostic>) -> PipelineSpec {
    let mut spec = PipelineSpec::default();
    let root = YamlPath::root();
    let Some(map) = document.as_mapping() else {
        out.push(
            Diagnostic::new(
                root,
                "a pipeline file must be a mapping of keys (`version:`, `data:`, ...)",
            )
            .with_help("start from pipelines/quickstart.yaml"),
        );
        return spec;
    };
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            out.push(Diagnostic::new(
                root.clone(),
                format!("top-level key {key:?} is not a string"),
            ));
            continue;
        };
        let path = root.key(key);
        match key {
            "version" => spec.version = typed(value, &path, out),
            "name" => spec.name = typed(value, &path, out),
            "seed" => spec.seed = typed(value, &path, out),
            "workers" => spec.workers = typed(value, &path, out),
            "cluster" => spec.cluster = typed(value, &path, out),
            "device" => spec.device = typed(value, &path, out),
            "data" => spec.data = typed(value, &path, out),
            "protocol" => spec.protocol = typed(value, &path, out),
            "output" => spec.output = typed(value, &path, out),
            "checkpoint" => spec.checkpoint = typed(value, &path, out),
            // `study: null` (e.g. `--set study=null`) runs the pipeline as a single run.
            "study" if value.is_null() => spec.study = None,
            "study" => spec.study = typed(value, &path, out),
            "nodes" => spec.nodes = type_nodes(value, &path, out),
            other => out.push(unknown_key(&path, other, TOP_LEVEL_KEYS)),
        }
    }
    spec
}

/// Types `nodes:`: a mapping of node id to `{<operator>: options, input(s): ...}`.
fn type_nodes(value: &Value, path: &YamlPath, out: &mut Vec<Diagnostic>) -> Vec<NodeSpec> {
    let Some(map) = value.as_mapping() else {
        out.push(Diagnostic::new(
            path.clone(),
            "`nodes` must be a mapping of node ids to nodes",
        ));
        return Vec::new();
    };
    let mut nodes = Vec::new();
    for (id, node) in map {
        let Some(id) = id.as_str() else {
            out.push(Diagnostic::new(
                path.clone(),
                format!("node id {id:?} is not a string"),
            ));
            continue;
        };
        let node_path = path.key(id);
        if let Some(node) = type_node(id, node, &node_path, out) {
            nodes.push(node);
        }
    }
    nodes
}

fn type_node(
    id: &str,
    value: &Value,
    path: &YamlPath,
    out: &mut Vec<Diagnostic>,
) -> Option<NodeSpec> {
    let Some(map) = value.as_mapping() else {
        out.push(
            Diagnostic::new(path.clone(), format!("node `{id}` must be a mapping")).with_help(
                "write e.g. `pick: {select: {strategy: random, budget: 100}, input: scores}`",
            ),
        );
        return None;
    };
    let mut inputs = Vec::new();
    let mut input_paths = Vec::new();
    let mut operators = serde_yaml::Mapping::new();
    for (key, value) in map {
        let key_str = key.as_str().unwrap_or_default();
        match key_str {
            "input" => {
                if let Some(input) = typed::<String>(value, &path.key("input"), out) {
                    inputs.push(input);
                    input_paths.push(path.key("input"));
                }
            }
            "inputs" => {
                if let Some(list) = typed::<Vec<String>>(value, &path.key("inputs"), out) {
                    input_paths.extend((0..list.len()).map(|n| path.key("inputs").index(n)));
                    inputs.extend(list);
                }
            }
            _ => {
                operators.insert(key.clone(), value.clone());
            }
        }
    }
    if map.contains_key("input") && map.contains_key("inputs") {
        out.push(
            Diagnostic::new(
                path.key("inputs"),
                "a node has `input:` or `inputs:`, not both",
            )
            .with_help("merge them into one `inputs: [...]` list"),
        );
    }
    let keys: Vec<&str> = operators.keys().filter_map(Value::as_str).collect();
    match keys.as_slice() {
        [] => {
            out.push(
                Diagnostic::new(path.clone(), format!("node `{id}` has no operator"))
                    .with_help(format!("give it one of: {}", OPERATOR_KEYS.join(", "))),
            );
            None
        }
        [key] if !OPERATOR_KEYS.contains(key) => {
            out.push(unknown_key(
                &path.key(key),
                key,
                &[OPERATOR_KEYS, &["input", "inputs"]].concat(),
            ));
            None
        }
        [key] => {
            let operator = OperatorSpec::typed(key, &operators[*key], &path.key(key), out)?;
            Some(NodeSpec {
                id: id.to_string(),
                operator,
                inputs,
                input_paths,
                path: path.clone(),
            })
        }
        several => {
            out.push(
                Diagnostic::new(
                    path.key(several[1]),
                    format!(
                        "node `{id}` has several operators ({}); a node does one thing",
                        several.join(", ")
                    ),
                )
                .with_help("split it into one node per operator and connect them with `input:`"),
            );
            None
        }
    }
}

/// The most problems reported in one mapping before the rest are left for the next run.
const MAX_PROBLEMS_PER_SECTION: usize = 20;

/// Types `value` (at `path`) as `T`, recording a located diagnostic for each problem.
///
/// serde stops at a mapping's first problem, so after each one the offending entry is set
/// aside and the rest typed again, until it types or a problem cannot be set aside (it is
/// about the mapping as a whole, or an item of a list): every misspelt key and unknown name
/// of a node is reported at once. A required key that was set aside is not reported again
/// as missing.
fn typed<T: DeserializeOwned>(
    value: &Value,
    path: &YamlPath,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    // Copied only once an entry is set aside.
    let mut value = std::borrow::Cow::Borrowed(value);
    let mut set_aside: Vec<YamlPath> = Vec::new();
    for _ in 0..MAX_PROBLEMS_PER_SECTION {
        let error = match serde_path_to_error::deserialize::<_, T>(&*value) {
            Ok(typed) => return set_aside.is_empty().then_some(typed),
            Err(error) => error,
        };
        let at = YamlPath::from_serde(path, error.path());
        let message = error.inner().to_string();
        let missing = message.starts_with("missing field");
        if missing
            && set_aside
                .iter()
                .any(|aside| is_missing(aside, &at, &message))
        {
            return None;
        }
        let (text, help) = from_serde_message(&message);
        let mut diagnostic = Diagnostic::new(at.clone(), text);
        diagnostic.help = help;
        out.push(diagnostic);
        // A missing key is the mapping's problem: setting the mapping aside would only
        // raise its parent's complaints.
        if missing || !set_entry_aside(value.to_mut(), &at.0[path.0.len()..]) {
            return None;
        }
        set_aside.push(at);
    }
    None
}

/// Whether "missing field" `message` at `mapping` was already reported through the entry
/// `aside` set aside: the field itself, or a misspelling of it (`budgt` for `budget`).
fn is_missing(aside: &YamlPath, mapping: &YamlPath, message: &str) -> bool {
    let field = message.split('`').nth(1).unwrap_or_default();
    match aside.0.split_last() {
        Some((path::Segment::Key(key), parent)) if parent == mapping.0.as_slice() => {
            key == field || closest(key, [field]).is_some()
        }
        _ => false,
    }
}

/// Removes the mapping entry at `relative` (a path below `value`); `false` when the path
/// does not end in a key of a mapping that holds it.
fn set_entry_aside(value: &mut Value, relative: &[path::Segment]) -> bool {
    let Some((path::Segment::Key(last), parents)) = relative.split_last() else {
        return false;
    };
    let mut holder = value;
    for segment in parents {
        let next = match segment {
            path::Segment::Key(key) => holder.get_mut(key.as_str()),
            path::Segment::Index(index) => holder.get_mut(*index),
        };
        let Some(next) = next else {
            return false;
        };
        holder = next;
    }
    holder
        .as_mapping_mut()
        .and_then(|map| map.remove(last.as_str()))
        .is_some()
}

/// "unknown key" with a suggestion from `accepted`.
fn unknown_key(path: &YamlPath, key: &str, accepted: &[&str]) -> Diagnostic {
    let listed = accepted
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let help = match closest(key, accepted.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? (accepted: {listed})"),
        None => format!("accepted: {listed}"),
    };
    Diagnostic::new(path.clone(), format!("unknown key `{key}`")).with_help(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> LoadedSpec {
        LoadedSpec::from_text(Path::new("p.yaml"), text, &[]).unwrap()
    }

    #[test]
    fn every_section_error_is_collected_with_its_path() {
        let loaded = load(
            "versoin: 1\nseed: abc\nnodes:\n  pick:\n    select: {strategy: random, budgt: 5}\n  m:\n    trian: {mf: {}}\n",
        );
        let paths: Vec<String> = loaded
            .diagnostics
            .iter()
            .map(|d| d.path.to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "versoin",
                "seed",
                "nodes.pick.select.budgt",
                "nodes.m.trian"
            ]
        );
        let rendered = loaded.locate(loaded.diagnostics.clone()).to_string();
        assert!(
            rendered.contains("p.yaml:1:1: `versoin`: unknown key `versoin`"),
            "{rendered}"
        );
        assert!(rendered.contains("did you mean `version`?"), "{rendered}");
        assert!(
            rendered.contains("p.yaml:5:32: `nodes.pick.select.budgt`: unknown key `budgt`"),
            "{rendered}"
        );
        assert!(rendered.contains("did you mean `train`?"), "{rendered}");
    }

    #[test]
    fn every_problem_of_one_mapping_is_reported_and_a_set_aside_key_is_not_missing() {
        let loaded = load(
            "nodes:\n  pick:\n    select: {strategy: randm, budgt: 5, per_user: often}\n  m:\n    train: {mf: {dimm: 8, optimizer: {sgd: {lrr: 1}}, epochs: 2}}\n  s:\n    score: {uncertainty: none}\n    inputs: [pool, {m: 1}]\n  r:\n    evaluate: {metrics: [rmse, 7], relevant: x}\n",
        );
        let found: Vec<(String, String)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.path.to_string(), d.message.clone()))
            .collect();
        let expected = [
            ("nodes.pick.select.strategy", "unknown value `randm`"),
            (
                "nodes.pick.select.per_user",
                "invalid type: string \"often\", expected a boolean",
            ),
            ("nodes.pick.select.budgt", "unknown key `budgt`"),
            ("nodes.m.train.mf.dimm", "unknown key `dimm`"),
            ("nodes.m.train.mf.optimizer.sgd.lrr", "unknown key `lrr`"),
            // An item of a list cannot be set aside: its list's later problems wait.
            ("nodes.s.inputs[1]", "invalid type: map, expected a string"),
            (
                "nodes.r.evaluate.metrics[1]",
                "invalid type: integer `7`, expected a string",
            ),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_node_with_two_operators_is_rejected() {
        let loaded =
            load("nodes:\n  x:\n    score: {}\n    select: {strategy: random, budget: 1}\n");
        assert_eq!(loaded.diagnostics.len(), 1);
        assert!(
            loaded.diagnostics[0]
                .message
                .contains("several operators (score, select)")
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let err = LoadedSpec::from_text(Path::new("p.yaml"), "a: [1, 2\nb: 3\n", &[]).unwrap_err();
        let rendered = err.to_string();
        assert!(rendered.starts_with("p.yaml:"), "{rendered}");
        assert!(rendered.contains("not valid YAML"), "{rendered}");
    }

    #[test]
    fn overrides_are_attributed_to_the_command_line() {
        let loaded = LoadedSpec::from_text(
            Path::new("p.yaml"),
            "seed: 1\n",
            &["seed=notanumber".to_string()],
        )
        .unwrap();
        let rendered = loaded.locate(loaded.diagnostics.clone()).to_string();
        assert!(
            rendered.starts_with("--set seed=notanumber: `seed`: invalid type"),
            "{rendered}"
        );
    }

    #[test]
    fn an_unknown_key_made_by_an_override_is_attributed_to_it_not_to_the_file() {
        let loaded = LoadedSpec::from_text(
            Path::new("p.yaml"),
            "version: 1\nseed: 1\n",
            &["pick.select.strategy=random".to_string()],
        )
        .unwrap();
        let rendered = loaded.locate(loaded.diagnostics.clone()).to_string();
        assert!(
            rendered.starts_with("--set pick.select.strategy=random: `pick`: unknown key `pick`"),
            "{rendered}"
        );
        // A key the file wrote stays in the file, even when an override sets below it.
        let loaded = LoadedSpec::from_text(
            Path::new("p.yaml"),
            "version: 1\nsed: {a: 1}\n",
            &["sed.x=2".to_string()],
        )
        .unwrap();
        let rendered = loaded.locate(loaded.diagnostics.clone()).to_string();
        assert!(rendered.starts_with("p.yaml:2:1: `sed`"), "{rendered}");
    }
}
