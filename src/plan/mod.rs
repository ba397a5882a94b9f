//! The plan: a validated, typed IR of a pipeline with every default resolved and every edge
//! checked. It is what `recsift plan` prints and what the driver runs; it makes explicit
//! anything a consumer would otherwise have to recover by analysing the YAML again.
//!
//! `plan/` imports neither timely/differential nor candle: a pipeline can be validated and
//! printed without building an engine.

pub(crate) mod build;
mod display;
pub mod graph;
pub mod params;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use build::build;

use crate::data::LabelKind;
use crate::metrics::Metric;
use crate::strategy::Strategy;
use params::{DeviceChoice, EarlyStopping, EventSource, ItemSource, TrainParams};

/// A validated pipeline, ready to run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// Experiment name (`name:`, default: the file name without extension).
    pub name: String,
    /// The pipeline file it came from.
    pub source: PathBuf,
    /// Seed for every random choice (splits, initialisation, shuffles, strategies).
    pub seed: u64,
    /// Timely worker threads of the incremental engine, per process.
    pub workers: usize,
    /// The processes of the run (one unless `cluster:` or `--processes` says more).
    pub cluster: ClusterPlan,
    /// Where candle runs.
    pub device: DeviceChoice,
    /// Input data.
    pub data: DataPlan,
    /// How events become rounds.
    pub protocol: ProtocolPlan,
    /// The text encoder, when the pipeline embeds item text.
    pub embed: Option<EmbedPlan>,
    /// The recommenders (every `train` node) and their fusions.
    pub models: ModelsPlan,
    /// Early stopping of the initial fit on a validation metric.
    pub early_stopping: Option<EarlyStopping>,
    /// Per-sample scoring, where the pipeline has a score node.
    pub score: Option<ScorePlan>,
    /// Test metrics, one entry per `evaluate` node (empty: nothing is evaluated).
    pub evaluate: Vec<EvaluatePlan>,
    /// Where results go.
    pub output: OutputPlan,
    /// The node graph, for display: sources first, then nodes in dependency order.
    #[serde(skip)]
    pub graph: Vec<PlanNode>,
}

impl Plan {
    /// The model the run scores and publishes the rows of (what evaluation, the diversity
    /// strategies, checkpoints and recommendations read): the one the score node reads,
    /// else the one the first evaluate node reads, else the first train node.
    pub fn scored_model(&self) -> &str {
        scored_or_evaluated(self.score.as_ref(), &self.evaluate)
            .unwrap_or(&self.models.trained[0].node)
    }

    /// What the incremental engine maintains in this run: the score node where a select
    /// node ranks by its scores, with the item statistics where the strategy ranks by
    /// those. `None` where no select node reads either (no select node, or a strategy
    /// ranking by a seeded hash of the sample: `random`, `coreset`): the engine renders
    /// nothing and the pool is ranked by its changes alone.
    pub fn engine_nodes(&self) -> Option<EngineNodes<'_>> {
        let select = self.protocol.select()?;
        let score = self.score.as_ref()?;
        let strategy = select.strategy.def();
        if !(strategy.reads_scores || strategy.reads_item_statistics) {
            return None;
        }
        Some(EngineNodes {
            score,
            item_statistics_for: strategy.reads_item_statistics.then_some(select),
        })
    }
}

/// The nodes the incremental engine maintains ([`Plan::engine_nodes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineNodes<'a> {
    /// The score node: every pool sample's prediction, uncertainty and loss under its
    /// model's rows.
    pub score: &'a ScorePlan,
    /// The select node whose strategy ranks by item statistics (an item's count and
    /// entropy of known labels), if it does.
    pub item_statistics_for: Option<&'a SelectPlan>,
}

/// The model the score node reads, else the one the first evaluate node reads (see
/// [`Plan::scored_model`]).
pub(crate) fn scored_or_evaluated<'a>(
    score: Option<&'a ScorePlan>,
    evaluate: &'a [EvaluatePlan],
) -> Option<&'a str> {
    score
        .map(|s| s.model.as_str())
        .or(evaluate.first().map(|e| e.model.as_str()))
}

