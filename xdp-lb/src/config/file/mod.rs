//! The document as a whole and its top-level keys (`interfaces`, `xdp_mode`,
//! `flow_hash_seed`, `maglev_table_slots`, `flow_table`): reading a file (`load.rs`), its
//! serde schema (`raw.rs`), the validation pass over every section (`validate.rs`), the
//! validated `ConfigFile` and `Config` (`model.rs`), the effective configuration written
//! back (`render.rs`) and whole-service edits of a running one (`edit.rs`); tests of
//! reading whole files (`tests.rs`, `tests_durations.rs`).

pub(crate) mod edit;
pub(crate) mod load;
pub(crate) mod model;
pub(crate) mod raw;
pub(crate) mod render;
pub(crate) mod validate;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_durations;
