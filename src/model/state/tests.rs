//! Tests of saving and loading model state: for every family and every kind of state
//! (SGD and Adam tables, dense Adam, shuffle and dropout streams, BPR sampler), a fresh model
//! loaded with the state of a trained and grown one trains bit for bit like it; refused
//! states say why; ChaCha12 is rand's `StdRng`, so training results did not change.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::*;
use crate::data::{Interaction, ItemEmbeddings, LabelKind};
use crate::model::synthetic::{CatalogueSpec, Synthetic, adam, all_rows, params, sgd};
use crate::model::{Recommender, build_recommender};
use crate::plan::params::{ModelKind, OptimizerParams, TrainParams, UncertaintyParams};
use crate::scoring::Loss;

/// Users and items of a model as built; it grows to the catalogue's 30 x 40
/// ([`CatalogueSpec::small`]).
const ORIGINAL: (usize, usize) = (20, 30);

fn build(p: &TrainParams, text: &ItemEmbeddings) -> Box<dyn Recommender> {
    let (n_users, n_items) = ORIGINAL;
    build_recommender(p, n_users, n_items, 3.5, LabelKind::Rating, Some(text)).unwrap()
}

/// Every user row and item row, as bits.
fn bits(model: &dyn Recommender) -> (Vec<u32>, Vec<u32>) {
    let (users, items) = all_rows(model);
    let bits = |rows: Vec<f32>| rows.into_iter().map(f32::to_bits).collect();
    (bits(users), bits(items))
}

/// The samples and their keys (their positions in the catalogue's ratings) for which `keep`
/// holds.
fn part(
    ratings: &[Interaction],
    keep: impl Fn(usize, &Interaction) -> bool,
) -> (Vec<Interaction>, Vec<u32>) {
    ratings
        .iter()
        .enumerate()
        .filter(|(k, s)| keep(*k, s))
        .map(|(k, s)| (*s, k as u32))
        .unzip()
}

/// Trains a model of `p` on the ratings of its original rows, grows it to the whole
/// catalogue and trains it on half of all ratings; then a fresh model loaded with its state
/// starts with its rows and shape, and the two, trained on the other half, stay
/// bit-identical. The state is a copy: a third model loaded with it afterwards starts where
/// the first was when it was saved.
fn check_resume(p: &TrainParams) {
    let spec = CatalogueSpec::small();
    let data = Synthetic::new(spec, 4);
    let (early, early_keys) = part(&data.ratings, |_, s| {
        (s.user as usize) < ORIGINAL.0 && (s.item as usize) < ORIGINAL.1
    });
    let (grown, grown_keys) = part(&data.ratings, |k, _| k % 2 == 0);
    let (later, later_keys) = part(&data.ratings, |k, _| k % 2 == 1);

    let mut a = build(p, &data.text);
    let kind = a.kind();
    a.fit(&early, &early_keys, 2).unwrap();
    a.grow(spec.users, spec.items).unwrap();
    a.fit(&grown, &grown_keys, 2).unwrap();
    let saved = bits(&*a);
    let state = a.save_state().unwrap();
    assert_eq!(state.kind, kind);

    let restore = || {
        let mut model = build(p, &data.text);
        model.set_item_embeddings(&data.text).unwrap();
        model.load_state(&state).unwrap();
        model
    };
    let mut b = restore();
    assert_eq!(b.shape(), (spec.users, spec.items), "{kind}: loaded shape");
    assert_eq!(bits(&*b), saved, "{kind}: loaded rows");
    for call in 0..2 {
        let report_a = a.fit(&later, &later_keys, 3).unwrap();
        let report_b = b.fit(&later, &later_keys, 3).unwrap();
        assert_eq!(
            report_a, report_b,
            "{kind}: fit {call}, reported differently"
        );
        assert_eq!(bits(&*a), bits(&*b), "{kind}: fit {call}, other rows");
    }
    assert_ne!(bits(&*a), saved, "{kind}: training moved the rows");
    assert_eq!(
        bits(&*restore()),
        saved,
        "{kind}: training changed the state"
    );
}

fn with_loss(loss: Loss, p: TrainParams) -> TrainParams {
    TrainParams { loss, ..p }
}

#[test]
fn loaded_mf_trains_bit_for_bit_like_the_saved_one() {
    for p in [
        params(1, sgd(0.02, 0.05), 16, 3),
        params(2, adam(0.01, 0.01), 16, 3),
        with_loss(Loss::Bpr, params(2, adam(0.01, 0.01), 16, 3)),
    ] {
        check_resume(&p);
    }
}

