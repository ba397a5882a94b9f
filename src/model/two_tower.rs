//! The two-tower model (`two_tower`): an MLP over a user ID embedding and an MLP over an
//! item ID embedding concatenated with the item's text vector, each ending in a bias and a
//! `dim`-long vector; member `m` predicts `offset + b_u + b_i + <u, v>`.
//!
//! Each tower is `Linear(input, hidden) -> ReLU -> dropout -> Linear(hidden, 1 + dim)`, and
//! its output *is* the scoring row (layout of [`crate::scoring`]), so the incremental
//! scoring works unchanged: the towers run when rows are exported, not per sample.
//!
//! **Uncertainty.**
//! - `ensemble { members: M }`: `M` independent networks (own ID tables and towers, own
//!   initialisation), each trained on its own bootstrap weights; rows are exported without
//!   dropout (each member's deterministic prediction).
//! - `mc_dropout { passes: P }`: one network trained with dropout; its rows hold `P`
//!   dropout passes. Pass `p` drops hidden unit `j` of entity `r`'s tower by a fixed hash of
//!   `(seed, tower, p, r, j)`, so a row is a pure function of the parameters: exporting it
//!   twice gives the same bits (as the engine's maintained scores need), whatever else is
//!   exported with it. Pass `p` of a sample combines pass `p` of its user and of its item.
//!   `dropout: 0` would make the passes identical and is refused.
//!
//! Dropout in training draws fresh masks per step from a seeded stream (candle-nn's dropout
//! draws from an unseeded generator), so training is deterministic for a seed.
//!
//! **Fine-tuning the encoder** (`tune:`): the text vectors enter each block as `Var`s, so
//! the step's backward pass also gives their gradient, which goes to the tuned encoder
//! layers (`text_tuner`); every vector is recomputed after each pass.
//!
//! **Training.** Autograd through the towers; the gradient of `Σ w · ℓ` with respect to the
//! raw predictions, `w · (prediction - label)`, is fed in as a constant. Under BPR
//! (`loss: bpr`, implicit feedback: every event is a positive, see [`super::mf`]'s module
//! docs) the item tower also runs on each sample's sampled negative item `j`
//! ([`super::negatives`]), with its own dropout mask, and the constant fed in is
//! `w · (σ(d) - 1)` with respect to the margin `d = x_ui - x_uj` ([`super::pairwise`]), so
//! the gradient reaches `u`'s, `i`'s and `j`'s ID rows and both towers. The ID tables are
//! row tables updated sparsely by the configured optimiser (per-sample L2 as in MF,
//! [`super::optim`]); the towers' weights take dense Adam steps
//! ([`super::dense_adam`]) with decoupled weight decay.
//!
//! **Cold items.** Item ID embeddings start at zero, so an item never trained on is scored
//! from its text through the item tower. User ID embeddings start at N(0, `init_std`²).
//!
//! **What a fit changes.** Tower weights change every row, so a fit reports every user and
//! every item as changed (`shared_changed` stays false: the head is unchanged, the rows carry
//! the change), and the engine re-scores every sample.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

use super::dense_adam::{DenseAdamW, duplicate_var};
use super::encoder::TunableText;
use super::host_rows::HostLinear;
use super::init::{TableTag, init_rows, uniform_values};
use super::mf::Forward;
use super::optim::{RowGradients, RowTable, SparseOptimizer, StepGradients, block_rows, blocks};
use super::pairwise::PairForward;
use super::text_table::TextTable;
use super::text_tuner::{TextGradients, TextTuning};
use super::training::{
    Batch, Draws, Dropout, FitSetup, RowModelSetup, Trainable, accumulate, check_rows, fit_passes,
    lr_and_decay, other_family,
};
use super::{FitReport, ModelError, ModelState, Recommender};
use crate::data::{Interaction, ItemEmbeddings, ItemIdx, LabelKind, UserIdx};
use crate::plan::params::{ModelKind, TrainParams, UncertaintyParams};
use crate::scoring::{Loss, RowLayout, ScoringHead};
use crate::seeding::{stable_hash, unit_interval};

