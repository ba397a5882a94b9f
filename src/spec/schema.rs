//! The pipeline file exactly as written: serde structs, one per YAML mapping, every key
//! optional unless the file cannot mean anything without it, unknown keys rejected.
//! Defaults are not filled in here; the planner does that, so `recsift plan` can show
//! which values were written and which were resolved. Nor are they written in these docs:
//! they live in `crate::registry::defaults`, from which the JSON schema takes them.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::data::LabelKind;
use crate::plan::{DiversitySpace, RecommendedUsers, UncertaintyMode};
use crate::scoring::Loss;
use crate::strategy::Strategy;

/// `data:` — where the logged behaviour and the item text live.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Parquet file of events, relative to the pipeline file.
    pub events: Option<String>,
    /// Column names in the event files.
    pub columns: Option<ColumnsSpec>,
    /// What a label means: `rating` or `click`.
    pub label: Option<LabelKind>,
    /// Item text.
    pub items: Option<ItemsSpec>,
}

/// `data.columns:` — event column names.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnsSpec {
    /// User id column.
    pub user: Option<String>,
    /// Item id column.
    pub item: Option<String>,
    /// Label column.
    pub label: Option<String>,
    /// Timestamp column.
    pub time: Option<String>,
}

/// `data.items:` — the item table and how to render an item's text.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ItemsSpec {
    /// Parquet file with one row per item, relative to the pipeline file.
    pub path: String,
    /// Item id column.
    pub id: Option<String>,
    /// Text template over the item columns.
    pub text: Option<String>,
}

/// `protocol:` — how the events become an experiment. Exactly one key.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSpec {
    /// Pool-based active learning: seed labels, a hidden-label pool, a test set, rounds.
    pub pool: Option<PoolSpec>,
    /// A time-ordered replay of the log in windows (prequential: test, then train).
    pub replay: Option<ReplaySpec>,
    /// Sample selection on fully labelled data: each round trains on the chosen samples.
    pub selection: Option<SelectionSpec>,
}

/// `protocol.replay:`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// Window length as a duration (`7d`, `12h`, `30m`, `90s`, `2w`). One of `window` and
    /// `window_events` is required.
    pub window: Option<String>,
    /// Window length as a number of events.
    pub window_events: Option<u64>,
    /// Leading windows whose events are all labelled and trained on before the replay is
    /// evaluated.
    pub warmup_windows: Option<u32>,
    /// Fraction of each later window's events that arrive labelled for free.
    pub free_labels: Option<f64>,
    /// Stop after this many windows (default: the whole log).
    pub max_windows: Option<u32>,
    /// An unlabelled event stays a candidate for this many windows, its own included, then
    /// leaves the pool (default: it stays until the end). Bounds the pool, and so the
    /// engine's and the driver's memory, by the last windows instead of the whole log.
    pub pool_windows: Option<u32>,
    /// Events read from the file per batch.
    pub batch_rows: Option<usize>,
    /// Memory a log stored out of time order may be sorted in (`512MiB`, `4GiB`); a larger
    /// log is sorted on disk (an external merge sort).
    pub sort_memory: Option<String>,
}

/// `protocol.selection:`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectionSpec {
    /// How events are split into train (every label known) and test.
    pub split: SplitSpec,
    /// Rounds; each trains on the `budget` samples the strategy picks.
    pub rounds: Option<u32>,
    /// Passes over every training sample before round 1 (0: start untrained).
    pub warmup_epochs: Option<usize>,
}

/// `protocol.pool:`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// How events are split into train (labelled + pool) and test.
    pub split: SplitSpec,
    /// Which training events are labelled before round 1.
    pub labelled: Option<InitialLabelsSpec>,
    /// Rounds of selection (0 trains once and evaluates).
    pub rounds: Option<u32>,
}

/// `split:` — train/test split. Exactly one key.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// A seeded random fraction of events goes to test.
    pub random: Option<RandomSplitSpec>,
    /// Each user's last events (by time) go to test.
    pub temporal: Option<TemporalSplitSpec>,
    /// Predefined train and test files (e.g. MovieLens `u1.base`/`u1.test` after import).
    pub files: Option<FilesSplitSpec>,
}

