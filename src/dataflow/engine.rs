//! The driver side of the scoring engine: validates a round's update, versions the rows,
//! hands each worker its share, and merges the workers' score updates deterministically.

use super::cluster::{EngineSite, Topology};
use super::merge::UpdateMerger;
use super::records::{ItemFact, LabelBits, PoolRecord, RoundTime};
use super::side_table::{SharedTables, SideTables, VersionChange, VersionedRows};
use super::worker::{RoundShare, WorkerCommand, WorkerReply};
use super::{EngineError, EngineGraph, EngineUpdate, PoolSample, RoundOutput, RowSide};
use crate::data::{ItemIdx, SampleIdx, UserIdx};
use crate::sample_table::{SampleTable, Slot};
use crate::scoring::{RowLayout, ScoringHead};

/// The incremental scoring engine: timely workers in their own threads, driven round by
/// round through [`ScoringEngine::apply`]. See the [module documentation](super).
pub struct ScoringEngine {
    /// The pipeline nodes the workers rendered.
    graph: EngineGraph,
    layout: RowLayout,
    time: RoundTime,
    tables: SharedTables,
    pool: PoolRegistry,
    /// The worker threads (shared with the site's gatherers).
    site: EngineSite,
    /// Merges the workers' updates, and keeps their buffers for later rounds.
    merger: UpdateMerger,
}

impl ScoringEngine {
    /// Starts `workers` timely worker threads in this process, scoring with `head`, item
    /// statistics maintained ([`EngineGraph::standalone`]).
    pub fn start(workers: usize, head: ScoringHead) -> Result<Self, EngineError> {
        Self::start_on(
            EngineSite::connect(Topology::threads(workers))?,
            head,
            EngineGraph::standalone(),
        )
    }

    /// Starts scoring on `site`'s workers (this process's part of an engine spread over a
    /// cluster, if the site is one), scoring with `head`, each worker rendering `graph`.
    ///
    /// In a cluster, every process must make the same calls with the same updates (the
    /// drivers are replicas): each feeds only its own workers' shares, and every process gets
    /// every round's full output.
    pub fn start_on(
        site: EngineSite,
        head: ScoringHead,
        graph: EngineGraph,
    ) -> Result<Self, EngineError> {
        check_head_offsets(&head)?;
        let layout = head.layout;
        let tables = SharedTables::new(SideTables {
            users: VersionedRows::new(layout.row_len()),
            items: VersionedRows::new(layout.row_len()),
            head,
            full_pass: 0,
        });
        site.workers().install(&tables, &graph)?;
        Ok(Self {
            graph,
            layout,
            time: 0,
            tables,
            pool: PoolRegistry::default(),
            site,
            merger: UpdateMerger::default(),
        })
    }

    /// The pipeline nodes this engine renders.
    pub fn graph(&self) -> &EngineGraph {
        &self.graph
    }

