//! Logged events from any Parquet file, through the pipeline's column mapping.
//!
//! Only the four mapped columns are read (a projection), batch by batch. [`read_events`]
//! collects every event; [`EventBatches`] hands them out one record batch at a time, so a
//! replay over tens of millions of events never holds the whole log in memory
//! ([`EventBatches::in_time_order`] first sorts a log stored out of time order, within a
//! memory budget). Both check the same things: the columns exist and have usable types
//! (see [`crate::io`] for the type mapping), no value is null, labels are finite, and click
//! labels are 0 or 1.
//!
//! Ids are interned into the [`IdMap`]s given, so several files (a train and a test file,
//! or the events and the item table) share one dense index space.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};

use super::IoError;
use super::columns::{self, ColumnContext};
use super::parquet_file::{find_column, guard_batches, open_parquet, open_parquet_paged};
use super::shares::{self, BlockPlan, ReadShare, SharedBatches};
use super::sort::{self, SortOptions, TimeColumn};
use crate::data::{IdMap, Interaction, LabelKind};
use crate::plan::params::EventSource;

/// Rows per batch unless asked otherwise: large enough to amortise per-batch work, small
/// enough (about 2 MiB of interactions) to stream.
pub const DEFAULT_BATCH_ROWS: usize = 65_536;

/// The label column of a ratings log that recsift writes.
pub const RATING_COLUMN: &str = "rating";
/// The label column of a clicks log that recsift writes.
pub const CLICK_COLUMN: &str = "click";

/// The schema of every event log recsift writes (`recsift gen`, `recsift import`):
/// `user_id: Int64, item_id: Int64, rating|click: Float32, timestamp: Int64`, none nullable.
pub fn events_schema(label: LabelKind) -> SchemaRef {
    let label_column = match label {
        LabelKind::Rating => RATING_COLUMN,
        LabelKind::Click => CLICK_COLUMN,
    };
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int64, false),
        Field::new(label_column, DataType::Float32, false),
        Field::new("timestamp", DataType::Int64, false),
    ]))
}

/// What the file calls it.
const WHAT: &str = "events file";

/// Reads every event of `source`, interning its ids into `users` and `items`. With a
/// `share`, this process reads only its share of the file and receives the rest from the
/// other processes of its cluster (see [`crate::io::shares`]); the events are the same.
pub fn read_events(
    source: &EventSource,
    users: &mut IdMap,
    items: &mut IdMap,
    share: Option<&ReadShare>,
) -> Result<Vec<Interaction>, IoError> {
    let mut reader = EventReader::open(source, DEFAULT_BATCH_ROWS, share)?;
    let mut events = Vec::with_capacity(usize::try_from(reader.total_rows).unwrap_or(0));
    while let Some(batch) = reader.next_batch(users, items) {
        events.extend(batch?);
    }
    Ok(events)
}

/// The events of a file, one record batch at a time, with the id maps they are interned
/// into. An iterator of `Result<Vec<Interaction>, IoError>` that stops after the first
/// error.
///
/// ```no_run
/// # use recsift::{data::IdMap, io::events::EventBatches, plan::params::EventSource};
/// # fn replay(source: &EventSource) -> Result<(), recsift::io::IoError> {
/// let mut batches = EventBatches::open(source, IdMap::new(), IdMap::new())?;
/// while let Some(batch) = batches.next() {
///     let batch = batch?;
///     println!("{} events, {} users so far", batch.len(), batches.users().len());
/// }
/// let (users, items) = batches.into_id_maps();
/// # Ok(()) }
/// ```
pub struct EventBatches {
    reader: EventReader,
    users: IdMap,
    items: IdMap,
    failed: bool,
}

impl EventBatches {
    /// Opens `source` and checks its columns, reading batches of [`DEFAULT_BATCH_ROWS`].
    pub fn open(source: &EventSource, users: IdMap, items: IdMap) -> Result<Self, IoError> {
        Self::with_batch_rows(source, users, items, DEFAULT_BATCH_ROWS)
    }

    /// Like [`EventBatches::open`], with batches of at most `batch_rows` rows.
    pub fn with_batch_rows(
        source: &EventSource,
        users: IdMap,
        items: IdMap,
        batch_rows: usize,
    ) -> Result<Self, IoError> {
        Ok(Self {
            reader: EventReader::open(source, batch_rows.max(1), None)?,
            users,
            items,
            failed: false,
        })
    }

