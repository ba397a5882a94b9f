//! Text MF (`text_mf`): biased matrix factorisation whose item rows add a learned linear
//! projection of the item's text embedding, so an item without ratings is scored from its
//! text.
//!
//! Member `m` predicts `offset + b_u + <[1, p_u], [b_i, q_i] + W_m e_i>`, where `e_i` is the
//! item's text vector and `W_m` (`(1 + dim) x text_dim`, one per member) maps it to a bias
//! and a factor vector. The scoring row of an item is therefore `[b_i, q_i] + W_m e_i` per
//! member (the layout of [`crate::scoring`]), and the incremental scoring works unchanged.
//! The user rows are MF's.
//!
//! **Cold items.** The free rows `[b_i, q_i]` start at zero, so an item never trained on has
//! the row `W_m e_i` exactly: its bias and factors both come from its text. (Projecting the
//! bias too is what lets text lower the error on cold items; with the bias left free, a
//! cold item would get the global mean plus `b_u`, as in MF.) `W` starts at zero, so the
//! untrained model predicts `offset + b_u + b_i` like MF; the random user factors break the
//! symmetry. An item without text has a zero vector and behaves as in MF.
//!
//! **Training.** The objective is MF's per-sample one, `Σ w · (ℓ + λ/2 (|p_row|² +
//! |[b_i, q_i]|² + |W e_i|²))`: the free item row is regularised like an MF row and the
//! projection by what it adds to the item. User and free item rows take MF's sparse steps
//! ([`super::optim`], gradients in closed form); `W` takes a dense Adam step per batch
//! ([`super::dense_adam`]) on the closed-form gradient
//! `Σ_k e_k ⊗ (w·∂ℓ/∂raw · [1, p_u] + λ w W e_k)`.
//!
//! **BPR** (`loss: bpr`, implicit feedback: every event is a positive, see
//! [`super::mf`]'s module docs and [`super::pairwise`]). A sample's negative item `j` is
//! scored through its effective row `[b_j, q_j] + W e_j` as well: its free row takes the
//! gradient `-s · [1, p_u]` (with `s = w · (σ(x_ui - x_uj) - 1)`) and its L2 term, and the
//! projection's gradient adds `e_j ⊗ (-s · [1, p_u] + λ w W e_j)` to the positive's
//! `e_i ⊗ (s · [1, p_u] + λ w W e_i)`. The offset is 0 and the user bias cancels.
//!
//! **What a fit changes.** A step on `W` changes the row of every item with text, so a fit
//! reports every item with text (plus the items it trained) in
//! [`FitReport::changed_items`] (and, under BPR, the negatives drawn), and `shared_changed`
//! stays false: the head did not change,
//! the rows did, and the engine needs their new values to re-score, which is exactly the
//! re-scoring of every sample of those items (the honest cost of a shared parameter). Users
//! are reported as in MF.
//!
//! **Fine-tuning the encoder** (`tune:`). The vectors `e_i` are then the tuned encoder's
//! (`text_tuner`): a step also sends the closed-form `∂L/∂e_k = W^T u_k` to the tuned
//! layers, and every vector is recomputed after each pass.

use std::sync::Arc;

use candle_core::{Device, Tensor, Var};

use super::dense_adam::{DenseAdamW, duplicate_var};
use super::encoder::TunableText;
use super::host_rows::HostLinear;
use super::init::TableTag;
use super::mf::Forward;
use super::optim::{RowGradients, RowTable, SparseOptimizer, StepGradients, block_rows, blocks};
use super::pairwise::PairForward;
use super::text_table::TextTable;
use super::text_tuner::{TextGradients, TextTuning};
use super::training::{
    Batch, Draws, Dropout, FitSetup, RowModelSetup, Trainable, accumulate, check_rows, fit_passes,
    initial_rows, lr_and_decay, other_family,
};
use super::{FitReport, ModelError, ModelState, Recommender};
use crate::data::{Interaction, ItemEmbeddings, ItemIdx, LabelKind, UserIdx};
use crate::plan::params::{ModelKind, TrainParams};
use crate::scoring::{Loss, RowLayout, ScoringHead};

