//! Test data that cannot ship with the repository, and how a test finds it.
//!
//! MovieLens 100K's licence forbids redistribution, the raw MovieLens latest-small release
//! is only needed to check the importer against the embedded copy, and the
//! all-MiniLM-L6-v2 weights are 90 MB. A test that needs one asks [`find`], which looks in
//! the fixture's environment variable, then at its place in `../shared` beside the
//! checkout (this project's machines keep everything there), and for MiniLM also wherever
//! `recsift run` finds models (`RECSIFT_MODEL_DIR`, the Hugging Face cache, a download).
//! When none has it, the test prints one line on stderr saying what it skipped and how to
//! enable it, and passes; with `RECSIFT_REQUIRE_FIXTURES=1` (which `.ci/run` sets) a
//! missing fixture fails the test instead.
//!
//! Where real weights are not the point, a test writes a tiny random BERT instead
//! ([`write_tiny_bert`]), so the encoder's plumbing is covered everywhere.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::json;

use crate::model::encoder::{SearchEnv, resolve_in};
use crate::seeding::{mix64, stable_hash, unit_interval};

/// Set to `1` to make a missing fixture fail its test instead of skipping it.
pub const REQUIRE_VAR: &str = "RECSIFT_REQUIRE_FIXTURES";

/// The Hugging Face id of the sentence encoder the tests use.
pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Something a test needs that the repository does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixture {
    /// The MovieLens 100K release folder (`u.data`, `u.item`, `u1.base`, ...).
    Ml100k,
    /// The raw MovieLens latest-small release folder (`ratings.csv`, `movies.csv`, ...).
    MlLatestSmall,
    /// The all-MiniLM-L6-v2 model folder (`config.json`, `tokenizer.json`,
    /// `model.safetensors`).
    MiniLm,
    /// sentence-transformers' vectors of some sentences under all-MiniLM-L6-v2
    /// (`reference_embeddings.json`: `sentences` and `embeddings`).
    MiniLmReference,
}

impl Fixture {
    /// The environment variable that names it.
    pub fn var(self) -> &'static str {
        match self {
            Fixture::Ml100k => "RECSIFT_ML100K",
            Fixture::MlLatestSmall => "RECSIFT_ML_LATEST_SMALL",
            Fixture::MiniLm => crate::model::encoder::MODEL_DIR_VAR,
            Fixture::MiniLmReference => "RECSIFT_MINILM_REFERENCE",
        }
    }

    /// What it is, for the skip line.
    fn what(self) -> &'static str {
        match self {
            Fixture::Ml100k => "MovieLens 100K (the ml-100k release folder)",
            Fixture::MlLatestSmall => "the raw MovieLens latest-small release folder",
            Fixture::MiniLm => "the all-MiniLM-L6-v2 weights",
            Fixture::MiniLmReference => "MiniLM reference vectors (reference_embeddings.json)",
        }
    }

    /// Its place under `../shared`.
    fn in_shared(self) -> &'static str {
        match self {
            Fixture::Ml100k => "data/ml-100k",
            Fixture::MlLatestSmall => "data/ml-latest-small",
            Fixture::MiniLm => "models/all-MiniLM-L6-v2",
            Fixture::MiniLmReference => "models/all-MiniLM-L6-v2/reference_embeddings.json",
        }
    }

    /// How a user provides it.
    fn how(self) -> String {
        match self {
            Fixture::MiniLm => format!(
                "set {} to a folder holding them, put them in the Hugging Face cache, or \
                 allow a download",
                self.var()
            ),
            _ => format!("set {} to its path", self.var()),
        }
    }
}

/// `../shared` beside the checkout.
fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Where `fixture` is, or `None` after printing one line saying that `test` is skipped and
/// how to enable it.
///
/// # Panics
/// When the fixture is missing and `RECSIFT_REQUIRE_FIXTURES` is `1`, or its environment
/// variable names a path that does not exist (a typo must not pass as a skip).
pub fn find(fixture: Fixture, test: &str) -> Option<PathBuf> {
    let found = match fixture {
        Fixture::MiniLm => find_model(),
        _ => match std::env::var_os(fixture.var()).filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                assert!(
                    path.exists(),
                    "{}={} does not exist",
                    fixture.var(),
                    path.display()
                );
                Some(path)
            }
            None => Some(shared().join(fixture.in_shared())).filter(|p| p.exists()),
        },
    };
    if found.is_none() {
        let line = format!("{} not found: {}", fixture.what(), fixture.how());
        let required = std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1");
        assert!(!required, "{test}: {line} ({REQUIRE_VAR}=1)");
        // Straight to stderr: the test harness captures `eprintln!` of passing tests.
        let _ = writeln!(std::io::stderr(), "skipped {test}: {line}");
    }
    found
}

