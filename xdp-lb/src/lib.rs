//! The xdp-lb agent as a library: configuration, Maglev, the data plane's maps, neighbour
//! resolution and the control loop. `main.rs` is the command line on top; tests and xtask
//! use the same pieces.

pub mod agent;
pub mod announce;
pub mod audit;
pub mod balancer;
pub mod config;
pub mod console;
pub mod control;
pub mod dataplane;
pub mod files;
pub mod health;
pub mod http1;
pub mod logging;
pub mod maglev;
pub mod metrics;
pub mod neighbour;
pub mod pins;
pub mod regions;
pub mod register;
pub mod reload;
pub mod runtime;
pub mod simulate;
pub mod sync;

/// The compiled data plane (built by build.rs through aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb"));
