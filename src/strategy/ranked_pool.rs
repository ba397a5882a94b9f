//! An ordered index of the pool by strategy key, updated by score changes: the top `budget`
//! samples are read off in `O(budget)` instead of re-sorting the pool every round.
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
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::unit_hash;

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

/// Position of a sample in the order: key descending, then a seeded tie-break, then id.
type Entry = (Reverse<Key>, u64, u32);

/// Pool samples ordered by strategy key, globally and (optionally) within each group.
#[derive(Clone, Debug)]
pub struct RankedPool {
    seed: u64,
    order: BTreeSet<Entry>,
    groups: Option<BTreeMap<u32, BTreeSet<Entry>>>,
    position: HashMap<u32, (Entry, u32)>,
}

impl RankedPool {
    /// An empty index; `per_group` also keeps an order within each group (for per-user
    /// budgets). `seed` decides the tie-break among equal keys.
    pub fn new(seed: u64, per_group: bool) -> Self {
        Self {
            seed,
            order: BTreeSet::new(),
            groups: per_group.then(BTreeMap::new),
            position: HashMap::new(),
        }
    }

    /// Sets `sample`'s key (inserting it, or moving it if it was present) in `group`.
    pub fn upsert(&mut self, sample: u32, group: u32, key: f64) {
        self.remove(sample);
        let key = if key.is_nan() { f64::NEG_INFINITY } else { key };
        let tie = (unit_hash(self.seed, sample) * (1u64 << 53) as f64) as u64;
        let entry = (Reverse(Key(key)), tie, sample);
        self.order.insert(entry);
        if let Some(groups) = &mut self.groups {
            groups.entry(group).or_default().insert(entry);
        }
        self.position.insert(sample, (entry, group));
    }

    /// Removes `sample`; returns whether it was present.
    pub fn remove(&mut self, sample: u32) -> bool {
        let Some((entry, group)) = self.position.remove(&sample) else {
            return false;
        };
        self.order.remove(&entry);
        if let Some(groups) = &mut self.groups
            && let Some(set) = groups.get_mut(&group)
        {
            set.remove(&entry);
            if set.is_empty() {
                groups.remove(&group);
            }
        }
        true
    }

    /// The `n` highest-keyed samples with their keys, best first.
    pub fn top(&self, n: usize) -> Vec<(u32, f64)> {
        self.order
            .iter()
            .take(n)
            .map(|(Reverse(Key(k)), _, s)| (*s, *k))
            .collect()
    }

    /// The `n` highest-keyed samples of every group, groups in ascending id order.
    ///
    /// # Panics
    /// If the index was built without `per_group`.
    pub fn top_per_group(&self, n: usize) -> Vec<(u32, f64)> {
        let groups = self
            .groups
            .as_ref()
            .expect("RankedPool built with per_group");
        groups
            .values()
            .flat_map(|set| set.iter().take(n).map(|(Reverse(Key(k)), _, s)| (*s, *k)))
            .collect()
    }

    /// `n` samples spread evenly over the groups: the best of every group, then the
    /// second best of every group, and so on (groups in ascending id order), until `n` are
    /// taken or the groups run out.
    ///
    /// # Panics
    /// If the index was built without `per_group`.
    pub fn top_balanced(&self, n: usize) -> Vec<(u32, f64)> {
        let groups = self
            .groups
            .as_ref()
            .expect("RankedPool built with per_group");
        let mut cursors: Vec<_> = groups.values().map(|set| set.iter()).collect();
        let mut picked = Vec::with_capacity(n);
        while picked.len() < n && !cursors.is_empty() {
            cursors.retain_mut(|cursor| match cursor.next() {
                Some((Reverse(Key(k)), _, s)) if picked.len() < n => {
                    picked.push((*s, *k));
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
        self.position
            .get(&sample)
            .map(|((Reverse(Key(k)), _, _), _)| *k)
    }

    /// Samples in the index.
    pub fn len(&self) -> usize {
        self.position.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.position.is_empty()
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
            x = super::super::mix64(x);
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
                assert_eq!(pool.top(25), reference(&live, seed, 25));
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
    fn nan_keys_rank_last() {
        let mut pool = RankedPool::new(0, false);
        pool.upsert(1, 0, f64::NAN);
        pool.upsert(2, 0, -1e300);
        assert_eq!(pool.top(1), vec![(2, -1e300)]);
    }
}