/// `split.random:`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomSplitSpec {
    /// Fraction of events in the test set, in (0, 1).
    pub test: f64,
    /// Fraction of items held out entirely (cold start): all their events go to test, and
    /// metrics are also reported on them alone (`cold_rmse`, ...).
    pub cold_items: Option<f64>,
    /// Fraction of events in the validation set (0: none). Validation metrics are reported
    /// beside the test metrics (`val_<metric>`) and are what early stopping reads.
    pub validation: Option<f64>,
}

/// `split.temporal:`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemporalSplitSpec {
    /// Events per user held out for test.
    pub leave_last: Option<usize>,
    /// Events per user, just before the test events, held out for validation (0: none).
    pub validation_last: Option<usize>,
}

/// `split.files:`.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilesSplitSpec {
    /// Training events, relative to the pipeline file.
    pub train: String,
    /// Test events, relative to the pipeline file.
    pub test: String,
    /// Validation events, relative to the pipeline file (optional).
    pub validation: Option<String>,
}

/// `labelled:` — the initially labelled seed set. Exactly one key.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitialLabelsSpec {
    /// A seeded random fraction of the training events, in [0, 1].
    pub fraction: Option<f64>,
    /// Each user's `n` earliest training events.
    pub per_user: Option<usize>,
}

/// `output:` — where results go.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Results directory, relative to the pipeline file.
    pub dir: Option<String>,
    /// Whether to draw the learning-curve plots.
    pub plots: Option<bool>,
    /// Write each user's top-K recommendations of the final model (and, if asked, of every
    /// round) to `recommendations.parquet`.
    pub recommendations: Option<RecommendationsSpec>,
}

/// `cluster:` — the run as one of several processes (timely's cluster mode); the command
/// line's `--processes`, `--process` and `--hostfile` win over these.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Processes in the run.
    pub processes: Option<usize>,
    /// This process's index, `0..processes`.
    pub process: Option<usize>,
    /// A file with one `host:port` per line, process 0 first, relative to the pipeline file
    /// (default: every process on 127.0.0.1).
    pub hostfile: Option<String>,
    /// Without a hostfile, process `i` listens on 127.0.0.1 at `port + i`.
    pub port: Option<u16>,
    /// Seconds to wait for every process to connect.
    pub timeout_s: Option<f64>,
}

/// `checkpoint:` — how often a run saves what `recsift run --resume` continues from.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Save after every `every`-th round or replay window (0 saves none).
    pub every: Option<u32>,
    /// Skip a due save until this many seconds have passed since the last one (0: save
    /// every due round), so that runs of many short rounds do not spend their time saving.
    pub min_interval_s: Option<f64>,
}

/// `output.recommendations:`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecommendationsSpec {
    /// Items per user.
    pub k: Option<usize>,
    /// `test` (users with test events) or `all` (every user).
    pub users: Option<RecommendedUsers>,
    /// Also write the lists after every round, not only the final one.
    pub every_round: Option<bool>,
}

/// `train:` — the recommender family as the only key, its options as the value.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Biased matrix factorisation.
    pub mf: Option<TrainOptions>,
    /// Biased MF whose item rows add a learned projection of the item's text vector.
    pub text_mf: Option<TrainOptions>,
    /// MLP towers over ID embeddings (users) and ID embeddings + text vectors (items).
    pub two_tower: Option<TrainOptions>,
}

impl TrainSpec {
    /// The options written under family `key` (`mf`, `text_mf`, `two_tower`), if any.
    pub fn family(&self, key: &str) -> Option<&TrainOptions> {
        match key {
            "mf" => self.mf.as_ref(),
            "text_mf" => self.text_mf.as_ref(),
            "two_tower" => self.two_tower.as_ref(),
            _ => None,
        }
    }
}

