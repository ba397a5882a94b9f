//! Sorting a log by its time column, stably and in bounded memory: for replays of logs
//! stored out of time order, and for `recsift sort`.
//!
//! **Order.** Rows are ordered by the time column's value at its own precision (integer
//! columns as they are, `Timestamp`s in their unit), then by their position in the input:
//! the sort is stable, so rows with equal times keep their order, and a log already in
//! time order comes out unchanged.
//!
//! **Memory.** Rows are read a batch of [`READ_ROWS`] at a time and held until the next
//! batch would take them over the budget, [`SortOptions::memory`]; what counts is the
//! batches' Arrow buffers plus 16 bytes per row of sort index. A log that fits is sorted
//! in memory and handed out from there. Otherwise this is an **external merge sort**: each
//! budget's worth of rows is sorted and spilled as a Parquet file (a *run*) to a fresh
//! folder `recsift-sort-*` in [`SortOptions::temp_dir`], and the runs are then merged, each
//! read a slice of the budget at a time (more than 64 runs, from a log over 64 times the
//! budget, are first merged 64 at a time into longer runs). The folder is removed when the
//! sort is dropped (after an error too). The process's peak memory is above the budget by the Parquet
//! reader's and writer's buffers (a page per column, and one row group of a file being
//! written) and by one output batch.
//!
//! ```
//! use std::sync::Arc;
//!
//! use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
//! use recsift::io::parquet_file::{read_parquet, write_parquet_atomic};
//! use recsift::io::sort::{SortOptions, sort_file};
//!
//! let dir = tempfile::tempdir()?;
//! let log = dir.path().join("log.parquet");
//! let batch = RecordBatch::try_from_iter([
//!     ("ts", Arc::new(Int64Array::from(vec![30, 10, 20, 10])) as ArrayRef),
//!     ("what", Arc::new(StringArray::from(vec!["c", "a", "b", "a2"])) as ArrayRef),
//! ])?;
//! write_parquet_atomic(&log, &batch)?;
//!
//! // A budget of 1 KiB spills runs and merges them; the default (1 GiB) sorts in memory.
//! let options = SortOptions { temp_dir: dir.path().to_path_buf(), ..SortOptions::new(1024) };
//! let sorted = dir.path().join("sorted.parquet");
//! let summary = sort_file(&log, &sorted, "ts", false, &options)?;
//! assert_eq!(summary.rows, 4);
//! let back = read_parquet(&sorted)?;
//! let what = back[0].column(1).as_any().downcast_ref::<StringArray>().unwrap();
//! assert_eq!(what.iter().flatten().collect::<Vec<_>>(), ["a", "a2", "b", "c"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod merge;
mod run;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tempfile::TempDir;

use self::merge::{RunMerge, RunTime};
use self::run::{RunBuffer, SortedRun};
use super::IoError;
use super::columns::{self, ColumnContext};
use super::parquet_file::{ParquetSink, find_column, open_parquet};

/// The memory budget unless asked otherwise: 1 GiB, about 24 million events of four
/// numeric columns (28 bytes of columns and 16 of sort index each).
pub const DEFAULT_SORT_MEMORY: u64 = 1 << 30;

/// Rows per batch read from the input (and from each run while merging, at most): small
/// enough that the budget is kept closely, large enough to amortise per-batch work.
pub const READ_ROWS: usize = 8192;

/// Rows per batch written to a run or to a sorted copy: gathering a batch from thousands of
/// input batches has a cost per input batch, which this many rows amortise.
const WRITE_ROWS: usize = 1 << 16;

/// Runs merged at once, at most: each holds an open file and a batch. More runs (a log many
/// times the budget) are first merged in groups of this many.
const MAX_MERGE_RUNS: usize = 64;

/// Rows per batch read from a run while merging, at least (however small the budget).
const MIN_MERGE_READ_ROWS: usize = 1024;

