//! The records that flow through the scoring dataflow: ids, row versions and `f32` bit
//! patterns only, so that every record is small, totally ordered and cancels exactly.
//!
//! Row floats never travel through the dataflow; they live in the versioned side tables
//! ([`super::side_table`]) and records name them by `(id, version)`.

use serde::{Deserialize, Serialize};

use crate::data::{ItemIdx, SampleIdx, UserIdx};
use crate::scoring::PerSampleScore;

/// Logical time of the dataflow: the engine's round counter.
pub(crate) type RoundTime = u64;
/// How many times a record occurs in a collection (negative while being retracted).
pub(crate) type Multiplicity = isize;
/// Version of one user's or one item's scoring row; bumped on every change of that row.
pub(crate) type RowVersion = u32;
/// Counts the rounds in which the score operator re-scored every sample it holds.
pub(crate) type FullPass = u32;

/// An optional label carried as its bit pattern. Labels are validated to be finite, so the
/// NaN pattern [`LabelBits::ABSENT`] is free to mean "no label".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct LabelBits(u32);

impl LabelBits {
    /// The pattern of "no label": a quiet NaN with a payload, never a finite label.
    pub(crate) const ABSENT: LabelBits = LabelBits(0x7fc0_0d1e);

    /// Encodes a label that was checked to be finite (or absent).
    pub(crate) fn encode(label: Option<f32>) -> LabelBits {
        match label {
            Some(value) => LabelBits(value.to_bits()),
            None => LabelBits::ABSENT,
        }
    }

    /// The label these bits stand for.
    pub(crate) fn decode(self) -> Option<f32> {
        (self != LabelBits::ABSENT).then(|| f32::from_bits(self.0))
    }
}

/// A pool sample as the `pool` input holds it, keyed by its item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct PoolRecord {
    /// The sample's index.
    pub sample: SampleIdx,
    /// The sample's user.
    pub user: UserIdx,
    /// Its label, when known (selection protocol) or absent (pool protocol).
    pub label: LabelBits,
}

/// One fact about an item, as the `item_facts` input holds it, keyed by the item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum ItemFact {
    /// The item's scoring row exists at this version.
    Row(RowVersion),
    /// One labelled event of the item with this label (bits of a finite `f32`, with `-0.0`
    /// folded into `0.0`); its multiplicity counts the events.
    Label(u32),
}

impl ItemFact {
    /// The fact for one labelled event, folding `-0.0` into `0.0` so both count as one value.
    pub(crate) fn label(value: f32) -> ItemFact {
        let folded = if value == 0.0 { 0.0f32 } else { value };
        ItemFact::Label(folded.to_bits())
    }
}

/// What the samples of an item need from the item side: its row version and its label
/// statistics. Output of the per-item reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct ItemSide {
    /// Version of the item's scoring row.
    pub version: RowVersion,
    /// Labelled events of the item.
    pub labels: u32,
    /// Bits of the Shannon entropy (in bits) of the item's label distribution.
    pub entropy: u32,
}

impl ItemSide {
    /// The side of an item at row `version` without label statistics (none maintained).
    pub(crate) fn unlabelled(version: RowVersion) -> Self {
        Self {
            version,
            labels: 0,
            entropy: 0f32.to_bits(),
        }
    }
}

/// A pool sample joined with its item side, keyed by its user and waiting for the user row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct PendingScore {
    /// The sample's index (first, so an arrangement orders a user's samples by index).
    pub sample: SampleIdx,
    /// The sample's item.
    pub item: ItemIdx,
    /// Its label, if known.
    pub label: LabelBits,
    /// The item side the sample was joined with.
    pub item_side: ItemSide,
}

