//! Errors are part of the product: each names what is wrong, where, and how to fix it,
//! exits with code 2, and leaves no result that looks complete.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use recsift::io::parquet_file::write_parquet_atomic;

use crate::common::{recsift, root, stderr};

/// Writes `yaml` as `dir/p.yaml` and returns its path as a string.
fn pipeline(dir: &Path, yaml: &str) -> String {
    let path = dir.join("p.yaml");
    fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// A pipeline over `events` (absolute path) with the quickstart's nodes.
fn over(events: &str, protocol: &str, select: &str) -> String {
    format!(
        "version: 1\nseed: 1\ndata: {{events: {events}}}\nprotocol: {protocol}\nnodes:\n  model: {{train: {{mf: {{dim: 8, members: 2, epochs: 2}}}}, inputs: [labelled]}}\n  scores: {{score: {{}}, inputs: [pool, model]}}\n  pick: {{select: {select}, input: scores}}\n  report: {{evaluate: {{}}, inputs: [test, model]}}\n"
    )
}

fn ratings() -> String {
    root()
        .join("data/ml-latest-small/ratings.parquet")
        .display()
        .to_string()
}

/// Runs `args`, expects exit code 2, returns stderr with the temp dir replaced by `<tmp>`.
fn fails(dir: &Path, args: &[&str]) -> String {
    let output = recsift(args);
    let err = stderr(&output).replace(&dir.display().to_string(), "<tmp>");
    assert_eq!(output.status.code(), Some(2), "{err}");
    err
}

#[test]
fn validate_reports_every_problem_at_once_with_locations_and_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        "version: 1
seed: 42
data:
  events: ../nowhere/ratings.parquet
  lable: rating
protocol:
  pool:
    split: {random: {test: 1.5}}
    rounds: 3
nodes:
  model:
    train:
      mf: {dim: 0, members: 1, optimizer: {adam: {lr: -1}}}
    inputs: [labeled]
  scores:
    score: {uncertainty: ensemble}
    inputs: [pool, model]
  pick:
    select: {strategy: uncertanty, budgt: 10}
    input: scores
  report:
    evaluate: {metrics: [rmse, ndcg@0, recal@10]}
    inputs: [test, model]
",
    );
    let err = fails(dir.path(), &["validate", &file]);
    insta::assert_snapshot!("validate-many-errors", err);
}

#[test]
fn text_models_and_strategies_say_what_text_they_lack() {
    let dir = tempfile::tempdir().unwrap();
    let events = ratings();
    let file = pipeline(
        dir.path(),
        &format!(
            "version: 1
data: {{events: {events}}}
protocol: {{pool: {{split: {{random: {{test: 0.2}}}}, rounds: 2}}}}
nodes:
  item_text: {{embed: {{batch_size: 0}}, input: items}}
  model:
    train:
      text_mf: {{dim: 8, members: 2, mc_dropout: 4}}
    inputs: [labelled]
  scores: {{score: {{uncertainty: mc_dropout}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: coreset, budget: 10, space: text, candidates: 5}}, input: scores}}
"
        ),
    );
    let err = fails(dir.path(), &["validate", &file]);
    insta::assert_snapshot!("validate-text-errors", err);
}

#[test]
fn two_tower_and_diversity_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let events = ratings();
    let file = pipeline(
        dir.path(),
        &format!(
            "version: 1
data: {{events: {events}}}
protocol: {{pool: {{split: {{random: {{test: 0.2}}}}, rounds: 2}}}}
nodes:
  model:
    train:
      two_tower: {{dim: 8, hidden: 0, dropout: 1.5, mc_dropout: 1}}
    inputs: [labelled]
  scores: {{score: {{uncertainty: bayes}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: coreset, budget: 10, space: text, per_user: true}}, input: scores}}
"
        ),
    );
    let err = fails(dir.path(), &["validate", &file]);
    insta::assert_snapshot!("validate-two-tower-errors", err);

    let file = pipeline(
        dir.path(),
        &format!(
            "version: 1
data: {{events: {events}}}
protocol: {{pool: {{split: {{random: {{test: 0.2}}}}, rounds: 2}}}}
nodes:
  model: {{train: {{two_tower: {{dim: 8, dropout: 0, mc_dropout: 4, members: 3}}}}, inputs: [labelled]}}
  scores: {{score: {{}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: random, budget: 10, space: factors, candidates: 50}}, input: scores}}
"
        ),
    );
    let err = fails(dir.path(), &["validate", &file]);
    insta::assert_snapshot!("validate-mc-dropout-errors", err);
}

