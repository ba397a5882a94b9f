//! The selection protocol (sample selection on fully logged data, e.g. hard-example
//! mining): every training label is known, so each sample's loss is maintained exactly;
//! each round the strategy picks the `budget` samples to train on next. Samples stay in the
//! pool: a sample whose loss stays high can be picked again.

use crate::data::{IdMap, Interaction, UserIdx};
use crate::dataflow::{EngineSite, PoolSample};
use crate::model::Recommender;
use crate::plan::{Plan, SelectPlan, SelectionProtocolPlan};
use crate::results::RoundRecord;

use super::checkpoint::Progress;
use super::experiment::{
    Experiment, InitialFit, Resumed, RoundClock, RoundCounts, SplitRun, fit_initial, mean_label,
    model_and_head, pool_sample, resumed_session, round_zero_clock, saved_sample, start_session,
};
use super::rounds::RoundCore;
use super::session::PoolChanges;
use super::{ExperimentData, RunError};

/// A running selection-protocol experiment.
pub struct SelectionExperiment {
    run: SplitRun,
    select: SelectPlan,
    rounds: u32,
    core: RoundCore,
}

impl SelectionExperiment {
    /// Loads every training sample (with its label) into the engine, optionally warms the
    /// model up on all of them, and records round 0.
    pub fn start(
        plan: &Plan,
        protocol: &SelectionProtocolPlan,
        site: EngineSite,
        data: ExperimentData,
        track_scores: bool,
    ) -> Result<Self, RunError> {
        let global_mean = checked_labels(&protocol.select, &data)?;
        let (mut model, head) = model_and_head(plan, &data, global_mean)?;
        let mut clock = round_zero_clock(&data);
        let keys: Vec<u32> = (0..data.train.len() as u32).collect();
        let (report, stopped_at) = clock.time("train", || {
            let fit = InitialFit {
                events: &data.train,
                keys: &keys,
                epochs: protocol.warmup_epochs,
                global_mean,
            };
            fit_initial(&mut model, &head, plan, &data, fit)
        })?;
        let mut session = start_session(plan, site, &data, (model, head), track_scores)?;
        let insert: Vec<PoolSample> = keys
            .iter()
            .map(|&k| pool_sample(k, data.train[k as usize], true))
            .collect();
        let output = clock.time("score", || {
            session.publish(PoolChanges {
                insert,
                remove: Vec::new(),
                labelled: &data.train,
                fit: Some(&report),
            })
        })?;
        let counts = RoundCounts {
            labelled: data.train.len() as u64,
            selected: 0,
            rescored: output.rescored,
        };
        let run = SplitRun::new(plan, data);
        let mut record = run.record(&mut session, 0, clock, counts, &report)?;
        record.note_early_stopping(stopped_at);
        let mut core = RoundCore::new(session);
        core.push(record);
        Ok(Self {
            run,
            select: protocol.select.clone(),
            rounds: protocol.rounds,
            core,
        })
    }

    /// Continues the run `progress` was saved from: the data is loaded again, the model
    /// built as at the start takes the saved state, and the engine scores every sample.
    pub fn resume(
        plan: &Plan,
        protocol: &SelectionProtocolPlan,
        site: EngineSite,
        data: ExperimentData,
        progress: Progress,
    ) -> Result<Self, RunError> {
        let global_mean = checked_labels(&protocol.select, &data)?;
        for selection in &progress.selections {
            saved_sample(&data.train, selection.sample)?;
        }
        let start = model_and_head(plan, &data, global_mean)?;
        let resumed = Resumed {
            state: &progress.model,
            pool: (0..data.train.len() as u32)
                .map(|k| pool_sample(k, data.train[k as usize], true))
                .collect(),
            labelled: &data.train,
        };
        let session = resumed_session(plan, site, data.text.as_ref(), start, resumed)?;
        Ok(Self {
            run: SplitRun::new(plan, data),
            select: protocol.select.clone(),
            rounds: protocol.rounds,
            core: RoundCore::resumed(session, progress),
        })
    }
}

impl Experiment for SelectionExperiment {
    fn core(&self) -> &RoundCore {
        &self.core
    }

    fn into_core(self: Box<Self>) -> RoundCore {
        self.core
    }

    fn has_next(&self) -> bool {
        self.core.next_round() <= self.rounds
    }

    fn planned_rounds(&self) -> Option<u32> {
        Some(self.rounds)
    }

    fn pool(&self) -> Vec<PoolSample> {
        (0..self.run.data.train.len() as u32)
            .map(|k| pool_sample(k, self.run.data.train[k as usize], true))
            .collect()
    }

    fn ids(&self) -> (&IdMap, &IdMap) {
        self.run.ids()
    }

    fn test_users(&self) -> Vec<UserIdx> {
        self.run.test_users()
    }

    fn next_round(&mut self) -> Result<&RoundRecord, RunError> {
        let round = self.core.next_round();
        if !self.has_next() {
            return Err(RunError::Experiment {
                field: "protocol.selection.rounds".into(),
                message: format!("all {} rounds have run", self.rounds),
                help: "raise `rounds` to run more".into(),
            });
        }
        let mut clock = RoundClock::default();
        let data = &self.run.data;
        let picked = self.core.pick(
            &mut clock,
            round,
            self.select.budget,
            |k| data.train[k as usize],
            self.run.ids(),
        );
        let samples: Vec<u32> = picked.iter().map(|(s, _)| *s).collect();
        let events: Vec<Interaction> = samples.iter().map(|&k| data.train[k as usize]).collect();
        let epochs = self.run.epochs_per_round;
        let session = &mut self.core.session;
        let report = clock.time("train", || {
            session.model_mut().fit(&events, &samples, epochs)
        })?;
        let output = clock.time("score", || {
            session.publish(PoolChanges {
                fit: Some(&report),
                ..PoolChanges::default()
            })
        })?;
        let counts = RoundCounts {
            labelled: data.train.len() as u64,
            selected: picked.len() as u64,
            rescored: output.rescored,
        };
        let record = self.run.record(session, round, clock, counts, &report)?;
        Ok(self.core.push(record))
    }
}

/// The training labels' mean, once the training samples are checked against the select
/// node's budget.
fn checked_labels(select: &SelectPlan, data: &ExperimentData) -> Result<f32, RunError> {
    let Some(global_mean) = mean_label(data.train.iter().map(|e| e.label)) else {
        return Err(RunError::Experiment {
            field: "protocol.selection.split".into(),
            message: "no training events after the split".into(),
            help: "check the event file and the split's test fraction".into(),
        });
    };
    if !select.per_user && select.budget > data.train.len() as u64 {
        return Err(RunError::Experiment {
            field: format!("nodes.{}.select.budget", select.node),
            message: format!(
                "budget {} is larger than the {} training samples it selects from",
                select.budget,
                data.train.len()
            ),
            help: format!("lower `budget` to at most {}", data.train.len()),
        });
    }
    Ok(global_mean)
}