    /// Like [`EventBatches::with_batch_rows`], but hands the events out in time order, as a
    /// replay needs them. One pass over the time column alone (a Parquet projection: a
    /// fraction of the cost of reading the log) checks the order first. A log in time order
    /// (by the time in seconds, which is all a replay reads) is then read as it is; any
    /// other is sorted by [`crate::io::sort`] within `sort`'s budget, in memory or by an
    /// external merge sort, stably (equal times keep their order in the file). Values are
    /// checked while the log is read for sorting, so an error names the row in the file.
    ///
    /// With a `share`, this process reads only its share of the log (in blocks of at most
    /// `batch_rows` rows) and receives the rest from the other processes of its cluster
    /// (see [`crate::io::shares`]); a log out of time order is then refused (each process
    /// would have to sort all of it), with the `recsift sort` command that fixes it.
    pub fn in_time_order(
        source: &EventSource,
        users: IdMap,
        items: IdMap,
        batch_rows: usize,
        sort: &SortOptions,
        share: Option<&ReadShare>,
    ) -> Result<Self, IoError> {
        let batch_rows = batch_rows.max(1);
        let reader = EventReader::open(source, batch_rows, share)?;
        Ok(Self {
            reader: match share {
                Some(share) => reader.checked_in_time_order(batch_rows, share)?,
                None => reader.in_time_order(batch_rows, sort)?,
            },
            users,
            items,
            failed: false,
        })
    }

    /// Rows in the file (from its metadata, before any is read).
    pub fn total_rows(&self) -> u64 {
        self.reader.total_rows
    }

    /// Users interned so far.
    pub fn users(&self) -> &IdMap {
        &self.users
    }

    /// Items interned so far.
    pub fn items(&self) -> &IdMap {
        &self.items
    }

    /// The id maps, once reading is done (or abandoned).
    pub fn into_id_maps(self) -> (IdMap, IdMap) {
        (self.users, self.items)
    }
}

impl Iterator for EventBatches {
    type Item = Result<Vec<Interaction>, IoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.reader.next_batch(&mut self.users, &mut self.items);
        self.failed = matches!(next, Some(Err(_)));
        next
    }
}

/// Record batches of the mapped columns, in the order they are served.
type Batches = Box<dyn Iterator<Item = Result<RecordBatch, IoError>>>;

/// An open events file: its column mapping and where reading stands.
struct EventReader {
    layout: EventLayout,
    batches: Batches,
    /// Row (in the order served) of the next batch's first row.
    next_row: u64,
    total_rows: u64,
}

/// Where the mapped columns are in an events file, and what their values must be.
struct EventLayout {
    path: PathBuf,
    /// Column names, by role.
    names: [String; 4],
    /// Index of each role's column in the file.
    indices: [usize; 4],
    /// Position of each role's column within a batch of the mapped columns.
    positions: [usize; 4],
    label_kind: LabelKind,
    /// Rows in each row group (from the metadata), which the shares of a cluster follow.
    group_rows: Vec<u64>,
}

/// The first event of a file earlier than the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Disorder {
    row: u64,
    time: i64,
    previous: i64,
}

/// The times of one block, as far as the time order is concerned: its first and last time
/// and its first event earlier than the one before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TimeSpan {
    first: Option<i64>,
    last: Option<i64>,
    disorder: Option<Disorder>,
}

impl TimeSpan {
    /// Adds `times`, the first of which is file row `first_row`.
    fn extend(&mut self, times: &[i64], first_row: u64) {
        for (i, &time) in times.iter().enumerate() {
            if let Some(previous) = self.last
                && time < previous
                && self.disorder.is_none()
            {
                self.disorder = Some(Disorder {
                    row: first_row + i as u64,
                    time,
                    previous,
                });
            }
            self.first.get_or_insert(time);
            self.last = Some(time);
        }
    }
}

/// Roles in the order of [`EventLayout::names`].
const ROLES: [&str; 4] = ["user id", "item id", "label", "time"];
const USER: usize = 0;
const ITEM: usize = 1;
const LABEL: usize = 2;
const TIME: usize = 3;

impl EventReader {
    /// Checks the mapped columns of `source` and reads them in file order (with a `share`,
    /// only this process's blocks from the file, the others' from their processes).
    fn open(
        source: &EventSource,
        batch_rows: usize,
        share: Option<&ReadShare>,
    ) -> Result<Self, IoError> {
        let (layout, total_rows) = EventLayout::open(source)?;
        let batches: Batches = match share {
            None => Box::new(layout.read(&layout.indices, batch_rows)?),
            Some(share) => {
                let plan = layout.block_plan(batch_rows, share);
                let own = layout.read_rows(&layout.indices, batch_rows, Some(&plan))?;
                Box::new(SharedBatches::new(&layout.path, share.clone(), plan, own))
            }
        };
        Ok(Self {
            layout,
            batches,
            next_row: 0,
            total_rows,
        })
    }

