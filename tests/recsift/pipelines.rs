//! The shipped pipelines: they validate, their plans read as expected (snapshots), the
//! quickstart runs end to end through the command line and writes complete results, and
//! `bench parity` varies its model.

use std::fs;

use recsift::io::parquet_file::read_parquet;

use crate::common::{import_ml100k, plan_of, recsift, root, stderr};

#[test]
fn every_shipped_pipeline_has_a_stable_plan() {
    let dir = tempfile::tempdir().unwrap();
    // Without MovieLens 100K the ml100k pipelines are skipped, the others still checked.
    let ml100k = import_ml100k(
        dir.path(),
        "every_shipped_pipeline_has_a_stable_plan (its ml100k pipelines)",
    );
    let mut files: Vec<_> = fs::read_dir(root().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let relative = format!("pipelines/{name}.yaml");
        let ml100k = match &ml100k {
            Some(dir) => dir,
            None if name.starts_with("ml100k") => continue,
            None => dir.path(),
        };
        // MovieLens 100K is not shipped: point its pipelines at the copy imported above.
        let overrides = match name.as_str() {
            "ml100k-u1-mf" => vec![
                ("protocol.pool.split.files.train", "u1.train.parquet"),
                ("protocol.pool.split.files.test", "u1.test.parquet"),
            ],
            _ if name.starts_with("ml100k") => vec![("data.events", "ratings.parquet")],
            _ => Vec::new(),
        };
        let set: Vec<String> = overrides
            .iter()
            .flat_map(|(key, file)| {
                let value = format!("{key}={}", ml100k.join(file).display());
                ["--set".to_string(), value]
            })
            .collect();
        let mut args = vec!["plan", relative.as_str()];
        args.extend(set.iter().map(String::as_str));
        let output = recsift(&args);
        assert!(output.status.success(), "{relative}: {}", stderr(&output));
        let text = String::from_utf8(output.stdout)
            .unwrap()
            .replace(&dir.path().display().to_string(), "<tmp>");
        insta::assert_snapshot!(format!("plan-{name}"), text);
        let mut validate = vec!["validate", relative.as_str()];
        validate.extend(set.iter().map(String::as_str));
        assert!(recsift(&validate).status.success());
        let mut dot = args.clone();
        dot.push("--dot");
        let dot = String::from_utf8(recsift(&dot).stdout).unwrap();
        assert!(
            dot.starts_with("digraph") && dot.contains("\"labelled\" -> \""),
            "{dot}"
        );
    }
}

/// Each strategy's planner plans the options its registry entry lists: the quickstart
/// with each strategy, its own options written, plans them (k-center's options into the
/// select plan) and nothing else.
#[test]
fn each_strategy_plans_the_options_its_registry_entry_lists() {
    for def in recsift::registry::STRATEGIES {
        let strategy = format!("select.strategy={}", def.name);
        let mut set = vec![strategy.as_str(), "select.budget=40"];
        let written: Vec<String> = def
            .options
            .iter()
            .map(|o| match o.name {
                "space" => "select.space=factors".to_string(),
                "candidates" => "select.candidates=90".to_string(),
                other => panic!("no value to write for `{other}`"),
            })
            .collect();
        set.extend(written.iter().map(String::as_str));
        let plan = plan_of("pipelines/quickstart.yaml", &set);
        let select = plan.protocol.select().unwrap();
        assert_eq!(select.strategy, def.strategy);
        let diversity = select
            .diversity
            .map(|d| (d.space.to_string(), d.candidates));
        let expected = (!def.options.is_empty()).then(|| ("factors".to_string(), 90));
        assert_eq!(diversity, expected, "{}", def.name);
    }
}

