//! The JSON Schema of a pipeline file (`recsift schema`, committed as
//! `docs/pipeline.schema.json`), derived from the spec structs that parse it, so editors
//! complete keys, show each key's doc and flag unknown keys as the planner would.
//!
//! The schema describes what types (unknown keys, wrong types, one operator per node); the
//! planner checks the rest (values in range, edges, files), with file:line:column.

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Map, Value};

use super::OPERATOR_KEYS;
use super::schema::{
    CheckpointSpec, ClusterSpec, DataSpec, EmbedSpec, EvaluateSpec, FuseSpec, OutputSpec,
    ProtocolSpec, ScoreSpec, SelectSpec, StudySpec, TrainSpec,
};
use crate::io::sort::{DEFAULT_SORT_MEMORY, format_memory};
use crate::plan::ClusterPlan;
use crate::plan::params::EventColumns;
use crate::registry::{self, defaults};
use crate::strategy::Strategy;

/// The schema of an operator's options (`None`: written without options, all defaults).
fn operator_schema(key: &str, generator: &mut SchemaGenerator) -> Schema {
    let options = match key {
        "embed" => generator.subschema_for::<EmbedSpec>(),
        "train" => generator.subschema_for::<TrainSpec>(),
        "fuse" => generator.subschema_for::<FuseSpec>(),
        "score" => generator.subschema_for::<ScoreSpec>(),
        "select" => generator.subschema_for::<SelectSpec>(),
        _ => generator.subschema_for::<EvaluateSpec>(),
    };
    json_schema!({"anyOf": [options, {"type": "null"}]})
}

/// One entry of `nodes:`: exactly one operator key, and what it reads.
fn node_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut properties = Map::new();
    for key in OPERATOR_KEYS {
        let doc = crate::registry::operator(key).map_or("", |op| op.summary);
        let mut schema = operator_schema(key, generator);
        schema.insert("description".into(), Value::from(doc));
        properties.insert((*key).into(), schema.to_value());
    }
    properties.insert(
        "input".into(),
        serde_json::json!({"type": "string", "description": "the node or source it reads"}),
    );
    properties.insert(
        "inputs".into(),
        serde_json::json!({
            "type": "array",
            "items": {"type": "string"},
            "description": "the nodes or sources it reads"
        }),
    );
    let one_operator: Vec<Value> = OPERATOR_KEYS
        .iter()
        .map(|key| serde_json::json!({"required": [key]}))
        .collect();
    json_schema!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
        "oneOf": one_operator,
    })
}

/// The JSON Schema (draft 2020-12) of a pipeline file.
pub fn pipeline_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let section = |mut schema: Schema, doc: &str| {
        schema.insert("description".into(), Value::from(doc));
        schema.to_value()
    };
    let data = generator.subschema_for::<DataSpec>();
    let protocol = generator.subschema_for::<ProtocolSpec>();
    let output = generator.subschema_for::<OutputSpec>();
    let checkpoint = generator.subschema_for::<CheckpointSpec>();
    let cluster = generator.subschema_for::<ClusterSpec>();
    let study = generator.subschema_for::<StudySpec>();
    let node = node_schema(&mut generator);
    let properties = serde_json::json!({
        "version": {"const": 1, "description": "the pipeline format: 1"},
        "name": {"type": "string", "description": "experiment name (default: the file name)"},
        "seed": {
            "type": "integer",
            "minimum": 0,
            "default": defaults::SEED,
            "description": "seed of every random choice",
        },
        "workers": {
            "type": "integer",
            "minimum": 1,
            "default": defaults::WORKERS,
            "description": "engine worker threads per process",
        },
        "device": {
            "type": "string",
            "pattern": DEVICE_FORM,
            "default": defaults::DEVICE,
            "description": "`cpu`, `cuda` or `cuda:N`",
        },
        "data": section(data, "the logged events and the item text"),
        "protocol": section(protocol, "how events become rounds: `pool`, `replay` or `selection`"),
        "nodes": {
            "type": "object",
            "description": "the pipeline's nodes by id, each with one operator",
            "additionalProperties": node,
        },
        "output": section(output, "where results go and what is written"),
        "checkpoint": section(checkpoint, "how often a run saves what `--resume` continues from"),
        "cluster": section(cluster, "the processes of a run on several processes or machines"),
        "study": section(study, "run the pipeline as arms x seeds and compare the arms"),
    });
    let mut schema = json_schema!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "recsift pipeline",
        "description": "A recsift pipeline file (see the README's pipeline reference).",
        "type": "object",
        "properties": properties,
        "required": ["version", "nodes"],
        "additionalProperties": false,
    });
    let mut definitions = generator.take_definitions(true);
    add_defaults(&mut definitions);
    describe_strategies(&mut definitions);
    restrict_strategy_options(&mut definitions);
    add_forms(&mut definitions);
    definitions.values_mut().for_each(unlink_descriptions);
    schema.insert("$defs".into(), Value::Object(definitions));
    schema.to_value()
}

