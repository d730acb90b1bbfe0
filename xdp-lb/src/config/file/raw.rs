//! The file as written: the serde schema of the document and its top-level keys (each
//! section's keys are in its own `raw.rs`). Every value keeps its location (`Spanned`) so
//! validation can point at it; values whose check gives a better message than serde's
//! (addresses, names, enumerations, numbers) are read loosely and checked in the
//! `validate.rs` files, so all their errors are reported at once.

// YAML is read with serde-saphyr rather than the archived serde_yaml: it is pure Rust,
// designed and fuzzed not to panic on any input, and its errors and `Spanned<T>` values
// carry the line and column we need to point operators at the exact place in the file.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{
    announce::raw::RawAnnounce,
    failover::raw::RawNotify,
    ops::raw::{RawMetrics, RawRegistration},
    services::raw::RawService,
    shared::{duration::RawDuration, number::Number},
    sync::raw::RawSync,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub flow_hash_seed: Option<Spanned<Number>>,
    #[serde(default)]
    pub xdp_mode: Option<Spanned<String>>,
    pub interfaces: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub maglev_table_slots: Option<Spanned<Number>>,
    #[serde(default)]
    pub flow_table: Option<Spanned<RawFlowTable>>,
    #[serde(default)]
    pub notify: Option<Spanned<RawNotify>>,
    #[serde(default)]
    pub metrics: Option<Spanned<RawMetrics>>,
    #[serde(default)]
    pub registration: Option<Spanned<RawRegistration>>,
    #[serde(default)]
    pub announce: Option<Spanned<RawAnnounce>>,
    #[serde(default)]
    pub sync: Option<Spanned<RawSync>>,
    pub services: Spanned<Vec<Spanned<RawService>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlowTable {
    #[serde(default)]
    pub size: Option<Spanned<Number>>,
    #[serde(default)]
    pub tcp_timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub udp_timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub tcp_fin_timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub tcp_close_timeout: Option<Spanned<RawDuration>>,
}
