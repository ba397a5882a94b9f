//! The arithmetic of every seeded choice: SplitMix64's mix, a stable hash of a few words,
//! and the map of a hash to `[0, 1)`. Pure functions, stable across runs, platforms, worker
//! counts and dependency upgrades (written out here rather than taken from `rand`, whose
//! generators may change their output between releases).
//!
//! Two conventions derive values from a seed, and both stay because shipped results depend
//! on them: [`stable_hash`] of `(seed, domain, key...)` words (model initialisation,
//! bootstrap weights, negatives, dropout masks), and [`unit_hash`] of `(seed, sample)`
//! (strategy keys and tie-breaks, splits). The generator's streams (`synth::rng`) step
//! [`mix64`] as SplitMix64's state update.

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output of the state `x` (the state plus [`GOLDEN_GAMMA`], mixed): a cheap,
/// well-distributed bijection on 64-bit words.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit hash of a few words ([`mix64`] applied word by word).
pub fn stable_hash(words: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64; // digits of pi: an arbitrary non-zero start
    for &w in words {
        h = mix64(h ^ w);
    }
    h
}

/// The top 53 bits of `h` as a float in `[0, 1)`.
pub fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A seeded hash of a sample, uniform in `[0, 1)`: the random strategy's key and every
/// strategy's tie-break. Stable across rounds, runs and worker counts.
pub fn unit_hash(seed: u64, sample: u32) -> f64 {
    unit_interval(mix64(seed ^ mix64(u64::from(sample))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_what_shipped_results_were_computed_with() {
        // SplitMix64's published first output for state 0 (Vigna's reference code).
        assert_eq!(mix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(stable_hash(&[]), 0x243F_6A88_85A3_08D3);
        assert_eq!(unit_interval(u64::MAX), 1.0 - 1.0 / (1u64 << 53) as f64);
        assert_eq!(unit_interval(0), 0.0);
        let u = unit_hash(42, 7);
        assert!((0.0..1.0).contains(&u));
        assert_eq!(u, unit_interval(mix64(42 ^ mix64(7))));
    }
}
