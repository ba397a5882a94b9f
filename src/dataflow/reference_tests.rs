//! Tests of the whole engine against from-scratch computations, in the manner of
//! differential's `tests/reduce_reference.rs`: drive it through many random rounds and,
//! after every round, compare the accumulated output with a direct computation of every
//! pool sample's state.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::worker::WorkerCommand;
use super::*;
use crate::data::LabelKind;
use crate::scoring::{Loss, ScoringHead};

/// The experiment a test plays: a fixed event table, the model's current rows and head, the
/// pool and the labelled events, all kept directly (no engine types).
struct World {
    layout: RowLayout,
    events: Vec<PoolSample>,
    users: HashMap<u32, Vec<f32>>,
    items: HashMap<u32, Vec<f32>>,
    head: ScoringHead,
    pool: BTreeMap<u32, PoolSample>,
    labels: HashMap<u32, Vec<f32>>,
    /// Whether the engine maintains item statistics (and so takes labels).
    statistics: bool,
}

const LABELS: [f32; 5] = [1.0, 2.0, 3.0, 4.0, 5.0];
/// Ratings under the squared error.
const RATINGS: (LabelKind, Loss) = (LabelKind::Rating, Loss::Squared);

impl World {
    fn new(
        rng: &mut StdRng,
        (kind, loss): (LabelKind, Loss),
        n_users: u32,
        n_items: u32,
        n_events: u32,
    ) -> Self {
        let layout = RowLayout { members: 3, dim: 5 };
        let events = (0..n_events)
            .map(|sample| PoolSample {
                sample,
                user: rng.random_range(0..n_users),
                item: rng.random_range(0..n_items),
                label: Some(match kind {
                    LabelKind::Rating => LABELS[rng.random_range(0..LABELS.len())],
                    LabelKind::Click => f32::from(rng.random_bool(0.3)),
                }),
            })
            .collect();
        let head = random_head(rng, layout, loss);
        World {
            layout,
            events,
            users: HashMap::new(),
            items: HashMap::new(),
            head,
            pool: BTreeMap::new(),
            labels: HashMap::new(),
            statistics: true,
        }
    }

