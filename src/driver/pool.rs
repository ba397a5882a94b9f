//! The pool protocol: an initially labelled seed, a hidden-label pool and a test set. Each
//! round the strategy picks `budget` pool samples, their labels are revealed, the model
//! trains, and the engine re-scores the samples whose rows changed.

use crate::data::{IdMap, Interaction, UserIdx};
use crate::dataflow::PoolSample;
use crate::model::{FitReport, ModelSet, Recommender};
use crate::plan::params::{RefitPolicy, TrainParams};
use crate::plan::{
    EvaluatePlan, ModelsPlan, Plan, PoolPlan, PoolRounds, ProtocolPlan, SelectPlan, TrainedModel,
};
use crate::results::{RoundRecord, SelectionRecord};
use crate::scoring::ScoringHead;

use super::checkpoint::Progress;
use super::experiment::{
    Experiment, ExperimentOutput, InitialFit, Resumed, RoundClock, RoundCounts, fit_initial,
    last_round, mean_label, model_and_head, pool_sample, progress_of, refit_samples,
    resumed_session, round_zero_clock, saved_sample, split_round_record, start_session,
    strategy_reads_labels, users_of,
};
use super::session::{PoolChanges, Session};
use super::split::initial_labels;
use super::{ExperimentData, RunError, load_data};

/// Round 0 of a pool experiment up to its trained model: the loaded and split data, the
/// initially labelled samples and the initial fit. Arms of a study that differ only after
/// round 0 (see [`PoolStart::serves`]) start from copies of one `PoolStart`, so round 0 is
/// computed once per seed.
pub struct PoolStart {
    data: ExperimentData,
    labelled: Vec<bool>,
    seed_samples: Vec<u32>,
    seed_events: Vec<Interaction>,
    model: ModelSet,
    head: ScoringHead,
    report: FitReport,
    stopped_at: Option<usize>,
    /// Round 0's stages so far: loading, embedding, training.
    clock: RoundClock,
}

impl PoolStart {
    /// Loads the data of `plan`, labels its initial samples and trains the initial model.
    pub fn train(plan: &Plan, pool: &PoolPlan) -> Result<Self, RunError> {
        let RoundZero {
            data,
            labelled,
            seed_samples,
            seed_events,
            global_mean,
        } = RoundZero::label(plan, pool)?;
        let (mut model, head) = model_and_head(plan, &data, global_mean)?;
        let mut clock = round_zero_clock(&data);
        let (report, stopped_at) = clock.time("train", || {
            let fit = InitialFit {
                events: &seed_events,
                keys: &seed_samples,
                epochs: plan.models.schedule().epochs,
                global_mean,
            };
            fit_initial(&mut model, &head, plan, &data, fit)
        })?;
        Ok(Self {
            data,
            labelled,
            seed_samples,
            seed_events,
            model,
            head,
            report,
            stopped_at,
            clock,
        })
    }

    /// Whether a start trained for `trained` serves `plan` exactly as one trained for
    /// `plan` would: both are pool experiments whose plans differ only in what acts after
    /// round 0 (the select node, the number of rounds, the retraining protocol and its
    /// passes) and in their names and output folders.
    pub fn serves(trained: &Plan, plan: &Plan) -> bool {
        let round_zero = |p: &Plan| {
            let ProtocolPlan::Pool(pool) = &p.protocol else {
                return None;
            };
            Some(Plan {
                name: trained.name.clone(),
                output: trained.output.clone(),
                protocol: ProtocolPlan::Pool(PoolPlan {
                    rounds: None,
                    ..pool.clone()
                }),
                graph: Vec::new(),
                models: ModelsPlan {
                    trained: p
                        .models
                        .trained
                        .iter()
                        .map(|t| TrainedModel {
                            params: TrainParams {
                                refit: RefitPolicy::AllLabels,
                                epochs_per_round: 0,
                                ..t.params.clone()
                            },
                            ..t.clone()
                        })
                        .collect(),
                    ..p.models.clone()
                },
                ..p.clone()
            })
        };
        round_zero(trained).is_some_and(|t| Some(t) == round_zero(plan))
    }

    /// An independent copy (the model deep-copied, with its optimiser and random state).
    pub fn duplicate(&self) -> Result<Self, RunError> {
        Ok(Self {
            data: self.data.clone(),
            labelled: self.labelled.clone(),
            seed_samples: self.seed_samples.clone(),
            seed_events: self.seed_events.clone(),
            model: self.model.twin()?,
            head: self.head.clone(),
            report: self.report.clone(),
            stopped_at: self.stopped_at,
            clock: self.clock.clone(),
        })
    }
}

/// Round 0 before anything trains: the loaded and split data and the initial labels.
struct RoundZero {
    data: ExperimentData,
    labelled: Vec<bool>,
    seed_samples: Vec<u32>,
    seed_events: Vec<Interaction>,
    /// The initial labels' mean (the model's starting offset).
    global_mean: f32,
}

