//! Tests of the whole encoder: the real MiniLM weights against the Python reference
//! vectors (skipped where `crate::fixtures` finds no weights), and a tiny random BERT
//! against candle-transformers' implementation (always).

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::json;

use super::*;
use crate::fixtures::{Fixture, find, tiny_bert_config, write_tiny_bert};

struct Reference {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

/// The MiniLM weights and the reference vectors, or `None` (the test is skipped).
fn minilm_and_reference(test: &str) -> Option<(PathBuf, Reference)> {
    let model = find(Fixture::MiniLm, test)?;
    let reference = find(Fixture::MiniLmReference, test)?;
    Some((model, read_reference(&reference)))
}

fn read_reference(path: &Path) -> Reference {
    let text = std::fs::read_to_string(path).expect("reference_embeddings.json is readable");
    let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let sentences = value["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect();
    let embeddings = value["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    Reference {
        sentences,
        embeddings,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn minilm_matches_sentence_transformers_reference_vectors() {
    let Some((model, reference)) =
        minilm_and_reference("minilm_matches_sentence_transformers_reference_vectors")
    else {
        return;
    };
    assert_eq!(reference.sentences.len(), 32);
    let encoder = TextEncoder::load(&model, &Device::Cpu).expect("load MiniLM");
    assert_eq!(encoder.dim(), 384);
    assert_eq!(encoder.max_tokens(), 256);
    assert_eq!(encoder.model_id(), "all-MiniLM-L6-v2");
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    assert!(
        texts.contains(&""),
        "the reference includes the empty string"
    );
    let long = texts
        .iter()
        .map(|t| encoder.tokenizer.encode(*t, true).expect("tokenize").len())
        .max();
    assert_eq!(
        long,
        Some(256),
        "the longest reference text is truncated to 256 tokens"
    );
    for threads in [1, 2] {
        let vectors = encoder
            .clone_settings(threads, 7)
            .encode(&texts)
            .expect("encode");
        let mut worst = 0f32;
        for (i, expected) in reference.embeddings.iter().enumerate() {
            let got = &vectors[i * 384..(i + 1) * 384];
            let diff = max_abs_diff(got, expected);
            assert!(
                diff <= 1e-4,
                "sentence {i} ({:?}): max abs diff {diff}",
                texts[i]
            );
            worst = worst.max(diff);
        }
        eprintln!("MiniLM vs sentence-transformers, {threads} thread(s): max abs diff {worst:e}");
    }
}

#[test]
fn minilm_vectors_do_not_depend_on_batching_or_order() {
    let Some((model, reference)) =
        minilm_and_reference("minilm_vectors_do_not_depend_on_batching_or_order")
    else {
        return;
    };
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let encoder = TextEncoder::load(&model, &Device::Cpu).expect("load");
    let base = encoder
        .clone_settings(1, 32)
        .encode(&texts)
        .expect("encode");
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    for (threads, batch) in [(1, 1), (2, 3), (2, 5), (1, 64)] {
        let enc = encoder.clone_settings(threads, batch);
        // The CPU path computes every token row with the same sequence of operations
        // whatever else is in its batch, so the vectors are bit-identical.
        assert_eq!(enc.encode(&texts).expect("encode"), base, "batch {batch}");
        let rev = enc.encode(&reversed).expect("encode reversed");
        for (i, row) in rev.chunks_exact(384).enumerate() {
            let j = texts.len() - 1 - i;
            assert_eq!(row, &base[j * 384..(j + 1) * 384], "reversed, text {j}");
        }
    }
    let one_by_one: Vec<f32> = texts
        .iter()
        .flat_map(|t| encoder.encode(&[t]).expect("encode one"))
        .collect();
    assert_eq!(one_by_one, base);
    assert!(encoder.encode(&[]).expect("encode nothing").is_empty());
}

#[test]
fn minilm_candle_path_agrees_with_cpu_path() {
    let Some((model, reference)) = minilm_and_reference("minilm_candle_path_agrees_with_cpu_path")
    else {
        return;
    };
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let candle = TextEncoder::load_on(&model, &Device::Cpu, false)
        .expect("load")
        .with_batch_size(8);
    let vectors = candle.encode(&texts).expect("encode");
    for (i, expected) in reference.embeddings.iter().enumerate() {
        let diff = max_abs_diff(&vectors[i * 384..(i + 1) * 384], expected);
        assert!(diff <= 1e-4, "candle path, sentence {i}: {diff}");
    }
}

impl TextEncoder {
    /// The same model with other thread and batch settings (tests only: reloads nothing).
    fn clone_settings(&self, threads: usize, batch: usize) -> TextEncoderView<'_> {
        TextEncoderView {
            encoder: self,
            threads,
            batch,
        }
    }
}

/// A borrowed encoder with its own thread and batch settings.
struct TextEncoderView<'a> {
    encoder: &'a TextEncoder,
    threads: usize,
    batch: usize,
}

impl TextEncoderView<'_> {
    fn encode(&self, texts: &[&str]) -> Result<Vec<f32>, ModelError> {
        let enc = self.encoder;
        let tokens = tokens::tokenize(&enc.tokenizer, texts, self.threads)?;
        let batches = tokens::length_sorted_batches(&tokens, self.batch);
        let mut out = vec![0f32; texts.len() * enc.dim];
        let mut times = StageTimes::default();
        match &enc.backend {
            Backend::Cpu(m) => m.encode(&tokens, &batches, self.threads, &mut out, &mut times)?,
            Backend::Candle(m) => m.encode(&tokens, &batches, enc.dim, &mut out, &mut times)?,
        }
        Ok(out)
    }
}

/// A folder holding a tiny random BERT (see [`write_tiny_bert`]).
fn tiny_model(hidden_act: &str, weight_prefix: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_bert(dir.path(), hidden_act, weight_prefix);
    dir
}

const TINY_TEXTS: [&str; 6] = [
    "the cat sat on the mat",
    "",
    "dogs ran",
    "The Cat (1995) | a b",
    "unknown words here",
    "the cat sat on the mat the dog ran on the mat the cat sat on a mat the end",
];

#[test]
fn tiny_random_bert_cpu_path_matches_candle_transformers() {
    for (act, prefix) in [
        ("gelu", None),
        ("geluapproximate", Some("bert")),
        ("relu", None),
    ] {
        let dir = tiny_model(act, prefix);
        let own = TextEncoder::load(dir.path(), &Device::Cpu).expect("load own");
        let reference = TextEncoder::load_on(dir.path(), &Device::Cpu, false).expect("load candle");
        assert_eq!(own.dim(), 32);
        assert_eq!(own.max_tokens(), 16);
        let a = own.encode(&TINY_TEXTS).expect("own");
        let b = reference.encode(&TINY_TEXTS).expect("candle");
        let diff = max_abs_diff(&a, &b);
        assert!(diff <= 2e-6, "{act}: max abs diff {diff}");
        for row in a.chunks_exact(32) {
            let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{act}: norm {norm}");
        }
        // Distinct texts give distinct vectors (the weights are really used).
        assert!(max_abs_diff(&a[..32], &a[64..96]) > 1e-3);
    }
}

#[test]
fn tiny_random_bert_truncates_long_texts_to_max_seq_length() {
    let dir = tiny_model("gelu", None);
    let encoder = TextEncoder::load(dir.path(), &Device::Cpu).expect("load");
    let words: Vec<&str> = TINY_TEXTS[5].split(' ').collect();
    assert!(words.len() > 14);
    // 16 tokens = [CLS] + the first 14 words + [SEP].
    let cut = words[..14].join(" ");
    let v = encoder.encode(&[TINY_TEXTS[5], &cut]).expect("encode");
    assert_eq!(&v[..32], &v[32..]);
    let longer = words[..15].join(" ");
    let w = encoder.encode(&[&longer]).expect("encode");
    assert_eq!(&v[..32], &w[..], "15 words truncate to the same 14");
}

#[test]
fn tiny_random_bert_is_batch_and_order_invariant() {
    let dir = tiny_model("gelu", None);
    let encoder = TextEncoder::load(dir.path(), &Device::Cpu).expect("load");
    let base = encoder.encode(&TINY_TEXTS).expect("encode");
    for (threads, batch) in [(1, 1), (2, 2), (2, 4), (3, 100)] {
        let enc = encoder.clone_settings(threads, batch);
        assert_eq!(enc.encode(&TINY_TEXTS).expect("encode"), base);
    }
    let reversed: Vec<&str> = TINY_TEXTS.iter().rev().copied().collect();
    let rev = encoder.encode(&reversed).expect("encode");
    for (i, row) in rev.chunks_exact(32).enumerate() {
        let j = TINY_TEXTS.len() - 1 - i;
        assert_eq!(row, &base[j * 32..(j + 1) * 32]);
    }
}

#[test]
fn weights_that_do_not_fit_the_config_are_reported_with_the_file() {
    let dir = tiny_model("gelu", None);
    let mut config = tiny_bert_config("gelu");
    config["intermediate_size"] = json!(48);
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write");
    let err = TextEncoder::load(dir.path(), &Device::Cpu).expect_err("shape mismatch");
    let text = err.to_string();
    let weights = dir.path().join("model.safetensors");
    assert!(
        text.starts_with(&format!("cannot load weights {}: ", weights.display())),
        "{text}"
    );
    assert!(text.contains("intermediate.dense.weight"), "{text}");
}

#[test]
fn text_encoder_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TextEncoder>();
}

