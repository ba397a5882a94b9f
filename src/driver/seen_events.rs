//! [`SeenEvents`]: the events a replay may still read, and the labels it keeps.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use crate::data::{Interaction, SampleIdx};
use crate::dataflow::PoolSample;

use super::RunError;
use super::experiment::pool_sample;

/// A replay's events from the oldest one it may still read to the newest: every event seen,
/// or, with a pool horizon (`pool_windows: K`), those of the last `K` windows, whose
/// unlabelled events are the pool's candidates (an older event is in no pool any more and
/// cannot be picked). Sample `k` is the `k`th event of the log.
///
/// The labelled events are kept apart, as long as the replay retrains on earlier labels
/// (`refit: all_labels` or `rehearsal`), so forgetting old windows loses none of them; the
/// memory then follows the pool and the labels, not the log.
#[derive(Debug, Default)]
pub(super) struct SeenEvents {
    /// The sample of `events[0]`.
    first: SampleIdx,
    events: Vec<Interaction>,
    /// Whether each sample's label is known.
    labelled: Vec<bool>,
    /// Every labelled event by sample, when earlier labels are retrained on.
    history: Option<BTreeMap<SampleIdx, Interaction>>,
    /// The pool horizon in windows, if any.
    horizon: Option<u32>,
    /// With a horizon, the samples of each window held, oldest first.
    windows: VecDeque<Range<SampleIdx>>,
}

impl SeenEvents {
    /// No events yet; `keep_labels` keeps every labelled event for retraining, `horizon`
    /// is the pool horizon in windows.
    pub fn new(keep_labels: bool, horizon: Option<u32>) -> Self {
        Self {
            history: keep_labels.then(BTreeMap::new),
            horizon,
            ..Self::default()
        }
    }

    /// The sample after the newest event.
    pub fn end(&self) -> SampleIdx {
        self.first + self.events.len() as SampleIdx
    }

    /// Appends a window's events, unlabelled, and returns their samples. With a horizon,
    /// the window beyond it stays held until [`SeenEvents::expire`].
    pub fn push(&mut self, events: &[Interaction]) -> Range<SampleIdx> {
        let start = self.end();
        self.events.extend_from_slice(events);
        self.labelled.resize(self.events.len(), false);
        let samples = start..self.end();
        if self.horizon.is_some() {
            self.windows.push_back(samples.clone());
        }
        samples
    }

    /// The samples whose unlabelled events are the pool's candidates: every event seen, or
    /// those of the windows within the horizon.
    pub fn candidates(&self) -> Range<SampleIdx> {
        let end = self.end();
        match self.horizon {
            None => self.first..end,
            Some(horizon) => {
                let beyond = self.windows.len().saturating_sub(horizon as usize);
                self.windows.get(beyond).map_or(end..end, |w| w.start..end)
            }
        }
    }

    /// The pool: the unlabelled events among the candidates.
    pub fn pool(&self, label_visible: bool) -> Vec<PoolSample> {
        self.unlabelled(self.candidates(), label_visible)
    }

    /// Forgets the window that fell beyond the horizon with the last push, returning the
    /// pool samples of its unlabelled events (they leave the pool).
    pub fn expire(&mut self, label_visible: bool) -> Vec<PoolSample> {
        let kept = self.candidates().start;
        let leaving = self.unlabelled(self.first..kept, label_visible);
        self.forget_before(kept);
        leaving
    }

    /// [`SeenEvents::expire`] without the leaving samples (a resume rebuilds the pool once,
    /// at the end).
    pub fn forget_expired(&mut self) {
        self.forget_before(self.candidates().start);
    }

    /// Sample `k`'s event, if it is still held.
    pub fn get(&self, k: SampleIdx) -> Option<Interaction> {
        let at = k.checked_sub(self.first)? as usize;
        self.events.get(at).copied()
    }

    /// Sample `k`'s event. A replay reads only samples of windows it still holds (its
    /// pool's, this window's): another is a bug.
    pub fn event(&self, k: SampleIdx) -> Interaction {
        self.get(k)
            .expect("a replay reads only the events it holds")
    }

    /// The event of labelled sample `k`, from the history when its window was forgotten.
    pub fn labelled_event(&self, k: SampleIdx) -> Interaction {
        match self.history.as_ref().and_then(|h| h.get(&k)) {
            Some(event) => *event,
            None => self.event(k),
        }
    }

    /// Marks sample `k`'s label known (keeping its event when earlier labels are retrained
    /// on).
    pub fn label(&mut self, k: SampleIdx) {
        let event = self.event(k);
        self.labelled[(k - self.first) as usize] = true;
        if let Some(history) = &mut self.history {
            history.insert(k, event);
        }
    }

