//! What every protocol shares: the model, the incremental engine that keeps every pool
//! sample's score current, the driver's copy of the scoring rows, and the strategy's
//! ranking of the pool, fed by the engine's score changes.
//!
//! A protocol decides which samples enter and leave the pool and what to train on; it hands
//! those changes and the trainer's [`FitReport`] to [`Session::publish`], which exports the
//! changed rows, runs one engine round and applies the score changes to the ranking.
//!
//! The engine renders the plan's score node (and, for a select node that ranks by them,
//! the item statistics: [`engine_graph`]) where the select node reads its scores or the item
//! statistics. Where no select node does (a pool without rounds, a replay on free labels
//! alone, a `random` or `coreset` strategy, whose keys are functions of the sample), nothing
//! is rendered and the pool is not scored: the strategy ranks the pool by its changes alone,
//! and the rows are still published, for evaluation.

use std::collections::{BTreeMap, HashMap};

use crate::data::{Interaction, ItemEmbeddings, ItemIdx, SampleIdx, UserIdx};
use crate::dataflow::{
    EngineGraph, EngineSite, EngineUpdate, PoolSample, RoundOutput, ScoreUpdate, ScoringEngine,
};
use crate::metrics::latency::LatencyRecorder;
use crate::model::{FitReport, ModelSet, Recommender};
use crate::plan::{DiversityPlan, DiversitySpace, Plan};
use crate::scoring::{PerSampleScore, ScoringHead};
use crate::strategy::diverse::{Candidate, TextCoverage, pick_by_factors};
use crate::strategy::{RankedPool, SampleSignals, Strategy, popularity_stratum};

use super::RunError;
use super::evaluation::ItemsPerUser;
use super::rows::RowMirror;

/// Changes a protocol makes to the pool in one engine round.
#[derive(Debug, Default)]
pub struct PoolChanges<'a> {
    /// Samples entering the pool.
    pub insert: Vec<PoolSample>,
    /// Samples leaving the pool, exactly as inserted.
    pub remove: Vec<PoolSample>,
    /// Events whose labels became known (for item statistics).
    pub labelled: &'a [Interaction],
    /// What the trainer changed, if it ran.
    pub fit: Option<&'a FitReport>,
}

/// The model, the engine and the ranking of one experiment.
pub struct Session {
    head: ScoringHead,
    model: ModelSet,
    scoring: Scoring,
    rows: RowMirror,
    published: (usize, usize),
    ranked: RankedPool,
    strategy: Option<Strategy>,
    /// Whether the budget is spent per user (groups are users) rather than overall.
    per_user: bool,
    seed: u64,
    tracked: Option<HashMap<SampleIdx, PerSampleScore>>,
    /// Items whose text vector changed since the last publish (their rows change).
    text_changed: Vec<ItemIdx>,
    diversity: Option<Diversity>,
    /// Every item each user has a known label for (what evaluation must not recommend).
    labelled_items: ItemsPerUser,
    /// Per-operator latencies of the run.
    pub latency: LatencyRecorder,
}

/// How a session keeps the pool's scores.
enum Scoring {
    /// A select node reads them (or the item statistics): the engine maintains them.
    Engine(Box<ScoringEngine>),
    /// No node reads them: nothing is rendered, and the site's workers only wait to be
    /// shut down.
    Unread(EngineSite),
}

/// The graph `plan`'s engine renders ([`Plan::engine_nodes`]), if it renders one.
pub fn engine_graph(plan: &Plan) -> Option<EngineGraph> {
    let nodes = plan.engine_nodes()?;
    Some(EngineGraph {
        score: nodes.score.node.clone(),
        model: nodes.score.model.clone(),
        item_statistics_for: nodes.item_statistics_for.map(|select| select.node.clone()),
    })
}