/// Binary units a memory size may be written in, by size.
const UNITS: [(&str, u64); 5] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// How a sort may use memory and disk.
#[derive(Clone, Debug, PartialEq)]
pub struct SortOptions {
    /// Bytes of rows held in memory at once (see the module docs for what counts); above
    /// it, sorted runs are spilled to disk.
    pub memory: u64,
    /// Where the folder of spilled runs is created.
    pub temp_dir: PathBuf,
    /// Print a line on stderr for each spilled run and for the merge.
    pub progress: bool,
}

impl SortOptions {
    /// A budget of `memory` bytes, runs spilled to the system's temporary folder (`TMPDIR`,
    /// else `/tmp`), no progress lines.
    pub fn new(memory: u64) -> Self {
        Self {
            memory,
            temp_dir: std::env::temp_dir(),
            progress: false,
        }
    }
}

/// Parses a memory size: a whole number and a binary unit, `B`, `KiB`, `MiB`, `GiB` or
/// `TiB` (`512MiB`, `2 GiB`). None if it is not one.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit.trim())?;
    number.checked_mul(*scale)
}

/// A memory size in the largest unit that writes it exactly (`1 GiB`, `1536 MiB`); what
/// [`parse_memory`] reads back.
pub fn format_memory(bytes: u64) -> String {
    let (name, scale) = UNITS
        .iter()
        .find(|(_, scale)| bytes.is_multiple_of(*scale) && bytes >= *scale)
        .unwrap_or(&("B", 1));
    format!("{} {name}", bytes / scale)
}

/// A time column in a table being sorted.
pub(crate) struct TimeColumn<'a> {
    /// The file the table comes from, and the column's name (for messages).
    pub ctx: ColumnContext<'a>,
    /// Position of the column in a batch.
    pub index: usize,
}

/// The rows of a table in (time, position) order, a record batch at a time. Holds the
/// folder of spilled runs, if any, until dropped.
pub(crate) struct SortedBatches {
    source: Sorted,
    /// The file sorted (for messages).
    path: PathBuf,
    runs: usize,
    _spill: Option<TempDir>,
}

/// Where the sorted rows come from.
enum Sorted {
    Memory(SortedRun),
    Merge(RunMerge),
}

impl SortedBatches {
    /// Runs spilled to disk (0 for a sort in memory).
    pub(crate) fn runs(&self) -> usize {
        self.runs
    }
}

impl Iterator for SortedBatches {
    type Item = Result<RecordBatch, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Sorted::Memory(run) => run.next().map(|batch| {
                batch.map_err(|source| IoError::Arrow {
                    path: self.path.clone(),
                    source,
                })
            }),
            Sorted::Merge(merge) => merge.next(),
        }
    }
}

