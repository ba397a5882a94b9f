//! Batch selection for the diversity strategies (`coreset`, `uncertainty_diversity`): the
//! strategy's key ranks the pool (a seeded shuffle, or uncertainty) and names the
//! `candidates`; greedy k-center ([`Coverage`]) then picks the batch among them, each pick
//! the candidate farthest from every labelled sample and every earlier pick.
//!
//! Two spaces:
//! - **text**: an item's text vector. Samples of one item coincide, so k-center runs over
//!   the candidates' *items* in a [`TextCoverage`] kept across rounds (item vectors never
//!   change; labelled items only ever join the centers), and each picked item contributes
//!   its best-keyed candidate.
//! - **factors**: the concatenation of a sample's user and item scoring rows. Rows change
//!   with every gradient step, so nothing carries over: each round measures the candidates
//!   against a seeded sample of at most `candidates` labelled pairs.
//!
//! When the candidates span fewer distinct points than the budget, the rest of the budget
//! goes to the remaining candidates in key order.

use std::collections::{BTreeMap, HashSet};

use super::coreset::Coverage;
use crate::data::{ItemEmbeddings, ItemIdx, SampleIdx, UserIdx};
use crate::seeding::unit_hash;

/// A pool sample k-center may pick, with the key its strategy ranked it by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The sample.
    pub sample: SampleIdx,
    /// Its user.
    pub user: UserIdx,
    /// Its item.
    pub item: ItemIdx,
    /// The strategy's key (higher first).
    pub key: f64,
}

/// Distances of every item with text to the nearest labelled item, kept across rounds.
#[derive(Clone, Debug)]
pub struct TextCoverage {
    coverage: Coverage,
    centers: HashSet<ItemIdx>,
}

impl TextCoverage {
    /// Tracks every item of `text` that has a vector; no item is labelled yet.
    pub fn new(text: &ItemEmbeddings) -> Self {
        let mut coverage = Self {
            coverage: Coverage::new(text.dim),
            centers: HashSet::new(),
        };
        coverage.track_new(text);
        coverage
    }

    /// Tracks the items of `text` that gained a vector since the last call.
    pub fn track_new(&mut self, text: &ItemEmbeddings) {
        for item in 0..text.len() as ItemIdx {
            let key = u64::from(item);
            if text.present[item as usize] && !self.coverage.contains(key) {
                self.coverage.track(key, text.vector(item));
                if self.centers.contains(&item) {
                    self.coverage.add_centers(&[text.vector(item)]);
                }
            }
        }
    }

    /// Makes the items of newly labelled samples centers (each item once).
    pub fn label(&mut self, items: impl IntoIterator<Item = ItemIdx>, text: &ItemEmbeddings) {
        let mut fresh: Vec<ItemIdx> = items
            .into_iter()
            .filter(|&i| self.centers.insert(i))
            .collect();
        fresh.sort_unstable();
        let vectors: Vec<&[f32]> = fresh
            .iter()
            .filter(|&&i| text.present.get(i as usize).copied().unwrap_or(false))
            .map(|&i| text.vector(i))
            .collect();
        self.coverage.add_centers(&vectors);
    }

    /// Up to `budget` candidates: k-center over their items, each item's best-keyed
    /// candidate, then the rest in key order.
    pub fn pick(&self, candidates: &[Candidate], budget: usize) -> Vec<Candidate> {
        let mut best: BTreeMap<ItemIdx, Candidate> = BTreeMap::new();
        for c in candidates {
            best.entry(c.item)
                .and_modify(|b| {
                    if key_order(c, b) {
                        *b = *c;
                    }
                })
                .or_insert(*c);
        }
        let items = self
            .coverage
            .select(budget, |key| best.contains_key(&(key as ItemIdx)));
        let picked: Vec<Candidate> = items.iter().map(|&i| best[&(i as ItemIdx)]).collect();
        fill_by_key(picked, candidates, budget)
    }
}

/// Up to `budget` candidates by k-center over the concatenated user and item rows, measured
/// against `labelled` pairs (at most `candidates.len()` of them, a seeded sample).
pub fn pick_by_factors(
    candidates: &[Candidate],
    labelled: &[(UserIdx, ItemIdx)],
    rows: impl Fn(UserIdx, ItemIdx) -> Vec<f32>,
    budget: usize,
    seed: u64,
) -> Vec<Candidate> {
    let Some(first) = candidates.first() else {
        return Vec::new();
    };
    let dim = rows(first.user, first.item).len();
    let mut coverage = Coverage::new(dim);
    let limit = candidates.len().max(1);
    let centers: Vec<Vec<f32>> = if labelled.len() <= limit {
        labelled.iter().map(|&(u, i)| rows(u, i)).collect()
    } else {
        let mut keyed: Vec<(f64, usize)> = (0..labelled.len())
            .map(|k| (unit_hash(seed, k as u32), k))
            .collect();
        keyed.select_nth_unstable_by(limit - 1, |a, b| a.0.total_cmp(&b.0));
        keyed.truncate(limit);
        keyed.sort_unstable_by_key(|&(_, k)| k);
        keyed
            .iter()
            .map(|&(_, k)| rows(labelled[k].0, labelled[k].1))
            .collect()
    };
    let center_refs: Vec<&[f32]> = centers.iter().map(Vec::as_slice).collect();
    coverage.add_centers(&center_refs);
    for c in candidates {
        coverage.track(u64::from(c.sample), &rows(c.user, c.item));
    }
    let by_sample: BTreeMap<SampleIdx, Candidate> =
        candidates.iter().map(|c| (c.sample, *c)).collect();
    let picked = coverage
        .select(budget, |_| true)
        .into_iter()
        .map(|s| by_sample[&(s as SampleIdx)])
        .collect();
    fill_by_key(picked, candidates, budget)
}

