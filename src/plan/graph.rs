//! Edge checks: every node reads what its operator needs, from nodes or sources that exist.
//!
//! A pipeline's graph has the built-in sources [`SOURCES`] and one node per operator role:
//!
//! ```text
//! items ─────> embed ──┐ (optional: text vectors for text models and strategies)
//! labelled ──> train ──┬──> score ──> select
//! pool ────────────────┘
//! test ─────────────────────> evaluate (also reads train)
//! ```

use crate::spec::diagnostic::Diagnostic;
use crate::spec::{NodeSpec, OperatorSpec};
use crate::suggest::closest;

/// Collections the protocol provides, which nodes can read.
pub const SOURCES: &[&str] = &["events", "items", "labelled", "pool", "test"];

/// The node filling each operator role (at most one each).
#[derive(Clone, Debug, Default)]
pub struct NodeRoles {
    /// The `embed` node.
    pub embed: Option<NodeSpec>,
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
///
/// `nodes_failed` says whether some node could not be typed (its problem is already
/// reported); then missing roles are not reported, since that node may fill them.
pub fn check_edges(nodes: &[NodeSpec], nodes_failed: bool, out: &mut Vec<Diagnostic>) -> NodeRoles {
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
            OperatorSpec::Embed(_) => &mut roles.embed,
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
    let mut has_unknown_input = Vec::new();
    for node in nodes {
        for (input, path) in node.inputs.iter().zip(&node.input_paths) {
            if !known.contains(&input.as_str()) {
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
    // A node whose inputs were already reported as unknown is not reported again for
    // reading the wrong thing.
    let mut expect = |node: &NodeSpec, expected: &[Option<String>]| {
        if !has_unknown_input.contains(&node.id) {
            expect_inputs(node, expected, out);
        }
    };
    let id = |node: &Option<NodeSpec>| node.as_ref().map(|n| n.id.clone());
    let (embed, train, score) = (id(&roles.embed), id(&roles.train), id(&roles.score));
    if let Some(node) = &roles.embed {
        expect(node, &[Some("items".into())]);
    }
    if let Some(node) = &roles.train {
        // The text vectors are an optional input: text models need them (the planner says
        // so), a model without text may leave them to the strategies.
        let mut wanted = vec![Some("labelled".into())];
        if embed.as_ref().is_some_and(|e| node.inputs.contains(e)) {
            wanted.push(embed.clone());
        }
        expect(node, &wanted);
    }
    if let Some(node) = &roles.score {
        expect(node, &[Some("pool".into()), train.clone()]);
    }
    if let Some(node) = &roles.select {
        expect(node, &[score]);
    }
    if let Some(node) = &roles.evaluate {
        expect(node, &[Some("test".into()), train]);
    }
    // A missing role is only reported when every node could be read: a node that failed
    // to type may well be the one that fills it.
    if !nodes_failed {
        if roles.train.is_none() {
            out.push(missing_role(
                "train",
                "model: {train: {mf: {dim: 32}}, inputs: [labelled]}",
            ));
        }
        if roles.score.is_none() {
            out.push(missing_role(
                "score",
                "scores: {score: {}, inputs: [pool, model]}",
            ));
        }
    }
    roles
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
