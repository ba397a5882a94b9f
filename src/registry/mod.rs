//! What a pipeline's nodes can say, in one place: every operator with its inputs and options,
//! the train options of each model family, every strategy and every metric, each with its
//! type, default and doc. `recsift ops` prints it, the README's reference tables are
//! generated from it (`recsift ops --markdown`; a test fails when they differ), and the
//! planner and the JSON schema take every default from [`defaults`] or the homes it names.
//!
//! This file holds the operators and what every entry is made of (an option, its default);
//! `families.rs` the model families and their train options, `strategies.rs` the
//! strategies, `reference.rs` the text written from them. The metrics' list is
//! [`crate::metrics::METRICS`].

use std::fmt;

use crate::plan::build::{self, OperatorPlanner};

pub mod defaults;
mod families;
mod reference;
mod strategies;

pub use families::{
    FAMILIES, FamilyDef, TRAIN_OPTIONS, families_taking, family, takes_train_option,
};
pub use reference::{describe, markdown};
pub use strategies::{STRATEGIES, StrategyDef, strategies_taking, strategies_with};

/// An option's default, as the reference shows it.
#[derive(Clone, Copy, Debug)]
pub enum DefaultValue {
    /// No default: the option is off unless written.
    None,
    /// Must be written.
    Required,
    /// An integer.
    Int(usize),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A name, as written in YAML.
    Name(&'static str),
    /// A value described in words (a name, or a rule such as "what the model measures").
    Text(&'static str),
    /// A rule whose words hold defaults defined elsewhere ("10 x budget"), built from them.
    Rule(fn() -> String),
}

impl fmt::Display for DefaultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultValue::None => f.write_str("none"),
            DefaultValue::Required => f.write_str("**required**"),
            DefaultValue::Int(v) => write!(f, "{v}"),
            DefaultValue::Float(v) => write!(f, "{v}"),
            DefaultValue::Bool(v) => write!(f, "{v}"),
            DefaultValue::Name(name) => write!(f, "`{name}`"),
            DefaultValue::Text(text) => f.write_str(text),
            DefaultValue::Rule(rule) => f.write_str(&rule()),
        }
    }
}

/// One option of an operator (or of a train family).
#[derive(Debug)]
pub struct OptionDef {
    /// The key, as written in YAML; a nested one by its path (`optimizer.sgd.lr`).
    pub name: &'static str,
    /// Its type, in words (`integer`, `float`, `string`, `mapping`, ...).
    pub ty: &'static str,
    /// Its default.
    pub default: DefaultValue,
    /// For train options: the families that take it (empty: every family; operator
    /// options have no families).
    pub families: &'static [&'static str],
    /// What it does.
    pub doc: &'static str,
}

/// One operator a node can have.
#[derive(Debug)]
pub struct OperatorDef {
    /// The operator key (`embed`, `train`, ...).
    pub key: &'static str,
    /// What the node reads.
    pub inputs: &'static str,
    /// What it does, in one sentence.
    pub summary: &'static str,
    /// Its options (the train operator's are per family: [`TRAIN_OPTIONS`]).
    pub options: &'static [OptionDef],
    /// Plans every node of this operator: checks its options against the rest of the
    /// pipeline, resolves their defaults, and adds its plan and its node in the graph.
    pub(crate) plan: OperatorPlanner,
}

/// An operator's option (no families: those are for train options).
const fn option(
    name: &'static str,
    ty: &'static str,
    default: DefaultValue,
    doc: &'static str,
) -> OptionDef {
    train_option(name, ty, default, &[], doc)
}

/// A train option, taken by `families`.
const fn train_option(
    name: &'static str,
    ty: &'static str,
    default: DefaultValue,
    families: &'static [&'static str],
    doc: &'static str,
) -> OptionDef {
    OptionDef {
        name,
        ty,
        default,
        families,
        doc,
    }
}

use DefaultValue::{Bool, Int, Name, Required, Rule, Text};

