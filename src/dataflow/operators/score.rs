//! `score_named`: turns score tasks (a sample with its user row, item row and head named by
//! version) into sample states, computing each score with [`ScoringHead::score`] on rows read
//! from the shared side tables.
//!
//! The read lock is taken once per batch of tasks, not once per score. A task whose row
//! version is missing from the side tables is an internal invariant violation (the driver
//! keeps every version until the round that retracts it has completed); the operator then
//! panics with the ids, and the engine reports the worker's failure as an error.
//!
//! [`ScoringHead::score`]: crate::scoring::ScoringHead::score

use std::cell::Cell;
use std::rc::Rc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use crate::data::SampleIdx;
use crate::dataflow::records::{Multiplicity, RoundTime, ScoreTask, StateRecord};
use crate::dataflow::side_table::{SharedTables, SideTables};

/// Scores computed by one worker's score operator since the last [`ScoreTally::take`].
#[derive(Debug, Default)]
pub(crate) struct ScoreTally {
    inserted: Cell<u64>,
    retracted: Cell<u64>,
}

impl ScoreTally {
    /// `(new scores computed, old scores recomputed to retract them)`, resetting both.
    pub(crate) fn take(&self) -> (u64, u64) {
        (self.inserted.take(), self.retracted.take())
    }

    fn count(&self, multiplicity: Multiplicity) {
        let counter = if multiplicity > 0 {
            &self.inserted
        } else {
            &self.retracted
        };
        counter.set(counter.get() + 1);
    }
}

/// Extension trait: score a collection of tasks.
pub(crate) trait Score<'scope> {
    /// Computes the state of every task's sample, in an operator called `name`, counting the
    /// scores it computes in `tally`.
    ///
    /// ```text
    /// tasks.score_named("score: head over versioned rows", tables, tally) // -> (sample, state)
    /// ```
    fn score_named(
        self,
        name: &str,
        tables: SharedTables,
        tally: Rc<ScoreTally>,
    ) -> VecCollection<'scope, RoundTime, (SampleIdx, StateRecord), Multiplicity>;
}

impl<'scope> Score<'scope> for VecCollection<'scope, RoundTime, ScoreTask, Multiplicity> {
    fn score_named(
        self,
        name: &str,
        tables: SharedTables,
        tally: Rc<ScoreTally>,
    ) -> VecCollection<'scope, RoundTime, (SampleIdx, StateRecord), Multiplicity> {
        self.inner
            .unary(Pipeline, name, move |_, _| {
                move |input, output| {
                    input.for_each_stamp(|capability, batches| {
                        let tables = tables.read();
                        let mut session = output.session(&capability);
                        for batch in batches {
                            for (task, time, multiplicity) in batch.drain(..) {
                                let state = score_task(&tables, &task);
                                tally.count(multiplicity);
                                session.give(((task.sample, state), time, multiplicity));
                            }
                        }
                    });
                }
            })
            .as_collection()
    }
}

/// The state of one task's sample, from the rows at the task's versions.
fn score_task(tables: &SideTables, task: &ScoreTask) -> StateRecord {
    let missing = |what: &str, id: u32, version: u32| -> ! {
        panic!(
            "internal error in the scoring engine: {what} {id} at row version {version} is not \
             in the side tables while scoring sample {} (please report this bug)",
            task.sample
        )
    };
    let user_row = tables
        .users
        .get(task.user, task.user_version)
        .unwrap_or_else(|| missing("user", task.user, task.user_version));
    let item_row = tables
        .items
        .get(task.item, task.item_side.side.version)
        .unwrap_or_else(|| missing("item", task.item, task.item_side.side.version));
    let head = tables
        .heads
        .get(task.item_side.head)
        .unwrap_or_else(|| missing("head", 0, task.item_side.head));
    let score = head.score(user_row, item_row, task.label.decode());
    StateRecord::new(task, score)
}
