//! The replay protocol: the log is read in time order, in windows. Each window is first
//! used to test the current model (prequential evaluation), then its events join the pool
//! (new users and items appear and get rows), a fraction arrives labelled for free, the
//! strategy spends the window's budget on the pool, and the model trains on the new labels.
//! Unlabelled events stay in the pool to the end, or, with `pool_windows: K`, for `K`
//! windows (their own included), which bounds the pool and the engine's memory.
//!
//! The log is streamed in row-group batches: only the current window and the events seen so
//! far (24 bytes each, for the pool) are held in memory. A log stored out of time order is
//! sorted first, within the replay's `sort_memory` (see [`EventBatches::in_time_order`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::data::{IdMap, Interaction, LabelKind, UserIdx};
use crate::dataflow::{EngineSite, PoolSample};
use crate::io::events::EventBatches;
use crate::io::shares::ReadShare;
use crate::io::sort::SortOptions;
use crate::model::{ModelSet, Recommender};
use crate::plan::params::RefitPolicy;
use crate::plan::{CandidateSet, EvaluatePlan, Plan, ReplayPlan};
use crate::results::RoundRecord;
use crate::scoring::ScoringHead;
use crate::seeding::unit_hash;

use super::RunError;
use super::checkpoint::Progress;
use super::cluster::read_share;
use super::embed::{EncoderSources, ItemEmbedder};
use super::evaluation::{EvalTarget, ItemsPerUser, ModelView, evaluate};
use super::experiment::{
    Experiment, Resumed, RoundClock, RoundCounts, build_model, clipped_head, mean_label,
    refit_samples, resumed_session, strategy_reads_labels, users_of,
};
use super::rounds::RoundCore;
use super::seen_events::SeenEvents;
use super::session::{PoolChanges, Session};
use super::windows::{ReplayWindow, WindowCutter, WindowError};

/// The replay's event table: the pool horizon's windows, and the labelled events when the
/// models retrain on labels of earlier windows (which outlive their windows).
fn seen_events(plan: &Plan, replay: &ReplayPlan) -> SeenEvents {
    let retrains = !matches!(plan.models.schedule().refit, RefitPolicy::NewLabels);
    SeenEvents::new(retrains, replay.pool_windows)
}

/// Salt of the free-label draw, independent of the other seeded draws.
const FREE_LABEL_SALT: u64 = 0xF8EE_1ABE;

/// A running replay.
pub struct ReplayExperiment {
    windows: WindowCutter<EventBatches>,
    /// The log's path, for messages.
    source: String,
    replay: ReplayPlan,
    evaluate: Option<EvaluatePlan>,
    refit: RefitPolicy,
    epochs: usize,
    epochs_per_round: usize,
    seed: u64,
    oracle: bool,
    /// The events the replay may still read (the pool's candidates), and their labels.
    seen: SeenEvents,
    labelled_count: u64,
    core: RoundCore,
    /// Item text vectors, embedded as items first appear (if the pipeline embeds).
    embedder: Option<ItemEmbedder>,
    /// Texts embedded before the first window ran (reported with it).
    embedded_at_start: usize,
    /// Time spent reading the next window from the log (reported with it as `io`).
    next_read: Duration,
    /// The next window, read ahead so `has_next` is exact.
    next_window: Option<ReplayWindow>,
    /// Running sums of the prequential errors after the first window.
    errors: ErrorSums,
    /// The users of the last window run (the users a replay's recommendations are for).
    last_window_users: Vec<UserIdx>,
}

/// A replay's log opened and its first window read, with the model built as the first
/// window sizes it.
struct Opening {
    windows: WindowCutter<EventBatches>,
    /// The log's path, for messages.
    source: String,
    first: ReplayWindow,
    /// Time spent checking the order (and sorting) and reading the first window.
    next_read: Duration,
    embedder: Option<ItemEmbedder>,
    /// Texts the encoder embedded for the first window.
    embedded_at_start: usize,
    /// Time spent embedding the first window's texts, when the pipeline embeds.
    embed_time: Option<Duration>,
    model: ModelSet,
    head: ScoringHead,
}