    /// Every labelled sample, in ascending order: those still held when no history is kept
    /// (a replay training on new labels only never reads them).
    pub fn labelled_samples(&self) -> impl Iterator<Item = SampleIdx> + '_ {
        let kept = self.history.iter().flat_map(|h| h.keys().copied());
        let held = self.history.is_none().then(|| {
            (self.first..self.end()).filter(|&k| self.labelled[(k - self.first) as usize])
        });
        kept.chain(held.into_iter().flatten())
    }

    /// The pool samples of the unlabelled events among `samples` (their labels visible to
    /// the engine only when `label_visible`).
    pub fn unlabelled(&self, samples: Range<SampleIdx>, label_visible: bool) -> Vec<PoolSample> {
        samples
            .filter(|&k| !self.labelled[(k - self.first) as usize])
            .map(|k| self.pool_sample(k, label_visible))
            .collect()
    }

    /// Sample `k` as the pool holds it.
    pub fn pool_sample(&self, k: SampleIdx, label_visible: bool) -> PoolSample {
        pool_sample(k, self.event(k), label_visible)
    }

    /// Forgets the events before sample `k` (they left every pool), and their windows.
    fn forget_before(&mut self, k: SampleIdx) {
        let gone = (k.saturating_sub(self.first) as usize).min(self.events.len());
        self.events.drain(..gone);
        self.labelled.drain(..gone);
        self.first += gone as SampleIdx;
        while self.windows.front().is_some_and(|w| w.end <= self.first) {
            self.windows.pop_front();
        }
    }

    /// The event of sample `k`, picked in window `window` of a saved run, or why a resume
    /// cannot hold it.
    pub fn saved_pick(&self, k: SampleIdx, window: u32) -> Result<Interaction, RunError> {
        self.get(k).ok_or_else(|| {
            RunError::Resume(format!(
                "the checkpoint selected sample {k} in window {window}, which was not in the \
                 replay's pool then: the log changed since the run started; start it over \
                 without --resume"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(k: u32) -> Interaction {
        Interaction {
            user: k % 7,
            item: k % 5,
            label: k as f32,
            time: i64::from(k),
        }
    }

    #[test]
    fn windows_beyond_the_horizon_leave_the_pool_and_keep_their_labels() {
        let window = |range: Range<u32>| range.map(event).collect::<Vec<_>>();
        let mut seen = SeenEvents::new(true, Some(1));
        assert_eq!(seen.push(&window(0..10)), 0..10);
        seen.label(3);
        assert!(seen.expire(false).is_empty(), "the first window stays");
        assert_eq!(seen.push(&window(10..20)), 10..20);
        seen.label(12);
        assert_eq!(seen.candidates(), 10..20);
        let leaving: Vec<u32> = seen.expire(false).iter().map(|s| s.sample).collect();
        assert_eq!(leaving, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(seen.get(3), None);
        assert_eq!(seen.event(15), event(15));
        assert_eq!(seen.labelled_event(3), event(3));
        assert_eq!(seen.labelled_samples().collect::<Vec<_>>(), [3, 12]);
        let pool: Vec<u32> = seen.pool(false).iter().map(|s| s.sample).collect();
        assert_eq!(pool, [10, 11, 13, 14, 15, 16, 17, 18, 19]);
        assert_eq!(seen.saved_pick(15, 1).unwrap(), event(15));
        let Err(RunError::Resume(message)) = seen.saved_pick(3, 1) else {
            panic!("a forgotten sample cannot be a saved pick");
        };
        assert!(
            message.contains("sample 3 in window 1, which was not in the replay's pool then"),
            "{message}"
        );
        assert_eq!(seen.push(&window(20..25)), 20..25);
        seen.forget_expired();
        assert_eq!(seen.get(19), None);
        assert_eq!(seen.candidates(), 20..25);
        // Without a history, the labelled samples are those still held.
        let mut recent = SeenEvents::new(false, Some(1));
        recent.push(&window(0..5));
        recent.label(2);
        recent.push(&window(5..10));
        recent.label(8);
        recent.forget_expired();
        assert_eq!(recent.labelled_samples().collect::<Vec<_>>(), [8]);
        // Without a horizon every event stays a candidate.
        let mut whole = SeenEvents::new(false, None);
        whole.push(&window(0..5));
        whole.push(&window(5..10));
        assert!(whole.expire(false).is_empty());
        assert_eq!(whole.candidates(), 0..10);
    }
}