/// What the diversity strategies keep between rounds.
struct Diversity {
    plan: DiversityPlan,
    /// `(user, item)` of every ranked sample.
    pairs: HashMap<SampleIdx, (UserIdx, ItemIdx)>,
    /// Every labelled `(user, item)`, in the order labelled (factor space centers).
    labelled: Vec<(UserIdx, ItemIdx)>,
    /// Text space: the item coverage and the vectors it reads.
    text: Option<(TextCoverage, ItemEmbeddings)>,
}

impl Session {
    /// Starts the session of `plan` with `head` on `site`'s workers: the engine renders the
    /// plan's score node if its select node reads the scores ([`engine_graph`]), and the
    /// select node decides the ranking key. `text` holds the item text vectors, if the
    /// pipeline embeds; `track_scores` keeps every maintained score (for reference checks;
    /// costs memory on large pools).
    pub fn start(
        plan: &Plan,
        (model, head): (ModelSet, ScoringHead),
        site: EngineSite,
        text: Option<&ItemEmbeddings>,
        track_scores: bool,
    ) -> Result<Self, RunError> {
        let select = plan.protocol.select();
        let seed = plan.seed;
        let scoring = match engine_graph(plan) {
            Some(graph) => Scoring::Engine(Box::new(ScoringEngine::start_on(
                site,
                head.clone(),
                graph,
            )?)),
            None => Scoring::Unread(site),
        };
        let tracked = (track_scores && matches!(scoring, Scoring::Engine(_))).then(HashMap::new);
        let rows = RowMirror::new(head.layout.row_len(), Vec::new(), Vec::new());
        Ok(Self {
            head,
            model,
            scoring,
            rows,
            published: (0, 0),
            ranked: RankedPool::new(
                seed,
                select.is_some_and(|s| s.per_user || s.strategy == Strategy::Stratified),
            ),
            per_user: select.is_some_and(|s| s.per_user),
            strategy: select.map(|s| s.strategy),
            seed,
            tracked,
            text_changed: Vec::new(),
            diversity: select.and_then(|s| s.diversity).map(|plan| Diversity {
                plan,
                pairs: HashMap::new(),
                labelled: Vec::new(),
                text: match (plan.space, text) {
                    (DiversitySpace::Text, Some(text)) => {
                        Some((TextCoverage::new(text), text.clone()))
                    }
                    _ => None,
                },
            }),
            labelled_items: ItemsPerUser::default(),
            latency: LatencyRecorder::new(),
        })
    }

    /// Hands the model new item text vectors (`changed`: the items whose vector is new);
    /// their rows are published with the next [`Session::publish`].
    pub fn set_item_text(
        &mut self,
        text: &ItemEmbeddings,
        changed: &[ItemIdx],
    ) -> Result<(), RunError> {
        if changed.is_empty() {
            return Ok(());
        }
        self.model.set_item_embeddings(text)?;
        self.text_changed.extend_from_slice(changed);
        if let Some((coverage, vectors)) = self.diversity.as_mut().and_then(|d| d.text.as_mut()) {
            *vectors = text.clone();
            coverage.track_new(vectors);
        }
        Ok(())
    }

    /// The models.
    pub fn model(&self) -> &ModelSet {
        &self.model
    }

    /// The models, for training.
    pub fn model_mut(&mut self) -> &mut ModelSet {
        &mut self.model
    }

    /// The scoring head (layout, offsets, clipping).
    pub fn head(&self) -> &ScoringHead {
        &self.head
    }

    /// Grows the model to hold `n_users` x `n_items`; the new rows are published with the
    /// next [`Session::publish`].
    pub fn grow(&mut self, n_users: usize, n_items: usize) -> Result<(), RunError> {
        let (users, items) = self.model.shape();
        if n_users > users || n_items > items {
            self.model.grow(n_users.max(users), n_items.max(items))?;
        }
        Ok(())
    }