    /// The events in time order: read as they are if the file is in time order, else
    /// sorted (see [`EventBatches::in_time_order`]).
    fn in_time_order(self, batch_rows: usize, options: &SortOptions) -> Result<Self, IoError> {
        let Some(disorder) = self.layout.first_out_of_order()? else {
            return Ok(self);
        };
        let layout = &self.layout;
        if options.progress {
            eprintln!(
                "{}: not in time order (row {} at time {} follows time {}); sorting its {} \
                 events by `{}` with a memory budget of {} (`recsift sort` writes a sorted \
                 copy once)",
                layout.path.display(),
                disorder.row,
                disorder.time,
                disorder.previous,
                sort::thousands(self.total_rows),
                layout.names[TIME],
                sort::format_memory(options.memory)
            );
        }
        // Values are checked as the file is read for sorting, so errors name file rows.
        let input = layout.read(&layout.indices, sort::READ_ROWS)?;
        let mut row = 0u64;
        let checked = input.map(|batch| {
            let batch = batch?;
            layout.check(&batch, row)?;
            row += batch.num_rows() as u64;
            Ok(batch)
        });
        let time = TimeColumn {
            ctx: layout.context(TIME),
            index: layout.positions[TIME],
        };
        let schema = layout.schema()?;
        let sorted = sort::sort_batches(checked, schema, &time, options, batch_rows)?;
        Ok(Self {
            batches: Box::new(sorted),
            next_row: 0,
            ..self
        })
    }

    /// The events as they are, after checking with the other processes of `share` that the
    /// file is in time order (each checks its own blocks and the boundaries are compared).
    fn checked_in_time_order(self, batch_rows: usize, share: &ReadShare) -> Result<Self, IoError> {
        let layout = &self.layout;
        let plan = layout.block_plan(batch_rows, share);
        let time = [layout.indices[TIME]];
        let own = layout.read_rows(&time, batch_rows, Some(&plan))?;
        let ctx = layout.context(TIME);
        let spans =
            shares::summarise_blocks(&layout.path, share, &plan, own, |first_row, batches| {
                let mut span = TimeSpan::default();
                let mut row = first_row;
                for batch in batches {
                    let times = columns::times(&ctx, batch.column(0), row)?;
                    span.extend(&times, row);
                    row += times.len() as u64;
                }
                Ok(span)
            })?;
        let mut previous: Option<i64> = None;
        for (block, span) in spans.into_iter().enumerate() {
            let disorder = match (previous, span.first) {
                (Some(previous), Some(first)) if first < previous => Some(Disorder {
                    row: plan.first_row(block),
                    time: first,
                    previous,
                }),
                _ => span.disorder,
            };
            if let Some(disorder) = disorder {
                return Err(IoError::UnsortedForCluster {
                    path: layout.path.clone(),
                    row: disorder.row,
                    time: disorder.time,
                    previous: disorder.previous,
                    column: layout.names[TIME].clone(),
                });
            }
            previous = span.last.or(previous);
        }
        Ok(self)
    }

    fn next_batch(
        &mut self,
        users: &mut IdMap,
        items: &mut IdMap,
    ) -> Option<Result<Vec<Interaction>, IoError>> {
        let batch = match self.batches.next()? {
            Ok(batch) => batch,
            Err(e) => return Some(Err(e)),
        };
        let first_row = self.next_row;
        self.next_row += batch.num_rows() as u64;
        Some(self.layout.convert(&batch, first_row, users, items))
    }
}

impl EventLayout {
    /// Finds and type-checks the mapped columns; also returns the file's row count.
    fn open(source: &EventSource) -> Result<(Self, u64), IoError> {
        let path = source.path.as_path();
        let builder = open_parquet(path, WHAT)?;
        let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let group_rows = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|group| u64::try_from(group.num_rows()).unwrap_or(0))
            .collect();
        let c = &source.columns;
        let names = [
            c.user.clone(),
            c.item.clone(),
            c.label.clone(),
            c.time.clone(),
        ];

