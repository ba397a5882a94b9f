//! Logged events from any Parquet file, through the pipeline's column mapping.
//!
//! Only the four mapped columns are read (a projection), batch by batch. [`read_events`]
//! collects every event; [`EventBatches`] hands them out one record batch at a time, so a
//! replay over tens of millions of events never holds the whole log in memory. Both check the
//! same things: the columns exist and have usable types (see [`crate::io`] for the type
//! mapping), no value is null, labels are finite, and click labels are 0 or 1.
//!
//! Ids are interned into the [`IdMap`]s given, so several files (a train and a test file,
//! or the events and the item table) share one dense index space.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;

use super::IoError;
use super::columns::{self, ColumnContext};
use super::parquet_file::{find_column, open_parquet};
use crate::data::{IdMap, Interaction, LabelKind};
use crate::plan::params::EventSource;

/// Rows per batch unless asked otherwise: large enough to amortise per-batch work, small
/// enough (about 2 MiB of interactions) to stream.
pub const DEFAULT_BATCH_ROWS: usize = 65_536;

/// What the file calls it.
const WHAT: &str = "events file";

/// Reads every event of `source`, interning its ids into `users` and `items`.
pub fn read_events(
    source: &EventSource,
    users: &mut IdMap,
    items: &mut IdMap,
) -> Result<Vec<Interaction>, IoError> {
    let mut reader = EventReader::open(source, DEFAULT_BATCH_ROWS)?;
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
            reader: EventReader::open(source, batch_rows.max(1))?,
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

/// The mapped columns of an open events file, and where reading stands.
struct EventReader {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    /// Column names, by role.
    names: [String; 4],
    /// Position of each role's column within a (projected) batch.
    positions: [usize; 4],
    label_kind: LabelKind,
    /// File row of the next batch's first row.
    next_row: u64,
    total_rows: u64,
}

/// Roles in the order of [`EventReader::names`].
const ROLES: [&str; 4] = ["user id", "item id", "label", "time"];
const USER: usize = 0;
const ITEM: usize = 1;
const LABEL: usize = 2;
const TIME: usize = 3;

impl EventReader {
    fn open(source: &EventSource, batch_rows: usize) -> Result<Self, IoError> {
        let path = source.path.as_path();
        let builder = open_parquet(path, WHAT)?;
        let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
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
        let mut selected = indices.to_vec();
        selected.sort_unstable();
        selected.dedup();
        let positions = indices.map(|i| selected.iter().filter(|&&s| s < i).count());
        let mask = ProjectionMask::roots(builder.parquet_schema(), selected);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_rows)
            .build()
            .map_err(|source| IoError::NotParquet {
                what: WHAT,
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            names,
            positions,
            label_kind: source.label_kind,
            next_row: 0,
            total_rows,
        })
    }

    fn next_batch(
        &mut self,
        users: &mut IdMap,
        items: &mut IdMap,
    ) -> Option<Result<Vec<Interaction>, IoError>> {
        let batch = match self.reader.next()? {
            Ok(batch) => batch,
            Err(source) => {
                return Some(Err(IoError::Decode {
                    path: self.path.clone(),
                    source,
                }));
            }
        };
        let first_row = self.next_row;
        self.next_row += batch.num_rows() as u64;
        Some(self.convert(&batch, first_row, users, items))
    }

    fn convert(
        &self,
        batch: &RecordBatch,
        first_row: u64,
        users: &mut IdMap,
        items: &mut IdMap,
    ) -> Result<Vec<Interaction>, IoError> {
        let path = self.path.as_path();
        let ctx = |role: usize| context(path, &self.names[role], role);
        let column = |role: usize| batch.column(self.positions[role]);

        let user = columns::intern_ids(&ctx(USER), column(USER), first_row, users)?;
        let item = columns::intern_ids(&ctx(ITEM), column(ITEM), first_row, items)?;
        let labels = columns::labels(&ctx(LABEL), column(LABEL), first_row)?;
        let times = columns::times(&ctx(TIME), column(TIME), first_row)?;

        let mut events = Vec::with_capacity(batch.num_rows());
        for (i, &label) in labels.iter().enumerate() {
            let row = first_row + i as u64;
            let narrow = label as f32;
            if !narrow.is_finite() {
                return Err(IoError::NonFiniteLabel {
                    path: path.to_path_buf(),
                    column: self.names[LABEL].clone(),
                    row,
                    value: label,
                });
            }
            if self.label_kind == LabelKind::Click && label != 0.0 && label != 1.0 {
                return Err(IoError::NotBinaryClick {
                    path: path.to_path_buf(),
                    column: self.names[LABEL].clone(),
                    row,
                    value: label,
                });
            }
            events.push(Interaction {
                user: user[i],
                item: item[i],
                label: narrow,
                time: times[i],
            });
        }
        Ok(events)
    }
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
        read_events(src, &mut IdMap::new(), &mut IdMap::new())
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
        let events = read_events(&src, &mut users, &mut items).unwrap();
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
        read_events(&source(&pa, LabelKind::Rating), &mut users, &mut items).unwrap();
        let second = read_events(&source(&pb, LabelKind::Rating), &mut users, &mut items).unwrap();
        assert_eq!(second.iter().map(|e| e.user).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!((users.len(), items.len()), (3, 3));
    }
}
