//! The interface every protocol implements, and what they share: building the model from
//! the plan, timing a round's stages, and recording a round.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::data::{IdMap, Interaction, ItemEmbeddings, LabelKind, SampleIdx, UserIdx};
use crate::dataflow::{EngineSite, PoolSample};
use crate::metrics::latency::LatencyRecorder;
use crate::model::state::ModelState;
use crate::model::{FitReport, ModelError, ModelSet, Recommender, build_recommender};
use crate::plan::params::RefitPolicy;
use crate::plan::{EvaluatePlan, Plan};
use crate::results::{Recommendation, RoundRecord, SelectionRecord};
use crate::scoring::{Loss, ScoringHead};
use crate::seeding::mix64;

use super::checkpoint::Progress;
use super::embed::EncoderSources;
use super::evaluation::{EvalTarget, ItemsPerUser, ModelView, evaluate};
use super::rounds::RoundCore;
use super::rows::RowMirror;
use super::session::{PoolChanges, Session};
use super::{ExperimentData, RunError};

/// A protocol run one round at a time. A protocol supplies what differs (its pool, what a
/// round does, which users it tests); its [`RoundCore`] keeps the rest.
pub trait Experiment {
    /// The session, rounds and selections.
    fn core(&self) -> &RoundCore;

    /// Hands the core over when the run ends.
    fn into_core(self: Box<Self>) -> RoundCore;

    /// Whether another round can run.
    fn has_next(&self) -> bool;

    /// Runs one round and returns its record.
    fn next_round(&mut self) -> Result<&RoundRecord, RunError>;

    /// Rounds the protocol will run in all, when known in advance.
    fn planned_rounds(&self) -> Option<u32>;

    /// The current pool, as inserted into the engine (for reference checks).
    fn pool(&self) -> Vec<PoolSample>;

    /// Raw user and item ids, for outputs.
    fn ids(&self) -> (&IdMap, &IdMap);

    /// The users the protocol tests: those with test events, or the last window's.
    fn test_users(&self) -> Vec<UserIdx>;

    /// A replay's prequential error sums (squared, absolute, count), saved with a checkpoint;
    /// the split protocols have none.
    fn prequential_sums(&self) -> Option<(f64, f64, u64)> {
        None
    }

    /// The rounds recorded so far (round 0 first).
    fn history(&self) -> &[RoundRecord] {
        self.core().history()
    }

    /// The shared model/engine/ranking state.
    fn session(&self) -> &Session {
        &self.core().session
    }

    /// What a checkpoint saves to resume from here (see [`super::checkpoint`]).
    fn progress(&self) -> Result<Progress, RunError> {
        self.core().progress(self.prequential_sums())
    }

    /// Stops the engine and hands back what was recorded.
    fn finish(self: Box<Self>) -> Result<ExperimentOutput, RunError> {
        self.into_core().finish()
    }
}

/// What an experiment produced.
pub struct ExperimentOutput {
    /// One record per round, round 0 first.
    pub rounds: Vec<RoundRecord>,
    /// Every selected sample.
    pub selections: Vec<SelectionRecord>,
    /// Per-operator latencies.
    pub latency: LatencyRecorder,
}

/// The top-`k` lists of `users` under the session's current model (items with a known
/// label excluded), as records of `round`.
pub fn recommend(
    experiment: &dyn Experiment,
    users: &[UserIdx],
    k: usize,
    round: u32,
) -> Vec<Recommendation> {
    let session = experiment.session();
    let (user_ids, item_ids) = experiment.ids();
    let view = ModelView::new(session.head(), session.rows());
    let lists = view.top_k(users, k, session.labelled_items());
    users
        .iter()
        .zip(lists)
        .flat_map(|(&user, list)| {
            list.into_iter()
                .enumerate()
                .map(move |(rank, entry)| Recommendation {
                    round,
                    user_id: user_ids.raw(user).clone(),
                    rank: rank as u32 + 1,
                    item_id: item_ids.raw(entry.item).clone(),
                    score: entry.score,
                })
        })
        .collect()
}

