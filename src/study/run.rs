//! Running a study: every arm x seed as an ordinary run in its own folder, several at once,
//! skipping runs that finished before (a run is finished when its `summary.json` exists,
//! which `recsift run` writes last), then reading every run's rounds back for the analysis.

use crate::error::UserFixable;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

use super::distribute::{self, Heartbeat};
use super::plan::{StudyPlan, StudyRun};
use super::schedule::{Schedule, Work};
use crate::driver::pool::PoolStart;
use crate::driver::{self, RoundSummary, RunError, RunOptions};
use crate::io::IoError;
use crate::results::{RoundRecord, is_train_loss};

/// Why a study stopped without results.
#[derive(Debug, thiserror::Error)]
pub enum StudyRunError {
    /// Some runs failed; the others finished and are kept (a re-run resumes).
    #[error(
        "{} of {} runs failed (the finished ones are kept; run the study again to retry only the failed ones):\n{}",
        .failed.len(), .total,
        .failed.iter().map(|(run, e)| format!("  {run}: {e}")).collect::<Vec<_>>().join("\n")
    )]
    RunsFailed {
        /// `(arm/seed, error)` of each failed run.
        failed: Vec<(String, String)>,
        /// Runs in the study.
        total: usize,
        /// Whether every failure was the user's to fix.
        user_errors: bool,
    },
    /// A finished run's `summary.json` could not be read back.
    #[error("cannot read {path}: {reason}; delete the run's folder to run it again")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The study's folder could not be prepared.
    #[error("cannot prepare the study folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `recsift report` was given runs on different data.
    #[error(
        "these runs read different data and cannot be compared:\n  {first}\n  {other}\n    help: report runs and studies of one dataset together"
    )]
    MixedData {
        /// The first run and its data.
        first: String,
        /// A run on other data, and its data.
        other: String,
    },
    /// The runs cannot be analysed together.
    #[error(transparent)]
    Analysis(super::StudyError),
    /// Writing a study file failed.
    #[error(transparent)]
    Write(Box<IoError>),
    /// Another process of a study on several processes reported failed runs.
    #[error("process {process} of the study failed: {reason}")]
    PeerFailed {
        /// The process.
        process: usize,
        /// What it reported.
        reason: String,
    },
    /// Another process of a study on several processes stopped reporting (or never began).
    #[error(
        "process {process} of the study {} {waited_s} s (its status file {} did not change); \
         start it (same study, same --processes, its own --process), check that the study \
         folder is on a filesystem every process shares, or wait longer with \
         `cluster: {{timeout_s: ...}}`; the finished runs are kept",
        if *.started { "stopped reporting for" } else { "did not start within" },
        .file.display()
    )]
    PeerSilent {
        /// The process.
        process: usize,
        /// Its status file.
        file: PathBuf,
        /// How long process 0 waited for a change.
        waited_s: f64,
        /// Whether it had written a status at all.
        started: bool,
    },
}

impl StudyRunError {
    /// A write failure.
    pub fn write(error: IoError) -> Self {
        StudyRunError::Write(Box::new(error))
    }
}

impl UserFixable for StudyRunError {
    /// Whether the user can fix this (exit code 2) rather than an internal failure (1).
    fn is_user_error(&self) -> bool {
        match self {
            StudyRunError::RunsFailed { user_errors, .. } => *user_errors,
            StudyRunError::Write(e) => e.is_user_error(),
            StudyRunError::Unreadable { .. }
            | StudyRunError::Folder { .. }
            | StudyRunError::MixedData { .. }
            | StudyRunError::Analysis(_)
            | StudyRunError::PeerFailed { .. }
            | StudyRunError::PeerSilent { .. } => true,
        }
    }
}

/// One finished run's rounds.
#[derive(Clone, Debug)]
pub struct FinishedRun {
    /// Its arm's index in the plan.
    pub arm: usize,
    /// Its seed.
    pub seed: u64,
    /// Its rounds, round 0 first.
    pub rounds: Vec<RoundRecord>,
}

/// What [`run_study`] did.
#[derive(Clone, Debug)]
pub struct StudyRuns {
    /// Every run, in plan order (none on a process other than 0 of several).
    pub runs: Vec<FinishedRun>,
    /// Runs in this process's share (all of them on one process).
    pub mine: usize,
    /// Runs that had finished before and were skipped.
    pub skipped: usize,
    /// Runs that continued a round 0 shared with other arms of their seed.
    pub shared_round_zero: usize,
    /// Wall time of the runs executed now, in seconds.
    pub wall_s: f64,
}

