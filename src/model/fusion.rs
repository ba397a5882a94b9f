//! A fusion of models as one scoring head: the arithmetic of `fuse` nodes.
//!
//! A fusion of parts `k` with weights `w_k` predicts `sum_k w_k * p_k`, where `p_k` is part
//! `k`'s prediction (the mean of its members' predictions). Written as one
//! [`ScoringHead`], its members are all the parts' members side by side, member `m` of
//! part `k` weighing `w_k / members_k`; its rows are the parts' rows side by side, each
//! member's vector padded with zeros to the longest part's `dim` (a zero adds nothing to a
//! dot product). So the incremental engine, the evaluation and the strategies read a fusion
//! exactly as they read one model, and its variance, the weighted spread of all members'
//! predictions, grows with the parts' disagreement.
//!
//! [`learn_weights`] fits the weights on labelled events: the non-negative weights summing
//! to 1 with the least squared error of the fused prediction; [`ResidualGram`] is what that
//! fit depends on, added up over events seen at different times.

use crate::scoring::{RowLayout, ScoringHead};

/// The head of the fusion of `parts` with one weight per part (summing to 1). The parts
/// share one loss (the planner checks it); clipping is left to the caller, as for a model.
pub fn fused_head(parts: &[ScoringHead], weights: &[f32]) -> ScoringHead {
    let dim = parts.iter().map(|h| h.layout.dim).max().unwrap_or(0);
    let mut offsets = Vec::new();
    let mut member_weights = Vec::new();
    for (head, &w) in parts.iter().zip(weights) {
        let members = head.layout.members;
        offsets.extend_from_slice(&head.offsets);
        member_weights.extend(std::iter::repeat_n(w / members as f32, members));
    }
    ScoringHead {
        layout: RowLayout {
            members: offsets.len(),
            dim,
        },
        offsets,
        loss: parts[0].loss,
        clip: None,
        weights: Some(member_weights),
    }
}

/// Rows of the fusion with layout `fused` from each part's rows of the same `count` users
/// (or items): `parts[k]` holds `count` rows of layout `layouts[k]`.
pub fn fused_rows(
    fused: RowLayout,
    layouts: &[RowLayout],
    parts: &[Vec<f32>],
    count: usize,
) -> Vec<f32> {
    let mut rows = Vec::with_capacity(count * fused.row_len());
    for r in 0..count {
        for (layout, values) in layouts.iter().zip(parts) {
            let width = 1 + layout.dim;
            let row = &values[r * layout.row_len()..(r + 1) * layout.row_len()];
            for member in row.chunks_exact(width) {
                rows.extend_from_slice(member);
                rows.extend(std::iter::repeat_n(0.0, fused.dim - layout.dim));
            }
        }
    }
    rows
}

/// The weights `w` (non-negative, summing to 1) minimising `sum_e (labels[e] -
/// sum_k w_k * predictions[k][e])^2`, with the error they reach (mean squared): the
/// minimum of [`ResidualGram`] over these events alone.
pub fn learn_weights(predictions: &[Vec<f32>], labels: &[f32]) -> (Vec<f32>, f64) {
    let mut gram = ResidualGram::new(predictions.len());
    gram.add(predictions, labels);
    let (weights, error) = gram.minimum();
    (weights, error / labels.len().max(1) as f64)
}

/// The Gram matrix of a fusion's parts' residuals (prediction minus label) summed over
/// labelled events, which is all the fitted weights depend on: with the weights summing to
/// 1 the fused error is `sum_k w_k * r_k`, `r_k` part `k`'s residuals, so the squared
/// error is the quadratic `w' R w` over the simplex. Events added at different times add
/// up, so a replay's fusion fits on every window's residuals as they were before the parts
/// trained on it, in a state of `parts^2` numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct ResidualGram {
    parts: usize,
    /// Row-major `parts x parts` sums.
    sums: Vec<f64>,
}

impl ResidualGram {
    /// No events yet, over `parts` parts.
    pub fn new(parts: usize) -> Self {
        Self {
            parts,
            sums: vec![0.0; parts * parts],
        }
    }

    /// The Gram matrix of `parts` parts from its row-major `sums` (as [`Self::sums`] gave
    /// them); `None` when they are not `parts^2` numbers.
    pub fn from_sums(parts: usize, sums: Vec<f64>) -> Option<Self> {
        (sums.len() == parts * parts).then_some(Self { parts, sums })
    }

    /// Its row-major sums.
    pub fn sums(&self) -> &[f64] {
        &self.sums
    }

