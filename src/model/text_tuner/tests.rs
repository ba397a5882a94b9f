//! Tests of fine-tuning the encoder (`tune:`) in `text_mf` and `two_tower` on a tiny random
//! BERT: the encoder's gradient lowers the loss by itself, the frozen part never moves, the
//! item rows follow the tuned vectors, and duplicates and saved states carry the tuned
//! layers.
use std::sync::Arc;

use candle_core::Device;

use super::*;
use crate::data::{Interaction, LabelKind};
use crate::fixtures::write_tiny_bert;
use crate::model::encoder::TextEncoder;
use crate::model::synthetic::{adam, params, sgd};
use crate::model::{Recommender, build_recommender};
use crate::plan::params::{LoraAdapters, ModelKind, TrainParams};

const TEXTS: [&str; 6] = [
    "the cat sat on the mat",
    "dogs ran",
    "The Cat (1995) | a b",
    "unknown words here",
    "the dog sat",
    "a mat ran on the cat",
];

/// The tiny BERT's folder, its frozen source (`layers` tuned) and the frozen encoder's
/// vectors of [`TEXTS`].
fn tiny_source(layers: usize) -> (tempfile::TempDir, Arc<TunableText>, ItemEmbeddings) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), "gelu", None);
    let texts: Vec<Option<&str>> = TEXTS.iter().map(|t| Some(*t)).collect();
    let source = TunableText::load(dir.path(), "tiny", &texts, layers, 1).unwrap();
    let encoder = TextEncoder::load(dir.path(), &Device::Cpu).unwrap();
    let vectors = ItemEmbeddings {
        dim: encoder.dim(),
        vectors: encoder.encode(&TEXTS).unwrap(),
        present: vec![true; TEXTS.len()],
    };
    (dir, Arc::new(source), vectors)
}

/// The two families that read text, with `tune` (a tuning, or `None` for a frozen
/// encoder).
fn families(tune: Option<EncoderTuning>) -> [ModelKind; 2] {
    [
        ModelKind::TextMf {
            dim: 4,
            init_std: 0.1,
            tune,
        },
        ModelKind::TwoTower {
            dim: 4,
            hidden: 8,
            dropout: 0.0,
            init_std: 0.1,
            tune,
        },
    ]
}

/// One tuned layer at `lr`: its own weights, or rank-2 LoRA adapters of it.
fn tuning(lr: f64, lora: Option<LoraAdapters>) -> Option<EncoderTuning> {
    Some(EncoderTuning {
        layers: 1,
        lora,
        lr,
        items_per_step: 4,
    })
}

/// What trains in the tuned layer: every weight, or LoRA adapters.
const MODES: [Option<LoraAdapters>; 2] = [
    None,
    Some(LoraAdapters {
        rank: 2,
        alpha: 4.0,
    }),
];

/// Tensors saved per tuned layer: its 16 weights, or 2 adapter pairs.
fn saved_per_layer(lora: Option<LoraAdapters>) -> usize {
    if lora.is_some() { 4 } else { 16 }
}

fn with(model: &ModelKind, optimizer: OptimizerParams) -> TrainParams {
    TrainParams {
        model: model.clone(),
        ..params(2, optimizer, 16, 7)
    }
}

/// 12 users rating the 6 items, each item with its own level.
fn ratings() -> Vec<Interaction> {
    (0..12u32)
        .flat_map(|user| {
            (0..6u32).map(move |item| Interaction {
                user,
                item,
                label: 1.0 + item as f32 * 0.7 + (user % 3) as f32 * 0.1,
                time: 0,
            })
        })
        .collect()
}

fn model(
    p: &TrainParams,
    text: &ItemEmbeddings,
    source: &Arc<TunableText>,
) -> Box<dyn Recommender> {
    let mut m = build_recommender(p, 12, 6, 3.0, LabelKind::Rating, Some(text)).unwrap();
    m.tune_encoder(source).unwrap();
    m
}

fn tuned_weights(state: &ModelState, lora: Option<LoraAdapters>) -> Vec<f32> {
    let mut names: Vec<&String> = state
        .tensors
        .keys()
        .filter(|k| k.starts_with("tuned_encoder."))
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        saved_per_layer(lora),
        "one tuned layer: {names:?}"
    );
    names
        .into_iter()
        .flat_map(|n| match &state.tensors[n].values {
            crate::data::HostValues::F32(v) => v.clone(),
            other => panic!("{n}: {other:?}"),
        })
        .collect()
}

