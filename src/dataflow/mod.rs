//! The incremental scoring engine: per-sample prediction, ensemble uncertainty, loss (where
//! the label is known) and item statistics, maintained as differential dataflow collections,
//! so that a round which changes a few model rows re-scores only the samples touching them.
//!
//! This is the only module that imports timely and differential (pinned versions; their APIs
//! change between minor versions). Everything it exports is plain data.
//!
//! # Using it
//!
//! The driver starts an engine with a number of worker threads and the model's
//! [`ScoringHead`](crate::scoring::ScoringHead), then calls [`ScoringEngine::apply`] once per round with what changed:
//! samples entering or leaving the pool, user and item scoring rows that were (re)set, newly
//! labelled events, and, when a parameter shared by every sample changed, the new head. Each
//! call returns the changes to the per-sample states: each changed sample's new state, or
//! `None` for a sample that has no state any more:
//!
//! ```
//! use recsift::dataflow::{EngineUpdate, PoolSample, ScoringEngine};
//! use recsift::scoring::{Loss, RowLayout, ScoringHead};
//!
//! let layout = RowLayout { members: 1, dim: 2 };
//! let head = ScoringHead::new(layout, vec![3.0], Loss::Squared);
//! let mut engine = ScoringEngine::start(2, head)?;
//!
//! let first = engine.apply(EngineUpdate {
//!     insert: vec![PoolSample { sample: 0, user: 0, item: 0, label: Some(4.0) }],
//!     user_rows: vec![(0, vec![0.5, 1.0, 0.0])],
//!     item_rows: vec![(0, vec![0.0, 0.5, 2.0])],
//!     ..EngineUpdate::default()
//! })?;
//! assert_eq!(first.updates.len(), 1);
//! let state = first.updates[0].state.expect("sample 0 has a state");
//! assert_eq!(state.score.prediction, 4.0); // 3 + 0.5 + 0 + 1 * 0.5
//!
//! // A new user row: the sample's state is replaced.
//! let second = engine.apply(EngineUpdate {
//!     user_rows: vec![(0, vec![0.0, 1.0, 0.0])],
//!     ..EngineUpdate::default()
//! })?;
//! let predictions: Vec<Option<f32>> =
//!     second.updates.iter().map(|u| u.state.map(|s| s.score.prediction)).collect();
//! assert_eq!(predictions, vec![Some(3.5)]);
//!
//! // The sample leaves the pool: it has no state any more.
//! let third = engine.apply(EngineUpdate {
//!     remove: vec![PoolSample { sample: 0, user: 0, item: 0, label: Some(4.0) }],
//!     ..EngineUpdate::default()
//! })?;
//! assert_eq!(third.updates[0].state, None);
//! assert_eq!((third.rescored, third.removed), (0, 1));
//! engine.finish()?;
//! # Ok::<(), recsift::dataflow::EngineError>(())
//! ```
//!
//! A sample has a state exactly while it is in the pool and both its user row and its item
//! row exist. Rows are *set*: a new row of an id replaces its previous one, and every sample
//! scored from it is re-scored.
//!
//! # How it works
//!
//! Each worker runs the dataflow of `graph.rs` (`pool ⋈ item side ⋈ user rows → score`),
//! rendered from the pipeline nodes the engine runs ([`EngineGraph`]).
//! Collections carry ids and *row versions* only, never row floats: the floats live in
//! versioned side tables (`side_table.rs`) shared by the workers, and the score operator
//! reads the rows at the versions that the joins brought together. A changed row gets a new
//! version, which re-keys exactly the samples that read it. Item statistics (label count and
//! entropy), where the graph's select node ranks by them, are a reduce per item over its
//! labelled events, joined on the item side, so a new label re-keys only that item's samples.
//!
//! The score operator remembers each sample's task and score (`held_states.rs`, about 50
//! bytes a sample): a changed task is scored anew and its old state is simply replaced,
//! never recomputed. A head change, which touches every sample, is no record in the
//! dataflow at all, and neither are rows read by more than 15% of the pool (replaced in
//! place under their versions): such a round is a *full pass*, in which the operator
//! re-scores every sample it holds at once, the work of a plain loop over the pool.
//!
//! The workers run in their own threads, started once per run with the [`EngineSite`]
//! (`workers.rs`; `timely::execute_from` over in-process channels or, in a cluster, the
//! sockets to the other processes), before any data is loaded: besides scoring they carry
//! the gather dataflow (`gather.rs`), through which the processes of a cluster share what
//! each read of the input ([`Gatherer`]). They talk to the caller over channels: `apply`
//! hands each worker a
//! round-robin share of the round's inputs at time `t`; each worker feeds them, advances to
//! `t + 1`, steps (parking when idle) until its probe passes `t`, and sends back the score
//! updates it collected. `apply` merges and consolidates them (`merge.rs`), so the output does
//! not depend on the number of workers. A worker that panics or goes away turns into an
//! [`EngineError`], and the engine refuses further rounds. Idle workers block on their
//! command channel (no CPU between rounds); an empty round costs about 45 µs.
//!
//! Choices worth knowing (and why):
//! - The pool meets the item side first and the user rows last: a training step changes a
//!   few user rows most often, and then only the last join runs.
//! - The score is computed by an operator right after the last join
//!   (`operators/score.rs`), not inside the join's closure: it gathers the round's task
//!   changes, consolidates them (they arrive almost sorted, so this is nearly linear; a
//!   task that cancels is never scored) and takes the side tables' read lock once per
//!   round.
//! - The output is one change per changed sample (its new state, or none), not a
//!   retraction and an insertion: half the records to hand over, merge and apply.
//! - The driver keeps 12 bytes per sample index (user, item, label) to check that a
//!   removal repeats its insertion; a wrong removal would otherwise corrupt the pool silently.
//!
//! # Measured
//!
//! `cargo test --release --lib dataflow::measurement -- --ignored --nocapture` on the
//! project's 2-core machine (shared, so absolute times vary by up to 2x between runs; the
//! three were measured together), `d = 32`, one member, 1% of the user rows changed per
//! round, update time as the mean of 10 rounds:
//!
//! | samples / users / items | full re-score loop | hand-written index | engine, 1 worker | engine RSS |
//! |---|---|---|---|---|
//! | 1M / 100k / 10k | 88.6 ms | 1.89 ms | 5.9 ms | 230 MiB loaded, 320 MiB peak |
//! | 10M / 1M / 100k | 1654 ms | 26.3 ms | 76 ms | 1.2 GiB loaded, 2.1 GiB peak |
//!
//! The first round (loading everything) takes about 1 s per million samples on one worker.

