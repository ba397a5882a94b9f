//! A model's mutable state as named tensors and JSON scalars: what
//! [`super::Recommender::save_state`] returns and [`super::Recommender::load_state`] takes,
//! so that a checkpoint can resume training bit for bit.
//!
//! What a state holds, by name:
//!
//! - every family: its user and item row tables as the f32 tensors `users.values` and
//!   `items.values` and, under Adam, their moments and per-row step counters
//!   (`users.first_moment`, `users.second_moment`, `users.steps`, and the same for
//!   `items`); its shuffle stream as the scalar `shuffle`; under BPR, its negative sampler:
//!   every user's known items as the u32 tensors `negatives.known_counts` and
//!   `negatives.known_items` (each user's sorted items, concatenated) and the scalar
//!   `negatives.epochs`;
//! - `text_mf`: the tensor `projection` with its Adam moments (`projection.first_moment`,
//!   `projection.second_moment`) and the scalar `projection_optimizer.steps`;
//! - `two_tower`: each tower weight (`user_tower.w1`, `item_tower.w1_text`, ...) with its
//!   Adam moments, the scalar `tower_optimizer.steps` and the dropout stream `masks`.
//!
//! Random generators are ChaCha12 (rand 0.9's `StdRng`), saved as seed, stream and word
//! position. No float is kept in the scalars: float state lives in tensors, so it
//! roundtrips exactly. The table sizes are those of the saved tensors.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ModelError;
use super::optim::RowTable;
use super::training::Draws;
use crate::data::{HostTensor, HostValues};

/// Everything a model's future training and rows depend on beyond what its plan gives.
#[derive(Clone, Debug)]
pub struct ModelState {
    /// The model family (`Recommender::kind()`), checked on load.
    pub kind: String,
    /// Tensors by name (parameters, optimiser moments), on any device; f32 (or whatever
    /// dtype the model holds; the BPR sampler's known items are u32). load_state moves
    /// them to the model's device.
    pub tensors: BTreeMap<String, HostTensor>,
    /// Everything else (RNG positions, step counters, sampler state) as JSON.
    pub scalars: serde_json::Value,
}

/// The state every family holds besides its own parameters, restored and checked, ready to
/// replace the model's.
pub(super) struct CommonState {
    /// User rows.
    pub(super) users: RowTable,
    /// Item rows.
    pub(super) items: RowTable,
    /// The shuffle stream and (under BPR) the negative sampler.
    pub(super) draws: Draws,
}

/// A ChaCha12 generator's position: its seed, stream and word position (a `u128`, kept as
/// a decimal string because JSON numbers stop at 64 bits).
#[derive(Serialize, Deserialize)]
struct RngPosition {
    seed: [u8; 32],
    stream: u64,
    word_pos: String,
}

impl ModelState {
    /// The state of a `kind` model with the parts every family has: its user and item
    /// tables, shuffle stream and (under BPR) negative sampler.
    pub(super) fn of_tables(
        kind: &str,
        users: &RowTable,
        items: &RowTable,
        draws: &Draws,
    ) -> Result<Self, ModelError> {
        let mut state = Self {
            kind: kind.to_owned(),
            tensors: BTreeMap::new(),
            scalars: serde_json::Value::Object(serde_json::Map::new()),
        };
        users.save("users", &mut state)?;
        items.save("items", &mut state)?;
        state.set_rng("shuffle", &draws.shuffle)?;
        if let Some(negatives) = &draws.negatives {
            negatives.save(&mut state)?;
        }
        Ok(state)
    }

    /// The parts every family has, read from this state for a `kind` model that holds
    /// `users`, `items` and `draws`: tables like those (members, width, optimiser, device)
    /// with the saved rows, the shuffle stream and (under BPR) the sampler. Fails
    /// on a state of another family, with missing or inconsistent parts, or with fewer rows
    /// than the model already holds.
    pub(super) fn restore_tables(
        &self,
        kind: &str,
        users: &RowTable,
        items: &RowTable,
        draws: &Draws,
    ) -> Result<CommonState, ModelError> {
        if self.kind != kind {
            return Err(ModelError::Input(format!(
                "cannot load the state of a `{}` model into a `{kind}` model; resume with \
                 the pipeline that saved it",
                self.kind
            )));
        }
        let restored_users = users.restored("users", self)?;
        let restored_items = items.restored("items", self)?;
        for (what, saved, held) in [
            ("users", restored_users.rows(), users.rows()),
            ("items", restored_items.rows(), items.rows()),
        ] {
            if saved < held {
                return Err(ModelError::Input(format!(
                    "the model state holds {saved} {what}, but the model it is loaded into \
                     already holds {held}; load a state into a model built from the plan, \
                     before growing it"
                )));
            }
        }
        let shape = (restored_users.rows(), restored_items.rows());
        let negatives = draws
            .negatives
            .as_ref()
            .map(|sampler| sampler.restored(self, shape))
            .transpose()?;
        Ok(CommonState {
            users: restored_users,
            items: restored_items,
            draws: Draws {
                shuffle: self.rng("shuffle")?,
                negatives,
            },
        })
    }

