//! Versioned side tables: the floats of scoring rows and heads, looked up by `(id, version)`.
//!
//! The dataflow carries only ids and versions; the scoring operator reads the floats here. A
//! row that changes in round `t` keeps its previous version (*retiring*) until round `t` has
//! completed, because the dataflow retracts the old scores in round `t` by recomputing them
//! from the old row, bit for bit. The driver then drops the retiring versions
//! ([`SideTables::retire`]).
//!
//! Concurrency protocol: only the driver writes, and only between rounds, while every worker
//! is waiting for its next command; workers read during a round.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::records::{HeadVersion, RowVersion};
use crate::scoring::ScoringHead;

/// How a row changed: the version it replaced (if it existed) and its new version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VersionChange<V> {
    /// The version whose records the dataflow must retract.
    pub old: Option<V>,
    /// The version the dataflow must insert.
    pub new: V,
}

/// The version of an id that has no row.
const ABSENT: RowVersion = RowVersion::MAX;
/// "No retiring version" in [`VersionedRows::retiring_of`].
const NOT_RETIRING: u32 = u32::MAX;

/// Rows of one side (users or items), indexed by their dense id, in flat tables: the live
/// rows side by side (`row_len` floats per id) with a version per id, and the versions
/// replaced this round in a small table of their own. Setting and retiring rows allocates
/// nothing once the tables have grown, and a lookup is two independent reads.
#[derive(Debug)]
pub(crate) struct VersionedRows {
    row_len: usize,
    /// Live rows, id `i` at `i * row_len`.
    values: Vec<f32>,
    /// Live version per id ([`ABSENT`] for none).
    versions: Vec<RowVersion>,
    /// Per id, its entry in `retiring` ([`NOT_RETIRING`] for none).
    retiring_of: Vec<u32>,
    /// Rows replaced this round: `(id, version)`, the floats of entry `k` at
    /// `retiring_values[k * row_len..]`.
    retiring: Vec<(u32, RowVersion)>,
    retiring_values: Vec<f32>,
}

impl VersionedRows {
    /// An empty table of rows of `row_len` floats.
    pub(crate) fn new(row_len: usize) -> Self {
        Self {
            row_len,
            values: Vec::new(),
            versions: Vec::new(),
            retiring_of: Vec::new(),
            retiring: Vec::new(),
            retiring_values: Vec::new(),
        }
    }

    /// Makes room for ids `0..ids` at once (a first round sets every row).
    pub(crate) fn reserve_ids(&mut self, ids: usize) {
        if self.versions.len() < ids {
            self.values.resize(ids * self.row_len, 0.0);
            self.versions.resize(ids, ABSENT);
            self.retiring_of.resize(ids, NOT_RETIRING);
        }
    }

    /// Sets the row of `id` to `values` (`row_len` long), keeping the replaced version until
    /// [`Self::retire`].
    ///
    /// At most one change per id per round: the driver rejects duplicates before calling.
    pub(crate) fn set(&mut self, id: u32, values: &[f32]) -> VersionChange<RowVersion> {
        debug_assert_eq!(values.len(), self.row_len);
        let index = id as usize;
        self.reserve_ids(index + 1);
        debug_assert_eq!(
            self.retiring_of[index], NOT_RETIRING,
            "row {id} changed twice in one round"
        );
        let old = self.versions[index];
        let at = index * self.row_len;
        let live = &mut self.values[at..at + self.row_len];
        let change = if old == ABSENT {
            VersionChange { old: None, new: 0 }
        } else {
            self.retiring_of[index] = self.retiring.len() as u32;
            self.retiring.push((id, old));
            self.retiring_values.extend_from_slice(live);
            // Versions cycle through 0..ABSENT: a retired version is long gone when its
            // number comes round again.
            let next = old.wrapping_add(1);
            VersionChange {
                old: Some(old),
                new: if next == ABSENT { 0 } else { next },
            }
        };
        live.copy_from_slice(values);
        self.versions[index] = change.new;
        change
    }

    /// The floats of `id` at `version`, if that version is live or retiring.
    pub(crate) fn get(&self, id: u32, version: RowVersion) -> Option<&[f32]> {
        let index = id as usize;
        if *self.versions.get(index)? == version {
            let at = index * self.row_len;
            return Some(&self.values[at..at + self.row_len]);
        }
        let entry = self.retiring_of[index];
        if entry == NOT_RETIRING || self.retiring[entry as usize].1 != version {
            return None;
        }
        let at = entry as usize * self.row_len;
        Some(&self.retiring_values[at..at + self.row_len])
    }

