//! The item text vectors a text-reading model holds on its device, one row per item it
//! holds, kept in step with `grow()` and `set_item_embeddings`.
//!
//! An item without text (beyond the embeddings handed over, or `present == false`) has a
//! zero vector, so every linear map of it is zero too: its row then comes from its ID
//! parameters alone.

use candle_core::{Device, Tensor};

use super::ModelError;
use crate::data::ItemEmbeddings;

/// Item text vectors on the device, `[rows, dim]`, and which rows have text.
///
/// A clone shares the device tensor, which is safe: the table is never written in place
/// (setting and growing it replace the tensor).
#[derive(Clone, Debug)]
pub(super) struct TextTable {
    dim: usize,
    /// The embeddings last handed over (rows for items the model may not hold yet).
    source: ItemEmbeddings,
    values: Tensor,
    has_text: Vec<bool>,
    /// The vector of items without text.
    zero: Vec<f32>,
}

impl TextTable {
    /// The vectors of items `0..rows` from `text` (checked).
    pub(super) fn new(
        text: &ItemEmbeddings,
        rows: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        check(text, None)?;
        let (values, has_text) = rows_of(text, 0..rows, device)?;
        Ok(Self {
            dim: text.dim,
            source: text.clone(),
            values,
            has_text,
            zero: vec![0.0; text.dim],
        })
    }

    /// The vector of row `r` on the host (zeros for an item without text).
    pub(super) fn host_vector(&self, r: u32) -> &[f32] {
        vector_of(&self.source, r as usize).unwrap_or(&self.zero)
    }

    /// Length of each vector.
    pub(super) fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub(super) fn rows(&self) -> usize {
        self.has_text.len()
    }

    /// Whether each row has a (non-zero) text vector.
    pub(super) fn has_text(&self) -> &[bool] {
        &self.has_text
    }

    /// Rows `index` (u32, `[n]`) as `[n, dim]`.
    pub(super) fn gather(&self, index: &Tensor) -> candle_core::Result<Tensor> {
        self.values.index_select(index, 0)
    }

    /// Replaces the vectors with `text`'s (same `dim` as before); returns the rows whose
    /// vector changed.
    pub(super) fn set(&mut self, text: &ItemEmbeddings) -> Result<Vec<bool>, ModelError> {
        check(text, Some(self.dim))?;
        let rows = self.rows();
        let zero = &self.zero;
        let effective = |t: &'_ ItemEmbeddings, r: usize| -> Vec<f32> {
            vector_of(t, r).unwrap_or(zero).to_vec()
        };
        let changed = (0..rows)
            .map(|r| effective(&self.source, r) != effective(text, r))
            .collect();
        let (values, has_text) = rows_of(text, 0..rows, self.values.device())?;
        self.source = text.clone();
        self.values = values;
        self.has_text = has_text;
        Ok(changed)
    }

    /// Adds rows up to `rows`, with the vectors last handed over.
    pub(super) fn grow(&mut self, rows: usize) -> Result<(), ModelError> {
        let current = self.rows();
        if rows <= current {
            return Ok(());
        }
        let (values, has_text) = rows_of(&self.source, current..rows, self.values.device())?;
        self.values = Tensor::cat(&[&self.values, &values], 0)?.contiguous()?;
        self.has_text.extend(has_text);
        Ok(())
    }
}

/// `text` is well formed, and has `dim` when one is expected.
fn check(text: &ItemEmbeddings, dim: Option<usize>) -> Result<(), ModelError> {
    let invalid = |msg: String| Err(ModelError::Input(msg));
    if text.dim == 0 {
        return invalid(
            "item text vectors have dimension 0; check the `embed` node's model".into(),
        );
    }
    if let Some(expected) = dim
        && text.dim != expected
    {
        return invalid(format!(
            "item text vectors have dimension {}, but the model was built with vectors of \
             dimension {expected}; embed every item with the same encoder",
            text.dim
        ));
    }
    if text.vectors.len() != text.len() * text.dim {
        return invalid(format!(
            "item text vectors: {} floats for {} items of dimension {} (expected {})",
            text.vectors.len(),
            text.len(),
            text.dim,
            text.len() * text.dim
        ));
    }
    if let Some(k) = text.vectors.iter().position(|v| !v.is_finite()) {
        return invalid(format!(
            "item text vector of item {} holds {} at position {}; vectors must be finite",
            k / text.dim,
            text.vectors[k],
            k % text.dim
        ));
    }
    Ok(())
}

