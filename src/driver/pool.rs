//! The pool protocol: an initially labelled seed, a hidden-label pool and a test set. Each
//! round the strategy picks `budget` pool samples, their labels are revealed, the model
//! trains, and the engine re-scores the samples whose rows changed.

use crate::data::{IdMap, Interaction, UserIdx};
use crate::dataflow::{EngineSite, PoolSample};
use crate::model::{FitReport, ModelSet, Recommender};
use crate::plan::params::{RefitPolicy, TrainParams};
use crate::plan::{ModelsPlan, Plan, PoolPlan, PoolRounds, ProtocolPlan, SelectPlan, TrainedModel};
use crate::results::RoundRecord;
use crate::scoring::ScoringHead;

use super::checkpoint::Progress;
use super::experiment::{
    Experiment, InitialFit, Resumed, RoundClock, RoundCounts, SplitRun, fit_initial, mean_label,
    model_and_head, pool_sample, refit_samples, resumed_session, round_zero_clock, saved_sample,
    start_session, strategy_reads_labels, unlabelled,
};
use super::rounds::RoundCore;
use super::session::PoolChanges;
use super::split::initial_labels;
use super::{ExperimentData, RunError, cluster, load_data};
use crate::io::shares::ReadShare;

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
    /// Loads the data of `plan` (with a `share`, this process's share of it: see
    /// [`load_data`]), labels its initial samples and trains the initial model.
    pub fn train(
        plan: &Plan,
        pool: &PoolPlan,
        share: Option<&ReadShare>,
    ) -> Result<Self, RunError> {
        let RoundZero {
            data,
            labelled,
            seed_samples,
            seed_events,
            global_mean,
        } = RoundZero::label(plan, pool, share)?;
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
    /// Loads the data of `plan` (see [`load_data`] for `share`) and labels its initial
    /// samples.
    fn label(plan: &Plan, pool: &PoolPlan, share: Option<&ReadShare>) -> Result<Self, RunError> {
        let data = load_data(plan, &pool.split, share)?;
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
    run: SplitRun,
    pool: PoolPlan,
    refit: RefitPolicy,
    /// Whether pool samples carry their hidden labels (a label-reading strategy).
    oracle: bool,
    labelled: Vec<bool>,
    core: RoundCore,
}

impl PoolExperiment {
    /// Continues `start` (trained for `plan`, or for a plan it [`PoolStart::serves`]):
    /// loads the pool into the engine on `site` and records round 0.
    pub fn start(
        plan: &Plan,
        pool: &PoolPlan,
        site: EngineSite,
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
        let mut session = start_session(plan, site, &data, (model, head), track_scores)?;
        let insert = every_unlabelled(&data.train, &labelled, strategy_reads_labels(plan));
        let output = clock.time("score", || {
            session.publish(PoolChanges {
                insert,
                remove: Vec::new(),
                labelled: &seed_events,
                fit: Some(&report),
            })
        })?;
        let counts = RoundCounts {
            labelled: seed_samples.len() as u64,
            selected: 0,
            rescored: output.rescored,
        };
        let run = SplitRun::new(plan, data);
        let mut record = run.record(&mut session, 0, clock, counts, &report)?;
        record.note_early_stopping(stopped_at);
        let mut core = RoundCore::new(session);
        core.push(record);
        Ok(Self::new(plan, pool, run, labelled, core))
    }

    /// Continues the run `progress` was saved from: the data is loaded and labelled again,
    /// the model built as at the start takes the saved state, and the engine scores the
    /// pool left after the saved selections on `site`.
    pub fn resume(
        plan: &Plan,
        pool: &PoolPlan,
        site: EngineSite,
        progress: Progress,
    ) -> Result<Self, RunError> {
        let RoundZero {
            data,
            mut labelled,
            seed_events,
            global_mean,
            ..
        } = RoundZero::label(plan, pool, cluster::read_share(&site).as_ref())?;
        let start = model_and_head(plan, &data, global_mean)?;
        let mut known = seed_events;
        for selection in &progress.selections {
            let event = saved_sample(&data.train, selection.sample)?;
            labelled[selection.sample as usize] = true;
            known.push(event);
        }
        let resumed = Resumed {
            state: &progress.model,
            pool: every_unlabelled(&data.train, &labelled, strategy_reads_labels(plan)),
            labelled: &known,
        };
        let session = resumed_session(plan, site, data.text.as_ref(), start, resumed)?;
        let run = SplitRun::new(plan, data);
        let core = RoundCore::resumed(session, progress);
        Ok(Self::new(plan, pool, run, labelled, core))
    }

    fn new(
        plan: &Plan,
        pool: &PoolPlan,
        run: SplitRun,
        labelled: Vec<bool>,
        core: RoundCore,
    ) -> Self {
        Self {
            run,
            pool: pool.clone(),
            refit: plan.models.schedule().refit,
            oracle: strategy_reads_labels(plan),
            labelled,
            core,
        }
    }

    /// The select node of the next round, while rounds remain.
    fn next_select(&self) -> Option<&SelectPlan> {
        let rounds = self.pool.rounds.as_ref()?;
        (self.core.next_round() <= rounds.count).then_some(&rounds.select)
    }
}

impl Experiment for PoolExperiment {
    fn core(&self) -> &RoundCore {
        &self.core
    }

    fn into_core(self: Box<Self>) -> RoundCore {
        self.core
    }

    fn has_next(&self) -> bool {
        self.next_select().is_some()
    }

    fn planned_rounds(&self) -> Option<u32> {
        Some(self.pool.round_count())
    }

    fn pool(&self) -> Vec<PoolSample> {
        every_unlabelled(&self.run.data.train, &self.labelled, self.oracle)
    }

    fn ids(&self) -> (&IdMap, &IdMap) {
        self.run.ids()
    }

    fn test_users(&self) -> Vec<UserIdx> {
        self.run.test_users()
    }

    fn next_round(&mut self) -> Result<&RoundRecord, RunError> {
        let round = self.core.next_round();
        let Some(budget) = self.next_select().map(|s| s.budget) else {
            return Err(RunError::Experiment {
                field: "protocol.pool.rounds".into(),
                message: format!("all {} rounds have run", round - 1),
                help: "raise `rounds` to run more".into(),
            });
        };
        let mut clock = RoundClock::default();
        let train = &self.run.data.train;
        let picked = self.core.pick(
            &mut clock,
            round,
            budget,
            |k| train[k as usize],
            self.run.ids(),
        );
        if picked.is_empty() {
            return Err(RunError::Experiment {
                field: "protocol.pool.rounds".into(),
                message: format!("round {round}: the pool is empty, nothing left to select"),
                help: "lower `rounds` or `budget`".into(),
            });
        }
        let new_samples: Vec<u32> = picked.iter().map(|&(sample, _)| sample).collect();
        for &sample in &new_samples {
            self.labelled[sample as usize] = true;
        }
        let session = &mut self.core.session;
        let labelled = &self.labelled;
        let train_on = refit_samples(
            self.refit,
            &new_samples,
            (0..labelled.len() as u32).filter(|&k| labelled[k as usize]),
            session.seed(),
            round,
        );
        let events: Vec<Interaction> = train_on.iter().map(|&k| train[k as usize]).collect();
        let epochs = self.run.epochs_per_round;
        let report = clock.time("train", || {
            session.model_mut().fit(&events, &train_on, epochs)
        })?;
        let revealed: Vec<Interaction> = new_samples.iter().map(|&k| train[k as usize]).collect();
        let remove = new_samples
            .iter()
            .map(|&k| pool_sample(k, train[k as usize], self.oracle))
            .collect();
        let output = clock.time("score", || {
            session.publish(PoolChanges {
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
        let record = self.run.record(session, round, clock, counts, &report)?;
        Ok(self.core.push(record))
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

/// The pool of a split: every training sample not labelled yet.
fn every_unlabelled(train: &[Interaction], labelled: &[bool], oracle: bool) -> Vec<PoolSample> {
    unlabelled(train, labelled, 0..train.len() as u32, oracle)
}