/// Resolved `cluster:`: the processes of a run and this one's place among them. Every
/// process runs the whole driver (training is replicated, so every process holds the same
/// model); the engine's pool and scoring are split over all processes' workers; process 0
/// alone writes results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterPlan {
    /// Processes in the run.
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process: usize,
    /// Where the processes listen.
    pub hosts: ClusterHosts,
    /// Seconds to wait for every process to connect.
    pub timeout_s: f64,
    /// The round of the checkpoint this process resumes after (`recsift run --resume`),
    /// which every process of a cluster must agree on; not part of the plan as written.
    #[serde(skip)]
    pub resumed_after: Option<u32>,
}

impl ClusterPlan {
    /// Default first port of processes on one machine (timely's examples use it too).
    pub const DEFAULT_PORT: u16 = 2101;
    /// Default wait for peers, in seconds.
    pub const DEFAULT_TIMEOUT_S: f64 = 60.0;

    /// One process: no networking.
    pub fn single() -> Self {
        Self {
            processes: 1,
            process: 0,
            hosts: ClusterHosts::Local {
                port: Self::DEFAULT_PORT,
            },
            timeout_s: Self::DEFAULT_TIMEOUT_S,
            resumed_after: None,
        }
    }

    /// Whether this process writes the results (process 0 does).
    pub fn writes_results(&self) -> bool {
        self.process == 0
    }

    /// Why this cluster cannot run (`processes`, `process` or `port` out of range), if so.
    pub fn problem(&self) -> Option<String> {
        if self.processes == 0 {
            return Some("a run needs at least 1 process".into());
        }
        if self.process >= self.processes {
            return Some(format!(
                "process index {} is out of range for {} processes (use 0 to {})",
                self.process,
                self.processes,
                self.processes - 1
            ));
        }
        if let ClusterHosts::Local { port } = self.hosts
            && usize::from(port) + self.processes - 1 > usize::from(u16::MAX)
        {
            return Some(format!(
                "ports {port} to {} do not exist; choose a lower port",
                usize::from(port) + self.processes - 1
            ));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Some(format!(
                "the timeout must be a positive number of seconds, not {}",
                self.timeout_s
            ));
        }
        None
    }
}

/// Where the processes of a run listen.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterHosts {
    /// All on 127.0.0.1, process `i` at `port + i`.
    Local {
        /// Process 0's port.
        port: u16,
    },
    /// `host:port` lines of a file, process 0 first.
    File(PathBuf),
}

/// Resolved `data:` (the event log belongs to the protocol that reads it: a replay, or a
/// `random`/`temporal` split).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataPlan {
    /// Item text.
    pub items: Option<ItemSource>,
    /// What labels mean.
    pub label_kind: LabelKind,
}

/// Resolved `protocol:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolPlan {
    /// Pool-based active learning.
    Pool(PoolPlan),
    /// A time-ordered replay in windows.
    Replay(ReplayPlan),
    /// Sample selection on fully labelled data.
    Selection(SelectionProtocolPlan),
}

impl ProtocolPlan {
    /// The protocol's name in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            ProtocolPlan::Pool(_) => "pool",
            ProtocolPlan::Replay(_) => "replay",
            ProtocolPlan::Selection(_) => "selection",
        }
    }

    /// The train/test split, for the protocols that have one (a replay tests on each window
    /// before training on it).
    pub fn split(&self) -> Option<&SplitPlan> {
        match self {
            ProtocolPlan::Pool(p) => Some(&p.split),
            ProtocolPlan::Selection(p) => Some(&p.split),
            ProtocolPlan::Replay(_) => None,
        }
    }

    /// The select node spending the labelling budget, where the protocol runs one: always in
    /// the selection protocol, in a pool with rounds, optionally in a replay (free labels
    /// alone need none).
    pub fn select(&self) -> Option<&SelectPlan> {
        match self {
            ProtocolPlan::Pool(p) => p.rounds.as_ref().map(|r| &r.select),
            ProtocolPlan::Selection(p) => Some(&p.select),
            ProtocolPlan::Replay(p) => p.select.as_ref(),
        }
    }

    /// The one event log the protocol reads (absent when the split names its own files).
    pub fn event_log(&self) -> Option<&EventSource> {
        match self {
            ProtocolPlan::Replay(p) => Some(&p.events),
            ProtocolPlan::Pool(PoolPlan { split, .. })
            | ProtocolPlan::Selection(SelectionProtocolPlan { split, .. }) => split.event_log(),
        }
    }

    /// Whether strategies see the labels of the samples they rank. Where they do not (pool,
    /// replay), a label-aware strategy reads hidden labels: an oracle upper bound.
    pub fn labels_visible(&self) -> bool {
        matches!(self, ProtocolPlan::Selection(_))
    }
}

