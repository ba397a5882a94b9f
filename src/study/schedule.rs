//! Handing a study's work to its threads: the runs, and the round 0 that the runs of one
//! group share (see [`StudyRun::round_zero`]).
//!
//! A group's round 0 is trained once, by whichever thread gets to it first; its runs become
//! ready when it is done, each with its own copy of it (the last run takes the original).
//! A thread asks for work and gets, in this order: a ready run (so that trained starts are
//! used up before new ones are made), the next group's round 0 to train, or, when neither
//! exists but another thread is training a round 0, it waits for that. So no thread waits
//! while there is a round 0 it could train, and at most one untaken start per thread lives
//! at a time.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use super::plan::StudyRun;
use crate::driver::pool::PoolStart;
use crate::plan::{PoolPlan, ProtocolPlan};

/// One piece of a study's work.
pub enum Work<'a> {
    /// Run `run`, continuing from `start` when it holds a shared round 0 (else from scratch).
    Run {
        /// The run.
        run: &'a StudyRun,
        /// Its copy of its group's round 0.
        start: Option<Box<PoolStart>>,
    },
    /// Train round 0 for group `group` with [`Schedule::train_round_zero`].
    TrainRoundZero {
        /// The group's index.
        group: usize,
        /// The group's first run: round 0 is trained for its plan.
        run: &'a StudyRun,
        /// That plan's pool protocol (only pool experiments share round 0).
        pool: &'a PoolPlan,
    },
}

/// The study's work still to do, shared by its threads.
pub struct Schedule<'a> {
    state: Mutex<State<'a>>,
    changed: Condvar,
}

struct State<'a> {
    /// Groups nobody has started to train, in order, with their first run's pool protocol.
    untrained: VecDeque<(usize, &'a PoolPlan)>,
    /// Runs of every group (a group's runs leave when their start is taken).
    runs: Vec<Vec<&'a StudyRun>>,
    /// Groups whose runs can start now.
    ready: VecDeque<usize>,
    /// The trained round 0 of each ready group (`None`: training failed, or not shared).
    starts: Vec<Option<Box<PoolStart>>>,
    /// Groups being trained now.
    training: usize,
}