    fn random_row(&self, rng: &mut StdRng) -> Vec<f32> {
        (0..self.layout.row_len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect()
    }

    /// A random update, applied to the world as well.
    fn random_update(&mut self, rng: &mut StdRng, n_users: u32, n_items: u32) -> EngineUpdate {
        let mut update = EngineUpdate::default();
        let n_events = self.events.len() as u32;
        for _ in 0..rng.random_range(0..12) {
            let mut event = self.events[rng.random_range(0..n_events) as usize];
            if self.pool.contains_key(&event.sample)
                || update.insert.iter().any(|s| s.sample == event.sample)
            {
                continue;
            }
            if rng.random_bool(0.5) {
                event.label = None;
            }
            update.insert.push(event);
        }
        let in_pool: Vec<u32> = self.pool.keys().copied().collect();
        for _ in 0..rng.random_range(0..6).min(in_pool.len()) {
            let sample = in_pool[rng.random_range(0..in_pool.len())];
            if update.remove.iter().any(|s| s.sample == sample)
                || update.insert.iter().any(|s| s.sample == sample)
            {
                continue;
            }
            let removed = self.pool[&sample];
            update.remove.push(removed);
            if rng.random_bool(0.3) {
                // Its label is revealed: it re-enters labelled in the same update.
                update.insert.push(self.events[sample as usize]);
            }
        }
        for _ in 0..rng.random_range(0..4) {
            let user = rng.random_range(0..n_users);
            if !update.user_rows.iter().any(|(u, _)| *u == user) {
                update.user_rows.push((user, self.random_row(rng)));
            }
        }
        for _ in 0..rng.random_range(0..3) {
            let item = rng.random_range(0..n_items);
            if !update.item_rows.iter().any(|(i, _)| *i == item) {
                update.item_rows.push((item, self.random_row(rng)));
            }
        }
        let label_events = if self.statistics {
            rng.random_range(0..4)
        } else {
            0
        };
        for _ in 0..label_events {
            let item = rng.random_range(0..n_items);
            update
                .labels
                .push((item, LABELS[rng.random_range(0..LABELS.len())]));
        }
        if rng.random_bool(0.12) {
            update.head = Some(random_head(rng, self.layout, self.head.loss));
        }
        self.apply(&update);
        update
    }

    fn apply(&mut self, update: &EngineUpdate) {
        for sample in &update.remove {
            assert_eq!(self.pool.remove(&sample.sample), Some(*sample));
        }
        for sample in &update.insert {
            assert!(self.pool.insert(sample.sample, *sample).is_none());
        }
        for (user, row) in &update.user_rows {
            self.users.insert(*user, row.clone());
        }
        for (item, row) in &update.item_rows {
            self.items.insert(*item, row.clone());
        }
        for &(item, label) in &update.labels {
            self.labels.entry(item).or_default().push(label);
        }
        if let Some(head) = &update.head {
            self.head = head.clone();
        }
    }

    /// Every pool sample's state, computed from scratch.
    fn expected(&self) -> BTreeMap<u32, SampleState> {
        let mut expected = BTreeMap::new();
        for sample in self.pool.values() {
            let (Some(user_row), Some(item_row)) =
                (self.users.get(&sample.user), self.items.get(&sample.item))
            else {
                continue;
            };
            let labels = self.labels.get(&sample.item).map_or(&[][..], Vec::as_slice);
            expected.insert(
                sample.sample,
                SampleState {
                    user: sample.user,
                    item: sample.item,
                    score: self.head.score(user_row, item_row, sample.label),
                    item_labels: labels.len() as u32,
                    item_entropy: direct_entropy(labels),
                },
            );
        }
        expected
    }
}

/// A head with random offsets; every head is given a clip range, which only the squared
/// loss applies.
fn random_head(rng: &mut StdRng, layout: RowLayout, loss: Loss) -> ScoringHead {
    let offsets = (0..layout.members)
        .map(|_| rng.random_range(2.0..4.0))
        .collect();
    ScoringHead::new(layout, offsets, loss).with_clip(1.0, 5.0)
}

/// Entropy in bits from a label list, by a route of its own (f64 frequencies over a sorted
/// map of values).
fn direct_entropy(labels: &[f32]) -> f32 {
    let mut counts: BTreeMap<u32, f64> = BTreeMap::new();
    for &label in labels {
        *counts.entry((label + 0.0).to_bits()).or_default() += 1.0;
    }
    let n = labels.len() as f64;
    counts
        .values()
        .map(|&c| (c / n) * (n / c).log2())
        .sum::<f64>() as f32
}

/// Applies a round's changes to the accumulated states, checking that every change changes
/// something: a removal removes a state that is there, a new state differs from the old.
fn accumulate(states: &mut BTreeMap<u32, SampleState>, output: &RoundOutput) {
    for update in &output.updates {
        match update.state {
            None => {
                let held = states.remove(&update.sample);
                assert!(
                    held.is_some_and(|h| h.user == update.user),
                    "removal of sample {} (user {}) that has no state: {held:?}",
                    update.sample,
                    update.user
                );
            }
            Some(state) => {
                assert_eq!(state.user, update.user, "sample {}", update.sample);
                let previous = states.insert(update.sample, state);
                assert!(
                    !previous.is_some_and(|p| same_state(&p, &state)),
                    "sample {} set to the state it had",
                    update.sample
                );
            }
        }
    }
}

/// Bit-identical scores, equal counts and ids; entropy within 1e-6.
fn same_state(a: &SampleState, b: &SampleState) -> bool {
    a.user == b.user
        && a.item == b.item
        && a.score.prediction.to_bits() == b.score.prediction.to_bits()
        && a.score.variance.to_bits() == b.score.variance.to_bits()
        && a.score.loss.map(f32::to_bits) == b.score.loss.map(f32::to_bits)
        && a.item_labels == b.item_labels
        && (a.item_entropy - b.item_entropy).abs() <= 1e-6
}

fn assert_matches_reference(round: usize, states: &BTreeMap<u32, SampleState>, world: &World) {
    let expected = world.expected();
    let samples: Vec<&u32> = states.keys().collect();
    let expected_samples: Vec<&u32> = expected.keys().collect();
    assert_eq!(
        samples, expected_samples,
        "round {round}: samples with a state"
    );
    for (sample, state) in states {
        let want = &expected[sample];
        assert!(
            same_state(state, want),
            "round {round}: sample {sample}: engine {state:?}, reference {want:?}"
        );
    }
}

/// A score update as comparable bits: user, sample, and the state's item, prediction,
/// variance, loss, item labels, item entropy.
type UpdateBits = (u32, u32, Option<(u32, u32, u32, Option<u32>, u32, u32)>);

/// A round's output as comparable bits, with its `rescored` and `removed` counts.
type RoundBits = (Vec<UpdateBits>, u64, u64);

/// A round's output updates as comparable bits.
fn output_bits(output: &RoundOutput) -> Vec<UpdateBits> {
    output
        .updates
        .iter()
        .map(|u| {
            let state = u.state.map(|s| {
                (
                    s.item,
                    s.score.prediction.to_bits(),
                    s.score.variance.to_bits(),
                    s.score.loss.map(f32::to_bits),
                    s.item_labels,
                    s.item_entropy.to_bits(),
                )
            });
            (u.user, u.sample, state)
        })
        .collect()
}

/// Plays `rounds` random rounds on an engine with `workers` worker threads, checking every
/// round against the reference; returns every round's output bits.
fn play_random_rounds(
    seed: u64,
    labels: (LabelKind, Loss),
    workers: usize,
    rounds: usize,
) -> Vec<RoundBits> {
    play_random_rounds_on(
        seed,
        labels,
        &Topology::threads(workers),
        rounds,
        &EngineGraph::standalone(),
    )
}

/// As [`play_random_rounds`], on this process's part of `topology`, rendering `graph` (no
/// labels are fed where it maintains no item statistics).
fn play_random_rounds_on(
    seed: u64,
    labels: (LabelKind, Loss),
    topology: &Topology,
    rounds: usize,
    graph: &EngineGraph,
) -> Vec<RoundBits> {
    let (n_users, n_items, n_events) = (25, 10, 300);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::new(&mut rng, labels, n_users, n_items, n_events);
    world.statistics = graph.item_statistics_for.is_some();
    let site = EngineSite::connect(topology.clone()).unwrap();
    // Gather rounds interleave with the scoring rounds on the same workers.
    let gatherer = site.gatherer();
    let mut engine = ScoringEngine::start_on(site, world.head.clone(), graph.clone()).unwrap();
    let mut states = BTreeMap::new();
    let mut outputs = Vec::new();
    // Rounds with: removals, a head change, labels, a re-entry, a head change together
    // with samples entering and leaving and rows changing, rows changed through the joins,
    // rows changed in a full pass without a new head.
    let mut saw = [0usize; 7];
    for round in 0..rounds {
        let update = world.random_update(&mut rng, n_users, n_items);
        saw[1] += usize::from(update.head.is_some());
        saw[4] += usize::from(
            update.head.is_some()
                && !update.insert.is_empty()
                && !update.remove.is_empty()
                && (!update.user_rows.is_empty() || !update.item_rows.is_empty()),
        );
        saw[2] += usize::from(!update.labels.is_empty() || !world.statistics);
        saw[3] += usize::from(
            update
                .remove
                .iter()
                .any(|r| update.insert.iter().any(|i| i.sample == r.sample)),
        );
        let rows_changed = !(update.user_rows.is_empty() && update.item_rows.is_empty());
        let head_changed = update.head.is_some();
        let output = engine.apply(update).unwrap();
        let gathered = gatherer
            .all_gather(vec![round as u8, topology.process() as u8])
            .unwrap();
        let expected: Vec<Vec<u8>> = (0..topology.processes())
            .map(|p| vec![round as u8, p as u8])
            .collect();
        assert_eq!(gathered, expected, "round {round}: every process's payload");
        assert!(
            output.full_pass || !head_changed,
            "a new head is a full pass"
        );
        saw[0] += usize::from(output.updates.iter().any(|u| u.state.is_none()));
        saw[5] += usize::from(rows_changed && !output.full_pass);
        saw[6] += usize::from(rows_changed && output.full_pass && !head_changed);
        let set = output.updates.iter().filter(|u| u.state.is_some()).count() as u64;
        let removed = output.updates.iter().filter(|u| u.state.is_none()).count() as u64;
        assert_eq!(
            (output.rescored, output.removed),
            (set, removed),
            "round {round}: the counts are the states set and removed"
        );
        accumulate(&mut states, &output);
        assert_matches_reference(round, &states, &world);
        outputs.push((output_bits(&output), output.rescored, output.removed));
    }
    assert!(
        saw.iter().all(|&n| n > 0),
        "the random rounds missed a kind of change: {saw:?}"
    );
    assert!(!states.is_empty());
    assert_eq!(
        engine.held_row_versions(),
        (world.users.len(), world.items.len())
    );
    engine.finish().unwrap();
    outputs
}

#[test]
fn random_rounds_match_a_from_scratch_computation_ratings() {
    play_random_rounds(7, RATINGS, 1, 200);
}

#[test]
fn random_rounds_match_a_from_scratch_computation_clicks() {
    play_random_rounds(11, (LabelKind::Click, Loss::CrossEntropy), 2, 200);
}

#[test]
fn random_rounds_match_a_from_scratch_computation_bpr_scores() {
    play_random_rounds(13, (LabelKind::Rating, Loss::Bpr), 2, 200);
}

#[test]
fn random_rounds_match_a_from_scratch_computation_without_item_statistics() {
    // The item side is the row version alone: every state's statistics are 0.
    let graph = EngineGraph {
        item_statistics_for: None,
        ..EngineGraph::standalone()
    };
    let outputs = play_random_rounds_on(17, RATINGS, &Topology::threads(2), 120, &graph);
    assert!(outputs.iter().map(|o| o.0.len()).sum::<usize>() > 100);
}

#[test]
fn an_engine_without_item_statistics_refuses_labels() {
    let mut rng = StdRng::seed_from_u64(5);
    let world = World::new(&mut rng, RATINGS, 4, 4, 10);
    let graph = EngineGraph {
        item_statistics_for: None,
        ..EngineGraph::standalone()
    };
    let site = EngineSite::connect(Topology::threads(1)).unwrap();
    let mut engine = ScoringEngine::start_on(site, world.head.clone(), graph).unwrap();
    let error = engine
        .apply(EngineUpdate {
            labels: vec![(1, 4.0), (2, 3.0)],
            ..EngineUpdate::default()
        })
        .unwrap_err();
    assert_eq!(error, EngineError::UnreadLabels { labels: 2 });
    assert!(
        error.to_string().starts_with(
            "2 labelled events were fed to an engine that maintains no item statistics"
        ),
        "{error}"
    );
    assert_eq!(
        engine.apply(EngineUpdate::default()).unwrap(),
        RoundOutput::default()
    );
    engine.finish().unwrap();
}

#[test]
fn outputs_are_identical_for_one_two_and_three_workers() {
    let one = play_random_rounds(23, RATINGS, 1, 40);
    let two = play_random_rounds(23, RATINGS, 2, 40);
    let three = play_random_rounds(23, RATINGS, 3, 40);
    assert!(one.iter().map(|o| o.0.len()).sum::<usize>() > 100);
    assert_eq!(one, two);
    assert_eq!(one, three);
}

#[test]
fn outputs_are_identical_on_two_processes_of_two_workers() {
    let addresses: Vec<String> = (0..2)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        })
        .collect();
    let processes: Vec<_> = (0..2)
        .map(|process| {
            let topology = Topology {
                workers: 2,
                cluster: Some(Cluster {
                    process,
                    addresses: addresses.clone(),
                    timeout: Duration::from_secs(30),
                    fingerprint: 1,
                }),
            };
            std::thread::spawn(move || {
                play_random_rounds_on(23, RATINGS, &topology, 40, &EngineGraph::standalone())
            })
        })
        .collect();
    let outputs: Vec<Vec<RoundBits>> = processes.into_iter().map(|p| p.join().unwrap()).collect();
    let single = play_random_rounds(23, RATINGS, 1, 40);
    assert_eq!(outputs[0], single);
    assert_eq!(outputs[1], single);
}

