//! Biased matrix factorisation (`mf`), trained with sparse row updates, with an ensemble of
//! bootstrap members for uncertainty.
//!
//! Member `m` predicts `offset + b_u + b_i + <p_u, q_i>` (a rating, or a click logit), where
//! the offset is fixed at construction (the training-set mean, as in Surprise's SVD, or its
//! logit for clicks) and never learned: a training pass changes only the user and item rows
//! its samples touch, so the incremental engine re-scores only samples sharing those rows.
//!
//! Both tables hold all members side by side, each row laid out exactly as a scoring row
//! (per member: bias, then `dim` factors; see [`crate::scoring`]), so exporting rows is an
//! `index_select` and a copy, and all members train in the same tensor operations. Member `m`
//! weighs sample `k` by a Poisson(1) bootstrap weight of `(seed, keys[k], m)` (online
//! bagging, [`super::bootstrap`]).
//!
//! A batch step gathers the batch's rows, computes the gradients of
//! `Σ_k w_km · ℓ(raw_km, y_k)` with respect to those rows in closed form, and hands them to a
//! sparse optimiser ([`super::optim`]) that writes back only those rows. `ℓ` is the train
//! node's [`Loss`]: half the squared error (the default for ratings) or binary cross-entropy
//! on the logit (the default for clicks); both have the gradient `w · (prediction - label)`
//! with respect to `raw`, so a learning rate means the same for both, and SGD with batch
//! size 1 is exactly Surprise's SVD update. The closed form gives the same gradients as
//! candle autograd on a leaf `Var` of the gathered rows (a test checks it) and was 3.8-4.2x
//! faster per batch on the CPU, because it builds no graph
//! (`gradient_timing_closed_form_vs_autograd`, `docs/benchmarks.md`).
//!
//! **BPR** (`loss: bpr`, implicit feedback). Every labelled event is a positive, whatever
//! its label (ratings are treated as "the user met the item"). Each epoch, each positive
//! `(u, i)` gets a negative `j` drawn uniformly, with a seeded hash, among the items `u` has
//! no event with in any `fit` so far ([`super::negatives`]), and member `m` minimises
//! `w · -ln σ(x_ui - x_uj)`. The step then gathers three rows per sample and the gradient
//! flows into `u`'s, `i`'s and `j`'s rows, in closed form too ([`super::pairwise`]); the
//! offset (0 under BPR) and the user bias cancel in `x_ui - x_uj` and never train. A fit
//! reports the negatives' rows as changed as well. The scoring head then reads the raw score
//! as an unbounded ranking score (see [`Loss::Bpr`]).
//!
//! Recommended defaults, measured on MovieLens 100K (u1: test RMSE 0.923 in 0.25 s on 2
//! shared cores): `dim` 32, `init_std` 0.03, SGD with `lr` 0.02 and `weight_decay` 0.1,
//! `batch_size` 1024, 25 epochs (`docs/benchmarks.md`).

use candle_core::{Device, Tensor};

use super::init::TableTag;
use super::optim::{RowGradients, RowTable, SparseOptimizer, StepGradients, block_rows, blocks};
use super::pairwise::PairForward;
use super::training::{
    Batch, Draws, Dropout, FitSetup, RowModelSetup, Trainable, accumulate, check_rows, fit_passes,
    initial_rows, other_family,
};
use super::{FitReport, ModelError, ModelState, Recommender};
use crate::data::{Interaction, ItemIdx, LabelKind, UserIdx};
use crate::plan::params::{ModelKind, TrainParams};
use crate::scoring::{Loss, RowLayout, ScoringHead};

/// Biased matrix factorisation with `members` bootstrap members stored side by side.
#[derive(Debug)]
pub struct BiasedMf {
    layout: RowLayout,
    loss: Loss,
    offsets: Vec<f32>,
    clip: Option<(f32, f32)>,
    init_std: f64,
    seed: u64,
    batch_size: usize,
    device: Device,
    optimizer: SparseOptimizer,
    users: RowTable,
    items: RowTable,
    /// The offsets as `[1, members]`.
    offset_row: Tensor,
    /// The shuffle stream and (under BPR) the negative sampler.
    draws: Draws,
}

