//! The models: `train` and `fuse` nodes, their options, and early stopping.

use crate::data::LabelKind;
use crate::metrics::Metric;
use crate::registry::{self, FAMILIES, defaults};
use crate::scoring::Loss;
use crate::spec::path::YamlPath;
use crate::spec::schema::{
    EarlyStoppingSpec, FuseSpec, LearnFrom, LoraSpec, OptimizerSpec, RefitChoice, TrainOptions,
    TuneSpec,
};
use crate::spec::{NodeSpec, OperatorSpec};

use crate::plan::graph::NodeRoles;
use crate::plan::params::{
    DeviceChoice, EarlyStopping, EncoderTuning, LoraAdapters, OptimizerParams, RefitPolicy,
    TrainParams, UncertaintyParams,
};
use crate::plan::{
    EmbedPlan, EvaluatePlan, FusePlan, FuseWeights, ModelsPlan, PlanNode, ProtocolPlan,
    TrainedModel,
};

use super::Resolver;
use super::families::{FamilyInput, option_key};
use super::nodes::metric_help;
use super::operators::HeldOut;
use super::protocol::WrittenProtocol;

impl Resolver {
    /// Every `train` node, checked to share one training schedule (the protocols train every
    /// model on the same samples at the same rounds); the flag says whether all of them
    /// could be planned.
    pub(super) fn trained_models(
        &mut self,
        roles: &NodeRoles,
        embed: Option<&EmbedPlan>,
        seed: u64,
        device: Option<DeviceChoice>,
        label_kind: LabelKind,
        graph: &mut Vec<PlanNode>,
    ) -> (Vec<TrainedModel>, bool) {
        let mut trained = Vec::new();
        let mut complete = true;
        for node in &roles.train {
            match self.train(node, embed, seed, device, label_kind, graph) {
                Some(params) => trained.push(TrainedModel {
                    node: node.id.clone(),
                    params,
                }),
                None => complete = false,
            }
        }
        if let [first, rest @ ..] = trained.as_slice() {
            for other in rest {
                self.check_shared_schedule(first, other, roles);
            }
        }
        (trained, complete)
    }

    /// Every `fuse` node over the models `trained`: fusions of models with one loss, learned
    /// weights only on labels `held_out` from the parts; the flag says whether all of them
    /// could be planned.
    pub(super) fn fused_models(
        &mut self,
        roles: &NodeRoles,
        trained: &[TrainedModel],
        held_out: HeldOut,
        graph: &mut Vec<PlanNode>,
    ) -> (Vec<FusePlan>, bool) {
        let mut fused = Vec::new();
        let mut complete = true;
        for node in &roles.fuse {
            match self.fuse(node, trained, held_out, graph) {
                Some(plan) => fused.push(plan),
                None => complete = false,
            }
        }
        (fused, complete)
    }

    /// Reports where `other` trains on another schedule than `first`: the protocols train
    /// every model on the same samples at the same rounds.
    fn check_shared_schedule(
        &mut self,
        first: &TrainedModel,
        other: &TrainedModel,
        roles: &NodeRoles,
    ) {
        let Some(node) = roles.train.iter().find(|n| n.id == other.node) else {
            return;
        };
        let (a, b) = (&first.params, &other.params);
        let differing = [
            ("epochs", a.epochs.to_string(), b.epochs.to_string()),
            (
                "epochs_per_round",
                a.epochs_per_round.to_string(),
                b.epochs_per_round.to_string(),
            ),
            ("refit", a.refit.to_string(), b.refit.to_string()),
        ];
        for (key, wanted, found) in differing {
            if wanted != found {
                self.error(
                    node.path.key("train").key(b.model.name()).key(key),
                    format!(
                        "`{}` trains with `{key}: {found}`, `{}` with `{key}: {wanted}`",
                        other.node, first.node
                    ),
                    format!(
                        "the train nodes of a pipeline share one schedule (every round trains each on the same labels); write `{key}: {wanted}` in both"
                    ),
                );
            }
        }
    }

