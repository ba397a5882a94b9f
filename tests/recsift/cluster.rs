//! Cluster runs: the same pipeline on 2 processes (timely's cluster mode, on 127.0.0.1)
//! gives the results of 1 process, for the pool and the replay protocols; a missing or
//! vanished peer stops a process with an error naming it, never a hang. A study shared out
//! to 2 processes gives the report of 1.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{QUICK_POOL as POOL, recsift, root, stderr};

/// A short replay: MovieLens latest-small in 60-day windows (137 rounds).
const REPLAY: &[&str] = &[
    "pipelines/replay-ml-latest-small.yaml",
    "--set",
    "protocol.replay.window=60d",
];

/// Ports that were free a moment ago (the listeners are closed before returning).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A hostfile for `processes` processes on 127.0.0.1, in `dir`.
fn hostfile(dir: &Path, processes: usize) -> String {
    let lines: Vec<String> = free_ports(processes)
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let file = dir.join("hosts");
    std::fs::write(&file, format!("# test cluster\n{}\n", lines.join("\n"))).unwrap();
    file.display().to_string()
}

/// `recsift run PIPELINE... --out OUT EXTRA...` as process `process`, started, not awaited.
fn start(pipeline: &[&str], out: &Path, extra: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_recsift"))
        .arg("run")
        .args(pipeline)
        .arg("--out")
        .arg(out)
        .args(extra)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the recsift binary starts")
}

/// Runs `pipeline` as `processes` processes of `workers` threads each; their outputs, in
/// process order.
fn run_cluster(pipeline: &[&str], out: &Path, processes: usize, workers: usize) -> Vec<Output> {
    let hosts = hostfile(out.parent().unwrap(), processes);
    let children: Vec<Child> = (0..processes)
        .map(|process| {
            let extra: Vec<String> = [
                "-q".to_string(),
                "--workers".into(),
                workers.to_string(),
                "--processes".into(),
                processes.to_string(),
                "--process".into(),
                process.to_string(),
                "--hostfile".into(),
                hosts.clone(),
            ]
            .into();
            start(pipeline, &out_of(out, process), &extra)
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect()
}

/// Where process `process` is told to write: `out` for process 0, a folder of its own for
/// the others (which must not write at all).
fn out_of(out: &Path, process: usize) -> std::path::PathBuf {
    match process {
        0 => out.to_path_buf(),
        p => out.with_extension(format!("process{p}")),
    }
}

fn run_single(pipeline: &[&str], out: &Path, workers: usize) -> Output {
    let out = out.display().to_string();
    let workers = workers.to_string();
    let mut args = vec!["run"];
    args.extend_from_slice(pipeline);
    args.extend(["--out", &out, "-q", "--workers", &workers]);
    recsift(&args)
}

fn summary(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).unwrap()
}

/// What must not depend on the layout: every round's metrics and counts, the final metrics.
fn results_of(summary: &Value) -> Value {
    let rounds: Vec<Value> = summary["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::json!([
                r["round"],
                r["labelled"],
                r["selected"],
                r["rescored"],
                r["metrics"]
            ])
        })
        .collect();
    serde_json::json!({"metrics": summary["metrics"], "rounds": rounds, "selected": summary["selected"]})
}

fn assert_same_results(pipeline: &[&str], single_workers: usize, workers: usize) {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("alone");
    let output = run_single(pipeline, &alone, single_workers);
    assert!(output.status.success(), "{}", stderr(&output));

    let spread = dir.path().join("spread");
    let outputs = run_cluster(pipeline, &spread, 2, workers);
    for (process, output) in outputs.iter().enumerate() {
        assert!(
            output.status.success(),
            "process {process}: {}",
            stderr(output)
        );
    }
    let last_line = String::from_utf8_lossy(&outputs[1].stdout).into_owned();
    assert!(
        last_line.contains("process 1 of 2 done; process 0 writes the results"),
        "{last_line}"
    );

    let (one, two) = (summary(&alone), summary(&spread));
    assert_eq!(two["processes"], 2);
    assert_eq!(results_of(&one), results_of(&two));
    let selections = |dir: &Path| std::fs::read(dir.join("selections.parquet")).unwrap();
    assert!(
        selections(&alone) == selections(&spread),
        "selections.parquet differs between 1 and 2 processes"
    );
    // Process 0 alone writes: process 1 did not even create its results folder.
    assert!(!out_of(&spread, 1).exists());
}

