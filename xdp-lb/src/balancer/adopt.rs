//! Taking over from an earlier agent: its maps were pinned and are reused, and this
//! snapshot of its bookkeeping (saved after every change) says which ids, epochs and table
//! regions it used. A new agent that loads the same services claims them back, so every
//! remembered flow still names a valid backend of the right epoch and every new table is
//! written into the region that is not live: no flow moves because the agent changed.

use std::{collections::BTreeMap, fs, io::Write as _, net::IpAddr, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use xdp_lb_common::{BackendValue, ServiceKey};

use super::{BackendState, Balancer, ServiceState};
use crate::config::Service;

/// What an agent leaves for the next one.
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

/// A service claimed back from the snapshot.
pub(super) struct Claimed {
    pub id: u32,
    pub regions: [u32; 2],
    pub live: Option<usize>,
    pub generation: u32,
    /// Its named pools' ids and regions, to be reused or freed (`Balancer::claim_pools`).
    pub pools: BTreeMap<String, PoolSnapshot>,
}

impl Snapshot {
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
                            maglev_size: s.config.maglev_size,
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

    /// Reserves every id and region the snapshot's agent used, so services added next claim
    /// theirs back (`claim_service`, `claim_server`) and nothing else takes them.
    pub fn adopt(&mut self, snapshot: Snapshot) {
        self.next_epoch = self.next_epoch.max(snapshot.next_epoch);
        let mut kept = BTreeMap::new();
        for (name, s) in snapshot.services {
            let regions_ok = s
                .regions
                .iter()
                .all(|r| self.regions.reserve(*r, s.maglev_size));
            if !regions_ok || !self.service_ids.reserve(s.id) {
                log::warn!("snapshot of service {name} does not fit the maps; it starts afresh");
                continue;
            }
            let mut s = s;
            s.pools.retain(|pool, p| {
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
                    log::warn!(
                        "snapshot of pool {pool} of {name} does not fit the maps; it starts afresh"
                    );
                }
                ok
            });
            s.servers.retain(|address, server| {
                let ok = self.backend_ids.reserve(server.id);
                if !ok {
                    log::warn!(
                        "snapshot of backend {address} of {name} does not fit; it starts afresh"
                    );
                }
                ok
            });
            kept.insert(name, s);
        }
        self.adopting = Some(Snapshot {
            next_epoch: self.next_epoch,
            services: kept,
        });
    }

    /// The snapshot's entry for a service, when the service is the same listener with the
    /// same table size.
    pub(super) fn claim_service(&mut self, config: &Service) -> Option<Claimed> {
        let adopting = self.adopting.as_mut()?;
        let s = adopting.services.get_mut(&config.name)?;
        let same = (s.vip, s.port, s.protocol, s.vlan, s.maglev_size)
            == (
                config.vip,
                config.port,
                config.protocol.number(),
                config.vlan.unwrap_or(0),
                config.maglev_size,
            );
        if !same {
            return None;
        }
        self.claiming = Some(config.name.clone());
        // A region index beyond the two is a damaged snapshot: write both afresh.
        let live = s.live.filter(|l| *l < 2);
        let pools = std::mem::take(&mut s.pools)
            .into_iter()
            .map(|(name, p)| {
                (
                    name,
                    PoolSnapshot {
                        live: p.live.filter(|l| *l < 2),
                        ..p
                    },
                )
            })
            .collect();
        Some(Claimed {
            id: s.id,
            regions: s.regions,
            live,
            generation: s.generation,
            pools,
        })
    }

    /// The snapshot's id, epoch and health for a server of the service being claimed.
    pub(super) fn claim_server(&mut self, address: IpAddr) -> Option<ServerSnapshot> {
        let name = self.claiming.as_ref()?;
        self.adopting
            .as_mut()?
            .services
            .get_mut(name)?
            .servers
            .remove(&address)
    }

    /// Ends the claim of the service being added: servers it no longer has are cleared.
    pub(super) fn end_claim(&mut self) {
        let Some(name) = self.claiming.take() else {
            return;
        };
        let Some(s) = self
            .adopting
            .as_mut()
            .and_then(|a| a.services.remove(&name))
        else {
            return;
        };
        for server in s.servers.values() {
            self.forget_server(server.id);
        }
    }

    /// Gives back everything the snapshot named that no service claimed: services no longer
    /// configured stop being served; their ids and table regions are free again.
    pub fn finish_adoption(&mut self) {
        let Some(adopting) = self.adopting.take() else {
            return;
        };
        for (name, s) in adopting.services {
            let key = ServiceKey::new(s.vip, s.port, s.protocol).on_vlan(s.vlan);
            if let Err(err) = self.dataplane.remove_service(&key) {
                log::debug!("service {name} of the earlier agent: {err:#}");
            }
            for server in s.servers.values() {
                self.forget_server(server.id);
            }
            for r in s.regions {
                self.regions.free(r, s.maglev_size);
            }
            for p in s.pools.values() {
                for r in p.regions {
                    self.regions.free(r, p.maglev_size);
                }
                self.pool_ids.give_back(p.id);
            }
            self.service_ids.give_back(s.id);
            log::info!("service {name} of the earlier agent is no longer configured: removed");
        }
    }

    fn forget_server(&mut self, id: u32) {
        if let Err(err) = self.dataplane.set_backend(id, BackendValue::default()) {
            log::warn!("clearing backend {id}: {err:#}");
        }
        self.backend_ids.give_back(id);
    }
}
