//! The merge of an external sort: sorted runs spilled to Parquet files, read back a batch at
//! a time each and merged into one stream in (time, position) order.
//!
//! Runs hold consecutive stretches of the input, so among rows with equal times the row of
//! the lower-numbered run came first; within a run, order is already stable. The merge
//! therefore breaks ties by run number, and the result is the stable sort of the input.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;

use super::run::gather;
use crate::io::IoError;
use crate::io::columns::{self, ColumnContext};
use crate::io::parquet_file::open_parquet;

/// What a run file is called in messages.
const WHAT: &str = "sorted run";

/// The time column in the runs: where it is and what it is called.
#[derive(Clone)]
pub(super) struct RunTime {
    /// Position of the column in a batch.
    pub index: usize,
    /// Its name.
    pub name: String,
}

/// Runs being merged.
pub(super) struct RunMerge {
    schema: SchemaRef,
    time: RunTime,
    cursors: Vec<RunCursor>,
    /// `(key of the cursor's current row, run)`, smallest first.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    batch_rows: usize,
}

/// Where reading one run stands.
struct RunCursor {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    keys: Vec<i64>,
    row: usize,
    /// Rows of the run before `batch`.
    first_row: u64,
    /// Index of `batch` among the batches the output batch being built draws from.
    staged: usize,
}

impl RunMerge {
    /// Opens every run, reading each `read_rows` rows at a time; hands out batches of
    /// `batch_rows` rows of `schema`.
    pub(super) fn open(
        runs: &[PathBuf],
        schema: SchemaRef,
        time: RunTime,
        read_rows: usize,
        batch_rows: usize,
    ) -> Result<Self, IoError> {
        let mut cursors = Vec::with_capacity(runs.len());
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for path in runs {
            let reader = open_parquet(path, WHAT)?
                .with_batch_size(read_rows.max(1))
                .build()
                .map_err(|source| IoError::NotParquet {
                    what: WHAT,
                    path: path.clone(),
                    source,
                })?;
            let mut cursor = RunCursor {
                path: path.clone(),
                reader,
                batch: RecordBatch::new_empty(schema.clone()),
                keys: Vec::new(),
                row: 0,
                first_row: 0,
                staged: 0,
            };
            if cursor.advance(&time)? {
                heap.push(Reverse((cursor.keys[0], cursors.len())));
            }
            cursors.push(cursor);
        }
        Ok(Self {
            schema,
            time,
            cursors,
            heap,
            batch_rows: batch_rows.max(1),
        })
    }

    /// The next output batch; None when every run is exhausted.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>, IoError> {
        if self.heap.is_empty() {
            return Ok(None);
        }
        // The output draws from each live run's current batch and any batch read while
        // building it.
        let mut staged: Vec<RecordBatch> = Vec::with_capacity(self.cursors.len());
        for cursor in &mut self.cursors {
            cursor.staged = staged.len();
            staged.push(cursor.batch.clone());
        }
        let mut rows: Vec<(usize, usize)> = Vec::with_capacity(self.batch_rows);
        while rows.len() < self.batch_rows {
            let Some(mut top) = self.heap.peek_mut() else {
                break;
            };
            let Reverse((_, run)) = *top;
            let cursor = &mut self.cursors[run];
            rows.push((cursor.staged, cursor.row));
            cursor.row += 1;
            if cursor.row == cursor.keys.len() {
                if !cursor.advance(&self.time)? {
                    PeekMut::pop(top);
                    continue;
                }
                cursor.staged = staged.len();
                staged.push(cursor.batch.clone());
            }
            *top = Reverse((cursor.keys[cursor.row], run));
        }
        gather(&self.schema, &staged, &rows)
            .map(Some)
            .map_err(|source| IoError::Arrow {
                path: self.cursors[0].path.clone(),
                source,
            })
    }
}

impl Iterator for RunMerge {
    type Item = Result<RecordBatch, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch().transpose()
    }
}

impl RunCursor {
    /// Reads the run's next non-empty batch; false when the run is exhausted.
    fn advance(&mut self, time: &RunTime) -> Result<bool, IoError> {
        loop {
            let Some(batch) = self.reader.next() else {
                return Ok(false);
            };
            let batch = batch.map_err(|source| IoError::Decode {
                path: self.path.clone(),
                source,
            })?;
            self.first_row += self.keys.len() as u64;
            let ctx = ColumnContext {
                path: &self.path,
                column: &time.name,
                role: "time",
            };
            self.keys = columns::time_values(&ctx, batch.column(time.index), self.first_row)?;
            self.batch = batch;
            self.row = 0;
            if !self.keys.is_empty() {
                return Ok(true);
            }
        }
    }
}