#[test]
fn an_unknown_loss_gets_a_suggestion_and_bpr_refuses_label_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let events = ratings();
    let file = pipeline(
        dir.path(),
        &format!(
            "version: 1
data: {{events: {events}}}
protocol: {{pool: {{split: {{random: {{test: 0.2}}}}, rounds: 2}}}}
nodes:
  model: {{train: {{mf: {{dim: 8, loss: bpr_loss}}}}, inputs: [labelled]}}
  scores: {{score: {{}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: max_loss, budget: 10}}, input: scores}}
"
        ),
    );
    let unknown = fails(dir.path(), &["validate", &file]);
    // A BPR model ranks; asking it for rmse is refused at the metric, not at run time.
    let file = pipeline(
        dir.path(),
        &format!(
            "version: 1
data: {{events: {events}}}
protocol: {{pool: {{split: {{random: {{test: 0.2}}}}, rounds: 2}}}}
nodes:
  model: {{train: {{mf: {{dim: 8, members: 2, loss: bpr}}}}, inputs: [labelled]}}
  scores: {{score: {{}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: uncertainty, budget: 10}}, input: scores}}
  report: {{evaluate: {{metrics: [ndcg@10, rmse]}}, inputs: [test, model]}}
"
        ),
    );
    let label_metric = fails(dir.path(), &["validate", &file]);
    insta::assert_snapshot!("validate-loss-errors", format!("{unknown}\n{label_metric}"));
}

#[test]
fn an_embedding_cache_of_another_dimension_is_refused_and_kept() {
    let Some(model) =
        crate::common::minilm("an_embedding_cache_of_another_dimension_is_refused_and_kept")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    // The key of the vectors of a `model_dir`: the model id and a digest of the folder.
    let key = format!(
        "sentence-transformers/all-MiniLM-L6-v2@{}",
        recsift::model::encoder::folder_digest(&model).unwrap()
    );
    let mut stale = recsift::io::embedding_cache::EmbeddingCache::open(&cache, &key, 3).unwrap();
    stale.insert("an old text", &[1.0, 2.0, 3.0]).unwrap();
    stale.save().unwrap();
    let before = fs::read(&cache).unwrap();
    let out = dir.path().join("out").display().to_string();
    let err = fails(
        dir.path(),
        &[
            "run",
            "pipelines/quickstart.yaml",
            "--set",
            &format!("nodes.item_text.embed.cache={}", cache.display()),
            "--set",
            &format!("nodes.item_text.embed.model_dir={}", model.display()),
            "--out",
            &out,
            "--quiet",
        ],
    );
    assert!(
        err.contains(&format!(
            "the embedding cache <tmp>/cache.parquet holds 3-d vectors of `{key}`, but \
                 the model found computes 384-d vectors: delete the cache or point `cache:` \
                 elsewhere"
        )),
        "{err}"
    );
    assert_eq!(
        fs::read(&cache).unwrap(),
        before,
        "the user's cache is untouched"
    );
    assert!(!dir.path().join("out/summary.json").exists());
}

#[test]
fn a_missing_event_file_names_the_path_it_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        &over(
            "missing.parquet",
            "{pool: {split: {random: {test: 0.2}}}}",
            "{strategy: random, budget: 10}",
        ),
    );
    let err = fails(
        dir.path(),
        &[
            "run",
            &file,
            "--out",
            &dir.path().join("out").display().to_string(),
        ],
    );
    assert!(err.contains("p.yaml:3:"), "{err}");
    assert!(
        err.contains("event file `missing.parquet` not found (looked for <tmp>/missing.parquet)"),
        "{err}"
    );
    assert!(!dir.path().join("out/summary.json").exists());
}

#[test]
fn a_missing_column_is_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        &over(
            &ratings(),
            "{pool: {split: {random: {test: 0.2}}}}",
            "{strategy: random, budget: 10}",
        ),
    );
    let out = dir.path().join("out").display().to_string();
    let err = fails(
        dir.path(),
        &[
            "run",
            &file,
            "--out",
            &out,
            "--set",
            "data.columns.label=ratin",
        ],
    );
    assert!(err.contains("ratin"), "{err}");
    assert!(err.contains("`rating`"), "{err}");
    assert!(
        !dir.path().join("out/summary.json").exists(),
        "no complete-looking results after a failure"
    );
}