    /// One `fuse` node over the trained models `trained`.
    fn fuse(
        &mut self,
        node: &NodeSpec,
        trained: &[TrainedModel],
        held_out: HeldOut,
        graph: &mut Vec<PlanNode>,
    ) -> Option<FusePlan> {
        let OperatorSpec::Fuse(FuseSpec { weights, learn }) = &node.operator else {
            return None;
        };
        let path = node.path.key("fuse");
        let parts: Vec<&TrainedModel> = node
            .inputs
            .iter()
            .filter_map(|input| trained.iter().find(|t| &t.node == input))
            .collect();
        if parts.len() != node.inputs.len() || parts.len() < 2 {
            // The edge check reported it.
            return None;
        }
        let losses: Vec<Loss> = parts.iter().map(|p| p.params.loss).collect();
        if losses.iter().any(|&l| l != losses[0]) {
            let each: Vec<String> = parts
                .iter()
                .map(|p| format!("`{}` {}", p.node, p.params.loss))
                .collect();
            self.error(
                node.path.clone(),
                format!(
                    "a fusion averages predictions of one kind, but its parts train with different losses: {}",
                    each.join(", ")
                ),
                "give the fused train nodes the same `loss:`",
            );
        }
        let fused = match (weights, learn) {
            (Some(_), Some(_)) => {
                self.error(
                    path.clone(),
                    "`weights` and `learn` both set the fusion's weights",
                    "keep one: `weights: [0.5, 0.5]` or `learn: validation`",
                );
                None
            }
            (None, Some(LearnFrom::Validation)) => {
                match held_out {
                    HeldOut::Validation => {}
                    HeldOut::Windows => self.error(
                        path.key("learn"),
                        "`learn: validation` fits the weights on validation events, but a replay has none",
                        "write `learn: prequential`: each window's revealed labels, before the parts train on them",
                    ),
                    HeldOut::Nothing => self.error(
                        path.key("learn"),
                        "`learn: validation` fits the weights on validation events, but the split has none",
                        "add them, e.g. `split: {random: {test: 0.1, validation: 0.1}}`, or give `weights: [0.5, 0.5]`",
                    ),
                }
                self.params
                    .push(("learn".into(), "validation".into(), true));
                Some(FuseWeights::LearnedOnValidation)
            }
            (None, Some(LearnFrom::Prequential)) => {
                if held_out != HeldOut::Windows {
                    self.error(
                        path.key("learn"),
                        "`learn: prequential` fits the weights on each replay window's labels before the parts train on them, but this protocol is not a replay",
                        "write `learn: validation` (with a split that sets validation events apart), or give `weights: [0.5, 0.5]`",
                    );
                }
                self.params
                    .push(("learn".into(), "prequential".into(), true));
                Some(FuseWeights::LearnedPrequentially)
            }
            (written, None) => {
                let weights = written.clone().unwrap_or_else(|| vec![1.0; parts.len()]);
                let total: f64 = weights.iter().sum();
                if weights.len() != parts.len() {
                    self.error(
                        path.key("weights"),
                        format!("{} weights for {} inputs", weights.len(), parts.len()),
                        "give one weight per input, in the order of `inputs:`",
                    );
                    None
                } else if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
                    || total.is_nan()
                    || total <= 0.0
                {
                    self.error(
                        path.key("weights"),
                        "fusion weights must be finite, non-negative and not all 0",
                        "use e.g. `weights: [0.7, 0.3]`",
                    );
                    None
                } else {
                    let scaled: Vec<f32> = weights.iter().map(|w| (w / total) as f32).collect();
                    let shown: Vec<String> = scaled.iter().map(|w| format!("{w}")).collect();
                    self.params.push((
                        "weights".into(),
                        format!("[{}]", shown.join(", ")),
                        written.is_some(),
                    ));
                    Some(FuseWeights::Given(scaled))
                }
            }
        };
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "fuse",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(FusePlan {
            node: node.id.clone(),
            parts: node.inputs.clone(),
            weights: fused?,
        })
    }