/// A world with every row set and a pool of 240 samples, after its first round.
fn settled_engine(workers: usize) -> (World, ScoringEngine) {
    let mut rng = StdRng::seed_from_u64(99);
    let mut world = World::new(&mut rng, RATINGS, 20, 8, 240);
    let mut engine = ScoringEngine::start(workers, world.head.clone()).unwrap();
    let update = EngineUpdate {
        insert: world.events.clone(),
        user_rows: (0..20).map(|u| (u, world.random_row(&mut rng))).collect(),
        item_rows: (0..8).map(|i| (i, world.random_row(&mut rng))).collect(),
        labels: vec![(3, 4.0), (3, 5.0)],
        ..EngineUpdate::default()
    };
    world.apply(&update);
    let output = engine.apply(update).unwrap();
    assert_eq!(output.updates.len(), 240);
    assert_eq!((output.rescored, output.removed), (240, 0));
    (world, engine)
}

#[test]
fn work_is_proportional_to_the_samples_touched() {
    let (mut world, mut engine) = settled_engine(2);
    let mut rng = StdRng::seed_from_u64(5);
    let samples_of_user =
        |world: &World, user| world.pool.values().filter(|s| s.user == user).count() as u64;
    let samples_of_item =
        |world: &World, item| world.pool.values().filter(|s| s.item == item).count() as u64;

    // One user row: exactly that user's samples, each set anew.
    let update = EngineUpdate {
        user_rows: vec![(4, world.random_row(&mut rng))],
        ..EngineUpdate::default()
    };
    world.apply(&update);
    let output = engine.apply(update).unwrap();
    let n = samples_of_user(&world, 4);
    assert!(n > 0);
    assert_eq!((output.rescored, output.removed), (n, 0));
    assert_eq!(output.updates.len() as u64, n);
    assert!(output.updates.iter().all(|u| u.user == 4));

    // One item row.
    let update = EngineUpdate {
        item_rows: vec![(6, world.random_row(&mut rng))],
        ..EngineUpdate::default()
    };
    world.apply(&update);
    let output = engine.apply(update).unwrap();
    let n = samples_of_item(&world, 6);
    assert_eq!((output.rescored, output.removed), (n, 0));

    // One new label: that item's samples get new statistics.
    let update = EngineUpdate {
        labels: vec![(3, 1.0)],
        ..EngineUpdate::default()
    };
    world.apply(&update);
    let output = engine.apply(update).unwrap();
    let n = samples_of_item(&world, 3);
    assert_eq!((output.rescored, output.removed), (n, 0));
    assert!(
        output
            .updates
            .iter()
            .all(|u| u.state.is_some_and(|s| s.item == 3 && s.item_labels == 3))
    );

    // One sample leaves, one enters.
    let leaving = world.pool[&10];
    let update = EngineUpdate {
        remove: vec![leaving],
        ..EngineUpdate::default()
    };
    world.apply(&update);
    let output = engine.apply(update).unwrap();
    assert_eq!((output.rescored, output.removed), (0, 1));
    assert_eq!(output.updates.len(), 1);

    // Nothing changed: nothing computed.
    let output = engine.apply(EngineUpdate::default()).unwrap();
    assert_eq!(output, RoundOutput::default());

    // A head change re-scores every sample.
    let update = EngineUpdate {
        head: Some(random_head(&mut rng, world.layout, Loss::Squared)),
        ..EngineUpdate::default()
    };
    world.apply(&update);
    let output = engine.apply(update).unwrap();
    let n = world.pool.len() as u64;
    assert_eq!((output.rescored, output.removed), (n, 0));
    engine.finish().unwrap();
}