    /// Runs one engine round with `changes`: publishes rows of users and items that are new
    /// or that the trainer changed, and applies the score changes to the ranking.
    pub fn publish(&mut self, changes: PoolChanges<'_>) -> Result<RoundOutput, RunError> {
        if changes.fit.is_some() {
            crate::failpoint::reached("round");
        }
        let (n_users, n_items) = self.model.shape();
        let (old_users, old_items) = self.published;
        let mut users: Vec<UserIdx> = (old_users as u32..n_users as u32).collect();
        let mut items: Vec<ItemIdx> = (old_items as u32..n_items as u32).collect();
        let mut head = None;
        items.extend(
            self.text_changed
                .drain(..)
                .filter(|&i| (i as usize) < old_items),
        );
        self.labelled_items.add(changes.labelled);
        if let Some(diversity) = &mut self.diversity {
            diversity
                .labelled
                .extend(changes.labelled.iter().map(|e| (e.user, e.item)));
            if let Some((coverage, text)) = &mut diversity.text {
                coverage.label(changes.labelled.iter().map(|e| e.item), text);
            }
        }
        if let Some(fit) = changes.fit {
            users.extend(
                fit.changed_users
                    .iter()
                    .filter(|&&u| (u as usize) < old_users),
            );
            items.extend(
                fit.changed_items
                    .iter()
                    .filter(|&&i| (i as usize) < old_items),
            );
            if fit.shared_changed {
                head = Some(self.model.head());
            }
        }
        users.sort_unstable();
        items.sort_unstable();
        items.dedup();
        let user_rows = self.model.user_rows(&users)?;
        let item_rows = self.model.item_rows(&items)?;
        self.rows.set_users(&users, &user_rows);
        self.rows.set_items(&items, &item_rows);
        self.published = (n_users, n_items);
        let head_changed = head.is_some();
        if let Some(new_head) = head {
            self.head = ScoringHead {
                clip: self.head.clip,
                ..new_head
            };
        }
        let Scoring::Engine(engine) = &mut self.scoring else {
            self.rank_pool_changes(&changes.remove, &changes.insert);
            return Ok(RoundOutput::default());
        };
        let update = EngineUpdate {
            insert: changes.insert,
            remove: changes.remove,
            user_rows: self.rows.user_entries(&users),
            item_rows: self.rows.item_entries(&items),
            labels: if engine.graph().item_statistics_for.is_some() {
                changes.labelled.iter().map(|e| (e.item, e.label)).collect()
            } else {
                Vec::new()
            },
            head: head_changed.then(|| self.head.clone()),
        };
        let output = engine.apply(update)?;
        self.apply_scores(&output.updates);
        Ok(output)
    }

    /// Applies the round's state changes to the ranking (and the tracked scores).
    fn apply_scores(&mut self, updates: &[ScoreUpdate]) {
        for u in updates {
            let Some(state) = &u.state else {
                if let Some(tracked) = &mut self.tracked {
                    tracked.remove(&u.sample);
                }
                self.unrank(u.sample);
                continue;
            };
            if let Some(tracked) = &mut self.tracked {
                tracked.insert(u.sample, state.score);
            }
            let signals = SampleSignals {
                sample: u.sample,
                prediction: state.score.prediction,
                variance: state.score.variance,
                loss: state.score.loss,
                item_labels: state.item_labels,
                item_entropy: state.item_entropy,
            };
            self.rank(&signals, state.user, state.item);
        }
    }

    /// Ranks the pool by its changes alone, where the engine renders nothing: the strategy
    /// (if there is one) reads neither scores nor item statistics, so a sample's key is
    /// set once, as it enters the pool.
    fn rank_pool_changes(&mut self, remove: &[PoolSample], insert: &[PoolSample]) {
        for sample in remove {
            self.unrank(sample.sample);
        }
        for sample in insert {
            let signals = SampleSignals::unscored(sample.sample);
            self.rank(&signals, sample.user, sample.item);
        }
    }