    /// The loss of model `name` (a trained model, or a fusion: its parts' loss).
    pub(super) fn model_loss(models: &ModelsPlan, name: &str) -> Option<Loss> {
        let part = match models.fused(name) {
            Some(fusion) => fusion.parts.first()?,
            None => name,
        };
        models.trained(part).map(|t| t.params.loss)
    }

    fn train(
        &mut self,
        node: &NodeSpec,
        embed: Option<&EmbedPlan>,
        seed: u64,
        device: Option<DeviceChoice>,
        label_kind: LabelKind,
        graph: &mut Vec<PlanNode>,
    ) -> Option<TrainParams> {
        let OperatorSpec::Train(spec) = &node.operator else {
            return None;
        };
        let path = node.path.key("train");
        let written: Vec<(&str, bool)> = FAMILIES
            .iter()
            .map(|f| (f.key, spec.family(f.key).is_some()))
            .collect();
        let family = registry::family(self.one_of(&path, "`train`", &written)?)?;
        let family_key = family.key;
        let options = spec.family(family_key)?.clone();
        let path = path.key(family_key);
        let reads_text = embed.is_some_and(|e| node.inputs.contains(&e.node));
        if family.reads_text && !reads_text && !self.failed_node_may_be("embed") {
            let help = match embed {
                Some(e) => format!("add `{}` to the inputs: `inputs: [labelled, {}]`", e.node, e.node),
                None => "add an embed node, e.g. `item_text: {embed: {}, input: items}`, and list it in this node's inputs: `inputs: [labelled, item_text]`".to_string(),
            };
            self.error(
                node.path.clone(),
                format!(
                    "`{family_key}` reads item text vectors, but `{}` reads no `embed` node",
                    node.id
                ),
                help,
            );
        }
        let foreign = family_options_written(&options)
            .into_iter()
            .filter(|(name, written)| *written && !registry::takes_train_option(name, family_key));
        for (name, _) in foreign {
            self.error(
                path.key(name),
                format!(
                    "`{name}` is an option of {}, not of `{family_key}`",
                    registry::families_taking(name, "and")
                ),
                format!(
                    "remove it, or train {}",
                    registry::families_taking(name, "or")
                ),
            );
        }
        let key = |name: &str| option_key(family_key, name);
        let tune = options
            .tune
            .as_ref()
            .filter(|_| registry::takes_train_option("tune", family_key))
            .map(|tune| self.tuning(tune, &path.key("tune"), &key));
        let dim = self.value(&key("dim"), options.dim, defaults::DIM);
        let init_std = self.value(&key("init_std"), options.init_std, defaults::INIT_STD);
        let members = self.value(&key("members"), options.members, defaults::MEMBERS);
        let epochs = self.value(&key("epochs"), options.epochs, defaults::EPOCHS);
        let epochs_per_round = self.value(
            &key("epochs_per_round"),
            options.epochs_per_round,
            defaults::EPOCHS_PER_ROUND,
        );
        let batch_size = self.value(&key("batch_size"), options.batch_size, defaults::BATCH_SIZE);
        let refit_choice = self.value(&key("refit"), options.refit, defaults::REFIT);
        let planned = (family.plan)(
            self,
            &FamilyInput {
                family: family_key,
                options: &options,
                path: &path,
                dim,
                init_std,
                tune,
            },
        );
        let model = planned.kind;
        let uncertainty = planned
            .uncertainty
            .unwrap_or(UncertaintyParams::Ensemble { members });
        for (name, value) in [
            ("dim", dim),
            ("members", members),
            ("batch_size", batch_size),
        ] {
            if value == 0 {
                self.error(
                    path.key(name),
                    format!("`{name}` must be at least 1"),
                    format!("set `{name}` to a positive integer"),
                );
            }
        }
        if !(init_std.is_finite() && init_std >= 0.0) {
            self.error(
                path.key("init_std"),
                format!("`init_std` {init_std} must be a finite number >= 0"),
                "use e.g. `init_std: 0.1`",
            );
        }
        let refit = match refit_choice {
            RefitChoice::NewLabels => RefitPolicy::NewLabels,
            RefitChoice::AllLabels => RefitPolicy::AllLabels,
            RefitChoice::Rehearsal => RefitPolicy::Rehearsal {
                ratio: self.value(&key("rehearsal"), options.rehearsal, defaults::REHEARSAL),
            },
        };
        if options.rehearsal.is_some() && !matches!(refit, RefitPolicy::Rehearsal { .. }) {
            self.error(
                path.key("rehearsal"),
                "`rehearsal` sets how many earlier labels `refit: rehearsal` mixes in",
                "add `refit: rehearsal`, or remove `rehearsal`",
            );
        }
        let loss = self.value(&key("loss"), options.loss, Loss::default_for(label_kind));
        let optimizer = self.optimizer(options.optimizer.as_ref(), &path.key("optimizer"));
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "train",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(TrainParams {
            model,
            uncertainty,
            loss,
            optimizer: optimizer?,
            epochs,
            epochs_per_round,
            refit,
            batch_size,
            device: device?,
            seed,
        })
    }

