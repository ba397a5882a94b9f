//! Tests of text MF: a step against a dense f64 reference, the row layout, cold rows equal
//! to the projection, growth with new text, errors, and the cold-start quality against MF
//! on synthetic data whose text encodes the items' latent factors; BPR on implicit events.
use super::*;
use crate::model::bootstrap::bootstrap_weights;
use crate::model::synthetic::{
    CatalogueSpec, ExperimentSplit, ImplicitSplit, Synthetic, adam, all_rows, check_duplicate,
    keys, params, rmse_on, sample, sgd,
};
use crate::model::{BiasedMf, build_recommender};
use crate::plan::params::{OptimizerParams, UncertaintyParams};

fn text_mf_params(
    dim: usize,
    members: usize,
    optimizer: OptimizerParams,
    seed: u64,
) -> TrainParams {
    TrainParams {
        model: ModelKind::TextMf {
            dim,
            init_std: 0.1,
            tune: None,
        },
        ..params(members, optimizer, 64, seed)
    }
}

/// Text vectors of `n` items, dimension `dim`, dense and deterministic.
fn text(n: usize, dim: usize) -> ItemEmbeddings {
    ItemEmbeddings {
        dim,
        vectors: (0..n * dim)
            .map(|k| ((k as f32 * 0.618).sin() * 0.5) + 0.05)
            .collect(),
        present: vec![true; n],
    }
}

/// The projection as `[text_dim, members * (1 + dim)]`, row-major.
fn projection_by_text_dim(model: &TextMf) -> Vec<f64> {
    let w = host(
        &model
            .projection
            .as_tensor()
            .t()
            .unwrap()
            .contiguous()
            .unwrap(),
    );
    assert_eq!(w.len(), model.text.dim() * model.layout.row_len());
    w
}

fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// The dense f64 reference of one full-batch step: SGD on user and free item rows, Adam's
/// step `t` on W, for the objective in the module docs.
struct Reference {
    members: usize,
    width: usize,
    text_dim: usize,
    offset: f64,
    seed: u64,
    lr: f64,
    wd: f64,
    w_lr: f64,
    users: Vec<f64>,
    items: Vec<f64>,
    /// `[text_dim, members * width]`.
    w: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
    text: Vec<f64>,
}

impl Reference {
    fn from_model(model: &TextMf, seed: u64, lr: f64, wd: f64) -> Self {
        let (nu, ni) = model.shape();
        let all_users: Vec<u32> = (0..nu as u32).collect();
        let all_items: Vec<u32> = (0..ni as u32).collect();
        let users = model.user_rows(&all_users).unwrap();
        let w = projection_by_text_dim(model);
        let index = Tensor::from_slice(&all_items, ni, &Device::Cpu).unwrap();
        Self {
            members: model.layout.members,
            width: 1 + model.layout.dim,
            text_dim: model.text.dim(),
            offset: f64::from(model.offsets[0]),
            seed,
            lr,
            wd,
            w_lr: lr * PROJECTION_LR_FACTOR,
            users: users.iter().map(|&x| f64::from(x)).collect(),
            items: host(model.items.values()),
            m: vec![0.0; w.len()],
            v: vec![0.0; w.len()],
            w,
            t: 0,
            text: host(&model.text.gather(&index).unwrap()),
        }
    }

    /// `W_m e_i`, `width` values.
    fn projected(&self, item: usize, m: usize) -> Vec<f64> {
        let cols = self.members * self.width;
        (0..self.width)
            .map(|j| {
                (0..self.text_dim)
                    .map(|t| {
                        self.text[item * self.text_dim + t] * self.w[t * cols + m * self.width + j]
                    })
                    .sum()
            })
            .collect()
    }

