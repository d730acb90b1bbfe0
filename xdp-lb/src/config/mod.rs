//! Configuration: the YAML file, its validation and the effective config.
//!
//! [`load_file`] / [`parse_file`] read the file and give the validated [`ConfigFile`]: the
//! balanced services ([`Config`], with their named pools and client rules) and their health
//! checks, backups, fallback pools and alerts ([`Failover`]), the metrics and registration
//! endpoints ([`Ops`]) and when VIPs are announced to the routers ([`Announce`]), or every
//! error found, each with its file, line, column and field path ([`ConfigErrors`]).
//! [`load`] / [`parse_str`] give the balancing half only (for tools that need no more).
//! [`render_file`] prints the effective configuration back as YAML.
//!
//! One folder per section of the YAML, each with the phases a setting goes through: as
//! written (`raw.rs`, the serde schema), checked (`validate.rs`), validated (`model.rs`),
//! written back (`render.rs`), and its tests:
//!
//! * `file/`: the document and its top-level keys (`interfaces`, `xdp_mode`,
//!   `flow_hash_seed`, `maglev_table_slots`, `flow_table`), reading a file (`load.rs`),
//!   the validation pass over every section and whole-service edits (`edit.rs`);
//! * `services/`: a `services:` entry and its servers (`backend.rs`);
//! * `pools/`: a service's `pools:` and `clients:` (and their prefixes, `prefix.rs`);
//! * `health/`: `health_check:` blocks;
//! * `failover/`: `backup:`, `fallback:` and `notify:`, and the failover settings they make
//!   with the checks;
//! * `ops/`: `metrics:` and `registration:`;
//! * `announce/`: `announce:`;
//! * `sync/`: `sync:`, flow-state sync with the other LBs;
//! * `shared/`: what every section uses (errors and their locations, numbers, durations,
//!   the validation pass's `Checker`, the host facts, YAML scalars); it imports no section.
//!
//! Sections import each other's files one way only: nothing imports this file, which only
//! re-exports.

mod announce;
mod failover;
mod file;
mod health;
mod ops;
mod pools;
mod services;
mod shared;
mod sync;

pub use announce::{
    ANNOUNCE_ROUTE_PROTOCOL, Announce, DEFAULT_ANNOUNCE_TABLE, DEFAULT_MIN_HEALTHY,
    DEFAULT_RESTORE_AFTER, DEFAULT_STOP_GRACE,
};
pub use failover::model::*;
pub use file::{
    edit::{revalidated, with_service_added, with_service_removed},
    load::{LiveHost, SETTLE, load, load_file, load_file_settled, parse_file, parse_str},
    model::*,
    render::{render, render_file},
};
pub use health::model::*;
pub use ops::{MAX_TOKEN_BYTES, Metrics, Ops, Registration, read_token_file};
pub use pools::model::*;
pub use services::{
    backend::{Backend, MacAddr, MacParseError},
    model::*,
};
pub use shared::{
    duration::format_duration,
    errors::{ConfigError, ConfigErrors, quoted},
    host::HostFacts,
};
pub use sync::{
    DEFAULT_SYNC_MAX_CLOCK_SKEW, DEFAULT_SYNC_MAX_RATE, DEFAULT_SYNC_PORT, DEFAULT_SYNC_REFRESH,
    MAX_SYNC_PEERS, SyncSettings, read_key_file,
};

/// Whether `name` can name a service or a pool (1 to 64 characters of A-Z a-z 0-9 _ . -).
pub fn valid_name(name: &str) -> bool {
    pools::validate::valid_pool_name(name)
}