    fn optimizer(
        &mut self,
        written: Option<&OptimizerSpec>,
        path: &YamlPath,
    ) -> Option<OptimizerParams> {
        let default = OptimizerSpec {
            sgd: Some(Default::default()),
            adam: None,
        };
        let spec = written.unwrap_or(&default);
        let chosen = self.one_of(
            path,
            "`optimizer`",
            &[("sgd", spec.sgd.is_some()), ("adam", spec.adam.is_some())],
        )?;
        let params = if chosen == "sgd" {
            let sgd = spec.sgd.clone()?;
            OptimizerParams::Sgd {
                lr: self.value("sgd.lr", sgd.lr, defaults::SGD_LR),
                weight_decay: self.value(
                    "sgd.weight_decay",
                    sgd.weight_decay,
                    defaults::SGD_WEIGHT_DECAY,
                ),
            }
        } else {
            let adam = spec.adam.clone()?;
            OptimizerParams::Adam {
                lr: self.value("adam.lr", adam.lr, defaults::ADAM_LR),
                beta1: self.value("adam.beta1", adam.beta1, defaults::ADAM_BETA1),
                beta2: self.value("adam.beta2", adam.beta2, defaults::ADAM_BETA2),
                eps: self.value("adam.eps", adam.eps, defaults::ADAM_EPS),
                weight_decay: self.value(
                    "adam.weight_decay",
                    adam.weight_decay,
                    defaults::ADAM_WEIGHT_DECAY,
                ),
            }
        };
        let (lr, weight_decay) = match params {
            OptimizerParams::Sgd { lr, weight_decay }
            | OptimizerParams::Adam {
                lr, weight_decay, ..
            } => (lr, weight_decay),
        };
        if !(lr.is_finite() && lr > 0.0) {
            self.error(
                path.key(chosen).key("lr"),
                format!("learning rate {lr} must be a finite number > 0"),
                "use e.g. `lr: 0.01`",
            );
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            self.error(
                path.key(chosen).key("weight_decay"),
                format!("weight decay {weight_decay} must be a finite number >= 0"),
                "use e.g. `weight_decay: 0.02`",
            );
        }
        Some(params)
    }

