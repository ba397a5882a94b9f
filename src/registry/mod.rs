//! What a pipeline's nodes can say, in one place: every operator with its inputs and options,
//! the train options of each model family, every strategy and every metric, each with its
//! type, default and doc. `recsift ops` prints it, the README's reference tables are
//! generated from it (`recsift ops --markdown`; a test fails when they differ), and the
//! planner and the JSON schema take every default from [`defaults`] or the homes it names.

use std::fmt::{self, Write};

use crate::data::LabelKind;
use crate::metrics::METRICS;
use crate::plan::build::{self, FamilyPlanner, OperatorPlanner};
use crate::scoring::Loss;

mod strategies;

pub use strategies::{STRATEGIES, StrategyDef, strategies_taking};

/// Defaults the planner applies, the reference shows and the JSON schema carries (one
/// definition each). Defaults with a natural home elsewhere stay there:
/// [`crate::plan::params::EventColumns`]'s `Default`, [`crate::plan::ClusterPlan::single`],
/// [`crate::io::sort::DEFAULT_SORT_MEMORY`], [`crate::model::encoder::DEFAULT_MODEL`] and
/// [`crate::scoring::Loss::default_for`].
pub mod defaults {
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
}

/// An option's default, as the reference shows it.
#[derive(Clone, Copy, Debug)]
pub enum DefaultValue {
    /// No default: the option is off unless written.
    None,
    /// Must be written.
    Required,
    /// An integer.
    Int(usize),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A name, as written in YAML.
    Name(&'static str),
    /// A value described in words (a name, or a rule such as "what the model measures").
    Text(&'static str),
    /// A rule whose words hold defaults defined elsewhere ("10 x budget"), built from them.
    Rule(fn() -> String),
}

impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::None => f.write_str("none"),
            DefaultValue::Required => f.write_str("**required**"),
            DefaultValue::Int(v) => write!(f, "{v}"),
            DefaultValue::Float(v) => write!(f, "{v}"),
            DefaultValue::Bool(v) => write!(f, "{v}"),
            DefaultValue::Name(name) => write!(f, "`{name}`"),
            DefaultValue::Text(text) => f.write_str(text),
            DefaultValue::Rule(rule) => f.write_str(&rule()),
        }
    }
}

/// One option of an operator (or of a train family).
#[derive(Debug)]
pub struct OptionDef {
    /// The key, as written in YAML; a nested one by its path (`optimizer.sgd.lr`).
    pub name: &'static str,
    /// Its type, in words (`integer`, `float`, `string`, `mapping`, ...).
    pub ty: &'static str,
    /// Its default.
    pub default: DefaultValue,
    /// For train options: the families that take it (empty: every family; operator
    /// options have no families).
    pub families: &'static [&'static str],
    /// What it does.
    pub doc: &'static str,
}

/// One operator a node can have.
#[derive(Debug)]
pub struct OperatorDef {
    /// The operator key (`embed`, `train`, ...).
    pub key: &'static str,
    /// What the node reads.
    pub inputs: &'static str,
    /// What it does, in one sentence.
    pub summary: &'static str,
    /// Its options (the train operator's are per family: [`TRAIN_OPTIONS`]).
    pub options: &'static [OptionDef],
    /// Plans every node of this operator: checks its options against the rest of the
    /// pipeline, resolves their defaults, and adds its plan and its node in the graph.
    pub(crate) plan: OperatorPlanner,
}

/// An operator's option (no families: those are for train options).
const fn option(
    name: &'static str,
    ty: &'static str,
    default: DefaultValue,
    doc: &'static str,
) -> OptionDef {
    train_option(name, ty, default, &[], doc)
}

/// A train option, taken by `families`.
const fn train_option(
    name: &'static str,
    ty: &'static str,
    default: DefaultValue,
    families: &'static [&'static str],
    doc: &'static str,
) -> OptionDef {
    OptionDef {
        name,
        ty,
        default,
        families,
        doc,
    }
}

use DefaultValue::{Bool, Float, Int, Name, Required, Rule, Text};

