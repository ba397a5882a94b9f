//! The crate's one Parquet configuration: how files are written (zstd, row groups of
//! [`ROW_GROUP_ROWS`] rows, atomically) and opened for reading (with errors that name the
//! file and say what to do).
//!
//! ```
//! use std::sync::Arc;
//!
//! use arrow::array::{ArrayRef, Int64Array, RecordBatch};
//! use recsift::io::parquet_file::{read_parquet, write_parquet_atomic};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("ids.parquet");
//! let batch = RecordBatch::try_from_iter([(
//!     "id",
//!     Arc::new(Int64Array::from(vec![3, 1, 2])) as ArrayRef,
//! )])?;
//! write_parquet_atomic(&path, &batch)?;
//! assert_eq!(read_parquet(&path)?, vec![batch]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::suggest::closest;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;

use super::atomic::PendingFile;
use super::{IoError, resolved};

/// Rows per row group in files recsift writes (also the unit a streaming reader can skip).
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// What to do about a missing input file named by a pipeline.
const PIPELINE_PATH_FIX: &str =
    "check the path (relative paths in a pipeline are resolved against the pipeline file's folder)";

/// zstd level: 3 is zstd's own default, a good size/speed balance for ids and floats.
const ZSTD_LEVEL: i32 = 3;

/// The writer properties every Parquet file recsift writes uses.
pub fn writer_properties() -> WriterProperties {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// A Parquet file being written batch by batch; it appears at its path, complete, only on
/// [`ParquetSink::finish`]. Dropping an unfinished sink leaves the path untouched.
pub struct ParquetSink {
    path: PathBuf,
    pending: PendingFile,
    writer: ArrowWriter<File>,
    rows: u64,
}

impl ParquetSink {
    /// Starts writing `path` with the given schema.
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self, IoError> {
        let (pending, file) = PendingFile::create(path)?;
        let writer =
            ArrowWriter::try_new(file, schema, Some(writer_properties())).map_err(|source| {
                IoError::WriteParquet {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            pending,
            writer,
            rows: 0,
        })
    }

    /// Appends a batch (its schema must be the sink's).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), IoError> {
        self.writer
            .write(batch)
            .map_err(|source| IoError::WriteParquet {
                path: self.path.clone(),
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the footer and moves the file into place; returns the number of rows.
    pub fn finish(self) -> Result<u64, IoError> {
        let Self {
            path,
            pending,
            writer,
            rows,
        } = self;
        let file = writer
            .into_inner()
            .map_err(|source| IoError::WriteParquet {
                path: path.clone(),
                source,
            })?;
        pending.commit(file)?;
        Ok(rows)
    }
}

/// Writes one batch as a Parquet file at `path`, atomically.
pub fn write_parquet_atomic(path: &Path, batch: &RecordBatch) -> Result<(), IoError> {
    let mut sink = ParquetSink::create(path, batch.schema())?;
    sink.write(batch)?;
    sink.finish()?;
    Ok(())
}

/// Opens a Parquet file for reading. `what` names the file in errors ("events file").
///
/// A missing file, an unreadable one and one that is not Parquet each get their own error.
pub fn open_parquet(
    path: &Path,
    what: &'static str,
) -> Result<ParquetRecordBatchReaderBuilder<File>, IoError> {
    open_parquet_with(path, what, ArrowReaderOptions::new())
}

/// As [`open_parquet`], with the file's offset index (the pages' positions) loaded when it
/// has one, as files written by Arrow and recsift do: a reader with a row selection then
/// skips the pages outside it without reading them.
pub fn open_parquet_paged(
    path: &Path,
    what: &'static str,
) -> Result<ParquetRecordBatchReaderBuilder<File>, IoError> {
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
    open_parquet_with(path, what, options)
}

fn open_parquet_with(
    path: &Path,
    what: &'static str,
    options: ArrowReaderOptions,
) -> Result<ParquetRecordBatchReaderBuilder<File>, IoError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            IoError::FileNotFound {
                what,
                path: path.to_path_buf(),
                resolved: resolved(path),
                fix: PIPELINE_PATH_FIX,
            }
        } else {
            IoError::Read {
                what,
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    guard_decoding(path, || {
        ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).map_err(|source| {
            IoError::NotParquet {
                what,
                path: path.to_path_buf(),
                source,
            }
        })
    })
}

/// Runs `read`, a reading of the Parquet file `path`, and turns a panic inside it into
/// [`IoError::DamagedParquet`]: the parquet crate panics on some malformed files (a page whose
/// lengths lie, found by fuzzing) instead of returning an error. The panic's message goes
/// into the error and is not printed.
pub fn guard_decoding<T>(
    path: &Path,
    read: impl FnOnce() -> Result<T, IoError>,
) -> Result<T, IoError> {
    quiet_panics::run(read).unwrap_or_else(|reason| {
        Err(IoError::DamagedParquet {
            path: path.to_path_buf(),
            reason,
        })
    })
}

/// [`guard_decoding`] for each step of an iterator over the batches of `path`; after an
/// error it ends.
pub fn guard_batches<I>(path: &Path, batches: I) -> GuardedBatches<I>
where
    I: Iterator<Item = Result<RecordBatch, IoError>>,
{
    GuardedBatches {
        path: path.to_path_buf(),
        batches,
        ended: false,
    }
}

/// See [`guard_batches`].
pub struct GuardedBatches<I> {
    path: PathBuf,
    batches: I,
    ended: bool,
}

impl<I: Iterator<Item = Result<RecordBatch, IoError>>> Iterator for GuardedBatches<I> {
    type Item = Result<RecordBatch, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let batches = &mut self.batches;
        let next =
            guard_decoding(&self.path, || Ok(batches.next())).unwrap_or_else(|e| Some(Err(e)));
        self.ended = !matches!(next, Some(Ok(_)));
        next
    }
}

/// Panics caught by [`guard_decoding`], kept off stderr.
mod quiet_panics {
    use std::cell::Cell;
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::Once;

    thread_local! {
        /// Guarded calls running on this thread.
        static GUARDED: Cell<usize> = const { Cell::new(0) };
    }

    /// `f`, or the message of its panic.
    pub(super) fn run<T>(f: impl FnOnce() -> T) -> Result<T, String> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if GUARDED.with(Cell::get) == 0 {
                    previous(info);
                }
            }));
        });
        GUARDED.with(|g| g.set(g.get() + 1));
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        GUARDED.with(|g| g.set(g.get() - 1));
        result.map_err(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the decoder panicked".to_string())
        })
    }
}

