//! From the runs of a study to its analysis: for every metric and arm, the final value and
//! the AULC summarised over seeds, the mean curve, the labels needed to reach the baseline's
//! final value, and the paired tests against the baseline with Holm's correction.

use crate::suggest::closest;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::curves::{
    CurvePoint, aulc, final_value, labels_to_target, lower_is_better, mean_curve, run_points,
    saving_percent,
};
use super::stats::{Summary, holm, paired_t_test, summarise, wilcoxon_signed_rank};
use crate::results::{RoundRecord, is_train_loss};

/// One run of a study: which arm, which seed, and its round records in round order.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCurve {
    /// The arm's name (e.g. the strategy), as the study names it.
    pub arm: String,
    /// The run's seed; runs of different arms with the same seed are paired in the tests.
    pub seed: u64,
    /// The run's round records.
    pub rounds: Vec<RoundRecord>,
}

/// Everything a study's report shows, as plain data (written as `study.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyAnalysis {
    /// The arm the others are compared with.
    pub baseline: String,
    /// Arm names in the order of their first run.
    pub arms: Vec<String>,
    /// One entry per metric, in the order the runs report them.
    pub metrics: Vec<MetricAnalysis>,
}

/// One metric across the arms of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricAnalysis {
    /// The metric's name (`rmse`, `ndcg@10`, `cold_rmse`, ...).
    pub metric: String,
    /// Whether smaller values are better (see `curves::lower_is_better`).
    pub lower_is_better: bool,
    /// The target of "labels to target": the baseline's mean final value, if it has one.
    pub target: Option<f64>,
    /// Mean labels of the baseline's runs at its last round, which savings are measured
    /// against.
    pub baseline_labels: Option<f64>,
    /// One row per arm, in the order of `StudyAnalysis::arms`.
    pub arms: Vec<ArmMetric>,
}

/// One arm's row for one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmMetric {
    /// The arm's name.
    pub arm: String,
    /// Whether this arm is the baseline.
    pub is_baseline: bool,
    /// The metric at each run's last round, over the runs that have a value there.
    pub final_value: Summary,
    /// Each run's normalised area under its learning curve (`curves::aulc`), summarised.
    pub aulc: Summary,
    /// The mean ± std curve over the arm's runs, by round.
    pub curve: Vec<CurvePoint>,
    /// Labels the mean curve needs to first reach the target; `None` if it never does.
    pub labels_to_target: Option<f64>,
    /// Labels saved against the baseline's final labels, in percent (negative: more needed).
    pub saving_percent: Option<f64>,
    /// Paired tests against the baseline; `None` for the baseline itself.
    pub versus_baseline: Option<Comparison>,
}

/// Paired comparison of an arm's final values with the baseline's, seed by seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Seeds with a final value in both arms.
    pub pairs: usize,
    /// Mean of (arm − baseline) over the pairs, in the metric's units.
    pub mean_difference: Option<f64>,
    /// Two-sided paired t-test p-value (`stats::paired_t_test`).
    pub t_test_p: Option<f64>,
    /// Two-sided Wilcoxon signed-rank p-value (`stats::wilcoxon_signed_rank`).
    pub wilcoxon_p: Option<f64>,
    /// `t_test_p` after Holm's correction across the non-baseline arms of this metric.
    pub t_test_p_holm: Option<f64>,
    /// `wilcoxon_p` after Holm's correction across the non-baseline arms of this metric.
    pub wilcoxon_p_holm: Option<f64>,
}

/// Why a set of runs cannot be analysed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StudyError {
    /// No runs were given.
    #[error("a study analysis needs at least one run, and none was given")]
    NoRuns,
    /// The baseline names no arm of the runs.
    #[error("the baseline arm `{baseline}` has no runs; {help}")]
    UnknownBaseline {
        /// The baseline asked for.
        baseline: String,
        /// "did you mean" and the arms that exist.
        help: String,
    },
    /// Two runs share an arm and a seed, so pairing by seed would be ambiguous.
    #[error("arm `{arm}` has two runs with seed {seed}; give each (arm, seed) one run")]
    DuplicateRun {
        /// The arm.
        arm: String,
        /// The repeated seed.
        seed: u64,
    },
}

/// Analyses the runs of a study against the arm named `baseline`.
///
/// Every metric that any run reports (except the training losses) is analysed; a run without a
/// finite value of a metric at its last round is left out of that metric's final summary
/// and tests, and its NaN rounds are left out of its curve.
pub fn analyse(runs: &[RunCurve], baseline: &str) -> Result<StudyAnalysis, StudyError> {
    let by_arm = group_by_arm(runs)?;
    let arms: Vec<String> = by_arm.iter().map(|(arm, _)| arm.to_string()).collect();
    if !arms.iter().any(|a| a == baseline) {
        let listed = arms
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let help = match closest(baseline, arms.iter().map(String::as_str)) {
            Some(best) => format!("did you mean `{best}`? (arms: {listed})"),
            None => format!("arms: {listed}"),
        };
        return Err(StudyError::UnknownBaseline {
            baseline: baseline.to_string(),
            help,
        });
    }
    let metrics = metric_names(runs)
        .into_iter()
        .map(|metric| analyse_metric(&by_arm, baseline, metric))
        .collect();
    Ok(StudyAnalysis {
        baseline: baseline.to_string(),
        arms,
        metrics,
    })
}