/// Every operator, in pipeline order: the planner runs them in this order, each reading the
/// plans of the operators before it (a score node reads the models, a select node the score).
pub static OPERATORS: &[OperatorDef] = &[
    OperatorDef {
        key: "embed",
        inputs: "`items`",
        summary: "item text to vectors with a sentence encoder (cached)",
        options: &[
            option(
                "model",
                "string",
                Name(crate::model::encoder::DEFAULT_MODEL),
                "Hugging Face model id; its vectors' cache key (the published weights)",
            ),
            option(
                "model_dir",
                "path",
                DefaultValue::None,
                "a local folder with `config.json`, `tokenizer.json`, `model.safetensors`; its vectors are cached under the model id and a digest of those files",
            ),
            option(
                "cache",
                "path",
                Rule(|| {
                    format!(
                        "`<item file>{}` beside the item file",
                        defaults::EMBEDDING_CACHE_SUFFIX
                    )
                }),
                "the vector cache",
            ),
            option(
                "batch_size",
                "integer",
                Int(defaults::EMBED_BATCH_SIZE),
                "texts per forward pass",
            ),
            option("threads", "integer", Text("all cores"), "encoder threads"),
        ],
        plan: build::plan_embed,
    },
    OperatorDef {
        key: "train",
        inputs: "`[labelled]`, plus the `embed` node for `text_mf`/`two_tower`",
        summary: "a recommender: one model family as the only key (`mf`, `text_mf`, \
                  `two_tower`) with its options. A pipeline may have several train nodes: \
                  they train side by side on the same labels (so they share `epochs`, \
                  `epochs_per_round` and `refit`)",
        options: &[],
        plan: build::plan_train,
    },
    OperatorDef {
        key: "fuse",
        inputs: "two or more train nodes",
        summary: "a model predicting the weighted average of its inputs' predictions, \
                  usable wherever a model is; its members are all its parts' members, so its \
                  `ensemble` uncertainty includes their disagreement. The parts train with \
                  one `loss`",
        options: &[
            option(
                "weights",
                "list of floats",
                Text("equal"),
                "one non-negative weight per input, in the order of `inputs:`, scaled to sum to 1",
            ),
            option(
                "learn",
                "string",
                DefaultValue::None,
                "`validation`: after every fit, the non-negative weights summing to 1 with the \
                 least squared error on the validation events (needs a split with validation; \
                 never worse than the better part there); each round reports them as \
                 `<fuse node>/weight[<part>]`",
            ),
        ],
        plan: build::plan_fuse,
    },
    OperatorDef {
        key: "score",
        inputs: "`[pool, <model>]` (a train or fuse node)",
        summary: "every pool sample's prediction, uncertainty and loss, maintained \
                  incrementally for the select node that reads them; needed only by a \
                  select node, and nothing is scored without one or for a strategy that \
                  reads neither scores nor item statistics (`random`, `coreset`)",
        options: &[option(
            "uncertainty",
            "string",
            Text("what the model measures"),
            "`ensemble` (variance over members), `mc_dropout` (variance over dropout passes) \
             or `none`",
        )],
        plan: build::plan_score,
    },
    OperatorDef {
        key: "select",
        inputs: "`<score node>`",
        summary: "the samples whose labels each round buys",
        options: &[
            option(
                "strategy",
                "string",
                Required,
                "see Strategies; a strategy's own options sit beside it (`recsift ops NAME`)",
            ),
            option("budget", "integer", Required, "samples per round"),
            option(
                "per_user",
                "bool",
                Bool(defaults::PER_USER),
                "false: the budget is global; true: per user",
            ),
        ],
        plan: build::plan_select,
    },
    OperatorDef {
        key: "evaluate",
        inputs: "`[test, <model>]` (a train or fuse node)",
        summary: "metrics of one model each round; with several evaluate nodes every metric \
                  name starts with the node's id (`mf_report/rmse`); a replay has one, \
                  reading the scored model",
        options: &[
            option(
                "metrics",
                "list of strings",
                Rule(|| {
                    format!(
                        "`[{}]`; clicks: `[{}]`; `loss: bpr`: `[{}]`",
                        defaults::RATING_METRICS.join(", "),
                        defaults::CLICK_METRICS.join(", "),
                        defaults::RANKING_METRICS.join(", ")
                    )
                }),
                "see Metrics",
            ),
            option(
                "relevant",
                "float",
                Rule(|| {
                    format!(
                        "{} (ratings), {} (clicks)",
                        defaults::RELEVANT_RATING,
                        defaults::RELEVANT_CLICK
                    )
                }),
                "a test event is relevant for ranking metrics when its label is at least this",
            ),
            option(
                "candidates",
                "string or mapping",
                Rule(|| format!("`{}`", defaults::CANDIDATES)),
                "what ranking metrics rank for a test user: `all`, `test_items` or \
                 `{sampled: {negatives: N}}` (below)",
            ),
        ],
        plan: build::plan_evaluate,
    },
];

