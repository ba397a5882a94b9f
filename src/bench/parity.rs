//! `recsift bench parity`: every model family trained by one pipeline on the CPU and on
//! another device (a GPU), side by side, and the sentence encoder's vectors on both; a table
//! of metric gaps and timings that fails when a gap exceeds a tolerance (docs/gpu.md).
//!
//! The pipeline is a pool-protocol pipeline with one `train` node, its `score` node and an
//! `evaluate` node (`pipelines/quickstart.yaml`). Each [`PARITY_CASES`] entry replaces the
//! train node's model and the score node's uncertainty, runs a few rounds on each device
//! with the same seed, and compares the final metrics. Training is not bit-identical across
//! devices (other summation orders), so the comparison has a tolerance; a family whose gap
//! exceeds it computes something else on one device (issue 10's two_tower did).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::embed::{EmbedBenchOptions, VectorDiff, bench_embed_texts};
use crate::data::IdMap;
use crate::driver::{self, RunError, RunOptions};
use crate::error::UserFixable;
use crate::io::items::read_item_texts;
use crate::model::encoder::resolve_model_dir;
use crate::plan::params::DeviceChoice;
use crate::plan::{self, Plan, ProtocolPlan};
use crate::results::is_train_loss;
use crate::spec::LoadedSpec;

/// One model configuration the check trains on both devices.
#[derive(Clone, Copy, Debug)]
pub struct ParityCase {
    /// Its name in the table (`--only` selects by it).
    pub name: &'static str,
    /// The train node's new value (YAML).
    pub train: &'static str,
    /// The score node's uncertainty.
    pub uncertainty: &'static str,
}

/// Every family, each uncertainty it measures, both optimisers; short fits (10 epochs, 2
/// per round) so that the whole check takes minutes. The last two fine-tune the encoder's
/// top layer (its weights, or LoRA adapters) with even shorter fits: they need the encoder's
/// folder, and back-propagate through it.
pub const PARITY_CASES: &[ParityCase] = &[
    ParityCase {
        name: "mf/sgd",
        train: "{mf: {dim: 32, members: 2, epochs: 10, epochs_per_round: 2, optimizer: {sgd: {lr: 0.005}}}}",
        uncertainty: "ensemble",
    },
    ParityCase {
        name: "mf/adam",
        train: "{mf: {dim: 32, members: 2, epochs: 10, epochs_per_round: 2, optimizer: {adam: {}}}}",
        uncertainty: "ensemble",
    },
    ParityCase {
        name: "text_mf/sgd",
        train: "{text_mf: {dim: 32, members: 2, epochs: 10, epochs_per_round: 2, optimizer: {sgd: {lr: 0.005}}}}",
        uncertainty: "ensemble",
    },
    ParityCase {
        name: "text_mf/adam",
        train: "{text_mf: {dim: 32, members: 2, epochs: 10, epochs_per_round: 2, optimizer: {adam: {}}}}",
        uncertainty: "ensemble",
    },
    ParityCase {
        name: "two_tower/members/sgd",
        train: "{two_tower: {dim: 32, hidden: 64, members: 2, epochs: 10, epochs_per_round: 2, optimizer: {sgd: {lr: 0.005}}}}",
        uncertainty: "ensemble",
    },
    ParityCase {
        name: "two_tower/members/adam",
        train: "{two_tower: {dim: 32, hidden: 64, members: 2, epochs: 10, epochs_per_round: 2, optimizer: {adam: {}}}}",
        uncertainty: "ensemble",
    },
    ParityCase {
        name: "two_tower/mc_dropout/sgd",
        train: "{two_tower: {dim: 32, hidden: 64, mc_dropout: 4, epochs: 10, epochs_per_round: 2, optimizer: {sgd: {lr: 0.005}}}}",
        uncertainty: "mc_dropout",
    },
    ParityCase {
        name: "two_tower/mc_dropout/adam",
        train: "{two_tower: {dim: 32, hidden: 64, mc_dropout: 4, epochs: 10, epochs_per_round: 2, optimizer: {adam: {}}}}",
        uncertainty: "mc_dropout",
    },
    ParityCase {
        name: "text_mf/tune_layer/adam",
        train: "{text_mf: {dim: 32, members: 2, epochs: 3, epochs_per_round: 1, optimizer: {adam: {}}, tune: {layers: 1}}}",
        uncertainty: "ensemble",
    },
    ParityCase {
        name: "two_tower/tune_lora/adam",
        train: "{two_tower: {dim: 32, hidden: 64, members: 2, epochs: 3, epochs_per_round: 1, optimizer: {adam: {}}, tune: {layers: 1, lora: {}}}}",
        uncertainty: "ensemble",
    },
];