    fn step(&mut self, samples: &[Interaction], keys: &[u32]) {
        let (mm, w) = (self.members, self.width);
        let row = mm * w;
        let cols = row;
        let weights = bootstrap_weights(self.seed, keys, mm);
        let mut gu = vec![0.0; self.users.len()];
        let mut gi = vec![0.0; self.items.len()];
        let mut gw = vec![0.0; self.w.len()];
        for (k, s) in samples.iter().enumerate() {
            for m in 0..mm {
                let weight = f64::from(weights[k * mm + m]);
                let pu = s.user as usize * row + m * w;
                let qi = s.item as usize * row + m * w;
                let proj = self.projected(s.item as usize, m);
                let eff: Vec<f64> = (0..w).map(|j| self.items[qi + j] + proj[j]).collect();
                let user = &self.users[pu..pu + w];
                let raw = self.offset
                    + user[0]
                    + eff[0]
                    + user[1..]
                        .iter()
                        .zip(&eff[1..])
                        .map(|(u, e)| u * e)
                        .sum::<f64>();
                let g = weight * (raw - f64::from(s.label));
                // d raw / d user row = [1, eff factors]; d raw / d item row = [1, p].
                let unit_p: Vec<f64> = (0..w)
                    .map(|j| if j == 0 { 1.0 } else { self.users[pu + j] })
                    .collect();
                gu[pu] += g + self.wd * weight * self.users[pu];
                for j in 1..w {
                    gu[pu + j] += g * eff[j] + self.wd * weight * self.users[pu + j];
                }
                for j in 0..w {
                    gi[qi + j] += g * unit_p[j] + self.wd * weight * self.items[qi + j];
                    let upstream = g * unit_p[j] + self.wd * weight * proj[j];
                    for t in 0..self.text_dim {
                        gw[t * cols + m * w + j] +=
                            self.text[s.item as usize * self.text_dim + t] * upstream;
                    }
                }
            }
        }
        for (x, g) in self.users.iter_mut().zip(&gu) {
            *x -= self.lr * g;
        }
        for (x, g) in self.items.iter_mut().zip(&gi) {
            *x -= self.lr * g;
        }
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let moments = self.m.iter_mut().zip(self.v.iter_mut());
        for ((w, (m, v)), g) in self.w.iter_mut().zip(moments).zip(&gw) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let m_hat = *m / (1.0 - b1.powi(self.t));
            let v_hat = *v / (1.0 - b2.powi(self.t));
            *w -= self.w_lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (e, (&a, &x)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - x).abs() <= tol * (1.0 + x.abs()),
            "{what}[{e}]: {a} vs reference {x}"
        );
    }
}

#[test]
fn steps_match_a_dense_f64_reference() {
    let samples = vec![
        sample(0, 1, 4.0),
        sample(0, 2, 3.0),
        sample(1, 1, 5.0),
        sample(2, 0, 1.0),
        sample(0, 1, 2.0),
        sample(3, 4, 4.5),
        sample(1, 3, 2.5),
    ];
    let keys = vec![10, 11, 12, 13, 14, 15, 16];
    let (lr, wd, seed) = (0.05, 0.1, 9);
    let p = text_mf_params(3, 2, sgd(lr, wd), seed);
    let mut model = TextMf::new(&p, 5, 6, 3.0, LabelKind::Rating, &text(6, 4)).unwrap();
    let mut reference = Reference::from_model(&model, seed, lr, wd);
    assert!(bootstrap_weights(seed, &keys, 2).contains(&0.0));
    // Three full-batch steps: W is non-zero after the first, so the later steps exercise
    // the projection in the forward pass and in the user gradients.
    model.fit(&samples, &keys, 3).unwrap();
    for _ in 0..3 {
        reference.step(&samples, &keys);
    }
    let users: Vec<f64> = all_rows(&model).0.into_iter().map(f64::from).collect();
    assert_close(&users, &reference.users, 1e-5, "user rows");
    assert_close(
        &host(model.items.values()),
        &reference.items,
        1e-5,
        "free item rows",
    );
    assert_close(
        &projection_by_text_dim(&model),
        &reference.w,
        1e-5,
        "projection",
    );
    assert!(
        reference.w.iter().any(|&x| x.abs() > 1e-3),
        "the projection must move"
    );
    // Exported item rows are the free rows plus the projection.
    let items: Vec<f64> = all_rows(&model).1.into_iter().map(f64::from).collect();
    let expected: Vec<f64> = (0..6)
        .flat_map(|i| {
            let r = &reference;
            (0..r.members).flat_map(move |m| {
                let proj = r.projected(i, m);
                (0..r.width)
                    .map(move |j| r.items[i * r.members * r.width + m * r.width + j] + proj[j])
            })
        })
        .collect();
    assert_close(&items, &expected, 1e-5, "exported item rows");
}

