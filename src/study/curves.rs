//! Learning curves of a study: which way a metric improves, the mean ± std curve of an arm
//! over its seeds, the normalised area under a run's curve (AULC), and the number of labels
//! an arm needs to reach a target.
//!
//! A curve's x is the number of labels (`RoundRecord::labelled`), its y a metric; a round
//! whose metric is NaN (no value that round) is not a point of the curve.

use serde::{Deserialize, Serialize};

use crate::results::RoundRecord;

/// Metric-name endings for which a smaller value is better.
const LOWER_IS_BETTER_SUFFIXES: [&str; 3] = ["rmse", "mae", "loss"];

/// Whether a smaller value of `metric` is better: errors and losses (`rmse`, `mae`,
/// `logloss`, `train_loss`, and any name ending in those, such as `cold_rmse` or
/// `val_logloss`). Every other metric (`ndcg@10`, `recall@20`, `auc`, ...) is better higher.
pub fn lower_is_better(metric: &str) -> bool {
    LOWER_IS_BETTER_SUFFIXES
        .iter()
        .any(|suffix| metric.ends_with(suffix))
}

/// One round of an arm's mean curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Round number (`RoundRecord::round`) the runs are aligned on.
    pub round: u32,
    /// Mean number of labels over the runs at this round.
    pub labels: f64,
    /// Mean of the metric over the runs at this round.
    pub mean: f64,
    /// Sample standard deviation of the metric over those runs; `None` with a single run.
    pub std: Option<f64>,
    /// Number of runs with a value at this round (runs may stop at different rounds).
    pub n: usize,
}

/// The value of `metric` in `record`, if it has a finite one.
pub fn metric_value(record: &RoundRecord, metric: &str) -> Option<f64> {
    let (_, value) = record.metrics.iter().find(|(name, _)| name == metric)?;
    value.is_finite().then_some(*value)
}

/// The value of `metric` at a run's last round, if finite there.
pub fn final_value(rounds: &[RoundRecord], metric: &str) -> Option<f64> {
    metric_value(rounds.last()?, metric)
}

/// `(labels, value)` points of one run's curve, in round order.
pub fn run_points(rounds: &[RoundRecord], metric: &str) -> Vec<(f64, f64)> {
    rounds
        .iter()
        .filter_map(|r| Some((r.labelled as f64, metric_value(r, metric)?)))
        .collect()
}

/// The mean ± std curve of `metric` over `runs` (each a run's round records), aligned by
/// round number; rounds are in increasing order.
pub fn mean_curve(runs: &[&[RoundRecord]], metric: &str) -> Vec<CurvePoint> {
    let mut by_round: std::collections::BTreeMap<u32, Vec<(f64, f64)>> = Default::default();
    for record in runs.iter().flat_map(|rounds| rounds.iter()) {
        if let Some(value) = metric_value(record, metric) {
            by_round
                .entry(record.round)
                .or_default()
                .push((record.labelled as f64, value));
        }
    }
    by_round
        .into_iter()
        .map(|(round, points)| {
            let labels: Vec<f64> = points.iter().map(|p| p.0).collect();
            let values: Vec<f64> = points.iter().map(|p| p.1).collect();
            let summary = super::stats::summarise(&values);
            CurvePoint {
                round,
                labels: labels.iter().sum::<f64>() / labels.len() as f64,
                mean: summary.mean.unwrap_or(f64::NAN),
                std: summary.std,
                n: points.len(),
            }
        })
        .collect()
}

/// Normalised area under one run's learning curve: the trapezoid-rule area under
/// `(labels, value)` divided by the range of labels it covers. It is the label-weighted mean
/// of the metric, so it lies in [0, 1] for a metric bounded there (ndcg, recall, auc) and is
/// in the metric's own units for the others (rmse, mae).
///
/// A curve whose points all have the same number of labels (a single round, say) has no
/// width: its AULC is the plain mean of its values. `None` when the run has no value.
pub fn aulc(points: &[(f64, f64)]) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    let range = last.0 - first.0;
    if range <= 0.0 {
        return Some(points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64);
    }
    let area: f64 = points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum();
    Some(area / range)
}

/// The number of labels at which `curve` (an arm's mean curve) first reaches `target`,
/// interpolating linearly between the rounds around the crossing; "reaches" means `<=` when
/// `lower_is_better`, `>=` otherwise. `None` when no round reaches it.
pub fn labels_to_target(curve: &[CurvePoint], target: f64, lower_is_better: bool) -> Option<f64> {
    let reached = |value: f64| {
        if lower_is_better {
            value <= target
        } else {
            value >= target
        }
    };
    let first = curve.iter().position(|p| reached(p.mean))?;
    let Some(before) = first.checked_sub(1).map(|i| &curve[i]) else {
        return Some(curve[first].labels);
    };
    let after = &curve[first];
    // `before` did not reach the target and `after` did, so their means differ.
    let fraction = (target - before.mean) / (after.mean - before.mean);
    Some(before.labels + fraction * (after.labels - before.labels))
}

