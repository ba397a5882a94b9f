//! Evaluating the current model: pointwise metrics over the target events and ranking
//! metrics over the plan's candidate set, plus the top-K lists `recommendations.parquet`
//! exports.
//!
//! **The ranking score.** Ranking reads every member's raw score (before clipping to the
//! rating scale and before the click sigmoid), averaged over members:
//! `mean_m (offset_m + b_u + b_i + <p_u, q_i>)`. For one member this orders items exactly as
//! the prediction does, without the ties that clipping creates at the top of the scale. It
//! is one dot product of a user vector `[p_u^1 .. p_u^M, 1] / M` and an item vector
//! `[q_i^1 .. q_i^M, Σ_m b_i^m]` plus a per-user constant, so the whole catalogue is ranked
//! by the blocked top-K kernel ([`crate::metrics::topk`]) without a users × items matrix.
//! A fusion's head weighs its members (`w_m` instead of `1 / M`): the user vector is then
//! `[w_1 p_u^1 .. w_M p_u^M, 1]` and the item vector's last entry `Σ_m w_m b_i^m`.
//!
//! **Candidates** ([`CandidateSet`]):
//! - `all`: every item except those whose label the model was given (the session's
//!   labelled items) and, when ranking for the test set, the user's validation items (as
//!   RecBole does: they are history at test time). Unlabelled pool items stay candidates.
//! - `test_items`: only the user's own target events, ranked by the predicted label.
//! - `sampled`: the user's target items and `N` items drawn, seeded, from those the user
//!   has no event with at all.

use std::sync::OnceLock;

use crate::data::{Interaction, ItemIdx, UserIdx};
use crate::metrics::topk::{Ranked, VectorTable, top_k};
use crate::metrics::{Metric, RankedUser, Scored, pointwise, ranking_metrics};
use crate::plan::{CandidateSet, EvaluatePlan};
use crate::scoring::ScoringHead;
use crate::seeding::mix64;

use super::rows::RowMirror;

/// Salt of the sampled negatives' hash.
const NEGATIVES_SALT: u64 = 0x4E45_4741_5449_5645;

/// Below this many events per thread, predictions are computed on the calling thread.
const MIN_PREDICTIONS_PER_THREAD: usize = 16_384;

/// Each user's items, sorted and unique.
#[derive(Clone, Debug, Default)]
pub struct ItemsPerUser {
    items: Vec<Vec<ItemIdx>>,
}

impl ItemsPerUser {
    /// The items of `events`, per user.
    pub fn of(events: &[Interaction]) -> Self {
        let mut sets = Self::default();
        sets.add(events);
        sets
    }

    /// Adds the items of `events`.
    pub fn add(&mut self, events: &[Interaction]) {
        for e in events {
            let user = e.user as usize;
            if self.items.len() <= user {
                self.items.resize(user + 1, Vec::new());
            }
            let items = &mut self.items[user];
            if let Err(at) = items.binary_search(&e.item) {
                items.insert(at, e.item);
            }
        }
    }

    /// The items of `user`, ascending.
    pub fn get(&self, user: UserIdx) -> &[ItemIdx] {
        self.items.get(user as usize).map_or(&[], Vec::as_slice)
    }

    /// The union with `other`, per user.
    pub fn union(&self, other: &ItemsPerUser) -> ItemsPerUser {
        let n = self.items.len().max(other.items.len());
        let items = (0..n as u32)
            .map(|u| {
                let mut both = [self.get(u), other.get(u)].concat();
                both.sort_unstable();
                both.dedup();
                both
            })
            .collect();
        ItemsPerUser { items }
    }
}

/// What one evaluation ranks for: the target events, the items each user must not be
/// shown, and the items each user has any event with (for sampled negatives).
pub struct EvalTarget<'a> {
    /// Test (or validation, or cold test) events.
    pub events: &'a [Interaction],
    /// Items excluded from each user's candidates.
    pub excluded: &'a ItemsPerUser,
    /// Every item each user has an event with (sampled negatives avoid them).
    pub user_events: &'a ItemsPerUser,
    /// Prefix of the metric names (`""`, `"val_"`, `"cold_"`).
    pub prefix: &'a str,
    /// The model's prediction of each of `events`, when the caller computed them already
    /// (else the pointwise metrics compute them).
    pub predictions: Option<&'a [f32]>,
}

/// The model as the evaluation sees it: its head and published rows, with the item
/// vectors of the ranking score built once.
pub struct ModelView<'a> {
    head: &'a ScoringHead,
    rows: &'a RowMirror,
    /// Item vectors of the ranking score, built on first use.
    items: OnceLock<VectorTable>,
    threads: usize,
}