/// Separates the training dropout stream from other uses of the seed.
const DROPOUT_DOMAIN: u64 = 0xD209_0007_0000_0004;
/// Separates the MC-dropout pass masks from other uses of the seed.
const PASS_MASK_DOMAIN: u64 = 0x3C3C_DA55_0000_0005;
/// The towers' decoupled (AdamW) weight decay, relative to the row optimiser's L2.
const TOWER_DECAY_FACTOR: f64 = 0.0;

/// The two-tower model with `members` ensemble members or MC-dropout passes.
#[derive(Debug)]
pub struct TwoTower {
    /// Rows: `members` = ensemble members or MC-dropout passes.
    layout: RowLayout,
    /// Independent networks: ensemble members, or 1 for MC dropout.
    networks: usize,
    /// `Some(P)` for MC dropout with `P` passes.
    passes: Option<usize>,
    dropout: f64,
    loss: Loss,
    offsets: Vec<f32>,
    /// The offset of each network as `[1, networks]`.
    offset_row: Tensor,
    init_std: f64,
    seed: u64,
    batch_size: usize,
    device: Device,
    optimizer: SparseOptimizer,
    /// User ID embeddings, `networks` blocks of `dim` per row.
    user_ids: RowTable,
    /// Item ID embeddings, zero until trained.
    item_ids: RowTable,
    user_tower: Tower,
    item_tower: Tower,
    dense: DenseAdamW,
    text: TextTable,
    /// The shuffle stream and (under BPR) the negative sampler.
    draws: Draws,
    /// Training dropout masks; advances across `fit` calls.
    masks: ChaCha12Rng,
    /// Samples per block of a step (the batch is cut into blocks that fit the device's
    /// caches; see [`block_rows`]). Nothing a step computes depends on it but rounding.
    block_rows: usize,
    /// Fine-tuning of the encoder, when the parameters ask for it.
    tuning: TextTuning,
}

/// Which tower a parameter or mask belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    User,
    Item,
}

impl Side {
    fn word(self) -> u64 {
        match self {
            Side::User => 0x5553_4552,
            Side::Item => 0x4954_454D,
        }
    }
}

/// One tower of every network: `Linear(input, hidden) -> ReLU -> (dropout) ->
/// Linear(hidden, out)`, the networks' weights stacked on a leading axis.
///
/// The first layer's weights are kept in two parts, one for the ID embedding and one for the
/// text vector, so the text never has to be concatenated (copied) with the ID embeddings and
/// back-propagation computes no gradient with respect to it (a third of a step's work).
#[derive(Debug)]
struct Tower {
    /// ID part of the first layer, `[networks, dim, hidden]`.
    w1: Var,
    /// Text part of the first layer, `[text_dim, networks * hidden]` (item tower only).
    w1_text: Option<Var>,
    /// `[networks, 1, hidden]`.
    b1: Var,
    /// `[networks, hidden, out]`.
    w2: Var,
    /// `[networks, 1, out]`.
    b2: Var,
}

impl Tower {
    /// PyTorch's default `Linear` initialisation: weights and biases uniform in
    /// `±1/sqrt(fan_in)`.
    fn new(
        seed: u64,
        side: Side,
        shape: (usize, usize, usize, usize, usize),
        device: &Device,
    ) -> candle_core::Result<Self> {
        let (networks, dim, text_dim, hidden, out) = shape;
        let input = dim + text_dim;
        let name = match side {
            Side::User => "user_tower",
            Side::Item => "item_tower",
        };
        let param = |part: &str, dims: (usize, usize, usize), fan_in: usize| {
            let n = dims.0 * dims.1 * dims.2;
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            let values = uniform_values(seed, &format!("{name}.{part}"), n, bound);
            Var::from_vec(values, dims, device)
        };
        Ok(Self {
            w1: param("w1", (networks, dim, hidden), input)?,
            w1_text: if text_dim > 0 {
                Some(param("w1_text", (1, text_dim, networks * hidden), input)?)
            } else {
                None
            },
            b1: param("b1", (networks, 1, hidden), input)?,
            w2: param("w2", (networks, hidden, out), hidden)?,
            b2: param("b2", (networks, 1, out), hidden)?,
        })
    }

