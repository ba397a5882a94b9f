//! What every recommender's `fit` shares: checking the call's inputs and the resolved
//! parameters, drawing each sample's bootstrap weights, shuffling the samples any member
//! draws into batches each epoch, drawing each sample's BPR negative
//! ([`super::negatives`]) when the model trains with [`Loss::Bpr`], and averaging the last
//! epoch's weighted loss.
//!
//! A model supplies only its gradient step ([`Trainable`]); [`fit_passes`] is the rest of
//! every `fit`, so all models draw the same bootstrap weights, the same batches and the same
//! negatives for the same seed and samples.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha12Rng;

use super::bootstrap::bootstrap_weights;
use super::init::{TableTag, init_rows};
use super::negatives::NegativeSampler;
use super::optim::SparseOptimizer;
use super::{FitReport, ModelError, candle_device};
use crate::data::{Interaction, ItemIdx, LabelKind};
use crate::plan::params::{OptimizerParams, TrainParams, UncertaintyParams};
use crate::scoring::{Loss, RowLayout};
use crate::seeding::stable_hash;

/// Separates the shuffling stream from other uses of the seed.
const SHUFFLE_DOMAIN: u64 = 0x5348_5546_464C_4503;

/// A model's random state between fits: the stream its samples are shuffled with and, under
/// BPR, the negative sampler (which learns every fit's samples). Both advance across fits.
#[derive(Clone, Debug)]
pub(super) struct Draws {
    /// Shuffles the samples of each epoch.
    pub(super) shuffle: ChaCha12Rng,
    /// Under BPR, every user's known items and the negative draws.
    pub(super) negatives: Option<NegativeSampler>,
}

impl Draws {
    /// The draws of a new model of `params` holding `shape = (users, items)` rows.
    pub(super) fn new(params: &TrainParams, shape: (usize, usize)) -> Self {
        Self {
            shuffle: ChaCha12Rng::seed_from_u64(stable_hash(&[params.seed, SHUFFLE_DOMAIN])),
            negatives: negative_sampler(params.loss, params.seed, shape),
        }
    }

    /// Makes room for `n_users` x `n_items` rows.
    pub(super) fn grow(&mut self, n_users: usize, n_items: usize) {
        if let Some(negatives) = &mut self.negatives {
            negatives.grow(n_users, n_items);
        }
    }
}

/// What a model family supplies to the shared fit ([`fit_passes`]).
pub(super) trait Trainable {
    /// The rows it holds, its bootstrap seed, the members (or networks) it trains and its
    /// batch size.
    fn setup(&self) -> FitSetup;

    /// Its draws, which a fit advances.
    fn draws(&mut self) -> &mut Draws;

    /// One gradient step on `batch`; returns the batch's summed weighted loss when
    /// `want_loss` (see [`EpochLoop::run`]).
    fn train_step(&mut self, batch: &Batch, want_loss: bool) -> Result<Option<Tensor>, ModelError>;

    /// Called after each pass over the samples (a model that keeps values derived from its
    /// parameters refreshes them here).
    fn end_pass(&mut self) -> Result<(), ModelError> {
        Ok(())
    }
}

/// What [`fit_passes`] needs to know of a model.
pub(super) struct FitSetup {
    /// Rows held: `(users, items)`.
    pub(super) shape: (usize, usize),
    /// Seed of the bootstrap weights.
    pub(super) seed: u64,
    /// Members (or networks) drawing bootstrap weights.
    pub(super) members: usize,
    /// Samples per gradient step.
    pub(super) batch_size: usize,
}

/// What a fit's passes touched.
pub(super) struct Fitted {
    /// Gradient steps taken.
    pub(super) steps: usize,
    /// Mean weighted loss of the last epoch.
    pub(super) last_epoch_loss: f32,
    /// Which users the taking-part samples touch.
    pub(super) users_touched: Vec<bool>,
    /// Which items the taking-part samples touch, and every BPR negative drawn.
    pub(super) items_touched: Vec<bool>,
}

impl Fitted {
    /// The report of a model whose rows changed where the passes touched them.
    pub(super) fn report(&self) -> FitReport {
        FitReport {
            changed_users: marked(&self.users_touched),
            changed_items: marked(&self.items_touched),
            shared_changed: false,
            last_epoch_loss: self.last_epoch_loss,
            node_losses: Vec::new(),
            steps: self.steps,
        }
    }
}

