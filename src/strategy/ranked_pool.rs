//! The pool's strategy keys, updated by score changes, and the top `budget` samples read off
//! them when the strategy picks.
//!
//! A replay or a pool round changes far more keys than it picks (every re-scored sample
//! changes its key; a pick takes a budget of a few thousand). An ordered tree over the whole
//! pool made picks O(budget) but cost two tree operations per re-scored sample: 43% of a
//! whole replay's CPU time at 1M events (`docs/benchmarks.md`). So keys live in a table
//! indexed by sample (an O(1) write per change), and the top is maintained as a **band**: an
//! ordered set of exactly the samples at or above a floor entry. A key change touches the
//! band only when the sample's old or new position is at or above the floor, which for a
//! band a few times the budget is a small fraction of the changes; a pick of `n <= band`
//! reads the band's first `n`. When picks and key changes have thinned the band below `n`,
//! one pass over the table (keeping the best in a bounded heap) rebuilds it with a new floor.
//! Per-group picks (per-user budgets, strata) always take that one pass.
//!
//! ```
//! use recsift::strategy::RankedPool;
//!
//! let mut pool = RankedPool::new(42, false);
//! pool.upsert(1, 10, 0.2);
//! pool.upsert(2, 10, 0.9);
//! pool.upsert(3, 11, 0.5);
//! pool.upsert(2, 10, 0.1); // sample 2's score changed
//! assert_eq!(pool.top(2), vec![(3, 0.5), (1, 0.2)]);
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use crate::sample_table::{SampleTable, Slot};
use crate::seeding::unit_hash;

/// A key ordered by `total_cmp`, NaN ranked last.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Key(f64);

impl Eq for Key {}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Position of a sample in the order (smaller is better): key descending, then a seeded
/// tie-break, then id.
type Entry = (Reverse<Key>, u64, u32);

/// A sample's key in the key table; NaN marks an absent sample (stored keys are never NaN).
#[derive(Clone, Copy, Debug)]
struct StoredKey(f64);

impl Slot for StoredKey {
    const ABSENT: Self = StoredKey(f64::NAN);

    fn is_absent(&self) -> bool {
        self.0.is_nan()
    }
}

/// A sample's group in the group table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Group(u32);

impl Slot for Group {
    const ABSENT: Self = Group(u32::MAX);

    fn is_absent(&self) -> bool {
        *self == Self::ABSENT
    }
}

/// Pool samples with their strategy keys, and (optionally) their groups.
///
/// Samples are indices into the experiment's event table; the tables span the samples in
/// the pool, from the oldest to the newest (16 bytes per sample with groups, 8 without).
#[derive(Clone, Debug)]
pub struct RankedPool {
    seed: u64,
    /// Key per sample in the pool.
    keys: SampleTable<StoredKey>,
    /// Group per sample in the pool, when the pool keeps groups.
    groups: Option<SampleTable<Group>>,
    len: usize,
    /// The maintained top, once a pick has built it.
    band: Option<Band>,
}

/// Exactly the present samples whose entry is at or above `floor`, in order.
#[derive(Clone, Debug)]
struct Band {
    floor: Entry,
    entries: BTreeSet<Entry>,
}

/// Entries a rebuilt band keeps for a pick of `n`: room for a few rounds of picks and key
/// changes before the next rebuild.
fn band_size(n: usize) -> usize {
    n.saturating_mul(4).max(n + 1024)
}

/// The best `n` entries seen, in a max-heap whose top is the worst kept.
struct BestN {
    n: usize,
    heap: BinaryHeap<Entry>,
}

impl BestN {
    fn new(n: usize) -> Self {
        Self {
            n,
            heap: BinaryHeap::with_capacity(n.min(1 << 16)),
        }
    }