/// Whether `a` ranks before `b`: higher key, then lower sample.
fn key_order(a: &Candidate, b: &Candidate) -> bool {
    a.key
        .total_cmp(&b.key)
        .then(b.sample.cmp(&a.sample))
        .is_gt()
}

/// `picked`, then candidates not yet picked in key order, up to `budget`.
fn fill_by_key(
    mut picked: Vec<Candidate>,
    candidates: &[Candidate],
    budget: usize,
) -> Vec<Candidate> {
    if picked.len() < budget {
        let taken: HashSet<SampleIdx> = picked.iter().map(|c| c.sample).collect();
        let mut rest: Vec<Candidate> = candidates
            .iter()
            .filter(|c| !taken.contains(&c.sample))
            .copied()
            .collect();
        rest.sort_by(|a, b| b.key.total_cmp(&a.key).then(a.sample.cmp(&b.sample)));
        picked.extend(rest.into_iter().take(budget - picked.len()));
    }
    picked.truncate(budget);
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(vectors: &[[f32; 2]]) -> ItemEmbeddings {
        ItemEmbeddings {
            dim: 2,
            vectors: vectors.iter().flatten().copied().collect(),
            present: vec![true; vectors.len()],
        }
    }

    fn candidate(sample: u32, item: u32, key: f64) -> Candidate {
        Candidate {
            sample,
            user: sample,
            item,
            key,
        }
    }

    #[test]
    fn text_picks_items_far_from_labelled_ones_and_their_best_sample() {
        // Items 0 and 1 sit together, 2 far away, 3 farther still but labelled.
        let text = text(&[[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [9.0, 0.0]]);
        let mut coverage = TextCoverage::new(&text);
        coverage.label([0], &text);
        let candidates = [
            candidate(10, 1, 0.9),
            candidate(11, 2, 0.1),
            candidate(12, 2, 0.5),
            candidate(13, 3, 0.2),
        ];
        // Item 3 is farthest from item 0; then item 2 (4 from item 3, far more than item 1's
        // 0.1 from item 0), each with its best-keyed sample.
        let picked: Vec<u32> = coverage
            .pick(&candidates, 2)
            .iter()
            .map(|c| c.sample)
            .collect();
        assert_eq!(picked, vec![13, 12]);
        // Labelling item 3 makes item 2 the farthest.
        coverage.label([3], &text);
        let picked: Vec<u32> = coverage
            .pick(&candidates, 1)
            .iter()
            .map(|c| c.sample)
            .collect();
        assert_eq!(picked, vec![12]);
    }

    #[test]
    fn a_budget_beyond_the_distinct_items_is_filled_by_key() {
        let text = text(&[[0.0, 0.0], [1.0, 0.0]]);
        let coverage = TextCoverage::new(&text);
        let candidates = [
            candidate(1, 0, 0.3),
            candidate(2, 0, 0.8),
            candidate(3, 1, 0.1),
            candidate(4, 0, 0.5),
        ];
        let picked: Vec<u32> = coverage
            .pick(&candidates, 4)
            .iter()
            .map(|c| c.sample)
            .collect();
        // Without centers both items are infinitely far: the smaller item first (its best
        // sample, 2), then item 1 (sample 3); the rest of the budget by key: 4, then 1.
        assert_eq!(picked, vec![2, 3, 4, 1]);
    }

    #[test]
    fn factors_measure_against_the_labelled_pairs() {
        // Rows: user u -> [u], item i -> [10 i]; labelled pair (0, 0) sits at the origin.
        let rows = |u: u32, i: u32| vec![u as f32, 10.0 * i as f32];
        let candidates = [
            candidate(1, 0, 0.0),
            candidate(2, 1, 0.0),
            candidate(3, 2, 0.0),
        ];
        let picked: Vec<u32> = pick_by_factors(&candidates, &[(0, 0)], rows, 2, 7)
            .iter()
            .map(|c| c.sample)
            .collect();
        // Sample 3 = [3, 20] is farthest from the origin; then sample 2 = [2, 10] (101 from
        // sample 3) beats sample 1 = [1, 0] (1 from the origin).
        assert_eq!(picked, vec![3, 2]);
    }
}
