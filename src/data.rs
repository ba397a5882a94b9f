//! Domain types every layer shares: dense user/item/sample indices, interactions, id maps
//! and item text.
//!
//! Files name users and items by whatever ids the logging system used (integers or
//! strings). recsift interns them once, at load time, into dense `u32` indices
//! (`0..n_users`, `0..n_items`), because model parameter tables are indexed by them and the
//! dataflow keys its collections by them. [`IdMap`] keeps the way back to the raw id for
//! output files.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Dense index of a user, `0..n_users`, assigned by an [`IdMap`].
pub type UserIdx = u32;
/// Dense index of an item, `0..n_items`, assigned by an [`IdMap`].
pub type ItemIdx = u32;
/// Index of a sample (one logged event) in the experiment's event table.
pub type SampleIdx = u32;

/// What a label means, which decides the default loss
/// ([`Loss::default_for`](crate::scoring::Loss::default_for)) and the metrics that apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// An explicit rating (regression, squared error).
    Rating,
    /// A click or purchase, 0 or 1 (binary cross-entropy on a logit).
    Click,
}

/// One logged interaction after id interning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interaction {
    /// The user who acted.
    pub user: UserIdx,
    /// The item acted on.
    pub item: ItemIdx,
    /// The rating, or 0/1 for a click.
    pub label: f32,
    /// Seconds since the Unix epoch (or any monotone clock the log uses).
    pub time: i64,
}

/// A user or item id exactly as the source file wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RawId {
    /// An integer id column (any integer width).
    Int(i64),
    /// A string id column.
    Str(Arc<str>),
}

impl fmt::Display for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawId::Int(v) => write!(f, "{v}"),
            RawId::Str(s) => f.write_str(s),
        }
    }
}

/// A two-way map between raw ids and dense indices, in order of first appearance.
///
/// Interning is on the hot path of reading a log (once per event and column), so it uses
/// foldhash with a fixed seed rather than the DoS-resistant default hasher: ids come from
/// the user's own files.
#[derive(Clone, Debug, Default)]
pub struct IdMap {
    raw: Vec<RawId>,
    index: HashMap<RawId, u32, foldhash::fast::FixedState>,
}

impl IdMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dense index of `raw`, assigning the next free one on first sight.
    pub fn intern(&mut self, raw: RawId) -> u32 {
        if let Some(&idx) = self.index.get(&raw) {
            return idx;
        }
        let idx = u32::try_from(self.raw.len()).expect("more than 2^32 distinct ids");
        self.raw.push(raw.clone());
        self.index.insert(raw, idx);
        idx
    }

    /// The dense index of `raw`, if it was interned.
    pub fn get(&self, raw: &RawId) -> Option<u32> {
        self.index.get(raw).copied()
    }

    /// The raw id behind a dense index.
    ///
    /// # Panics
    /// If `idx` was not handed out by this map.
    pub fn raw(&self, idx: u32) -> &RawId {
        &self.raw[idx as usize]
    }

    /// How many distinct ids were interned.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether no id was interned.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether every raw id is an integer (so output files can keep an integer column).
    pub fn all_integer(&self) -> bool {
        self.raw.iter().all(|r| matches!(r, RawId::Int(_)))
    }
}

/// The logged events of an experiment with the id maps that produced their indices.
#[derive(Clone, Debug)]
pub struct EventLog {
    /// The events, in file order.
    pub events: Vec<Interaction>,
    /// Raw user ids.
    pub users: IdMap,
    /// Raw item ids (shared with the item table, so text rows line up).
    pub items: IdMap,
    /// What the labels mean.
    pub label_kind: LabelKind,
}

impl EventLog {
    /// Number of distinct users.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Number of distinct items (including items that only have text and no events yet).
    pub fn n_items(&self) -> usize {
        self.items.len()
    }
}

/// Item text rendered from the pipeline's template, indexed by [`ItemIdx`].
#[derive(Clone, Debug, Default)]
pub struct ItemTexts {
    /// `texts[item]` is the item's rendered text, `None` for an item without a row in the
    /// item file.
    pub texts: Vec<Option<String>>,
}

/// A tensor held in host memory (a model's state, as a checkpoint stores it): its shape
/// and its values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Extent of each dimension.
    pub shape: Vec<usize>,
    /// The values (`shape`'s product of them).
    pub values: HostValues,
}

/// The values of a [`HostTensor`], of one element type.
#[derive(Clone, Debug, PartialEq)]
pub enum HostValues {
    /// 32-bit floats (parameters, optimiser moments and counters).
    F32(Vec<f32>),
    /// 32-bit unsigned integers (item indices, counts).
    U32(Vec<u32>),
}

impl HostTensor {
    /// Whether the shape's product is the number of values.
    pub fn is_consistent(&self) -> bool {
        let len = match &self.values {
            HostValues::F32(v) => v.len(),
            HostValues::U32(v) => v.len(),
        };
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) == Some(len)
    }
}

/// Text embeddings of items, indexed by [`ItemIdx`]: `vectors[item * dim..(item + 1) * dim]`.
/// An item without text has `present[item] == false` and a zero vector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemEmbeddings {
    /// Length of each vector.
    pub dim: usize,
    /// Concatenated vectors, `n_items * dim` floats.
    pub vectors: Vec<f32>,
    /// Whether each item has a text vector.
    pub present: Vec<bool>,
}

impl ItemEmbeddings {
    /// Number of items covered.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// Whether no item is covered.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// The vector of `item`.
    pub fn vector(&self, item: ItemIdx) -> &[f32] {
        let start = item as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }
}
