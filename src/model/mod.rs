//! Recommenders trained with candle, and the interface the driver uses to train them and
//! to read their parameters as scoring rows (see [`crate::scoring`]).
//!
//! `model/` knows candle but not the dataflow: after a training pass it reports which user
//! and item rows changed ([`FitReport`]); the driver turns those into row updates for the
//! incremental engine.

pub mod encoder;
pub mod fusion;
pub mod set;

use std::sync::Arc;

use candle_core::Device;

pub mod bootstrap;
mod dense_adam;
mod host_rows;
pub mod init;
pub mod mf;
mod negatives;
pub mod optim;
mod pairwise;
pub mod state;
#[cfg(test)]
mod synthetic;
pub mod text_mf;
mod text_table;
mod text_tuner;
mod training;
pub mod two_tower;

pub use mf::BiasedMf;
pub use set::ModelSet;
pub use state::ModelState;
pub use text_mf::TextMf;
pub use two_tower::TwoTower;

use self::encoder::TunableText;
use crate::data::{Interaction, ItemEmbeddings, ItemIdx, LabelKind, UserIdx};
use crate::plan::params::{DeviceChoice, ModelKind, TrainParams};
use crate::results::TRAIN_LOSS;
use crate::scoring::ScoringHead;

/// Errors raised while building or training a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, device error, out of memory).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// `device: cuda` was asked for in a build without the `cuda` feature, or no GPU exists.
    #[error("{0}")]
    Device(String),
    /// Training produced a non-finite loss: the learning rate is too high for the data.
    #[error(
        "training diverged: the loss became {loss} after a pass over {samples} samples; \
         lower the optimizer's `lr` (e.g. halve it) or use `adam`, whose per-row step sizes \
         do not grow with how often a row repeats in a batch"
    )]
    Diverged {
        /// The non-finite loss.
        loss: f32,
        /// Samples in the pass.
        samples: usize,
    },
    /// A training input is unusable (e.g. nothing to train on).
    #[error("{0}")]
    Input(String),
    /// The text encoder's model could not be found, loaded or run.
    #[error(transparent)]
    Encoder(#[from] encoder::EncoderError),
}

/// What one training call did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FitReport {
    /// Users whose scoring rows changed, sorted and unique.
    pub changed_users: Vec<UserIdx>,
    /// Items whose scoring rows changed, sorted and unique.
    pub changed_items: Vec<ItemIdx>,
    /// Whether a parameter of the scoring head changed (its offsets): then every score
    /// changes and an honest engine re-scores everything. Shared parameters that feed the
    /// rows (`text_mf`'s projection, `two_tower`'s MLPs) do not set it: they change the rows
    /// themselves, and the model lists every row they changed above.
    pub shared_changed: bool,
    /// Mean training loss of the last epoch.
    pub last_epoch_loss: f32,
    /// With several train nodes, each node's own `last_epoch_loss` (node id, loss), in the
    /// pipeline's order; empty for one model.
    pub node_losses: Vec<(String, f32)>,
    /// Gradient steps taken.
    pub steps: usize,
}

impl FitReport {
    /// The round's training-loss metrics: [`TRAIN_LOSS`] for one model, one
    /// `<node>/train_loss` per train node for several.
    pub fn loss_metrics(&self) -> Vec<(String, f64)> {
        if self.node_losses.is_empty() {
            return vec![(TRAIN_LOSS.into(), f64::from(self.last_epoch_loss))];
        }
        self.node_losses
            .iter()
            .map(|(node, loss)| (format!("{node}/{TRAIN_LOSS}"), f64::from(*loss)))
            .collect()
    }

    /// Folds the report of a later training call into this one: the changed rows of
    /// both, the later losses, the steps of both.
    pub fn merge(&mut self, later: FitReport) {
        let union = |a: &mut Vec<u32>, b: Vec<u32>| {
            a.extend(b);
            a.sort_unstable();
            a.dedup();
        };
        union(&mut self.changed_users, later.changed_users);
        union(&mut self.changed_items, later.changed_items);
        self.shared_changed |= later.shared_changed;
        self.last_epoch_loss = later.last_epoch_loss;
        self.node_losses = later.node_losses;
        self.steps += later.steps;
    }
}

/// A trainable recommender whose parameters export as scoring rows.
pub trait Recommender: Send {
    /// The model family's name, as in the pipeline YAML (`mf`, ...).
    fn kind(&self) -> &'static str;

    /// Layout, per-member offsets and label kind of this model's scoring rows.
    fn head(&self) -> ScoringHead;

    /// Number of users and items the parameter tables hold.
    fn shape(&self) -> (usize, usize);

    /// Grow the parameter tables to at least `n_users` x `n_items` (new rows are
    /// initialised as at construction); existing rows are untouched.
    fn grow(&mut self, n_users: usize, n_items: usize) -> Result<(), ModelError>;

    /// Train `epochs` passes over `samples`. `keys[k]` is a stable identity of
    /// `samples[k]` (its sample index) so that bootstrap weights do not depend on the
    /// order or the round in which a sample was labelled.
    fn fit(
        &mut self,
        samples: &[Interaction],
        keys: &[u32],
        epochs: usize,
    ) -> Result<FitReport, ModelError>;

    /// Scoring rows of `users`, concatenated (`users.len() * layout.row_len()` floats).
    fn user_rows(&self, users: &[UserIdx]) -> Result<Vec<f32>, ModelError>;