mod cluster;
mod engine;
mod gather;
mod graph;
mod held_states;
mod merge;
mod operators;
mod records;
mod side_table;
mod worker;
mod workers;

#[cfg(test)]
mod reference_tests;

pub use cluster::{Cluster, EngineSite, Gatherer, Topology};
pub use engine::ScoringEngine;

use crate::data::{ItemIdx, SampleIdx, UserIdx};
use crate::scoring::{PerSampleScore, RowLayout};

/// The nodes of a pipeline that the engine renders into its dataflow (`graph.rs`): the
/// score node, the model whose rows it reads, and the select node that reads the item
/// statistics, if its strategy ranks by them. Node names label the dataflow's operators;
/// the per-item reduce of labels is rendered only for a reader of item statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineGraph {
    /// The score node.
    pub score: String,
    /// The model (a `train` or `fuse` node) whose rows the score node reads.
    pub model: String,
    /// The select node that ranks by item statistics (label count and entropy), if one does:
    /// only then are they maintained, and only then may an update carry labels.
    pub item_statistics_for: Option<String>,
}

impl EngineGraph {
    /// The graph of an engine run outside a pipeline (benchmarks, tests, examples): a score
    /// node `score` reading model `model`, with item statistics maintained for a select node
    /// `select`.
    pub fn standalone() -> Self {
        Self {
            score: "score".into(),
            model: "model".into(),
            item_statistics_for: Some("select".into()),
        }
    }
}

/// A sample of the pool: one logged event, scored while it is in the pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolSample {
    /// The sample's index in the experiment's event table.
    pub sample: SampleIdx,
    /// Its user (`u32::MAX` is reserved).
    pub user: UserIdx,
    /// Its item (`u32::MAX` is reserved).
    pub item: ItemIdx,
    /// Its label when known (the loss is computed then); must be finite.
    pub label: Option<f32>,
}

