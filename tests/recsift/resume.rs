//! Resuming after a crash: a run killed with SIGKILL (in the middle of a round, of a
//! checkpoint write, of the final writes) and continued with `recsift run --resume` writes
//! the results of an uninterrupted run: `selections.parquet` byte for byte, `rounds.parquet`
//! and `summary.json` apart from timings, whether it resumes on 1 worker or on 2. A
//! checkpoint of another pipeline or another recsift version is refused and kept.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

use arrow::array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::common::{QUICK_POOL as POOL, recsift, root, stderr, two_mf_replay};

/// 8 windows of 4,000 ratings of the latest-small replay, read 1,000 rows at a time: ids
/// are interned as the log is read, so each window brings new users and films and the model
/// grows after every checkpoint.
const REPLAY_WINDOWS: &[&str] = &[
    "pipelines/replay-ml-latest-small.yaml",
    "--set",
    "protocol.replay.batch_rows=1000",
    "--set",
    "protocol.replay.window=null",
    "--set",
    "protocol.replay.window_events=4000",
    "--set",
    "protocol.replay.max_windows=8",
];

/// [`REPLAY_WINDOWS`] with mf and a 3-window pool horizon.
fn replay() -> Vec<&'static str> {
    [REPLAY_WINDOWS, &["--set", "protocol.replay.pool_windows=3"]].concat()
}

/// [`REPLAY_WINDOWS`] with `text_mf` (Adam) on the item vectors of the shipped cache: the
/// model's text table and projection grow with the items.
fn replay_text() -> Vec<&'static str> {
    let text_model: &[&str] = &[
        "--set",
        "data.items={path: ../data/ml-latest-small/items.parquet, text: \"{title} | {genres}\"}",
        "--set",
        "nodes.item_text={embed: {model: sentence-transformers/all-MiniLM-L6-v2}, input: items}",
        "--set",
        "nodes.model.train={text_mf: {dim: 16, members: 2, epochs: 3, epochs_per_round: 1, optimizer: {adam: {lr: 0.01}}}}",
        "--set",
        "nodes.model.inputs=[labelled, item_text]",
    ];
    [REPLAY_WINDOWS, text_model].concat()
}

/// 3 rounds of hard-example mining (selection protocol).
const SELECTION: &[&str] = &[
    "pipelines/selection-max-loss.yaml",
    "--set",
    "protocol.selection.rounds=3",
];

/// pipelines/fusion.yaml for 3 rounds with few passes: two models and a learned fusion,
/// whose state holds both models and the fusion's weights.
const FUSION: &[&str] = &[
    "pipelines/fusion.yaml",
    "--set",
    "protocol.pool.rounds=3",
    "--set",
    "select.budget=300",
    "--set",
    "nodes.mf_model.train.mf.epochs=5",
    "--set",
    "nodes.mf_model.train.mf.epochs_per_round=1",
    "--set",
    "nodes.text_model.train.text_mf.epochs=5",
    "--set",
    "nodes.text_model.train.text_mf.epochs_per_round=1",
];

/// `recsift run PIPELINE --out OUT EXTRA...`, killed at `kill_at` (a failpoint, see
/// `recsift::failpoint`) when given.
fn run(pipeline: &[&str], out: &Path, extra: &[&str], kill_at: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_recsift"));
    command
        .arg("run")
        .args(pipeline)
        .arg("--out")
        .arg(out)
        // Every due round saves, however quick: the kill points name checkpoint writes.
        .args(["--quiet", "--set", "checkpoint.min_interval_s=0"])
        .args(extra)
        .current_dir(root());
    if let Some(point) = kill_at {
        command.env(recsift::failpoint::KILL_AT, point);
    }
    command.output().expect("the recsift binary runs")
}

