//! The operators' planners, which the registry holds ([`crate::registry::OperatorDef`]),
//! and [`NodePlans`], what they read and fill. [`Resolver::plan`] runs them in the
//! registry's order, the pipeline's: each plans every node of its operator from the plans
//! of the operators before it.

use crate::data::LabelKind;
use crate::plan::graph::NodeRoles;
use crate::plan::params::DeviceChoice;
use crate::plan::{DataPlan, EmbedPlan, EvaluatePlan, ModelsPlan, PlanNode, ScorePlan, SelectPlan};

use super::Resolver;

/// Plans every node of one operator, adding to `nodes`.
pub(crate) type OperatorPlanner = fn(&mut Resolver, &mut NodePlans);

/// The plans of a pipeline's nodes as the operators' planners build them, and what the
/// planners read of the rest of the file.
pub(crate) struct NodePlans {
    /// The nodes of each operator, their edges checked.
    pub roles: NodeRoles,
    /// The data sources.
    pub data: DataPlan,
    /// The pipeline's seed.
    pub seed: u64,
    /// Where models compute (`None` when `device` was refused).
    pub device: Option<DeviceChoice>,
    /// Ratings or clicks.
    pub label_kind: LabelKind,
    /// The labels held out from the models that learned fusion weights may be fitted on.
    pub held_out: HeldOut,
    /// Why the protocol needs a `select` node, when it does.
    pub select_needed: Option<String>,
    /// The `embed` node's plan.
    pub embed: Option<EmbedPlan>,
    /// The `train` and `fuse` nodes' plans.
    pub models: PlannedModels,
    /// The `score` node's plan.
    pub score: Option<ScorePlan>,
    /// The `select` node's plan (`Some(None)`: no select node, and none needed).
    pub select: Option<Option<SelectPlan>>,
    /// The `evaluate` nodes' plans.
    pub evaluate: Vec<EvaluatePlan>,
    /// Every node planned so far, sources first, with its resolved parameters.
    pub graph: Vec<PlanNode>,
}

/// The labels a protocol holds out from the models, on which a fusion may learn its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeldOut {
    /// The split's validation events.
    Validation,
    /// A replay's windows, each before the models train on it.
    Windows,
    /// None.
    Nothing,
}

/// The `train` and `fuse` nodes planned so far.
pub(crate) struct PlannedModels {
    /// Their plans.
    pub plan: ModelsPlan,
    /// Whether every one of them could be planned.
    pub complete: bool,
}

impl PlannedModels {
    /// None planned yet.
    pub fn new() -> Self {
        Self {
            plan: ModelsPlan {
                trained: Vec::new(),
                fused: Vec::new(),
            },
            complete: true,
        }
    }

    /// The models, when every `train` and `fuse` node was planned and there is one.
    pub fn finished(&self) -> Option<&ModelsPlan> {
        (self.complete && !self.plan.trained.is_empty()).then_some(&self.plan)
    }
}

/// `embed`: the sentence encoder over the item file's text.
pub(crate) fn plan_embed(cx: &mut Resolver, nodes: &mut NodePlans) {
    nodes.embed = cx.embed(&nodes.roles, &nodes.data, &mut nodes.graph);
}

/// `train`: every trained model, on one shared schedule.
pub(crate) fn plan_train(cx: &mut Resolver, nodes: &mut NodePlans) {
    let (trained, complete) = cx.trained_models(
        &nodes.roles,
        nodes.embed.as_ref(),
        nodes.seed,
        nodes.device,
        nodes.label_kind,
        &mut nodes.graph,
    );
    nodes.models.plan.trained = trained;
    nodes.models.complete &= complete;
}

/// `fuse`: every fusion of trained models.
pub(crate) fn plan_fuse(cx: &mut Resolver, nodes: &mut NodePlans) {
    let (fused, complete) = cx.fused_models(
        &nodes.roles,
        &nodes.models.plan.trained,
        nodes.held_out,
        &mut nodes.graph,
    );
    nodes.models.plan.fused = fused;
    nodes.models.complete &= complete;
}

/// `score`: the model the engine maintains every pool sample's score with.
pub(crate) fn plan_score(cx: &mut Resolver, nodes: &mut NodePlans) {
    nodes.score = cx.score(&nodes.roles, nodes.models.finished(), &mut nodes.graph);
}

/// `select`: the strategy that spends the budget, when the protocol selects.
pub(crate) fn plan_select(cx: &mut Resolver, nodes: &mut NodePlans) {
    nodes.select = cx.select(
        &nodes.roles,
        nodes.score.as_ref(),
        nodes.embed.as_ref(),
        nodes.select_needed.clone(),
        &mut nodes.graph,
    );
}

/// `evaluate`: the metrics of each evaluated model.
pub(crate) fn plan_evaluate(cx: &mut Resolver, nodes: &mut NodePlans) {
    nodes.evaluate = cx.evaluations(
        &nodes.roles,
        nodes.label_kind,
        nodes.models.finished(),
        &mut nodes.graph,
    );
}
