//! Item text vectors: the shipped cache is what the encoder computes (real MiniLM weights),
//! a replay embeds each text once as its item first appears and a second run embeds nothing
//! (a tiny random BERT), a pool run fine-tunes the encoder's top layer with the engine's
//! scores equal to a from-scratch scoring, and text models beat MF on items never trained on.

use candle_core::Device;
use recsift::data::IdMap;
use recsift::driver::experiment::check_against_scratch;
use recsift::driver::start_experiment;
use recsift::fixtures::write_tiny_bert;
use recsift::io::embedding_cache::EmbeddingCache;
use recsift::io::items::read_item_texts;
use recsift::model::encoder::{TextEncoder, folder_digest};
use recsift::plan::Plan;
use recsift::results::RoundRecord;

use crate::common::{minilm, plan_of};

/// Runs `plan` round by round (or window by window), checking after each that the
/// engine's scores equal a from-scratch scoring of the model; returns the rounds.
fn run_against_scratch(plan: &Plan) -> Vec<RoundRecord> {
    let mut experiment = start_experiment(plan, true, false).unwrap();
    loop {
        if let Err(difference) = check_against_scratch(experiment.as_ref(), 1e-6) {
            panic!("after round {}: {difference}", experiment.history().len());
        }
        if !experiment.has_next() {
            break;
        }
        experiment.next_round().unwrap();
    }
    experiment.finish().unwrap().rounds
}

#[test]
fn the_shipped_embedding_cache_equals_what_the_encoder_computes() {
    let Some(model_dir) = minilm("the_shipped_embedding_cache_equals_what_the_encoder_computes")
    else {
        return;
    };
    let plan = plan_of("pipelines/quickstart.yaml", &[]);
    let embed = plan.embed.expect("the quickstart embeds item text");
    let source = plan.data.items.expect("the quickstart names its item file");
    let texts: Vec<String> = read_item_texts(&source, &mut IdMap::new())
        .unwrap()
        .texts
        .into_iter()
        .flatten()
        .collect();
    assert!(texts.len() > 9_000, "{} item texts", texts.len());
    let cache = EmbeddingCache::open_recorded(&embed.cache, &embed.model)
        .unwrap()
        .expect("data/ml-latest-small ships its embedding cache");
    let encoder = TextEncoder::load(&model_dir, &Device::Cpu)
        .unwrap()
        .with_threads(2);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let computed = encoder.encode(&refs).unwrap();
    let dim = encoder.dim();
    let mut worst = 0.0f32;
    for (text, vector) in refs.iter().zip(computed.chunks_exact(dim)) {
        let cached = cache
            .lookup(text)
            .unwrap_or_else(|| panic!("`{text}` is not in the shipped cache"));
        for (a, b) in cached.iter().zip(vector) {
            worst = worst.max((a - b).abs());
        }
    }
    // The same encoder; batches may be cut differently, so allow rounding differences.
    assert!(worst <= 1e-5, "max abs difference {worst}");
}

