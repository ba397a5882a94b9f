//! The events of one time slice: who, what, when, and the label.
//!
//! A user acts on an item at most once, as in MovieLens: items are drawn by popularity
//! among those the user has not yet acted on (weighted sampling without replacement, by
//! rejection; after [`POPULAR_TRIES`] misses, uniformly among the available items). The
//! items of a user are remembered only while the user's window lasts, so memory follows
//! the active users, not the log. Only a user who has acted on nearly every available item
//! can repeat one; such repeats are counted.
//!
//! A rating is `clamp(round_to_half(mu + b_u + b_i + <p_u, q_i> + noise), 0.5, 5)`; a click
//! is 1 with probability `sigmoid(click_bias + b_u + b_i + <p_u, q_i>)`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::alias::AliasTable;
use super::catalog::{Items, Users};
use super::rng::{Purpose, Rng};
use super::timeline::{ActiveUsers, ItemSampler, Timeline};
use super::{GLOBAL_MEAN, SynthConfig};
use crate::data::LabelKind;

/// Popularity draws before falling back to uniform draws for a user's next item.
const POPULAR_TRIES: usize = 32;
/// Uniform draws before accepting a repeated item.
const UNIFORM_TRIES: usize = 64;

/// One slice's events as drawn (grouped by user); [`SliceDraws::into_events`] puts them
/// in time order. Split so that the sort can run on the writer's thread.
#[derive(Debug, Default)]
pub(crate) struct SliceDraws {
    events: Vec<Event>,
    repeats: u64,
}

impl SliceDraws {
    /// Whether the slice has no events.
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events in time order as columns; timestamps are `start` plus the offset.
    pub(crate) fn into_events(mut self, start: i64) -> SliceEvents {
        // The key is a total order of distinct events (a user acts on an item at most once
        // a second but for counted repeats, whose labels then decide), so the result does
        // not depend on the sort algorithm.
        self.events
            .sort_unstable_by_key(|e| (e.time_key, e.item, e.label.to_bits()));
        let n = self.events.len();
        let mut events = SliceEvents {
            user_id: Vec::with_capacity(n),
            item_id: Vec::with_capacity(n),
            label: Vec::with_capacity(n),
            timestamp: Vec::with_capacity(n),
            repeats: self.repeats,
        };
        for e in &self.events {
            events.user_id.push((e.time_key & 0xFFFF_FFFF) as i64 + 1);
            events.item_id.push(i64::from(e.item) + 1);
            events.timestamp.push(start + (e.time_key >> 32) as i64);
            events.label.push(e.label);
        }
        events
    }
}

/// One slice's events as columns, in time order. Ids count from 1.
#[derive(Debug, Default)]
pub(crate) struct SliceEvents {
    pub(crate) user_id: Vec<i64>,
    pub(crate) item_id: Vec<i64>,
    pub(crate) label: Vec<f32>,
    pub(crate) timestamp: Vec<i64>,
    /// Events that repeat a (user, item) pair of the same user's earlier events.
    pub(crate) repeats: u64,
}

/// One event while its slice is generated.
#[derive(Clone, Copy, Debug)]
struct Event {
    /// `(second << 32) | user`: sorts by time, then user.
    time_key: u64,
    item: u32,
    label: f32,
}

/// Hashes the `u32` ids of the item sets (multiplicative; SipHash's protection against
/// chosen keys is not needed for ids we draw ourselves, and costs much more).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

type IdBuild = BuildHasherDefault<IdHasher>;
/// The items one user has acted on.
type ItemSet = HashSet<u32, IdBuild>;

/// Generates the slices in order; keeps the samplers that carry over from one slice to the
/// next.
pub(crate) struct SliceGenerator<'a> {
    config: &'a SynthConfig,
    users: &'a Users,
    items: &'a Items,
    timeline: &'a Timeline,
    active: ActiveUsers,
    user_table: AliasTable,
    item_sampler: ItemSampler,
    /// `(user << 32) | second` of the current slice's events.
    by_user: Vec<u64>,
    /// Items acted on, for each user whose window is still open.
    seen: HashMap<u32, ItemSet, IdBuild>,
    /// Users whose window closed before the current slice.
    departed: Vec<u32>,
}

impl<'a> SliceGenerator<'a> {
    pub(crate) fn new(
        config: &'a SynthConfig,
        users: &'a Users,
        items: &'a Items,
        timeline: &'a Timeline,
    ) -> Self {
        Self {
            config,
            users,
            items,
            timeline,
            active: ActiveUsers::new(),
            user_table: AliasTable::default(),
            item_sampler: ItemSampler::new(items, timeline),
            by_user: Vec::new(),
            seen: HashMap::default(),
            departed: Vec::new(),
        }
    }