/// `embed:` — item text to vectors with a sentence encoder, cached on disk.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbedSpec {
    /// Hugging Face model id; its vectors are cached under it (the published weights).
    pub model: Option<String>,
    /// A local model folder (config.json, tokenizer.json, model.safetensors), relative to
    /// the pipeline file; overrides the lookup by `model`. Its vectors are cached under the
    /// id and a digest of those files.
    pub model_dir: Option<String>,
    /// The embedding cache (Parquet), relative to the pipeline file.
    pub cache: Option<String>,
    /// Texts per encoder batch.
    pub batch_size: Option<usize>,
    /// Encoder threads (default: the machine's cores).
    pub threads: Option<usize>,
}

// Their defaults, types and docs as users read them: `crate::registry::TRAIN_OPTIONS`.
/// Options of a `train:` node (`recsift ops train` lists their defaults).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// Factor dimension.
    pub dim: Option<usize>,
    /// Standard deviation of the factor initialisation.
    pub init_std: Option<f64>,
    /// Ensemble members, each on its own bootstrap of the labels.
    pub members: Option<usize>,
    /// Optimiser: `{sgd: {lr, weight_decay}}` or `{adam: {lr, beta1, beta2, eps, weight_decay}}`.
    pub optimizer: Option<OptimizerSpec>,
    /// Passes over the initial labels before round 1.
    pub epochs: Option<usize>,
    /// Passes per round after new labels arrive.
    pub epochs_per_round: Option<usize>,
    /// `new_labels` (fine-tune on this round's labels), `rehearsal` (this round's labels plus
    /// `rehearsal` x as many earlier labels, seeded) or `all_labels`.
    pub refit: Option<RefitChoice>,
    /// With `refit: rehearsal`: earlier labels mixed in per new label.
    pub rehearsal: Option<usize>,
    /// Samples per gradient step.
    pub batch_size: Option<usize>,
    /// The objective: `squared` (half squared error), `cross_entropy` (binary cross-entropy
    /// on a logit) or `bpr` (Bayesian personalised ranking: every event is a positive, ranked
    /// above a sampled item its user has no event with; predictions become unbounded ranking
    /// scores).
    pub loss: Option<Loss>,
    /// `two_tower`: width of each tower's hidden layer.
    pub hidden: Option<usize>,
    /// `two_tower`: dropout probability of the hidden units.
    pub dropout: Option<f64>,
    /// `two_tower`: Monte Carlo dropout passes exported per row; measures uncertainty
    /// instead of ensemble `members` (default: none).
    pub mc_dropout: Option<usize>,
    /// Stop the initial fit when a validation metric stops improving (needs a validation
    /// split and an `evaluate` node).
    pub early_stopping: Option<EarlyStoppingSpec>,
    /// `text_mf`, `two_tower`: fine-tune the encoder's top transformer layers with the
    /// recommender's loss (default: the encoder is frozen).
    pub tune: Option<TuneSpec>,
}

/// `tune:` — which encoder layers train with the recommender, and how fast.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TuneSpec {
    /// Top transformer layers trained (the ones below run once and stay frozen).
    pub layers: Option<usize>,
    /// Train low-rank adapters of these layers' attention query and value projections
    /// (LoRA) instead of every weight of the layers.
    pub lora: Option<LoraSpec>,
    /// Adam's learning rate for the tuned layers (or their adapters).
    pub lr: Option<f64>,
    /// Most items whose text is back-propagated per gradient step.
    pub items_per_step: Option<usize>,
}

/// `tune.lora:` — the adapters' rank and scale.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// The adapters' rank `r`: each adapted `[out, in]` weight trains `r (in + out)` values.
    pub rank: Option<usize>,
    /// The adapters' scale numerator: the update `B A` is multiplied by `alpha / rank`.
    pub alpha: Option<f64>,
}

/// `early_stopping:` — the initial fit runs epoch by epoch, reading a validation metric.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EarlyStoppingSpec {
    /// The validation metric to watch, e.g. `ndcg@10` or `rmse` (its direction is known).
    #[schemars(with = "super::json_schema::MetricName")]
    pub metric: String,
    /// Epochs without improvement before stopping.
    pub patience: Option<usize>,
    /// Most epochs to run.
    pub max_epochs: Option<usize>,
}

