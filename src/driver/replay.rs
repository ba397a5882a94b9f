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

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::data::{IdMap, Interaction, LabelKind, UserIdx};
use crate::dataflow::PoolSample;
use crate::io::events::EventBatches;
use crate::io::sort::SortOptions;
use crate::plan::params::RefitPolicy;
use crate::plan::{CandidateSet, EvaluatePlan, Plan, ReplayPlan, SelectPlan};
use crate::results::{RoundRecord, SelectionRecord};
use crate::seeding::unit_hash;

use super::RunError;
use super::cluster::topology;
use super::embed::ItemEmbedder;
use super::evaluation::{EvalTarget, ItemsPerUser, ModelView, evaluate};
use super::experiment::{
    Experiment, ExperimentOutput, RoundClock, RoundCounts, build_model, clipped_head, mean_label,
    pool_sample, refit_samples, users_of,
};
use super::session::{PoolChanges, Session};
use super::windows::{ReplayWindow, WindowCutter, WindowError};

/// Salt of the free-label draw, independent of the other seeded draws.
const FREE_LABEL_SALT: u64 = 0xF8EE_1ABE;

/// A running replay.
pub struct ReplayExperiment {
    windows: WindowCutter<EventBatches>,
    /// The log's path, for messages.
    source: String,
    replay: ReplayPlan,
    select: Option<SelectPlan>,
    evaluate: Option<EvaluatePlan>,
    refit: RefitPolicy,
    epochs: usize,
    epochs_per_round: usize,
    seed: u64,
    oracle: bool,
    /// Every event seen so far; sample `k` is `events[k]`.
    events: Vec<Interaction>,
    labelled: Vec<bool>,
    labelled_count: u64,
    session: Session,
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
    selections: Vec<SelectionRecord>,
    history: Vec<RoundRecord>,
    /// The users of the last window run (the users a replay's recommendations are for).
    last_window_users: Vec<UserIdx>,
    /// The samples of the windows whose unlabelled events are still candidates, oldest
    /// first (kept only with `pool_windows`).
    candidate_windows: VecDeque<Range<u32>>,
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
        track_scores: bool,
        progress: bool,
    ) -> Result<Self, RunError> {
        let source = plan
            .data
            .events
            .as_ref()
            .expect("the planner requires events for a replay");
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
        let batches =
            EventBatches::in_time_order(source, IdMap::new(), items, replay.batch_rows, &sort)?;
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
        let embed_time = embed_started.elapsed();
        let model = build_model(plan, users, items, global_mean, kind, text)?;
        let scale = match kind {
            LabelKind::Rating => first.events.iter().map(|e| e.label).collect::<Vec<_>>(),
            LabelKind::Click => Vec::new(),
        };
        let head = clipped_head(model.as_ref(), scale.into_iter());
        let mut session = Session::start(
            head,
            model,
            &topology(plan)?,
            plan.select.as_ref(),
            text,
            plan.seed,
            track_scores,
        )?;
        if embedder.is_some() {
            session.latency.record("embed", embed_time);
        }
        let mut experiment = Self {
            windows,
            source: source_name,
            replay: replay.clone(),
            select: plan.select.clone(),
            evaluate: plan.evaluate.clone(),
            refit: plan.train.refit,
            epochs: plan.train.epochs,
            epochs_per_round: plan.train.epochs_per_round,
            seed: plan.seed,
            oracle: plan
                .select
                .as_ref()
                .is_some_and(|s| s.strategy.def().needs_labels),
            events: Vec::new(),
            labelled: Vec::new(),
            labelled_count: 0,
            session,
            embedder,
            embedded_at_start,
            next_read,
            next_window: Some(first),
            errors: ErrorSums::default(),
            selections: Vec::new(),
            history: Vec::new(),
            last_window_users: Vec::new(),
            candidate_windows: VecDeque::new(),
        };
        experiment.next_round()?;
        while experiment.has_next() && (experiment.history.len() as u32) < replay.warmup_windows {
            experiment.next_round()?;
        }
        Ok(experiment)
    }

    /// With `pool_windows: K`, records the samples of the window starting now and returns
    /// the still unlabelled samples of the window `K` windows back, which leave the pool.
    fn expire_candidates(&mut self, window: Range<u32>) -> Vec<PoolSample> {
        let Some(horizon) = self.replay.pool_windows else {
            return Vec::new();
        };
        let expired = (self.candidate_windows.len() >= horizon as usize)
            .then(|| self.candidate_windows.pop_front())
            .flatten();
        self.candidate_windows.push_back(window);
        expired.map_or_else(Vec::new, |samples| self.unlabelled(samples))
    }

    /// The pool samples of the unlabelled events among `samples`.
    fn unlabelled(&self, samples: Range<u32>) -> Vec<PoolSample> {
        samples
            .filter(|&k| !self.labelled[k as usize])
            .map(|k| pool_sample(&self.events, k, self.oracle))
            .collect()
    }

    /// Runs one window: evaluate, insert, label, select, train.
    fn run_window(&mut self, window: ReplayWindow) -> Result<RoundRecord, RunError> {
        let mut clock = RoundClock::default();
        clock.add("io", std::mem::take(&mut self.next_read));
        let warmup = window.index < self.replay.warmup_windows.max(1);
        let first_sample = self.events.len() as u32;
        let (n_users, n_items) = (
            self.windows.source().users().len(),
            self.windows.source().items().len(),
        );
        self.session.grow(n_users, n_items)?;
        let mut texts_embedded = None;
        if let Some(embedder) = &mut self.embedder {
            let embedded = clock.time("embed", || {
                embedder.ensure(window.events.iter().map(|e| e.item))
            })?;
            self.session
                .set_item_text(embedder.vectors(), &embedded.added)?;
            texts_embedded = Some(embedded.embedded + std::mem::take(&mut self.embedded_at_start));
        }
        self.events.extend_from_slice(&window.events);
        self.last_window_users = users_of(&window.events);
        let window_samples = first_sample..self.events.len() as u32;

        // Labels that arrive with the window: all of a warm-up window, else a seeded fraction.
        let free: Vec<u32> = window_samples
            .clone()
            .filter(|&k| {
                warmup || unit_hash(self.seed ^ FREE_LABEL_SALT, k) < self.replay.free_labels
            })
            .collect();
        self.labelled.resize(self.events.len(), false);
        for &k in &free {
            self.labelled[k as usize] = true;
        }
        let insert = self.unlabelled(window_samples.clone());
        let remove = self.expire_candidates(window_samples);
        // Publish the window's new rows and pool samples (scores them) before testing on it:
        // inserting into the pool does not train, so the test stays prequential.
        let inserted = clock.time("score", || {
            self.session.publish(PoolChanges {
                insert,
                remove,
                ..PoolChanges::default()
            })
        })?;
        let mut metrics = self.prequential(&mut clock, &window);

        let picked = match &self.select {
            Some(select) if !warmup => {
                let budget = select.budget;
                clock.time("select", || self.session.pick(budget))
            }
            _ => Vec::new(),
        };
        let mut revealed: Vec<u32> = free.clone();
        for &(sample, key) in &picked {
            let event = self.events[sample as usize];
            self.labelled[sample as usize] = true;
            revealed.push(sample);
            let source = self.windows.source();
            self.selections.push(SelectionRecord {
                round: window.index,
                sample,
                user_id: source.users().raw(event.user).clone(),
                item_id: source.items().raw(event.item).clone(),
                score: key,
            });
        }
        self.labelled_count += revealed.len() as u64;
        let train_on = refit_samples(
            self.refit,
            &revealed,
            &self.labelled,
            self.seed,
            window.index,
        );
        let train_events: Vec<Interaction> =
            train_on.iter().map(|&k| self.events[k as usize]).collect();
        let epochs = if warmup {
            self.epochs
        } else {
            self.epochs_per_round
        };
        let report = clock.time("train", || {
            self.session
                .model_mut()
                .fit(&train_events, &train_on, epochs)
        })?;
        let labelled_events: Vec<Interaction> =
            revealed.iter().map(|&k| self.events[k as usize]).collect();
        let remove = picked
            .iter()
            .map(|&(k, _)| pool_sample(&self.events, k, self.oracle))
            .collect();
        let trained = clock.time("score", || {
            self.session.publish(PoolChanges {
                insert: Vec::new(),
                remove,
                labelled: &labelled_events,
                fit: Some(&report),
            })
        })?;
        metrics.push(("train_loss".into(), f64::from(report.last_epoch_loss)));
        metrics.push(("events".into(), window.events.len() as f64));
        if let Some(n) = texts_embedded {
            metrics.push(("texts_embedded".into(), n as f64));
        }
        let counts = RoundCounts {
            labelled: self.labelled_count,
            selected: picked.len() as u64,
            rescored: inserted.rescored + trained.rescored,
        };
        Ok(clock.record(&mut self.session.latency, window.index, counts, metrics))
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
        for e in &window.events {
            let error = f64::from(self.session.predict(e.user, e.item) - e.label);
            self.errors.squared += error * error;
            self.errors.absolute += error.abs();
            self.errors.count += 1;
        }
        let labelled = self.session.labelled_items();
        let view = ModelView::new(self.session.head(), self.session.rows());
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
        };
        let mut metrics = evaluate(&view, &plan, &target, self.session.seed());
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
    fn history(&self) -> &[RoundRecord] {
        &self.history
    }

    fn has_next(&self) -> bool {
        self.next_window.is_some()
            && self
                .replay
                .max_windows
                .is_none_or(|max| (self.history.len() as u32) < max)
    }

    fn planned_rounds(&self) -> Option<u32> {
        self.replay.max_windows
    }

    fn session(&self) -> &Session {
        &self.session
    }

    fn pool(&self) -> Vec<PoolSample> {
        let end = self.events.len() as u32;
        let candidates = match self.replay.pool_windows {
            None => 0..end,
            // The candidate windows are consecutive and end with the last one.
            Some(_) => self
                .candidate_windows
                .front()
                .map_or(end..end, |oldest| oldest.start..end),
        };
        self.unlabelled(candidates)
    }

    fn ids(&self) -> (&IdMap, &IdMap) {
        let source = self.windows.source();
        (source.users(), source.items())
    }

    fn test_users(&self) -> Vec<UserIdx> {
        self.last_window_users.clone()
    }

    fn next_round(&mut self) -> Result<&RoundRecord, RunError> {
        let window = self.next_window.take().expect("has_next was checked");
        let record = self.run_window(window)?;
        let read_started = Instant::now();
        self.next_window = next_window(&mut self.windows, &self.source)?;
        self.next_read = read_started.elapsed();
        self.history.push(record);
        Ok(self.history.last().expect("just pushed"))
    }

    fn finish(self: Box<Self>) -> Result<ExperimentOutput, RunError> {
        let latency = self.session.finish()?;
        Ok(ExperimentOutput {
            rounds: self.history,
            selections: self.selections,
            latency,
        })
    }
}
