//! The validated configuration: what the rest of the agent works from. Every value here has
//! passed validation (see `validate.rs`); defaults are filled in.

use std::{fmt, net::IpAddr, path::PathBuf, str::FromStr};

pub use super::prefix::{ClientPrefix, PrefixError};

/// Default seed of the flow hash. Every LB that must send a flow to the same backend (an
/// anycast/ECMP group) needs the same seed, so the default is a fixed value, not a random one.
pub const DEFAULT_FLOW_HASH_SEED: u32 = 0x5eed_1b5d;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this came from (for messages).
    pub path: PathBuf,
    pub flow_hash_seed: u32,
    pub xdp_mode: XdpAttachMode,
    /// Interfaces the program is attached to (names, as in `ip link`).
    pub interfaces: Vec<String>,
    /// Capacity of `maglev_tables` in slots: room for two tables (live and next) per service.
    pub maglev_table_slots: u32,
    /// The connection table.
    pub flow_table: FlowTable,
    pub services: Vec<Service>,
}

impl Config {
    /// Slots of `maglev_tables` its services' tables take: a live and a next table for the
    /// default pool and each named pool of every service.
    pub fn table_slots_needed(&self) -> u64 {
        self.services
            .iter()
            .map(|s| {
                let pools: u64 = s.pools.iter().map(|p| u64::from(p.maglev_size)).sum();
                2 * (u64::from(s.maglev_size) + pools)
            })
            .sum()
    }
}

/// The connection table: how many flows it remembers and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTable {
    /// Entries (flows); the least recently used is evicted when it is full.
    pub size: u32,
    /// Seconds a TCP flow is remembered after its last packet.
    pub tcp_timeout_s: u32,
    /// Seconds a UDP flow is remembered after its last packet.
    pub udp_timeout_s: u32,
    /// Seconds a TCP flow whose client sent a FIN is remembered after its last packet.
    pub tcp_fin_timeout_s: u32,
    /// Seconds a TCP flow whose client sent a RST is remembered after its last packet.
    pub tcp_close_timeout_s: u32,
}

impl Default for FlowTable {
    fn default() -> Self {
        Self {
            size: xdp_lb_common::FLOW_TABLE_DEFAULT_SIZE,
            tcp_timeout_s: xdp_lb_common::FLOW_TCP_TIMEOUT_DEFAULT_S,
            udp_timeout_s: xdp_lb_common::FLOW_UDP_TIMEOUT_DEFAULT_S,
            tcp_fin_timeout_s: xdp_lb_common::FLOW_TCP_FIN_TIMEOUT_DEFAULT_S,
            tcp_close_timeout_s: xdp_lb_common::FLOW_TCP_CLOSE_TIMEOUT_DEFAULT_S,
        }
    }
}

/// Client persistence (`ipvsadm -p`): every connection of a client (or of its network,
/// with a shorter prefix) goes to one backend until the client has been silent this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_s: u32,
    /// Bits of the client address that identify "one client" (32/128: the address).
    pub prefix_len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XdpAttachMode {
    /// Driver (native) XDP: the fast path; refused by drivers without XDP support.
    #[default]
    Native,
    /// Generic (skb) XDP: works on any interface, slower.
    Generic,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub address: IpAddr,
    /// 0..=MAX_WEIGHT; 0 takes no new flows.
    pub weight: u32,
    /// Given in the config; otherwise resolved from the kernel's neighbour table.
    pub mac: Option<MacAddr>,
    /// The VLAN the backend is on when it is not its service's: its frames leave with their
    /// outer tag's VLAN id rewritten to this. `None`: the service's VLAN (the tag is kept).
    /// Only a VLAN-bound service's backends have one (a tag is rewritten, never pushed).
    pub vlan: Option<u16>,
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
    /// Group (multicast or broadcast) addresses can never name one backend.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex bytes like 02:00:5e:10:00:01)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_with_colons_or_dashes_and_print_with_colons() {
        let mac: MacAddr = "02:00:5E:10:00:01".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        assert_eq!(mac.to_string(), "02:00:5e:10:00:01");
        assert_eq!("02-00-5e-10-00-01".parse::<MacAddr>().unwrap(), mac);
    }

    #[test]
    fn malformed_mac_addresses_are_refused() {
        for bad in [
            "",
            "02:00:5e:10:00",
            "02:00:5e:10:00:01:02",
            "2:00:5e:10:00:01",
            "zz:00:5e:10:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} parsed");
        }
    }
}
