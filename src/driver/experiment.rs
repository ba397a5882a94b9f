//! The pool protocol, one round at a time: select from the pool by the maintained ranking,
//! reveal the labels, train, publish the changed rows to the incremental engine, apply its
//! score changes to the ranking, evaluate on the test set.
//!
//! The experiment is steppable ([`PoolExperiment::next_round`]) so that tests can compare
//! the engine's maintained scores with a from-scratch computation after every round.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::data::{IdMap, Interaction, LabelKind, SampleIdx};
use crate::dataflow::{EngineUpdate, PoolSample, ScoringEngine};
use crate::metrics::latency::LatencyRecorder;
use crate::metrics::{Scored, evaluate};
use crate::model::Recommender;
use crate::model::mf::BiasedMf;
use crate::plan::params::RefitPolicy;
use crate::plan::{EvaluatePlan, Plan, ProtocolPlan, SelectPlan};
use crate::results::{RoundRecord, SelectionRecord};
use crate::scoring::{PerSampleScore, ScoringHead};
use crate::strategy::{RankedPool, SampleSignals};

use super::RunError;
use super::rows::RowMirror;
use super::split::initial_labels;

/// Events of an experiment after loading and splitting.
#[derive(Clone, Debug)]
pub struct ExperimentData {
    /// Training events; sample `k` is `train[k]`.
    pub train: Vec<Interaction>,
    /// Test events.
    pub test: Vec<Interaction>,
    /// Raw user ids.
    pub users: IdMap,
    /// Raw item ids.
    pub items: IdMap,
    /// What labels mean.
    pub label_kind: LabelKind,
}

/// A running pool-protocol experiment.
pub struct PoolExperiment {
    data: ExperimentData,
    select: Option<SelectPlan>,
    evaluate: Option<EvaluatePlan>,
    refit: RefitPolicy,
    epochs_per_round: usize,
    rounds: u32,
    seed: u64,
    labelled: Vec<bool>,
    head: ScoringHead,
    model: Box<dyn Recommender>,
    engine: ScoringEngine,
    rows: RowMirror,
    ranked: RankedPool,
    maintained: BTreeMap<SampleIdx, PerSampleScore>,
    round: u32,
    latency: LatencyRecorder,
    selections: Vec<SelectionRecord>,
    history: Vec<RoundRecord>,
}

