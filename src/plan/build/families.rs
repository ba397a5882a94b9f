//! The model families' planners, which the registry holds
//! ([`crate::registry::FamilyDef`]): each turns the options only its family reads into its
//! [`ModelKind`] (and, for a family that measures uncertainty its own way, its
//! [`UncertaintyParams`]). The options every family shares (dimension, members, epochs,
//! refit, loss, optimizer) are planned once for all in `models.rs`.

use crate::plan::params::{EncoderTuning, ModelKind, UncertaintyParams};
use crate::registry::defaults;
use crate::spec::path::YamlPath;
use crate::spec::schema::TrainOptions;

use super::Resolver;

/// Plans a family's own options.
pub(crate) type FamilyPlanner = fn(&mut Resolver, &FamilyInput<'_>) -> FamilyModel;

/// What a family's planner reads: the node's options and what is already resolved of them.
pub(crate) struct FamilyInput<'a> {
    /// The family's key (`mf`).
    pub family: &'static str,
    /// The options as written under it.
    pub options: &'a TrainOptions,
    /// Where they are: `nodes.<id>.train.<family>`.
    pub path: &'a YamlPath,
    /// The factor (or embedding) dimension.
    pub dim: usize,
    /// The initialisation's standard deviation.
    pub init_std: f64,
    /// The encoder's fine-tuning, when written and the family reads text.
    pub tune: Option<EncoderTuning>,
}

impl FamilyInput<'_> {
    /// The name a resolved value of option `name` is shown under (`two_tower.hidden`).
    fn key(&self, name: &str) -> String {
        option_key(self.family, name)
    }
}

/// The name a resolved value of `family`'s option `name` is shown under in the plan
/// (`two_tower.hidden`).
pub(super) fn option_key(family: &str, name: &str) -> String {
    format!("{family}.{name}")
}

/// A family's planned model.
pub(crate) struct FamilyModel {
    /// The model.
    pub kind: ModelKind,
    /// How it measures uncertainty, when not by its ensemble members.
    pub uncertainty: Option<UncertaintyParams>,
}

/// `mf`: nothing of its own.
pub(crate) fn plan_mf(_: &mut Resolver, input: &FamilyInput<'_>) -> FamilyModel {
    FamilyModel {
        kind: ModelKind::Mf {
            dim: input.dim,
            init_std: input.init_std,
        },
        uncertainty: None,
    }
}

/// `text_mf`: the encoder's tuning.
pub(crate) fn plan_text_mf(_: &mut Resolver, input: &FamilyInput<'_>) -> FamilyModel {
    FamilyModel {
        kind: ModelKind::TextMf {
            dim: input.dim,
            init_std: input.init_std,
            tune: input.tune,
        },
        uncertainty: None,
    }
}

/// `two_tower`: the towers' width and dropout, and Monte Carlo dropout as its uncertainty.
pub(crate) fn plan_two_tower(resolver: &mut Resolver, input: &FamilyInput<'_>) -> FamilyModel {
    let options = input.options;
    let path = input.path;
    let hidden = resolver.value(&input.key("hidden"), options.hidden, defaults::HIDDEN);
    let dropout = resolver.value(&input.key("dropout"), options.dropout, defaults::DROPOUT);
    if hidden == 0 {
        resolver.error(
            path.key("hidden"),
            "`hidden` must be at least 1",
            "set `hidden` to a positive integer",
        );
    }
    if !(0.0..1.0).contains(&dropout) {
        resolver.error(
            path.key("dropout"),
            format!("dropout {dropout} is not in [0, 1)"),
            "use e.g. `dropout: 0.1`",
        );
    }
    if options.mc_dropout.is_some() && dropout == 0.0 {
        resolver.error(
            path.key("mc_dropout"),
            "Monte Carlo dropout with `dropout: 0` gives identical passes",
            "set `dropout` above 0 (e.g. 0.1), or use ensemble `members`",
        );
    }
    let uncertainty = options.mc_dropout.map(|passes| {
        resolver
            .params
            .push((input.key("mc_dropout"), passes.to_string(), true));
        if options.members.is_some_and(|m| m > 1) {
            resolver.error(
                path.key("mc_dropout"),
                "a model measures uncertainty by ensemble `members` or by `mc_dropout` passes, not both",
                "keep one: `members: 4` or `mc_dropout: 8`",
            );
        }
        if passes < 2 {
            resolver.error(
                path.key("mc_dropout"),
                format!("`mc_dropout` needs at least 2 passes to measure a variance, got {passes}"),
                "use e.g. `mc_dropout: 8`",
            );
        }
        UncertaintyParams::McDropout { passes }
    });
    FamilyModel {
        kind: ModelKind::TwoTower {
            dim: input.dim,
            hidden,
            dropout,
            init_std: input.init_std,
            tune: input.tune,
        },
        uncertainty,
    }
}