    /// The events of slice `s`. Slices must be asked for in order, each once.
    pub(crate) fn slice(&mut self, s: usize) -> SliceDraws {
        let (a, b) = self.timeline.bounds(s);
        self.departed.clear();
        self.active.advance(self.users, a, b, &mut self.departed);
        for u in &self.departed {
            self.seen.remove(u);
        }
        let n = self.timeline.events[s] as usize;
        if n == 0
            || !self.user_table.rebuild(&self.active.weights)
            || !self.item_sampler.enter_slice(s)
        {
            // No events, or (never, by construction) no one to log them.
            return SliceDraws::default();
        }
        let mut rng = Rng::stream(self.config.seed, Purpose::Events, s as u64);
        let last_second = (self.config.span_secs - 1) as u64;

        // Who and when, grouped by user (each user's events in time order).
        self.by_user.clear();
        for _ in 0..n {
            let u = self.active.list[self.user_table.sample(&mut rng) as usize];
            let lo = self.users.start[u as usize].max(a);
            let hi = self.users.end[u as usize].min(b);
            let t = lo + (hi - lo) * rng.uniform();
            let second = (t as u64).min(last_second);
            self.by_user.push((u64::from(u) << 32) | second);
        }
        self.by_user.sort_unstable();

        // What, and the label, user by user: a user's item set is looked up once per slice
        // and stays in cache while their events are drawn.
        let mut draws = SliceDraws {
            events: Vec::with_capacity(n),
            repeats: 0,
        };
        let mut k = 0;
        while k < n {
            let u = (self.by_user[k] >> 32) as usize;
            let seen = self.seen.entry(u as u32).or_insert_with(|| {
                // Sized for the user's expected events, so that it rarely grows.
                let expected = self.timeline.expected_events(self.users, u);
                ItemSet::with_capacity_and_hasher(
                    (expected * 1.1 + 4.0).min(self.items.len() as f64) as usize,
                    IdBuild::default(),
                )
            });
            while k < n && (self.by_user[k] >> 32) as usize == u {
                let (i, repeated) = new_item(&self.item_sampler, seen, &mut rng);
                draws.repeats += u64::from(repeated);
                let label = label(self.config, self.users, self.items, u, i as usize, &mut rng);
                let second = self.by_user[k] & 0xFFFF_FFFF;
                draws.events.push(Event {
                    time_key: (second << 32) | u as u64,
                    item: i,
                    label,
                });
                k += 1;
            }
        }
        draws
    }
}

/// The label of user `u` on item `i`.
#[inline]
fn label(
    config: &SynthConfig,
    users: &Users,
    items: &Items,
    u: usize,
    i: usize,
    rng: &mut Rng,
) -> f32 {
    let dim = config.dim;
    let affinity = dot(
        &users.factors[u * dim..(u + 1) * dim],
        &items.factors[i * dim..(i + 1) * dim],
    );
    let score = f64::from(users.bias[u]) + f64::from(items.bias[i]) + affinity;
    match config.label {
        LabelKind::Rating => {
            let raw = GLOBAL_MEAN + score + config.rating_noise * rng.normal();
            round_to_half(raw)
        }
        LabelKind::Click => {
            let p = 1.0 / (1.0 + (-(config.click_bias + score)).exp());
            if rng.uniform() < p { 1.0 } else { 0.0 }
        }
    }
}

/// An item the user (who acted on `seen`) has not acted on, by popularity, and records
/// it; `true` with a repeated item when none was found.
fn new_item(sampler: &ItemSampler, seen: &mut ItemSet, rng: &mut Rng) -> (u32, bool) {
    for _ in 0..POPULAR_TRIES {
        let i = sampler.sample(rng);
        if seen.insert(i) {
            return (i, false);
        }
    }
    let available = sampler.available();
    if (seen.len() as u64) < u64::from(available) {
        for _ in 0..UNIFORM_TRIES {
            let i = rng.below(u64::from(available)) as u32;
            if seen.insert(i) {
                return (i, false);
            }
        }
    }
    let i = sampler.sample(rng);
    (i, !seen.insert(i))
}

/// `clamp(round(2x) / 2, 0.5, 5)`: the MovieLens rating scale.
pub(crate) fn round_to_half(x: f64) -> f32 {
    ((x * 2.0).round() / 2.0).clamp(0.5, 5.0) as f32
}

