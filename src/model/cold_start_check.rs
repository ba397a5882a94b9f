//! Cold start on ml-latest-small with MiniLM item vectors, run by hand (`--ignored`): fit
//! time and RMSE on warm and on cold items of `mf`, `text_mf` and `two_tower`.
//!
//! A fifth of the films (chosen by a hash of their id) are cold: none of their ratings is
//! trained on, all are tested. A tenth of the other ratings are the warm test set. Item
//! texts are `"{title} | {genres}"` (`../shared/models/all-MiniLM-L6-v2/
//! ml-latest-small-item-texts.txt`, in `movies.csv` order), embedded with candle-
//! transformers' BERT (mean pooling, L2 norm) and cached in the temporary directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::bootstrap::{stable_hash, unit_interval};
use super::synthetic::{adam, keys, params, rmse_on, sgd};
use super::{Recommender, build_recommender};
use crate::data::{Interaction, ItemEmbeddings, LabelKind};
use crate::plan::params::{ModelKind, OptimizerParams, TrainParams, UncertaintyParams};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Ratings with items indexed in `movies.csv` order and users in order of appearance.
fn ratings() -> (Vec<Interaction>, Vec<i64>, usize) {
    let dir = shared().join("data/ml-latest-small");
    let mut movies = csv::Reader::from_path(dir.join("movies.csv")).unwrap();
    let movie_ids: Vec<i64> = movies
        .records()
        .map(|r| r.unwrap()[0].parse().unwrap())
        .collect();
    let index: std::collections::HashMap<i64, u32> = movie_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| (id, k as u32))
        .collect();
    let mut users = std::collections::HashMap::new();
    let mut out = Vec::new();
    let mut reader = csv::Reader::from_path(dir.join("ratings.csv")).unwrap();
    for r in reader.records() {
        let r = r.unwrap();
        let next = users.len() as u32;
        let user = *users.entry(r[0].to_string()).or_insert(next);
        out.push(Interaction {
            user,
            item: index[&r[1].parse::<i64>().unwrap()],
            label: r[2].parse().unwrap(),
            time: r[3].parse().unwrap(),
        });
    }
    (out, movie_ids, users.len())
}

/// MiniLM vectors of the item texts, cached.
fn item_vectors() -> ItemEmbeddings {
    let model_dir = shared().join("models/all-MiniLM-L6-v2");
    let texts = std::fs::read_to_string(model_dir.join("ml-latest-small-item-texts.txt")).unwrap();
    let texts: Vec<&str> = texts.lines().collect();
    let dim = 384;
    let cache = std::env::temp_dir().join("recsift-minilm-latest-small-items.f32");
    if let Ok(bytes) = std::fs::read(&cache)
        && bytes.len() == texts.len() * dim * 4
    {
        let vectors = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        return ItemEmbeddings {
            dim,
            vectors,
            present: vec![true; texts.len()],
        };
    }
    let started = Instant::now();
    let device = Device::Cpu;
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json")).unwrap())
            .unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[model_dir.join("model.safetensors")],
            DType::F32,
            &device,
        )
        .unwrap()
    };
    let model = BertModel::load(vb, &config).unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(model_dir.join("tokenizer.json")).unwrap();
    // The file pads every text to 128 tokens; batches are padded here, to their longest.
    tokenizer.with_padding(None);
    let tokens: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            let ids = tokenizer.encode(*t, true).unwrap().get_ids().to_vec();
            ids[..ids.len().min(256)].to_vec()
        })
        .collect();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&k| tokens[k].len());
    let mut vectors = vec![0.0f32; texts.len() * dim];
    for (b, batch) in order.chunks(64).enumerate() {
        if b % 20 == 0 {
            eprintln!(
                "embedding: {} of {} texts, {:.0} s",
                b * 64,
                texts.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let width = batch.iter().map(|&k| tokens[k].len()).max().unwrap();
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for &k in batch {
            ids.extend_from_slice(&tokens[k]);
            ids.extend(std::iter::repeat_n(0u32, width - tokens[k].len()));
            mask.extend(std::iter::repeat_n(1u32, tokens[k].len()));
            mask.extend(std::iter::repeat_n(0u32, width - tokens[k].len()));
        }
        let ids = Tensor::from_vec(ids, (batch.len(), width), &device).unwrap();
        let mask = Tensor::from_vec(mask, (batch.len(), width), &device).unwrap();
        let states = model
            .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
            .unwrap();
        let mask = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let mean = states
            .broadcast_mul(&mask)
            .unwrap()
            .sum(1)
            .unwrap()
            .broadcast_div(&mask.sum(1).unwrap())
            .unwrap();
        let norm = mean
            .sqr()
            .unwrap()
            .sum_keepdim(D::Minus1)
            .unwrap()
            .sqrt()
            .unwrap();
        let rows = mean.broadcast_div(&norm).unwrap().to_vec2::<f32>().unwrap();
        for (&k, row) in batch.iter().zip(rows) {
            vectors[k * dim..(k + 1) * dim].copy_from_slice(&row);
        }
    }
    println!(
        "embedded {} item texts in {:.1} s",
        texts.len(),
        started.elapsed().as_secs_f64()
    );
    let bytes: Vec<u8> = vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&cache, bytes).unwrap();
    ItemEmbeddings {
        dim,
        vectors,
        present: vec![true; texts.len()],
    }
}

