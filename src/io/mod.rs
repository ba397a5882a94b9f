//! Files in and out: the only module that touches Parquet (and the MovieLens text formats).
//!
//! Everything recsift reads or writes on disk goes through here:
//!
//! | module | job |
//! |---|---|
//! | [`parquet_file`] | the one Parquet writer configuration (zstd, ~1M-row row groups), atomic writes, opening files for reading with precise errors |
//! | [`events`] | logged events `(user, item, label, time)` from any Parquet file through a column mapping, whole or streamed in batches (in time order for a replay) |
//! | [`sort`] | a log sorted by its time column, stably, in memory or by an external merge sort within a memory budget |
//! | [`items`] | item text rendered from a template over an item file's columns |
//! | [`template`] | the text template language itself (pure, no file I/O, used by the planner too) |
//! | [`results`] | an experiment's output directory: JSON, rounds and selections as Parquet, plots |
//! | [`embedding_cache`] | text embeddings keyed by (model id, SHA-256 of the text), so each text is embedded once |
//! | [`checkpoint`] | a run's checkpoint: named tensors and a JSON document in one safetensors file, replaced atomically |
//! | [`movielens`] | MovieLens releases (ml-100k, ml-1m, ml-10m, the CSV releases) converted to Parquet |
//!
//! # Type mapping
//!
//! Readers accept what pandas, polars, pyarrow, Spark and DuckDB commonly write, and turn it
//! into recsift's domain types ([`crate::data`]):
//!
//! | field | Arrow types accepted | becomes |
//! |---|---|---|
//! | user / item id | any integer (`Int8`..`Int64`, `UInt8`..`UInt64`), `Utf8`, `LargeUtf8`, `Utf8View`, a dictionary of strings | [`RawId::Int`](crate::data::RawId::Int) / [`RawId::Str`](crate::data::RawId::Str), interned into an [`IdMap`](crate::data::IdMap) |
//! | label | any integer or float, decimals, `Boolean` | `f32`; must be finite, and 0 or 1 for clicks |
//! | time | any integer (seconds), `Timestamp` of any unit and time zone | `i64` seconds since the epoch (rounded down) |
//! | item text column | strings; `List`/`LargeList` of strings (elements joined by one space); integers; floats; `Boolean` | text in the rendered template; a null cell renders as nothing |
//!
//! Nulls in an event column are an error that names the row: recsift does not guess a value.
//! Rows are numbered from 0 in file order, as pandas and polars number them.
//!
//! Files written by recsift use fixed types: ratings are `user_id: Int64, item_id: Int64,
//! rating: Float32, timestamp: Int64`; items are `item_id: Int64, title: Utf8,
//! genres: List<Utf8>`. Every write goes to a temporary file in the destination's folder
//! which is then renamed over the destination, so a reader never sees half a file.
//!
//! # Example: write events, read them back through a column mapping
//!
//! ```
//! use std::sync::Arc;
//!
//! use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
//! use recsift::data::{IdMap, LabelKind, RawId};
//! use recsift::io::events::read_events;
//! use recsift::io::parquet_file::write_parquet_atomic;
//! use recsift::plan::params::{EventColumns, EventSource};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("clicks.parquet");
//! let batch = RecordBatch::try_from_iter([
//!     ("visitor", Arc::new(StringArray::from(vec!["ann", "bob", "ann"])) as ArrayRef),
//!     ("sku", Arc::new(Int64Array::from(vec![10, 10, 11])) as ArrayRef),
//!     ("clicked", Arc::new(Float32Array::from(vec![1.0, 0.0, 1.0])) as ArrayRef),
//!     ("ts", Arc::new(Int64Array::from(vec![100, 101, 102])) as ArrayRef),
//! ])?;
//! write_parquet_atomic(&path, &batch)?;
//!
//! let source = EventSource {
//!     path,
//!     columns: EventColumns {
//!         user: "visitor".into(),
//!         item: "sku".into(),
//!         label: "clicked".into(),
//!         time: "ts".into(),
//!     },
//!     label_kind: LabelKind::Click,
//! };
//! let (mut users, mut items) = (IdMap::new(), IdMap::new());
//! let events = read_events(&source, &mut users, &mut items, None)?;
//! assert_eq!(events.len(), 3);
//! assert_eq!((events[2].user, events[2].item), (0, 1)); // ann, sku 11
//! assert_eq!(users.raw(1), &RawId::Str("bob".into()));
//! assert_eq!(items.raw(1), &RawId::Int(11));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::error::UserFixable;
use std::path::PathBuf;