/// Reads a whole (small) Parquet file into memory: summaries, test fixtures, caches.
/// Event logs go through [`crate::io::events`], which reads only the mapped columns.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, IoError> {
    guard_decoding(path, || read_parquet_unguarded(path))
}

fn read_parquet_unguarded(path: &Path) -> Result<Vec<RecordBatch>, IoError> {
    let reader = open_parquet(path, "Parquet file")?
        .build()
        .map_err(|source| IoError::NotParquet {
            what: "Parquet file",
            path: path.to_path_buf(),
            source,
        })?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| IoError::Decode {
            path: path.to_path_buf(),
            source,
        })
}

/// The index of column `name` in `schema`, or an error listing the columns present and the
/// closest one. `role` says what the column is for ("user id").
pub fn find_column(
    path: &Path,
    schema: &Schema,
    name: &str,
    role: &'static str,
) -> Result<usize, IoError> {
    schema.index_of(name).map_err(|_| {
        let present: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        IoError::ColumnMissing {
            path: path.to_path_buf(),
            role,
            column: name.to_string(),
            suggestion: closest(name, present.iter().map(String::as_str)).map(str::to_string),
            present,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float32Array, Int64Array};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    #[test]
    fn files_are_zstd_with_bounded_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let n = ROW_GROUP_ROWS + 10;
        let ids = Int64Array::from_iter_values(0..n as i64);
        let vals = Float32Array::from_iter_values((0..n).map(|i| i as f32 / 2.0));
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("v", Arc::new(vals) as ArrayRef),
        ])
        .unwrap();
        write_parquet_atomic(&path, &batch).unwrap();

        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 2);
        assert_eq!(meta.row_group(0).num_rows() as usize, ROW_GROUP_ROWS);
        assert_eq!(meta.row_group(1).num_rows(), 10);
        assert!(matches!(
            meta.row_group(0).column(0).compression(),
            Compression::ZSTD(_)
        ));
        let back = read_parquet(&path).unwrap();
        let total: usize = back.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(total, n);
        let concatenated = arrow::compute::concat_batches(&batch.schema(), &back).unwrap();
        assert_eq!(concatenated, batch);
    }

    #[test]
    fn missing_and_non_parquet_files_get_distinct_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.parquet");
        let err = open_parquet(&missing, "events file").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "events file not found: {}; check the path (relative paths in a pipeline are \
                 resolved against the pipeline file's folder)",
                missing.display()
            )
        );

        let csv = dir.path().join("ratings.csv");
        std::fs::write(&csv, "userId,movieId,rating,timestamp\n1,2,3.5,4\n").unwrap();
        let err = open_parquet(&csv, "events file").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "events file {} is not a readable Parquet file (",
                csv.display()
            )),
            "{msg}"
        );
        assert!(msg.ends_with("convert it to Parquet first (e.g. `recsift import movielens` for MovieLens, or pandas/polars `to_parquet`)"), "{msg}");
    }

    #[test]
    fn a_relative_missing_path_says_where_it_resolved_to() {
        let err = open_parquet(Path::new("no/such.parquet"), "items file").unwrap_err();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "items file not found: no/such.parquet (resolved to {}); check the path \
                 (relative paths in a pipeline are resolved against the pipeline file's folder)",
                cwd.join("no/such.parquet").display()
            )
        );
    }

    #[test]
    fn a_missing_column_lists_the_columns_and_suggests_one() {
        let schema = Schema::new(vec![
            arrow::datatypes::Field::new("userId", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("movieId", arrow::datatypes::DataType::Int64, false),
        ]);
        let err = find_column(Path::new("r.parquet"), &schema, "user_id", "user id").unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.parquet: no column `user_id` for the user id (did you mean `userId`?); columns \
             present: userId, movieId"
        );
        let err = find_column(Path::new("r.parquet"), &schema, "label", "label").unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.parquet: no column `label` for the label; columns present: userId, movieId"
        );
    }
    #[test]
    fn a_panic_while_decoding_becomes_an_error_naming_the_file() {
        let path = Path::new("damaged.parquet");
        let err = guard_decoding(path, || -> Result<(), IoError> {
            panic!("range start index 928 out of range for slice of length 640")
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "damaged.parquet is damaged: the Parquet decoder failed on it (range start index \
             928 out of range for slice of length 640); write or download the file again"
        );
        // Errors and values pass through; a panicking step ends an iterator.
        assert_eq!(guard_decoding(path, || Ok(7)).unwrap(), 7);
        let mut calls = 0;
        let steps = std::iter::from_fn(|| {
            calls += 1;
            if calls == 2 {
                panic!("bad page");
            }
            Some(Ok(RecordBatch::new_empty(Arc::new(Schema::empty()))))
        });
        let results: Vec<bool> = guard_batches(path, steps).map(|r| r.is_ok()).collect();
        assert_eq!(results, [true, false]);
    }
}
