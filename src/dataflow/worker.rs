//! One timely worker of the engine: it receives commands from the driver over a channel.
//! It starts with the gather dataflow (payloads shared between the processes) and installs
//! the scoring dataflow when the driver has the model to score with; for a scoring round it
//! feeds the round's share of the inputs, steps until its probe passes the round, and sends
//! the score updates it collected back.
//!
//! Every command is answered by exactly one reply, whatever happens: a finished round, or a
//! failure (a panic, an abort because another worker failed, an unexpected exit), so the
//! driver never waits for a reply that cannot come. While a round runs, a worker parks when
//! it has nothing to do (timely's `step_or_park`, woken by incoming messages) and checks a
//! shared abort flag between steps; between rounds it blocks on its command channel.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use timely::worker::Worker;

use super::EngineGraph;
use super::gather::{GatherDataflow, GatherTime};
use super::graph::{Placement, ScoringDataflow, build_scoring_dataflow};
use super::records::{ItemFact, Multiplicity, PoolRecord, RoundTime, RowVersion, StateChange};
use super::side_table::SharedTables;
use crate::data::{ItemIdx, UserIdx};

/// How long a worker parks at most before it looks at the abort flag again.
const ABORT_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// One worker's share of a round's inputs.
#[derive(Debug, Default)]
pub(crate) struct RoundShare {
    /// Pool changes, keyed by item.
    pub pool: Vec<((ItemIdx, PoolRecord), Multiplicity)>,
    /// Item row versions and labelled events.
    pub item_facts: Vec<((ItemIdx, ItemFact), Multiplicity)>,
    /// User row versions.
    pub user_rows: Vec<((UserIdx, RowVersion), Multiplicity)>,
    /// An empty buffer to collect the round's score updates in (recycled from an earlier
    /// round, so that collecting does not grow a fresh vector every round).
    pub spare: Vec<StateChange>,
}

/// What the driver asks of a worker.
#[derive(Debug)]
pub(crate) enum WorkerCommand {
    /// Install the scoring dataflow, scoring with the rows and head of `tables`.
    Install {
        /// The rows, read while scoring.
        tables: SharedTables,
        /// The pipeline nodes to render.
        graph: EngineGraph,
    },
    /// Send `payload` (the process's first worker has one) to every process's first worker
    /// at `time`, advance to `time + 1`, reply with what arrived once everything has.
    Gather {
        /// The gather round's logical time.
        time: GatherTime,
        /// This process's payload, given to its first worker only.
        payload: Option<Vec<u8>>,
    },
    /// Feed the share at `time`, advance to `time + 1`, reply when the probe passes `time`.
    Round {
        /// The round's logical time.
        time: RoundTime,
        /// This worker's inputs.
        share: RoundShare,
    },
    /// Close the inputs and leave.
    Shutdown,
    /// Test hook: panic as if an operator had failed.
    #[cfg(test)]
    Panic,
    /// Test hook: leave without a word.
    #[cfg(test)]
    Vanish,
}

/// A worker's output for one round.
#[derive(Debug, Default)]
pub(crate) struct RoundResult {
    /// State changes, in the order the worker collected them.
    pub updates: Vec<StateChange>,
    /// States set.
    pub set: u64,
    /// States removed.
    pub removed: u64,
}

/// Why a worker stopped answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It panicked with this message.
    Panicked(String),
    /// It stopped its round because another worker failed.
    Aborted,
    /// It left without a reply (its thread ended or its channel closed).
    Exited,
}

/// What a worker sends back.
#[derive(Debug)]
pub(crate) enum WorkerReply {
    /// The scoring dataflow is installed.
    Installed,
    /// A gather round completed.
    Gathered {
        /// Every process's payload in process order (empty but on first workers).
        payloads: Vec<Vec<u8>>,
    },
    /// A round completed.
    Round {
        /// What it computed.
        result: RoundResult,
    },
    /// The worker failed and will answer no more.
    Failed {
        /// The worker's index.
        worker: usize,
        /// Why.
        failure: Failure,
    },
}