#[test]
fn a_head_change_or_rows_of_most_samples_rescore_every_held_sample_in_one_pass() {
    for workers in [1, 3] {
        let (mut world, mut engine) = settled_engine(workers);
        let mut states = world.expected();
        let mut rng = StdRng::seed_from_u64(17);

        // The same head again: a full pass, but no state changes, so nothing is output.
        let update = EngineUpdate {
            head: Some(world.head.clone()),
            ..EngineUpdate::default()
        };
        world.apply(&update);
        let output = engine.apply(update).unwrap();
        assert!(output.full_pass);
        assert_eq!((output.updates.len(), output.rescored), (0, 0));

        // A new head with every other kind of change in the same round: samples leave,
        // re-enter labelled, rows and statistics change. Every sample still held is set
        // anew once; the one that left is removed.
        let leaving = world.pool[&10];
        let revealed = world.pool[&11];
        let update = EngineUpdate {
            remove: vec![leaving, revealed],
            insert: vec![PoolSample {
                label: Some(2.0),
                ..revealed
            }],
            user_rows: vec![(4, world.random_row(&mut rng))],
            item_rows: vec![(6, world.random_row(&mut rng))],
            labels: vec![(3, 1.0)],
            head: Some(random_head(&mut rng, world.layout, Loss::Squared)),
        };
        world.apply(&update);
        let output = engine.apply(update).unwrap();
        assert!(output.full_pass);
        accumulate(&mut states, &output);
        assert_matches_reference(0, &states, &world);
        let n = world.pool.len() as u64;
        assert_eq!((output.rescored, output.removed), (n, 1));
        let order: Vec<(u32, u32)> = output.updates.iter().map(|u| (u.user, u.sample)).collect();
        assert!(order.is_sorted(), "updates in (user, sample) order");

        // Sparse rounds after it read the states the pass left.
        let update = EngineUpdate {
            user_rows: vec![(5, world.random_row(&mut rng))],
            ..EngineUpdate::default()
        };
        world.apply(&update);
        let output = engine.apply(update).unwrap();
        accumulate(&mut states, &output);
        assert_matches_reference(1, &states, &world);
        assert!(!output.full_pass);
        assert!(output.updates.iter().all(|u| u.user == 5));

        // Rows read by most of the pool and no new head: a full pass too, the rows replaced
        // in place under their versions.
        let update = EngineUpdate {
            item_rows: (0..8).map(|i| (i, world.random_row(&mut rng))).collect(),
            ..EngineUpdate::default()
        };
        world.apply(&update);
        let output = engine.apply(update).unwrap();
        assert!(output.full_pass);
        assert_eq!(output.rescored, world.pool.len() as u64);
        accumulate(&mut states, &output);
        assert_matches_reference(2, &states, &world);

        // A row replaced in place changes through the joins again later.
        let update = EngineUpdate {
            item_rows: vec![(2, world.random_row(&mut rng))],
            ..EngineUpdate::default()
        };
        world.apply(&update);
        let output = engine.apply(update).unwrap();
        assert!(!output.full_pass);
        accumulate(&mut states, &output);
        assert_matches_reference(3, &states, &world);
        assert!(
            output
                .updates
                .iter()
                .all(|u| u.state.is_some_and(|s| s.item == 2))
        );
        engine.finish().unwrap();
    }
}

