//! Edge checks: every node reads what its operator needs, from nodes or sources that exist.
//!
//! A pipeline's graph has the built-in sources [`SOURCES`] and these nodes:
//!
//! ```text
//! items ─────> embed ──┐ (optional: text vectors for text models and strategies)
//! labelled ──> train ──┴─┬──────────┬──> score ──> select
//!              train ────┴─> fuse ──┤     ^
//! pool ─────────────────────────────┼─────┘
//! test ─────────────────────────────┴──> evaluate
//! ```
//!
//! One or more `train` nodes; `fuse` nodes average two or more of them; `score` and each
//! `evaluate` read one model, a `train` or a `fuse` node. A `score` node is needed only by a
//! `select` node (which reads it).

use crate::spec::diagnostic::Diagnostic;
use crate::spec::{NodeSpec, OperatorSpec};
use crate::suggest::closest;

/// Collections the protocol provides, which nodes can read.
pub const SOURCES: &[&str] = &["events", "items", "labelled", "pool", "test"];

/// The nodes of each operator.
#[derive(Clone, Debug, Default)]
pub struct NodeRoles {
    /// The `embed` node (at most one).
    pub embed: Option<NodeSpec>,
    /// The `train` nodes, in file order.
    pub train: Vec<NodeSpec>,
    /// The `fuse` nodes, in file order.
    pub fuse: Vec<NodeSpec>,
    /// The `score` node (at most one).
    pub score: Option<NodeSpec>,
    /// The `select` node (at most one).
    pub select: Option<NodeSpec>,
    /// The `evaluate` nodes, in file order.
    pub evaluate: Vec<NodeSpec>,
}

impl NodeRoles {
    /// Whether `id` names a model: a `train` or a `fuse` node.
    pub fn is_model(&self, id: &str) -> bool {
        self.train.iter().chain(&self.fuse).any(|n| n.id == id)
    }

    /// The model a `score` or `evaluate` node reads: its input that is not `source`.
    pub fn model_read_by(&self, node: &NodeSpec, source: &str) -> Option<String> {
        node.inputs
            .iter()
            .find(|i| i.as_str() != source && self.is_model(i))
            .cloned()
    }
}

/// Assigns nodes to roles and checks their inputs, pushing every problem to `out`.
///
/// `failed` lists the ids of the nodes that could not be typed (their problems are already
/// reported; `Some` of an empty list when the `nodes` section as a whole could not be read):
/// then missing roles are not reported, since such a node may fill them, and an input
/// naming a failed node is not unknown.
pub fn check_edges(
    nodes: &[NodeSpec],
    failed: Option<&[String]>,
    out: &mut Vec<Diagnostic>,
) -> NodeRoles {
    let nodes_failed = failed.is_some();
    let mut roles = NodeRoles::default();
    for node in nodes {
        if SOURCES.contains(&node.id.as_str()) {
            out.push(
                Diagnostic::new(
                    node.path.clone(),
                    format!("node id `{}` is the name of a built-in source", node.id),
                )
                .with_help(format!(
                    "rename the node; the sources are {}",
                    SOURCES.join(", ")
                )),
            );
        }
        let single = match node.operator {
            OperatorSpec::Embed(_) => &mut roles.embed,
            OperatorSpec::Score(_) => &mut roles.score,
            OperatorSpec::Select(_) => &mut roles.select,
            OperatorSpec::Train(_) => {
                roles.train.push(node.clone());
                continue;
            }
            OperatorSpec::Fuse(_) => {
                roles.fuse.push(node.clone());
                continue;
            }
            OperatorSpec::Evaluate(_) => {
                roles.evaluate.push(node.clone());
                continue;
            }
        };
        match single {
            Some(first) => out.push(
                Diagnostic::new(
                    node.path.key(node.operator.key()),
                    format!(
                        "a second `{}` node (`{}` already has one)",
                        node.operator.key(),
                        first.id
                    ),
                )
                .with_help(format!(
                    "a pipeline has one `{}` node; remove one",
                    node.operator.key()
                )),
            ),
            None => *single = Some(node.clone()),
        }
    }
    let known: Vec<&str> = SOURCES
        .iter()
        .copied()
        .chain(nodes.iter().map(|n| n.id.as_str()))
        .collect();
    let failed = failed.unwrap_or_default();
    let mut has_unknown_input = Vec::new();
    for node in nodes {
        for (input, path) in node.inputs.iter().zip(&node.input_paths) {
            if failed.contains(input) {
                // What it reads is unknown: its inputs cannot be checked.
                has_unknown_input.push(node.id.clone());
            } else if !known.contains(&input.as_str()) {
                let help = match closest(input, known.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("inputs are node ids or sources: {}", known.join(", ")),
                };
                out.push(
                    Diagnostic::new(path.clone(), format!("unknown input `{input}`"))
                        .with_help(help),
                );
                has_unknown_input.push(node.id.clone());
            }
        }
    }
    // A node whose inputs were already reported as unknown, or that reads a node that could
    // not be typed, is not reported again for reading the wrong thing.
    let mut expect = |node: &NodeSpec, expected: &[Option<String>]| {
        if !has_unknown_input.contains(&node.id) {
            expect_inputs(node, expected, out);
        }
    };
    let embed = roles.embed.as_ref().map(|n| n.id.clone());
    let score = roles.score.as_ref().map(|n| n.id.clone());
    if let Some(node) = &roles.embed {
        expect(node, &[Some("items".into())]);
    }
    for node in &roles.train {
        // The text vectors are an optional input: text models need them (the planner says
        // so), a model without text may leave them to the strategies.
        let mut wanted = vec![Some("labelled".into())];
        if embed.as_ref().is_some_and(|e| node.inputs.contains(e)) {
            wanted.push(embed.clone());
        }
        expect(node, &wanted);
    }
    // A model reader names its model among its inputs: the input besides its source that is
    // a model, or, when none is, the first train node (so the message can show a fix).
    let model_of = |node: &NodeSpec, source: &str| {
        roles
            .model_read_by(node, source)
            .or_else(|| roles.train.first().map(|t| t.id.clone()))
    };
    if let Some(node) = &roles.score {
        expect(node, &[Some("pool".into()), model_of(node, "pool")]);
    }
    if let Some(node) = &roles.select {
        expect(node, &[score]);
    }
    for node in &roles.evaluate {
        expect(node, &[Some("test".into()), model_of(node, "test")]);
    }
    for node in &roles.fuse {
        if !has_unknown_input.contains(&node.id) {
            check_fuse_inputs(node, &roles, out);
        }
    }
    // A missing role is only reported when every node could be read: a node that failed
    // to type may well be the one that fills it.
    if !nodes_failed {
        if roles.train.is_empty() {
            out.push(missing_role(
                "train",
                "add one, e.g. `model: {train: {mf: {dim: 32}}, inputs: [labelled]}`".into(),
            ));
        }
        if let (None, Some(select)) = (&roles.score, &roles.select) {
            out.push(missing_role(
                "score",
                format!(
                    "`{}` ranks the pool by a score node's scores; add one, e.g. \
                     `scores: {{score: {{}}, inputs: [pool, model]}}`",
                    select.id
                ),
            ));
        }
    }
    roles
}