#[test]
fn model_id_comes_from_hub_snapshot_layout_or_folder_name() {
    let hub = Path::new("/c/hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/abc");
    assert_eq!(
        model_id_from_dir(hub),
        "sentence-transformers/all-MiniLM-L6-v2"
    );
    assert_eq!(
        model_id_from_dir(Path::new("/m/models--bert-mini/snapshots/r")),
        "bert-mini"
    );
    assert_eq!(model_id_from_dir(Path::new("/x/my-model")), "my-model");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_is_refused_with_instructions_in_a_cpu_build() {
    let err = crate::model::candle_device(crate::plan::params::DeviceChoice::Cuda(0))
        .expect_err("no cuda in this build");
    assert_eq!(
        err.to_string(),
        "`device: cuda` needs a recsift built with `--features cuda` (cargo build --release \
         --features cuda); this build has CPU support only"
    );
}

/// The same throughput measurement as `bench::embed` on candle-transformers' `BertModel`
/// (length-sorted, padded batches; candle's own thread pool), for comparison:
/// `cargo test --release --lib bench_candle_path_minilm -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run explicitly"]
fn bench_candle_path_minilm() {
    let Some(dir) = find(Fixture::MiniLm, "bench_candle_path_minilm") else {
        return;
    };
    let texts_file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/models/all-MiniLM-L6-v2/ml-latest-small-item-texts.txt");
    let text = std::fs::read_to_string(texts_file).expect("texts");
    let texts: Vec<&str> = text.lines().collect();
    let encoder = TextEncoder::load_on(&dir, &Device::Cpu, false)
        .expect("load")
        .with_batch_size(32);
    encoder.encode(&texts[..256]).expect("warm up");
    let cpu = process_cpu_seconds();
    let start = std::time::Instant::now();
    encoder.encode(&texts).expect("encode");
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu.zip(process_cpu_seconds()).map(|(a, b)| b - a);
    println!(
        "candle-transformers BertModel, length-sorted batches of 32, {} threads: {} texts in \
         {seconds:.2} s = {:.1} texts/s (cpu {cpu:.2?} s)",
        candle_core::utils::get_num_threads(),
        texts.len(),
        texts.len() as f64 / seconds
    );
}

/// The frozen lower layers run once, then the tuned top layers in candle operations, give
/// the encoder's vectors, for any split of the layers and every activation.
#[test]
fn frozen_states_and_tuned_layers_reproduce_the_encoder() {
    for (act, prefix) in [
        ("gelu", None),
        ("geluapproximate", Some("bert")),
        ("relu", None),
    ] {
        let dir = tiny_model(act, prefix);
        let encoder = TextEncoder::load(dir.path(), &Device::Cpu).expect("load");
        let expected = encoder.encode(&TINY_TEXTS).expect("encode");
        let layers = tiny_bert_config(act)["num_hidden_layers"].as_u64().unwrap() as usize;
        // Item 1 has no text: it stays absent and zero.
        let mut texts: Vec<Option<&str>> = TINY_TEXTS.iter().map(|t| Some(*t)).collect();
        texts.insert(1, None);
        for tuned in 1..=layers {
            let source = TunableText::load(dir.path(), "tiny", &texts, tuned, 2).expect("load");
            assert_eq!(
                (source.tuned_layers(), source.frozen_layers()),
                (tuned, layers - tuned)
            );
            let top = TunedLayers::new(&source, None, 0, &Device::Cpu).expect("layers");
            assert_eq!(top.named_vars().len(), 16 * tuned);
            let all = top.encode_all(&source).expect("encode all");
            assert_eq!(all.present, [true, false, true, true, true, true, true]);
            assert!(all.vectors[32..64].iter().all(|&v| v == 0.0));
            let mut got = all.vectors[..32].to_vec();
            got.extend_from_slice(&all.vectors[64..]);
            let diff = max_abs_diff(&got, &expected);
            assert!(diff <= 2e-5, "{act}, {tuned} tuned: max abs diff {diff}");
            // The differentiable candle path (training) agrees with the packed one.
            let items = [0, 2, 3, 4, 5, 6];
            let tracked = top.encode(&source, &items).expect("encode");
            let tracked: Vec<f32> = tracked.flatten_all().unwrap().to_vec1().unwrap();
            let diff = max_abs_diff(&tracked, &expected);
            assert!(
                diff <= 2e-5,
                "{act}, {tuned} tuned, candle: max abs diff {diff}"
            );
        }
        let err = TunableText::load(dir.path(), "tiny", &texts, layers + 1, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`tune.layers: {}`, but the encoder `tiny` has {layers} \
                 transformer layers; tune between 1 and {layers}",
                layers + 1
            )
        );
    }
}