    /// Adds the residuals of `predictions` (one list per part, one prediction per event)
    /// against `labels`.
    pub fn add(&mut self, predictions: &[Vec<f32>], labels: &[f32]) {
        let k = self.parts;
        for (e, &y) in labels.iter().enumerate() {
            let residuals: Vec<f64> = predictions
                .iter()
                .map(|p| f64::from(p[e]) - f64::from(y))
                .collect();
            for a in 0..k {
                for b in 0..k {
                    self.sums[a * k + b] += residuals[a] * residuals[b];
                }
            }
        }
    }

    /// The weights (non-negative, summing to 1) with the least summed squared error over
    /// the events added, and that error. The minimum has some set of positive weights
    /// solving `R_S w_S = lambda 1`; every non-empty set is tried (2^k - 1 small solves;
    /// fusions have a handful of parts) and the best one with non-negative weights kept, so
    /// the result is exact, never worse than the best single part, and independent of any
    /// step size. Ties (all sets tie where no events were added) keep the earliest set.
    pub fn minimum(&self) -> (Vec<f32>, f64) {
        let (k, gram) = (self.parts, &self.sums);
        let mut best: Option<(Vec<f64>, f64)> = None;
        for set in 1u32..(1 << k) {
            let members: Vec<usize> = (0..k).filter(|&i| set & (1 << i) != 0).collect();
            let Some(w) = simplex_face_minimum(gram, k, &members) else {
                continue;
            };
            if w.iter().any(|&x| x < 0.0) {
                continue;
            }
            let mut full = vec![0.0; k];
            for (&i, &x) in members.iter().zip(&w) {
                full[i] = x;
            }
            let error: f64 = (0..k)
                .map(|a| {
                    (0..k)
                        .map(|b| full[a] * gram[a * k + b] * full[b])
                        .sum::<f64>()
                })
                .sum::<f64>();
            if best.as_ref().is_none_or(|(_, e)| error < *e) {
                best = Some((full, error));
            }
        }
        let (weights, error) = best.unwrap_or_else(|| (vec![1.0 / k as f64; k], f64::NAN));
        (weights.iter().map(|&w| w as f32).collect(), error)
    }
}