/// Runs every unfinished run of `plan` (every run with `force`), `plan.parallel` at a time;
/// `progress` shows a bar and a line per finished run on stderr.
///
/// On several processes (`plan.cluster`), this process runs its share only (see
/// `distribute.rs`); process 0 then waits for the others and returns every run, the others
/// return no runs (they write no report).
pub fn run_study(
    plan: &StudyPlan,
    force: bool,
    progress: bool,
) -> Result<StudyRuns, StudyRunError> {
    std::fs::create_dir_all(&plan.out_dir).map_err(|source| StudyRunError::Folder {
        path: plan.out_dir.clone(),
        source,
    })?;
    let cluster = &plan.cluster;
    // The study's summary is written last, from these runs: a stale one must not outlive
    // a re-run that fails.
    let summary = plan.out_dir.join("study.json");
    if cluster.writes_results() && summary.exists() {
        std::fs::remove_file(&summary).map_err(|source| StudyRunError::Folder {
            path: summary.clone(),
            source,
        })?;
    }
    let mine = distribute::my_runs(plan, cluster);
    let pending: Vec<&StudyRun> = mine
        .iter()
        .copied()
        .filter(|r| force || !is_finished(&r.plan.output.dir))
        .collect();
    let skipped = mine.len() - pending.len();
    let heartbeat = (cluster.processes > 1)
        .then(|| Heartbeat::start(&plan.out_dir, cluster.process))
        .transpose()?;
    let bar = progress.then(|| {
        let bar = ProgressBar::new(mine.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(plan.name.clone());
        bar.set_position(skipped as u64);
        bar
    });
    // A line per event: above the bar on a terminal, plain lines otherwise (a hidden bar
    // prints nothing).
    let say = |line: String| match &bar {
        Some(bar) if !bar.is_hidden() => bar.println(line),
        Some(_) => eprintln!("{line}"),
        None => {}
    };
    if skipped > 0 {
        say(format!("{skipped} runs had finished before: skipped"));
    }
    let started = Instant::now();
    let schedule = Schedule::new(&pending, plan.share_round_zero);
    let shared = AtomicUsize::new(0);
    let failed: Mutex<Vec<(String, RunError)>> = Mutex::new(Vec::new());
    let work = || {
        while let Some(work) = schedule.next() {
            let (run, start) = match work {
                Work::TrainRoundZero { group, run, pool } => {
                    schedule
                        .train_round_zero(group, || PoolStart::train(&run.plan, pool, None).ok());
                    continue;
                }
                Work::Run { run, start } => (run, start),
            };
            let label = format!("{}/seed-{}", plan.arms[run.arm].name, run.seed);
            let options = RunOptions {
                out_dir: run.plan.output.dir.clone(),
                // An unfinished run's folder holds a run that died: continue it from its
                // checkpoint when that is this run's, else start it again.
                force: true,
                progress: false,
                resume: true,
            };
            let run_started = Instant::now();
            let result = match start {
                Some(start) => {
                    shared.fetch_add(1, Ordering::Relaxed);
                    driver::run_from(&run.plan, &options, *start)
                }
                None => driver::run(&run.plan, &options),
            };
            match result {
                Ok(summary) => say(finished_line(&label, &summary, run_started)),
                Err(e) => {
                    say(format!("{label}: failed: {e}"));
                    failed.lock().expect("no run panics").push((label, e));
                }
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
    };
    let threads = plan.parallel.min(pending.len()).max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(work);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let failed = failed.into_inner().expect("no run panics");
    let outcome = if failed.is_empty() {
        Ok(())
    } else {
        Err(StudyRunError::RunsFailed {
            user_errors: failed.iter().all(|(_, e)| e.is_user_error()),
            total: mine.len(),
            failed: failed
                .into_iter()
                .map(|(label, e)| (label, e.to_string()))
                .collect(),
        })
    };
    if let Some(heartbeat) = heartbeat {
        heartbeat.finish(&outcome.as_ref().map(|_| ()).map_err(ToString::to_string))?;
    }
    outcome?;
    if cluster.processes > 1 && cluster.writes_results() {
        distribute::wait_for_peers(&plan.out_dir, cluster, &say)?;
        distribute::clear_statuses(&plan.out_dir);
    }
    let all_runs: &[StudyRun] = if cluster.writes_results() {
        &plan.runs
    } else {
        &[]
    };
    let runs = all_runs
        .iter()
        .map(|r| {
            Ok(FinishedRun {
                arm: r.arm,
                seed: r.seed,
                rounds: read_rounds(&r.plan.output.dir)?,
            })
        })
        .collect::<Result<_, StudyRunError>>()?;
    Ok(StudyRuns {
        runs,
        mine: mine.len(),
        skipped,
        shared_round_zero: shared.into_inner(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Whether the run in `dir` finished (its summary, written last, exists).
fn is_finished(dir: &Path) -> bool {
    dir.join("summary.json").is_file()
}

fn finished_line(label: &str, summary: &driver::Summary, started: Instant) -> String {
    let metrics: Vec<String> = summary
        .metrics
        .iter()
        .filter(|(name, _)| !is_train_loss(name))
        .take(4)
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect();
    format!(
        "{label}: {}  ({:.1} s)",
        metrics.join("  "),
        started.elapsed().as_secs_f64()
    )
}

/// The part of `summary.json` a study reads back.
#[derive(Deserialize)]
struct SummaryFile {
    history: Vec<RoundSummary>,
}

/// A finished run's rounds, from its `summary.json`.
pub fn read_rounds(dir: &Path) -> Result<Vec<RoundRecord>, StudyRunError> {
    let path = dir.join("summary.json");
    let unreadable = |reason: String| StudyRunError::Unreadable {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
    let summary: SummaryFile =
        serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
    Ok(summary
        .history
        .into_iter()
        .map(RoundSummary::into_record)
        .collect())
}
