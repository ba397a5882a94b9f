//! `recsift bench replay`: the throughput of a whole replay (read, score, select, train,
//! evaluate) of a synthetic log, through exactly the code path of `recsift run`.
//!
//! The pipeline is `pipelines/bench-replay.yaml` (compiled in), with the log path, the
//! windows, the workers and the seed set by `--set` overrides as a user would
//! (`recsift run pipelines/bench-replay.yaml --set data.events=...` runs the same thing).
//! It goes through spec -> plan -> [`driver::run`], which writes its results into a scratch
//! folder; the per-operator times come from the run's `latency.json`. The log is generated
//! with [`synth::generate`] into a folder keyed by the event count and seed under the
//! system's temporary folder (or `--log`), and reused when it is already there, so repeated
//! measurements do not pay for the generation; `events_per_s` covers the replay only.

use crate::error::UserFixable;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::bench::embed::peak_rss_mb;
use crate::driver::{self, RunError, RunOptions};
use crate::plan;
use crate::spec::LoadedSpec;
use crate::synth::{self, SynthConfig, SynthError};

mod cluster;

pub use cluster::ClusterReplay;

/// The pipeline the benchmark runs, as shipped in `pipelines/`.
pub const PIPELINE_FILE: &str = "pipelines/bench-replay.yaml";
const PIPELINE_TEXT: &str = include_str!("../../pipelines/bench-replay.yaml");

/// Operators whose times the report lists, in pipeline order (others follow).
const OPERATOR_ORDER: [&str; 5] = ["io", "score", "select", "train", "evaluate"];

/// How the log is cut into windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchWindow {
    /// Windows of this many events (`--window-events`).
    Events(u64),
    /// Windows of a span of time, written as in a pipeline: `7d`, `12h` (`--window`).
    Duration(String),
}

impl fmt::Display for BenchWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchWindow::Events(n) => write!(f, "{n} events"),
            BenchWindow::Duration(d) => write!(f, "{d}"),
        }
    }
}

/// What to measure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayBenchConfig {
    /// Events of the generated log (`--events`).
    pub events: u64,
    /// Timely worker threads of the engine (`--workers`), per process.
    pub workers: usize,
    /// Processes (`--processes`): above 1, the replay also runs as that many `recsift run`
    /// processes of `workers` threads each, beside one process of `processes * workers`
    /// threads.
    pub processes: usize,
    /// The windows (`--window-events` or `--window`).
    pub window: BenchWindow,
    /// Seed of the log and of the run (`--seed`).
    pub seed: u64,
    /// The log folder (`--log`): reused when it holds a `ratings.parquet`, else generated
    /// there (it must then be new or empty).
    /// `None`: a folder keyed by events and seed under the system's temporary folder.
    pub log: Option<PathBuf>,
    /// Further `key.path=value` overrides of the pipeline (`--set`), applied last.
    pub set: Vec<String>,
}

impl ReplayBenchConfig {
    /// `events` events in 10 windows of equal event counts, one worker, seed 42.
    pub fn new(events: u64) -> Self {
        Self {
            events,
            workers: 1,
            processes: 1,
            window: BenchWindow::Events(events.div_ceil(10).max(1)),
            seed: SynthConfig::DEFAULT_SEED,
            log: None,
            set: Vec::new(),
        }
    }