/// `optimizer:` — exactly one key.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// Stochastic gradient descent.
    pub sgd: Option<SgdSpec>,
    /// Adam with lazy (per-row) moments.
    pub adam: Option<AdamSpec>,
}

/// `optimizer.sgd:`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SgdSpec {
    /// Learning rate.
    pub lr: Option<f64>,
    /// L2 regularisation on touched rows.
    pub weight_decay: Option<f64>,
}

/// `optimizer.adam:`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdamSpec {
    /// Learning rate.
    pub lr: Option<f64>,
    /// First-moment decay.
    pub beta1: Option<f64>,
    /// Second-moment decay.
    pub beta2: Option<f64>,
    /// Denominator epsilon.
    pub eps: Option<f64>,
    /// Decoupled L2 regularisation on touched rows.
    pub weight_decay: Option<f64>,
}

/// `fuse:` — one model whose prediction is a weighted average of the predictions of the
/// `train` nodes it reads.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FuseSpec {
    /// One non-negative weight per input, in the order of `inputs:` (they are scaled to sum
    /// to 1; default: equal weights).
    pub weights: Option<Vec<f64>>,
    /// Learn the weights (non-negative, summing to 1, minimising the squared error of the
    /// fused prediction) instead of giving them: `validation`, after every fit, on the
    /// split's validation events; `prequential`, in a replay, before the parts train on a
    /// window, on every window's revealed labels so far, each as the parts predicted it
    /// before training on it.
    pub learn: Option<LearnFrom>,
}

/// `fuse.learn:` — the events learned fusion weights are fitted on.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LearnFrom {
    /// The split's validation events, after every fit.
    Validation,
    /// In a replay, before the parts train on a window, every window's revealed labels so
    /// far, each as the parts predicted it before training on it: held out from the parts
    /// as prequential evaluation holds out the window.
    Prequential,
}

/// `train.<family>.refit:` — which labels a round's training pass visits.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefitChoice {
    /// Fine-tune on the labels revealed this round only.
    NewLabels,
    /// This round's labels plus `rehearsal` x as many earlier labels, seeded.
    Rehearsal,
    /// Train over every label known so far.
    AllLabels,
}

/// `score:` — per-sample prediction, uncertainty and loss.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    /// `ensemble` (variance over members), `mc_dropout` (variance over dropout passes) or
    /// `none` (default: what the model measures, else `none`).
    pub uncertainty: Option<UncertaintyMode>,
}

/// `select:` — the strategy that spends the labelling budget.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectSpec {
    /// The strategy (one of [`crate::registry::STRATEGIES`]).
    pub strategy: Strategy,
    /// Samples labelled per round (per user with `per_user: true`).
    pub budget: u64,
    /// Spend `budget` for every user instead of globally.
    pub per_user: Option<bool>,
    /// `coreset`, `uncertainty_diversity`: the space distances are measured in, `text`
    /// (item text vectors; needs an `embed` node) or `factors` (the model's user and item
    /// rows) (default `text` when the pipeline embeds, else `factors`).
    pub space: Option<DiversitySpace>,
    /// `coreset`, `uncertainty_diversity`: how many pool samples k-center chooses from each
    /// round: the top of a seeded shuffle (`coreset`) or the most uncertain
    /// (`uncertainty_diversity`).
    pub candidates: Option<usize>,
}

impl SelectSpec {
    /// The options only some strategies take: a strategy takes those its registry entry
    /// lists ([`crate::registry::StrategyDef`]).
    pub const STRATEGY_OPTIONS: [&'static str; 2] = ["space", "candidates"];

    /// The options of [`Self::STRATEGY_OPTIONS`] this node writes.
    pub fn written_strategy_options(&self) -> Vec<&'static str> {
        let written = [self.space.is_some(), self.candidates.is_some()];
        Self::STRATEGY_OPTIONS
            .into_iter()
            .zip(written)
            .filter_map(|(name, written)| written.then_some(name))
            .collect()
    }
}