/// Every model's `fit` up to its report: checks `samples` and `keys`, lets the negative
/// sampler learn them, and runs `epochs` shuffled passes of the model's step with its
/// draws. `None` when nothing trains (no epochs, or no sample any member draws).
pub(super) fn fit_passes<M: Trainable>(
    model: &mut M,
    samples: &[Interaction],
    keys: &[u32],
    epochs: usize,
) -> Result<Option<Fitted>, ModelError> {
    let FitSetup {
        shape,
        seed,
        members,
        batch_size,
    } = model.setup();
    let mut epochs_loop = EpochLoop::new(samples, keys, shape, seed, members)?;
    if let Some(negatives) = &mut model.draws().negatives {
        negatives.learn(samples);
    }
    if epochs == 0 || epochs_loop.is_empty() {
        return Ok(None);
    }
    let (users_touched, mut items_touched) = epochs_loop.touched(shape.0, shape.1);
    // The step borrows the model: its draws are lent out for the passes.
    let placeholder = Draws {
        shuffle: ChaCha12Rng::seed_from_u64(0),
        negatives: None,
    };
    let mut draws = std::mem::replace(model.draws(), placeholder);
    let run = epochs_loop.run(
        epochs,
        batch_size,
        &mut draws.shuffle,
        draws.negatives.as_mut(),
        model,
    );
    *model.draws() = draws;
    let run = run?;
    for &item in &run.negative_items {
        items_touched[item as usize] = true;
    }
    Ok(Some(Fitted {
        steps: run.steps,
        last_epoch_loss: run.last_epoch_loss,
        users_touched,
        items_touched,
    }))
}

/// One batch's samples as host columns.
#[derive(Default)]
pub(super) struct Batch {
    /// The user of each sample.
    pub(super) users: Vec<u32>,
    /// The item of each sample.
    pub(super) items: Vec<u32>,
    /// The label of each sample.
    pub(super) labels: Vec<f32>,
    /// Bootstrap weights, sample-major, `members` per sample.
    pub(super) weights: Vec<f32>,
    /// Under BPR, the negative item of each sample (empty otherwise). A sample whose user
    /// has an event with every item has its own item here and weight 0 in every member.
    pub(super) negatives: Vec<u32>,
}

impl Batch {
    fn fill(&mut self, chunk: &[usize], epochs: &EpochLoop<'_>) {
        self.users.clear();
        self.items.clear();
        self.labels.clear();
        self.weights.clear();
        self.negatives.clear();
        let members = epochs.members;
        for &k in chunk {
            let s = &epochs.samples[k];
            self.users.push(s.user);
            self.items.push(s.item);
            self.labels.push(s.label);
            self.weights
                .extend_from_slice(&epochs.weights[k * members..(k + 1) * members]);
        }
    }

    /// Draws the negative of each sample (the `k`-th of `keys` is sample `k`'s) for epoch
    /// `epoch`, marking each drawn item in `drawn`. A sample without a negative is skipped
    /// by weighing it 0 in each of the `members` (its weight still counts in the mean loss).
    fn draw_negatives(
        &mut self,
        keys: impl Iterator<Item = u32>,
        members: usize,
        sampler: &NegativeSampler,
        epoch: u64,
        drawn: &mut [bool],
    ) {
        for (k, key) in keys.enumerate() {
            match sampler.draw(self.users[k], key, epoch) {
                Some(item) => {
                    drawn[item as usize] = true;
                    self.negatives.push(item);
                }
                None => {
                    self.negatives.push(self.items[k]);
                    self.weights[k * members..(k + 1) * members].fill(0.0);
                }
            }
        }
    }

    /// Number of samples.
    pub(super) fn len(&self) -> usize {
        self.users.len()
    }
}

/// The samples of one `fit` call that take part in training, with their bootstrap weights.
pub(super) struct EpochLoop<'a> {
    samples: &'a [Interaction],
    keys: &'a [u32],
    members: usize,
    /// `weights[k * members + m]`: sample `k`'s weight in member `m`.
    weights: Vec<f32>,
    /// Samples drawn by at least one member; shuffled in place every epoch.
    order: Vec<usize>,
    weight_total: f64,
}