        let schema = builder.schema();
        let mut indices = [0usize; 4];
        for role in 0..4 {
            indices[role] = find_column(path, schema, &names[role], ROLES[role])?;
        }
        for role in 0..4 {
            let ctx = context(path, &names[role], role);
            let dt = schema.field(indices[role]).data_type();
            match role {
                USER | ITEM => columns::check_id_type(&ctx, dt)?,
                LABEL => columns::check_label_type(&ctx, dt)?,
                _ => columns::check_time_type(&ctx, dt)?,
            }
        }
        if total_rows == 0 {
            return Err(IoError::EmptyFile {
                what: WHAT,
                path: path.to_path_buf(),
            });
        }
        // A projected batch holds the selected columns in file order.
        let selected = projection(&indices);
        let positions = indices.map(|i| selected.iter().filter(|&&s| s < i).count());
        let layout = Self {
            path: path.to_path_buf(),
            names,
            indices,
            positions,
            label_kind: source.label_kind,
            group_rows,
        };
        Ok((layout, total_rows))
    }

    /// The file's columns at `indices`, in batches of `batch_rows`.
    fn read(
        &self,
        indices: &[usize],
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, IoError>> + use<>, IoError> {
        self.read_rows(indices, batch_rows, None)
    }

    /// How the file's blocks are dealt to the processes of `share`: blocks of
    /// [`shares::BLOCK_ROWS`] rows, or of `batch_rows` when that is fewer.
    fn block_plan(&self, batch_rows: usize, share: &ReadShare) -> BlockPlan {
        BlockPlan::new(
            &self.group_rows,
            batch_rows.min(shares::BLOCK_ROWS),
            share.process(),
            share.processes(),
        )
    }

    /// The file's columns at `indices`, in batches of at most `batch_rows` rows: every
    /// row, or with `own` only this process's blocks of that plan (the pages outside them
    /// are not read, where the file has an offset index).
    fn read_rows(
        &self,
        indices: &[usize],
        batch_rows: usize,
        own: Option<&BlockPlan>,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, IoError>> + use<>, IoError> {
        let builder = match own {
            None => open_parquet(&self.path, WHAT)?,
            Some(_) => open_parquet_paged(&self.path, WHAT)?,
        };
        let mask = ProjectionMask::roots(builder.parquet_schema(), projection(indices));
        let mut builder = builder
            .with_projection(mask)
            .with_batch_size(batch_rows.max(1));
        if let Some(plan) = own {
            let (groups, selection) = plan.own_rows();
            builder = builder
                .with_row_groups(groups)
                .with_row_selection(selection);
        }
        let reader = builder.build().map_err(|source| IoError::NotParquet {
            what: WHAT,
            path: self.path.clone(),
            source,
        })?;
        let path = self.path.clone();
        let batches = reader.map(move |batch| {
            batch.map_err(|source| IoError::Decode {
                path: path.clone(),
                source,
            })
        });
        Ok(guard_batches(&self.path, batches))
    }

    /// The schema of a batch of the mapped columns.
    fn schema(&self) -> Result<SchemaRef, IoError> {
        let builder = open_parquet(&self.path, WHAT)?;
        let schema = builder.schema().project(&projection(&self.indices));
        schema.map(Arc::new).map_err(|source| IoError::Decode {
            path: self.path.clone(),
            source,
        })
    }

    /// The first event earlier than the one before it, by a pass over the time column
    /// alone; None if the file is in time order.
    fn first_out_of_order(&self) -> Result<Option<Disorder>, IoError> {
        let ctx = self.context(TIME);
        let mut previous: Option<i64> = None;
        let mut row = 0u64;
        for batch in self.read(&[self.indices[TIME]], DEFAULT_BATCH_ROWS)? {
            let times = columns::times(&ctx, batch?.column(0), row)?;
            for (i, &time) in times.iter().enumerate() {
                if let Some(previous) = previous
                    && time < previous
                {
                    return Ok(Some(Disorder {
                        row: row + i as u64,
                        time,
                        previous,
                    }));
                }
                previous = Some(time);
            }
            row += times.len() as u64;
        }
        Ok(None)
    }

    fn context(&self, role: usize) -> ColumnContext<'_> {
        context(&self.path, &self.names[role], role)
    }

    /// The labels of a batch, checked: finite, and 0 or 1 for clicks.
    fn labels(&self, batch: &RecordBatch, first_row: u64) -> Result<Vec<f32>, IoError> {
        let labels = columns::labels(
            &self.context(LABEL),
            batch.column(self.positions[LABEL]),
            first_row,
        )?;
        labels
            .iter()
            .enumerate()
            .map(|(i, &label)| {
                let row = first_row + i as u64;
                let narrow = label as f32;
                if !narrow.is_finite() {
                    return Err(IoError::NonFiniteLabel {
                        path: self.path.clone(),
                        column: self.names[LABEL].clone(),
                        row,
                        value: label,
                    });
                }
                if self.label_kind == LabelKind::Click && label != 0.0 && label != 1.0 {
                    return Err(IoError::NotBinaryClick {
                        path: self.path.clone(),
                        column: self.names[LABEL].clone(),
                        row,
                        value: label,
                    });
                }
                Ok(narrow)
            })
            .collect()
    }

    /// Checks a batch's values as [`EventLayout::convert`] would, without interning ids
    /// (times are checked by the sort, which reads them).
    fn check(&self, batch: &RecordBatch, first_row: u64) -> Result<(), IoError> {
        let column = |role: usize| batch.column(self.positions[role]);
        columns::check_ids(&self.context(USER), column(USER), first_row)?;
        columns::check_ids(&self.context(ITEM), column(ITEM), first_row)?;
        self.labels(batch, first_row)?;
        Ok(())
    }

    fn convert(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        users: &mut IdMap,
        items: &mut IdMap,
    ) -> Result<Vec<Interaction>, IoError> {
        let column = |role: usize| batch.column(self.positions[role]);
        let user = columns::intern_ids(&self.context(USER), column(USER), first_row, users)?;
        let item = columns::intern_ids(&self.context(ITEM), column(ITEM), first_row, items)?;
        let labels = self.labels(batch, first_row)?;
        let times = columns::times(&self.context(TIME), column(TIME), first_row)?;
        Ok((0..batch.num_rows())
            .map(|i| Interaction {
                user: user[i],
                item: item[i],
                label: labels[i],
                time: times[i],
            })
            .collect())
    }
}

