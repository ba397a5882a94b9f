//! The driver: loads the data a plan names, runs the protocol's rounds (training with the
//! model, re-scoring with the incremental engine, selecting with the strategy) and writes
//! the results.
//!
//! Results land in the output directory as `rounds.parquet`, `selections.parquet`,
//! `latency.json`, plots, and last `summary.json`: a directory without `summary.json` is
//! an interrupted run, never a complete one.

pub mod cluster;
pub mod embed;
pub mod evaluation;
pub mod experiment;
pub mod pool;
pub mod replay;
pub mod rows;
pub mod selection;
pub mod session;
pub mod split;
pub mod windows;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::data::{IdMap, Interaction, ItemEmbeddings, LabelKind};
use crate::dataflow::EngineError;
use crate::io::IoError;
use crate::io::events::read_events;
use crate::io::results::OutputDir;
use crate::metrics::latency::LatencySummary;
use crate::model::ModelError;
use crate::plan::{CandidateSet, Plan, ProtocolPlan, RecommendedUsers, SplitPlan};
use crate::report;
use crate::results::RoundRecord;

use self::embed::ItemEmbedder;
use self::evaluation::ItemsPerUser;
use self::experiment::{Experiment, recommend};
use self::pool::{PoolExperiment, PoolStart};
use self::replay::ReplayExperiment;
use self::selection::SelectionExperiment;
use self::split::{SplitEvents, is_cold_item, split_events};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading inputs or writing results failed.
    #[error(transparent)]
    Io(Box<IoError>),
    /// Building or training the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The incremental engine failed.
    #[error("incremental engine: {0}")]
    Engine(#[from] EngineError),
    /// The data and the pipeline do not fit together (empty pool, budget too large, ...).
    #[error("{message}\n    field: {field}\n    help: {help}")]
    Experiment {
        /// The pipeline field to change.
        field: String,
        /// What is wrong.
        message: String,
        /// How to fix it.
        help: String,
    },
}

impl From<IoError> for RunError {
    fn from(error: IoError) -> Self {
        RunError::Io(Box::new(error))
    }
}

impl RunError {
    /// Whether the user can fix this (exit code 2) rather than an internal failure (1).
    pub fn is_user_error(&self) -> bool {
        match self {
            RunError::Io(e) => e.is_user_error(),
            RunError::Model(ModelError::Candle(_)) | RunError::Engine(_) => false,
            RunError::Model(_) | RunError::Experiment { .. } => true,
        }
    }
}

/// How a run writes its results.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Results directory (the plan's, or `--out`).
    pub out_dir: PathBuf,
    /// Overwrite a non-empty results directory.
    pub force: bool,
    /// Print a line per round to stderr.
    pub progress: bool,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Experiment name.
    pub name: String,
    /// recsift's version.
    pub recsift_version: &'static str,
    /// The seed used.
    pub seed: u64,
    /// Timely workers used, per process.
    pub workers: usize,
    /// Processes the run was spread over (see `docs/cluster.md`).
    pub processes: usize,
    /// The resolved plan.
    pub config: Plan,
    /// Metrics of the final round (`rmse`, `mae`, `ndcg@10`, `recall@10`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Every round's metrics, labels and timings.
    pub history: Vec<RoundSummary>,
    /// Selected samples over all rounds.
    pub selected: u64,
    /// Wall time of the whole run in seconds.
    pub wall_s: f64,
}

/// One round in `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundSummary {
    /// Round number.
    pub round: u32,
    /// Labels used.
    pub labelled: u64,
    /// Samples selected this round.
    pub selected: u64,
    /// Samples the engine re-scored (states inserted).
    pub rescored: u64,
    /// Metric values (non-finite values are written as null).
    pub metrics: BTreeMap<String, Option<f64>>,
    /// Stage timings in milliseconds.
    pub timings_ms: BTreeMap<String, f64>,
}

impl RoundSummary {
    /// The round as a record (metrics in name order; a null metric is `NaN`).
    pub fn into_record(self) -> RoundRecord {
        RoundRecord {
            round: self.round,
            labelled: self.labelled,
            selected: self.selected,
            rescored: self.rescored,
            metrics: self
                .metrics
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
                .collect(),
            timings_ms: self.timings_ms.into_iter().collect(),
        }
    }
}

impl From<&RoundRecord> for RoundSummary {
    fn from(r: &RoundRecord) -> Self {
        Self {
            round: r.round,
            labelled: r.labelled,
            selected: r.selected,
            rescored: r.rescored,
            metrics: r
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), v.is_finite().then_some(*v)))
                .collect(),
            timings_ms: r.timings_ms.iter().cloned().collect(),
        }
    }
}

/// `latency.json`.
#[derive(Clone, Debug, Serialize)]
struct LatencyFile {
    /// Percentiles per operator over the whole run.
    operators: BTreeMap<String, LatencySummary>,
    /// Stage timings per round, in milliseconds.
    rounds: Vec<BTreeMap<String, f64>>,
}

