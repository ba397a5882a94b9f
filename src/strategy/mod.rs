//! Selection strategies: which pool samples get their labels revealed next.
//!
//! A pointwise strategy is a pure function of one sample's maintained signals (prediction,
//! uncertainty, loss, item statistics) to a key; the pool is kept ordered by that key in a
//! [`RankedPool`] fed by score changes, so picking the top `budget` never re-sorts the pool.
//! Ties are broken by a seeded hash of the sample, so equal keys do not favour low ids.
//!
//! The registry's [`crate::registry::STRATEGIES`] is the one list of strategies: their names,
//! docs, options and planners drive YAML validation, `recsift ops`, the README reference and
//! the engine.

pub mod coreset;
pub mod diverse;
pub mod ranked_pool;

pub use ranked_pool::RankedPool;

use crate::seeding::unit_hash;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a strategy may look at for one pool sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSignals {
    /// The sample's index.
    pub sample: u32,
    /// Mean prediction over members.
    pub prediction: f32,
    /// Variance of the members' predictions.
    pub variance: f32,
    /// Loss against the label, when the label is known to the strategy.
    pub loss: Option<f32>,
    /// Labelled events of the sample's item (its popularity among known labels).
    pub item_labels: u32,
    /// Shannon entropy (bits) of the item's labelled label distribution.
    pub item_entropy: f32,
}

impl SampleSignals {
    /// The signals of `sample` where no scores or item statistics are maintained (all zero):
    /// what a strategy that reads neither ranks by.
    pub fn unscored(sample: u32) -> Self {
        Self {
            sample,
            prediction: 0.0,
            variance: 0.0,
            loss: None,
            item_labels: 0,
            item_entropy: 0.0,
        }
    }
}

/// A selection strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Uniformly random.
    Random,
    /// Largest ensemble variance.
    Uncertainty,
    /// Largest loss against the known label.
    MaxLoss,
    /// Most labelled item.
    Popularity,
    /// Highest entropy of the item's labels.
    Entropy,
    /// log(1 + popularity) x entropy.
    LogPopEntropy,
    /// Uniformly random within item-popularity strata, the budget split evenly.
    Stratified,
    /// Greedy k-center over a seeded random candidate set: the batch covers the space.
    Coreset,
    /// The most uncertain candidates, diversified by greedy k-center.
    UncertaintyDiversity,
}

impl Strategy {
    /// The key a sample is ranked by (higher is selected first).
    pub fn key(self, signals: &SampleSignals, seed: u64) -> f64 {
        match self {
            Strategy::Random => unit_hash(seed, signals.sample),
            Strategy::Uncertainty => f64::from(signals.variance),
            Strategy::MaxLoss => f64::from(signals.loss.unwrap_or(0.0)),
            Strategy::Popularity => f64::from(signals.item_labels),
            Strategy::Entropy => f64::from(signals.item_entropy),
            Strategy::LogPopEntropy => {
                f64::from(signals.item_labels).ln_1p() * f64::from(signals.item_entropy)
            }
            Strategy::Stratified | Strategy::Coreset => unit_hash(seed, signals.sample),
            Strategy::UncertaintyDiversity => f64::from(signals.variance),
        }
    }
}

/// The popularity stratum of an item with `labels` known labels: 0 for none, then
/// `1 + floor(log2(labels))` (1, 2-3, 4-7, ...).
pub fn popularity_stratum(labels: u32) -> u32 {
    32 - labels.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(sample: u32) -> SampleSignals {
        SampleSignals {
            sample,
            prediction: 3.0,
            variance: 0.5,
            loss: Some(2.0),
            item_labels: 9,
            item_entropy: 1.5,
        }
    }

    #[test]
    fn keys_read_the_documented_signal() {
        let s = signals(1);
        assert_eq!(Strategy::Uncertainty.key(&s, 0), 0.5);
        assert_eq!(Strategy::MaxLoss.key(&s, 0), 2.0);
        assert_eq!(Strategy::Popularity.key(&s, 0), 9.0);
        assert_eq!(Strategy::Entropy.key(&s, 0), 1.5);
        assert!((Strategy::LogPopEntropy.key(&s, 0) - 10f64.ln() * 1.5).abs() < 1e-12);
    }

    #[test]
    fn strata_are_log2_buckets() {
        let strata: Vec<u32> = [0, 1, 2, 3, 4, 7, 8, 1000]
            .iter()
            .map(|&n| popularity_stratum(n))
            .collect();
        assert_eq!(strata, [0, 1, 2, 2, 3, 3, 4, 10]);
    }

    #[test]
    fn random_keys_are_uniform_and_seeded() {
        let keys: Vec<f64> = (0..100_000).map(|s| unit_hash(7, s)).collect();
        let mean = keys.iter().sum::<f64>() / keys.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!(keys.iter().all(|k| (0.0..1.0).contains(k)));
        assert_ne!(unit_hash(7, 3), unit_hash(8, 3));
        assert_eq!(unit_hash(7, 3), unit_hash(7, 3));
    }
}
