//! Test helpers shared by the models' tests: parameters, and synthetic rating data whose item
//! text vectors encode each item's latent bias and factors (so text is informative, as a
//! sentence embedding of a title and genres is about a film).
//!
//! Ratings follow `3.5 + β_u + c_i + 0.8 <a_u, z_i> / sqrt(k) + noise`, with user and item
//! factors `a_u, z_i ~ N(0, I_k)`, biases `β_u ~ N(0, 0.3²)`, `c_i ~ N(0, 0.5²)`. An item's
//! text vector is a fixed random linear map of `[c_i, z_i]` plus noise, scaled to norm ~1.
//!
//! Implicit feedback ([`ImplicitSplit`]) comes from the same latent model: a user's events
//! are the items of highest noisy affinity (the rating formula), so which items a user met
//! carries the preference signal that BPR learns.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BiasedMf, Recommender, TextMf};
use crate::data::{Interaction, ItemEmbeddings, LabelKind};
use crate::plan::params::{
    DeviceChoice, ModelKind, OptimizerParams, RefitPolicy, TrainParams, UncertaintyParams,
};
use crate::scoring::Loss;

/// MF parameters with `members` ensemble members (tests replace `model` as they need).
pub fn params(
    members: usize,
    optimizer: OptimizerParams,
    batch_size: usize,
    seed: u64,
) -> TrainParams {
    TrainParams {
        model: ModelKind::Mf {
            dim: 4,
            init_std: 0.1,
        },
        uncertainty: UncertaintyParams::Ensemble { members },
        loss: Loss::Squared,
        optimizer,
        epochs: 1,
        epochs_per_round: 1,
        refit: RefitPolicy::AllLabels,
        batch_size,
        device: DeviceChoice::Cpu,
        seed,
    }
}

/// SGD.
pub fn sgd(lr: f64, weight_decay: f64) -> OptimizerParams {
    OptimizerParams::Sgd { lr, weight_decay }
}

/// Adam with the usual betas.
pub fn adam(lr: f64, weight_decay: f64) -> OptimizerParams {
    OptimizerParams::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay,
    }
}

/// A rating event.
pub fn sample(user: u32, item: u32, label: f32) -> Interaction {
    Interaction {
        user,
        item,
        label,
        time: 0,
    }
}