    /// Number of worker threads in this process.
    pub fn workers(&self) -> usize {
        self.site.topology().workers
    }

    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.time
    }

    /// Runs one round: feeds `update` at the current time, waits until every worker has
    /// finished it, and returns the changes to the sample states.
    ///
    /// An update that fails validation leaves the engine as it was (the error says what to
    /// fix). A worker failure is reported once as [`EngineError::WorkerPanicked`] or
    /// [`EngineError::WorkerExited`]; later calls return [`EngineError::Failed`].
    pub fn apply(&mut self, update: EngineUpdate) -> Result<RoundOutput, EngineError> {
        self.site.workers().refuse_after_failure()?;
        self.check(&update)?;
        let pool_changes = self.pool.change(&update.remove, &update.insert)?;
        let full_pass = self.needs_full_pass(&update);
        let shares = self.version_and_share(update, pool_changes, full_pass);
        let output = self.run_round(shares, full_pass)?;
        self.time += 1;
        Ok(output)
    }

    /// Shuts the workers down and waits for their threads (in a cluster, until every
    /// process has finished).
    pub fn finish(self) -> Result<(), EngineError> {
        self.site.shut_down()
    }

    /// Checks everything in `update` that does not depend on the pool's contents.
    fn check(&self, update: &EngineUpdate) -> Result<(), EngineError> {
        if let Some(head) = &update.head {
            check_head_offsets(head)?;
            if head.layout != self.layout {
                return Err(EngineError::HeadLayout {
                    expected: self.layout,
                    found: head.layout,
                });
            }
        }
        let row_len = self.layout.row_len();
        for (side, rows) in [
            (RowSide::User, &update.user_rows),
            (RowSide::Item, &update.item_rows),
        ] {
            for (id, row) in rows {
                if row.len() != row_len {
                    return Err(EngineError::RowLength {
                        side,
                        id: *id,
                        expected: row_len,
                        found: row.len(),
                    });
                }
            }
            let mut ids: Vec<u32> = rows.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(EngineError::DuplicateRow { side, id: pair[0] });
            }
        }
        if self.graph.item_statistics_for.is_none() && !update.labels.is_empty() {
            return Err(EngineError::UnreadLabels {
                labels: update.labels.len(),
            });
        }
        for &(item, label) in &update.labels {
            if !label.is_finite() {
                return Err(EngineError::EventLabel { item, label });
            }
        }
        for sample in &update.insert {
            if let Some(label) = sample.label.filter(|l| !l.is_finite()) {
                return Err(EngineError::SampleLabel {
                    sample: sample.sample,
                    label,
                });
            }
            if sample.user == u32::MAX || sample.item == u32::MAX {
                return Err(EngineError::ReservedIndex {
                    sample: sample.sample,
                });
            }
        }
        Ok(())
    }

    /// Whether `update` re-scores every sample the cheapest way, in one pass over the held
    /// states: it brings a new head, or its rows are read by more than
    /// [`FULL_PASS_SHARE`] of the pool (counting a sample once per changed row it reads).
    fn needs_full_pass(&self, update: &EngineUpdate) -> bool {
        if update.head.is_some() {
            return true;
        }
        let read = self.pool.samples_reading(
            update.user_rows.iter().map(|(user, _)| *user),
            update.item_rows.iter().map(|(item, _)| *item),
        );
        read as f64 > FULL_PASS_SHARE * self.pool.len as f64
    }

    /// Versions the update's rows and head in the side tables and splits every input
    /// round-robin over the workers of every process, keeping this process's shares (every
    /// process versions every row: the side tables are replicas). In a `full_pass` round,
    /// rows that exist are replaced in place under their version: the dataflow sees no
    /// change for them, and the score operator re-scores every sample it holds.
    fn version_and_share(
        &mut self,
        update: EngineUpdate,
        pool: Vec<(PoolSample, isize)>,
        full_pass: bool,
    ) -> Vec<RoundShare> {
        let topology = self.site.topology();
        let workers = topology.workers;
        let peers = topology.peers();
        let first = topology.process() * workers;
        // The local worker that feeds the `k`th record, if it is this process's.
        let local = |k: usize| (k % peers).checked_sub(first).filter(|&w| w < workers);
        let mut shares: Vec<RoundShare> = (0..workers).map(|_| RoundShare::default()).collect();
        for (k, (sample, m)) in pool.into_iter().enumerate() {
            if let Some(w) = local(k) {
                let record = PoolRecord {
                    sample: sample.sample,
                    user: sample.user,
                    label: LabelBits::encode(sample.label),
                };
                shares[w].pool.push(((sample.item, record), m));
            }
        }
        for (k, &(item, label)) in update.labels.iter().enumerate() {
            if let Some(w) = local(k) {
                shares[w]
                    .item_facts
                    .push(((item, ItemFact::label(label)), 1));
            }
        }

        let mut tables = self.tables.write();
        let ids = |rows: &[(u32, Vec<f32>)]| rows.iter().map(|(id, _)| *id as usize + 1).max();
        if let Some(ids) = ids(&update.user_rows) {
            tables.users.reserve_ids(ids);
        }
        if let Some(ids) = ids(&update.item_rows) {
            tables.items.reserve_ids(ids);
        }
        let mut k = 0;
        for (user, row) in &update.user_rows {
            let user = *user;
            if full_pass && tables.users.overwrite(user, row) {
                continue;
            }
            let change = tables.users.set(user, row);
            for (version, m) in version_updates(change) {
                if let Some(w) = local(k) {
                    shares[w].user_rows.push(((user, version), m));
                }
                k += 1;
            }
        }
        for (item, row) in &update.item_rows {
            let item = *item;
            if full_pass && tables.items.overwrite(item, row) {
                continue;
            }
            let change = tables.items.set(item, row);
            for (version, m) in version_updates(change) {
                if let Some(w) = local(k) {
                    shares[w]
                        .item_facts
                        .push(((item, ItemFact::Row(version)), m));
                }
                k += 1;
            }
        }
        if let Some(head) = update.head {
            // Not an input of the dataflow: the full pass scores with it.
            tables.head = head;
        }
        if full_pass {
            tables.full_pass = tables.full_pass.wrapping_add(1);
        }
        for share in &mut shares {
            share.spare = self.merger.spare();
        }
        shares
    }

    /// Sends the shares, waits for one reply per worker, and merges the results.
    fn run_round(
        &mut self,
        shares: Vec<RoundShare>,
        full_pass: bool,
    ) -> Result<RoundOutput, EngineError> {
        let time = self.time;
        let commands = shares
            .into_iter()
            .map(|share| WorkerCommand::Round { time, share })
            .collect();
        let replies = self.site.workers().command(commands)?;
        let results = replies
            .into_iter()
            .filter_map(|reply| match reply {
                WorkerReply::Round { result } => Some(result),
                _ => None,
            })
            .collect();
        Ok(self.merger.merge(results, full_pass))
    }

    /// Test hook: sends `command` to `worker` instead of its next round's share.
    #[cfg(test)]
    pub(crate) fn inject(&mut self, worker: usize, command: WorkerCommand) {
        self.site.workers().inject(worker, command);
    }

    /// Test hook: versions held in the side tables (users, items).
    #[cfg(test)]
    pub(crate) fn held_row_versions(&self) -> (usize, usize) {
        let tables = self.tables.write();
        (tables.users.held_versions(), tables.items.held_versions())
    }
}