use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use parquet::errors::ParquetError;

pub(crate) mod atomic;
pub mod checkpoint;
mod columns;
pub mod embedding_cache;
pub mod events;
pub mod items;
pub mod movielens;
pub mod parquet_file;
pub mod results;
pub mod shares;
pub mod sort;
pub mod template;

pub use template::TemplateError;

/// What went wrong reading or writing a file. Every variant names the file, and where it
/// applies the column, row or line, and says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A file (or folder) that should be read does not exist.
    #[error(
        "{what} not found: {}{}; {fix}",
        .path.display(), resolved_note(.path, .resolved)
    )]
    FileNotFound {
        /// What the file is for ("events file", "MovieLens movies file", ...).
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// The absolute path it resolved to.
        resolved: PathBuf,
        /// What to do about it.
        fix: &'static str,
    },
    /// A file exists but cannot be opened or read.
    #[error("cannot read {what} {}: {source}", .path.display())]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file is not Parquet (or its footer is damaged).
    #[error(
        "{what} {} is not a readable Parquet file ({source}); convert it to Parquet first \
         (e.g. `recsift import movielens` for MovieLens, or pandas/polars `to_parquet`)",
        .path.display()
    )]
    NotParquet {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The Parquet reader's reason.
        source: ParquetError,
    },
    /// The Parquet decoder broke down on a malformed file (it panicked; see
    /// [`parquet_file::guard_decoding`]).
    #[error(
        "{} is damaged: the Parquet decoder failed on it ({reason}); write or download the file again",
        .path.display()
    )]
    DamagedParquet {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A Parquet file failed while its data was decoded.
    #[error("decoding {} failed: {source}; the file may be truncated or corrupt", .path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        source: ArrowError,
    },
    /// A mapped column is not in the file.
    #[error(
        "{}: no column `{column}` for the {role}{}; columns present: {}",
        .path.display(), did_you_mean(.suggestion.as_deref()), .present.join(", ")
    )]
    ColumnMissing {
        /// The file.
        path: PathBuf,
        /// What the column was to hold ("user id", "label", ...).
        role: &'static str,
        /// The name asked for.
        column: String,
        /// The columns the file has.
        present: Vec<String>,
        /// The present column closest to `column`, if any is close.
        suggestion: Option<String>,
    },
    /// A mapped column has a type that cannot hold its role.
    #[error(
        "{}: column `{column}` ({role}) has type {found}, but the {role} accepts {accepted}; \
         cast the column when writing the file, or map another column",
        .path.display()
    )]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// What the column was to hold.
        role: &'static str,
        /// The column.
        column: String,
        /// The type found in the file.
        found: DataType,
        /// The types accepted, in words.
        accepted: &'static str,
    },
    /// A mapped column has a null where a value is needed.
    #[error(
        "{}: column `{column}` ({role}) is null at row {row} (counting from 0); drop or fill \
         the rows with nulls",
        .path.display()
    )]
    NullValue {
        /// The file.
        path: PathBuf,
        /// What the column holds.
        role: &'static str,
        /// The column.
        column: String,
        /// First row with a null, counting from 0.
        row: u64,
    },
    /// A label is NaN or infinite.
    #[error(
        "{}: label column `{column}` is {value} at row {row} (counting from 0); drop or \
         impute these rows",
        .path.display()
    )]
    NonFiniteLabel {
        /// The file.
        path: PathBuf,
        /// The label column.
        column: String,
        /// First row with a non-finite label.
        row: u64,
        /// The value found.
        value: f64,
    },
    /// A click label that is neither 0 nor 1.
    #[error(
        "{}: label column `{column}` is {value} at row {row} (counting from 0), but click \
         labels must be 0 or 1; binarise the column, or declare the labels as ratings",
        .path.display()
    )]
    NotBinaryClick {
        /// The file.
        path: PathBuf,
        /// The label column.
        column: String,
        /// First offending row.
        row: u64,
        /// The value found.
        value: f64,
    },
    /// An unsigned 64-bit value too large for recsift's signed 64-bit ids and times.
    #[error(
        "{}: column `{column}` ({role}) holds {value} at row {row} (counting from 0), which \
         does not fit a signed 64-bit integer; store such ids as strings",
        .path.display()
    )]
    ValueOutOfRange {
        /// The file.
        path: PathBuf,
        /// What the column holds.
        role: &'static str,
        /// The column.
        column: String,
        /// The offending row.
        row: u64,
        /// The value found.
        value: u64,
    },
    /// A file without rows where rows are needed.
    #[error("{what} {} has no rows", .path.display())]
    EmptyFile {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// An item file with two rows for one item.
    #[error(
        "{}: item `{id}` appears twice in column `{column}` (rows {first_row} and {row}, \
         counting from 0); keep one row per item",
        .path.display()
    )]
    DuplicateItem {
        /// The file.
        path: PathBuf,
        /// The item id column.
        column: String,
        /// The repeated id.
        id: String,
        /// Where it first appeared.
        first_row: u64,
        /// Where it appeared again.
        row: u64,
    },
    /// An item text template that cannot be rendered against a file.
    #[error("{}: item text template \"{template}\": {source}", .path.display())]
    Template {
        /// The item file.
        path: PathBuf,
        /// The template as written.
        template: String,
        /// What is wrong with it.
        source: TemplateError,
    },
    /// A folder that matches no MovieLens release layout.
    #[error(
        "{} does not look like an unpacked MovieLens release: looked for {looked_for}{}",
        .dir.display(), suggest_folder(.hint.as_deref())
    )]
    UnknownLayout {
        /// The folder given.
        dir: PathBuf,
        /// The files looked for, in words.
        looked_for: &'static str,
        /// A sub-folder that does look like a release, if there is one.
        hint: Option<String>,
    },
    /// A line of a text dataset file that cannot be parsed.
    #[error("{}:{line}: {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Line number, counting from 1.
        line: u64,
        /// What was wrong with it.
        reason: String,
    },
    /// A rating that parses as a number but is NaN or infinite.
    #[error(
        "{}:{line}: rating `{value}` is not a finite number; remove the line",
        .path.display()
    )]
    NonFiniteRating {
        /// The file.
        path: PathBuf,
        /// Line number, counting from 1.
        line: u64,
        /// The rating as written.
        value: String,
    },
    /// Writing a file failed.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Encoding a Parquet file failed.
    #[error("cannot write Parquet file {}: {source}", .path.display())]
    WriteParquet {
        /// The file.
        path: PathBuf,
        /// The encoder's reason.
        source: ParquetError,
    },
    /// Building the Arrow columns of an output file failed (a bug in recsift).
    #[error("cannot build the columns of {}: {source}", .path.display())]
    Arrow {
        /// The file that was to be written.
        path: PathBuf,
        /// Arrow's reason.
        source: ArrowError,
    },
    /// Serialising JSON failed.
    #[error("cannot write JSON file {}: {source}", .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's reason.
        source: serde_json::Error,
    },
    /// The output directory holds files and `--force` was not given.
    #[error(
        "output directory {} is not empty; pass --force to overwrite, or choose another --out",
        .dir.display()
    )]
    OutputNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The output file exists and replacing it was not asked for.
    #[error("{} exists; pass --force to replace it, or choose another output file", .path.display())]
    OutputExists {
        /// The file.
        path: PathBuf,
    },
    /// The output file is the input file.
    #[error(
        "the output {} is the input file; write the sorted copy to another file (the input is \
         never overwritten)",
        .path.display()
    )]
    OutputIsInput {
        /// The file.
        path: PathBuf,
    },
    /// A sort that exceeds its memory budget cannot write its sorted runs to disk.
    #[error(
        "the log does not fit the sort's memory budget, and sorted runs cannot be written to \
         {}: {reason}; point TMPDIR (for a replay) or `recsift sort --temp-dir` at a \
         writable folder with room for a copy of the log, or raise the budget \
         (`protocol.replay.sort_memory`, `recsift sort --memory`)",
        .dir.display()
    )]
    Spill {
        /// The folder the runs were to go to.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The output path exists and is not a directory.
    #[error("output path {} exists and is not a directory; choose another --out", .path.display())]
    OutputNotDir {
        /// The path.
        path: PathBuf,
    },
    /// An embedding cache holds vectors of the asked model with another dimension.
    #[error(
        "cache {} holds {found}-d vectors of model {model} but {asked} were asked: delete the \
         file or point `cache:` elsewhere",
        .path.display()
    )]
    EmbeddingDimMismatch {
        /// The cache file.
        path: PathBuf,
        /// The model id.
        model: String,
        /// The dimension of its vectors in the file.
        found: usize,
        /// The dimension asked for.
        asked: usize,
    },
    /// A file that should be an embedding cache but cannot be read as one.
    #[error(
        "embedding cache {} is unusable: {problem}; delete the file (its vectors will be \
         computed again) or point `cache:` elsewhere",
        .path.display()
    )]
    BadEmbeddingCache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A checkpoint file that cannot be read back (damaged, or not written by recsift).
    #[error(
        "checkpoint {} is unusable: {problem}; start the run over without --resume (with \
         --force to replace the folder's files)",
        .path.display()
    )]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The processes of a cluster could not share a file's blocks.
    #[error(
        "could not share {} between the processes of the cluster: {reason}",
        .path.display()
    )]
    Gather {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Another process of the cluster could not read its share of a file.
    #[error(
        "process {process} of the cluster could not read its share of {}: {message}",
        .path.display()
    )]
    PeerRead {
        /// The file.
        path: PathBuf,
        /// The process that failed.
        process: usize,
        /// Its error.
        message: String,
    },
    /// A replay log out of time order, read by the processes of a cluster.
    #[error(
        "{} is not in time order (row {row} at time {time} follows time {previous}); the \
         processes of a cluster replay a log only in time order, since each reads only its \
         share of it: write a sorted copy once with `recsift sort {} SORTED.parquet --time \
         {column}` and replay that",
        .path.display(),
        .path.display()
    )]
    UnsortedForCluster {
        /// The log.
        path: PathBuf,
        /// File row of the first event earlier than the one before it.
        row: u64,
        /// Its time.
        time: i64,
        /// The time before it.
        previous: i64,
        /// The time column.
        column: String,
    },
    /// Records that cannot become a table (e.g. two columns with one name). A bug in the
    /// caller, reported rather than written.
    #[error("cannot write {}: {reason}", .path.display())]
    InvalidRecords {
        /// The file that was to be written.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
}

impl UserFixable for IoError {
    /// Whether the user can fix this (a missing file or column, bad values, an occupied
    /// output directory) rather than an internal failure (building Arrow columns or
    /// serialising JSON from values recsift made itself) or a cluster's failure to share a
    /// file (a lost peer: as a lost peer during a round).
    fn is_user_error(&self) -> bool {
        !matches!(
            self,
            IoError::Arrow { .. }
                | IoError::Json { .. }
                | IoError::InvalidRecords { .. }
                | IoError::Gather { .. }
        )
    }
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

fn resolved_note(path: &std::path::Path, resolved: &std::path::Path) -> String {
    if path == resolved {
        String::new()
    } else {
        format!(" (resolved to {})", resolved.display())
    }
}

fn suggest_folder(hint: Option<&str>) -> String {
    hint.map_or_else(String::new, |h| format!("; did you mean {h}?"))
}

/// `path` made absolute against the working directory (for messages only).
pub(crate) fn resolved(path: &std::path::Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
