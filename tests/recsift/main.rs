//! recsift's integration tests: one binary (each test binary links candle and arrow, so
//! they are kept together), one module per concern.

mod cluster;
mod common;
mod embed;
mod errors;
mod evaluation;
mod experiment;
mod fuzz;
mod pipelines;
mod resume;
mod sort;
mod study;
