//! The pool protocol: incremental scores equal a from-scratch computation after every
//! round, and results depend only on the pipeline and the seed.

use recsift::driver::experiment::{ExperimentOutput, check_against_scratch};
use recsift::driver::session::engine_graph;
use recsift::driver::start_experiment;
use recsift::plan::Plan;
use recsift::scoring::Loss;
use recsift::strategy::{SampleSignals, Strategy};
use std::collections::BTreeSet;

use crate::common::{import_ml100k, plan_of, root, two_mf_replay};

/// Runs every round, asserting after each (and after round 0) that the engine-maintained
/// score of every pool sample equals the from-scratch score within 1e-6, where the engine
/// renders the scores (its strategy reads them or the item statistics).
fn run_checked(plan: &Plan) -> ExperimentOutput {
    let mut experiment = start_experiment(plan, true, false).unwrap();
    let scored = engine_graph(plan).is_some();
    loop {
        let round = experiment.history().len();
        if let (true, Err(difference)) = (scored, check_against_scratch(experiment.as_ref(), 1e-6))
        {
            panic!("after round {round}: {difference}");
        }
        if !experiment.has_next() {
            break;
        }
        experiment.next_round().unwrap();
    }
    experiment.finish().unwrap()
}

/// Runs every round without tracking the maintained scores.
fn run_unchecked(plan: &Plan) -> ExperimentOutput {
    let mut experiment = start_experiment(plan, false, false).unwrap();
    while experiment.has_next() {
        experiment.next_round().unwrap();
    }
    experiment.finish().unwrap()
}

/// Biased MF in the pool protocol (the cold-start baseline with a small seed set).
const MF_POOL: &str = "pipelines/cold-start-mf.yaml";

#[test]
fn maintained_scores_equal_from_scratch_after_every_round() {
    let plan = plan_of(
        MF_POOL,
        &[
            "protocol.pool.rounds=4",
            "protocol.pool.labelled.fraction=0.05",
            "select.budget=500",
            "nodes.model.train.mf.refit=new_labels",
        ],
    );
    let out = run_checked(&plan);
    assert_eq!(out.rounds.len(), 5);
    assert_eq!(out.selections.len(), 4 * 500);
    // Fine-tuning MF on new labels touches only their rows: every round re-scores a strict
    // subset of the pool.
    let pool = out.rounds[0].rescored;
    assert!(
        out.rounds[1..].iter().all(|r| r.rescored < pool),
        "{:?}",
        out.rounds
    );
}

#[test]
fn scores_no_select_node_reads_are_not_computed_and_change_no_metric() {
    // Without rounds the pool protocol runs no select node, so nothing reads the scores:
    // the engine renders nothing, and round 0 evaluates exactly as with a select node.
    let (with_rounds, without) = (
        plan_of(MF_POOL, &["protocol.pool.rounds=1"]),
        plan_of(MF_POOL, &["protocol.pool.rounds=0"]),
    );
    // `recsift plan` says so.
    for (plan, engine) in [
        (
            &with_rounds,
            "maintains `scores`: each pool sample's prediction, uncertainty and loss under `model`\n",
        ),
        (&without, "maintains nothing: the run selects nothing\n"),
    ] {
        let shown = plan.to_string();
        assert!(shown.contains(&format!("\n  engine {engine}")), "{shown}");
    }
    let scored = run_unchecked(&with_rounds);
    let unread = run_unchecked(&without);
    assert_eq!(unread.rounds.len(), 1);
    assert!(scored.rounds[0].rescored > 10_000, "{:?}", scored.rounds[0]);
    assert_eq!(unread.rounds[0].rescored, 0);
    assert_eq!(unread.rounds[0].metrics, scored.rounds[0].metrics);
    // The same pipeline without its score and select nodes: the same model, evaluated the
    // same.
    let yaml = std::fs::read_to_string(root().join(MF_POOL)).unwrap();
    let (head, rest) = yaml.split_at(yaml.find("  scores:").unwrap());
    let nodeless = format!("{head}{}", &rest[rest.find("  report:").unwrap()..])
        .replace("../data/", &format!("{}/data/", root().display()))
        .replace("rounds: 5", "rounds: 0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-score.yaml");
    std::fs::write(&file, nodeless).unwrap();
    let plan = plan_of(file.to_str().unwrap(), &[]);
    assert_eq!((plan.score.as_ref(), plan.scored_model()), (None, "model"));
    assert_eq!(
        run_unchecked(&plan).rounds[0].metrics,
        scored.rounds[0].metrics
    );
    let tracked =
        start_experiment(&plan_of(MF_POOL, &["protocol.pool.rounds=0"]), true, false).unwrap();
    assert_eq!(
        check_against_scratch(tracked.as_ref(), 1e-6),
        Err(
            "the session keeps no scores: started without score tracking, or no select node \
             reads them"
                .to_string()
        )
    );
}

