//! What every section of the file shares, in every phase: errors with their locations
//! (`errors.rs`, `locate.rs`), numbers and durations as written and checked (`number.rs`,
//! `duration.rs`), the validation pass and its common checks (`checker.rs`), what
//! validation asks of the host (`host.rs`) and YAML scalars for the effective config
//! (`yaml.rs`). Nothing here imports a section.

pub(crate) mod checker;
pub(crate) mod duration;
pub(crate) mod errors;
pub(crate) mod host;
pub(crate) mod locate;
pub(crate) mod number;
pub(crate) mod yaml;
