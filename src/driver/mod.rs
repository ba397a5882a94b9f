//! The driver: loads the data a plan names, runs the protocol's rounds (training with the
//! model, re-scoring with the incremental engine, selecting with the strategy) and writes
//! the results.
//!
//! Results land in the output directory as `rounds.parquet`, `selections.parquet`,
//! `latency.json`, plots, and last `summary.json`: a directory without `summary.json` is
//! an interrupted run, never a complete one.

pub mod checkpoint;
pub mod cluster;
pub mod embed;
pub mod evaluation;
pub mod experiment;
pub mod pool;
pub mod replay;
pub mod rounds;
pub mod rows;
mod seen_events;
pub mod selection;
pub mod session;
pub mod split;
pub mod windows;

use crate::error::UserFixable;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::data::{IdMap, Interaction, ItemEmbeddings, LabelKind};
use crate::dataflow::EngineError;
use crate::io::IoError;
use crate::io::events::read_events;
use crate::io::results::{OutputDir, SUMMARY_FILE};
use crate::io::shares::ReadShare;
use crate::metrics::latency::LatencySummary;
use crate::model::ModelError;
use crate::plan::{CandidateSet, ClusterPlan, Plan, ProtocolPlan, RecommendedUsers, SplitPlan};
use crate::report;
use crate::results::{RoundRecord, is_train_loss};

use self::embed::{EncoderSources, ItemEmbedder};
use self::evaluation::ItemsPerUser;
use self::experiment::{Experiment, last_round, recommend};
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
    /// `--resume` cannot continue from what the results folder holds.
    #[error("cannot resume: {0}")]
    Resume(String),
}

impl From<IoError> for RunError {
    fn from(error: IoError) -> Self {
        RunError::Io(Box::new(error))
    }
}

impl UserFixable for RunError {
    /// Whether the user can fix this (exit code 2) rather than an internal failure (1).
    fn is_user_error(&self) -> bool {
        match self {
            RunError::Io(e) => e.is_user_error(),
            RunError::Model(ModelError::Candle(_)) | RunError::Engine(_) => false,
            RunError::Model(_) | RunError::Experiment { .. } | RunError::Resume(_) => true,
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
    /// Continue from the folder's checkpoint, if it has one (see [`checkpoint`]).
    pub resume: bool,
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
    /// Wall time of the whole run in seconds (of this process: a resumed run counts from
    /// its resumption).
    pub wall_s: f64,
    /// Seconds spent saving checkpoints (included in `wall_s`).
    pub checkpoint_s: f64,
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
    /// Percentiles per operator over the whole run (of this process, when resumed).
    operators: BTreeMap<String, LatencySummary>,
    /// Stage timings per round, in milliseconds.
    rounds: Vec<BTreeMap<String, f64>>,
    /// Every checkpoint this process saved.
    checkpoints: Vec<CheckpointCost>,
}

/// What saving one checkpoint cost.
#[derive(Clone, Debug, Serialize)]
struct CheckpointCost {
    /// The last round it holds.
    round: u32,
    /// Wall time to collect, encode and write it, in milliseconds.
    ms: f64,
    /// Its size.
    bytes: u64,
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
    /// What the train nodes that fine-tune the encoder start from (empty when none does).
    pub encoder_sources: EncoderSources,
    /// Time spent producing `text` (cache lookups and encoding).
    pub embed_time: Duration,
    /// Time spent reading and splitting the events.
    pub load_time: Duration,
}

/// Loads the events of `plan` and splits them with `split` (its protocol's). With a
/// `share` (a run on several processes), this process reads only its share of each events
/// file and receives the rest from the others (see [`crate::io::shares`]).
pub fn load_data(
    plan: &Plan,
    split: &SplitPlan,
    share: Option<&ReadShare>,
) -> Result<ExperimentData, RunError> {
    let load_started = Instant::now();
    let mut users = IdMap::new();
    let mut items = IdMap::new();
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
            train: read_events(train, &mut users, &mut items, share)?,
            validation: match validation {
                Some(source) => read_events(source, &mut users, &mut items, share)?,
                None => Vec::new(),
            },
            test: read_events(test, &mut users, &mut items, share)?,
        },
        SplitPlan::Log { events, rule } => {
            let events = read_events(events, &mut users, &mut items, share)?;
            split_events(&events, rule, plan.seed)
        }
    };
    let cold_items = split.cold_items();
    let cold_test = if cold_items > 0.0 {
        test.iter()
            .filter(|e| is_cold_item(e.item, cold_items, plan.seed))
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    let load_time = load_started.elapsed();
    let started = Instant::now();
    let (text, encoder_sources) = match (&plan.embed, &plan.data.items) {
        (Some(embed), Some(source)) => {
            let mut embedder = ItemEmbedder::open(embed, source, &mut items, plan.device)?;
            embedder.ensure(0..embedder.len() as u32)?;
            let sources = embedder.encoder_sources(&plan.models)?;
            (Some(embedder.vectors().clone()), sources)
        }
        _ => (None, EncoderSources::new()),
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
        encoder_sources,
        embed_time: started.elapsed(),
        load_time,
    })
}