/// Whether SIGKILL ended the process.
fn killed(output: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal() == Some(libc::SIGKILL)
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// What must equal between an uninterrupted and a resumed run: the selections file's
/// bytes, the rounds table without its timing columns, and the summary without timings,
/// worker count and output folder.
fn results(dir: &Path) -> (Vec<u8>, Vec<RecordBatch>, Value) {
    let selections = std::fs::read(dir.join("selections.parquet")).unwrap();
    let rounds = batches(&dir.join("rounds.parquet"))
        .into_iter()
        .map(|batch| {
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|&i| !batch.schema().field(i).name().ends_with("_ms"))
                .collect();
            batch.project(&keep).unwrap()
        })
        .collect();
    let mut summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let map = summary.as_object_mut().unwrap();
    for key in ["wall_s", "checkpoint_s", "workers"] {
        map.remove(key);
    }
    let config = map["config"].as_object_mut().unwrap();
    config.remove("workers");
    config["output"].as_object_mut().unwrap().remove("dir");
    for round in map["history"].as_array_mut().unwrap() {
        round.as_object_mut().unwrap().remove("timings_ms");
    }
    (selections, rounds, summary)
}

/// Kills a run of `pipeline` at each of `points` and resumes it (on 2 workers every other
/// time); each resumed run must equal the uninterrupted one.
fn assert_resumes_exactly(pipeline: &[&str], points: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let output = run(pipeline, &whole, &[], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !whole.join("checkpoint.safetensors").exists(),
        "a complete run removes its checkpoint"
    );
    let expected = results(&whole);
    let saved_by = |dir: &Path| {
        let latency: Value =
            serde_json::from_slice(&std::fs::read(dir.join("latency.json")).unwrap()).unwrap();
        latency["checkpoints"].as_array().unwrap().len()
    };
    let rounds = saved_by(&whole);
    for (i, point) in points.iter().enumerate() {
        let out = dir.path().join(format!("killed-{i}"));
        let output = run(pipeline, &out, &[], Some(point));
        assert!(
            killed(&output),
            "{point}: {:?} {}",
            output.status,
            stderr(&output)
        );
        assert!(!out.join("summary.json").exists(), "{point}");
        let workers = if i % 2 == 0 { "2" } else { "1" };
        let output = run(pipeline, &out, &["--resume", "--workers", workers], None);
        assert!(output.status.success(), "{point}: {}", stderr(&output));
        // It continued from a checkpoint (a run started over would save every round).
        assert!(saved_by(&out) < rounds, "{point}: the run started over");
        let resumed = results(&out);
        assert!(
            resumed.0 == expected.0,
            "{point}: selections.parquet differs"
        );
        assert_eq!(resumed.1, expected.1, "{point}: rounds.parquet differs");
        assert_eq!(resumed.2, expected.2, "{point}: summary.json differs");
        let left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp") || name.starts_with("checkpoint"))
            .collect();
        assert!(left.is_empty(), "{point}: left behind {left:?}");
    }
}

#[test]
fn a_pool_run_killed_anywhere_resumes_to_the_same_results() {
    // Atomic writes: one checkpoint per round (rounds 0-3), then latency.json, the plot,
    // summary.json. `write:2` dies half-way through round 1's checkpoint, `final:1` after
    // rounds.parquet was written.
    assert_resumes_exactly(POOL, &["round:3", "write:2", "final:1", "round:2"]);
}

#[test]
fn a_replay_killed_mid_window_resumes_to_the_same_results() {
    assert_resumes_exactly(&replay(), &["round:5", "write:4"]);
    // Retraining on every label: the labels of windows that left the pool horizon (and
    // whose events the replay no longer holds) are rebuilt on resume and trained on.
    let all_labels = [
        &replay()[..],
        &["--set", "nodes.model.train.mf.refit=all_labels"],
    ]
    .concat();
    assert_resumes_exactly(&all_labels, &["round:6"]);
}

#[test]
fn a_text_model_replay_resumes_to_the_same_results() {
    assert_resumes_exactly(&replay_text(), &["round:4"]);
}

#[test]
fn a_selection_run_killed_mid_round_resumes_to_the_same_results() {
    assert_resumes_exactly(SELECTION, &["round:3"]);
}

#[test]
fn a_run_with_several_models_and_a_fusion_resumes_to_the_same_results() {
    assert_resumes_exactly(FUSION, &["round:2"]);
}

#[test]
fn a_replay_whose_fusion_learns_prequentially_resumes_to_the_same_results() {
    // The fusion's state holds the residual sums it fits its weights on: floats that must
    // read back from the checkpoint to the last bit for the weights to match.
    let dir = tempfile::tempdir().unwrap();
    let file = two_mf_replay(dir.path(), "free_labels: 0.5, max_windows: 30", "");
    assert_resumes_exactly(&[file.as_str()], &["round:20"]);
    // The weights are not stuck in a corner, so a sum read back wrong would show.
    let out = dir.path().join("once");
    assert!(run(&[file.as_str()], &out, &[], None).status.success());
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let interior = summary["history"].as_array().unwrap().iter().any(|round| {
        let w = round["metrics"]["blend/weight[small]"].as_f64().unwrap();
        0.01 < w && w < 0.99
    });
    assert!(interior, "{}", summary["history"]);
}