/// The maintained state of a pool sample under the current model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleState {
    /// The sample's user.
    pub user: UserIdx,
    /// The sample's item.
    pub item: ItemIdx,
    /// Prediction, ensemble variance and loss (if the label is known), from
    /// [`crate::scoring::ScoringHead::score`].
    pub score: PerSampleScore,
    /// Labelled events of the item so far (its popularity); 0 where the engine's graph
    /// maintains no item statistics.
    pub item_labels: u32,
    /// Shannon entropy, in bits, of the distribution of the item's labels (0 with fewer than
    /// two distinct labels, or where the graph maintains no item statistics).
    pub item_entropy: f32,
}

/// What changed since the previous round. Everything is optional; `..Default::default()`.
#[derive(Clone, Debug, Default)]
pub struct EngineUpdate {
    /// Samples entering the pool. A sample may leave and re-enter in the same update.
    pub insert: Vec<PoolSample>,
    /// Samples leaving the pool, exactly as they were inserted.
    pub remove: Vec<PoolSample>,
    /// New scoring rows of users (at most one per user per update), `layout.row_len()` long.
    pub user_rows: Vec<(UserIdx, Vec<f32>)>,
    /// New scoring rows of items (at most one per item per update).
    pub item_rows: Vec<(ItemIdx, Vec<f32>)>,
    /// Newly labelled events `(item, label)`, counted in the item statistics (only an
    /// engine whose graph maintains them takes labels: [`EngineGraph::item_statistics_for`]).
    pub labels: Vec<(ItemIdx, f32)>,
    /// A new head, when a parameter shared by every sample changed: every sample is
    /// re-scored. Its row layout must not change.
    pub head: Option<crate::scoring::ScoringHead>,
}

/// One change to a sample's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreUpdate {
    /// The sample's user.
    pub user: UserIdx,
    /// The sample.
    pub sample: SampleIdx,
    /// Its state after the round, replacing any it had; `None` when it has no state any
    /// more (it left the pool).
    pub state: Option<SampleState>,
}

/// What one round changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundOutput {
    /// The state changes, at most one per sample (a state that did not change does not
    /// appear), sorted by `(user, sample)`. (User first because the workers produce their
    /// changes in that order, so the merge need not sort them; see `merge.rs`.)
    pub updates: Vec<ScoreUpdate>,
    /// States set this round (each a new score from `ScoringHead::score`).
    pub rescored: u64,
    /// States removed this round.
    pub removed: u64,
    /// Whether the round re-scored every sample in one pass over the held states (a new
    /// head, or changed rows read by most of the pool) rather than only the samples whose
    /// rows changed. The output is the same either way; only the cost differs.
    pub full_pass: bool,
}

/// Which table a row belongs to, in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowSide {
    /// A user row.
    User,
    /// An item row.
    Item,
}

impl std::fmt::Display for RowSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RowSide::User => "user",
            RowSide::Item => "item",
        })
    }
}