/// The forms of the options written as text, as patterns that accept what the planner
/// parses (tested against the parsers), so editors flag `7days` or `gpu` as they are typed.
const DEVICE_FORM: &str = r"^(cpu|cuda(:[0-9]+)?)$";
/// A window's length (`7d`, `12h`, `30m`, `90s`, `2w`).
const DURATION_FORM: &str = r"^\s*0*[1-9][0-9]*[smhdw]\s*$";
/// A memory size (`512MiB`, `4 GiB`).
const MEMORY_FORM: &str = r"^\s*[0-9]+\s*(B|KiB|MiB|GiB|TiB)\s*$";

/// Adds each text option's form to its property.
fn add_forms(definitions: &mut Map<String, Value>) {
    let forms = [
        ("ReplaySpec", "window", DURATION_FORM),
        ("ReplaySpec", "sort_memory", MEMORY_FORM),
    ];
    for (definition, property, form) in forms {
        if let Some(property) = property_mut(definitions, definition, property) {
            property.insert("pattern".into(), Value::from(form));
        }
    }
}

/// The schema of `property` of the definition `definition`, if both exist.
fn property_mut<'a>(
    definitions: &'a mut Map<String, Value>,
    definition: &str,
    property: &str,
) -> Option<&'a mut Map<String, Value>> {
    definitions
        .get_mut(definition)?
        .get_mut("properties")?
        .get_mut(property)?
        .as_object_mut()
}

/// An option's default as the schema gives it.
enum SchemaDefault {
    /// A value, which editors show beside the key.
    Value(Value),
    /// A rule in words, added to the key's description.
    Rule(String),
}