/// Keys `0..n`.
pub fn keys(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

/// Every user row and every item row of a model.
pub fn all_rows(model: &dyn Recommender) -> (Vec<f32>, Vec<f32>) {
    let (nu, ni) = model.shape();
    (
        model.user_rows(&keys(nu)).unwrap(),
        model.item_rows(&keys(ni)).unwrap(),
    )
}

/// RMSE of the model's scoring head (unclipped) on `test`, from exported rows.
pub fn rmse_on(model: &dyn Recommender, test: &[Interaction]) -> f64 {
    let head = model.head();
    let (u, i) = all_rows(model);
    let row = head.layout.row_len();
    let sum: f64 = test
        .iter()
        .map(|s| {
            let (ur, ir) = (s.user as usize * row, s.item as usize * row);
            let p = head
                .score(&u[ur..ur + row], &i[ir..ir + row], None)
                .prediction;
            (f64::from(p) - f64::from(s.label)).powi(2)
        })
        .sum();
    (sum / test.len() as f64).sqrt()
}

/// Checks [`Recommender::duplicate`] on a trained `model`: copies start with its rows; a
/// copy and the original, each trained one more epoch on `samples` (keys `0..n`), report
/// the same and end with bit-identical rows; training either leaves the other alone, and a
/// copy nobody trains keeps the rows of the moment it was made.
pub fn check_duplicate(model: &mut dyn Recommender, samples: &[Interaction]) {
    let kind = model.kind();
    let keys = keys(samples.len());
    let before = all_rows(model);
    let mut twin = model.duplicate().unwrap();
    let untrained = model.duplicate().unwrap();
    assert_eq!(
        all_rows(&*twin),
        before,
        "{kind}: a copy starts with the rows"
    );

    let twin_report = twin.fit(samples, &keys, 1).unwrap();
    assert_ne!(all_rows(&*twin), before, "{kind}: the epoch moved the rows");
    assert_eq!(
        all_rows(model),
        before,
        "{kind}: training a copy moved the original"
    );

    let report = model.fit(samples, &keys, 1).unwrap();
    assert_eq!(
        report, twin_report,
        "{kind}: the same epoch, reported differently"
    );
    let after = all_rows(model);
    assert_eq!(
        all_rows(&*twin),
        after,
        "{kind}: the same epoch, other rows"
    );
    assert_eq!(
        all_rows(&*untrained),
        before,
        "{kind}: training moved a copy"
    );
}

/// Size of a synthetic catalogue.
#[derive(Clone, Copy, Debug)]
pub struct CatalogueSpec {
    /// Users.
    pub users: usize,
    /// Items.
    pub items: usize,
    /// Ratings per user (distinct items, uniformly drawn).
    pub per_user: usize,
    /// Latent factors.
    pub latent: usize,
    /// Text vector length.
    pub text_dim: usize,
    /// Standard deviation of the rating noise.
    pub noise: f64,
}

impl CatalogueSpec {
    /// A few hundred ratings: unit tests of mechanics.
    pub fn small() -> Self {
        Self {
            users: 30,
            items: 40,
            per_user: 12,
            latent: 3,
            text_dim: 16,
            noise: 0.3,
        }
    }

    /// 24,000 ratings: quality checks.
    pub fn medium() -> Self {
        Self {
            users: 400,
            items: 600,
            per_user: 60,
            latent: 4,
            text_dim: 48,
            noise: 0.3,
        }
    }
}

/// Synthetic ratings and text vectors.
pub struct Synthetic {
    /// The ratings, user-major.
    pub ratings: Vec<Interaction>,
    /// One informative text vector per item.
    pub text: ItemEmbeddings,
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random();
    let u2: f64 = rng.random();
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The latent factors and biases of a catalogue.
struct Latent {
    k: usize,
    user_factors: Vec<f64>,
    user_bias: Vec<f64>,
    item_factors: Vec<f64>,
    item_bias: Vec<f64>,
}

impl Latent {
    fn draw(spec: CatalogueSpec, rng: &mut StdRng) -> Self {
        let k = spec.latent;
        let user_factors: Vec<f64> = (0..spec.users * k).map(|_| normal(rng)).collect();
        let user_bias: Vec<f64> = (0..spec.users).map(|_| 0.3 * normal(rng)).collect();
        let item_factors: Vec<f64> = (0..spec.items * k).map(|_| normal(rng)).collect();
        let item_bias: Vec<f64> = (0..spec.items).map(|_| 0.5 * normal(rng)).collect();
        Self {
            k,
            user_factors,
            user_bias,
            item_factors,
            item_bias,
        }
    }

    /// The noiseless rating of item `i` by user `u`.
    fn rating(&self, u: usize, i: usize) -> f64 {
        let k = self.k;
        let dot: f64 = (0..k)
            .map(|j| self.user_factors[u * k + j] * self.item_factors[i * k + j])
            .sum();
        3.5 + self.user_bias[u] + self.item_bias[i] + 0.8 * dot / (k as f64).sqrt()
    }

    /// Text: a fixed random map of [c_i / 0.5, z_i] plus noise, scaled to norm ~1.
    fn text(&self, spec: CatalogueSpec, rng: &mut StdRng) -> ItemEmbeddings {
        let k = self.k;
        let inputs = k + 1;
        let map: Vec<f64> = (0..spec.text_dim * inputs).map(|_| normal(rng)).collect();
        let scale = 1.0 / ((spec.text_dim * inputs) as f64).sqrt();
        let mut vectors = Vec::with_capacity(spec.items * spec.text_dim);
        for i in 0..spec.items {
            let latent: Vec<f64> = std::iter::once(self.item_bias[i] / 0.5)
                .chain((0..k).map(|j| self.item_factors[i * k + j]))
                .collect();
            for t in 0..spec.text_dim {
                let signal: f64 = (0..inputs).map(|j| map[t * inputs + j] * latent[j]).sum();
                vectors.push(((signal + 0.3 * normal(rng)) * scale) as f32);
            }
        }
        ItemEmbeddings {
            dim: spec.text_dim,
            vectors,
            present: vec![true; spec.items],
        }
    }
}

impl Synthetic {
    /// A catalogue drawn from `seed`.
    pub fn new(spec: CatalogueSpec, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let latent = Latent::draw(spec, &mut rng);
        let mut ratings = Vec::with_capacity(spec.users * spec.per_user);
        for u in 0..spec.users {
            let mut seen = vec![false; spec.items];
            let mut drawn = 0;
            while drawn < spec.per_user.min(spec.items) {
                let i = rng.random_range(0..spec.items);
                if std::mem::replace(&mut seen[i], true) {
                    continue;
                }
                drawn += 1;
                let label = latent.rating(u, i) + spec.noise * normal(&mut rng);
                ratings.push(Interaction {
                    user: u as u32,
                    item: i as u32,
                    label: label as f32,
                    time: 0,
                });
            }
        }
        let text = latent.text(spec, &mut rng);
        Self { ratings, text }
    }
}

/// Implicit feedback from a synthetic catalogue: each user met the `per_user` items of
/// highest noisy affinity (labelled with that affinity, a rating the model must read as a
/// mere event); a fifth of each user's events are held out.
pub struct ImplicitSplit {
    /// The catalogue's size.
    pub spec: CatalogueSpec,
    /// One informative text vector per item.
    pub text: ItemEmbeddings,
    /// The events to train on.
    pub train: Vec<Interaction>,
    /// Held-out events: positives the model never saw.
    pub held_out: Vec<Interaction>,
}

impl ImplicitSplit {
    /// The split of a catalogue drawn from `seed`.
    pub fn new(spec: CatalogueSpec, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let latent = Latent::draw(spec, &mut rng);
        let (mut train, mut held_out) = (Vec::new(), Vec::new());
        for u in 0..spec.users {
            let mut affinity: Vec<(f64, usize)> = (0..spec.items)
                .map(|i| (latent.rating(u, i) + spec.noise * normal(&mut rng), i))
                .collect();
            affinity.sort_by(|a, b| b.0.total_cmp(&a.0));
            for &(label, i) in &affinity[..spec.per_user] {
                let event = Interaction {
                    user: u as u32,
                    item: i as u32,
                    label: label as f32,
                    time: 0,
                };
                if i % 5 == u % 5 {
                    held_out.push(event);
                } else {
                    train.push(event);
                }
            }
        }
        let text = latent.text(spec, &mut rng);
        Self {
            spec,
            text,
            train,
            held_out,
        }
    }

    /// 4,000 events: BPR quality checks.
    pub fn spec() -> CatalogueSpec {
        CatalogueSpec {
            users: 160,
            items: 200,
            per_user: 25,
            latent: 3,
            text_dim: 16,
            noise: 0.3,
        }
    }

    /// The probability that the model's head scores a user's held-out positive above an
    /// item the user never met (ties count half), over every such pair.
    pub fn held_out_auc(&self, model: &dyn Recommender) -> f64 {
        let head = model.head();
        let (u, i) = all_rows(model);
        let row = head.layout.row_len();
        let score = |user: u32, item: u32| {
            let (ur, ir) = (user as usize * row, item as usize * row);
            head.score(&u[ur..ur + row], &i[ir..ir + row], None)
                .prediction
        };
        let met: HashSet<(u32, u32)> = self
            .train
            .iter()
            .chain(&self.held_out)
            .map(|e| (e.user, e.item))
            .collect();
        let (mut above, mut pairs) = (0.0, 0usize);
        for e in &self.held_out {
            let positive = score(e.user, e.item);
            for j in 0..self.spec.items as u32 {
                if met.contains(&(e.user, j)) {
                    continue;
                }
                let negative = score(e.user, j);
                above += match positive.total_cmp(&negative) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
                pairs += 1;
            }
        }
        above / pairs as f64
    }

    /// Trains `model` for one epoch and then `epochs` more in a second call, checks that the
    /// loss fell and that the head ranks held-out positives above unmet items (AUC above
    /// `min_auc`); returns the AUC.
    pub fn check_bpr_training(
        &self,
        model: &mut dyn Recommender,
        epochs: usize,
        min_auc: f64,
    ) -> f64 {
        let keys = keys(self.train.len());
        let untrained = self.held_out_auc(model);
        let first = model.fit(&self.train, &keys, 1).unwrap();
        let last = model.fit(&self.train, &keys, epochs).unwrap();
        assert!(
            last.last_epoch_loss < 0.8 * first.last_epoch_loss,
            "{}: BPR loss {} -> {}",
            model.kind(),
            first.last_epoch_loss,
            last.last_epoch_loss
        );
        let auc = self.held_out_auc(model);
        assert!(
            auc > min_auc,
            "{}: held-out AUC {auc:.3} (untrained {untrained:.3})",
            model.kind()
        );
        auc
    }
}

/// A synthetic catalogue split for cold start: the last fifth of the items are never
/// trained on; their ratings are the cold test set.
pub struct ExperimentSplit {
    /// The catalogue's size.
    pub spec: CatalogueSpec,
    /// The data.
    pub data: Synthetic,
    /// Ratings of warm items.
    pub train: Vec<Interaction>,
    /// Ratings of cold items.
    pub cold: Vec<Interaction>,
    /// Mean training label.
    pub mean: f32,
}

impl ExperimentSplit {
    /// The split of a catalogue drawn from `seed`.
    pub fn new(spec: CatalogueSpec, seed: u64) -> Self {
        let data = Synthetic::new(spec, seed);
        let first_cold = (spec.items - spec.items / 5) as u32;
        let (cold, train): (Vec<Interaction>, Vec<Interaction>) =
            data.ratings.iter().partition(|s| s.item >= first_cold);
        let mean = train.iter().map(|s| f64::from(s.label)).sum::<f64>() / train.len() as f64;
        Self {
            spec,
            data,
            train,
            cold,
            mean: mean as f32,
        }
    }

    /// Trains `model` on the warm ratings for `epochs` and returns its cold-item RMSE.
    pub fn cold_rmse(&self, model: &mut dyn Recommender, epochs: usize) -> f64 {
        model
            .fit(&self.train, &keys(self.train.len()), epochs)
            .unwrap();
        rmse_on(model, &self.cold)
    }

    /// Cold-item RMSE of MF and of text MF with the same optimiser and shape.
    pub fn cold_rmse_mf_and_text_mf(&self, members: usize) -> (f64, f64) {
        let base = params(members, sgd(0.02, 0.05), 256, 3);
        let mf = TrainParams {
            model: ModelKind::Mf {
                dim: 8,
                init_std: 0.1,
            },
            ..base.clone()
        };
        let text_mf = TrainParams {
            model: ModelKind::TextMf {
                dim: 8,
                init_std: 0.1,
                tune: None,
            },
            ..base
        };
        let (n_users, n_items) = (self.spec.users, self.spec.items);
        let mut a = BiasedMf::new(&mf, n_users, n_items, self.mean, LabelKind::Rating).unwrap();
        let mut b = TextMf::new(
            &text_mf,
            n_users,
            n_items,
            self.mean,
            LabelKind::Rating,
            &self.data.text,
        )
        .unwrap();
        (self.cold_rmse(&mut a, 30), self.cold_rmse(&mut b, 30))
    }
}