    /// The parameters with their names in the tower.
    fn named_vars(&self) -> Vec<(&'static str, Var)> {
        let mut vars = vec![("w1", self.w1.clone())];
        vars.extend(self.w1_text.clone().map(|w| ("w1_text", w)));
        vars.extend([
            ("b1", self.b1.clone()),
            ("w2", self.w2.clone()),
            ("b2", self.b2.clone()),
        ]);
        vars
    }

    /// The same tower with its weights copied into new storage.
    fn duplicate(&self) -> candle_core::Result<Self> {
        Ok(Self {
            w1: duplicate_var(&self.w1)?,
            w1_text: self.w1_text.as_ref().map(duplicate_var).transpose()?,
            b1: duplicate_var(&self.b1)?,
            w2: duplicate_var(&self.w2)?,
            b2: duplicate_var(&self.b2)?,
        })
    }

    /// Width of the hidden layer.
    fn hidden_width(&self) -> usize {
        self.w1.dims()[2]
    }

    /// `relu([ids, text] W1 + b1)` of ID embeddings `[networks, n, dim]` and, for the item
    /// tower, text vectors `[n, text_dim]`: `[networks, n, hidden]`.
    fn hidden(&self, ids: &Tensor, text: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let mut z = ids.matmul(self.w1.as_tensor())?;
        if let (Some(w), Some(text)) = (&self.w1_text, text) {
            let (networks, n, hidden) = z.dims3()?;
            let from_text = text
                .matmul(&w.as_tensor().squeeze(0)?)?
                .reshape((n, networks, hidden))?
                .transpose(0, 1)?;
            z = (z + from_text)?;
        }
        z.broadcast_add(self.b1.as_tensor())?.relu()
    }

    /// Network `m`'s two layers on the host, for exporting rows: the first over the
    /// concatenation `[ID embedding, text vector]`.
    fn host_layers(&self, m: usize) -> candle_core::Result<(HostLinear, HostLinear)> {
        let hidden = self.hidden_width();
        let mut w1 = self.w1.as_tensor().get(m)?; // [dim, hidden]
        if let Some(w) = &self.w1_text {
            let text_part = w.as_tensor().get(0)?.narrow(1, m * hidden, hidden)?;
            w1 = Tensor::cat(&[&w1, &text_part], 0)?;
        }
        Ok((
            HostLinear::new(&w1.t()?, Some(&self.b1.as_tensor().get(m)?))?,
            HostLinear::new(
                &self.w2.as_tensor().get(m)?.t()?,
                Some(&self.b2.as_tensor().get(m)?),
            )?,
        ))
    }

    /// `h W2 + b2` of hidden activations `[networks, n, hidden]`.
    fn output(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        h.matmul(self.w2.as_tensor())?
            .broadcast_add(self.b2.as_tensor())
    }
}

