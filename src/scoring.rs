//! Per-sample scoring: how a model's user and item rows turn into a prediction, an
//! uncertainty and (where the label is known) a loss.
//!
//! Every model exports its parameters as *scoring rows*: for each of its `members`
//! (ensemble members, or MC-dropout passes) a bias followed by a `dim`-long vector, for every
//! user and every item. Member `m` predicts
//!
//! ```text
//! raw_m = offset_m + user_bias_m + item_bias_m + <user_vector_m, item_vector_m>
//! ```
//!
//! (for clicks, the prediction is `sigmoid(raw_m)`). The sample's prediction is the mean over
//! members, its uncertainty the population variance over members.
//!
//! This module is pure arithmetic with a fixed summation order, so the incremental engine,
//! the from-scratch reference and the metrics all compute bit-identical scores: a retraction
//! in the dataflow cancels only if the old score is recomputed exactly.
//!
//! ```
//! use recsift::data::LabelKind;
//! use recsift::scoring::{RowLayout, ScoringHead};
//!
//! let head = ScoringHead::new(RowLayout { members: 2, dim: 2 }, vec![3.5, 3.5], LabelKind::Rating);
//! let user = [0.1, 1.0, 0.0, /* member 2 */ 0.0, 0.0, 1.0];
//! let item = [0.2, 0.5, 0.5, /* member 2 */ -0.1, 0.5, 0.5];
//! let score = head.score(&user, &item, Some(4.0));
//! assert!((score.prediction - 3.85).abs() < 1e-6);
//! ```

use crate::data::LabelKind;

/// Shape of a model's scoring rows: `members` blocks of `1 + dim` floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RowLayout {
    /// Ensemble members (or MC-dropout passes) stored side by side.
    pub members: usize,
    /// Length of each member's vector.
    pub dim: usize,
}

impl RowLayout {
    /// Floats in one row: `members * (1 + dim)`.
    pub fn row_len(&self) -> usize {
        self.members * (1 + self.dim)
    }
}

/// Prediction, uncertainty and loss of one sample under the current model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerSampleScore {
    /// Mean prediction over members (a rating, or a click probability).
    pub prediction: f32,
    /// Population variance of the members' predictions (0 for a single member).
    pub variance: f32,
    /// Loss of the mean prediction against the label, when the label is known.
    pub loss: Option<f32>,
}

/// Everything shared by all samples that scoring needs besides the two rows.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoringHead {
    /// Shape of the rows.
    pub layout: RowLayout,
    /// Per-member constant added to every prediction (e.g. the global mean rating).
    pub offsets: Vec<f32>,
    /// Ratings or clicks.
    pub label_kind: LabelKind,
    /// Ratings are clipped into this range before averaging (the scale of the data).
    pub clip: Option<(f32, f32)>,
}

impl ScoringHead {
    /// A head without clipping.
    ///
    /// # Panics
    /// If `offsets` does not have one entry per member.
    pub fn new(layout: RowLayout, offsets: Vec<f32>, label_kind: LabelKind) -> Self {
        assert_eq!(offsets.len(), layout.members, "one offset per member");
        Self {
            layout,
            offsets,
            label_kind,
            clip: None,
        }
    }

    /// The same head, clipping rating predictions into `[low, high]`.
    pub fn with_clip(mut self, low: f32, high: f32) -> Self {
        self.clip = Some((low, high));
        self
    }

    /// Member `m`'s prediction for a user row and an item row.
    pub fn member_prediction(&self, m: usize, user_row: &[f32], item_row: &[f32]) -> f32 {
        let width = 1 + self.layout.dim;
        let u = &user_row[m * width..(m + 1) * width];
        let i = &item_row[m * width..(m + 1) * width];
        let raw = self.offsets[m] + u[0] + i[0] + dot(&u[1..], &i[1..]);
        match self.label_kind {
            LabelKind::Rating => match self.clip {
                Some((low, high)) => raw.clamp(low, high),
                None => raw,
            },
            LabelKind::Click => sigmoid(raw),
        }
    }

    /// Prediction, variance and loss of a sample from its user and item rows.
    pub fn score(&self, user_row: &[f32], item_row: &[f32], label: Option<f32>) -> PerSampleScore {
        debug_assert_eq!(user_row.len(), self.layout.row_len());
        debug_assert_eq!(item_row.len(), self.layout.row_len());
        let members = self.layout.members;
        let mut sum = 0.0f32;
        let mut sum_sq = 0.0f32;
        for m in 0..members {
            let p = self.member_prediction(m, user_row, item_row);
            sum += p;
            sum_sq += p * p;
        }
        let mean = sum / members as f32;
        let variance = (sum_sq / members as f32 - mean * mean).max(0.0);
        PerSampleScore {
            prediction: mean,
            variance,
            loss: label.map(|y| self.loss(mean, y)),
        }
    }

    /// Loss of a prediction against a label: squared error for ratings, binary
    /// cross-entropy for clicks.
    pub fn loss(&self, prediction: f32, label: f32) -> f32 {
        match self.label_kind {
            LabelKind::Rating => (prediction - label) * (prediction - label),
            LabelKind::Click => {
                let p = prediction.clamp(1e-7, 1.0 - 1e-7);
                -(label * p.ln() + (1.0 - label) * (1.0 - p).ln())
            }
        }
    }
}

/// Dot product with a fixed summation order (eight interleaved partial sums), so the
/// compiler can vectorise it and every caller gets the same bits.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for lane in 0..8 {
            acc[lane] += a[c * 8 + lane] * b[c * 8 + lane];
        }
    }
    let mut tail = 0.0f32;
    for k in chunks * 8..a.len() {
        tail += a[k] * b[k];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The logistic function.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_for_all_lengths() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|k| (k as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|k| (k as f32 * 0.11).cos()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5, "n = {n}");
        }
    }

    #[test]
    fn single_member_has_zero_variance_and_squared_loss() {
        let head = ScoringHead::new(RowLayout { members: 1, dim: 3 }, vec![3.0], LabelKind::Rating);
        let s = head.score(&[0.5, 1.0, 0.0, 0.0], &[-0.25, 0.5, 9.0, 9.0], Some(4.0));
        assert_eq!(s.prediction, 3.75);
        assert_eq!(s.variance, 0.0);
        assert_eq!(s.loss, Some(0.0625));
    }

    #[test]
    fn ensemble_variance_is_population_variance_of_members() {
        let head = ScoringHead::new(RowLayout { members: 2, dim: 0 }, vec![0.0, 0.0], LabelKind::Rating);
        let s = head.score(&[1.0, 3.0], &[0.0, 0.0], None);
        assert_eq!(s.prediction, 2.0);
        assert_eq!(s.variance, 1.0);
        assert_eq!(s.loss, None);
    }

    #[test]
    fn clipping_keeps_predictions_on_the_rating_scale() {
        let head = ScoringHead::new(RowLayout { members: 1, dim: 0 }, vec![4.0], LabelKind::Rating)
            .with_clip(0.5, 5.0);
        assert_eq!(head.score(&[2.0], &[0.0], None).prediction, 5.0);
    }

    #[test]
    fn clicks_use_probabilities_and_cross_entropy() {
        let head = ScoringHead::new(RowLayout { members: 1, dim: 0 }, vec![0.0], LabelKind::Click);
        let s = head.score(&[0.0], &[0.0], Some(1.0));
        assert_eq!(s.prediction, 0.5);
        assert!((s.loss.unwrap() - std::f32::consts::LN_2).abs() < 1e-6);
    }
}
