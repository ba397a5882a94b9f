//! Edge checks: every node reads what its operator needs, from nodes or sources that exist.
//!
//! A pipeline's graph has the built-in sources [`SOURCES`] and one node per operator role:
//!
//! ```text
//! labelled ──> train ──┬──> score ──> select
//! pool ────────────────┘
//! test ─────────────────────> evaluate (also reads train)
//! ```

use crate::spec::diagnostic::{Diagnostic, did_you_mean};
use crate::spec::{NodeSpec, OperatorSpec};

/// Collections the protocol provides, which nodes can read.
pub const SOURCES: &[&str] = &["events", "items", "labelled", "pool", "test"];

/// The node filling each operator role (at most one each).
#[derive(Clone, Debug, Default)]
pub struct NodeRoles {
    /// The `train` node.
    pub train: Option<NodeSpec>,
    /// The `score` node.
    pub score: Option<NodeSpec>,
    /// The `select` node.
    pub select: Option<NodeSpec>,
    /// The `evaluate` node.
    pub evaluate: Option<NodeSpec>,
}

/// Assigns nodes to roles and checks their inputs, pushing every problem to `out`.
pub fn check_edges(nodes: &[NodeSpec], out: &mut Vec<Diagnostic>) -> NodeRoles {
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
        let slot = match node.operator {
            OperatorSpec::Train(_) => &mut roles.train,
            OperatorSpec::Score(_) => &mut roles.score,
            OperatorSpec::Select(_) => &mut roles.select,
            OperatorSpec::Evaluate(_) => &mut roles.evaluate,
        };
        match slot {
            Some(first) => out.push(
                Diagnostic::new(
                    node.path.key(node.operator.key()),
                    format!(
                        "a second `{}` node (`{}` already has one)",
                        node.operator.key(),
                        first.id
                    ),
                )
                .with_help("a pipeline has one node per operator; remove one"),
            ),
            None => *slot = Some(node.clone()),
        }
    }
    let known: Vec<&str> = SOURCES
        .iter()
        .copied()
        .chain(nodes.iter().map(|n| n.id.as_str()))
        .collect();
    for node in nodes {
        for (n, input) in node.inputs.iter().enumerate() {
            if !known.contains(&input.as_str()) {
                let help = match did_you_mean(input, known.iter().copied()) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("inputs are node ids or sources: {}", known.join(", ")),
                };
                out.push(
                    Diagnostic::new(input_path(node, n), format!("unknown input `{input}`"))
                        .with_help(help),
                );
            }
        }
    }
    let id = |node: &Option<NodeSpec>| node.as_ref().map(|n| n.id.clone());
    let (train, score) = (id(&roles.train), id(&roles.score));
    match &roles.train {
        Some(node) => expect_inputs(node, &[Some("labelled".into())], out),
        None => out.push(missing_role(
            "train",
            "model: {train: {mf: {dim: 64}}, inputs: [labelled]}",
        )),
    }
    match &roles.score {
        Some(node) => expect_inputs(node, &[Some("pool".into()), train.clone()], out),
        None => out.push(missing_role(
            "score",
            "scores: {score: {}, inputs: [pool, model]}",
        )),
    }
    if let Some(node) = &roles.select {
        expect_inputs(node, &[score], out);
    }
    if let Some(node) = &roles.evaluate {
        expect_inputs(node, &[Some("test".into()), train], out);
    }
    roles
}

fn input_path(node: &NodeSpec, n: usize) -> crate::spec::path::YamlPath {
    if node.inputs.len() == 1 {
        node.path.key("input")
    } else {
        node.path.key("inputs").index(n)
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

fn missing_role(op: &str, example: &str) -> Diagnostic {
    Diagnostic::new(
        crate::spec::path::YamlPath::keys(&["nodes"]),
        format!("no `{op}` node"),
    )
    .with_help(format!("add one, e.g. `{example}`"))
}
