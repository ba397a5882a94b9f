//! The sentence encoder (`embed` in a pipeline): texts to L2-normalised sentence vectors
//! with a BERT-family model from a sentence-transformers folder.
//!
//! A folder holds `config.json`, `tokenizer.json` and `model.safetensors` (a Hugging Face
//! snapshot of e.g. `sentence-transformers/all-MiniLM-L6-v2`, the default model);
//! [`resolve_model_dir`] finds it from the model's id. A sentence vector is the mean of the
//! model's last hidden states over the text's tokens, L2-normalised, as
//! sentence-transformers computes it; texts longer than the model's maximum sequence
//! length (256 tokens for MiniLM) are truncated.
//!
//! Texts are tokenised, sorted by token count and cut into batches (longest first), so no
//! batch mixes very different lengths; the vectors come back in input order.
//!
//! Two implementations sit behind [`TextEncoder`]:
//! - on the CPU, our own forward pass on packed `f32` weights (`cpu`), several times faster
//!   than a general tensor library on this model size (see `docs/benchmarks.md`);
//! - on any other candle device (`device: cuda` with `--features cuda`),
//!   candle-transformers' `BertModel` (`candle_path`).
//!
//! Both match the Python sentence-transformers reference to 1e-4 (a test checks this on
//! the real MiniLM weights), and each other on a tiny random BERT.
//!
//! ```no_run
//! use std::path::Path;
//! use candle_core::Device;
//! use recsift::model::encoder::{resolve_model_dir, TextEncoder};
//!
//! let dir = resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", None)?;
//! let encoder = TextEncoder::load(&dir, &Device::Cpu)?;
//! let vectors = encoder.encode(&["Toy Story (1995) | Adventure Animation", "Heat (1995)"])?;
//! assert_eq!(vectors.len(), 2 * encoder.dim());
//! # Ok::<(), recsift::model::ModelError>(())
//! ```

mod candle_path;
mod cpu;
mod error;
mod folder;
#[cfg(feature = "hf-download")]
mod hub;
mod lora;
mod profile;
mod resolve;
mod tokens;
mod tuning;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use self::candle_path::CandleBert;
use self::cpu::CpuBert;
pub use self::error::EncoderError;
use self::folder::ModelFolder;
pub use self::folder::{DEFAULT_MAX_TOKENS, REQUIRED_FILES, folder_digest};
pub use self::profile::{StageTimes, process_cpu_seconds};
pub use self::resolve::{MODEL_DIR_VAR, SearchEnv, resolve_in, resolve_model_dir};
pub use self::tuning::{TunableText, TunedLayers};
use crate::model::ModelError;

/// The model used when a pipeline names none.
pub const DEFAULT_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Texts per forward batch unless set with [`TextEncoder::with_batch_size`].
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Which implementation runs the model.
enum Backend {
    /// Our own forward pass (CPU).
    Cpu(CpuBert),
    /// candle-transformers' BERT on a candle device.
    Candle(CandleBert),
}