impl RoundZero {
    /// Loads the data of `plan` and labels its initial samples.
    fn label(plan: &Plan, pool: &PoolPlan) -> Result<Self, RunError> {
        let data = load_data(plan, &pool.split)?;
        let labelled = initial_labels(&data.train, pool.initial, plan.seed);
        check_budget(pool, &labelled, &data)?;
        let seed_samples: Vec<u32> = (0..data.train.len() as u32)
            .filter(|&k| labelled[k as usize])
            .collect();
        let seed_events: Vec<Interaction> = seed_samples
            .iter()
            .map(|&k| data.train[k as usize])
            .collect();
        let Some(global_mean) = mean_label(seed_events.iter().map(|e| e.label)) else {
            return Err(RunError::Experiment {
                field: "protocol.pool.labelled".into(),
                message: format!(
                    "no training event is labelled at the start ({} training events): the model has nothing to learn from",
                    data.train.len()
                ),
                help: "raise `labelled: {fraction: ...}` or use `labelled: {per_user: 1}`".into(),
            });
        };
        Ok(Self {
            data,
            labelled,
            seed_samples,
            seed_events,
            global_mean,
        })
    }
}

/// A running pool-protocol experiment.
pub struct PoolExperiment {
    data: ExperimentData,
    rounds: Option<PoolRounds>,
    evaluate: Vec<EvaluatePlan>,
    refit: RefitPolicy,
    epochs_per_round: usize,
    oracle: bool,
    labelled: Vec<bool>,
    session: Session,
    round: u32,
    selections: Vec<SelectionRecord>,
    history: Vec<RoundRecord>,
}

impl PoolExperiment {
    /// Continues `start` (trained for `plan`, or for a plan it [`PoolStart::serves`]):
    /// loads the pool into the engine and records round 0.
    pub fn start(
        plan: &Plan,
        pool: &PoolPlan,
        start: PoolStart,
        track_scores: bool,
    ) -> Result<Self, RunError> {
        let PoolStart {
            data,
            labelled,
            seed_samples,
            seed_events,
            model,
            head,
            report,
            stopped_at,
            mut clock,
        } = start;
        check_budget(pool, &labelled, &data)?;
        let mut session = start_session(plan, &data, (model, head), track_scores)?;
        let oracle = strategy_reads_labels(plan);
        let insert: Vec<PoolSample> = (0..data.train.len() as u32)
            .filter(|&k| !labelled[k as usize])
            .map(|k| pool_sample(&data.train, k, oracle))
            .collect();
        let output = clock.time("score", || {
            session.publish(PoolChanges {
                insert,
                remove: Vec::new(),
                labelled: &seed_events,
                fit: Some(&report),
            })
        })?;
        let mut experiment = Self::new(plan, pool, data, labelled, session);
        let counts = RoundCounts {
            labelled: seed_samples.len() as u64,
            selected: 0,
            rescored: output.rescored,
        };
        let mut record = experiment.finish_round(clock, counts, report.last_epoch_loss)?;
        record.note_early_stopping(stopped_at);
        experiment.history.push(record);
        Ok(experiment)
    }

    /// Continues the run `progress` was saved from: the data is loaded and labelled again,
    /// the model built as at the start takes the saved state, and the engine scores the
    /// pool left after the saved selections.
    pub fn resume(plan: &Plan, pool: &PoolPlan, progress: Progress) -> Result<Self, RunError> {
        let RoundZero {
            data,
            mut labelled,
            seed_events,
            global_mean,
            ..
        } = RoundZero::label(plan, pool)?;
        let start = model_and_head(plan, &data, global_mean)?;
        let mut known = seed_events;
        for selection in &progress.selections {
            let event = saved_sample(&data.train, selection.sample)?;
            labelled[selection.sample as usize] = true;
            known.push(event);
        }
        let oracle = strategy_reads_labels(plan);
        let pool_samples = (0..data.train.len() as u32)
            .filter(|&k| !labelled[k as usize])
            .map(|k| pool_sample(&data.train, k, oracle))
            .collect();
        let resumed = Resumed {
            state: &progress.model,
            pool: pool_samples,
            labelled: &known,
        };
        let session = resumed_session(plan, data.text.as_ref(), start, resumed)?;
        let mut experiment = Self::new(plan, pool, data, labelled, session);
        experiment.round = last_round(&progress.history);
        experiment.selections = progress.selections;
        experiment.history = progress.history;
        Ok(experiment)
    }

    /// The select node of the next round, while rounds remain.
    fn next_select(&self) -> Option<&SelectPlan> {
        let rounds = self.rounds.as_ref()?;
        (self.round < rounds.count).then_some(&rounds.select)
    }

