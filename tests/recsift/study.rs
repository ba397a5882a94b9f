//! Studies end to end: arms x seeds as ordinary runs, the study files, resuming, and
//! `recsift report` over chosen runs.

use std::fs;
use std::path::Path;

use recsift::io::parquet_file::read_parquet;

use crate::common::{recsift, root, stderr};

/// A small `mf` study on the shipped ml-latest-small: 2 strategies x 2 seeds, 2 rounds.
fn study(dir: &Path, events: &Path) -> String {
    let yaml = format!(
        "version: 1
name: tiny
seed: 5
data: {{events: {}}}
protocol: {{pool: {{split: {{random: {{test: 0.2}}}}, labelled: {{fraction: 0.1}}, rounds: 2}}}}
nodes:
  model: {{train: {{mf: {{dim: 8, members: 2, epochs: 3, epochs_per_round: 1}}}}, inputs: [labelled]}}
  scores: {{score: {{}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: random, budget: 200}}, input: scores}}
  report: {{evaluate: {{metrics: [rmse, ndcg@10]}}, inputs: [test, model]}}
output: {{dir: {}}}
study:
  seeds: 2
  vary: {{nodes.pick.select.strategy: [random, uncertainty]}}
  parallel: 2
",
        events.display(),
        dir.join("out").display()
    );
    let path = dir.join("study.yaml");
    fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

fn ratings() -> std::path::PathBuf {
    root().join("data/ml-latest-small/ratings.parquet")
}

#[test]
fn a_study_runs_every_arm_and_seed_resumes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let file = study(dir.path(), &ratings());
    let validate = recsift(&["validate", &file]);
    assert!(validate.status.success(), "{}", stderr(&validate));
    assert!(String::from_utf8_lossy(&validate.stdout).contains("2 arms x 2 seeds = 4 runs"));

    let first = recsift(&["run", &file]);
    assert!(first.status.success(), "{}", stderr(&first));
    let out = dir.path().join("out");
    for arm in ["random", "uncertainty"] {
        for seed in [5, 6] {
            let run = out.join(format!("runs/{arm}/seed-{seed}"));
            for file in ["summary.json", "rounds.parquet", "selections.parquet"] {
                assert!(run.join(file).is_file(), "{}", run.join(file).display());
            }
        }
    }
    for file in [
        "study.json",
        "study.parquet",
        "arms.parquet",
        "learning_curves.svg",
        "report.html",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("uncertainty") && html.contains("<svg"));
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("study.json")).unwrap()).unwrap();
    assert_eq!(summary["analysis"]["baseline"], "random");
    assert_eq!(summary["analysis"]["metrics"][0]["metric"], "rmse");

    // A run of the same seed is the same run whichever study it belongs to: random's
    // seed-5 run equals a plain run with seed 5.
    let single = dir.path().join("single");
    let plain = recsift(&[
        "run",
        &file,
        "--set",
        "study=null",
        "--set",
        "seed=5",
        "--out",
        &single.display().to_string(),
        "--quiet",
    ]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let metrics = |p: &Path| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(
            &fs::read_to_string(p.join("summary.json")).unwrap(),
        )
        .unwrap()["metrics"]
            .clone()
    };
    assert_eq!(metrics(&out.join("runs/random/seed-5")), metrics(&single));

    // An interrupted study resumes: only the run without a summary runs again.
    fs::remove_file(out.join("runs/uncertainty/seed-6/summary.json")).unwrap();
    let again = recsift(&["run", &file]);
    assert!(again.status.success(), "{}", stderr(&again));
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(said.contains("(3 skipped"), "{said}");

    // recsift report over the study and a run, and a refusal of other data.
    let report_dir = dir.path().join("report");
    let report = recsift(&[
        "report",
        &out.display().to_string(),
        "--out",
        &report_dir.display().to_string(),
    ]);
    assert!(report.status.success(), "{}", stderr(&report));
    assert!(report_dir.join("report.html").is_file());

    let other = dir.path().join("other.parquet");
    fs::copy(ratings(), &other).unwrap();
    let other_study = tempfile::tempdir().unwrap();
    let other_file = study(other_study.path(), &other);
    let ran = recsift(&[
        "run",
        &other_file,
        "--set",
        "study.seeds=1",
        "--set",
        "study.vary={nodes.pick.select.strategy: [random]}",
    ]);
    assert!(ran.status.success(), "{}", stderr(&ran));
    let mixed = recsift(&[
        "report",
        &out.display().to_string(),
        &other_study.path().join("out").display().to_string(),
        "--out",
        &dir.path().join("mixed").display().to_string(),
    ]);
    assert_eq!(mixed.status.code(), Some(2));
    assert!(
        stderr(&mixed).contains("read different data"),
        "{}",
        stderr(&mixed)
    );
}

