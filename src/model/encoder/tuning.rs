//! Fine-tuning the encoder's top layers with a recommender: the frozen part computed once,
//! the tuned part as trainable candle parameters.
//!
//! [`TunableText`] is what a run computes once, on the CPU, before training: every item's
//! token states after the encoder's lower (frozen) layers, and the pretrained weights of its
//! top `N` layers. It is read-only, so the frozen part cannot change while the top layers
//! train. [`TunedLayers`] holds those top layers as [`Var`]s on the model's device and runs
//! them in differentiable candle operations (a layer norm written out in elementary
//! operations, a softmax with the row maximum held constant, the activation's own backward
//! pass), then the sentence-transformers pooling (masked mean, L2 normalisation): the item
//! vector `e_i` is a differentiable function of the tuned weights, so a recommender's loss
//! reaches them through candle's autograd. candle-transformers' `BertLayer` cannot serve here:
//! its fused layer norm has no backward pass.
//!
//! What trains in those layers is either every weight, or (`tune.lora`) low-rank adapters of
//! the attention's query and value projections ([`super::lora`]), the layers' own weights
//! then held fixed. Recomputing every vector merges the adapters into the weights first.
//!
//! Tuned vectors live only in the model that trains them (and its checkpoints, with the
//! weights that made them): the embedding cache only ever holds vectors of weights read from
//! a model folder, keyed by those weights.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use super::cpu::{CpuBert, CpuLayers, LAYER_TENSORS, LayerTensors};
use super::error::EncoderError;
use super::folder::ModelFolder;
use super::lora::LowRank;
use super::{model_root, tokens};
use crate::data::ItemEmbeddings;
use crate::model::ModelError;
use crate::model::dense_adam::duplicate_var;
use crate::plan::params::LoraAdapters;

/// Items encoded together when every vector is recomputed on a device other than the CPU.
const REFRESH_BATCH: usize = 64;

/// What fine-tuning starts from: each item's token states after the frozen layers, and the
/// pretrained weights of the top layers.
pub struct TunableText {
    model_id: String,
    /// The model's sizes and activation.
    config: Config,
    tuned_layers: usize,
    frozen_layers: usize,
    hidden: usize,
    /// CPU threads for recomputing every vector.
    threads: usize,
    /// `(first token row, rows)` of each item's text in `states`; `None` without text.
    spans: Vec<Option<(usize, usize)>>,
    /// Token states after the frozen layers, `hidden` floats per token row.
    states: Vec<f32>,
    /// The tuned layers' pretrained tensors (host, f32), bottom layer first, in
    /// [`LAYER_TENSORS`] order.
    initial: Vec<Vec<Tensor>>,
}

impl std::fmt::Debug for TunableText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunableText")
            .field("model_id", &self.model_id)
            .field("tuned_layers", &self.tuned_layers)
            .field("frozen_layers", &self.frozen_layers)
            .field("items", &self.spans.len())
            .field("token_rows", &(self.states.len() / self.hidden.max(1)))
            .finish_non_exhaustive()
    }
}

impl TunableText {
    /// Reads the encoder in `dir` (named `model_id`) and runs its lower layers, all but the
    /// top `tuned_layers`, once over `texts` (one per item; `None` for an item without
    /// text) with `threads` CPU threads.
    pub fn load(
        dir: &Path,
        model_id: &str,
        texts: &[Option<&str>],
        tuned_layers: usize,
        threads: usize,
    ) -> Result<Self, ModelError> {
        let folder = ModelFolder::open(dir)?;
        let config = &folder.config;
        let layer_count = config.num_hidden_layers;
        if tuned_layers == 0 || tuned_layers > layer_count {
            return Err(ModelError::Input(format!(
                "`tune.layers: {tuned_layers}`, but the encoder `{model_id}` has \
                 {layer_count} transformer layers; tune between 1 and {layer_count}"
            )));
        }
        let weights_path = folder.weights_path();
        let weights = |e: candle_core::Error| EncoderError::Weights {
            path: weights_path.clone(),
            message: e.to_string(),
        };
        // SAFETY: as in `TextEncoder::load`: the file is not truncated while mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, &Device::Cpu)
        }
        .map_err(weights)?;
        let root = model_root(vb, &folder);
        let cpu = CpuBert::load(&root, config, &folder.config_path(), &weights_path)?;
        let frozen_layers = layer_count - tuned_layers;
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        let mut initial = Vec::with_capacity(tuned_layers);
        for layer in frozen_layers..layer_count {
            let vb = root.pp(format!("encoder.layer.{layer}"));
            let tensors = LAYER_TENSORS
                .iter()
                .map(|&(name, shape)| {
                    vb.get(shape.dims(hidden, intermediate), name)
                        .and_then(|t| t.to_dtype(DType::F32))
                })
                .collect::<candle_core::Result<Vec<_>>>()
                .map_err(weights)?;
            initial.push(tensors);
        }