    /// Ranks a sample of `user` and `item` with `signals` by the strategy's key, if there is
    /// a strategy.
    fn rank(&mut self, signals: &SampleSignals, user: UserIdx, item: ItemIdx) {
        let Some(strategy) = self.strategy else {
            return;
        };
        if let Some(diversity) = &mut self.diversity {
            diversity.pairs.insert(signals.sample, (user, item));
        }
        // Groups are users for per-user budgets, popularity strata when stratified.
        let group = if self.per_user {
            user
        } else {
            popularity_stratum(signals.item_labels)
        };
        self.ranked
            .upsert(signals.sample, group, strategy.key(signals, self.seed));
    }

    /// Takes `sample` out of the ranking.
    fn unrank(&mut self, sample: SampleIdx) {
        if let Some(diversity) = &mut self.diversity {
            diversity.pairs.remove(&sample);
        }
        self.ranked.remove(sample);
    }

    /// The samples the strategy picks now: the `budget` best overall, per user, or spread
    /// evenly over popularity strata.
    pub fn pick(&mut self, budget: u64) -> Vec<(SampleIdx, f64)> {
        if self.diversity.is_some() {
            return self.pick_diverse(budget as usize);
        }
        if self.per_user {
            self.ranked.top_per_group(budget as usize)
        } else if self.strategy == Some(Strategy::Stratified) {
            self.ranked.top_balanced(budget as usize)
        } else {
            self.ranked.top(budget as usize)
        }
    }

    /// The diversity strategies' batch: k-center among the top candidates of the ranking.
    fn pick_diverse(&mut self, budget: usize) -> Vec<(SampleIdx, f64)> {
        let Some(diversity) = &self.diversity else {
            return Vec::new();
        };
        let top = self.ranked.top(diversity.plan.candidates);
        let candidates: Vec<Candidate> = top
            .into_iter()
            .map(|(sample, key)| {
                let (user, item) = diversity.pairs[&sample];
                Candidate {
                    sample,
                    user,
                    item,
                    key,
                }
            })
            .collect();
        let picked = match &diversity.text {
            Some((coverage, _)) => coverage.pick(&candidates, budget),
            None => pick_by_factors(
                &candidates,
                &diversity.labelled,
                |user, item| [self.rows.user(user), self.rows.item(item)].concat(),
                budget,
                self.seed,
            ),
        };
        picked.into_iter().map(|c| (c.sample, c.key)).collect()
    }

    /// The experiment's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The published scoring rows (what evaluation reads).
    pub fn rows(&self) -> &RowMirror {
        &self.rows
    }

    /// Every item each user has a known label for.
    pub fn labelled_items(&self) -> &ItemsPerUser {
        &self.labelled_items
    }

    /// The engine-maintained score of every pool sample (when tracking was asked for and a
    /// select node reads the scores).
    pub fn maintained_scores(&self) -> Option<BTreeMap<SampleIdx, PerSampleScore>> {
        self.tracked
            .as_ref()
            .map(|t| t.iter().map(|(k, v)| (*k, *v)).collect())
    }

    /// Scores `pool` from scratch with rows freshly exported from the model: the reference
    /// the maintained scores must equal.
    pub fn scores_from_scratch(
        &self,
        pool: impl Iterator<Item = PoolSample>,
    ) -> Result<BTreeMap<SampleIdx, PerSampleScore>, RunError> {
        let (n_users, n_items) = self.model.shape();
        let users: Vec<u32> = (0..n_users as u32).collect();
        let items: Vec<u32> = (0..n_items as u32).collect();
        let fresh = RowMirror::new(
            self.head.layout.row_len(),
            self.model.user_rows(&users)?,
            self.model.item_rows(&items)?,
        );
        Ok(pool
            .map(|s| {
                (
                    s.sample,
                    self.head
                        .score(fresh.user(s.user), fresh.item(s.item), s.label),
                )
            })
            .collect())
    }

    /// Stops the engine (or the idle workers, where nothing was scored).
    pub fn finish(self) -> Result<LatencyRecorder, RunError> {
        match self.scoring {
            Scoring::Engine(engine) => engine.finish()?,
            Scoring::Unread(site) => site.shut_down()?,
        }
        Ok(self.latency)
    }
}
