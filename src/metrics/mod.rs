//! Test-set metrics: pure functions of (user, prediction, label) triples.
//!
//! Rating metrics (`rmse`, `mae`) average over every test event. Ranking metrics
//! (`ndcg@K`, `recall@K`, `precision@K`) rank each user's test items by prediction, call an
//! item relevant when its label is at least the `relevant` threshold, and average over the
//! users that have at least one relevant test item. NDCG uses binary gains and the log2
//! discount. `auc` and `logloss` are for click labels.

pub mod latency;

use std::collections::BTreeMap;
use std::fmt;

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
    /// Area under the ROC curve over all test events (clicks).
    Auc,
    /// Mean binary cross-entropy (clicks).
    LogLoss,
}

/// Metric names with their documentation, for validation messages and the README.
pub static METRIC_DOCS: &[(&str, &str)] = &[
    ("rmse", "root mean squared error over test events"),
    ("mae", "mean absolute error over test events"),
    (
        "ndcg@K",
        "NDCG of each user's top K test items (binary relevance), mean over users",
    ),
    (
        "recall@K",
        "relevant items in the top K / the user's relevant test items, mean over users",
    ),
    (
        "precision@K",
        "relevant items in the top K / K, mean over users",
    ),
    ("auc", "ROC AUC over all test events (click labels)"),
    ("logloss", "mean binary cross-entropy (click labels)"),
];

impl Metric {
    /// Parses a metric name such as `rmse` or `ndcg@10`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let ranked = |k: &str, make: fn(usize) -> Metric| match k.parse::<usize>() {
            Ok(k) if k > 0 => Ok(make(k)),
            _ => Err(format!(
                "`{name}`: the cut-off after `@` must be a positive integer, e.g. `ndcg@10`"
            )),
        };
        match name.split_once('@') {
            None => match name {
                "rmse" => Ok(Metric::Rmse),
                "mae" => Ok(Metric::Mae),
                "auc" => Ok(Metric::Auc),
                "logloss" => Ok(Metric::LogLoss),
                _ => Err(format!("unknown metric `{name}`")),
            },
            Some(("ndcg", k)) => ranked(k, Metric::Ndcg),
            Some(("recall", k)) => ranked(k, Metric::Recall),
            Some(("precision", k)) => ranked(k, Metric::Precision),
            Some(_) => Err(format!("unknown metric `{name}`")),
        }
    }

    /// Whether the metric ranks items per user.
    pub fn is_ranking(&self) -> bool {
        matches!(
            self,
            Metric::Ndcg(_) | Metric::Recall(_) | Metric::Precision(_)
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
            Metric::Auc => f.write_str("auc"),
            Metric::LogLoss => f.write_str("logloss"),
        }
    }
}

/// One test event's prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// The user (ranking metrics group by it).
    pub user: u32,
    /// The model's prediction.
    pub prediction: f32,
    /// The true label.
    pub label: f32,
}

/// Computes `metrics` over `scored`; a metric without a defined value (no events, no user
/// with a relevant item) is `NaN`.
pub fn evaluate(metrics: &[Metric], scored: &[Scored], relevant: f32) -> Vec<(String, f64)> {
    let per_user = metrics
        .iter()
        .any(Metric::is_ranking)
        .then(|| group_by_user(scored));
    metrics
        .iter()
        .map(|metric| {
            let value = match metric {
                Metric::Rmse => mean(scored.iter().map(|s| sq(s.prediction - s.label))).sqrt(),
                Metric::Mae => mean(
                    scored
                        .iter()
                        .map(|s| f64::from((s.prediction - s.label).abs())),
                ),
                Metric::Ndcg(k) => {
                    ranking_mean(per_user.as_ref(), relevant, |ranked, r| ndcg(ranked, r, *k))
                }
                Metric::Recall(k) => ranking_mean(per_user.as_ref(), relevant, |ranked, r| {
                    hits(ranked, *k) / r as f64
                }),
                Metric::Precision(k) => ranking_mean(per_user.as_ref(), relevant, |ranked, _| {
                    hits(ranked, *k) / *k as f64
                }),
                Metric::Auc => auc(scored),
                Metric::LogLoss => mean(scored.iter().map(|s| {
                    let p = f64::from(s.prediction).clamp(1e-7, 1.0 - 1e-7);
                    let y = f64::from(s.label);
                    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
                })),
            };
            (metric.to_string(), value)
        })
        .collect()
}

