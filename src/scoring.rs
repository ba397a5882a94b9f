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
//! and what `raw_m` means depends on the [`Loss`] the model was trained with: a rating under
//! the squared error (clipped to the rating scale), a click logit under cross-entropy (the
//! prediction is `sigmoid(raw_m)`), or an unbounded ranking score under BPR (never clipped).
//! The sample's prediction is the mean over members, its uncertainty the population variance
//! over members.
//!
//! This module is pure arithmetic with a fixed summation order, so the incremental engine,
//! the from-scratch reference and the metrics all compute bit-identical scores, whichever
//! worker computes them.
//!
//! ```
//! use recsift::scoring::{Loss, RowLayout, ScoringHead};
//!
//! let head = ScoringHead::new(RowLayout { members: 2, dim: 2 }, vec![3.5, 3.5], Loss::Squared);
//! let user = [0.1, 1.0, 0.0, /* member 2 */ 0.0, 0.0, 1.0];
//! let item = [0.2, 0.5, 0.5, /* member 2 */ -0.1, 0.5, 0.5];
//! let score = head.score(&user, &item, Some(4.0));
//! assert!((score.prediction - 4.1).abs() < 1e-6);
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::data::LabelKind;

/// The objective a model trains on. It fixes what a raw score means, and so how a
/// [`ScoringHead`] turns raw scores into a prediction and a per-sample loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Half the squared error of the raw score against the label (the default for ratings).
    /// The prediction is the raw score, clipped to the head's label range when it has one;
    /// the reported loss is the squared error.
    Squared,
    /// Binary cross-entropy of `sigmoid(raw)` against the label (the default for clicks).
    /// The prediction is the probability `sigmoid(raw)`.
    CrossEntropy,
    /// Bayesian personalised ranking (Rendle et al., UAI 2009): every labelled event is a
    /// positive, whatever its label, trained to score above an item its user has no known
    /// event with, by `-ln sigmoid(x_ui - x_uj)`. The prediction is the raw score, an
    /// unbounded ranking score: never clipped, never squashed. The reported per-sample loss
    /// is the pointwise logistic loss of a positive, `-ln sigmoid(prediction)`.
    Bpr,
}

impl Loss {
    /// Every loss, in the order the documentation lists them.
    pub const ALL: [Loss; 3] = [Loss::Squared, Loss::CrossEntropy, Loss::Bpr];

    /// The loss a model trains with unless the pipeline says otherwise: the squared error
    /// for ratings, cross-entropy for clicks.
    pub fn default_for(kind: LabelKind) -> Loss {
        match kind {
            LabelKind::Rating => Loss::Squared,
            LabelKind::Click => Loss::CrossEntropy,
        }
    }
}

/// Shape of a model's scoring rows: `members` blocks of `1 + dim` floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
    /// Mean prediction over members (a rating, a click probability, or a BPR ranking
    /// score; see [`Loss`]).
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
    /// The loss the model trains with: what a raw score means.
    pub loss: Loss,
    /// Under [`Loss::Squared`], member predictions are clipped into this range before
    /// averaging (the scale of the data); the other losses ignore it.
    pub clip: Option<(f32, f32)>,
    /// Per-member weights summing to 1 (a fusion of models, see `model::set`): the
    /// prediction is the weighted mean of the members' predictions and the variance their
    /// weighted variance. `None`: every member counts the same.
    pub weights: Option<Vec<f32>>,
}

impl ScoringHead {
    /// A head without clipping.
    ///
    /// # Panics
    /// If `offsets` does not have one entry per member.
    pub fn new(layout: RowLayout, offsets: Vec<f32>, loss: Loss) -> Self {
        assert_eq!(offsets.len(), layout.members, "one offset per member");
        Self {
            layout,
            offsets,
            loss,
            clip: None,
            weights: None,
        }
    }

