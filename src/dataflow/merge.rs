//! The driver's last step of a round: the workers' score updates, consolidated and put in an
//! order that does not depend on the number of workers, `(user, sample, diff, state)`.
//!
//! A round that changes 1% of 10M samples' user rows returns ~200k updates, so this is on
//! the engine's critical path. The order is chosen to be the one the workers already
//! produce: each worker's last join emits its matches key by key, and its key is the user, so
//! a worker's buffer is (almost always) sorted by `(user, sample)` already. The merge checks
//! that in one sequential pass (sorting a buffer only if it is not), then walks the workers'
//! buffers side by side, like the merge step of a merge sort, so every record is read once,
//! in order. Ordering by sample instead cost a sort of ~200k 48-byte records, most of it
//! spent waiting for memory (10% of a 10M-sample update); see `docs/benchmarks.md (scale section)`.
//! Only a sample with several updates (usually one retraction and one insertion) is
//! consolidated among its own.
//!
//! The emptied buffers are handed back to the workers for later rounds, so collecting
//! allocates nothing once they have grown, unless a round was so large (a first round, a
//! head change) that keeping its buffers would pin their memory.

use super::graph::CollectedUpdate;
use super::records::{Multiplicity, StateRecord};
use super::worker::RoundResult;
use super::{RoundOutput, SampleState, ScoreUpdate};
use crate::data::{SampleIdx, UserIdx};

/// Buffers with room for more than this many updates (48 bytes each) are not kept.
const KEEP_CAPACITY_LIMIT: usize = 1 << 19;

/// The order of the output, across samples.
fn order_key(update: &CollectedUpdate) -> (UserIdx, SampleIdx) {
    (update.1.user, update.0)
}

/// Merges rounds' worker results; holds the emptied buffers between rounds.
#[derive(Debug, Default)]
pub(crate) struct UpdateMerger {
    spares: Vec<Vec<CollectedUpdate>>,
}

impl UpdateMerger {
    /// An empty buffer for a worker to collect its next round's updates in.
    pub(crate) fn spare(&mut self) -> Vec<CollectedUpdate> {
        self.spares.pop().unwrap_or_default()
    }

    /// Consolidates the workers' results into the round's output.
    pub(crate) fn merge(&mut self, results: Vec<RoundResult>) -> RoundOutput {
        let mut rescored = 0;
        let mut retracted = 0;
        let mut buffers = Vec::with_capacity(results.len());
        for mut result in results {
            rescored += result.inserted;
            retracted += result.retracted;
            if !result.updates.is_sorted_by_key(order_key) {
                result.updates.sort_by_key(order_key);
            }
            buffers.push(result.updates);
        }
        let updates = merge_sorted(&buffers);
        for buffer in buffers {
            keep(buffer, &mut self.spares);
        }
        RoundOutput {
            updates,
            rescored,
            retracted,
        }
    }
}

/// The output updates of buffers each sorted by [`order_key`]: each sample's updates
/// consolidated and ordered by `(diff, state)`, retractions first.
fn merge_sorted(buffers: &[Vec<CollectedUpdate>]) -> Vec<ScoreUpdate> {
    let mut updates = Vec::with_capacity(buffers.iter().map(Vec::len).sum());
    let mut heads = vec![0usize; buffers.len()];
    let mut group: Vec<(StateRecord, Multiplicity)> = Vec::new();
    loop {
        let next = buffers
            .iter()
            .zip(&heads)
            .filter_map(|(buffer, &head)| buffer.get(head).map(order_key))
            .min();
        let Some(key) = next else {
            return updates;
        };
        group.clear();
        for (buffer, head) in buffers.iter().zip(&mut heads) {
            while let Some(update) = buffer.get(*head).filter(|u| order_key(u) == key) {
                group.push((update.1, update.2));
                *head += 1;
            }
        }
        if group.len() > 1 {
            group.sort_unstable_by_key(|&(state, _)| state);
            consolidate(&mut group);
            group.sort_unstable_by_key(|&(state, m)| (m, state));
        }
        updates.extend(group.iter().map(|&(state, m)| ScoreUpdate {
            sample: key.1,
            state: sample_state(&state),
            diff: m as i64,
        }));
    }
}

/// Keeps an emptied buffer for a later round unless it is large.
fn keep(mut buffer: Vec<CollectedUpdate>, spares: &mut Vec<Vec<CollectedUpdate>>) {
    if buffer.capacity() > 0 && buffer.capacity() <= KEEP_CAPACITY_LIMIT {
        buffer.clear();
        spares.push(buffer);
    }
}