/// Every option's default, by definition (in `$defs`) and property, from
/// [`crate::registry::defaults`] or the homes it names; rules in the reference's words.
fn option_defaults() -> Vec<(&'static str, &'static str, SchemaDefault)> {
    use SchemaDefault::Rule;
    fn v(value: impl serde::Serialize) -> SchemaDefault {
        SchemaDefault::Value(serde_json::to_value(value).expect("a default is plain data"))
    }
    let columns = EventColumns::default();
    let cluster = ClusterPlan::single();
    vec![
        ("DataSpec", "label", v(defaults::LABEL)),
        ("ColumnsSpec", "user", v(columns.user)),
        ("ColumnsSpec", "item", v(columns.item)),
        ("ColumnsSpec", "label", v(columns.label)),
        ("ColumnsSpec", "time", v(columns.time)),
        ("ItemsSpec", "id", v(defaults::ITEM_ID)),
        ("ItemsSpec", "text", v(defaults::ITEM_TEXT)),
        (
            "PoolSpec",
            "labelled",
            v(serde_json::json!({"fraction": defaults::LABELLED_FRACTION})),
        ),
        ("PoolSpec", "rounds", v(defaults::ROUNDS)),
        ("SelectionSpec", "rounds", v(defaults::ROUNDS)),
        ("SelectionSpec", "warmup_epochs", v(defaults::WARMUP_EPOCHS)),
        ("RandomSplitSpec", "cold_items", v(defaults::COLD_ITEMS)),
        (
            "RandomSplitSpec",
            "validation",
            v(defaults::VALIDATION_FRACTION),
        ),
        ("TemporalSplitSpec", "leave_last", v(defaults::LEAVE_LAST)),
        (
            "TemporalSplitSpec",
            "validation_last",
            v(defaults::VALIDATION_LAST),
        ),
        ("ReplaySpec", "warmup_windows", v(defaults::WARMUP_WINDOWS)),
        ("ReplaySpec", "free_labels", v(defaults::FREE_LABELS)),
        ("ReplaySpec", "batch_rows", v(defaults::BATCH_ROWS)),
        (
            "ReplaySpec",
            "sort_memory",
            v(format_memory(DEFAULT_SORT_MEMORY)),
        ),
        (
            "OutputSpec",
            "dir",
            Rule(format!(
                "`{}/<name>` in the current directory",
                defaults::RESULTS_DIR
            )),
        ),
        ("OutputSpec", "plots", v(defaults::PLOTS)),
        ("RecommendationsSpec", "k", v(defaults::RECOMMENDATIONS_K)),
        (
            "RecommendationsSpec",
            "users",
            v(defaults::RECOMMENDED_USERS),
        ),
        (
            "RecommendationsSpec",
            "every_round",
            v(defaults::RECOMMEND_EVERY_ROUND),
        ),
        ("CheckpointSpec", "every", v(defaults::CHECKPOINT_EVERY)),
        (
            "CheckpointSpec",
            "min_interval_s",
            v(defaults::CHECKPOINT_MIN_INTERVAL_S),
        ),
        ("ClusterSpec", "processes", v(cluster.processes)),
        ("ClusterSpec", "process", v(cluster.process)),
        ("ClusterSpec", "port", v(ClusterPlan::DEFAULT_PORT)),
        (
            "ClusterSpec",
            "timeout_s",
            v(ClusterPlan::DEFAULT_TIMEOUT_S),
        ),
        (
            "EmbedSpec",
            "model",
            v(crate::model::encoder::DEFAULT_MODEL),
        ),
        ("EmbedSpec", "cache", Rule(shown("embed", "cache"))),
        ("EmbedSpec", "batch_size", v(defaults::EMBED_BATCH_SIZE)),
        ("TrainOptions", "dim", v(defaults::DIM)),
        ("TrainOptions", "init_std", v(defaults::INIT_STD)),
        ("TrainOptions", "members", v(defaults::MEMBERS)),
        ("TrainOptions", "epochs", v(defaults::EPOCHS)),
        (
            "TrainOptions",
            "epochs_per_round",
            v(defaults::EPOCHS_PER_ROUND),
        ),
        ("TrainOptions", "refit", v(defaults::REFIT)),
        ("TrainOptions", "rehearsal", v(defaults::REHEARSAL)),
        ("TrainOptions", "batch_size", v(defaults::BATCH_SIZE)),
        ("TrainOptions", "loss", Rule(shown("train", "loss"))),
        ("TrainOptions", "hidden", v(defaults::HIDDEN)),
        ("TrainOptions", "dropout", v(defaults::DROPOUT)),
        ("SgdSpec", "lr", v(defaults::SGD_LR)),
        ("SgdSpec", "weight_decay", v(defaults::SGD_WEIGHT_DECAY)),
        ("AdamSpec", "lr", v(defaults::ADAM_LR)),
        ("AdamSpec", "beta1", v(defaults::ADAM_BETA1)),
        ("AdamSpec", "beta2", v(defaults::ADAM_BETA2)),
        ("AdamSpec", "eps", v(defaults::ADAM_EPS)),
        ("AdamSpec", "weight_decay", v(defaults::ADAM_WEIGHT_DECAY)),
        ("EarlyStoppingSpec", "patience", v(defaults::PATIENCE)),
        ("EarlyStoppingSpec", "max_epochs", v(defaults::MAX_EPOCHS)),
        ("TuneSpec", "layers", v(defaults::TUNE_LAYERS)),
        ("TuneSpec", "lr", Rule(shown("train", "tune.lr"))),
        ("LoraSpec", "rank", v(defaults::LORA_RANK)),
        ("LoraSpec", "alpha", v(defaults::LORA_ALPHA)),
        (
            "TuneSpec",
            "items_per_step",
            v(defaults::TUNE_ITEMS_PER_STEP),
        ),
        ("SelectSpec", "per_user", v(defaults::PER_USER)),
        (
            "SelectSpec",
            "candidates",
            Rule(shown("select", "candidates")),
        ),
        (
            "EvaluateSpec",
            "metrics",
            Rule(shown("evaluate", "metrics")),
        ),
        (
            "EvaluateSpec",
            "relevant",
            Rule(shown("evaluate", "relevant")),
        ),
        (
            "EvaluateSpec",
            "candidates",
            v(defaults::CANDIDATES.to_string()),
        ),
        ("StudySpec", "seeds", v(defaults::STUDY_SEEDS)),
        (
            "StudySpec",
            "share_round_zero",
            v(defaults::SHARE_ROUND_ZERO),
        ),
    ]
}

/// The reference's words for the default of option `name` of `operator` (`train`: its
/// train options).
fn shown(operator: &str, name: &str) -> String {
    registry::option_of(operator, name).map_or_else(String::new, |o| o.default.to_string())
}

/// Gives every option in [`option_defaults`] its default: a value as the property's
/// `default`, a rule at the end of its description.
fn add_defaults(definitions: &mut Map<String, Value>) {
    for (definition, property, default) in option_defaults() {
        let Some(property) = property_mut(definitions, definition, property) else {
            continue;
        };
        match default {
            SchemaDefault::Value(value) => {
                property.insert("default".into(), value);
            }
            SchemaDefault::Rule(rule) => {
                let doc = property.get("description").and_then(Value::as_str);
                let doc = format!("{} Default: {rule}.", doc.unwrap_or_default());
                property.insert("description".into(), Value::from(doc.trim_start()));
            }
        }
    }
}