#[test]
fn non_finite_ratings_are_rejected_with_their_row() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int64, false),
        Field::new("rating", DataType::Float32, false),
        Field::new("timestamp", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(Int64Array::from(vec![10, 10, 11])),
            Arc::new(Float32Array::from(vec![4.0, f32::NAN, 3.0])),
            Arc::new(Int64Array::from(vec![100, 200, 300])),
        ],
    )
    .unwrap();
    write_parquet_atomic(&events, &batch).unwrap();
    let file = pipeline(
        dir.path(),
        &over(
            &events.display().to_string(),
            "{pool: {split: {random: {test: 0.2}}}}",
            "{strategy: random, budget: 1}",
        ),
    );
    let err = fails(
        dir.path(),
        &[
            "run",
            &file,
            "--out",
            &dir.path().join("out").display().to_string(),
        ],
    );
    assert!(err.contains("NaN"), "{err}");
    assert!(err.contains("row 1"), "{err}");
}

#[test]
fn an_empty_pool_and_an_unpayable_budget_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let file = pipeline(
        dir.path(),
        &over(
            &ratings(),
            "{pool: {split: {random: {test: 0.2}}, labelled: {fraction: 1.0}, rounds: 2}}",
            "{strategy: random, budget: 10}",
        ),
    );
    let err = fails(dir.path(), &["run", &file, "--out", &out]);
    assert!(err.contains("the pool is empty: all"), "{err}");
    assert!(err.contains("field: protocol.pool.labelled"), "{err}");

    let file = pipeline(
        dir.path(),
        &over(
            &ratings(),
            "{pool: {split: {random: {test: 0.2}}, rounds: 2}}",
            "{strategy: random, budget: 1000000}",
        ),
    );
    let err = fails(dir.path(), &["run", &file, "--out", &out, "--force"]);
    assert!(
        err.contains("budget 1000000 x 2 rounds = 2000000 samples, but the pool has only"),
        "{err}"
    );
    assert!(err.contains("field: nodes.pick.select.budget"), "{err}");
    assert!(!dir.path().join("out/summary.json").exists());
}

#[test]
fn malformed_set_arguments_and_bad_yaml_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(
        dir.path(),
        &["validate", "pipelines/quickstart.yaml", "--set", "seed"],
    );
    assert!(err.contains("write `--set key.path=value`"), "{err}");
    let err = fails(
        dir.path(),
        &[
            "validate",
            "pipelines/quickstart.yaml",
            "--set",
            "select.budget=lots",
        ],
    );
    assert!(
        err.contains(
            "--set select.budget=lots: `nodes.pick.select.budget`: invalid type: string \"lots\""
        ),
        "{err}"
    );
    let file = pipeline(dir.path(), "version: 1\nnodes: [unclosed\n");
    let err = fails(dir.path(), &["validate", &file]);
    assert!(err.contains("<tmp>/p.yaml:3:1: not valid YAML"), "{err}");
    let err = fails(dir.path(), &["validate", "pipelines/does-not-exist.yaml"]);
    assert!(err.contains("cannot read the pipeline file"), "{err}");
}

/// Without `--features cuda`, asking for a GPU names the feature and the build command,
/// exits 2 and writes no results, for a pipeline run and for `bench embed`.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_cpu_build_is_refused_with_the_build_command() {
    let refusal = "`device: cuda` needs a recsift built with `--features cuda` (cargo build \
                   --release --features cuda); this build has CPU support only";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let err = fails(
        dir.path(),
        &[
            "run",
            "pipelines/quickstart.yaml",
            "--set",
            "device=cuda",
            "--out",
            &out,
            "--quiet",
        ],
    );
    assert!(err.contains(refusal), "{err}");
    assert!(!dir.path().join("out/summary.json").exists());

    let texts = dir.path().join("texts.txt");
    fs::write(&texts, "Toy Story (1995)\n").unwrap();
    let texts = texts.display().to_string();
    // Refused before the model is looked at: no weights needed.
    let model = dir.path().join("no-model").display().to_string();
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "embed", "--texts", &texts, "--model-dir", &model];
        args.extend_from_slice(extra);
        fails(dir.path(), &args)
    };
    let err = bench(&["--device", "cuda:1"]);
    assert!(err.contains(refusal), "{err}");
    let err = bench(&["--device", "gpu"]);
    assert!(
        err.contains("invalid value 'gpu' for '--device <DEVICE>': unknown device `gpu`: use `cpu`, `cuda` or `cuda:N`"),
        "{err}"
    );
    let err = bench(&["--compare-cpu"]);
    assert!(
        err.contains("--compare-cpu compares another device's vectors with the CPU's: add --device cuda (or cuda:N)"),
        "{err}"
    );
}

#[test]
fn a_replay_pool_horizon_of_zero_windows_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        &over(
            &ratings(),
            "{replay: {window_events: 1000, pool_windows: 0}}",
            "{strategy: random, budget: 10}",
        ),
    );
    let err = fails(dir.path(), &["validate", &file]);
    assert!(err.contains("<tmp>/p.yaml:4"), "{err}");
    assert!(err.contains("`pool_windows` must be at least 1"), "{err}");
    assert!(err.contains("leave it out"), "{err}");
}

