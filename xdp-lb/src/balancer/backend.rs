//! One server of a service as the balancer holds it: its id, epoch, health and where its
//! frames go, and the `backends` entry that follows from them.

use xdp_lb_common::{BACKEND_F_VALID, BackendValue};

use crate::config::{Backend, MacAddr};

/// Where frames for a backend go: its MAC and the LB interface towards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding {
    pub mac: MacAddr,
    pub src_mac: MacAddr,
    pub ifindex: u32,
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
}

impl BackendState {
    /// May receive frames: resolved and healthy. Its entry is valid, so flows already on
    /// it stay (a drained backend, weight 0, is usable but not in the table).
    pub fn usable(&self) -> bool {
        self.forwarding.is_some() && self.healthy
    }

    /// In the Maglev table: usable and with a weight above zero.
    pub fn in_table(&self) -> bool {
        self.usable() && self.config.weight > 0
    }

    /// Its `backends` entry: valid only while usable.
    pub(super) fn entry(&self) -> BackendValue {
        match (self.forwarding, self.usable()) {
            (Some(f), true) => BackendValue {
                mac: f.mac.0,
                src_mac: f.src_mac.0,
                ifindex: f.ifindex,
                flags: BACKEND_F_VALID,
                epoch: self.epoch,
            },
            // Keep the MAC for the record, but never let a frame use it.
            (Some(f), false) => BackendValue {
                mac: f.mac.0,
                src_mac: f.src_mac.0,
                ifindex: f.ifindex,
                flags: 0,
                epoch: self.epoch,
            },
            (None, _) => BackendValue {
                epoch: self.epoch,
                ..BackendValue::default()
            },
        }
    }
}