/// How `bench_parity` runs.
#[derive(Clone, Debug)]
pub struct ParityOptions {
    /// The pipeline (see the module docs for its shape).
    pub pipeline: PathBuf,
    /// The device compared with the CPU.
    pub device: DeviceChoice,
    /// Active-learning rounds after the initial fit.
    pub rounds: usize,
    /// Largest allowed gap of a final metric.
    pub tolerance: f64,
    /// Largest allowed gap of an encoder vector component.
    pub encoder_tolerance: f32,
    /// The encoder's folder, instead of resolving the pipeline's model name.
    pub model_dir: Option<PathBuf>,
    /// Where the runs write their results (`<case>-<device>` folders).
    pub out: PathBuf,
    /// The cases to run (all when empty).
    pub only: Vec<String>,
    /// Encoder threads.
    pub threads: usize,
}

/// The encoder on the device against the CPU, on the pipeline's item texts.
#[derive(Clone, Debug, Serialize)]
pub struct EncoderParity {
    /// Texts encoded.
    pub texts: usize,
    /// The device's vectors against the CPU's.
    pub diff: VectorDiff,
    /// Texts per second on the device.
    pub device_texts_per_s: f64,
}

/// One case's two runs.
#[derive(Clone, Debug, Serialize)]
pub struct ParityRow {
    /// The case's name.
    pub case: String,
    /// Each final metric: name, CPU value, device value.
    pub metrics: Vec<(String, f64, f64)>,
    /// Wall-clock seconds of the CPU run.
    pub cpu_s: f64,
    /// Wall-clock seconds of the device run.
    pub device_s: f64,
}

impl ParityRow {
    /// The metric with the largest absolute gap, and the gap (`None` without metrics).
    pub fn largest_gap(&self) -> Option<(&str, f64)> {
        self.metrics
            .iter()
            .map(|(name, cpu, device)| (name.as_str(), (cpu - device).abs()))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// What `bench_parity` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ParityReport {
    /// The device compared with the CPU.
    pub device: String,
    /// The largest allowed gap of a final metric.
    pub tolerance: f64,
    /// The largest allowed gap of an encoder vector component.
    pub encoder_tolerance: f32,
    /// The encoder's check (`None` when the device is the CPU or the pipeline embeds
    /// nothing).
    pub encoder: Option<EncoderParity>,
    /// One row per case.
    pub models: Vec<ParityRow>,
}

impl ParityReport {
    /// Every gap beyond the tolerance, in words (empty: the check passed). A NaN gap (a
    /// metric NaN on one device only) is one.
    pub fn failures(&self) -> Vec<String> {
        let beyond = |gap: f64, tolerance: f64| gap.is_nan() || gap > tolerance;
        let mut failures = Vec::new();
        if let Some(encoder) = &self.encoder
            && beyond(
                f64::from(encoder.diff.max_abs_diff),
                f64::from(self.encoder_tolerance),
            )
        {
            failures.push(format!(
                "encoder: vectors differ by up to {:.2e} (tolerance {:.0e})",
                encoder.diff.max_abs_diff, self.encoder_tolerance
            ));
        }
        for row in &self.models {
            if let Some((metric, gap)) = row.largest_gap()
                && beyond(gap, self.tolerance)
            {
                failures.push(format!(
                    "{}: {metric} differs by {gap:.4} (tolerance {})",
                    row.case, self.tolerance
                ));
            }
        }
        failures
    }
}

impl std::fmt::Display for ParityReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let device = &self.device;
        writeln!(
            f,
            "cpu against {device}; tolerance {} (metrics), {:.0e} (encoder vectors)",
            self.tolerance, self.encoder_tolerance
        )?;
        if let Some(e) = &self.encoder {
            writeln!(
                f,
                "encoder: {} texts, max abs diff {:.2e}, min cosine {:.7}, {:.0} texts/s on {device}",
                e.texts, e.diff.max_abs_diff, e.diff.min_cosine, e.device_texts_per_s
            )?;
        }
        writeln!(
            f,
            "{:<26} {:<10} {:>9} {:>9} {:>8} {:>7} {:>7}",
            "case", "metric", "cpu", device, "gap", "cpu s", "dev s"
        )?;
        for row in &self.models {
            for (k, (metric, cpu, dev)) in row.metrics.iter().enumerate() {
                let (case, times) = if k == 0 {
                    (
                        row.case.as_str(),
                        format!("{:>7.1} {:>7.1}", row.cpu_s, row.device_s),
                    )
                } else {
                    ("", String::new())
                };
                writeln!(
                    f,
                    "{case:<26} {metric:<10} {cpu:>9.4} {dev:>9.4} {:>8.4} {times}",
                    (cpu - dev).abs()
                )?;
            }
        }
        let failures = self.failures();
        if failures.is_empty() {
            write!(f, "every gap within {}", self.tolerance)
        } else {
            write!(f, "beyond the tolerance:\n  {}", failures.join("\n  "))
        }
    }
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    /// The pipeline is not one the check can vary, or an option is out of range.
    #[error("{0}")]
    Setup(String),
    /// A run failed.
    #[error("{case} on {device}: {source}")]
    Run {
        /// The case.
        case: String,
        /// The device it ran on.
        device: String,
        /// Why (boxed: a run's error is large).
        source: Box<RunError>,
    },
}