fn text_mf(members: usize, optimizer: OptimizerParams) -> TrainParams {
    TrainParams {
        model: ModelKind::TextMf {
            dim: 4,
            init_std: 0.1,
            tune: None,
        },
        ..params(members, optimizer, 16, 5)
    }
}

#[test]
fn loaded_text_mf_trains_bit_for_bit_like_the_saved_one() {
    check_resume(&text_mf(2, adam(0.01, 0.01)));
    check_resume(&with_loss(Loss::Bpr, text_mf(1, sgd(0.02, 0.05))));
}

fn two_tower(uncertainty: UncertaintyParams, optimizer: OptimizerParams) -> TrainParams {
    TrainParams {
        model: ModelKind::TwoTower {
            dim: 3,
            hidden: 8,
            dropout: 0.25,
            init_std: 0.1,
            tune: None,
        },
        uncertainty,
        ..params(1, optimizer, 16, 7)
    }
}

#[test]
fn loaded_two_tower_trains_bit_for_bit_like_the_saved_one() {
    check_resume(&two_tower(
        UncertaintyParams::McDropout { passes: 3 },
        adam(0.01, 0.01),
    ));
    check_resume(&with_loss(
        Loss::Bpr,
        two_tower(UncertaintyParams::Ensemble { members: 2 }, sgd(0.02, 0.01)),
    ));
}

#[test]
fn states_of_another_family_or_shape_are_refused_and_change_nothing() {
    let data = Synthetic::new(CatalogueSpec::small(), 4);
    let mf = params(2, adam(0.01, 0.01), 16, 3);
    let load = |p: &TrainParams, state: &ModelState| {
        let mut model = build(p, &data.text);
        let before = bits(&*model);
        let err = model.load_state(state).unwrap_err();
        assert!(matches!(err, ModelError::Input(_)), "{err:?}");
        assert_eq!(bits(&*model), before, "a refused state changed the model");
        err.to_string()
    };
    let state = build(&mf, &data.text).save_state().unwrap();

    let err = load(&text_mf(2, adam(0.01, 0.01)), &state);
    assert!(err.contains("`mf` model into a `text_mf` model"), "{err}");

    let mut incomplete = state.clone();
    incomplete.tensors.remove("items.first_moment");
    let err = load(&mf, &incomplete);
    assert!(err.contains("no tensor `items.first_moment`"), "{err}");

    let wider = TrainParams {
        model: ModelKind::Mf {
            dim: 5,
            init_std: 0.1,
        },
        ..mf.clone()
    };
    let err = load(&wider, &state);
    assert!(err.contains("`users.values` has shape [20, 10]"), "{err}");

    let mut grown = build(&mf, &data.text);
    grown.grow(25, 30).unwrap();
    let err = grown.load_state(&state).unwrap_err().to_string();
    assert!(err.contains("holds 20 users"), "{err}");

    let bpr = with_loss(Loss::Bpr, mf.clone());
    let mut state = build(&bpr, &data.text).save_state().unwrap();
    state.insert_u32("negatives.known_counts", vec![0; 3]);
    let err = load(&bpr, &state);
    assert!(err.contains("knows the items of 3 users"), "{err}");
}

#[test]
fn chacha12_is_rand_std_rng() {
    for seed in [0, 1, 0x5348_5546_464C_4503, u64::MAX] {
        let mut ours = ChaCha12Rng::seed_from_u64(seed);
        let mut std = StdRng::seed_from_u64(seed);
        for k in 0..1000 {
            if k % 3 == 0 {
                assert_eq!(ours.next_u32(), std.next_u32(), "seed {seed}, draw {k}");
            } else {
                assert_eq!(ours.next_u64(), std.next_u64(), "seed {seed}, draw {k}");
            }
        }
    }
}

#[test]
fn a_generator_resumes_from_its_saved_position() {
    let mut rng = ChaCha12Rng::seed_from_u64(9);
    rng.set_stream(5);
    let mut state = ModelState {
        kind: "test".into(),
        tensors: BTreeMap::new(),
        scalars: serde_json::json!({}),
    };
    // Positions across the generator's 64-word buffer, at odd words too.
    for k in 0..150 {
        state.set_rng("rng", &rng).unwrap();
        let mut resumed = state.rng("rng").unwrap();
        let mut expected = rng.clone();
        for _ in 0..70 {
            assert_eq!(resumed.next_u64(), expected.next_u64(), "position {k}");
        }
        rng.next_u32();
    }
}
