//! The BPR objective on gathered rows, and its gradients in closed form.
//!
//! For a positive `(u, i)` and a sampled negative `j` ([`super::negatives`]), member `m`
//! scores both items, `x_ui = offset + b_u + b_i + <p_u, q_i>` and likewise `x_uj`, and
//! minimises `w · softplus(-(x_ui - x_uj)) = -w · ln σ(x_ui - x_uj)`, `w` being the sample's
//! bootstrap weight in that member. The offset and the user bias cancel in the margin
//!
//! ```text
//! d = x_ui - x_uj = (b_i - b_j) + <p_u, q_i - q_j> = <[1, p_u], [b_i, q_i] - [b_j, q_j]>,
//! ```
//!
//! so they never train (the rows keep their layout, and the incremental engine its contract).
//! With `s = w · ∂softplus(-d)/∂d = w · (σ(d) - 1)`, the gradients are
//!
//! ```text
//! ∂/∂[b_u, p_u] = s · [0, q_i - q_j]    ∂/∂[b_i, q_i] = s · [1, p_u]    ∂/∂[b_j, q_j] = -s · [1, p_u]
//! ```
//!
//! which the sparse optimisers take in the factored form of [`super::optim::RowGradients`]
//! (scale `s`, or `-s` for the negatives' rows). A test checks them against candle autograd.

use candle_core::Tensor;

use super::mf::unit_bias;

/// The BPR forward pass of a block: the margin `d = x_ui - x_uj` of gathered user rows `p`,
/// positive item rows `q_i` and negative item rows `q_j` (each `[n, members, 1 + dim]`),
/// with the pieces its closed-form gradients reuse.
pub(super) struct PairForward {
    /// `x_ui - x_uj` per sample and member, `[n, members]`.
    pub(super) margin: Tensor,
    /// User rows with the bias replaced by 1: `[1, p_u]`, the derivative of the margin with
    /// respect to the positive's row (and minus that of the negative's).
    pub(super) p_unit_bias: Tensor,
    /// `[0, q_i - q_j]`: the derivative of the margin with respect to the user row.
    pub(super) user_direction: Tensor,
}

impl PairForward {
    /// The forward pass of user rows `p`, positive item rows `q_pos` and negative item rows
    /// `q_neg`.
    pub(super) fn new(p: &Tensor, q_pos: &Tensor, q_neg: &Tensor) -> candle_core::Result<Self> {
        let p_unit_bias = unit_bias(p)?;
        let q_diff = (q_pos - q_neg)?;
        let margin = (&p_unit_bias * &q_diff)?.sum(2)?;
        // The user bias cancels: its slot of the user's gradient is 0.
        let user_direction = zero_bias(&q_diff)?;
        Ok(Self {
            margin,
            p_unit_bias,
            user_direction,
        })
    }

    /// `∂softplus(-d)/∂d = σ(d) - 1` per sample and member: the derivative of the per-sample
    /// loss with respect to the margin (always negative: raising the margin lowers the loss).
    pub(super) fn slope(&self) -> candle_core::Result<Tensor> {
        candle_nn::ops::sigmoid(&self.margin)?.affine(1.0, -1.0)
    }

    /// `Σ w · softplus(-d)` over the block, computed stably as
    /// `relu(-d) + ln(1 + e^-|d|)`.
    pub(super) fn weighted_loss(&self, weights: &Tensor) -> candle_core::Result<Tensor> {
        let d = &self.margin;
        let softplus = (d.neg()?.relu()? + d.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
        (softplus * weights)?.sum_all()
    }

    /// Gradients of `Σ w · softplus(-d)` with respect to the gathered user, positive and
    /// negative rows, in closed form. Training hands the optimiser the factors instead;
    /// tests compare this with autograd.
    #[cfg(test)]
    pub(super) fn gradients(
        &self,
        weights: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let scale = (self.slope()? * weights)?.unsqueeze(2)?; // [n, members, 1]
        let positive = scale.broadcast_mul(&self.p_unit_bias)?;
        Ok((
            scale.broadcast_mul(&self.user_direction)?,
            positive.clone(),
            positive.neg()?,
        ))
    }
}

/// Rows `[n, members, 1 + dim]` with each member's bias replaced by 0: `[0, v_1 .. v_dim]`
/// (a concatenation, as [`unit_bias`]).
fn zero_bias(rows: &Tensor) -> candle_core::Result<Tensor> {
    let (n, members, width) = rows.dims3()?;
    let zeros = Tensor::zeros((n, members, 1), rows.dtype(), rows.device())?;
    if width == 1 {
        return Ok(zeros);
    }
    Tensor::cat(&[&zeros, &rows.narrow(2, 1, width - 1)?], 2)
}
