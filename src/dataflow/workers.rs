//! This process's timely worker threads, started once per run (before any data is loaded),
//! and the commands the driver sends them: install the scoring dataflow, run a scoring
//! round, gather one payload from every process, shut down.
//!
//! Every command goes to every worker of this process and is answered by one reply each
//! (see `worker.rs`), so a failure anywhere is noticed at the next command. After the first
//! failure every command is refused with [`EngineError::Failed`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use timely::WorkerConfig;
use timely::communication::WorkerGuards;

use super::cluster::{self, Communication, Topology};
use super::gather::GatherTime;
use super::graph::Placement;
use super::side_table::SharedTables;
use super::worker::{Failure, WorkerCommand, WorkerContext, WorkerLink, WorkerReply, run_worker};
use super::{EngineError, EngineGraph};

/// The running worker threads of this process.
pub(crate) struct Workers {
    topology: Topology,
    commands: Vec<Sender<WorkerCommand>>,
    replies: Receiver<WorkerReply>,
    abort: Arc<AtomicBool>,
    guards: Option<WorkerGuards<()>>,
    /// The first failure; every later command is refused.
    failure: Option<EngineError>,
    /// The next gather round's time.
    gather_time: GatherTime,
}

impl Workers {
    /// Starts `topology.workers` threads over `communication` (in a cluster, returns once
    /// timely has taken over the connected sockets).
    pub(crate) fn start(
        topology: Topology,
        communication: Communication,
    ) -> Result<Self, EngineError> {
        let workers = topology.workers;
        if workers == 0 {
            return Err(EngineError::NoWorkers);
        }
        let (reply_sender, replies) = mpsc::channel();
        let mut commands = Vec::with_capacity(workers);
        let mut links = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (sender, receiver) = mpsc::channel();
            commands.push(sender);
            links.push(Some(WorkerLink {
                commands: receiver,
                replies: reply_sender.clone(),
            }));
        }
        // Only the workers hold reply senders: if all of them are gone, `recv` says so.
        drop(reply_sender);
        let abort = Arc::new(AtomicBool::new(false));
        let context = Arc::new(WorkerContext {
            links: Mutex::new(links),
            placement: Placement {
                process: topology.process(),
                processes: topology.processes(),
                workers,
            },
            abort: Arc::clone(&abort),
        });
        let (builders, others) = communication;
        let guards = timely::execute::execute_from(
            builders,
            others,
            WorkerConfig::default(),
            move |worker| run_worker(worker, &context),
        )
        .map_err(EngineError::Start)?;
        Ok(Self {
            topology,
            commands,
            replies,
            abort,
            guards: Some(guards),
            failure: None,
            gather_time: 0,
        })
    }

    /// Installs the scoring dataflow of `graph` on every worker, scoring with `tables`.
    pub(crate) fn install(
        &mut self,
        tables: &SharedTables,
        graph: &EngineGraph,
    ) -> Result<(), EngineError> {
        let commands = (0..self.topology.workers).map(|_| WorkerCommand::Install {
            tables: tables.clone(),
            graph: graph.clone(),
        });
        self.command(commands.collect())?;
        Ok(())
    }

    /// Hands `payload` to every process and returns every process's payload, in process
    /// order. Every process of the cluster must call it the same number of times.
    pub(crate) fn gather(&mut self, payload: Vec<u8>) -> Result<Vec<Vec<u8>>, EngineError> {
        let time = self.gather_time;
        let mut payload = Some(payload);
        let commands = (0..self.topology.workers).map(|_| WorkerCommand::Gather {
            time,
            payload: payload.take(),
        });
        let replies = self.command(commands.collect())?;
        self.gather_time += 1;
        let payloads = replies
            .into_iter()
            .filter_map(|reply| match reply {
                WorkerReply::Gathered { payloads } => Some(payloads),
                _ => None,
            })
            .max_by_key(Vec::len)
            .unwrap_or_default();
        if payloads.len() != self.topology.processes() {
            // A process that stopped closes its inputs: its payload never comes.
            return Err(self.fail(EngineError::PeerLost {
                message: format!(
                    "{} of {} processes sent their part",
                    payloads.len(),
                    self.topology.processes()
                ),
            }));
        }
        Ok(payloads)
    }

    /// Sends one command to each worker (in worker order) and waits for one reply each.
    pub(crate) fn command(
        &mut self,
        commands: Vec<WorkerCommand>,
    ) -> Result<Vec<WorkerReply>, EngineError> {
        self.refuse_after_failure()?;
        for (worker, (command, sender)) in commands.into_iter().zip(&self.commands).enumerate() {
            if sender.send(command).is_err() {
                return Err(self.fail(EngineError::WorkerExited { worker }));
            }
        }
        let mut replies = Vec::with_capacity(self.topology.workers);
        let mut failures = Vec::new();
        for _ in 0..self.topology.workers {
            match self.replies.recv() {
                Ok(WorkerReply::Failed { worker, failure }) => failures.push((worker, failure)),
                Ok(reply) => replies.push(reply),
                Err(_) => {
                    // Every worker dropped its reply sender: all of them are gone.
                    failures.push((0, Failure::Exited));
                    break;
                }
            }
        }
        if failures.is_empty() {
            return Ok(replies);
        }
        let cause = root_cause(failures);
        let cause = match &cause {
            EngineError::WorkerPanicked { message, .. } if self.topology.cluster.is_some() => {
                cluster::network_failure(message).unwrap_or(cause)
            }
            _ => cause,
        };
        Err(self.fail(cause))
    }

    /// [`EngineError::Failed`] once the workers have failed.
    pub(crate) fn refuse_after_failure(&self) -> Result<(), EngineError> {
        match &self.failure {
            Some(failure) => Err(EngineError::Failed {
                cause: failure.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Records `error` as the workers' failure and tells them to stop.
    fn fail(&mut self, error: EngineError) -> EngineError {
        self.failure = Some(error.clone());
        self.abort.store(true, Ordering::Release);
        error
    }

    /// Stops the workers: an orderly shutdown when healthy, an abort after a failure. In a
    /// cluster an orderly shutdown returns once every process has shut down.
    pub(crate) fn shut_down(&mut self) -> Result<(), EngineError> {
        let Some(guards) = self.guards.take() else {
            return Ok(());
        };
        for commands in &self.commands {
            // A worker that is gone already cannot be told; joining below reports it.
            let _ = commands.send(WorkerCommand::Shutdown);
        }
        if self.abort.load(Ordering::Acquire) && self.topology.cluster.is_some() {
            // The network threads may have panicked (a peer went away), and joining them
            // would panic again; the workers are aborting. Leave the threads behind.
            std::mem::forget(guards);
            return Err(EngineError::Failed {
                cause: self.failure.as_ref().map_or_else(
                    || "the run stopped before it finished".to_owned(),
                    ToString::to_string,
                ),
            });
        }
        let joined = guards.join();
        if let Some(failure) = &self.failure {
            return Err(EngineError::Failed {
                cause: failure.to_string(),
            });
        }
        for (worker, result) in joined.into_iter().enumerate() {
            if let Err(message) = result {
                return Err(EngineError::WorkerPanicked { worker, message });
            }
        }
        Ok(())
    }

    /// Test hook: sends `command` to `worker` instead of its next command.
    #[cfg(test)]
    pub(crate) fn inject(&mut self, worker: usize, command: WorkerCommand) {
        let _ = self.commands[worker].send(command);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if self.guards.is_some() {
            // Without an orderly shutdown nobody reads the result: an abort stops the
            // workers fastest. In a cluster it is the only way out: an orderly shutdown
            // would wait for the other processes to finish a run this one has left.
            if self.failure.is_some() || self.topology.cluster.is_some() {
                self.abort.store(true, Ordering::Release);
            }
            let _ = self.shut_down();
        }
    }
}

/// The failure to report: a panic first, then an exit; aborts only follow another failure.
fn root_cause(mut failures: Vec<(usize, Failure)>) -> EngineError {
    failures.sort_by_key(|(worker, failure)| {
        let rank = match failure {
            Failure::Panicked(_) => 0,
            Failure::Exited => 1,
            Failure::Aborted => 2,
        };
        (rank, *worker)
    });
    match failures.swap_remove(0) {
        (worker, Failure::Panicked(message)) => EngineError::WorkerPanicked { worker, message },
        (worker, _) => EngineError::WorkerExited { worker },
    }
}