/// What [`EpochLoop::run`] did.
pub(super) struct EpochsRun {
    /// Gradient steps taken.
    pub(super) steps: usize,
    /// Mean weighted loss of the last epoch.
    pub(super) last_epoch_loss: f32,
    /// Items drawn as BPR negatives, sorted and unique (their rows changed too).
    pub(super) negative_items: Vec<ItemIdx>,
}

impl<'a> EpochLoop<'a> {
    /// Checks `samples` and `keys` against a model holding `shape = (users, items)` rows and
    /// draws the weights of `members` bootstrap members (all 1 for a single member).
    pub(super) fn new(
        samples: &'a [Interaction],
        keys: &'a [u32],
        shape: (usize, usize),
        seed: u64,
        members: usize,
    ) -> Result<Self, ModelError> {
        check_samples(samples, keys, shape)?;
        let weights = bootstrap_weights(seed, keys, members);
        let is_active = |k: usize| {
            weights[k * members..(k + 1) * members]
                .iter()
                .any(|&w| w > 0.0)
        };
        // Samples no member draws into its bootstrap take no part (and touch no row).
        let order: Vec<usize> = (0..samples.len()).filter(|&k| is_active(k)).collect();
        let weight_total = order
            .iter()
            .flat_map(|&k| &weights[k * members..(k + 1) * members])
            .map(|&w| f64::from(w))
            .sum();
        Ok(Self {
            samples,
            keys,
            members,
            weights,
            order,
            weight_total,
        })
    }

    /// Whether no sample takes part.
    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Which users (`n_users` flags) and items (`n_items` flags) the taking-part samples
    /// touch.
    pub(super) fn touched(&self, n_users: usize, n_items: usize) -> (Vec<bool>, Vec<bool>) {
        let mut users = vec![false; n_users];
        let mut items = vec![false; n_items];
        for &k in &self.order {
            users[self.samples[k].user as usize] = true;
            items[self.samples[k].item as usize] = true;
        }
        (users, items)
    }

    /// Runs `epochs` shuffled passes of `model` in batches of `batch_size`: its
    /// [`Trainable::train_step`] takes one gradient step and, when asked (in the last
    /// epoch), returns the batch's summed weighted loss; its [`Trainable::end_pass`] ends
    /// each pass. With a `negatives` sampler (BPR), which must already know this
    /// call's samples, every batch carries a negative per sample, drawn afresh each epoch.
    /// Fails with [`ModelError::Diverged`] on a non-finite loss.
    pub(super) fn run(
        &mut self,
        epochs: usize,
        batch_size: usize,
        shuffle: &mut ChaCha12Rng,
        mut negatives: Option<&mut NegativeSampler>,
        model: &mut impl Trainable,
    ) -> Result<EpochsRun, ModelError> {
        let mut batch = Batch::default();
        let mut steps = 0;
        let mut last_epoch_loss = 0.0;
        let mut drawn = vec![false; negatives.as_ref().map_or(0, |s| s.n_items())];
        for epoch in 0..epochs {
            self.order.shuffle(shuffle);
            let last = epoch + 1 == epochs;
            let sampler_epoch = negatives.as_mut().map(|s| s.next_epoch());
            let mut loss_sum: Option<Tensor> = None;
            for chunk in self.order.chunks(batch_size) {
                batch.fill(chunk, self);
                if let (Some(sampler), Some(epoch)) = (negatives.as_deref(), sampler_epoch) {
                    let keys = chunk.iter().map(|&k| self.keys[k]);
                    batch.draw_negatives(keys, self.members, sampler, epoch, &mut drawn);
                }
                if let Some(loss) = model.train_step(&batch, last)? {
                    accumulate(&mut loss_sum, loss)?;
                }
                steps += 1;
            }
            model.end_pass()?;
            if let Some(sum) = loss_sum {
                let sum = sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                last_epoch_loss = (sum / self.weight_total) as f32;
            }
        }
        if !last_epoch_loss.is_finite() {
            return Err(ModelError::Diverged {
                loss: last_epoch_loss,
                samples: self.samples.len(),
            });
        }
        Ok(EpochsRun {
            steps,
            last_epoch_loss,
            negative_items: marked(&drawn),
        })
    }
}