/// The channels of one worker, handed over when its thread starts.
pub(crate) struct WorkerLink {
    /// Commands from the driver.
    pub commands: Receiver<WorkerCommand>,
    /// Replies to the driver.
    pub replies: Sender<WorkerReply>,
}

/// What every worker thread of this process shares.
pub(crate) struct WorkerContext {
    /// One link per worker of this process, taken by the worker with that local index.
    pub links: Mutex<Vec<Option<WorkerLink>>>,
    /// Where this process's workers sit among all processes.
    pub placement: Placement,
    /// Set when any worker fails, so that the others stop waiting for it.
    pub abort: Arc<AtomicBool>,
}

/// How a worker's command loop ended without failing.
enum Exit {
    /// The driver asked it to shut down.
    Shutdown,
    /// The driver went away.
    DriverGone,
}

/// The body of worker thread `worker.index()`.
pub(crate) fn run_worker(worker: &mut Worker, context: &WorkerContext) {
    let index = worker.index();
    let local = index.checked_sub(context.placement.process * context.placement.workers);
    let link = local.and_then(|local| {
        context
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(local)
            .and_then(Option::take)
    });
    let Some(link) = link else {
        // No link: the driver set up fewer links than workers. Nothing to serve; leave the
        // others a way out.
        context.abort.store(true, Ordering::Release);
        return;
    };
    let replies = link.replies.clone();
    let mut notice = DepartureNotice {
        worker: index,
        replies: replies.clone(),
        abort: Arc::clone(&context.abort),
        armed: true,
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| serve(worker, link, context)));
    let failure = match outcome {
        Ok(Ok(Exit::Shutdown)) => None,
        Ok(Ok(Exit::DriverGone)) => Some(Failure::Exited),
        Ok(Err(failure)) => Some(failure),
        Err(payload) => Some(Failure::Panicked(panic_message(payload.as_ref()))),
    };
    notice.armed = false;
    if let Some(failure) = failure {
        // Only the first failing worker reports the cause; the others (whose own failures,
        // panics included, may follow from it) report an abort.
        let first = !context.abort.swap(true, Ordering::AcqRel);
        let failure = if first { failure } else { Failure::Aborted };
        // The driver may be gone already; then nobody is waiting for this.
        let _ = replies.send(WorkerReply::Failed {
            worker: index,
            failure,
        });
        // The dataflow cannot complete without the other workers: drop it so that the
        // thread can end.
        for dataflow in worker.installed_dataflows() {
            worker.drop_dataflow(dataflow);
        }
    }
}

/// A worker's dataflows: the gather dataflow, and the scoring one once installed.
struct Dataflows {
    gather: GatherDataflow,
    scoring: Option<ScoringDataflow>,
}

/// Serves commands until shutdown or failure.
///
/// The dataflows' handles are dropped only on an orderly shutdown, where closing their
/// inputs lets the dataflows complete. Dropping an input sends to the other workers, and
/// after a failure (a lost peer: timely's network queues are poisoned) that panics again,
/// which during the first panic's unwinding would abort the process. On any other way out
/// they are left alone: [`run_worker`] drops the dataflows from the worker instead.
fn serve(worker: &mut Worker, link: WorkerLink, context: &WorkerContext) -> Result<Exit, Failure> {
    let placement = context.placement;
    let gather = worker.dataflow_named::<GatherTime, _, _>("recsift gather", move |scope| {
        GatherDataflow::build(scope, placement)
    });
    let mut dataflows = ManuallyDrop::new(Dataflows {
        gather,
        scoring: None,
    });
    let exit = serve_commands(worker, &link, context, &mut dataflows)?;
    if let Exit::Shutdown = exit {
        drop(ManuallyDrop::into_inner(dataflows));
    }
    Ok(exit)
}

