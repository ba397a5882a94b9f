//! The scoring dataflow of one worker, rendered from the pipeline nodes the engine runs
//! ([`EngineGraph`]): its inputs, joins, item side and score operator, each operator
//! labelled with the node it renders.
//!
//! ```text
//! item_facts (item, Row(v) | Label(bits)) --item side--> (item, version[, count, entropy])
//! pool (item, sample, user, label) ---join on item-----> pending (user, sample, item, ...)
//! user_rows (user, version) ----------join on user-----> score tasks --score--> (sample, state)
//! ```
//!
//! The item side is a reduce per item over its row version and labelled events (the count
//! and entropy of its labels) only where the graph's select node ranks by those statistics;
//! otherwise it is the item's row version alone, and the engine takes no labels.
//!
//! In a cluster of several processes, every score update is also sent to the first worker
//! of every other process (`gather`), so that each process's driver sees all of them and
//! makes the same selections; within a process, each worker hands its own updates over.
//!
//! The pool is joined with the item side first and with the user rows last, so that the most
//! frequent change, a few user rows after a training step, passes through one join only. A
//! new label changes one item's statistics and re-keys that item's samples. The head (the
//! parameters every sample shares) is not in the dataflow: re-keying every sample through
//! the joins for it cost 7.6x a plain loop, so a new head makes a full pass: the score
//! operator re-scores every sample it holds at once (`held_states.rs`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use differential_dataflow::input::InputSession;
use timely::dataflow::Scope;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use timely::dataflow::operators::core::{Concat, Exchange};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Inspect, Probe};

use super::EngineGraph;
use super::operators::{JoinNamed, Score};
use super::records::{
    ItemFact, ItemSide, Multiplicity, PendingScore, PoolRecord, RoundTime, RowVersion, ScoreTask,
    StateChange, entropy_bits,
};
use super::side_table::SharedTables;
use crate::data::{ItemIdx, UserIdx};

/// The input sessions of one worker's dataflow.
pub(crate) struct ScoringInputs {
    /// Pool samples, keyed by item.
    pub pool: InputSession<RoundTime, (ItemIdx, PoolRecord), Multiplicity>,
    /// Item row versions and labelled events, keyed by item.
    pub item_facts: InputSession<RoundTime, (ItemIdx, ItemFact), Multiplicity>,
    /// User row versions.
    pub user_rows: InputSession<RoundTime, (UserIdx, RowVersion), Multiplicity>,
}

impl ScoringInputs {
    /// Moves every session to `time` and hands what was fed to the dataflow.
    pub(crate) fn advance_to(&mut self, time: RoundTime) {
        self.pool.advance_to(time);
        self.item_facts.advance_to(time);
        self.user_rows.advance_to(time);
        self.pool.flush();
        self.item_facts.flush();
        self.user_rows.flush();
    }
}

/// What a worker keeps of its dataflow to drive it.
pub(crate) struct ScoringDataflow {
    /// Where the round's inputs go.
    pub inputs: ScoringInputs,
    /// Passes time `t` once every score update of round `t` has been collected.
    pub probe: ProbeHandle<RoundTime>,
    /// State changes collected since the last drain.
    pub collected: Rc<RefCell<Vec<StateChange>>>,
    /// State changes counted since the last take.
    pub tally: Rc<ScoreTally>,
}

/// Where a worker sits: its process, and how many processes and threads per process exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// This worker's process.
    pub process: usize,
    /// Processes in the engine.
    pub processes: usize,
    /// Worker threads per process.
    pub workers: usize,
}

/// States set and removed, counted as a worker collects them.
#[derive(Debug, Default)]
pub(crate) struct ScoreTally {
    set: Cell<u64>,
    removed: Cell<u64>,
}

impl ScoreTally {
    /// `(set, removed)` since the last take.
    pub(crate) fn take(&self) -> (u64, u64) {
        (self.set.take(), self.removed.take())
    }

    fn count(&self, change: &StateChange) {
        let counter = if change.state.is_some() {
            &self.set
        } else {
            &self.removed
        };
        counter.set(counter.get() + 1);
    }
}

