//! Recommenders trained with candle, and the interface the driver uses to train them and
//! to read their parameters as scoring rows (see [`crate::scoring`]).
//!
//! `model/` knows candle but not the dataflow: after a training pass it reports which user
//! and item rows changed ([`FitReport`]); the driver turns those into row updates for the
//! incremental engine.

pub mod encoder;

use candle_core::Device;

pub mod bootstrap;
pub mod init;
pub mod mf;
pub mod optim;

pub use mf::BiasedMf;

use crate::data::{Interaction, ItemIdx, UserIdx};
use crate::plan::params::DeviceChoice;
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
    /// Whether a parameter shared by every sample changed (the head's offsets, a projection,
    /// an MLP): then every score changes and an honest engine re-scores everything.
    pub shared_changed: bool,
    /// Mean training loss of the last epoch.
    pub last_epoch_loss: f32,
    /// Gradient steps taken.
    pub steps: usize,
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
}

/// The candle device for a pipeline's `device:` choice, or a clear error when it cannot be
/// had in this build or on this machine.
pub fn candle_device(choice: DeviceChoice) -> Result<Device, ModelError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(ordinal) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(ModelError::Device(
                    "`device: cuda` needs a recsift built with `--features cuda` \
                     (cargo build --release --features cuda); this build has CPU support only"
                        .into(),
                ));
            }
            Device::new_cuda(ordinal)
                .map_err(|e| ModelError::Device(format!("cannot open CUDA device {ordinal}: {e}")))
        }
    }
}
