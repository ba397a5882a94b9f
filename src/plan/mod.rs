//! The plan: a validated, typed IR of a pipeline with every default resolved.

pub mod params;
