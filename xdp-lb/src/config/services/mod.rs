//! A service (one entry of `services:`) and its backends: as written (`raw.rs`, and
//! `backend.rs` for a server entry), checked (`validate.rs`; `side.rs` is what the servers of
//! its pools, backups and fallbacks are checked against), validated (`model.rs`,
//! `backend.rs`) and written back (`file/render.rs` writes its keys, `pools/render.rs` its
//! servers); their tests (`tests.rs`, one per rule; `tests_vlans.rs`). Its pools, checks
//! and standbys are sections of their own (`pools/`, `health/`, `failover/`).

pub(crate) mod backend;
pub(crate) mod model;
pub(crate) mod raw;
pub(crate) mod side;
pub(crate) mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_vlans;
