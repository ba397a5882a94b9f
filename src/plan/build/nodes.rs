//! The nodes around the models: `embed`, `score`, `select` and `evaluate`.

use crate::suggest::closest;
use std::path::{Path, PathBuf};

use crate::data::LabelKind;
use crate::metrics::{METRICS, Metric};
use crate::scoring::Loss;
use crate::spec::path::YamlPath;
use crate::spec::schema::{CandidatesSpec, EmbedSpec, EvaluateSpec, ScoreSpec};
use crate::spec::{NodeSpec, OperatorSpec};

use crate::plan::graph::NodeRoles;
use crate::plan::params::UncertaintyParams;
use crate::plan::{
    CandidateSet, DataPlan, EmbedPlan, EvaluatePlan, ModelsPlan, PlanNode, ScorePlan, SelectPlan,
    UncertaintyMode, scored_or_evaluated,
};
use crate::registry::{defaults, strategies_taking};

use super::Resolver;
use super::strategies::StrategyInput;

impl Resolver {
    pub(super) fn embed(
        &mut self,
        roles: &NodeRoles,
        data: &DataPlan,
        graph: &mut Vec<PlanNode>,
    ) -> Option<EmbedPlan> {
        let node = roles.embed.as_ref()?;
        let OperatorSpec::Embed(spec) = &node.operator else {
            return None;
        };
        let EmbedSpec {
            model,
            model_dir,
            cache,
            batch_size,
            threads,
        } = spec;
        let path = node.path.key("embed");
        let items = data.items.as_ref();
        if items.is_none() && !self.failed_to_type(&YamlPath::keys(&["data"])) {
            self.error(
                node.path.clone(),
                format!("`{}` embeds item text, but `data.items` names no item file", node.id),
                "add e.g. `items: {path: ../data/ml-latest-small/items.parquet, text: \"{title} | {genres}\"}` under `data:`",
            );
        }
        let model = self.value(
            "model",
            model.clone(),
            crate::model::encoder::DEFAULT_MODEL.to_string(),
        );
        let model_dir = model_dir.as_ref().map(|written| {
            self.params.push(("model_dir".into(), written.clone(), true));
            let resolved = self.base_dir.join(written);
            if !resolved.is_dir() {
                self.error(
                    path.key("model_dir"),
                    format!("model folder `{written}` not found (looked for {})", resolved.display()),
                    "point `model_dir` at a folder with config.json, tokenizer.json and model.safetensors, or remove it to look the model up by `model`",
                );
            }
            resolved
        });
        let cache = match cache {
            Some(written) => {
                self.params.push(("cache".into(), written.clone(), true));
                self.base_dir.join(written)
            }
            None => {
                let beside = items
                    .map(|i| default_cache_path(&i.path))
                    .unwrap_or_default();
                self.params
                    .push(("cache".into(), beside.display().to_string(), false));
                beside
            }
        };
        let batch_size = self.value("batch_size", *batch_size, defaults::EMBED_BATCH_SIZE);
        self.params.push((
            "threads".into(),
            threads.map_or_else(|| "all cores".to_string(), |t| t.to_string()),
            threads.is_some(),
        ));
        for (key, value) in [
            ("batch_size", batch_size),
            ("threads", threads.unwrap_or(1)),
        ] {
            if value == 0 {
                self.error(
                    path.key(key),
                    format!("`{key}` must be at least 1"),
                    format!("set `{key}` to a positive integer"),
                );
            }
        }
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "embed",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(EmbedPlan {
            node: node.id.clone(),
            model,
            model_dir,
            cache,
            batch_size,
            threads: *threads,
        })
    }

    pub(super) fn score(
        &mut self,
        roles: &NodeRoles,
        models: Option<&ModelsPlan>,
        graph: &mut Vec<PlanNode>,
    ) -> Option<ScorePlan> {
        let node = roles.score.as_ref()?;
        let OperatorSpec::Score(ScoreSpec { uncertainty }) = &node.operator else {
            return None;
        };
        let model = roles.model_read_by(node, "pool");
        // A fusion's members are all its parts' members: their spread is the parts'
        // disagreement, an ensemble's uncertainty.
        let train = model
            .as_deref()
            .and_then(|m| models?.trained(m))
            .map(|t| &t.params);
        let fused = model.as_deref().and_then(|m| models?.fused(m)).is_some();
        let measured = match train.map(|t| t.uncertainty) {
            _ if fused => UncertaintyMode::Ensemble,
            Some(UncertaintyParams::McDropout { .. }) => UncertaintyMode::McDropout,
            Some(UncertaintyParams::Ensemble { members }) if members > 1 => {
                UncertaintyMode::Ensemble
            }
            _ => UncertaintyMode::None,
        };
        let mode = self.value("uncertainty", *uncertainty, measured);
        if mode != UncertaintyMode::None && mode != measured && (train.is_some() || fused) {
            let help = match mode {
                UncertaintyMode::Ensemble => {
                    "set `members: 4` (or more) in the train node's options"
                }
                _ => "train `two_tower` with `mc_dropout: 8` (passes)",
            };
            let has = match measured {
                UncertaintyMode::None => "measures none (1 member)".to_string(),
                other => format!("measures `{other}`"),
            };
            self.error(
                node.path.key("score").key("uncertainty"),
                format!(
                    "`{mode}` uncertainty needs a model that measures it; the train node {has}"
                ),
                help,
            );
        }
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "score",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(ScorePlan {
            node: node.id.clone(),
            model: model?,
            uncertainty: mode,
        })
    }