    /// The same head, clipping squared-loss predictions into `[low, high]` (a head of
    /// another loss ignores the range).
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
        match self.loss {
            Loss::Squared => match self.clip {
                Some((low, high)) => raw.clamp(low, high),
                None => raw,
            },
            Loss::CrossEntropy => sigmoid(raw),
            Loss::Bpr => raw,
        }
    }

    /// Prediction, variance and loss of a sample from its user and item rows.
    pub fn score(&self, user_row: &[f32], item_row: &[f32], label: Option<f32>) -> PerSampleScore {
        debug_assert_eq!(user_row.len(), self.layout.row_len());
        debug_assert_eq!(item_row.len(), self.layout.row_len());
        let members = self.layout.members;
        if let Some(weights) = &self.weights {
            return self.weighted_score(weights, user_row, item_row, label);
        }
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

    /// [`ScoringHead::score`] under per-member `weights`.
    fn weighted_score(
        &self,
        weights: &[f32],
        user_row: &[f32],
        item_row: &[f32],
        label: Option<f32>,
    ) -> PerSampleScore {
        let predictions: Vec<f32> = (0..self.layout.members)
            .map(|m| self.member_prediction(m, user_row, item_row))
            .collect();
        let mean: f32 = weights.iter().zip(&predictions).map(|(w, p)| w * p).sum();
        let variance: f32 = weights
            .iter()
            .zip(&predictions)
            .map(|(w, p)| w * (p - mean) * (p - mean))
            .sum();
        PerSampleScore {
            prediction: mean,
            variance,
            loss: label.map(|y| self.loss(mean, y)),
        }
    }

    /// Loss of a prediction against a label: the squared error, the binary cross-entropy,
    /// or, under BPR, the pointwise logistic loss of a positive, `-ln sigmoid(prediction)`
    /// (every event is a positive, so the label is not read; the loss is large for the
    /// samples the model ranks lowest).
    pub fn loss(&self, prediction: f32, label: f32) -> f32 {
        match self.loss {
            Loss::Squared => (prediction - label) * (prediction - label),
            Loss::CrossEntropy => {
                let p = prediction.clamp(1e-7, 1.0 - 1e-7);
                -(label * p.ln() + (1.0 - label) * (1.0 - p).ln())
            }
            Loss::Bpr => softplus(-prediction),
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

/// `ln(1 + e^x)`, computed without overflow as `max(x, 0) + ln(1 + e^-|x|)`.
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
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
        let head = ScoringHead::new(RowLayout { members: 1, dim: 3 }, vec![3.0], Loss::Squared);
        let s = head.score(&[0.5, 1.0, 0.0, 0.0], &[-0.25, 0.5, 9.0, 9.0], Some(4.0));
        assert_eq!(s.prediction, 3.75);
        assert_eq!(s.variance, 0.0);
        assert_eq!(s.loss, Some(0.0625));
    }

    #[test]
    fn ensemble_variance_is_population_variance_of_members() {
        let head = ScoringHead::new(
            RowLayout { members: 2, dim: 0 },
            vec![0.0, 0.0],
            Loss::Squared,
        );
        let s = head.score(&[1.0, 3.0], &[0.0, 0.0], None);
        assert_eq!(s.prediction, 2.0);
        assert_eq!(s.variance, 1.0);
        assert_eq!(s.loss, None);
    }

    #[test]
    fn weighted_members_give_the_weighted_mean_and_variance() {
        let mut head = ScoringHead::new(
            RowLayout { members: 2, dim: 0 },
            vec![0.0, 0.0],
            Loss::Squared,
        );
        head.weights = Some(vec![0.75, 0.25]);
        let s = head.score(&[1.0, 3.0], &[0.0, 0.0], Some(2.0));
        assert_eq!(s.prediction, 1.5);
        // 0.75 * 0.25 + 0.25 * 2.25
        assert_eq!(s.variance, 0.75);
        assert_eq!(s.loss, Some(0.25));
    }

    #[test]
    fn clipping_keeps_predictions_on_the_rating_scale() {
        let head = ScoringHead::new(RowLayout { members: 1, dim: 0 }, vec![4.0], Loss::Squared)
            .with_clip(0.5, 5.0);
        assert_eq!(head.score(&[2.0], &[0.0], None).prediction, 5.0);
    }

    #[test]
    fn bpr_scores_are_never_clipped_and_lose_like_a_positive() {
        let head = ScoringHead::new(RowLayout { members: 1, dim: 0 }, vec![0.0], Loss::Bpr)
            .with_clip(0.5, 5.0);
        let s = head.score(&[7.0], &[1.0], Some(0.0));
        assert_eq!(s.prediction, 8.0);
        // -ln sigmoid(8), whatever the label.
        let expected = (1.0f64 + (-8.0f64).exp()).ln() as f32;
        assert!((s.loss.unwrap() - expected).abs() < 1e-7);
        let low = head.score(&[-30.0], &[0.0], Some(1.0));
        assert_eq!(low.prediction, -30.0);
        assert!((low.loss.unwrap() - 30.0).abs() < 1e-5, "{low:?}");
    }

    #[test]
    fn losses_default_by_label_kind_and_read_only_their_names() {
        assert!(serde_yaml::from_str::<Loss>("BPR").is_err());
        assert_eq!(Loss::default_for(LabelKind::Rating), Loss::Squared);
        assert_eq!(Loss::default_for(LabelKind::Click), Loss::CrossEntropy);
    }

    #[test]
    fn clicks_use_probabilities_and_cross_entropy() {
        let head = ScoringHead::new(
            RowLayout { members: 1, dim: 0 },
            vec![0.0],
            Loss::CrossEntropy,
        );
        let s = head.score(&[0.0], &[0.0], Some(1.0));
        assert_eq!(s.prediction, 0.5);
        assert!((s.loss.unwrap() - std::f32::consts::LN_2).abs() < 1e-6);
    }
}