#[test]
fn a_selection_protocol_without_a_select_node_is_a_validate_error() {
    let dir = tempfile::tempdir().unwrap();
    let with_select = over(
        &ratings(),
        "{selection: {split: {random: {test: 0.2}}, rounds: 0}}",
        "{strategy: max_loss, budget: 10}",
    );
    let without: String = with_select
        .lines()
        .filter(|line| !line.trim_start().starts_with("pick:"))
        .map(|line| format!("{line}\n"))
        .collect();
    let file = pipeline(dir.path(), &without);
    let err = fails(dir.path(), &["validate", &file]);
    assert!(
        err.contains("the selection protocol needs a select node"),
        "{err}"
    );
    assert!(err.contains("p.yaml:"), "the error has a location: {err}");
}

#[test]
fn a_score_node_is_needed_only_by_a_select_node() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = over(
        &ratings(),
        "{pool: {split: {random: {test: 0.2}}, rounds: 3}}",
        "{strategy: uncertainty, budget: 10}",
    );
    let without = |prefixes: &[&str], rounds: &str| -> String {
        quickstart
            .lines()
            .filter(|line| !prefixes.iter().any(|p| line.trim_start().starts_with(p)))
            .map(|line| format!("{line}\n").replace("rounds: 3", rounds))
            .collect()
    };
    // Training and evaluation alone: no score node, nothing to fix.
    let file = pipeline(dir.path(), &without(&["scores:", "pick:"], "rounds: 0"));
    let output = recsift(&["validate", &file]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // A select node without the score node it reads.
    let file = pipeline(dir.path(), &without(&["scores:"], "rounds: 3"));
    let err = fails(dir.path(), &["validate", &file]);
    assert!(err.contains("no `score` node"), "{err}");
    assert!(
        err.contains("`pick` ranks the pool by a score node's scores; add one"),
        "{err}"
    );
    // Rounds with neither: the fix adds both.
    let file = pipeline(dir.path(), &without(&["scores:", "pick:"], "rounds: 3"));
    let err = fails(dir.path(), &["validate", &file]);
    assert!(
        err.contains("the protocol runs 3 rounds but no node selects samples"),
        "{err}"
    );
    assert!(
        err.contains("add a score node and a select node reading it"),
        "{err}"
    );
}

