//! The fine-tuned encoder of a text-reading model: the top transformer layers (or LoRA
//! adapters of them, `tune.lora`) trained with the recommender's loss (`tune:` under
//! `text_mf` or `two_tower`).
//!
//! **How the recommender's loss reaches the encoder.** A step first gets the gradient of
//! its loss with respect to each sample's text vector `e_k`: `text_mf` in closed form,
//! `∂L/∂e_k = W^T u_k` (with `u_k` the upstream gradient of the item row that the
//! projection `W` receives), `two_tower` from autograd (the text vectors enter each block
//! as `Var`s). [`TextGradients`] collects them; the step sums them per item, recomputes the
//! vectors of at most `items_per_step` of the batch's distinct items (the first ones, in
//! the shuffled batch's order) through the tuned layers with autograd tracking, and
//! back-propagates the surrogate `Σ_i <e_i, ∂L/∂e_i>`, whose gradient with respect to the
//! tuned weights is the loss's by the chain rule. The tuned layers (or their adapters) take
//! one dense Adam step on it. (The gradients of the items beyond `items_per_step` are dropped: the cap bounds
//! a step's cost on a CPU.)
//!
//! **When vectors change.** Every item's vector depends on the tuned weights, so after each
//! pass over the training samples every vector is recomputed and the model's item rows
//! change with them; within a pass a step reads the vectors of the pass's start, while its
//! gradient reaches the encoder at the current weights (the recomputed vectors of the
//! step's items). The frozen layers' token states ([`TunableText`]) never change.

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};

use super::dense_adam::DenseAdamW;
use super::encoder::{TunableText, TunedLayers};
use super::text_table::TextTable;
use super::{ModelError, ModelState};
use crate::data::ItemEmbeddings;
use crate::plan::params::{EncoderTuning, OptimizerParams};

/// The name prefix of the tuned layers' tensors in a saved model state.
const STATE_PREFIX: &str = "tuned_encoder";

/// Tuned top layers, the frozen token states under them, and their optimiser.
#[derive(Debug)]
pub(super) struct EncoderTuner {
    source: Arc<TunableText>,
    layers: TunedLayers,
    optimizer: DenseAdamW,
    items_per_step: usize,
}

impl EncoderTuner {
    /// The pretrained top layers of `source` on `device` (or LoRA adapters of them drawn
    /// from `seed`), trained at `tuning.lr` (Adam, with the betas and epsilon of
    /// `row_optimizer` when it is Adam).
    pub(super) fn new(
        source: Arc<TunableText>,
        tuning: EncoderTuning,
        row_optimizer: OptimizerParams,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let layers = TunedLayers::new(&source, tuning.lora, seed, device)?;
        let optimizer = DenseAdamW::new(layers.named_vars(), row_optimizer, tuning.lr, 0.0)?;
        Ok(Self {
            source,
            layers,
            optimizer,
            items_per_step: tuning.items_per_step,
        })
    }

    /// Every item's vector under the current weights.
    pub(super) fn vectors(&self) -> Result<ItemEmbeddings, ModelError> {
        self.layers.encode_all(&self.source)
    }

    /// One step on the gradients `grads` (`[n, dim]`) of a batch's loss with respect to the
    /// vectors of `items` (`n` items, repeats allowed): the gradients of each item are
    /// summed, and the first `items_per_step` distinct items with text are back-propagated.
    pub(super) fn step(&mut self, items: &[u32], grads: &Tensor) -> Result<(), ModelError> {
        let mut chosen: Vec<u32> = Vec::new();
        // Row of each sample's item among `chosen`; the samples of other items go to an
        // extra row that is dropped.
        let mut slots = Vec::with_capacity(items.len());
        for &item in items {
            let slot = match chosen.iter().position(|&c| c == item) {
                Some(slot) => slot,
                None if chosen.len() < self.items_per_step && self.source.has_text(item) => {
                    chosen.push(item);
                    chosen.len() - 1
                }
                None => self.items_per_step,
            };
            slots.push(slot as u32);
        }
        if chosen.is_empty() {
            return Ok(());
        }
        let device = grads.device();
        let slots = Tensor::from_vec(slots, items.len(), device)?;
        let per_item = Tensor::zeros(
            (self.items_per_step + 1, self.source.dim()),
            grads.dtype(),
            device,
        )?
        .index_add(&slots, &grads.detach(), 0)?
        .narrow(0, 0, chosen.len())?;
        let vectors = self.layers.encode(&self.source, &chosen)?;
        let surrogate = (vectors * per_item)?.sum_all()?;
        let tracked = surrogate.backward()?;
        // Detached, so that the optimiser's moments do not keep this step's graph alive.
        let mut detached = GradStore::default();
        for (_, var) in self.layers.named_vars() {
            if let Some(grad) = tracked.get(var.as_tensor()) {
                detached.insert(var.as_tensor(), grad.detach());
            }
        }
        self.optimizer.step(&detached)?;
        Ok(())
    }

    /// The same tuner with its own copy of the weights and moments (the frozen states are
    /// shared: nothing writes them).
    pub(super) fn duplicate(&self) -> Result<Self, ModelError> {
        let layers = self.layers.duplicate()?;
        let vars = layers.named_vars().into_iter().map(|(_, v)| v).collect();
        Ok(Self {
            source: Arc::clone(&self.source),
            optimizer: self.optimizer.duplicate(vars)?,
            layers,
            items_per_step: self.items_per_step,
        })
    }

