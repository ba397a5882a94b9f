//! The CPU path of the encoder: a BERT forward pass written for throughput on a few cores.
//!
//! What it does differently from a general tensor library, and why (measured in
//! `docs/benchmarks.md`):
//! - **No padding.** A batch is a ragged list of sequences laid end to end: the dense
//!   layers see only real tokens and attention runs per sequence, so no mask is needed and
//!   no work is spent on pad tokens.
//! - **Weights packed once** at load time for the AVX-512 micro-kernel ([`gemm`]), with
//!   query, key and value fused into one product and GELU applied on the registers of the
//!   feed-forward up-projection before its store.
//! - **No strided copies.** Heads are read in place from the fused QKV rows and written in
//!   place into the context rows; there is no head split/merge transpose.
//! - **One batch per thread.** Threads take whole batches from a shared counter (longest
//!   first) and run every product single-threaded: no synchronisation inside a layer.
//! - **Vectorised exp/erf** of our own for softmax and GELU, kept away from subnormal
//!   numbers (each operation on one takes a slow microcode path on x86: it halved the
//!   speed of the fused GELU product before the clamp).
//!
//! Numerics are `f32` throughout, like the PyTorch reference.

pub mod gemm;
pub mod kernels;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::DType;
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};

use self::gemm::{AlignedBuf, Epilogue, PackedLinear};
use self::kernels::{Activation, AttentionScratch, Heads};
use super::error::EncoderError;
use super::profile::{StageTimes, thread_seconds};
use super::tokens::Ragged;

/// One transformer layer's weights, packed.
struct Layer {
    qkv: PackedLinear,
    attn_out: PackedLinear,
    attn_norm: Norm,
    ffn_up: PackedLinear,
    ffn_down: PackedLinear,
    ffn_norm: Norm,
}

/// Layer-norm scale and shift.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// The tensors of one transformer layer, by name under `encoder.layer.<i>` of a BERT
/// checkpoint, with their shapes; [`CpuLayers::from_tensors`] takes them in this order.
pub const LAYER_TENSORS: [(&str, TensorShape); 16] = [
    ("attention.self.query.weight", TensorShape::HiddenByHidden),
    ("attention.self.query.bias", TensorShape::Hidden),
    ("attention.self.key.weight", TensorShape::HiddenByHidden),
    ("attention.self.key.bias", TensorShape::Hidden),
    ("attention.self.value.weight", TensorShape::HiddenByHidden),
    ("attention.self.value.bias", TensorShape::Hidden),
    ("attention.output.dense.weight", TensorShape::HiddenByHidden),
    ("attention.output.dense.bias", TensorShape::Hidden),
    ("attention.output.LayerNorm.weight", TensorShape::Hidden),
    ("attention.output.LayerNorm.bias", TensorShape::Hidden),
    (
        "intermediate.dense.weight",
        TensorShape::IntermediateByHidden,
    ),
    ("intermediate.dense.bias", TensorShape::Intermediate),
    ("output.dense.weight", TensorShape::HiddenByIntermediate),
    ("output.dense.bias", TensorShape::Hidden),
    ("output.LayerNorm.weight", TensorShape::Hidden),
    ("output.LayerNorm.bias", TensorShape::Hidden),
];

/// One transformer layer's tensors by role, each a `[weight, bias]` (or `[scale, shift]`)
/// pair of any representation `T` (flat values, candle parameters).
#[derive(Clone)]
pub struct LayerTensors<T> {
    /// The attention's query projection.
    pub query: [T; 2],
    /// The attention's key projection.
    pub key: [T; 2],
    /// The attention's value projection.
    pub value: [T; 2],
    /// The attention's output projection.
    pub attention_out: [T; 2],
    /// The layer norm after the attention.
    pub attention_norm: [T; 2],
    /// The feed-forward up-projection.
    pub up: [T; 2],
    /// The feed-forward down-projection.
    pub down: [T; 2],
    /// The layer norm after the feed-forward block.
    pub output_norm: [T; 2],
}

