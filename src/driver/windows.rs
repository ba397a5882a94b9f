//! Cutting a time-ordered stream of event batches into replay windows, without holding more
//! than one window and one batch in memory.

use crate::data::Interaction;
use crate::plan::WindowPlan;

/// A window of events in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayWindow {
    /// Window number, from 0 (empty spans of time are skipped, not numbered).
    pub index: u32,
    /// Start of the window's span (its first event's time for event-count windows).
    pub start: i64,
    /// The events.
    pub events: Vec<Interaction>,
}

/// Why the stream could not be cut.
#[derive(Debug, thiserror::Error)]
pub enum WindowError<E> {
    /// The source failed.
    #[error(transparent)]
    Source(E),
    /// An event is earlier than the one before it.
    #[error(
        "event {position} (time {time}) is earlier than the event before it (time {previous}): \
         a replay reads events in time order"
    )]
    OutOfOrder {
        /// 0-based position of the event in the stream.
        position: u64,
        /// Its time.
        time: i64,
        /// The previous event's time.
        previous: i64,
    },
}

/// Iterator of windows over an iterator of event batches.
pub struct WindowCutter<I> {
    batches: I,
    plan: WindowPlan,
    buffered: std::vec::IntoIter<Interaction>,
    carry: Option<Interaction>,
    position: u64,
    last_time: Option<i64>,
    next_index: u32,
    done: bool,
}

impl<I, E> WindowCutter<I>
where
    I: Iterator<Item = Result<Vec<Interaction>, E>>,
{
    /// Cuts `batches` by `plan`.
    pub fn new(batches: I, plan: WindowPlan) -> Self {
        Self {
            batches,
            plan,
            buffered: Vec::new().into_iter(),
            carry: None,
            position: 0,
            last_time: None,
            next_index: 0,
            done: false,
        }
    }

    /// The batch source (e.g. to read the id maps it has filled so far).
    pub fn source(&self) -> &I {
        &self.batches
    }

    /// The next event in time order, checking the order.
    fn next_event(&mut self) -> Option<Result<Interaction, WindowError<E>>> {
        if let Some(event) = self.carry.take() {
            return Some(Ok(event));
        }
        loop {
            if let Some(event) = self.buffered.next() {
                if let Some(previous) = self.last_time
                    && event.time < previous
                {
                    return Some(Err(WindowError::OutOfOrder {
                        position: self.position,
                        time: event.time,
                        previous,
                    }));
                }
                self.last_time = Some(event.time);
                self.position += 1;
                return Some(Ok(event));
            }
            match self.batches.next()? {
                Ok(batch) => self.buffered = batch.into_iter(),
                Err(e) => return Some(Err(WindowError::Source(e))),
            }
        }
    }
}

impl<I, E> Iterator for WindowCutter<I>
where
    I: Iterator<Item = Result<Vec<Interaction>, E>>,
{
    type Item = Result<ReplayWindow, WindowError<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let first = match self.next_event() {
            None => {
                self.done = true;
                return None;
            }
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(e));
            }
            Some(Ok(event)) => event,
        };
        let start = match self.plan {
            // Windows of time are aligned to multiples of their length (so a gap in the
            // log skips whole windows instead of shifting every later one).
            WindowPlan::Duration { seconds } => first.time.div_euclid(seconds) * seconds,
            WindowPlan::Events { .. } => first.time,
        };
        let mut events = vec![first];
        loop {
            if let WindowPlan::Events { events: n } = self.plan
                && events.len() as u64 >= n
            {
                break;
            }
            match self.next_event() {
                None => break,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(event)) => {
                    if let WindowPlan::Duration { seconds } = self.plan
                        && event.time >= start + seconds
                    {
                        self.carry = Some(event);
                        break;
                    }
                    events.push(event);
                }
            }
        }
        let index = self.next_index;
        self.next_index += 1;
        Some(Ok(ReplayWindow {
            index,
            start,
            events,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: i64) -> Interaction {
        Interaction {
            user: 0,
            item: 0,
            label: 1.0,
            time,
        }
    }

    fn batches(times: &[&[i64]]) -> Vec<Result<Vec<Interaction>, String>> {
        times
            .iter()
            .map(|b| Ok(b.iter().map(|&t| at(t)).collect()))
            .collect()
    }

    fn cut(times: &[&[i64]], plan: WindowPlan) -> Vec<(i64, Vec<i64>)> {
        WindowCutter::new(batches(times).into_iter(), plan)
            .map(|w| {
                let w = w.unwrap();
                (w.start, w.events.iter().map(|e| e.time).collect())
            })
            .collect()
    }

    #[test]
    fn time_windows_span_batches_and_skip_gaps() {
        let windows = cut(
            &[&[0, 5, 9], &[10, 19, 45], &[47]],
            WindowPlan::Duration { seconds: 10 },
        );
        assert_eq!(
            windows,
            vec![(0, vec![0, 5, 9]), (10, vec![10, 19]), (40, vec![45, 47])]
        );
    }

    #[test]
    fn event_windows_have_n_events_and_a_remainder() {
        let windows = cut(&[&[1, 2, 3], &[4, 5]], WindowPlan::Events { events: 2 });
        assert_eq!(
            windows.iter().map(|w| w.1.clone()).collect::<Vec<_>>(),
            vec![vec![1, 2], vec![3, 4], vec![5]]
        );
    }

    #[test]
    fn events_out_of_time_order_are_an_error_naming_the_position() {
        let mut cutter = WindowCutter::new(
            batches(&[&[1, 2], &[3, 2]]).into_iter(),
            WindowPlan::Events { events: 10 },
        );
        let err = cutter.next().unwrap().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event 3 (time 2) is earlier than the event before it (time 3)"),
            "{err}"
        );
        assert!(cutter.next().is_none());
    }

    #[test]
    fn source_errors_pass_through() {
        let source = vec![Ok(vec![at(1)]), Err("disk".to_string())];
        let mut cutter = WindowCutter::new(source.into_iter(), WindowPlan::Events { events: 10 });
        assert!(matches!(cutter.next(), Some(Err(WindowError::Source(e))) if e == "disk"));
    }
}
