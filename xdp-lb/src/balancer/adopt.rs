//! Taking over from an earlier agent whose maps were pinned and are reused.
//!
//! The pinned maps are the authority: `service_by_vip` says which listeners are served,
//! with which service id and live table; `backends` and `backend_owners` say which
//! (service, address) each backend id belongs to and with which epoch. The earlier agent's
//! snapshot file only adds what the maps do not say (each service's spare table region,
//! its named pools), so a missing or unreadable snapshot costs nothing but those.
//!
//! Services are claimed by listener (VIP, port, protocol, VLAN), never by name: a renamed
//! service, one with a new `maglev_size`, new or removed pools keep their backends' ids and
//! epochs, so every remembered flow still names a valid backend of the right epoch. New
//! epochs start above every pinned one, so no flow can follow a reused id to another server.
//! What no configured service claims is cleared only after every configured service is
//! live, and never a key a configured service owns.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    net::IpAddr,
    path::Path,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use xdp_lb_common::{BACKEND_F_VALID, BackendOwner, BackendValue, OWNER_F_HEALTHY, ServiceKey};

use super::{BackendState, Balancer, Forwarding, ServiceState};
use crate::config::{MacAddr, Service};

/// What an agent leaves for the next one beside the pinned maps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub next_epoch: u32,
    pub services: BTreeMap<String, ServiceSnapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: u8,
    pub vlan: u16,
    pub maglev_size: u32,
    pub id: u32,
    pub regions: [u32; 2],
    pub live: Option<usize>,
    pub generation: u32,
    /// Backends and standbys.
    pub servers: BTreeMap<IpAddr, ServerSnapshot>,
    /// Its named pools (`regions`, `live` and `generation` above are its default pool's).
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSnapshot>,
}

impl ServiceSnapshot {
    fn key(&self) -> ServiceKey {
        ServiceKey::new(self.vip, self.port, self.protocol).on_vlan(self.vlan)
    }
}

/// A named pool's id and table regions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    pub id: u32,
    pub maglev_size: u32,
    pub regions: [u32; 2],
    pub live: Option<usize>,
    pub generation: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSnapshot {
    pub id: u32,
    pub epoch: u32,
    pub healthy: bool,
}

impl Snapshot {
    /// (old name, new name) of each service the snapshot knows under another name on the
    /// same listener than `config` has it.
    pub fn renames(&self, config: &crate::config::Config) -> Vec<(String, String)> {
        let names: BTreeSet<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        self.services
            .iter()
            .filter(|(old, _)| !names.contains(old.as_str()))
            .filter_map(|(old, svc)| {
                let renamed = config.services.iter().find(|s| {
                    !self.services.contains_key(&s.name)
                        && ServiceKey::new(s.vip, s.port, s.protocol.number())
                            .on_vlan(s.vlan.unwrap_or(0))
                            == svc.key()
                })?;
                Some((old.clone(), renamed.name.clone()))
            })
            .collect()
    }

    pub fn load(path: &Path) -> anyhow::Result<Option<Snapshot>> {
        match fs::read_to_string(path) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not an agent snapshot", path.display())
            })?)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes atomically (a new file renamed over the old one).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(serde_json::to_string(self)?.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    }
}

/// A table region: first slot and size.
pub(super) type Region = (u32, u32);

/// A server the earlier agent left, as the pinned maps have it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InheritedServer {
    pub id: u32,
    pub epoch: u32,
    /// Its health when the earlier agent last wrote it (`None`: not recorded).
    pub healthy: Option<bool>,
    /// Where its frames went: a server whose resolution is slow at start keeps it.
    pub forwarding: Option<Forwarding>,
}

/// A served listener the earlier agent left.
#[derive(Clone, Debug, Default)]
pub(super) struct InheritedService {
    /// The earlier agent's name for it, for logs (from the snapshot; may be unknown).
    pub name: Option<String>,
    /// Its service id (`None` when only owner records name the listener).
    pub id: Option<u32>,
    /// The table packets use now, when it is not empty.
    pub live: Option<Region>,
    /// Its other table region, when the snapshot names one that fits.
    pub spare: Option<Region>,
    pub generation: u32,
    pub servers: BTreeMap<IpAddr, InheritedServer>,
    /// Its named pools, from the snapshot (the `pools` map is not pinned).
    pub pools: BTreeMap<String, PoolSnapshot>,
}