/// Every sample must have a key, rows the model holds and a finite label.
fn check_samples(
    samples: &[Interaction],
    keys: &[u32],
    (n_users, n_items): (usize, usize),
) -> Result<(), ModelError> {
    if keys.len() != samples.len() {
        return Err(ModelError::Input(format!(
            "fit got {} samples but {} keys; every sample needs one stable key",
            samples.len(),
            keys.len()
        )));
    }
    for (k, s) in samples.iter().enumerate() {
        if s.user as usize >= n_users || s.item as usize >= n_items {
            return Err(ModelError::Input(format!(
                "sample {k} (key {}) refers to user {} and item {}, but the model holds \
                 {n_users} users and {n_items} items; grow() it first",
                keys[k], s.user, s.item
            )));
        }
        if !s.label.is_finite() {
            return Err(ModelError::Input(format!(
                "sample {k} (key {}) has label {}; labels must be finite",
                keys[k], s.label
            )));
        }
    }
    Ok(())
}

/// Adds `part` to the running `total` (the first part starts it).
pub(super) fn accumulate(total: &mut Option<Tensor>, part: Tensor) -> candle_core::Result<()> {
    *total = Some(match total.take() {
        Some(sum) => (sum + part)?,
        None => part,
    });
    Ok(())
}

/// Sorted indices of the `true` entries.
pub(super) fn marked(flags: &[bool]) -> Vec<u32> {
    flags
        .iter()
        .enumerate()
        .filter_map(|(i, &f)| f.then_some(i as u32))
        .collect()
}

/// The error of the constructor of `model` (which trains `family` models) given the
/// parameters of another family.
pub(super) fn other_family(model: &str, family: &str, params: &TrainParams) -> ModelError {
    ModelError::Input(format!(
        "{model} trains `{family}` models, not `{}`; build models with \
         model::build_recommender",
        params.model.name()
    ))
}

/// What every model family builds the same way from its parameters: the scoring layout,
/// the label offsets, the device and the row optimiser.
pub(super) struct RowModelSetup {
    /// `members` ensemble members (or MC-dropout passes) of `dim` factors.
    pub(super) layout: RowLayout,
    /// Networks trained: one per ensemble member, or one under MC dropout (whose passes
    /// share it).
    pub(super) networks: usize,
    /// Each member's fixed prediction offset ([`label_offset`]).
    pub(super) offsets: Vec<f32>,
    /// The offset of each network as `[1, networks]`.
    pub(super) offset_row: Tensor,
    pub(super) device: Device,
    pub(super) optimizer: SparseOptimizer,
}

/// Whether a model family has dropout, which MC-dropout uncertainty needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dropout {
    /// The family drops hidden units (`two_tower`).
    Has,
    /// It has none (`mf`, `text_mf`): MC-dropout passes would be identical.
    None,
}

impl RowModelSetup {
    /// Checks the parameters of `family` (whose own are `dim` and `init_std`) for data whose
    /// labels are `label_kind` with mean `global_mean`, and builds what they decide.
    /// MC-dropout uncertainty is refused for a family without `dropout`.
    pub(super) fn new(
        family: &str,
        params: &TrainParams,
        (dim, init_std): (usize, f64),
        (global_mean, label_kind): (f32, LabelKind),
        dropout: Dropout,
    ) -> Result<Self, ModelError> {
        let networks = match params.uncertainty {
            UncertaintyParams::Ensemble { members } => members,
            UncertaintyParams::McDropout { .. } if dropout == Dropout::None => {
                return Err(ModelError::Input(format!(
                    "uncertainty `mc_dropout` needs a model with dropout (`two_tower`); \
                     `{family}` has none: use `ensemble` (several bootstrap members) instead"
                )));
            }
            UncertaintyParams::McDropout { .. } => 1,
        };
        check_params(family, params, init_std, global_mean, label_kind)?;
        let members = params.uncertainty.members();
        let device = candle_device(params.device)?;
        let offset = label_offset(global_mean, params.loss);
        let offset_row = Tensor::from_vec(vec![offset; networks], (1, networks), &device)?;
        Ok(Self {
            layout: RowLayout { members, dim },
            networks,
            offsets: vec![offset; members],
            offset_row,
            device,
            optimizer: SparseOptimizer::from(params.optimizer),
        })
    }
}