/// Why the scoring engine refused an update or stopped.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    /// `start` was asked for no workers.
    #[error("the scoring engine needs at least one worker thread (got 0); ask for 1 or more")]
    NoWorkers,
    /// timely could not start its workers.
    #[error("could not start the scoring engine's worker threads: {0}")]
    Start(String),
    /// A head whose offsets do not match its layout.
    #[error(
        "the scoring head has {found} offsets but its layout has {expected} members; \
         give one offset per member"
    )]
    HeadOffsets {
        /// Members in the layout.
        expected: usize,
        /// Offsets given.
        found: usize,
    },
    /// A new head with another row layout than the engine's.
    #[error(
        "a new scoring head must keep the row layout ({expected:?}), got {found:?}; \
         start a new engine for a model of another shape"
    )]
    HeadLayout {
        /// The engine's layout.
        expected: RowLayout,
        /// The new head's layout.
        found: RowLayout,
    },
    /// A row of the wrong length.
    #[error(
        "the {side} row of {side} {id} has {found} values but the layout needs {expected} \
         (members * (1 + dim))"
    )]
    RowLength {
        /// User or item.
        side: RowSide,
        /// The id.
        id: u32,
        /// `layout.row_len()`.
        expected: usize,
        /// The row's length.
        found: usize,
    },
    /// The same row twice in one update.
    #[error("{side} {id} has two rows in one update; send only its latest row")]
    DuplicateRow {
        /// User or item.
        side: RowSide,
        /// The id.
        id: u32,
    },
    /// A pool sample with a NaN or infinite label.
    #[error("sample {sample} has the label {label}, which is not a finite number")]
    SampleLabel {
        /// The sample.
        sample: SampleIdx,
        /// Its label.
        label: f32,
    },
    /// Labels fed to an engine whose graph maintains no item statistics.
    #[error(
        "{labels} labelled events were fed to an engine that maintains no item statistics \
         (no select node of its graph ranks by them); start it with a graph whose \
         `item_statistics_for` names the select node that reads them, or feed no labels"
    )]
    UnreadLabels {
        /// Labels fed.
        labels: usize,
    },
    /// A labelled event with a NaN or infinite label.
    #[error("a labelled event of item {item} has the label {label}, which is not a finite number")]
    EventLabel {
        /// The item.
        item: ItemIdx,
        /// The label.
        label: f32,
    },
    /// A pool sample using the reserved index `u32::MAX`.
    #[error("sample {sample} uses the reserved index 4294967295 as its user or item")]
    ReservedIndex {
        /// The sample.
        sample: SampleIdx,
    },
    /// A sample inserted while it is in the pool.
    #[error("sample {sample} is already in the pool; remove it before inserting it again")]
    AlreadyInPool {
        /// The sample.
        sample: SampleIdx,
    },
    /// A sample removed while it is not in the pool.
    #[error("sample {sample} is not in the pool, so it cannot be removed")]
    NotInPool {
        /// The sample.
        sample: SampleIdx,
    },
    /// A removal that does not repeat the inserted sample.
    #[error(
        "sample {sample} was inserted as {inserted:?} but removed as {removed:?}; \
         remove a sample exactly as it was inserted"
    )]
    RemovalMismatch {
        /// The sample.
        sample: SampleIdx,
        /// `(user, item, label)` as inserted.
        inserted: (UserIdx, ItemIdx, Option<f32>),
        /// `(user, item, label)` as removed.
        removed: (UserIdx, ItemIdx, Option<f32>),
    },
    /// A worker thread panicked.
    #[error("scoring worker {worker} panicked: {message}")]
    WorkerPanicked {
        /// The worker's index.
        worker: usize,
        /// The panic message.
        message: String,
    },
    /// A worker thread ended or dropped its channel without answering.
    #[error("scoring worker {worker} stopped without answering")]
    WorkerExited {
        /// The worker's index.
        worker: usize,
    },
    /// This process cannot listen on its cluster address.
    #[error(
        "cannot listen on {address} for the other processes of the cluster: {reason}; \
         is another program (or an earlier run) using that port? choose another with \
         `cluster: {{port: ...}}` or a hostfile"
    )]
    Listen {
        /// This process's address.
        address: String,
        /// The operating system's reason.
        reason: String,
    },
    /// A peer process did not connect in time.
    #[error(
        "process {process} could not reach process {peer} at {address} within {} s ({reason}); \
         start every process with the same pipeline, the same --processes and its own \
         --process, check the address (hostfile) and the firewall, or wait longer with \
         `cluster: {{timeout_s: ...}}`",
        waited.as_secs_f64()
    )]
    PeerUnreachable {
        /// This process's index.
        process: usize,
        /// The peer's index.
        peer: usize,
        /// The peer's address.
        address: String,
        /// How long this process waited.
        waited: std::time::Duration,
        /// The last connection error.
        reason: String,
    },
    /// A peer belongs to another run.
    #[error("refusing process {peer} at {address}: {what}")]
    PeerMismatch {
        /// The peer's index (as it says).
        peer: usize,
        /// Where it connected from or to.
        address: String,
        /// What differs.
        what: String,
    },
    /// The connection to another process broke during the run.
    #[error(
        "lost the connection to another process of the cluster (it stopped, or the network \
         failed): {message}; the run stopped (see that process's error), nothing was written"
    )]
    PeerLost {
        /// What the network layer said.
        message: String,
    },
    /// A round was asked of an engine that failed earlier.
    #[error("the scoring engine failed earlier and cannot continue ({cause}); start a new engine")]
    Failed {
        /// The first failure.
        cause: String,
    },
}
