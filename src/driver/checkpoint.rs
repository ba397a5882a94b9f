//! Checkpoints: what `recsift run --resume` continues from after a crash.
//!
//! After every `checkpoint.every`-th round (or replay window), once `checkpoint.min_interval_s`
//! seconds have passed since the last save, the driver saves the experiment's [`Progress`]
//! to `checkpoint.safetensors` in the results folder, replacing the previous one atomically
//! ([`crate::io::checkpoint`]). A checkpoint holds only what
//! cannot be recomputed exactly from the pipeline and its data:
//!
//! - the model's state: parameters, optimiser moments and step counters, random generator
//!   positions, negative-sampler state ([`ModelState`]);
//! - the rounds recorded so far, every selection (and so the labelled set), the
//!   recommendations exported so far, and a replay's running error sums.
//!
//! Everything else is rebuilt on resume: the data is read and split again (deterministic for
//! a seed), the labelled set follows from the initial labels and the selections, the engine
//! is started again and scores the pool from the restored model's rows (the engine's
//! reference tests show an incrementally maintained state equals a from-scratch scoring bit
//! for bit), and the strategy's ranking follows from those scores. A resumed run therefore
//! writes the same `rounds.parquet` (apart from timings), `selections.parquet` and
//! `summary.json` metrics as an uninterrupted one, on any number of workers.
//!
//! A checkpoint is refused when another pipeline wrote it (the plans differ beyond the run's
//! layout: workers, processes, output folder, checkpoint interval) or another recsift
//! version did; the message says which fields or versions differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::RawId;
use crate::io::checkpoint::{read_checkpoint, write_checkpoint};
use crate::model::state::ModelState;
use crate::plan::Plan;
use crate::results::{Recommendation, RoundRecord, SelectionRecord};

use super::RunError;

/// The checkpoint's file name in the results folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Version of the checkpoint document's layout.
const FORMAT: u32 = 1;

/// Prefix of the model's tensors in the file.
const MODEL_PREFIX: &str = "model/";

/// What an experiment saves to be resumed (see the [module docs](self)).
pub struct Progress {
    /// The rounds recorded so far, round 0 first.
    pub history: Vec<RoundRecord>,
    /// Every selection so far, in the order made.
    pub selections: Vec<SelectionRecord>,
    /// The model's state after the last recorded round.
    pub model: ModelState,
    /// A replay's prequential error sums (squared, absolute, count).
    pub prequential: Option<(f64, f64, u64)>,
}

/// A loaded checkpoint: the experiment's progress and the recommendations exported so far.
pub struct Checkpoint {
    /// What the experiment resumes from.
    pub progress: Progress,
    /// Top-K lists exported in the rounds recorded.
    pub recommendations: Vec<Recommendation>,
}

/// The checkpoint file of results folder `out_dir`.
pub fn checkpoint_path(out_dir: &Path) -> PathBuf {
    out_dir.join(CHECKPOINT_FILE)
}

/// The JSON document of a checkpoint file.
#[derive(Serialize, Deserialize)]
struct Document {
    format: u32,
    recsift_version: String,
    pipeline: String,
    /// The plan, as [`identity`] gives it.
    plan: Value,
    rounds: Vec<RoundWire>,
    selections: Vec<SelectionWire>,
    recommendations: Vec<RecommendationWire>,
    model_kind: String,
    model_scalars: Value,
    /// Squared and absolute error sums as `f64` bit patterns, and the count.
    prequential: Option<(u64, u64, u64)>,
}

