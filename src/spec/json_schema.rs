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
use crate::registry::DefaultValue;

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
        "seed": {"type": "integer", "minimum": 0, "description": "seed of every random choice (default 42)"},
        "workers": {"type": "integer", "minimum": 1, "description": "engine worker threads per process (default 1)"},
        "device": {"type": "string", "description": "`cpu` (default), `cuda` or `cuda:N`"},
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
    add_train_defaults(&mut definitions);
    schema.insert("$defs".into(), Value::Object(definitions));
    schema.to_value()
}

/// Gives the train options the planner's defaults (from the registry) where they are a
/// value, which editors show beside each key.
fn add_train_defaults(definitions: &mut Map<String, Value>) {
    let Some(properties) = definitions
        .get_mut("TrainOptions")
        .and_then(|t| t.get_mut("properties"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for option in crate::registry::TRAIN_OPTIONS {
        let default = match option.default {
            DefaultValue::Int(v) => Value::from(v),
            DefaultValue::Float(v) => Value::from(v),
            DefaultValue::Name(name) => Value::from(name),
            _ => continue,
        };
        if let Some(Value::Object(property)) = properties.get_mut(option.name) {
            property.insert("default".into(), default);
        }
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