    /// Offers `sample` with `key`; the tie-break is computed only when the key could enter.
    fn offer(&mut self, seed: u64, sample: u32, key: f64) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() == self.n {
            let worst = self.heap.peek().expect("full heap").0.0.0;
            if key.total_cmp(&worst) == Ordering::Less {
                return;
            }
        }
        let entry = (Reverse(Key(key)), tie_break(seed, sample), sample);
        if self.heap.len() < self.n {
            self.heap.push(entry);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && entry < *worst
        {
            *worst = entry;
        }
    }

    /// The kept entries as `(sample, key)`, best first.
    fn into_sorted(self) -> Vec<(u32, f64)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|(Reverse(Key(k)), _, s)| (s, k))
            .collect()
    }
}

fn tie_break(seed: u64, sample: u32) -> u64 {
    (unit_hash(seed, sample) * (1u64 << 53) as f64) as u64
}

/// Whether `(key, sample)` is at or above `floor` (the tie-break only computed on equal keys).
fn at_or_above(floor: &Entry, seed: u64, sample: u32, key: f64) -> bool {
    match key.total_cmp(&floor.0.0.0) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => (tie_break(seed, sample), sample) <= (floor.1, floor.2),
    }
}

impl RankedPool {
    /// An empty index; `per_group` also keeps each sample's group (for per-user budgets and
    /// strata). `seed` decides the tie-break among equal keys.
    pub fn new(seed: u64, per_group: bool) -> Self {
        Self {
            seed,
            keys: SampleTable::default(),
            groups: per_group.then(SampleTable::default),
            len: 0,
            band: None,
        }
    }

    /// Sets `sample`'s key (inserting it, or moving it if it was present) in `group`.
    pub fn upsert(&mut self, sample: u32, group: u32, key: f64) {
        let key = if key.is_nan() { f64::NEG_INFINITY } else { key };
        let StoredKey(old) = self.keys.set(sample, StoredKey(key));
        if old.is_nan() {
            self.len += 1;
        }
        if let Some(band) = &mut self.band {
            if !old.is_nan() && at_or_above(&band.floor, self.seed, sample, old) {
                band.entries
                    .remove(&(Reverse(Key(old)), tie_break(self.seed, sample), sample));
            }
            if at_or_above(&band.floor, self.seed, sample, key) {
                band.entries
                    .insert((Reverse(Key(key)), tie_break(self.seed, sample), sample));
            }
        }
        if let Some(groups) = &mut self.groups {
            groups.set(sample, Group(group));
        }
    }

    /// Removes `sample`; returns whether it was present.
    pub fn remove(&mut self, sample: u32) -> bool {
        let StoredKey(old) = self.keys.set(sample, StoredKey::ABSENT);
        if old.is_nan() {
            return false;
        }
        self.len -= 1;
        if let Some(groups) = &mut self.groups {
            groups.set(sample, Group::ABSENT);
        }
        if let Some(band) = &mut self.band
            && at_or_above(&band.floor, self.seed, sample, old)
        {
            band.entries
                .remove(&(Reverse(Key(old)), tie_break(self.seed, sample), sample));
        }
        true
    }

    /// Present samples with their keys, in sample order.
    fn present(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.keys
            .present()
            .map(|(sample, StoredKey(key))| (sample, key))
    }

    /// The `n` highest-keyed samples with their keys, best first: the first `n` of the
    /// band, rebuilt by one pass over the pool when it holds fewer than `n` samples above
    /// its floor (or has not been built yet).
    pub fn top(&mut self, n: usize) -> Vec<(u32, f64)> {
        let n = n.min(self.len);
        let size = band_size(n);
        let stale = self.band.as_ref().is_none_or(|band| {
            let held = band.entries.len();
            (held < n && held < self.len) || held > size.saturating_mul(2)
        });
        if stale {
            self.rebuild_band(size);
        }
        let band = self.band.as_ref().expect("built above");
        band.entries
            .iter()
            .take(n)
            .map(|&(Reverse(Key(k)), _, s)| (s, k))
            .collect()
    }