    /// The encoder tuning `tune` (written at `path`), checked.
    fn tuning(
        &mut self,
        tune: &TuneSpec,
        path: &YamlPath,
        key: &dyn Fn(&str) -> String,
    ) -> EncoderTuning {
        let layers = self.value(&key("tune.layers"), tune.layers, defaults::TUNE_LAYERS);
        let default_lr = match tune.lora {
            Some(_) => defaults::LORA_LR,
            None => defaults::TUNE_LR,
        };
        let lr = self.value(&key("tune.lr"), tune.lr, default_lr);
        let items_per_step = self.value(
            &key("tune.items_per_step"),
            tune.items_per_step,
            defaults::TUNE_ITEMS_PER_STEP,
        );
        for (name, value) in [("layers", layers), ("items_per_step", items_per_step)] {
            if value == 0 {
                self.error(
                    path.key(name),
                    format!("`tune.{name}` must be at least 1"),
                    format!("set `{name}` to a positive integer, or remove `tune` to keep the encoder frozen"),
                );
            }
        }
        if !(lr.is_finite() && lr > 0.0) {
            self.error(
                path.key("lr"),
                format!("`tune.lr` {lr} must be a finite number > 0"),
                "use e.g. `lr: 0.0001`",
            );
        }
        let lora = tune
            .lora
            .as_ref()
            .map(|lora| self.lora(lora, &path.key("lora"), key));
        EncoderTuning {
            layers,
            lora,
            lr,
            items_per_step,
        }
    }

    /// The LoRA adapters `lora` (written at `path`), checked. A rank beyond the encoder's
    /// width is refused when the encoder is read.
    fn lora(
        &mut self,
        lora: &LoraSpec,
        path: &YamlPath,
        key: &dyn Fn(&str) -> String,
    ) -> LoraAdapters {
        let rank = self.value(&key("tune.lora.rank"), lora.rank, defaults::LORA_RANK);
        let alpha = self.value(&key("tune.lora.alpha"), lora.alpha, defaults::LORA_ALPHA);
        if rank == 0 {
            self.error(
                path.key("rank"),
                "`tune.lora.rank` must be at least 1",
                "use e.g. `rank: 8`, or remove `lora` to train the layers' own weights",
            );
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            self.error(
                path.key("alpha"),
                format!("`tune.lora.alpha` {alpha} must be a finite number > 0"),
                "use e.g. `alpha: 8` (the update is scaled by alpha / rank)",
            );
        }
        LoraAdapters { rank, alpha }
    }

    /// A replay cannot tune the encoder: its items arrive window by window, and the tuned
    /// layers would have to run the frozen ones over each window's new texts.
    pub(super) fn check_tuning_protocol(
        &mut self,
        roles: &NodeRoles,
        protocol: Option<&WrittenProtocol>,
        models: Option<&ModelsPlan>,
    ) {
        let (Some(WrittenProtocol::Replay(_)), Some(models)) = (protocol, models) else {
            return;
        };
        for (trained, node) in models.trained.iter().zip(&roles.train) {
            let model = &trained.params.model;
            if model.tuning().is_some() {
                self.error(
                    node.path.key("train").key(model.name()).key("tune"),
                    "a replay cannot fine-tune the encoder (`tune`): its items arrive window by window",
                    "remove `tune` (the encoder stays frozen), or run the pool or selection protocol",
                );
            }
        }
    }