#[test]
fn a_strategy_that_reads_no_scores_picks_the_top_of_its_key_without_the_engine() {
    let budget = 500;
    let plan = plan_of(
        MF_POOL,
        &[
            "protocol.pool.rounds=3",
            "select.strategy=random",
            &format!("select.budget={budget}"),
        ],
    );
    assert_eq!(engine_graph(&plan), None);
    let shown = plan.to_string();
    assert!(
        shown.contains(
            "\n  engine maintains nothing: `pick` ranks by a seeded hash of each sample (`random`)"
        ),
        "{shown}"
    );
    let mut experiment = start_experiment(&plan, false, false).unwrap();
    while experiment.has_next() {
        // From scratch: the pool's `budget` highest keys.
        let mut keyed: Vec<(f64, u32)> = experiment
            .pool()
            .iter()
            .map(|s| {
                let key = Strategy::Random.key(&SampleSignals::unscored(s.sample), plan.seed);
                (key, s.sample)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        let expected: BTreeSet<u32> = keyed[..budget].iter().map(|k| k.1).collect();
        let round = experiment.next_round().unwrap();
        let (number, rescored) = (round.round, round.rescored);
        assert_eq!(rescored, 0, "the engine scored nothing");
        let picked: BTreeSet<u32> = experiment
            .progress()
            .unwrap()
            .selections
            .iter()
            .filter(|s| s.round == number)
            .map(|s| s.sample)
            .collect();
        assert_eq!(picked, expected, "round {number}");
    }
}

#[test]
fn text_models_keep_scores_exact_with_text_and_factor_diversity() {
    // text_mf: every fit moves the shared projection, so every item row changes and the
    // engine honestly re-scores the whole pool; the scores must still be exact.
    for (strategy, space) in [("coreset", "text"), ("uncertainty_diversity", "factors")] {
        let plan = plan_of(
            "pipelines/quickstart.yaml",
            &[
                "protocol.pool.rounds=2",
                &format!("select.strategy={strategy}"),
                &format!("select.space={space}"),
                "select.budget=50",
            ],
        );
        let out = run_checked(&plan);
        assert_eq!(out.selections.len(), 2 * 50, "{strategy}");
    }
    // two_tower with Monte Carlo dropout passes as the uncertainty.
    let plan = plan_of(
        "pipelines/quickstart.yaml",
        &[
            "protocol.pool.rounds=2",
            "nodes.model.train={two_tower: {dim: 16, hidden: 32, mc_dropout: 4, epochs: 3, epochs_per_round: 1}}",
            "nodes.scores.score.uncertainty=mc_dropout",
            "select.budget=50",
        ],
    );
    let out = run_checked(&plan);
    assert_eq!(out.selections.len(), 2 * 50);
}

#[test]
fn incremental_scores_hold_for_every_strategy_and_refit_policy() {
    for (strategy, refit, per_user) in [
        ("random", "all_labels", "false"),
        ("max_loss", "new_labels", "false"),
        ("log_pop_entropy", "new_labels", "true"),
        ("stratified", "new_labels", "false"),
        ("coreset", "new_labels", "false"),
    ] {
        let plan = plan_of(
            MF_POOL,
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
fn bpr_scores_stay_exact_unclipped_and_fine_tune_incrementally() {
    // BPR fine-tuning moves the rows of each round's negatives too: the engine must learn of
    // them to stay exact. `max_loss` ranks by a positive's logistic loss, -ln σ(score).
    for (strategy, refit) in [("max_loss", "new_labels"), ("uncertainty", "all_labels")] {
        let plan = plan_of(
            MF_POOL,
            &[
                "protocol.pool.rounds=3",
                "protocol.pool.labelled.fraction=0.05",
                &format!("select.strategy={strategy}"),
                "select.budget=300",
                "nodes.model.train.mf.loss=bpr",
                // BPR predicts no rating: only ranking metrics describe it.
                "nodes.report.evaluate.metrics=[ndcg@10, recall@10]",
                &format!("nodes.model.train.mf.refit={refit}"),
            ],
        );
        assert_eq!(plan.models.trained[0].params.loss, Loss::Bpr);
        let mut experiment = start_experiment(&plan, true, false).unwrap();
        let head = experiment.session().head().clone();
        assert_eq!((head.loss, head.clip), (Loss::Bpr, None), "never clipped");
        while experiment.has_next() {
            experiment.next_round().unwrap();
            if let Err(difference) = check_against_scratch(experiment.as_ref(), 1e-6) {
                panic!("{strategy}: {difference}");
            }
        }
        let scores = experiment.session().maintained_scores().unwrap();
        for score in scores.values() {
            if let Some(loss) = score.loss {
                let expected = (1.0 + f64::from(-score.prediction).exp()).ln();
                let loss = f64::from(loss);
                assert!(
                    (loss - expected).abs() < 1e-4 * (1.0 + expected),
                    "{score:?}"
                );
            }
        }
        let out = experiment.finish().unwrap();
        assert_eq!(out.selections.len(), 3 * 300, "{strategy}");
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
    let mut experiment = start_experiment(&plan, true, false).unwrap();
    let before = experiment.session().maintained_scores().unwrap();
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
    let Some(data) = import_ml100k(dir.path(), "biased_mf_reaches_the_quality_bar_on_ml100k_u1")
    else {
        return;
    };
    let train = data.join("u1.train.parquet");
    let test = data.join("u1.test.parquet");
    let plan = plan_of(
        "pipelines/ml100k-u1-mf.yaml",
        &[
            &format!("protocol.pool.split.files.train={}", train.display()),
            &format!("protocol.pool.split.files.test={}", test.display()),
        ],
    );
    // Every training rating is labelled and nothing selects: no pool to score or check.
    let out = run_unchecked(&plan);
    let rmse = out.rounds[0]
        .metrics
        .iter()
        .find(|(name, _)| name == "rmse")
        .unwrap()
        .1;
    assert!(rmse <= 0.930, "u1.test RMSE {rmse} above the 0.930 bar");
    assert_eq!(out.rounds[0].labelled, 80_000);
}

#[test]
fn a_replay_keeps_scores_exact_as_users_and_items_appear() {
    // Two-month windows over the first years of the log: new users and items arrive in
    // most windows, the pool grows, and the strategy spends its budget on it.
    let plan = plan_of(
        "pipelines/replay-ml-latest-small.yaml",
        &[
            "protocol.replay.window=60d",
            "protocol.replay.max_windows=12",
            "select.budget=20",
        ],
    );
    let out = run_checked(&plan);
    assert_eq!(out.rounds.len(), 12);
    assert!(
        out.rounds[0]
            .metrics
            .iter()
            .find(|(n, _)| n == "rmse")
            .unwrap()
            .1
            .is_nan()
    );
    let later = &out.rounds[11];
    let rmse = later
        .metrics
        .iter()
        .find(|(n, _)| n == "cumulative_rmse")
        .unwrap()
        .1;
    assert!(rmse.is_finite() && rmse < 2.0, "{later:?}");
    // Windows after the warm-up each select the budget (the pool is never short here).
    assert_eq!(out.selections.len(), 11 * 20);
    assert!(out.selections.windows(2).all(|w| w[0].round <= w[1].round));
}

#[test]
fn a_replay_with_a_pool_horizon_holds_only_the_last_windows_unlabelled_events() {
    let settings = [
        "protocol.replay.window=60d",
        "protocol.replay.max_windows=10",
        "select.budget=20",
    ];
    let mut bounded = settings.to_vec();
    bounded.push("protocol.replay.pool_windows=2");
    let plan = plan_of("pipelines/replay-ml-latest-small.yaml", &bounded);
    let mut horizon = start_experiment(&plan, true, false).unwrap();
    let unbounded = plan_of("pipelines/replay-ml-latest-small.yaml", &settings);
    let mut everything = start_experiment(&unbounded, true, false).unwrap();
    let mut smaller = 0;
    let mut oldest = Vec::new();
    while horizon.has_next() {
        horizon.next_round().unwrap();
        everything.next_round().unwrap();
        // The engine's states equal a from-scratch scoring of exactly the horizon's pool.
        check_against_scratch(horizon.as_ref(), 1e-6).unwrap();
        let (pool, all) = (horizon.pool(), everything.pool());
        assert!(pool.len() <= all.len());
        smaller += usize::from(pool.len() < all.len());
        oldest.push(pool.iter().map(|s| s.sample).min().unwrap_or(0));
    }
    assert!(smaller >= 5, "the horizon never dropped anything");
    // Old windows leave: the oldest candidate moves forward.
    assert!(oldest.windows(2).all(|w| w[0] <= w[1]), "{oldest:?}");
    assert!(oldest.last() > oldest.get(3), "{oldest:?}");
    let out = horizon.finish().unwrap();
    assert_eq!(out.rounds.len(), 10);
}

#[test]
fn selection_keeps_every_loss_exact_and_trains_on_the_hardest_samples() {
    let plan = plan_of(
        "pipelines/selection-max-loss.yaml",
        &["protocol.selection.rounds=3", "select.budget=500"],
    );
    let mut experiment = start_experiment(&plan, true, false).unwrap();
    let before = experiment.session().maintained_scores().unwrap();
    let mut hardest: Vec<f64> = before
        .values()
        .map(|s| f64::from(s.loss.expect("labels are known")))
        .collect();
    hardest.sort_by(|a, b| b.total_cmp(a));
    hardest.truncate(500);
    for _ in 0..3 {
        let record = experiment.next_round().unwrap().clone();
        assert_eq!(record.selected, 500);
        check_against_scratch(experiment.as_ref(), 1e-6).unwrap();
        assert_eq!(
            experiment.pool().len(),
            before.len(),
            "samples stay in the pool"
        );
    }
    let out = experiment.finish().unwrap();
    let first: Vec<f64> = out
        .selections
        .iter()
        .filter(|s| s.round == 1)
        .map(|s| s.score)
        .collect();
    assert_eq!(
        first, hardest,
        "round 1 trains on the 500 largest losses, largest first"
    );
}

/// pipelines/fusion.yaml, small: 2 rounds of 300 labels, few passes.
const FUSION: &[&str] = &[
    "protocol.pool.rounds=2",
    "select.budget=300",
    "nodes.mf_model.train.mf.epochs=5",
    "nodes.mf_model.train.mf.epochs_per_round=1",
    "nodes.text_model.train.text_mf.epochs=5",
    "nodes.text_model.train.text_mf.epochs_per_round=1",
];

fn metric(record: &recsift::results::RoundRecord, name: &str) -> f64 {
    record
        .metrics
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no metric {name} in {:?}", record.metrics))
        .1
}

#[test]
fn a_fused_model_is_scored_exactly_and_never_worse_than_its_parts_on_validation() {
    // The scored model is the fusion: the engine maintains its scores from both models'
    // rows side by side, and its learned weights change the head after every fit.
    let out = run_checked(&plan_of("pipelines/fusion.yaml", FUSION));
    assert_eq!(out.selections.len(), 2 * 300);
    for record in &out.rounds {
        // The learned weights are reported each round, on the simplex.
        let weights = [
            metric(record, "blend/weight[mf_model]"),
            metric(record, "blend/weight[text_model]"),
        ];
        assert!(
            weights.iter().all(|w| (0.0..=1.0).contains(w))
                && (weights.iter().sum::<f64>() - 1.0).abs() < 1e-5,
            "{weights:?}"
        );
        // Each train node reports its own training loss; there is no unnamed one.
        let losses = [
            metric(record, "mf_model/train_loss"),
            metric(record, "text_model/train_loss"),
        ];
        assert!(
            losses.iter().all(|l| l.is_finite() && *l > 0.0) && losses[0] != losses[1],
            "round {}: {losses:?}",
            record.round
        );
        assert!(record.metrics.iter().all(|(name, _)| name != "train_loss"));
        let blend = metric(record, "blend_report/val_rmse");
        let mf = metric(record, "mf_report/val_rmse");
        let text = metric(record, "text_report/val_rmse");
        // The weights minimise the validation error over mixtures that include each part
        // alone (up to the f32 rounding of predictions and weights).
        assert!(
            blend <= mf.min(text) + 1e-5,
            "round {}: blend {blend}, mf {mf}, text_mf {text}",
            record.round
        );
    }
}

#[test]
fn a_fusion_that_weighs_one_part_fully_predicts_exactly_as_that_part() {
    let plan = plan_of(
        "pipelines/fusion.yaml",
        &[FUSION, &["nodes.blend.fuse={weights: [1, 0]}"]].concat(),
    );
    let out = run_checked(&plan);
    for record in &out.rounds {
        for name in ["rmse", "mae", "val_rmse"] {
            assert_eq!(
                metric(record, &format!("blend_report/{name}")),
                metric(record, &format!("mf_report/{name}")),
                "round {}: {name}",
                record.round
            );
        }
    }
}

#[test]
fn a_run_asked_for_a_round_past_its_last_says_so_instead_of_panicking() {
    use recsift::plan::ProtocolPlan;
    let cases = [
        (
            MF_POOL,
            vec!["protocol.pool.rounds=1", "select.budget=100"],
            2,
            "all 1 rounds have run\n    field: protocol.pool.rounds\n    help: raise `rounds` \
             to run more"
                .to_string(),
        ),
        (
            "pipelines/selection-max-loss.yaml",
            vec!["protocol.selection.rounds=1", "select.budget=100"],
            2,
            "all 1 rounds have run\n    field: protocol.selection.rounds\n    help: raise \
             `rounds` to run more"
                .to_string(),
        ),
        (
            "pipelines/replay-ml-latest-small.yaml",
            vec!["protocol.replay.max_windows=3"],
            3,
            format!(
                "all 3 windows of {} have run\n    field: protocol.replay.max_windows\n    \
                 help: raise `max_windows` (or leave it out) to replay more of the log",
                root()
                    .join("pipelines/../data/ml-latest-small/ratings.parquet")
                    .display()
            ),
        ),
    ];
    for (pipeline, sets, rounds, message) in cases {
        let plan = plan_of(pipeline, &sets);
        let mut experiment = start_experiment(&plan, false, false).unwrap();
        while experiment.has_next() {
            experiment.next_round().unwrap();
        }
        assert_eq!(experiment.history().len(), rounds, "{pipeline}");
        let Err(error) = experiment.next_round() else {
            panic!("{pipeline}: a round past the last one ran");
        };
        assert_eq!(error.to_string(), message, "{pipeline}");
    }
    // `rounds: 0` has no rounds to select in, so its select node is not part of the plan.
    let plan = plan_of(MF_POOL, &["protocol.pool.rounds=0"]);
    let ProtocolPlan::Pool(pool) = &plan.protocol else {
        panic!("a pool pipeline plans a pool");
    };
    assert!(pool.rounds.is_none() && plan.protocol.select().is_none());
    let mut experiment = start_experiment(&plan, false, false).unwrap();
    assert!(!experiment.has_next());
    assert!(experiment.next_round().is_err());
}

/// A selecting replay whose scored model is a prequentially learning fusion: the weights
/// change the head before every fit, and the engine's scores equal a from-scratch scoring
/// after every window.
#[test]
fn a_replay_scoring_a_prequential_fusion_keeps_exact_scores() {
    let dir = tempfile::tempdir().unwrap();
    let file = two_mf_replay(
        dir.path(),
        "free_labels: 0.2, max_windows: 40",
        "  scores: {score: {}, inputs: [pool, blend]}\n  pick: {select: {strategy: uncertainty, budget: 20}, input: scores}\n",
    );
    let out = run_checked(&plan_of(&file, &[]));
    assert_eq!(out.rounds.len(), 40);
    let weights: BTreeSet<String> = out
        .rounds
        .iter()
        .map(|r| format!("{:.4}", metric(r, "blend/weight[small]")))
        .collect();
    assert!(weights.len() > 1, "the weights never moved: {weights:?}");
}

/// A replay's fusion learning prequentially fits its weights before every fit, on every
/// window given so far as its parts predicted it before training on it: after each window
/// its weights equal the simplex minimum of those residuals computed from scratch, and a
/// set saved mid-way and loaded again continues exactly.
#[test]
fn a_prequential_fusion_learns_from_each_window_before_its_parts_train_on_it() {
    use recsift::data::{Interaction, LabelKind};
    use recsift::driver::embed::EncoderSources;
    use recsift::driver::experiment::build_model;
    use recsift::model::Recommender;
    use recsift::model::fusion::ResidualGram;
    use recsift::seeding::unit_hash;

    let dir = tempfile::tempdir().unwrap();
    let file = two_mf_replay(dir.path(), "free_labels: 1.0", "");
    let plan = plan_of(&file, &[]);
    let (users, items) = (60u32, 90u32);
    let build = || {
        let text = None;
        build_model(
            &plan,
            60,
            90,
            3.5,
            LabelKind::Rating,
            text,
            &EncoderSources::new(),
        )
        .unwrap()
    };
    // Four windows of ratings whose mean depends on the user and the item.
    let windows: Vec<Vec<Interaction>> = (0..4u32)
        .map(|w| {
            (0..300u32)
                .map(|e| {
                    let k = w * 300 + e;
                    let (user, item) = (
                        (unit_hash(1, k) * f64::from(users)) as u32,
                        (unit_hash(2, k) * f64::from(items)) as u32,
                    );
                    let taste = (user % 5) as f32 * 0.4 + (item % 7) as f32 * 0.25;
                    let noise = unit_hash(3, k) as f32;
                    let label = (1.0 + taste + noise).round().clamp(1.0, 5.0);
                    Interaction {
                        user,
                        item,
                        label,
                        time: i64::from(k),
                    }
                })
                .collect()
        })
        .collect();
    let clip = Some((1.0, 5.0));
    let mut set = build();
    let mut gram = ResidualGram::new(2);
    let mut resumed = None;
    let mut interior = false;
    for (w, window) in windows.iter().enumerate() {
        // From scratch: each part's prediction of the window before the fit.
        let predictions: Vec<Vec<f32>> = ["small", "large"]
            .iter()
            .map(|part| {
                let (head, user_rows, item_rows) = set.export(part, clip).unwrap();
                let width = head.layout.row_len();
                window
                    .iter()
                    .map(|e| {
                        let (u, i) = (e.user as usize * width, e.item as usize * width);
                        head.score(&user_rows[u..u + width], &item_rows[i..i + width], None)
                            .prediction
                    })
                    .collect()
            })
            .collect();
        let labels: Vec<f32> = window.iter().map(|e| e.label).collect();
        gram.add(&predictions, &labels);
        let keys: Vec<u32> = (0..window.len() as u32)
            .map(|k| k + 300 * w as u32)
            .collect();
        for model in std::iter::once(&mut set).chain(resumed.as_mut()) {
            model.learn_on(window, clip);
            model.fit(window, &keys, 3).unwrap();
        }
        let weights: Vec<f32> = set
            .learned_weights()
            .iter()
            .map(|(_, v)| *v as f32)
            .collect();
        assert_eq!(weights, gram.minimum().0, "window {w}");
        interior |= weights.iter().all(|&v| v > 0.01);
        if let Some(resumed) = &resumed {
            assert_eq!(
                resumed.learned_weights(),
                set.learned_weights(),
                "window {w}"
            );
            assert_eq!(
                resumed.export("blend", clip).unwrap(),
                set.export("blend", clip).unwrap()
            );
        }
        if w == 1 {
            let mut loaded = build();
            loaded.load_state(&set.save_state().unwrap()).unwrap();
            resumed = Some(loaded);
        }
    }
    assert!(
        interior,
        "no window weighed both parts: the test would not tell when they learn"
    );
}
