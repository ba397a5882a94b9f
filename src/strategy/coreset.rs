//! Greedy k-center ("coreset") selection: repeatedly pick the candidate farthest from
//! everything already covered, so a batch spreads over the embedding space instead of
//! piling onto one region.
//!
//! [`Coverage`] keeps, for every tracked candidate, its squared distance to the nearest
//! center (the labelled points). Adding centers only compares against the new ones, so a
//! round that labels `b` points costs `O(b x candidates x dim)`, not a recomputation over
//! the whole labelled set.
//!
//! ```
//! use recsift::strategy::coreset::Coverage;
//!
//! let mut coverage = Coverage::new(2);
//! coverage.add_centers(&[&[0.0, 0.0]]);
//! for (key, v) in [(1, [0.1, 0.0]), (2, [5.0, 5.0]), (3, [5.1, 5.0]), (4, [-4.0, 0.0])] {
//!     coverage.track(key, &v);
//! }
//! // The farthest point first, then the one farthest from it and the origin.
//! assert_eq!(coverage.select(2, |_| true), vec![3, 4]);
//! ```

use std::collections::BTreeMap;

use crate::scoring::dot;

/// Squared distances of tracked candidates to their nearest center.
#[derive(Clone, Debug)]
pub struct Coverage {
    dim: usize,
    centers: Vec<f32>,
    center_norms: Vec<f32>,
    /// Tracked candidates: key -> (vector, squared norm, squared distance to nearest center).
    points: BTreeMap<u64, (Vec<f32>, f32, f32)>,
}

impl Coverage {
    /// No centers and no candidates, for vectors of length `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            centers: Vec::new(),
            center_norms: Vec::new(),
            points: BTreeMap::new(),
        }
    }

    /// Length of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of centers.
    pub fn centers(&self) -> usize {
        self.center_norms.len()
    }

    /// Number of tracked candidates.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no candidate is tracked.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Whether `key` is tracked.
    pub fn contains(&self, key: u64) -> bool {
        self.points.contains_key(&key)
    }

    /// Adds centers and lowers every tracked candidate's distance accordingly.
    ///
    /// # Panics
    /// If a vector's length is not `dim`.
    pub fn add_centers(&mut self, vectors: &[&[f32]]) {
        for v in vectors {
            assert_eq!(v.len(), self.dim, "center of the wrong length");
            let norm = dot(v, v);
            for (point, point_norm, nearest) in self.points.values_mut() {
                *nearest = nearest.min(squared_distance(point, *point_norm, v, norm));
            }
            self.centers.extend_from_slice(v);
            self.center_norms.push(norm);
        }
    }

    /// Tracks candidate `key` (replacing it if present), measuring it against every center.
    ///
    /// # Panics
    /// If the vector's length is not `dim`.
    pub fn track(&mut self, key: u64, vector: &[f32]) {
        assert_eq!(vector.len(), self.dim, "candidate of the wrong length");
        let norm = dot(vector, vector);
        let nearest = self
            .centers
            .chunks_exact(self.dim.max(1))
            .zip(&self.center_norms)
            .map(|(c, c_norm)| squared_distance(vector, norm, c, *c_norm))
            .fold(f32::INFINITY, f32::min);
        self.points.insert(key, (vector.to_vec(), norm, nearest));
    }

    /// Stops tracking `key`.
    pub fn untrack(&mut self, key: u64) {
        self.points.remove(&key);
    }

    /// Greedy k-center over the tracked candidates accepted by `eligible`: up to `k` keys,
    /// each the farthest (ties: smallest key) from the centers and the keys picked before
    /// it. Does not change the coverage.
    pub fn select(&self, k: usize, eligible: impl Fn(u64) -> bool) -> Vec<u64> {
        let mut pool: Vec<(u64, &[f32], f32, f32)> = self
            .points
            .iter()
            .filter(|(key, _)| eligible(**key))
            .map(|(key, (v, norm, nearest))| (*key, v.as_slice(), *norm, *nearest))
            .collect();
        let mut picked = Vec::with_capacity(k.min(pool.len()));
        while picked.len() < k && !pool.is_empty() {
            let best = pool
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.3.total_cmp(&b.1.3).then(b.1.0.cmp(&a.1.0)))
                .map(|(i, _)| i)
                .expect("pool is not empty");
            let (key, center, center_norm, _) = pool.swap_remove(best);
            picked.push(key);
            for (_, v, norm, nearest) in pool.iter_mut() {
                *nearest = nearest.min(squared_distance(v, *norm, center, center_norm));
            }
        }
        picked
    }
}

/// `|a - b|^2` from the dot product and the squared norms (never negative).
fn squared_distance(a: &[f32], a_norm: f32, b: &[f32], b_norm: f32) -> f32 {
    (a_norm + b_norm - 2.0 * dot(a, b)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: k-center by brute force over the full center set every step.
    fn reference(points: &[(u64, Vec<f32>)], centers: &[Vec<f32>], k: usize) -> Vec<u64> {
        let mut centers: Vec<Vec<f32>> = centers.to_vec();
        let mut left: Vec<(u64, Vec<f32>)> = points.to_vec();
        let mut picked = Vec::new();
        while picked.len() < k && !left.is_empty() {
            let distance = |p: &[f32]| {
                centers
                    .iter()
                    .map(|c| {
                        p.iter()
                            .zip(c)
                            .map(|(x, y)| f64::from(x - y).powi(2))
                            .sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min)
            };
            let best = (0..left.len())
                .max_by(|&a, &b| {
                    distance(&left[a].1)
                        .total_cmp(&distance(&left[b].1))
                        .then(left[b].0.cmp(&left[a].0))
                })
                .unwrap();
            let (key, v) = left.remove(best);
            picked.push(key);
            centers.push(v);
        }
        picked
    }

    #[test]
    fn incremental_coverage_matches_brute_force() {
        let mut x = 7u64;
        let mut next = || {
            x = crate::seeding::mix64(x);
            (x >> 11) as f32 / (1u64 << 53) as f32 * 10.0 - 5.0
        };
        let points: Vec<(u64, Vec<f32>)> = (0..300)
            .map(|k| (k * 3, (0..5).map(|_| next()).collect()))
            .collect();
        let first: Vec<Vec<f32>> = (0..4).map(|_| (0..5).map(|_| next()).collect()).collect();
        let second: Vec<Vec<f32>> = (0..6).map(|_| (0..5).map(|_| next()).collect()).collect();
        let mut coverage = Coverage::new(5);
        coverage.add_centers(&first.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for (key, v) in &points {
            coverage.track(*key, v);
        }
        coverage.add_centers(&second.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let all_centers: Vec<Vec<f32>> = first.iter().chain(&second).cloned().collect();
        assert_eq!(
            coverage.select(20, |_| true),
            reference(&points, &all_centers, 20)
        );
        // Eligibility restricts the candidates.
        let even: Vec<(u64, Vec<f32>)> =
            points.iter().filter(|(k, _)| k % 2 == 0).cloned().collect();
        assert_eq!(
            coverage.select(7, |k| k % 2 == 0),
            reference(&even, &all_centers, 7)
        );
    }

    #[test]
    fn without_centers_the_first_pick_is_deterministic_and_duplicates_come_last() {
        let mut coverage = Coverage::new(1);
        for (key, v) in [(5, 1.0), (2, 1.0), (9, 3.0)] {
            coverage.track(key, &[v]);
        }
        assert_eq!(coverage.select(3, |_| true), vec![2, 9, 5]);
        coverage.untrack(2);
        assert_eq!(coverage.len(), 2);
    }
}
