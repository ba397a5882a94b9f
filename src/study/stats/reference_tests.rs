//! The statistics against SciPy/statsmodels: the figures in `reference_values.rs` are the
//! output of `python3 benches/study_stats_reference.py` (its header names the versions).

use super::reference_values::{CONFIDENCE_95, HOLM, PAIRED_T, T_QUANTILE_975, WILCOXON};
use super::*;

/// Relative tolerance against the reference: the last few bits of double precision.
const RELATIVE: f64 = 1e-9;

fn assert_close(name: &str, actual: f64, expected: f64) {
    let scale = expected.abs().max(f64::MIN_POSITIVE);
    assert!(
        (actual - expected).abs() <= RELATIVE * scale,
        "{name}: {actual:e} != {expected:e} (relative error {:e})",
        (actual - expected).abs() / scale
    );
}

fn assert_close_option(name: &str, actual: Option<f64>, expected: Option<f64>) {
    match (actual, expected) {
        (Some(a), Some(e)) => assert_close(name, a, e),
        (None, None) => {}
        _ => panic!("{name}: {actual:?} != {expected:?}"),
    }
}

#[test]
fn paired_t_test_matches_scipy_ttest_rel() {
    for (name, a, b, expected) in PAIRED_T {
        let differences: Vec<f64> = a.iter().zip(*b).map(|(a, b)| a - b).collect();
        assert_close_option(name, paired_t_test(&differences), *expected);
    }
}

#[test]
fn wilcoxon_matches_scipy_defaults_on_every_path() {
    for (name, differences, expected) in WILCOXON {
        assert_close_option(name, wilcoxon_signed_rank(differences), *expected);
    }
}

#[test]
fn student_t_quantiles_match_scipy() {
    for (df, expected) in T_QUANTILE_975 {
        assert_close(
            &format!("df {df}"),
            student_t_quantile(0.975, *df),
            *expected,
        );
    }
}

#[test]
fn summaries_match_scipy_t_interval() {
    for (name, x, mean, std, low, high) in CONFIDENCE_95 {
        let s = summarise(x);
        assert_eq!(s.n, x.len());
        assert_close(name, s.mean.unwrap_or(f64::NAN), *mean);
        assert_close(name, s.std.unwrap_or(f64::NAN), *std);
        let [l, h] = s.ci95.unwrap_or([f64::NAN; 2]);
        assert_close(name, l, *low);
        assert_close(name, h, *high);
    }
}

#[test]
fn holm_matches_statsmodels() {
    for (name, p, expected) in HOLM {
        let adjusted = holm(&p.iter().map(|&p| Some(p)).collect::<Vec<_>>());
        for (a, e) in adjusted.into_iter().zip(*expected) {
            assert_close_option(name, a, Some(*e));
        }
    }
}
