//! `score_named`: turns score tasks (a sample with its user row, item row and head named by
//! version) into sample states, computing each score with [`ScoringHead::score`] on rows read
//! from the shared side tables.
//!
//! The read lock is taken once per batch of tasks, not once per score. Tasks are scored in
//! chunks of [`CHUNK`]: first every task's rows are looked up and touched, then scored.
//! The rows of a large pool are mostly not in cache, and looking up a chunk's rows back to
//! back lets their memory loads overlap instead of waiting for one row at a time (this cut
//! the operator's time by a third at 10M samples, see `docs/benchmarks.md (scale section)`).
//!
//! A task whose row
//! version is missing from the side tables is an internal invariant violation (the driver
//! keeps every version until the round that retracts it has completed); the operator then
//! panics with the ids, and the engine reports the worker's failure as an error.
//!
//! [`ScoringHead::score`]: crate::scoring::ScoringHead::score

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use crate::data::SampleIdx;
use crate::dataflow::records::{Multiplicity, RoundTime, ScoreTask, StateRecord};
use crate::dataflow::side_table::{SharedTables, SideTables};
use crate::scoring::ScoringHead;

/// Tasks whose rows are looked up together before they are scored.
const CHUNK: usize = 16;

/// Scoring of score tasks.
pub(crate) trait Score<'scope> {
    /// Computes the state of every task's sample, in an operator called `name`.
    ///
    /// ```text
    /// tasks.score_named("score: head over versioned rows", tables) // -> (sample, state)
    /// ```
    fn score_named(
        self,
        name: &str,
        tables: SharedTables,
    ) -> VecCollection<'scope, RoundTime, (SampleIdx, StateRecord), Multiplicity>;
}

impl<'scope> Score<'scope> for VecCollection<'scope, RoundTime, ScoreTask, Multiplicity> {
    fn score_named(
        self,
        name: &str,
        tables: SharedTables,
    ) -> VecCollection<'scope, RoundTime, (SampleIdx, StateRecord), Multiplicity> {
        self.inner
            .unary(Pipeline, name, move |_, _| {
                move |input, output| {
                    input.for_each_stamp(|capability, batches| {
                        let tables = tables.read();
                        let mut session = output.session(&capability);
                        let mut rows = Vec::with_capacity(CHUNK);
                        for batch in batches {
                            for chunk in batch.chunks(CHUNK) {
                                rows.clear();
                                rows.extend(
                                    chunk.iter().map(|(task, _, _)| rows_of(&tables, task)),
                                );
                                touch(&rows);
                                for ((task, time, multiplicity), rows) in chunk.iter().zip(&rows) {
                                    let state = score_with(rows, task);
                                    session.give(((task.sample, state), *time, *multiplicity));
                                }
                            }
                            batch.clear();
                        }
                    });
                }
            })
            .as_collection()
    }
}

/// A task's user row, item row and head, at the task's versions.
type TaskRows<'t> = (&'t [f32], &'t [f32], &'t ScoringHead);

/// Looks up the rows of `task`.
fn rows_of<'t>(tables: &'t SideTables, task: &ScoreTask) -> TaskRows<'t> {
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
    (user_row, item_row, head)
}

/// Reads one float of every cache line of the rows, so that their loads are under way
/// together before the first score needs them.
fn touch(rows: &[TaskRows<'_>]) {
    const FLOATS_PER_LINE: usize = 16;
    let mut bits = 0u32;
    for (user_row, item_row, _) in rows {
        for row in [user_row, item_row] {
            for k in (0..row.len()).step_by(FLOATS_PER_LINE) {
                bits ^= row[k].to_bits();
            }
            if let Some(last) = row.last() {
                bits ^= last.to_bits();
            }
        }
    }
    std::hint::black_box(bits);
}

/// The state of `task`'s sample from its rows.
fn score_with(&(user_row, item_row, head): &TaskRows<'_>, task: &ScoreTask) -> StateRecord {
    let score = head.score(user_row, item_row, task.label.decode());
    StateRecord::new(task, score)
}
