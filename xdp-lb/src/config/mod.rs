//! Configuration: the YAML file, its validation and the effective config.
mod model;

pub use model::*;