        let tokenizer = tokens::load_tokenizer(&folder.tokenizer_path(), folder.max_tokens)?;
        let present: Vec<&str> = texts.iter().flatten().copied().collect();
        let tokens = tokens::tokenize(&tokenizer, &present, threads)?;
        let batches = tokens::length_sorted_batches(&tokens, REFRESH_BATCH);
        let states = cpu.token_states(&tokens, &batches, threads, frozen_layers)?;
        let mut spans = Vec::with_capacity(texts.len());
        let (mut seq, mut row) = (0, 0);
        for text in texts {
            spans.push(text.map(|_| {
                let rows = tokens.get(seq).len();
                let span = (row, rows);
                seq += 1;
                row += rows;
                span
            }));
        }
        Ok(Self {
            model_id: model_id.to_string(),
            config: config.clone(),
            tuned_layers,
            frozen_layers,
            hidden,
            threads,
            spans,
            states,
            initial,
        })
    }

    /// The encoder's id, as the pipeline named it.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Number of top layers tuned.
    pub fn tuned_layers(&self) -> usize {
        self.tuned_layers
    }

    /// Number of lower layers run once and kept frozen.
    pub fn frozen_layers(&self) -> usize {
        self.frozen_layers
    }

    /// Length of an item vector (the hidden size).
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// Number of items covered (with or without text).
    pub fn items(&self) -> usize {
        self.spans.len()
    }

    /// Whether `item` has text.
    pub fn has_text(&self, item: u32) -> bool {
        self.span(item).is_some()
    }

    /// The frozen token states of `item` (`hidden` floats per token), empty without text.
    pub fn token_states(&self, item: u32) -> &[f32] {
        self.span(item).map_or(&[], |(row, rows)| {
            &self.states[row * self.hidden..(row + rows) * self.hidden]
        })
    }

    fn span(&self, item: u32) -> Option<(usize, usize)> {
        self.spans.get(item as usize).copied().flatten()
    }

    /// The items' token states padded to the longest as `[n, longest, hidden]`, and the
    /// mask of real tokens as `[n, longest]` (1 or 0), on `device`. Every item must have
    /// text.
    fn padded(&self, items: &[u32], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let h = self.hidden;
        let longest = items
            .iter()
            .map(|&i| self.token_states(i).len() / h)
            .max()
            .unwrap_or(0)
            .max(1);
        let mut states = vec![0f32; items.len() * longest * h];
        let mut mask = vec![0f32; items.len() * longest];
        for (k, &item) in items.iter().enumerate() {
            let rows = self.token_states(item);
            states[k * longest * h..][..rows.len()].copy_from_slice(rows);
            mask[k * longest..][..rows.len() / h].fill(1.0);
        }
        Ok((
            Tensor::from_vec(states, (items.len(), longest, h), device)?,
            Tensor::from_vec(mask, (items.len(), longest), device)?,
        ))
    }
}

