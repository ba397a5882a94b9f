//! Negative items for BPR: for a positive `(u, i)`, an item `j` that user `u` has no known
//! event with, drawn uniformly and reproducibly.
//!
//! **Known events.** Under BPR every labelled event is a positive (a rating of 1 star
//! counts as much as one of 5: the event says the user met the item). The sampler keeps, per
//! user, the set of items of every sample the model has been handed in any `fit` call so
//! far, including the call being trained; an item outside that set is a negative
//! candidate, "not (yet) seen" rather than "disliked", as in Rendle et al. (UAI 2009).
//!
//! **Draws.** Each epoch has a number, counted across `fit` calls. The negative of the
//! sample with stable key `key` in epoch `e` is found by rejection: try `t` proposes item
//! `stable_hash(seed, domain, key, e, t)` mapped onto `0..n_items`, and the first proposal
//! the user has no event with wins. A user who knows most of the catalogue can exhaust the
//! [`MAX_TRIES`] tries; the draw then picks uniformly among that user's unknown items by
//! enumerating them, so a negative is found whenever one exists. A user with an event on
//! every item has none, and the sample is skipped (the training loop gives it weight 0).
//!
//! Because a draw is a pure function of `(seed, key, epoch)` and the known sets, the same
//! seed and the same `fit` calls give the same negatives, whatever the batch order.

use std::collections::HashSet;

use super::{ModelError, ModelState};
use crate::data::{Interaction, ItemIdx, UserIdx};
use crate::seeding::stable_hash;

/// Separates negative draws from other uses of the seed.
const NEGATIVE_DOMAIN: u64 = 0xB9B9_0E6A_0000_0006;

/// Rejection tries before a draw enumerates the user's unknown items.
pub(super) const MAX_TRIES: u64 = 32;

/// Every user's known items and the epoch counter that seeds the draws.
#[derive(Clone, Debug)]
pub(super) struct NegativeSampler {
    seed: u64,
    n_items: usize,
    /// `known[u]`: the items of every sample of user `u` handed to `fit` so far.
    known: Vec<HashSet<ItemIdx, foldhash::fast::FixedState>>,
    /// Epochs numbered so far, across `fit` calls.
    epochs: u64,
}

impl NegativeSampler {
    /// A sampler for `n_users` x `n_items` rows, knowing no events yet.
    pub(super) fn new(seed: u64, n_users: usize, n_items: usize) -> Self {
        let mut sampler = Self {
            seed,
            n_items: 0,
            known: Vec::new(),
            epochs: 0,
        };
        sampler.grow(n_users, n_items);
        sampler
    }

    /// Makes room for at least `n_users` users and `n_items` items (as the model's `grow`).
    pub(super) fn grow(&mut self, n_users: usize, n_items: usize) {
        if n_users > self.known.len() {
            self.known.resize_with(n_users, HashSet::default);
        }
        self.n_items = self.n_items.max(n_items);
    }

    /// Records the events of `samples` as known (the caller has checked their rows).
    pub(super) fn learn(&mut self, samples: &[Interaction]) {
        for s in samples {
            self.known[s.user as usize].insert(s.item);
        }
    }

    /// Numbers the next epoch.
    pub(super) fn next_epoch(&mut self) -> u64 {
        self.epochs += 1;
        self.epochs - 1
    }

    /// Saves the known items (each user's, sorted, concatenated as the u32 tensor
    /// `negatives.known_items`, with each user's count in `negatives.known_counts`) and the
    /// epoch counter (scalar `negatives.epochs`). The seed comes from the plan and the sizes
    /// from the model's tables.
    pub(super) fn save(&self, state: &mut ModelState) -> Result<(), ModelError> {
        let mut counts = Vec::with_capacity(self.known.len());
        let mut items = Vec::new();
        for known in &self.known {
            let start = items.len();
            items.extend(known.iter().copied());
            items[start..].sort_unstable();
            counts.push(known.len() as u32);
        }
        state.insert_u32("negatives.known_counts", counts);
        state.insert_u32("negatives.known_items", items);
        state.set_scalar("negatives.epochs", self.epochs)
    }

    /// This sampler (its seed) with the state [`NegativeSampler::save`] saved, for a model
    /// of `n_users` x `n_items` rows.
    pub(super) fn restored(
        &self,
        state: &ModelState,
        (n_users, n_items): (usize, usize),
    ) -> Result<Self, ModelError> {
        let counts = state.u32_vector("negatives.known_counts")?;
        let items = state.u32_vector("negatives.known_items")?;
        let inconsistent = |what: String| {
            Err(ModelError::Input(format!(
                "the model state's negative sampler is inconsistent: {what}"
            )))
        };
        if counts.len() != n_users {
            return inconsistent(format!(
                "it knows the items of {} users, the model's tables hold {n_users}",
                counts.len()
            ));
        }
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != items.len() {
            return inconsistent(format!(
                "the users' counts add up to {total} items, `negatives.known_items` holds {}",
                items.len()
            ));
        }
        if let Some(item) = items.iter().find(|&&item| item as usize >= n_items) {
            return inconsistent(format!(
                "it knows item {item}, the model's tables hold {n_items} items"
            ));
        }
        let mut rest = items;
        let known = counts
            .iter()
            .map(|&count| {
                let (own, after) = rest.split_at(count as usize);
                rest = after;
                own.iter().copied().collect()
            })
            .collect();
        Ok(Self {
            seed: self.seed,
            n_items,
            known,
            epochs: state.scalar("negatives.epochs")?,
        })
    }