/// How a replay cuts the log into windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowPlan {
    /// A fixed span of time, in the timestamp column's unit (seconds).
    Duration {
        /// Span in seconds.
        seconds: i64,
    },
    /// A fixed number of events.
    Events {
        /// Events per window.
        events: u64,
    },
}

/// Resolved `protocol.replay:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayPlan {
    /// The log replayed (`data.events`).
    pub events: EventSource,
    /// The select node spending each window's budget (`None`: free labels alone).
    pub select: Option<SelectPlan>,
    /// Window cut.
    pub window: WindowPlan,
    /// Leading windows labelled and trained on in full before evaluation starts.
    pub warmup_windows: u32,
    /// Fraction of each later window's events labelled for free.
    pub free_labels: f64,
    /// Stop after this many windows.
    pub max_windows: Option<u32>,
    /// Windows an unlabelled event stays in the pool, its own included (`None`: to the end).
    pub pool_windows: Option<u32>,
    /// Events read from the file per batch.
    pub batch_rows: usize,
    /// Bytes a log stored out of time order may be sorted in before runs spill to disk.
    pub sort_memory: u64,
}

/// Resolved `protocol.selection:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SelectionProtocolPlan {
    /// Train/test split.
    pub split: SplitPlan,
    /// Rounds of select-then-train.
    pub rounds: u32,
    /// Passes over every training sample before round 1.
    pub warmup_epochs: usize,
    /// The select node choosing what each round trains on.
    pub select: SelectPlan,
}

/// Resolved `protocol.pool:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolPlan {
    /// Train/test split.
    pub split: SplitPlan,
    /// Initially labelled training events.
    pub initial: InitialLabels,
    /// The rounds of selection (`None`: `rounds: 0`, the model trains once on the initial
    /// labels and is evaluated; a select node, if written, is not used).
    pub rounds: Option<PoolRounds>,
}

impl PoolPlan {
    /// Rounds of selection after round 0.
    pub fn round_count(&self) -> u32 {
        self.rounds.as_ref().map_or(0, |r| r.count)
    }
}

/// The rounds of a pool: how many, and the select node that labels samples in each.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolRounds {
    /// Rounds of selection (at least 1).
    pub count: u32,
    /// The select node.
    pub select: SelectPlan,
}

/// Resolved split.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitPlan {
    /// The event log (`data.events`), cut by a rule.
    Log {
        /// The log.
        events: Box<EventSource>,
        /// How it is cut.
        rule: SplitRule,
    },
    /// Predefined files, read with the event column mapping.
    Files {
        /// Training events.
        train: Box<EventSource>,
        /// Test events.
        test: Box<EventSource>,
        /// Validation events, if the split has them.
        validation: Option<Box<EventSource>>,
    },
}

impl SplitPlan {
    /// The log the split cuts (`None`: the split names its own files).
    pub fn event_log(&self) -> Option<&EventSource> {
        match self {
            SplitPlan::Log { events, .. } => Some(events),
            SplitPlan::Files { .. } => None,
        }
    }

    /// Whether the split sets validation events apart.
    pub fn has_validation(&self) -> bool {
        match self {
            SplitPlan::Log { rule, .. } => rule.has_validation(),
            SplitPlan::Files { validation, .. } => validation.is_some(),
        }
    }

    /// The fraction of items whose events all go to test (0 unless a random split says).
    pub fn cold_items(&self) -> f64 {
        match self {
            SplitPlan::Log {
                rule: SplitRule::Random { cold_items, .. },
                ..
            } => *cold_items,
            _ => 0.0,
        }
    }
}

/// How a split cuts an event log.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRule {
    /// A seeded random fraction of events to test.
    Random {
        /// Test fraction (of the events of items that are not cold).
        test: f64,
        /// Validation fraction (0: no validation set).
        validation: f64,
        /// Fraction of items whose events all go to test (cold items).
        cold_items: f64,
    },
    /// Each user's last events by time to test, the ones before them to validation.
    Temporal {
        /// Events per user held out for test.
        leave_last: usize,
        /// Events per user held out for validation (0: none).
        validation_last: usize,
    },
}

impl SplitRule {
    /// Whether the rule sets validation events apart.
    pub fn has_validation(&self) -> bool {
        match self {
            SplitRule::Random { validation, .. } => *validation > 0.0,
            SplitRule::Temporal {
                validation_last, ..
            } => *validation_last > 0,
        }
    }
}

