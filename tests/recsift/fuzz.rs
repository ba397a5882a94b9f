//! Fuzzed inputs: random and mutated pipeline YAML, `--set` arguments, events and item
//! Parquet files, embedding caches, run checkpoints and the text files of
//! `recsift import movielens`. Whatever the input, loading and planning it returns
//! a result (never a panic; an abort would end the test binary), and every error names the
//! input it is about.
//!
//! Each target runs a CI-sized number of cases; `PROPTEST_CASES=N` runs more (the longer
//! runs done by hand are in docs/benchmarks.md, "Fuzzing").

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;
use recsift::data::{IdMap, Interaction, LabelKind, RawId};
use recsift::driver::checkpoint::{self, Progress};
use recsift::io::embedding_cache::EmbeddingCache;
use recsift::io::events::read_events;
use recsift::io::items::read_item_texts;
use recsift::io::movielens::import_movielens;
use recsift::model::{Recommender, build_recommender};
use recsift::plan;
use recsift::results::{RoundRecord, SelectionRecord};
use recsift::spec::LoadedSpec;

use crate::common::{plan_of, root};

/// Cases per target unless `PROPTEST_CASES` says otherwise.
const CI_CASES: u32 = 96;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_CASES);
    ProptestConfig {
        cases,
        // Failures are reported with their input; nothing is written to the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A mutation of `bytes`: a few bytes overwritten, a range deleted or duplicated, or the
/// tail cut off.
fn mutated(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    (
        0..4u8,
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 1..8),
    )
        .prop_map(move |(kind, a, b, noise)| {
            let mut out = bytes.clone();
            let at = (a % len as u64) as usize;
            match kind {
                0 => {
                    for (k, byte) in noise.iter().enumerate() {
                        if let Some(slot) = out.get_mut(at + k) {
                            *slot = *byte;
                        }
                    }
                }
                1 => {
                    let end = (at + 1 + (b % 64) as usize).min(len);
                    out.drain(at..end);
                }
                2 => {
                    let end = (at + 1 + (b % 64) as usize).min(len);
                    let copy = out[at..end].to_vec();
                    out.splice(at..at, copy);
                }
                _ => out.truncate(at),
            }
            out
        })
}

/// Runs `f`, failing the test if it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(_) => panic!("{what} panicked (input above)"),
    }
}

/// Loads and plans pipeline `text` as if it were the file `path`; an error must name the
/// file or the `--set` argument.
fn check_pipeline(path: &Path, text: &str, set: &[String]) {
    let rendered = no_panic("loading and planning", || {
        match LoadedSpec::from_text(path, text, set) {
            Err(e) => Some(e.to_string()),
            Ok(loaded) => plan::build(&loaded).err().map(|e| e.to_string()),
        }
    });
    if let Some(message) = rendered {
        let named = message.contains(&path.display().to_string())
            || set.iter().any(|s| message.contains(&format!("--set {s}")));
        assert!(named, "the error does not name its input:\n{message}");
    }
}

fn quickstart() -> (PathBuf, String) {
    let path = root().join("pipelines/quickstart.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_pipelines_are_refused_or_planned_never_a_panic(
        bytes in mutated(quickstart().1.into_bytes())
    ) {
        let (path, _) = quickstart();
        check_pipeline(&path, &String::from_utf8_lossy(&bytes), &[]);
    }

    #[test]
    fn random_yaml_is_refused_with_the_file_named(text in "[a-z:{}\\[\\], \n\t\"'#&*!|>.0-9-]{0,200}") {
        check_pipeline(&root().join("pipelines/quickstart.yaml"), &text, &[]);
    }

    #[test]
    fn random_set_arguments_are_refused_at_the_argument(
        key in "[a-z_]{1,8}(\\.[a-z_@0-9\\[\\]]{1,10}){0,4}",
        value in "[a-z0-9{}\\[\\]:, .\\-]{0,24}",
    ) {
        let (path, text) = quickstart();
        let set = format!("{key}={value}");
        check_pipeline(&path, &text, &[set]);
    }
}

