//! Benchmarks behind `recsift bench`: each measures one part of recsift (against simpler
//! baselines in the same run where there are any) and returns a serialisable report that
//! prints as a table or as JSON.

pub mod embed;
pub mod parity;
pub mod rank;
pub mod replay;
pub mod rescore;
