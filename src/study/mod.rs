//! Studies: one pipeline run as a grid of arms over several seeds, and the comparison of the
//! arms (the product's main output for active-learning papers).

pub mod plan;
pub mod run;