impl PoolExperiment {
    /// Trains the initial model, loads the pool into the engine and records round 0.
    pub fn start(plan: &Plan, data: ExperimentData) -> Result<Self, RunError> {
        let ProtocolPlan::Pool(pool) = &plan.protocol;
        let labelled = initial_labels(&data.train, pool.initial, plan.seed);
        let pool_size = labelled.iter().filter(|&&l| !l).count();
        check_budget(plan, pool_size, &data)?;
        let seed_samples: Vec<u32> = (0..data.train.len() as u32)
            .filter(|&k| labelled[k as usize])
            .collect();
        if seed_samples.is_empty() {
            return Err(RunError::Experiment {
                field: "protocol.pool.labelled".into(),
                message: format!(
                    "no training event is labelled at the start ({} training events): the model has nothing to learn from",
                    data.train.len()
                ),
                help: "raise `labelled: {fraction: ...}` or use `labelled: {per_user: 1}`".into(),
            });
        }
        let global_mean = seed_samples
            .iter()
            .map(|&k| f64::from(data.train[k as usize].label))
            .sum::<f64>()
            / seed_samples.len() as f64;
        let mut model: Box<dyn Recommender> = Box::new(BiasedMf::new(
            &plan.train,
            data.users.len(),
            data.items.len(),
            global_mean as f32,
            data.label_kind,
        )?);
        let mut head = model.head();
        if data.label_kind == LabelKind::Rating {
            let (low, high) = rating_scale(&data.train);
            head = head.with_clip(low, high);
        }
        let mut latency = LatencyRecorder::new();
        let started = Instant::now();
        let seed_events: Vec<Interaction> = seed_samples
            .iter()
            .map(|&k| data.train[k as usize])
            .collect();
        let report = model.fit(&seed_events, &seed_samples, plan.train.epochs)?;
        let train_elapsed = started.elapsed();
        latency.record("train", train_elapsed);

        let started = Instant::now();
        let all_users: Vec<u32> = (0..data.users.len() as u32).collect();
        let all_items: Vec<u32> = (0..data.items.len() as u32).collect();
        let rows = RowMirror::new(
            head.layout.row_len(),
            model.user_rows(&all_users)?,
            model.item_rows(&all_items)?,
        );
        let mut engine = ScoringEngine::start(plan.workers, head.clone())?;
        let oracle = plan
            .select
            .as_ref()
            .is_some_and(|s| s.strategy.def().needs_labels);
        let insert: Vec<PoolSample> = (0..data.train.len() as u32)
            .filter(|&k| !labelled[k as usize])
            .map(|k| pool_sample(&data.train, k, oracle))
            .collect();
        let update = EngineUpdate {
            insert,
            remove: Vec::new(),
            user_rows: rows.user_entries(&all_users),
            item_rows: rows.item_entries(&all_items),
            labels: seed_events.iter().map(|e| (e.item, e.label)).collect(),
            head: None,
        };
        let output = engine.apply(update)?;
        let mut experiment = Self {
            select: plan.select.clone(),
            evaluate: plan.evaluate.clone(),
            refit: plan.train.refit,
            epochs_per_round: plan.train.epochs_per_round,
            rounds: pool.rounds,
            seed: plan.seed,
            labelled,
            head,
            model,
            engine,
            rows,
            ranked: RankedPool::new(plan.seed, plan.select.as_ref().is_some_and(|s| s.per_user)),
            maintained: BTreeMap::new(),
            round: 0,
            latency,
            selections: Vec::new(),
            history: Vec::new(),
            data,
        };
        experiment.apply_scores(&output.updates);
        let score_elapsed = started.elapsed();
        experiment.latency.record("score", score_elapsed);
        let record = experiment.record(
            0,
            seed_samples.len() as u64,
            output.rescored,
            report.last_epoch_loss,
            [
                ("select", 0.0),
                ("train", train_elapsed.as_secs_f64() * 1e3),
                ("score", score_elapsed.as_secs_f64() * 1e3),
            ],
        );
        experiment.history.push(record);
        Ok(experiment)
    }

    /// Whether rounds remain.
    pub fn has_next(&self) -> bool {
        self.round < self.rounds
    }

    /// The round records so far (round 0 first).
    pub fn history(&self) -> &[RoundRecord] {
        &self.history
    }