/// Labels saved, in percent of `baseline_labels`, by needing only `labels`: positive when
/// fewer labels were needed. `None` when `baseline_labels` is not positive.
pub fn saving_percent(labels: f64, baseline_labels: f64) -> Option<f64> {
    (baseline_labels > 0.0).then(|| 100.0 * (baseline_labels - labels) / baseline_labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u32, labelled: u64, ndcg: f64) -> RoundRecord {
        RoundRecord {
            round,
            labelled,
            selected: 0,
            rescored: 0,
            metrics: vec![("ndcg@10".into(), ndcg)],
            timings_ms: Vec::new(),
        }
    }

    fn point(labels: f64, mean: f64) -> CurvePoint {
        CurvePoint {
            round: 0,
            labels,
            mean,
            std: None,
            n: 1,
        }
    }

    #[test]
    fn direction_of_metrics() {
        for lower in [
            "rmse",
            "mae",
            "logloss",
            "cold_rmse",
            "val_mae",
            "val_logloss",
        ] {
            assert!(lower_is_better(lower), "{lower}");
        }
        for higher in ["ndcg@10", "recall@20", "precision@5", "auc", "cold_auc"] {
            assert!(!lower_is_better(higher), "{higher}");
        }
    }

    #[test]
    fn aulc_is_the_label_weighted_mean() {
        // Trapezoids: 100 labels at mean 0.15, then 200 labels at mean 0.3; range 300.
        let points = [(100.0, 0.1), (200.0, 0.2), (400.0, 0.4)];
        let expected = (100.0 * 0.15 + 200.0 * 0.3) / 300.0;
        assert!((aulc(&points).unwrap_or(f64::NAN) - expected).abs() < 1e-15);
        // A flat curve's AULC is its value.
        assert_eq!(aulc(&[(10.0, 0.5), (30.0, 0.5)]), Some(0.5));
    }

    #[test]
    fn aulc_of_degenerate_curves() {
        assert_eq!(aulc(&[]), None);
        assert_eq!(aulc(&[(100.0, 0.25)]), Some(0.25));
        assert_eq!(aulc(&[(100.0, 0.25), (100.0, 0.75)]), Some(0.5));
    }

    #[test]
    fn run_points_skip_missing_values() {
        let rounds = [
            record(0, 10, 0.1),
            record(1, 20, f64::NAN),
            record(2, 30, 0.3),
        ];
        assert_eq!(
            run_points(&rounds, "ndcg@10"),
            vec![(10.0, 0.1), (30.0, 0.3)]
        );
        assert_eq!(final_value(&rounds, "ndcg@10"), Some(0.3));
        assert_eq!(final_value(&rounds, "rmse"), None);
    }

    #[test]
    fn mean_curve_aligns_runs_by_round() {
        let a = [record(0, 10, 0.1), record(1, 20, 0.3)];
        let b = [record(0, 12, 0.3), record(1, 22, 0.5), record(2, 32, 0.6)];
        let curve = mean_curve(&[&a, &b], "ndcg@10");
        assert_eq!(curve.len(), 3);
        assert_eq!((curve[0].round, curve[0].labels, curve[0].n), (0, 11.0, 2));
        assert!((curve[1].mean - 0.4).abs() < 1e-15);
        assert!((curve[1].std.unwrap_or(f64::NAN) - 0.02f64.sqrt()).abs() < 1e-15);
        assert_eq!(
            (curve[2].labels, curve[2].mean, curve[2].std),
            (32.0, 0.6, None)
        );
    }

    #[test]
    fn labels_to_target_interpolates_between_rounds() {
        let curve = [point(100.0, 0.1), point(200.0, 0.2), point(300.0, 0.4)];
        // 0.3 lies halfway from 0.2 (200 labels) to 0.4 (300 labels).
        let labels = labels_to_target(&curve, 0.3, false).unwrap_or(f64::NAN);
        assert!((labels - 250.0).abs() < 1e-12);
        assert_eq!(labels_to_target(&curve, 0.2, false), Some(200.0));
        assert_eq!(labels_to_target(&curve, 0.05, false), Some(100.0));
        assert_eq!(labels_to_target(&curve, 0.5, false), None);
    }

    #[test]
    fn labels_to_target_respects_lower_is_better() {
        let curve = [point(100.0, 1.0), point(200.0, 0.9), point(400.0, 0.8)];
        let labels = labels_to_target(&curve, 0.85, true).unwrap_or(f64::NAN);
        assert!((labels - 300.0).abs() < 1e-9);
        assert_eq!(labels_to_target(&curve, 0.7, true), None);
        // Read as "higher is better", the first round already reaches 0.85.
        assert_eq!(labels_to_target(&curve, 0.85, false), Some(100.0));
    }

    #[test]
    fn saving_against_the_baseline() {
        assert_eq!(saving_percent(300.0, 400.0), Some(25.0));
        assert_eq!(saving_percent(500.0, 400.0), Some(-25.0));
        assert_eq!(saving_percent(10.0, 0.0), None);
    }
}