#[test]
fn a_replay_embeds_each_text_once_as_its_item_appears() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    // The plumbing is the point, not the weights: a tiny random BERT (32-d) runs everywhere.
    let model_dir = dir.path().join("tiny-bert");
    std::fs::create_dir(&model_dir).unwrap();
    write_tiny_bert(&model_dir, "gelu", None);
    let set = [
        "protocol.replay.max_windows=12".to_string(),
        "data.items={path: ../data/ml-latest-small/items.parquet}".to_string(),
        format!(
            "nodes.item_text={{embed: {{cache: {}, model_dir: {}}}, input: items}}",
            cache.display(),
            model_dir.display()
        ),
        "nodes.model.train={text_mf: {dim: 16, members: 2, epochs: 3, epochs_per_round: 1}}"
            .to_string(),
        "nodes.model.inputs=[labelled, item_text]".to_string(),
    ];
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    let plan = plan_of("pipelines/replay-ml-latest-small.yaml", &set);
    let run = || run_against_scratch(&plan);
    let embedded = |rounds: &[RoundRecord]| -> Vec<f64> {
        rounds
            .iter()
            .map(|r| {
                r.metrics
                    .iter()
                    .find(|(name, _)| name == "texts_embedded")
                    .expect("a replay with text reports texts_embedded")
                    .1
            })
            .collect()
    };
    let first = run();
    let per_window = embedded(&first);
    // The cache started empty and each text is embedded once: the windows' counts add up
    // to the distinct texts the cache now holds.
    // Vectors of a `model_dir` are keyed by the model id and a digest of that folder.
    let model_id = &plan.embed.as_ref().unwrap().model;
    let key = format!("{model_id}@{}", folder_digest(&model_dir).unwrap());
    assert!(
        EmbeddingCache::open_recorded(&cache, model_id)
            .unwrap()
            .is_none()
    );
    let distinct_items = EmbeddingCache::open_recorded(&cache, &key)
        .unwrap()
        .expect("the run wrote its cache")
        .len();
    assert!(per_window[0] > 0.0);
    assert_eq!(per_window.iter().sum::<f64>() as usize, distinct_items);
    // New films keep arriving after the first week, never more than the week's events.
    assert!(per_window[1..].iter().any(|&n| n > 0.0), "{per_window:?}");
    for (record, &n) in first.iter().zip(&per_window) {
        let events = record
            .metrics
            .iter()
            .find(|(m, _)| m == "events")
            .unwrap()
            .1;
        assert!(
            n <= events,
            "window {}: {n} texts for {events} events",
            record.round
        );
    }
    // Everything is cached now: the same replay embeds nothing and gives the same results.
    let second = run();
    assert!(embedded(&second).iter().all(|&n| n == 0.0));
    let metrics = |rounds: &[RoundRecord]| -> Vec<Vec<(String, f64)>> {
        rounds
            .iter()
            .map(|r| {
                r.metrics
                    .iter()
                    .filter(|(name, _)| name != "texts_embedded")
                    .cloned()
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        format!("{:?}", metrics(&first)),
        format!("{:?}", metrics(&second))
    );

    // Another model under the same id (the tiny BERT with another activation, in the same
    // folder) are never served the first weights' vectors: everything is embedded again,
    // under its own key, and the first weights' vectors stay.
    std::fs::remove_dir_all(&model_dir).unwrap();
    std::fs::create_dir(&model_dir).unwrap();
    write_tiny_bert(&model_dir, "relu", None);
    let other_key = format!("{model_id}@{}", folder_digest(&model_dir).unwrap());
    assert_ne!(other_key, key);
    let third = run();
    assert_eq!(
        embedded(&third).iter().sum::<f64>() as usize,
        distinct_items
    );
    for key in [&key, &other_key] {
        let cached = EmbeddingCache::open_recorded(&cache, key).unwrap().unwrap();
        assert_eq!(cached.len(), distinct_items, "{key}");
    }
}

#[test]
fn text_mf_beats_mf_on_cold_items() {
    let cold_rmse = |pipeline: &str| {
        let mut experiment = start_experiment(
            &plan_of(pipeline, &["protocol.pool.rounds=1"]),
            false,
            false,
        )
        .unwrap();
        while experiment.has_next() {
            experiment.next_round().unwrap();
        }
        let rounds = experiment.finish().unwrap().rounds;
        rounds
            .last()
            .unwrap()
            .metrics
            .iter()
            .find(|(name, _)| name == "cold_rmse")
            .expect("the cold-start split reports cold_rmse")
            .1
    };
    let text = cold_rmse("pipelines/cold-start.yaml");
    let mf = cold_rmse("pipelines/cold-start-mf.yaml");
    assert!(text < mf - 0.01, "text_mf cold RMSE {text}, MF {mf}");
}

#[test]
fn pool_runs_fine_tune_the_encoder_and_the_engine_follows_the_tuned_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.parquet");
    // A tiny random BERT (32-d, 2 layers): the plumbing is the point, not the weights.
    let model_dir = dir.path().join("tiny-bert");
    std::fs::create_dir(&model_dir).unwrap();
    write_tiny_bert(&model_dir, "gelu", None);
    let item_text = format!(
        "nodes.item_text={{embed: {{cache: {}, model_dir: {}}}, input: items}}",
        cache.display(),
        model_dir.display()
    );
    let run = |train: &str| {
        let set = [
            "protocol.pool.rounds=2".to_string(),
            item_text.clone(),
            format!("nodes.model.train={train}"),
        ];
        let set: Vec<&str> = set.iter().map(String::as_str).collect();
        // Every item row changes with the tuned layers after every pass: the engine's
        // scores must still equal a from-scratch scoring of the model.
        run_against_scratch(&plan_of("pipelines/cold-start.yaml", &set))
    };
    let metrics = |rounds: &[RoundRecord]| -> Vec<Vec<(String, f64)>> {
        rounds.iter().map(|r| r.metrics.clone()).collect()
    };
    let text_mf = |tune: &str| {
        format!("{{text_mf: {{dim: 8, members: 2, epochs: 2, epochs_per_round: 1{tune}}}}}")
    };
    let tuned = run(&text_mf(", tune: {layers: 1, items_per_step: 8}"));
    // The same seed gives the same results.
    assert_eq!(
        format!("{:?}", metrics(&tuned)),
        format!(
            "{:?}",
            metrics(&run(&text_mf(", tune: {layers: 1, items_per_step: 8}")))
        )
    );
    // Tuning changes the model: the frozen encoder gives other metrics.
    assert_ne!(
        format!("{:?}", metrics(&tuned)),
        format!("{:?}", metrics(&run(&text_mf(""))))
    );
    // two_tower tunes too (its towers read the tuned vectors through autograd).
    run(
        "{two_tower: {dim: 8, hidden: 16, members: 2, epochs: 2, epochs_per_round: 1, tune: {layers: 2}}}",
    );
}
