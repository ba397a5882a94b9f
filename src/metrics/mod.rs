//! Test-set metrics.
//!
//! Rating metrics (`rmse`, `mae`) and click metrics (`auc`, `logloss`) are pure functions of
//! (prediction, label) pairs over every test event ([`pointwise`]).
//!
//! Ranking metrics (`ndcg@K`, `recall@K`, `precision@K`, `hit@K`, `mrr@K`, `map@K`) read each
//! test user's ranked list of candidates, best first ([`RankedUser`]); which items are
//! candidates (the whole catalogue, the user's test items, or sampled negatives) is decided
//! by the caller (`driver::evaluation`). An item is relevant when it is one of the user's
//! test items with a label of at least the `relevant` threshold; users without a relevant
//! test item are not averaged over. Gains are binary with the log2 discount; `recall@K`
//! divides by the user's relevant items, `map@K` by `min(K, relevant)` (as RecBole does).
//! The catalogue metrics `coverage@K` (share of the catalogue in any top-K list) and
//! `gini@K` (Gini index of how often each item appears in the top-K lists; 0 is perfectly
//! even exposure) describe the lists of the same users.

pub mod latency;
pub mod ranking;
pub mod topk;

use std::fmt;

pub use ranking::{RankedUser, ranking_metrics};

/// A metric a pipeline can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Root mean squared error.
    Rmse,
    /// Mean absolute error.
    Mae,
    /// Normalised discounted cumulative gain of each user's top K.
    Ndcg(usize),
    /// Share of a user's relevant test items found in the top K.
    Recall(usize),
    /// Share of the top K that is relevant.
    Precision(usize),
    /// Whether any relevant item is in the top K.
    Hit(usize),
    /// Reciprocal rank of the first relevant item in the top K (0 when none is).
    Mrr(usize),
    /// Mean of the precision at each relevant position of the top K, over `min(K, relevant)`.
    Map(usize),
    /// Share of the catalogue that appears in at least one user's top K.
    Coverage(usize),
    /// Gini index of the items' appearances in the users' top-K lists.
    Gini(usize),
    /// Area under the ROC curve over all test events (clicks).
    Auc,
    /// Mean binary cross-entropy (clicks).
    LogLoss,
}

/// One metric a pipeline can ask for: its name, its doc, and how the name becomes a
/// [`Metric`]. The one list of metrics: [`Metric::parse`] reads it, and so do the README's
/// metric table, `recsift ops` and the planner's messages.
#[derive(Debug)]
pub struct MetricDef {
    /// Its name as written; a ranking metric's ends in `@K`, `K` being any positive cut-off.
    pub name: &'static str,
    /// What it measures, in one line.
    pub doc: &'static str,
    /// The metric at a cut-off (which the metrics without one ignore).
    make: fn(usize) -> Metric,
}

impl MetricDef {
    /// The name without `@K`.
    fn base(&self) -> &'static str {
        self.name.strip_suffix("@K").unwrap_or(self.name)
    }

    /// Whether it is written with a cut-off (`ndcg@10`).
    fn takes_cutoff(&self) -> bool {
        self.name.ends_with("@K")
    }

    /// Whether `name` names this metric: as listed (`ndcg@K`), without its cut-off
    /// (`ndcg`), or with one (`ndcg@10`).
    pub fn is_named(&self, name: &str) -> bool {
        name == self.name || name.split('@').next() == Some(self.base())
    }
}

/// Every metric, in the order the README lists them.
pub static METRICS: &[MetricDef] = &[
    MetricDef {
        name: "rmse",
        doc: "root mean squared error over test events (predictions clipped to the training rating scale)",
        make: |_| Metric::Rmse,
    },
    MetricDef {
        name: "mae",
        doc: "mean absolute error over test events",
        make: |_| Metric::Mae,
    },
    MetricDef {
        name: "auc",
        doc: "ROC AUC over all test events (click labels)",
        make: |_| Metric::Auc,
    },
    MetricDef {
        name: "logloss",
        doc: "mean binary cross-entropy (click labels)",
        make: |_| Metric::LogLoss,
    },
    MetricDef {
        name: "ndcg@K",
        doc: "NDCG of each user's top K (binary relevance, log2 discount), mean over test users with a relevant item",
        make: Metric::Ndcg,
    },
    MetricDef {
        name: "recall@K",
        doc: "relevant items in the top K / the user's relevant test items, mean over test users",
        make: Metric::Recall,
    },
    MetricDef {
        name: "precision@K",
        doc: "relevant items in the top K / K, mean over test users",
        make: Metric::Precision,
    },
    MetricDef {
        name: "hit@K",
        doc: "1 when the top K holds a relevant item, else 0; mean over test users",
        make: Metric::Hit,
    },
    MetricDef {
        name: "mrr@K",
        doc: "1 / rank of the first relevant item in the top K (0 if none), mean over test users",
        make: Metric::Mrr,
    },
    MetricDef {
        name: "map@K",
        doc: "sum of precision@i at each relevant rank i <= K / min(K, relevant), mean over test users (as RecBole)",
        make: Metric::Map,
    },
    MetricDef {
        name: "coverage@K",
        doc: "distinct items in the test users' top-K lists / catalogue size",
        make: Metric::Coverage,
    },
    MetricDef {
        name: "gini@K",
        doc: "Gini index of item appearances in the test users' top-K lists (0 = even)",
        make: Metric::Gini,
    },
];

