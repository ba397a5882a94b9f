//! The selection strategies' registry: each strategy's name, doc, what it reads, its own
//! `select:` options and its planner, in one entry. The keys the strategies rank by live in
//! [`crate::strategy`].

use super::{DefaultValue, OptionDef, defaults, option};
use crate::plan::build::{self, StrategyPlanner};
use crate::strategy::Strategy;

/// `space`, an option of the strategies that pick a batch by greedy k-center.
const SPACE: OptionDef = option(
    "space",
    "string",
    DefaultValue::Text("`text` with an `embed` node, else `factors`"),
    "where k-center measures distances: `text` (the frozen encoder's item vectors, also \
     when a model fine-tunes it) or `factors` (the scored model's user row ++ item row)",
);

/// The default of the k-center strategies' `candidates`.
const CANDIDATES: DefaultValue =
    DefaultValue::Rule(|| format!("{} x budget", defaults::CANDIDATES_PER_BUDGET));

/// One registered strategy: its YAML name, what it does, and what it needs.
#[derive(Clone, Copy, Debug)]
pub struct StrategyDef {
    /// The strategy.
    pub strategy: Strategy,
    /// Its name in YAML.
    pub name: &'static str,
    /// One line for `recsift ops`, the JSON schema and the README.
    pub doc: &'static str,
    /// Whether it reads labels (so it is only honest where labels are known).
    pub needs_labels: bool,
    /// Whether it reads the model's uncertainty (so the model needs several members).
    pub needs_uncertainty: bool,
    /// Whether its key reads the model's scores (prediction, uncertainty or loss). A
    /// strategy that reads neither them nor the item statistics ranks the pool by its
    /// samples alone, and the engine renders nothing for it.
    pub reads_scores: bool,
    /// Whether its key or its groups read the item statistics (an item's count and entropy
    /// of known labels); only then does the engine maintain them, since every new label
    /// changes its item's statistics in every pool sample of the item.
    pub reads_item_statistics: bool,
    /// Its own options under `select:`, beside the ones every strategy takes (`strategy`,
    /// `budget`, `per_user`).
    pub options: &'static [OptionDef],
    /// Plans its own options: checks them against the rest of the pipeline and resolves
    /// their defaults.
    pub(crate) plan: StrategyPlanner,
}

/// Every strategy, in the order the README lists them.
pub static STRATEGIES: &[StrategyDef] = &[
    StrategyDef {
        strategy: Strategy::Random,
        name: "random",
        doc: "uniformly random samples (seeded): the baseline every strategy must beat",
        needs_labels: false,
        needs_uncertainty: false,
        reads_scores: false,
        reads_item_statistics: false,
        options: &[],
        plan: build::plan_top_of_key,
    },
    StrategyDef {
        strategy: Strategy::Uncertainty,
        name: "uncertainty",
        doc: "largest variance of the ensemble members' (or dropout passes') predictions",
        needs_labels: false,
        needs_uncertainty: true,
        reads_scores: true,
        reads_item_statistics: false,
        options: &[],
        plan: build::plan_top_of_key,
    },
    StrategyDef {
        strategy: Strategy::MaxLoss,
        name: "max_loss",
        doc: "largest loss against the true label (label-aware: for fully logged data; in the pool \
              protocol it reads the hidden labels, an oracle upper bound)",
        needs_labels: true,
        needs_uncertainty: false,
        reads_scores: true,
        reads_item_statistics: false,
        options: &[],
        plan: build::plan_top_of_key,
    },
    StrategyDef {
        strategy: Strategy::Popularity,
        name: "popularity",
        doc: "items with the most known labels first",
        needs_labels: false,
        needs_uncertainty: false,
        reads_scores: false,
        reads_item_statistics: true,
        options: &[],
        plan: build::plan_top_of_key,
    },
    StrategyDef {
        strategy: Strategy::Entropy,
        name: "entropy",
        doc: "items whose known labels disagree most (Shannon entropy of their distribution)",
        needs_labels: false,
        needs_uncertainty: false,
        reads_scores: false,
        reads_item_statistics: true,
        options: &[],
        plan: build::plan_top_of_key,
    },
    StrategyDef {
        strategy: Strategy::LogPopEntropy,
        name: "log_pop_entropy",
        doc: "log(1 + popularity) x entropy: popular items whose labels disagree",
        needs_labels: false,
        needs_uncertainty: false,
        reads_scores: false,
        reads_item_statistics: true,
        options: &[],
        plan: build::plan_top_of_key,
    },
    StrategyDef {
        strategy: Strategy::Stratified,
        name: "stratified",
        doc: "random within item-popularity strata (log2 buckets of the item's known labels), \
              the budget split evenly across strata: rare items get as many picks as popular ones",
        needs_labels: false,
        needs_uncertainty: false,
        reads_scores: false,
        reads_item_statistics: true,
        options: &[],
        plan: build::plan_top_of_key,
    },
    StrategyDef {
        strategy: Strategy::Coreset,
        name: "coreset",
        doc: "greedy k-center: among `candidates` seeded-random pool samples, repeatedly the one \
              farthest from every labelled sample and every pick, in `space: text` (item text \
              vectors; kept across rounds) or `factors` (user row ++ item row)",
        needs_labels: false,
        needs_uncertainty: false,
        reads_scores: false,
        reads_item_statistics: false,
        options: &[
            SPACE,
            option(
                "candidates",
                "integer",
                CANDIDATES,
                "the seeded-random pool samples k-center chooses from each round",
            ),
        ],
        plan: build::plan_k_center,
    },
    StrategyDef {
        strategy: Strategy::UncertaintyDiversity,
        name: "uncertainty_diversity",
        doc: "the `candidates` most uncertain samples, then greedy k-center among them so the \
              batch does not pile onto one region (`space: text` or `factors`)",
        needs_labels: false,
        needs_uncertainty: true,
        reads_scores: true,
        reads_item_statistics: false,
        options: &[
            SPACE,
            option(
                "candidates",
                "integer",
                CANDIDATES,
                "the most uncertain pool samples k-center chooses from each round",
            ),
        ],
        plan: build::plan_k_center,
    },
];

/// The strategies that take the `select:` option `name`, in words joined by `and`
/// (`` `coreset` and `uncertainty_diversity` ``).
pub fn strategies_taking(name: &str) -> String {
    let names: Vec<String> = STRATEGIES
        .iter()
        .filter(|def| def.options.iter().any(|o| o.name == name))
        .map(|def| format!("`{}`", def.name))
        .collect();
    names.join(" and ")
}