impl BiasedMf {
    /// A model with `n_users` x `n_items` rows initialised from `params.seed`, on
    /// `params.device`.
    ///
    /// `global_mean` is the mean training label: the fixed offset of every prediction under
    /// the squared error, or the base rate whose logit becomes the offset under
    /// cross-entropy (BPR's offset is 0). `label_kind` is what the data's labels are.
    pub fn new(
        params: &TrainParams,
        n_users: usize,
        n_items: usize,
        global_mean: f32,
        label_kind: LabelKind,
    ) -> Result<Self, ModelError> {
        let ModelKind::Mf { dim, init_std } = params.model else {
            return Err(other_family("BiasedMf", "mf", params));
        };
        let RowModelSetup {
            layout,
            offsets,
            offset_row,
            device,
            optimizer,
            ..
        } = RowModelSetup::new(
            "mf",
            params,
            (dim, init_std),
            (global_mean, label_kind),
            Dropout::None,
        )?;
        let table = |tag: TableTag, rows: usize| -> Result<RowTable, ModelError> {
            let values = initial_rows((params.seed, tag), 0..rows, layout, init_std, &device)?;
            Ok(RowTable::new(values, layout.members, 1 + dim, &optimizer)?)
        };
        let users = table(TableTag::Users, n_users)?;
        let items = table(TableTag::Items, n_items)?;
        Ok(Self {
            layout,
            loss: params.loss,
            offsets,
            clip: None,
            init_std,
            seed: params.seed,
            batch_size: params.batch_size,
            device,
            optimizer,
            users,
            items,
            offset_row,
            draws: Draws::new(params, (n_users, n_items)),
        })
    }

    /// The same model, with its scoring head clipping squared-loss predictions into
    /// `[low, high]` (the scale of the data); other losses are never clipped. Training is
    /// not clipped.
    pub fn with_rating_range(mut self, low: f32, high: f32) -> Self {
        if self.loss == Loss::Squared {
            self.clip = Some((low, high));
        }
        self
    }