/// Every operator, in pipeline order: the planner runs them in this order, each reading the
/// plans of the operators before it (a score node reads the models, a select node the score).
pub static OPERATORS: &[OperatorDef] = &[
    OperatorDef {
        key: "embed",
        inputs: "`items`",
        summary: "item text to vectors with a sentence encoder (cached)",
        options: &[
            option(
                "model",
                "string",
                Name(crate::model::encoder::DEFAULT_MODEL),
                "Hugging Face model id; its vectors' cache key (the published weights)",
            ),
            option(
                "model_dir",
                "path",
                DefaultValue::None,
                "a local folder with `config.json`, `tokenizer.json`, `model.safetensors`; its vectors are cached under the model id and a digest of those files",
            ),
            option(
                "cache",
                "path",
                Rule(|| {
                    format!(
                        "`<item file>{}` beside the item file",
                        defaults::EMBEDDING_CACHE_SUFFIX
                    )
                }),
                "the vector cache",
            ),
            option(
                "batch_size",
                "integer",
                Int(defaults::EMBED_BATCH_SIZE),
                "texts per forward pass",
            ),
            option("threads", "integer", Text("all cores"), "encoder threads"),
        ],
        plan: build::plan_embed,
    },
    OperatorDef {
        key: "train",
        inputs: "`[labelled]`, plus the `embed` node for `text_mf`/`two_tower`",
        summary: "a recommender: one model family as the only key (`mf`, `text_mf`, \
                  `two_tower`) with its options. A pipeline may have several train nodes: \
                  they train side by side on the same labels (so they share `epochs`, \
                  `epochs_per_round` and `refit`)",
        options: &[],
        plan: build::plan_train,
    },
    OperatorDef {
        key: "fuse",
        inputs: "two or more train nodes",
        summary: "a model predicting the weighted average of its inputs' predictions, \
                  usable wherever a model is; its members are all its parts' members, so its \
                  `ensemble` uncertainty includes their disagreement. The parts train with \
                  one `loss`",
        options: &[
            option(
                "weights",
                "list of floats",
                Text("equal"),
                "one non-negative weight per input, in the order of `inputs:`, scaled to sum to 1",
            ),
            option(
                "learn",
                "string",
                DefaultValue::None,
                "learn the non-negative weights summing to 1 with the least squared error \
                 (never worse than the better part on the events they are fitted on): \
                 `validation`, after every fit, on the split's validation events; \
                 `prequential`, in a replay, before the parts train on a window, on every \
                 window so far as the parts predicted it before training on it. Each round \
                 reports them as `<fuse node>/weight[<part>]`",
            ),
        ],
        plan: build::plan_fuse,
    },
    OperatorDef {
        key: "score",
        inputs: "`[pool, <model>]` (a train or fuse node)",
        summary: "every pool sample's prediction, uncertainty and loss, maintained \
                  incrementally for the select node that reads them; needed only by a \
                  select node, and nothing is scored without one or for a strategy that \
                  reads neither scores nor item statistics (`random`, `coreset`)",
        options: &[option(
            "uncertainty",
            "string",
            Text("what the model measures"),
            "`ensemble` (variance over members), `mc_dropout` (variance over dropout passes) \
             or `none`",
        )],
        plan: build::plan_score,
    },
    OperatorDef {
        key: "select",
        inputs: "`<score node>`",
        summary: "the samples whose labels each round buys",
        options: &[
            option(
                "strategy",
                "string",
                Required,
                "see Strategies; a strategy's own options sit beside it (`recsift ops NAME`)",
            ),
            option("budget", "integer", Required, "samples per round"),
            option(
                "per_user",
                "bool",
                Bool(defaults::PER_USER),
                "false: the budget is global; true: per user",
            ),
        ],
        plan: build::plan_select,
    },
    OperatorDef {
        key: "evaluate",
        inputs: "`[test, <model>]` (a train or fuse node)",
        summary: "metrics of one model each round; with several evaluate nodes every metric \
                  name starts with the node's id (`mf_report/rmse`); a replay has one, \
                  reading the scored model",
        options: &[
            option(
                "metrics",
                "list of strings",
                Rule(|| {
                    format!(
                        "`[{}]`; clicks: `[{}]`; `loss: bpr`: `[{}]`",
                        defaults::RATING_METRICS.join(", "),
                        defaults::CLICK_METRICS.join(", "),
                        defaults::RANKING_METRICS.join(", ")
                    )
                }),
                "see Metrics",
            ),
            option(
                "relevant",
                "float",
                Rule(|| {
                    format!(
                        "{} (ratings), {} (clicks)",
                        defaults::RELEVANT_RATING,
                        defaults::RELEVANT_CLICK
                    )
                }),
                "a test event is relevant for ranking metrics when its label is at least this",
            ),
            option(
                "candidates",
                "string or mapping",
                Rule(|| format!("`{}`", defaults::CANDIDATES)),
                "what ranking metrics rank for a test user: `all`, `test_items` or \
                 `{sampled: {negatives: N}}` (below)",
            ),
        ],
        plan: build::plan_evaluate,
    },
];