fn check_head_offsets(head: &ScoringHead) -> Result<(), EngineError> {
    if head.offsets.len() != head.layout.members {
        return Err(EngineError::HeadOffsets {
            expected: head.layout.members,
            found: head.offsets.len(),
        });
    }
    Ok(())
}

/// The `-old +new` updates of a version change.
fn version_updates(change: VersionChange) -> impl Iterator<Item = (u32, isize)> {
    change
        .old
        .map(|old| (old, -1))
        .into_iter()
        .chain([(change.new, 1)])
}

/// The share of the pool whose samples read changed rows above which a round re-scores
/// every sample in one pass instead of re-keying those samples through the joins. Measured
/// with `recsift bench rescore` at 10M samples (`docs/benchmarks.md`, "Dense changes"): a
/// sample re-keyed through the joins costs about 6x a sample re-scored in a full pass, so
/// the joins lose above ~16% of the pool.
const FULL_PASS_SHARE: f64 = 0.15;

/// Which samples are in the pool, as inserted, to validate removals: 12 bytes per sample
/// over the span of the samples in the pool; and how many samples each user and item has
/// in it.
#[derive(Debug, Default)]
struct PoolRegistry {
    slots: SampleTable<PoolSlot>,
    per_user: Vec<u32>,
    per_item: Vec<u32>,
    /// Samples in the pool.
    len: u64,
}

/// A sample's `(user, item, label)`; `item == u32::MAX` means "not in the pool".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PoolSlot {
    user: UserIdx,
    item: ItemIdx,
    label: LabelBits,
}

impl Slot for PoolSlot {
    const ABSENT: PoolSlot = PoolSlot::VACANT;

    fn is_absent(&self) -> bool {
        *self == PoolSlot::VACANT
    }
}

impl PoolSlot {
    const VACANT: PoolSlot = PoolSlot {
        user: u32::MAX,
        item: u32::MAX,
        label: LabelBits::ABSENT,
    };

    fn of(sample: &PoolSample) -> PoolSlot {
        PoolSlot {
            user: sample.user,
            item: sample.item,
            label: LabelBits::encode(sample.label),
        }
    }

    fn described(&self) -> (UserIdx, ItemIdx, Option<f32>) {
        (self.user, self.item, self.label.decode())
    }
}

impl PoolRegistry {
    fn slot(&self, sample: SampleIdx) -> PoolSlot {
        self.slots.get(sample)
    }

    fn set(&mut self, sample: SampleIdx, slot: PoolSlot) {
        let old = self.slots.set(sample, slot);
        if old != PoolSlot::VACANT {
            self.per_user[old.user as usize] -= 1;
            self.per_item[old.item as usize] -= 1;
            self.len -= 1;
        }
        if slot != PoolSlot::VACANT {
            for (counts, id) in [
                (&mut self.per_user, slot.user),
                (&mut self.per_item, slot.item),
            ] {
                if counts.len() <= id as usize {
                    counts.resize(id as usize + 1, 0);
                }
                counts[id as usize] += 1;
            }
            self.len += 1;
        }
    }