    /// Keeps the best `size` present samples as the band, its floor the worst of them.
    fn rebuild_band(&mut self, size: usize) {
        let mut best = BestN::new(size.min(self.len));
        for (sample, key) in self.present() {
            best.offer(self.seed, sample, key);
        }
        let entries: BTreeSet<Entry> = best.heap.into_iter().collect();
        // An empty pool gets the lowest possible floor: every later sample enters the band
        // until a pick finds it oversized and rebuilds it.
        let floor = entries.last().copied().unwrap_or((
            Reverse(Key(f64::NEG_INFINITY)),
            u64::MAX,
            u32::MAX,
        ));
        self.band = Some(Band { floor, entries });
    }

    /// The best `n` of each group, groups in ascending id order, each best first.
    fn top_of_groups(&self, n: usize) -> Vec<Vec<(u32, f64)>> {
        let groups = self
            .groups
            .as_ref()
            .expect("RankedPool built with per_group");
        let mut best: HashMap<u32, BestN> = HashMap::new();
        for (sample, key) in self.present() {
            best.entry(groups.get(sample).0)
                .or_insert_with(|| BestN::new(n))
                .offer(self.seed, sample, key);
        }
        let mut best: Vec<(u32, BestN)> = best.into_iter().collect();
        best.sort_unstable_by_key(|(group, _)| *group);
        best.into_iter().map(|(_, b)| b.into_sorted()).collect()
    }

    /// The `n` highest-keyed samples of every group, groups in ascending id order.
    ///
    /// # Panics
    /// If the index was built without `per_group`.
    pub fn top_per_group(&self, n: usize) -> Vec<(u32, f64)> {
        self.top_of_groups(n).into_iter().flatten().collect()
    }

    /// `n` samples spread evenly over the groups: the best of every group, then the
    /// second best of every group, and so on (groups in ascending id order), until `n` are
    /// taken or the groups run out.
    ///
    /// # Panics
    /// If the index was built without `per_group`.
    pub fn top_balanced(&self, n: usize) -> Vec<(u32, f64)> {
        let mut cursors: Vec<_> = self
            .top_of_groups(n)
            .into_iter()
            .map(Vec::into_iter)
            .collect();
        let mut picked = Vec::with_capacity(n);
        while picked.len() < n && !cursors.is_empty() {
            cursors.retain_mut(|cursor| match cursor.next() {
                Some(pick) if picked.len() < n => {
                    picked.push(pick);
                    true
                }
                Some(_) => true,
                None => false,
            });
        }
        picked
    }

    /// The current key of `sample`.
    pub fn key(&self, sample: u32) -> Option<f64> {
        let StoredKey(key) = self.keys.get(sample);
        (!key.is_nan()).then_some(key)
    }