/// The operator with key `key`.
pub fn operator(key: &str) -> Option<&'static OperatorDef> {
    OPERATORS.iter().find(|op| op.key == key)
}

/// Option `name` of the `operator` node: for `train` a train option, for `select` one of the
/// operator's or (the first with that name) a strategy's own.
pub fn option_of(operator: &str, name: &str) -> Option<&'static OptionDef> {
    let own: &'static [OptionDef] = match operator {
        "train" => TRAIN_OPTIONS,
        _ => self::operator(operator).map_or(&[], |op| op.options),
    };
    let strategies = STRATEGIES
        .iter()
        .filter(|_| operator == "select")
        .flat_map(|s| s.options);
    own.iter().chain(strategies).find(|o| o.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_reference_is_the_generated_one() {
        let readme = include_str!("../../README.md");
        let generated = markdown();
        assert!(
            readme.contains(&generated),
            "README.md's pipeline reference differs from the registry: paste the output of \
             `recsift ops --markdown` between its `generated` markers"
        );
    }

    #[test]
    fn every_operator_key_has_an_entry_and_names_are_described() {
        for key in crate::spec::OPERATOR_KEYS {
            assert!(operator(key).is_some(), "{key}");
        }
        assert!(describe(Some("fuse")).unwrap().contains("learn"));
        assert!(
            describe(Some("train"))
                .unwrap()
                .contains("epochs_per_round")
        );
        let coreset = describe(Some("coreset")).unwrap();
        assert!(coreset.starts_with("strategy coreset: "), "{coreset}");
        assert!(
            coreset.contains("\n  space (") && coreset.contains("\n  candidates ("),
            "{coreset}"
        );
        assert_eq!(describe(Some("random")).unwrap().lines().count(), 1);
        for name in ["ndcg@K", "ndcg", "ndcg@10"] {
            assert!(
                describe(Some(name)).unwrap().starts_with("metric ndcg@K: "),
                "{name}"
            );
        }
        assert!(
            describe(Some("fusee"))
                .unwrap_err()
                .contains("did you mean `fuse`")
        );
    }

    #[test]
    fn the_options_only_some_strategies_take_are_exactly_those_the_registry_lists() {
        use crate::spec::schema::SelectSpec;
        let mut listed: Vec<&str> = STRATEGIES
            .iter()
            .flat_map(|s| s.options.iter().map(|o| o.name))
            .collect();
        listed.sort_unstable();
        listed.dedup();
        let mut read = SelectSpec::STRATEGY_OPTIONS.to_vec();
        read.sort_unstable();
        assert_eq!(listed, read);
        for name in SelectSpec::STRATEGY_OPTIONS {
            let value = if name == "space" { "text" } else { "50" };
            let yaml = format!("{{strategy: coreset, budget: 5, {name}: {value}}}");
            let spec: SelectSpec = serde_yaml::from_str(&yaml).unwrap();
            assert_eq!(spec.written_strategy_options(), [name]);
        }
        assert_eq!(
            strategies_taking("candidates"),
            "`coreset` and `uncertainty_diversity`"
        );
        assert_eq!(
            option_of("select", "candidates")
                .unwrap()
                .default
                .to_string(),
            "10 x budget"
        );
        assert_eq!(option_of("select", "budget").unwrap().name, "budget");
        assert!(option_of("evaluate", "space").is_none());
    }

    #[test]
    fn every_family_key_is_a_train_key_and_lists_exactly_the_options_it_takes() {
        for f in FAMILIES {
            let yaml = format!("{{{}: {{}}}}", f.key);
            let spec: crate::spec::schema::TrainSpec = serde_yaml::from_str(&yaml).unwrap();
            assert!(spec.family(f.key).is_some(), "{}", f.key);
        }
        let mf = describe(Some("mf")).unwrap();
        assert!(mf.starts_with("family mf (train)\n"), "{mf}");
        assert!(
            mf.contains("\n  dim (") && !mf.contains("\n  hidden ("),
            "{mf}"
        );
        assert!(!mf.contains("\n  tune ("), "{mf}");
        let two_tower = describe(Some("two_tower")).unwrap();
        assert!(two_tower.contains("reads item text"), "{two_tower}");
        assert!(two_tower.contains("\n  hidden (") && two_tower.contains("\n  tune ("));
        assert!(takes_train_option("tune", "text_mf") && !takes_train_option("tune", "mf"));
        assert_eq!(families_taking("tune", "and"), "`text_mf` and `two_tower`");
        assert_eq!(
            families_taking("dim", "or"),
            "`mf` or `text_mf` or `two_tower`"
        );
    }
}
