//! What a worker remembers of the samples it scores: for each, the task it was last scored
//! from (its user and item row versions, item statistics and label) and its score, grouped
//! by user in sample order.
//!
//! With it, a round's changes become state updates without recomputing anything old: a
//! retracted task's state is read here, not recomputed from the old rows, and only new
//! tasks are scored. And in a round that changes what most samples read (a new head, the
//! parameters every sample shares; or rows read by most of the pool, as after a step that
//! changed a shared projection), every held sample is re-scored in one ordered pass over
//! this memory, with no record passing through differential's joins and arrangements (that
//! cost 7.6x a plain loop when the head was a joined collection, `docs/benchmarks.md`).
//!
//! A round's changes leave here as at most one per sample (its new state, or that it has
//! none any more; a state that did not change does not appear), ordered by
//! `(user, sample)`, the order the engine's merge expects.

use std::collections::BTreeMap;

use super::records::{FullPass, Multiplicity, ScoreTask, StateChange, StateRecord};
use super::side_table::SideTables;
use crate::data::{SampleIdx, UserIdx};
use crate::scoring::{PerSampleScore, ScoringHead};

/// Tasks whose rows are looked up together before they are scored.
const CHUNK: usize = 16;

/// A change to a worker's collection of score tasks.
pub(crate) type TaskChange = (ScoreTask, Multiplicity);

/// One sample as a worker holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Held {
    task: ScoreTask,
    score: PerSampleScore,
}

impl Held {
    fn state(&self) -> StateRecord {
        StateRecord::new(&self.task, self.score)
    }
}

/// The held states of one worker's samples.
#[derive(Debug, Default)]
pub(crate) struct HeldStates {
    /// Each user's samples, in sample order.
    by_user: BTreeMap<UserIdx, Vec<Held>>,
    /// The last full pass the held scores were computed in.
    full_pass: FullPass,
    /// Scratch space of [`update_user`], kept between users and rounds.
    work: Work,
}

impl HeldStates {
    /// Applies one round's task changes (in any order, not consolidated), re-scoring every
    /// held sample if the round is a full pass, and hands each sample's state change to
    /// `emit` in `(user, sample)` order.
    pub(crate) fn apply_round(
        &mut self,
        changes: &mut Vec<TaskChange>,
        tables: &SideTables,
        emit: &mut impl FnMut(StateChange),
    ) {
        // Stable: the joins hand their output almost in this order, so this is nearly linear.
        changes.sort_by_key(|&(task, _)| (task.user, task.sample, task));
        consolidate_adjacent(changes);
        let full_pass = tables.full_pass != self.full_pass;
        self.full_pass = tables.full_pass;
        let mut groups = changes.chunk_by(|a, b| a.0.user == b.0.user).peekable();
        if !full_pass {
            for group in groups {
                let user = group[0].0.user;
                let held = self.by_user.entry(user).or_default();
                update_user(user, held, group, false, &mut self.work, tables, emit);
                if held.is_empty() {
                    self.by_user.remove(&user);
                }
            }
            return;
        }
        // Every held user in order, with the changed users who hold nothing yet in between.
        let mut created = Vec::new();
        let mut emptied = Vec::new();
        let mut fresh_user = |group: &[TaskChange], work: &mut Work, emit: &mut _| {
            let mut held = Vec::new();
            update_user(group[0].0.user, &mut held, group, true, work, tables, emit);
            if !held.is_empty() {
                created.push((group[0].0.user, held));
            }
        };
        for (&user, held) in &mut self.by_user {
            while let Some(group) = groups.next_if(|g| g[0].0.user < user) {
                fresh_user(group, &mut self.work, emit);
            }
            let group = groups.next_if(|g| g[0].0.user == user).unwrap_or(&[]);
            update_user(user, held, group, true, &mut self.work, tables, emit);
            if held.is_empty() {
                emptied.push(user);
            }
        }
        for group in groups {
            fresh_user(group, &mut self.work, emit);
        }
        self.by_user.extend(created);
        for user in emptied {
            self.by_user.remove(&user);
        }
    }
}

/// What becomes of a sample this round.
#[derive(Clone, Copy, Debug)]
enum After {
    /// It leaves.
    Gone,
    /// It keeps its state.
    Kept(Held),
    /// It is scored from this task.
    Scored(ScoreTask),
}

/// One sample's part in a round.
#[derive(Clone, Copy, Debug)]
struct Step {
    sample: SampleIdx,
    /// Its index in the user's held samples, if it was held.
    at: Option<usize>,
    before: Option<Held>,
    after: After,
}

