//! `recsift bench embed`: sentence-encoder throughput on a file of texts.
//!
//! Encodes every line of the file once after a warm-up on its first 256 lines (as the
//! PyTorch reference script does), and reports texts per second, the time per stage and
//! the process's peak resident memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::model::ModelError;
use crate::model::encoder::{StageTimes, TextEncoder, process_cpu_seconds};

/// Lines encoded before timing starts.
const WARM_UP_TEXTS: usize = 256;

/// What `bench_embed` measured.
#[derive(Clone, Debug, Serialize)]
pub struct EmbedBenchReport {
    /// The model's id.
    pub model: String,
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
    /// Loading or running the encoder failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Encode every line of `texts_file` with the model in `model_dir` on the CPU, with
/// `threads` threads and batches of `batch` texts, and report the throughput.
pub fn bench_embed(
    texts_file: &Path,
    model_dir: &Path,
    threads: usize,
    batch: usize,
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
    let encoder = TextEncoder::load(model_dir, &Device::Cpu)?
        .with_threads(threads)
        .with_batch_size(batch);
    encoder.encode(&texts[..texts.len().min(WARM_UP_TEXTS)])?;
    let cpu_start = process_cpu_seconds();
    let start = Instant::now();
    let (vectors, stages) = encoder.encode_profiled(&texts)?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu_start.zip(process_cpu_seconds()).map(|(a, b)| b - a);
    debug_assert_eq!(vectors.len(), texts.len() * encoder.dim());
    let tokens = texts
        .iter()
        .map(|t| encoder.count_tokens(t))
        .sum::<Result<usize, ModelError>>()?;
    Ok(EmbedBenchReport {
        model: encoder.model_id().to_string(),
        texts: texts.len(),
        tokens,
        threads: encoder.threads(),
        batch: encoder.batch_size(),
        seconds,
        cpu_seconds,
        texts_per_s: texts.len() as f64 / seconds,
        peak_rss_mb: peak_rss_mb(),
        stages,
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
        let err = bench_embed(&missing, dir.path(), 1, 8).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read texts file {}: ", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").expect("write");
        let err = bench_embed(&empty, dir.path(), 1, 8).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!(
                "texts file {} is empty: put one text per line",
                empty.display()
            )
        );
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
        let report = bench_embed(
            &shared.join("ml-latest-small-item-texts.txt"),
            &shared,
            setting("RECSIFT_BENCH_THREADS", 2),
            setting("RECSIFT_BENCH_BATCH", 32),
        )
        .expect("bench");
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }
}
