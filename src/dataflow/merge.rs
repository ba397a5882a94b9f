//! The driver's last step of a round: the workers' score updates, put in an order that does
//! not depend on the number of workers, `(user, sample)`.
//!
//! Every sample is scored by one worker only (the last join is keyed by user), and that
//! worker hands at most one change per sample, in `(user, sample)` order
//! (`held_states.rs`). So the merge only interleaves the workers' buffers, like the merge
//! step of a merge sort, reading every record once, in order; with one worker it is a copy.
//! A buffer out of order (in a cluster, the first worker of a process also receives the
//! other processes' changes, interleaved with its own) is sorted first. Ordering by sample instead
//! cost a sort of ~200k 48-byte records per update, most of it spent waiting for memory
//! (10% of a 10M-sample update); see `docs/benchmarks.md (scale section)`.
//!
//! The emptied buffers are handed back to the workers for later rounds, so collecting
//! allocates nothing once they have grown, unless a round was so large (a first round, a
//! head change) that keeping its buffers would pin their memory.

use super::records::{StateChange, StateRecord};
use super::worker::RoundResult;
use super::{RoundOutput, SampleState, ScoreUpdate};
use crate::data::{SampleIdx, UserIdx};

/// Buffers with room for more than this many changes (40 bytes each) are not kept.
const KEEP_CAPACITY_LIMIT: usize = 1 << 19;

/// The order of the output, across samples.
fn order_key(change: &StateChange) -> (UserIdx, SampleIdx) {
    (change.user, change.sample)
}

/// Merges rounds' worker results; holds the emptied buffers between rounds.
#[derive(Debug, Default)]
pub(crate) struct UpdateMerger {
    spares: Vec<Vec<StateChange>>,
}

impl UpdateMerger {
    /// An empty buffer for a worker to collect its next round's updates in.
    pub(crate) fn spare(&mut self) -> Vec<StateChange> {
        self.spares.pop().unwrap_or_default()
    }

    /// Puts the workers' results together into the round's output.
    pub(crate) fn merge(&mut self, results: Vec<RoundResult>, full_pass: bool) -> RoundOutput {
        let mut rescored = 0;
        let mut removed = 0;
        let mut buffers = Vec::with_capacity(results.len());
        for mut result in results {
            rescored += result.set;
            removed += result.removed;
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
            removed,
            full_pass,
        }
    }
}

/// The output updates of buffers each sorted by [`order_key`], interleaved in that order.
fn merge_sorted(buffers: &[Vec<StateChange>]) -> Vec<ScoreUpdate> {
    let mut updates = Vec::with_capacity(buffers.iter().map(Vec::len).sum());
    if let [only] = buffers {
        updates.extend(only.iter().map(score_update));
        return updates;
    }
    let mut heads = vec![0usize; buffers.len()];
    loop {
        let next = buffers
            .iter()
            .zip(&heads)
            .enumerate()
            .filter_map(|(b, (buffer, &head))| buffer.get(head).map(|u| (order_key(u), b)))
            .min();
        let Some((_, b)) = next else {
            return updates;
        };
        updates.push(score_update(&buffers[b][heads[b]]));
        heads[b] += 1;
    }
}

/// Keeps an emptied buffer for a later round unless it is large.
fn keep(mut buffer: Vec<StateChange>, spares: &mut Vec<Vec<StateChange>>) {
    if buffer.capacity() > 0 && buffer.capacity() <= KEEP_CAPACITY_LIMIT {
        buffer.clear();
        spares.push(buffer);
    }
}

/// The public form of a state change.
fn score_update(change: &StateChange) -> ScoreUpdate {
    ScoreUpdate {
        user: change.user,
        sample: change.sample,
        state: change.state.as_ref().map(sample_state),
    }
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

    fn change(user: u32, sample: u32, prediction: Option<f32>) -> StateChange {
        StateChange {
            user,
            sample,
            state: prediction.map(|p| StateRecord {
                user,
                item: 0,
                prediction: p.to_bits(),
                variance: 0,
                loss: None,
                item_labels: 0,
                item_entropy: 0,
            }),
        }
    }

    fn described(output: &RoundOutput) -> Vec<(u32, u32, Option<f32>)> {
        output
            .updates
            .iter()
            .map(|u| (u.user, u.sample, u.state.map(|s| s.score.prediction)))
            .collect()
    }

    #[test]
    fn merge_interleaves_the_buffers_by_user_and_sample() {
        let results = vec![
            RoundResult {
                updates: vec![change(0, 1, Some(5.0)), change(2, 0, None)],
                set: 1,
                removed: 1,
            },
            RoundResult {
                updates: vec![change(0, 3, Some(2.0)), change(1, 2, Some(1.0))],
                set: 2,
                removed: 0,
            },
        ];
        let mut merger = UpdateMerger::default();
        let output = merger.merge(results, false);
        assert_eq!(
            described(&output),
            vec![
                (0, 1, Some(5.0)),
                (0, 3, Some(2.0)),
                (1, 2, Some(1.0)),
                (2, 0, None)
            ]
        );
        assert_eq!((output.rescored, output.removed), (3, 1));
        // Both buffers are kept for later rounds, emptied.
        let spares = [merger.spare(), merger.spare(), merger.spare()];
        assert!(spares[..2].iter().all(|b| b.is_empty() && b.capacity() > 0));
        assert_eq!(spares[2].capacity(), 0);
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
        for (samples, users) in [(3u32, 2u64), (5000, 40), (40_000, 1 << 20)] {
            let changes: Vec<StateChange> = (0..samples)
                .map(|sample| {
                    let prediction = (next(4) > 0).then(|| next(3) as f32);
                    change(next(users) as u32, sample, prediction)
                })
                .collect();
            let mut expected = changes.clone();
            expected.sort_by_key(order_key);
            for workers in [1, 3] {
                // Buffers in order, as workers send them, and out of order.
                for presorted in [true, false] {
                    let mut results: Vec<RoundResult> =
                        (0..workers).map(|_| RoundResult::default()).collect();
                    for change in &changes {
                        results[change.sample as usize % workers]
                            .updates
                            .push(*change);
                    }
                    if presorted {
                        for result in &mut results {
                            result.updates.sort_by_key(order_key);
                        }
                    }
                    let got = UpdateMerger::default().merge(results, false);
                    let want: Vec<ScoreUpdate> = expected.iter().map(score_update).collect();
                    assert_eq!(
                        got.updates, want,
                        "{samples} samples over {workers} worker(s)"
                    );
                }
            }
        }
    }
}