/// Inner product, summed in a fixed order (four lanes, then across) so that it is the same
/// on every run and vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 4];
    let chunks = a.len() / 4 * 4;
    for (ca, cb) in a[..chunks].chunks_exact(4).zip(b[..chunks].chunks_exact(4)) {
        for k in 0..4 {
            lanes[k] += ca[k] * cb[k];
        }
    }
    let mut sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (x, y) in a[chunks..].iter().zip(&b[chunks..]) {
        sum += x * y;
    }
    f64::from(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_round_to_halves_within_the_scale() {
        assert_eq!(round_to_half(3.24), 3.0);
        assert_eq!(round_to_half(3.26), 3.5);
        assert_eq!(round_to_half(-2.0), 0.5);
        assert_eq!(round_to_half(0.74), 0.5);
        assert_eq!(round_to_half(0.76), 1.0);
        assert_eq!(round_to_half(7.3), 5.0);
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.25 - 2.0).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.5 - i as f32 * 0.125).collect();
        let plain: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn slices_are_time_ordered_inside_windows_and_reproducible() {
        let config = SynthConfig {
            users: Some(500),
            items: Some(300),
            ..SynthConfig::new(50_000)
        };
        let users = Users::generate(&config);
        let items = Items::generate(&config);
        let timeline = Timeline::new(config.events, config.span_secs, &users);
        let generate = || {
            let mut generator = SliceGenerator::new(&config, &users, &items, &timeline);
            (0..timeline.len())
                .map(|s| generator.slice(s).into_events(config.start))
                .collect::<Vec<_>>()
        };
        let slices = generate();
        let mut previous = i64::MIN;
        let mut total = 0;
        for (s, slice) in slices.iter().enumerate() {
            assert_eq!(slice.user_id.len() as u64, timeline.events[s]);
            let (a, b) = timeline.bounds(s);
            for k in 0..slice.user_id.len() {
                let t = slice.timestamp[k];
                assert!(t >= previous, "slice {s} row {k}");
                previous = t;
                let offset = (t - config.start) as f64;
                assert!(offset >= a.floor() && offset <= b, "slice {s} row {k}");
                let u = (slice.user_id[k] - 1) as usize;
                assert!(
                    offset >= users.start[u].floor() && offset <= users.end[u],
                    "event outside user {u}'s window"
                );
                let i = (slice.item_id[k] - 1) as usize;
                assert!(items.release[i] <= a, "item {i} before release");
            }
            total += slice.user_id.len();
        }
        assert_eq!(total, 50_000);
        let again = generate();
        for (x, y) in slices.iter().zip(&again) {
            assert_eq!(x.user_id, y.user_id);
            assert_eq!(x.item_id, y.item_id);
            assert_eq!(x.label, y.label);
            assert_eq!(x.timestamp, y.timestamp);
        }
    }

    #[test]
    fn labels_follow_the_latent_factor_model() {
        // With no noise, a rating is the model's prediction rounded to a half.
        let config = SynthConfig {
            users: Some(50),
            items: Some(40),
            rating_noise: 0.0,
            ..SynthConfig::new(1_000)
        };
        let users = Users::generate(&config);
        let items = Items::generate(&config);
        let mut rng = Rng::stream(0, Purpose::Events, 0);
        let dim = config.dim;
        for u in 0..50 {
            for i in 0..40 {
                let expected: f64 = GLOBAL_MEAN
                    + f64::from(users.bias[u])
                    + f64::from(items.bias[i])
                    + (0..dim)
                        .map(|k| {
                            f64::from(users.factors[u * dim + k])
                                * f64::from(items.factors[i * dim + k])
                        })
                        .sum::<f64>();
                let rating = label(&config, &users, &items, u, i, &mut rng);
                let unclamped = (expected * 2.0).round() / 2.0;
                // Away from a rounding boundary (float sums may differ in the last bits there).
                if ((expected * 2.0).fract().abs() - 0.5).abs() > 0.01 {
                    assert_eq!(f64::from(rating), unclamped.clamp(0.5, 5.0), "{u} {i}");
                }
            }
        }
    }

    #[test]
    fn clicks_happen_with_the_model_probability() {
        let config = SynthConfig {
            users: Some(3),
            items: Some(3),
            label: LabelKind::Click,
            ..SynthConfig::new(1_000)
        };
        let users = Users::generate(&config);
        let items = Items::generate(&config);
        let mut rng = Rng::stream(0, Purpose::Events, 0);
        let dim = config.dim;
        for (u, i) in [(0, 0), (1, 2), (2, 1)] {
            let score = config.click_bias
                + f64::from(users.bias[u])
                + f64::from(items.bias[i])
                + (0..dim)
                    .map(|k| {
                        f64::from(users.factors[u * dim + k])
                            * f64::from(items.factors[i * dim + k])
                    })
                    .sum::<f64>();
            let p = 1.0 / (1.0 + (-score).exp());
            let n = 100_000;
            let clicks: f32 = (0..n)
                .map(|_| label(&config, &users, &items, u, i, &mut rng))
                .sum();
            assert!(
                (f64::from(clicks) / f64::from(n) - p).abs() < 0.005,
                "{u} {i}: {p}"
            );
        }
    }
}