    /// Runs one round and returns its record.
    pub fn next_round(&mut self) -> Result<&RoundRecord, RunError> {
        let select = self
            .select
            .clone()
            .expect("rounds > 0 imply a select node (checked by the planner)");
        self.round += 1;
        let round = self.round;

        let started = Instant::now();
        let picked = if select.per_user {
            self.ranked.top_per_group(select.budget as usize)
        } else {
            self.ranked.top(select.budget as usize)
        };
        let select_elapsed = started.elapsed();
        self.latency.record("select", select_elapsed);
        if picked.is_empty() {
            return Err(RunError::Experiment {
                field: "protocol.pool.rounds".into(),
                message: format!("round {round}: the pool is empty, nothing left to select"),
                help: "lower `rounds` or `budget`".into(),
            });
        }

        let mut new_samples = Vec::with_capacity(picked.len());
        for &(sample, key) in &picked {
            let event = self.data.train[sample as usize];
            self.labelled[sample as usize] = true;
            self.selections.push(SelectionRecord {
                round,
                sample,
                user_id: self.data.users.raw(event.user).clone(),
                item_id: self.data.items.raw(event.item).clone(),
                score: key,
            });
            new_samples.push(sample);
        }

        let started = Instant::now();
        let train_on: Vec<u32> = match self.refit {
            RefitPolicy::NewLabels => new_samples.clone(),
            RefitPolicy::AllLabels => (0..self.data.train.len() as u32)
                .filter(|&k| self.labelled[k as usize])
                .collect(),
        };
        let events: Vec<Interaction> = train_on
            .iter()
            .map(|&k| self.data.train[k as usize])
            .collect();
        let report = self.model.fit(&events, &train_on, self.epochs_per_round)?;
        let user_rows = self.model.user_rows(&report.changed_users)?;
        let item_rows = self.model.item_rows(&report.changed_items)?;
        let train_elapsed = started.elapsed();
        self.latency.record("train", train_elapsed);

        let started = Instant::now();
        self.rows.set_users(&report.changed_users, &user_rows);
        self.rows.set_items(&report.changed_items, &item_rows);
        let oracle = select.strategy.def().needs_labels;
        let update = EngineUpdate {
            insert: Vec::new(),
            remove: new_samples
                .iter()
                .map(|&k| pool_sample(&self.data.train, k, oracle))
                .collect(),
            user_rows: self.rows.user_entries(&report.changed_users),
            item_rows: self.rows.item_entries(&report.changed_items),
            labels: new_samples
                .iter()
                .map(|&k| {
                    (
                        self.data.train[k as usize].item,
                        self.data.train[k as usize].label,
                    )
                })
                .collect(),
            head: report.shared_changed.then(|| self.head.clone()),
        };
        let output = self.engine.apply(update)?;
        self.apply_scores(&output.updates);
        let score_elapsed = started.elapsed();
        self.latency.record("score", score_elapsed);

        let labelled = self.labelled.iter().filter(|&&l| l).count() as u64;
        let mut record = self.record(
            round,
            labelled,
            output.rescored,
            report.last_epoch_loss,
            [
                ("select", select_elapsed.as_secs_f64() * 1e3),
                ("train", train_elapsed.as_secs_f64() * 1e3),
                ("score", score_elapsed.as_secs_f64() * 1e3),
            ],
        );
        record.selected = picked.len() as u64;
        self.history.push(record);
        Ok(self.history.last().expect("just pushed"))
    }

    /// Applies the engine's consolidated score changes to the ranking and the maintained map.
    fn apply_scores(&mut self, updates: &[crate::dataflow::ScoreUpdate]) {
        let Some(strategy) = self.select.as_ref().map(|s| s.strategy) else {
            for u in updates {
                self.apply_maintained(u.sample, u.diff, u.state.score);
            }
            return;
        };
        for u in updates {
            self.apply_maintained(u.sample, u.diff, u.state.score);
            if u.diff < 0 {
                self.ranked.remove(u.sample);
            } else {
                let signals = SampleSignals {
                    sample: u.sample,
                    prediction: u.state.score.prediction,
                    variance: u.state.score.variance,
                    loss: u.state.score.loss,
                    item_labels: u.state.item_labels,
                    item_entropy: u.state.item_entropy,
                };
                self.ranked
                    .upsert(u.sample, u.state.user, strategy.key(&signals, self.seed));
            }
        }
    }

    fn apply_maintained(&mut self, sample: SampleIdx, diff: i64, score: PerSampleScore) {
        if diff < 0 {
            self.maintained.remove(&sample);
        } else {
            self.maintained.insert(sample, score);
        }
    }

    /// Evaluates on the test set and builds the round's record.
    fn record<const N: usize>(
        &mut self,
        round: u32,
        labelled: u64,
        rescored: u64,
        train_loss: f32,
        timings: [(&str, f64); N],
    ) -> RoundRecord {
        let started = Instant::now();
        let mut metrics = match &self.evaluate {
            Some(plan) => {
                let scored: Vec<Scored> = self
                    .data
                    .test
                    .iter()
                    .map(|e| Scored {
                        user: e.user,
                        prediction: self
                            .head
                            .score(self.rows.user(e.user), self.rows.item(e.item), None)
                            .prediction,
                        label: e.label,
                    })
                    .collect();
                evaluate(&plan.metrics, &scored, plan.relevant)
            }
            None => Vec::new(),
        };
        metrics.push(("train_loss".into(), f64::from(train_loss)));
        let evaluate_elapsed = started.elapsed();
        self.latency.record("evaluate", evaluate_elapsed);
        let mut timings_ms: Vec<(String, f64)> =
            timings.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        timings_ms.push(("evaluate".into(), evaluate_elapsed.as_secs_f64() * 1e3));
        RoundRecord {
            round,
            labelled,
            selected: 0,
            rescored,
            metrics,
            timings_ms,
        }
    }