/// Everything one score needs, by reference: the sample, and its user row and item row at the
/// versions the joins brought together (the head is the live one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct ScoreTask {
    /// The sample's index.
    pub sample: SampleIdx,
    /// The sample's user.
    pub user: UserIdx,
    /// Version of the user's row.
    pub user_version: RowVersion,
    /// The sample's item.
    pub item: ItemIdx,
    /// Its label, if known.
    pub label: LabelBits,
    /// The item side (row version, statistics).
    pub item_side: ItemSide,
}

/// A sample's maintained state as the dataflow carries it (floats as bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct StateRecord {
    /// The sample's user.
    pub user: UserIdx,
    /// The sample's item.
    pub item: ItemIdx,
    /// Bits of the mean prediction.
    pub prediction: u32,
    /// Bits of the variance over members.
    pub variance: u32,
    /// Bits of the loss, when the label is known.
    pub loss: Option<u32>,
    /// Labelled events of the item.
    pub item_labels: u32,
    /// Bits of the item's label entropy.
    pub item_entropy: u32,
}

impl StateRecord {
    /// The record of a computed score under the task's item statistics.
    pub(crate) fn new(task: &ScoreTask, score: PerSampleScore) -> StateRecord {
        StateRecord {
            user: task.user,
            item: task.item,
            prediction: score.prediction.to_bits(),
            variance: score.variance.to_bits(),
            loss: score.loss.map(f32::to_bits),
            item_labels: task.item_side.labels,
            item_entropy: task.item_side.entropy,
        }
    }

    /// The score this record carries.
    pub(crate) fn score(&self) -> PerSampleScore {
        PerSampleScore {
            prediction: f32::from_bits(self.prediction),
            variance: f32::from_bits(self.variance),
            loss: self.loss.map(f32::from_bits),
        }
    }
}

/// A change to one sample's state, as the score operator hands it over: its new state, or
/// none when it has no state any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct StateChange {
    /// The sample's user (first: the output is ordered by user, then sample).
    pub user: UserIdx,
    /// The sample.
    pub sample: SampleIdx,
    /// Its new state; `None` when it left the pool.
    pub state: Option<StateRecord>,
}

/// Shannon entropy, in bits, of a distribution given by positive counts (0 for no counts).
///
/// Summed in `f64` in the order given; the reduce hands the counts in the sorted order of the
/// label values, so the result is deterministic.
pub(crate) fn entropy_bits(counts: &[u64]) -> f32 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    let mut entropy = 0.0f64;
    for &count in counts.iter().filter(|&&c| c > 0) {
        let p = count as f64 / total;
        entropy -= p * p.log2();
    }
    // -0.0 for a single value would not compare equal bitwise to 0.0.
    (entropy as f32).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_bits_round_trip_and_absent_is_not_a_finite_label() {
        for label in [
            None,
            Some(0.0),
            Some(-0.0),
            Some(4.5),
            Some(f32::MIN_POSITIVE),
        ] {
            let bits = LabelBits::encode(label);
            assert_eq!(bits.decode().map(f32::to_bits), label.map(f32::to_bits));
        }
        assert!(f32::from_bits(LabelBits::ABSENT.0).is_nan());
    }

    #[test]
    fn negative_zero_label_counts_as_zero() {
        assert_eq!(ItemFact::label(-0.0), ItemFact::label(0.0));
        assert_ne!(ItemFact::label(1.0), ItemFact::label(0.0));
    }

    #[test]
    fn entropy_of_known_distributions() {
        assert_eq!(entropy_bits(&[]), 0.0);
        assert_eq!(entropy_bits(&[7]).to_bits(), 0.0f32.to_bits());
        assert!((entropy_bits(&[3, 3]) - 1.0).abs() < 1e-7);
        assert!((entropy_bits(&[1, 1, 1, 1]) - 2.0).abs() < 1e-7);
        // p = (1/4, 3/4): 0.25 * 2 + 0.75 * log2(4/3)
        let expected = 0.5 + 0.75 * (4.0f64 / 3.0).log2();
        assert!((entropy_bits(&[1, 3]) as f64 - expected).abs() < 1e-7);
    }
}