/// Resolved initial labels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialLabels {
    /// A seeded random fraction of training events.
    Fraction(f64),
    /// Each user's earliest `n` training events.
    PerUser(usize),
}

/// Resolved `embed:`: which sentence encoder embeds the item text, and where vectors are
/// cached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmbedPlan {
    /// The embed node's id.
    pub node: String,
    /// Hugging Face model id: the cache's key of its vectors (with a digest of `model_dir`
    /// when one is given).
    pub model: String,
    /// A local model folder that overrides the lookup by `model`.
    pub model_dir: Option<PathBuf>,
    /// The Parquet cache of vectors keyed by (weights, text hash).
    pub cache: PathBuf,
    /// Texts per encoder batch.
    pub batch_size: usize,
    /// Encoder threads (`None`: one per core).
    pub threads: Option<usize>,
}

/// The space `coreset` and `uncertainty_diversity` measure distances in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiversitySpace {
    /// The item's text vector from the frozen encoder, also when a model fine-tunes it
    /// (samples of one item coincide).
    Text,
    /// The concatenation of the model's user and item rows (first member).
    Factors,
}

/// How the score node measures uncertainty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UncertaintyMode {
    /// Variance over ensemble members.
    Ensemble,
    /// Variance over Monte Carlo dropout passes.
    McDropout,
    /// No uncertainty (variance is 0).
    None,
}

/// Resolved `score:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScorePlan {
    /// The score node's id.
    pub node: String,
    /// The model scored (a `train` or `fuse` node): its predictions and uncertainty drive
    /// the strategy.
    pub model: String,
    /// Uncertainty measure.
    pub uncertainty: UncertaintyMode,
}

/// The models of a pipeline: every `train` node, and every `fuse` node over them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelsPlan {
    /// Every `train` node, in the order of the file (at least one). They share one training
    /// schedule ([`ModelsPlan::schedule`]): the planner checks it.
    pub trained: Vec<TrainedModel>,
    /// Every `fuse` node, in the order of the file.
    pub fused: Vec<FusePlan>,
}

impl ModelsPlan {
    /// The first trained model's parameters, whose `epochs`, `epochs_per_round` and `refit`
    /// every trained model shares: the protocols train all models on the same samples, for
    /// the same number of passes, at the same rounds.
    pub fn schedule(&self) -> &TrainParams {
        &self.trained[0].params
    }

    /// The trained model of node `node`.
    pub fn trained(&self, node: &str) -> Option<&TrainedModel> {
        self.trained.iter().find(|t| t.node == node)
    }

    /// The fusion of node `node`.
    pub fn fused(&self, node: &str) -> Option<&FusePlan> {
        self.fused.iter().find(|f| f.node == node)
    }
}

/// One `train` node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainedModel {
    /// The node's id.
    pub node: String,
    /// The recommender and how it trains.
    pub params: TrainParams,
}

/// One `fuse` node: a model predicting a weighted average of its parts' predictions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FusePlan {
    /// The node's id.
    pub node: String,
    /// The `train` nodes it averages, in the order of its `inputs:` (two or more).
    pub parts: Vec<String>,
    /// How the parts are weighted.
    pub weights: FuseWeights,
}

/// How a fusion weighs its parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FuseWeights {
    /// Fixed weights, one per part, non-negative and summing to 1.
    Given(Vec<f32>),
    /// After every fit, the non-negative weights summing to 1 that minimise the squared
    /// error of the fused prediction on the validation events.
    LearnedOnValidation,
    /// In a replay, before the parts train on a window, the non-negative weights summing to
    /// 1 that minimise the squared error of the fused prediction on every window's revealed
    /// labels so far, each as the parts predicted it before training on it.
    LearnedPrequentially,
}

/// Resolved `select:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SelectPlan {
    /// The select node's id (for messages that point at its options).
    pub node: String,
    /// The strategy.
    pub strategy: Strategy,
    /// Samples per round (per user with `per_user`).
    pub budget: u64,
    /// Whether the budget is per user.
    pub per_user: bool,
    /// Diversity strategies: the space of their distances and how many candidates they
    /// choose from.
    pub diversity: Option<DiversityPlan>,
}

/// Options of the diversity strategies (`coreset`, `uncertainty_diversity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DiversityPlan {
    /// Where distances are measured.
    pub space: DiversitySpace,
    /// Pool samples k-center chooses from per round.
    pub candidates: usize,
}