impl<T> LayerTensors<T> {
    /// The tensors from a list in [`LAYER_TENSORS`] order; `None` unless there are 16.
    pub fn from_ordered(tensors: impl IntoIterator<Item = T>) -> Option<Self> {
        let mut it = tensors.into_iter();
        let mut pair = || Some([it.next()?, it.next()?]);
        let parts = Self {
            query: pair()?,
            key: pair()?,
            value: pair()?,
            attention_out: pair()?,
            attention_norm: pair()?,
            up: pair()?,
            down: pair()?,
            output_norm: pair()?,
        };
        it.next().is_none().then_some(parts)
    }

    /// The tensors in [`LAYER_TENSORS`] order.
    pub fn ordered(&self) -> impl Iterator<Item = &T> {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_out,
            &self.attention_norm,
            &self.up,
            &self.down,
            &self.output_norm,
        ]
        .into_iter()
        .flatten()
    }
}

/// A layer tensor's shape, in the model's sizes.
#[derive(Clone, Copy, Debug)]
pub enum TensorShape {
    /// `[hidden]`.
    Hidden,
    /// `[intermediate]`.
    Intermediate,
    /// `[hidden, hidden]`.
    HiddenByHidden,
    /// `[intermediate, hidden]`.
    IntermediateByHidden,
    /// `[hidden, intermediate]`.
    HiddenByIntermediate,
}

impl TensorShape {
    /// The dimensions for a model of `hidden` and `intermediate` sizes.
    pub fn dims(self, hidden: usize, intermediate: usize) -> Vec<usize> {
        match self {
            TensorShape::Hidden => vec![hidden],
            TensorShape::Intermediate => vec![intermediate],
            TensorShape::HiddenByHidden => vec![hidden, hidden],
            TensorShape::IntermediateByHidden => vec![intermediate, hidden],
            TensorShape::HiddenByIntermediate => vec![hidden, intermediate],
        }
    }
}

/// Transformer layers packed for the CPU forward pass, with the sizes they share.
pub struct CpuLayers {
    hidden: usize,
    heads: Heads,
    intermediate: usize,
    eps: f32,
    activation: Activation,
    layers: Vec<Layer>,
}

/// A BERT encoder held as plain `f32` buffers for the CPU forward pass.
pub struct CpuBert {
    vocab: usize,
    /// `vocab × hidden`.
    word: Vec<f32>,
    /// `max_positions × hidden`, with token type 0's embedding already added (single
    /// sentences only ever use type 0).
    position_and_type: Vec<f32>,
    embed_norm: Norm,
    stack: CpuLayers,
}

/// Reusable per-thread buffers for [`CpuBert::forward_batch`].
#[derive(Default)]
struct Workspace {
    x: AlignedBuf,
    tmp: AlignedBuf,
    qkv: AlignedBuf,
    ctx: AlignedBuf,
    inter: AlignedBuf,
    edge: AlignedBuf,
    attention: AttentionScratch,
}

