//! The Wilcoxon signed-rank test, two-sided, as `scipy.stats.wilcoxon(d)` with its defaults
//! in SciPy 1.17.1 (`zero_method='wilcox'`, `correction=False`, `method='auto'`).
//!
//! Zero differences are dropped; the rest are ranked by absolute value (ties get their
//! average rank) and the statistic is `R+`, the sum of the ranks of positive differences.
//! SciPy's `auto` picks the p-value's method from the sample size `n`, which counts the
//! zeros too:
//!
//! | differences                         | p-value                                     |
//! |-------------------------------------|---------------------------------------------|
//! | `n <= 50`, no zero, no tied `|d|`   | exact null distribution of `R+`             |
//! | `n <= 13`, zeros or ties            | all `2^n` sign flips (an exact permutation test) |
//! | otherwise                           | normal approximation, tie-corrected variance, no continuity correction |
//!
//! The first two are one computation here: the distribution of `R+` when each rank's sign
//! is flipped with probability 1/2 (ranks `1..=n` give the classic exact distribution).
//! Both take `p = min(1, 2 · min(P(R+ <= r), P(R+ >= r)))`.
//!
//! Degenerate cases, as SciPy: no differences, or any NaN, give `None`; all differences zero
//! give `Some(1.0)` when `n <= 13` (every sign flip ties the observed statistic) and `None`
//! otherwise (the normal approximation has zero variance).

use statrs::function::erf::erfc;

/// Largest sample (zeros included) whose p-value comes from an exact distribution when
/// there are no zeros and no ties.
const EXACT_MAX_N: usize = 50;
/// Largest sample (zeros included) whose p-value comes from all sign flips when there are
/// zeros or ties (SciPy: `2^13` is below its 9999 permutation resamples).
const SIGN_FLIP_MAX_N: usize = 13;

/// Two-sided p-value of the Wilcoxon signed-rank test on paired `differences` (arm minus
/// baseline, one per seed); see the module documentation for the method and the degenerate
/// cases.
pub fn wilcoxon_signed_rank(differences: &[f64]) -> Option<f64> {
    let n = differences.len();
    if n == 0 || differences.iter().any(|d| d.is_nan()) {
        return None;
    }
    let nonzero: Vec<f64> = differences.iter().copied().filter(|&d| d != 0.0).collect();
    let ranked = SignedRanks::new(&nonzero);
    let has_zeros = nonzero.len() < n;
    let exact = n <= EXACT_MAX_N && !has_zeros && !ranked.has_ties();
    if exact || n <= SIGN_FLIP_MAX_N {
        Some(sign_flip_p_value(&ranked))
    } else {
        normal_p_value(&ranked)
    }
}

/// Ranks of the absolute differences, kept doubled so that average ranks of ties (half
/// integers) stay exact integers.
struct SignedRanks {
    /// Twice the (average) rank of each difference, in input order.
    doubled_ranks: Vec<u64>,
    /// Twice `R+`, the sum of the ranks of the positive differences.
    doubled_r_plus: u64,
    /// Sizes of the groups of equal `|d|`.
    tie_groups: Vec<u64>,
}

impl SignedRanks {
    /// Ranks `differences`, none of which is zero or NaN.
    fn new(differences: &[f64]) -> Self {
        let mut order: Vec<usize> = (0..differences.len()).collect();
        order.sort_by(|&a, &b| differences[a].abs().total_cmp(&differences[b].abs()));
        let mut doubled_ranks = vec![0; differences.len()];
        let mut tie_groups = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let value = differences[order[start]].abs();
            let end = start
                + order[start..]
                    .iter()
                    .take_while(|&&i| differences[i].abs() == value)
                    .count();
            // Positions start..end hold ranks start+1 ..= end; twice their average:
            let doubled = (start + 1 + end) as u64;
            for &i in &order[start..end] {
                doubled_ranks[i] = doubled;
            }
            tie_groups.push((end - start) as u64);
            start = end;
        }
        let doubled_r_plus = differences
            .iter()
            .zip(&doubled_ranks)
            .filter(|(d, _)| **d > 0.0)
            .map(|(_, r)| r)
            .sum();
        Self {
            doubled_ranks,
            doubled_r_plus,
            tie_groups,
        }
    }

    /// Whether two absolute differences are equal.
    fn has_ties(&self) -> bool {
        self.tie_groups.iter().any(|&size| size > 1)
    }
}

/// p-value from the distribution of `R+` over all sign flips of the ranks.
fn sign_flip_p_value(ranked: &SignedRanks) -> f64 {
    // ways[s]: the number of sign patterns whose doubled R+ is s. With at most 50 ranks the
    // total, 2^50, fits a u64 and an f64 exactly.
    let total: u64 = ranked.doubled_ranks.iter().sum();
    let mut ways = vec![0u64; total as usize + 1];
    ways[0] = 1;
    let mut reach = 0usize;
    for &rank in &ranked.doubled_ranks {
        let rank = rank as usize;
        for s in (0..=reach).rev() {
            ways[s + rank] += ways[s];
        }
        reach += rank;
    }
    let observed = ranked.doubled_r_plus as usize;
    let at_most: u64 = ways[..=observed].iter().sum();
    let at_least: u64 = ways[observed..].iter().sum();
    let patterns = (1u64 << ranked.doubled_ranks.len()) as f64;
    (2.0 * at_most.min(at_least) as f64 / patterns).min(1.0)
}

/// p-value from the normal approximation of `R+` with the tie-corrected variance
/// `(m(m+1)(2m+1) - Σ(t³ - t)/2) / 24` over the `m` non-zero differences; `None` when the
/// variance is zero (no non-zero difference).
fn normal_p_value(ranked: &SignedRanks) -> Option<f64> {
    let m = ranked.doubled_ranks.len() as f64;
    let ties: f64 = ranked
        .tie_groups
        .iter()
        .map(|&t| (t * t * t - t) as f64)
        .sum();
    let variance = (m * (m + 1.0) * (2.0 * m + 1.0) - ties / 2.0) / 24.0;
    if variance <= 0.0 {
        return None;
    }
    let r_plus = ranked.doubled_r_plus as f64 / 2.0;
    let z = (r_plus - m * (m + 1.0) / 4.0) / variance.sqrt();
    // 2 · P(Z >= |z|) for a standard normal Z.
    Some(erfc(z.abs() / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_get_their_average_rank() {
        let ranked = SignedRanks::new(&[0.5, -0.5, 2.0, 0.25]);
        assert_eq!(ranked.doubled_ranks, vec![5, 5, 8, 2]);
        assert_eq!(ranked.doubled_r_plus, 5 + 8 + 2);
        assert!(ranked.has_ties());
    }

    #[test]
    fn exact_distribution_of_five_positive_differences() {
        // R+ = 15 is the largest of 32 equally likely sign patterns: p = 2/32.
        let p = wilcoxon_signed_rank(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(p, Some(0.0625));
    }

    #[test]
    fn nan_and_empty_are_undefined() {
        assert_eq!(wilcoxon_signed_rank(&[]), None);
        assert_eq!(wilcoxon_signed_rank(&[1.0, f64::NAN]), None);
    }
}