/// The projection's Adam learning rate, relative to the row optimiser's.
const PROJECTION_LR_FACTOR: f64 = 0.1;

/// Biased MF with text-projected item rows, `members` bootstrap members side by side.
#[derive(Debug)]
pub struct TextMf {
    layout: RowLayout,
    loss: Loss,
    offsets: Vec<f32>,
    init_std: f64,
    seed: u64,
    batch_size: usize,
    weight_decay: f64,
    device: Device,
    optimizer: SparseOptimizer,
    users: RowTable,
    /// Free item rows `[b_i, q_i]` per member; zero until trained.
    items: RowTable,
    /// `W` of every member stacked: `[members * (1 + dim), text_dim]` (this layout made
    /// the gradient's product 1.7x faster than `[text_dim, members * (1 + dim)]`).
    projection: Var,
    projection_optimizer: DenseAdamW,
    text: TextTable,
    /// The offsets as `[1, members]`.
    offset_row: Tensor,
    /// The shuffle stream and (under BPR) the negative sampler.
    draws: Draws,
    /// Fine-tuning of the encoder, when the parameters ask for it.
    tuning: TextTuning,
}

impl TextMf {
    /// A model with `n_users` x `n_items` rows reading the item vectors `text`, initialised
    /// from `params.seed`, on `params.device`. `global_mean` is as for
    /// [`super::BiasedMf::new`].
    pub fn new(
        params: &TrainParams,
        n_users: usize,
        n_items: usize,
        global_mean: f32,
        label_kind: LabelKind,
        text: &ItemEmbeddings,
    ) -> Result<Self, ModelError> {
        let ModelKind::TextMf {
            dim,
            init_std,
            tune: tuning,
        } = params.model
        else {
            return Err(other_family("TextMf", "text_mf", params));
        };
        let RowModelSetup {
            layout,
            offsets,
            offset_row,
            device,
            optimizer,
            ..
        } = RowModelSetup::new(
            "text_mf",
            params,
            (dim, init_std),
            (global_mean, label_kind),
            Dropout::None,
        )?;
        let (members, width) = (layout.members, 1 + dim);
        let users = initial_rows(
            (params.seed, TableTag::Users),
            0..n_users,
            layout,
            init_std,
            &device,
        )?;
        let users = RowTable::new(users, members, width, &optimizer)?;
        let items = Tensor::zeros((n_items, members * width), candle_core::DType::F32, &device)?;
        let items = RowTable::new(items, members, width, &optimizer)?;
        let text = TextTable::new(text, n_items, &device)?;
        let projection = Var::zeros(
            (members * width, text.dim()),
            candle_core::DType::F32,
            &device,
        )?;
        let (lr, weight_decay) = lr_and_decay(params.optimizer);
        let projection_optimizer = DenseAdamW::new(
            vec![("projection".into(), projection.clone())],
            params.optimizer,
            lr * PROJECTION_LR_FACTOR,
            0.0,
        )?;
        Ok(Self {
            layout,
            loss: params.loss,
            offsets,
            init_std,
            seed: params.seed,
            batch_size: params.batch_size,
            weight_decay,
            device,
            optimizer,
            users,
            items,
            projection,
            projection_optimizer,
            text,
            offset_row,
            draws: Draws::new(params, (n_users, n_items)),
            tuning: TextTuning::new(tuning, params.optimizer, params.seed),
        })
    }

    /// `W e` of the text vectors `e` (`[n, text_dim]`) as `[n, members, 1 + dim]`.
    ///
    /// The result is detached from the projection `Var`: its gradient is computed in
    /// closed form, and a tracked result would chain every row table written from it to
    /// the whole history of training steps (memory growing with every step).
    fn project(&self, e: &Tensor) -> candle_core::Result<Tensor> {
        let n = e.dims2()?.0;
        e.matmul(&self.projection.as_tensor().detach().t()?)?
            .reshape((n, self.layout.members, 1 + self.layout.dim))
    }

