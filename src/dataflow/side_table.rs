//! Versioned side tables: the floats of scoring rows, looked up by `(id, version)`, and the
//! scoring head.
//!
//! The dataflow carries only ids and versions; the scoring operator reads the floats here. A
//! row that changes gets a new version, so that the joins re-key the samples that read it;
//! only the live version is kept, because the operator never recomputes an old score (it
//! remembers each sample's state, `held_states.rs`). In a round that re-scores every sample
//! anyway (a new head, or rows read by most of the pool), rows are replaced in place under
//! their version and the `full_pass` counter moves instead.
//!
//! Concurrency protocol: only the driver writes, and only between rounds, while every worker
//! is waiting for its next command; workers read during a round.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::records::{FullPass, RowVersion};
use crate::scoring::ScoringHead;

/// How a row changed: the version it replaced (if it existed) and its new version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VersionChange {
    /// The version whose records the dataflow must retract.
    pub old: Option<RowVersion>,
    /// The version the dataflow must insert.
    pub new: RowVersion,
}

/// The version of an id that has no row.
const ABSENT: RowVersion = RowVersion::MAX;

/// Rows of one side (users or items), indexed by their dense id, in one flat table
/// (`row_len` floats per id) with a version per id. Setting rows allocates nothing once the
/// table has grown, and a lookup is two independent reads.
#[derive(Debug)]
pub(crate) struct VersionedRows {
    row_len: usize,
    /// Live rows, id `i` at `i * row_len`.
    values: Vec<f32>,
    /// Live version per id ([`ABSENT`] for none).
    versions: Vec<RowVersion>,
}

impl VersionedRows {
    /// An empty table of rows of `row_len` floats.
    pub(crate) fn new(row_len: usize) -> Self {
        Self {
            row_len,
            values: Vec::new(),
            versions: Vec::new(),
        }
    }

    /// Makes room for ids `0..ids` at once (a first round sets every row).
    pub(crate) fn reserve_ids(&mut self, ids: usize) {
        if self.versions.len() < ids {
            self.values.resize(ids * self.row_len, 0.0);
            self.versions.resize(ids, ABSENT);
        }
    }

    /// Sets the row of `id` to `values` (`row_len` long) under a new version.
    ///
    /// At most one change per id per round: the driver rejects duplicates before calling.
    pub(crate) fn set(&mut self, id: u32, values: &[f32]) -> VersionChange {
        debug_assert_eq!(values.len(), self.row_len);
        let index = id as usize;
        self.reserve_ids(index + 1);
        let old = self.versions[index];
        let change = if old == ABSENT {
            VersionChange { old: None, new: 0 }
        } else {
            // Versions cycle through 0..ABSENT: an old version is long gone from the
            // dataflow when its number comes round again.
            let next = old.wrapping_add(1);
            VersionChange {
                old: Some(old),
                new: if next == ABSENT { 0 } else { next },
            }
        };
        let at = index * self.row_len;
        self.values[at..at + self.row_len].copy_from_slice(values);
        self.versions[index] = change.new;
        change
    }

    /// Replaces the floats of `id`'s live row in place, keeping its version, so that the
    /// dataflow sees no change (the round re-scores every sample in a full pass instead);
    /// whether `id` had a row.
    pub(crate) fn overwrite(&mut self, id: u32, values: &[f32]) -> bool {
        debug_assert_eq!(values.len(), self.row_len);
        let index = id as usize;
        if self.versions.get(index).is_none_or(|&v| v == ABSENT) {
            return false;
        }
        let at = index * self.row_len;
        self.values[at..at + self.row_len].copy_from_slice(values);
        true
    }

    /// The floats of `id`, if its live version is `version`.
    pub(crate) fn get(&self, id: u32, version: RowVersion) -> Option<&[f32]> {
        let index = id as usize;
        if *self.versions.get(index)? != version {
            return None;
        }
        let at = index * self.row_len;
        Some(&self.values[at..at + self.row_len])
    }

    /// Ids with a live row, for tests.
    #[cfg(test)]
    pub(crate) fn held_versions(&self) -> usize {
        self.versions.iter().filter(|&&v| v != ABSENT).count()
    }
}

/// All floats the scoring operator reads.
#[derive(Debug)]
pub(crate) struct SideTables {
    /// User rows.
    pub users: VersionedRows,
    /// Item rows.
    pub items: VersionedRows,
    /// The scoring head.
    pub head: ScoringHead,
    /// Moves for every round in which each held sample must be re-scored (a new head, or
    /// rows replaced in place): the score operator compares it with the pass its scores
    /// were computed in.
    pub full_pass: FullPass,
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
    fn a_changed_row_gets_a_new_version_and_only_the_live_one_is_read() {
        let mut rows = VersionedRows::new(1);
        let first = rows.set(3, &[1.0]);
        assert_eq!(first, VersionChange { old: None, new: 0 });
        assert_eq!(rows.get(2, 0), None);
        let second = rows.set(3, &[2.0]);
        assert_eq!(
            second,
            VersionChange {
                old: Some(0),
                new: 1
            }
        );
        assert_eq!(rows.get(3, 0), None);
        assert_eq!(rows.get(3, 1), Some(&[2.0][..]));
        assert_eq!(rows.held_versions(), 1);
    }

    #[test]
    fn versions_skip_the_absent_marker_when_they_wrap() {
        let mut rows = VersionedRows::new(1);
        rows.set(0, &[0.0]);
        rows.versions[0] = ABSENT - 1;
        assert_eq!(
            rows.set(0, &[1.0]),
            VersionChange {
                old: Some(ABSENT - 1),
                new: 0
            }
        );
    }

    #[test]
    fn a_row_replaced_in_place_keeps_its_version() {
        let mut rows = VersionedRows::new(1);
        assert!(!rows.overwrite(3, &[1.0]));
        rows.set(3, &[1.0]);
        assert!(rows.overwrite(3, &[2.0]));
        assert_eq!(rows.get(3, 0), Some(&[2.0][..]));
    }
}