#[test]
fn rows_have_the_scoring_layout_and_unrated_items_get_the_projection_alone() {
    let samples = Synthetic::new(CatalogueSpec::small(), 3).ratings;
    // Items 0..5 are never rated below.
    let train: Vec<Interaction> = samples.into_iter().filter(|s| s.item >= 5).collect();
    let (n_users, n_items) = (CatalogueSpec::small().users, CatalogueSpec::small().items);
    let embeddings = Synthetic::new(CatalogueSpec::small(), 3).text;
    let p = text_mf_params(4, 3, sgd(0.02, 0.05), 1);
    let mut model = TextMf::new(&p, n_users, n_items, 3.5, LabelKind::Rating, &embeddings).unwrap();
    model.fit(&train, &keys(train.len()), 3).unwrap();
    let head = model.head();
    assert_eq!(head.layout, RowLayout { members: 3, dim: 4 });
    assert_eq!(head.offsets, vec![3.5; 3]);
    let (u, i) = all_rows(&model);
    assert_eq!(u.len(), n_users * 15);
    assert_eq!(i.len(), n_items * 15);
    let cold: Vec<u32> = (0..5).collect();
    let rows = model.item_rows(&cold).unwrap();
    assert_eq!(
        rows[..],
        i[..5 * 15],
        "rows do not depend on what else is exported"
    );
    let w = projection_by_text_dim(&model);
    for &c in &cold {
        let e = embeddings.vector(c);
        for col in 0..15 {
            let expected: f64 = e
                .iter()
                .enumerate()
                .map(|(t, &x)| f64::from(x) * w[t * 15 + col])
                .sum();
            let got = f64::from(rows[c as usize * 15 + col]);
            assert!(
                (got - expected).abs() < 1e-5,
                "item {c} col {col}: {got} vs {expected}"
            );
        }
    }
    // The cold items' free rows are untouched zeros; their rows are not.
    let free = host(&model.items.values().narrow(0, 0, 5).unwrap());
    assert!(free.iter().all(|&x| x == 0.0));
    assert!(
        rows.iter().any(|&x| x.abs() > 1e-3),
        "text gives cold items a vector"
    );
    // The head scores a pair exactly as the rows say.
    let s = head.score(&u[..15], &i[..15], None);
    let mut sum = 0.0f64;
    for m in 0..3 {
        let (pu, qi) = (&u[m * 5..m * 5 + 5], &i[m * 5..m * 5 + 5]);
        let dot: f64 = (1..5).map(|j| f64::from(pu[j]) * f64::from(qi[j])).sum();
        sum += 3.5 + f64::from(pu[0]) + f64::from(qi[0]) + dot;
    }
    assert!((f64::from(s.prediction) - sum / 3.0).abs() < 1e-5);
}

