//! Logs stored out of time order: a replay sorts them itself, in memory or on disk, with the
//! results of a replay of the sorted log; `recsift sort` writes the same sorted copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::Int64Type;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use recsift::io::parquet_file::{read_parquet, write_parquet_atomic};
use serde_json::Value;

use crate::common::{recsift, root, stderr};

/// The shipped log (time-sorted) as one batch.
fn shipped_log() -> RecordBatch {
    let batches = read_parquet(&root().join("data/ml-latest-small/ratings.parquet")).unwrap();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// `batch`'s rows in the order of `order`, written to `path`.
fn write_rows(path: &Path, batch: &RecordBatch, order: Vec<u32>) {
    let rows = take_record_batch(batch, &UInt32Array::from(order)).unwrap();
    write_parquet_atomic(path, &rows).unwrap();
}

/// Writes a seeded shuffle of the shipped log, and the reference sort of that shuffle (by
/// `timestamp`, stable, with `sort_by_key` on the whole table): (shuffled, sorted).
fn shuffled_and_sorted(dir: &Path) -> (PathBuf, PathBuf) {
    let log = shipped_log();
    let mut order: Vec<u32> = (0..log.num_rows() as u32).collect();
    order.shuffle(&mut StdRng::seed_from_u64(13));
    let shuffled = dir.join("shuffled.parquet");
    write_rows(&shuffled, &log, order.clone());
    let times = log
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    order.sort_by_key(|&row| times[row as usize]);
    let sorted = dir.join("sorted.parquet");
    write_rows(&sorted, &log, order);
    (shuffled, sorted)
}

/// `recsift run` of the shipped replay pipeline (90-day windows over the whole log) on
/// `events`, spilling to `tmp`.
fn replay(events: &Path, out: &Path, tmp: &Path, extra: &[&str]) -> Output {
    let events = format!("data.events={}", events.display());
    let mut args = vec![
        "run",
        "pipelines/replay-ml-latest-small.yaml",
        "--set",
        &events,
        "--set",
        "protocol.replay.window=90d",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let output = Command::new(env!("CARGO_BIN_EXE_recsift"))
        .args(&args)
        .current_dir(root())
        .env("TMPDIR", tmp)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    output
}

/// What must not depend on how the log was stored: every round's counts and metrics, and
/// every selection.
fn results(out: &Path) -> (Value, Vec<RecordBatch>) {
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let rounds: Vec<Value> = summary["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("timings_ms");
            r
        })
        .collect();
    let kept = serde_json::json!({
        "metrics": summary["metrics"],
        "selected": summary["selected"],
        "history": rounds,
    });
    (kept, read_parquet(&out.join("selections.parquet")).unwrap())
}

#[test]
fn a_shuffled_log_replays_as_the_sorted_one_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (shuffled, sorted) = shuffled_and_sorted(dir.path());

    let reference = dir.path().join("reference");
    let quiet = replay(&sorted, &reference, tmp.path(), &[]);
    assert!(
        !stderr(&quiet).contains("not in time order"),
        "{}",
        stderr(&quiet)
    );
    let expected = results(&reference);
    assert!(expected.0["history"].as_array().unwrap().len() > 80);

    let in_memory = dir.path().join("in-memory");
    let output = replay(&shuffled, &in_memory, tmp.path(), &[]);
    let text = stderr(&output);
    assert!(
        text.contains("shuffled.parquet: not in time order (row "),
        "{text}"
    );
    assert!(
        text.contains("sort: 100,836 rows sorted in memory"),
        "{text}"
    );
    assert!(results(&in_memory) == expected, "sorted in memory");

    // 1 MiB holds about a fifth of the log (4 numeric columns): runs spill and merge.
    let on_disk = dir.path().join("on-disk");
    let output = replay(
        &shuffled,
        &on_disk,
        tmp.path(),
        &["--set", "protocol.replay.sort_memory=1MiB"],
    );
    let text = stderr(&output);
    assert!(text.contains("sort: run 4 ("), "{text}");
    assert!(text.contains("sort: merging"), "{text}");
    assert!(results(&on_disk) == expected, "sorted on disk");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "the runs are removed"
    );

    // --quiet silences the sort too.
    let output = replay(
        &shuffled,
        &dir.path().join("quiet"),
        tmp.path(),
        &["--quiet"],
    );
    assert!(!stderr(&output).contains("sort:"), "{}", stderr(&output));
}

#[test]
fn recsift_sort_writes_what_a_sort_in_memory_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (shuffled, sorted) = shuffled_and_sorted(dir.path());
    let expected = read_parquet(&sorted).unwrap();
    let expected = concat_batches(&expected[0].schema(), &expected).unwrap();
    for (memory, how) in [("1GiB", "in memory"), ("512KiB", "runs spilled and merged")] {
        let out = dir.path().join(format!("out-{memory}.parquet"));
        let output = recsift(&[
            "sort",
            shuffled.to_str().unwrap(),
            out.to_str().unwrap(),
            "--memory",
            memory,
            "--temp-dir",
            dir.path().to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let line = String::from_utf8(output.stdout).unwrap();
        assert!(
            line.starts_with("sorted 100,836 rows by `timestamp` (") && line.contains(how),
            "{line}"
        );
        let back = read_parquet(&out).unwrap();
        assert_eq!(concat_batches(&back[0].schema(), &back).unwrap(), expected);
    }
}

#[test]
fn recsift_sort_refuses_to_overwrite_and_names_a_missing_column() {
    let dir = tempfile::tempdir().unwrap();
    let (shuffled, sorted) = shuffled_and_sorted(dir.path());
    let before = std::fs::read(&sorted).unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["sort", shuffled.to_str().unwrap()];
        all.extend(args);
        recsift(&all)
    };

    let output = run(&[shuffled.to_str().unwrap(), "--force"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is the input file"),
        "{}",
        stderr(&output)
    );

    let output = run(&[sorted.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        format!(
            "error: {} exists; pass --force to replace it, or choose another output file\n",
            sorted.display()
        )
    );
    assert_eq!(std::fs::read(&sorted).unwrap(), before);

    let output = run(&[sorted.to_str().unwrap(), "--time", "time", "--force"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no column `time` for the time (did you mean `timestamp`?)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&sorted).unwrap(), before);

    let output = run(&[sorted.to_str().unwrap(), "--memory", "1GB"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`1GB` is not a memory size"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_replay_sort_memory_must_be_a_size_with_a_unit() {
    let output = recsift(&[
        "validate",
        "pipelines/replay-ml-latest-small.yaml",
        "--set",
        "protocol.replay.sort_memory=1GB",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains("`protocol.replay.sort_memory`: `1GB` is not a memory size"),
        "{text}"
    );
    assert!(text.contains("`GiB`"), "{text}");
}