#[test]
fn graphs_of_several_models_are_checked_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let events = ratings();
    let models = |fuse: &str, mf: &str, extra: &str| {
        format!(
            "version: 1\nseed: 1\ndata: {{events: {events}}}\nprotocol: {{pool: {{split: {{random: {{test: 0.2}}}}, rounds: 0}}}}\nnodes:\n  a: {{train: {{mf: {{dim: 8, epochs: 2}}}}, inputs: [labelled]}}\n  b: {{train: {{mf: {{{mf}}}}}, inputs: [labelled]}}\n  both: {{fuse: {fuse}, inputs: [a, b]}}\n  scores: {{score: {{}}, inputs: [pool, both]}}\n{extra}"
        )
    };
    // Another schedule, and weights learned without validation events.
    let file = pipeline(
        dir.path(),
        &models("{learn: validation}", "dim: 4, epochs: 3", ""),
    );
    let err = fails(dir.path(), &["validate", &file]);
    assert!(
        err.contains("`b` trains with `epochs: 3`, `a` with `epochs: 2`"),
        "{err}"
    );
    assert!(err.contains("share one schedule"), "{err}");
    assert!(err.contains("the split has none"), "{err}");
    assert!(err.contains("p.yaml:"), "{err}");
    // A replay has no validation events: its fusions learn prequentially.
    let replay = models("{learn: validation}", "dim: 8, epochs: 2", "").replace(
        "{pool: {split: {random: {test: 0.2}}, rounds: 0}}",
        "{replay: {window: 7d}}",
    );
    let err = fails(dir.path(), &["validate", &pipeline(dir.path(), &replay)]);
    assert!(err.contains("but a replay has none"), "{err}");
    assert!(err.contains("write `learn: prequential`"), "{err}");
    // Weights that do not match the inputs; a fusion of a fusion.
    let file = pipeline(
        dir.path(),
        &models(
            "{weights: [1, 2, 3]}",
            "dim: 4, epochs: 2",
            "  again: {fuse: {}, inputs: [both, a]}\n",
        ),
    );
    let err = fails(dir.path(), &["validate", &file]);
    assert!(err.contains("3 weights for 2 inputs"), "{err}");
    assert!(err.contains("`both` is not one"), "{err}");
    // Weights given twice, an unknown way of learning them, weights that are all 0, parts
    // that train with different losses, early stopping over several models.
    for (fuse, mf, expected) in [
        (
            "{weights: [1, 1], learn: validation}",
            "dim: 4, epochs: 2",
            "`weights` and `learn` both set the fusion's weights",
        ),
        (
            "{learn: test}",
            "dim: 4, epochs: 2",
            "`nodes.both.fuse.learn`: unknown value `test`",
        ),
        (
            "{learn: prequential}",
            "dim: 4, epochs: 2",
            "`learn: prequential` fits the weights on each replay window's labels before the \
             parts train on them, but this protocol is not a replay",
        ),
        (
            "{weights: [0, 0]}",
            "dim: 4, epochs: 2",
            "fusion weights must be finite, non-negative and not all 0",
        ),
        (
            "{}",
            "dim: 4, epochs: 2, loss: bpr",
            "its parts train with different losses: `a` squared, `b` bpr",
        ),
        (
            "{}",
            "dim: 4, epochs: 2, early_stopping: {metric: rmse}",
            "early stopping chooses one model's epochs",
        ),
    ] {
        let file = pipeline(dir.path(), &models(fuse, mf, ""));
        let err = fails(dir.path(), &["validate", &file]);
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(err.contains("p.yaml:"), "{err}");
    }
    // A fused model is a model: evaluate and score read it; a replay evaluates only the
    // scored model.
    let file = pipeline(
        dir.path(),
        &models(
            "{weights: [1, 1]}",
            "dim: 4, epochs: 2",
            "  report: {evaluate: {}, inputs: [test, both]}\n",
        ),
    );
    let output = recsift(&["validate", &file]);
    assert!(output.status.success(), "{}", stderr(&output));
    let replay = std::fs::read_to_string(&file)
        .unwrap()
        .replace(
            "{pool: {split: {random: {test: 0.2}}, rounds: 0}}",
            "{replay: {window_events: 1000}}",
        )
        .replace("inputs: [test, both]", "inputs: [test, a]");
    let file = pipeline(dir.path(), &replay);
    let err = fails(dir.path(), &["validate", &file]);
    assert!(
        err.contains("`report` evaluates `a`, but a replay tests the scored model `both`"),
        "{err}"
    );
    // One evaluate node in a replay.
    let twice = format!("{replay}  again: {{evaluate: {{}}, inputs: [test, both]}}\n");
    let file = pipeline(dir.path(), &twice);
    let err = fails(dir.path(), &["validate", &file]);
    assert!(
        err.contains("a second `evaluate` node (`again`) in a replay"),
        "{err}"
    );
}

#[test]
fn encoder_tuning_is_checked_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let events = ratings();
    let items = root()
        .join("data/ml-latest-small/items.parquet")
        .display()
        .to_string();
    let with = |protocol: &str, model: &str| {
        pipeline(
            dir.path(),
            &format!(
                "version: 1
data: {{events: {events}, items: {{path: {items}, text: \"{{title}}\"}}}}
protocol: {protocol}
nodes:
  item_text: {{embed: {{}}, input: items}}
  model: {{train: {model}, inputs: [labelled, item_text]}}
  scores: {{score: {{}}, inputs: [pool, model]}}
  pick: {{select: {{strategy: random, budget: 10}}, input: scores}}
  report: {{evaluate: {{}}, inputs: [test, model]}}
"
            ),
        )
    };
    // `recsift validate` of the pipeline with `protocol` and the train node `model`.
    let validate =
        |protocol: &str, model: &str| fails(dir.path(), &["validate", &with(protocol, model)]);
    let pool = "{pool: {split: {random: {test: 0.2}}, rounds: 2}}";
    let other_family = validate(pool, "{mf: {tune: {layers: 1}}}");
    let bad_values = validate(
        pool,
        "{text_mf: {tune: {layers: 0, lr: -1, items_per_step: 0}}}",
    );
    let unknown_key = validate(pool, "{text_mf: {tune: {layer: 2}}}");
    let bad_lora = validate(pool, "{two_tower: {tune: {lora: {rank: 0, alpha: -1}}}}");
    let unknown_lora_key = validate(pool, "{text_mf: {tune: {lora: {rnk: 4}}}}");
    let replay = validate("{replay: {window_events: 1000}}", "{text_mf: {tune: {}}}");
    insta::assert_snapshot!(
        "validate-tune-errors",
        [
            other_family,
            bad_values,
            unknown_key,
            bad_lora,
            unknown_lora_key,
            replay
        ]
        .join("\n")
    );
}