/// The vector of row `r` of `text`, or `None` when it has none.
fn vector_of(text: &ItemEmbeddings, r: usize) -> Option<&[f32]> {
    (r < text.len() && text.present[r]).then(|| text.vector(r as u32))
}

/// Rows `range` of `text` as a `[len, dim]` tensor (zeros where an item has no text), and
/// which of them have a non-zero vector.
fn rows_of(
    text: &ItemEmbeddings,
    range: std::ops::Range<usize>,
    device: &Device,
) -> Result<(Tensor, Vec<bool>), ModelError> {
    let len = range.len();
    let mut values = Vec::with_capacity(len * text.dim);
    let mut has_text = Vec::with_capacity(len);
    for r in range {
        match vector_of(text, r) {
            Some(v) => {
                values.extend_from_slice(v);
                has_text.push(v.iter().any(|&x| x != 0.0));
            }
            None => {
                values.extend(std::iter::repeat_n(0.0, text.dim));
                has_text.push(false);
            }
        }
    }
    Ok((Tensor::from_vec(values, (len, text.dim), device)?, has_text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embeddings(dim: usize, vectors: Vec<f32>, present: Vec<bool>) -> ItemEmbeddings {
        ItemEmbeddings {
            dim,
            vectors,
            present,
        }
    }

    fn host(t: &TextTable) -> Vec<f32> {
        t.values.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn rows_without_text_are_zero_and_growth_uses_the_last_vectors() {
        let text = embeddings(
            2,
            vec![1.0, 2.0, 9.0, 9.0, 0.0, 0.0, 5.0, 6.0],
            vec![true, false, true, true],
        );
        let mut t = TextTable::new(&text, 2, &Device::Cpu).unwrap();
        assert_eq!(host(&t), vec![1.0, 2.0, 0.0, 0.0]);
        assert_eq!(t.has_text(), [true, false]);
        assert_eq!(t.host_vector(0), [1.0, 2.0]);
        assert_eq!(t.host_vector(1), [0.0, 0.0]);
        t.grow(5).unwrap();
        assert_eq!(
            host(&t),
            vec![1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0]
        );
        assert_eq!(t.has_text(), [true, false, false, true, false]);
        let newer = embeddings(2, vec![1.0, 2.0, 3.0, 4.0], vec![true, true]);
        let changed = t.set(&newer).unwrap();
        assert_eq!(changed, vec![false, true, false, true, false]);
        assert_eq!(
            host(&t),
            vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn malformed_vectors_are_refused_with_a_message() {
        let err = |text: ItemEmbeddings| {
            TextTable::new(&text, 1, &Device::Cpu)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(embeddings(2, vec![1.0], vec![true])),
            "item text vectors: 1 floats for 1 items of dimension 2 (expected 2)"
        );
        assert_eq!(
            err(embeddings(2, vec![1.0, f32::NAN], vec![true])),
            "item text vector of item 0 holds NaN at position 1; vectors must be finite"
        );
        let mut t =
            TextTable::new(&embeddings(2, vec![1.0, 2.0], vec![true]), 1, &Device::Cpu).unwrap();
        assert_eq!(
            t.set(&embeddings(3, vec![0.0; 3], vec![true]))
                .unwrap_err()
                .to_string(),
            "item text vectors have dimension 3, but the model was built with vectors of \
             dimension 2; embed every item with the same encoder"
        );
    }
}
