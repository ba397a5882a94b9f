//! Ranking metrics from each test user's ranked candidates.
//!
//! The caller ranks the candidates (see `driver::evaluation`) and hands over, per user with
//! at least one relevant test item, the best items in order and which of them are relevant.
//! Everything here is arithmetic on those lists.
//!
//! ```
//! use recsift::metrics::{Metric, RankedUser, ranking_metrics};
//!
//! // One user: the second-ranked item is the only relevant one.
//! let user = RankedUser { items: vec![7, 3, 9], hits: vec![false, true, false], relevant: 1 };
//! let values = ranking_metrics(&[Metric::Hit(2), Metric::Mrr(3)], &[user], 10);
//! assert_eq!(values, vec![1.0, 0.5]);
//! ```

use super::{Metric, mean};

/// One test user's ranked candidates.
#[derive(Clone, Debug, PartialEq)]
pub struct RankedUser {
    /// The best candidates, best first, at least as many as the largest cut-off asked for
    /// (fewer only when there are fewer candidates).
    pub items: Vec<u32>,
    /// `hits[r]`: whether `items[r]` is relevant.
    pub hits: Vec<bool>,
    /// The user's relevant test items (at least 1), ranked or not.
    pub relevant: usize,
}

/// The value of each of `metrics` (all ranking metrics) over `users`, in the same order;
/// `catalogue` is the number of items that could have been listed (for `coverage@K` and
/// `gini@K`). A metric without users is `NaN`.
pub fn ranking_metrics(metrics: &[Metric], users: &[RankedUser], catalogue: usize) -> Vec<f64> {
    metrics
        .iter()
        .map(|metric| match *metric {
            Metric::Ndcg(k) => per_user(users, |u| ndcg(u, k)),
            Metric::Recall(k) => per_user(users, |u| hits(u, k) / u.relevant as f64),
            Metric::Precision(k) => per_user(users, |u| hits(u, k) / k as f64),
            Metric::Hit(k) => per_user(users, |u| f64::from(hits(u, k) > 0.0)),
            Metric::Mrr(k) => per_user(users, |u| {
                u.hits
                    .iter()
                    .take(k)
                    .position(|&h| h)
                    .map_or(0.0, |r| 1.0 / (r + 1) as f64)
            }),
            Metric::Map(k) => per_user(users, |u| average_precision(u, k)),
            Metric::Coverage(k) => coverage(users, k, catalogue),
            Metric::Gini(k) => gini(users, k, catalogue),
            Metric::Rmse | Metric::Mae | Metric::Auc | Metric::LogLoss => f64::NAN,
        })
        .collect()
}

fn per_user(users: &[RankedUser], f: impl Fn(&RankedUser) -> f64) -> f64 {
    mean(users.iter().map(f))
}

fn hits(user: &RankedUser, k: usize) -> f64 {
    user.hits.iter().take(k).filter(|&&h| h).count() as f64
}

fn ndcg(user: &RankedUser, k: usize) -> f64 {
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = user
        .hits
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, h)| **h)
        .map(|(i, _)| discount(i))
        .sum();
    let ideal: f64 = (0..user.relevant.min(k)).map(discount).sum();
    dcg / ideal
}

fn average_precision(user: &RankedUser, k: usize) -> f64 {
    let mut found = 0usize;
    let mut sum = 0.0;
    for (r, &hit) in user.hits.iter().take(k).enumerate() {
        if hit {
            found += 1;
            sum += found as f64 / (r + 1) as f64;
        }
    }
    sum / user.relevant.min(k) as f64
}

/// How often each catalogue item appears in the users' top-K lists.
fn appearances(users: &[RankedUser], k: usize, catalogue: usize) -> Vec<u64> {
    let mut counts = vec![0u64; catalogue];
    for user in users {
        for &item in user.items.iter().take(k) {
            if let Some(c) = counts.get_mut(item as usize) {
                *c += 1;
            }
        }
    }
    counts
}

fn coverage(users: &[RankedUser], k: usize, catalogue: usize) -> f64 {
    if users.is_empty() || catalogue == 0 {
        return f64::NAN;
    }
    let shown = appearances(users, k, catalogue)
        .iter()
        .filter(|&&c| c > 0)
        .count();
    shown as f64 / catalogue as f64
}

/// `Σ_i (2i - n - 1) c_(i) / (n Σ c)` over the counts sorted ascending (`i` from 1), the
/// Gini index RecBole reports.
fn gini(users: &[RankedUser], k: usize, catalogue: usize) -> f64 {
    let mut counts = appearances(users, k, catalogue);
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    counts.sort_unstable();
    let n = catalogue as f64;
    let weighted: f64 = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (2.0 * (i + 1) as f64 - n - 1.0) * c as f64)
        .sum();
    weighted / (n * total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(items: &[u32], relevant_items: &[u32], relevant: usize) -> RankedUser {
        RankedUser {
            items: items.to_vec(),
            hits: items.iter().map(|i| relevant_items.contains(i)).collect(),
            relevant,
        }
    }

    fn one(metric: &str, users: &[RankedUser], catalogue: usize) -> f64 {
        ranking_metrics(&[Metric::parse(metric).unwrap()], users, catalogue)[0]
    }

    #[test]
    fn per_user_metrics_by_hand() {
        // Ranked: 5 (miss), 2 (hit), 8 (miss), 1 (hit); three relevant items in all.
        let u = [user(&[5, 2, 8, 1], &[2, 1, 9], 3)];
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let d = |i: usize| 1.0 / ((i + 2) as f64).log2();
        assert!(close(
            one("ndcg@4", &u, 10),
            (d(1) + d(3)) / (d(0) + d(1) + d(2))
        ));
        assert!(close(one("ndcg@2", &u, 10), d(1) / (d(0) + d(1))));
        assert!(close(one("recall@4", &u, 10), 2.0 / 3.0));
        assert!(close(one("precision@4", &u, 10), 0.5));
        assert!(close(one("hit@1", &u, 10), 0.0));
        assert!(close(one("hit@2", &u, 10), 1.0));
        assert!(close(one("mrr@4", &u, 10), 0.5));
        assert!(close(one("mrr@1", &u, 10), 0.0));
        assert!(close(one("map@4", &u, 10), (1.0 / 2.0 + 2.0 / 4.0) / 3.0));
        assert!(close(one("map@2", &u, 10), (1.0 / 2.0) / 2.0));
    }

    #[test]
    fn catalogue_metrics_by_hand() {
        // Two users' top-2: {0, 1} and {1, 2}; catalogue of 4 items: counts 0, 1, 1, 2.
        let u = [user(&[0, 1], &[0], 1), user(&[1, 2], &[2], 1)];
        assert!((one("coverage@2", &u, 4) - 0.75).abs() < 1e-12);
        // Sorted counts 0, 1, 1, 2: Σ (2i - 5) c = (-3)0 + (-1)1 + (1)1 + (3)2 = 6; / (4 · 4).
        assert!((one("gini@2", &u, 4) - 6.0 / 16.0).abs() < 1e-12);
        // Everyone sees every item equally: Gini 0.
        let even = [user(&[0, 1], &[0], 1), user(&[2, 3], &[2], 1)];
        assert!(one("gini@2", &even, 4).abs() < 1e-12);
    }

    #[test]
    fn no_users_is_nan() {
        assert!(one("ndcg@10", &[], 5).is_nan());
        assert!(one("coverage@10", &[], 5).is_nan());
    }
}