/// The sorted, distinct users of `events`.
pub fn users_of(events: &[Interaction]) -> Vec<UserIdx> {
    let mut users: Vec<UserIdx> = events.iter().map(|e| e.user).collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// Checks the engine-maintained scores against a from-scratch computation: `Ok(samples
/// compared)` when every pool sample's prediction, variance and loss agree within `tolerance`
/// and no other sample is maintained, else a description of the first difference.
pub fn check_against_scratch(experiment: &dyn Experiment, tolerance: f32) -> Result<usize, String> {
    let session = experiment.session();
    let maintained = session.maintained_scores().ok_or(
        "the session keeps no scores: started without score tracking, or no select node reads them",
    )?;
    let scratch = session
        .scores_from_scratch(experiment.pool().into_iter())
        .map_err(|e| e.to_string())?;
    if maintained.len() != scratch.len() {
        let extra = maintained.keys().find(|k| !scratch.contains_key(k));
        let missing = scratch.keys().find(|k| !maintained.contains_key(k));
        return Err(format!(
            "{} maintained scores for a pool of {} (first extra {extra:?}, first missing {missing:?})",
            maintained.len(),
            scratch.len()
        ));
    }
    let close = |a: f32, b: f32| (a - b).abs() <= tolerance;
    for (sample, expected) in &scratch {
        let Some(got) = maintained.get(sample) else {
            return Err(format!("sample {sample} is in the pool but not maintained"));
        };
        let loss_ok = match (got.loss, expected.loss) {
            (None, None) => true,
            (Some(a), Some(b)) => close(a, b),
            _ => false,
        };
        if !(close(got.prediction, expected.prediction)
            && close(got.variance, expected.variance)
            && loss_ok)
        {
            return Err(format!(
                "sample {sample}: maintained {got:?}, from scratch {expected:?}"
            ));
        }
    }
    Ok(scratch.len())
}

/// Metrics of the session's model on the test set, on the validation set (named
/// `val_<metric>`) when the split has one, and on the cold items alone (`cold_<metric>`)
/// when the split holds items out.
pub fn split_metrics(
    session: &Session,
    data: &ExperimentData,
    plan: &EvaluatePlan,
    seed: u64,
) -> Result<Vec<(String, f64)>, RunError> {
    // The scored model's rows are the session's; another model's are exported whole.
    let exported;
    let view = if plan.model == session.model().scored() {
        ModelView::new(session.head(), session.rows())
    } else {
        let (head, users, items) = session.model().export(&plan.model, session.head().clip)?;
        let row_len = head.layout.row_len();
        exported = (head, RowMirror::new(row_len, users, items));
        ModelView::new(&exported.0, &exported.1)
    };
    let labelled = session.labelled_items();
    let test_excluded;
    let test_excluded = if data.validation.is_empty() {
        labelled
    } else {
        test_excluded = labelled.union(&data.validation_items);
        &test_excluded
    };
    let target = |events, excluded, prefix| EvalTarget {
        events,
        excluded,
        user_events: &data.user_events,
        prefix,
        predictions: None,
    };
    let mut metrics = evaluate(&view, plan, &target(&data.test, test_excluded, ""), seed);
    if !data.validation.is_empty() {
        metrics.extend(evaluate(
            &view,
            plan,
            &target(&data.validation, labelled, "val_"),
            seed,
        ));
    }
    if !data.cold_test.is_empty() {
        metrics.extend(evaluate(
            &view,
            plan,
            &target(&data.cold_test, test_excluded, "cold_"),
            seed,
        ));
    }
    Ok(metrics)
}

/// What the initial fit trains on.
pub struct InitialFit<'a> {
    /// The labelled events.
    pub events: &'a [Interaction],
    /// Their sample keys.
    pub keys: &'a [u32],
    /// Passes without early stopping.
    pub epochs: usize,
    /// The global mean the session's model was built with (its twin gets the same).
    pub global_mean: f32,
}

