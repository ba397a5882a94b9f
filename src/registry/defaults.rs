//! Defaults the planner applies, the reference shows and the JSON schema carries (one
//! definition each). Defaults with a natural home elsewhere stay there:
//! [`crate::plan::params::EventColumns`]'s `Default`, [`crate::plan::ClusterPlan::single`],
//! [`crate::io::sort::DEFAULT_SORT_MEMORY`], [`crate::model::encoder::DEFAULT_MODEL`] and
//! [`crate::scoring::Loss::default_for`].

use crate::data::LabelKind;
use crate::plan::{CandidateSet, RecommendedUsers};
use crate::spec::schema::RefitChoice;

/// Seed of every random choice.
pub const SEED: u64 = 42;
/// Engine worker threads per process.
pub const WORKERS: usize = 1;
/// The device models train on.
pub const DEVICE: &str = "cpu";
/// The label kind (`data.label`).
pub const LABEL: LabelKind = LabelKind::Rating;
/// The item table's id column (`data.items.id`).
pub const ITEM_ID: &str = "item_id";
/// The text template over the item columns (`data.items.text`).
pub const ITEM_TEXT: &str = "{title} | {genres}";
/// The folder, in the current directory, that holds `results/<name>` (`output.dir`).
pub const RESULTS_DIR: &str = "results";
/// Whether to draw the learning-curve plots.
pub const PLOTS: bool = true;
/// Recommended items per user.
pub const RECOMMENDATIONS_K: usize = 20;
/// Whose recommendations are written: `test` (users with test events) or `all`.
pub const RECOMMENDED_USERS: RecommendedUsers = RecommendedUsers::Test;
/// Whether recommendations are written after every round, not only the final one.
pub const RECOMMEND_EVERY_ROUND: bool = false;
/// Save a checkpoint after every this many rounds or windows.
pub const CHECKPOINT_EVERY: u32 = 1;
/// Seconds since the last checkpoint before a due one is saved: a crash loses at most
/// this much work plus a round, and saving costs a small share of a run however short
/// its rounds.
pub const CHECKPOINT_MIN_INTERVAL_S: f64 = 30.0;

/// Rounds of selection in the `pool` and `selection` protocols.
pub const ROUNDS: u32 = 10;
/// Fraction of a pool's training events labelled before round 1.
pub const LABELLED_FRACTION: f64 = 0.05;
/// `selection`: passes over every training sample before round 1.
pub const WARMUP_EPOCHS: usize = 0;
/// Random split: fraction of events set apart for validation.
pub const VALIDATION_FRACTION: f64 = 0.0;
/// Random split: fraction of items held out entirely (cold start).
pub const COLD_ITEMS: f64 = 0.0;
/// Temporal split: events per user held out for test.
pub const LEAVE_LAST: usize = 1;
/// Temporal split: events per user held out for validation.
pub const VALIDATION_LAST: usize = 0;
/// Replay: leading windows labelled and trained on in full.
pub const WARMUP_WINDOWS: u32 = 1;
/// Replay: fraction of each later window's events labelled for free.
pub const FREE_LABELS: f64 = 0.0;
/// Replay: events read from the file per batch.
pub const BATCH_ROWS: usize = 1 << 20;

/// `embed`: texts per encoder batch.
pub const EMBED_BATCH_SIZE: usize = 32;
/// `embed`: what the vector cache's name adds to the item file's stem.
pub const EMBEDDING_CACHE_SUFFIX: &str = ".embeddings.parquet";

/// Factor / tower output dimension.
pub const DIM: usize = 32;
/// Standard deviation of the normal initialisation of user rows.
pub const INIT_STD: f64 = 0.03;
/// Ensemble members.
pub const MEMBERS: usize = 1;
/// Passes over the initial labels.
pub const EPOCHS: usize = 25;
/// Passes per round.
pub const EPOCHS_PER_ROUND: usize = 3;
/// Samples per gradient step.
pub const BATCH_SIZE: usize = 1024;
/// Which samples a round's passes visit.
pub const REFIT: RefitChoice = RefitChoice::AllLabels;
/// Earlier labels per new label under `refit: rehearsal`.
pub const REHEARSAL: usize = 2;
/// `two_tower`'s hidden width.
pub const HIDDEN: usize = 64;
/// Encoder layers fine-tuned under `tune:`.
pub const TUNE_LAYERS: usize = 1;
/// LoRA adapters' rank under `tune.lora`.
pub const LORA_RANK: usize = 8;
/// LoRA adapters' scale numerator under `tune.lora` (Hugging Face PEFT's default
/// `lora_alpha`).
pub const LORA_ALPHA: f64 = 8.0;
/// Adam's learning rate for the fine-tuned encoder layers.
pub const TUNE_LR: f64 = 1e-4;
/// Adam's learning rate for LoRA adapters (`tune.lora`): the rate the LoRA paper used
/// for RoBERTa-base on most GLUE tasks (Hu et al. 2021, arXiv:2106.09685, Table 9).
pub const LORA_LR: f64 = 5e-4;
/// Items back-propagated through the encoder per gradient step.
pub const TUNE_ITEMS_PER_STEP: usize = 32;
/// `two_tower`'s dropout probability.
pub const DROPOUT: f64 = 0.1;
/// SGD's learning rate.
pub const SGD_LR: f64 = 0.02;
/// SGD's L2 regularisation.
pub const SGD_WEIGHT_DECAY: f64 = 0.1;
/// Adam's learning rate.
pub const ADAM_LR: f64 = 0.005;
/// Adam's first-moment decay.
pub const ADAM_BETA1: f64 = 0.9;
/// Adam's second-moment decay.
pub const ADAM_BETA2: f64 = 0.999;
/// Adam's denominator epsilon.
pub const ADAM_EPS: f64 = 1e-8;
/// Adam's decoupled L2 regularisation.
pub const ADAM_WEIGHT_DECAY: f64 = 0.1;
/// Early stopping: epochs without improvement before stopping.
pub const PATIENCE: usize = 3;
/// Early stopping: most epochs to run.
pub const MAX_EPOCHS: usize = 100;

/// `select`: whether the budget is per user.
pub const PER_USER: bool = false;
/// `select` (`coreset`, `uncertainty_diversity`): candidates per sample of the budget.
pub const CANDIDATES_PER_BUDGET: usize = 10;

/// `evaluate` on ratings.
pub const RATING_METRICS: &[&str] = &["rmse", "mae", "ndcg@10", "recall@10"];
/// `evaluate` on clicks.
pub const CLICK_METRICS: &[&str] = &["auc", "logloss", "ndcg@10", "recall@10"];
/// `evaluate` of a model trained with `loss: bpr` (ranking scores, no labels).
pub const RANKING_METRICS: &[&str] = &["ndcg@10", "recall@10", "mrr@10", "hit@10"];
/// `evaluate` on ratings: the lowest label of a relevant test event.
pub const RELEVANT_RATING: f32 = 4.0;
/// `evaluate` on clicks: the lowest label of a relevant test event.
pub const RELEVANT_CLICK: f32 = 1.0;
/// `evaluate`: what ranking metrics rank for a test user.
pub const CANDIDATES: CandidateSet = CandidateSet::All;

/// `study`: seeds, counting up from the pipeline's seed.
pub const STUDY_SEEDS: u64 = 3;
/// `study`: whether arms that differ only after round 0 share it.
pub const SHARE_ROUND_ZERO: bool = true;