/// The first `rows` rows of `file` (under the shipped data), written to `out` with the
/// same schema: a small file, so that mutations reach its metadata as often as its data.
fn head_of(file: &str, rows: usize, out: &Path) -> Vec<u8> {
    let source = std::fs::File::open(root().join("data/ml-latest-small").join(file)).unwrap();
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(source)
        .unwrap()
        .with_batch_size(rows)
        .build()
        .unwrap();
    let batch = reader.next().unwrap().unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(out).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::fs::read(out).unwrap()
}

/// An embedding cache of a few 4-d vectors, written by recsift itself.
fn small_cache(out: &Path) -> Vec<u8> {
    let mut cache = EmbeddingCache::open(out, MODEL, 4).unwrap();
    for k in 0..20 {
        cache
            .insert(&format!("text {k}"), &[k as f32, 1.0, -2.0, 0.5])
            .unwrap();
    }
    cache.save().unwrap();
    std::fs::read(out).unwrap()
}

const MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// Mutations of a small file, half of them within its last 256 bytes (the footer).
fn mutated_file(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len();
    let tail = bytes[len.saturating_sub(256)..].to_vec();
    let head = bytes[..len.saturating_sub(256)].to_vec();
    prop_oneof![
        mutated(bytes),
        mutated(tail).prop_map(move |tail| [head.clone(), tail].concat()),
    ]
}

/// Reads the mutated `bytes` as `name` with `read`: an error must name the file.
fn check_file(name: &str, bytes: &[u8], read: impl FnOnce(&Path) -> Result<(), String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    if let Err(message) = no_panic(&format!("reading a mutated {name}"), || read(&path)) {
        assert!(
            message.contains(&path.display().to_string()),
            "the error does not name the file:\n{message}"
        );
    }
}

fn small_files() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static FILES: std::sync::OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        (
            head_of("ratings.parquet", 300, &dir.path().join("events.parquet")),
            head_of("items.parquet", 100, &dir.path().join("items.parquet")),
            small_cache(&dir.path().join("cache.parquet")),
        )
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_event_files_are_refused_with_their_path(bytes in mutated_file(small_files().0.clone())) {
        check_file("events.parquet", &bytes, |path| {
            let plan = plan_of(
                "pipelines/quickstart.yaml",
                &[&format!("data.events={}", path.display())],
            );
            let source = plan
                .protocol
                .event_log()
                .cloned()
                .expect("the quickstart reads an event file");
            read_events(&source, &mut IdMap::new(), &mut IdMap::new(), None)
                .map(drop)
                .map_err(|e| e.to_string())
        });
    }

    #[test]
    fn mutated_item_files_are_refused_with_their_path(bytes in mutated_file(small_files().1.clone())) {
        check_file("items.parquet", &bytes, |path| {
            let plan = plan_of(
                "pipelines/quickstart.yaml",
                &[&format!("data.items.path={}", path.display())],
            );
            let source = plan.data.items.expect("the quickstart reads an item file");
            read_item_texts(&source, &mut IdMap::new())
                .map(drop)
                .map_err(|e| e.to_string())
        });
    }

    #[test]
    fn mutated_checkpoints_are_refused_with_their_path(bytes in mutated_file(small_checkpoint().clone())) {
        let plan = checkpoint_plan();
        check_file("checkpoint.safetensors", &bytes, |path| {
            let saved = checkpoint::load(path, &plan).map_err(|e| e.to_string())?;
            // A checkpoint that still reads (e.g. changed tensor values) loads into the model
            // or is refused; never a panic.
            let _ = checkpoint_model(&plan).load_state(&saved.progress.model);
            Ok(())
        });
    }

    #[test]
    fn mutated_embedding_caches_are_refused_with_their_path(bytes in mutated_file(small_files().2.clone())) {
        check_file("cache.parquet", &bytes, |path| {
            EmbeddingCache::open_recorded(path, MODEL)
                .map(drop)
                .map_err(|e| e.to_string())
        });
    }
}

/// The plan whose checkpoints the checkpoint target mutates: biased MF with Adam (moments
/// and step counters in the state) and BPR (the negative sampler's tables).
fn checkpoint_plan() -> recsift::plan::Plan {
    plan_of(
        "pipelines/cold-start-mf.yaml",
        &[
            "nodes.model.train.mf.optimizer={adam: {lr: 0.01}}",
            "nodes.model.train.mf.loss=bpr",
            "nodes.report.evaluate.metrics=[ndcg@10]",
        ],
    )
}

