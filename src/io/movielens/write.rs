//! The Parquet files an import writes: ratings (streamed in row groups) and items.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::SchemaRef;

use super::parse::{MovieRow, RatingRow};
use crate::data::LabelKind;
use crate::io::IoError;
use crate::io::events::events_schema;
use crate::io::items::write_item_table;
use crate::io::parquet_file::{ParquetSink, ROW_GROUP_ROWS};

/// A ratings file written one row group at a time, so a 25M-rating release never sits in
/// memory whole.
pub(super) struct RatingsWriter {
    path: PathBuf,
    sink: ParquetSink,
    schema: SchemaRef,
    user: Vec<i64>,
    item: Vec<i64>,
    rating: Vec<f32>,
    timestamp: Vec<i64>,
}

impl RatingsWriter {
    pub(super) fn create(path: &Path) -> Result<Self, IoError> {
        let schema = events_schema(LabelKind::Rating);
        Ok(Self {
            path: path.to_path_buf(),
            sink: ParquetSink::create(path, Arc::clone(&schema))?,
            schema,
            user: Vec::new(),
            item: Vec::new(),
            rating: Vec::new(),
            timestamp: Vec::new(),
        })
    }

    pub(super) fn push(&mut self, row: RatingRow) -> Result<(), IoError> {
        self.user.push(row.user);
        self.item.push(row.item);
        self.rating.push(row.rating);
        self.timestamp.push(row.timestamp);
        if self.user.len() >= ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        if self.user.is_empty() {
            return Ok(());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.user))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.item))),
            Arc::new(Float32Array::from(std::mem::take(&mut self.rating))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.timestamp))),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|source| {
            IoError::Arrow {
                path: self.path.clone(),
                source,
            }
        })?;
        self.sink.write(&batch)
    }

    /// Writes what is buffered and moves the file into place; returns the number of rows.
    pub(super) fn finish(mut self) -> Result<u64, IoError> {
        self.flush()?;
        self.sink.finish()
    }
}

/// `item_id: Int64, title: Utf8, genres: List<Utf8>` from `movies`, in their order.
pub(super) fn write_items(path: &Path, movies: &[MovieRow]) -> Result<(), IoError> {
    write_item_table(
        path,
        movies
            .iter()
            .map(|m| (m.id, m.title.as_str(), m.genres.iter().map(String::as_str))),
    )
}
