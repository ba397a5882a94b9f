//! Time slices: how the log is cut so that it can be generated in time order without a
//! global sort.
//!
//! The span is cut into equal slices. A slice's number of events is the total times the
//! share of all users' expected activity that falls inside it, so the event rate follows
//! the active population. Within a slice every event draws its user in proportion to the
//! user's activity inside the slice, then its time uniformly over the part of the user's
//! window inside the slice: that is exactly the log's distribution restricted to the slice.
//! Only the slice's own events are then sorted by time, and the slices are written one
//! after the other.
//!
//! Items become available at the first slice boundary after their release: each slice
//! draws among the items released before it started.

use super::alias::AliasTable;
use super::catalog::{Items, Users};

/// Events a slice aims for; the slice count is the total over this, within the bounds
/// below. Small slices keep the per-slice sort cheap and item releases fine-grained.
const EVENTS_PER_SLICE: u64 = 100_000;
/// Fewest slices (so that item releases are spread even in a small log).
const MIN_SLICES: u64 = 64;
/// Most slices (each rebuilds its samplers, whose cost grows with the active users).
const MAX_SLICES: u64 = 2_048;

/// The slices of the span and the number of events in each.
pub(crate) struct Timeline {
    span: f64,
    /// Events per slice; they sum to the log's size.
    pub(crate) events: Vec<u64>,
    /// Events per unit of user activity mass (the log's size over the total mass).
    events_per_mass: f64,
}

impl Timeline {
    /// Cuts `span_secs` into slices and shares `total_events` among them by the users'
    /// activity in each.
    pub(crate) fn new(total_events: u64, span_secs: i64, users: &Users) -> Self {
        let slices = total_events
            .div_ceil(EVENTS_PER_SLICE)
            .clamp(MIN_SLICES, MAX_SLICES)
            .min(span_secs.max(1) as u64) as usize;
        let mut timeline = Self {
            span: span_secs as f64,
            events: vec![0; slices],
            events_per_mass: 0.0,
        };
        let mut mass = vec![0.0f64; slices];
        for u in 0..users.len() {
            let first = timeline.slice_at(users.start[u]).saturating_sub(1);
            for (s, m) in mass.iter_mut().enumerate().skip(first) {
                let (a, b) = timeline.bounds(s);
                if a >= users.end[u] {
                    break;
                }
                *m += users.weight_in(u, a, b);
            }
        }
        let total_mass: f64 = mass.iter().sum();
        timeline.events_per_mass = total_events as f64 / total_mass;
        let mut cumulative = 0.0;
        let mut assigned = 0u64;
        for (s, m) in mass.iter().enumerate() {
            cumulative += m;
            let target = if s + 1 == slices {
                total_events
            } else {
                ((total_events as f64 * cumulative / total_mass).round() as u64).min(total_events)
            };
            let target = target.max(assigned);
            timeline.events[s] = target - assigned;
            assigned = target;
        }
        timeline
    }

    /// How many events user `u` is expected to log.
    pub(crate) fn expected_events(&self, users: &Users, u: usize) -> f64 {
        users.weight_in(u, 0.0, self.span) * self.events_per_mass
    }

    /// Number of slices.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// `[a, b)` of slice `s`, in seconds after the log's start. Slice `s`'s end is exactly
    /// slice `s + 1`'s start (the same expression computes both).
    pub(crate) fn bounds(&self, s: usize) -> (f64, f64) {
        (self.boundary(s), self.boundary(s + 1))
    }

    fn boundary(&self, s: usize) -> f64 {
        self.span * s as f64 / self.len() as f64
    }

    /// The slice containing time `t` (the last one for `t` at or past the end).
    fn slice_at(&self, t: f64) -> usize {
        ((t / self.span * self.len() as f64) as usize).min(self.len() - 1)
    }

    /// The first slice starting at or after `t`: where an item released at `t` becomes
    /// available (`len()` if none does).
    pub(crate) fn first_slice_from(&self, t: f64) -> usize {
        let mut s = self.slice_at(t).saturating_sub(1);
        while s < self.len() && self.boundary(s) < t {
            s += 1;
        }
        s
    }
}