/// The minimum of `w' R w` with `sum w = 1` over the weights of `members` alone, from its
/// optimality conditions `R_S w + lambda 1 = 0`, `1' w = 1` (solvable even where the parts
/// fit the labels exactly and `R_S` itself is singular); `None` when they have no unique
/// solution (e.g. two identical parts).
fn simplex_face_minimum(gram: &[f64], k: usize, members: &[usize]) -> Option<Vec<f64>> {
    let s = members.len();
    // Gaussian elimination with partial pivoting on the (s + 1) x (s + 2) augmented system.
    let mut m: Vec<Vec<f64>> = members
        .iter()
        .map(|&a| {
            let mut row: Vec<f64> = members.iter().map(|&b| gram[a * k + b]).collect();
            row.extend([1.0, 0.0]);
            row
        })
        .collect();
    let mut last = vec![1.0; s];
    last.extend([0.0, 1.0]);
    m.push(last);
    let n = s + 1;
    let scale = m.iter().flatten().fold(0.0f64, |acc, x| acc.max(x.abs()));
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() <= scale * 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        for row in 0..n {
            if row != col {
                let factor = m[row][col] / m[col][col];
                let pivot_row = m[col].clone();
                for (value, p) in m[row].iter_mut().zip(&pivot_row).skip(col) {
                    *value -= factor * p;
                }
            }
        }
    }
    Some((0..s).map(|i| m[i][n] / m[i][i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::Loss;

    #[test]
    fn a_fused_head_scores_the_weighted_mean_of_its_parts() {
        // Part a: 2 members of dim 1; part b: 1 member of dim 2.
        let a = ScoringHead::new(
            RowLayout { members: 2, dim: 1 },
            vec![1.0, 1.0],
            Loss::Squared,
        );
        let b = ScoringHead::new(RowLayout { members: 1, dim: 2 }, vec![2.0], Loss::Squared);
        let (user_a, item_a) = (vec![0.5, 1.0, 0.0, 2.0], vec![0.0, 1.0, 0.25, 1.0]);
        let (user_b, item_b) = (vec![0.0, 1.0, 1.0], vec![0.0, 0.5, 0.25]);
        let head = fused_head(&[a.clone(), b.clone()], &[0.25, 0.75]);
        let layouts = [a.layout, b.layout];
        let user = fused_rows(head.layout, &layouts, &[user_a.clone(), user_b.clone()], 1);
        let item = fused_rows(head.layout, &layouts, &[item_a.clone(), item_b.clone()], 1);
        assert_eq!(user, vec![0.5, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 1.0, 1.0]);
        let pa = a.score(&user_a, &item_a, None);
        let pb = b.score(&user_b, &item_b, None);
        let fused = head.score(&user, &item, None);
        // Part a's members predict 1 + 0.5 + 1 = 2.5 and 1 + 0.25 + 2 = 3.25.
        assert_eq!(pa.prediction, 2.875);
        assert_eq!(pb.prediction, 2.75);
        assert_eq!(fused.prediction, 0.25 * 2.875 + 0.75 * 2.75);
        // Members 2.5, 3.25, 2.75 with weights 0.125, 0.125, 0.75.
        let mean = fused.prediction;
        let spread = 0.125 * (2.5 - mean).powi(2)
            + 0.125 * (3.25 - mean).powi(2)
            + 0.75 * (2.75 - mean).powi(2);
        assert!((fused.variance - spread).abs() < 1e-6);
    }

    #[test]
    fn learned_weights_find_the_best_mixture() {
        // The labels are exactly 0.3 * a + 0.7 * b.
        let a: Vec<f32> = (0..50)
            .map(|i| (i as f32 * 0.37).sin() * 2.0 + 3.0)
            .collect();
        let b: Vec<f32> = (0..50).map(|i| (i as f32 * 0.11).cos() + 3.0).collect();
        let labels: Vec<f32> = a.iter().zip(&b).map(|(x, y)| 0.3 * x + 0.7 * y).collect();
        let (w, error) = learn_weights(&[a.clone(), b.clone()], &labels);
        assert!(
            (w[0] - 0.3).abs() < 1e-5 && (w[1] - 0.7).abs() < 1e-5,
            "{w:?}"
        );
        assert!(error < 1e-10, "{error}");
        // A useless third part gets no weight.
        let c: Vec<f32> = (0..50)
            .map(|i| if i % 2 == 0 { 10.0 } else { -5.0 })
            .collect();
        let (w, _) = learn_weights(&[a, b, c], &labels);
        assert!(w[2].abs() < 1e-5, "{w:?}");
    }

    #[test]
    fn residuals_added_in_parts_fit_the_weights_of_all_events_at_once() {
        let a: Vec<f32> = (0..60).map(|i| (i as f32 * 0.3).sin() + 3.0).collect();
        let b: Vec<f32> = (0..60).map(|i| (i as f32 * 0.7).cos() + 3.2).collect();
        let labels: Vec<f32> = (0..60).map(|i| 3.0 + (i % 5) as f32 * 0.25).collect();
        let (whole, error) = learn_weights(&[a.clone(), b.clone()], &labels);
        let mut gram = ResidualGram::new(2);
        for range in [0..7, 7..30, 30..60] {
            let chunk = [a[range.clone()].to_vec(), b[range.clone()].to_vec()];
            gram.add(&chunk, &labels[range]);
        }
        let (weights, summed) = gram.minimum();
        assert_eq!(weights, whole);
        assert!((summed / 60.0 - error).abs() < 1e-12);
        assert!(weights.iter().all(|&w| w > 0.05), "{weights:?}");
        let restored = ResidualGram::from_sums(2, gram.sums().to_vec()).unwrap();
        assert_eq!(restored, gram);
        assert_eq!(ResidualGram::from_sums(3, gram.sums().to_vec()), None);
    }

    #[test]
    fn learned_weights_never_lose_to_the_best_part_and_stay_on_the_simplex() {
        // b is a's prediction shifted away: all weight on a; mixing with a worse part that
        // errs the same way never helps.
        let labels = vec![1.0, 2.0, 3.0, 4.0];
        let a = vec![1.5, 2.5, 3.5, 4.5];
        let b = vec![2.0, 3.0, 4.0, 5.0];
        let (w, error) = learn_weights(&[a, b], &labels);
        assert_eq!(w, vec![1.0, 0.0]);
        assert!((error - 0.25).abs() < 1e-12);
        // Identical parts (a singular system): one set of weights, still the best error.
        let (w, error) = learn_weights(&[vec![1.0, 2.0], vec![1.0, 2.0]], &[1.0, 3.0]);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6 && w.iter().all(|&x| x >= 0.0));
        assert!((error - 0.5).abs() < 1e-12);
    }
}