fn sq(x: f32) -> f64 {
    f64::from(x) * f64::from(x)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Each user's (prediction, label) pairs, in input order.
fn group_by_user(scored: &[Scored]) -> BTreeMap<u32, Vec<(f32, f32)>> {
    let mut users: BTreeMap<u32, Vec<(f32, f32)>> = BTreeMap::new();
    for s in scored {
        users
            .entry(s.user)
            .or_default()
            .push((s.prediction, s.label));
    }
    users
}

/// Mean over users with at least one relevant item of `f(relevance in ranked order, R)`.
fn ranking_mean(
    per_user: Option<&BTreeMap<u32, Vec<(f32, f32)>>>,
    relevant: f32,
    f: impl Fn(&[bool], usize) -> f64,
) -> f64 {
    let users = per_user.expect("grouped when a ranking metric is asked for");
    mean(users.values().filter_map(|items| {
        let mut ranked: Vec<&(f32, f32)> = items.iter().collect();
        // Stable: ties keep input order, so results are deterministic.
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let relevance: Vec<bool> = ranked.iter().map(|(_, label)| *label >= relevant).collect();
        let r = relevance.iter().filter(|&&x| x).count();
        (r > 0).then(|| f(&relevance, r))
    }))
}

fn hits(ranked: &[bool], k: usize) -> f64 {
    ranked.iter().take(k).filter(|&&x| x).count() as f64
}

fn ndcg(ranked: &[bool], relevant: usize, k: usize) -> f64 {
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, r)| **r)
        .map(|(i, _)| discount(i))
        .sum();
    let ideal: f64 = (0..relevant.min(k)).map(discount).sum();
    dcg / ideal
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

    fn s(user: u32, prediction: f32, label: f32) -> Scored {
        Scored {
            user,
            prediction,
            label,
        }
    }

    fn value(metric: &str, scored: &[Scored]) -> f64 {
        evaluate(&[Metric::parse(metric).unwrap()], scored, 4.0)[0].1
    }

    #[test]
    fn rating_errors() {
        let data = [s(0, 3.0, 4.0), s(0, 5.0, 4.0), s(1, 2.0, 2.0)];
        assert!((value("rmse", &data) - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((value("mae", &data) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ndcg_and_recall_by_hand() {
        // User 0 ranks: 0.9 (irrelevant), 0.8 (relevant), 0.1 (relevant).
        let data = [
            s(0, 0.1, 5.0),
            s(0, 0.9, 1.0),
            s(0, 0.8, 4.0),
            s(1, 1.0, 1.0),
        ];
        let dcg = 1.0 / 3f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        assert!((value("ndcg@2", &data) - dcg / idcg).abs() < 1e-12);
        assert!((value("recall@2", &data) - 0.5).abs() < 1e-12);
        assert!((value("precision@2", &data) - 0.5).abs() < 1e-12);
        assert!((value("ndcg@3", &data) - (dcg + 0.5) / idcg).abs() < 1e-12);
    }

    #[test]
    fn users_without_relevant_items_are_skipped_and_empty_is_nan() {
        assert!(value("ndcg@10", &[s(0, 1.0, 1.0)]).is_nan());
        assert!(value("rmse", &[]).is_nan());
    }

    #[test]
    fn auc_counts_ties_half() {
        let data = [
            s(0, 0.2, 0.0),
            s(0, 0.8, 1.0),
            s(0, 0.5, 1.0),
            s(0, 0.5, 0.0),
        ];
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
    }
}
