//! Splitting events into train and test, and training events into the initially labelled
//! seed and the hidden-label pool. Pure and seeded: the same events and seed give the same
//! split.

use std::collections::HashMap;

use crate::data::Interaction;
use crate::plan::{InitialLabels, SplitPlan};
use crate::strategy::unit_hash;

/// Salts so that the test split and the seed labels draw independent hashes.
const TEST_SALT: u64 = 0x7E57_5A17;
const LABEL_SALT: u64 = 0x1ABE_11ED;
const COLD_SALT: u64 = 0xC01D_17E5;

/// Whether `item` is held out as a cold item under a `cold_items` fraction.
pub fn is_cold_item(item: u32, cold_items: f64, seed: u64) -> bool {
    cold_items > 0.0 && unit_hash(seed ^ COLD_SALT, item) < cold_items
}

/// Splits `events` by a `random` or `temporal` plan into (train, test), each in input order.
/// Every event of a cold item goes to test.
///
/// # Panics
/// For a `files` split, whose events come already split.
pub fn split_events(
    events: &[Interaction],
    split: &SplitPlan,
    seed: u64,
) -> (Vec<Interaction>, Vec<Interaction>) {
    let in_test: Vec<bool> = match split {
        SplitPlan::Random { test, cold_items } => (0..events.len())
            .map(|k| {
                is_cold_item(events[k].item, *cold_items, seed)
                    || unit_hash(seed ^ TEST_SALT, k as u32) < *test
            })
            .collect(),
        SplitPlan::Temporal { leave_last } => last_per_user(events, *leave_last),
        SplitPlan::Files { .. } => panic!("a files split is read already split"),
    };
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (event, to_test) in events.iter().zip(in_test) {
        if to_test { &mut test } else { &mut train }.push(*event);
    }
    (train, test)
}

/// Marks each user's last `n` events by time (ties by position); users with `n` or fewer
/// events stay entirely in train, so every test user has training history.
fn last_per_user(events: &[Interaction], n: usize) -> Vec<bool> {
    let mut by_user: HashMap<u32, Vec<usize>> = HashMap::new();
    for (k, event) in events.iter().enumerate() {
        by_user.entry(event.user).or_default().push(k);
    }
    let mut marked = vec![false; events.len()];
    for positions in by_user.values_mut() {
        if positions.len() <= n {
            continue;
        }
        positions.sort_by_key(|&k| (events[k].time, k));
        for &k in &positions[positions.len() - n..] {
            marked[k] = true;
        }
    }
    marked
}

/// Which training samples start labelled: `labelled[k]` for sample `k`.
pub fn initial_labels(train: &[Interaction], initial: InitialLabels, seed: u64) -> Vec<bool> {
    match initial {
        InitialLabels::Fraction(fraction) => (0..train.len())
            .map(|k| unit_hash(seed ^ LABEL_SALT, k as u32) < fraction)
            .collect(),
        InitialLabels::PerUser(n) => {
            let mut by_user: HashMap<u32, Vec<usize>> = HashMap::new();
            for (k, event) in train.iter().enumerate() {
                by_user.entry(event.user).or_default().push(k);
            }
            let mut labelled = vec![false; train.len()];
            for positions in by_user.values_mut() {
                positions.sort_by_key(|&k| (train[k].time, k));
                for &k in positions.iter().take(n) {
                    labelled[k] = true;
                }
            }
            labelled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: u32) -> Vec<Interaction> {
        (0..n)
            .map(|k| Interaction {
                user: k % 7,
                item: k % 11,
                label: 3.0,
                time: i64::from(1000 - k),
            })
            .collect()
    }

    #[test]
    fn random_split_is_seeded_and_close_to_the_fraction() {
        let e = events(20_000);
        let plan = SplitPlan::Random {
            test: 0.2,
            cold_items: 0.0,
        };
        let (train, test) = split_events(&e, &plan, 1);
        assert_eq!(train.len() + test.len(), e.len());
        assert!((test.len() as f64 / e.len() as f64 - 0.2).abs() < 0.01);
        assert_eq!(split_events(&e, &plan, 1).1, test);
        assert_ne!(split_events(&e, &plan, 2).1, test);
    }

    #[test]
    fn cold_items_never_appear_in_train() {
        let e: Vec<Interaction> = (0..20_000)
            .map(|k| Interaction {
                user: k % 97,
                item: k % 500,
                label: 3.0,
                time: 0,
            })
            .collect();
        let plan = SplitPlan::Random {
            test: 0.2,
            cold_items: 0.1,
        };
        let (train, test) = split_events(&e, &plan, 3);
        let cold: Vec<u32> = (0..500).filter(|&i| is_cold_item(i, 0.1, 3)).collect();
        assert!((30..70).contains(&cold.len()), "{}", cold.len());
        assert!(train.iter().all(|x| !cold.contains(&x.item)));
        let cold_in_test = test.iter().filter(|x| cold.contains(&x.item)).count();
        assert_eq!(cold_in_test, cold.len() * 40);
    }

    #[test]
    fn temporal_split_holds_out_each_users_latest_events() {
        let e = events(70); // 10 events per user; time decreases with position
        let (train, test) = split_events(&e, &SplitPlan::Temporal { leave_last: 2 }, 0);
        assert_eq!(test.len(), 14);
        for user in 0..7 {
            let latest_train = train
                .iter()
                .filter(|x| x.user == user)
                .map(|x| x.time)
                .max()
                .unwrap();
            let earliest_test = test
                .iter()
                .filter(|x| x.user == user)
                .map(|x| x.time)
                .min()
                .unwrap();
            assert!(latest_train < earliest_test);
        }
    }

    #[test]
    fn users_with_too_few_events_stay_in_train() {
        let e = events(7); // one event per user
        let (train, test) = split_events(&e, &SplitPlan::Temporal { leave_last: 1 }, 0);
        assert_eq!((train.len(), test.len()), (7, 0));
    }

    #[test]
    fn per_user_seed_labels_are_the_earliest_events() {
        let e = events(70);
        let labelled = initial_labels(&e, InitialLabels::PerUser(3), 0);
        assert_eq!(labelled.iter().filter(|&&l| l).count(), 21);
        for (k, event) in e.iter().enumerate() {
            let earlier = e
                .iter()
                .filter(|x| x.user == event.user && x.time < event.time)
                .count();
            assert_eq!(labelled[k], earlier < 3);
        }
    }
}
