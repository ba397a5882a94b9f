//! recsift: active learning and sample selection for recommender systems on pretrained
//! language models, described as YAML pipelines and executed as incremental dataflow.
//!
//! The layers, each a module with one job (see `docs/architecture.md`):
//!
//! ```text
//! spec      YAML exactly as written (serde), with source locations for errors
//!  -> plan  typed, validated IR: nodes, resolved defaults, checked edges
//!  -> driver rounds of the experiment protocol; calls the trainer and the engine
//!     -> dataflow  the incremental engine (the only module that imports timely/differential)
//!     -> model     candle recommenders and the text encoder (the only module that imports candle)
//!     -> io        Parquet in and out, MovieLens import, embedding cache
//! strategy, metrics, scoring, seeding: pure functions, no I/O and no engine types
//! error     the one rule from an error to an exit code (2: the user can fix it, 1: internal)
//! suggest   the one "did you mean" rule, for keys, values, columns and arms
//! failpoint named points where tests kill the process, to test `--resume`
//! synth     synthetic interaction logs (`recsift gen`), written through io
//! study     the statistics and report of a study (arms x seeds), from plain round records
//! fixtures  where tests find data the repository cannot hold (MovieLens 100K, MiniLM weights)
//! ```
#![deny(missing_docs)]

pub mod bench;
pub mod data;
pub mod dataflow;
pub mod driver;
pub mod error;
pub mod failpoint;
pub mod fixtures;
pub mod io;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod registry;
pub mod report;
pub mod results;
pub mod sample_table;
pub mod scoring;
pub mod seeding;
pub mod spec;
pub mod strategy;
pub mod study;
pub mod suggest;
pub mod synth;