impl TwoTower {
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
        let ModelKind::TwoTower {
            dim,
            hidden,
            dropout,
            init_std,
            tune,
        } = params.model
        else {
            return Err(other_family("TwoTower", "two_tower", params));
        };
        let RowModelSetup {
            layout,
            networks,
            offsets,
            offset_row,
            device,
            optimizer,
        } = RowModelSetup::new(
            "two_tower",
            params,
            (dim, init_std),
            (global_mean, label_kind),
            Dropout::Has,
        )?;
        check_shape(dim, hidden, dropout, params.uncertainty)?;
        let passes = match params.uncertainty {
            UncertaintyParams::Ensemble { .. } => None,
            UncertaintyParams::McDropout { passes } => Some(passes),
        };
        let user_ids = id_rows(params.seed, n_users, networks, dim, init_std, &device)?;
        let user_ids = RowTable::new(user_ids, networks, dim, &optimizer)?;
        let item_ids = Tensor::zeros((n_items, networks * dim), DType::F32, &device)?;
        let item_ids = RowTable::new(item_ids, networks, dim, &optimizer)?;
        let text = TextTable::new(text, n_items, &device)?;
        let out = 1 + dim;
        // The widest elementwise operands are the hidden activations and the outputs.
        let block_rows = block_rows(&device, networks * hidden.max(out));
        let user_tower = Tower::new(
            params.seed,
            Side::User,
            (networks, dim, 0, hidden, out),
            &device,
        )?;
        let item_tower = Tower::new(
            params.seed,
            Side::Item,
            (networks, dim, text.dim(), hidden, out),
            &device,
        )?;
        let (lr, weight_decay) = lr_and_decay(params.optimizer);
        let dense = DenseAdamW::new(
            dense_parameters(&user_tower, &item_tower),
            params.optimizer,
            lr,
            weight_decay * TOWER_DECAY_FACTOR,
        )?;
        Ok(Self {
            layout,
            networks,
            passes,
            dropout,
            loss: params.loss,
            offsets,
            offset_row,
            init_std,
            seed: params.seed,
            batch_size: params.batch_size,
            device,
            optimizer,
            user_ids,
            item_ids,
            user_tower,
            item_tower,
            dense,
            text,
            draws: Draws::new(params, (n_users, n_items)),
            masks: ChaCha12Rng::seed_from_u64(stable_hash(&[params.seed, DROPOUT_DOMAIN])),
            block_rows,
            tuning: TextTuning::new(tune, params.optimizer, params.seed),
        })
    }

    /// A training dropout mask `[networks, n, hidden]`: 0 or `1 / (1 - dropout)`, or `None`
    /// without dropout. Each unit is dropped when a 16-bit draw falls below
    /// `dropout * 2^16` (four draws per 64-bit word: one word per unit was a tenth of a
    /// step).
    ///
    /// A step draws its masks for the whole batch, before cutting it into blocks: drawn per
    /// block, the masks (and so the model) depended on the block size, which differs
    /// between devices, and a GPU run trained another model than a CPU run (`docs/gpu.md`).
    fn training_mask(&mut self, n: usize) -> candle_core::Result<Option<Tensor>> {
        if self.dropout == 0.0 {
            return Ok(None);
        }
        let hidden = self.user_tower.hidden_width();
        let keep = (1.0 / (1.0 - self.dropout)) as f32;
        let threshold = (self.dropout * 65536.0).round() as u64;
        let len = self.networks * n * hidden;
        let mut values = Vec::with_capacity(len);
        while values.len() < len {
            let word = self.masks.next_u64();
            for k in 0..4.min(len - values.len()) {
                let draw = (word >> (16 * k)) & 0xFFFF;
                values.push(if draw < threshold { 0.0 } else { keep });
            }
        }
        Tensor::from_vec(values, (self.networks, n, hidden), &self.device).map(Some)
    }

    /// A tower's outputs `[len, networks, 1 + dim]` for ID embeddings `ids`
    /// (`[len, networks, dim]`) and, for the item tower, text vectors, with the block's
    /// part of the step's training dropout mask (`[networks, batch, hidden]`) when the model
    /// has dropout.
    fn tower_output(
        &self,
        side: Side,
        (ids, text): (&Tensor, Option<&Tensor>),
        mask: Option<&Tensor>,
        (start, len): (usize, usize),
    ) -> candle_core::Result<Tensor> {
        let tower = match side {
            Side::User => &self.user_tower,
            Side::Item => &self.item_tower,
        };
        let mut h = tower.hidden(&ids.transpose(0, 1)?.contiguous()?, text)?;
        if let Some(mask) = mask {
            h = (h * mask.narrow(1, start, len)?)?;
        }
        // [networks, len, 1 + dim] -> [len, networks, 1 + dim]
        tower.output(&h)?.transpose(0, 1)?.contiguous()
    }

    /// Scoring rows of `rows` of one side, concatenated. Each row is evaluated alone on the
    /// host (see [`super::host_rows`]), so it does not depend on what is exported with it.
    fn export(&self, side: Side, rows: &[u32]) -> Result<Vec<f32>, ModelError> {
        let (table, tower) = match side {
            Side::User => (&self.user_ids, &self.user_tower),
            Side::Item => (&self.item_ids, &self.item_tower),
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let layers = (0..self.networks)
            .map(|m| tower.host_layers(m))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let dim = self.layout.dim;
        let index = Tensor::from_slice(rows, rows.len(), &self.device)?;
        let ids = table
            .values()
            .index_select(&index, 0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(rows.len() * self.layout.row_len());
        let mut input = Vec::new();
        let mut hidden = Vec::new();
        let mut dropped = Vec::new();
        for (k, &id) in rows.iter().enumerate() {
            for (m, (first, second)) in layers.iter().enumerate() {
                input.clear();
                input.extend_from_slice(&ids[(k * self.networks + m) * dim..][..dim]);
                if side == Side::Item {
                    input.extend_from_slice(self.text.host_vector(id));
                }
                hidden.clear();
                first.apply(&input, &mut hidden);
                for h in &mut hidden {
                    *h = h.max(0.0);
                }
                match self.passes {
                    None => second.apply(&hidden, &mut out),
                    Some(passes) => {
                        for pass in 0..passes {
                            dropped.clear();
                            let mask = self.pass_mask(side, pass, id, hidden.len());
                            dropped.extend(hidden.iter().zip(mask).map(|(h, keep)| h * keep));
                            second.apply(&dropped, &mut out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The fixed dropout mask of MC pass `pass` for entity `id` of `side`: `hidden`
    /// factors, 0 or `1 / (1 - dropout)`.
    fn pass_mask(
        &self,
        side: Side,
        pass: usize,
        id: u32,
        hidden: usize,
    ) -> impl Iterator<Item = f32> + use<> {
        let keep = (1.0 / (1.0 - self.dropout)) as f32;
        let dropout = self.dropout;
        let row_seed = stable_hash(&[
            self.seed,
            PASS_MASK_DOMAIN,
            side.word(),
            pass as u64,
            u64::from(id),
        ]);
        (0..hidden as u64).map(move |j| {
            if unit_interval(stable_hash(&[row_seed, j])) < dropout {
                0.0
            } else {
                keep
            }
        })
    }
}

/// The towers' parameters, as the dense optimiser holds them: the user tower's, then the
/// item tower's.
fn dense_vars(user_tower: &Tower, item_tower: &Tower) -> Vec<Var> {
    let vars = user_tower.named_vars().into_iter();
    vars.chain(item_tower.named_vars())
        .map(|(_, var)| var)
        .collect()
}

/// [`dense_vars`] with their names in a saved state (`user_tower.w1`, ...).
fn dense_parameters(user_tower: &Tower, item_tower: &Tower) -> Vec<(String, Var)> {
    let named = |tower_name: &'static str, tower: &Tower| {
        let vars = tower.named_vars().into_iter();
        vars.map(move |(name, var)| (format!("{tower_name}.{name}"), var))
    };
    named("user_tower", user_tower)
        .chain(named("item_tower", item_tower))
        .collect()
}

/// `(start, len)` of consecutive blocks covering `n`, at most `block` long and of nearly
/// equal length (1023 + 1 would pay the per-block overhead for one row).
fn even_blocks(n: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = n.div_ceil(block.max(1)).max(1);
    blocks(n, n.div_ceil(count))
}

/// User ID embeddings of rows `0..rows`: `networks` blocks of `dim` normal draws (MF's
/// initialisation of the factors, without its bias slot).
fn id_rows(
    seed: u64,
    rows: usize,
    networks: usize,
    dim: usize,
    std: f64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    id_rows_range(seed, 0..rows, networks, dim, std, device)
}

fn id_rows_range(
    seed: u64,
    rows: std::ops::Range<usize>,
    networks: usize,
    dim: usize,
    std: f64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let len = rows.len();
    let with_bias = init_rows(seed, TableTag::Users, rows, networks, dim, std);
    let values: Vec<f32> = with_bias
        .chunks(1 + dim)
        .flat_map(|block| block[1..].iter().copied())
        .collect();
    Tensor::from_vec(values, (len, networks * dim), device)
}

/// The model's own shape parameters, and dropout against the uncertainty asked for.
fn check_shape(
    dim: usize,
    hidden: usize,
    dropout: f64,
    uncertainty: UncertaintyParams,
) -> Result<(), ModelError> {
    let invalid = |msg: String| Err(ModelError::Input(msg));
    if dim == 0 {
        return invalid("two_tower dim must be at least 1, got 0".into());
    }
    if hidden == 0 {
        return invalid("two_tower hidden must be at least 1, got 0".into());
    }
    if !(0.0..1.0).contains(&dropout) {
        return invalid(format!(
            "two_tower dropout must be in [0, 1) (the probability of dropping a hidden \
             unit), got {dropout}"
        ));
    }
    if let UncertaintyParams::McDropout { .. } = uncertainty
        && dropout == 0.0
    {
        return invalid(
            "uncertainty `mc_dropout` with two_tower `dropout: 0` gives identical passes; \
             set `dropout` to e.g. 0.2, or use `ensemble`"
                .into(),
        );
    }
    Ok(())
}

impl Trainable for TwoTower {
    fn setup(&self) -> FitSetup {
        FitSetup {
            shape: self.shape(),
            seed: self.seed,
            members: self.networks,
            batch_size: self.batch_size,
        }
    }

    fn draws(&mut self) -> &mut Draws {
        &mut self.draws
    }

    /// One gradient step on a batch; returns the batch's summed weighted loss when asked.
    fn train_step(&mut self, batch: &Batch, want_loss: bool) -> Result<Option<Tensor>, ModelError> {
        let n = batch.len();
        let networks = self.networks;
        let device = self.device.clone();
        let user_index = Tensor::from_slice(&batch.users, n, &device)?;
        let item_index = Tensor::from_slice(&batch.items, n, &device)?;
        let labels = Tensor::from_slice(&batch.labels, (n, 1), &device)?;
        let weights = Tensor::from_slice(&batch.weights, (n, networks), &device)?;
        let xu = self.user_ids.gather(&user_index)?; // [n, networks, dim]
        let xi = self.item_ids.gather(&item_index)?;
        let e = self.text.gather(&item_index)?; // [n, text_dim]
        // Under BPR, the negatives' ID embeddings and text vectors.
        let negatives = match self.loss {
            Loss::Bpr => {
                let index = Tensor::from_slice(&batch.negatives, n, &device)?;
                Some((self.item_ids.gather(&index)?, self.text.gather(&index)?))
            }
            Loss::Squared | Loss::CrossEntropy => None,
        };
        let ones = Tensor::ones((n, networks, 1), DType::F32, &device)?;
        let user_mask = self.training_mask(n)?;
        let item_mask = self.training_mask(n)?;
        let negative_mask = if negatives.is_some() {
            self.training_mask(n)?
        } else {
            None
        };

        let dense_vars = dense_vars(&self.user_tower, &self.item_tower);
        let mut dense_sums: Vec<Option<Tensor>> = vec![None; dense_vars.len()];
        let mut step = StepGradients::default();
        // Under tuning: the gradients with respect to the text vectors the step read (the
        // vectors enter each block as `Var`s so that autograd gives them).
        let tuning = self.tuning.is_active();
        let mut text_grads = TextGradients::default();
        let text_input = |e: &Tensor| -> candle_core::Result<(Tensor, Option<Var>)> {
            if tuning {
                let var = Var::from_tensor(e)?;
                Ok((var.as_tensor().clone(), Some(var)))
            } else {
                Ok((e.clone(), None))
            }
        };
        let mut loss: Option<Tensor> = None;
        // `backward` returns gradients still tracked (they were computed from the `Var`s):
        // they are detached, or every table and optimiser moment written from them would
        // hold on to this step's whole graph, and the next step's to it (memory grew by
        // ~0.9 GB per epoch on the cold-start split until a 25-epoch fit ran out of memory).
        let id_grad = |grads: &mut candle_core::backprop::GradStore, x: &Var| {
            grads
                .remove(x.as_tensor())
                .map_or_else(|| x.as_tensor().zeros_like(), |g| Ok(g.detach()))
        };
        for (start, len) in even_blocks(n, self.block_rows) {
            let xu = Var::from_tensor(&xu.narrow(0, start, len)?)?;
            let xi = Var::from_tensor(&xi.narrow(0, start, len)?)?;
            let (e, e_var) = text_input(&e.narrow(0, start, len)?)?;
            let weights = weights.narrow(0, start, len)?;
            let rows = start..start + len;
            let block = (start, len);
            let u = self.tower_output(
                Side::User,
                (xu.as_tensor(), None),
                user_mask.as_ref(),
                block,
            )?;
            let v = self.tower_output(
                Side::Item,
                (xi.as_tensor(), Some(&e)),
                item_mask.as_ref(),
                block,
            )?;
            let (mut grads, block_loss) = match &negatives {
                None => {
                    let labels = labels.narrow(0, start, len)?;
                    let forward = Forward::new(&u, &v, &self.offset_row)?;
                    let residual = forward.residual(&labels, self.loss)?.detach();
                    // ∂(Σ w ℓ)/∂raw is w · residual: back-propagate it as a constant.
                    let upstream = (&residual * &weights)?.detach();
                    let grads = (&forward.raw * &upstream)?.sum_all()?.backward()?;
                    let block_loss = if want_loss {
                        let detached = Forward {
                            raw: forward.raw.detach(),
                            p_unit_bias: forward.p_unit_bias.detach(),
                            q_unit_bias: forward.q_unit_bias.detach(),
                        };
                        Some(detached.weighted_loss(&residual, &labels, &weights, self.loss)?)
                    } else {
                        None
                    };
                    (grads, block_loss)
                }
                Some((xj, e_neg)) => {
                    let xj = Var::from_tensor(&xj.narrow(0, start, len)?)?;
                    let (e_neg, e_neg_var) = text_input(&e_neg.narrow(0, start, len)?)?;
                    let v_neg = self.tower_output(
                        Side::Item,
                        (xj.as_tensor(), Some(&e_neg)),
                        negative_mask.as_ref(),
                        block,
                    )?;
                    let pair = PairForward::new(&u, &v, &v_neg)?;
                    // ∂(Σ w ℓ)/∂margin is w · (σ(d) - 1): back-propagate it as a constant.
                    let upstream = (pair.slope()? * &weights)?.detach();
                    let mut grads = (&pair.margin * &upstream)?.sum_all()?.backward()?;
                    let block_loss = if want_loss {
                        let detached = PairForward {
                            margin: pair.margin.detach(),
                            p_unit_bias: pair.p_unit_bias.detach(),
                            user_direction: pair.user_direction.detach(),
                        };
                        Some(detached.weighted_loss(&weights)?)
                    } else {
                        None
                    };
                    step.push_negatives(RowGradients {
                        rows: &batch.negatives[rows.clone()],
                        values: xj.as_tensor().detach(),
                        scale: ones.narrow(0, 0, len)?,
                        direction: id_grad(&mut grads, &xj)?,
                        weights: weights.clone(),
                    });
                    if let Some(var) = &e_neg_var {
                        text_grads.push(&batch.negatives[rows.clone()], id_grad(&mut grads, var)?);
                    }
                    (grads, block_loss)
                }
            };
            if let Some(block_loss) = block_loss {
                accumulate(&mut loss, block_loss)?;
            }
            let gu = id_grad(&mut grads, &xu)?;
            let gi = id_grad(&mut grads, &xi)?;
            if let Some(var) = &e_var {
                text_grads.push(&batch.items[rows.clone()], id_grad(&mut grads, var)?);
            }
            // Autograd gives each row's whole gradient: a scale of 1.
            step.push_block(
                (&batch.users[rows.clone()], &batch.items[rows]),
                (xu.as_tensor().detach(), gu),
                (xi.as_tensor().detach(), gi),
                ones.narrow(0, 0, len)?,
                weights,
            );
            for (var, sum) in dense_vars.iter().zip(dense_sums.iter_mut()) {
                if let Some(g) = grads.remove(var.as_tensor()) {
                    accumulate(sum, g.detach())?;
                }
            }
        }
        step.apply(&self.optimizer, &mut self.user_ids, &mut self.item_ids)?;
        let mut grads = candle_core::backprop::GradStore::default();
        for (var, sum) in dense_vars.iter().zip(dense_sums) {
            if let Some(g) = sum {
                grads.insert(var.as_tensor(), g);
            }
        }
        self.dense.step(&grads)?;
        if let Some(tuner) = self.tuning.tuner() {
            text_grads.apply(tuner)?;
        }
        Ok(loss)
    }

    fn end_pass(&mut self) -> Result<(), ModelError> {
        self.tuning.refresh(&mut self.text)
    }
}

impl Recommender for TwoTower {
    fn kind(&self) -> &'static str {
        "two_tower"
    }

    fn head(&self) -> ScoringHead {
        ScoringHead::new(self.layout, self.offsets.clone(), self.loss)
    }

    fn shape(&self) -> (usize, usize) {
        (self.user_ids.rows(), self.item_ids.rows())
    }

    fn grow(&mut self, n_users: usize, n_items: usize) -> Result<(), ModelError> {
        let (networks, dim) = (self.networks, self.layout.dim);
        let current = self.user_ids.rows();
        if n_users > current {
            let values = id_rows_range(
                self.seed,
                current..n_users,
                networks,
                dim,
                self.init_std,
                &self.device,
            )?;
            self.user_ids.append(&values)?;
        }
        let current = self.item_ids.rows();
        if n_items > current {
            let values = Tensor::zeros(
                (n_items - current, networks * dim),
                DType::F32,
                &self.device,
            )?;
            self.item_ids.append(&values)?;
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
        let shape = self.shape();
        let Some(fitted) = fit_passes(self, samples, keys, epochs)? else {
            return Ok(FitReport::default());
        };
        // The towers moved: every row changed.
        Ok(FitReport {
            changed_users: (0..shape.0 as u32).collect(),
            changed_items: (0..shape.1 as u32).collect(),
            shared_changed: false,
            last_epoch_loss: fitted.last_epoch_loss,
            node_losses: Vec::new(),
            steps: fitted.steps,
        })
    }

    fn user_rows(&self, users: &[UserIdx]) -> Result<Vec<f32>, ModelError> {
        check_rows("user", users, self.user_ids.rows())?;
        self.export(Side::User, users)
    }

    fn item_rows(&self, items: &[ItemIdx]) -> Result<Vec<f32>, ModelError> {
        check_rows("item", items, self.item_ids.rows())?;
        self.export(Side::Item, items)
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
        let user_tower = self.user_tower.duplicate()?;
        let item_tower = self.item_tower.duplicate()?;
        let dense = self.dense.duplicate(dense_vars(&user_tower, &item_tower))?;
        Ok(Box::new(Self {
            layout: self.layout,
            networks: self.networks,
            passes: self.passes,
            dropout: self.dropout,
            loss: self.loss,
            offsets: self.offsets.clone(),
            // Neither is written in place: sharing them is safe.
            offset_row: self.offset_row.clone(),
            text: self.text.clone(),
            init_std: self.init_std,
            seed: self.seed,
            batch_size: self.batch_size,
            device: self.device.clone(),
            optimizer: self.optimizer,
            user_ids: self.user_ids.duplicate()?,
            item_ids: self.item_ids.duplicate()?,
            user_tower,
            item_tower,
            dense,
            draws: self.draws.clone(),
            masks: self.masks.clone(),
            block_rows: self.block_rows,
            tuning: self.tuning.duplicate()?,
        }))
    }

    fn save_state(&self) -> Result<ModelState, ModelError> {
        let mut state =
            ModelState::of_tables(self.kind(), &self.user_ids, &self.item_ids, &self.draws)?;
        self.dense.save("tower_optimizer", &mut state)?;
        state.set_rng("masks", &self.masks)?;
        self.tuning.save(&mut state)?;
        Ok(state)
    }

    fn load_state(&mut self, state: &ModelState) -> Result<(), ModelError> {
        let common =
            state.restore_tables(self.kind(), &self.user_ids, &self.item_ids, &self.draws)?;
        let masks = state.rng("masks")?;
        self.dense.load("tower_optimizer", state)?;
        self.text.grow(common.items.rows())?;
        self.user_ids = common.users;
        self.item_ids = common.items;
        self.draws = common.draws;
        self.masks = masks;
        self.tuning.load(state, &mut self.text)
    }
}

#[cfg(test)]
mod tests;