/// The users active in the current slice and their weights, updated slice by slice.
pub(crate) struct ActiveUsers {
    /// Users with a window starting before the current slice's end, not yet all added.
    next: usize,
    /// Users whose window overlaps the current slice, ascending.
    pub(crate) list: Vec<u32>,
    /// Their activity inside the current slice.
    pub(crate) weights: Vec<f64>,
}

impl ActiveUsers {
    pub(crate) fn new() -> Self {
        Self {
            next: 0,
            list: Vec::new(),
            weights: Vec::new(),
        }
    }

    /// Moves to the slice `[a, b)` (slices must come in order); the users whose window
    /// ended before it are appended to `departed`.
    pub(crate) fn advance(&mut self, users: &Users, a: f64, b: f64, departed: &mut Vec<u32>) {
        while self.next < users.len() && users.start[self.next] < b {
            self.list.push(self.next as u32);
            self.next += 1;
        }
        self.list.retain(|&u| {
            let active = users.end[u as usize] > a;
            if !active {
                departed.push(u);
            }
            active
        });
        self.weights.clear();
        self.weights
            .extend(self.list.iter().map(|&u| users.weight_in(u as usize, a, b)));
    }
}

/// Draws items by popularity among those released before the current slice: one alias
/// table per release block (the items that become available at one slice), and per slice
/// a small table over the blocks available so far.
pub(crate) struct ItemSampler {
    /// First item of each block; block `j` is `block_start[j]..block_start[j + 1]`.
    block_start: Vec<u32>,
    /// Popularity of each block's items, within the block.
    block_tables: Vec<Option<AliasTable>>,
    /// Total popularity of each block.
    block_weight: Vec<f64>,
    /// Over blocks `0..=s` for the current slice `s`.
    current: AliasTable,
}

impl ItemSampler {
    pub(crate) fn new(items: &Items, timeline: &Timeline) -> Self {
        let blocks = timeline.len() + 1;
        let mut block_start = Vec::with_capacity(blocks + 1);
        let mut i = 0usize;
        for block in 0..blocks {
            block_start.push(i as u32);
            // Items are sorted by release, so each block is a run of them.
            while i < items.len() && timeline.first_slice_from(items.release[i]) <= block {
                i += 1;
            }
        }
        block_start.push(items.len() as u32);
        let mut block_tables = Vec::with_capacity(blocks);
        let mut block_weight = Vec::with_capacity(blocks);
        for j in 0..blocks {
            let range = block_start[j] as usize..block_start[j + 1] as usize;
            let weights = &items.popularity[range];
            block_weight.push(weights.iter().sum());
            block_tables.push(AliasTable::new(weights));
        }
        Self {
            block_start,
            block_tables,
            block_weight,
            current: AliasTable::default(),
        }
    }

    /// Prepares to draw for slice `s`; false if no item is available yet.
    pub(crate) fn enter_slice(&mut self, s: usize) -> bool {
        self.current.rebuild(&self.block_weight[..=s])
    }

    /// How many items are available in the current slice (they are `0..available()`).
    pub(crate) fn available(&self) -> u32 {
        self.block_start[self.current.len()]
    }