#[test]
fn invalid_updates_are_refused_with_what_to_fix_and_change_nothing() {
    let (world, mut engine) = settled_engine(1);
    let layout = world.layout;
    let row_len = layout.row_len();
    let cases: Vec<(EngineUpdate, &str)> = vec![
        (
            EngineUpdate {
                user_rows: vec![(2, vec![0.0; 3])],
                ..EngineUpdate::default()
            },
            "the user row of user 2 has 3 values but the layout needs 18 (members * (1 + dim))",
        ),
        (
            EngineUpdate {
                item_rows: vec![(1, vec![0.0; row_len]), (1, vec![1.0; row_len])],
                ..EngineUpdate::default()
            },
            "item 1 has two rows in one update; send only its latest row",
        ),
        (
            EngineUpdate {
                labels: vec![(5, f32::NAN)],
                ..EngineUpdate::default()
            },
            "a labelled event of item 5 has the label NaN, which is not a finite number",
        ),
        (
            EngineUpdate {
                insert: vec![PoolSample {
                    sample: 999,
                    user: 0,
                    item: 0,
                    label: Some(f32::INFINITY),
                }],
                ..EngineUpdate::default()
            },
            "sample 999 has the label inf, which is not a finite number",
        ),
        (
            EngineUpdate {
                insert: vec![PoolSample {
                    sample: 999,
                    user: u32::MAX,
                    item: 0,
                    label: None,
                }],
                ..EngineUpdate::default()
            },
            "sample 999 uses the reserved index 4294967295 as its user or item",
        ),
        (
            EngineUpdate {
                insert: vec![world.pool[&0]],
                ..EngineUpdate::default()
            },
            "sample 0 is already in the pool; remove it before inserting it again",
        ),
        (
            EngineUpdate {
                remove: vec![PoolSample {
                    sample: 5000,
                    user: 0,
                    item: 0,
                    label: None,
                }],
                ..EngineUpdate::default()
            },
            "sample 5000 is not in the pool, so it cannot be removed",
        ),
        (
            EngineUpdate {
                head: Some(ScoringHead::new(
                    RowLayout { members: 1, dim: 5 },
                    vec![0.0],
                    Loss::Squared,
                )),
                ..EngineUpdate::default()
            },
            "a new scoring head must keep the row layout (RowLayout { members: 3, dim: 5 }), got \
             RowLayout { members: 1, dim: 5 }; start a new engine for a model of another shape",
        ),
    ];
    for (update, message) in cases {
        let error = engine.apply(update).unwrap_err();
        assert_eq!(error.to_string(), message);
    }
    // Nothing was applied: an empty round changes nothing, and the pool is intact.
    assert_eq!(
        engine.apply(EngineUpdate::default()).unwrap(),
        RoundOutput::default()
    );
    let mut sample = world.pool[&0];
    sample.label = Some(0.5);
    let error = engine
        .apply(EngineUpdate {
            remove: vec![sample],
            ..EngineUpdate::default()
        })
        .unwrap_err();
    assert!(
        matches!(error, EngineError::RemovalMismatch { sample: 0, .. }),
        "{error}"
    );
    assert_eq!(
        ScoringEngine::start(0, world.head.clone()).err(),
        Some(EngineError::NoWorkers)
    );
    engine.finish().unwrap();
}