/// The distinct file columns of `indices`, in file order (as a projected batch holds them).
fn projection(indices: &[usize]) -> Vec<usize> {
    let mut selected = indices.to_vec();
    selected.sort_unstable();
    selected.dedup();
    selected
}

fn context<'a>(path: &'a Path, column: &'a str, role: usize) -> ColumnContext<'a> {
    ColumnContext {
        path,
        column,
        role: ROLES[role],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray, UInt16Array,
    };

    use super::*;
    use crate::data::RawId;
    use crate::io::parquet_file::{ParquetSink, write_parquet_atomic};
    use crate::io::sort::SortOptions;
    use crate::plan::params::EventColumns;

    fn source(path: &Path, label_kind: LabelKind) -> EventSource {
        EventSource {
            path: path.to_path_buf(),
            columns: EventColumns::default(),
            label_kind,
        }
    }

    fn write(dir: &Path, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
        let path = dir.join("events.parquet");
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        write_parquet_atomic(&path, &batch).unwrap();
        path
    }

    fn standard(dir: &Path, labels: Vec<f64>) -> PathBuf {
        let n = labels.len();
        write(
            dir,
            vec![
                (
                    "user_id",
                    Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 3)))
                        as ArrayRef,
                ),
                (
                    "item_id",
                    Arc::new(Int64Array::from_iter_values(
                        (0..n as i64).map(|i| 100 + i % 5),
                    )),
                ),
                ("rating", Arc::new(Float64Array::from(labels))),
                (
                    "timestamp",
                    Arc::new(Int64Array::from_iter_values(0..n as i64)),
                ),
            ],
        )
    }

    fn read(src: &EventSource) -> Result<Vec<Interaction>, IoError> {
        read_events(src, &mut IdMap::new(), &mut IdMap::new(), None)
    }

    #[test]
    fn projection_reads_mapped_columns_of_any_accepted_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            vec![
                (
                    "noise",
                    Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
                ),
                (
                    "when",
                    Arc::new(TimestampMicrosecondArray::from(vec![
                        1_000_000, 2_500_000, -1,
                    ])),
                ),
                ("who", Arc::new(StringArray::from(vec!["u1", "u2", "u1"]))),
                ("what", Arc::new(UInt16Array::from(vec![7, 7, 9]))),
                ("stars", Arc::new(Int32Array::from(vec![5, 3, 1]))),
            ],
        );
        let src = EventSource {
            path,
            columns: EventColumns {
                user: "who".into(),
                item: "what".into(),
                label: "stars".into(),
                time: "when".into(),
            },
            label_kind: LabelKind::Rating,
        };
        let mut users = IdMap::new();
        let mut items = IdMap::new();
        items.intern(RawId::Int(9)); // already known from another file
        let events = read_events(&src, &mut users, &mut items, None).unwrap();
        let expect = [(0, 1, 5.0, 1), (1, 1, 3.0, 2), (0, 0, 1.0, -1)];
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.user, e.item, e.label, e.time))
            .collect();
        assert_eq!(got, expect);
        assert_eq!(users.raw(1), &RawId::Str("u2".into()));
        assert_eq!(items.raw(1), &RawId::Int(7));
    }

    #[test]
    fn streaming_matches_reading_whole_across_batches_and_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.parquet");
        // Three separately written batches, read back in batches of an unrelated size.
        let n = 10_007usize;
        let labels: Vec<f32> = (0..n).map(|i| (i % 10) as f32 / 2.0).collect();
        let batch = RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(Int64Array::from_iter_values(
                    (0..n as i64).map(|i| (i * 7919) % 613),
                )) as ArrayRef,
            ),
            (
                "item_id",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("i{}", (i * 31) % 977)),
                )),
            ),
            ("rating", Arc::new(Float32Array::from(labels.clone()))),
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ),
        ])
        .unwrap();
        let mut sink = ParquetSink::create(&path, batch.schema()).unwrap();
        for (start, end) in [(0, 3000), (3000, 7000), (7000, n)] {
            sink.write(&batch.slice(start, end - start)).unwrap();
        }
        assert_eq!(sink.finish().unwrap(), n as u64);

        let src = source(&path, LabelKind::Rating);
        let whole = read(&src).unwrap();
        let mut batches =
            EventBatches::with_batch_rows(&src, IdMap::new(), IdMap::new(), 999).unwrap();
        assert_eq!(batches.total_rows(), n as u64);
        let mut streamed = Vec::new();
        let mut sizes = Vec::new();
        for b in &mut batches {
            let b = b.unwrap();
            sizes.push(b.len());
            streamed.extend(b);
        }
        assert_eq!(streamed, whole);
        assert!(
            sizes.iter().all(|&s| s <= 999) && sizes.len() >= 11,
            "{sizes:?}"
        );
        let (users, items) = batches.into_id_maps();
        assert_eq!(users.len(), 613);
        assert_eq!(items.len(), 977);
        // Independent check of every row against the written columns.
        for (i, e) in whole.iter().enumerate() {
            assert_eq!(users.raw(e.user), &RawId::Int(((i * 7919) % 613) as i64));
            assert_eq!(
                items.raw(e.item),
                &RawId::Str(format!("i{}", (i * 31) % 977).into())
            );
            assert_eq!(e.label, labels[i]);
            assert_eq!(e.time, i as i64);
        }
    }

    #[test]
    fn a_missing_column_suggests_the_closest() {
        let dir = tempfile::tempdir().unwrap();
        let path = standard(dir.path(), vec![1.0]);
        let mut src = source(&path, LabelKind::Rating);
        src.columns.time = "timestmp".into();
        assert_eq!(
            read(&src).unwrap_err().to_string(),
            format!(
                "{}: no column `timestmp` for the time (did you mean `timestamp`?); columns \
                 present: user_id, item_id, rating, timestamp",
                path.display()
            )
        );
    }

    #[test]
    fn a_wrong_type_names_found_and_accepted_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            vec![
                (
                    "user_id",
                    Arc::new(Float64Array::from(vec![1.0])) as ArrayRef,
                ),
                ("item_id", Arc::new(Int64Array::from(vec![1]))),
                ("rating", Arc::new(Float64Array::from(vec![1.0]))),
                ("timestamp", Arc::new(Int64Array::from(vec![1]))),
            ],
        );
        assert_eq!(
            read(&source(&path, LabelKind::Rating))
                .unwrap_err()
                .to_string(),
            format!(
                "{}: column `user_id` (user id) has type Float64, but the user id accepts an \
                 integer type (Int8..Int64, UInt8..UInt64) or a string (Utf8, LargeUtf8, \
                 Utf8View, dictionary of strings); cast the column when writing the file, or \
                 map another column",
                path.display()
            )
        );
    }

    #[test]
    fn non_finite_labels_are_refused_with_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = standard(dir.path(), vec![4.0, 3.5, f64::NAN, 2.0]);
        assert_eq!(
            read(&source(&path, LabelKind::Rating))
                .unwrap_err()
                .to_string(),
            format!(
                "{}: label column `rating` is NaN at row 2 (counting from 0); drop or impute \
                 these rows",
                path.display()
            )
        );
        let path = standard(dir.path(), vec![4.0, 1e300]);
        assert!(matches!(
            read(&source(&path, LabelKind::Rating)).unwrap_err(),
            IoError::NonFiniteLabel { row: 1, .. }
        ));
    }

    #[test]
    fn click_labels_must_be_zero_or_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = standard(dir.path(), vec![1.0, 0.0, 1.0]);
        let events = read(&source(&path, LabelKind::Click)).unwrap();
        assert_eq!(
            events.iter().map(|e| e.label).collect::<Vec<_>>(),
            [1.0, 0.0, 1.0]
        );

        let path = standard(dir.path(), vec![1.0, 0.0, 4.5]);
        assert_eq!(
            read(&source(&path, LabelKind::Click))
                .unwrap_err()
                .to_string(),
            format!(
                "{}: label column `rating` is 4.5 at row 2 (counting from 0), but click labels \
                 must be 0 or 1; binarise the column, or declare the labels as ratings",
                path.display()
            )
        );
        assert!(read(&source(&path, LabelKind::Rating)).is_ok());
    }

    #[test]
    fn nulls_are_refused_with_their_row_even_in_a_later_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut items: Vec<Option<i64>> = (0..50).map(Some).collect();
        items[37] = None;
        let path = write(
            dir.path(),
            vec![
                (
                    "user_id",
                    Arc::new(Int64Array::from_iter_values(0..50)) as ArrayRef,
                ),
                ("item_id", Arc::new(Int64Array::from(items))),
                ("rating", Arc::new(Float64Array::from(vec![1.0; 50]))),
                ("timestamp", Arc::new(Int64Array::from_iter_values(0..50))),
            ],
        );
        let src = source(&path, LabelKind::Rating);
        let mut batches =
            EventBatches::with_batch_rows(&src, IdMap::new(), IdMap::new(), 16).unwrap();
        assert_eq!(batches.next().unwrap().unwrap().len(), 16);
        assert_eq!(batches.next().unwrap().unwrap().len(), 16);
        let err = batches.next().unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: column `item_id` (item id) is null at row 37 (counting from 0); drop or \
                 fill the rows with nulls",
                path.display()
            )
        );
        assert!(
            batches.next().is_none(),
            "the iterator stops after an error"
        );
    }

    /// An event with its raw ids: (user, item, label, time).
    type RawEvent = (RawId, RawId, f32, i64);

    /// Every event of `batches` with its raw ids, and the users in interning order.
    fn raw_events(mut batches: EventBatches) -> (Vec<RawEvent>, Vec<RawId>) {
        let mut events = Vec::new();
        for batch in &mut batches {
            events.extend(batch.unwrap());
        }
        let (users, items) = batches.into_id_maps();
        let raw = events
            .iter()
            .map(|e| {
                let (u, i) = (users.raw(e.user).clone(), items.raw(e.item).clone());
                (u, i, e.label, e.time)
            })
            .collect();
        (
            raw,
            (0..users.len() as u32)
                .map(|u| users.raw(u).clone())
                .collect(),
        )
    }

    #[test]
    fn in_time_order_sorts_an_unsorted_log_as_if_it_had_been_written_sorted() {
        let dir = tempfile::tempdir().unwrap();
        // Several read batches (of 8,192 rows), so a small budget spills runs.
        let n = 30_000i64;
        // Time-sorted rows (with ties), then the same rows in a scrambled order.
        let rows: Vec<(i64, i64, f64, i64)> = (0..n)
            .map(|i| (i % 97, 1000 + i % 31, (i % 9) as f64 / 2.0, i / 3))
            .collect();
        let scrambled: Vec<usize> = (0..n as usize).map(|i| (i * 7919) % n as usize).collect();
        let write_rows = |name: &str, order: &[usize]| {
            let path = dir.path().join(name);
            let column = |f: &dyn Fn(usize) -> i64| {
                Int64Array::from_iter_values(order.iter().map(|&r| f(r)))
            };
            let batch = RecordBatch::try_from_iter([
                ("user_id", Arc::new(column(&|r| rows[r].0)) as ArrayRef),
                ("item_id", Arc::new(column(&|r| rows[r].1))),
                (
                    "rating",
                    Arc::new(Float64Array::from_iter_values(
                        order.iter().map(|&r| rows[r].2),
                    )),
                ),
                ("timestamp", Arc::new(column(&|r| rows[r].3))),
            ])
            .unwrap();
            write_parquet_atomic(&path, &batch).unwrap();
            source(&path, LabelKind::Rating)
        };
        // Stable: among equal times, the scrambled file's order.
        let mut stable = scrambled.clone();
        stable.sort_by_key(|&r| rows[r].3);
        let sorted_file = write_rows("sorted.parquet", &stable);
        let unsorted_file = write_rows("unsorted.parquet", &scrambled);
        let expected = raw_events(
            EventBatches::with_batch_rows(&sorted_file, IdMap::new(), IdMap::new(), 700).unwrap(),
        );
        for memory in [1 << 30, 8 << 10] {
            let options = SortOptions {
                temp_dir: dir.path().to_path_buf(),
                ..SortOptions::new(memory)
            };
            for file in [&sorted_file, &unsorted_file] {
                let batches = EventBatches::in_time_order(
                    file,
                    IdMap::new(),
                    IdMap::new(),
                    700,
                    &options,
                    None,
                )
                .unwrap();
                assert_eq!(
                    raw_events(batches),
                    expected,
                    "{memory} {}",
                    file.path.display()
                );
            }
        }
    }

    #[test]
    fn errors_in_an_unsorted_log_name_the_row_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut labels = vec![1.0; 40];
        labels[29] = f64::NAN;
        let path = write(
            dir.path(),
            vec![
                (
                    "user_id",
                    Arc::new(Int64Array::from_iter_values(0..40)) as ArrayRef,
                ),
                ("item_id", Arc::new(Int64Array::from_iter_values(0..40))),
                ("rating", Arc::new(Float64Array::from(labels))),
                (
                    "timestamp",
                    Arc::new(Int64Array::from_iter_values((0..40).rev())),
                ),
            ],
        );
        let src = source(&path, LabelKind::Rating);
        let options = SortOptions::new(1 << 30);
        let err = EventBatches::in_time_order(&src, IdMap::new(), IdMap::new(), 16, &options, None)
            .err()
            .expect("a NaN label is refused");
        assert!(
            matches!(err, IoError::NonFiniteLabel { row: 29, .. }),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = standard(dir.path(), vec![]);
        assert_eq!(
            read(&source(&path, LabelKind::Rating))
                .unwrap_err()
                .to_string(),
            format!("events file {} has no rows", path.display())
        );
    }

    #[test]
    fn two_files_share_the_id_maps() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let pa = standard(&a, vec![1.0, 2.0]); // users 0,1 items 100,101
        let pb = standard(&b, vec![1.0, 2.0, 3.0]); // users 0,1,2 items 100,101,102
        let (mut users, mut items) = (IdMap::new(), IdMap::new());
        read_events(
            &source(&pa, LabelKind::Rating),
            &mut users,
            &mut items,
            None,
        )
        .unwrap();
        let second = read_events(
            &source(&pb, LabelKind::Rating),
            &mut users,
            &mut items,
            None,
        )
        .unwrap();
        assert_eq!(second.iter().map(|e| e.user).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!((users.len(), items.len()), (3, 3));
    }

    /// A log of `n` events with string user ids in row groups of 37 rows; `times` gives
    /// each row's time, `label` its label.
    fn grouped(
        dir: &Path,
        n: usize,
        times: impl Fn(usize) -> i64,
        label: impl Fn(usize) -> f64,
    ) -> PathBuf {
        let path = dir.join("grouped.parquet");
        let batch = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("u{}", (i * 7) % 23)),
                )) as ArrayRef,
            ),
            (
                "item_id",
                Arc::new(Int64Array::from_iter_values(
                    (0..n as i64).map(|i| 1000 - i % 41),
                )),
            ),
            (
                "rating",
                Arc::new(Float64Array::from_iter_values((0..n).map(&label))),
            ),
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values((0..n).map(&times))),
            ),
        ])
        .unwrap();
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(37))
            .build();
        let file = std::fs::File::create(&path).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    /// What each of `processes` processes (threads here) reads of `path` with `read`.
    fn read_by<T: Send + 'static>(
        processes: usize,
        read: impl Fn(Option<&ReadShare>) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let read = Arc::new(read);
        let handles: Vec<_> = crate::io::shares::local::shares(processes)
            .into_iter()
            .map(|share| {
                let read = Arc::clone(&read);
                std::thread::spawn(move || read(Some(&share)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    /// Events, and the raw ids of their users and of their items in index order.
    type EventsAndIds = (Vec<Interaction>, Vec<RawId>, Vec<RawId>);

    /// What a reader with `share` makes of `path`.
    fn events_and_ids(path: &Path, share: Option<&ReadShare>) -> Result<EventsAndIds, String> {
        let (mut users, mut items) = (IdMap::new(), IdMap::new());
        let events = read_events(
            &source(path, LabelKind::Rating),
            &mut users,
            &mut items,
            share,
        )
        .map_err(|e| e.to_string())?;
        let raw = |ids: &IdMap| (0..ids.len() as u32).map(|i| ids.raw(i).clone()).collect();
        Ok((events, raw(&users), raw(&items)))
    }

    #[test]
    fn processes_reading_their_shares_get_the_whole_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = grouped(dir.path(), 500, |i| i as i64, |i| (i % 5) as f64 + 1.0);
        let alone = events_and_ids(&path, None).unwrap();
        assert_eq!(alone.0.len(), 500);
        for processes in [1, 2, 3, 7] {
            let file = path.clone();
            let shared = read_by(processes, move |share| events_and_ids(&file, share));
            for (process, read) in shared.into_iter().enumerate() {
                assert_eq!(
                    read.as_ref(),
                    Ok(&alone),
                    "process {process} of {processes}: events and id order as one reader's"
                );
            }
        }
    }

    /// A replay's batches of `file` with `share`, in 20-row batches (so 20-row blocks).
    fn replay_batches(file: &Path, share: Option<&ReadShare>) -> Result<EventBatches, IoError> {
        EventBatches::in_time_order(
            &source(file, LabelKind::Rating),
            IdMap::new(),
            IdMap::new(),
            20,
            &SortOptions::new(1 << 20),
            share,
        )
    }

    #[test]
    fn a_bad_value_in_one_share_stops_every_process_naming_its_row() {
        let dir = tempfile::tempdir().unwrap();
        // Row 300 lies in the second process's block (blocks of 65,536 would hold it all,
        // so the replay's batch rows set small blocks: 37-row groups, 20-row blocks).
        let path = grouped(
            dir.path(),
            500,
            |i| i as i64,
            |i| if i == 300 { f64::NAN } else { 1.0 },
        );
        let file = path.clone();
        let errors = read_by(3, move |share| {
            replay_batches(&file, share)
                .and_then(|batches| batches.collect::<Result<Vec<_>, _>>())
                .map(|_| ())
                .unwrap_err()
                .to_string()
        });
        for error in &errors {
            assert!(error.contains("row 300"), "{error}");
            assert_eq!(error, &errors[0], "every process reports the same error");
        }
    }

    #[test]
    fn a_cluster_refuses_a_log_out_of_time_order_naming_the_first_late_row() {
        let dir = tempfile::tempdir().unwrap();
        for late in [5usize, 20, 37, 40, 499] {
            // Row `late` is earlier than the row before it (inside a block, at a block's
            // start, at a row group's start).
            let path = grouped(
                dir.path(),
                500,
                move |i| if i == late { 0 } else { 10 + i as i64 },
                |_| 3.0,
            );
            let file = path.clone();
            let errors = read_by(3, move |share| {
                replay_batches(&file, share)
                    .map(|_| ())
                    .unwrap_err()
                    .to_string()
            });
            for error in &errors {
                assert!(
                    error.contains(&format!(
                        "is not in time order (row {late} at time 0 follows time {})",
                        9 + late
                    )),
                    "{error}"
                );
                assert!(error.contains("recsift sort"), "{error}");
            }
        }
        let sorted = grouped(dir.path(), 500, |i| (i / 3) as i64, |_| 3.0);
        let file = sorted.clone();
        let counts = read_by(2, move |share| {
            replay_batches(&file, share)
                .unwrap()
                .map(|batch| batch.unwrap().len())
                .sum::<usize>()
        });
        assert_eq!(counts, vec![500, 500]);
    }
}