/// Floats travel as bit patterns: JSON would not give every one back exactly.
#[derive(Serialize, Deserialize)]
struct RoundWire {
    round: u32,
    labelled: u64,
    selected: u64,
    rescored: u64,
    metrics: Vec<(String, u64)>,
    timings_ms: Vec<(String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct SelectionWire {
    round: u32,
    sample: u32,
    user_id: IdWire,
    item_id: IdWire,
    score: u64,
}

#[derive(Serialize, Deserialize)]
struct RecommendationWire {
    round: u32,
    user_id: IdWire,
    rank: u32,
    item_id: IdWire,
    score: u32,
}

#[derive(Serialize, Deserialize)]
enum IdWire {
    Int(i64),
    Str(String),
}

impl From<&RawId> for IdWire {
    fn from(id: &RawId) -> Self {
        match id {
            RawId::Int(v) => IdWire::Int(*v),
            RawId::Str(s) => IdWire::Str(s.to_string()),
        }
    }
}

impl From<IdWire> for RawId {
    fn from(id: IdWire) -> Self {
        match id {
            IdWire::Int(v) => RawId::Int(v),
            IdWire::Str(s) => RawId::Str(s.into()),
        }
    }
}

fn to_bits(values: &[(String, f64)]) -> Vec<(String, u64)> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.to_bits()))
        .collect()
}

fn from_bits(values: Vec<(String, u64)>) -> Vec<(String, f64)> {
    values
        .into_iter()
        .map(|(k, v)| (k, f64::from_bits(v)))
        .collect()
}

/// What identifies a pipeline for resuming: its resolved plan as JSON, without what may
/// change between an interrupted run and its resumption (workers, processes, results
/// folder, checkpoint interval, the pipeline file's path).
fn identity(plan: &Plan) -> Result<Value, RunError> {
    let mut value = serde_json::to_value(plan).map_err(|e| RunError::Resume(e.to_string()))?;
    if let Value::Object(map) = &mut value {
        for key in ["workers", "cluster", "source"] {
            map.remove(key);
        }
        if let Some(Value::Object(output)) = map.get_mut("output") {
            output.remove("dir");
            output.remove("checkpoint_every");
            output.remove("checkpoint_min_interval_s");
        }
    }
    Ok(value)
}

/// Saves `progress` and `recommendations` of `plan`'s run to `path`, atomically.
pub fn save(
    path: &Path,
    plan: &Plan,
    progress: &Progress,
    recommendations: &[Recommendation],
) -> Result<(), RunError> {
    let document = Document {
        format: FORMAT,
        recsift_version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: plan.name.clone(),
        plan: identity(plan)?,
        rounds: progress
            .history
            .iter()
            .map(|r| RoundWire {
                round: r.round,
                labelled: r.labelled,
                selected: r.selected,
                rescored: r.rescored,
                metrics: to_bits(&r.metrics),
                timings_ms: to_bits(&r.timings_ms),
            })
            .collect(),
        selections: progress
            .selections
            .iter()
            .map(|s| SelectionWire {
                round: s.round,
                sample: s.sample,
                user_id: (&s.user_id).into(),
                item_id: (&s.item_id).into(),
                score: s.score.to_bits(),
            })
            .collect(),
        recommendations: recommendations
            .iter()
            .map(|r| RecommendationWire {
                round: r.round,
                user_id: (&r.user_id).into(),
                rank: r.rank,
                item_id: (&r.item_id).into(),
                score: r.score.to_bits(),
            })
            .collect(),
        model_kind: progress.model.kind.clone(),
        model_scalars: progress.model.scalars.clone(),
        prequential: progress
            .prequential
            .map(|(squared, absolute, n)| (squared.to_bits(), absolute.to_bits(), n)),
    };
    let json = serde_json::to_string(&document).map_err(|e| RunError::Resume(e.to_string()))?;
    let tensors = progress
        .model
        .tensors
        .iter()
        .map(|(name, t)| (format!("{MODEL_PREFIX}{name}"), t));
    write_checkpoint(path, tensors, &json)?;
    Ok(())
}

