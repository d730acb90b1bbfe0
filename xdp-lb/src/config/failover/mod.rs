//! Who stands in for a dead server (a primary's `backup:`, a pool's `fallback:`) and who
//! is told (the top-level `notify:`), assembled with every server's check into the
//! validated failover settings: as written (`raw.rs`; `backup` and `fallback` are keys of
//! `services/`), checked (`validate.rs`), validated (`model.rs`) and written back
//! (`render.rs`); their tests, checks included (`tests.rs`).

pub(crate) mod model;
pub(crate) mod raw;
pub(crate) mod render;
pub(crate) mod validate;

#[cfg(test)]
mod tests;