    /// Draws an item available in the current slice.
    #[inline]
    pub(crate) fn sample(&self, rng: &mut super::rng::Rng) -> u32 {
        let block = self.current.sample(rng) as usize;
        match &self.block_tables[block] {
            Some(table) => self.block_start[block] + table.sample(rng),
            // Unreachable: an empty block has weight 0 and is never drawn.
            None => self.block_start[block],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SynthConfig;
    use super::super::rng::{Purpose, Rng};
    use super::*;

    #[test]
    fn events_are_shared_by_activity_and_sum_to_the_total() {
        let config = SynthConfig {
            users: Some(50_000),
            ..SynthConfig::new(1_234_567)
        };
        let users = Users::generate(&config);
        let timeline = Timeline::new(config.events, config.span_secs, &users);
        assert_eq!(timeline.len(), 64);
        assert_eq!(timeline.events.iter().sum::<u64>(), 1_234_567);
        // Independent computation of one slice's share by brute force over users.
        let total: f64 = (0..users.len())
            .map(|u| users.weight_in(u, 0.0, config.span_secs as f64))
            .sum();
        let (a, b) = timeline.bounds(10);
        let share: f64 = (0..users.len())
            .map(|u| users.weight_in(u, a, b))
            .sum::<f64>()
            / total;
        let expected = share * 1_234_567.0;
        assert!(
            (timeline.events[10] as f64 - expected).abs() <= 1.0,
            "{} vs {expected}",
            timeline.events[10]
        );
        // Stationary population: slices in the middle get similar counts.
        let middle = &timeline.events[16..48];
        let mean = middle.iter().sum::<u64>() as f64 / middle.len() as f64;
        assert!(
            middle.iter().all(|&e| (e as f64 - mean).abs() < 0.3 * mean),
            "{middle:?}"
        );
    }

    #[test]
    fn slice_bounds_tile_the_span() {
        let config = SynthConfig::new(10_000_000);
        let users = Users::generate(&SynthConfig {
            users: Some(10),
            ..config.clone()
        });
        let timeline = Timeline::new(config.events, config.span_secs, &users);
        assert_eq!(timeline.len(), 100);
        assert_eq!(timeline.bounds(0).0, 0.0);
        assert_eq!(timeline.bounds(99).1, config.span_secs as f64);
        for s in 1..timeline.len() {
            assert_eq!(timeline.bounds(s - 1).1, timeline.bounds(s).0);
        }
        assert_eq!(timeline.first_slice_from(0.0), 0);
        let (a, _) = timeline.bounds(7);
        assert_eq!(timeline.first_slice_from(a), 7);
        assert_eq!(timeline.first_slice_from(a + 1.0), 8);
        assert_eq!(
            timeline.first_slice_from(config.span_secs as f64 - 1.0),
            100
        );
    }

    #[test]
    fn active_users_are_those_overlapping_the_slice() {
        let config = SynthConfig {
            users: Some(3_000),
            ..SynthConfig::new(500_000)
        };
        let users = Users::generate(&config);
        let timeline = Timeline::new(config.events, config.span_secs, &users);
        let mut active = ActiveUsers::new();
        for s in 0..timeline.len() {
            let (a, b) = timeline.bounds(s);
            let mut departed = Vec::new();
            let before = active.list.clone();
            active.advance(&users, a, b, &mut departed);
            let left: Vec<u32> = before
                .iter()
                .copied()
                .filter(|&u| users.end[u as usize] <= a)
                .collect();
            assert_eq!(departed, left, "slice {s}");
            let expected: Vec<u32> = (0..users.len() as u32)
                .filter(|&u| users.start[u as usize] < b && users.end[u as usize] > a)
                .collect();
            assert_eq!(active.list, expected, "slice {s}");
        }
    }

    #[test]
    fn items_are_drawn_only_after_release_by_popularity() {
        let config = SynthConfig {
            items: Some(1_000),
            users: Some(10),
            ..SynthConfig::new(1_000_000)
        };
        let users = Users::generate(&config);
        let items = Items::generate(&config);
        let timeline = Timeline::new(config.events, config.span_secs, &users);
        let mut sampler = ItemSampler::new(&items, &timeline);
        let mut rng = Rng::stream(1, Purpose::Events, 0);
        for s in [0, 20, 63] {
            assert!(sampler.enter_slice(s));
            let (a, _) = timeline.bounds(s);
            let available: Vec<usize> = (0..items.len())
                .filter(|&i| items.release[i] <= a)
                .collect();
            let total: f64 = available.iter().map(|&i| items.popularity[i]).sum();
            let mut counts = vec![0u32; items.len()];
            let n = 200_000;
            for _ in 0..n {
                counts[sampler.sample(&mut rng) as usize] += 1;
            }
            for (i, count) in counts.iter().enumerate() {
                if items.release[i] > a {
                    assert_eq!(*count, 0, "item {i} drawn before its release in slice {s}");
                }
            }
            let top = *available
                .iter()
                .max_by(|x, y| items.popularity[**x].total_cmp(&items.popularity[**y]))
                .unwrap();
            let expected = items.popularity[top] / total;
            let observed = f64::from(counts[top]) / f64::from(n);
            assert!(
                (observed - expected).abs() < 0.01,
                "{observed} vs {expected}"
            );
        }
    }
}
