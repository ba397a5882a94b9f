//! Deterministic initialisation of parameter rows: row `r` of a table gets the same values
//! for the same seed whether it was created with the model or grown later.
//!
//! Values come from a counter-based generator ([`stable_hash`] of seed, table, row and
//! position) rather than a sequential random stream, so growing a table never shifts the
//! values of other rows, and no other crate's generator version can change them.

use std::ops::Range;

use crate::seeding::{stable_hash, unit_interval};

/// Which table a row belongs to, so user and item rows draw different values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableTag {
    /// The user table.
    Users,
    /// The item table.
    Items,
}

impl TableTag {
    fn word(self) -> u64 {
        match self {
            TableTag::Users => 0x5553_4552, // "USER"
            TableTag::Items => 0x4954_454D, // "ITEM"
        }
    }
}

/// Separates initialisation draws from other uses of [`stable_hash`] with the same seed.
const INIT_DOMAIN: u64 = 0x1417_0000_0000_0002;

/// Rows `rows` of a table laid out as scoring rows: per member a bias (initialised to 0)
/// followed by `dim` factors drawn from N(0, `std`²). Returns `rows.len() * members *
/// (1 + dim)` floats, row-major.
pub fn init_rows(
    seed: u64,
    table: TableTag,
    rows: Range<usize>,
    members: usize,
    dim: usize,
    std: f64,
) -> Vec<f32> {
    let width = members * (1 + dim);
    let mut out = Vec::with_capacity(rows.len() * width);
    for r in rows {
        let row_seed = stable_hash(&[seed, INIT_DOMAIN, table.word(), r as u64]);
        for m in 0..members {
            out.push(0.0);
            for j in 0..dim {
                let position = (m * dim + j) as u64;
                out.push((std * standard_normal(row_seed, position)) as f32);
            }
        }
    }
    out
}

/// `n` values drawn uniformly from `[-bound, bound)` for the dense parameter called `name`
/// (a layer's weights, say): the same for the same seed and name, different across names.
pub fn uniform_values(seed: u64, name: &str, n: usize, bound: f64) -> Vec<f32> {
    let mut words = vec![seed, INIT_DOMAIN, name.len() as u64];
    words.extend(name.as_bytes().chunks(8).map(|chunk| {
        chunk
            .iter()
            .fold(0u64, |word, &byte| (word << 8) | u64::from(byte))
    }));
    let param_seed = stable_hash(&words);
    (0..n as u64)
        .map(|k| {
            let u = unit_interval(stable_hash(&[param_seed, k]));
            (bound * (2.0 * u - 1.0)) as f32
        })
        .collect()
}

/// A standard normal draw for `position` of a row (Box-Muller on two hashed uniforms).
fn standard_normal(row_seed: u64, position: u64) -> f64 {
    let u1 = unit_interval(stable_hash(&[row_seed, 2 * position]));
    let u2 = unit_interval(stable_hash(&[row_seed, 2 * position + 1]));
    // 1 - u1 lies in (0, 1], so the logarithm is finite.
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_do_not_depend_on_the_range_they_were_made_in() {
        let all = init_rows(5, TableTag::Users, 0..10, 2, 3, 0.1);
        let tail = init_rows(5, TableTag::Users, 6..10, 2, 3, 0.1);
        assert_eq!(all.len(), 10 * 8);
        assert_eq!(all[6 * 8..], tail[..]);
        assert_ne!(all, init_rows(6, TableTag::Users, 0..10, 2, 3, 0.1));
        assert_ne!(all, init_rows(5, TableTag::Items, 0..10, 2, 3, 0.1));
    }

    #[test]
    fn uniform_values_cover_the_interval_and_depend_on_the_name() {
        let v = uniform_values(3, "tower.w1", 20_000, 0.5);
        assert!(v.iter().all(|&x| (-0.5..0.5).contains(&x)));
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        // Uniform on [-0.5, 0.5): mean 0, variance 1/12.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.003, "variance {var}");
        assert_eq!(v, uniform_values(3, "tower.w1", 20_000, 0.5));
        assert_ne!(v, uniform_values(3, "tower.w2", 20_000, 0.5));
        assert_ne!(v, uniform_values(4, "tower.w1", 20_000, 0.5));
        assert_eq!(uniform_values(3, "tower.w1", 10, 0.5), v[..10]);
    }

    #[test]
    fn biases_start_at_zero_and_factors_are_normal() {
        let rows = init_rows(1, TableTag::Items, 0..5000, 2, 10, 0.5);
        let mut factors = Vec::new();
        for row in rows.chunks(22) {
            assert_eq!(row[0], 0.0);
            assert_eq!(row[11], 0.0);
            factors.extend(row[1..11].iter().chain(&row[12..22]).map(|&x| f64::from(x)));
        }
        let n = factors.len() as f64;
        let mean = factors.iter().sum::<f64>() / n;
        let var = factors.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
    }
}