impl Metric {
    /// Parses a metric name such as `rmse` or `ndcg@10`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let (base, cutoff) = match name.split_once('@') {
            None => (name, None),
            Some((base, cutoff)) => (base, Some(cutoff)),
        };
        let def = METRICS
            .iter()
            .find(|d| d.base() == base && d.takes_cutoff() == cutoff.is_some())
            .ok_or_else(|| format!("unknown metric `{name}`"))?;
        match cutoff.map(str::parse::<usize>) {
            None => Ok((def.make)(0)),
            Some(Ok(k)) if k > 0 => Ok((def.make)(k)),
            Some(_) => Err(format!(
                "`{name}`: the cut-off after `@` must be a positive integer, e.g. `ndcg@10`"
            )),
        }
    }

    /// The cut-off of a metric computed from ranked lists (per-user or catalogue-level).
    pub fn cutoff(&self) -> Option<usize> {
        match *self {
            Metric::Ndcg(k)
            | Metric::Recall(k)
            | Metric::Precision(k)
            | Metric::Hit(k)
            | Metric::Mrr(k)
            | Metric::Map(k)
            | Metric::Coverage(k)
            | Metric::Gini(k) => Some(k),
            Metric::Rmse | Metric::Mae | Metric::Auc | Metric::LogLoss => None,
        }
    }

    /// Whether the metric is computed from ranked lists.
    pub fn is_ranking(&self) -> bool {
        self.cutoff().is_some()
    }

    /// Whether the metric compares predictions with label values (and so needs a model that
    /// predicts labels, not only a ranking score).
    pub fn compares_labels(&self) -> bool {
        matches!(
            self,
            Metric::Rmse | Metric::Mae | Metric::Auc | Metric::LogLoss
        )
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Rmse => f.write_str("rmse"),
            Metric::Mae => f.write_str("mae"),
            Metric::Ndcg(k) => write!(f, "ndcg@{k}"),
            Metric::Recall(k) => write!(f, "recall@{k}"),
            Metric::Precision(k) => write!(f, "precision@{k}"),
            Metric::Hit(k) => write!(f, "hit@{k}"),
            Metric::Mrr(k) => write!(f, "mrr@{k}"),
            Metric::Map(k) => write!(f, "map@{k}"),
            Metric::Coverage(k) => write!(f, "coverage@{k}"),
            Metric::Gini(k) => write!(f, "gini@{k}"),
            Metric::Auc => f.write_str("auc"),
            Metric::LogLoss => f.write_str("logloss"),
        }
    }
}

/// One test event's prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// The model's prediction.
    pub prediction: f32,
    /// The true label.
    pub label: f32,
}

/// The value of a pointwise metric (`rmse`, `mae`, `auc`, `logloss`) over `scored`; `NaN`
/// when it has no value (no events, one class only) or `metric` ranks.
pub fn pointwise(metric: Metric, scored: &[Scored]) -> f64 {
    match metric {
        Metric::Rmse => mean(scored.iter().map(|s| sq(s.prediction - s.label))).sqrt(),
        Metric::Mae => mean(
            scored
                .iter()
                .map(|s| f64::from((s.prediction - s.label).abs())),
        ),
        Metric::Auc => auc(scored),
        Metric::LogLoss => mean(scored.iter().map(|s| {
            let p = f64::from(s.prediction).clamp(1e-7, 1.0 - 1e-7);
            let y = f64::from(s.label);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })),
        _ => f64::NAN,
    }
}

fn sq(x: f32) -> f64 {
    f64::from(x) * f64::from(x)
}

/// The mean of `values`, `NaN` when there are none.
pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// ROC AUC by the rank-sum formula, ties counted half.
fn auc(scored: &[Scored]) -> f64 {
    let mut order: Vec<&Scored> = scored.iter().collect();
    order.sort_by(|a, b| a.prediction.total_cmp(&b.prediction));
    let positives = scored.iter().filter(|s| s.label >= 0.5).count();
    let negatives = scored.len() - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && order[j].prediction == order[i].prediction {
            j += 1;
        }
        let mid_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += mid_rank * order[i..j].iter().filter(|s| s.label >= 0.5).count() as f64;
        i = j;
    }
    (rank_sum - (positives * (positives + 1)) as f64 / 2.0) / (positives * negatives) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(prediction: f32, label: f32) -> Scored {
        Scored { prediction, label }
    }

    fn value(metric: &str, scored: &[Scored]) -> f64 {
        pointwise(Metric::parse(metric).unwrap(), scored)
    }

    #[test]
    fn rating_errors() {
        let data = [s(3.0, 4.0), s(5.0, 4.0), s(2.0, 2.0)];
        assert!((value("rmse", &data) - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((value("mae", &data) - 2.0 / 3.0).abs() < 1e-12);
        assert!(value("rmse", &[]).is_nan());
    }

    #[test]
    fn auc_counts_ties_half() {
        let data = [s(0.2, 0.0), s(0.8, 1.0), s(0.5, 1.0), s(0.5, 0.0)];
        assert!((value("auc", &data) - 3.5 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn names_parse_and_print() {
        for name in [
            "rmse",
            "mae",
            "ndcg@10",
            "recall@5",
            "precision@3",
            "hit@1",
            "mrr@20",
            "map@10",
            "coverage@10",
            "gini@10",
            "auc",
            "logloss",
        ] {
            assert_eq!(Metric::parse(name).unwrap().to_string(), name);
        }
        assert!(
            Metric::parse("ndcg@0")
                .unwrap_err()
                .contains("positive integer")
        );
        assert!(Metric::parse("rsme").is_err());
        for def in METRICS {
            let name = def.name.replace('K', "10");
            assert_eq!(Metric::parse(&name).unwrap().to_string(), name);
        }
        assert!(Metric::parse("rmse@5").is_err() && Metric::parse("ndcg").is_err());
    }
}