impl Step {
    /// The step of `sample`, held as `held` (with its index), under its consolidated task
    /// changes `changes`; `rescore` in a full pass.
    fn new(
        sample: SampleIdx,
        held: Option<(usize, Held)>,
        changes: &[TaskChange],
        rescore: bool,
    ) -> Step {
        let mut retracted = None;
        let mut inserted = None;
        for &(task, multiplicity) in changes {
            let slot = match multiplicity {
                -1 => &mut retracted,
                1 => &mut inserted,
                _ => broken(
                    sample,
                    "a score task with a multiplicity other than 1 or -1",
                ),
            };
            if slot.replace(task).is_some() {
                broken(
                    sample,
                    "two score tasks of one sample changed in the same way",
                );
            }
        }
        let before = held.map(|(_, h)| h);
        match (retracted, before) {
            (Some(task), Some(held)) if task == held.task => {}
            (Some(_), _) => broken(sample, "a retracted task that is not the one held"),
            (None, Some(_)) if inserted.is_some() => broken(
                sample,
                "a second task inserted without retracting the first",
            ),
            (None, _) => {}
        }
        let after = match (inserted, before) {
            (Some(task), _) => After::Scored(task),
            (None, Some(held)) if retracted.is_none() && rescore => After::Scored(held.task),
            (None, Some(held)) if retracted.is_none() => After::Kept(held),
            (None, _) => After::Gone,
        };
        Step {
            sample,
            at: held.map(|(at, _)| at),
            before,
            after,
        }
    }

    /// Whether the sample enters or leaves the user's held samples.
    fn moves(&self) -> bool {
        self.before.is_none() != matches!(self.after, After::Gone)
    }
}

/// Adds up the multiplicities of equal adjacent changes and drops those that cancel.
fn consolidate_adjacent(changes: &mut Vec<TaskChange>) {
    changes.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    changes.retain(|(_, m)| *m != 0);
}

/// Scratch space for one user's update.
#[derive(Debug, Default)]
struct Work {
    steps: Vec<Step>,
    tasks: Vec<ScoreTask>,
    scores: Vec<PerSampleScore>,
    rebuilt: Vec<Held>,
}

/// Applies `user`'s consolidated `changes` (sorted by sample) to its `held` samples,
/// re-scoring every one of them if `rescore`, and emits the state changes in sample order.
fn update_user(
    user: UserIdx,
    held: &mut Vec<Held>,
    changes: &[TaskChange],
    rescore: bool,
    work: &mut Work,
    tables: &SideTables,
    emit: &mut impl FnMut(StateChange),
) {
    if changes.is_empty() {
        if rescore {
            rescore_in_place(held, work, tables, emit);
        }
        return;
    }
    let by_sample = changes.chunk_by(|a, b| a.0.sample == b.0.sample);
    work.steps.clear();
    if rescore {
        // Every held sample takes part: walk the held samples and the changes side by side.
        let mut groups = by_sample.peekable();
        let mut next = 0;
        loop {
            let held_sample = held.get(next).map(|h| h.task.sample);
            let changed_sample = groups.peek().map(|g| g[0].0.sample);
            let Some(sample) = held_sample.into_iter().chain(changed_sample).min() else {
                break;
            };
            let before = (held_sample == Some(sample)).then(|| (next, held[next]));
            next += usize::from(before.is_some());
            let group = groups.next_if(|g| g[0].0.sample == sample).unwrap_or(&[]);
            work.steps.push(Step::new(sample, before, group, true));
        }
    } else {
        for group in by_sample {
            let sample = group[0].0.sample;
            let before = held
                .binary_search_by_key(&sample, |h| h.task.sample)
                .ok()
                .map(|at| (at, held[at]));
            work.steps.push(Step::new(sample, before, group, false));
        }
    }

    work.tasks.clear();
    work.tasks
        .extend(work.steps.iter().filter_map(|step| match step.after {
            After::Scored(task) => Some(task),
            _ => None,
        }));
    score_tasks(tables, &work.tasks, &mut work.scores);

    let mut scores = work.scores.iter();
    let mut moved = false;
    for step in &mut work.steps {
        let after = match step.after {
            After::Gone => None,
            After::Kept(held) => Some(held),
            After::Scored(task) => scores.next().map(|&score| Held { task, score }),
        };
        // From here on the step says what the sample is now.
        step.after = after.map_or(After::Gone, After::Kept);
        let (old, new) = (step.before.map(|h| h.state()), after.map(|h| h.state()));
        if old != new {
            emit(StateChange {
                user,
                sample: step.sample,
                state: new,
            });
        }
        match (step.at, after) {
            (Some(at), Some(after)) => held[at] = after,
            _ => moved |= step.moves(),
        }
    }
    if moved {
        rebuild(held, &work.steps, &mut work.rebuilt);
    }
}