    /// Tensor `name`, or an error naming it when the state has none.
    pub(super) fn tensor(&self, name: &str) -> Result<&HostTensor, ModelError> {
        self.tensors.get(name).ok_or_else(|| {
            ModelError::Input(format!(
                "the `{}` model state has no tensor `{name}`; it is incomplete or was saved \
                 by another version",
                self.kind
            ))
        })
    }

    /// Tensor `name`, checked to hold f32 values of shape `dims`, on `device` in its own
    /// storage (models write their tables in place).
    pub(super) fn tensor_for(
        &self,
        name: &str,
        dims: &[usize],
        device: &Device,
    ) -> Result<Tensor, ModelError> {
        let tensor = self.tensor(name)?;
        let HostValues::F32(values) = &tensor.values else {
            return Err(ModelError::Input(format!(
                "model state tensor `{name}` holds integers, expected f32"
            )));
        };
        if tensor.shape != dims || !tensor.is_consistent() {
            return Err(ModelError::Input(format!(
                "model state tensor `{name}` has shape {:?}, but this model needs {dims:?}",
                tensor.shape
            )));
        }
        Ok(Tensor::from_slice(values, dims, device)?)
    }

    /// The u32 vector `name`, or an error naming it when it is missing or not one.
    pub(super) fn u32_vector(&self, name: &str) -> Result<&[u32], ModelError> {
        let tensor = self.tensor(name)?;
        match &tensor.values {
            HostValues::U32(values) if tensor.shape == [values.len()] => Ok(values),
            _ => Err(ModelError::Input(format!(
                "model state tensor `{name}` of shape {:?} is not a u32 vector",
                tensor.shape
            ))),
        }
    }

    /// Adds a host copy of `tensor` (f32 or u32) as `name`.
    pub(super) fn insert_snapshot(
        &mut self,
        name: &str,
        tensor: &Tensor,
    ) -> Result<(), ModelError> {
        let flat = tensor.flatten_all()?;
        let values = match tensor.dtype() {
            DType::F32 => HostValues::F32(flat.to_vec1()?),
            DType::U32 => HostValues::U32(flat.to_vec1()?),
            other => {
                return Err(ModelError::Input(format!(
                    "model state tensor `{name}` holds {other:?}; states hold f32 or u32"
                )));
            }
        };
        self.tensors.insert(
            name.to_owned(),
            HostTensor {
                shape: tensor.dims().to_vec(),
                values,
            },
        );
        Ok(())
    }

    /// Adds the u32 vector `values` as `name`.
    pub(super) fn insert_u32(&mut self, name: &str, values: Vec<u32>) {
        self.tensors.insert(
            name.to_owned(),
            HostTensor {
                shape: vec![values.len()],
                values: HostValues::U32(values),
            },
        );
    }

    /// Sets the scalar `name` to `value`.
    pub(super) fn set_scalar(
        &mut self,
        name: &str,
        value: impl Serialize,
    ) -> Result<(), ModelError> {
        let value = serde_json::to_value(value)
            .map_err(|e| ModelError::Input(format!("model state scalar `{name}`: {e}")))?;
        match &mut self.scalars {
            serde_json::Value::Object(map) => {
                map.insert(name.to_owned(), value);
                Ok(())
            }
            _ => Err(self.scalars_not_an_object()),
        }
    }

    /// The scalar `name`, or an error naming it when it is missing or malformed.
    pub(super) fn scalar<T: DeserializeOwned>(&self, name: &str) -> Result<T, ModelError> {
        let serde_json::Value::Object(map) = &self.scalars else {
            return Err(self.scalars_not_an_object());
        };
        let value = map.get(name).ok_or_else(|| {
            ModelError::Input(format!(
                "the `{}` model state has no scalar `{name}`; it is incomplete or was saved \
                 by another version",
                self.kind
            ))
        })?;
        T::deserialize(value)
            .map_err(|e| ModelError::Input(format!("model state scalar `{name}`: {e}")))
    }

    /// Saves the position of `rng` as the scalar `name`.
    pub(super) fn set_rng(&mut self, name: &str, rng: &ChaCha12Rng) -> Result<(), ModelError> {
        self.set_scalar(
            name,
            RngPosition {
                seed: rng.get_seed(),
                stream: rng.get_stream(),
                word_pos: rng.get_word_pos().to_string(),
            },
        )
    }

    /// The generator saved as the scalar `name`, at its saved position.
    pub(super) fn rng(&self, name: &str) -> Result<ChaCha12Rng, ModelError> {
        let position: RngPosition = self.scalar(name)?;
        let word_pos: u128 = position.word_pos.parse().map_err(|e| {
            ModelError::Input(format!(
                "model state scalar `{name}`: word position `{}` is not an integer ({e})",
                position.word_pos
            ))
        })?;
        let mut rng = ChaCha12Rng::from_seed(position.seed);
        rng.set_stream(position.stream);
        rng.set_word_pos(word_pos);
        Ok(rng)
    }

    fn scalars_not_an_object(&self) -> ModelError {
        ModelError::Input(format!(
            "the `{}` model state's scalars are not a JSON object",
            self.kind
        ))
    }
}

#[cfg(test)]
mod tests;