    /// The log folder used when none is given.
    pub fn default_log_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!(
            "recsift-bench-replay-{}-seed{}",
            self.events, self.seed
        ))
    }

    /// The overrides applied to the pipeline for `log_file`, in order.
    pub fn overrides(&self, log_file: &Path) -> Vec<String> {
        let mut set = vec![
            format!("data.events={}", log_file.display()),
            format!("seed={}", self.seed),
            format!("workers={}", self.workers * self.processes),
        ];
        match &self.window {
            BenchWindow::Events(n) => set.push(format!("protocol.replay.window_events={n}")),
            BenchWindow::Duration(d) => set.push(format!("protocol.replay.window={d}")),
        }
        // The file's own choice of window is replaced, not combined with the override.
        let other = match self.window {
            BenchWindow::Events(_) => "protocol.replay.window=null",
            BenchWindow::Duration(_) => "protocol.replay.window_events=null",
        };
        set.push(other.to_string());
        set.extend(self.set.iter().cloned());
        set
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayBenchError {
    /// A configuration value out of range.
    #[error("--{flag} must be {requirement} (got {value})")]
    Config {
        /// The flag.
        flag: &'static str,
        /// What it must be.
        requirement: &'static str,
        /// The value given.
        value: String,
    },
    /// Generating the log failed.
    #[error("generating the benchmark log: {0}")]
    Generate(#[from] SynthError),
    /// The pipeline with the benchmark's overrides did not validate.
    #[error("the benchmark pipeline {PIPELINE_FILE} with its overrides: {0}")]
    Pipeline(String),
    /// The replay failed.
    #[error("the replay failed: {0}")]
    Run(#[from] RunError),
    /// The run's results could not be read back.
    #[error("cannot read {path}: {message}")]
    Results {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl UserFixable for ReplayBenchError {
    /// Whether the user can fix this (exit code 2) rather than an internal failure (1).
    fn is_user_error(&self) -> bool {
        match self {
            ReplayBenchError::Config { .. } | ReplayBenchError::Pipeline(_) => true,
            ReplayBenchError::Generate(e) => e.is_user_error(),
            ReplayBenchError::Run(e) => e.is_user_error(),
            ReplayBenchError::Results { .. } => false,
        }
    }
}

/// Time spent in one operator over the whole replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OperatorTime {
    /// Total wall time, seconds.
    pub seconds: f64,
    /// Share of the replay's wall time.
    pub share: f64,
    /// Timed calls (about one per window).
    pub count: u64,
    /// Median call, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile call, milliseconds.
    pub p99_ms: f64,
}

/// What the benchmark measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayBenchReport {
    /// The configuration.
    pub config: ReplayBenchConfig,
    /// The log replayed.
    pub log: PathBuf,
    /// Events the generator wrote in this run; `None` when an existing log was reused.
    pub events_generated: Option<u64>,
    /// Seconds the generation took (not part of `events_per_s`); `None` when reused.
    pub generation_s: Option<f64>,
    /// Events the replay read (the sum of its windows' events).
    pub events: u64,
    /// Windows replayed.
    pub windows: u32,
    /// Wall time of the replay (`driver::run`: read, score, select, train, evaluate and
    /// writing the results), seconds.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_s: f64,
    /// Time per operator, from the run's `latency.json`.
    pub operators: BTreeMap<String, OperatorTime>,
    /// Scores the engine computed over the replay (inserts and re-scores).
    pub rescored: u64,
    /// Labels known at the end.
    pub labelled: u64,
    /// Labels the strategy bought.
    pub selected: u64,
    /// Cumulative prequential RMSE at the end (NaN when not evaluated).
    pub cumulative_rmse: f64,
    /// Peak resident memory of the process (`VmHWM`), MiB; includes the generation when
    /// it ran in this process.
    pub peak_rss_mb: Option<f64>,
    /// The equivalent `recsift run` command.
    pub command: String,
    /// The same replay on several processes (`--processes`), when asked for.
    pub cluster: Option<ClusterReplay>,
}

/// One operator in `latency.json` (the fields the report uses).
#[derive(Debug, Deserialize)]
struct LatencyEntry {
    count: u64,
    p50_ms: f64,
    p99_ms: f64,
    total_ms: f64,
}

#[derive(Debug, Deserialize)]
struct LatencyFileView {
    operators: BTreeMap<String, LatencyEntry>,
}

/// Generates (or reuses) the log, replays it and reports.
pub fn bench_replay(config: ReplayBenchConfig) -> Result<ReplayBenchReport, ReplayBenchError> {
    check_config(&config)?;
    let log_dir = config
        .log
        .clone()
        .unwrap_or_else(|| config.default_log_dir());
    let (events_generated, generation_s) = ensure_log(&config, &log_dir)?;
    let log_file = std::path::absolute(log_dir.join(synth::EVENTS_FILE)).map_err(|e| {
        ReplayBenchError::Results {
            path: log_dir.clone(),
            message: e.to_string(),
        }
    })?;

    let overrides = config.overrides(&log_file);
    let loaded = LoadedSpec::from_text(Path::new(PIPELINE_FILE), PIPELINE_TEXT, &overrides)
        .map_err(|e| ReplayBenchError::Pipeline(e.to_string()))?;
    let plan = plan::build(&loaded).map_err(|e| ReplayBenchError::Pipeline(e.to_string()))?;

    let out_dir =
        std::env::temp_dir().join(format!("recsift-bench-replay-run-{}", std::process::id()));
    let options = RunOptions {
        out_dir: out_dir.clone(),
        force: true,
        progress: false,
        resume: false,
    };
    let started = Instant::now();
    let summary = driver::run(&plan, &options);
    let seconds = started.elapsed().as_secs_f64();
    let latency = summary.as_ref().ok().map(|_| read_latency(&out_dir));
    let selections = std::fs::read(out_dir.join("selections.parquet"));
    // The results are scratch: the figures are in the report.
    let _ = std::fs::remove_dir_all(&out_dir);
    let summary = summary?;
    let latency = latency.expect("read after a successful run")?;
    let rescored = summary.history.iter().map(|r| r.rescored).sum();

    let events: u64 = summary
        .history
        .iter()
        .filter_map(|r| r.metrics.get("events").copied().flatten())
        .map(|e| e as u64)
        .sum();
    let operators = latency
        .operators
        .into_iter()
        .map(|(name, e)| {
            let time = OperatorTime {
                seconds: e.total_ms / 1e3,
                share: e.total_ms / 1e3 / seconds.max(1e-9),
                count: e.count,
                p50_ms: e.p50_ms,
                p99_ms: e.p99_ms,
            };
            (name, time)
        })
        .collect();
    let mut command = format!("recsift run {PIPELINE_FILE}");
    for o in &overrides {
        command.push_str(&format!(" --set {o}"));
    }
    let cluster = if config.processes > 1 {
        let failed = |path: PathBuf, message: String| ReplayBenchError::Results { path, message };
        let exe = std::env::current_exe()
            .map_err(|e| failed("recsift".into(), format!("cannot find this binary: {e}")))?;
        let selections =
            selections.map_err(|e| failed(out_dir.join("selections.parquet"), e.to_string()))?;
        let baseline = cluster::Baseline {
            selections: &selections,
            rescored,
            events,
        };
        let scratch = out_dir.with_extension("cluster");
        let run = cluster::replay_on_processes(
            &exe,
            &overrides,
            config.processes,
            config.workers,
            &scratch,
            &baseline,
        );
        let _ = std::fs::remove_dir_all(&scratch);
        Some(run?)
    } else {
        None
    };
    Ok(ReplayBenchReport {
        log: log_dir,
        events_generated,
        generation_s,
        events,
        windows: summary.history.len() as u32,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        operators,
        rescored,
        labelled: summary.history.last().map_or(0, |r| r.labelled),
        selected: summary.selected,
        cumulative_rmse: summary
            .metrics
            .get("cumulative_rmse")
            .copied()
            .unwrap_or(f64::NAN),
        peak_rss_mb: peak_rss_mb(),
        command,
        cluster,
        config,
    })
}

fn check_config(config: &ReplayBenchConfig) -> Result<(), ReplayBenchError> {
    let bad = |flag, requirement, value: String| {
        Err(ReplayBenchError::Config {
            flag,
            requirement,
            value,
        })
    };
    if config.events == 0 {
        return bad("events", "at least 1", config.events.to_string());
    }
    if config.workers == 0 {
        return bad("workers", "at least 1", config.workers.to_string());
    }
    if config.processes == 0 {
        return bad("processes", "at least 1", config.processes.to_string());
    }
    if config.window == BenchWindow::Events(0) {
        return bad("window-events", "at least 1", "0".into());
    }
    Ok(())
}

/// Generates the log into `dir` unless it already holds one (`ratings.parquet`, which
/// `recsift gen` writes atomically); the events generated and the seconds it took, or
/// `None`s when reused. A folder named by `--log` must be new or empty, as for `recsift gen
/// --out` without `--force`; the default folder is the benchmark's own and is written over
/// (what an interrupted generation left there).
fn ensure_log(
    config: &ReplayBenchConfig,
    dir: &Path,
) -> Result<(Option<u64>, Option<f64>), ReplayBenchError> {
    if dir.join(synth::EVENTS_FILE).is_file() {
        return Ok((None, None));
    }
    let synth = SynthConfig {
        seed: config.seed,
        ..SynthConfig::new(config.events)
    };
    let own_folder = config.log.is_none();
    let summary = synth::generate(&synth, dir, own_folder)?;
    Ok((Some(summary.events), Some(summary.seconds)))
}

fn read_latency(out_dir: &Path) -> Result<LatencyFileView, ReplayBenchError> {
    let path = out_dir.join("latency.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ReplayBenchError::Results {
        path: path.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ReplayBenchError::Results {
        path,
        message: e.to_string(),
    })
}

impl fmt::Display for ReplayBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "replay: {} events in {} windows ({} each), engine on {} worker(s), seed {}",
            self.events,
            self.windows,
            c.window,
            c.workers * c.processes,
            c.seed
        )?;
        match (self.events_generated, self.generation_s) {
            (Some(n), Some(s)) => writeln!(
                f,
                "log {} (generated: {n} events in {s:.1} s, not counted)",
                self.log.display()
            )?,
            _ => writeln!(f, "log {} (reused)", self.log.display())?,
        }
        writeln!(
            f,
            "replay {:.2} s: {:.0} events/s; {} scores computed ({:.1} per event), {} labels \
             ({} bought), cumulative RMSE {:.4}",
            self.seconds,
            self.events_per_s,
            self.rescored,
            self.rescored as f64 / self.events.max(1) as f64,
            self.labelled,
            self.selected,
            self.cumulative_rmse
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| operator | total | share | calls | p50 | p99 |\n|---|---|---|---|---|---|"
        )?;
        let ordered = OPERATOR_ORDER
            .iter()
            .filter_map(|name| self.operators.get_key_value(*name))
            .chain(
                self.operators
                    .iter()
                    .filter(|(name, _)| !OPERATOR_ORDER.contains(&name.as_str())),
            );
        for (name, t) in ordered {
            writeln!(
                f,
                "| {name} | {:.2} s | {:.1}% | {} | {:.2} ms | {:.2} ms |",
                t.seconds,
                t.share * 100.0,
                t.count,
                t.p50_ms,
                t.p99_ms
            )?;
        }
        let accounted: f64 = self.operators.values().map(|t| t.seconds).sum();
        writeln!(
            f,
            "| other (setup, results) | {:.2} s | {:.1}% | | | |",
            (self.seconds - accounted).max(0.0),
            (self.seconds - accounted).max(0.0) / self.seconds.max(1e-9) * 100.0
        )?;
        writeln!(f)?;
        let peak = self
            .peak_rss_mb
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "n/a".into());
        writeln!(f, "peak memory {peak}")?;
        write!(f, "same run: {}", self.command)?;
        if let Some(cluster) = &self.cluster {
            write!(
                f,
                "\n\n{} processes x {} worker(s) on 127.0.0.1: {:.2} s, {:.0} events/s \
                 ({:.2}x the one process's events/s; {}); the processes' wall time includes \
                 starting and connecting them\nprocess 0: {}",
                cluster.processes,
                cluster.workers,
                cluster.seconds,
                cluster.events_per_s,
                cluster.events_per_s / self.events_per_s.max(1e-9),
                if cluster.same_results {
                    "same selections and scores"
                } else {
                    "DIFFERENT results: please report this"
                },
                cluster.command
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_replay_reports_consistent_counts() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = ReplayBenchConfig {
            log: Some(dir.path().join("log")),
            window: BenchWindow::Events(4_000),
            ..ReplayBenchConfig::new(20_000)
        };
        let report = bench_replay(config.clone()).expect("bench");
        assert_eq!(report.events_generated, Some(20_000));
        assert_eq!(report.events, 20_000, "every generated event is replayed");
        assert_eq!(report.windows, 5);
        assert!(report.events_per_s.is_finite() && report.events_per_s > 0.0);
        // The replay read, scored, selected and trained.
        for operator in ["io", "score", "select", "train", "evaluate"] {
            let t = &report.operators[operator];
            assert!(t.count > 0 && t.seconds > 0.0, "{operator}: {t:?}");
        }
        let accounted: f64 = report.operators.values().map(|t| t.seconds).sum();
        assert!(
            accounted <= report.seconds,
            "{accounted} > {}",
            report.seconds
        );
        assert!(report.rescored >= report.events - report.labelled);
        // Warm-up window fully labelled (4 000) plus budget 1 000 in each later window
        // (the free labels come on top).
        assert_eq!(report.selected, 4 * 1_000);
        assert!(report.labelled > 4_000 + report.selected);

        // A second run reuses the log.
        let again = bench_replay(config).expect("bench again");
        assert_eq!((again.events_generated, again.generation_s), (None, None));
        assert_eq!(again.events, 20_000);
        assert_eq!(again.rescored, report.rescored, "same seed, same work");
    }

    #[test]
    fn a_foreign_non_empty_log_folder_is_not_written_over() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
        let err = bench_replay(ReplayBenchConfig {
            log: Some(dir.path().to_path_buf()),
            ..ReplayBenchConfig::new(1_000)
        })
        .expect_err("non-empty folder");
        assert!(matches!(err, ReplayBenchError::Generate(_)), "{err}");
        assert!(err.is_user_error());
        assert!(!dir.path().join(synth::EVENTS_FILE).exists());
        assert_eq!(
            std::fs::read(dir.path().join("notes.txt")).expect("read"),
            b"mine"
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        let err = bench_replay(ReplayBenchConfig {
            workers: 0,
            ..ReplayBenchConfig::new(10)
        })
        .expect_err("0 workers");
        assert_eq!(err.to_string(), "--workers must be at least 1 (got 0)");
        let err = bench_replay(ReplayBenchConfig {
            processes: 0,
            ..ReplayBenchConfig::new(10)
        })
        .expect_err("0 processes");
        assert_eq!(err.to_string(), "--processes must be at least 1 (got 0)");
        let err = bench_replay(ReplayBenchConfig::new(0)).expect_err("0 events");
        assert_eq!(err.to_string(), "--events must be at least 1 (got 0)");
    }

    #[test]
    fn overrides_point_the_pipeline_at_the_log() {
        let config = ReplayBenchConfig {
            window: BenchWindow::Duration("7d".into()),
            workers: 2,
            set: vec!["select.budget=10".into()],
            ..ReplayBenchConfig::new(1_000)
        };
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("ratings.parquet");
        std::fs::write(&log, b"").expect("write");
        let set = config.overrides(&log);
        assert_eq!(
            set,
            [
                format!("data.events={}", log.display()).as_str(),
                "seed=42",
                "workers=2",
                "protocol.replay.window=7d",
                "protocol.replay.window_events=null",
                "select.budget=10",
            ]
        );
        let loaded =
            LoadedSpec::from_text(Path::new(PIPELINE_FILE), PIPELINE_TEXT, &set).expect("loads");
        let plan = plan::build(&loaded).expect("plans");
        assert_eq!(plan.workers, 2);
        assert_eq!(plan.protocol.event_log().map(|e| e.path.clone()), Some(log));
    }
}
