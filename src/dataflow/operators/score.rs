//! `score_named`: turns changes to the score tasks (a sample with its user row and item row
//! named by version) into changes to the sample states: a sample's new state, or that it has
//! none any more.
//!
//! The operator gathers a round's task changes until its input frontier passes the round,
//! then hands them to the worker's [`HeldStates`], which keeps every sample's task and
//! score: old states are read from there rather than recomputed, and a new head re-scores
//! every held sample in one pass. It holds a capability at the round in progress even when
//! no task changed, so that a round whose only change is the head still produces its output.
//!
//! [`HeldStates`]: crate::dataflow::held_states::HeldStates

use std::collections::BTreeMap;

use differential_dataflow::VecCollection;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use crate::dataflow::held_states::{HeldStates, TaskChange};
use crate::dataflow::records::{Multiplicity, RoundTime, ScoreTask, StateChange};
use crate::dataflow::side_table::SharedTables;

/// Scoring of score tasks.
pub(crate) trait Score<'scope> {
    /// Maintains the state of every task's sample, in an operator called `name`, and emits
    /// each round's changes to them at the round's time.
    ///
    /// ```text
    /// tasks.score_named("score: live head over versioned rows", tables) // -> StateChange
    /// ```
    fn score_named(
        self,
        name: &str,
        tables: SharedTables,
    ) -> Stream<'scope, RoundTime, Vec<StateChange>>;
}

impl<'scope> Score<'scope> for VecCollection<'scope, RoundTime, ScoreTask, Multiplicity> {
    fn score_named(
        self,
        name: &str,
        tables: SharedTables,
    ) -> Stream<'scope, RoundTime, Vec<StateChange>> {
        self.inner
            .unary_frontier(Pipeline, name, move |capability, _| {
                let mut capability = Some(capability);
                let mut pending: BTreeMap<RoundTime, Vec<TaskChange>> = BTreeMap::new();
                let mut held = HeldStates::default();
                move |(input, frontier), output| {
                    input.for_each(|_, updates| {
                        for (task, time, multiplicity) in updates.drain(..) {
                            pending.entry(time).or_default().push((task, multiplicity));
                        }
                    });
                    // Finish every round the frontier has passed, in order.
                    while let Some(held_at) = capability.as_mut() {
                        let time = *held_at.time();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let mut changes = pending.remove(&time).unwrap_or_default();
                        let mut session = output.session(&*held_at);
                        held.apply_round(&mut changes, &tables.read(), &mut |change| {
                            session.give(change)
                        });
                        drop(session);
                        let next = frontier
                            .frontier()
                            .first()
                            .copied()
                            .map(|next| pending.keys().next().map_or(next, |&k| k.min(next)));
                        match next {
                            Some(next) => held_at.downgrade(&next),
                            None => capability = None,
                        }
                    }
                }
            })
    }
}