    /// `u_k = s_k · d_k + λ w_k W e_k` as `[len, row_len]`: the gradient of the block's
    /// regularised loss with respect to the projected part `W e_k` of each item row, for
    /// projections `projected = W e` (`[len, members, 1 + dim]`), derivative scales `s`
    /// (`[len, members, 1]`) and directions `d` (the derivative of the score with respect
    /// to the item row). The projection's gradient is `Σ_k u_k ⊗ e_k`, the text vector's
    /// `W^T u_k`.
    fn upstream(
        &self,
        scale: &Tensor,
        direction: &Tensor,
        projected: &Tensor,
        weights: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let len = projected.dim(0)?;
        let mut upstream = scale.broadcast_mul(direction)?;
        if self.weight_decay != 0.0 {
            let decay = weights.affine(self.weight_decay, 0.0)?.unsqueeze(2)?;
            upstream = (upstream + projected.broadcast_mul(&decay)?)?;
        }
        upstream.reshape((len, self.layout.row_len()))
    }

    /// The gradients that the upstream gradients `upstream` (see [`Self::upstream`]) of
    /// items with text vectors `e` (`[len, text_dim]`) send to `W`, and, when the encoder
    /// is tuned, to `e`.
    fn text_gradients(
        &self,
        upstream: &Tensor,
        e: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let to_projection = upstream.t()?.matmul(e)?;
        let to_text = if self.tuning.is_active() {
            Some(upstream.matmul(&self.projection.as_tensor().detach())?)
        } else {
            None
        };
        Ok((to_projection, to_text))
    }

