//! `recsift bench replay --processes N`: the same replay as N `recsift run` processes on
//! 127.0.0.1 (timely's cluster mode, `docs/cluster.md`), timed beside one process with as
//! many threads in all, to show what the network layer costs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use super::{PIPELINE_FILE, PIPELINE_TEXT, ReplayBenchError};
use crate::study::run::read_rounds;

/// The replay on several processes, and whether it gave the one-process results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterReplay {
    /// Processes started.
    pub processes: usize,
    /// Worker threads per process.
    pub workers: usize,
    /// Wall time from starting the processes to the last one's exit, seconds (includes
    /// starting the binaries and connecting them, which the in-process baseline does not pay).
    pub seconds: f64,
    /// Events replayed per second of that wall time.
    pub events_per_s: f64,
    /// Whether `selections.parquet` and the scores computed equal the one-process run's.
    pub same_results: bool,
    /// Process 0's command (the others differ in `--process`).
    pub command: String,
}

/// What the one-process run produced, to compare with.
pub(super) struct Baseline<'a> {
    /// Its `selections.parquet` bytes.
    pub selections: &'a [u8],
    /// Scores it computed over the replay.
    pub rescored: u64,
    /// Events it replayed.
    pub events: u64,
}

/// Runs the benchmark pipeline with `overrides` as `processes` child processes of `recsift`
/// (`exe`) with `workers` threads each, in `scratch`.
pub(super) fn replay_on_processes(
    exe: &Path,
    overrides: &[String],
    processes: usize,
    workers: usize,
    scratch: &Path,
    baseline: &Baseline<'_>,
) -> Result<ClusterReplay, ReplayBenchError> {
    let failed = |message: String| ReplayBenchError::Results {
        path: scratch.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(scratch).map_err(|e| failed(e.to_string()))?;
    let pipeline = scratch.join(Path::new(PIPELINE_FILE).file_name().expect("a file name"));
    std::fs::write(&pipeline, PIPELINE_TEXT).map_err(|e| failed(e.to_string()))?;
    let hostfile = scratch.join("hosts");
    std::fs::write(&hostfile, free_addresses(processes)?.join("\n"))
        .map_err(|e| failed(e.to_string()))?;
    let out = scratch.join("results");

    let args = |process: usize| -> Vec<String> {
        let mut args = vec!["run".to_string(), pipeline.display().to_string()];
        for o in overrides {
            args.extend(["--set".to_string(), o.clone()]);
        }
        args.extend(
            [
                "--workers",
                &workers.to_string(),
                "--processes",
                &processes.to_string(),
                "--process",
                &process.to_string(),
                "--hostfile",
                &hostfile.display().to_string(),
                "--out",
                &out.display().to_string(),
                "--force",
                "-q",
            ]
            .map(String::from),
        );
        args
    };
    let started = Instant::now();
    let children = (0..processes)
        .map(|process| {
            Command::new(exe)
                .args(args(process))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| failed(format!("cannot start {}: {e}", exe.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut errors = Vec::new();
    for (process, child) in children.into_iter().enumerate() {
        let output = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            errors.push(format!(
                "process {process}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if !errors.is_empty() {
        return Err(failed(errors.join("; ")));
    }

    let selections = std::fs::read(out.join("selections.parquet"))
        .map_err(|e| failed(format!("selections.parquet: {e}")))?;
    let rescored: u64 = read_rounds(&out)
        .map_err(|e| failed(e.to_string()))?
        .iter()
        .map(|r| r.rescored)
        .sum();
    Ok(ClusterReplay {
        processes,
        workers,
        seconds,
        events_per_s: baseline.events as f64 / seconds.max(1e-9),
        same_results: selections == baseline.selections && rescored == baseline.rescored,
        command: format!("recsift {}", args(0).join(" ")),
    })
}

/// `processes` addresses on 127.0.0.1 at ports that were free a moment ago.
fn free_addresses(processes: usize) -> Result<Vec<String>, ReplayBenchError> {
    let listeners = (0..processes)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|ls| {
            ls.iter()
                .map(TcpListener::local_addr)
                .collect::<Result<Vec<_>, _>>()
        });
    listeners
        .map(|addresses| addresses.iter().map(ToString::to_string).collect())
        .map_err(|e| ReplayBenchError::Results {
            path: "127.0.0.1".into(),
            message: format!("no free port: {e}"),
        })
}