impl Opening {
    /// Opens the log of `plan` (sorting it if it is out of time order, with a line per step
    /// on stderr when `progress`), reads the first window, embeds its texts and builds the
    /// model and its head. With a `share` (a run on several processes) this process reads
    /// only its share of the log (see [`crate::io::shares`]).
    fn open(
        plan: &Plan,
        replay: &ReplayPlan,
        progress: bool,
        share: Option<&ReadShare>,
    ) -> Result<Self, RunError> {
        let source = &replay.events;
        // With item text, the item file's ids are interned first, so an item's text is at
        // hand when its first event arrives.
        let mut items = IdMap::new();
        let mut embedder = match (&plan.embed, &plan.data.items) {
            (Some(embed), Some(text)) => {
                Some(ItemEmbedder::open(embed, text, &mut items, plan.device)?)
            }
            _ => None,
        };
        let sort = SortOptions {
            progress,
            ..SortOptions::new(replay.sort_memory)
        };
        // Checking the time order (and sorting) counts as round 0's reading.
        let read_started = Instant::now();
        let batches = EventBatches::in_time_order(
            source,
            IdMap::new(),
            items,
            replay.batch_rows,
            &sort,
            share,
        )?;
        let mut windows = WindowCutter::new(batches, replay.window);
        let source_name = source.path.display().to_string();
        let first = next_window(&mut windows, &source_name)?;
        let next_read = read_started.elapsed();
        let Some(first) = first else {
            return Err(RunError::Experiment {
                field: "data.events".into(),
                message: format!(
                    "the event log {} is empty: nothing to replay",
                    source.path.display()
                ),
                help: "point `data.events` at a log with events".into(),
            });
        };
        let global_mean =
            mean_label(first.events.iter().map(|e| e.label)).expect("a window has events");
        let (users, items) = (
            windows.source().users().len(),
            windows.source().items().len(),
        );
        let kind = plan.data.label_kind;
        // The first window's texts are embedded now: the text models are sized by them.
        let embed_started = Instant::now();
        let embeds = embedder.is_some();
        let mut embedded_at_start = 0;
        let text = match &mut embedder {
            Some(embedder) => {
                embedded_at_start = embedder
                    .ensure(first.events.iter().map(|e| e.item))?
                    .embedded;
                Some(embedder.vectors())
            }
            None => None,
        };
        let embed_time = embeds.then(|| embed_started.elapsed());
        // A replay never fine-tunes the encoder (the planner refuses it).
        let model = build_model(
            plan,
            users,
            items,
            global_mean,
            kind,
            text,
            &EncoderSources::new(),
        )?;
        let scale = match kind {
            LabelKind::Rating => first.events.iter().map(|e| e.label).collect::<Vec<_>>(),
            LabelKind::Click => Vec::new(),
        };
        let head = clipped_head(&model, scale.into_iter());
        Ok(Self {
            windows,
            source: source_name,
            first,
            next_read,
            embedder,
            embedded_at_start,
            embed_time,
            model,
            head,
        })
    }
}

/// The driver's tables after replaying saved windows without running them (see
/// [`ReplayExperiment::resume`]).
struct Replayed {
    seen: SeenEvents,
    /// The labelled events, in the order their labels became known.
    known: Vec<Interaction>,
    last_window_users: Vec<UserIdx>,
}

impl Replayed {
    /// Before the first window, holding the events as [`SeenEvents::new`] says.
    fn new(seen: SeenEvents) -> Self {
        Self {
            seen,
            known: Vec::new(),
            last_window_users: Vec::new(),
        }
    }

    /// Adds a saved window: its events, its free labels, then the samples the saved run
    /// picked in it (`picks`, in the order picked).
    fn add(
        &mut self,
        window: ReplayWindow,
        picks: &[u32],
        seed: u64,
        replay: &ReplayPlan,
    ) -> Result<(), RunError> {
        let samples = self.seen.push(&window.events);
        self.last_window_users = users_of(&window.events);
        let free = free_labels(samples.clone(), window.index, seed, replay);
        for &k in free.iter().chain(picks) {
            let event = self.seen.saved_pick(k, window.index)?;
            self.seen.label(k);
            self.known.push(event);
        }
        self.seen.forget_expired();
        Ok(())
    }
}

/// The samples of window `index` whose labels arrive with it: all of a warm-up window,
/// else a seeded fraction.
fn free_labels(samples: Range<u32>, index: u32, seed: u64, replay: &ReplayPlan) -> Vec<u32> {
    let warmup = index < replay.warmup_windows.max(1);
    samples
        .filter(|&k| warmup || unit_hash(seed ^ FREE_LABEL_SALT, k) < replay.free_labels)
        .collect()
}

/// Running sums for cumulative prequential RMSE and MAE.
#[derive(Debug, Default)]
struct ErrorSums {
    squared: f64,
    absolute: f64,
    count: u64,
}