/// The initial fit of a split experiment on `fit.events`: `fit.epochs` passes,
/// or, with early stopping, the number of passes after which the validation metric was
/// best. The search trains a twin of `model` (same parameters and seed, so
/// the same initialisation) one pass at a time, evaluating after each, and stops after
/// `patience` passes without improvement; `model` then trains exactly the best
/// number of passes, one call per pass as in the search, so it equals the twin at its best
/// epoch. Returns the fit's report and, with early stopping, the passes chosen.
pub fn fit_initial(
    model: &mut dyn Recommender,
    head: &ScoringHead,
    plan: &Plan,
    data: &ExperimentData,
    fit: InitialFit<'_>,
) -> Result<(FitReport, Option<usize>), RunError> {
    let InitialFit {
        events,
        keys,
        epochs,
        global_mean,
    } = fit;
    let (Some(stopping), Some(evaluate_plan)) = (plan.early_stopping, plan.evaluate.first()) else {
        return Ok((model.fit(events, keys, epochs)?, None));
    };
    let (mut twin, _) = model_and_head(plan, data, global_mean)?;
    let watched = EvaluatePlan {
        metrics: vec![stopping.metric],
        ..evaluate_plan.clone()
    };
    let labelled = ItemsPerUser::of(events);
    let lower_is_better = !stopping.metric.is_ranking();
    let mut best: Option<(usize, f64)> = None;
    for epoch in 1..=stopping.max_epochs {
        twin.fit(events, keys, 1)?;
        let (n_users, n_items) = twin.shape();
        let rows = RowMirror::new(
            head.layout.row_len(),
            twin.user_rows(&(0..n_users as u32).collect::<Vec<_>>())?,
            twin.item_rows(&(0..n_items as u32).collect::<Vec<_>>())?,
        );
        let view = ModelView::new(head, &rows);
        let target = EvalTarget {
            events: &data.validation,
            excluded: &labelled,
            user_events: &data.user_events,
            prefix: "",
            predictions: None,
        };
        let value = evaluate(&view, &watched, &target, plan.seed)[0].1;
        let improved = best.is_none_or(|(_, b)| {
            value.is_finite()
                && if lower_is_better {
                    value < b
                } else {
                    value > b
                }
        });
        if improved {
            best = Some((epoch, value));
        } else if best.is_some_and(|(e, _)| epoch - e >= stopping.patience) {
            break;
        }
    }
    let chosen = best.map_or(stopping.max_epochs, |(epoch, _)| epoch);
    let mut report = FitReport::default();
    for _ in 0..chosen {
        report.merge(model.fit(events, keys, 1)?);
    }
    Ok((report, Some(chosen)))
}