/// Sampled candidates need more items than the negatives asked for: a catalogue of
/// `catalogue` items cannot supply `negatives` items a user has no event with.
fn check_sampled_negatives(plan: &Plan, catalogue: usize) -> Result<(), RunError> {
    for evaluate in &plan.evaluate {
        if let CandidateSet::Sampled { negatives } = evaluate.candidates
            && negatives >= catalogue
        {
            return Err(RunError::Experiment {
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
            });
        }
    }
    Ok(())
}

/// Starts the experiment a plan describes (round 0 and any warm-up run here), after
/// connecting to the other processes of its cluster, if any (before anything is loaded:
/// see [`cluster::engine_site`]). `track_scores` keeps every maintained score for reference checks;
/// `progress` prints what takes time before round 0 (sorting an out-of-order replay log)
/// on stderr.
pub fn start_experiment(
    plan: &Plan,
    track_scores: bool,
    progress: bool,
) -> Result<Box<dyn Experiment>, RunError> {
    let site = cluster::engine_site(plan)?;
    let share = cluster::read_share(&site);
    Ok(match &plan.protocol {
        ProtocolPlan::Pool(pool) => Box::new(PoolExperiment::start(
            plan,
            pool,
            site,
            PoolStart::train(plan, pool, share.as_ref())?,
            track_scores,
        )?),
        ProtocolPlan::Selection(selection) => Box::new(SelectionExperiment::start(
            plan,
            selection,
            site,
            load_data(plan, &selection.split, share.as_ref())?,
            track_scores,
        )?),
        ProtocolPlan::Replay(replay) => Box::new(ReplayExperiment::start(
            plan,
            replay,
            site,
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
    let saved = if options.resume {
        match saved_checkpoint(plan, &options.out_dir) {
            // With `force`, a folder without a usable checkpoint starts over.
            Err(RunError::Resume(_)) | Err(RunError::Io(_)) if options.force => None,
            saved => saved?,
        }
    } else {
        None
    };
    // The processes of a cluster agree on the round they resume after (their handshake
    // compares it), so one that found no checkpoint, or another, is refused by its peers.
    let resumed_plan;
    let plan = match &saved {
        Some(saved) => {
            resumed_plan = Plan {
                cluster: ClusterPlan {
                    resumed_after: Some(last_round(&saved.progress.history)),
                    ..plan.cluster.clone()
                },
                ..plan.clone()
            };
            &resumed_plan
        }
        None => plan,
    };
    let out = writes
        .then(|| OutputDir::prepare(&options.out_dir, options.force || options.resume))
        .transpose()?;
    if let Some(out) = &out {
        if options.resume {
            // Half-written files of the interrupted run.
            for file in OutputDir::files(out.path())?.0 {
                out.remove_file(&file)?;
            }
        }
        if saved.is_none() {
            // A run started afresh must never be resumed from an earlier run's checkpoint.
            out.remove_file(&checkpoint::checkpoint_path(out.path()))?;
        }
    }
    let progress = options.progress && writes;
    let resumed = saved.is_some();
    let (mut experiment, mut recommendations): (Box<dyn Experiment>, _) = match (saved, start) {
        (Some(saved), _) => {
            if progress {
                eprintln!(
                    "resuming {} after round {} from {}",
                    plan.name,
                    last_round(&saved.progress.history),
                    checkpoint::checkpoint_path(&options.out_dir).display()
                );
            }
            (
                resume_experiment(plan, saved.progress, progress)?,
                saved.recommendations,
            )
        }
        (None, Some(start)) => match &plan.protocol {
            ProtocolPlan::Pool(pool) => {
                let site = cluster::engine_site(plan)?;
                (
                    Box::new(PoolExperiment::start(plan, pool, site, start, false)?),
                    Vec::new(),
                )
            }
            _ => (start_experiment(plan, false, progress)?, Vec::new()),
        },
        (None, None) => (start_experiment(plan, false, progress)?, Vec::new()),
    };
    let mut checkpoints = Checkpoints {
        path: out
            .as_ref()
            .filter(|_| plan.output.checkpoint_every > 0)
            .map(|out| checkpoint::checkpoint_path(out.path())),
        every: plan.output.checkpoint_every,
        min_interval: Duration::try_from_secs_f64(plan.output.checkpoint_min_interval_s)
            .unwrap_or_default(),
        last_saved: None,
        saved_round: resumed.then(|| last_round(experiment.history())),
        costs: Vec::new(),
    };
    checkpoints.after_round(plan, experiment.as_ref(), &recommendations)?;
    let planned = experiment.planned_rounds();
    if progress {
        for record in experiment.history() {
            print_progress(planned, record);
        }
    }
    let exports = plan.output.recommendations;
    let export = |experiment: &dyn Experiment, last: bool, lists: &mut Vec<_>| {
        if let Some(export) = exports.filter(|e| last || e.every_round) {
            let users = match export.users {
                RecommendedUsers::Test => experiment.test_users(),
                RecommendedUsers::All => (0..experiment.ids().0.len() as u32).collect(),
            };
            let round = last_round(experiment.history());
            lists.extend(recommend(experiment, &users, export.k, round));
        }
    };
    while experiment.has_next() {
        export(experiment.as_ref(), false, &mut recommendations);
        let record = experiment.next_round()?;
        if progress {
            print_progress(planned, record);
        }
        checkpoints.after_round(plan, experiment.as_ref(), &recommendations)?;
    }
    export(experiment.as_ref(), true, &mut recommendations);
    let mut output = experiment.finish()?;
    for cost in &checkpoints.costs {
        output
            .latency
            .record("checkpoint", Duration::from_secs_f64(cost.ms / 1e3));
    }
    let last = output.rounds.last().expect("round 0 is recorded");
    let checkpoint_s = checkpoints.costs.iter().fold(0.0, |s, c| s + c.ms) / 1e3;
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
        checkpoint_s,
    };
    let Some(out) = out else {
        summary.wall_s = started.elapsed().as_secs_f64();
        return Ok(summary);
    };
    if exports.is_some() {
        out.write_recommendations("recommendations.parquet", &recommendations)?;
    }
    out.write_rounds("rounds.parquet", &output.rounds)?;
    crate::failpoint::reached("final");
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
            checkpoints: checkpoints.costs,
        },
    )?;
    if plan.output.plots {
        for (name, bytes) in report::learning_curves(&plan.name, &output.rounds) {
            out.write_bytes(&name, &bytes)?;
        }
    }
    summary.wall_s = started.elapsed().as_secs_f64();
    out.write_json("summary.json", &summary)?;
    // The run is complete: its checkpoint (or the one it resumed from) has served.
    out.remove_file(&checkpoint::checkpoint_path(out.path()))?;
    Ok(summary)
}

/// The checkpoint `--resume` continues from: `None` to start afresh in a folder that holds
/// none (absent, empty, or only temporary files of an interrupted write); an error for a
/// complete run, a folder holding something else, or a checkpoint another
/// pipeline or version wrote.
fn saved_checkpoint(
    plan: &Plan,
    out_dir: &Path,
) -> Result<Option<checkpoint::Checkpoint>, RunError> {
    if out_dir.join(SUMMARY_FILE).exists() {
        return Err(RunError::Resume(format!(
            "{} holds a complete run ({SUMMARY_FILE} exists): nothing to resume\n    help: \
             its results stand; to run again, drop --resume and add --force",
            out_dir.display()
        )));
    }
    let path = checkpoint::checkpoint_path(out_dir);
    if path.exists() {
        return checkpoint::load(&path, plan).map(Some);
    }
    let (_, others) = OutputDir::files(out_dir)?;
    if let Some(file) = others.first() {
        return Err(RunError::Resume(format!(
            "{} has no {} to resume from, but holds {} (not this run's checkpoint)\n    \
             help: start over with --force (replaces the folder's files), or name another \
             folder with --out",
            out_dir.display(),
            checkpoint::CHECKPOINT_FILE,
            file.display()
        )));
    }
    Ok(None)
}

/// The experiment a checkpoint's `progress` was saved from, ready for its next round
/// (connected first, as in [`start_experiment`]).
pub fn resume_experiment(
    plan: &Plan,
    progress: checkpoint::Progress,
    show_progress: bool,
) -> Result<Box<dyn Experiment>, RunError> {
    let site = cluster::engine_site(plan)?;
    let share = cluster::read_share(&site);
    Ok(match &plan.protocol {
        ProtocolPlan::Pool(pool) => Box::new(PoolExperiment::resume(plan, pool, site, progress)?),
        ProtocolPlan::Selection(selection) => Box::new(SelectionExperiment::resume(
            plan,
            selection,
            site,
            load_data(plan, &selection.split, share.as_ref())?,
            progress,
        )?),
        ProtocolPlan::Replay(replay) => Box::new(ReplayExperiment::resume(
            plan,
            replay,
            site,
            progress,
            show_progress,
        )?),
    })
}

/// Saves a checkpoint after every `every`-th round, at most once per `min_interval`, and
/// what each cost.
struct Checkpoints {
    /// Where, when this process saves checkpoints at all.
    path: Option<PathBuf>,
    every: u32,
    min_interval: Duration,
    /// When the last checkpoint was saved (none yet in this process).
    last_saved: Option<Instant>,
    /// The last round saved (or resumed from).
    saved_round: Option<u32>,
    costs: Vec<CheckpointCost>,
}

impl Checkpoints {
    /// Saves the experiment after its last round, if that round is due and not saved.
    fn after_round(
        &mut self,
        plan: &Plan,
        experiment: &dyn Experiment,
        recommendations: &[crate::results::Recommendation],
    ) -> Result<(), RunError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let round = last_round(experiment.history());
        let too_soon = self
            .last_saved
            .is_some_and(|saved| saved.elapsed() < self.min_interval);
        if !round.is_multiple_of(self.every) || self.saved_round == Some(round) || too_soon {
            return Ok(());
        }
        let started = Instant::now();
        checkpoint::save(path, plan, &experiment.progress()?, recommendations)?;
        self.saved_round = Some(round);
        self.last_saved = Some(started);
        self.costs.push(CheckpointCost {
            round,
            ms: started.elapsed().as_secs_f64() * 1e3,
            bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        });
        Ok(())
    }
}

fn print_progress(planned: Option<u32>, record: &RoundRecord) {
    let metrics: Vec<String> = record
        .metrics
        .iter()
        .filter(|(name, _)| !is_train_loss(name))
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