impl<'a> ModelView<'a> {
    /// The view of `rows` (every user and item row published) under `head`.
    pub fn new(head: &'a ScoringHead, rows: &'a RowMirror) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            head,
            rows,
            items: OnceLock::new(),
            threads,
        }
    }

    /// The item vectors of the ranking score (see the module docs).
    fn items(&self) -> &VectorTable {
        self.items.get_or_init(|| {
            let layout = self.head.layout;
            let width = 1 + layout.dim;
            let n_items = self.rows.n_items();
            let mut values = Vec::with_capacity(n_items * (layout.members * layout.dim + 1));
            for item in 0..n_items as u32 {
                let row = self.rows.item(item);
                let mut bias = 0.0f32;
                for m in 0..layout.members {
                    let member = &row[m * width..(m + 1) * width];
                    bias += match &self.head.weights {
                        Some(weights) => weights[m] * member[0],
                        None => member[0],
                    };
                    values.extend_from_slice(&member[1..]);
                }
                values.push(bias);
            }
            VectorTable::new(layout.members * layout.dim + 1, values)
        })
    }

    /// Items in the catalogue.
    pub fn catalogue(&self) -> usize {
        self.rows.n_items()
    }

    /// The user's ranking vector and constant (see the module docs).
    fn user_vector(&self, user: UserIdx) -> (Vec<f32>, f32) {
        let layout = self.head.layout;
        let width = 1 + layout.dim;
        let members = layout.members as f32;
        let row = self.rows.user(user);
        let mut vector = Vec::with_capacity(layout.members * layout.dim + 1);
        let mut constant = 0.0f32;
        if let Some(weights) = &self.head.weights {
            // The item table's bias column already carries each member's weight.
            for (m, w) in weights.iter().enumerate() {
                let member = &row[m * width..(m + 1) * width];
                constant += w * (self.head.offsets[m] + member[0]);
                vector.extend(member[1..].iter().map(|x| x * w));
            }
            vector.push(1.0);
            return (vector, constant);
        }
        for m in 0..layout.members {
            let member = &row[m * width..(m + 1) * width];
            constant += self.head.offsets[m] + member[0];
            vector.extend(member[1..].iter().map(|x| x / members));
        }
        vector.push(1.0 / members);
        (vector, constant / members)
    }

    /// The ranking score of one user-item pair.
    fn ranking_score(&self, user_vector: &[f32], constant: f32, item: ItemIdx) -> f32 {
        constant
            + user_vector
                .iter()
                .zip(self.items().row(item as usize))
                .map(|(a, b)| a * b)
                .sum::<f32>()
    }

    /// The predicted label of one pair (what pointwise metrics compare).
    pub fn predict(&self, user: UserIdx, item: ItemIdx) -> f32 {
        self.head
            .score(self.rows.user(user), self.rows.item(item), None)
            .prediction
    }

    /// [`ModelView::predict`] of every event, in order, on the machine's threads (a few
    /// events on the calling one).
    pub fn predictions(&self, events: &[Interaction]) -> Vec<f32> {
        let mut predictions = vec![0.0f32; events.len()];
        let chunk = events
            .len()
            .div_ceil(self.threads)
            .max(MIN_PREDICTIONS_PER_THREAD);
        let predict_chunk = |events: &[Interaction], out: &mut [f32]| {
            for (event, prediction) in events.iter().zip(out) {
                *prediction = self.predict(event.user, event.item);
            }
        };
        if chunk >= events.len() {
            predict_chunk(events, &mut predictions);
            return predictions;
        }
        std::thread::scope(|scope| {
            for (events, out) in events.chunks(chunk).zip(predictions.chunks_mut(chunk)) {
                scope.spawn(move || predict_chunk(events, out));
            }
        });
        predictions
    }

    /// Every one of `users`' best `k` catalogue items, best first, excluding `excluded`,
    /// with the ranking score.
    pub fn top_k(&self, users: &[UserIdx], k: usize, excluded: &ItemsPerUser) -> Vec<Vec<Ranked>> {
        let dim = self.items().dim();
        let mut values = Vec::with_capacity(users.len() * dim);
        let mut constants = Vec::with_capacity(users.len());
        for &u in users {
            let (vector, constant) = self.user_vector(u);
            values.extend(vector);
            constants.push(constant);
        }
        let table = VectorTable::new(dim, values);
        let mut lists = top_k(
            &table,
            self.items(),
            k,
            &|r| excluded.get(users[r]),
            self.threads,
        );
        for (list, constant) in lists.iter_mut().zip(constants) {
            for entry in list {
                entry.score += constant;
            }
        }
        lists
    }
}

