//! The two baselines the engine is measured against: a plain loop that re-scores every
//! sample, and a hand-written index (user -> samples, item -> samples) that re-scores only
//! the samples touching a changed row, the practical floor for this workload.
//!
//! Both read the rows from [`RowTables`], flat `f32` tables indexed by id, and compute with
//! [`ScoringHead::score`], so their scores are bit-identical to the engine's.

use crate::dataflow::PoolSample;
use crate::scoring::{PerSampleScore, ScoringHead};

use super::synthetic::{RowChanges, SyntheticPool};

/// The current rows and head of the baselines.
#[derive(Clone, Debug)]
pub struct RowTables {
    row_len: usize,
    users: Vec<f32>,
    items: Vec<f32>,
    head: ScoringHead,
}

impl RowTables {
    /// The pool's initial rows and head.
    pub fn new(pool: &SyntheticPool) -> Self {
        Self {
            row_len: pool.shape.layout.row_len(),
            users: pool.user_rows.clone(),
            items: pool.item_rows.clone(),
            head: pool.head.clone(),
        }
    }

    /// Writes the changed rows and head into the tables.
    pub fn apply(&mut self, changes: &RowChanges) {
        let row_len = self.row_len;
        for (user, row) in &changes.users {
            let at = *user as usize * row_len;
            self.users[at..at + row_len].copy_from_slice(row);
        }
        for (item, row) in &changes.items {
            let at = *item as usize * row_len;
            self.items[at..at + row_len].copy_from_slice(row);
        }
        if let Some(head) = &changes.head {
            self.head.clone_from(head);
        }
    }

    /// The score of one sample under the current rows.
    pub fn score(&self, sample: &PoolSample) -> PerSampleScore {
        let row_len = self.row_len;
        let u = sample.user as usize * row_len;
        let i = sample.item as usize * row_len;
        self.head.score(
            &self.users[u..u + row_len],
            &self.items[i..i + row_len],
            sample.label,
        )
    }

    /// Scores every sample into `scores` (indexed like `samples`): the full re-score.
    pub fn score_all(&self, samples: &[PoolSample], scores: &mut Vec<PerSampleScore>) {
        scores.clear();
        scores.extend(samples.iter().map(|s| self.score(s)));
    }
}

/// A hand-written `user -> samples` and `item -> samples` index (compressed sparse rows)
/// over a fixed pool, with the current score of every sample.
#[derive(Clone, Debug)]
pub struct UserItemIndex {
    by_user: Csr,
    by_item: Csr,
    scores: Vec<PerSampleScore>,
    /// Scratch: which users changed in the current update.
    user_changed: Vec<bool>,
}

/// One score change of the index: `(sample, old score, new score)`.
pub type IndexDiff = (u32, PerSampleScore, PerSampleScore);

impl UserItemIndex {
    /// Builds the index over `pool`'s samples (whose indices are `0..len`) and scores them.
    pub fn build(pool: &SyntheticPool, tables: &RowTables) -> Self {
        let samples = &pool.samples;
        let mut scores = Vec::with_capacity(samples.len());
        tables.score_all(samples, &mut scores);
        Self {
            by_user: Csr::group(samples, pool.shape.users, |s| s.user),
            by_item: Csr::group(samples, pool.shape.items, |s| s.item),
            scores,
            user_changed: vec![false; pool.shape.users as usize],
        }
    }

    /// The current score of every sample.
    pub fn scores(&self) -> &[PerSampleScore] {
        &self.scores
    }