/// Resolved `evaluate:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvaluatePlan {
    /// The evaluate node's id (for messages that point at its options).
    pub node: String,
    /// The model evaluated (a `train` or `fuse` node).
    pub model: String,
    /// What every metric name of this node starts with: `""` when the pipeline has one
    /// evaluate node, `"<node>/"` when it has several.
    pub prefix: String,
    /// Metrics in the order they are reported.
    #[serde(serialize_with = "serialize_metrics")]
    pub metrics: Vec<Metric>,
    /// Relevance threshold for ranking metrics.
    pub relevant: f32,
    /// What ranking metrics rank for each test user.
    pub candidates: CandidateSet,
}

/// The items a ranking metric ranks for a test user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateSet {
    /// The whole catalogue except the items whose label the model was given (and, for the
    /// test set, the user's validation items, as RecBole does): the standard protocol.
    All,
    /// Only the user's own test items, ranked by the predicted label (for rating-prediction
    /// papers that rank rated items; far easier than ranking the catalogue).
    TestItems,
    /// The user's test items and `negatives` items drawn, seeded, from those the user has
    /// no event with. Known to disagree with full ranking, even in the order of models
    /// (Krichene and Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020).
    Sampled {
        /// Sampled items per test user.
        negatives: usize,
    },
}

impl CandidateSet {
    /// The name a ranking metric carries in outputs under this candidate set: `ndcg@10`
    /// for the catalogue, `ndcg@10[test_items]`, `ndcg@10[sampled=100]`.
    pub fn metric_name(&self, metric: &Metric) -> String {
        match self {
            CandidateSet::All => metric.to_string(),
            CandidateSet::TestItems => format!("{metric}[test_items]"),
            CandidateSet::Sampled { negatives } => format!("{metric}[sampled={negatives}]"),
        }
    }
}

impl std::fmt::Display for CandidateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CandidateSet::All => f.write_str("all"),
            CandidateSet::TestItems => f.write_str("test_items"),
            CandidateSet::Sampled { negatives } => write!(f, "sampled (negatives {negatives})"),
        }
    }
}

impl EvaluatePlan {
    /// The name each metric carries in outputs, in order: [`EvaluatePlan::prefix`], then
    /// the metric (ranking metrics with their candidate set).
    pub fn metric_names(&self) -> Vec<String> {
        self.named_metrics("")
    }

    /// The metric names on a target whose names carry `target` (`val_`, `cold_`) after the
    /// node's prefix: `report/val_rmse`.
    pub fn named_metrics(&self, target: &str) -> Vec<String> {
        self.metrics
            .iter()
            .map(|m| {
                let metric = if m.is_ranking() {
                    self.candidates.metric_name(m)
                } else {
                    m.to_string()
                };
                format!("{}{target}{metric}", self.prefix)
            })
            .collect()
    }
}

fn serialize_metrics<S: serde::Serializer>(metrics: &[Metric], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(metrics.iter().map(Metric::to_string))
}

/// Resolved `output:`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputPlan {
    /// Results directory.
    pub dir: PathBuf,
    /// Whether to draw plots.
    pub plots: bool,
    /// Top-K exports, when asked for.
    pub recommendations: Option<RecommendationsPlan>,
    /// A checkpoint (what `recsift run --resume` continues from) is saved after every
    /// `checkpoint_every`-th round or window; 0 saves none.
    pub checkpoint_every: u32,
    /// A due checkpoint is skipped until this many seconds passed since the last one.
    pub checkpoint_min_interval_s: f64,
}

/// Resolved `output.recommendations:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RecommendationsPlan {
    /// Items per user.
    pub k: usize,
    /// Whose lists are written.
    pub users: RecommendedUsers,
    /// Whether every round's lists are written, not only the final model's.
    pub every_round: bool,
}

/// Whose top-K lists `recommendations.parquet` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecommendedUsers {
    /// Users with at least one test event.
    Test,
    /// Every user.
    All,
}

/// One node of the displayed graph.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanNode {
    /// Node id (a source name for sources).
    pub id: String,
    /// Operator key, or `source`.
    pub operator: &'static str,
    /// Ids it reads from.
    pub inputs: Vec<String>,
    /// Resolved parameters as `(key, value, written in the file?)`.
    pub params: Vec<(String, String, bool)>,
}
