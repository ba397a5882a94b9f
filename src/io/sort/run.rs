//! One in-memory run: rows held with their sort keys, then handed out in (time, position)
//! order, a batch at a time, without copying the whole table.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::interleave;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

/// Bytes of sort index held per row: the key and the row's (batch, row) address.
pub(super) const INDEX_BYTES_PER_ROW: u64 = 16;

/// Rows read so far and their keys, in input order.
pub(super) struct RunBuffer {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// `(key, batch, row)` of every row; sorting it sorts by key, then input position.
    index: Vec<(i64, u32, u32)>,
    bytes: u64,
}

impl RunBuffer {
    /// An empty buffer for batches of `schema`.
    pub(super) fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: Vec::new(),
            index: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a batch and the sort key of each of its rows.
    pub(super) fn push(&mut self, batch: RecordBatch, keys: &[i64]) {
        debug_assert_eq!(batch.num_rows(), keys.len());
        let b = u32::try_from(self.batches.len()).expect("fewer than 2^32 batches per run");
        self.index.extend(
            keys.iter()
                .enumerate()
                .map(|(row, &key)| (key, b, row as u32)),
        );
        self.bytes +=
            batch.get_array_memory_size() as u64 + keys.len() as u64 * INDEX_BYTES_PER_ROW;
        self.batches.push(batch);
    }

    /// The batches' schema.
    pub(super) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Memory held: the batches' Arrow buffers and the sort index.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rows held.
    pub(super) fn rows(&self) -> u64 {
        self.index.len() as u64
    }

    /// Sorts the rows; the run hands them out in batches of `batch_rows`.
    pub(super) fn sort(mut self, batch_rows: usize) -> SortedRun {
        // Addresses are unique and increase with input position, so an unstable sort of
        // (key, batch, row) is the stable sort by key.
        self.index.sort_unstable();
        SortedRun {
            schema: self.schema,
            batches: self.batches,
            index: self.index,
            next: 0,
            batch_rows: batch_rows.max(1),
        }
    }
}

/// A sorted run in memory, as an iterator of record batches.
pub(super) struct SortedRun {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    index: Vec<(i64, u32, u32)>,
    next: usize,
    batch_rows: usize,
}

impl Iterator for SortedRun {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.index.len() {
            return None;
        }
        let end = (self.next + self.batch_rows).min(self.index.len());
        let rows: Vec<(usize, usize)> = self.index[self.next..end]
            .iter()
            .map(|&(_, b, r)| (b as usize, r as usize))
            .collect();
        self.next = end;
        Some(gather(&self.schema, &self.batches, &rows))
    }
}

/// The rows at `rows` (`(batch, row)` addresses into `batches`) as one batch of `schema`.
pub(super) fn gather(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    rows: &[(usize, usize)],
) -> Result<RecordBatch, ArrowError> {
    let columns = (0..schema.fields().len())
        .map(|c| {
            let arrays: Vec<&dyn arrow::array::Array> =
                batches.iter().map(|b| b.column(c).as_ref()).collect();
            interleave(&arrays, rows)
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}