/// A model family a `train` node trains (its key under `train:`).
#[derive(Debug)]
pub struct FamilyDef {
    /// The key, as written under `train:`.
    pub key: &'static str,
    /// What it is, in one sentence.
    pub summary: &'static str,
    /// Whether it reads item text vectors (so its train node reads an `embed` node).
    pub reads_text: bool,
    /// Plans the options only this family reads (the shared ones are planned for all).
    pub(crate) plan: FamilyPlanner,
}

/// Every model family, in the order the README lists them.
pub static FAMILIES: &[FamilyDef] = &[
    FamilyDef {
        key: "mf",
        summary: "biased matrix factorisation: the global mean plus a user and an item bias \
                  plus the dot product of a user and an item factor row",
        reads_text: false,
        plan: build::plan_mf,
    },
    FamilyDef {
        key: "text_mf",
        summary: "biased MF whose item row adds a learned linear projection of the item's text \
                  vector, so an item without labels is scored from its text alone",
        reads_text: true,
        plan: build::plan_text_mf,
    },
    FamilyDef {
        key: "two_tower",
        summary: "two MLP towers with dropout, over a user ID embedding and over an item ID \
                  embedding joined with the item's text vector; the score is the dot product \
                  of their outputs plus biases",
        reads_text: true,
        plan: build::plan_two_tower,
    },
];

/// The family `key`.
pub fn family(key: &str) -> Option<&'static FamilyDef> {
    FAMILIES.iter().find(|f| f.key == key)
}

/// Whether family `family` takes the train option `name` (an unknown option: no).
pub fn takes_train_option(name: &str, family: &str) -> bool {
    TRAIN_OPTIONS
        .iter()
        .find(|o| o.name == name)
        .is_some_and(|o| o.families.is_empty() || o.families.contains(&family))
}

/// The families that take train option `name`, in words joined by `conjunction`
/// (`` `text_mf` and `two_tower` `` with `"and"`).
pub fn families_taking(name: &str, conjunction: &str) -> String {
    FAMILIES
        .iter()
        .filter(|f| takes_train_option(name, f.key))
        .map(|f| format!("`{}`", f.key))
        .collect::<Vec<_>>()
        .join(&format!(" {conjunction} "))
}

/// The families of a train option, as the reference shows them.
fn families_cell(option: &OptionDef) -> String {
    if option.families.is_empty() {
        return "all".to_owned();
    }
    let names: Vec<String> = option.families.iter().map(|f| format!("`{f}`")).collect();
    names.join(", ")
}

