//! The validated configuration: what the rest of the agent works from. Every value here has
//! passed validation (see `validate.rs`); defaults are filled in. [`ConfigFile`] is all one
//! file says; [`Config`] its balancing half: the top-level keys ([`FlowTable`],
//! [`XdpAttachMode`]) and the services (`services/model.rs`).

use std::path::PathBuf;

use crate::config::{
    announce::Announce, failover::model::Failover, ops::Ops, services::model::Service,
    sync::SyncSettings,
};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum XdpAttachMode {
    /// Driver (native) XDP: the fast path; refused by drivers without XDP support.
    #[default]
    Native,
    /// Generic (skb) XDP: works on any interface, slower.
    Generic,
}

/// Everything one configuration file says: the balanced services, their failover
/// settings and the operations endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    pub config: Config,
    pub failover: Failover,
    pub ops: Ops,
    /// When this LB announces its VIPs through BIRD; `None`: never.
    pub announce: Option<Announce>,
    /// Flow-state sync with the other LBs; `None`: off.
    pub sync: Option<SyncSettings>,
}