/// `x W^T + b` for `x` of shape `[rows, in]` and the `[weight, bias]` pair `linear`, plus
/// what `adapter` adds, if any.
fn linear(
    x: &Tensor,
    [weight, bias]: &[Tensor; 2],
    adapter: Option<&LowRank>,
) -> candle_core::Result<Tensor> {
    let y = x.matmul(&weight.t()?)?.broadcast_add(bias)?;
    match adapter {
        Some(adapter) => y + adapter.delta(x)?,
        None => Ok(y),
    }
}

/// Each row of `x` (`[rows, hidden]`) layer-normalised with the `[scale, shift]` pair
/// `norm`, in differentiable operations.
fn layer_norm(x: &Tensor, [gamma, beta]: &[Tensor; 2], eps: f64) -> candle_core::Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(variance + eps)?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}

/// The LoRA adapters of one layer's attention query and value projections.
struct QueryValueAdapters {
    query: LowRank,
    value: LowRank,
}

/// What trains in a tuned layer.
enum Trained {
    /// Every tensor of the layer.
    Whole(LayerTensors<Var>),
    /// LoRA adapters; the layer's own tensors stay the pretrained ones.
    Adapters(QueryValueAdapters),
}

/// One tuned transformer layer.
struct TunedLayer {
    /// The tensors the forward pass reads: the trained `Var`s' own tensors when the whole
    /// layer trains, the pretrained tensors (never written) under LoRA.
    weights: LayerTensors<Tensor>,
    trained: Trained,
}

