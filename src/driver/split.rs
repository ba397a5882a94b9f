//! Splitting events into train and test, and training events into the initially labelled
//! seed and the hidden-label pool. Pure and seeded: the same events and seed give the same
//! split.

use std::collections::HashMap;

use crate::data::Interaction;
use crate::plan::{InitialLabels, SplitRule};
use crate::seeding::unit_hash;

/// Salts so that the test split and the seed labels draw independent hashes.
const TEST_SALT: u64 = 0x7E57_5A17;
const LABEL_SALT: u64 = 0x1ABE_11ED;
const COLD_SALT: u64 = 0xC01D_17E5;

/// Whether `item` is held out as a cold item under a `cold_items` fraction.
pub fn is_cold_item(item: u32, cold_items: f64, seed: u64) -> bool {
    cold_items > 0.0 && unit_hash(seed ^ COLD_SALT, item) < cold_items
}

/// Events split three ways, each in input order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplitEvents {
    /// Training events (labelled seed and pool).
    pub train: Vec<Interaction>,
    /// Validation events (empty when the split has none).
    pub validation: Vec<Interaction>,
    /// Test events.
    pub test: Vec<Interaction>,
}

/// Where one event goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Train,
    Validation,
    Test,
}

/// Splits `events` by a `random` or `temporal` rule. Every event of a cold item goes to
/// test. A random split draws one seeded number per event: below `test` it is a test event,
/// below `test + validation` a validation event (so adding a validation set leaves the test
/// set unchanged).
pub fn split_events(events: &[Interaction], rule: &SplitRule, seed: u64) -> SplitEvents {
    let parts: Vec<Part> = match rule {
        SplitRule::Random {
            test,
            validation,
            cold_items,
        } => (0..events.len())
            .map(|k| {
                let draw = unit_hash(seed ^ TEST_SALT, k as u32);
                if is_cold_item(events[k].item, *cold_items, seed) || draw < *test {
                    Part::Test
                } else if draw < test + validation {
                    Part::Validation
                } else {
                    Part::Train
                }
            })
            .collect(),
        SplitRule::Temporal {
            leave_last,
            validation_last,
        } => last_per_user(events, *leave_last, *validation_last),
    };
    let mut split = SplitEvents::default();
    for (event, part) in events.iter().zip(parts) {
        match part {
            Part::Train => &mut split.train,
            Part::Validation => &mut split.validation,
            Part::Test => &mut split.test,
        }
        .push(*event);
    }
    split
}

/// Each user's last `test` events by time (ties by position) go to test and the
/// `validation` before them to validation; users with `test + validation` or fewer events
/// stay entirely in train, so every evaluated user has training history.
fn last_per_user(events: &[Interaction], test: usize, validation: usize) -> Vec<Part> {
    let mut by_user: HashMap<u32, Vec<usize>> = HashMap::new();
    for (k, event) in events.iter().enumerate() {
        by_user.entry(event.user).or_default().push(k);
    }
    let mut parts = vec![Part::Train; events.len()];
    let held = test + validation;
    for positions in by_user.values_mut() {
        if positions.len() <= held {
            continue;
        }
        positions.sort_by_key(|&k| (events[k].time, k));
        let n = positions.len();
        for (rank, &k) in positions[n - held..].iter().enumerate() {
            parts[k] = if rank < validation {
                Part::Validation
            } else {
                Part::Test
            };
        }
    }
    parts
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
        let plan = SplitRule::Random {
            test: 0.2,
            validation: 0.0,
            cold_items: 0.0,
        };
        let SplitEvents {
            train,
            validation,
            test,
        } = split_events(&e, &plan, 1);
        assert_eq!(train.len() + test.len(), e.len());
        assert!(validation.is_empty());
        assert!((test.len() as f64 / e.len() as f64 - 0.2).abs() < 0.01);
        assert_eq!(split_events(&e, &plan, 1).test, test);
        assert_ne!(split_events(&e, &plan, 2).test, test);
    }

    #[test]
    fn a_validation_set_leaves_the_test_set_unchanged() {
        let e = events(20_000);
        let without = SplitRule::Random {
            test: 0.1,
            validation: 0.0,
            cold_items: 0.0,
        };
        let with = SplitRule::Random {
            test: 0.1,
            validation: 0.15,
            cold_items: 0.0,
        };
        let a = split_events(&e, &without, 5);
        let b = split_events(&e, &with, 5);
        assert_eq!(a.test, b.test);
        assert!((b.validation.len() as f64 / e.len() as f64 - 0.15).abs() < 0.01);
        assert_eq!(b.train.len() + b.validation.len(), a.train.len());
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
        let plan = SplitRule::Random {
            test: 0.2,
            validation: 0.0,
            cold_items: 0.1,
        };
        let SplitEvents { train, test, .. } = split_events(&e, &plan, 3);
        let cold: Vec<u32> = (0..500).filter(|&i| is_cold_item(i, 0.1, 3)).collect();
        assert!((30..70).contains(&cold.len()), "{}", cold.len());
        assert!(train.iter().all(|x| !cold.contains(&x.item)));
        let cold_in_test = test.iter().filter(|x| cold.contains(&x.item)).count();
        assert_eq!(cold_in_test, cold.len() * 40);
    }

    #[test]
    fn temporal_split_holds_out_each_users_latest_events() {
        let e = events(70); // 10 events per user; time decreases with position
        let plan = SplitRule::Temporal {
            leave_last: 2,
            validation_last: 1,
        };
        let SplitEvents {
            train,
            validation,
            test,
        } = split_events(&e, &plan, 0);
        assert_eq!(test.len(), 14);
        assert_eq!(validation.len(), 7);
        for v in &validation {
            let before_test = test
                .iter()
                .filter(|t| t.user == v.user)
                .all(|t| t.time > v.time);
            let after_train = train
                .iter()
                .filter(|t| t.user == v.user)
                .all(|t| t.time < v.time);
            assert!(before_test && after_train);
        }
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
        let plan = SplitRule::Temporal {
            leave_last: 1,
            validation_last: 0,
        };
        let split = split_events(&e, &plan, 0);
        assert_eq!((split.train.len(), split.test.len()), (7, 0));
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