    /// Samples in the pool that read one of `users`' or `items`' rows, counting a sample
    /// once per such row.
    fn samples_reading(
        &self,
        users: impl Iterator<Item = UserIdx>,
        items: impl Iterator<Item = ItemIdx>,
    ) -> u64 {
        let count =
            |counts: &[u32], id: u32| u64::from(counts.get(id as usize).copied().unwrap_or(0));
        users.map(|u| count(&self.per_user, u)).sum::<u64>()
            + items.map(|i| count(&self.per_item, i)).sum::<u64>()
    }

    /// Applies removals, then insertions, returning the pool's `(sample, ±1)` changes; on
    /// the first invalid one, undoes what it did and says what was wrong.
    fn change(
        &mut self,
        remove: &[PoolSample],
        insert: &[PoolSample],
    ) -> Result<Vec<(PoolSample, isize)>, EngineError> {
        let mut removed = 0;
        let mut inserted = 0;
        let mut outcome = Ok(());
        for sample in remove {
            let slot = self.slot(sample.sample);
            if slot == PoolSlot::VACANT {
                outcome = Err(EngineError::NotInPool {
                    sample: sample.sample,
                });
                break;
            }
            if slot != PoolSlot::of(sample) {
                outcome = Err(EngineError::RemovalMismatch {
                    sample: sample.sample,
                    inserted: slot.described(),
                    removed: PoolSlot::of(sample).described(),
                });
                break;
            }
            self.set(sample.sample, PoolSlot::VACANT);
            removed += 1;
        }
        if outcome.is_ok() {
            for sample in insert {
                if self.slot(sample.sample) != PoolSlot::VACANT {
                    outcome = Err(EngineError::AlreadyInPool {
                        sample: sample.sample,
                    });
                    break;
                }
                self.set(sample.sample, PoolSlot::of(sample));
                inserted += 1;
            }
        }
        if let Err(error) = outcome {
            for sample in insert[..inserted].iter().rev() {
                self.set(sample.sample, PoolSlot::VACANT);
            }
            for sample in remove[..removed].iter().rev() {
                self.set(sample.sample, PoolSlot::of(sample));
            }
            return Err(error);
        }
        let mut changes = Vec::with_capacity(remove.len() + insert.len());
        changes.extend(remove.iter().map(|s| (*s, -1)));
        changes.extend(insert.iter().map(|s| (*s, 1)));
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sample: u32, user: u32, item: u32, label: Option<f32>) -> PoolSample {
        PoolSample {
            sample,
            user,
            item,
            label,
        }
    }

    #[test]
    fn registry_rejects_bad_membership_changes_and_undoes_them() {
        let mut pool = PoolRegistry::default();
        let a = sample(5, 1, 2, None);
        let b = sample(6, 1, 3, Some(4.0));
        pool.change(&[], &[a, b]).unwrap();
        assert_eq!(
            pool.change(&[], &[a]),
            Err(EngineError::AlreadyInPool { sample: 5 })
        );
        assert_eq!(
            pool.change(&[sample(7, 0, 0, None)], &[]),
            Err(EngineError::NotInPool { sample: 7 })
        );
        assert_eq!(
            pool.change(&[sample(6, 1, 3, Some(5.0))], &[]),
            Err(EngineError::RemovalMismatch {
                sample: 6,
                inserted: (1, 3, Some(4.0)),
                removed: (1, 3, Some(5.0)),
            })
        );
        // Removed, then a failing insert later in the same update: the removal is undone.
        let c = sample(9, 0, 0, None);
        assert_eq!(
            pool.change(&[a], &[c, b]),
            Err(EngineError::AlreadyInPool { sample: 6 })
        );
        assert_eq!(pool.slot(5), PoolSlot::of(&a));
        assert_eq!(pool.slot(9), PoolSlot::VACANT);
        // Leaving and re-entering with a label in one update is fine.
        let a_labelled = sample(5, 1, 2, Some(3.0));
        let changes = pool.change(&[a], &[a_labelled]).unwrap();
        assert_eq!(changes, vec![(a, -1), (a_labelled, 1)]);
    }
}
