//! The sort against `sort_by_key` on the whole input, in memory and through spilled runs,
//! and `sort_file`'s refusals and messages.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Int64Array, StringArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit, UInt32Type};

use super::*;
use crate::error::UserFixable;
use crate::io::parquet_file::{read_parquet, write_parquet_atomic};

/// `n` times in a scrambled order, `distinct` values around 0 (so many ties, and negatives).
fn scrambled_times(n: usize, distinct: i64) -> Vec<i64> {
    (0..n as i64)
        .map(|i| (i * 7919 + 13).rem_euclid(distinct) - distinct / 2)
        .collect()
}

/// Batches of `(time, position)` of `batch` rows each.
fn batches(times: &[i64], batch: usize, millis: bool) -> (SchemaRef, Vec<RecordBatch>) {
    let time_type = if millis {
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    } else {
        DataType::Int64
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("position", DataType::UInt32, false),
        Field::new("time", time_type, false),
    ]));
    let batches = times
        .chunks(batch)
        .enumerate()
        .map(|(b, chunk)| {
            let first = (b * batch) as u32;
            let positions = UInt32Array::from_iter_values(first..first + chunk.len() as u32);
            let time: ArrayRef = if millis {
                Arc::new(TimestampMillisecondArray::from(chunk.to_vec()).with_timezone("UTC"))
            } else {
                Arc::new(Int64Array::from(chunk.to_vec()))
            };
            RecordBatch::try_new(schema.clone(), vec![Arc::new(positions), time]).unwrap()
        })
        .collect();
    (schema, batches)
}

/// Sorts `times` through `sort_batches`; the positions in output order, the runs spilled
/// and the sizes of the batches handed out.
fn sort_positions(
    times: &[i64],
    millis: bool,
    options: &SortOptions,
    batch_rows: usize,
) -> (Vec<u32>, usize, Vec<usize>) {
    let (schema, input) = batches(times, 97, millis);
    let time = TimeColumn {
        ctx: ColumnContext {
            path: Path::new("t.parquet"),
            column: "time",
            role: "time",
        },
        index: 1,
    };
    let sorted = sort_batches(
        input.into_iter().map(Ok),
        schema,
        &time,
        options,
        batch_rows,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runs = sorted.runs();
    let mut positions = Vec::new();
    let mut sizes = Vec::new();
    for batch in sorted {
        let batch = batch.unwrap();
        sizes.push(batch.num_rows());
        positions.extend(batch.column(0).as_primitive::<UInt32Type>().values());
    }
    (positions, runs, sizes)
}

/// What a stable sort of the whole input gives.
fn reference(times: &[i64]) -> Vec<u32> {
    let mut positions: Vec<u32> = (0..times.len() as u32).collect();
    positions.sort_by_key(|&p| times[p as usize]);
    positions
}

fn options_in(dir: &Path, memory: u64) -> SortOptions {
    SortOptions {
        temp_dir: dir.to_path_buf(),
        ..SortOptions::new(memory)
    }
}

#[test]
fn many_spilled_runs_merge_to_the_stable_sort_of_the_whole_input() {
    let dir = tempfile::tempdir().unwrap();
    let times = scrambled_times(20_011, 500);
    let expected = reference(&times);
    // Each 97-row batch takes a little over 2 KiB: a 16 KiB budget makes dozens of runs.
    let (positions, runs, sizes) =
        sort_positions(&times, false, &options_in(dir.path(), 16 << 10), 1000);
    assert!(runs > 20, "{runs} runs");
    assert_eq!(positions, expected);
    assert!(
        sizes[..sizes.len() - 1].iter().all(|&s| s == 1000),
        "{sizes:?}"
    );
    // The spill folder went with the sort.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn more_runs_than_one_merge_takes_are_merged_in_passes() {
    let dir = tempfile::tempdir().unwrap();
    let times = scrambled_times(20_011, 300);
    // Every 97-row batch over the budget: 207 runs, merged 64 at a time first.
    let (positions, runs, _) = sort_positions(&times, false, &options_in(dir.path(), 1), 4096);
    assert!(runs > 3 * MAX_MERGE_RUNS, "{runs} runs");
    assert_eq!(positions, reference(&times));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_sort_in_memory_is_the_same_and_spills_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let times = scrambled_times(5_003, 40);
    let (positions, runs, _) = sort_positions(&times, false, &options_in(dir.path(), 1 << 30), 512);
    assert_eq!(runs, 0);
    assert_eq!(positions, reference(&times));
}

#[test]
fn timestamps_sort_at_their_own_precision_and_sorted_input_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    // Milliseconds within one second: seconds would tie them all.
    let times = scrambled_times(3_001, 999);
    for memory in [4 << 10, 1 << 30] {
        let (positions, _, _) = sort_positions(&times, true, &options_in(dir.path(), memory), 256);
        assert_eq!(positions, reference(&times));
        let sorted: Vec<i64> = (0..3_001).map(|i| i / 7).collect();
        let (positions, _, _) = sort_positions(&sorted, true, &options_in(dir.path(), memory), 256);
        assert_eq!(positions, (0..3_001).collect::<Vec<u32>>());
    }
}

