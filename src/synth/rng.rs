//! Deterministic random numbers for the generator.
//!
//! Every random choice comes from a [`Rng`] stream named by `(seed, purpose, index)`: the
//! users from one stream, the items from another, the events of time slice `s` from stream
//! `(seed, EVENTS, s)`. A slice's events therefore do not depend on how many slices were
//! generated before it or on which thread generated them, and the same seed always gives the
//! same files.
//!
//! The generators are written out here rather than taken from `rand`, whose `SmallRng` and
//! `StdRng` are documented as free to change their output between releases: a log generated
//! with seed 42 should stay the same log after a dependency upgrade. SplitMix64 derives the
//! stream states (it turns close seeds into unrelated states); xoshiro256++ (Blackman and
//! Vigna) draws the numbers. Both are public-domain algorithms, a few lines each.

/// What a stream is for; part of its name, so two purposes never share numbers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// User activity, windows, biases and factors.
    Users = 1,
    /// Item popularity, release times, genres, titles, biases and factors.
    Items = 2,
    /// Genre and word directions in the latent space.
    Directions = 3,
    /// The events of one time slice (index = slice).
    Events = 4,
    /// The file order of a shuffled log (`--shuffle`).
    Shuffle = 5,
}

use crate::seeding::{GOLDEN_GAMMA, mix64};

/// One step of SplitMix64: the output of the state, which then advances.
fn splitmix64(state: &mut u64) -> u64 {
    let out = mix64(*state);
    *state = state.wrapping_add(GOLDEN_GAMMA);
    out
}

/// A stream of random numbers (xoshiro256++).
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: [u64; 4],
    spare_normal: Option<f64>,
}

/// 2^-53: turns the top 53 bits of a `u64` into a float in `[0, 1)`.
const UNIT: f64 = 1.0 / (1u64 << 53) as f64;

impl Rng {
    /// The stream named `(seed, purpose, index)`.
    pub(crate) fn stream(seed: u64, purpose: Purpose, index: u64) -> Self {
        let mut mix = seed;
        let a = splitmix64(&mut mix);
        let mut mix = a ^ (purpose as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let b = splitmix64(&mut mix);
        let mut mix = b ^ index.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
        let mut state = [0u64; 4];
        for word in &mut state {
            *word = splitmix64(&mut mix);
        }
        if state == [0; 4] {
            // The one state xoshiro cannot leave; SplitMix64 makes it practically unreachable.
            state[0] = 1;
        }
        Self {
            state,
            spare_normal: None,
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * UNIT
    }

    /// Uniform in `(0, 1]` (safe to take the logarithm of).
    #[inline]
    pub(crate) fn uniform_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * UNIT
    }

    /// Uniform integer in `0..n` (`n > 0`), by the multiply-shift method; its bias, at most
    /// `n / 2^64`, is far below anything a statistic over a log could see.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal (Box-Muller; the second value of each pair is kept for the next call).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let radius = (-2.0 * self.uniform_open0().ln()).sqrt();
        let angle = std::f64::consts::TAU * self.uniform();
        let (sin, cos) = angle.sin_cos();
        self.spare_normal = Some(radius * sin);
        radius * cos
    }

    /// Exponential with mean 1.
    pub(crate) fn exponential(&mut self) -> f64 {
        -self.uniform_open0().ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_the_reference_output() {
        // The reference C implementation of xoshiro256++ started from the state {1, 2, 3, 4}
        // outputs 41943041, then 58720359 (also the test vector of the rand_xoshiro crate).
        let mut rng = Rng {
            state: [1, 2, 3, 4],
            spare_normal: None,
        };
        assert_eq!(rng.next_u64(), 41_943_041);
        assert_eq!(rng.next_u64(), 58_720_359);
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |seed, purpose, index| {
            let mut rng = Rng::stream(seed, purpose, index);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, Purpose::Events, 3), draw(7, Purpose::Events, 3));
        assert_ne!(draw(7, Purpose::Events, 3), draw(7, Purpose::Events, 4));
        assert_ne!(draw(7, Purpose::Events, 3), draw(8, Purpose::Events, 3));
        assert_ne!(draw(7, Purpose::Users, 0), draw(7, Purpose::Items, 0));
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut rng = Rng::stream(1, Purpose::Users, 0);
        let n = 200_000;
        let uniforms: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        assert!(uniforms.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = uniforms.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");

        let normals: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = normals.iter().sum::<f64>() / n as f64;
        let var = normals.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );

        let exps: Vec<f64> = (0..n).map(|_| rng.exponential()).collect();
        let mean = exps.iter().sum::<f64>() / n as f64;
        assert!(
            exps.iter().all(|e| *e >= 0.0) && (mean - 1.0).abs() < 0.01,
            "{mean}"
        );

        let mut counts = [0u32; 7];
        for _ in 0..n {
            counts[rng.below(7) as usize] += 1;
        }
        for c in counts {
            assert!(
                (f64::from(c) / n as f64 - 1.0 / 7.0).abs() < 0.005,
                "{counts:?}"
            );
        }
    }
}
