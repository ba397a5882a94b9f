//! The pool protocol: incremental scores equal a from-scratch computation after every
//! round, and results depend only on the pipeline and the seed.

use recsift::driver::experiment::{ExperimentOutput, PoolExperiment};
use recsift::driver::load_data;
use recsift::plan::Plan;

use crate::common::{import_ml100k, plan_of};

/// Runs every round, asserting after each that the engine-maintained score of every pool
/// sample equals the from-scratch score (same samples, values within 1e-6).
fn run_checked(plan: &Plan) -> ExperimentOutput {
    let data = load_data(plan).unwrap();
    let mut experiment = PoolExperiment::start(plan, data).unwrap();
    let mut rounds = 0;
    loop {
        let maintained = experiment.maintained_scores().clone();
        let scratch = experiment.scores_from_scratch().unwrap();
        assert_eq!(
            maintained.keys().collect::<Vec<_>>(),
            scratch.keys().collect::<Vec<_>>(),
            "round {rounds}: the maintained pool differs from the pool"
        );
        for (sample, expected) in &scratch {
            let got = maintained[sample];
            assert!(
                (got.prediction - expected.prediction).abs() <= 1e-6
                    && (got.variance - expected.variance).abs() <= 1e-6,
                "round {rounds}, sample {sample}: maintained {got:?} != from scratch {expected:?}"
            );
            match (got.loss, expected.loss) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!(
                    (a - b).abs() <= 1e-6,
                    "round {rounds}, sample {sample}: loss {a} != {b}"
                ),
                other => {
                    panic!("round {rounds}, sample {sample}: loss presence differs: {other:?}")
                }
            }
        }
        if !experiment.has_next() {
            break;
        }
        experiment.next_round().unwrap();
        rounds += 1;
    }
    experiment.finish().unwrap()
}

#[test]
fn maintained_scores_equal_from_scratch_after_every_round() {
    let plan = plan_of("pipelines/quickstart.yaml", &["protocol.pool.rounds=4"]);
    let out = run_checked(&plan);
    assert_eq!(out.rounds.len(), 5);
    assert_eq!(out.selections.len(), 4 * 500);
    // Fine-tuning on new labels touches only their rows: most rounds re-score a strict
    // subset of the pool.
    let pool = out.rounds[0].rescored;
    assert!(
        out.rounds[1..].iter().all(|r| r.rescored < pool),
        "{:?}",
        out.rounds
    );
}

#[test]
fn incremental_scores_hold_for_every_strategy_and_refit_policy() {
    for (strategy, refit, per_user) in [
        ("random", "all_labels", "false"),
        ("max_loss", "new_labels", "false"),
        ("log_pop_entropy", "new_labels", "true"),
    ] {
        let plan = plan_of(
            "pipelines/quickstart.yaml",
            &[
                "protocol.pool.rounds=3",
                &format!("select.strategy={strategy}"),
                &format!("select.per_user={per_user}"),
                "select.budget=2",
                &format!("nodes.model.train.mf.refit={refit}"),
            ],
        );
        let out = run_checked(&plan);
        assert!(!out.selections.is_empty(), "{strategy}");
    }
}

#[test]
fn results_are_identical_on_one_and_three_workers() {
    let one = run_checked(&plan_of(
        "pipelines/quickstart.yaml",
        &["protocol.pool.rounds=3", "workers=1"],
    ));
    let three = run_checked(&plan_of(
        "pipelines/quickstart.yaml",
        &["protocol.pool.rounds=3", "workers=3"],
    ));
    assert_eq!(one.selections, three.selections);
    let metrics = |o: &ExperimentOutput| {
        o.rounds
            .iter()
            .map(|r| (r.labelled, r.rescored, r.metrics.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(metrics(&one), metrics(&three));
}

#[test]
fn the_seed_decides_the_results() {
    let run = |seed: &str| {
        run_checked(&plan_of(
            "pipelines/quickstart.yaml",
            &["protocol.pool.rounds=2", &format!("seed={seed}")],
        ))
    };
    let (a, b, c) = (run("7"), run("7"), run("8"));
    assert_eq!(a.selections, b.selections);
    assert_eq!(
        a.rounds
            .iter()
            .map(|r| r.metrics.clone())
            .collect::<Vec<_>>(),
        b.rounds
            .iter()
            .map(|r| r.metrics.clone())
            .collect::<Vec<_>>()
    );
    assert_ne!(a.selections, c.selections);
}

#[test]
fn uncertainty_sampling_picks_the_highest_variance_samples() {
    let plan = plan_of("pipelines/quickstart.yaml", &["protocol.pool.rounds=1"]);
    let data = load_data(&plan).unwrap();
    let mut experiment = PoolExperiment::start(&plan, data).unwrap();
    let before = experiment.maintained_scores().clone();
    experiment.next_round().unwrap();
    let out = experiment.finish().unwrap();
    let mut variances: Vec<f32> = before.values().map(|s| s.variance).collect();
    variances.sort_by(|a, b| b.total_cmp(a));
    let threshold = variances[499];
    for selection in &out.selections {
        let variance = before[&selection.sample].variance;
        assert!(
            variance >= threshold,
            "selected variance {variance} below the 500th largest {threshold}"
        );
        assert_eq!(selection.score, f64::from(variance));
    }
}

#[test]
fn biased_mf_reaches_the_quality_bar_on_ml100k_u1() {
    let dir = tempfile::tempdir().unwrap();
    let data = import_ml100k(dir.path());
    let train = data.join("u1.train.parquet");
    let test = data.join("u1.test.parquet");
    let plan = plan_of(
        "pipelines/ml100k-u1-mf.yaml",
        &[
            &format!("protocol.pool.split.files.train={}", train.display()),
            &format!("protocol.pool.split.files.test={}", test.display()),
        ],
    );
    let out = run_checked(&plan);
    let rmse = out.rounds[0]
        .metrics
        .iter()
        .find(|(name, _)| name == "rmse")
        .unwrap()
        .1;
    assert!(rmse <= 0.930, "u1.test RMSE {rmse} above the 0.930 bar");
    assert_eq!(out.rounds[0].labelled, 80_000);
}