/// LoRA adapters start at the pretrained encoder (`B` is zero); once they have moved, the
/// vectors recomputed with the adapters merged into the weights equal the differentiable
/// pass that applies them, and a rank beyond the width is refused.
#[test]
fn lora_adapters_start_at_the_encoder_and_merge_into_the_same_vectors() {
    use crate::plan::params::LoraAdapters;
    let dir = tiny_model("gelu", None);
    let encoder = TextEncoder::load(dir.path(), &Device::Cpu).expect("load");
    let expected = encoder.encode(&TINY_TEXTS).expect("encode");
    let texts: Vec<Option<&str>> = TINY_TEXTS.iter().map(|t| Some(*t)).collect();
    let source = TunableText::load(dir.path(), "tiny", &texts, 2, 1).expect("load");
    let lora = LoraAdapters {
        rank: 2,
        alpha: 4.0,
    };
    let top = TunedLayers::new(&source, Some(lora), 7, &Device::Cpu).expect("layers");
    let vars = top.named_vars();
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "layer0.query.lora_a",
            "layer0.query.lora_b",
            "layer0.value.lora_a",
            "layer0.value.lora_b",
            "layer1.query.lora_a",
            "layer1.query.lora_b",
            "layer1.value.lora_a",
            "layer1.value.lora_b",
        ]
    );
    let items: Vec<u32> = (0..TINY_TEXTS.len() as u32).collect();
    let tracked = |top: &TunedLayers| -> Vec<f32> {
        let t = top.encode(&source, &items).expect("encode");
        t.flatten_all().unwrap().to_vec1().unwrap()
    };
    let merged = |top: &TunedLayers| top.encode_all(&source).expect("encode all").vectors;
    assert!(max_abs_diff(&merged(&top), &expected) <= 2e-5);
    assert!(max_abs_diff(&tracked(&top), &expected) <= 2e-5);

    // Move every `B` away from zero (fixed values), as training would.
    for (name, var) in &vars {
        if name.ends_with("lora_b") {
            let n = var.as_tensor().elem_count();
            let values: Vec<f32> = (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
            let moved =
                candle_core::Tensor::from_vec(values, var.as_tensor().shape(), &Device::Cpu);
            var.set(&moved.unwrap()).unwrap();
        }
    }
    let (merged, tracked) = (merged(&top), tracked(&top));
    assert!(
        max_abs_diff(&merged, &expected) > 1e-3,
        "the adapters change the vectors"
    );
    let diff = max_abs_diff(&merged, &tracked);
    assert!(
        diff <= 2e-5,
        "merged vs applied adapters: max abs diff {diff}"
    );

    let too_wide = LoraAdapters {
        rank: source.dim() + 1,
        alpha: 1.0,
    };
    let err = TunedLayers::new(&source, Some(too_wide), 7, &Device::Cpu).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`tune.lora.rank: {}` exceeds the width {} of the encoder `tiny`'s projections; \
             use a rank of at most {} (e.g. 8)",
            source.dim() + 1,
            source.dim(),
            source.dim()
        )
    );
}