#[test]
fn quickstart_runs_end_to_end_and_writes_complete_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_arg = out.display().to_string();
    let output = recsift(&["run", "pipelines/quickstart.yaml", "--out", &out_arg]);
    assert!(output.status.success(), "{}", stderr(&output));
    let progress = stderr(&output);
    assert_eq!(
        progress.lines().filter(|l| l.starts_with("round")).count(),
        11,
        "{progress}"
    );

    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for key in ["rmse", "mae", "ndcg@10", "recall@10"] {
        let value = summary["metrics"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("metrics.{key} missing: {summary}"));
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    assert!(summary["metrics"]["rmse"].as_f64().unwrap() < 1.0);
    assert_eq!(summary["seed"], 42);
    assert_eq!(summary["recsift_version"], env!("CARGO_PKG_VERSION"));
    let pool = &summary["config"]["protocol"]["pool"];
    assert_eq!(pool["rounds"]["select"]["strategy"], "uncertainty");
    assert_eq!(
        pool["split"]["log"]["events"]["path"]
            .as_str()
            .map(|p| p.ends_with("ratings.parquet")),
        Some(true)
    );
    assert_eq!(summary["history"].as_array().unwrap().len(), 11);
    assert_eq!(summary["selected"], 5000);

    let rounds = read_parquet(&out.join("rounds.parquet")).unwrap();
    assert_eq!(rounds.iter().map(|b| b.num_rows()).sum::<usize>(), 11);
    let schema = rounds[0].schema();
    for column in [
        "round", "labelled", "selected", "rescored", "rmse", "ndcg@10", "train_ms", "score_ms",
    ] {
        assert!(
            schema.column_with_name(column).is_some(),
            "rounds.parquet lacks {column}"
        );
    }
    let selections = read_parquet(&out.join("selections.parquet")).unwrap();
    assert_eq!(selections.iter().map(|b| b.num_rows()).sum::<usize>(), 5000);
    let latency: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("latency.json")).unwrap()).unwrap();
    for operator in ["score", "select", "train", "evaluate"] {
        assert!(
            latency["operators"][operator]["p99_ms"].is_number(),
            "{operator}: {latency}"
        );
    }
    assert!(
        fs::read_to_string(out.join("learning_curve.svg"))
            .unwrap()
            .starts_with("<svg")
    );

    // A second run into the same directory is refused without --force, and keeps the results.
    let again = recsift(&["run", "pipelines/quickstart.yaml", "--out", &out_arg]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("pass --force"),
        "{}",
        stderr(&again)
    );
    assert!(out.join("summary.json").exists());
    let forced = recsift(&[
        "run",
        "pipelines/quickstart.yaml",
        "--out",
        &out_arg,
        "--force",
        "--quiet",
        "--set",
        "protocol.pool.rounds=1",
    ]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["history"].as_array().unwrap().len(), 2);
}

#[test]
fn the_committed_json_schema_is_current_and_every_shipped_pipeline_matches_it() {
    let schema = recsift::spec::json_schema::pipeline_schema();
    let committed: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(root().join("docs/pipeline.schema.json")).unwrap(),
    )
    .unwrap();
    assert!(
        committed == schema,
        "docs/pipeline.schema.json is stale: run `recsift schema > docs/pipeline.schema.json`"
    );
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut checked = 0;
    for entry in fs::read_dir(root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let pipeline: serde_json::Value =
            serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&pipeline)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
    // What the planner refuses as it types the file, the schema flags too: a misspelt key,
    // a node with two operators, a wrong type, an unknown name where the choice is closed.
    for bad in [
        "version: 1\nnodes:\n  p: {select: {strategy: uncertanity, budget: 5}, input: s}\n",
        "version: 1\nnodes:\n  m: {train: {mf: {refit: sometimes}}, inputs: [labelled]}\n",
        "version: 1\nnodes:\n  s: {score: {uncertainty: ensembel}, inputs: [pool, m]}\n",
        "version: 1\ndata: {label: ratings}\nnodes: {}\n",
        "version: 1\nnodes:\n  r: {evaluate: {metrics: [rmse, recal@10]}, inputs: [test, m]}\n",
        "version: 1\nnodes:\n  r: {evaluate: {metrics: [ndcg@0]}, inputs: [test, m]}\n",
        "version: 1\nnodes:\n  m: {train: {mf: {dimm: 8}}, inputs: [labelled]}\n",
        "version: 1\nnodes:\n  m: {train: {mf: {}}, score: {}, inputs: [labelled]}\n",
        "version: 1\nseed: many\nnodes: {}\n",
        "version: 1\nnodes: {}\nprotocl: {}\n",
        "version: 1\nnodes:\n  p: {select: {strategy: random, budget: 5, space: text}, input: s}\n",
        "version: 1\nnodes:\n  p: {select: {strategy: uncertainty, budget: 5, candidates: 9}, input: s}\n",
    ] {
        let value: serde_json::Value = serde_yaml::from_str(bad).unwrap();
        assert!(!validator.is_valid(&value), "{bad}");
    }
    // Every metric of the registry is a name the schema accepts, at any cut-off.
    let names: Vec<String> = recsift::metrics::METRICS
        .iter()
        .map(|def| def.name.replace("@K", "@25"))
        .collect();
    let good = format!(
        "version: 1\nnodes:\n  r: {{evaluate: {{metrics: [{}]}}, inputs: [test, m]}}\n",
        names.join(", ")
    );
    let value: serde_json::Value = serde_yaml::from_str(&good).unwrap();
    assert!(validator.is_valid(&value), "{good}");
    // A strategy's own options are accepted beside it.
    for strategy in ["coreset", "uncertainty_diversity"] {
        let good = format!(
            "version: 1\nnodes:\n  p: {{select: {{strategy: {strategy}, budget: 5, space: text, \
             candidates: 50}}, input: s}}\n"
        );
        let value: serde_json::Value = serde_yaml::from_str(&good).unwrap();
        assert!(validator.is_valid(&value), "{good}");
    }
}