/// Loads the checkpoint at `path`, refusing one that another pipeline or another recsift
/// version wrote.
pub fn load(path: &Path, plan: &Plan) -> Result<Checkpoint, RunError> {
    let contents = read_checkpoint(path)?;
    let document: Document = serde_json::from_str(&contents.document).map_err(|e| {
        RunError::Resume(format!(
            "{}: the checkpoint's document is unreadable ({e}); start the run over without \
             --resume",
            path.display()
        ))
    })?;
    let refuse = |why: String, help: &str| {
        RunError::Resume(format!("{}: {why}\n    help: {help}", path.display()))
    };
    let version = env!("CARGO_PKG_VERSION");
    if document.recsift_version != version || document.format != FORMAT {
        return Err(refuse(
            format!(
                "the checkpoint was written by recsift {} (checkpoint format {}); this is \
                 recsift {version} (format {FORMAT})",
                document.recsift_version, document.format
            ),
            "resume with the recsift that wrote it, or start over without --resume (add \
             --force to replace the folder's files)",
        ));
    }
    let differences = differences("", &document.plan, &identity(plan)?);
    if !differences.is_empty() {
        let shown: Vec<&str> = differences.iter().take(8).map(String::as_str).collect();
        return Err(refuse(
            format!(
                "the checkpoint belongs to another pipeline (`{}`); the plans differ in: {}{}",
                document.pipeline,
                shown.join(", "),
                if differences.len() > shown.len() {
                    format!(" and {} more", differences.len() - shown.len())
                } else {
                    String::new()
                }
            ),
            "resume with the pipeline (and --set overrides) that started the run, or write \
             this one's results elsewhere with --out",
        ));
    }
    let mut tensors = BTreeMap::new();
    for (name, tensor) in contents.tensors {
        let Some(name) = name.strip_prefix(MODEL_PREFIX) else {
            return Err(refuse(
                format!("unexpected tensor `{name}`"),
                "start the run over without --resume",
            ));
        };
        tensors.insert(name.to_string(), tensor);
    }
    let progress = Progress {
        history: document
            .rounds
            .into_iter()
            .map(|r| RoundRecord {
                round: r.round,
                labelled: r.labelled,
                selected: r.selected,
                rescored: r.rescored,
                metrics: from_bits(r.metrics),
                timings_ms: from_bits(r.timings_ms),
            })
            .collect(),
        selections: document
            .selections
            .into_iter()
            .map(|s| SelectionRecord {
                round: s.round,
                sample: s.sample,
                user_id: s.user_id.into(),
                item_id: s.item_id.into(),
                score: f64::from_bits(s.score),
            })
            .collect(),
        model: ModelState {
            kind: document.model_kind,
            tensors,
            scalars: document.model_scalars,
        },
        prequential: document
            .prequential
            .map(|(squared, absolute, n)| (f64::from_bits(squared), f64::from_bits(absolute), n)),
    };
    if progress.history.is_empty() {
        return Err(refuse(
            "the checkpoint records no round".into(),
            "start the run over without --resume",
        ));
    }
    Ok(Checkpoint {
        progress,
        recommendations: document
            .recommendations
            .into_iter()
            .map(|r| Recommendation {
                round: r.round,
                user_id: r.user_id.into(),
                rank: r.rank,
                item_id: r.item_id.into(),
                score: f32::from_bits(r.score),
            })
            .collect(),
    })
}

/// The paths at which two JSON values differ, as `path: saved -> now`.
fn differences(path: &str, saved: &Value, now: &Value) -> Vec<String> {
    match (saved, now) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|key| {
                    let inner = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    differences(
                        &inner,
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                    )
                })
                .collect()
        }
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!("{path}: {a} -> {b}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_every_changed_path() {
        let saved = serde_json::json!({"seed": 1, "train": {"epochs": 10, "lr": 0.1}});
        let now = serde_json::json!({"seed": 1, "train": {"epochs": 20, "lr": 0.1}, "x": 2});
        assert_eq!(
            differences("", &saved, &now),
            ["train.epochs: 10 -> 20", "x: null -> 2"]
        );
    }
}
