//! A service (one entry of `services:`) as written: the serde schema, read loosely as in
//! `file/raw.rs` and checked in `validate.rs`. Its servers are in `backend.rs`, its pools and
//! client rules in `pools/raw.rs`, its check in `health/raw.rs`.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::backend::RawBackend;
use crate::config::{
    health::raw::RawHealthCheck,
    pools::raw::{RawClientRule, RawPools},
    shared::{duration::RawDuration, number::Number},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Spanned<String>,
    pub vip: Spanned<String>,
    pub port: Spanned<Number>,
    pub protocol: Spanned<String>,
    #[serde(default)]
    pub maglev_size: Option<Spanned<Number>>,
    #[serde(default)]
    pub when_no_backend: Option<Spanned<String>>,
    #[serde(default)]
    pub when_backend_down: Option<Spanned<String>>,
    #[serde(default)]
    pub persistence: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub persistence_netmask: Option<Spanned<Number>>,
    #[serde(default)]
    pub hash: Option<Spanned<String>>,
    #[serde(default)]
    pub vlan: Option<Spanned<Number>>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
    #[serde(default)]
    pub fallback: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    pub backends: Spanned<Vec<Spanned<RawBackend>>>,
    #[serde(default)]
    pub pools: Option<Spanned<RawPools>>,
    #[serde(default)]
    pub clients: Option<Spanned<Vec<Spanned<RawClientRule>>>>,
    /// Read with `announce:` (`announce/mod.rs`).
    #[serde(default)]
    pub min_healthy: Option<Spanned<Number>>,
}