/// `bench parity` with the CPU on both sides (CI has no GPU): the command runs each chosen
/// case twice from the quickstart, finds every gap 0, writes both runs, and refuses an
/// unknown case with the list of cases.
#[test]
fn bench_parity_runs_each_case_on_both_devices_and_compares_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let cases = ["mf/sgd", "two_tower/mc_dropout/adam"];
    let output = recsift(&[
        "bench", "parity", "--device", "cpu", "--rounds", "1", "--out", out, "--only", cases[0],
        "--only", cases[1], "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = report["models"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, case) in rows.iter().zip(cases) {
        assert_eq!(row["case"], case);
        let metrics = row["metrics"].as_array().unwrap();
        let names: Vec<&str> = metrics.iter().map(|m| m[0].as_str().unwrap()).collect();
        assert_eq!(names, ["mae", "ndcg@10", "recall@10", "rmse"]);
        for m in metrics {
            assert_eq!(m[1], m[2], "{case}: the same device gives the same metrics");
        }
        // Both sides are the CPU here, so they share one results folder.
        let summary = dir
            .path()
            .join(format!("{}-cpu/summary.json", case.replace('/', "-")));
        assert!(summary.exists(), "{}", summary.display());
    }
    // The model the case names is the one that trained.
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            dir.path()
                .join("two_tower-mc_dropout-adam-cpu/summary.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let config = summary["config"].to_string();
    assert!(
        config.contains("two_tower") && config.contains("mc_dropout"),
        "{config}"
    );

    let output = recsift(&["bench", "parity", "--device", "cpu", "--only", "mf"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("--only mf: no such case; the cases are mf/sgd, mf/adam"),
        "{message}"
    );
    // Pipelines it cannot vary, and a run without rounds, are refused before anything runs.
    let refusals = [
        (
            vec!["--pipeline", "pipelines/replay-ml-latest-small.yaml"],
            "error: pipelines/replay-ml-latest-small.yaml: its protocol is not `pool`; bench \
             parity varies a pool pipeline with one train node and its score node, such as \
             pipelines/quickstart.yaml\n",
        ),
        (
            vec!["--pipeline", "pipelines/fusion.yaml"],
            "error: pipelines/fusion.yaml: it does not score exactly one train node; bench \
             parity varies a pool pipeline with one train node and its score node, such as \
             pipelines/quickstart.yaml\n",
        ),
        (
            vec!["--rounds", "0"],
            "error: --rounds must be at least 1\n",
        ),
    ];
    let quickstart = fs::read_to_string(root().join("pipelines/quickstart.yaml")).unwrap();
    let (without_report, report) = quickstart.split_once("  report:\n").unwrap();
    assert!(report.trim_start().starts_with("evaluate:"), "{report}");
    let data = root().join("data");
    let unevaluated = dir.path().join("unevaluated.yaml");
    fs::write(
        &unevaluated,
        without_report.replace("../data", data.to_str().unwrap()),
    )
    .unwrap();
    let unevaluated = unevaluated.to_str().unwrap().to_string();
    let no_evaluate = format!(
        "error: {unevaluated}: it has no evaluate node; bench parity varies a pool pipeline \
         with one train node and its score node, such as pipelines/quickstart.yaml\n"
    );
    let refusals = refusals
        .into_iter()
        .map(|(args, message)| (args, message.to_string()))
        .chain([(vec!["--pipeline", unevaluated.as_str()], no_evaluate)]);
    for (args, message) in refusals {
        let mut all = vec!["bench", "parity", "--device", "cpu", "--out", out];
        all.extend(&args);
        let output = recsift(&all);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&output), message, "{args:?}");
    }
}