    /// Items the draws choose from.
    pub(super) fn n_items(&self) -> usize {
        self.n_items
    }

    /// The negative of the sample with key `key` of `user` in epoch `epoch`, or `None` when
    /// the user has an event with every item.
    pub(super) fn draw(&self, user: UserIdx, key: u32, epoch: u64) -> Option<ItemIdx> {
        let known = &self.known[user as usize];
        let free = self.n_items - known.len();
        if free == 0 {
            return None;
        }
        let proposal =
            |t: u64| stable_hash(&[self.seed, NEGATIVE_DOMAIN, u64::from(key), epoch, t]);
        for t in 0..MAX_TRIES {
            let item = below(proposal(t), self.n_items) as ItemIdx;
            if !known.contains(&item) {
                return Some(item);
            }
        }
        let nth = below(proposal(MAX_TRIES), free);
        (0..self.n_items as ItemIdx)
            .filter(|item| !known.contains(item))
            .nth(nth)
    }
}

/// `h` mapped onto `0..n` by a multiply-shift (Lemire's reduction), uniform up to `n / 2^64`.
fn below(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: u32, item: u32) -> Interaction {
        Interaction {
            user,
            item,
            label: 1.0,
            time: 0,
        }
    }

    #[test]
    fn negatives_are_never_a_known_item_of_the_user() {
        // User 0 knows 2 of 50 items, user 1 knows 47 (rejection mostly fails and the
        // enumeration decides), user 2 knows every item, user 3 nothing.
        let mut sampler = NegativeSampler::new(5, 4, 50);
        let mut events = vec![event(0, 3), event(0, 7)];
        events.extend(
            (0..50)
                .filter(|i| ![4, 20, 49].contains(i))
                .map(|i| event(1, i)),
        );
        events.extend((0..50).map(|i| event(2, i)));
        sampler.learn(&events);
        let mut drawn_by_one = HashSet::<u32>::new();
        for key in 0..2000 {
            let epoch = sampler.next_epoch();
            let a = sampler.draw(0, key, epoch).unwrap();
            assert!(a < 50 && a != 3 && a != 7, "user 0 drew {a}");
            let b = sampler.draw(1, key, epoch).unwrap();
            assert!([4, 20, 49].contains(&b), "user 1 drew {b}");
            drawn_by_one.insert(b);
            assert_eq!(sampler.draw(2, key, epoch), None);
            assert!(sampler.draw(3, key, epoch).unwrap() < 50);
        }
        assert_eq!(drawn_by_one.len(), 3, "every unknown item can be drawn");
    }

    #[test]
    fn draws_are_uniform_over_unknown_items() {
        let mut sampler = NegativeSampler::new(1, 1, 10);
        sampler.learn(&[event(0, 0), event(0, 9)]);
        let mut counts = [0u32; 10];
        for key in 0..80_000 {
            counts[sampler.draw(0, key, 0).unwrap() as usize] += 1;
        }
        assert_eq!((counts[0], counts[9]), (0, 0));
        for &c in &counts[1..9] {
            // 10,000 expected; the standard deviation is ~94.
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn draws_depend_on_seed_key_and_epoch_and_learning_grows_with_the_model() {
        let mut a = NegativeSampler::new(3, 2, 1000);
        let b = NegativeSampler::new(3, 2, 1000);
        let c = NegativeSampler::new(4, 2, 1000);
        let draws = |s: &NegativeSampler, epoch: u64| -> Vec<Option<u32>> {
            (0..50).map(|key| s.draw(1, key, epoch)).collect()
        };
        assert_eq!(draws(&a, 0), draws(&b, 0));
        assert_ne!(draws(&a, 0), draws(&c, 0), "another seed, other negatives");
        assert_ne!(draws(&a, 0), draws(&a, 1), "another epoch, other negatives");
        assert_eq!((a.next_epoch(), a.next_epoch()), (0, 1));

        // Grown users and items take part; what was learned is kept.
        a.learn(&[event(1, 0)]);
        a.grow(3, 1001);
        assert_eq!(a.n_items(), 1001);
        a.learn(&(0..1000).map(|i| event(2, i)).collect::<Vec<_>>());
        assert_eq!(a.draw(2, 0, 0), Some(1000));
        assert!((0..500).all(|key| a.draw(1, key, 0) != Some(0)));
    }
}