/// An arm's runs, by seed.
type ArmRuns<'a> = BTreeMap<u64, &'a [RoundRecord]>;

/// Runs grouped by arm, arms in the order of their first run.
fn group_by_arm(runs: &[RunCurve]) -> Result<Vec<(&str, ArmRuns<'_>)>, StudyError> {
    if runs.is_empty() {
        return Err(StudyError::NoRuns);
    }
    let mut arms: Vec<(&str, ArmRuns<'_>)> = Vec::new();
    for run in runs {
        let index = match arms.iter().position(|(arm, _)| *arm == run.arm) {
            Some(index) => index,
            None => {
                arms.push((&run.arm, BTreeMap::new()));
                arms.len() - 1
            }
        };
        if arms[index].1.insert(run.seed, &run.rounds).is_some() {
            return Err(StudyError::DuplicateRun {
                arm: run.arm.clone(),
                seed: run.seed,
            });
        }
    }
    Ok(arms)
}

/// Metric names in first-seen order, without the training losses: they measure the fit to
/// each arm's own labelled set, so they do not compare arms (the run plots leave them out
/// too).
fn metric_names(runs: &[RunCurve]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in runs.iter().flat_map(|r| &r.rounds).flat_map(|r| &r.metrics) {
        if !is_train_loss(name) && !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names
}

/// The analysis of one metric.
fn analyse_metric(arms: &[(&str, ArmRuns<'_>)], baseline: &str, metric: &str) -> MetricAnalysis {
    let lower = lower_is_better(metric);
    let finals: Vec<BTreeMap<u64, f64>> = arms
        .iter()
        .map(|(_, runs)| {
            runs.iter()
                .filter_map(|(&seed, rounds)| Some((seed, final_value(rounds, metric)?)))
                .collect()
        })
        .collect();
    let curves: Vec<Vec<CurvePoint>> = arms
        .iter()
        .map(|(_, runs)| mean_curve(&runs.values().copied().collect::<Vec<_>>(), metric))
        .collect();
    let base = arms.iter().position(|(arm, _)| *arm == baseline);
    let target = base.and_then(|b| summarise(&values(&finals[b])).mean);
    let baseline_labels = base.and_then(|b| curves[b].last().map(|p| p.labels));

    let mut rows: Vec<ArmMetric> = arms
        .iter()
        .zip(finals.iter().zip(curves))
        .enumerate()
        .map(|(i, ((arm, runs), (finals_of_arm, curve)))| {
            let aulcs: Vec<f64> = runs
                .values()
                .filter_map(|rounds| aulc(&run_points(rounds, metric)))
                .collect();
            let labels = target.and_then(|t| labels_to_target(&curve, t, lower));
            ArmMetric {
                arm: arm.to_string(),
                is_baseline: Some(i) == base,
                final_value: summarise(&values(finals_of_arm)),
                aulc: summarise(&aulcs),
                labels_to_target: labels,
                saving_percent: labels
                    .zip(baseline_labels)
                    .and_then(|(l, b)| saving_percent(l, b)),
                curve,
                versus_baseline: base
                    .filter(|&b| b != i)
                    .map(|b| compare(finals_of_arm, &finals[b])),
            }
        })
        .collect();
    apply_holm(&mut rows);
    MetricAnalysis {
        metric: metric.to_string(),
        lower_is_better: lower,
        target,
        baseline_labels,
        arms: rows,
    }
}

/// The values of a seed-keyed map, in seed order.
fn values(by_seed: &BTreeMap<u64, f64>) -> Vec<f64> {
    by_seed.values().copied().collect()
}

/// Paired tests of `arm` against `baseline` on the seeds both have (Holm's columns are
/// filled in later by `apply_holm`).
fn compare(arm: &BTreeMap<u64, f64>, baseline: &BTreeMap<u64, f64>) -> Comparison {
    let differences: Vec<f64> = arm
        .iter()
        .filter_map(|(seed, a)| Some(a - baseline.get(seed)?))
        .collect();
    Comparison {
        pairs: differences.len(),
        mean_difference: summarise(&differences).mean,
        t_test_p: paired_t_test(&differences),
        wilcoxon_p: wilcoxon_signed_rank(&differences),
        t_test_p_holm: None,
        wilcoxon_p_holm: None,
    }
}

/// Fills in the Holm-adjusted p-values of each test across the rows that have comparisons.
fn apply_holm(rows: &mut [ArmMetric]) {
    let mut compared: Vec<&mut Comparison> = rows
        .iter_mut()
        .filter_map(|r| r.versus_baseline.as_mut())
        .collect();
    let t = holm(&compared.iter().map(|c| c.t_test_p).collect::<Vec<_>>());
    let w = holm(&compared.iter().map(|c| c.wilcoxon_p).collect::<Vec<_>>());
    for ((c, t), w) in compared.iter_mut().zip(t).zip(w) {
        c.t_test_p_holm = t;
        c.wilcoxon_p_holm = w;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run whose ndcg@10 grows from `start` by `step` a round and whose rmse falls, with
    /// 100 labels a round.
    pub(crate) fn run(arm: &str, seed: u64, start: f64, step: f64, rounds: u32) -> RunCurve {
        RunCurve {
            arm: arm.to_string(),
            seed,
            rounds: (0..rounds)
                .map(|round| {
                    let ndcg = start + step * f64::from(round);
                    RoundRecord {
                        round,
                        labelled: 100 * (u64::from(round) + 1),
                        selected: if round == 0 { 0 } else { 100 },
                        rescored: 0,
                        metrics: vec![
                            ("rmse".into(), 1.0 - ndcg),
                            ("ndcg@10".into(), ndcg),
                            ("train_loss".into(), 0.5),
                        ],
                        timings_ms: Vec::new(),
                    }
                })
                .collect(),
        }
    }

    fn study() -> Vec<RunCurve> {
        let mut runs = Vec::new();
        for seed in 0..5u64 {
            let noise = 0.001 * seed as f64;
            runs.push(run("random", seed, 0.10 + noise, 0.02, 5));
            runs.push(run("uncertainty", seed, 0.10 + noise, 0.04, 5));
        }
        runs
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(analyse(&[], "random"), Err(StudyError::NoRuns));
        let runs = study();
        let err = analyse(&runs, "randon").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "the baseline arm `randon` has no runs; did you mean `random`? \
                 (arms: `random`, `uncertainty`)"
            )
        );
        let twice = [run("a", 1, 0.1, 0.1, 2), run("a", 1, 0.2, 0.1, 2)];
        assert_eq!(
            analyse(&twice, "a"),
            Err(StudyError::DuplicateRun {
                arm: "a".into(),
                seed: 1
            })
        );
    }

    #[test]
    fn analysis_of_a_two_arm_study() {
        let analysis = analyse(&study(), "random").expect("valid study");
        assert_eq!(analysis.arms, ["random", "uncertainty"]);
        let names: Vec<&str> = analysis.metrics.iter().map(|m| m.metric.as_str()).collect();
        assert_eq!(names, ["rmse", "ndcg@10"]);

        let ndcg = &analysis.metrics[1];
        assert!(!ndcg.lower_is_better);
        // Baseline final: 0.10 + 0.002 (mean noise) + 4 · 0.02 = 0.182, at 500 labels.
        let target = ndcg.target.unwrap_or(f64::NAN);
        assert!((target - 0.182).abs() < 1e-12);
        assert_eq!(ndcg.baseline_labels, Some(500.0));

        let (random, uncertainty) = (&ndcg.arms[0], &ndcg.arms[1]);
        assert!(random.is_baseline && random.versus_baseline.is_none());
        assert_eq!(random.labels_to_target, Some(500.0));
        assert_eq!(random.saving_percent, Some(0.0));
        // Uncertainty's mean curve 0.102 + 0.04 r reaches 0.182 at r = 2: 300 labels.
        let labels = uncertainty.labels_to_target.unwrap_or(f64::NAN);
        assert!((labels - 300.0).abs() < 1e-9, "{labels}");
        assert!((uncertainty.saving_percent.unwrap_or(f64::NAN) - 40.0).abs() < 1e-9);

        // Every seed gains exactly 0.08: no spread, so t says p = 0; Wilcoxon's exact
        // distribution over 5 positive differences gives 2/32.
        let c = uncertainty.versus_baseline.as_ref().expect("compared");
        assert_eq!(c.pairs, 5);
        assert!((c.mean_difference.unwrap_or(f64::NAN) - 0.08).abs() < 1e-12);
        assert_eq!(c.wilcoxon_p, Some(0.0625));
        assert_eq!(c.wilcoxon_p_holm, Some(0.0625));

        // AULC of a straight line from 0.102 to 0.182 is its midpoint.
        let aulc = random.aulc.mean.unwrap_or(f64::NAN);
        assert!((aulc - 0.142).abs() < 1e-12);
        assert_eq!(random.aulc.n, 5);
    }

    #[test]
    fn lower_is_better_metrics_reach_their_target_downwards() {
        let analysis = analyse(&study(), "random").expect("valid study");
        let rmse = &analysis.metrics[0];
        assert!(rmse.lower_is_better);
        let labels = rmse.arms[1].labels_to_target.unwrap_or(f64::NAN);
        assert!((labels - 300.0).abs() < 1e-9, "{labels}");
    }

    #[test]
    fn serialises_to_json_and_back() {
        let analysis = analyse(&study(), "random").expect("valid study");
        let json = serde_json::to_string(&analysis).expect("serialise");
        assert!(json.contains(r#""baseline":"random""#), "{json}");
        // The baseline's comparison and an undefined interval are JSON nulls.
        assert!(json.contains(r#""versus_baseline":null"#), "{json}");
        let back: StudyAnalysis = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back.arms, analysis.arms);
        assert_eq!(back.metrics.len(), analysis.metrics.len());
        assert_eq!(back.metrics[1].arms[1].curve.len(), 5);
    }
}
