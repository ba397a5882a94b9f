//! The selection protocol (sample selection on fully logged data, e.g. hard-example
//! mining): every training label is known, so each sample's loss is maintained exactly;
//! each round the strategy picks the `budget` samples to train on next. Samples stay in the
//! pool: a sample whose loss stays high can be picked again.

use crate::data::{IdMap, Interaction, UserIdx};
use crate::dataflow::PoolSample;
use crate::model::Recommender;
use crate::plan::{EvaluatePlan, Plan, SelectPlan, SelectionProtocolPlan};
use crate::results::{RoundRecord, SelectionRecord};

use super::checkpoint::Progress;
use super::experiment::{
    Experiment, ExperimentOutput, InitialFit, Resumed, RoundClock, RoundCounts, fit_initial,
    last_round, mean_label, model_and_head, pool_sample, progress_of, resumed_session,
    round_zero_clock, saved_sample, split_round_record, start_session, users_of,
};
use super::session::{PoolChanges, Session};
use super::{ExperimentData, RunError};

/// A running selection-protocol experiment.
pub struct SelectionExperiment {
    data: ExperimentData,
    select: SelectPlan,
    evaluate: Vec<EvaluatePlan>,
    epochs_per_round: usize,
    rounds: u32,
    session: Session,
    round: u32,
    selections: Vec<SelectionRecord>,
    history: Vec<RoundRecord>,
}

impl SelectionExperiment {
    /// Loads every training sample (with its label) into the engine, optionally warms the
    /// model up on all of them, and records round 0.
    pub fn start(
        plan: &Plan,
        protocol: &SelectionProtocolPlan,
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
        let mut session = start_session(plan, &data, (model, head), track_scores)?;
        let insert: Vec<PoolSample> = keys
            .iter()
            .map(|&k| pool_sample(&data.train, k, true))
            .collect();
        let output = clock.time("score", || {
            session.publish(PoolChanges {
                insert,
                remove: Vec::new(),
                labelled: &data.train,
                fit: Some(&report),
            })
        })?;
        let mut experiment = Self {
            select: protocol.select.clone(),
            evaluate: plan.evaluate.clone(),
            epochs_per_round: plan.models.schedule().epochs_per_round,
            rounds: protocol.rounds,
            session,
            round: 0,
            selections: Vec::new(),
            history: Vec::new(),
            data,
        };
        let counts = RoundCounts {
            labelled: experiment.data.train.len() as u64,
            selected: 0,
            rescored: output.rescored,
        };
        let mut record = experiment.finish_round(clock, counts, report.last_epoch_loss)?;
        record.note_early_stopping(stopped_at);
        experiment.history.push(record);
        Ok(experiment)
    }

    /// Continues the run `progress` was saved from: the data is loaded again, the model
    /// built as at the start takes the saved state, and the engine scores every sample.
    pub fn resume(
        plan: &Plan,
        protocol: &SelectionProtocolPlan,
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
                .map(|k| pool_sample(&data.train, k, true))
                .collect(),
            labelled: &data.train,
        };
        let session = resumed_session(plan, data.text.as_ref(), start, resumed)?;
        Ok(Self {
            select: protocol.select.clone(),
            evaluate: plan.evaluate.clone(),
            epochs_per_round: plan.models.schedule().epochs_per_round,
            rounds: protocol.rounds,
            session,
            round: last_round(&progress.history),
            selections: progress.selections,
            history: progress.history,
            data,
        })
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

impl Experiment for SelectionExperiment {
    fn history(&self) -> &[RoundRecord] {
        &self.history
    }

    fn has_next(&self) -> bool {
        self.round < self.rounds
    }

    fn planned_rounds(&self) -> Option<u32> {
        Some(self.rounds)
    }

    fn session(&self) -> &Session {
        &self.session
    }

    fn pool(&self) -> Vec<PoolSample> {
        (0..self.data.train.len() as u32)
            .map(|k| pool_sample(&self.data.train, k, true))
            .collect()
    }

    fn ids(&self) -> (&IdMap, &IdMap) {
        (&self.data.users, &self.data.items)
    }

    fn test_users(&self) -> Vec<UserIdx> {
        users_of(&self.data.test)
    }

    fn next_round(&mut self) -> Result<&RoundRecord, RunError> {
        self.round += 1;
        let mut clock = RoundClock::default();
        let picked = clock.time("select", || self.session.pick(self.select.budget));
        let samples: Vec<u32> = picked.iter().map(|(s, _)| *s).collect();
        for &(sample, key) in &picked {
            let event = self.data.train[sample as usize];
            self.selections.push(SelectionRecord {
                round: self.round,
                sample,
                user_id: self.data.users.raw(event.user).clone(),
                item_id: self.data.items.raw(event.item).clone(),
                score: key,
            });
        }
        let events: Vec<Interaction> = samples
            .iter()
            .map(|&k| self.data.train[k as usize])
            .collect();
        let epochs = self.epochs_per_round;
        let report = clock.time("train", || {
            self.session.model_mut().fit(&events, &samples, epochs)
        })?;
        let output = clock.time("score", || {
            self.session.publish(PoolChanges {
                fit: Some(&report),
                ..PoolChanges::default()
            })
        })?;
        let counts = RoundCounts {
            labelled: self.data.train.len() as u64,
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
