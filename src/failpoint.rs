//! Named points at which a test can have the process killed, to check that a run resumed
//! from its checkpoint gives the results of an uninterrupted one.
//!
//! `RECSIFT_KILL_AT=<point>:<n>` kills the process (SIGKILL on Unix, so nothing is flushed
//! or cleaned up, as with the OOM killer; an abort elsewhere) the `n`-th time it reaches
//! `point`. Without the variable a point costs one relaxed atomic load. The points:
//!
//! | point | where |
//! |---|---|
//! | `round` | in the middle of a round: after training, before the engine re-scores |
//! | `write` | in the middle of an atomic file write: half the bytes are in the temporary file (checkpoints, JSON and plots go through it) |
//! | `final` | during the final writes: after `rounds.parquet`, before `selections.parquet` |
//! | `share` | in a cluster, before a process hands a block of an events file to the others |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable naming the point and the hit.
pub const KILL_AT: &str = "RECSIFT_KILL_AT";

/// The point and hit to kill at, parsed once.
static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
/// Hits of the target point so far.
static HITS: AtomicU64 = AtomicU64::new(0);

/// Kills the process if this is the hit of `point` that [`KILL_AT`] names.
pub fn reached(point: &str) {
    let target = TARGET.get_or_init(|| {
        let value = std::env::var(KILL_AT).ok()?;
        let (name, n) = value.rsplit_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    });
    let Some((name, n)) = target else {
        return;
    };
    if name == point && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        kill_self();
    }
}

#[cfg(unix)]
fn kill_self() {
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_self() {
    std::process::abort();
}