/// Events of an experiment with a train/test split, after loading and splitting.
#[derive(Clone, Debug)]
pub struct ExperimentData {
    /// Training events; sample `k` is `train[k]`.
    pub train: Vec<Interaction>,
    /// Validation events (empty when the split has none).
    pub validation: Vec<Interaction>,
    /// Test events.
    pub test: Vec<Interaction>,
    /// Each user's validation items (excluded from the candidates when ranking for test).
    pub validation_items: ItemsPerUser,
    /// Each user's items over train, validation and test (sampled negatives avoid them).
    pub user_events: ItemsPerUser,
    /// The test events of cold items (items held out of training entirely), if the split
    /// has any.
    pub cold_test: Vec<Interaction>,
    /// Raw user ids.
    pub users: IdMap,
    /// Raw item ids (the events' items first, then items known only from the item file).
    pub items: IdMap,
    /// What labels mean.
    pub label_kind: LabelKind,
    /// Text vectors of every item with a row in the item file, if the pipeline embeds.
    pub text: Option<ItemEmbeddings>,
    /// Time spent producing `text` (cache lookups and encoding).
    pub embed_time: Duration,
    /// Time spent reading and splitting the events.
    pub load_time: Duration,
}

/// Loads and splits the events of a plan whose protocol has a split.
///
/// # Panics
/// For a replay, which streams its events instead.
pub fn load_data(plan: &Plan) -> Result<ExperimentData, RunError> {
    let load_started = Instant::now();
    let mut users = IdMap::new();
    let mut items = IdMap::new();
    let split = plan.protocol.split().expect("a replay streams its events");
    let SplitEvents {
        train,
        validation,
        test,
    } = match split {
        SplitPlan::Files {
            train,
            test,
            validation,
        } => SplitEvents {
            train: read_events(train, &mut users, &mut items)?,
            validation: match validation {
                Some(source) => read_events(source, &mut users, &mut items)?,
                None => Vec::new(),
            },
            test: read_events(test, &mut users, &mut items)?,
        },
        split => {
            let source = plan
                .data
                .events
                .as_ref()
                .expect("the planner requires events without a files split");
            let events = read_events(source, &mut users, &mut items)?;
            split_events(&events, split, plan.seed)
        }
    };
    let cold_test = match split {
        SplitPlan::Random { cold_items, .. } if *cold_items > 0.0 => test
            .iter()
            .filter(|e| is_cold_item(e.item, *cold_items, plan.seed))
            .copied()
            .collect(),
        _ => Vec::new(),
    };
    let load_time = load_started.elapsed();
    let started = Instant::now();
    let text = match (&plan.embed, &plan.data.items) {
        (Some(embed), Some(source)) => {
            let mut embedder = ItemEmbedder::open(embed, source, &mut items, plan.device)?;
            embedder.ensure(0..embedder.len() as u32)?;
            Some(embedder.vectors().clone())
        }
        _ => None,
    };
    check_sampled_negatives(plan, items.len())?;
    let validation_items = ItemsPerUser::of(&validation);
    let user_events = ItemsPerUser::of(&train)
        .union(&validation_items)
        .union(&ItemsPerUser::of(&test));
    Ok(ExperimentData {
        train,
        validation,
        test,
        validation_items,
        user_events,
        cold_test,
        users,
        items,
        label_kind: plan.data.label_kind,
        text,
        embed_time: started.elapsed(),
        load_time,
    })
}