impl TunedLayer {
    /// Layer `k` of the tuned ones from its pretrained tensors `initial` (in
    /// [`LAYER_TENSORS`] order), on `device`: every tensor trains, or, with `lora`, fresh
    /// adapters drawn from `seed`.
    fn new(
        k: usize,
        initial: &[Tensor],
        lora: Option<LoraAdapters>,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let on_device = initial
            .iter()
            .map(|t| t.to_device(device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let Some(lora) = lora else {
            let vars = on_device
                .iter()
                .map(Var::from_tensor)
                .collect::<candle_core::Result<Vec<_>>>()?;
            return Self::trained_whole(vars);
        };
        let weights = layer_of(on_device)?;
        let adapter = |weight: &Tensor, role: &str| {
            LowRank::new(
                lora,
                weight.dims2()?,
                seed,
                &format!("layer{k}.{role}.lora"),
                device,
            )
        };
        let adapters = QueryValueAdapters {
            query: adapter(&weights.query[0], "query")?,
            value: adapter(&weights.value[0], "value")?,
        };
        Ok(Self {
            weights,
            trained: Trained::Adapters(adapters),
        })
    }

    /// A layer whose every tensor is one of `vars` (in [`LAYER_TENSORS`] order).
    fn trained_whole(vars: Vec<Var>) -> candle_core::Result<Self> {
        Ok(Self {
            weights: layer_of(vars.iter().map(|v| v.as_tensor().clone()))?,
            trained: Trained::Whole(layer_of(vars)?),
        })
    }

    /// The LoRA adapters, if that is what trains.
    fn adapters(&self) -> Option<&QueryValueAdapters> {
        match &self.trained {
            Trained::Whole(_) => None,
            Trained::Adapters(adapters) => Some(adapters),
        }
    }

    /// The trained parameters, with their names in the layer: the layer's tensors
    /// ([`LAYER_TENSORS`] names), or its adapters' (`query.lora_a`, ...).
    fn named_vars(&self) -> Vec<(String, Var)> {
        match &self.trained {
            Trained::Whole(vars) => vars
                .ordered()
                .zip(LAYER_TENSORS)
                .map(|(var, (name, _))| (name.to_string(), var.clone()))
                .collect(),
            Trained::Adapters(adapters) => [("query", &adapters.query), ("value", &adapters.value)]
                .into_iter()
                .flat_map(|(role, adapter)| {
                    adapter
                        .named_vars()
                        .map(|(name, var)| (format!("{role}.{name}"), var))
                })
                .collect(),
        }
    }

    /// The same layer with its own copy of every trained parameter (the fixed pretrained
    /// tensors under LoRA are shared: nothing writes them).
    fn duplicate(&self) -> candle_core::Result<Self> {
        match &self.trained {
            Trained::Whole(vars) => Self::trained_whole(
                vars.ordered()
                    .map(duplicate_var)
                    .collect::<candle_core::Result<_>>()?,
            ),
            Trained::Adapters(adapters) => Ok(Self {
                weights: self.weights.clone(),
                trained: Trained::Adapters(QueryValueAdapters {
                    query: adapters.query.duplicate()?,
                    value: adapters.value.duplicate()?,
                }),
            }),
        }
    }

    /// The weights a forward pass without adapters needs: the adapters merged into the
    /// query and value weights.
    fn merged(&self) -> candle_core::Result<LayerTensors<Tensor>> {
        let mut merged = self.weights.clone();
        if let Some(adapters) = self.adapters() {
            merged.query[0] = adapters.query.merged(&merged.query[0])?;
            merged.value[0] = adapters.value.merged(&merged.value[0])?;
        }
        Ok(merged)
    }
}

/// A layer of `tensors` (in [`LAYER_TENSORS`] order).
fn layer_of<T>(tensors: impl IntoIterator<Item = T>) -> candle_core::Result<LayerTensors<T>> {
    let tensors: Vec<T> = tensors.into_iter().collect();
    let count = tensors.len();
    LayerTensors::from_ordered(tensors).ok_or_else(|| {
        candle_core::Error::Msg(format!("a transformer layer has {count} tensors, not 16"))
    })
}

/// The top layers of the encoder as trainable parameters on a device: their own weights,
/// or LoRA adapters of them.
pub struct TunedLayers {
    layers: Vec<TunedLayer>,
    heads: usize,
    eps: f64,
    activation: HiddenAct,
    device: Device,
}

impl std::fmt::Debug for TunedLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunedLayers")
            .field("layers", &self.layers.len())
            .field("lora", &self.layers.iter().any(|l| l.adapters().is_some()))
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl TunedLayers {
    /// The pretrained top layers of `source` on `device`, every weight trained, or with
    /// `lora`, adapters drawn from `seed` trained instead. A rank beyond the layers' width
    /// is refused.
    pub fn new(
        source: &TunableText,
        lora: Option<LoraAdapters>,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        if let Some(lora) = lora
            && lora.rank > source.hidden
        {
            return Err(ModelError::Input(format!(
                "`tune.lora.rank: {}` exceeds the width {} of the encoder `{}`'s projections; \
                 use a rank of at most {} (e.g. 8)",
                lora.rank, source.hidden, source.model_id, source.hidden
            )));
        }
        let layers = source
            .initial
            .iter()
            .enumerate()
            .map(|(k, tensors)| TunedLayer::new(k, tensors, lora, seed, device))
            .collect::<candle_core::Result<_>>()?;
        let config = &source.config;
        Ok(Self {
            layers,
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps,
            activation: config.hidden_act,
            device: device.clone(),
        })
    }

    /// Every trained parameter with its name (`layer<k>.<tensor>`, or
    /// `layer<k>.<query|value>.lora_<a|b>` under LoRA; `k` counted from the lowest tuned
    /// layer), for an optimiser and for saved states.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(k, layer)| {
                layer
                    .named_vars()
                    .into_iter()
                    .map(move |(name, var)| (format!("layer{k}.{name}"), var))
            })
            .collect()
    }

    /// The same layers with their own copy of every trained parameter.
    pub fn duplicate(&self) -> candle_core::Result<Self> {
        Ok(Self {
            layers: self
                .layers
                .iter()
                .map(TunedLayer::duplicate)
                .collect::<candle_core::Result<_>>()?,
            heads: self.heads,
            eps: self.eps,
            activation: self.activation,
            device: self.device.clone(),
        })
    }

    /// The vectors of `items` (each with text in `source`) as `[n, hidden]`, tracked: a
    /// loss computed from them back-propagates into the tuned layers.
    pub fn encode(&self, source: &TunableText, items: &[u32]) -> candle_core::Result<Tensor> {
        let (states, mask) = source.padded(items, &self.device)?;
        let (n, longest, hidden) = states.dims3()?;
        let head_dim = hidden / self.heads;
        // 0 for a real token, a large negative number for padding, per key position.
        let key_bias = ((&mask - 1.0)? * 1e4)?.reshape((n, 1, 1, longest))?;
        let mut x = states.reshape((n * longest, hidden))?;
        for layer in &self.layers {
            let (weights, adapters) = (&layer.weights, layer.adapters());
            let heads = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((n, longest, self.heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(linear(&x, &weights.query, adapters.map(|a| &a.query))?)?;
            let k = heads(linear(&x, &weights.key, None)?)?;
            let v = heads(linear(&x, &weights.value, adapters.map(|a| &a.value))?)?;
            let scores =
                (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?.broadcast_add(&key_bias)?;
            let context = softmax_last(&scores)?
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((n * longest, hidden))?;
            let attended = (linear(&context, &weights.attention_out, None)? + &x)?;
            let x1 = layer_norm(&attended, &weights.attention_norm, self.eps)?;
            let up = linear(&x1, &weights.up, None)?;
            let up = match self.activation {
                HiddenAct::Gelu => up.gelu_erf()?,
                HiddenAct::GeluApproximate => up.gelu()?,
                HiddenAct::Relu => up.relu()?,
            };
            let out = (linear(&up, &weights.down, None)? + &x1)?;
            x = layer_norm(&out, &weights.output_norm, self.eps)?;
        }
        // Mean over the real tokens, then L2 normalisation (sentence-transformers').
        let x = x.reshape((n, longest, hidden))?;
        let summed = x.broadcast_mul(&mask.unsqueeze(2)?)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum_keepdim(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        mean.broadcast_div(&norm)
    }

    /// Every item vector of `source` under the current weights (zeros and absent for items
    /// without text), without tracking. On the CPU the weights are packed for the
    /// encoder's own forward pass (several times faster than candle's operations here);
    /// elsewhere the vectors are computed in length-sorted batches of candle operations.
    pub fn encode_all(&self, source: &TunableText) -> Result<ItemEmbeddings, ModelError> {
        let dim = source.dim();
        let with_text: Vec<u32> = (0..source.items() as u32)
            .filter(|&i| source.has_text(i))
            .collect();
        let mut vectors = vec![0f32; source.items() * dim];
        if self.device.is_cpu() {
            let tensors = self
                .layers
                .iter()
                .map(|layer| {
                    layer
                        .merged()?
                        .ordered()
                        .map(|t| t.flatten_all()?.to_vec1::<f32>())
                        .collect::<candle_core::Result<Vec<_>>>()
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let packed = CpuLayers::from_tensors(&source.config, &tensors);
            // Items with text hold consecutive token rows, in item order.
            let lens: Vec<usize> = with_text
                .iter()
                .map(|&i| source.token_states(i).len() / dim)
                .collect();
            let encoded = packed.encode_states(&source.states, &lens, source.threads);
            for (&item, row) in with_text.iter().zip(encoded.chunks_exact(dim)) {
                vectors[item as usize * dim..][..dim].copy_from_slice(row);
            }
        } else {
            let mut by_length = with_text.clone();
            by_length.sort_by_key(|&i| std::cmp::Reverse(source.token_states(i).len()));
            for batch in by_length.chunks(REFRESH_BATCH) {
                let encoded = self.encode(source, batch)?.detach().to_vec2::<f32>()?;
                for (&item, row) in batch.iter().zip(encoded) {
                    vectors[item as usize * dim..][..dim].copy_from_slice(&row);
                }
            }
        }
        Ok(ItemEmbeddings {
            dim,
            vectors,
            present: (0..source.items() as u32)
                .map(|i| source.has_text(i))
                .collect(),
        })
    }
}

/// Softmax over the last dimension; the row maximum it subtracts for stability is held
/// constant (the result does not depend on it, so neither does its gradient).
fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let exp = shifted.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}