/// The options of a `train` node's family (`train: {mf: {...}}`).
pub static TRAIN_OPTIONS: &[OptionDef] = &[
    train_option(
        "dim",
        "integer",
        Int(defaults::DIM),
        &[],
        "factor / tower output dimension",
    ),
    train_option(
        "init_std",
        "float",
        Float(defaults::INIT_STD),
        &[],
        "std of the normal initialisation of user rows (`text_mf`, `two_tower` start item rows at zero)",
    ),
    train_option(
        "members",
        "integer",
        Int(defaults::MEMBERS),
        &[],
        "ensemble members, each trained on its own Poisson(1) bootstrap of the labels",
    ),
    train_option(
        "optimizer",
        "mapping",
        Text("`{sgd: {}}`"),
        &[],
        "`{sgd: {lr, weight_decay}}` or `{adam: {lr, beta1, beta2, eps, weight_decay}}` (below); only the rows of a batch are read and written",
    ),
    train_option(
        "optimizer.sgd.lr",
        "float",
        Float(defaults::SGD_LR),
        &[],
        "SGD's learning rate",
    ),
    train_option(
        "optimizer.sgd.weight_decay",
        "float",
        Float(defaults::SGD_WEIGHT_DECAY),
        &[],
        "SGD's L2 regularisation on touched rows",
    ),
    train_option(
        "optimizer.adam.lr",
        "float",
        Float(defaults::ADAM_LR),
        &[],
        "Adam's learning rate",
    ),
    train_option(
        "optimizer.adam.beta1",
        "float",
        Float(defaults::ADAM_BETA1),
        &[],
        "Adam's first-moment decay",
    ),
    train_option(
        "optimizer.adam.beta2",
        "float",
        Float(defaults::ADAM_BETA2),
        &[],
        "Adam's second-moment decay",
    ),
    train_option(
        "optimizer.adam.eps",
        "float",
        Float(defaults::ADAM_EPS),
        &[],
        "Adam's denominator epsilon",
    ),
    train_option(
        "optimizer.adam.weight_decay",
        "float",
        Float(defaults::ADAM_WEIGHT_DECAY),
        &[],
        "Adam's decoupled L2 regularisation on touched rows",
    ),
    train_option(
        "epochs",
        "integer",
        Int(defaults::EPOCHS),
        &[],
        "passes over the initial labels",
    ),
    train_option(
        "epochs_per_round",
        "integer",
        Int(defaults::EPOCHS_PER_ROUND),
        &[],
        "passes per round after new labels arrive",
    ),
    train_option(
        "refit",
        "string",
        Rule(|| format!("`{}`", defaults::REFIT)),
        &[],
        "`all_labels`: train over every label each round; `new_labels`: fine-tune on the round's new labels (touches only their rows, so re-scoring is incremental); `rehearsal`: the new labels plus `rehearsal` x as many earlier ones, seeded. The default was chosen by a study, below",
    ),
    train_option(
        "rehearsal",
        "integer",
        Int(defaults::REHEARSAL),
        &[],
        "with `refit: rehearsal`: earlier labels per new label",
    ),
    train_option(
        "early_stopping",
        "mapping",
        DefaultValue::None,
        &[],
        "`{metric: ndcg@10}` (and `patience`, `max_epochs`, below): the initial fit runs epoch by epoch while the **validation** metric improves (needs a validation split, the metric in `evaluate` and one train node), then trains exactly the best number of epochs; round 0 reports it as `early_stopping_epochs`",
    ),
    train_option(
        "early_stopping.patience",
        "integer",
        Int(defaults::PATIENCE),
        &[],
        "epochs without improvement before stopping",
    ),
    train_option(
        "early_stopping.max_epochs",
        "integer",
        Int(defaults::MAX_EPOCHS),
        &[],
        "most epochs to run",
    ),
    train_option(
        "batch_size",
        "integer",
        Int(defaults::BATCH_SIZE),
        &[],
        "samples per gradient step",
    ),
    train_option(
        "loss",
        "string",
        Rule(|| {
            format!(
                "`{}` (ratings), `{}` (clicks)",
                Loss::default_for(LabelKind::Rating),
                Loss::default_for(LabelKind::Click)
            )
        }),
        &[],
        "`squared`: half squared error; `cross_entropy`: binary cross-entropy on a logit; `bpr`: Bayesian personalised ranking on implicit feedback (below)",
    ),
    train_option(
        "hidden",
        "integer",
        Int(defaults::HIDDEN),
        &["two_tower"],
        "hidden width of each tower",
    ),
    train_option(
        "dropout",
        "float",
        Float(defaults::DROPOUT),
        &["two_tower"],
        "dropout probability of the hidden units",
    ),
    train_option(
        "mc_dropout",
        "integer",
        DefaultValue::None,
        &["two_tower"],
        "Monte Carlo dropout passes exported per row: the uncertainty, instead of `members`",
    ),
    train_option(
        "tune",
        "mapping",
        DefaultValue::None,
        &["text_mf", "two_tower"],
        "fine-tune the encoder's top transformer layers with the recommender's loss (`{layers: 1}`, below; pool and selection protocols); without it the encoder is frozen",
    ),
    train_option(
        "tune.layers",
        "integer",
        Int(defaults::TUNE_LAYERS),
        &["text_mf", "two_tower"],
        "top transformer layers trained; the layers below run once per item and stay frozen",
    ),
    train_option(
        "tune.lora",
        "mapping",
        DefaultValue::None,
        &["text_mf", "two_tower"],
        "train low-rank adapters of the tuned layers' attention query and value projections (LoRA, `W + alpha/rank B A`, `B` starting at 0) instead of all their weights",
    ),
    train_option(
        "tune.lora.rank",
        "integer",
        Int(defaults::LORA_RANK),
        &["text_mf", "two_tower"],
        "the adapters' rank `r` (each adapted weight trains `r (in + out)` values)",
    ),
    train_option(
        "tune.lora.alpha",
        "float",
        Float(defaults::LORA_ALPHA),
        &["text_mf", "two_tower"],
        "the adapters' scale numerator: the update is multiplied by `alpha / rank`",
    ),
    train_option(
        "tune.lr",
        "float",
        Rule(|| format!("{} ({} with `lora`)", defaults::TUNE_LR, defaults::LORA_LR)),
        &["text_mf", "two_tower"],
        "Adam's learning rate for the tuned layers (or their adapters)",
    ),
    train_option(
        "tune.items_per_step",
        "integer",
        Int(defaults::TUNE_ITEMS_PER_STEP),
        &["text_mf", "two_tower"],
        "most items whose text a gradient step back-propagates through the tuned layers (the batch's first distinct items); every item's vector is recomputed after each pass",
    ),
];