    /// Scoring rows of `items`, concatenated (`items.len() * layout.row_len()` floats).
    fn item_rows(&self, items: &[ItemIdx]) -> Result<Vec<f32>, ModelError>;

    /// Replace the item text vectors the model reads (e.g. a replay window brought new
    /// items with text: `grow()` the model, then hand it the vectors of all items). Items
    /// beyond `text.len()` have no text. The rows of items whose vector changed change with
    /// it: re-read them with [`Recommender::item_rows`]. Models that read no text ignore it.
    fn set_item_embeddings(&mut self, text: &ItemEmbeddings) -> Result<(), ModelError> {
        let _ = text;
        Ok(())
    }

    /// Starts fine-tuning the encoder's top layers over `source` (the frozen layers' token
    /// states of every item and the tuned layers' pretrained weights), for a model whose
    /// parameters ask for it (`tune:`); the model's item vectors become the tuned layers'
    /// from here on. Models that do not tune refuse.
    fn tune_encoder(&mut self, source: &Arc<TunableText>) -> Result<(), ModelError> {
        Err(ModelError::Input(format!(
            "`{}` cannot fine-tune the encoder `{}`; only `text_mf` with `tune:` does",
            self.kind(),
            source.model_id()
        )))
    }

    /// An independent copy of this model in its current state: parameters, optimiser
    /// state (moments and step counters), random generators (shuffle, dropout masks) and
    /// BPR negative sampler positions. Training the copy and the original on the same
    /// samples gives bit-identical rows; training one never changes the other. (A study
    /// trains round 0 once and hands each arm its own copy.)
    fn duplicate(&self) -> Result<Box<dyn Recommender>, ModelError>;

    /// Everything this model's future training and rows depend on that construction from the
    /// plan does not give: parameters, optimiser state (moments, step counters), random
    /// generator positions, BPR negative-sampler state, table sizes.
    fn save_state(&self) -> Result<ModelState, ModelError>;

    /// Replaces this model's mutable state with `state` (saved by a model of the same family
    /// built from the same plan, possibly grown since): afterwards it trains and exports rows
    /// exactly as the saved model would. A state of another family or with inconsistent
    /// shapes is an `Err(ModelError::Input(..))` naming what is wrong, never a panic.
    ///
    /// Item text vectors are not part of the state: hand the model the vectors of every item
    /// ([`Recommender::set_item_embeddings`]) before loading. A refused state leaves the
    /// model unchanged.
    fn load_state(&mut self, state: &ModelState) -> Result<(), ModelError>;
}

/// The recommender `params.model` asks for, with `n_users` x `n_items` rows.
///
/// `global_mean` is the mean training label (see [`BiasedMf::new`]); `text` holds the item
/// text vectors, which `text_mf` and `two_tower` need and `mf` ignores.
pub fn build_recommender(
    params: &TrainParams,
    n_users: usize,
    n_items: usize,
    global_mean: f32,
    label_kind: LabelKind,
    text: Option<&ItemEmbeddings>,
) -> Result<Box<dyn Recommender>, ModelError> {
    let needs_text = |kind: &str| {
        ModelError::Input(format!(
            "`{kind}` needs item text vectors: add an `embed` node (e.g. `item_vectors: \
             {{embed: {{model: sentence-transformers/all-MiniLM-L6-v2}}, input: items}}`) and \
             list it in the train node's inputs, or train `mf`, which reads no text"
        ))
    };
    Ok(match params.model {
        ModelKind::Mf { .. } => Box::new(BiasedMf::new(
            params,
            n_users,
            n_items,
            global_mean,
            label_kind,
        )?),
        ModelKind::TextMf { .. } => {
            let text = text.ok_or_else(|| needs_text("text_mf"))?;
            Box::new(TextMf::new(
                params,
                n_users,
                n_items,
                global_mean,
                label_kind,
                text,
            )?)
        }
        ModelKind::TwoTower { .. } => {
            let text = text.ok_or_else(|| needs_text("two_tower"))?;
            Box::new(TwoTower::new(
                params,
                n_users,
                n_items,
                global_mean,
                label_kind,
                text,
            )?)
        }
    })
}

/// Whether this build supports `choice` at all (a CUDA device needs the `cuda` feature),
/// without opening the device: a cheap check to make before slower work.
pub fn require_support(choice: DeviceChoice) -> Result<(), ModelError> {
    match choice {
        DeviceChoice::Cuda(_) if !candle_core::utils::cuda_is_available() => {
            Err(ModelError::Device(
                "`device: cuda` needs a recsift built with `--features cuda` \
                 (cargo build --release --features cuda); this build has CPU support only"
                    .into(),
            ))
        }
        _ => Ok(()),
    }
}

/// The candle device for a pipeline's `device:` choice, or a clear error when it cannot be
/// had in this build or on this machine.
pub fn candle_device(choice: DeviceChoice) -> Result<Device, ModelError> {
    require_support(choice)?;
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(ordinal) => {
            Device::new_cuda(ordinal).map_err(|e| {
                // The driver's message, without the backtrace candle attaches under
                // RUST_BACKTRACE.
                let e = match e {
                    candle_core::Error::WithBacktrace { inner, .. } => *inner,
                    e => e,
                };
                ModelError::Device(format!(
                    "cannot open CUDA device {ordinal}: {e}; check that `nvidia-smi` lists a \
                     GPU with index {ordinal} and that the NVIDIA driver works, or use \
                     `device: cpu`"
                ))
            })
        }
    }
}