/// Re-scores every one of a user's held samples, none of which changed otherwise (the
/// common case of a head change), and emits the states that moved.
fn rescore_in_place(
    held: &mut [Held],
    work: &mut Work,
    tables: &SideTables,
    emit: &mut impl FnMut(StateChange),
) {
    work.tasks.clear();
    work.tasks.extend(held.iter().map(|h| h.task));
    score_tasks(tables, &work.tasks, &mut work.scores);
    for (held, &score) in held.iter_mut().zip(&work.scores) {
        let old = held.state();
        held.score = score;
        let new = held.state();
        if old != new {
            emit(StateChange {
                user: held.task.user,
                sample: held.task.sample,
                state: Some(new),
            });
        }
    }
}

/// Rebuilds `held` after samples entered or left: the held samples no step touched, and
/// every step's outcome (scored by now: [`After::Kept`] or [`After::Gone`]), in sample order.
fn rebuild(held: &mut Vec<Held>, steps: &[Step], rebuilt: &mut Vec<Held>) {
    rebuilt.clear();
    let mut kept = held.iter().peekable();
    for step in steps {
        while let Some(held) = kept.next_if(|h| h.task.sample < step.sample) {
            rebuilt.push(*held);
        }
        kept.next_if(|h| h.task.sample == step.sample);
        if let After::Kept(held) = step.after {
            rebuilt.push(held);
        }
    }
    rebuilt.extend(kept);
    std::mem::swap(held, rebuilt);
}

/// Scores `tasks` into `scores` with the live head. Tasks are scored in chunks of [`CHUNK`]:
/// first every task's rows are looked up and touched, then scored. The rows of a large pool
/// are mostly not in cache, and looking up a chunk's rows back to back lets their memory
/// loads overlap instead of waiting for one row at a time (this cut the score operator's
/// time by a third at 10M samples, see `docs/benchmarks.md (scale section)`).
fn score_tasks(tables: &SideTables, tasks: &[ScoreTask], scores: &mut Vec<PerSampleScore>) {
    let head = &tables.head;
    scores.clear();
    let mut rows = Vec::with_capacity(CHUNK);
    for chunk in tasks.chunks(CHUNK) {
        rows.clear();
        rows.extend(chunk.iter().map(|task| rows_of(tables, task)));
        touch(&rows);
        scores.extend(
            chunk
                .iter()
                .zip(&rows)
                .map(|(task, rows)| score_with(head, rows, task)),
        );
    }
}

/// A task's user row and item row.
type TaskRows<'t> = (&'t [f32], &'t [f32]);

/// Looks up the rows of `task`. A task whose row version is not the live one is an internal
/// invariant violation (the joins re-key a sample whenever its rows change).
fn rows_of<'t>(tables: &'t SideTables, task: &ScoreTask) -> TaskRows<'t> {
    let missing = |what: &str, id: u32, version: u32| -> ! {
        broken(
            task.sample,
            &format!("{what} {id} at row version {version} is not in the side tables"),
        )
    };
    let user_row = tables
        .users
        .get(task.user, task.user_version)
        .unwrap_or_else(|| missing("user", task.user, task.user_version));
    let item_row = tables
        .items
        .get(task.item, task.item_side.version)
        .unwrap_or_else(|| missing("item", task.item, task.item_side.version));
    (user_row, item_row)
}

/// Reads one float of every cache line of the rows, so that their loads are under way
/// together before the first score needs them.
fn touch(rows: &[TaskRows<'_>]) {
    const FLOATS_PER_LINE: usize = 16;
    let mut bits = 0u32;
    for (user_row, item_row) in rows {
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

/// The score of `task` from its rows.
fn score_with(
    head: &ScoringHead,
    &(user_row, item_row): &TaskRows<'_>,
    task: &ScoreTask,
) -> PerSampleScore {
    head.score(user_row, item_row, task.label.decode())
}

/// Stops the worker on a broken invariant of the engine; the engine reports the worker's
/// failure as an error.
fn broken(sample: SampleIdx, what: &str) -> ! {
    panic!("internal error in the scoring engine: {what} (sample {sample}; please report this bug)")
}
