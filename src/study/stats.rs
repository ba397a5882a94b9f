//! The statistics of a study, as pure functions on plain numbers: a summary of one quantity
//! over seeds (mean, sample standard deviation, Student-t 95% interval), the paired t-test
//! and the Wilcoxon signed-rank test of an arm against the baseline, and the Holm-Bonferroni
//! correction across arms.
//!
//! Every function follows SciPy 1.17.1 (`scipy.stats.ttest_rel`, `scipy.stats.wilcoxon` with
//! its defaults, `scipy.stats.t.interval`) and statsmodels' Holm, including their degenerate
//! cases; where SciPy answers NaN ("undefined") these functions answer `None`. The reference
//! values come from `benches/study_stats_reference.py` and are checked in `reference_tests`.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::function::beta::beta_reg;

mod wilcoxon;

pub use wilcoxon::wilcoxon_signed_rank;

/// Mean, spread and 95% confidence interval of one quantity measured once per run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values summarised.
    pub n: usize,
    /// Arithmetic mean; `None` when `n == 0`.
    pub mean: Option<f64>,
    /// Sample standard deviation (divisor `n - 1`); `None` when `n < 2`.
    pub std: Option<f64>,
    /// Two-sided 95% Student-t interval for the mean, `[low, high]`, with `n - 1` degrees of
    /// freedom; `None` when `n < 2`.
    pub ci95: Option<[f64; 2]>,
}

/// Summarises `values` (one per run, expected finite: callers leave missing values out).
pub fn summarise(values: &[f64]) -> Summary {
    let n = values.len();
    let mean = mean(values);
    let std = sample_std(values);
    let ci95 = match (mean, std) {
        (Some(mean), Some(std)) => {
            let half_width = student_t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt();
            Some([mean - half_width, mean + half_width])
        }
        _ => None,
    };
    Summary { n, mean, std, ci95 }
}

/// Two-sided p-value of the paired t-test on `differences` (arm minus baseline, one per
/// seed), as `scipy.stats.ttest_rel(arm, baseline).pvalue`.
///
/// Degenerate cases, as SciPy: fewer than two differences, or all differences zero, give
/// `None`; equal non-zero differences (no spread, infinite t) give `Some(0.0)`.
pub fn paired_t_test(differences: &[f64]) -> Option<f64> {
    let n = differences.len();
    let (mean, std) = (mean(differences)?, sample_std(differences)?);
    if std == 0.0 {
        return (mean != 0.0).then_some(0.0);
    }
    let t = mean / (std / (n as f64).sqrt());
    let df = (n - 1) as f64;
    // P(|T| >= |t|) = I_{df / (df + t²)}(df / 2, 1 / 2): both tails at once, without the
    // cancellation of `1 - cdf` far in the tail.
    Some(beta_reg(df / 2.0, 0.5, df / (df + t * t)).clamp(0.0, 1.0))
}

/// Holm-Bonferroni adjusted p-values, in the order given (as statsmodels'
/// `multipletests(p, method='holm')`): the `i`-th smallest of the `m` p-values is multiplied
/// by `m - i` (from `i = 0`), the products are made non-decreasing in that order and capped
/// at 1. A `None` (an undefined test) stays `None` and does not count in `m`.
pub fn holm(p_values: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut order: Vec<(usize, f64)> = p_values
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|p| (i, p)))
        .collect();
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    let m = order.len();
    let mut adjusted = vec![None; p_values.len()];
    let mut running_max = 0.0f64;
    for (rank, (index, p)) in order.into_iter().enumerate() {
        running_max = running_max.max(((m - rank) as f64 * p).min(1.0));
        adjusted[index] = Some(running_max);
    }
    adjusted
}

/// The mean, or `None` for no values.
fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The sample standard deviation (two passes, divisor `n - 1`), or `None` for `n < 2`.
fn sample_std(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let mean = mean(values)?;
    let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    Some((squares / (values.len() - 1) as f64).sqrt())
}

/// The `probability` quantile of Student's t with `df > 0` degrees of freedom.
fn student_t_quantile(probability: f64, df: f64) -> f64 {
    match StudentsT::new(0.0, 1.0, df) {
        Ok(t) => t.inverse_cdf(probability),
        // Only a non-positive or NaN `df` is refused; callers pass n - 1 >= 1.
        Err(_) => f64::NAN,
    }
}

#[cfg(test)]
mod reference_tests;
#[rustfmt::skip]
#[cfg(test)]
mod reference_values;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_fewer_than_two_values_has_no_spread() {
        assert_eq!(
            summarise(&[]),
            Summary {
                n: 0,
                mean: None,
                std: None,
                ci95: None
            }
        );
        let one = summarise(&[0.5]);
        assert_eq!(
            (one.n, one.mean, one.std, one.ci95),
            (1, Some(0.5), None, None)
        );
    }

    #[test]
    fn summary_of_equal_values_is_a_point_interval() {
        let s = summarise(&[0.25, 0.25, 0.25]);
        assert_eq!(s.std, Some(0.0));
        assert_eq!(s.ci95, Some([0.25, 0.25]));
    }

    #[test]
    fn holm_skips_undefined_tests() {
        let adjusted = holm(&[Some(0.01), None, Some(0.04)]);
        assert_eq!(adjusted, vec![Some(0.02), None, Some(0.04)]);
        assert!(holm(&[]).is_empty());
    }
}