/// Each strategy's description in the schema is its registry doc, as in the README (the
/// enum's variant docs are one-line reminders for Rust readers).
fn describe_strategies(definitions: &mut Map<String, Value>) {
    let Some(Value::Array(variants)) = definitions
        .get_mut("Strategy")
        .and_then(|d| d.get_mut("oneOf"))
    else {
        return;
    };
    for variant in variants.iter_mut().filter_map(Value::as_object_mut) {
        let def = variant
            .get("const")
            .and_then(Value::as_str)
            .and_then(Strategy::by_name);
        if let Some(def) = def {
            variant.insert("description".into(), Value::from(def.doc));
        }
    }
}

/// Lets each `select:` option that only some strategies take (`space`, `candidates`) be
/// written only beside those strategies, as the registry lists them, so editors flag
/// `space` under `strategy: random` as the planner does.
fn restrict_strategy_options(definitions: &mut Map<String, Value>) {
    let Some(Value::Object(select)) = definitions.get_mut("SelectSpec") else {
        return;
    };
    let rules: Vec<Value> = SelectSpec::STRATEGY_OPTIONS
        .into_iter()
        .map(|name| {
            let takers: Vec<&str> = registry::strategies_with(name)
                .map(|def| def.name)
                .collect();
            serde_json::json!({
                "if": {"not": {"properties": {"strategy": {"enum": takers}}}},
                "then": {"properties": {name: false}},
            })
        })
        .collect();
    select.insert("allOf".into(), Value::Array(rules));
}

/// Rewrites the rustdoc links of every description below `value` (`` [`Loss`] ``,
/// `` [`name`](crate::path) ``) as the plain code they name, for editors that show them.
fn unlink_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, entry) in map.iter_mut() {
                match entry {
                    Value::String(text) if key == "description" => *text = unlinked(text),
                    _ => unlink_descriptions(entry),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unlink_descriptions),
        _ => {}
    }
}

/// `text` with each `` [`code`] `` or `` [`code`](target) `` written as `` `code` ``.
fn unlinked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("[`") {
        let Some(end) = rest[start..].find("`]").map(|e| start + e) else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&rest[start + 1..end + 1]);
        rest = &rest[end + 2..];
        if let Some(close) = rest.strip_prefix('(').and_then(|r| r.find(')')) {
            rest = &rest[close + 2..];
        }
    }
    out.push_str(rest);
    out
}

/// A metric's name in the schema (the spec keeps it a string, which the planner reads with
/// [`crate::metrics::Metric::parse`]): one of the registry's names, a ranking metric's with
/// any positive cut-off.
pub struct MetricName;

impl JsonSchema for MetricName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MetricName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<Value> = crate::metrics::METRICS
            .iter()
            .map(|def| match def.name.strip_suffix("@K") {
                Some(base) => serde_json::json!({
                    "pattern": format!("^{base}@[1-9][0-9]*$"),
                    "examples": [format!("{base}@10")],
                    "description": def.doc,
                }),
                None => serde_json::json!({"const": def.name, "description": def.doc}),
            })
            .collect();
        json_schema!({
            "type": "string",
            "description": "a metric: `rmse`, `ndcg@10`, ... (ranking metrics take any cut-off)",
            "anyOf": names,
        })
    }
}