/// The metrics of `plan` on `target`, named as [`EvaluatePlan::named_metrics`] says (ranking
/// metrics carry their candidate set, see [`CandidateSet::metric_name`]).
pub fn evaluate(
    model: &ModelView<'_>,
    plan: &EvaluatePlan,
    target: &EvalTarget<'_>,
    seed: u64,
) -> Vec<(String, f64)> {
    let ranking: Vec<Metric> = plan
        .metrics
        .iter()
        .copied()
        .filter(Metric::is_ranking)
        .collect();
    let ranked = if ranking.is_empty() {
        Vec::new()
    } else {
        ranking_metrics(
            &ranking,
            &ranked_users(model, plan, target, seed),
            model.catalogue(),
        )
    };
    let scored: Vec<Scored> = if plan.metrics.iter().any(Metric::compares_labels) {
        let computed;
        let predictions = match target.predictions {
            Some(given) => given,
            None => {
                computed = model.predictions(target.events);
                &computed
            }
        };
        target
            .events
            .iter()
            .zip(predictions)
            .map(|(e, &prediction)| Scored {
                prediction,
                label: e.label,
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut ranked = ranked.into_iter();
    plan.metrics
        .iter()
        .zip(plan.named_metrics(target.prefix))
        .map(|(metric, name)| {
            let value = if metric.is_ranking() {
                ranked.next().unwrap_or(f64::NAN)
            } else {
                pointwise(*metric, &scored)
            };
            (name, value)
        })
        .collect()
}

/// Each target user with a relevant item, with their ranked candidates.
fn ranked_users(
    model: &ModelView<'_>,
    plan: &EvaluatePlan,
    target: &EvalTarget<'_>,
    seed: u64,
) -> Vec<RankedUser> {
    let depth = plan
        .metrics
        .iter()
        .filter_map(Metric::cutoff)
        .max()
        .unwrap_or(0);
    // Each user's target events, users ascending, events in input order.
    let mut by_user: std::collections::BTreeMap<UserIdx, Vec<&Interaction>> = Default::default();
    for e in target.events {
        by_user.entry(e.user).or_default().push(e);
    }
    by_user.retain(|_, events| events.iter().any(|e| e.label >= plan.relevant));
    let relevant_items = |events: &[&Interaction]| -> Vec<ItemIdx> {
        let mut items: Vec<ItemIdx> = events
            .iter()
            .filter(|e| e.label >= plan.relevant)
            .map(|e| e.item)
            .collect();
        items.sort_unstable();
        items.dedup();
        items
    };
    let ranked_user = |items: Vec<ItemIdx>, relevant: &[ItemIdx]| RankedUser {
        hits: items
            .iter()
            .map(|i| relevant.binary_search(i).is_ok())
            .collect(),
        items,
        relevant: relevant.len(),
    };
    match plan.candidates {
        CandidateSet::All => {
            let users: Vec<UserIdx> = by_user.keys().copied().collect();
            let lists = model.top_k(&users, depth, target.excluded);
            by_user
                .values()
                .zip(lists)
                .map(|(events, list)| {
                    let relevant = relevant_items(events);
                    ranked_user(list.iter().map(|r| r.item).collect(), &relevant)
                })
                .collect()
        }
        CandidateSet::TestItems => by_user
            .values()
            .map(|events| {
                let predictions: Vec<f32> = events
                    .iter()
                    .map(|e| model.predict(e.user, e.item))
                    .collect();
                // Stable: ties keep the events' order.
                let mut order: Vec<usize> = (0..events.len()).collect();
                order.sort_by(|&a, &b| predictions[b].total_cmp(&predictions[a]));
                let relevant = |k: usize| events[k].label >= plan.relevant;
                RankedUser {
                    items: order.iter().map(|&k| events[k].item).collect(),
                    hits: order.iter().map(|&k| relevant(k)).collect(),
                    relevant: (0..events.len()).filter(|&k| relevant(k)).count(),
                }
            })
            .collect(),
        CandidateSet::Sampled { negatives } => by_user
            .iter()
            .map(|(&user, events)| {
                let mut candidates: Vec<ItemIdx> = events.iter().map(|e| e.item).collect();
                candidates.extend(sample_negatives(
                    user,
                    negatives,
                    model.catalogue(),
                    target.user_events.get(user),
                    seed,
                ));
                candidates.sort_unstable();
                candidates.dedup();
                let (vector, constant) = model.user_vector(user);
                let mut scored: Vec<(f32, ItemIdx)> = candidates
                    .into_iter()
                    .map(|i| (model.ranking_score(&vector, constant, i), i))
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                scored.truncate(depth);
                let relevant = relevant_items(events);
                ranked_user(scored.into_iter().map(|(_, i)| i).collect(), &relevant)
            })
            .collect(),
    }
}

/// `n` distinct items below `catalogue` that are not in `avoid` (sorted), drawn from a
/// hash of (seed, user, draw); fewer when fewer exist.
fn sample_negatives(
    user: UserIdx,
    n: usize,
    catalogue: usize,
    avoid: &[ItemIdx],
    seed: u64,
) -> Vec<ItemIdx> {
    let available = catalogue.saturating_sub(avoid.len());
    let want = n.min(available);
    let mut drawn: Vec<ItemIdx> = Vec::with_capacity(want);
    let mut chosen = std::collections::HashSet::with_capacity(want);
    let stream = mix64(seed ^ NEGATIVES_SALT ^ mix64(u64::from(user)));
    let mut draw = 0u64;
    // Rejection sampling while most items are free; a scan of the free items otherwise.
    if want * 2 <= available {
        while drawn.len() < want {
            let item = (mix64(stream ^ mix64(draw)) % catalogue as u64) as ItemIdx;
            draw += 1;
            if avoid.binary_search(&item).is_err() && chosen.insert(item) {
                drawn.push(item);
            }
        }
    } else {
        let mut free: Vec<ItemIdx> = (0..catalogue as ItemIdx)
            .filter(|i| avoid.binary_search(i).is_err())
            .collect();
        // A seeded partial Fisher-Yates shuffle.
        for k in 0..want {
            let j = k + (mix64(stream ^ mix64(k as u64)) % (free.len() - k) as u64) as usize;
            free.swap(k, j);
        }
        free.truncate(want);
        drawn = free;
    }
    drawn
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::Loss;
    use crate::scoring::RowLayout;

    fn event(user: u32, item: u32, label: f32) -> Interaction {
        Interaction {
            user,
            item,
            label,
            time: 0,
        }
    }

    /// A random 2-member model over `users` x `items`.
    fn model(users: usize, items: usize) -> (ScoringHead, RowMirror) {
        let layout = RowLayout { members: 2, dim: 3 };
        let mut state = 7u64;
        let mut next = || {
            state = mix64(state);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let user_rows = (0..users * layout.row_len()).map(|_| next()).collect();
        let item_rows = (0..items * layout.row_len()).map(|_| next()).collect();
        let head = ScoringHead::new(layout, vec![3.0, 3.5], Loss::Squared).with_clip(1.0, 5.0);
        (head, RowMirror::new(layout.row_len(), user_rows, item_rows))
    }

    /// The ranking score computed member by member from the rows.
    fn raw_mean(head: &ScoringHead, rows: &RowMirror, u: u32, i: u32) -> f32 {
        let width = 1 + head.layout.dim;
        let (ur, ir) = (rows.user(u), rows.item(i));
        let sum: f32 = (0..head.layout.members)
            .map(|m| {
                let (a, b) = (
                    &ur[m * width..(m + 1) * width],
                    &ir[m * width..(m + 1) * width],
                );
                head.offsets[m]
                    + a[0]
                    + b[0]
                    + a[1..].iter().zip(&b[1..]).map(|(x, y)| x * y).sum::<f32>()
            })
            .sum();
        sum / head.layout.members as f32
    }

    /// Metrics by a naive full sort of every candidate, the reference for the fast path.
    fn naive_metrics(
        head: &ScoringHead,
        rows: &RowMirror,
        plan: &EvaluatePlan,
        target: &EvalTarget<'_>,
        catalogue: usize,
    ) -> Vec<f64> {
        let mut users: Vec<u32> = target.events.iter().map(|e| e.user).collect();
        users.sort_unstable();
        users.dedup();
        let ranked: Vec<RankedUser> = users
            .into_iter()
            .filter_map(|u| {
                let relevant: Vec<u32> = target
                    .events
                    .iter()
                    .filter(|e| e.user == u && e.label >= plan.relevant)
                    .map(|e| e.item)
                    .collect();
                if relevant.is_empty() {
                    return None;
                }
                let mut all: Vec<(f32, u32)> = (0..catalogue as u32)
                    .filter(|i| !target.excluded.get(u).contains(i))
                    .map(|i| (raw_mean(head, rows, u, i), i))
                    .collect();
                all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let items: Vec<u32> = all.iter().map(|x| x.1).collect();
                let mut distinct = relevant.clone();
                distinct.sort_unstable();
                distinct.dedup();
                Some(RankedUser {
                    hits: items.iter().map(|i| distinct.contains(i)).collect(),
                    items,
                    relevant: distinct.len(),
                })
            })
            .collect();
        ranking_metrics(&plan.metrics, &ranked, catalogue)
    }

    #[test]
    fn fast_full_ranking_equals_a_naive_full_sort_metric_by_metric() {
        let (n_users, n_items) = (40, 300);
        let (head, rows) = model(n_users, n_items);
        let mut events = Vec::new();
        let mut labelled = Vec::new();
        for u in 0..n_users as u32 {
            for j in 0..12u32 {
                let item = (u * 37 + j * 11) % n_items as u32;
                let e = event(u, item, 1.0 + (j % 5) as f32);
                if j < 8 { &mut labelled } else { &mut events }.push(e);
            }
        }
        let excluded = ItemsPerUser::of(&labelled);
        let user_events = excluded.union(&ItemsPerUser::of(&events));
        let metrics: Vec<Metric> = [
            "ndcg@10",
            "recall@10",
            "precision@5",
            "hit@10",
            "mrr@10",
            "map@10",
            "coverage@10",
            "gini@10",
            "ndcg@300",
        ]
        .iter()
        .map(|m| Metric::parse(m).unwrap())
        .collect();
        let plan = EvaluatePlan {
            node: "report".into(),
            model: "model".into(),
            prefix: String::new(),
            metrics,
            relevant: 4.0,
            candidates: CandidateSet::All,
        };
        let target = EvalTarget {
            events: &events,
            excluded: &excluded,
            user_events: &user_events,
            prefix: "",
            predictions: None,
        };
        let view = ModelView::new(&head, &rows);
        let fast: Vec<f64> = evaluate(&view, &plan, &target, 1)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let naive = naive_metrics(&head, &rows, &plan, &target, n_items);
        for ((metric, f), n) in plan.metrics.iter().zip(&fast).zip(&naive) {
            assert!((f - n).abs() < 1e-9, "{metric}: fast {f}, naive {n}");
        }
        assert!(fast[0] > 0.0, "some relevant item is ranked");
    }

    #[test]
    fn excluded_items_are_never_recommended_and_scores_are_the_raw_mean() {
        let (head, rows) = model(3, 50);
        let excluded = ItemsPerUser::of(&[event(0, 7, 5.0), event(0, 8, 5.0)]);
        let view = ModelView::new(&head, &rows);
        let lists = view.top_k(&[0, 2], 50, &excluded);
        assert_eq!(lists[0].len(), 48);
        assert!(lists[0].iter().all(|r| r.item != 7 && r.item != 8));
        assert_eq!(lists[1].len(), 50);
        for r in &lists[1] {
            assert!((r.score - raw_mean(&head, &rows, 2, r.item)).abs() < 1e-5);
        }
    }

    #[test]
    fn metric_names_carry_their_candidate_set_and_prefix() {
        let (head, rows) = model(2, 20);
        let events = [event(0, 1, 5.0), event(1, 2, 4.0)];
        let none = ItemsPerUser::default();
        let view = ModelView::new(&head, &rows);
        let target = EvalTarget {
            events: &events,
            excluded: &none,
            user_events: &ItemsPerUser::of(&events),
            prefix: "val_",
            predictions: None,
        };
        for (candidates, expected) in [
            (CandidateSet::All, "val_ndcg@5"),
            (CandidateSet::TestItems, "val_ndcg@5[test_items]"),
            (
                CandidateSet::Sampled { negatives: 3 },
                "val_ndcg@5[sampled=3]",
            ),
        ] {
            let plan = EvaluatePlan {
                node: "report".into(),
                model: "model".into(),
                prefix: String::new(),
                metrics: vec![Metric::Rmse, Metric::Ndcg(5)],
                relevant: 4.0,
                candidates,
            };
            let names: Vec<String> = evaluate(&view, &plan, &target, 0)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(names, vec!["val_rmse".to_string(), expected.to_string()]);
        }
    }

    #[test]
    fn sampled_negatives_are_seeded_distinct_and_avoid_the_users_items() {
        let avoid = [1, 4, 9];
        let a = sample_negatives(3, 5, 20, &avoid, 11);
        assert_eq!(a, sample_negatives(3, 5, 20, &avoid, 11));
        assert_ne!(a, sample_negatives(3, 5, 20, &avoid, 12));
        let mut distinct = a.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5);
        assert!(a.iter().all(|i| !avoid.contains(i) && *i < 20));
        // More than half the free items: the scan path, capped at what exists.
        let all = sample_negatives(3, 100, 20, &avoid, 11);
        assert_eq!(all.len(), 17);
    }
}