/// The recommender a plan asks for, sized for `n_users` x `n_items`, with the global offset
/// `global_mean` (the mean label the model starts from), the item text vectors `text`
/// (which the text models need) and what the models that fine-tune the encoder start from
/// (`encoder_sources`).
pub fn build_model(
    plan: &Plan,
    n_users: usize,
    n_items: usize,
    global_mean: f32,
    label_kind: LabelKind,
    text: Option<&ItemEmbeddings>,
    encoder_sources: &EncoderSources,
) -> Result<ModelSet, RunError> {
    let trained = plan
        .models
        .trained
        .iter()
        .map(|t| {
            let mut model =
                build_recommender(&t.params, n_users, n_items, global_mean, label_kind, text)?;
            if let Some(tuning) = t.params.model.tuning() {
                let source = encoder_sources.get(&tuning.layers).ok_or_else(|| {
                    ModelError::Input(format!(
                        "`{}` fine-tunes {} encoder layers, but the run prepared no encoder \
                         source for them",
                        t.node, tuning.layers
                    ))
                })?;
                model.tune_encoder(source)?;
            }
            Ok(model)
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(ModelSet::new(&plan.models, trained, plan.scored_model())?)
}

/// A new model of `plan`, sized for `data`'s users and items and reading its text vectors,
/// starting from `global_mean` (see [`build_model`]), with its scoring head (clipped to the
/// training labels' scale); learned fusions fit their weights on `data`'s validation events.
pub fn model_and_head(
    plan: &Plan,
    data: &ExperimentData,
    global_mean: f32,
) -> Result<(ModelSet, ScoringHead), RunError> {
    let mut model = build_model(
        plan,
        data.users.len(),
        data.items.len(),
        global_mean,
        data.label_kind,
        data.text.as_ref(),
        &data.encoder_sources,
    )?;
    let head = clipped_head(&model, data.train.iter().map(|e| e.label));
    model.learn_on(&data.validation, head.clip);
    Ok((model, head))
}

/// The session of a split experiment over `model` (new or already trained) and its `head`,
/// on `site`: the incremental engine and the ranking state the protocol's select node needs.
pub fn start_session(
    plan: &Plan,
    site: EngineSite,
    data: &ExperimentData,
    (model, head): (ModelSet, ScoringHead),
    track_scores: bool,
) -> Result<Session, RunError> {
    Session::start(plan, (model, head), site, data.text.as_ref(), track_scores)
}

/// What a resumed session starts from (see [`resumed_session`]).
pub struct Resumed<'a> {
    /// The model's saved state.
    pub state: &'a ModelState,
    /// The pool at the checkpoint.
    pub pool: Vec<PoolSample>,
    /// Every event whose label was known at the checkpoint, in the order the labels became
    /// known (the diversity strategies' centers follow it).
    pub labelled: &'a [Interaction],
}

/// A session continuing from a checkpoint, on `site`: the model, built as at the start of
/// the run with its start head, takes the saved state; the engine scores the pool from the
/// restored rows, and the known labels are published. The head keeps the start head's
/// clipping, as [`Session::publish`] does when a fit changes it.
pub fn resumed_session(
    plan: &Plan,
    site: EngineSite,
    text: Option<&ItemEmbeddings>,
    (mut model, head): (ModelSet, ScoringHead),
    resumed: Resumed<'_>,
) -> Result<Session, RunError> {
    model.load_state(resumed.state)?;
    let head = ScoringHead {
        clip: head.clip,
        ..model.head()
    };
    let mut session = Session::start(plan, (model, head), site, text, false)?;
    session.publish(PoolChanges {
        insert: resumed.pool,
        remove: Vec::new(),
        labelled: resumed.labelled,
        fit: None,
    })?;
    // Rebuilding is not a round: its latencies are not the run's.
    session.latency = LatencyRecorder::new();
    Ok(session)
}

/// The number of the last round of `history` (a checkpoint records at least round 0).
pub fn last_round(history: &[RoundRecord]) -> u32 {
    history.last().map_or(0, |r| r.round)
}

/// The event of a saved selection's sample, or an error when the checkpoint names a
/// sample the data does not have (the data changed since the checkpoint).
pub fn saved_sample(events: &[Interaction], sample: u32) -> Result<Interaction, RunError> {
    events.get(sample as usize).copied().ok_or_else(|| {
        RunError::Resume(format!(
            "the checkpoint selected sample {sample}, but the data has {} samples: the input \
             files changed since the run started; start it over without --resume",
            events.len()
        ))
    })
}

/// Whether the plan's strategy reads the pool's hidden labels (an oracle upper bound), so
/// pool samples carry their labels into the engine.
pub fn strategy_reads_labels(plan: &Plan) -> bool {
    plan.protocol
        .select()
        .is_some_and(|s| s.strategy.def().needs_labels)
}

/// Round 0's clock of a split experiment, holding the time spent loading the events and
/// (when the pipeline embeds) the item text.
pub fn round_zero_clock(data: &ExperimentData) -> RoundClock {
    let mut clock = RoundClock::default();
    clock.add("io", data.load_time);
    if data.text.is_some() {
        clock.add("embed", data.embed_time);
    }
    clock
}

/// What the split protocols (pool, selection) share: the split data, the evaluate nodes
/// and the passes per round.
pub struct SplitRun {
    /// The loaded and split events.
    pub data: ExperimentData,
    /// The evaluate nodes, reported each round.
    pub evaluate: Vec<EvaluatePlan>,
    /// Passes over a round's training samples.
    pub epochs_per_round: usize,
}

impl SplitRun {
    /// The split run of `plan` over `data`.
    pub fn new(plan: &Plan, data: ExperimentData) -> Self {
        Self {
            data,
            evaluate: plan.evaluate.clone(),
            epochs_per_round: plan.models.schedule().epochs_per_round,
        }
    }

    /// The record of `round`: every evaluate node's metrics of the session's models (timed
    /// as `evaluate`), the training losses of the round's fit and any learned fusion
    /// weights.
    pub fn record(
        &self,
        session: &mut Session,
        round: u32,
        mut clock: RoundClock,
        counts: RoundCounts,
        fit: &FitReport,
    ) -> Result<RoundRecord, RunError> {
        let mut metrics = Vec::new();
        if !self.evaluate.is_empty() {
            clock.time("evaluate", || -> Result<(), RunError> {
                for plan in &self.evaluate {
                    metrics.extend(split_metrics(session, &self.data, plan, session.seed())?);
                }
                Ok(())
            })?;
        }
        metrics.extend(fit.loss_metrics());
        metrics.extend(session.model().learned_weights());
        Ok(clock.record(&mut session.latency, round, counts, metrics))
    }

    /// Raw user and item ids.
    pub fn ids(&self) -> (&IdMap, &IdMap) {
        (&self.data.users, &self.data.items)
    }

    /// The users with test events.
    pub fn test_users(&self) -> Vec<UserIdx> {
        users_of(&self.data.test)
    }
}

/// The head of `model`, clipping squared-loss predictions to the scale of `labels`. Heads
/// of the other losses are never clipped: a probability needs no clip, and a BPR score is an
/// unbounded ranking score, not a label.
pub fn clipped_head(model: &dyn Recommender, labels: impl Iterator<Item = f32>) -> ScoringHead {
    let head = model.head();
    if head.loss != Loss::Squared {
        return head;
    }
    let (low, high) = labels.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), l| {
        (lo.min(l), hi.max(l))
    });
    if low.is_finite() {
        head.with_clip(low, high)
    } else {
        head
    }
}