    /// Applies `changes` to `tables` and re-scores the samples they touch, pushing one diff
    /// per re-scored sample into `diffs` (cleared first). A head change touches every
    /// sample: the index cannot help then.
    pub fn update(
        &mut self,
        samples: &[PoolSample],
        tables: &mut RowTables,
        changes: &RowChanges,
        diffs: &mut Vec<IndexDiff>,
    ) {
        tables.apply(changes);
        diffs.clear();
        let mut rescore = |sample: u32, scores: &mut [PerSampleScore]| {
            let new = tables.score(&samples[sample as usize]);
            let old = std::mem::replace(&mut scores[sample as usize], new);
            diffs.push((sample, old, new));
        };
        if changes.head.is_some() {
            for sample in 0..samples.len() as u32 {
                rescore(sample, &mut self.scores);
            }
            return;
        }
        for (user, _) in &changes.users {
            self.user_changed[*user as usize] = true;
            for &sample in self.by_user.members(*user) {
                rescore(sample, &mut self.scores);
            }
        }
        for (item, _) in &changes.items {
            for &sample in self.by_item.members(*item) {
                // A sample of a changed user was re-scored with the new item row already.
                if !self.user_changed[samples[sample as usize].user as usize] {
                    rescore(sample, &mut self.scores);
                }
            }
        }
        for (user, _) in &changes.users {
            self.user_changed[*user as usize] = false;
        }
    }
}

/// Samples grouped by a key in `0..keys`: the samples of key `k` are
/// `members[offsets[k]..offsets[k + 1]]`.
#[derive(Clone, Debug)]
struct Csr {
    offsets: Vec<u32>,
    members: Vec<u32>,
}

impl Csr {
    fn group(samples: &[PoolSample], keys: u32, key: impl Fn(&PoolSample) -> u32) -> Self {
        let mut offsets = vec![0u32; keys as usize + 1];
        for s in samples {
            offsets[key(s) as usize + 1] += 1;
        }
        for k in 0..keys as usize {
            offsets[k + 1] += offsets[k];
        }
        let mut fill = offsets.clone();
        let mut members = vec![0u32; samples.len()];
        for s in samples {
            let slot = &mut fill[key(s) as usize];
            members[*slot as usize] = s.sample;
            *slot += 1;
        }
        Self { offsets, members }
    }

    fn members(&self, key: u32) -> &[u32] {
        let k = key as usize;
        &self.members[self.offsets[k] as usize..self.offsets[k + 1] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::{PoolShape, UpdateStream};
    use super::*;
    use crate::scoring::RowLayout;

    fn bits(scores: &[PerSampleScore]) -> Vec<(u32, u32, Option<u32>)> {
        scores
            .iter()
            .map(|s| {
                (
                    s.prediction.to_bits(),
                    s.variance.to_bits(),
                    s.loss.map(f32::to_bits),
                )
            })
            .collect()
    }

    #[test]
    fn the_index_keeps_the_scores_of_a_full_rescore_and_touches_only_affected_samples() {
        let shape = PoolShape {
            samples: 3000,
            users: 60,
            items: 25,
            layout: RowLayout { members: 2, dim: 4 },
            item_skew: 1.0,
        };
        let pool = SyntheticPool::generate(shape, 5);
        let mut tables = RowTables::new(&pool);
        let mut index = UserItemIndex::build(&pool, &tables);
        let mut reference = RowTables::new(&pool);
        let mut full = Vec::new();
        let mut diffs = Vec::new();
        for (touch_users, touch_items, head) in
            [(0.1, 0.0, false), (0.05, 0.2, false), (0.0, 0.0, true)]
        {
            let mut stream = UpdateStream::new(&pool, touch_users, touch_items, head, 8);
            let changes = stream.next_changes();
            index.update(&pool.samples, &mut tables, &changes, &mut diffs);
            reference.apply(&changes);
            reference.score_all(&pool.samples, &mut full);
            assert_eq!(bits(index.scores()), bits(&full));
            // Exactly the samples of a changed user or item (all of them after a head
            // change), each once.
            let touched = |s: &PoolSample| {
                head || changes.users.iter().any(|(u, _)| *u == s.user)
                    || changes.items.iter().any(|(i, _)| *i == s.item)
            };
            let mut expected: Vec<u32> = pool
                .samples
                .iter()
                .filter(|s| touched(s))
                .map(|s| s.sample)
                .collect();
            let mut got: Vec<u32> = diffs.iter().map(|d| d.0).collect();
            got.sort_unstable();
            expected.sort_unstable();
            assert!(!got.is_empty());
            assert_eq!(got, expected);
            for &(sample, _, new) in &diffs {
                assert_eq!(bits(&[new]), bits(&[full[sample as usize]]));
            }
        }
    }
}
