//! Reading the maps back for the data-plane audit (`crate::audit`): every service, port
//! word, backend entry and pool, and the live tables the intent names; never the per-flow
//! state (`flows`, `persistence`), whose size has no bound the audit could afford.

use std::collections::BTreeMap;

use aya::programs::links::{FdLink, PinnedLink};
use xdp_lb_common::{BackendValue, map_names};

use super::Dataplane;
use crate::audit::{Attached, Attachment, Intent, KernelView, TableDigest};

impl Dataplane {
    /// The kernel's side of the audit; `xdp` is what netlink says is attached to each
    /// configured interface.
    pub fn audit_view(&self, intent: &Intent, xdp: BTreeMap<String, Attached>) -> KernelView {
        let mut view = KernelView::default();
        let mut unreadable = |map: &str, err: String| {
            if !view.unreadable.iter().any(|(m, _)| m == map) {
                view.unreadable.push((map.to_owned(), err));
            }
        };
        let mut services = std::collections::HashMap::new();
        for entry in self.service_by_vip.iter() {
            match entry {
                Ok((key, value)) => {
                    services.insert(key, value);
                }
                Err(err) => unreadable(map_names::SERVICE_BY_VIP, err.to_string()),
            }
        }
        let mut pools = BTreeMap::new();
        for entry in self.pools.iter() {
            match entry {
                Ok((id, value)) => {
                    pools.insert(id, value);
                }
                Err(err) => unreadable(map_names::POOLS, err.to_string()),
            }
        }
        let mut backends = BTreeMap::new();
        for id in 0..self.backends.len() {
            match self.backends.get(&id, 0) {
                Ok(value) if value != BackendValue::default() => {
                    backends.insert(id, value);
                }
                Ok(_) => {}
                Err(err) => unreadable(map_names::BACKENDS, err.to_string()),
            }
        }
        for id in intent.backends.keys() {
            match self.backend_owners.get(id, 0) {
                Ok(owner) => {
                    view.owners.insert(*id, owner);
                }
                Err(err) => unreadable(map_names::BACKEND_OWNERS, err.to_string()),
            }
        }
        for entry in self.vips.keys() {
            match entry {
                Ok(key) => {
                    view.vips.insert(key);
                }
                Err(err) => unreadable(map_names::VIPS, err.to_string()),
            }
        }
        let (local_macs, err) = self.local_macs_seen();
        if let Some(err) = err {
            unreadable(map_names::LOCAL_MACS, err);
        }
        view.local_macs = local_macs;
        view.services = services;
        view.pools = pools;
        view.backends = backends;
        view.vip_filter_words = self.vip_filter_words();
        view.tables = intent
            .tables
            .iter()
            .map(|t| {
                let read = self
                    .read_table(t.offset, t.size)
                    .map(|slots| TableDigest::of(&slots))
                    .map_err(|err| format!("{err:#}"));
                (t.offset, read)
            })
            .collect();
        view.program_id = self.program().info().ok().map(|info| info.id());
        view.interfaces = xdp
            .into_iter()
            .map(|(ifname, xdp)| {
                let pinned_link = intent.pinned.then(|| self.pinned_link_program(&ifname));
                (ifname, Attachment { xdp, pinned_link })
            })
            .collect();
        view
    }

    /// The program in the link pinned for `ifname`.
    fn pinned_link_program(&self, ifname: &str) -> Attached {
        let Some(path) = self.pins.as_ref().map(|p| p.link(ifname)) else {
            return Attached::Nothing;
        };
        if !path.exists() {
            return Attached::Nothing;
        }
        // Dropping the opened link closes our fd only: the pin keeps the link.
        match PinnedLink::from_pin(&path).map(FdLink::from) {
            Ok(link) => match link.info() {
                Ok(info) => Attached::Program(info.program_id()),
                Err(err) => Attached::Unknown(err.to_string()),
            },
            Err(err) => Attached::Unknown(err.to_string()),
        }
    }
}
