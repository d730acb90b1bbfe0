//! `health_check:` blocks (a service's, a pool's, a server's): as written (`raw.rs`),
//! checked (`validate.rs`), validated (`model.rs`) and written back (`render.rs`). Their
//! tests are with the rest of the failover settings (`failover/tests.rs`).

pub(crate) mod model;
pub(crate) mod raw;
pub(crate) mod render;
pub(crate) mod validate;
