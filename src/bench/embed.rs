//! `recsift bench embed`: sentence-encoder throughput on a file of texts, on the CPU or a
//! GPU, and how far its vectors are from reference vectors and from the CPU's.
//!
//! Encodes every line of the file once after a warm-up on its first 256 lines (as the
//! PyTorch reference script does), and reports texts per second, the time per stage and
//! the process's peak resident memory. On request it also encodes the sentences of a
//! reference file (`reference_embeddings.json`: `sentences` and their `embeddings`, as
//! written by sentence-transformers) and, on a GPU, the same texts on the CPU, and reports
//! the largest absolute difference between the vectors (see [`VectorDiff`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::model::encoder::{StageTimes, TextEncoder, process_cpu_seconds};
use crate::model::{ModelError, candle_device};
use crate::plan::params::DeviceChoice;

/// Lines encoded before timing starts.
const WARM_UP_TEXTS: usize = 256;

/// How `bench_embed` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedBenchOptions {
    /// Where the encoder runs (`cpu` uses recsift's own forward pass, `cuda:N`
    /// candle-transformers' `BertModel` on that GPU).
    pub device: DeviceChoice,
    /// Threads for tokenising (and for the forward pass on the CPU).
    pub threads: usize,
    /// Texts per forward batch.
    pub batch: usize,
    /// A `reference_embeddings.json` whose sentences are encoded and compared with its
    /// vectors.
    pub reference: Option<PathBuf>,
    /// Also encode the texts on the CPU and compare (only meaningful on a GPU).
    pub compare_cpu: bool,
}

impl Default for EmbedBenchOptions {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Cpu,
            threads: 2,
            batch: 32,
            reference: None,
            compare_cpu: false,
        }
    }
}

/// How far one set of sentence vectors is from another, vector by vector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct VectorDiff {
    /// Vectors compared.
    pub vectors: usize,
    /// Largest absolute difference of any component.
    pub max_abs_diff: f32,
    /// Smallest cosine similarity between a vector and its counterpart.
    pub min_cosine: f32,
}

/// What `bench_embed` measured.
#[derive(Clone, Debug, Serialize)]
pub struct EmbedBenchReport {
    /// The model's id.
    pub model: String,
    /// Where the encoder ran (`cpu`, `cuda:N`).
    pub device: String,
    /// Texts encoded (lines of the file).
    pub texts: usize,
    /// Tokens those texts came to (special tokens included, after truncation).
    pub tokens: usize,
    /// Threads used.
    pub threads: usize,
    /// Texts per forward batch.
    pub batch: usize,
    /// Wall-clock seconds of the timed encoding.
    pub seconds: f64,
    /// CPU seconds the process used during the timed encoding (all threads; `None` where
    /// the platform does not say). Well below `threads × seconds` means other processes
    /// were competing for the cores.
    pub cpu_seconds: Option<f64>,
    /// `texts / seconds`.
    pub texts_per_s: f64,
    /// Peak resident memory of the process (`VmHWM`), in MiB; `None` where
    /// `/proc/self/status` does not exist.
    pub peak_rss_mb: Option<f64>,
    /// Where the time went (see [`StageTimes`]).
    pub stages: StageTimes,
    /// The encoder's vectors of the reference file's sentences against the file's own
    /// (when a reference file was given).
    pub reference: Option<VectorDiff>,
    /// The vectors of the texts against the CPU forward pass's (with `compare_cpu`).
    pub cpu: Option<VectorDiff>,
}

