//! What every recommender's `fit` shares: checking the call's inputs and the resolved
//! parameters, drawing each sample's bootstrap weights, shuffling the samples any member
//! draws into batches each epoch, and averaging the last epoch's weighted loss.
//!
//! A model supplies only its gradient step ([`EpochLoop::run`]'s closure), so all models
//! draw the same bootstrap weights and the same batches for the same seed and samples.

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::ModelError;
use super::bootstrap::bootstrap_weights;
use crate::data::{Interaction, LabelKind};
use crate::plan::params::{OptimizerParams, TrainParams, UncertaintyParams};

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
}

impl Batch {
    fn fill(&mut self, chunk: &[usize], samples: &[Interaction], weights: &[f32], members: usize) {
        self.users.clear();
        self.items.clear();
        self.labels.clear();
        self.weights.clear();
        for &k in chunk {
            let s = &samples[k];
            self.users.push(s.user);
            self.items.push(s.item);
            self.labels.push(s.label);
            self.weights
                .extend_from_slice(&weights[k * members..(k + 1) * members]);
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
}

impl<'a> EpochLoop<'a> {
    /// Checks `samples` and `keys` against a model holding `shape = (users, items)` rows and
    /// draws the weights of `members` bootstrap members (all 1 for a single member).
    pub(super) fn new(
        samples: &'a [Interaction],
        keys: &[u32],
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

    /// Runs `epochs` shuffled passes in batches of `batch_size`. `step(batch, want_loss)`
    /// takes one gradient step and, when asked (in the last epoch), returns the batch's
    /// summed weighted loss. Fails with [`ModelError::Diverged`] on a non-finite loss.
    pub(super) fn run(
        &mut self,
        epochs: usize,
        batch_size: usize,
        shuffle: &mut StdRng,
        mut step: impl FnMut(&Batch, bool) -> Result<Option<Tensor>, ModelError>,
    ) -> Result<EpochsRun, ModelError> {
        let mut batch = Batch::default();
        let mut steps = 0;
        let mut last_epoch_loss = 0.0;
        for epoch in 0..epochs {
            self.order.shuffle(shuffle);
            let last = epoch + 1 == epochs;
            let mut loss_sum: Option<Tensor> = None;
            for chunk in self.order.chunks(batch_size) {
                batch.fill(chunk, self.samples, &self.weights, self.members);
                if let Some(loss) = step(&batch, last)? {
                    loss_sum = Some(match loss_sum {
                        Some(sum) => (sum + loss)?,
                        None => loss,
                    });
                }
                steps += 1;
            }
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

/// Sorted indices of the `true` entries.
pub(super) fn marked(flags: &[bool]) -> Vec<u32> {
    flags
        .iter()
        .enumerate()
        .filter_map(|(i, &f)| f.then_some(i as u32))
        .collect()
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

/// The fixed offset of every raw prediction: the mean rating, or the logit of the click
/// rate.
pub(super) fn label_offset(global_mean: f32, label_kind: LabelKind) -> f32 {
    match label_kind {
        LabelKind::Rating => global_mean,
        LabelKind::Click => {
            let p = global_mean.clamp(1e-6, 1.0 - 1e-6);
            (p / (1.0 - p)).ln()
        }
    }
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

/// Dense Adam for the parameters every sample reads (a text projection, MLP weights): one
/// step updates them whole, so the sparse row optimisers do not apply. Adam rather than
/// SGD whatever the row optimiser is, because a step on the summed loss of a batch would be
/// batch-size times larger for a shared parameter than for a row, and Adam's step does not
/// scale with the gradient. Betas and epsilon come from the row optimiser when it is Adam
/// (PyTorch's defaults otherwise); `decoupled_decay` is AdamW's weight decay (0 when the
/// model puts its L2 term in the gradient).
pub(super) fn dense_adam(
    vars: Vec<candle_core::Var>,
    optimizer: OptimizerParams,
    lr: f64,
    decoupled_decay: f64,
) -> candle_core::Result<candle_nn::AdamW> {
    use candle_nn::Optimizer;
    let (beta1, beta2, eps) = match optimizer {
        OptimizerParams::Adam {
            beta1, beta2, eps, ..
        } => (beta1, beta2, eps),
        OptimizerParams::Sgd { .. } => (0.9, 0.999, 1e-8),
    };
    candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay: decoupled_decay,
        },
    )
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