    /// The train node's `early_stopping:`, checked against the split (it reads validation
    /// metrics) and the evaluate node (which computes them).
    pub(super) fn early_stopping(
        &mut self,
        roles: &NodeRoles,
        protocol: Option<&ProtocolPlan>,
        evaluate: Option<&EvaluatePlan>,
        graph: &mut [PlanNode],
    ) -> Option<EarlyStopping> {
        if roles.train.len() > 1 {
            for node in &roles.train {
                if let Some((family, _)) = written_early_stopping(node) {
                    self.error(
                        node.path.key("train").key(family).key("early_stopping"),
                        "early stopping chooses one model's epochs, but the train nodes of a \
                         pipeline share one schedule",
                        "remove `early_stopping` and set `epochs:` in every train node, or \
                         train one model",
                    );
                }
            }
            return None;
        }
        let node = roles.train.first()?;
        let (family, written) = written_early_stopping(node)?;
        let path = node.path.key("train").key(family).key("early_stopping");
        let patience = written.patience.unwrap_or(defaults::PATIENCE);
        let max_epochs = written.max_epochs.unwrap_or(defaults::MAX_EPOCHS);
        for (name, value) in [("patience", patience), ("max_epochs", max_epochs)] {
            if value == 0 {
                self.error(
                    path.key(name),
                    format!("`{name}` must be at least 1"),
                    format!("set `{name}` to a positive integer"),
                );
            }
        }
        let metric = match Metric::parse(&written.metric) {
            Ok(metric) => Some(metric),
            Err(message) => {
                self.error(path.key("metric"), message, metric_help(&written.metric));
                None
            }
        };
        match protocol {
            Some(ProtocolPlan::Replay(_)) => self.error(
                path.clone(),
                "a replay has no validation split to stop on",
                "remove `early_stopping`, or use the `pool` or `selection` protocol",
            ),
            Some(p) if p.split().is_some_and(|s| !s.has_validation()) => self.error(
                path.clone(),
                "early stopping reads validation metrics, but the split has no validation set",
                "add one, e.g. `split: {random: {test: 0.1, validation: 0.1}}` or \
                 `{temporal: {leave_last: 1, validation_last: 1}}`",
            ),
            _ => {}
        }
        match (evaluate, metric) {
            (None, _) => self.error(
                path.key("metric"),
                "early stopping reads a metric of the `evaluate` node, but there is none",
                "add e.g. `report: {evaluate: {metrics: [ndcg@10]}, inputs: [test, model]}`",
            ),
            (Some(plan), Some(metric)) if !plan.metrics.contains(&metric) => self.error(
                path.key("metric"),
                format!("`{metric}` is not among the evaluate node's metrics"),
                format!("add `{metric}` to `evaluate.metrics`, or watch one of them"),
            ),
            _ => {}
        }
        let stopping = EarlyStopping {
            metric: metric?,
            patience,
            max_epochs,
        };
        if let Some(train) = graph.iter_mut().find(|n| n.id == node.id) {
            train.params.extend([
                (
                    "early_stopping.metric".into(),
                    stopping.metric.to_string(),
                    true,
                ),
                (
                    "early_stopping.patience".into(),
                    patience.to_string(),
                    written.patience.is_some(),
                ),
                (
                    "early_stopping.max_epochs".into(),
                    max_epochs.to_string(),
                    written.max_epochs.is_some(),
                ),
            ]);
        }
        Some(stopping)
    }
}

/// The family and `early_stopping:` of a train node, when it has one.
fn written_early_stopping(node: &NodeSpec) -> Option<(&'static str, &EarlyStoppingSpec)> {
    let OperatorSpec::Train(spec) = &node.operator else {
        return None;
    };
    FAMILIES
        .iter()
        .find_map(|f| Some((f.key, spec.family(f.key)?.early_stopping.as_ref()?)))
}

/// The options some families do not take, and whether `options` writes each: what the
/// planner checks against each option's families in the registry.
fn family_options_written(options: &TrainOptions) -> [(&'static str, bool); 4] {
    [
        ("hidden", options.hidden.is_some()),
        ("dropout", options.dropout.is_some()),
        ("mc_dropout", options.mc_dropout.is_some()),
        ("tune", options.tune.is_some()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_some_family_refuses_is_checked() {
        let checked: Vec<&str> = family_options_written(&TrainOptions::default())
            .iter()
            .map(|(name, _)| *name)
            .collect();
        for option in registry::TRAIN_OPTIONS {
            // A nested option is checked with its parent (`tune.layers` with `tune`).
            let top = option.name.split('.').next().unwrap_or(option.name);
            if !option.families.is_empty() {
                assert!(checked.contains(&top), "`{}` is never checked", option.name);
            }
        }
    }
}
