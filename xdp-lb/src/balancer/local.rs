//! The MACs frames addressed to the LB carry on each interface the program is attached to
//! (`local_macs`): the interface's own and its VLAN devices' (which the agent reads, and
//! reads again while it runs), and the source MAC of every server reached through it (a
//! VLAN device the agent did not see, say). The balancer derives the map from its servers,
//! so it follows backends added, re-resolved or removed at run time as well as a new
//! interface MAC.

use std::collections::{BTreeMap, BTreeSet};

use xdp_lb_common::MAX_LOCAL_MACS;

use super::Balancer;
use crate::config::MacAddr;

/// An interface the program is attached to, as the agent last read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInterface {
    pub ifindex: u32,
    pub name: String,
    /// Its own MAC first, then its VLAN devices' (any order, repeats allowed).
    pub macs: Vec<MacAddr>,
}

/// What `local_macs` should hold for one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalMacsPlan {
    pub name: String,
    /// Distinct, the interface's own first.
    pub macs: Vec<MacAddr>,
}

impl LocalMacsPlan {
    /// Whether the map can hold them all; an interface with more is left unchecked (no
    /// entry: frames there are balanced whatever their destination MAC).
    pub fn fits(&self) -> bool {
        self.macs.len() <= MAX_LOCAL_MACS
    }
}

impl Balancer {
    /// Records the interfaces the program is attached to, replacing what was known of the
    /// same ifindex (an interface not read this time keeps what it had). `sync_local_macs`
    /// writes the result.
    pub fn set_local_interfaces(&mut self, interfaces: impl IntoIterator<Item = LocalInterface>) {
        for interface in interfaces {
            self.interfaces.insert(interface.ifindex, interface);
        }
    }

    /// The MACs each known interface should have in `local_macs`, by ifindex: its own, its
    /// VLAN devices', and the source MAC of every resolved server (primary or standby)
    /// reached through it.
    pub fn local_macs_plan(&self) -> BTreeMap<u32, LocalMacsPlan> {
        let mut plan: BTreeMap<u32, LocalMacsPlan> = self
            .interfaces
            .values()
            .map(|i| {
                let plan = LocalMacsPlan {
                    name: i.name.clone(),
                    macs: Vec::new(),
                };
                (i.ifindex, plan)
            })
            .collect();
        let servers = self
            .services
            .values()
            .flat_map(|s| s.backends.values().chain(s.standbys.values()))
            .filter_map(|b| b.forwarding);
        let own = self
            .interfaces
            .values()
            .flat_map(|i| i.macs.iter().map(|m| (i.ifindex, *m)));
        for (ifindex, mac) in own.chain(servers.map(|f| (f.ifindex, f.src_mac))) {
            if let Some(p) = plan.get_mut(&ifindex)
                && !p.macs.contains(&mac)
            {
                p.macs.push(mac);
            }
        }
        plan
    }

    /// Writes `local_macs` as `local_macs_plan` says (only what changed). An interface with
    /// more MACs than the map holds is left unchecked, with a warning when it becomes so.
    pub fn sync_local_macs(&mut self) -> anyhow::Result<()> {
        let plan = self.local_macs_plan();
        let crowded: BTreeSet<u32> = plan
            .iter()
            .filter(|(_, p)| !p.fits())
            .map(|(ifindex, _)| *ifindex)
            .collect();
        for ifindex in crowded.difference(&self.crowded_interfaces) {
            let p = &plan[ifindex];
            log::warn!(
                "interface {}: {} local MACs, more than the {MAX_LOCAL_MACS} local_macs holds; \
                 frames there are balanced whatever their destination MAC",
                p.name,
                p.macs.len()
            );
        }
        self.crowded_interfaces = crowded;
        let wanted: BTreeMap<u32, Vec<[u8; 6]>> = plan
            .into_iter()
            .filter(|(_, p)| p.fits())
            .map(|(ifindex, p)| (ifindex, p.macs.iter().map(|m| m.0).collect()))
            .collect();
        self.dataplane.sync_local_macs(&wanted)
    }
}