/// `evaluate:` — metrics on the test set after every round.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSpec {
    /// Metric names.
    #[schemars(with = "Option<Vec<super::json_schema::MetricName>>")]
    pub metrics: Option<Vec<String>>,
    /// A test event is relevant for ranking metrics when its label is at least this.
    pub relevant: Option<f32>,
    /// What ranking metrics rank for each test user: `all` (every item except those whose
    /// label the model was given), `test_items` (only the user's test items) or
    /// `{sampled: {negatives: N}}` (the user's test items and N sampled items the user has
    /// no event with).
    pub candidates: Option<CandidatesSpec>,
}

/// `evaluate.candidates:` — a name, or `{sampled: {negatives: N}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidatesSpec {
    /// `all`.
    All,
    /// `test_items`.
    TestItems,
    /// `{sampled: {negatives: N}}`.
    Sampled {
        /// Sampled negatives per test user.
        negatives: usize,
    },
}

impl<'de> Deserialize<'de> for CandidatesSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Sampled {
            negatives: usize,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SampledKey {
            sampled: Sampled,
        }
        let expected = "expected `all`, `test_items` or `{sampled: {negatives: N}}`";
        let value = serde_yaml::Value::deserialize(deserializer)?;
        match &value {
            serde_yaml::Value::String(name) => match name.as_str() {
                "all" => Ok(CandidatesSpec::All),
                "test_items" => Ok(CandidatesSpec::TestItems),
                "sampled" => Err(D::Error::custom(
                    "`sampled` needs its number of negatives: `{sampled: {negatives: 100}}`",
                )),
                other => Err(D::Error::custom(format!(
                    "unknown candidate set `{other}`: {expected}"
                ))),
            },
            serde_yaml::Value::Mapping(_) => serde_yaml::from_value::<SampledKey>(value)
                .map(|s| CandidatesSpec::Sampled {
                    negatives: s.sampled.negatives,
                })
                .map_err(|e| D::Error::custom(format!("{e}; {expected}"))),
            _ => Err(D::Error::custom(expected)),
        }
    }
}

/// `study:` — run the pipeline as a grid of arms, each over several seeds, and compare the
/// arms (see `crate::study`).
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StudySpec {
    /// A count (`5`: the pipeline's seed and the next four) or a list of seeds.
    pub seeds: Option<SeedsSpec>,
    /// The grid: a `--set` path and its values per key, e.g.
    /// `nodes.pick.select.strategy: [random, uncertainty]`, or a mapping from arm names to
    /// values (`nodes.model.train: {text: {text_mf: {...}}, ids: {mf: {...}}}`). Arms are
    /// every combination.
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub vary: Option<serde_yaml::Mapping>,
    /// The arm the others are compared with (default: the arm whose strategy is `random`
    /// when the strategy is varied, else the first arm).
    pub baseline: Option<String>,
    /// Runs at once (default: the machine's cores).
    pub parallel: Option<usize>,
    /// Train round 0 once per seed for the arms that differ only after it (`false` runs
    /// every arm from scratch, with the same results).
    pub share_round_zero: Option<bool>,
}

/// `study.seeds:` — a count or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedsSpec {
    /// This many seeds, counting up from the pipeline's seed.
    Count(u64),
    /// These seeds.
    List(Vec<u64>),
}

impl<'de> Deserialize<'de> for SeedsSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let expected =
            "expected a number of seeds (e.g. `5`) or a list of seeds (e.g. `[1, 2, 3]`)";
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::Number(n) => n
                .as_u64()
                .map(SeedsSpec::Count)
                .ok_or_else(|| D::Error::custom(expected)),
            value @ serde_yaml::Value::Sequence(_) => serde_yaml::from_value(value)
                .map(SeedsSpec::List)
                .map_err(|_| D::Error::custom(expected)),
            _ => Err(D::Error::custom(expected)),
        }
    }
}