/// A loaded sentence encoder.
pub struct TextEncoder {
    model_id: String,
    dim: usize,
    max_tokens: usize,
    tokenizer: Tokenizer,
    backend: Backend,
    threads: usize,
    batch_size: usize,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .field("threads", &self.threads)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl TextEncoder {
    /// Load the model in folder `dir` to run on `device`.
    ///
    /// On [`Device::Cpu`] the weights are copied into the CPU forward pass's packed layout
    /// and the file is released; on other devices candle-transformers' `BertModel` holds
    /// them. Threads default to candle's count (`RAYON_NUM_THREADS`, else the physical
    /// cores), the batch size to [`DEFAULT_BATCH_SIZE`], the model id to the folder's
    /// (see [`Self::model_id`]).
    pub fn load(dir: &Path, device: &Device) -> Result<TextEncoder, ModelError> {
        Self::load_on(dir, device, device.is_cpu())
    }

    /// [`Self::load`], choosing the CPU forward pass (`own_cpu_path`) or candle's
    /// `BertModel` explicitly; the tests compare the two on the same device.
    fn load_on(dir: &Path, device: &Device, own_cpu_path: bool) -> Result<Self, ModelError> {
        let folder = ModelFolder::open(dir)?;
        let tokenizer = tokens::load_tokenizer(&folder.tokenizer_path(), folder.max_tokens)?;
        let weights_path = folder.weights_path();
        let weights_error = |e: candle_core::Error| EncoderError::Weights {
            path: weights_path.clone(),
            message: e.to_string(),
        };
        let load_device = if own_cpu_path { &Device::Cpu } else { device };
        // SAFETY: the weights file is memory-mapped; like every reader of safetensors we
        // rely on no other process truncating it while it is mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&weights_path], DType::F32, load_device)
        }
        .map_err(weights_error)?;
        let backend = if own_cpu_path {
            let vb = model_root(vb, &folder);
            Backend::Cpu(CpuBert::load(
                &vb,
                &folder.config,
                &folder.config_path(),
                &weights_path,
            )?)
        } else {
            Backend::Candle(CandleBert::load(vb, &folder.config).map_err(weights_error)?)
        };
        Ok(Self {
            model_id: model_id_from_dir(dir),
            dim: folder.config.hidden_size,
            max_tokens: folder.max_tokens,
            tokenizer,
            backend,
            threads: candle_core::utils::get_num_threads().max(1),
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Use `threads` threads (at least one) for tokenising and for the CPU forward pass.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Run the model on batches of at most `batch_size` texts (at least one).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Replace the model id (e.g. by the id the pipeline named, when the folder was found
    /// under another name).
    pub fn with_model_id(mut self, model_id: impl Into<String>) -> Self {
        self.model_id = model_id.into();
        self
    }

    /// Embed `texts`: `texts.len() * self.dim()` floats, one L2-normalised vector per text,
    /// in input order (whatever the internal length sorting). An empty text gets the
    /// vector of its special tokens alone.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        Ok(self.encode_profiled(texts)?.0)
    }

    /// [`Self::encode`], also returning where the time went.
    pub fn encode_profiled(&self, texts: &[&str]) -> Result<(Vec<f32>, StageTimes), ModelError> {
        let start = Instant::now();
        let mut times = StageTimes::default();
        let tokens = tokens::tokenize(&self.tokenizer, texts, self.threads)?;
        times.tokenize = start.elapsed().as_secs_f64();
        if tokens.is_empty() {
            return Ok((Vec::new(), times));
        }
        let batches = tokens::length_sorted_batches(&tokens, self.batch_size);
        let mut out = vec![0f32; texts.len() * self.dim];
        match &self.backend {
            Backend::Cpu(model) => {
                model.encode(&tokens, &batches, self.threads, &mut out, &mut times)?
            }
            Backend::Candle(model) => {
                model.encode(&tokens, &batches, self.dim, &mut out, &mut times)?
            }
        }
        times.total = start.elapsed().as_secs_f64();
        Ok((out, times))
    }

    /// Length of one sentence vector (the model's hidden size, 384 for MiniLM-L6).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The model's id: `ORG/NAME` when loaded from a Hugging Face cache snapshot
    /// (`…/models--ORG--NAME/snapshots/<rev>`), else the folder's name, unless replaced
    /// with [`Self::with_model_id`].
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Longest token sequence the encoder reads (special tokens included); longer texts
    /// are truncated.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Number of tokens `text` is read as (special tokens included, after truncation).
    pub fn count_tokens(&self, text: &str) -> Result<usize, ModelError> {
        let encoding =
            self.tokenizer
                .encode_fast(text, true)
                .map_err(|e| EncoderError::Tokenize {
                    message: e.to_string(),
                })?;
        Ok(encoding.len())
    }

    /// Threads used on the CPU.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Texts per forward batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

/// `vb` moved to where the BERT tensors live: the root, `bert.`, or `<model_type>.`.
fn model_root<'a>(vb: VarBuilder<'a>, folder: &ModelFolder) -> VarBuilder<'a> {
    const PROBE: &str = "embeddings.word_embeddings.weight";
    if vb.contains_tensor(PROBE) {
        return vb;
    }
    let mut prefixes = vec!["bert".to_string()];
    prefixes.extend(folder.config.model_type.clone());
    for prefix in prefixes {
        if vb.contains_tensor(&format!("{prefix}.{PROBE}")) {
            return vb.pp(prefix);
        }
    }
    // Not found under any prefix: loading reports the missing tensor by name.
    vb
}

/// See [`TextEncoder::model_id`].
fn model_id_from_dir(dir: &Path) -> String {
    let parts: Vec<String> = dir
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let [.., repo, snapshots, _rev] = parts.as_slice()
        && snapshots == "snapshots"
        && let Some(rest) = repo.strip_prefix("models--")
    {
        return rest.replacen("--", "/", 1);
    }
    parts.last().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests;