/// Renders `graph`'s scoring dataflow in `scope`.
pub(crate) fn build_scoring_dataflow(
    scope: Scope<'_, RoundTime>,
    tables: SharedTables,
    placement: Placement,
    graph: &EngineGraph,
) -> ScoringDataflow {
    let EngineGraph {
        score,
        model,
        item_statistics_for,
    } = graph;
    let mut inputs = ScoringInputs {
        pool: InputSession::new(),
        item_facts: InputSession::new(),
        user_rows: InputSession::new(),
    };
    let collected = Rc::new(RefCell::new(Vec::new()));
    let tally = Rc::new(ScoreTally::default());

    let pool = inputs.pool.to_collection(scope);
    let item_facts = inputs.item_facts.to_collection(scope);
    let user_rows = inputs.user_rows.to_collection(scope);

    let item_sides = match item_statistics_for {
        Some(select) => item_facts.reduce_named(
            &format!("reduce: `{model}` item row version, label statistics for `{select}`"),
            summarise_item,
        ),
        None => item_facts.flat_map(|(item, fact)| match fact {
            ItemFact::Row(version) => Some((item, ItemSide::unlabelled(version))),
            ItemFact::Label(_) => None,
        }),
    }
    .arrange_by_key_named(&format!("arrange: `{model}` item sides by item"));

    let pending = pool
        .arrange_by_key_named("arrange: pool by item")
        .join_named(
            item_sides,
            &format!("join: pool with `{model}` item side"),
            |&item, sample, &item_side| {
                let pending = PendingScore {
                    sample: sample.sample,
                    item,
                    label: sample.label,
                    item_side,
                };
                (sample.user, pending)
            },
        )
        .arrange_by_key_named("arrange: pending scores by user");
    let user_rows =
        user_rows.arrange_by_key_named(&format!("arrange: `{model}` user row versions"));
    let tasks = pending.join_named(
        user_rows,
        &format!("join: pending scores with `{model}` user row version"),
        |&user, pending, &user_version| ScoreTask {
            sample: pending.sample,
            user,
            user_version,
            item: pending.item,
            label: pending.label,
            item_side: pending.item_side,
        },
    );

    let scored = tasks.score_named(
        &format!("score `{score}`: live head of `{model}` over versioned rows"),
        tables,
    );
    let scored = if placement.processes > 1 {
        let Placement {
            process,
            processes,
            workers,
        } = placement;
        let copies = scored
            .clone()
            .flat_map(move |update| {
                (0..processes)
                    .filter(move |&p| p != process)
                    .map(move |p| ((p * workers) as u64, update))
            })
            .exchange(|(receiver, _)| *receiver)
            .map(|(_, update)| update);
        scored.concat(copies)
    } else {
        scored
    };
    let sink = Rc::clone(&collected);
    let counts = Rc::clone(&tally);
    let (probe, _) = scored
        .inspect_core(move |event| {
            let Ok((_, updates)) = event else {
                return;
            };
            let mut sink = sink.borrow_mut();
            sink.extend(updates.iter().inspect(|change| counts.count(change)));
        })
        .probe();

    ScoringDataflow {
        inputs,
        probe,
        collected,
        tally,
    }
}

/// The item side of one item from its facts: nothing without a row version, else the
/// version with the count and entropy of its labels.
fn summarise_item(
    _item: &ItemIdx,
    facts: &[(&ItemFact, Multiplicity)],
    output: &mut Vec<(ItemSide, Multiplicity)>,
) {
    let mut version = None;
    let mut counts = Vec::with_capacity(facts.len());
    for &(fact, multiplicity) in facts {
        match *fact {
            ItemFact::Row(v) => version = Some(v),
            ItemFact::Label(_) => counts.push(u64::try_from(multiplicity).unwrap_or(0)),
        }
    }
    if let Some(version) = version {
        let labels: u64 = counts.iter().sum();
        let side = ItemSide {
            version,
            labels: u32::try_from(labels).unwrap_or(u32::MAX),
            entropy: entropy_bits(&counts).to_bits(),
        };
        output.push((side, 1));
    }
}
