//! The model families a `train` node trains, and the train options with the families that
//! take each.

use super::DefaultValue::{Float, Int, Rule, Text};
use super::{DefaultValue, OptionDef, defaults, train_option};
use crate::data::LabelKind;
use crate::plan::build::{self, FamilyPlanner};
use crate::scoring::Loss;

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