/// The mean label of `events` (the model's starting offset).
pub fn mean_label(events: impl Iterator<Item = f32>) -> Option<f32> {
    let (sum, n) = events.fold((0.0f64, 0usize), |(s, n), l| (s + f64::from(l), n + 1));
    (n > 0).then(|| (sum / n as f64) as f32)
}

/// Sample `k` (event `e`) as the pool holds it; its label is visible to the engine (and so to
/// the strategy) only when `label_visible`.
pub fn pool_sample(k: SampleIdx, e: Interaction, label_visible: bool) -> PoolSample {
    PoolSample {
        sample: k,
        user: e.user,
        item: e.item,
        label: label_visible.then_some(e.label),
    }
}

/// The pool samples of the unlabelled events among `samples` (their labels visible to the
/// engine only when `label_visible`).
pub fn unlabelled(
    events: &[Interaction],
    labelled: &[bool],
    samples: Range<u32>,
    label_visible: bool,
) -> Vec<PoolSample> {
    samples
        .filter(|&k| !labelled[k as usize])
        .map(|k| pool_sample(k, events[k as usize], label_visible))
        .collect()
}

/// Salt of the rehearsal sample's hash.
const REHEARSAL_SALT: u64 = 0x5245_4845_4152_5345;

/// The samples a round trains on under `policy`: `new` (this round's labels), every labelled
/// sample (`labelled`, ascending, read only by the policies that retrain on earlier labels),
/// or `new` plus a seeded sample (by `seed` and `round`) of `ratio` x as many of the earlier
/// labelled samples.
pub fn refit_samples(
    policy: RefitPolicy,
    new: &[SampleIdx],
    labelled: impl Iterator<Item = SampleIdx>,
    seed: u64,
    round: u32,
) -> Vec<SampleIdx> {
    match policy {
        RefitPolicy::NewLabels => new.to_vec(),
        RefitPolicy::AllLabels => labelled.collect(),
        RefitPolicy::Rehearsal { ratio } => {
            let mut fresh = new.to_vec();
            fresh.sort_unstable();
            let mut earlier: Vec<SampleIdx> = labelled
                .filter(|k| fresh.binary_search(k).is_err())
                .collect();
            let want = (ratio * new.len()).min(earlier.len());
            let stream = mix64(seed ^ REHEARSAL_SALT ^ mix64(u64::from(round)));
            for k in 0..want {
                let j = k + (mix64(stream ^ k as u64) % (earlier.len() - k) as u64) as usize;
                earlier.swap(k, j);
            }
            earlier.truncate(want);
            let mut samples = new.to_vec();
            samples.extend(earlier);
            samples
        }
    }
}

/// Stage timings of one round, in the order they ran.
#[derive(Clone, Debug, Default)]
pub struct RoundClock {
    stages: Vec<(&'static str, Duration)>,
}

impl RoundClock {
    /// Runs `f` as stage `name`, adding its wall time to the stage.
    pub fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.add(name, started.elapsed());
        out
    }

    /// Adds `elapsed` to stage `name`.
    pub fn add(&mut self, name: &'static str, elapsed: Duration) {
        match self.stages.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += elapsed,
            None => self.stages.push((name, elapsed)),
        }
    }

    /// The round's record; each stage's time also goes into `latency`.
    pub fn record(
        self,
        latency: &mut LatencyRecorder,
        round: u32,
        counts: RoundCounts,
        metrics: Vec<(String, f64)>,
    ) -> RoundRecord {
        for (name, elapsed) in &self.stages {
            latency.record(name, *elapsed);
        }
        RoundRecord {
            round,
            labelled: counts.labelled,
            selected: counts.selected,
            rescored: counts.rescored,
            metrics,
            timings_ms: self
                .stages
                .iter()
                .map(|(n, d)| (n.to_string(), d.as_secs_f64() * 1e3))
                .collect(),
        }
    }
}

/// Counts a round reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundCounts {
    /// Labels known after the round.
    pub labelled: u64,
    /// Samples selected in the round.
    pub selected: u64,
    /// Scores the engine computed in the round.
    pub rescored: u64,
}