#[test]
fn a_pool_run_on_two_processes_equals_one_process() {
    // 1 process x 1 worker against 2 processes x 2 workers.
    assert_same_results(POOL, 1, 2);
}

#[test]
fn a_replay_on_two_processes_equals_one_process() {
    // 1 process x 2 workers against 2 processes x 1 worker.
    assert_same_results(REPLAY, 2, 1);
}

#[test]
fn a_process_whose_peer_never_comes_names_it_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Nothing listens at process 0's address: a port just found free (not one beside it,
    // which another test's cluster may hold).
    let port = free_ports(1)[0];
    let started = Instant::now();
    let output = recsift(&[
        "run",
        "pipelines/quickstart.yaml",
        "--out",
        &out.display().to_string(),
        "-q",
        "--processes",
        "2",
        "--process",
        "1",
        "--set",
        &format!("cluster.port={port}"),
        "--set",
        "cluster.timeout_s=1",
    ]);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "process 1 could not reach process 0 at 127.0.0.1:{port} within 1 s"
        )),
        "{message}"
    );
    assert!(!out.join("summary.json").exists());
}

#[test]
fn a_killed_process_stops_the_other_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let hosts = hostfile(dir.path(), 2);
    let cluster = |process: usize, quiet: bool| -> Vec<String> {
        let mut args: Vec<String> = ["--processes", "2", "--process", &process.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--hostfile".to_string(), hosts.clone()]);
        if quiet {
            args.push("-q".into());
        }
        args
    };
    // The full replay (1,084 windows): long enough to be killed in the middle.
    let replay = &REPLAY[..1];
    let mut writer = start(replay, &out, &cluster(0, false));
    let mut other = start(replay, &out, &cluster(1, true));
    // Process 0 prints a line per window; once windows run, kill process 1.
    let mut lines = BufReader::new(writer.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let running = line.starts_with("round") && !line.contains("round   0/");
        seen.push(line);
        if running {
            break;
        }
    }
    other.kill().unwrap();
    other.wait().unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = writer.wait().unwrap();
    let message = rest.join("\n");
    assert_eq!(status.code(), Some(1), "{}\n{message}", seen.join("\n"));
    assert!(
        message.contains("lost the connection to another process of the cluster"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert!(!out.join("summary.json").exists());
}

#[test]
fn a_process_killed_while_the_events_are_shared_stops_the_other_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let hosts = hostfile(dir.path(), 2);
    let args = |process: usize| -> Vec<String> {
        [
            "--processes",
            "2",
            "--process",
            &process.to_string(),
            "--hostfile",
            &hosts,
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let writer = start(POOL, &out, &args(0));
    // Process 1 dies as it hands its first block of the events file to process 0.
    let mut killed = Command::new(env!("CARGO_BIN_EXE_recsift"))
        .arg("run")
        .args(POOL)
        .arg("--out")
        .arg(dir.path().join("out-1"))
        .args(args(1))
        .env(recsift::failpoint::KILL_AT, "share:1")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(!killed.wait().unwrap().success());
    let output = writer.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("could not share") && message.contains("lost the connection"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    assert!(!out.join("summary.json").exists());
}

#[test]
fn cluster_settings_out_of_range_or_misplaced_are_refused_before_anything_runs() {
    let plan_error = recsift(&[
        "validate",
        "pipelines/quickstart.yaml",
        "--set",
        "cluster.processes=2",
        "--set",
        "cluster.process=2",
    ]);
    assert_eq!(plan_error.status.code(), Some(2));
    let message = stderr(&plan_error);
    assert!(
        message.contains("process index 2 is out of range for 2 processes (use 0 to 1)")
            && message.contains("cluster"),
        "{message}"
    );

    for (set, expected) in [
        (
            ["cluster.processes=3", "cluster.port=65534"],
            "ports 65534 to 65536 do not exist; choose a lower port",
        ),
        (
            ["cluster.processes=2", "cluster.timeout_s=0"],
            "the timeout must be a positive number of seconds, not 0",
        ),
        (
            ["cluster.processes=0", "cluster.process=0"],
            "a run needs at least 1 process",
        ),
    ] {
        let output = recsift(&[
            "validate",
            "pipelines/quickstart.yaml",
            "--set",
            set[0],
            "--set",
            set[1],
        ]);
        assert_eq!(output.status.code(), Some(2));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }

    let typo = recsift(&[
        "validate",
        "pipelines/quickstart.yaml",
        "--set",
        "cluster.procesess=2",
    ]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(stderr(&typo).contains("processes"), "{}", stderr(&typo));

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let flags = recsift(&[
        "run",
        "pipelines/quickstart.yaml",
        "--out",
        &out,
        "--processes",
        "2",
        "--process",
        "5",
    ]);
    assert_eq!(flags.status.code(), Some(2));
    assert!(
        stderr(&flags).contains("process index 5 is out of range for 2 processes"),
        "{}",
        stderr(&flags)
    );

    let study = recsift(&[
        "run",
        "pipelines/study-quickstart.yaml",
        "--out",
        &out,
        "--processes",
        "2",
        "--hostfile",
        "hosts",
    ]);
    assert_eq!(study.status.code(), Some(2));
    assert!(
        stderr(&study).contains("the processes of a study do not connect to each other"),
        "{}",
        stderr(&study)
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_bad_hostfile_line_is_named_before_anything_loads() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:2101\nnode-b\n").unwrap();
    let out = dir.path().join("out").display().to_string();
    let output = recsift(&[
        "run",
        "pipelines/quickstart.yaml",
        "--out",
        &out,
        "--processes",
        "2",
        "--process",
        "1",
        "--hostfile",
        &hosts.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("{}:2: `node-b` is not host:port", hosts.display())),
        "{}",
        stderr(&output)
    );
}

/// A small study: 2 arms x 2 seeds of a short quickstart, one run at a time.
const STUDY: &[&str] = &[
    "pipelines/study-quickstart.yaml",
    "--set",
    "study.seeds=2",
    "--set",
    "study.parallel=1",
    "--set",
    "study.vary={nodes.pick.select.strategy: [random, uncertainty]}",
    "--set",
    "protocol.pool.rounds=2",
    "--set",
    "nodes.model.train.text_mf.epochs=3",
    "--set",
    "nodes.model.train.text_mf.epochs_per_round=1",
];

#[test]
fn a_study_shared_out_to_two_processes_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("alone");
    let output = run_single(STUDY, &alone, 1);
    assert!(output.status.success(), "{}", stderr(&output));

    // Both processes write into one study folder (here: one machine's filesystem).
    let shared = dir.path().join("shared");
    let extra = |process: usize| -> Vec<String> {
        ["-q", "--processes", "2", "--process", &process.to_string()]
            .map(String::from)
            .to_vec()
    };
    let other = start(STUDY, &shared, &extra(1));
    let writer = start(STUDY, &shared, &extra(0));
    let (writer, other) = (
        writer.wait_with_output().unwrap(),
        other.wait_with_output().unwrap(),
    );
    assert!(writer.status.success(), "{}", stderr(&writer));
    assert!(other.status.success(), "{}", stderr(&other));
    let line = String::from_utf8_lossy(&other.stdout).into_owned();
    assert!(
        line.contains("process 1 of 2 ran its 2 runs") && line.contains("process 0 writes"),
        "{line}"
    );

    let read = |path: &Path| std::fs::read(path).unwrap();
    assert!(read(&alone.join("arms.parquet")) == read(&shared.join("arms.parquet")));
    for arm in ["random", "uncertainty"] {
        for seed in [42, 43] {
            let run = Path::new("runs").join(arm).join(format!("seed-{seed}"));
            assert!(
                read(&alone.join(&run).join("selections.parquet"))
                    == read(&shared.join(&run).join("selections.parquet")),
                "{}",
                run.display()
            );
        }
    }
    // The processes' statuses are cleared once the report is written.
    assert!(!shared.join(".processes").exists());
}

#[test]
fn a_study_process_waiting_for_a_peer_that_never_starts_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let mut args = vec!["run"];
    args.extend_from_slice(STUDY);
    let out_text = out.display().to_string();
    args.extend([
        "--out",
        &out_text,
        "-q",
        "--processes",
        "2",
        "--process",
        "0",
        "--set",
        "cluster.timeout_s=1",
    ]);
    let output = recsift(&args);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("process 1 of the study did not start within 1 s"),
        "{message}"
    );
    // Process 0's own runs are finished and kept; there is no report.
    assert!(out.join("runs/random/seed-42/summary.json").exists());
    assert!(!out.join("study.json").exists());
}

/// Runs `pipeline` as 2 processes of 1 worker writing to `outs[process]`, with `extra`
/// arguments; process 0 is killed at failpoint `kill_at`, when given.
fn run_pair(
    pipeline: &[&str],
    outs: [&Path; 2],
    extra: &[&str],
    kill_at: Option<&str>,
) -> Vec<Output> {
    let hosts = hostfile(outs[0].parent().unwrap(), 2);
    let children: Vec<Child> = (0..2)
        .map(|process| {
            let mut args: Vec<String> = ["-q", "--processes", "2", "--hostfile", &hosts]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend(["--process".to_string(), process.to_string()]);
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut command = Command::new(env!("CARGO_BIN_EXE_recsift"));
            command
                .arg("run")
                .args(pipeline)
                .arg("--out")
                .arg(outs[process])
                .args(&args)
                .current_dir(root())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let (0, Some(point)) = (process, kill_at) {
                command.env(recsift::failpoint::KILL_AT, point);
            }
            command.spawn().expect("the recsift binary starts")
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect()
}

#[test]
fn a_killed_cluster_run_resumes_from_the_shared_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("alone");
    let output = run_single(POOL, &alone, 1);
    assert!(output.status.success(), "{}", stderr(&output));

    // Process 0 dies with SIGKILL in round 2; process 1 notices and stops.
    let shared = dir.path().join("shared");
    let outputs = run_pair(POOL, [&shared, &shared], &[], Some("round:3"));
    assert!(!outputs[0].status.success() && !outputs[1].status.success());
    assert!(shared.join("checkpoint.safetensors").exists());
    assert!(!shared.join("summary.json").exists());

    // A process that cannot see the checkpoint would start over: its peer refuses it.
    let elsewhere = dir.path().join("elsewhere");
    let outputs = run_pair(POOL, [&shared, &elsewhere], &["--resume"], None);
    assert!(!outputs[0].status.success() && !outputs[1].status.success());
    let message = stderr(&outputs[0]) + &stderr(&outputs[1]);
    assert!(
        message.contains("resumes from another checkpoint"),
        "{message}"
    );
    assert!(
        shared.join("checkpoint.safetensors").exists(),
        "nothing is lost"
    );

    // Both read the shared folder's checkpoint: the results of one uninterrupted process.
    let outputs = run_pair(POOL, [&shared, &shared], &["--resume"], None);
    for (process, output) in outputs.iter().enumerate() {
        assert!(
            output.status.success(),
            "process {process}: {}",
            stderr(output)
        );
    }
    assert_eq!(results_of(&summary(&alone)), results_of(&summary(&shared)));
    let selections = |dir: &Path| std::fs::read(dir.join("selections.parquet")).unwrap();
    assert!(selections(&alone) == selections(&shared));
    assert!(!shared.join("checkpoint.safetensors").exists());
}