/// The MiniLM vectors agree with the Python reference for the item texts it holds.
#[test]
#[ignore = "needs ../shared; run by hand"]
fn item_vectors_match_the_python_reference() {
    let text = item_vectors();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            shared().join("models/all-MiniLM-L6-v2/reference_embeddings.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let texts = std::fs::read_to_string(
        shared().join("models/all-MiniLM-L6-v2/ml-latest-small-item-texts.txt"),
    )
    .unwrap();
    let lines: Vec<&str> = texts.lines().collect();
    let mut checked = 0;
    let sentences = reference["sentences"].as_array().unwrap();
    let embeddings = reference["embeddings"].as_array().unwrap();
    for (s, e) in sentences.iter().zip(embeddings) {
        if let Some(k) = lines.iter().position(|l| *l == s.as_str().unwrap()) {
            for (j, x) in e.as_array().unwrap().iter().enumerate() {
                let x = x.as_f64().unwrap();
                assert!((f64::from(text.vector(k as u32)[j]) - x).abs() < 1e-4);
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no reference sentence is an item text");
    println!("{checked} item vectors match the reference");
}

/// Uninformative unit vectors.
fn random_vectors(n: usize, dim: usize) -> ItemEmbeddings {
    let mut vectors = Vec::with_capacity(n * dim);
    for i in 0..n {
        let v: Vec<f64> = (0..dim)
            .map(|j| unit_interval(stable_hash(&[3, i as u64, j as u64])) - 0.5)
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        vectors.extend(v.iter().map(|x| (x / norm) as f32));
    }
    ItemEmbeddings {
        dim,
        vectors,
        present: vec![true; n],
    }
}

struct Split {
    train: Vec<Interaction>,
    warm: Vec<Interaction>,
    cold: Vec<Interaction>,
    n_users: usize,
    n_items: usize,
    mean: f32,
}

fn split() -> Split {
    let (all, movie_ids, n_users) = ratings();
    let is_cold =
        |item: u32| unit_interval(stable_hash(&[7, movie_ids[item as usize] as u64])) < 0.2;
    let mut train = Vec::new();
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    for (k, r) in all.iter().enumerate() {
        if is_cold(r.item) {
            cold.push(*r);
        } else if unit_interval(stable_hash(&[8, k as u64])) < 0.1 {
            warm.push(*r);
        } else {
            train.push(*r);
        }
    }
    let mean = train.iter().map(|s| f64::from(s.label)).sum::<f64>() / train.len() as f64;
    Split {
        train,
        warm,
        cold,
        n_users,
        n_items: movie_ids.len(),
        mean: mean as f32,
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Clipped RMSE on the rating scale [0.5, 5].
fn clipped_rmse(model: &dyn Recommender, test: &[Interaction]) -> f64 {
    let head = model.head().with_clip(0.5, 5.0);
    let (nu, ni) = model.shape();
    let u = model.user_rows(&keys(nu)).unwrap();
    let i = model.item_rows(&keys(ni)).unwrap();
    let row = head.layout.row_len();
    let sum: f64 = test
        .iter()
        .map(|s| {
            let (ur, ir) = (s.user as usize * row, s.item as usize * row);
            let p = head
                .score(&u[ur..ur + row], &i[ir..ir + row], None)
                .prediction;
            (f64::from(p) - f64::from(s.label)).powi(2)
        })
        .sum();
    let _ = rmse_on;
    (sum / test.len() as f64).sqrt()
}

fn run(name: &str, p: &TrainParams, split: &Split, text: &ItemEmbeddings, epochs: usize) {
    let mut model = build_recommender(
        p,
        split.n_users,
        split.n_items,
        split.mean,
        LabelKind::Rating,
        Some(text),
    )
    .unwrap();
    let every = env("CHECK_EVERY", epochs);
    let mut done = 0;
    let mut seconds = 0.0;
    while done < epochs {
        let step = every.min(epochs - done);
        let started = Instant::now();
        let report = model
            .fit(&split.train, &keys(split.train.len()), step)
            .unwrap();
        seconds += started.elapsed().as_secs_f64();
        done += step;
        let started = Instant::now();
        let cold = clipped_rmse(model.as_ref(), &split.cold);
        let export = started.elapsed().as_secs_f64();
        println!(
            "{name:<48} epochs {done:>3}: warm RMSE {:.4}  cold RMSE {cold:.4}  fit {seconds:.2} s  \
             loss {:.4}  (export+score {export:.2} s)",
            clipped_rmse(model.as_ref(), &split.warm),
            report.last_epoch_loss,
        );
    }
}

fn optimizer() -> OptimizerParams {
    let lr = env("CHECK_LR", 0.02);
    let wd = env("CHECK_WD", 0.1);
    if env("CHECK_ADAM", 0u8) == 1 {
        adam(lr, wd)
    } else {
        sgd(lr, wd)
    }
}

/// `CHECK_MODELS` (comma-separated: mf, text_mf, two_tower), `CHECK_*` hyper-parameters.
#[test]
#[ignore = "needs ../shared and about a minute; run by hand"]
fn latest_small_cold_start() {
    let split = split();
    // CHECK_RANDOM_TEXT=1: random unit vectors (for timings while no MiniLM vectors exist).
    let text = if env("CHECK_RANDOM_TEXT", 0u8) == 1 {
        random_vectors(split.n_items, 384)
    } else {
        item_vectors()
    };
    println!(
        "ml-latest-small: {} train, {} warm test, {} cold test ratings; {} users, {} items",
        split.train.len(),
        split.warm.len(),
        split.cold.len(),
        split.n_users,
        split.n_items
    );
    let dim = env("CHECK_DIM", 32usize);
    let epochs = env("CHECK_EPOCHS", 25usize);
    let members = env("CHECK_MEMBERS", 1usize);
    let batch = env("CHECK_BATCH", 1024usize);
    let models = env("CHECK_MODELS", "mf,text_mf,two_tower".to_string());
    let base = TrainParams {
        optimizer: optimizer(),
        ..params(members, optimizer(), batch, env("CHECK_SEED", 42u64))
    };
    for name in models.split(',') {
        let model = match name {
            "mf" => ModelKind::Mf {
                dim,
                init_std: 0.03,
            },
            "text_mf" => ModelKind::TextMf {
                dim,
                init_std: 0.03,
            },
            "two_tower" => ModelKind::TwoTower {
                dim,
                hidden: env("CHECK_HIDDEN", 64usize),
                dropout: env("CHECK_DROPOUT", 0.1f64),
                init_std: 0.03,
            },
            other => panic!("unknown model {other}"),
        };
        let passes = env("CHECK_PASSES", 0usize);
        let uncertainty = if name == "two_tower" && passes > 0 {
            UncertaintyParams::McDropout { passes }
        } else {
            UncertaintyParams::Ensemble { members }
        };
        let p = TrainParams {
            model,
            uncertainty,
            ..base.clone()
        };
        let label = format!(
            "{name} dim {dim} {:?} x{}",
            p.optimizer,
            p.uncertainty.members()
        );
        run(&label, &p, &split, &text, epochs);
    }
}