/// `evaluate.candidates:` is a name or `{sampled: {negatives: N}}`.
impl JsonSchema for super::schema::CandidatesSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CandidatesSpec".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`all`, `test_items` or `{sampled: {negatives: N}}`",
            "oneOf": [
                {"enum": ["all", "test_items"]},
                {
                    "type": "object",
                    "properties": {"sampled": {
                        "type": "object",
                        "properties": {"negatives": {"type": "integer", "minimum": 1}},
                        "required": ["negatives"],
                        "additionalProperties": false
                    }},
                    "required": ["sampled"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// `study.seeds:` is a count or a list.
impl JsonSchema for super::schema::SeedsSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SeedsSpec".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "a number of seeds (from `seed` up) or a list of seeds",
            "oneOf": [
                {"type": "integer", "minimum": 1},
                {"type": "array", "items": {"type": "integer", "minimum": 0}}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_accept_exactly_what_the_planner_parses() {
        use crate::plan::params::DeviceChoice;
        let schema = pipeline_schema();
        let replay = &schema["$defs"]["ReplaySpec"]["properties"];
        assert_eq!(schema["properties"]["device"]["pattern"], DEVICE_FORM);
        assert_eq!(replay["window"]["pattern"], DURATION_FORM);
        assert_eq!(replay["sort_memory"]["pattern"], MEMORY_FORM);
        let matches = |form: &str, text: &str| {
            jsonschema::validator_for(&serde_json::json!({"pattern": form}))
                .unwrap()
                .is_valid(&Value::from(text))
        };
        // A form, the planner's parser, and texts both are asked about.
        type Case = (&'static str, fn(&str) -> bool, &'static [&'static str]);
        let cases: [Case; 3] = [
            (
                DEVICE_FORM,
                |t| DeviceChoice::parse(t).is_some(),
                &[
                    "cpu", "cuda", "cuda:0", "cuda:12", "gpu", "CUDA", "cuda:", "cuda:-1", " cpu",
                    "cpu ",
                ],
            ),
            (
                DURATION_FORM,
                |t| crate::plan::build::parse_duration(t).is_some(),
                &[
                    "7d", "12h", "30m", "90s", "2w", " 7d ", "007d", "0d", "7", "d", "7days", "7D",
                    "-1d", "1.5h",
                ],
            ),
            (
                MEMORY_FORM,
                |t| crate::io::sort::parse_memory(t).is_some(),
                &[
                    "512MiB", "4 GiB", "1TiB", "100B", "16KiB", " 2GiB ", "512MB", "4 gib", "GiB",
                    "1.5GiB", "-1MiB",
                ],
            ),
        ];
        for (form, parses, examples) in cases {
            for text in examples {
                assert_eq!(matches(form, text), parses(text), "{form} on {text:?}");
            }
        }
    }

    #[test]
    fn strategies_are_listed_by_name_with_their_registry_docs() {
        let schema = pipeline_schema();
        let listed: Vec<(&str, &str)> = schema["$defs"]["Strategy"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["const"].as_str().unwrap(),
                    v["description"].as_str().unwrap(),
                )
            })
            .collect();
        let registered: Vec<(&str, &str)> = crate::registry::STRATEGIES
            .iter()
            .map(|def| (def.name, def.doc))
            .collect();
        assert_eq!(listed, registered);
    }

    #[test]
    fn descriptions_show_rustdoc_links_as_plain_code() {
        assert_eq!(
            unlinked(
                "the loss ([`Loss::default_for`](crate::scoring::Loss::default_for)) and [`X`]."
            ),
            "the loss (`Loss::default_for`) and `X`."
        );
        assert_eq!(unlinked("no [link] here, [`open"), "no [link] here, [`open");
        let text = pipeline_schema().to_string();
        assert!(!text.contains("[`"), "a rustdoc link is left in the schema");
    }

    #[test]
    fn every_default_names_a_property_of_the_schema() {
        let schema = pipeline_schema();
        for (definition, property, default) in option_defaults() {
            let found = &schema["$defs"][definition]["properties"][property];
            assert!(found.is_object(), "{definition}.{property}");
            if let SchemaDefault::Rule(rule) = default {
                assert!(!rule.is_empty(), "{definition}.{property}");
            }
        }
    }

    #[test]
    fn the_schema_gives_every_value_default_the_reference_shows() {
        use crate::registry::DefaultValue;
        let schema = pipeline_schema();
        let operator = |key| registry::operator(key).map_or(&[][..], |op| op.options);
        let sections = [
            ("TrainOptions", registry::TRAIN_OPTIONS),
            ("EmbedSpec", operator("embed")),
            ("SelectSpec", operator("select")),
            ("EvaluateSpec", operator("evaluate")),
        ];
        for (definition, options) in sections {
            for option in options {
                let expected = match option.default {
                    DefaultValue::Int(v) => Value::from(v),
                    DefaultValue::Float(v) => Value::from(v),
                    DefaultValue::Bool(v) => Value::from(v),
                    DefaultValue::Name(v) => Value::from(v),
                    _ => continue,
                };
                // `optimizer.sgd.lr` is `lr` of `SgdSpec`, and so on.
                let (definition, property) = match option.name.rsplit_once('.') {
                    Some(("optimizer.sgd", p)) => ("SgdSpec", p),
                    Some(("optimizer.adam", p)) => ("AdamSpec", p),
                    Some(("early_stopping", p)) => ("EarlyStoppingSpec", p),
                    Some(("tune", p)) => ("TuneSpec", p),
                    Some(("tune.lora", p)) => ("LoraSpec", p),
                    _ => (definition, option.name),
                };
                assert_eq!(
                    schema["$defs"][definition]["properties"][property]["default"], expected,
                    "{definition}.{property}"
                );
            }
        }
    }
}