/// The operator with key `key`.
pub fn operator(key: &str) -> Option<&'static OperatorDef> {
    OPERATORS.iter().find(|op| op.key == key)
}

/// Option `name` of the `operator` node: for `train` a train option, for `select` one of the
/// operator's or (the first with that name) a strategy's own.
pub fn option_of(operator: &str, name: &str) -> Option<&'static OptionDef> {
    let own: &'static [OptionDef] = match operator {
        "train" => TRAIN_OPTIONS,
        _ => self::operator(operator).map_or(&[], |op| op.options),
    };
    let strategies = STRATEGIES
        .iter()
        .filter(|_| operator == "select")
        .flat_map(|s| s.options);
    own.iter().chain(strategies).find(|o| o.name == name)
}

/// Escapes a cell of a Markdown table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Writes `options` as a Markdown table titled `title`.
fn options_table(out: &mut String, title: &str, options: &[OptionDef]) {
    let _ = write!(
        out,
        "\n{title}:\n\n| key | type | default | meaning |\n|---|---|---|---|\n"
    );
    for o in options {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            o.name,
            o.ty,
            o.default,
            cell(o.doc)
        );
    }
}

/// The README's generated reference: the operators, each operator's options, the train
/// options, the strategies and the metrics, as Markdown tables.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("| operator | inputs | what it does |\n|---|---|---|\n");
    for op in OPERATORS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            op.key,
            op.inputs,
            cell(op.summary)
        );
    }
    for op in OPERATORS.iter().filter(|op| !op.options.is_empty()) {
        options_table(&mut out, &format!("`{}:` options", op.key), op.options);
    }
    out.push_str(
        "\nModel families (the key under `train:`; `recsift ops FAMILY` lists the options \
         each takes):\n\n| family | reads item text | what it is |\n|---|---|---|\n",
    );
    for f in FAMILIES {
        let text = if f.reads_text { "yes" } else { "no" };
        let _ = writeln!(out, "| `{}` | {text} | {} |", f.key, cell(f.summary));
    }
    out.push_str(
        "\n`train:` options (under the family's key, e.g. `train: {mf: {dim: 32}}`):\n\n\
         | key | type | default | families | meaning |\n|---|---|---|---|---|\n",
    );
    for o in TRAIN_OPTIONS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            o.name,
            o.ty,
            o.default,
            families_cell(o),
            cell(o.doc)
        );
    }
    out.push_str(
        "\nStrategies (`select: {strategy: ...}`; a strategy's own options sit beside \
         `strategy` and `budget`):\n\n| name | ranks pool samples by | its options |\n|---|---|---|\n",
    );
    for s in STRATEGIES {
        let options: Vec<String> = s.options.iter().map(|o| format!("`{}`", o.name)).collect();
        let options = if options.is_empty() {
            "none".to_owned()
        } else {
            options.join(", ")
        };
        let _ = writeln!(out, "| `{}` | {} | {options} |", s.name, cell(s.doc));
    }
    for s in STRATEGIES.iter().filter(|s| !s.options.is_empty()) {
        let title = format!("`strategy: {}` options (under `select:`)", s.name);
        options_table(&mut out, &title, s.options);
    }
    out.push_str("\nMetrics (`evaluate: {metrics: [...]}`; `K` is any cutoff):\n\n| name | meaning |\n|---|---|\n");
    for m in METRICS {
        let _ = writeln!(out, "| `{}` | {} |", m.name, cell(m.doc));
    }
    out
}