/// Arms of one seed share round 0 (trained once, then copied with its optimiser and random
/// state) and still give exactly the results of separate runs: `text_mf` with Adam, whose
/// dense projection carries optimiser moments, over strategies and retraining protocols.
#[test]
fn arms_sharing_round_zero_equal_separate_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = root().join("data/ml-latest-small");
    let yaml = format!(
        "version: 1
name: shared
seed: 5
data:
  events: {data}/ratings.parquet
  items: {{path: {data}/items.parquet, text: \"{{title}} | {{genres}}\"}}
protocol: {{pool: {{split: {{random: {{test: 0.2}}}}, labelled: {{fraction: 0.05}}, rounds: 2}}}}
nodes:
  vectors: {{embed: {{model: sentence-transformers/all-MiniLM-L6-v2}}, input: items}}
  model:
    train: {{text_mf: {{dim: 8, members: 2, epochs: 3, epochs_per_round: 1, optimizer: {{adam: {{lr: 0.01}}}}}}}}
    inputs: [labelled, vectors]
  scores: {{score: {{uncertainty: ensemble}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: random, budget: 200}}, input: scores}}
  report: {{evaluate: {{metrics: [rmse, ndcg@10]}}, inputs: [test, model]}}
study:
  seeds: 1
  vary:
    nodes.pick.select.strategy: [uncertainty, max_loss]
    nodes.model.train.text_mf.refit: [all_labels, new_labels]
  parallel: 2
",
        data = data.display()
    );
    let file = dir.path().join("study.yaml");
    fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    let plan = recsift(&["plan", &file]);
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("round 0: trained 1 times for 4 runs"),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let run = |out: &Path, share: &str, continued: usize| {
        let ran = recsift(&[
            "run",
            &file,
            "--set",
            &format!("study.share_round_zero={share}"),
            "--out",
            &out.display().to_string(),
        ]);
        assert!(ran.status.success(), "{}", stderr(&ran));
        let said = String::from_utf8_lossy(&ran.stdout);
        let expected = format!("{continued} continued a shared round 0");
        assert!(said.contains(&expected), "{said}");
    };
    let shared = dir.path().join("shared");
    let separate = dir.path().join("separate");
    run(&shared, "true", 4);
    run(&separate, "false", 0);
    let metrics = |p: &Path| -> serde_json::Value {
        let summary: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(p.join("summary.json")).unwrap()).unwrap();
        summary["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|round| round["metrics"].clone())
            .collect()
    };
    for arm in [
        "uncertainty+all_labels",
        "uncertainty+new_labels",
        "max_loss+all_labels",
        "max_loss+new_labels",
    ] {
        let a = shared.join(format!("runs/{arm}/seed-5"));
        let b = separate.join(format!("runs/{arm}/seed-5"));
        assert_eq!(metrics(&a), metrics(&b), "{arm}");
        assert_eq!(
            read_parquet(&a.join("selections.parquet")).unwrap(),
            read_parquet(&b.join("selections.parquet")).unwrap(),
            "{arm}"
        );
    }
}

#[test]
fn study_errors_point_at_the_study_section() {
    let dir = tempfile::tempdir().unwrap();
    let file = study(dir.path(), &ratings());
    let text = fs::read_to_string(&file)
        .unwrap()
        .replace("[random, uncertainty]", "[random, uncertanty]")
        .replace("seeds: 2", "seeds: [1, 1]");
    fs::write(&file, text).unwrap();
    let output = recsift(&["validate", &file]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("the seed list repeats a seed"), "{err}");
    assert!(err.contains("arm `uncertanty`"), "{err}");
    assert!(err.contains("did you mean `uncertainty`"), "{err}");
    assert!(err.contains("study.yaml:14:"), "the vary key's line: {err}");
}