#[test]
fn same_seed_gives_identical_rows_and_another_seed_differs() {
    let data = Synthetic::new(CatalogueSpec::small(), 5);
    let spec = CatalogueSpec::small();
    let train = |seed: u64, (optimizer, loss): (OptimizerParams, Loss)| {
        let p = TrainParams {
            loss,
            ..text_mf_params(4, 2, optimizer, seed)
        };
        let mut m = TextMf::new(
            &p,
            spec.users,
            spec.items,
            3.5,
            LabelKind::Rating,
            &data.text,
        )
        .unwrap();
        let k = keys(data.ratings.len());
        m.fit(&data.ratings, &k, 2).unwrap();
        m.fit(&data.ratings[..50], &k[..50], 1).unwrap();
        all_rows(&m)
    };
    let runs = [sgd(0.02, 0.05), adam(0.01, 0.01)]
        .into_iter()
        .flat_map(|optimizer| [(optimizer, Loss::Squared), (optimizer, Loss::Bpr)]);
    for run in runs {
        let a = train(1, run);
        assert_eq!(
            a,
            train(1, run),
            "{run:?}: same seed must give bit-identical rows"
        );
        let b = train(2, run);
        assert_ne!(a.0, b.0);
        assert_ne!(a.1, b.1);
    }
}

#[test]
fn a_duplicate_trains_like_the_original_and_apart_from_it() {
    let spec = CatalogueSpec::small();
    let data = Synthetic::new(spec, 11);
    for loss in [Loss::Squared, Loss::Bpr] {
        let p = TrainParams {
            loss,
            ..text_mf_params(4, 2, adam(0.01, 0.01), 6)
        };
        let mut model = TextMf::new(
            &p,
            spec.users,
            spec.items,
            3.5,
            LabelKind::Rating,
            &data.text,
        )
        .unwrap();
        model
            .fit(&data.ratings, &keys(data.ratings.len()), 2)
            .unwrap();
        check_duplicate(&mut model, &data.ratings);
    }
}