/// Everything the earlier agent left, still to be claimed by this agent's services.
#[derive(Debug, Default)]
pub(super) struct Inheritance {
    pub services: BTreeMap<ServiceKey, InheritedService>,
    /// Backend ids in use that no listener owns: cleared when adoption ends.
    pub orphans: Vec<u32>,
    /// Named pools in the pinned `pools` map that no snapshot pool names, with their live
    /// table: kept (the earlier program may still read them) until adoption ends.
    pub unnamed_pools: BTreeMap<u32, Option<Region>>,
    /// Snapshot pools a service did not reuse, with their regions: gone when adoption ends.
    pub leftover_pools: Vec<(u32, Vec<Region>)>,
}

/// A service claimed back: what `add_service` reuses.
pub(super) struct Claimed {
    pub id: Option<u32>,
    pub live: Option<Region>,
    pub spare: Option<Region>,
    pub generation: u32,
    /// Its named pools' ids and regions, to be reused or freed (`Balancer::claim_pools`).
    pub pools: BTreeMap<String, PoolSnapshot>,
}

fn servers(state: &ServiceState) -> BTreeMap<IpAddr, ServerSnapshot> {
    let one = |b: &BackendState| ServerSnapshot {
        id: b.id,
        epoch: b.epoch,
        healthy: b.healthy,
    };
    state
        .backends
        .iter()
        .chain(state.standbys.iter())
        .map(|(a, b)| (*a, one(b)))
        .collect()
}

/// The address an owner record names, in its service's family.
fn owner_address(owner: &BackendOwner) -> IpAddr {
    xdp_lb_common::addr_from_words(&owner.addr, owner.service.family)
}

/// Where a pinned entry sent frames, if it held a MAC.
fn pinned_forwarding(entry: &BackendValue) -> Option<Forwarding> {
    (entry.mac != [0; 6]).then_some(Forwarding {
        mac: MacAddr(entry.mac),
        src_mac: MacAddr(entry.src_mac),
        ifindex: entry.ifindex,
    })
}

/// What the pinned maps and the snapshot say the earlier agent left, before anything is
/// reserved. Pure, so every path of adoption is tested without a kernel.
pub(super) fn inherit(
    kernel_services: &[(ServiceKey, xdp_lb_common::ServiceValue)],
    kernel_pools: &[(u32, xdp_lb_common::PoolValue)],
    kernel_backends: &[(u32, BackendValue, BackendOwner)],
    snapshot: Option<&Snapshot>,
) -> Inheritance {
    let mut out = Inheritance::default();
    let live_pool =
        |p: &xdp_lb_common::PoolValue| (p.table_size > 0).then_some((p.table_offset, p.table_size));
    for (key, value) in kernel_services {
        let from_snapshot = snapshot.and_then(|s| {
            s.services
                .iter()
                .find(|(_, svc)| svc.key() == *key && svc.id == value.service_id)
        });
        let live = (value.table_size > 0).then_some((value.table_offset, value.table_size));
        let mut service = InheritedService {
            name: from_snapshot.map(|(name, _)| name.clone()),
            id: Some(value.service_id),
            live,
            generation: value.generation,
            ..InheritedService::default()
        };
        if let Some((_, svc)) = from_snapshot {
            // Its other region, when the snapshot's live one is the kernel's.
            let spare = match svc.live {
                Some(l) if l < 2 => Some(svc.regions[1 - l]),
                _ => None,
            };
            let consistent = live.is_none_or(|(offset, size)| {
                svc.maglev_size == size
                    && svc.live.and_then(|l| svc.regions.get(l)) == Some(&offset)
            });
            if consistent {
                service.spare = spare.map(|r| (r, svc.maglev_size));
            }
            // A snapshot pool is claimable when the pinned map agrees with it (its live
            // table is one of its regions), or has no such pool (maps pinned before pools
            // were: the earlier program's own map still reads the snapshot's regions).
            service.pools = svc
                .pools
                .iter()
                .filter(
                    |(_, p)| match kernel_pools.iter().find(|(id, _)| *id == p.id) {
                        Some((_, v)) => {
                            v.service_id == value.service_id
                                && live_pool(v).is_none_or(|(offset, size)| {
                                    size == p.maglev_size && p.regions.contains(&offset)
                                })
                        }
                        None => true,
                    },
                )
                .map(|(name, p)| (name.clone(), p.clone()))
                .collect();
        }
        out.services.insert(*key, service);
    }
    for (id, value) in kernel_pools {
        let named = out
            .services
            .values()
            .any(|s| s.pools.values().any(|p| p.id == *id));
        if !named {
            out.unnamed_pools.insert(*id, live_pool(value));
        }
    }
    for (id, entry, owner) in kernel_backends {
        let owned = if owner.service != ServiceKey::default() {
            Some((
                owner.service,
                owner_address(owner),
                Some(owner.flags & OWNER_F_HEALTHY != 0),
            ))
        } else {
            // Maps pinned before owner records existed: the snapshot says whose the id
            // is, if its epoch is still the one in the map.
            snapshot.and_then(|s| {
                s.services.values().find_map(|svc| {
                    svc.servers
                        .iter()
                        .find(|(_, srv)| srv.id == *id && srv.epoch == entry.epoch)
                        .map(|(address, srv)| (svc.key(), *address, Some(srv.healthy)))
                })
            })
        };
        let Some((key, address, healthy)) = owned else {
            out.orphans.push(*id);
            continue;
        };
        let healthy = healthy.or((entry.flags & BACKEND_F_VALID != 0).then_some(true));
        let server = InheritedServer {
            id: *id,
            epoch: entry.epoch,
            healthy,
            forwarding: pinned_forwarding(entry),
        };
        let service = out.services.entry(key).or_default();
        match service.servers.entry(address) {
            // Two ids for one server of one listener: keep the first, clear the other.
            std::collections::btree_map::Entry::Occupied(_) => out.orphans.push(*id),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(server);
            }
        }
    }
    out
}