impl ReplayExperiment {
    /// Opens the log (sorting it if it is out of time order, with a line per step on stderr
    /// when `progress`), trains on the warm-up windows and records them.
    pub fn start(
        plan: &Plan,
        replay: &ReplayPlan,
        site: EngineSite,
        track_scores: bool,
        progress: bool,
    ) -> Result<Self, RunError> {
        let opening = Opening::open(plan, replay, progress, read_share(&site).as_ref())?;
        let text = opening.embedder.as_ref().map(ItemEmbedder::vectors);
        let mut session = Session::start(
            plan,
            (opening.model, opening.head),
            site,
            text,
            track_scores,
        )?;
        if let Some(embed_time) = opening.embed_time {
            session.latency.record("embed", embed_time);
        }
        let core = RoundCore::new(session);
        let mut experiment = Self::new(plan, replay, opening.windows, opening.source, core);
        experiment.embedder = opening.embedder;
        experiment.embedded_at_start = opening.embedded_at_start;
        experiment.next_read = opening.next_read;
        experiment.next_window = Some(opening.first);
        experiment.next_round()?;
        while experiment.has_next()
            && (experiment.core.history().len() as u32) < replay.warmup_windows
        {
            experiment.next_round()?;
        }
        Ok(experiment)
    }

    /// Continues the replay `progress` was saved from: the log is read again up to the
    /// saved windows (their events, free labels, saved selections and candidate windows),
    /// the model built as at the start takes the saved state, and the engine scores the
    /// pool as it stood after the last saved window.
    pub fn resume(
        plan: &Plan,
        replay: &ReplayPlan,
        site: EngineSite,
        progress: Progress,
        show_progress: bool,
    ) -> Result<Self, RunError> {
        let Opening {
            mut windows,
            source,
            first,
            mut embedder,
            mut model,
            head,
            ..
        } = Opening::open(plan, replay, show_progress, read_share(&site).as_ref())?;
        let mut picked: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for s in &progress.selections {
            picked.entry(s.round).or_default().push(s.sample);
        }
        let mut replayed = Replayed::new(seen_events(plan, replay));
        // The ids the model had rows for after the last saved window (the ids of the
        // window read ahead come later).
        let mut shape = (0, 0);
        let mut next = Some(first);
        for _ in &progress.history {
            let window = next.take().ok_or_else(|| {
                RunError::Resume(format!(
                    "the checkpoint has {} windows, but {source} has fewer: the log changed \
                     since the run started; start it over without --resume",
                    progress.history.len()
                ))
            })?;
            if let Some(embedder) = &mut embedder {
                embedder.ensure(window.events.iter().map(|e| e.item))?;
            }
            let picks = picked.remove(&window.index).unwrap_or_default();
            replayed.add(window, &picks, plan.seed, replay)?;
            shape = (
                windows.source().users().len(),
                windows.source().items().len(),
            );
            next = next_window(&mut windows, &source)?;
        }
        model.grow(shape.0, shape.1)?;
        let text = embedder.as_ref().map(ItemEmbedder::vectors);
        if let Some(text) = text {
            model.set_item_embeddings(text)?;
        }
        let oracle = strategy_reads_labels(plan);
        let resumed = Resumed {
            state: &progress.model,
            pool: replayed.seen.pool(oracle),
            labelled: &replayed.known,
        };
        let session = resumed_session(plan, site, text, (model, head), resumed)?;
        let prequential = progress.prequential;
        let core = RoundCore::resumed(session, progress);
        let mut experiment = Self::new(plan, replay, windows, source, core);
        experiment.embedder = embedder;
        experiment.next_window = next;
        experiment.labelled_count = replayed.known.len() as u64;
        experiment.seen = replayed.seen;
        experiment.last_window_users = replayed.last_window_users;
        if let Some((squared, absolute, count)) = prequential {
            experiment.errors = ErrorSums {
                squared,
                absolute,
                count,
            };
        }
        Ok(experiment)
    }

    /// A replay before its first window, reading `windows` of the log `source`.
    fn new(
        plan: &Plan,
        replay: &ReplayPlan,
        windows: WindowCutter<EventBatches>,
        source: String,
        core: RoundCore,
    ) -> Self {
        Self {
            windows,
            source,
            replay: replay.clone(),
            evaluate: plan.evaluate.first().cloned(),
            refit: plan.models.schedule().refit,
            epochs: plan.models.schedule().epochs,
            epochs_per_round: plan.models.schedule().epochs_per_round,
            seed: plan.seed,
            oracle: strategy_reads_labels(plan),
            seen: seen_events(plan, replay),
            labelled_count: 0,
            core,
            embedder: None,
            embedded_at_start: 0,
            next_read: Duration::ZERO,
            next_window: None,
            errors: ErrorSums::default(),
            last_window_users: Vec::new(),
        }
    }