#[test]
fn training_reduces_the_loss_and_reports_every_item_with_text() {
    let spec = CatalogueSpec::small();
    let mut data = Synthetic::new(spec, 7);
    // Item 3 has no text, and nobody rates it.
    data.text.present[3] = false;
    let train: Vec<Interaction> = data
        .ratings
        .iter()
        .copied()
        .filter(|s| s.item != 3)
        .collect();
    let p = text_mf_params(4, 1, sgd(0.02, 0.05), 4);
    let mut model = TextMf::new(
        &p,
        spec.users,
        spec.items,
        3.5,
        LabelKind::Rating,
        &data.text,
    )
    .unwrap();
    let before = rmse_on(&model, &train);
    let first = model.fit(&train, &keys(train.len()), 1).unwrap();
    let report = model.fit(&train, &keys(train.len()), 10).unwrap();
    let after = rmse_on(&model, &train);
    assert!(after < 0.8 * before, "train RMSE {before} -> {after}");
    assert!(report.last_epoch_loss < first.last_epoch_loss);
    let items: Vec<u32> = (0..spec.items as u32).filter(|&i| i != 3).collect();
    assert_eq!(report.changed_items, items);
    assert!(!report.shared_changed);
    let rated: std::collections::BTreeSet<u32> = train.iter().map(|s| s.user).collect();
    assert_eq!(report.changed_users, rated.into_iter().collect::<Vec<_>>());
    // Item 3's row stayed the zero row.
    assert!(model.item_rows(&[3]).unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn bpr_ranks_held_out_positives_above_unmet_items() {
    let split = ImplicitSplit::new(ImplicitSplit::spec(), 32);
    let spec = split.spec;
    let p = TrainParams {
        loss: Loss::Bpr,
        ..text_mf_params(16, 2, adam(0.01, 0.01), 4)
    };
    let mut model = TextMf::new(
        &p,
        spec.users,
        spec.items,
        4.0,
        LabelKind::Rating,
        &split.text,
    )
    .unwrap();
    split.check_bpr_training(&mut model, 30, 0.8);
}

#[test]
fn grown_items_get_rows_from_the_text_handed_over() {
    let spec = CatalogueSpec::small();
    let data = Synthetic::new(spec, 8);
    let n = spec.items;
    let first = ItemEmbeddings {
        dim: data.text.dim,
        vectors: data.text.vectors[..(n - 4) * data.text.dim].to_vec(),
        present: vec![true; n - 4],
    };
    let train: Vec<Interaction> = data
        .ratings
        .iter()
        .copied()
        .filter(|s| (s.item as usize) < n - 4 && (s.user as usize) < spec.users - 2)
        .collect();
    let p = text_mf_params(4, 2, sgd(0.02, 0.05), 3);
    let mut model = TextMf::new(&p, spec.users - 2, n - 4, 3.5, LabelKind::Rating, &first).unwrap();
    model.fit(&train, &keys(train.len()), 3).unwrap();
    let old = all_rows(&model);
    model.grow(spec.users, n).unwrap();
    let new_items: Vec<u32> = (n as u32 - 4..n as u32).collect();
    assert!(
        model
            .item_rows(&new_items)
            .unwrap()
            .iter()
            .all(|&x| x == 0.0),
        "before their text arrives, new items have no vector"
    );
    model.set_item_embeddings(&data.text).unwrap();
    let (u, i) = all_rows(&model);
    assert_eq!(u[..old.0.len()], old.0[..], "old users unchanged");
    assert_eq!(
        i[..old.1.len()],
        old.1[..],
        "old items unchanged (same text)"
    );
    let rows = model.item_rows(&new_items).unwrap();
    let w = projection_by_text_dim(&model);
    let width = 10;
    for (k, &item) in new_items.iter().enumerate() {
        let e = data.text.vector(item);
        for col in 0..width {
            let expected: f64 = e
                .iter()
                .enumerate()
                .map(|(t, &x)| f64::from(x) * w[t * width + col])
                .sum();
            assert!((f64::from(rows[k * width + col]) - expected).abs() < 1e-5);
        }
    }
    // New users are initialised as at construction; the grown model trains on new rows.
    let fresh = TextMf::new(&p, spec.users, n, 3.5, LabelKind::Rating, &data.text).unwrap();
    assert_eq!(u[old.0.len()..], all_rows(&fresh).0[old.0.len()..]);
    let report = model
        .fit(
            &[sample(spec.users as u32 - 1, n as u32 - 1, 5.0)],
            &[999],
            1,
        )
        .unwrap();
    assert_eq!(report.changed_users, vec![spec.users as u32 - 1]);
    assert_eq!(report.changed_items.len(), n);
}

#[test]
fn configuration_errors_say_what_to_do() {
    let p = text_mf_params(4, 1, sgd(0.02, 0.05), 1);
    let err = build_recommender(&p, 3, 3, 3.0, LabelKind::Rating, None)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "`text_mf` needs item text vectors: add an `embed` node (e.g. `item_vectors: \
         {embed: {model: sentence-transformers/all-MiniLM-L6-v2}, input: items}`) and list \
         it in the train node's inputs, or train `mf`, which reads no text"
    );
    let mc = TrainParams {
        uncertainty: UncertaintyParams::McDropout { passes: 4 },
        ..p.clone()
    };
    let err = build_recommender(&mc, 3, 3, 3.0, LabelKind::Rating, Some(&text(3, 2)))
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "uncertainty `mc_dropout` needs a model with dropout (`two_tower`); `text_mf` has \
         none: use `ensemble` (several bootstrap members) instead"
    );
    let mc_mf = TrainParams {
        model: ModelKind::Mf {
            dim: 2,
            init_std: 0.1,
        },
        ..mc
    };
    assert_eq!(
        BiasedMf::new(&mc_mf, 3, 3, 3.0, LabelKind::Rating)
            .unwrap_err()
            .to_string(),
        "uncertainty `mc_dropout` needs a model with dropout (`two_tower`); `mf` has none: \
         use `ensemble` (several bootstrap members) instead"
    );
    assert_eq!(
        BiasedMf::new(&p, 3, 3, 3.0, LabelKind::Rating)
            .unwrap_err()
            .to_string(),
        "BiasedMf trains `mf` models, not `text_mf`; build models with model::build_recommender"
    );
    let mut model = TextMf::new(&p, 3, 3, 3.0, LabelKind::Rating, &text(3, 2)).unwrap();
    assert_eq!(
        model
            .set_item_embeddings(&text(3, 5))
            .unwrap_err()
            .to_string(),
        "item text vectors have dimension 5, but the model was built with vectors of \
         dimension 2; embed every item with the same encoder"
    );
    assert_eq!(
        model.item_rows(&[3]).unwrap_err().to_string(),
        "item index 3 is out of range: the model holds 3 items; grow() it first"
    );
    let built = build_recommender(&p, 3, 3, 3.0, LabelKind::Rating, Some(&text(3, 2))).unwrap();
    assert_eq!(built.kind(), "text_mf");
}

