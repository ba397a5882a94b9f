//! Benchmarks behind `recsift bench`: each measures one part of recsift against simpler
//! baselines in the same run and returns a report that prints as a table or as JSON.

pub mod rescore;