/// Writes option `o` as `recsift ops` lists it, `more` after its default.
fn option_entry(out: &mut String, o: &OptionDef, more: &str) {
    let _ = writeln!(
        out,
        "  {} ({}, default {}{more})\n      {}",
        o.name, o.ty, o.default, o.doc
    );
}

/// What `recsift ops` prints: every operator with its summary, or, for `name` (an operator,
/// `train`'s families, a strategy or a metric), its whole entry.
pub fn describe(name: Option<&str>) -> Result<String, String> {
    let mut out = String::new();
    let Some(name) = name else {
        out.push_str("operators (recsift ops NAME for the options):\n");
        for op in OPERATORS {
            let _ = writeln!(
                out,
                "  {:<9} <- {}\n            {}",
                op.key, op.inputs, op.summary
            );
        }
        out.push_str("model families (under `train:`):\n");
        for f in FAMILIES {
            let _ = writeln!(out, "  {:<22} {}", f.key, f.summary);
        }
        out.push_str("strategies:\n");
        for s in STRATEGIES {
            let _ = writeln!(out, "  {:<22} {}", s.name, s.doc);
        }
        out.push_str("metrics:\n");
        for m in METRICS {
            let _ = writeln!(out, "  {:<12} {}", m.name, m.doc);
        }
        return Ok(out);
    };
    if let Some(op) = operator(name) {
        let _ = writeln!(out, "{} <- {}\n  {}", op.key, op.inputs, op.summary);
        let options = if op.key == "train" {
            TRAIN_OPTIONS
        } else {
            op.options
        };
        for o in options {
            let families = if op.key == "train" {
                format!(", families {}", families_cell(o))
            } else {
                String::new()
            };
            option_entry(&mut out, o, &families);
        }
        return Ok(out);
    }
    if let Some(f) = family(name) {
        let text = if f.reads_text {
            ", reads item text (an `embed` node)"
        } else {
            ""
        };
        let _ = writeln!(out, "family {} (train){text}\n  {}", f.key, f.summary);
        for o in TRAIN_OPTIONS
            .iter()
            .filter(|o| takes_train_option(o.name, f.key))
        {
            option_entry(&mut out, o, "");
        }
        return Ok(out);
    }
    if let Some(s) = crate::strategy::Strategy::by_name(name) {
        let _ = writeln!(out, "strategy {}: {}", s.name, s.doc);
        for o in s.options {
            option_entry(&mut out, o, "");
        }
        return Ok(out);
    }
    if let Some(m) = METRICS.iter().find(|m| m.is_named(name)) {
        return Ok(format!("metric {}: {}\n", m.name, m.doc));
    }
    let known = OPERATORS
        .iter()
        .map(|op| op.key)
        .chain(FAMILIES.iter().map(|f| f.key))
        .chain(STRATEGIES.iter().map(|s| s.name))
        .chain(METRICS.iter().map(|m| m.name));
    Err(match crate::suggest::closest(name, known) {
        Some(best) => {
            format!(
                "no operator, model family, strategy or metric `{name}`; did you mean `{best}`?"
            )
        }
        None => format!(
            "no operator, model family, strategy or metric `{name}`; `recsift ops` lists them"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_reference_is_the_generated_one() {
        let readme = include_str!("../../README.md");
        let generated = markdown();
        assert!(
            readme.contains(&generated),
            "README.md's pipeline reference differs from the registry: paste the output of \
             `recsift ops --markdown` between its `generated` markers"
        );
    }

    #[test]
    fn every_operator_key_has_an_entry_and_names_are_described() {
        for key in crate::spec::OPERATOR_KEYS {
            assert!(operator(key).is_some(), "{key}");
        }
        assert!(describe(Some("fuse")).unwrap().contains("learn"));
        assert!(
            describe(Some("train"))
                .unwrap()
                .contains("epochs_per_round")
        );
        let coreset = describe(Some("coreset")).unwrap();
        assert!(coreset.starts_with("strategy coreset: "), "{coreset}");
        assert!(
            coreset.contains("\n  space (") && coreset.contains("\n  candidates ("),
            "{coreset}"
        );
        assert_eq!(describe(Some("random")).unwrap().lines().count(), 1);
        for name in ["ndcg@K", "ndcg", "ndcg@10"] {
            assert!(
                describe(Some(name)).unwrap().starts_with("metric ndcg@K: "),
                "{name}"
            );
        }
        assert!(
            describe(Some("fusee"))
                .unwrap_err()
                .contains("did you mean `fuse`")
        );
    }

    #[test]
    fn the_options_only_some_strategies_take_are_exactly_those_the_registry_lists() {
        use crate::spec::schema::SelectSpec;
        let mut listed: Vec<&str> = STRATEGIES
            .iter()
            .flat_map(|s| s.options.iter().map(|o| o.name))
            .collect();
        listed.sort_unstable();
        listed.dedup();
        let mut read = SelectSpec::STRATEGY_OPTIONS.to_vec();
        read.sort_unstable();
        assert_eq!(listed, read);
        for name in SelectSpec::STRATEGY_OPTIONS {
            let value = if name == "space" { "text" } else { "50" };
            let yaml = format!("{{strategy: coreset, budget: 5, {name}: {value}}}");
            let spec: SelectSpec = serde_yaml::from_str(&yaml).unwrap();
            assert_eq!(spec.written_strategy_options(), [name]);
        }
        assert_eq!(
            strategies_taking("candidates"),
            "`coreset` and `uncertainty_diversity`"
        );
        assert_eq!(
            option_of("select", "candidates")
                .unwrap()
                .default
                .to_string(),
            "10 x budget"
        );
        assert_eq!(option_of("select", "budget").unwrap().name, "budget");
        assert!(option_of("evaluate", "space").is_none());
    }

    #[test]
    fn every_family_key_is_a_train_key_and_lists_exactly_the_options_it_takes() {
        for f in FAMILIES {
            let yaml = format!("{{{}: {{}}}}", f.key);
            let spec: crate::spec::schema::TrainSpec = serde_yaml::from_str(&yaml).unwrap();
            assert!(spec.family(f.key).is_some(), "{}", f.key);
        }
        let mf = describe(Some("mf")).unwrap();
        assert!(mf.starts_with("family mf (train)\n"), "{mf}");
        assert!(
            mf.contains("\n  dim (") && !mf.contains("\n  hidden ("),
            "{mf}"
        );
        assert!(!mf.contains("\n  tune ("), "{mf}");
        let two_tower = describe(Some("two_tower")).unwrap();
        assert!(two_tower.contains("reads item text"), "{two_tower}");
        assert!(two_tower.contains("\n  hidden (") && two_tower.contains("\n  tune ("));
        assert!(takes_train_option("tune", "text_mf") && !takes_train_option("tune", "mf"));
        assert_eq!(families_taking("tune", "and"), "`text_mf` and `two_tower`");
        assert_eq!(
            families_taking("dim", "or"),
            "`mf` or `text_mf` or `two_tower`"
        );
    }
}