/// Cold-start quality on synthetic data whose text encodes each item's bias and factors:
/// text MF must beat MF (which can only use biases) on items it never saw.
#[test]
fn text_beats_biases_alone_on_cold_items() {
    let split = ExperimentSplit::new(CatalogueSpec::medium(), 21);
    let (mf, text_mf) = split.cold_rmse_mf_and_text_mf(1);
    assert!(
        text_mf < 0.85 * mf,
        "cold-item RMSE: text_mf {text_mf:.4} vs mf {mf:.4}"
    );
}

/// The text-dimension matrix products of a step at ml-latest-small's shapes, in a few
/// formulations: prints microseconds per call.
#[test]
#[ignore = "timing; run by hand"]
fn projection_product_timing() {
    use std::time::Instant;
    let dev = Device::Cpu;
    let (n, t, c) = (1024usize, 384usize, 33usize);
    let e = Tensor::rand(0f32, 1f32, (n, t), &dev).unwrap();
    let w = Tensor::rand(0f32, 1f32, (t, c), &dev).unwrap();
    let g = Tensor::rand(0f32, 1f32, (n, c), &dev).unwrap();
    let table = Tensor::rand(0f32, 1f32, (9742, t), &dev).unwrap();
    let index: Vec<u32> = (0..n as u32).map(|k| (k * 7919) % 9742).collect();
    let index = Tensor::from_vec(index, n, &dev).unwrap();
    let wt = w.t().unwrap().contiguous().unwrap();
    let et = e.t().unwrap().contiguous().unwrap();
    let reps = 200;
    let time = |name: &str, f: &dyn Fn() -> Tensor| {
        f();
        let start = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(f());
        }
        println!(
            "{name:<40} {:8.1} us",
            start.elapsed().as_secs_f64() * 1e6 / reps as f64
        );
    };
    time("gather e [1024, 384]", &|| {
        table.index_select(&index, 0).unwrap()
    });
    time("e @ W", &|| e.matmul(&w).unwrap());
    time("(W^T @ e^T)^T", &|| wt.matmul(&et).unwrap().t().unwrap());
    time("e^T @ g (strided e^T)", &|| {
        e.t().unwrap().matmul(&g).unwrap()
    });
    time("e^T @ g (contiguous e^T)", &|| et.matmul(&g).unwrap());
    time("(g^T @ e)^T", &|| g.t().unwrap().matmul(&e).unwrap());
    time("g^T contiguous @ e", &|| {
        g.t().unwrap().contiguous().unwrap().matmul(&e).unwrap()
    });
    time("e @ (W^T stored)^T", &|| {
        e.matmul(&wt.t().unwrap()).unwrap()
    });
    time("gather + e @ W", &|| {
        table.index_select(&index, 0).unwrap().matmul(&w).unwrap()
    });
    let ew = table.matmul(&w).unwrap();
    time("all items E @ W", &|| table.matmul(&w).unwrap());
    time("gather of E W rows", &|| {
        ew.index_select(&index, 0).unwrap()
    });
}