    pub(super) fn select(
        &mut self,
        roles: &NodeRoles,
        score: Option<&ScorePlan>,
        embed: Option<&EmbedPlan>,
        needed: Option<String>,
        graph: &mut Vec<PlanNode>,
    ) -> Option<Option<SelectPlan>> {
        let Some(node) = roles.select.as_ref() else {
            let failed = self.failed_node_may_be("select") || self.failed_node_may_be("score");
            if let (Some(why), false) = (needed, failed) {
                let add = match &roles.score {
                    Some(score) => format!(
                        "add e.g. `pick: {{select: {{strategy: uncertainty, budget: 500}}, input: {}}}`",
                        score.id
                    ),
                    None => "add a score node and a select node reading it, e.g. \
                             `scores: {score: {}, inputs: [pool, model]}` and \
                             `pick: {select: {strategy: uncertainty, budget: 500}, input: scores}`"
                        .to_string(),
                };
                self.error(
                    YamlPath::keys(&["nodes"]),
                    why,
                    format!("{add}, or set `rounds: 0` in a pool protocol"),
                );
            }
            return Some(None);
        };
        let OperatorSpec::Select(spec) = &node.operator else {
            return None;
        };
        let path = node.path.key("select");
        let def = spec.strategy.def();
        if def.needs_uncertainty && score.is_some_and(|s| s.uncertainty == UncertaintyMode::None) {
            self.error(
                path.key("strategy"),
                format!("strategy `{}` ranks by uncertainty, but the score node measures none", def.name),
                "train an ensemble (`members: 4` in the train node) or a `two_tower` with `mc_dropout: 8`, so the score node measures uncertainty",
            );
        }
        if spec.budget == 0 {
            self.error(
                path.key("budget"),
                "`budget` must be at least 1",
                "set the number of samples labelled per round, e.g. `budget: 500`",
            );
        }
        for name in spec.written_strategy_options() {
            if !def.takes(name) {
                self.error(
                    path.key(name),
                    format!(
                        "`{name}` is an option of {}, not of `{}`",
                        strategies_taking(name),
                        def.name
                    ),
                    "remove it",
                );
            }
        }
        self.params.push(("strategy".into(), def.name.into(), true));
        self.params
            .push(("budget".into(), spec.budget.to_string(), true));
        let per_user = self.value("per_user", spec.per_user, defaults::PER_USER);
        let diversity = (def.plan)(
            self,
            &StrategyInput {
                strategy: def.name,
                options: spec,
                path: &path,
                per_user,
                embeds: embed.is_some(),
            },
        );
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "select",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(Some(SelectPlan {
            node: node.id.clone(),
            strategy: def.strategy,
            budget: spec.budget,
            per_user,
            diversity,
        }))
    }

    /// Every `evaluate` node; their metric names carry the node's id when there are several.
    pub(super) fn evaluations(
        &mut self,
        roles: &NodeRoles,
        label_kind: LabelKind,
        models: Option<&ModelsPlan>,
        graph: &mut Vec<PlanNode>,
    ) -> Vec<EvaluatePlan> {
        let several = roles.evaluate.len() > 1;
        roles
            .evaluate
            .iter()
            .filter_map(|node| {
                let model = roles.model_read_by(node, "test")?;
                let loss = models.and_then(|m| Self::model_loss(m, &model));
                let prefix = if several {
                    format!("{}/", node.id)
                } else {
                    String::new()
                };
                self.evaluate(node, model, prefix, label_kind, loss, graph)
            })
            .collect()
    }