/// Sampled candidates need more items than the negatives asked for: a catalogue of
/// `catalogue` items cannot supply `negatives` items a user has no event with.
fn check_sampled_negatives(plan: &Plan, catalogue: usize) -> Result<(), RunError> {
    let Some(evaluate) = &plan.evaluate else {
        return Ok(());
    };
    match evaluate.candidates {
        CandidateSet::Sampled { negatives } if negatives >= catalogue => {
            Err(RunError::Experiment {
                field: format!(
                    "nodes.{}.evaluate.candidates.sampled.negatives",
                    evaluate.node
                ),
                message: format!(
                    "{negatives} sampled negatives per user, but the catalogue has only {catalogue} items"
                ),
                help: format!(
                    "use fewer negatives (at most a fraction of {catalogue}, e.g. 100), or `candidates: all`, which ranks the whole catalogue"
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Starts the experiment a plan describes (round 0 and any warm-up run here).
/// `track_scores` keeps every maintained score for reference checks; `progress` prints
/// what takes time before round 0 (sorting an out-of-order replay log) on stderr.
pub fn start_experiment(
    plan: &Plan,
    track_scores: bool,
    progress: bool,
) -> Result<Box<dyn Experiment>, RunError> {
    Ok(match &plan.protocol {
        ProtocolPlan::Pool(pool) => Box::new(PoolExperiment::start(
            plan,
            pool,
            PoolStart::train(plan, pool)?,
            track_scores,
        )?),
        ProtocolPlan::Selection(selection) => Box::new(SelectionExperiment::start(
            plan,
            selection,
            load_data(plan)?,
            track_scores,
        )?),
        ProtocolPlan::Replay(replay) => Box::new(ReplayExperiment::start(
            plan,
            replay,
            track_scores,
            progress,
        )?),
    })
}

/// Runs `plan` to completion and writes its results; returns the summary written.
pub fn run(plan: &Plan, options: &RunOptions) -> Result<Summary, RunError> {
    execute(plan, options, None)
}

/// As [`run`], continuing from `start`: a pool experiment's round 0 trained for a plan
/// that [`PoolStart::serves`] `plan` (a study's arms of one seed share it). The results
/// equal those of [`run`]; only round 0's loading, embedding and training are not repeated
/// (round 0's timings are those of the shared computation).
pub fn run_from(plan: &Plan, options: &RunOptions, start: PoolStart) -> Result<Summary, RunError> {
    execute(plan, options, Some(start))
}

fn execute(
    plan: &Plan,
    options: &RunOptions,
    start: Option<PoolStart>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    // In a cluster, process 0 alone writes; the others run the same rounds silently.
    let writes = plan.cluster.writes_results();
    let out = writes
        .then(|| OutputDir::prepare(&options.out_dir, options.force))
        .transpose()?;
    crate::dataflow::connect_early(&cluster::topology(plan)?)?;
    let progress = options.progress && writes;
    let mut experiment: Box<dyn Experiment> = match (start, &plan.protocol) {
        (Some(start), ProtocolPlan::Pool(pool)) => {
            Box::new(PoolExperiment::start(plan, pool, start, false)?)
        }
        _ => start_experiment(plan, false, progress)?,
    };
    let planned = experiment.planned_rounds();
    if progress {
        for record in experiment.history() {
            print_progress(planned, record);
        }
    }
    let mut recommendations = Vec::new();
    let exports = plan.output.recommendations;
    let mut export = |experiment: &dyn Experiment, last: bool| {
        if let Some(export) = exports.filter(|e| last || e.every_round) {
            let users = match export.users {
                RecommendedUsers::Test => experiment.test_users(),
                RecommendedUsers::All => (0..experiment.ids().0.len() as u32).collect(),
            };
            let round = experiment.history().last().map_or(0, |r| r.round);
            recommendations.extend(recommend(experiment, &users, export.k, round));
        }
    };
    while experiment.has_next() {
        export(experiment.as_ref(), false);
        let record = experiment.next_round()?;
        if progress {
            print_progress(planned, record);
        }
    }
    export(experiment.as_ref(), true);
    let output = experiment.finish()?;
    let last = output.rounds.last().expect("round 0 is recorded");
    let mut summary = Summary {
        name: plan.name.clone(),
        recsift_version: env!("CARGO_PKG_VERSION"),
        seed: plan.seed,
        workers: plan.workers,
        processes: plan.cluster.processes,
        config: plan.clone(),
        metrics: last.metrics.iter().cloned().collect(),
        history: output.rounds.iter().map(RoundSummary::from).collect(),
        selected: output.selections.len() as u64,
        wall_s: 0.0,
    };
    let Some(out) = out else {
        summary.wall_s = started.elapsed().as_secs_f64();
        return Ok(summary);
    };
    if exports.is_some() {
        out.write_recommendations("recommendations.parquet", &recommendations)?;
    }
    out.write_rounds("rounds.parquet", &output.rounds)?;
    out.write_selections("selections.parquet", &output.selections)?;
    out.write_json(
        "latency.json",
        &LatencyFile {
            operators: output.latency.summary(),
            rounds: output
                .rounds
                .iter()
                .map(|r| r.timings_ms.iter().cloned().collect())
                .collect(),
        },
    )?;
    if plan.output.plots {
        for (name, bytes) in report::learning_curves(&plan.name, &output.rounds) {
            out.write_bytes(&name, &bytes)?;
        }
    }
    summary.wall_s = started.elapsed().as_secs_f64();
    out.write_json("summary.json", &summary)?;
    Ok(summary)
}

fn print_progress(planned: Option<u32>, record: &RoundRecord) {
    let metrics: Vec<String> = record
        .metrics
        .iter()
        .filter(|(name, _)| name != "train_loss")
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect();
    let total_ms: f64 = record.timings_ms.iter().map(|(_, v)| v).sum();
    eprintln!(
        "round {:>3}/{}  labelled {:>7}  rescored {:>7}  {}  ({total_ms:.0} ms)",
        record.round,
        planned.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        record.labelled,
        record.rescored,
        metrics.join("  "),
    );
}
