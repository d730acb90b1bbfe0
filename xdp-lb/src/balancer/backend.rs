//! One server of a service as the balancer holds it: its id, epoch, health and where its
//! frames go, and the `backends` entry that follows from them.

use xdp_lb_common::{
    BACKEND_F_NO_NEW, BACKEND_F_VALID, BackendOwner, BackendValue, OWNER_F_HEALTHY, ServiceKey,
    addr_words, backend_vlan_flags,
};

use crate::config::{Backend, DownAction, MacAddr};

/// Where frames for a backend go: its MAC and the LB interface towards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding {
    pub mac: MacAddr,
    pub src_mac: MacAddr,
    pub ifindex: u32,
}

/// The service a backend belongs to, as its entry and owner record need it.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub key: ServiceKey,
    pub when_down: DownAction,
}

/// One backend of one service.
#[derive(Clone, Debug)]
pub struct BackendState {
    pub id: u32,
    pub config: Backend,
    /// `None` until the MAC is known.
    pub forwarding: Option<Forwarding>,
    /// As the health checks last decided (always true without health checks).
    pub healthy: bool,
    /// Distinguishes this backend from earlier holders of its id (see `BackendValue::epoch`).
    pub epoch: u32,
    /// Its service's `when_backend_down`: whether its flows stay while it is down.
    pub when_down: DownAction,
}

impl BackendState {
    /// Takes part in its pool: resolved and healthy (its weight then decides its share;
    /// a drained backend, weight 0, takes part with no share).
    pub fn usable(&self) -> bool {
        self.forwarding.is_some() && self.healthy
    }

    /// In the Maglev table: usable and with a weight above zero.
    pub fn in_table(&self) -> bool {
        self.usable() && self.config.weight > 0
    }

    /// Frames of the flows already placed on it may reach it: resolved, and healthy or
    /// down with its service keeping a down backend's flows.
    pub fn keeps_flows(&self) -> bool {
        self.forwarding.is_some() && (self.healthy || self.when_down == DownAction::KeepFlows)
    }

    /// Its `backends` entry: valid while it keeps flows, refusing new connections unless it
    /// is in a table, with its own VLAN when it is on another than its service's; it keeps
    /// its MAC for the record even when invalid.
    pub(super) fn entry(&self) -> BackendValue {
        let Some(f) = self.forwarding else {
            return BackendValue {
                epoch: self.epoch,
                ..BackendValue::default()
            };
        };
        let mut flags = backend_vlan_flags(self.config.vlan.unwrap_or(0));
        if self.keeps_flows() {
            flags |= BACKEND_F_VALID;
            if !self.in_table() {
                flags |= BACKEND_F_NO_NEW;
            }
        }
        BackendValue {
            mac: f.mac.0,
            src_mac: f.src_mac.0,
            ifindex: f.ifindex,
            flags,
            epoch: self.epoch,
        }
    }

    /// Its `backend_owners` entry: whose it is, for the next agent.
    pub(super) fn owner(&self, service: &ServiceKey) -> BackendOwner {
        BackendOwner {
            service: *service,
            addr: addr_words(self.config.address),
            flags: if self.healthy { OWNER_F_HEALTHY } else { 0 },
        }
    }
}

/// Whether frames may be given to a backend with this entry as a new connection's choice.
pub(super) fn accepts_new(entry: &BackendValue) -> bool {
    entry.flags & (BACKEND_F_VALID | BACKEND_F_NO_NEW) == BACKEND_F_VALID
}
