//! Test helpers shared by the models' tests: parameters, and synthetic rating data whose item
//! text vectors encode each item's latent bias and factors (so text is informative, as a
//! sentence embedding of a title and genres is about a film).
//!
//! Ratings follow `3.5 + β_u + c_i + 0.8 <a_u, z_i> / sqrt(k) + noise`, with user and item
//! factors `a_u, z_i ~ N(0, I_k)`, biases `β_u ~ N(0, 0.3²)`, `c_i ~ N(0, 0.5²)`. An item's
//! text vector is a fixed random linear map of `[c_i, z_i]` plus noise, scaled to norm ~1.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BiasedMf, Recommender, TextMf};
use crate::data::{Interaction, ItemEmbeddings, LabelKind};
use crate::plan::params::{
    DeviceChoice, ModelKind, OptimizerParams, RefitPolicy, TrainParams, UncertaintyParams,
};

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

impl Synthetic {
    /// A catalogue drawn from `seed`.
    pub fn new(spec: CatalogueSpec, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let k = spec.latent;
        let user_factors: Vec<f64> = (0..spec.users * k).map(|_| normal(&mut rng)).collect();
        let user_bias: Vec<f64> = (0..spec.users).map(|_| 0.3 * normal(&mut rng)).collect();
        let item_factors: Vec<f64> = (0..spec.items * k).map(|_| normal(&mut rng)).collect();
        let item_bias: Vec<f64> = (0..spec.items).map(|_| 0.5 * normal(&mut rng)).collect();
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
                let dot: f64 = (0..k)
                    .map(|j| user_factors[u * k + j] * item_factors[i * k + j])
                    .sum();
                let label = 3.5
                    + user_bias[u]
                    + item_bias[i]
                    + 0.8 * dot / (k as f64).sqrt()
                    + spec.noise * normal(&mut rng);
                ratings.push(Interaction {
                    user: u as u32,
                    item: i as u32,
                    label: label as f32,
                    time: 0,
                });
            }
        }
        // Text: a fixed random map of [c_i / 0.5, z_i] plus noise, scaled to norm ~1.
        let inputs = k + 1;
        let map: Vec<f64> = (0..spec.text_dim * inputs)
            .map(|_| normal(&mut rng))
            .collect();
        let scale = 1.0 / ((spec.text_dim * inputs) as f64).sqrt();
        let mut vectors = Vec::with_capacity(spec.items * spec.text_dim);
        for i in 0..spec.items {
            let latent: Vec<f64> = std::iter::once(item_bias[i] / 0.5)
                .chain((0..k).map(|j| item_factors[i * k + j]))
                .collect();
            for t in 0..spec.text_dim {
                let signal: f64 = (0..inputs).map(|j| map[t * inputs + j] * latent[j]).sum();
                vectors.push(((signal + 0.3 * normal(&mut rng)) * scale) as f32);
            }
        }
        Self {
            ratings,
            text: ItemEmbeddings {
                dim: spec.text_dim,
                vectors,
                present: vec![true; spec.items],
            },
        }
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