#[test]
fn a_checkpoint_of_another_pipeline_or_version_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = run(POOL, &out, &[], Some("round:3"));
    assert!(killed(&output), "{}", stderr(&output));
    let checkpoint = out.join("checkpoint.safetensors");
    let saved = std::fs::read(&checkpoint).unwrap();

    let output = run(POOL, &out, &["--resume", "--set", "seed=7"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("another pipeline"), "{message}");
    assert!(message.contains("seed: 42 -> 7"), "{message}");
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        saved,
        "nothing is lost"
    );

    // The same checkpoint, as if another recsift version had written it.
    let tensors = safetensors::SafeTensors::deserialize(&saved).unwrap();
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&saved).unwrap();
    let mut document: Value =
        serde_json::from_str(&metadata.metadata().as_ref().unwrap()["recsift"]).unwrap();
    document["recsift_version"] = Value::from("0.0.1");
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors.tensors();
    let bytes = safetensors::serialize(
        views,
        Some(HashMap::from([(
            "recsift".to_string(),
            document.to_string(),
        )])),
    )
    .unwrap();
    std::fs::write(&checkpoint, &bytes).unwrap();
    let output = run(POOL, &out, &["--resume"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("recsift 0.0.1"), "{message}");
    assert!(message.contains(env!("CARGO_PKG_VERSION")), "{message}");

    // A damaged checkpoint is named; with --force the run starts over and completes.
    std::fs::write(&checkpoint, &saved[..saved.len() / 3]).unwrap();
    let output = run(POOL, &out, &["--resume"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("checkpoint.safetensors"));
    let output = run(POOL, &out, &["--resume", "--force"], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(out.join("summary.json").exists());

    // A folder holding something other than a checkpoint is not resumed into, and kept.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let output = run(POOL, &other, &["--resume"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("has no checkpoint.safetensors to resume from"),
        "{message}"
    );
    assert!(message.contains("notes.txt"), "{message}");
    assert_eq!(
        std::fs::read_to_string(other.join("notes.txt")).unwrap(),
        "mine"
    );

    // A complete run has nothing to resume.
    let output = run(POOL, &out, &["--resume"], None);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("complete run"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn checkpoint_intervals_are_planned_and_zero_saves_none() {
    let output = recsift(&["plan", POOL[0], "--set", "checkpoint.every=3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        text.contains("checkpoint every 3 rounds, at most every 30 s"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    // By default a due round is saved only 30 s after the last save: this run of four quick
    // rounds saves round 0 alone; without the interval it saves all four.
    let saved = |extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_recsift"));
        command.arg("run").args(POOL).arg("--out").arg(&out);
        let output = command
            .arg("--quiet")
            .args(extra)
            .current_dir(root())
            .output();
        let output = output.expect("the recsift binary runs");
        assert!(output.status.success(), "{}", stderr(&output));
        let latency: Value =
            serde_json::from_slice(&std::fs::read(out.join("latency.json")).unwrap()).unwrap();
        let rounds: Vec<u64> = latency["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["round"].as_u64().unwrap())
            .collect();
        rounds
    };
    assert_eq!(saved(&[], "default"), [0]);
    let every_round = saved(&["--set", "checkpoint.min_interval_s=0"], "every");
    assert_eq!(every_round, [0, 1, 2, 3]);
    let output = recsift(&["validate", POOL[0], "--set", "checkpoint.min_interval_s=-1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("`min_interval_s` must be 0 or more seconds"),
        "{}",
        stderr(&output)
    );
    let out = dir.path().join("run");
    let output = run(
        POOL,
        &out,
        &["--set", "checkpoint.every=0"],
        Some("round:3"),
    );
    assert!(killed(&output), "{}", stderr(&output));
    assert!(!out.join("checkpoint.safetensors").exists());
    let output = recsift(&["validate", POOL[0], "--set", "checkpoint.evry=2"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("every"), "{}", stderr(&output));
}