    /// A replay tests the scored model prequentially, on each window before it trains: one
    /// evaluate node, reading the scored model (the score node's, or without one the
    /// evaluated model: [`crate::plan::Plan::scored_model`]).
    pub(super) fn check_replay_evaluations(
        &mut self,
        roles: &NodeRoles,
        evaluate: &[EvaluatePlan],
        score: Option<&ScorePlan>,
    ) {
        let Some(scored) = scored_or_evaluated(score, evaluate) else {
            return;
        };
        for (plan, node) in evaluate.iter().zip(&roles.evaluate).skip(1) {
            self.error(
                node.path.clone(),
                format!("a second `evaluate` node (`{}`) in a replay", plan.node),
                format!(
                    "a replay tests the scored model `{}` on each window before training on \
                     it; keep one evaluate node",
                    scored
                ),
            );
        }
        if let (Some(plan), Some(node)) = (evaluate.first(), roles.evaluate.first())
            && plan.model != scored
        {
            self.error(
                node.path.clone(),
                format!(
                    "`{}` evaluates `{}`, but a replay tests the scored model `{}`",
                    plan.node, plan.model, scored
                ),
                format!("write `inputs: [test, {}]`", scored),
            );
        }
    }

    fn evaluate(
        &mut self,
        node: &NodeSpec,
        model: String,
        prefix: String,
        label_kind: LabelKind,
        loss: Option<Loss>,
        graph: &mut Vec<PlanNode>,
    ) -> Option<EvaluatePlan> {
        let OperatorSpec::Evaluate(EvaluateSpec {
            metrics,
            relevant,
            candidates,
        }) = &node.operator
        else {
            return None;
        };
        let path = node.path.key("evaluate");
        // A BPR model's scores rank items; they do not predict labels, so only ranking
        // metrics describe it.
        let ranks_only = loss == Some(Loss::Bpr);
        let default_names = match label_kind {
            _ if ranks_only => defaults::RANKING_METRICS,
            LabelKind::Rating => defaults::RATING_METRICS,
            LabelKind::Click => defaults::CLICK_METRICS,
        };
        let names: Vec<String> = metrics
            .clone()
            .unwrap_or_else(|| default_names.iter().map(|s| s.to_string()).collect());
        self.params
            .push(("metrics".into(), names.join(", "), metrics.is_some()));
        let mut parsed = Vec::new();
        for (n, name) in names.iter().enumerate() {
            match Metric::parse(name) {
                Ok(metric) if ranks_only && metric.compares_labels() => self.error(
                    path.key("metrics").index(n),
                    format!(
                        "`{name}` compares predictions with labels, but `loss: bpr` trains \
                         ranking scores that predict no label"
                    ),
                    "use ranking metrics (ndcg@10, recall@10, mrr@10, hit@10, ...), or train \
                     with `loss: squared` / `cross_entropy` to predict labels",
                ),
                Ok(metric) => parsed.push(metric),
                Err(message) => {
                    self.error(path.key("metrics").index(n), message, metric_help(name));
                }
            }
        }
        let default_relevant = match label_kind {
            LabelKind::Rating => defaults::RELEVANT_RATING,
            LabelKind::Click => defaults::RELEVANT_CLICK,
        };
        let relevant = self.value("relevant", *relevant, default_relevant);
        let candidates_written = candidates.is_some();
        let candidates = match *candidates {
            None => defaults::CANDIDATES,
            Some(CandidatesSpec::All) => CandidateSet::All,
            Some(CandidatesSpec::TestItems) => CandidateSet::TestItems,
            Some(CandidatesSpec::Sampled { negatives }) => {
                if negatives == 0 {
                    self.error(
                        path.key("candidates").key("sampled").key("negatives"),
                        "`negatives` must be at least 1",
                        "use e.g. `{sampled: {negatives: 100}}`, or `candidates: all`",
                    );
                }
                CandidateSet::Sampled { negatives }
            }
        };
        self.params.push((
            "candidates".into(),
            candidates.to_string(),
            candidates_written,
        ));
        graph.push(PlanNode {
            id: node.id.clone(),
            operator: "evaluate",
            inputs: node.inputs.clone(),
            params: self.take_params(),
        });
        Some(EvaluatePlan {
            node: node.id.clone(),
            model,
            prefix,
            metrics: parsed,
            relevant,
            candidates,
        })
    }
}

/// The help line for a metric name that did not parse: the closest known name, else the
/// list of every metric.
pub(super) fn metric_help(name: &str) -> String {
    let known: Vec<String> = METRICS.iter().map(|m| m.name.replace('K', "10")).collect();
    match closest(name, known.iter().map(String::as_str)) {
        Some(best) => format!("did you mean `{best}`?"),
        None => {
            let names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
            format!("accepted: {}", names.join(", "))
        }
    }
}

/// The default embedding cache of an item file: `<stem>` and
/// [`defaults::EMBEDDING_CACHE_SUFFIX`], beside it.
fn default_cache_path(items: &Path) -> PathBuf {
    let stem = items
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "items".into());
    items.with_file_name(format!("{stem}{}", defaults::EMBEDDING_CACHE_SUFFIX))
}
