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

/// One version of a row.
#[derive(Debug)]
struct VersionedRow {
    version: RowVersion,
    values: Box<[f32]>,
}

/// The live row of an id and the version it replaced this round, if any.
#[derive(Debug, Default)]
struct RowSlot {
    live: Option<VersionedRow>,
    retiring: Option<VersionedRow>,
}

/// How a row changed: the version it replaced (if it existed) and its new version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VersionChange<V> {
    /// The version whose records the dataflow must retract.
    pub old: Option<V>,
    /// The version the dataflow must insert.
    pub new: V,
}

/// Rows of one side (users or items), indexed by their dense id.
#[derive(Debug, Default)]
pub(crate) struct VersionedRows {
    slots: Vec<RowSlot>,
    /// Ids with a retiring version, to drop after the round.
    retiring: Vec<u32>,
}

impl VersionedRows {
    /// Sets the row of `id` to `values`, keeping the replaced version until [`Self::retire`].
    ///
    /// At most one change per id per round: the driver rejects duplicates before calling.
    pub(crate) fn set(&mut self, id: u32, values: Box<[f32]>) -> VersionChange<RowVersion> {
        let index = id as usize;
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, RowSlot::default);
        }
        let slot = &mut self.slots[index];
        debug_assert!(
            slot.retiring.is_none(),
            "row {id} changed twice in one round"
        );
        let old = slot.live.take();
        let new = old.as_ref().map_or(0, |row| row.version.wrapping_add(1));
        let change = VersionChange {
            old: old.as_ref().map(|row| row.version),
            new,
        };
        if old.is_some() {
            slot.retiring = old;
            self.retiring.push(id);
        }
        slot.live = Some(VersionedRow {
            version: new,
            values,
        });
        change
    }

    /// The floats of `id` at `version`, if that version is live or retiring.
    pub(crate) fn get(&self, id: u32, version: RowVersion) -> Option<&[f32]> {
        let slot = self.slots.get(id as usize)?;
        [slot.live.as_ref(), slot.retiring.as_ref()]
            .into_iter()
            .flatten()
            .find(|row| row.version == version)
            .map(|row| &*row.values)
    }

    /// Whether `id` has a live row.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.slots
            .get(id as usize)
            .is_some_and(|slot| slot.live.is_some())
    }

    /// Drops every retiring version: the round that retracted them has completed.
    pub(crate) fn retire(&mut self) {
        for id in self.retiring.drain(..) {
            self.slots[id as usize].retiring = None;
        }
    }

    /// Versions currently held (live and retiring), for tests of the garbage collection.
    #[cfg(test)]
    pub(crate) fn held_versions(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| usize::from(slot.live.is_some()) + usize::from(slot.retiring.is_some()))
            .sum()
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
        let mut rows = VersionedRows::default();
        let first = rows.set(3, vec![1.0].into());
        assert_eq!(first, VersionChange { old: None, new: 0 });
        assert!(!rows.contains(2));
        rows.retire();
        let second = rows.set(3, vec![2.0].into());
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
        use crate::data::LabelKind;
        use crate::scoring::RowLayout;
        let layout = RowLayout { members: 1, dim: 0 };
        let mut heads = VersionedHeads::new(ScoringHead::new(layout, vec![1.0], LabelKind::Rating));
        let change = heads.set(ScoringHead::new(layout, vec![2.0], LabelKind::Rating));
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