fn tensor_vec(vb: &VarBuilder, shape: &[usize], name: &str) -> candle_core::Result<Vec<f32>> {
    vb.get(shape, name)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

impl CpuBert {
    /// Read and pack the weights of a BERT model from `vb` (rooted at the model, i.e.
    /// where `embeddings.word_embeddings.weight` lives). The paths name the files in
    /// error messages.
    pub fn load(
        vb: &VarBuilder,
        config: &Config,
        config_path: &Path,
        weights_path: &Path,
    ) -> Result<Self, EncoderError> {
        let weights = |e: candle_core::Error| EncoderError::Weights {
            path: weights_path.to_path_buf(),
            message: e.to_string(),
        };
        let unsupported = |message: String| EncoderError::Unsupported {
            path: config_path.to_path_buf(),
            message,
        };
        let (h, i) = (config.hidden_size, config.intermediate_size);
        if config.num_attention_heads == 0 || !h.is_multiple_of(config.num_attention_heads) {
            return Err(unsupported(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            )));
        }
        if config.type_vocab_size == 0 {
            return Err(unsupported("type_vocab_size is 0".into()));
        }
        let norm = |vb: VarBuilder| -> candle_core::Result<Norm> {
            Ok(Norm {
                gamma: tensor_vec(&vb, &[h], "weight")?,
                beta: tensor_vec(&vb, &[h], "bias")?,
            })
        };
        let emb = vb.pp("embeddings");
        let word =
            tensor_vec(&emb, &[config.vocab_size, h], "word_embeddings.weight").map_err(weights)?;
        let mut position_and_type = tensor_vec(
            &emb,
            &[config.max_position_embeddings, h],
            "position_embeddings.weight",
        )
        .map_err(weights)?;
        let types = tensor_vec(
            &emb,
            &[config.type_vocab_size, h],
            "token_type_embeddings.weight",
        )
        .map_err(weights)?;
        for row in position_and_type.chunks_exact_mut(h) {
            for (p, &t) in row.iter_mut().zip(&types[..h]) {
                *p += t;
            }
        }
        let embed_norm = norm(emb.pp("LayerNorm")).map_err(weights)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let vb = vb.pp(format!("encoder.layer.{index}"));
            let tensors = LAYER_TENSORS
                .iter()
                .map(|&(name, shape)| tensor_vec(&vb, &shape.dims(h, i), name))
                .collect::<candle_core::Result<Vec<_>>>()
                .map_err(weights)?;
            layers.push(tensors);
        }
        Ok(Self {
            vocab: config.vocab_size,
            word,
            position_and_type,
            embed_norm,
            stack: CpuLayers::from_tensors(config, &layers),
        })
    }

    /// Longest sequence the position table allows.
    pub fn max_positions(&self) -> usize {
        self.position_and_type.len() / self.stack.hidden
    }

    /// Embed every sequence of `tokens` into `out` (`tokens.len() * hidden` floats, in
    /// sequence order): each of `threads` threads takes whole batches from `batches`
    /// (lists of sequence indices) in the order given.
    pub fn encode(
        &self,
        tokens: &Ragged,
        batches: &[Vec<usize>],
        threads: usize,
        out: &mut [f32],
        times: &mut StageTimes,
    ) -> Result<(), EncoderError> {
        let h = self.stack.hidden;
        assert_eq!(out.len(), tokens.len() * h, "output size");
        self.check_tokens(tokens)?;
        let done = for_each_batch(batches, threads, times, |batch, ws, times| {
            let lens: Vec<usize> = batch.iter().map(|&s| tokens.get(s).len()).collect();
            self.embed(tokens, batch, ws, times);
            self.stack.run(&self.stack.layers, &lens, ws, times);
            self.stack.pool(&lens, ws, times)
        });
        scatter_rows(done, batches, h, out);
        Ok(())
    }

    /// The token states of every sequence of `tokens` after the embeddings and the first
    /// `layers` transformer layers (`layers` 0: after the embeddings' layer norm), laid end
    /// to end in sequence order (`hidden` floats per token), run as [`Self::encode`] runs.
    pub fn token_states(
        &self,
        tokens: &Ragged,
        batches: &[Vec<usize>],
        threads: usize,
        layers: usize,
    ) -> Result<Vec<f32>, EncoderError> {
        self.check_tokens(tokens)?;
        let h = self.stack.hidden;
        let layers = &self.stack.layers[..layers.min(self.stack.layers.len())];
        let mut starts = Vec::with_capacity(tokens.len());
        let mut total = 0;
        for seq in 0..tokens.len() {
            starts.push(total);
            total += tokens.get(seq).len();
        }
        let mut times = StageTimes::default();
        let done = for_each_batch(batches, threads, &mut times, |batch, ws, times| {
            let lens: Vec<usize> = batch.iter().map(|&s| tokens.get(s).len()).collect();
            self.embed(tokens, batch, ws, times);
            self.stack.run(layers, &lens, ws, times);
            ws.x.as_slice()[..lens.iter().sum::<usize>() * h].to_vec()
        });
        let mut out = vec![0f32; total * h];
        for (b, states) in done {
            let mut at = 0;
            for &seq in &batches[b] {
                let len = tokens.get(seq).len() * h;
                out[starts[seq] * h..][..len].copy_from_slice(&states[at..at + len]);
                at += len;
            }
        }
        Ok(out)
    }

    /// Every token id is in the vocabulary and no sequence is longer than the positions.
    fn check_tokens(&self, tokens: &Ragged) -> Result<(), EncoderError> {
        for seq in 0..tokens.len() {
            let ids = tokens.get(seq);
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(EncoderError::Tokenize {
                    message: format!(
                        "token id {bad} is outside the model's vocabulary of {} entries: \
                         tokenizer.json and the weights do not belong together",
                        self.vocab
                    ),
                });
            }
            if ids.len() > self.max_positions() {
                return Err(EncoderError::Tokenize {
                    message: format!(
                        "a text has {} tokens but the model has only {} positions",
                        ids.len(),
                        self.max_positions()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The embeddings of one batch (sequences `batch` of `tokens`, laid end to end: word +
    /// position + type 0, then layer norm) into `ws.x`.
    fn embed(&self, tokens: &Ragged, batch: &[usize], ws: &mut Workspace, times: &mut StageTimes) {
        let h = self.stack.hidden;
        let total: usize = batch.iter().map(|&s| tokens.get(s).len()).sum();
        let origin = Instant::now();
        let started = thread_seconds(origin);
        ws.x.ensure(total * h);
        let x = &mut ws.x.as_mut_slice()[..total * h];
        let mut row = 0;
        for &seq in batch {
            for (pos, &id) in tokens.get(seq).iter().enumerate() {
                let dst = &mut x[row * h..(row + 1) * h];
                let word = &self.word[id as usize * h..][..h];
                let extra = &self.position_and_type[pos * h..][..h];
                for ((d, &w), &e) in dst.iter_mut().zip(word).zip(extra) {
                    *d = w + e;
                }
                row += 1;
            }
        }
        let norm = &self.embed_norm;
        kernels::layer_norm(x, None, &norm.gamma, &norm.beta, self.stack.eps);
        times.embeddings += thread_seconds(origin) - started;
    }
}

impl CpuLayers {
    /// Packs the layers `tensors` (each layer's tensors as flat `f32` values, in
    /// [`LAYER_TENSORS`] order) of a model with `config`'s sizes and activation.
    ///
    /// # Panics
    /// If `config`'s hidden size is not a multiple of its heads (checked by
    /// [`CpuBert::load`] and the model folder's reader) or a tensor has the wrong length.
    pub fn from_tensors(config: &Config, tensors: &[Vec<Vec<f32>>]) -> Self {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let norm = |[gamma, beta]: [&[f32]; 2]| Norm {
            gamma: gamma.to_vec(),
            beta: beta.to_vec(),
        };
        let layers = tensors
            .iter()
            .map(|t| {
                let t = LayerTensors::from_ordered(t.iter().map(Vec::as_slice))
                    .unwrap_or_else(|| panic!("a layer has {} tensors, not 16", t.len()));
                // Query, key and value fused into one `3h × h` product.
                let fused = |k: usize| -> Vec<f32> { [t.query[k], t.key[k], t.value[k]].concat() };
                let linear = |[w, b]: [&[f32]; 2], n, k| PackedLinear::new(w, b, n, k);
                Layer {
                    qkv: PackedLinear::new(&fused(0), &fused(1), 3 * h, h),
                    attn_out: linear(t.attention_out, h, h),
                    attn_norm: norm(t.attention_norm),
                    ffn_up: linear(t.up, i, h),
                    ffn_down: linear(t.down, h, i),
                    ffn_norm: norm(t.output_norm),
                }
            })
            .collect();
        Self {
            hidden: h,
            heads: Heads {
                count: config.num_attention_heads,
                dim: h / config.num_attention_heads,
            },
            intermediate: i,
            eps: config.layer_norm_eps as f32,
            activation: match config.hidden_act {
                HiddenAct::Gelu => Activation::GeluErf,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
            layers,
        }
    }

    /// The pooled, normalised vectors (`hidden` floats each, in input order) of sequences
    /// given by their token states `states` (`hidden` floats per token, sequences laid end
    /// to end, of `lens` tokens each) after these layers, with `threads` threads.
    pub fn encode_states(&self, states: &[f32], lens: &[usize], threads: usize) -> Vec<f32> {
        let h = self.hidden;
        let mut starts = Vec::with_capacity(lens.len());
        let mut total = 0;
        for &len in lens {
            starts.push(total);
            total += len;
        }
        assert_eq!(states.len(), total * h, "token states size");
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by_key(|&s| std::cmp::Reverse(lens[s]));
        let batches: Vec<Vec<usize>> = order.chunks(STATES_BATCH).map(<[_]>::to_vec).collect();
        let mut times = StageTimes::default();
        let done = for_each_batch(&batches, threads, &mut times, |batch, ws, times| {
            let batch_lens: Vec<usize> = batch.iter().map(|&s| lens[s]).collect();
            let rows: usize = batch_lens.iter().sum();
            ws.x.ensure(rows * h);
            let x = ws.x.as_mut_slice();
            let mut at = 0;
            for &seq in batch {
                let len = lens[seq] * h;
                x[at..at + len].copy_from_slice(&states[starts[seq] * h..][..len]);
                at += len;
            }
            self.run(&self.layers, &batch_lens, ws, times);
            self.pool(&batch_lens, ws, times)
        });
        let mut out = vec![0f32; lens.len() * h];
        scatter_rows(done, &batches, h, &mut out);
        out
    }

    /// Runs `layers` (some of these) over the token states in `ws.x`: sequences of `lens`
    /// tokens laid end to end. The result is left in `ws.x`.
    fn run(&self, layers: &[Layer], lens: &[usize], ws: &mut Workspace, times: &mut StageTimes) {
        let (h, i) = (self.hidden, self.intermediate);
        let total: usize = lens.iter().sum();
        for buf in [&mut ws.x, &mut ws.tmp, &mut ws.ctx] {
            buf.ensure(total * h);
        }
        ws.qkv.ensure(total * 3 * h);
        ws.inter.ensure(total * i);

        let origin = Instant::now();
        let mut clock = thread_seconds(origin);
        let mut lap = |slot: &mut f64| {
            let now = thread_seconds(origin);
            *slot += now - clock;
            clock = now;
        };

        for layer in layers {
            let x = &ws.x.as_slice()[..total * h];
            let qkv = &mut ws.qkv.as_mut_slice()[..total * 3 * h];
            layer
                .qkv
                .forward(x, total, qkv, &mut ws.edge, Epilogue::Bias);
            lap(&mut times.qkv);

            let ctx = &mut ws.ctx.as_mut_slice()[..total * h];
            let mut start = 0;
            for &len in lens {
                kernels::attention(
                    &qkv[start * 3 * h..(start + len) * 3 * h],
                    &mut ctx[start * h..(start + len) * h],
                    self.heads,
                    &mut ws.attention,
                );
                start += len;
            }
            lap(&mut times.attention);

            let tmp = &mut ws.tmp.as_mut_slice()[..total * h];
            layer
                .attn_out
                .forward(ctx, total, tmp, &mut ws.edge, Epilogue::Bias);
            lap(&mut times.attn_out);
            let norm = &layer.attn_norm;
            kernels::layer_norm(tmp, Some(x), &norm.gamma, &norm.beta, self.eps);
            std::mem::swap(&mut ws.x, &mut ws.tmp);
            lap(&mut times.layer_norm);

            let x = &ws.x.as_slice()[..total * h];
            let inter = &mut ws.inter.as_mut_slice()[..total * i];
            if self.activation == Activation::GeluErf {
                // GELU applied on the registers before the product's store.
                layer
                    .ffn_up
                    .forward(x, total, inter, &mut ws.edge, Epilogue::BiasGelu);
                lap(&mut times.ffn_up);
            } else {
                layer
                    .ffn_up
                    .forward(x, total, inter, &mut ws.edge, Epilogue::Bias);
                lap(&mut times.ffn_up);
                kernels::activate(inter, self.activation);
                lap(&mut times.activation);
            }

            let tmp = &mut ws.tmp.as_mut_slice()[..total * h];
            layer
                .ffn_down
                .forward(inter, total, tmp, &mut ws.edge, Epilogue::Bias);
            lap(&mut times.ffn_down);
            let norm = &layer.ffn_norm;
            kernels::layer_norm(tmp, Some(x), &norm.gamma, &norm.beta, self.eps);
            std::mem::swap(&mut ws.x, &mut ws.tmp);
            lap(&mut times.layer_norm);
        }
    }

    /// One pooled, normalised vector per sequence (of `lens` tokens, laid end to end) of the
    /// token states in `ws.x`.
    fn pool(&self, lens: &[usize], ws: &Workspace, times: &mut StageTimes) -> Vec<f32> {
        let h = self.hidden;
        let origin = Instant::now();
        let started = thread_seconds(origin);
        let x = ws.x.as_slice();
        let mut out = vec![0f32; lens.len() * h];
        let mut start = 0;
        for (&len, dst) in lens.iter().zip(out.chunks_exact_mut(h)) {
            kernels::mean_pool_normalised(&x[start * h..(start + len) * h], dst);
            start += len;
        }
        times.pooling += thread_seconds(origin) - started;
        out
    }
}

/// Sequences per batch in [`CpuLayers::encode_states`].
const STATES_BATCH: usize = 64;

/// Writes each batch's rows (`h` floats per sequence, in the batch's order) to its
/// sequences' places in `out`.
fn scatter_rows(done: Vec<(usize, Vec<f32>)>, batches: &[Vec<usize>], h: usize, out: &mut [f32]) {
    for (b, rows) in done {
        for (&seq, row) in batches[b].iter().zip(rows.chunks_exact(h)) {
            out[seq * h..(seq + 1) * h].copy_from_slice(row);
        }
    }
}

/// Runs `work` on every batch of `batches`, each of `threads` threads taking whole batches
/// from a shared counter in the order given, with its own workspace; returns each batch's
/// index with what `work` made of it, and adds the threads' stage times to `times`.
fn for_each_batch<T: Send>(
    batches: &[Vec<usize>],
    threads: usize,
    times: &mut StageTimes,
    work: impl Fn(&[usize], &mut Workspace, &mut StageTimes) -> T + Sync,
) -> Vec<(usize, T)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new((Vec::new(), StageTimes::default()));
    let worker = || {
        let mut ws = Workspace::default();
        let mut local_times = StageTimes::default();
        let mut done = Vec::new();
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            let Some(batch) = batches.get(b) else { break };
            done.push((b, work(batch, &mut ws, &mut local_times)));
        }
        let mut shared = results.lock().unwrap_or_else(|e| e.into_inner());
        shared.0.extend(done);
        shared.1.add(&local_times);
    };
    let threads = threads.clamp(1, batches.len().max(1));
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(worker);
            }
        });
    }
    let (done, worker_times) = results.into_inner().unwrap_or_else(|e| e.into_inner());
    times.add(&worker_times);
    done
}