    /// Whether `max_windows`, if set, allows another window.
    fn has_next_within_limit(&self) -> bool {
        self.replay
            .max_windows
            .is_none_or(|max| (self.core.history().len() as u32) < max)
    }

    /// Runs one window: evaluate, insert, label, select, train.
    fn run_window(&mut self, window: ReplayWindow) -> Result<RoundRecord, RunError> {
        let mut clock = RoundClock::default();
        clock.add("io", std::mem::take(&mut self.next_read));
        let warmup = window.index < self.replay.warmup_windows.max(1);
        let (n_users, n_items) = (
            self.windows.source().users().len(),
            self.windows.source().items().len(),
        );
        self.core.session.grow(n_users, n_items)?;
        let mut texts_embedded = None;
        if let Some(embedder) = &mut self.embedder {
            let embedded = clock.time("embed", || {
                embedder.ensure(window.events.iter().map(|e| e.item))
            })?;
            self.core
                .session
                .set_item_text(embedder.vectors(), &embedded.added)?;
            texts_embedded = Some(embedded.embedded + std::mem::take(&mut self.embedded_at_start));
        }
        let window_samples = self.seen.push(&window.events);
        self.last_window_users = users_of(&window.events);

        let free = free_labels(
            window_samples.clone(),
            window.index,
            self.seed,
            &self.replay,
        );
        for &k in &free {
            self.seen.label(k);
        }
        let insert = self.seen.unlabelled(window_samples, self.oracle);
        let remove = self.seen.expire(self.oracle);
        // Publish the window's new rows and pool samples (scores them) before testing on it:
        // inserting into the pool does not train, so the test stays prequential.
        let inserted = clock.time("score", || {
            self.core.session.publish(PoolChanges {
                insert,
                remove,
                ..PoolChanges::default()
            })
        })?;
        let mut metrics = self.prequential(&mut clock, &window);

        let picked = match &self.replay.select {
            Some(select) if !warmup => {
                let source = self.windows.source();
                let ids = (source.users(), source.items());
                let budget = select.budget;
                let seen = &self.seen;
                self.core
                    .pick(&mut clock, window.index, budget, |k| seen.event(k), ids)
            }
            _ => Vec::new(),
        };
        let mut revealed: Vec<u32> = free.clone();
        for &(sample, _) in &picked {
            self.seen.label(sample);
            revealed.push(sample);
        }
        self.labelled_count += revealed.len() as u64;
        let train_on = refit_samples(
            self.refit,
            &revealed,
            self.seen.labelled_samples(),
            self.seed,
            window.index,
        );
        let train_events: Vec<Interaction> = train_on
            .iter()
            .map(|&k| self.seen.labelled_event(k))
            .collect();
        let epochs = if warmup {
            self.epochs
        } else {
            self.epochs_per_round
        };
        let labelled_events: Vec<Interaction> =
            revealed.iter().map(|&k| self.seen.event(k)).collect();
        // A fusion learning prequentially fits its weights on the window's revealed labels
        // before its parts train on them.
        let clip = self.core.session.head().clip;
        let models = self.core.session.model_mut();
        models.learn_on(&labelled_events, clip);
        let report = clock.time("train", || models.fit(&train_events, &train_on, epochs))?;
        let remove = picked
            .iter()
            .map(|&(k, _)| self.seen.pool_sample(k, self.oracle))
            .collect();
        let trained = clock.time("score", || {
            self.core.session.publish(PoolChanges {
                insert: Vec::new(),
                remove,
                labelled: &labelled_events,
                fit: Some(&report),
            })
        })?;
        metrics.extend(report.loss_metrics());
        metrics.extend(self.core.session.model().learned_weights());
        metrics.push(("events".into(), window.events.len() as f64));
        if let Some(n) = texts_embedded {
            metrics.push(("texts_embedded".into(), n as f64));
        }
        let counts = RoundCounts {
            labelled: self.labelled_count,
            selected: picked.len() as u64,
            rescored: inserted.rescored + trained.rescored,
        };
        Ok(clock.record(
            &mut self.core.session.latency,
            window.index,
            counts,
            metrics,
        ))
    }

