//! A service's named pools (`pools:`) and client rules (`clients:`): as written (`raw.rs`),
//! checked (`validate.rs`), validated (`model.rs`, with the client prefixes of `prefix.rs`)
//! and written back (`render.rs`, which writes a service's servers, pools and rules); their
//! tests (`tests.rs`).

pub(crate) mod model;
pub(crate) mod prefix;
pub(crate) mod raw;
pub(crate) mod render;
pub(crate) mod validate;

#[cfg(test)]
mod tests;
