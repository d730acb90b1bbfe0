//! Validated named pools and client rules: [`Pool`], [`ClientRule`] with its
//! [`ClientAction`] and [`ClientPrefix`], and [`DEFAULT_POOL`], the name of a service's own
//! backends.

use std::fmt;

pub use super::prefix::{ClientPrefix, PrefixError};
use crate::config::services::backend::Backend;

/// The name of a service's own backends as a pool (no named pool may take it).
pub const DEFAULT_POOL: &str = "default";

/// A named pool of a service: servers with a Maglev table of their own, for the clients its
/// rules send there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// `[A-Za-z0-9_.-]{1,64}`, never `default`.
    pub name: String,
    /// Its Maglev table size (prime); by default the service's.
    pub maglev_size: u32,
    pub backends: Vec<Backend>,
}

/// One client rule: clients in `prefix` (of the VIP's family) go to a pool or are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRule {
    pub prefix: ClientPrefix,
    pub action: ClientAction,
}

/// What a client rule does (kept as `{"pool": NAME}` or `"drop"` in the run-time file).
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ClientAction {
    /// New flows go to this pool (`default`: the service's own backends).
    Pool(String),
    /// The client is refused: its frames are dropped.
    Drop,
}

impl fmt::Display for ClientAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAction::Pool(name) => write!(f, "pool {name}"),
            ClientAction::Drop => f.write_str("drop"),
        }
    }
}
