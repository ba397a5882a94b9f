//! recsift's own dataflow operators, one per file, each an extension trait on the stream or
//! arrangement type it applies to (the shape of timely's `operators/core/filter.rs`).

mod join_named;
mod score;

pub(crate) use join_named::JoinNamed;
pub(crate) use score::Score;
