//! A study on several processes (`recsift run STUDY --processes N --process I`): each process
//! runs its share of the runs into the study folder, which every process must share (a
//! shared filesystem, see `docs/cluster.md`), and process 0 writes the report once all are
//! done.
//!
//! The processes do not connect to each other: each keeps a status file in
//! `<study>/.processes/` (`running <beat>`, rewritten every second, then `done` or `failed`
//! with the reason). Process 0, after its own runs, waits for every other status to say
//! `done`; a status that says `failed`, or that stops changing for `timeout_s` (a process
//! killed, or never started), ends the wait with an error naming the process. No clock is
//! compared across machines: only whether a status changes.
//!
//! The shares: with at least as many seeds as processes, process `i` runs every arm of the
//! seeds whose position is `i` modulo N (so the arms of a seed still share round 0);
//! otherwise the runs are dealt by position.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::plan::{StudyPlan, StudyRun};
use super::run::StudyRunError;
use crate::io::atomic::write_bytes_atomic;
use crate::plan::ClusterPlan;

/// How often a running process rewrites its status, and process 0 reads the others'.
const BEAT: Duration = Duration::from_secs(1);

/// The runs process `cluster.process` runs.
pub(crate) fn my_runs<'a>(plan: &'a StudyPlan, cluster: &ClusterPlan) -> Vec<&'a StudyRun> {
    let n = cluster.processes;
    let by_seed = plan.seeds.len() >= n;
    plan.runs
        .iter()
        .enumerate()
        .filter(|(k, run)| {
            let position = if by_seed {
                plan.seeds.iter().position(|s| *s == run.seed).unwrap_or(*k)
            } else {
                *k
            };
            position % n == cluster.process
        })
        .map(|(_, run)| run)
        .collect()
}

/// The status file of `process` in the study folder `dir`.
fn status_file(dir: &Path, process: usize) -> PathBuf {
    dir.join(".processes").join(format!("process-{process}"))
}

/// This process's status, rewritten every [`BEAT`] while its runs go on.
pub(crate) struct Heartbeat {
    file: PathBuf,
    stop: Arc<AtomicBool>,
    beating: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts beating for `process` in the study folder `dir`.
    pub(crate) fn start(dir: &Path, process: usize) -> Result<Self, StudyRunError> {
        let file = status_file(dir, process);
        let folder = file
            .parent()
            .expect("a status file has a folder")
            .to_path_buf();
        std::fs::create_dir_all(&folder).map_err(|source| StudyRunError::Folder {
            path: folder,
            source,
        })?;
        write_status(&file, "running 0")?;
        let stop = Arc::new(AtomicBool::new(false));
        let beating = {
            let (file, stop) = (file.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut beat = 0u64;
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(BEAT);
                    beat += 1;
                    // A missed beat is harmless; many in a row read as this process gone.
                    let _ = write_status(&file, &format!("running {beat}"));
                }
            })
        };
        Ok(Self {
            file,
            stop,
            beating: Some(beating),
        })
    }

    /// Stops beating and records how this process's runs ended.
    pub(crate) fn finish(mut self, outcome: &Result<(), String>) -> Result<(), StudyRunError> {
        self.stop_beating();
        match outcome {
            Ok(()) => write_status(&self.file, "done"),
            Err(reason) => write_status(&self.file, &format!("failed\n{reason}")),
        }
    }

    fn stop_beating(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(beating) = self.beating.take() {
            let _ = beating.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop_beating();
    }
}

/// Writes `text` to `file` atomically (a reader never sees half of it).
fn write_status(file: &Path, text: &str) -> Result<(), StudyRunError> {
    write_bytes_atomic(file, text.as_bytes()).map_err(StudyRunError::write)
}

/// Waits until every process but this one (process 0) says `done`; `say` reports progress.
pub(crate) fn wait_for_peers(
    dir: &Path,
    cluster: &ClusterPlan,
    say: &dyn Fn(String),
) -> Result<(), StudyRunError> {
    let timeout = Duration::from_secs_f64(cluster.timeout_s);
    let mut peers: Vec<Peer> = (1..cluster.processes)
        .map(|process| Peer {
            process,
            last: None,
            changed: Instant::now(),
        })
        .collect();
    let mut announced = false;
    loop {
        let mut waiting = Vec::new();
        for peer in &mut peers {
            let status = std::fs::read_to_string(status_file(dir, peer.process)).ok();
            if status.as_deref() == Some("done") {
                continue;
            }
            if let Some(reason) = status.as_deref().and_then(|s| s.strip_prefix("failed\n")) {
                return Err(StudyRunError::PeerFailed {
                    process: peer.process,
                    reason: reason.to_string(),
                });
            }
            if status != peer.last {
                peer.last = status;
                peer.changed = Instant::now();
            } else if peer.changed.elapsed() > timeout {
                return Err(StudyRunError::PeerSilent {
                    process: peer.process,
                    file: status_file(dir, peer.process),
                    waited_s: cluster.timeout_s,
                    started: peer.last.is_some(),
                });
            }
            waiting.push(peer.process);
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if !announced {
            say(format!(
                "waiting for process(es) {waiting:?} to finish their runs (process 0 writes the report)"
            ));
            announced = true;
        }
        std::thread::sleep(BEAT);
    }
}

/// Removes every status (process 0, once all processes are done), so that a later run of
/// the study starts without old ones. A status that cannot be removed is harmless: each
/// process rewrites its own when it starts.
pub(crate) fn clear_statuses(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join(".processes"));
}

/// What process 0 knows of another process's status.
struct Peer {
    process: usize,
    /// The status last read (`None`: no status file yet).
    last: Option<String>,
    /// When it last changed (or when waiting began).
    changed: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(process: usize, processes: usize, timeout_s: f64) -> ClusterPlan {
        ClusterPlan {
            processes,
            process,
            timeout_s,
            ..ClusterPlan::single()
        }
    }

    #[test]
    fn a_done_peer_ends_the_wait_and_a_silent_or_failed_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = |_: String| {};
        // Never started: named after the timeout.
        let error = wait_for_peers(dir.path(), &cluster(0, 2, 0.5), &quiet).unwrap_err();
        assert!(error.to_string().contains("process 1"), "{error}");
        assert!(error.to_string().contains("did not start"), "{error}");

        // Beats, then finishes: the wait ends.
        let beat = Heartbeat::start(dir.path(), 1).unwrap();
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2500));
            beat.finish(&Ok(())).unwrap();
        });
        wait_for_peers(dir.path(), &cluster(0, 2, 1.5), &quiet).unwrap();
        finisher.join().unwrap();

        // Failed: the reason comes through.
        Heartbeat::start(dir.path(), 2)
            .unwrap()
            .finish(&Err("2 of 3 runs failed".into()))
            .unwrap();
        let error = wait_for_peers(dir.path(), &cluster(0, 3, 5.0), &quiet).unwrap_err();
        assert!(error.to_string().contains("2 of 3 runs failed"), "{error}");
    }
}