/// Errors of `bench embed`.
#[derive(Debug, thiserror::Error)]
pub enum EmbedBenchError {
    /// The texts file could not be read.
    #[error("cannot read texts file {}: {source}", path.display())]
    Texts {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has no lines.
    #[error("texts file {} is empty: put one text per line", path.display())]
    NoTexts {
        /// The file.
        path: PathBuf,
    },
    /// The reference file could not be read or is not a reference file.
    #[error(
        "reference file {}: {message}; expected JSON with `sentences` (strings) and \
         `embeddings` (one array of numbers per sentence), as \
         reference_embeddings.json beside the model",
        path.display()
    )]
    Reference {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// Loading or running the encoder failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The part of a reference file that is read.
#[derive(Debug, Deserialize)]
struct ReferenceFile {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

/// The sentences of reference file `path` and their vectors, concatenated (`dim` floats
/// each).
fn read_reference(path: &Path, dim: usize) -> Result<(Vec<String>, Vec<f32>), EmbedBenchError> {
    let fail = |message: String| EmbedBenchError::Reference {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let file: ReferenceFile = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if file.sentences.len() != file.embeddings.len() {
        return Err(fail(format!(
            "{} sentences but {} embeddings",
            file.sentences.len(),
            file.embeddings.len()
        )));
    }
    if file.sentences.is_empty() {
        return Err(fail("no sentences".into()));
    }
    let mut vectors = Vec::with_capacity(file.embeddings.len() * dim);
    for (i, row) in file.embeddings.iter().enumerate() {
        if row.len() != dim {
            return Err(fail(format!(
                "embedding {i} has {} numbers but the model's vectors have {dim}",
                row.len()
            )));
        }
        vectors.extend_from_slice(row);
    }
    Ok((file.sentences, vectors))
}

/// Compare `a` and `b`, each a run of vectors of `dim` floats, vector by vector.
pub fn vector_diff(a: &[f32], b: &[f32], dim: usize) -> VectorDiff {
    assert_eq!(
        a.len(),
        b.len(),
        "vector_diff needs runs of the same length"
    );
    assert!(
        dim > 0 && a.len().is_multiple_of(dim),
        "vector_diff needs whole vectors"
    );
    let mut max_abs_diff = 0f32;
    let mut min_cosine = f32::INFINITY;
    for (x, y) in a.chunks_exact(dim).zip(b.chunks_exact(dim)) {
        let (mut dot, mut xx, mut yy) = (0f64, 0f64, 0f64);
        for (&p, &q) in x.iter().zip(y) {
            max_abs_diff = max_abs_diff.max((p - q).abs());
            dot += f64::from(p) * f64::from(q);
            xx += f64::from(p) * f64::from(p);
            yy += f64::from(q) * f64::from(q);
        }
        let denominator = (xx * yy).sqrt();
        let cosine = if denominator > 0.0 {
            dot / denominator
        } else {
            0.0
        };
        min_cosine = min_cosine.min(cosine as f32);
    }
    VectorDiff {
        vectors: a.len() / dim,
        max_abs_diff,
        min_cosine: if min_cosine.is_finite() {
            min_cosine
        } else {
            1.0
        },
    }
}

/// Encode every line of `texts_file` with the model in `model_dir` on `options.device`,
/// with batches of `options.batch` texts, and report the throughput (and the comparisons
/// the options ask for).
pub fn bench_embed(
    texts_file: &Path,
    model_dir: &Path,
    options: &EmbedBenchOptions,
) -> Result<EmbedBenchReport, EmbedBenchError> {
    let content = std::fs::read_to_string(texts_file).map_err(|source| EmbedBenchError::Texts {
        path: texts_file.to_path_buf(),
        source,
    })?;
    let texts: Vec<&str> = content.lines().collect();
    if texts.is_empty() {
        return Err(EmbedBenchError::NoTexts {
            path: texts_file.to_path_buf(),
        });
    }
    bench_embed_texts(&texts, model_dir, options)
}

/// [`bench_embed`] on `texts`.
pub fn bench_embed_texts(
    texts: &[&str],
    model_dir: &Path,
    options: &EmbedBenchOptions,
) -> Result<EmbedBenchReport, EmbedBenchError> {
    let device = candle_device(options.device)?;
    let encoder = TextEncoder::load(model_dir, &device)?
        .with_threads(options.threads)
        .with_batch_size(options.batch);
    encoder.encode(&texts[..texts.len().min(WARM_UP_TEXTS)])?;
    let cpu_start = process_cpu_seconds();
    let start = Instant::now();
    let (vectors, stages) = encoder.encode_profiled(texts)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu_start.zip(process_cpu_seconds()).map(|(a, b)| b - a);
    debug_assert_eq!(vectors.len(), texts.len() * encoder.dim());
    let tokens = texts
        .iter()
        .map(|t| encoder.count_tokens(t))
        .sum::<Result<usize, ModelError>>()?;
    let reference = match &options.reference {
        Some(path) => {
            let (sentences, expected) = read_reference(path, encoder.dim())?;
            let sentences: Vec<&str> = sentences.iter().map(String::as_str).collect();
            let got = encoder.encode(&sentences)?;
            Some(vector_diff(&got, &expected, encoder.dim()))
        }
        None => None,
    };
    let cpu = if options.compare_cpu {
        let on_cpu = TextEncoder::load(model_dir, &candle_core::Device::Cpu)?
            .with_threads(options.threads)
            .with_batch_size(options.batch);
        Some(vector_diff(&vectors, &on_cpu.encode(texts)?, encoder.dim()))
    } else {
        None
    };
    Ok(EmbedBenchReport {
        model: encoder.model_id().to_string(),
        device: options.device.to_string(),
        texts: texts.len(),
        tokens,
        threads: encoder.threads(),
        batch: encoder.batch_size(),
        seconds,
        cpu_seconds,
        texts_per_s: texts.len() as f64 / seconds,
        peak_rss_mb: peak_rss_mb(),
        stages,
        reference,
        cpu,
    })
}

/// `VmHWM` from `/proc/self/status`, in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in KiB.
fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{Fixture, find};

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\trecsift\nVmPeak:\t  999 kB\nVmHWM:\t  204800 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(204_800));
        assert_eq!(parse_vm_hwm_kib("VmRSS:\t1 kB\n"), None);
        assert_eq!(parse_vm_hwm_kib("VmHWM:\t12 MB\n"), None);
        #[cfg(target_os = "linux")]
        assert!(peak_rss_mb().is_some_and(|mb| mb > 0.0));
    }

    #[test]
    fn missing_and_empty_text_files_are_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("nope.txt");
        let options = EmbedBenchOptions::default();
        let err = bench_embed(&missing, dir.path(), &options).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read texts file {}: ", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").expect("write");
        let err = bench_embed(&empty, dir.path(), &options).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!(
                "texts file {} is empty: put one text per line",
                empty.display()
            )
        );
    }

    #[test]
    fn vector_diff_reports_the_largest_component_gap_and_the_smallest_cosine() {
        // Vector 1 is equal, vector 2 is orthogonal to its counterpart, vector 3 is off
        // by 0.5 in one component: cos = (9 + 18) / (5 * sqrt(9 + 20.25)).
        let a = [1.0, 0.0, 0.0, 1.0, 3.0, 4.0];
        let b = [1.0, 0.0, 1.0, 0.0, 3.0, 4.5];
        let diff = vector_diff(&a, &b, 2);
        assert_eq!(diff.vectors, 3);
        assert_eq!(diff.max_abs_diff, 1.0);
        assert_eq!(diff.min_cosine, 0.0);
        let diff = vector_diff(&a[4..], &b[4..], 2);
        assert_eq!(diff.max_abs_diff, 0.5);
        let expected = 27.0 / (5.0 * 29.25f64.sqrt());
        assert!(
            (f64::from(diff.min_cosine) - expected).abs() < 1e-6,
            "{diff:?}"
        );
        assert_eq!(vector_diff(&[], &[], 4).min_cosine, 1.0);
    }

    #[test]
    fn reference_files_are_checked_against_the_model_dimension() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ref.json");
        let shown = path.display().to_string();
        let hint = "; expected JSON with `sentences` (strings) and `embeddings` (one array of \
                    numbers per sentence), as reference_embeddings.json beside the model";
        let read = |json: &str| {
            std::fs::write(&path, json).expect("write");
            read_reference(&path, 2)
        };
        let (sentences, vectors) =
            read(r#"{"sentences": ["a", "b"], "embeddings": [[1, 2], [3, 4.5]], "model": "m"}"#)
                .expect("valid");
        assert_eq!(sentences, ["a", "b"]);
        assert_eq!(vectors, [1.0, 2.0, 3.0, 4.5]);
        let err = read(r#"{"sentences": ["a"], "embeddings": [[1, 2], [3, 4]]}"#).expect_err("n");
        assert_eq!(
            err.to_string(),
            format!("reference file {shown}: 1 sentences but 2 embeddings{hint}")
        );
        let err = read(r#"{"sentences": ["a"], "embeddings": [[1, 2, 3]]}"#).expect_err("dim");
        assert_eq!(
            err.to_string(),
            format!(
                "reference file {shown}: embedding 0 has 3 numbers but the model's vectors \
                 have 2{hint}"
            )
        );
        let err = read(r#"{"sentences": [], "embeddings": []}"#).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!("reference file {shown}: no sentences{hint}")
        );
        let err = read(r#"{"sentences": ["a"]}"#).expect_err("no embeddings");
        assert!(
            err.to_string().starts_with(&format!(
                "reference file {shown}: missing field `embeddings`"
            )),
            "{err}"
        );
    }

    /// The CPU forward pass against sentence-transformers' reference vectors, through the
    /// same code as `bench embed --check-reference` (skipped without the real weights).
    #[test]
    fn bench_reports_minilm_within_1e4_of_the_reference_vectors() {
        let test = "bench_reports_minilm_within_1e4_of_the_reference_vectors";
        let (Some(model), Some(reference)) = (
            find(Fixture::MiniLm, test),
            find(Fixture::MiniLmReference, test),
        ) else {
            return;
        };
        let dir = tempfile::tempdir().expect("tmp");
        let texts = dir.path().join("texts.txt");
        std::fs::write(
            &texts,
            "Toy Story (1995)\nHeat (1995) | Action Crime Thriller\n",
        )
        .expect("write");
        let options = EmbedBenchOptions {
            reference: Some(reference),
            ..EmbedBenchOptions::default()
        };
        let report = bench_embed(&texts, &model, &options).expect("bench");
        assert_eq!(report.device, "cpu");
        assert_eq!(report.texts, 2);
        assert!(report.cpu.is_none());
        let reference = report.reference.expect("reference compared");
        assert_eq!(reference.vectors, 32);
        assert!(reference.max_abs_diff < 1e-4, "{reference:?}");
        assert!(reference.min_cosine > 0.9999, "{reference:?}");
    }

    /// The throughput measurement on the shared MiniLM weights and MovieLens item texts:
    /// `cargo test --release bench_embed_minilm -- --ignored --nocapture`
    /// (`RECSIFT_BENCH_THREADS`, `RECSIFT_BENCH_BATCH` override 2 and 32).
    #[test]
    #[ignore = "a benchmark: run explicitly"]
    fn bench_embed_minilm() {
        let shared =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/all-MiniLM-L6-v2");
        let setting = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let options = EmbedBenchOptions {
            threads: setting("RECSIFT_BENCH_THREADS", 2),
            batch: setting("RECSIFT_BENCH_BATCH", 32),
            ..EmbedBenchOptions::default()
        };
        let report = bench_embed(
            &shared.join("ml-latest-small-item-texts.txt"),
            &shared,
            &options,
        )
        .expect("bench");
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }
}
