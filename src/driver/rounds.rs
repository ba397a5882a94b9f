//! What every protocol's run keeps the same way: its session, the rounds recorded so far
//! and the selections made. A protocol holds a [`RoundCore`] and adds only what differs:
//! which samples are in its pool and what one of its rounds does.

use crate::data::{IdMap, Interaction};
use crate::model::Recommender;
use crate::results::{RoundRecord, SelectionRecord};

use super::RunError;
use super::checkpoint::Progress;
use super::experiment::{ExperimentOutput, RoundClock};
use super::session::Session;

/// A run's session, rounds and selections.
pub struct RoundCore {
    /// The models, the incremental engine and the ranking.
    pub session: Session,
    history: Vec<RoundRecord>,
    selections: Vec<SelectionRecord>,
}

impl RoundCore {
    /// A run of `session` with nothing recorded yet.
    pub fn new(session: Session) -> Self {
        Self {
            session,
            history: Vec::new(),
            selections: Vec::new(),
        }
    }

    /// A run of `session` continuing after the rounds and selections of `progress`.
    pub fn resumed(session: Session, progress: Progress) -> Self {
        Self {
            session,
            history: progress.history,
            selections: progress.selections,
        }
    }

    /// The rounds recorded so far, round 0 first.
    pub fn history(&self) -> &[RoundRecord] {
        &self.history
    }

    /// The number of the round after the last one recorded (0 before any).
    pub fn next_round(&self) -> u32 {
        self.history.last().map_or(0, |r| r.round + 1)
    }

    /// Picks up to `budget` samples with the session's strategy (timed as `select`) and
    /// records each as a selection of `round`; `event_of(sample)` is a sample's event, `ids`
    /// its raw user and item ids.
    pub fn pick(
        &mut self,
        clock: &mut RoundClock,
        round: u32,
        budget: u64,
        event_of: impl Fn(u32) -> Interaction,
        (users, items): (&IdMap, &IdMap),
    ) -> Vec<(u32, f64)> {
        let picked = clock.time("select", || self.session.pick(budget));
        self.selections
            .extend(picked.iter().map(|&(sample, score)| {
                let event = event_of(sample);
                SelectionRecord {
                    round,
                    sample,
                    user_id: users.raw(event.user).clone(),
                    item_id: items.raw(event.item).clone(),
                    score,
                }
            }));
        picked
    }

    /// Records `record` as the latest round and returns it.
    pub fn push(&mut self, record: RoundRecord) -> &RoundRecord {
        self.history.push(record);
        &self.history[self.history.len() - 1]
    }

    /// What a checkpoint saves to resume from here: the rounds, the selections, the model's
    /// state and (for a replay) the prequential error sums.
    pub fn progress(&self, prequential: Option<(f64, f64, u64)>) -> Result<Progress, RunError> {
        Ok(Progress {
            history: self.history.clone(),
            selections: self.selections.clone(),
            model: self.session.model().save_state()?,
            prequential,
        })
    }

    /// Stops the engine and hands back what was recorded.
    pub fn finish(self) -> Result<ExperimentOutput, RunError> {
        let latency = self.session.finish()?;
        Ok(ExperimentOutput {
            rounds: self.history,
            selections: self.selections,
            latency,
        })
    }
}
