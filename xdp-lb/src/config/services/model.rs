//! A validated service: its listener, table and actions ([`Service`], [`Protocol`],
//! [`HashMode`], [`Persistence`], [`NoBackendAction`], [`DownAction`]), with its backends
//! (`backend.rs`) and its named pools and client rules (`pools/model.rs`).

use std::{fmt, net::IpAddr};

use super::backend::Backend;
use crate::config::pools::model::{ClientRule, DEFAULT_POOL, Pool};

/// Client persistence (`ipvsadm -p`): every connection of a client (or of its network,
/// with a shorter prefix) goes to one backend until the client has been silent this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_s: u32,
    /// Bits of the client address that identify "one client" (32/128: the address).
    pub prefix_len: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Unique name, used in logs, status and metrics.
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// Maglev table size M (prime).
    pub maglev_size: u32,
    pub when_no_backend: NoBackendAction,
    /// What happens to the established flows of a backend its health checks take down.
    pub when_backend_down: DownAction,
    /// Client persistence; `None` = every connection is balanced on its own.
    pub persistence: Option<Persistence>,
    /// What picks a backend for a new connection.
    pub hash: HashMode,
    /// The 802.1Q/802.1ad VLAN id (outer tag) this service is bound to; `None`: any VLAN
    /// and untagged frames.
    pub vlan: Option<u16>,
    /// Its own backends: the default pool, for clients no rule places elsewhere.
    pub backends: Vec<Backend>,
    /// Its named pools, in file order (each server is in one pool of the service).
    pub pools: Vec<Pool>,
    /// Its client rules, in file order (each prefix once; the longest matching one wins).
    pub clients: Vec<ClientRule>,
}

impl Service {
    /// The named pool `name` (not the default pool).
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Whether `name` is a pool of the service: the default pool or a named one.
    pub fn has_pool(&self, name: &str) -> bool {
        name == DEFAULT_POOL || self.pool(name).is_some()
    }

    /// The primaries of every pool: the default pool's, then each named pool's.
    pub fn all_backends(&self) -> impl Iterator<Item = &Backend> {
        self.backends
            .iter()
            .chain(self.pools.iter().flat_map(|p| &p.backends))
    }

    /// The backend list of the pool holding `address` (the default pool's when none does),
    /// for run-time backend changes, which work on servers of any pool.
    pub fn backends_holding_mut(&mut self, address: IpAddr) -> &mut Vec<Backend> {
        match self
            .pools
            .iter()
            .position(|p| p.backends.iter().any(|b| b.address == address))
        {
            Some(i) => &mut self.pools[i].backends,
            None => &mut self.backends,
        }
    }

    /// The pool whose primary `address` is.
    pub fn pool_of(&self, address: IpAddr) -> Option<&str> {
        if self.backends.iter().any(|b| b.address == address) {
            return Some(DEFAULT_POOL);
        }
        self.pools
            .iter()
            .find(|p| p.backends.iter().any(|b| b.address == address))
            .map(|p| p.name.as_str())
    }
}

/// What the Maglev slot of a new connection is hashed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HashMode {
    /// The 5-tuple: connections spread evenly, each on its own.
    #[default]
    Flow,
    /// The client address only (IPVS `sh`): every connection of a client lands on the same
    /// server, with no per-client state.
    Source,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => xdp_lb_common::PROTO_TCP,
            Protocol::Udp => xdp_lb_common::PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// What the data plane does with a service's frames while it has no backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NoBackendAction {
    #[default]
    Drop,
    Pass,
}

/// What happens to a backend's established flows when its health checks take it down. New
/// flows never go to a down backend either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DownAction {
    /// They stay on it (IPVS's default, keepalived without `inhibit_on_failure` aside): a
    /// false positive, such as a health page slow under load, breaks no live stream, and a
    /// server really dead loses nothing more (its connections are gone anyway).
    #[default]
    KeepFlows,
    /// They are balanced afresh to the backends left (IPVS's `expire_nodest_conn`): for
    /// protocols whose clients recover from a reset faster than from a silent peer.
    Rebalance,
}