/// A log file of `n` rows with a time column, an id and a string column.
fn write_log(path: &Path, times: Vec<Option<i64>>) {
    let n = times.len();
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        ("ts", Arc::new(Int64Array::from(times)) as ArrayRef),
        (
            "note",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("row {i}")),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    write_parquet_atomic(path, &batch).unwrap();
}

#[test]
fn sort_file_writes_every_column_in_the_order_of_a_sort_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    let times = scrambled_times(30_000, 1_000);
    write_log(&log, times.iter().copied().map(Some).collect());
    let input = read_parquet(&log).unwrap();
    let input = arrow::compute::concat_batches(&input[0].schema(), &input).unwrap();
    let order = UInt32Array::from(reference(&times));
    let expected = arrow::compute::take_record_batch(&input, &order).unwrap();
    for (memory, spilled) in [(1 << 30, false), (64 << 10, true)] {
        let out = dir.path().join(format!("sorted-{memory}.parquet"));
        let summary = sort_file(&log, &out, "ts", false, &options_in(dir.path(), memory)).unwrap();
        assert_eq!((summary.rows, summary.runs > 0), (30_000, spilled));
        let back = read_parquet(&out).unwrap();
        let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
        assert_eq!(back, expected);
    }
}

#[test]
fn sort_file_never_overwrites_the_input_and_replaces_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    write_log(&log, vec![Some(2), Some(1)]);
    let options = options_in(dir.path(), 1 << 30);
    let err = sort_file(
        &log,
        &dir.path().join(".").join("log.parquet"),
        "ts",
        true,
        &options,
    )
    .unwrap_err();
    assert!(matches!(err, IoError::OutputIsInput { .. }), "{err}");
    let out = dir.path().join("out.parquet");
    std::fs::write(&out, b"keep me").unwrap();
    let err = sort_file(&log, &out, "ts", false, &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} exists; pass --force to replace it, or choose another output file",
            out.display()
        )
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    sort_file(&log, &out, "ts", true, &options).unwrap();
    assert_eq!(read_parquet(&out).unwrap()[0].num_rows(), 2);
}

#[test]
fn a_null_or_missing_time_column_is_named_with_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    let mut times: Vec<Option<i64>> = (0..20_000).map(Some).collect();
    times[12_345] = None;
    write_log(&log, times);
    let out = dir.path().join("out.parquet");
    let options = options_in(dir.path(), 1 << 30);
    let err = sort_file(&log, &out, "ts", false, &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: column `ts` (time) is null at row 12345 (counting from 0); drop or fill the \
             rows with nulls",
            log.display()
        )
    );
    let err = sort_file(&log, &out, "time", false, &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no column `time` for the time; columns present: id, ts, note",
            log.display()
        )
    );
    let err = sort_file(&log, &out, "note", false, &options).unwrap_err();
    assert!(
        err.to_string()
            .contains("column `note` (time) has type Utf8"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn a_temporary_folder_that_cannot_be_written_is_an_error_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    write_log(
        &log,
        scrambled_times(20_000, 100).into_iter().map(Some).collect(),
    );
    let missing = dir.path().join("no/such/folder");
    let out = dir.path().join("out.parquet");
    let err = sort_file(&log, &out, "ts", false, &options_in(&missing, 16 << 10)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "the log does not fit the sort's memory budget, and sorted runs cannot be written \
             to {}: ",
            missing.display()
        )),
        "{message}"
    );
    assert!(message.contains("`recsift sort --temp-dir`"), "{message}");
    assert!(err.is_user_error());
    assert!(!out.exists());
}

#[test]
fn memory_sizes_parse_and_print_in_binary_units() {
    assert_eq!(parse_memory("512MiB"), Some(512 << 20));
    assert_eq!(parse_memory(" 2 GiB "), Some(2 << 30));
    assert_eq!(parse_memory("100B"), Some(100));
    for bad in ["", "1", "1.5GiB", "1GB", "GiB", "-1KiB", "99999999999TiB"] {
        assert_eq!(parse_memory(bad), None, "{bad}");
    }
    for bytes in [1, 1000, 1 << 10, 1536 << 20, 1 << 30, DEFAULT_SORT_MEMORY] {
        assert_eq!(parse_memory(&format_memory(bytes)), Some(bytes));
    }
    assert_eq!(format_memory(DEFAULT_SORT_MEMORY), "1 GiB");
    assert_eq!(format_memory(1536 << 20), "1536 MiB");
    assert_eq!(thousands(20_000_000), "20,000,000");
    assert_eq!(thousands(999), "999");
}
