//! Sampling from a fixed discrete distribution in constant time (Walker's alias method, built
//! with Vose's stable procedure).
//!
//! Each of the `n` columns holds the probability of keeping its own index and an alias to
//! jump to otherwise. One 64-bit random number picks both the column (its high part after
//! multiplying by `n`) and the coin (the low part), so a draw is one multiply, one compare
//! and at most two table reads.

use super::rng::Rng;

/// A discrete distribution over `0..n`, proportional to the weights it was built from.
#[derive(Clone, Debug, Default)]
pub(crate) struct AliasTable {
    /// Probability of keeping column `i`, scaled to `0..=2^64` (`u64::MAX` stands for 1).
    keep: Vec<u64>,
    /// Where column `i` jumps when the coin says no.
    alias: Vec<u32>,
}

impl AliasTable {
    /// A table over `weights` (non-negative, finite). `None` when no weight is positive:
    /// there is nothing to draw.
    pub(crate) fn new(weights: &[f64]) -> Option<Self> {
        let mut table = Self::default();
        table.rebuild(weights).then_some(table)
    }

    /// Rebuilds the table in place over `weights`, reusing its memory; false (and an
    /// unusable table) when no weight is positive.
    pub(crate) fn rebuild(&mut self, weights: &[f64]) -> bool {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        self.keep.clear();
        self.alias.clear();
        if n == 0 || total <= 0.0 || !total.is_finite() {
            return false;
        }
        let scale = n as f64 / total;
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * scale).collect();
        self.keep.resize(n, u64::MAX);
        self.alias.extend(0..n as u32);
        let mut small: Vec<u32> = Vec::new();
        let mut large: Vec<u32> = Vec::new();
        for (i, &p) in scaled.iter().enumerate() {
            if p < 1.0 {
                small.push(i as u32);
            } else {
                large.push(i as u32);
            }
        }
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            let p = scaled[s as usize];
            self.keep[s as usize] = probability_bits(p);
            self.alias[s as usize] = l;
            scaled[l as usize] -= 1.0 - p;
            if scaled[l as usize] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1 up to rounding: those columns keep themselves (`keep` is
        // `u64::MAX`, and should the coin land on it, the alias is the column itself).
        true
    }

    /// Number of outcomes.
    pub(crate) fn len(&self) -> usize {
        self.keep.len()
    }

    /// Draws an index.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut Rng) -> u32 {
        let product = u128::from(rng.next_u64()) * self.keep.len() as u128;
        let column = (product >> 64) as usize;
        let coin = product as u64;
        if coin < self.keep[column] {
            column as u32
        } else {
            self.alias[column]
        }
    }
}

/// `p` in `[0, 1)` scaled to `0..2^64`.
fn probability_bits(p: f64) -> u64 {
    if p <= 0.0 {
        0
    } else {
        // 2^64 * p, saturating just below 2^64 for p within rounding of 1.
        (p * 18_446_744_073_709_551_616.0).min(u64::MAX as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::super::rng::Purpose;
    use super::*;

    #[test]
    fn draws_follow_the_weights() {
        let weights = [5.0, 0.0, 1.0, 3.0, 1.0];
        let table = AliasTable::new(&weights).unwrap();
        assert_eq!(table.len(), 5);
        let mut rng = Rng::stream(3, Purpose::Events, 0);
        let n = 500_000;
        let mut counts = [0u32; 5];
        for _ in 0..n {
            counts[table.sample(&mut rng) as usize] += 1;
        }
        assert_eq!(counts[1], 0, "a zero weight is never drawn");
        let total: f64 = weights.iter().sum();
        for (count, w) in counts.iter().zip(weights) {
            let expected = w / total;
            let observed = f64::from(*count) / n as f64;
            assert!((observed - expected).abs() < 0.003, "{counts:?}");
        }
    }

    #[test]
    fn no_positive_weight_means_no_table() {
        assert!(AliasTable::new(&[]).is_none());
        assert!(AliasTable::new(&[0.0, 0.0]).is_none());
        let mut table = AliasTable::new(&[1.0]).unwrap();
        assert!(!table.rebuild(&[0.0]));
        assert!(table.rebuild(&[0.0, 2.0]));
        let mut rng = Rng::stream(3, Purpose::Events, 1);
        assert!((0..1000).all(|_| table.sample(&mut rng) == 1));
    }

    #[test]
    fn skewed_weights_over_many_outcomes() {
        // Zipf weights over 10 000 outcomes: the head probabilities must be right.
        let weights: Vec<f64> = (1..=10_000).map(|r| 1.0 / f64::from(r)).collect();
        let total: f64 = weights.iter().sum();
        let table = AliasTable::new(&weights).unwrap();
        let mut rng = Rng::stream(4, Purpose::Events, 0);
        let n = 1_000_000;
        let mut first = 0u32;
        let mut tenth = 0u32;
        for _ in 0..n {
            match table.sample(&mut rng) {
                0 => first += 1,
                9 => tenth += 1,
                _ => {}
            }
        }
        assert!((f64::from(first) / n as f64 - 1.0 / total).abs() < 0.002);
        assert!((f64::from(tenth) / n as f64 - 0.1 / total).abs() < 0.001);
    }
}