impl<'a> Schedule<'a> {
    /// The work for `runs` (in the order given, grouped by `round_zero`); with `share`
    /// false, or for a group of one run, every run starts from scratch.
    pub fn new(runs: &[&'a StudyRun], share: bool) -> Self {
        let groups = runs.iter().map(|r| r.round_zero + 1).max().unwrap_or(0);
        let mut by_group: Vec<Vec<&StudyRun>> = vec![Vec::new(); groups];
        for run in runs {
            by_group[run.round_zero].push(run);
        }
        let mut untrained = VecDeque::new();
        let mut ready = VecDeque::new();
        for (group, members) in by_group.iter_mut().enumerate() {
            // Runs are taken from the back: keep the given order.
            members.reverse();
            match (share, &members[..]) {
                (true, [.., _, first]) if let ProtocolPlan::Pool(pool) = &first.plan.protocol => {
                    untrained.push_back((group, pool));
                }
                (_, []) => {}
                _ => ready.push_back(group),
            }
        }
        Self {
            state: Mutex::new(State {
                untrained,
                starts: (0..groups).map(|_| None).collect(),
                runs: by_group,
                ready,
                training: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// The next piece of work, waiting while only other threads' round-0 training could
    /// make some; `None` when everything has been handed out.
    pub fn next(&self) -> Option<Work<'a>> {
        let mut state = self.state.lock().expect("no study thread panics");
        loop {
            if let Some(&group) = state.ready.front() {
                let run = state.runs[group].pop().expect("a ready group has runs");
                let start = if state.runs[group].is_empty() {
                    state.ready.pop_front();
                    state.starts[group].take()
                } else {
                    // A failed copy is not an error: the run then starts from scratch,
                    // with the same results.
                    state.starts[group]
                        .as_ref()
                        .and_then(|start| start.duplicate().ok().map(Box::new))
                };
                return Some(Work::Run { run, start });
            }
            if let Some((group, pool)) = state.untrained.pop_front() {
                state.training += 1;
                let run = *state.runs[group].last().expect("a group has runs");
                return Some(Work::TrainRoundZero { group, run, pool });
            }
            if state.training == 0 {
                return None;
            }
            state = self.changed.wait(state).expect("no study thread panics");
        }
    }

    /// Trains round 0 of `group` with `train` and makes the group's runs ready. When
    /// training fails (`None`, or a panic, which is caught here so that no thread waits
    /// for ever) each of the group's runs starts from scratch and reports its own error.
    pub fn train_round_zero(&self, group: usize, train: impl FnOnce() -> Option<PoolStart>) {
        let start = std::panic::catch_unwind(std::panic::AssertUnwindSafe(train))
            .ok()
            .flatten()
            .map(Box::new);
        let mut state = self.state.lock().expect("no study thread panics");
        state.training -= 1;
        state.starts[group] = start;
        state.ready.push_back(group);
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::study::plan::{StudyPlan, plan_study};

    /// The quickstart study with 2 seeds: 6 arms per seed, differing only in the strategy,
    /// so two round-0 groups of 6 runs.
    fn study(share: bool) -> StudyPlan {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/study-quickstart.yaml");
        let set = [
            "study.seeds=2".to_string(),
            format!("study.share_round_zero={share}"),
        ];
        plan_study(&file, &set)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("a study")
    }

    /// Takes work until none is left, training every round 0 at once when asked; returns
    /// the runs handed out, in order, with whether each came with a start.
    fn drain(
        schedule: &Schedule,
        trained: impl Fn(usize) -> Option<PoolStart>,
    ) -> Vec<(usize, bool)> {
        let mut runs = Vec::new();
        while let Some(work) = schedule.next() {
            match work {
                Work::TrainRoundZero { group, .. } => {
                    schedule.train_round_zero(group, || trained(group))
                }
                Work::Run { run, start } => runs.push((run.round_zero, start.is_some())),
            }
        }
        runs
    }

    #[test]
    fn a_thread_trains_the_next_group_instead_of_waiting_for_another_threads() {
        let plan = study(true);
        let runs: Vec<&StudyRun> = plan.runs.iter().collect();
        let schedule = Schedule::new(&runs, true);
        // Two threads ask at once: each gets a group to train, neither waits.
        let Some(Work::TrainRoundZero { group: first, .. }) = schedule.next() else {
            panic!("the first thread trains a round 0");
        };
        let Some(Work::TrainRoundZero { group: second, .. }) = schedule.next() else {
            panic!("the second thread trains the next group's round 0, not waits");
        };
        assert_ne!(first, second);
        // A failed training (or a panic in it) still releases the group's runs, without a start.
        schedule.train_round_zero(first, || panic!("training failed"));
        schedule.train_round_zero(second, || None);
        let handed = drain(&schedule, |_| None);
        assert_eq!(handed.len(), 12);
        assert!(handed.iter().all(|&(_, start)| !start));
        // Each group's runs are handed out together.
        assert!(handed[..6].iter().all(|&(g, _)| g == first));
        assert!(handed[6..].iter().all(|&(g, _)| g == second));
    }

    #[test]
    fn without_sharing_every_run_is_ready_at_once_group_by_group() {
        let plan = study(false);
        let runs: Vec<&StudyRun> = plan.runs.iter().collect();
        let schedule = Schedule::new(&runs, false);
        let handed = drain(&schedule, |group| panic!("group {group} trained"));
        let mut expected: Vec<(usize, bool)> = runs.iter().map(|r| (r.round_zero, false)).collect();
        expected.sort();
        assert_eq!(handed, expected);
    }
}