impl Balancer {
    /// This agent's bookkeeping, for the next one.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_epoch: self.next_epoch,
            services: self
                .services
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        ServiceSnapshot {
                            vip: s.config.vip,
                            port: s.config.port,
                            protocol: s.config.protocol.number(),
                            vlan: s.config.vlan.unwrap_or(0),
                            maglev_size: s.default_pool.maglev_size,
                            id: s.id,
                            regions: s.default_pool.regions,
                            live: s.default_pool.live,
                            generation: s.default_pool.generation,
                            servers: servers(s),
                            pools: s
                                .pools
                                .iter()
                                .map(|(name, p)| {
                                    let pool = PoolSnapshot {
                                        id: p.id,
                                        maglev_size: p.maglev_size,
                                        regions: p.regions,
                                        live: p.live,
                                        generation: p.generation,
                                    };
                                    (name.clone(), pool)
                                })
                                .collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Takes stock of the pinned data plane (and the earlier agent's snapshot, when there is
    /// one) and reserves every id, epoch and table region in use, so services added next
    /// claim theirs back (`claim_service`, `claim_server`) and nothing else takes them.
    pub fn adopt(&mut self, snapshot: Option<Snapshot>) {
        let kernel_services = self.dataplane.services();
        let kernel_pools = self.dataplane.all_pools();
        let kernel_backends = self.dataplane.used_backends();
        let pinned_epochs = kernel_backends.iter().map(|(_, e, _)| e.epoch).max();
        self.next_epoch = self
            .next_epoch
            .max(snapshot.as_ref().map_or(0, |s| s.next_epoch))
            .max(pinned_epochs.unwrap_or(0));
        let mut inheritance = inherit(
            &kernel_services,
            &kernel_pools,
            &kernel_backends,
            snapshot.as_ref(),
        );
        for (id, _, _) in &kernel_backends {
            self.backend_ids.reserve(*id);
        }
        for (key, s) in &mut inheritance.services {
            if let Some(id) = s.id
                && !self.service_ids.reserve(id)
            {
                log::warn!("service id {id} of {key:?} is pinned twice; it gets a new one");
                s.id = None;
            }
            if let Some((offset, size)) = s.live
                && !self.regions.reserve(offset, size)
            {
                log::warn!(
                    "the live table of {} ({size} slots at {offset}) does not fit maglev_tables; it is rebuilt",
                    s.name.as_deref().unwrap_or("a pinned service")
                );
                s.live = None;
            }
            if let Some((offset, size)) = s.spare
                && !self.regions.reserve(offset, size)
            {
                s.spare = None;
            }
            s.pools.retain(|_, p| self.reserve_pool(p));
        }
        inheritance.unnamed_pools.retain(|id, live| {
            if !self.pool_ids.reserve(*id) {
                return false;
            }
            if let Some((offset, size)) = *live
                && !self.regions.reserve(offset, size)
            {
                *live = None;
            }
            true
        });
        let servers: usize = inheritance.services.values().map(|s| s.servers.len()).sum();
        log::info!(
            "the pinned data plane serves {} listener(s) with {servers} backend(s); new epochs start after {}",
            inheritance.services.len(),
            self.next_epoch
        );
        self.adopting = Some(inheritance);
    }

    /// Reserves a snapshot pool's id and regions; false (nothing reserved) when any is taken.
    fn reserve_pool(&mut self, p: &PoolSnapshot) -> bool {
        let mut reserved = Vec::new();
        for r in p.regions {
            if self.regions.reserve(r, p.maglev_size) {
                reserved.push(r);
            }
        }
        let ok = reserved.len() == p.regions.len() && self.pool_ids.reserve(p.id);
        if !ok {
            for r in reserved {
                self.regions.free(r, p.maglev_size);
            }
        }
        ok
    }

    /// What the earlier agent left for the listener of `config`, whatever its name was.
    pub(super) fn claim_service(&mut self, config: &Service, key: ServiceKey) -> Option<Claimed> {
        let adopting = self.adopting.as_mut()?;
        let s = adopting.services.get_mut(&key)?;
        if let Some(old) = &s.name
            && *old != config.name
        {
            log::info!(
                "service {} takes over the live state of {old} (same listener)",
                config.name
            );
        }
        self.claiming = Some(key);
        Some(Claimed {
            id: s.id.take(),
            live: s.live.take(),
            spare: s.spare.take(),
            generation: s.generation,
            pools: std::mem::take(&mut s.pools),
        })
    }

    /// The inherited id, epoch, health and forwarding of a server of the service being
    /// claimed.
    pub(super) fn claim_server(&mut self, address: IpAddr) -> Option<InheritedServer> {
        let key = self.claiming?;
        self.adopting
            .as_mut()?
            .services
            .get_mut(&key)?
            .servers
            .remove(&address)
    }

    /// Ends the claim of the service being added (now live): servers it no longer has are
    /// cleared, and table regions it did not reuse are freed.
    pub(super) fn end_claim(&mut self) {
        let Some(key) = self.claiming.take() else {
            return;
        };
        let Some(s) = self.adopting.as_mut().and_then(|a| a.services.remove(&key)) else {
            return;
        };
        self.release_inherited(s, false);
    }

    /// Gives back everything the earlier agent left that no configured service claimed:
    /// listeners no longer configured stop being served (never one a service owns), their
    /// backends' entries are cleared, their ids and regions are free again.
    pub fn finish_adoption(&mut self) {
        let Some(adopting) = self.adopting.take() else {
            return;
        };
        let owned: BTreeSet<ServiceKey> = self.services.values().map(|s| s.key).collect();
        for (key, s) in adopting.services {
            let name = s.name.clone().unwrap_or_else(|| format!("{key:?}"));
            if !owned.contains(&key)
                && let Err(err) = self.dataplane.remove_service(&key)
            {
                log::debug!("service {name} of the earlier agent: {err:#}");
            }
            let removed = !owned.contains(&key);
            self.release_inherited(s, true);
            if removed {
                log::info!("service {name} of the earlier agent is no longer configured: removed");
            }
        }
        for id in adopting.orphans {
            self.forget_backend(id);
        }
        for (id, live) in adopting.unnamed_pools {
            self.forget_pool(id, live.into_iter().collect());
        }
        for (id, regions) in adopting.leftover_pools {
            self.forget_pool(id, regions);
        }
    }

    /// Takes a pool the earlier agent left out of `pools` (a rule of its program still
    /// naming it then finds no table: its clients' new flows follow `when_no_backend` until
    /// the new program is in), then frees its id and `regions`.
    pub(super) fn forget_pool(&mut self, id: u32, regions: Vec<Region>) {
        if self.dataplane.pool(id).is_some()
            && let Err(err) = self.dataplane.remove_pool(id)
        {
            log::warn!("pool {id} of the earlier agent: {err:#}");
        }
        for (offset, size) in regions {
            self.regions.free(offset, size);
        }
        self.pool_ids.give_back(id);
    }

    /// Clears an inherited service's unclaimed servers and frees what it still holds.
    fn release_inherited(&mut self, s: InheritedService, with_id: bool) {
        for server in s.servers.values() {
            self.forget_backend(server.id);
        }
        for (offset, size) in s.live.into_iter().chain(s.spare) {
            self.regions.free(offset, size);
        }
        for p in s.pools.values() {
            let regions = p.regions.iter().map(|r| (*r, p.maglev_size)).collect();
            self.forget_pool(p.id, regions);
        }
        if with_id && let Some(id) = s.id {
            self.service_ids.give_back(id);
        }
    }
}

#[cfg(test)]
mod tests;