/// Adds up the multiplicities of equal adjacent states and drops those that cancel.
fn consolidate(group: &mut Vec<(StateRecord, Multiplicity)>) {
    group.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 += later.1;
        }
        same
    });
    group.retain(|&(_, m)| m != 0);
}

/// The public form of a state record.
fn sample_state(record: &StateRecord) -> SampleState {
    SampleState {
        user: record.user,
        item: record.item,
        score: record.score(),
        item_labels: record.item_labels,
        item_entropy: f32::from_bits(record.item_entropy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(prediction: f32) -> StateRecord {
        StateRecord {
            user: 0,
            item: 0,
            prediction: prediction.to_bits(),
            variance: 0,
            loss: None,
            item_labels: 0,
            item_entropy: 0,
        }
    }

    #[test]
    fn merge_consolidates_and_orders_retractions_first() {
        let results = vec![
            RoundResult {
                updates: vec![(2, state(1.0), 1), (1, state(5.0), 1), (1, state(3.0), -1)],
                inserted: 2,
                retracted: 1,
            },
            RoundResult {
                updates: vec![(2, state(1.0), -1), (0, state(2.0), 1)],
                inserted: 1,
                retracted: 1,
            },
        ];
        let mut merger = UpdateMerger::default();
        let output = merger.merge(results);
        let got: Vec<(u32, f32, i64)> = output
            .updates
            .iter()
            .map(|u| (u.sample, u.state.score.prediction, u.diff))
            .collect();
        assert_eq!(got, vec![(0, 2.0, 1), (1, 3.0, -1), (1, 5.0, 1)]);
        assert_eq!((output.rescored, output.retracted), (3, 2));
        // Both buffers are kept for later rounds, emptied.
        let spares = [merger.spare(), merger.spare(), merger.spare()];
        assert!(spares[..2].iter().all(|b| b.is_empty() && b.capacity() > 0));
        assert_eq!(spares[2].capacity(), 0);
    }

    /// A reference order: every update sorted by `(user, sample, state)`, consolidated,
    /// then by `(user, sample, diff, state)`.
    fn reference(updates: &[CollectedUpdate]) -> Vec<(u32, u32, u32, i64)> {
        let mut all = updates.to_vec();
        all.sort_by_key(|&(sample, state, _)| (state.user, sample, state));
        let mut out: Vec<CollectedUpdate> = Vec::new();
        for (sample, state, m) in all {
            match out.last_mut() {
                Some(last) if last.0 == sample && last.1 == state => last.2 += m,
                _ => out.push((sample, state, m)),
            }
        }
        out.retain(|u| u.2 != 0);
        out.sort_by_key(|&(sample, state, m)| (state.user, sample, m, state));
        out.iter()
            .map(|&(sample, state, m)| (state.user, sample, state.prediction, m as i64))
            .collect()
    }

    #[test]
    fn large_rounds_come_out_in_the_reference_order_whatever_the_split() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for (n, keys) in [
            (3usize, 2u64),
            (5000, 40),
            (40_000, 1 << 20),
            (20_000, 1 << 32),
        ] {
            let updates: Vec<CollectedUpdate> = (0..n)
                .map(|_| {
                    let m = if next(2) == 0 { -1 } else { 1 };
                    let mut record = state(next(3) as f32);
                    record.user = next(keys.min(100)) as u32;
                    (next(keys) as u32, record, m)
                })
                .collect();
            let expected = reference(&updates);
            for workers in [1, 3] {
                // Unsorted buffers, and buffers sorted as workers send them.
                for presorted in [false, true] {
                    let mut results: Vec<RoundResult> =
                        (0..workers).map(|_| RoundResult::default()).collect();
                    for (k, update) in updates.iter().enumerate() {
                        results[k % workers].updates.push(*update);
                    }
                    if presorted {
                        for result in &mut results {
                            result.updates.sort_by_key(order_key);
                        }
                    }
                    let got: Vec<(u32, u32, u32, i64)> = UpdateMerger::default()
                        .merge(results)
                        .updates
                        .iter()
                        .map(|u| {
                            let prediction = u.state.score.prediction.to_bits();
                            (u.state.user, u.sample, prediction, u.diff)
                        })
                        .collect();
                    assert_eq!(got, expected, "{n} updates over {workers} worker(s)");
                }
            }
        }
    }
}