/// The command loop of [`serve`].
fn serve_commands(
    worker: &mut Worker,
    link: &WorkerLink,
    context: &WorkerContext,
    dataflows: &mut Dataflows,
) -> Result<Exit, Failure> {
    let placement = context.placement;
    loop {
        let Ok(command) = link.commands.recv() else {
            return Ok(Exit::DriverGone);
        };
        let reply = match command {
            WorkerCommand::Install { tables, graph } => {
                dataflows.scoring = Some(
                    worker.dataflow_named::<RoundTime, _, _>("recsift scoring", move |scope| {
                        build_scoring_dataflow(scope, tables, placement, &graph)
                    }),
                );
                WorkerReply::Installed
            }
            WorkerCommand::Gather { time, payload } => {
                let gather = &mut dataflows.gather;
                gather.send(time, payload);
                while !gather.done(time) {
                    step(worker, context)?;
                }
                WorkerReply::Gathered {
                    payloads: gather.take(time),
                }
            }
            WorkerCommand::Round { time, share } => {
                let Some(dataflow) = dataflows.scoring.as_mut() else {
                    return Err(Failure::Panicked(
                        "a scoring round before the scoring dataflow was installed".into(),
                    ));
                };
                let result = score_round(worker, context, dataflow, time, share)?;
                WorkerReply::Round { result }
            }
            WorkerCommand::Shutdown => {
                if context.abort.load(Ordering::Acquire) {
                    // Another worker failed: the dataflows cannot complete; the caller of
                    // `serve` treats this like a failure and drops them.
                    return Err(Failure::Aborted);
                }
                // The caller closes the inputs, which lets the dataflows complete once
                // every worker has.
                return Ok(Exit::Shutdown);
            }
            #[cfg(test)]
            WorkerCommand::Panic => panic!("injected worker panic"),
            #[cfg(test)]
            WorkerCommand::Vanish => return Ok(Exit::DriverGone),
        };
        if link.replies.send(reply).is_err() {
            return Ok(Exit::DriverGone);
        }
    }
}

/// Feeds `share` at `time`, advances to `time + 1` and steps until the round's score
/// updates are collected.
fn score_round(
    worker: &mut Worker,
    context: &WorkerContext,
    dataflow: &mut ScoringDataflow,
    time: RoundTime,
    share: RoundShare,
) -> Result<RoundResult, Failure> {
    *dataflow.collected.borrow_mut() = share.spare;
    let inputs = &mut dataflow.inputs;
    for (record, m) in share.pool {
        inputs.pool.update(record, m);
    }
    for (record, m) in share.item_facts {
        inputs.item_facts.update(record, m);
    }
    for (record, m) in share.user_rows {
        inputs.user_rows.update(record, m);
    }
    let next = time + 1;
    inputs.advance_to(next);
    while dataflow.probe.less_than(&next) {
        step(worker, context)?;
    }
    let (set, removed) = dataflow.tally.take();
    Ok(RoundResult {
        updates: std::mem::take(&mut *dataflow.collected.borrow_mut()),
        set,
        removed,
    })
}

/// One step of the worker's dataflows (parking while there is nothing to do), unless
/// another worker failed.
fn step(worker: &mut Worker, context: &WorkerContext) -> Result<(), Failure> {
    if context.abort.load(Ordering::Acquire) {
        return Err(Failure::Aborted);
    }
    worker.step_or_park(Some(ABORT_CHECK_INTERVAL));
    Ok(())
}

/// Tells the driver that a worker left without a reply, should its thread end some other
/// way than through [`run_worker`]'s own handling.
struct DepartureNotice {
    worker: usize,
    replies: Sender<WorkerReply>,
    abort: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for DepartureNotice {
    fn drop(&mut self) {
        if self.armed {
            let first = !self.abort.swap(true, Ordering::AcqRel);
            let failure = if first {
                Failure::Exited
            } else {
                Failure::Aborted
            };
            let _ = self.replies.send(WorkerReply::Failed {
                worker: self.worker,
                failure,
            });
        }
    }
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
