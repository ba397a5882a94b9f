//! Benchmarks behind `recsift bench`: each measures one part of recsift on given inputs
//! and returns a serialisable report (the CLI prints it as text or `--json`).

pub mod embed;