    /// The engine-maintained score of every pool sample.
    pub fn maintained_scores(&self) -> &BTreeMap<SampleIdx, PerSampleScore> {
        &self.maintained
    }

    /// Every pool sample scored from scratch with the model's current rows (the reference
    /// the maintained scores must equal).
    pub fn scores_from_scratch(&self) -> Result<BTreeMap<SampleIdx, PerSampleScore>, RunError> {
        let oracle = self
            .select
            .as_ref()
            .is_some_and(|s| s.strategy.def().needs_labels);
        let users: Vec<u32> = (0..self.data.users.len() as u32).collect();
        let items: Vec<u32> = (0..self.data.items.len() as u32).collect();
        let fresh = RowMirror::new(
            self.head.layout.row_len(),
            self.model.user_rows(&users)?,
            self.model.item_rows(&items)?,
        );
        Ok((0..self.data.train.len() as u32)
            .filter(|&k| !self.labelled[k as usize])
            .map(|k| {
                let e = self.data.train[k as usize];
                let label = oracle.then_some(e.label);
                (
                    k,
                    self.head
                        .score(fresh.user(e.user), fresh.item(e.item), label),
                )
            })
            .collect())
    }

    /// Stops the engine and hands back what the experiment recorded.
    pub fn finish(self) -> Result<ExperimentOutput, RunError> {
        self.engine.finish()?;
        Ok(ExperimentOutput {
            rounds: self.history,
            selections: self.selections,
            latency: self.latency,
        })
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

fn pool_sample(train: &[Interaction], k: u32, label_visible: bool) -> PoolSample {
    let e = train[k as usize];
    PoolSample {
        sample: k,
        user: e.user,
        item: e.item,
        label: label_visible.then_some(e.label),
    }
}

/// The smallest and largest training label: the rating scale predictions are clipped to.
fn rating_scale(train: &[Interaction]) -> (f32, f32) {
    train
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), e| {
            (lo.min(e.label), hi.max(e.label))
        })
}

/// An empty pool, or a budget the pool cannot pay, is a configuration error.
fn check_budget(plan: &Plan, pool_size: usize, data: &ExperimentData) -> Result<(), RunError> {
    let ProtocolPlan::Pool(pool) = &plan.protocol;
    let (Some(select), true) = (&plan.select, pool.rounds > 0) else {
        return Ok(());
    };
    if data.train.is_empty() {
        return Err(RunError::Experiment {
            field: "data.events".into(),
            message: "no training events after the split".into(),
            help: "check the event file and the split's test fraction".into(),
        });
    }
    if pool_size == 0 {
        return Err(RunError::Experiment {
            field: "protocol.pool.labelled".into(),
            message: format!(
                "the pool is empty: all {} training events start labelled",
                data.train.len()
            ),
            help:
                "lower `labelled: {fraction: ...}`, or set `rounds: 0` to train once on everything"
                    .into(),
        });
    }
    let needed = if select.per_user {
        select.budget
    } else {
        select.budget * u64::from(pool.rounds)
    };
    if !select.per_user && needed > pool_size as u64 {
        return Err(RunError::Experiment {
            field: format!("nodes.{}.select.budget", select.node),
            message: format!(
                "budget {} x {} rounds = {needed} samples, but the pool has only {pool_size}",
                select.budget, pool.rounds
            ),
            help: format!(
                "lower `budget` to at most {} or `rounds`",
                pool_size as u64 / u64::from(pool.rounds)
            ),
        });
    }
    Ok(())
}