    /// Samples in the index.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From-scratch reference: sort all (sample, group, key) and take the first n.
    fn reference(live: &HashMap<u32, (u32, f64)>, seed: u64, n: usize) -> Vec<(u32, f64)> {
        let mut all: Vec<(u32, f64)> = live.iter().map(|(s, (_, k))| (*s, *k)).collect();
        all.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then(unit_hash(seed, a.0).total_cmp(&unit_hash(seed, b.0)))
                .then(a.0.cmp(&b.0))
        });
        all.truncate(n);
        all
    }

    #[test]
    fn incremental_top_matches_a_full_sort_after_every_update() {
        let seed = 5;
        let mut pool = RankedPool::new(seed, true);
        let mut live = HashMap::new();
        let mut x = 1u64;
        for step in 0..5_000u32 {
            x = crate::seeding::mix64(x);
            let sample = (x % 300) as u32;
            if x.is_multiple_of(7) {
                pool.remove(sample);
                live.remove(&sample);
            } else {
                // Coarse keys so that ties are common.
                let key = ((x >> 20) % 10) as f64;
                let group = sample % 13;
                pool.upsert(sample, group, key);
                live.insert(sample, (group, key));
            }
            if step % 97 == 0 {
                // Vary the pick so the band is used, outgrown and rebuilt.
                let n = [25, 3, 60, 1_100][(step / 97) as usize % 4];
                assert_eq!(pool.top(n), reference(&live, seed, n), "step {step}, n {n}");
                assert_eq!(pool.len(), live.len());
                for group in 0..13 {
                    let of_group: HashMap<u32, (u32, f64)> = live
                        .iter()
                        .filter(|(_, (g, _))| *g == group)
                        .map(|(s, v)| (*s, *v))
                        .collect();
                    let expected = reference(&of_group, seed, 3);
                    let got: Vec<(u32, f64)> = pool
                        .top_per_group(3)
                        .into_iter()
                        .filter(|(s, _)| s % 13 == group)
                        .collect();
                    assert_eq!(got, expected);
                }
            }
        }
    }

    #[test]
    fn the_band_stays_exact_in_a_pool_larger_than_it() {
        // 5,000 samples against bands of ~1,000: keys move across the floor both ways,
        // picks remove samples, and every pick must equal a full sort.
        let seed = 11;
        let mut pool = RankedPool::new(seed, false);
        let mut live = HashMap::new();
        let mut x = 7u64;
        for sample in 0..5_000u32 {
            x = crate::seeding::mix64(x);
            let key = (x >> 11) as f64 / (1u64 << 53) as f64;
            pool.upsert(sample, 0, key);
            live.insert(sample, (0, key));
        }
        for round in 0..40usize {
            let n = [10, 200, 900][round % 3];
            let picked = pool.top(n);
            assert_eq!(picked, reference(&live, seed, n), "round {round}");
            // Label half the picks (they leave the pool) and re-score a tenth of the pool.
            for &(sample, _) in picked.iter().step_by(2) {
                pool.remove(sample);
                live.remove(&sample);
            }
            for _ in 0..500 {
                x = crate::seeding::mix64(x);
                let sample = (x % 5_000) as u32;
                if live.contains_key(&sample) {
                    let key = ((x >> 11) % 1_000) as f64 / 1_000.0;
                    pool.upsert(sample, 0, key);
                    live.insert(sample, (0, key));
                }
            }
        }
    }

    #[test]
    fn balanced_picks_take_turns_across_groups() {
        let mut pool = RankedPool::new(0, true);
        for (sample, group, key) in [
            (1, 0, 0.9),
            (2, 0, 0.8),
            (3, 0, 0.7),
            (4, 5, 0.1),
            (5, 9, 0.5),
            (6, 9, 0.4),
        ] {
            pool.upsert(sample, group, key);
        }
        let picked: Vec<u32> = pool.top_balanced(5).iter().map(|p| p.0).collect();
        assert_eq!(picked, [1, 4, 5, 2, 6]);
        assert_eq!(pool.top_balanced(100).len(), 6);
    }

    #[test]
    fn a_sample_moves_to_its_new_group_and_removal_is_counted() {
        let mut pool = RankedPool::new(3, true);
        pool.upsert(7, 0, 0.5);
        pool.upsert(7, 3, 0.25);
        pool.upsert(2, 0, 0.125);
        assert_eq!(pool.top_per_group(5), vec![(2, 0.125), (7, 0.25)]);
        assert_eq!(pool.key(7), Some(0.25));
        assert!(pool.remove(7));
        assert!(!pool.remove(7));
        assert!(!pool.remove(1_000));
        assert_eq!((pool.len(), pool.key(7)), (1, None));
        assert_eq!(pool.top(5), vec![(2, 0.125)]);
    }

    #[test]
    fn nan_keys_rank_last() {
        let mut pool = RankedPool::new(0, false);
        pool.upsert(1, 0, f64::NAN);
        pool.upsert(2, 0, -1e300);
        assert_eq!(pool.top(1), vec![(2, -1e300)]);
    }
}