impl UserFixable for ParityError {
    fn is_user_error(&self) -> bool {
        match self {
            ParityError::Setup(_) => true,
            ParityError::Run { source, .. } => source.is_user_error(),
        }
    }
}

/// What the check sets in every run: the node ids it varies, and the encoder's folder.
struct Nodes {
    train: String,
    score: String,
    /// With `--model-dir` and an embed node: `nodes.<embed>.embed.model_dir=<absolute
    /// --model-dir>`, and a vector cache in the output folder (that folder's vectors have
    /// their own cache key, so the pipeline's cache is neither read nor written).
    encoder: Vec<String>,
}

/// Trains every selected case on the CPU and on `options.device` and compares them, after
/// comparing the encoder's vectors of the pipeline's item texts on both.
pub fn bench_parity(options: &ParityOptions) -> Result<ParityReport, ParityError> {
    let setup = |message: String| ParityError::Setup(message);
    let cases: Vec<&ParityCase> = if options.only.is_empty() {
        PARITY_CASES.iter().collect()
    } else {
        options
            .only
            .iter()
            .map(|name| {
                PARITY_CASES.iter().find(|c| c.name == name).ok_or_else(|| {
                    setup(format!(
                        "--only {name}: no such case; the cases are {}",
                        PARITY_CASES
                            .iter()
                            .map(|c| c.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let base = load(&options.pipeline, &[])?;
    let mut nodes = varied_nodes(&base).map_err(|why| {
        setup(format!(
            "{}: {why}; bench parity varies a pool pipeline with one train node and its \
             score node, such as pipelines/quickstart.yaml",
            options.pipeline.display()
        ))
    })?;
    if let (Some(dir), Some(embed)) = (&options.model_dir, &base.embed) {
        // `--set` paths are relative to the pipeline file; `--model-dir` is relative to
        // where the command runs.
        std::fs::create_dir_all(&options.out)
            .map_err(|e| setup(format!("{}: {e}", options.out.display())))?;
        let absolute = |path: &Path| {
            std::path::absolute(path).map_err(|e| setup(format!("{}: {e}", path.display())))
        };
        nodes.encoder = vec![
            format!(
                "nodes.{}.embed.model_dir={}",
                embed.node,
                absolute(dir)?.display()
            ),
            format!(
                "nodes.{}.embed.cache={}",
                embed.node,
                absolute(&options.out.join("embeddings.parquet"))?.display()
            ),
        ];
    }
    let encoder = match options.device {
        DeviceChoice::Cpu => None,
        DeviceChoice::Cuda(_) => encoder_parity(&base, options)?,
    };
    let mut models = Vec::new();
    for case in cases {
        let cpu = run_case(options, &nodes, case, DeviceChoice::Cpu)?;
        let device = run_case(options, &nodes, case, options.device)?;
        let metrics = cpu
            .0
            .iter()
            .filter(|(name, _)| !is_train_loss(name))
            .map(|(name, value)| {
                let other = device
                    .0
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(f64::NAN, |m| m.1);
                (name.clone(), *value, other)
            })
            .collect();
        models.push(ParityRow {
            case: case.name.to_string(),
            metrics,
            cpu_s: cpu.1,
            device_s: device.1,
        });
    }
    Ok(ParityReport {
        device: options.device.to_string(),
        tolerance: options.tolerance,
        encoder_tolerance: options.encoder_tolerance,
        encoder,
        models,
    })
}

fn load(pipeline: &Path, set: &[String]) -> Result<Plan, ParityError> {
    let loaded = LoadedSpec::load(pipeline, set).map_err(|d| ParityError::Setup(d.to_string()))?;
    plan::build(&loaded).map_err(|d| ParityError::Setup(d.to_string()))
}

/// The train and score node of a pool pipeline with one model, or why it has none.
fn varied_nodes(plan: &Plan) -> Result<Nodes, String> {
    if !matches!(plan.protocol, ProtocolPlan::Pool(_)) {
        return Err("its protocol is not `pool`".into());
    }
    match (plan.models.trained.as_slice(), plan.models.fused.is_empty()) {
        ([model], true) if plan.score.as_ref().is_some_and(|s| s.model == model.node) => {}
        _ => return Err("it does not score exactly one train node".into()),
    }
    if plan.evaluate.is_empty() {
        return Err("it has no evaluate node".into());
    }
    let score = plan
        .graph
        .iter()
        .find(|n| n.operator == "score")
        .ok_or_else(|| "it has no score node".to_string())?;
    Ok(Nodes {
        train: plan.models.trained[0].node.clone(),
        score: score.id.clone(),
        encoder: Vec::new(),
    })
}

/// Runs `case` on `device`: its final metrics and wall-clock seconds.
fn run_case(
    options: &ParityOptions,
    nodes: &Nodes,
    case: &ParityCase,
    device: DeviceChoice,
) -> Result<(Vec<(String, f64)>, f64), ParityError> {
    let mut set = vec![
        format!("nodes.{}.train={}", nodes.train, case.train),
        format!(
            "nodes.{}.score.uncertainty={}",
            nodes.score, case.uncertainty
        ),
        format!("protocol.pool.rounds={}", options.rounds),
        format!("device={device}"),
    ];
    set.extend(nodes.encoder.iter().cloned());
    let plan = load(&options.pipeline, &set)?;
    let folder = format!("{}-{device}", case.name.replace('/', "-")).replace(':', "");
    let run_options = RunOptions {
        out_dir: options.out.join(folder),
        force: true,
        progress: false,
        resume: false,
    };
    let start = Instant::now();
    let summary = driver::run(&plan, &run_options).map_err(|source| ParityError::Run {
        case: case.name.to_string(),
        device: device.to_string(),
        source: Box::new(source),
    })?;
    Ok((
        summary.metrics.into_iter().collect(),
        start.elapsed().as_secs_f64(),
    ))
}

/// The encoder on the device against the CPU, on the pipeline's item texts (`None` when
/// the pipeline embeds nothing).
fn encoder_parity(
    plan: &Plan,
    options: &ParityOptions,
) -> Result<Option<EncoderParity>, ParityError> {
    let (Some(embed), Some(items)) = (&plan.embed, &plan.data.items) else {
        return Ok(None);
    };
    let setup = |e: &dyn std::fmt::Display| ParityError::Setup(e.to_string());
    let texts = read_item_texts(items, &mut IdMap::default()).map_err(|e| setup(&e))?;
    let texts: Vec<&str> = texts.texts.iter().flatten().map(String::as_str).collect();
    let explicit = options.model_dir.as_deref().or(embed.model_dir.as_deref());
    let dir = resolve_model_dir(&embed.model, explicit).map_err(|e| setup(&e))?;
    let embed_options = EmbedBenchOptions {
        device: options.device,
        threads: options.threads,
        batch: embed.batch_size,
        reference: None,
        compare_cpu: true,
    };
    let report = bench_embed_texts(&texts, &dir, &embed_options).map_err(|e| setup(&e))?;
    Ok(report.cpu.map(|diff| EncoderParity {
        texts: report.texts,
        diff,
        device_texts_per_s: report.texts_per_s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &str, metrics: &[(&str, f64, f64)]) -> ParityRow {
        ParityRow {
            case: case.into(),
            metrics: metrics.iter().map(|&(n, a, b)| (n.into(), a, b)).collect(),
            cpu_s: 1.0,
            device_s: 0.5,
        }
    }

    #[test]
    fn a_gap_beyond_the_tolerance_or_a_metric_missing_on_one_side_fails_the_check() {
        let report = ParityReport {
            device: "cuda:0".into(),
            tolerance: 0.01,
            encoder_tolerance: 1e-4,
            encoder: Some(EncoderParity {
                texts: 3,
                diff: VectorDiff {
                    vectors: 3,
                    max_abs_diff: 3e-7,
                    min_cosine: 1.0,
                },
                device_texts_per_s: 10.0,
            }),
            models: vec![
                row("mf/sgd", &[("rmse", 0.95, 0.951), ("ndcg@10", 0.02, 0.021)]),
                row(
                    "two_tower/mc_dropout/sgd",
                    &[("rmse", 0.95, 0.97), ("mae", 0.7, 0.7)],
                ),
                row("text_mf/adam", &[("rmse", 0.95, f64::NAN)]),
            ],
        };
        assert_eq!(report.models[1].largest_gap().unwrap().0, "rmse");
        let failures = report.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].starts_with("two_tower/mc_dropout/sgd: rmse differs by 0.0200"));
        assert!(failures[1].starts_with("text_mf/adam: rmse differs by NaN"));
        let table = report.to_string();
        assert!(table.contains("beyond the tolerance"), "{table}");

        let passing = ParityReport {
            models: vec![report.models[0].clone()],
            ..report
        };
        assert!(passing.failures().is_empty());
        assert!(passing.to_string().ends_with("every gap within 0.01"));
    }
}