    /// Metrics of the current model on the window's events, before it trains on them, and
    /// the cumulative RMSE/MAE over every window tested so far. The first window has no
    /// model to test yet: its metrics are NaN.
    fn prequential(&mut self, clock: &mut RoundClock, window: &ReplayWindow) -> Vec<(String, f64)> {
        let Some(plan) = self.evaluate.clone() else {
            return Vec::new();
        };
        if window.index == 0 {
            let mut metrics: Vec<(String, f64)> = plan
                .metric_names()
                .into_iter()
                .map(|name| (name, f64::NAN))
                .collect();
            metrics.extend([
                ("cumulative_rmse".to_string(), f64::NAN),
                ("cumulative_mae".to_string(), f64::NAN),
            ]);
            return metrics;
        }
        let started = Instant::now();
        let view = ModelView::new(self.core.session.head(), self.core.session.rows());
        let predictions = view.predictions(&window.events);
        for (e, prediction) in window.events.iter().zip(&predictions) {
            let error = f64::from(prediction - e.label);
            self.errors.squared += error * error;
            self.errors.absolute += error.abs();
            self.errors.count += 1;
        }
        let labelled = self.core.session.labelled_items();
        // Sampled negatives avoid the user's labelled and tested items; other candidate
        // sets do not read them.
        let user_events = match plan.candidates {
            CandidateSet::Sampled { .. } => labelled.union(&ItemsPerUser::of(&window.events)),
            CandidateSet::All | CandidateSet::TestItems => ItemsPerUser::default(),
        };
        let target = EvalTarget {
            events: &window.events,
            excluded: labelled,
            user_events: &user_events,
            prefix: "",
            predictions: Some(&predictions),
        };
        let mut metrics = evaluate(&view, &plan, &target, self.core.session.seed());
        let n = self.errors.count as f64;
        metrics.push(("cumulative_rmse".into(), (self.errors.squared / n).sqrt()));
        metrics.push(("cumulative_mae".into(), self.errors.absolute / n));
        clock.add("evaluate", started.elapsed());
        metrics
    }
}

/// The next window, with errors turned into run errors.
fn next_window(
    windows: &mut WindowCutter<EventBatches>,
    source: &str,
) -> Result<Option<ReplayWindow>, RunError> {
    match windows.next() {
        None => Ok(None),
        Some(Ok(window)) => Ok(Some(window)),
        Some(Err(WindowError::Source(e))) => Err(e.into()),
        // The log was checked (or sorted) before the replay began: it changed since.
        Some(Err(e @ WindowError::OutOfOrder { .. })) => Err(RunError::Experiment {
            field: "data.events".into(),
            message: format!("{source}: {e}"),
            help: "the file changed while it was replayed; write a sorted copy once with \
                   `recsift sort` and replay that"
                .into(),
        }),
    }
}

impl Experiment for ReplayExperiment {
    fn core(&self) -> &RoundCore {
        &self.core
    }

    fn into_core(self: Box<Self>) -> RoundCore {
        self.core
    }

    fn has_next(&self) -> bool {
        self.next_window.is_some() && self.has_next_within_limit()
    }

    fn planned_rounds(&self) -> Option<u32> {
        self.replay.max_windows
    }

    fn pool(&self) -> Vec<PoolSample> {
        self.seen.pool(self.oracle)
    }

    fn ids(&self) -> (&IdMap, &IdMap) {
        let source = self.windows.source();
        (source.users(), source.items())
    }

    fn test_users(&self) -> Vec<UserIdx> {
        self.last_window_users.clone()
    }

    fn next_round(&mut self) -> Result<&RoundRecord, RunError> {
        let window = match self.next_window.take() {
            Some(window) if self.has_next_within_limit() => window,
            unread => {
                // Either `max_windows` stops the replay here, or the log has ended.
                let (field, help) = match unread {
                    Some(_) => (
                        "protocol.replay.max_windows",
                        "raise `max_windows` (or leave it out) to replay more of the log",
                    ),
                    None => ("data.events", "the log has no later events to replay"),
                };
                self.next_window = unread;
                return Err(RunError::Experiment {
                    field: field.into(),
                    message: format!(
                        "all {} windows of {} have run",
                        self.core.history().len(),
                        self.source
                    ),
                    help: help.into(),
                });
            }
        };
        let record = self.run_window(window)?;
        let read_started = Instant::now();
        self.next_window = next_window(&mut self.windows, &self.source)?;
        self.next_read = read_started.elapsed();
        Ok(self.core.push(record))
    }

    fn prequential_sums(&self) -> Option<(f64, f64, u64)> {
        let errors = &self.errors;
        Some((errors.squared, errors.absolute, errors.count))
    }
}