    /// Whether `id` has a live row.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.versions.get(id as usize).is_some_and(|&v| v != ABSENT)
    }

    /// Drops every retiring version: the round that retracted them has completed.
    pub(crate) fn retire(&mut self) {
        for &(id, _) in &self.retiring {
            self.retiring_of[id as usize] = NOT_RETIRING;
        }
        self.retiring.clear();
        self.retiring_values.clear();
    }

    /// Versions currently held (live and retiring), for tests of the garbage collection.
    #[cfg(test)]
    pub(crate) fn held_versions(&self) -> usize {
        self.versions.iter().filter(|&&v| v != ABSENT).count() + self.retiring.len()
    }
}

/// The scoring head with its version, and the version it replaced this round.
#[derive(Debug)]
pub(crate) struct VersionedHeads {
    live: (HeadVersion, ScoringHead),
    retiring: Option<(HeadVersion, ScoringHead)>,
}

impl VersionedHeads {
    /// The first head, at version 0.
    pub(crate) fn new(head: ScoringHead) -> Self {
        Self {
            live: (0, head),
            retiring: None,
        }
    }

    /// The live head.
    #[cfg(test)]
    pub(crate) fn live(&self) -> &ScoringHead {
        &self.live.1
    }

    /// Replaces the head, keeping the old one until [`Self::retire`].
    pub(crate) fn set(&mut self, head: ScoringHead) -> VersionChange<HeadVersion> {
        let new = self.live.0.wrapping_add(1);
        let old = std::mem::replace(&mut self.live, (new, head));
        let change = VersionChange {
            old: Some(old.0),
            new,
        };
        self.retiring = Some(old);
        change
    }

    /// The head at `version`, if live or retiring.
    pub(crate) fn get(&self, version: HeadVersion) -> Option<&ScoringHead> {
        [Some(&self.live), self.retiring.as_ref()]
            .into_iter()
            .flatten()
            .find(|(v, _)| *v == version)
            .map(|(_, head)| head)
    }

    /// Drops the retiring head.
    pub(crate) fn retire(&mut self) {
        self.retiring = None;
    }
}

/// All floats the scoring operator reads.
#[derive(Debug)]
pub(crate) struct SideTables {
    /// User rows.
    pub users: VersionedRows,
    /// Item rows.
    pub items: VersionedRows,
    /// Scoring heads.
    pub heads: VersionedHeads,
}

impl SideTables {
    /// Drops every version retracted by the round that just completed.
    pub(crate) fn retire(&mut self) {
        self.users.retire();
        self.items.retire();
        self.heads.retire();
    }
}

/// The side tables shared by the driver (writer) and the workers (readers).
#[derive(Clone, Debug)]
pub(crate) struct SharedTables(Arc<RwLock<SideTables>>);

impl SharedTables {
    /// Shares `tables`.
    pub(crate) fn new(tables: SideTables) -> Self {
        Self(Arc::new(RwLock::new(tables)))
    }

    /// Read access for a worker.
    ///
    /// A poisoned lock means the driver panicked while writing; the driver has then already
    /// failed loudly, so the readers go on with what is there rather than panic again.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SideTables> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access for the driver, between rounds.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, SideTables> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_row_keeps_its_old_version_until_retired() {
        let mut rows = VersionedRows::new(1);
        let first = rows.set(3, &[1.0]);
        assert_eq!(first, VersionChange { old: None, new: 0 });
        assert!(!rows.contains(2));
        rows.retire();
        let second = rows.set(3, &[2.0]);
        assert_eq!(
            second,
            VersionChange {
                old: Some(0),
                new: 1
            }
        );
        assert_eq!(rows.get(3, 0), Some(&[1.0][..]));
        assert_eq!(rows.get(3, 1), Some(&[2.0][..]));
        assert_eq!(rows.held_versions(), 2);
        rows.retire();
        assert_eq!(rows.get(3, 0), None);
        assert_eq!(rows.get(3, 1), Some(&[2.0][..]));
        assert_eq!(rows.held_versions(), 1);
    }

    #[test]
    fn heads_are_versioned_like_rows() {
        use crate::scoring::{Loss, RowLayout};
        let layout = RowLayout { members: 1, dim: 0 };
        let mut heads = VersionedHeads::new(ScoringHead::new(layout, vec![1.0], Loss::Squared));
        let change = heads.set(ScoringHead::new(layout, vec![2.0], Loss::Squared));
        assert_eq!(
            change,
            VersionChange {
                old: Some(0),
                new: 1
            }
        );
        assert_eq!(heads.get(0).map(|h| h.offsets[0]), Some(1.0));
        assert_eq!(heads.live().offsets[0], 2.0);
        heads.retire();
        assert!(heads.get(0).is_none());
    }
}