/// Rows `rows` of a `table` laid out as `layout`'s scoring rows, as initialised from `seed`
/// (biases 0, factors N(0, `std`²), see [`init_rows`]): a `[rows, members * (1 + dim)]`
/// tensor on `device`.
pub(super) fn initial_rows(
    (seed, table): (u64, TableTag),
    rows: Range<usize>,
    layout: RowLayout,
    std: f64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let n = rows.len();
    let values = init_rows(seed, table, rows, layout.members, layout.dim, std);
    Tensor::from_vec(values, (n, layout.row_len()), device)
}

/// Checks the parameters every model shares; `kind` names the model in messages.
pub(super) fn check_params(
    kind: &str,
    params: &TrainParams,
    init_std: f64,
    global_mean: f32,
    label_kind: LabelKind,
) -> Result<(), ModelError> {
    let invalid = |msg: String| Err(ModelError::Input(msg));
    match params.uncertainty {
        UncertaintyParams::Ensemble { members: 0 } => {
            return invalid("uncertainty: an ensemble needs at least 1 member, got 0".into());
        }
        UncertaintyParams::McDropout { passes: 0 } => {
            return invalid("uncertainty: mc_dropout needs at least 1 pass, got 0".into());
        }
        _ => {}
    }
    if params.batch_size == 0 {
        return invalid("batch_size must be at least 1, got 0".into());
    }
    if !(init_std.is_finite() && init_std >= 0.0) {
        return invalid(format!(
            "{kind} init_std must be a finite number >= 0, got {init_std}"
        ));
    }
    let lr = match params.optimizer {
        OptimizerParams::Sgd { lr, .. } | OptimizerParams::Adam { lr, .. } => lr,
    };
    if !(lr.is_finite() && lr > 0.0) {
        return invalid(format!(
            "optimizer lr must be a finite number > 0, got {lr}"
        ));
    }
    if !global_mean.is_finite() {
        return invalid(format!(
            "the global mean label must be finite, got {global_mean}"
        ));
    }
    if label_kind == LabelKind::Click && !(0.0..=1.0).contains(&global_mean) {
        return invalid(format!(
            "for click labels the global mean is the click rate, in [0, 1]; got {global_mean}"
        ));
    }
    Ok(())
}

/// The fixed offset of every raw prediction under `loss`: the mean label under the squared
/// error, the logit of the (clamped) mean under cross-entropy, and 0 under BPR, whose
/// pairwise margins cancel any offset (the ranking score is then `b_u + b_i + <p_u, q_i>`).
pub(super) fn label_offset(global_mean: f32, loss: Loss) -> f32 {
    match loss {
        Loss::Squared => global_mean,
        Loss::CrossEntropy => {
            let p = global_mean.clamp(1e-6, 1.0 - 1e-6);
            (p / (1.0 - p)).ln()
        }
        Loss::Bpr => 0.0,
    }
}

/// A BPR sampler for a model of `shape` rows when it trains with `loss`.
fn negative_sampler(
    loss: Loss,
    seed: u64,
    (n_users, n_items): (usize, usize),
) -> Option<NegativeSampler> {
    (loss == Loss::Bpr).then(|| NegativeSampler::new(seed, n_users, n_items))
}

/// Each of `rows` checked against a table of `held` rows.
pub(super) fn check_rows(what: &str, rows: &[u32], held: usize) -> Result<(), ModelError> {
    match rows.iter().find(|&&r| r as usize >= held) {
        Some(r) => Err(ModelError::Input(format!(
            "{what} index {r} is out of range: the model holds {held} {what}s; grow() it first"
        ))),
        None => Ok(()),
    }
}

/// The row optimiser's learning rate and L2 coefficient.
pub(super) fn lr_and_decay(optimizer: OptimizerParams) -> (f64, f64) {
    match optimizer {
        OptimizerParams::Sgd { lr, weight_decay }
        | OptimizerParams::Adam {
            lr, weight_decay, ..
        } => (lr, weight_decay),
    }
}