    /// An experiment of `plan` at round 0 with nothing recorded yet.
    fn new(
        plan: &Plan,
        pool: &PoolPlan,
        data: ExperimentData,
        labelled: Vec<bool>,
        session: Session,
    ) -> Self {
        Self {
            rounds: pool.rounds.clone(),
            evaluate: plan.evaluate.clone(),
            refit: plan.models.schedule().refit,
            epochs_per_round: plan.models.schedule().epochs_per_round,
            oracle: strategy_reads_labels(plan),
            labelled,
            session,
            round: 0,
            selections: Vec::new(),
            history: Vec::new(),
            data,
        }
    }

    fn finish_round(
        &mut self,
        clock: RoundClock,
        counts: RoundCounts,
        train_loss: f32,
    ) -> Result<RoundRecord, RunError> {
        split_round_record(
            clock,
            &mut self.session,
            &self.data,
            &self.evaluate,
            self.round,
            counts,
            train_loss,
        )
    }
}

impl Experiment for PoolExperiment {
    fn history(&self) -> &[RoundRecord] {
        &self.history
    }

    fn has_next(&self) -> bool {
        self.next_select().is_some()
    }

    fn planned_rounds(&self) -> Option<u32> {
        Some(self.rounds.as_ref().map_or(0, |r| r.count))
    }

    fn session(&self) -> &Session {
        &self.session
    }

    fn pool(&self) -> Vec<PoolSample> {
        (0..self.data.train.len() as u32)
            .filter(|&k| !self.labelled[k as usize])
            .map(|k| pool_sample(&self.data.train, k, self.oracle))
            .collect()
    }

    fn ids(&self) -> (&IdMap, &IdMap) {
        (&self.data.users, &self.data.items)
    }

    fn test_users(&self) -> Vec<UserIdx> {
        users_of(&self.data.test)
    }

    fn next_round(&mut self) -> Result<&RoundRecord, RunError> {
        let Some(select) = self.next_select().cloned() else {
            return Err(RunError::Experiment {
                field: "protocol.pool.rounds".into(),
                message: format!("all {} rounds have run", self.round),
                help: "raise `rounds` to run more".into(),
            });
        };
        self.round += 1;
        let mut clock = RoundClock::default();
        let picked = clock.time("select", || self.session.pick(select.budget));
        if picked.is_empty() {
            return Err(RunError::Experiment {
                field: "protocol.pool.rounds".into(),
                message: format!(
                    "round {}: the pool is empty, nothing left to select",
                    self.round
                ),
                help: "lower `rounds` or `budget`".into(),
            });
        }
        let mut new_samples = Vec::with_capacity(picked.len());
        for &(sample, key) in &picked {
            let event = self.data.train[sample as usize];
            self.labelled[sample as usize] = true;
            self.selections.push(SelectionRecord {
                round: self.round,
                sample,
                user_id: self.data.users.raw(event.user).clone(),
                item_id: self.data.items.raw(event.item).clone(),
                score: key,
            });
            new_samples.push(sample);
        }
        let train_on = refit_samples(
            self.refit,
            &new_samples,
            &self.labelled,
            self.session.seed(),
            self.round,
        );
        let events: Vec<Interaction> = train_on
            .iter()
            .map(|&k| self.data.train[k as usize])
            .collect();
        let epochs = self.epochs_per_round;
        let report = clock.time("train", || {
            self.session.model_mut().fit(&events, &train_on, epochs)
        })?;
        let revealed: Vec<Interaction> = new_samples
            .iter()
            .map(|&k| self.data.train[k as usize])
            .collect();
        let remove = new_samples
            .iter()
            .map(|&k| pool_sample(&self.data.train, k, self.oracle))
            .collect();
        let output = clock.time("score", || {
            self.session.publish(PoolChanges {
                insert: Vec::new(),
                remove,
                labelled: &revealed,
                fit: Some(&report),
            })
        })?;
        let counts = RoundCounts {
            labelled: self.labelled.iter().filter(|&&l| l).count() as u64,
            selected: picked.len() as u64,
            rescored: output.rescored,
        };
        let record = self.finish_round(clock, counts, report.last_epoch_loss)?;
        self.history.push(record);
        Ok(self.history.last().expect("just pushed"))
    }

    fn progress(&self) -> Result<Progress, RunError> {
        progress_of(&self.session, &self.history, &self.selections, None)
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

/// An empty pool, or a budget the pool cannot pay, is a configuration error.
fn check_budget(pool: &PoolPlan, labelled: &[bool], data: &ExperimentData) -> Result<(), RunError> {
    let Some(PoolRounds { count, select }) = &pool.rounds else {
        return Ok(());
    };
    let pool_size = labelled.iter().filter(|&&l| !l).count();
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
    let needed = select.budget * u64::from(*count);
    if !select.per_user && needed > pool_size as u64 {
        return Err(RunError::Experiment {
            field: format!("nodes.{}.select.budget", select.node),
            message: format!(
                "budget {} x {} rounds = {needed} samples, but the pool has only {pool_size}",
                select.budget, count
            ),
            help: format!(
                "lower `budget` to at most {} or `rounds`",
                pool_size as u64 / u64::from(*count)
            ),
        });
    }
    Ok(())
}