/// Sorts `input` (batches of `schema`, in input order) by `time`, within `options`' budget;
/// the result hands out batches of `batch_rows` rows. Every input row is read before this
/// returns: a null or out-of-range time fails here, naming its row.
pub(crate) fn sort_batches(
    input: impl Iterator<Item = Result<RecordBatch, IoError>>,
    schema: SchemaRef,
    time: &TimeColumn<'_>,
    options: &SortOptions,
    batch_rows: usize,
) -> Result<SortedBatches, IoError> {
    let started = Instant::now();
    let mut buffer = RunBuffer::new(schema.clone());
    let mut spill: Option<Spill> = None;
    let mut rows = 0u64;
    for batch in input {
        let batch = batch?;
        let keys = columns::time_values(&time.ctx, batch.column(time.index), rows)?;
        rows += keys.len() as u64;
        let incoming =
            batch.get_array_memory_size() as u64 + keys.len() as u64 * run::INDEX_BYTES_PER_ROW;
        if buffer.rows() > 0 && buffer.bytes() + incoming > options.memory {
            let full = std::mem::replace(&mut buffer, RunBuffer::new(schema.clone()));
            match &mut spill {
                Some(spill) => spill.write(full, options)?,
                None => spill = Some(Spill::start(full, options)?),
            }
        }
        buffer.push(batch, &keys);
    }
    let Some(mut spill) = spill else {
        let sorted = buffer.sort(batch_rows);
        if options.progress {
            eprintln!(
                "sort: {} rows sorted in memory ({:.1} s)",
                thousands(rows),
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(SortedBatches {
            source: Sorted::Memory(sorted),
            path: time.ctx.path.to_path_buf(),
            runs: 0,
            _spill: None,
        });
    };
    if buffer.rows() > 0 {
        spill.write(buffer, options)?;
    }
    let runs = spill.runs.len();
    // Each run is read a slice of the budget at a time (rows estimated from the input).
    let bytes_per_row = (spill.bytes / rows.max(1)).max(1);
    let read_rows = |fan_in: usize| {
        let rows = options.memory / (2 * fan_in as u64 * bytes_per_row);
        (rows as usize).clamp(MIN_MERGE_READ_ROWS, READ_ROWS)
    };
    let run_time = RunTime {
        index: time.index,
        name: time.ctx.column.to_string(),
    };
    spill.reduce(&run_time, read_rows(MAX_MERGE_RUNS), options)?;
    if options.progress {
        eprintln!(
            "sort: merging {} runs of {} rows ({:.1} s so far)",
            spill.runs.len(),
            thousands(rows),
            started.elapsed().as_secs_f64()
        );
    }
    let fan_in = spill.runs.len();
    let merge = RunMerge::open(&spill.runs, schema, run_time, read_rows(fan_in), batch_rows)
        .map_err(|e| spill.error(e))?;
    Ok(SortedBatches {
        source: Sorted::Merge(merge),
        path: time.ctx.path.to_path_buf(),
        runs,
        _spill: Some(spill.dir),
    })
}

/// The folder of spilled runs and what is in it.
struct Spill {
    dir: TempDir,
    schema: SchemaRef,
    /// The runs to merge, in input order.
    runs: Vec<PathBuf>,
    /// Run files written so far (names them).
    written: usize,
    /// Memory the spilled rows took (to size the merge's reads).
    bytes: u64,
}

impl Spill {
    /// Creates the folder in `options.temp_dir` and writes the first run.
    fn start(first: RunBuffer, options: &SortOptions) -> Result<Self, IoError> {
        let dir = tempfile::Builder::new()
            .prefix("recsift-sort-")
            .tempdir_in(&options.temp_dir)
            .map_err(|e| IoError::Spill {
                dir: options.temp_dir.clone(),
                reason: e.to_string(),
            })?;
        let mut spill = Self {
            dir,
            schema: first.schema().clone(),
            runs: Vec::new(),
            written: 0,
            bytes: 0,
        };
        spill.write(first, options)?;
        Ok(spill)
    }

    /// Sorts `buffer` and writes it as the next run.
    fn write(&mut self, buffer: RunBuffer, options: &SortOptions) -> Result<(), IoError> {
        let started = Instant::now();
        let bytes = buffer.bytes();
        let dir = self.dir.path().to_path_buf();
        let sorted = buffer.sort(WRITE_ROWS).map(|batch| {
            batch.map_err(|source| IoError::Arrow {
                path: dir.clone(),
                source,
            })
        });
        let (path, rows) = self.write_run(sorted)?;
        self.runs.push(path);
        self.bytes += bytes;
        if options.progress {
            eprintln!(
                "sort: run {} ({} rows) spilled to {} ({:.1} s)",
                self.runs.len(),
                thousands(rows),
                self.dir.path().display(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    /// Merges consecutive groups of [`MAX_MERGE_RUNS`] runs into one run each, until at
    /// most that many are left. A group holds consecutive stretches of the input, so the
    /// merged run is still in stable order.
    fn reduce(
        &mut self,
        time: &RunTime,
        read_rows: usize,
        options: &SortOptions,
    ) -> Result<(), IoError> {
        while self.runs.len() > MAX_MERGE_RUNS {
            let runs = std::mem::take(&mut self.runs);
            for group in runs.chunks(MAX_MERGE_RUNS) {
                if let [only] = group {
                    self.runs.push(only.clone());
                    continue;
                }
                let started = Instant::now();
                let merge = RunMerge::open(
                    group,
                    self.schema.clone(),
                    time.clone(),
                    read_rows,
                    WRITE_ROWS,
                )
                .map_err(|e| self.error(e))?;
                let (path, rows) = self.write_run(merge)?;
                for merged in group {
                    // Frees disk early; the folder goes with the sort in any case.
                    let _ = std::fs::remove_file(merged);
                }
                self.runs.push(path);
                if options.progress {
                    eprintln!(
                        "sort: {} runs merged into one of {} rows ({:.1} s)",
                        group.len(),
                        thousands(rows),
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        Ok(())
    }

    /// Writes `batches` as a new run file; its path and rows.
    fn write_run(
        &mut self,
        batches: impl Iterator<Item = Result<RecordBatch, IoError>>,
    ) -> Result<(PathBuf, u64), IoError> {
        self.written += 1;
        let path = self
            .dir
            .path()
            .join(format!("run-{:05}.parquet", self.written));
        let mut sink =
            ParquetSink::create(&path, self.schema.clone()).map_err(|e| self.error(e))?;
        for batch in batches {
            sink.write(&batch?).map_err(|e| self.error(e))?;
        }
        let rows = sink.finish().map_err(|e| self.error(e))?;
        Ok((path, rows))
    }

    /// A failure to write or read a run, with the folder and what to do.
    fn error(&self, error: IoError) -> IoError {
        IoError::Spill {
            dir: self.dir.path().to_path_buf(),
            reason: error.to_string(),
        }
    }
}

/// What `recsift sort` did.
#[derive(Clone, Debug, PartialEq)]
pub struct SortSummary {
    /// The sorted copy.
    pub output: PathBuf,
    /// The time column.
    pub time: String,
    /// Rows written.
    pub rows: u64,
    /// Runs spilled to disk and merged (0: sorted in memory).
    pub runs: usize,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl fmt::Display for SortSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.runs {
            0 => "in memory".to_string(),
            n => format!("{n} runs spilled and merged"),
        };
        write!(
            f,
            "sorted {} rows by `{}` ({how}) in {:.1} s -> {}",
            thousands(self.rows),
            self.time,
            self.seconds,
            self.output.display()
        )
    }
}

/// Writes a copy of the Parquet file `input`, every column kept, with its rows sorted by
/// the column `time` (see the module docs for the order and the memory used). The copy
/// appears at `output` only once complete. `output` must not be `input`, and must not exist
/// unless `replace`.
pub fn sort_file(
    input: &Path,
    output: &Path,
    time: &str,
    replace: bool,
    options: &SortOptions,
) -> Result<SortSummary, IoError> {
    let started = Instant::now();
    check_output(input, output, replace)?;
    let builder = open_parquet(input, WHAT)?;
    let schema = builder.schema().clone();
    let index = find_column(input, &schema, time, "time")?;
    let ctx = ColumnContext {
        path: input,
        column: time,
        role: "time",
    };
    columns::check_time_type(&ctx, schema.field(index).data_type())?;
    let reader = builder
        .with_batch_size(READ_ROWS)
        .build()
        .map_err(|source| IoError::NotParquet {
            what: WHAT,
            path: input.to_path_buf(),
            source,
        })?;
    let batches = reader.map(|batch| {
        batch.map_err(|source| IoError::Decode {
            path: input.to_path_buf(),
            source,
        })
    });
    let time_column = TimeColumn { ctx, index };
    let sorted = sort_batches(batches, schema.clone(), &time_column, options, WRITE_ROWS)?;
    let runs = sorted.runs();
    let mut sink = ParquetSink::create(output, schema)?;
    for batch in sorted {
        sink.write(&batch?)?;
    }
    let rows = sink.finish()?;
    Ok(SortSummary {
        output: output.to_path_buf(),
        time: time.to_string(),
        rows,
        runs,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What the input of `recsift sort` is called in messages.
const WHAT: &str = "log";

/// Refuses to write over the input, or over an existing file unless `replace`.
fn check_output(input: &Path, output: &Path, replace: bool) -> Result<(), IoError> {
    if !output.exists() {
        return Ok(());
    }
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(IoError::OutputIsInput {
            path: output.to_path_buf(),
        });
    }
    if !replace {
        return Err(IoError::OutputExists {
            path: output.to_path_buf(),
        });
    }
    Ok(())
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