/// MiniLM where `recsift run` would find it, with its place in `../shared` standing in
/// for an unset `RECSIFT_MODEL_DIR` (the search accepts a folder named like the model).
fn find_model() -> Option<PathBuf> {
    let mut env = SearchEnv::from_process();
    if env.recsift_model_dir.is_none() {
        env.recsift_model_dir =
            Some(shared().join(Fixture::MiniLm.in_shared())).filter(|p| p.is_dir());
    }
    match resolve_in(MINILM, None, &env) {
        Ok(dir) => Some(dir),
        // A folder named on purpose that does not hold the model is a mistake, not a skip.
        Err(e) if std::env::var_os(Fixture::MiniLm.var()).is_some() => panic!("{e}"),
        Err(_) => None,
    }
}

/// Words of the tiny BERT's vocabulary (after the four special tokens).
pub const TINY_WORDS: [&str; 14] = [
    "the", "cat", "sat", "on", "mat", "dog", "ran", "(", ")", "|", "1995", "##s", "a", "b",
];

/// The `config.json` of [`write_tiny_bert`]'s model: hidden size 32, 2 layers, 4 heads,
/// activation `hidden_act`.
pub fn tiny_bert_config(hidden_act: &str) -> serde_json::Value {
    json!({
        "vocab_size": 4 + TINY_WORDS.len(), "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": hidden_act,
        "hidden_dropout_prob": 0.1, "max_position_embeddings": 24, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "model_type": "bert"
    })
}

/// A BERT WordPiece tokenizer over [`TINY_WORDS`], stored (like MiniLM's) with fixed
/// padding and truncation at 128 that the encoder must override.
fn tiny_tokenizer() -> serde_json::Value {
    let special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let mut vocab = serde_json::Map::new();
    for (id, token) in special.iter().chain(TINY_WORDS.iter()).enumerate() {
        vocab.insert(token.to_string(), json!(id));
    }
    let added: Vec<_> = special
        .iter()
        .enumerate()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": {"max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Writes into `dir` a model folder (`config.json`, `tokenizer.json`, `model.safetensors`,
/// `sentence_bert_config.json`) of a randomly initialised tiny BERT: every weight random,
/// layer-norm scales around 1, 32-d vectors, `max_seq_length` 16, a vocabulary of
/// [`TINY_WORDS`] (other words become `[UNK]`), weight names under `weight_prefix` if given.
/// It exercises everything real weights would, in milliseconds.
///
/// # Panics
/// When `dir` cannot be written.
pub fn write_tiny_bert(dir: &Path, hidden_act: &str, weight_prefix: Option<&str>) {
    let config = tiny_bert_config(hidden_act);
    let cfg: Config = serde_json::from_value(config.clone()).expect("config");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let vb = match weight_prefix {
        Some(prefix) => vb.pp(prefix),
        None => vb,
    };
    BertModel::load(vb, &cfg).expect("create variables");
    for (name, var) in varmap.data().lock().expect("lock").iter() {
        let noise = seeded_noise(name, var.shape()).expect("noise");
        let value = if name.ends_with("LayerNorm.weight") {
            (noise + 1.0).expect("shift")
        } else {
            noise
        };
        var.set(&value).expect("set");
    }
    varmap.save(dir.join("model.safetensors")).expect("save");
    let write = |name: &str, value: serde_json::Value| {
        std::fs::write(dir.join(name), value.to_string()).expect("write");
    };
    write("config.json", config);
    write("tokenizer.json", tiny_tokenizer());
    write("sentence_bert_config.json", json!({"max_seq_length": 16}));
}

/// Normal noise of standard deviation 0.3 and shape `shape`, the same for the same
/// tensor `name` on every run (Box-Muller over a hash of the name and the position), so a
/// tiny model's behaviour does not change from one test run to the next.
fn seeded_noise(name: &str, shape: &candle_core::Shape) -> candle_core::Result<Tensor> {
    let key = name.bytes().fold(0u64, |h, b| mix64(h ^ u64::from(b)));
    let values = (0..shape.elem_count() as u64)
        .map(|k| {
            let u1 = unit_interval(stable_hash(&[key, 2 * k])).max(1e-12);
            let u2 = unit_interval(stable_hash(&[key, 2 * k + 1]));
            let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (0.3 * normal) as f32
        })
        .collect::<Vec<_>>();
    Tensor::from_vec(values, shape, &Device::Cpu)
}