/// Throughput of the CPU kernels on MiniLM's shapes, for `docs/benchmarks.md`:
/// `cargo test --release --lib encoder_kernel_throughput -- --ignored --nocapture`.
#[cfg(test)]
mod kernel_bench {
    use std::time::Instant;

    use candle_core::{Device, Tensor};

    use super::super::profile::thread_seconds;
    use super::gemm::{AlignedBuf, Epilogue, PackedLinear};
    use super::kernels::{self, Activation, AttentionScratch, Heads};

    fn values(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (i * 7919 % 1009) as f32 / 1009.0 - 0.5)
            .collect()
    }

    /// CPU seconds per call of `f`, best of 7 rounds of `reps` calls.
    fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
        let origin = Instant::now();
        (0..7)
            .map(|_| {
                let start = thread_seconds(origin);
                for _ in 0..reps {
                    f();
                }
                (thread_seconds(origin) - start) / reps as f64
            })
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    #[ignore = "a benchmark: run explicitly"]
    fn encoder_kernel_throughput() {
        let m = 430; // 32 texts of the MovieLens file, about 13.4 tokens each
        for (name, n, k) in [
            ("qkv", 1152, 384),
            ("attn_out", 384, 384),
            ("ffn_up", 1536, 384),
            ("ffn_down", 384, 1536),
        ] {
            let (x, w, b) = (values(m * k), values(n * k), values(n));
            let packed = PackedLinear::new(&w, &b, n, k);
            let mut y = vec![0f32; m * n];
            let mut pack = AlignedBuf::default();
            let ours = best_of(20, || {
                packed.forward(&x, m, &mut y, &mut pack, Epilogue::Bias)
            });
            let fused = best_of(20, || {
                packed.forward(&x, m, &mut y, &mut pack, Epilogue::BiasGelu)
            });
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).expect("x");
            let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu)
                .expect("w")
                .t()
                .expect("t");
            // candle runs the product on its own thread pool: wall clock there.
            let candle = (0..7)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..20 {
                        xt.matmul(&wt).expect("matmul");
                    }
                    start.elapsed().as_secs_f64() / 20.0
                })
                .fold(f64::INFINITY, f64::min);
            let flop = 2.0 * (m * n * k) as f64;
            eprintln!(
                "{name:>8} {m}x{k} . {k}x{n}: ours {:6.1} GFLOP/s (1 thread; {:6.1} with GELU \
                 epilogue), candle matmul {:6.1} GFLOP/s (its thread pool)",
                flop / ours / 1e9,
                flop / fused / 1e9,
                flop / candle / 1e9
            );
        }
        let heads = Heads { count: 12, dim: 32 };
        let mut scratch = AttentionScratch::default();
        for len in [8, 13, 16, 30, 62] {
            let qkv = values(len * 3 * 384);
            let mut out = vec![0f32; len * 384];
            let t = best_of(200, || {
                kernels::attention(&qkv, &mut out, heads, &mut scratch)
            });
            eprintln!(
                "attention, {len:>2} tokens, 12 heads: {:6.2} us per sequence",
                t * 1e6
            );
        }
        let mut inter: Vec<f32> = values(m * 1536).iter().map(|v| v * 8.0).collect();
        let t = best_of(20, || kernels::activate(&mut inter, Activation::GeluErf));
        eprintln!(
            "gelu (erf): {:.2} ns per element",
            t * 1e9 / (m * 1536) as f64
        );
        let mut x = values(m * 384);
        let r = values(m * 384);
        let (g, b) = (vec![1.0; 384], vec![0.0; 384]);
        let t = best_of(20, || kernels::layer_norm(&mut x, Some(&r), &g, &b, 1e-12));
        eprintln!(
            "residual + layer norm: {:.1} ns per row of 384",
            t * 1e9 / m as f64
        );
    }
}