/// A `fuse` node reads two or more distinct `train` nodes.
fn check_fuse_inputs(node: &NodeSpec, roles: &NodeRoles, out: &mut Vec<Diagnostic>) {
    let trained: Vec<&str> = roles.train.iter().map(|t| t.id.as_str()).collect();
    for (input, path) in node.inputs.iter().zip(&node.input_paths) {
        if !trained.contains(&input.as_str()) {
            out.push(
                Diagnostic::new(
                    path.clone(),
                    format!("a `fuse` node reads `train` nodes; `{input}` is not one"),
                )
                .with_help(format!("the train nodes are {}", trained.join(", "))),
            );
        }
    }
    let mut distinct = node.inputs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 || distinct.len() != node.inputs.len() {
        out.push(
            Diagnostic::new(
                node.path.clone(),
                format!(
                    "`{}` fuses {}; a `fuse` node reads two or more different train nodes",
                    node.id,
                    if node.inputs.is_empty() {
                        "nothing".to_string()
                    } else {
                        node.inputs.join(", ")
                    }
                ),
            )
            .with_help("write e.g. `inputs: [mf_model, text_model]`"),
        );
    }
}

/// Checks that `node` reads exactly `expected` (in any order); `None` entries are roles
/// that are missing and reported elsewhere.
fn expect_inputs(node: &NodeSpec, expected: &[Option<String>], out: &mut Vec<Diagnostic>) {
    let expected: Vec<&str> = expected.iter().flatten().map(String::as_str).collect();
    let mut actual: Vec<&str> = node.inputs.iter().map(String::as_str).collect();
    let mut wanted = expected.clone();
    actual.sort_unstable();
    wanted.sort_unstable();
    if actual != wanted {
        let op = node.operator.key();
        let form = if expected.len() == 1 {
            format!("input: {}", expected[0])
        } else {
            format!("inputs: [{}]", expected.join(", "))
        };
        let found = if node.inputs.is_empty() {
            "nothing".to_string()
        } else {
            node.inputs.join(", ")
        };
        out.push(
            Diagnostic::new(
                node.path.clone(),
                format!(
                    "a `{op}` node reads {}; `{}` reads {found}",
                    expected.join(" and "),
                    node.id
                ),
            )
            .with_help(format!("write `{form}`")),
        );
    }
}

fn missing_role(op: &str, help: String) -> Diagnostic {
    Diagnostic::new(
        crate::spec::path::YamlPath::keys(&["nodes"]),
        format!("no `{op}` node"),
    )
    .with_help(help)
}