#[test]
fn the_encoders_gradient_alone_lowers_the_loss_and_the_frozen_part_stays() {
    let (dir, source, text) = tiny_source(1);
    let frozen_before: Vec<f32> = (0..6)
        .flat_map(|i| source.token_states(i).to_vec())
        .collect();
    let samples = ratings();
    let keys: Vec<u32> = (0..samples.len() as u32).collect();
    // LoRA's adapters start with `B = 0` and adapt two projections: they move the vectors
    // more slowly at one rate, so they get a larger one (as LoRA is usually trained).
    let lr = |lora: Option<LoraAdapters>| if lora.is_some() { 1e-2 } else { 1e-3 };
    for (lora, family) in MODES
        .into_iter()
        .flat_map(|lora| families(tuning(lr(lora), lora)).map(|f| (lora, f)))
    {
        let name = format!("{} (lora {lora:?})", family.name());
        // Train the recommender first, so that its text parameters map text to rows.
        let mut warm = model(&with(&family, sgd(0.05, 0.0)), &text, &source);
        warm.fit(&samples, &keys, 3).unwrap();
        let state = warm.save_state().unwrap();

        // Then with every recommender parameter frozen (a learning rate of 1e-12, whose
        // steps vanish in f32 rounding), only the tuned layers move: the loss must fall.
        let mut encoder_only = model(&with(&family, sgd(1e-12, 0.0)), &text, &source);
        encoder_only.load_state(&state).unwrap();
        let rows_before = encoder_only.item_rows(&[0, 1, 2, 3, 4, 5]).unwrap();
        let users_before = encoder_only.user_rows(&[0, 1, 2]).unwrap();
        let losses: Vec<f32> = (0..12)
            .map(|_| {
                encoder_only
                    .fit(&samples, &keys, 1)
                    .unwrap()
                    .last_epoch_loss
            })
            .collect();
        assert!(
            losses[11] < 0.9 * losses[0],
            "{name}: the loss did not fall: {losses:?}"
        );
        let after = encoder_only.save_state().unwrap();
        assert_ne!(
            tuned_weights(&after, lora),
            tuned_weights(&state, lora),
            "{name}: the tuned layers moved"
        );
        assert_eq!(
            encoder_only.user_rows(&[0, 1, 2]).unwrap(),
            users_before,
            "{name}: users frozen"
        );
        // Item rows changed only through the text vectors.
        assert_ne!(
            encoder_only.item_rows(&[0, 1, 2, 3, 4, 5]).unwrap(),
            rows_before,
            "{name}"
        );
    }
    // The frozen token states are what the lower layers give, untouched.
    let frozen_after: Vec<f32> = (0..6)
        .flat_map(|i| source.token_states(i).to_vec())
        .collect();
    assert_eq!(frozen_before, frozen_after);
    let texts: Vec<Option<&str>> = TEXTS.iter().map(|t| Some(*t)).collect();
    let reloaded = TunableText::load(dir.path(), "tiny", &texts, 1, 2).unwrap();
    let recomputed: Vec<f32> = (0..6)
        .flat_map(|i| reloaded.token_states(i).to_vec())
        .collect();
    assert_eq!(frozen_before, recomputed);
}

#[test]
fn tuned_rows_come_from_the_tuned_vectors_and_survive_duplicates_and_saved_states() {
    let (_dir, source, text) = tiny_source(1);
    let samples = ratings();
    let keys: Vec<u32> = (0..samples.len() as u32).collect();
    let items = [0, 1, 2, 3, 4, 5];
    let frozen = families(None);
    for lora in MODES {
        let tuned = families(tuning(1e-3, lora));
        for (family, frozen_family) in tuned.iter().zip(&frozen) {
            let name = format!("{} (lora {lora:?})", family.name());
            let p = with(family, adam(0.01, 0.0));
            let mut a = model(&p, &text, &source);
            a.fit(&samples, &keys, 5).unwrap();

            // A model restored from the state scores exactly like the one that saved it.
            let mut restored = model(&p, &text, &source);
            restored.load_state(&a.save_state().unwrap()).unwrap();
            assert_eq!(
                restored.item_rows(&items).unwrap(),
                a.item_rows(&items).unwrap(),
                "{name}"
            );

            // A duplicate trains like the original, and apart from it.
            let mut twin = a.duplicate().unwrap();
            let before = a.item_rows(&items).unwrap();
            twin.fit(&samples, &keys, 2).unwrap();
            assert_eq!(
                a.item_rows(&items).unwrap(),
                before,
                "{name}: original moved"
            );
            a.fit(&samples, &keys, 2).unwrap();
            assert_eq!(
                a.item_rows(&items).unwrap(),
                twin.item_rows(&items).unwrap(),
                "{name}"
            );

            // Without tuning, the same training gives other rows: the tuned layers are used.
            let frozen_params = with(frozen_family, adam(0.01, 0.0));
            let mut frozen =
                build_recommender(&frozen_params, 12, 6, 3.0, LabelKind::Rating, Some(&text))
                    .unwrap();
            frozen.fit(&samples, &keys, 7).unwrap();
            assert_ne!(
                frozen.item_rows(&items).unwrap(),
                a.item_rows(&items).unwrap(),
                "{name}"
            );
            // ... and a frozen model refuses a tuning source.
            let err = frozen.tune_encoder(&source).unwrap_err().to_string();
            assert_eq!(
                err,
                "this model has no `tune:` option: its encoder stays frozen"
            );
            // A tuned model's vectors are the tuned layers': replacing them is refused.
            let err = a.set_item_embeddings(&text).unwrap_err().to_string();
            assert!(err.contains("come from the tuned layers"), "{name}: {err}");
        }
    }
}

#[test]
fn a_source_that_tunes_other_layers_than_the_model_asks_for_is_refused() {
    let (_dir, two_layers, text) = tiny_source(2);
    for family in families(tuning(1e-3, None)) {
        let p = with(&family, sgd(0.05, 0.0));
        let mut m = build_recommender(&p, 12, 6, 3.0, LabelKind::Rating, Some(&text)).unwrap();
        let err = m.tune_encoder(&two_layers).unwrap_err().to_string();
        assert_eq!(
            err,
            "the encoder source tunes the top 2 layer(s) of 32-d vectors, but this model asks \
             for `tune.layers: 1` over 32-d vectors",
            "{}",
            family.name()
        );
    }
}