    fn export(&self, table: &RowTable, rows: &[u32]) -> Result<Vec<f32>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let index = Tensor::from_slice(rows, rows.len(), &self.device)?;
        Ok(table
            .values()
            .index_select(&index, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    fn grow_table(&mut self, tag: TableTag, target: usize) -> Result<(), ModelError> {
        let table = match tag {
            TableTag::Users => &self.users,
            TableTag::Items => &self.items,
        };
        let current = table.rows();
        if target <= current {
            return Ok(());
        }
        let values = initial_rows(
            (self.seed, tag),
            current..target,
            self.layout,
            self.init_std,
            &self.device,
        )?;
        match tag {
            TableTag::Users => self.users.append(&values)?,
            TableTag::Items => self.items.append(&values)?,
        }
        Ok(())
    }
}

/// The forward pass of a batch, with the pieces its closed-form gradients reuse: the
/// prediction `offset + <[1, p], [b_i, q]> + b_u` of gathered user rows `p` and item rows
/// `q` (`[n, members, 1 + dim]`). Text MF and the two-tower model reuse it on their
/// effective rows.
pub(super) struct Forward {
    /// Raw predictions (ratings, or click logits), `[n, members]`.
    pub(super) raw: Tensor,
    /// User rows with the bias replaced by 1: `[1, p_1 .. p_d]`, the gradient of `raw` with
    /// respect to the item row.
    pub(super) p_unit_bias: Tensor,
    /// Item rows with the bias replaced by 1: the gradient of `raw` with respect to the
    /// user row.
    pub(super) q_unit_bias: Tensor,
}

impl Forward {
    /// The forward pass; `offset_row` is `[1, members]`.
    pub(super) fn new(p: &Tensor, q: &Tensor, offset_row: &Tensor) -> candle_core::Result<Self> {
        let p_unit_bias = unit_bias(p)?;
        let q_unit_bias = unit_bias(q)?;
        // <[1, p], [b_i, q]> = b_i + <p, q>; adding b_u gives the raw prediction.
        let user_bias = p.narrow(2, 0, 1)?.squeeze(2)?;
        let raw = ((&p_unit_bias * q)?.sum(2)? + user_bias)?.broadcast_add(offset_row)?;
        Ok(Self {
            raw,
            p_unit_bias,
            q_unit_bias,
        })
    }

    /// `prediction - label` per sample and member (the prediction is `sigmoid(raw)` under
    /// cross-entropy): the derivative of the pointwise per-sample loss with respect to `raw`.
    /// BPR is pairwise and has none (see [`PairForward`]).
    pub(super) fn residual(&self, labels: &Tensor, loss: Loss) -> candle_core::Result<Tensor> {
        match loss {
            Loss::Squared => self.raw.broadcast_sub(labels),
            Loss::CrossEntropy => candle_nn::ops::sigmoid(&self.raw)?.broadcast_sub(labels),
            Loss::Bpr => candle_core::bail!("BPR is pairwise: train it with PairForward"),
        }
    }

    /// `Σ w · loss` over the block: the squared error (the reported loss; training uses half
    /// of it), or binary cross-entropy. BPR is pairwise and has none (see [`PairForward`]).
    pub(super) fn weighted_loss(
        &self,
        residual: &Tensor,
        labels: &Tensor,
        weights: &Tensor,
        loss: Loss,
    ) -> candle_core::Result<Tensor> {
        let per_sample = match loss {
            Loss::Squared => residual.sqr()?,
            Loss::Bpr => candle_core::bail!("BPR is pairwise: train it with PairForward"),
            Loss::CrossEntropy => {
                // softplus(z) - y z, computed stably as relu(z) + ln(1 + e^-|z|) - y z.
                let z = &self.raw;
                let softplus = (z.relu()? + z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
                (softplus - z.broadcast_mul(labels)?)?
            }
        };
        (per_sample * weights)?.sum_all()
    }

    /// Gradients of `Σ w · loss` with respect to the gathered user and item rows, in closed
    /// form: `∂raw/∂p_row = [1, q]` and `∂raw/∂q_row = [1, p]`. Training hands the optimiser
    /// the two factors instead (see [`RowGradients`]); tests compare this with autograd.
    #[cfg(test)]
    fn gradients(
        &self,
        residual: &Tensor,
        weights: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let upstream = (residual * weights)?.unsqueeze(2)?; // [n, members, 1]
        Ok((
            upstream.broadcast_mul(&self.q_unit_bias)?,
            upstream.broadcast_mul(&self.p_unit_bias)?,
        ))
    }
}

/// Rows `[n, members, 1 + dim]` with each member's bias replaced by 1: `[1, v_1 .. v_dim]`.
/// A concatenation (one copy) rather than a mask multiply and add (two passes).
pub(super) fn unit_bias(rows: &Tensor) -> candle_core::Result<Tensor> {
    let (n, members, width) = rows.dims3()?;
    let ones = Tensor::ones((n, members, 1), rows.dtype(), rows.device())?;
    if width == 1 {
        return Ok(ones);
    }
    Tensor::cat(&[&ones, &rows.narrow(2, 1, width - 1)?], 2)
}

impl Trainable for BiasedMf {
    fn setup(&self) -> FitSetup {
        FitSetup {
            shape: self.shape(),
            seed: self.seed,
            members: self.layout.members,
            batch_size: self.batch_size,
        }
    }

    fn draws(&mut self) -> &mut Draws {
        &mut self.draws
    }

    /// One gradient step on a batch; returns the batch's summed weighted loss when asked.
    ///
    /// The batch's rows are gathered once; gradients are computed in blocks (see
    /// [`block_rows`]) from those gathered values, so the step is the same as in one piece.
    fn train_step(&mut self, batch: &Batch, want_loss: bool) -> Result<Option<Tensor>, ModelError> {
        let n = batch.users.len();
        let members = self.layout.members;
        let device = &self.device;
        let user_index = Tensor::from_slice(&batch.users, n, device)?;
        let item_index = Tensor::from_slice(&batch.items, n, device)?;
        let labels = Tensor::from_slice(&batch.labels, (n, 1), device)?;
        let weights = Tensor::from_slice(&batch.weights, (n, members), device)?;
        let p = self.users.gather(&user_index)?; // [n, members, 1 + dim]
        let q = self.items.gather(&item_index)?;
        let q_neg = match self.loss {
            Loss::Bpr => {
                let index = Tensor::from_slice(&batch.negatives, n, device)?;
                Some(self.items.gather(&index)?)
            }
            Loss::Squared | Loss::CrossEntropy => None,
        };

        let mut step = StepGradients::default();
        let mut loss: Option<Tensor> = None;
        for (start, len) in blocks(n, block_rows(device, self.layout.row_len())) {
            let p = p.narrow(0, start, len)?;
            let q = q.narrow(0, start, len)?;
            let weights = weights.narrow(0, start, len)?;
            let rows = start..start + len;
            // d(w loss)/d raw (or d margin) as [len, members, 1], and the derivatives of raw
            // with respect to the user row and the item row.
            let (scale, user_direction, item_direction, block_loss) = match &q_neg {
                None => {
                    let labels = labels.narrow(0, start, len)?;
                    let forward = Forward::new(&p, &q, &self.offset_row)?;
                    let residual = forward.residual(&labels, self.loss)?;
                    let block_loss = want_loss
                        .then(|| forward.weighted_loss(&residual, &labels, &weights, self.loss))
                        .transpose()?;
                    let scale = (&residual * &weights)?.unsqueeze(2)?;
                    (scale, forward.q_unit_bias, forward.p_unit_bias, block_loss)
                }
                Some(q_neg) => {
                    let q_neg = q_neg.narrow(0, start, len)?;
                    let pair = PairForward::new(&p, &q, &q_neg)?;
                    let block_loss = want_loss
                        .then(|| pair.weighted_loss(&weights))
                        .transpose()?;
                    let scale = (pair.slope()? * &weights)?.unsqueeze(2)?;
                    step.push_negatives(RowGradients {
                        rows: &batch.negatives[rows.clone()],
                        values: q_neg,
                        scale: scale.neg()?,
                        direction: pair.p_unit_bias.clone(),
                        weights: weights.clone(),
                    });
                    (scale, pair.user_direction, pair.p_unit_bias, block_loss)
                }
            };
            if let Some(block_loss) = block_loss {
                accumulate(&mut loss, block_loss)?;
            }
            step.push_block(
                (&batch.users[rows.clone()], &batch.items[rows]),
                (p, user_direction),
                (q, item_direction),
                scale,
                weights,
            );
        }
        step.apply(&self.optimizer, &mut self.users, &mut self.items)?;
        Ok(loss)
    }
}

impl Recommender for BiasedMf {
    fn kind(&self) -> &'static str {
        "mf"
    }

    fn head(&self) -> ScoringHead {
        ScoringHead {
            layout: self.layout,
            offsets: self.offsets.clone(),
            loss: self.loss,
            clip: self.clip,
            weights: None,
        }
    }

    fn shape(&self) -> (usize, usize) {
        (self.users.rows(), self.items.rows())
    }

    fn grow(&mut self, n_users: usize, n_items: usize) -> Result<(), ModelError> {
        self.grow_table(TableTag::Users, n_users)?;
        self.grow_table(TableTag::Items, n_items)?;
        self.draws.grow(n_users, n_items);
        Ok(())
    }

    fn fit(
        &mut self,
        samples: &[Interaction],
        keys: &[u32],
        epochs: usize,
    ) -> Result<FitReport, ModelError> {
        let fitted = fit_passes(self, samples, keys, epochs)?;
        Ok(fitted.map_or_else(FitReport::default, |f| f.report()))
    }

    fn user_rows(&self, users: &[UserIdx]) -> Result<Vec<f32>, ModelError> {
        check_rows("user", users, self.users.rows())?;
        self.export(&self.users, users)
    }

    fn item_rows(&self, items: &[ItemIdx]) -> Result<Vec<f32>, ModelError> {
        check_rows("item", items, self.items.rows())?;
        self.export(&self.items, items)
    }

    fn duplicate(&self) -> Result<Box<dyn Recommender>, ModelError> {
        Ok(Box::new(Self {
            layout: self.layout,
            loss: self.loss,
            offsets: self.offsets.clone(),
            clip: self.clip,
            init_std: self.init_std,
            seed: self.seed,
            batch_size: self.batch_size,
            device: self.device.clone(),
            optimizer: self.optimizer,
            users: self.users.duplicate()?,
            items: self.items.duplicate()?,
            // Never written in place: sharing it is safe.
            offset_row: self.offset_row.clone(),
            draws: self.draws.clone(),
        }))
    }

    fn save_state(&self) -> Result<ModelState, ModelError> {
        ModelState::of_tables(self.kind(), &self.users, &self.items, &self.draws)
    }

    fn load_state(&mut self, state: &ModelState) -> Result<(), ModelError> {
        let common = state.restore_tables(self.kind(), &self.users, &self.items, &self.draws)?;
        self.users = common.users;
        self.items = common.items;
        self.draws = common.draws;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