/// Runs `scenario` on its own thread and fails the test if it does not end within a minute:
/// a failure must become an error, not a hang.
fn within_a_minute(scenario: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        scenario();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => runner.join().unwrap(),
        Err(_) => {
            if runner.is_finished() {
                // The scenario panicked: surface its message.
                if let Err(panic) = runner.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            panic!("the engine hung instead of reporting the failure");
        }
    }
}

#[test]
fn a_worker_panic_becomes_an_error_and_stops_the_engine() {
    within_a_minute(|| {
        let (_, mut engine) = settled_engine(2);
        engine.inject(1, WorkerCommand::Panic);
        let error = engine.apply(EngineUpdate::default()).unwrap_err();
        assert_eq!(
            error,
            EngineError::WorkerPanicked {
                worker: 1,
                message: "injected worker panic".into()
            }
        );
        let later = engine.apply(EngineUpdate::default()).unwrap_err();
        assert_eq!(
            later.to_string(),
            "the scoring engine failed earlier and cannot continue (scoring worker 1 panicked: \
             injected worker panic); start a new engine"
        );
        assert!(matches!(engine.finish(), Err(EngineError::Failed { .. })));
    });
}

#[test]
fn a_worker_that_leaves_becomes_an_error() {
    within_a_minute(|| {
        let (_, mut engine) = settled_engine(3);
        engine.inject(0, WorkerCommand::Vanish);
        let error = engine.apply(EngineUpdate::default()).unwrap_err();
        assert_eq!(error, EngineError::WorkerExited { worker: 0 });
        // Dropping a failed engine must not hang either.
        drop(engine);
    });
}