/// A fresh 20 x 30 model of [`checkpoint_plan`].
fn checkpoint_model(plan: &recsift::plan::Plan) -> Box<dyn Recommender> {
    build_recommender(
        &plan.models.trained[0].params,
        20,
        30,
        0.5,
        LabelKind::Rating,
        None,
    )
    .unwrap()
}

/// A checkpoint of a trained [`checkpoint_model`] after round 0, written by recsift.
fn small_checkpoint() -> &'static Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let plan = checkpoint_plan();
        let mut model = checkpoint_model(&plan);
        let events: Vec<Interaction> = (0..60)
            .map(|k| Interaction {
                user: k % 20,
                item: (k * 7) % 30,
                label: 4.0,
                time: i64::from(k),
            })
            .collect();
        let keys: Vec<u32> = (0..60).collect();
        model.fit(&events, &keys, 2).unwrap();
        let progress = Progress {
            history: vec![RoundRecord {
                round: 0,
                labelled: 60,
                selected: 0,
                rescored: 0,
                metrics: vec![("ndcg@10".into(), 0.25)],
                timings_ms: vec![("train".into(), 1.5)],
            }],
            selections: vec![SelectionRecord {
                round: 1,
                sample: 3,
                user_id: RawId::Int(7),
                item_id: RawId::Str("film".into()),
                score: 0.5,
            }],
            model: model.save_state().unwrap(),
            prequential: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        checkpoint::save(&path, &plan, &progress, &[]).unwrap();
        std::fs::read(&path).unwrap()
    })
}

/// Small releases in the three MovieLens layouts (written for these tests, not MovieLens
/// data): ml-100k, ml-1m and a CSV release.
const RELEASES: [&[(&str, &[u8])]; 3] = [
    &[
        ("u.data", b"1\t10\t5\t881250949\n2\t10\t3\t881250950\n1\t20\t4\t881250951\n"),
        ("u.item", b"10|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|1\n20|unknown||||1|0|0\n"),
        ("u.genre", b"unknown|0\nAction|1\nComedy|2\n\n"),
        ("u1.base", b"1\t10\t5\t881250949\n2\t10\t3\t881250950\n"),
        ("u1.test", b"1\t20\t4\t881250951\n"),
    ],
    &[
        ("ratings.dat", b"1::1::5::978300760\r\n1::2::3::978302109\r\n2::1::4::978302110\r\n"),
        ("movies.dat", b"1::Toy Story (1995)::Animation|Children's\r\n2::Mis\xe9rables (1995)::Drama\r\n"),
        ("users.dat", b"1::F::1::10::48067\n2::M::25::7::55117\n"),
    ],
    &[
        ("ratings.csv", b"userId,movieId,rating,timestamp\r\n1,11,4.0,964982703\r\n2,12,0.5,964981247\r\n"),
        ("movies.csv", b"movieId,title,genres\r\n11,\"President, The (1995)\",Comedy|Drama\r\n12,\"\"\"Cats\"\" (1998)\",Musical\r\n"),
    ],
];

/// A release, one of its files and that file's mutated bytes.
fn mutated_release() -> impl Strategy<Value = (usize, usize, Vec<u8>)> {
    (0..RELEASES.len())
        .prop_flat_map(|release| (Just(release), 0..RELEASES[release].len()))
        .prop_flat_map(|(release, file)| {
            let bytes = RELEASES[release][file].1.to_vec();
            (Just(release), Just(file), mutated(bytes))
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_movielens_releases_import_or_are_refused_with_their_path(
        (release, file, bytes) in mutated_release()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("release");
        std::fs::create_dir(&src).unwrap();
        for (k, (name, original)) in RELEASES[release].iter().enumerate() {
            let written: &[u8] = if k == file { &bytes } else { original };
            std::fs::write(src.join(name), written).unwrap();
        }
        let dest = dir.path().join("out");
        let outcome = no_panic("importing a mutated release", || import_movielens(&src, &dest));
        if let Err(error) = outcome {
            let message = error.to_string();
            prop_assert!(
                message.contains(&src.display().to_string()),
                "the error does not name the release's file or folder:\n{}",
                message
            );
        }
    }
}