    /// Adds the tuned weights and the optimiser's moments to `state`.
    pub(super) fn save(&self, state: &mut ModelState) -> Result<(), ModelError> {
        for (name, var) in self.layers.named_vars() {
            state.insert_snapshot(&format!("{STATE_PREFIX}.{name}"), var.as_tensor())?;
        }
        self.optimizer
            .save(&format!("{STATE_PREFIX}_optimizer"), state)
    }

    /// Restores what [`Self::save`] wrote.
    pub(super) fn load(&mut self, state: &ModelState) -> Result<(), ModelError> {
        for (name, var) in self.layers.named_vars() {
            let saved = state.tensor_for(
                &format!("{STATE_PREFIX}.{name}"),
                var.as_tensor().dims(),
                var.as_tensor().device(),
            )?;
            var.set(&saved)?;
        }
        self.optimizer
            .load(&format!("{STATE_PREFIX}_optimizer"), state)
    }
}

/// A text-reading model's side of fine-tuning: what its parameters ask for, and the tuner
/// once [`Self::attach`] gave it its source.
#[derive(Debug)]
pub(super) struct TextTuning {
    /// The tuning asked for (`tune:`), and the optimiser the parameters name (whose Adam
    /// betas the tuned layers' Adam takes).
    asked: Option<(EncoderTuning, OptimizerParams)>,
    /// The model's seed (LoRA adapters are drawn from it).
    seed: u64,
    tuner: Option<EncoderTuner>,
}

impl TextTuning {
    /// What `tuning` (the model's `tune:`, if any) asks for, with the model's optimiser and
    /// seed.
    pub(super) fn new(
        tuning: Option<EncoderTuning>,
        optimizer: OptimizerParams,
        seed: u64,
    ) -> Self {
        Self {
            asked: tuning.map(|t| (t, optimizer)),
            seed,
            tuner: None,
        }
    }

    /// Starts tuning over `source` on `device`, for a model whose item vectors are `text`:
    /// from here on they are the tuned layers' (recomputed now).
    pub(super) fn attach(
        &mut self,
        source: &Arc<TunableText>,
        text: &mut TextTable,
        device: &Device,
    ) -> Result<(), ModelError> {
        let Some((tuning, row_optimizer)) = self.asked else {
            return Err(ModelError::Input(
                "this model has no `tune:` option: its encoder stays frozen".into(),
            ));
        };
        if source.tuned_layers() != tuning.layers || source.dim() != text.dim() {
            return Err(ModelError::Input(format!(
                "the encoder source tunes the top {} layer(s) of {}-d vectors, but this model \
                 asks for `tune.layers: {}` over {}-d vectors",
                source.tuned_layers(),
                source.dim(),
                tuning.layers,
                text.dim()
            )));
        }
        self.tuner = Some(EncoderTuner::new(
            Arc::clone(source),
            tuning,
            row_optimizer,
            self.seed,
            device,
        )?);
        self.refresh(text)
    }

    /// The tuner, once attached.
    pub(super) fn tuner(&mut self) -> Option<&mut EncoderTuner> {
        self.tuner.as_mut()
    }

    /// Whether the encoder is being tuned (a step then collects text gradients).
    pub(super) fn is_active(&self) -> bool {
        self.tuner.is_some()
    }

    /// When tuning, recomputes every vector of `text` under the tuned weights (after each
    /// pass, and when weights are restored); otherwise the vectors stay the frozen
    /// encoder's, handed over.
    pub(super) fn refresh(&self, text: &mut TextTable) -> Result<(), ModelError> {
        if let Some(tuner) = &self.tuner {
            text.set(&tuner.vectors()?)?;
        }
        Ok(())
    }

    /// Refuses to replace the vectors of a tuned model with handed-over ones.
    pub(super) fn check_replacement(&self) -> Result<(), ModelError> {
        if self.tuner.is_some() {
            return Err(ModelError::Input(
                "the item vectors of a model that fine-tunes its encoder come from the tuned \
                 layers and cannot be replaced"
                    .into(),
            ));
        }
        Ok(())
    }

    /// An independent copy (see [`EncoderTuner::duplicate`]).
    pub(super) fn duplicate(&self) -> Result<Self, ModelError> {
        Ok(Self {
            asked: self.asked,
            seed: self.seed,
            tuner: self
                .tuner
                .as_ref()
                .map(EncoderTuner::duplicate)
                .transpose()?,
        })
    }

    /// Adds the tuned layers (if any) to `state`.
    pub(super) fn save(&self, state: &mut ModelState) -> Result<(), ModelError> {
        self.tuner.as_ref().map_or(Ok(()), |t| t.save(state))
    }

    /// Restores the tuned layers (if any) from `state`, and the vectors of `text` with
    /// them.
    pub(super) fn load(
        &mut self,
        state: &ModelState,
        text: &mut TextTable,
    ) -> Result<(), ModelError> {
        if let Some(tuner) = &mut self.tuner {
            tuner.load(state)?;
        }
        self.refresh(text)
    }
}

/// A step's gradients with respect to the text vectors it read, block by block, for the
/// tuner.
#[derive(Default)]
pub(super) struct TextGradients {
    items: Vec<u32>,
    grads: Vec<Tensor>,
}

impl TextGradients {
    /// The gradients `grads` (`[items.len(), dim]`) of the vectors of `items`.
    pub(super) fn push(&mut self, items: &[u32], grads: Tensor) {
        self.items.extend_from_slice(items);
        self.grads.push(grads);
    }

    /// One tuner step on everything pushed (nothing when nothing was).
    pub(super) fn apply(self, tuner: &mut EncoderTuner) -> Result<(), ModelError> {
        if self.grads.is_empty() {
            return Ok(());
        }
        tuner.step(&self.items, &Tensor::cat(&self.grads, 0)?)
    }
}

#[cfg(test)]
mod tests;