    fn export_users(&self, rows: &[u32]) -> Result<Vec<f32>, ModelError> {
        let index = Tensor::from_slice(rows, rows.len(), &self.device)?;
        Ok(self
            .users
            .values()
            .index_select(&index, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Free rows plus projections, each row computed alone on the host (see
    /// [`super::host_rows`]), so a row does not depend on what is exported with it.
    fn export_items(&self, rows: &[u32]) -> Result<Vec<f32>, ModelError> {
        let index = Tensor::from_slice(rows, rows.len(), &self.device)?;
        let free = self
            .items
            .values()
            .index_select(&index, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let projection = HostLinear::new(self.projection.as_tensor(), None)?;
        let row_len = projection.outputs();
        let mut out = Vec::with_capacity(rows.len() * row_len);
        let mut projected = Vec::with_capacity(row_len);
        for (free, &item) in free.chunks_exact(row_len).zip(rows) {
            projected.clear();
            projection.apply(self.text.host_vector(item), &mut projected);
            out.extend(free.iter().zip(&projected).map(|(q, w_e)| q + w_e));
        }
        Ok(out)
    }
}

impl Trainable for TextMf {
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
    fn train_step(&mut self, batch: &Batch, want_loss: bool) -> Result<Option<Tensor>, ModelError> {
        let n = batch.len();
        let members = self.layout.members;
        let row_len = self.layout.row_len();
        let device = &self.device;
        let user_index = Tensor::from_slice(&batch.users, n, device)?;
        let item_index = Tensor::from_slice(&batch.items, n, device)?;
        let labels = Tensor::from_slice(&batch.labels, (n, 1), device)?;
        let weights = Tensor::from_slice(&batch.weights, (n, members), device)?;
        let p = self.users.gather(&user_index)?; // [n, members, 1 + dim]
        let q = self.items.gather(&item_index)?;
        let e = self.text.gather(&item_index)?; // [n, text_dim]
        // Under BPR, the negatives' free rows and text vectors.
        let negatives = match self.loss {
            Loss::Bpr => {
                let index = Tensor::from_slice(&batch.negatives, n, device)?;
                Some((self.items.gather(&index)?, self.text.gather(&index)?))
            }
            Loss::Squared | Loss::CrossEntropy => None,
        };

        let mut step = StepGradients::default();
        let mut projection_grad: Option<Tensor> = None;
        // Under tuning: the gradients with respect to the text vectors the step read.
        let mut text_grads = TextGradients::default();
        let mut loss: Option<Tensor> = None;
        for (start, len) in blocks(n, block_rows(device, row_len)) {
            let p = p.narrow(0, start, len)?;
            let q = q.narrow(0, start, len)?;
            let e = e.narrow(0, start, len)?;
            let weights = weights.narrow(0, start, len)?;
            let projected = self.project(&e)?;
            let rows = start..start + len;
            // d(w loss)/d raw (or d margin) as [len, members, 1]; the derivatives of raw with
            // respect to the user row and the item row; the projection's gradient.
            let (scale, user_direction, item_direction, block_loss, block_grad) = match &negatives {
                None => {
                    let labels = labels.narrow(0, start, len)?;
                    let forward = Forward::new(&p, &(&q + &projected)?, &self.offset_row)?;
                    let residual = forward.residual(&labels, self.loss)?;
                    let block_loss = want_loss
                        .then(|| forward.weighted_loss(&residual, &labels, &weights, self.loss))
                        .transpose()?;
                    let scale = (&residual * &weights)?.unsqueeze(2)?;
                    let upstream =
                        self.upstream(&scale, &forward.p_unit_bias, &projected, &weights)?;
                    let (block_grad, text_grad) = self.text_gradients(&upstream, &e)?;
                    if let Some(grad) = text_grad {
                        text_grads.push(&batch.items[rows.clone()], grad);
                    }
                    let (user_direction, item_direction) =
                        (forward.q_unit_bias, forward.p_unit_bias);
                    (
                        scale,
                        user_direction,
                        item_direction,
                        block_loss,
                        block_grad,
                    )
                }
                Some((q_neg, e_neg)) => {
                    let q_neg = q_neg.narrow(0, start, len)?;
                    let e_neg = e_neg.narrow(0, start, len)?;
                    let projected_neg = self.project(&e_neg)?;
                    let pair =
                        PairForward::new(&p, &(&q + &projected)?, &(&q_neg + &projected_neg)?)?;
                    let block_loss = want_loss
                        .then(|| pair.weighted_loss(&weights))
                        .transpose()?;
                    let scale = (pair.slope()? * &weights)?.unsqueeze(2)?;
                    let negative_scale = scale.neg()?;
                    let upstream =
                        self.upstream(&scale, &pair.p_unit_bias, &projected, &weights)?;
                    let upstream_neg = self.upstream(
                        &negative_scale,
                        &pair.p_unit_bias,
                        &projected_neg,
                        &weights,
                    )?;
                    let (positive_grad, text_grad) = self.text_gradients(&upstream, &e)?;
                    let (negative_grad, negative_text_grad) =
                        self.text_gradients(&upstream_neg, &e_neg)?;
                    let block_grad = (positive_grad + negative_grad)?;
                    if let (Some(positive), Some(negative)) = (text_grad, negative_text_grad) {
                        text_grads.push(&batch.items[rows.clone()], positive);
                        text_grads.push(&batch.negatives[rows.clone()], negative);
                    }
                    step.push_negatives(RowGradients {
                        rows: &batch.negatives[rows.clone()],
                        values: q_neg,
                        scale: negative_scale,
                        direction: pair.p_unit_bias.clone(),
                        weights: weights.clone(),
                    });
                    let item_direction = pair.p_unit_bias;
                    (
                        scale,
                        pair.user_direction,
                        item_direction,
                        block_loss,
                        block_grad,
                    )
                }
            };
            if let Some(block_loss) = block_loss {
                accumulate(&mut loss, block_loss)?;
            }
            accumulate(&mut projection_grad, block_grad)?;
            step.push_block(
                (&batch.users[rows.clone()], &batch.items[rows]),
                (p, user_direction),
                (q, item_direction),
                scale,
                weights,
            );
        }
        step.apply(&self.optimizer, &mut self.users, &mut self.items)?;
        if let Some(grad) = projection_grad {
            let mut grads = candle_core::backprop::GradStore::default();
            grads.insert(self.projection.as_tensor(), grad);
            self.projection_optimizer.step(&grads)?;
        }
        if let Some(tuner) = self.tuning.tuner() {
            text_grads.apply(tuner)?;
        }
        Ok(loss)
    }

    fn end_pass(&mut self) -> Result<(), ModelError> {
        self.tuning.refresh(&mut self.text)
    }
}

impl Recommender for TextMf {
    fn kind(&self) -> &'static str {
        "text_mf"
    }

    fn head(&self) -> ScoringHead {
        ScoringHead::new(self.layout, self.offsets.clone(), self.loss)
    }

    fn shape(&self) -> (usize, usize) {
        (self.users.rows(), self.items.rows())
    }

    fn grow(&mut self, n_users: usize, n_items: usize) -> Result<(), ModelError> {
        let row_len = self.layout.row_len();
        let current = self.users.rows();
        if n_users > current {
            let values = initial_rows(
                (self.seed, TableTag::Users),
                current..n_users,
                self.layout,
                self.init_std,
                &self.device,
            )?;
            self.users.append(&values)?;
        }
        let current = self.items.rows();
        if n_items > current {
            let values = Tensor::zeros(
                (n_items - current, row_len),
                candle_core::DType::F32,
                &self.device,
            )?;
            self.items.append(&values)?;
            self.text.grow(n_items)?;
        }
        self.draws.grow(n_users, n_items);
        Ok(())
    }

    fn fit(
        &mut self,
        samples: &[Interaction],
        keys: &[u32],
        epochs: usize,
    ) -> Result<FitReport, ModelError> {
        let Some(mut fitted) = fit_passes(self, samples, keys, epochs)? else {
            return Ok(FitReport::default());
        };
        // The projection moved: every item with text has a new row.
        for (touched, &has_text) in fitted.items_touched.iter_mut().zip(self.text.has_text()) {
            *touched |= has_text;
        }
        Ok(fitted.report())
    }

    fn user_rows(&self, users: &[UserIdx]) -> Result<Vec<f32>, ModelError> {
        check_rows("user", users, self.users.rows())?;
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.export_users(users)
    }

    fn item_rows(&self, items: &[ItemIdx]) -> Result<Vec<f32>, ModelError> {
        check_rows("item", items, self.items.rows())?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.export_items(items)
    }

    fn set_item_embeddings(&mut self, text: &ItemEmbeddings) -> Result<(), ModelError> {
        self.tuning.check_replacement()?;
        self.text.set(text)?;
        Ok(())
    }

    fn tune_encoder(&mut self, source: &Arc<TunableText>) -> Result<(), ModelError> {
        self.tuning.attach(source, &mut self.text, &self.device)
    }

    fn duplicate(&self) -> Result<Box<dyn Recommender>, ModelError> {
        let projection = duplicate_var(&self.projection)?;
        let projection_optimizer = self
            .projection_optimizer
            .duplicate(vec![projection.clone()])?;
        Ok(Box::new(Self {
            layout: self.layout,
            loss: self.loss,
            offsets: self.offsets.clone(),
            init_std: self.init_std,
            seed: self.seed,
            batch_size: self.batch_size,
            weight_decay: self.weight_decay,
            device: self.device.clone(),
            optimizer: self.optimizer,
            users: self.users.duplicate()?,
            items: self.items.duplicate()?,
            projection,
            projection_optimizer,
            // Neither is written in place: sharing them is safe.
            text: self.text.clone(),
            offset_row: self.offset_row.clone(),
            draws: self.draws.clone(),
            tuning: self.tuning.duplicate()?,
        }))
    }

    fn save_state(&self) -> Result<ModelState, ModelError> {
        let mut state = ModelState::of_tables(self.kind(), &self.users, &self.items, &self.draws)?;
        self.projection_optimizer
            .save("projection_optimizer", &mut state)?;
        self.tuning.save(&mut state)?;
        Ok(state)
    }

    fn load_state(&mut self, state: &ModelState) -> Result<(), ModelError> {
        let common = state.restore_tables(self.kind(), &self.users, &self.items, &self.draws)?;
        self.projection_optimizer
            .load("projection_optimizer", state)?;
        self.text.grow(common.items.rows())?;
        self.users = common.users;
        self.items = common.items;
        self.draws = common.draws;
        self.tuning.load(state, &mut self.text)
    }
}

#[cfg(test)]
mod tests;
