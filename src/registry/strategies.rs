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

impl StrategyDef {
    /// Whether this strategy takes the `select:` option `name` (one of its own).
    pub fn takes(&self, name: &str) -> bool {
        self.options.iter().any(|o| o.name == name)
    }
}

/// The strategies that take the `select:` option `name`, in the registry's order.
pub fn strategies_with(name: &str) -> impl Iterator<Item = &'static StrategyDef> {
    STRATEGIES.iter().filter(move |def| def.takes(name))
}

impl Strategy {
    /// The registry entry named `name`.
    pub fn by_name(name: &str) -> Option<&'static StrategyDef> {
        STRATEGIES.iter().find(|def| def.name == name)
    }

    /// This strategy's registry entry.
    pub fn def(self) -> &'static StrategyDef {
        STRATEGIES
            .iter()
            .find(|def| def.strategy == self)
            .expect("every strategy is registered")
    }
}

/// The strategies that take the `select:` option `name`, in words joined by `and`
/// (`` `coreset` and `uncertainty_diversity` ``).
pub fn strategies_taking(name: &str) -> String {
    let names: Vec<String> = strategies_with(name)
        .map(|def| format!("`{}`", def.name))
        .collect();
    names.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeding::unit_hash;
    use crate::strategy::SampleSignals;

    /// Signals with every field set, so a key that reads one changes when it changes.
    fn signals(sample: u32) -> SampleSignals {
        SampleSignals {
            prediction: 3.0,
            variance: 0.5,
            loss: Some(2.0),
            item_labels: 9,
            item_entropy: 1.5,
            ..SampleSignals::unscored(sample)
        }
    }

    #[test]
    fn registry_names_round_trip() {
        for def in STRATEGIES {
            assert_eq!(Strategy::by_name(def.name).unwrap().strategy, def.strategy);
            assert_eq!(def.strategy.def().name, def.name);
        }
    }

    #[test]
    fn a_pipeline_names_each_strategy_by_its_registry_name() {
        for def in STRATEGIES {
            let read: Strategy = serde_yaml::from_str(def.name).unwrap();
            assert_eq!(read, def.strategy, "{}", def.name);
            assert_eq!(read.def().name, def.name);
        }
        assert!(serde_yaml::from_str::<Strategy>("Random").is_err());
    }

    #[test]
    fn exactly_the_strategies_that_read_item_statistics_say_so() {
        let base = signals(1);
        let other = SampleSignals {
            item_labels: 40,
            item_entropy: 0.25,
            ..base
        };
        for def in STRATEGIES {
            let key_reads = def.strategy.key(&base, 3) != def.strategy.key(&other, 3);
            // Stratified's key is random, but it spends its budget per popularity stratum.
            let groups_read = def.strategy == Strategy::Stratified;
            assert_eq!(
                def.reads_item_statistics,
                key_reads || groups_read,
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn exactly_the_strategies_whose_keys_read_scores_say_so() {
        let base = signals(1);
        let other = SampleSignals {
            prediction: -1.0,
            variance: 4.0,
            loss: Some(7.0),
            ..base
        };
        for def in STRATEGIES {
            let key_reads = def.strategy.key(&base, 3) != def.strategy.key(&other, 3);
            assert_eq!(def.reads_scores, key_reads, "{}", def.name);
            assert!(def.reads_scores || !def.needs_uncertainty, "{}", def.name);
            // What `recsift plan` says of a strategy that reads neither: a seeded hash.
            if !(def.reads_scores || def.reads_item_statistics) {
                assert_eq!(def.strategy.key(&base, 3), unit_hash(3, base.sample));
            }
        }
    }
}
