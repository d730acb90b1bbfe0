//! The balancer's state, and the only code that writes services, pools, backends, client
//! rules and Maglev tables into the data plane.
//!
//! Every pool of a service (its own backends, the default pool, and each named pool) owns
//! two regions of `maglev_tables` of M slots. A new table is written into the region that
//! is not live, then the pool's value (the service's `service_by_vip` value for the default
//! pool, its `pools` value for a named one) is replaced whole with the other region's
//! offset: a packet sees the old table or the new one, never a mix.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{anyhow, bail};
use xdp_lb_common::{
    BackendValue, MAX_BACKENDS, MAX_POOLS, MAX_SERVICES, POOL_ID_DEFAULT, ServiceKey,
};

use crate::{
    config::{Backend, DEFAULT_POOL, DownAction, Role, Service, ServiceFailover},
    dataplane::Dataplane,
    regions::RegionAllocator,
};

pub mod adopt;
mod audit;
mod backend;
mod local;
mod pools;
mod rules;
mod service;
mod standby;
mod table_plan;
mod tables;

pub use audit::ExpectedTables;
pub use backend::{BackendState, Forwarding, Owner};
pub use local::{LocalInterface, LocalMacsPlan};
pub use pools::PoolState;
pub use service::ServiceState;
pub use table_plan::Serving;
use tables::changed_pools;

pub struct Balancer {
    dataplane: Dataplane,
    flow_hash_seed: u32,
    services: BTreeMap<String, ServiceState>,
    service_ids: IdPool,
    backend_ids: IdPool,
    /// Ids of named pools (`POOL_ID_DEFAULT` is never handed out).
    pool_ids: IdPool,
    /// Last epoch handed to a backend.
    next_epoch: u32,
    regions: RegionAllocator,
    /// What an earlier agent left, still to be claimed back (see `adopt.rs`).
    adopting: Option<adopt::Inheritance>,
    /// The listener of the service being added while claiming.
    claiming: Option<ServiceKey>,
    /// The interfaces the program is attached to, by ifindex (see `local.rs`).
    interfaces: BTreeMap<u32, LocalInterface>,
    /// Those with more local MACs than `local_macs` holds (left unchecked, warned once).
    crowded_interfaces: BTreeSet<u32>,
}

impl Balancer {
    pub fn new(dataplane: Dataplane, flow_hash_seed: u32) -> Self {
        let capacity = dataplane.table_capacity();
        let mut pool_ids = IdPool::new(MAX_POOLS);
        pool_ids.reserve(POOL_ID_DEFAULT);
        Self {
            dataplane,
            flow_hash_seed,
            services: BTreeMap::new(),
            service_ids: IdPool::new(MAX_SERVICES),
            backend_ids: IdPool::new(MAX_BACKENDS),
            pool_ids,
            next_epoch: 0,
            regions: RegionAllocator::new(capacity),
            adopting: None,
            claiming: None,
            interfaces: BTreeMap::new(),
            crowded_interfaces: BTreeSet::new(),
        }
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceState> {
        self.services.values()
    }

    pub fn service(&self, name: &str) -> Option<&ServiceState> {
        self.services.get(name)
    }

    fn state_mut(&mut self, name: &str) -> anyhow::Result<&mut ServiceState> {
        self.services
            .get_mut(name)
            .ok_or_else(|| anyhow!("no service named {name}"))
    }

    /// Adds a service with its backends, pools and client rules. Backends with a MAC in the
    /// config are usable at once; the others wait for `set_forwarding`. Ids are taken in
    /// (name, address) order, so LBs that load one config number everything alike whatever
    /// order the file lists it in.
    pub fn add_service(
        &mut self,
        config: &Service,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
    ) -> anyhow::Result<()> {
        self.add_service_with_failover(config, &ServiceFailover::default(), forwarding)
    }

    /// [`Self::add_service`] with failover settings: its servers start in their checks'
    /// `initial_state`, and its backups and fallback servers get their ids after the
    /// primaries'.
    pub fn add_service_with_failover(
        &mut self,
        config: &Service,
        failover: &ServiceFailover,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
    ) -> anyhow::Result<()> {
        if self.services.contains_key(&config.name) {
            bail!("service {} already exists", config.name);
        }
        let key = ServiceKey::new(config.vip, config.port, config.protocol.number())
            .on_vlan(config.vlan.unwrap_or(0));
        if let Some(other) = self.services.values().find(|s| s.key == key) {
            bail!(
                "service {} already serves {}:{}/{}",
                other.config.name,
                config.vip,
                config.port,
                config.protocol
            );
        }
        rules::check_pools_and_rules(config)?;
        let claimed = self.claim_service(config, key);
        let result = self.add_claimed_service(config, failover, forwarding, claimed);
        self.end_claim();
        result
    }

    fn add_claimed_service(
        &mut self,
        config: &Service,
        failover: &ServiceFailover,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
        claimed: Option<adopt::Claimed>,
    ) -> anyhow::Result<()> {
        let key = ServiceKey::new(config.vip, config.port, config.protocol.number())
            .on_vlan(config.vlan.unwrap_or(0));
        let (id, regions, live, generation, claimed_pools, leftover) = match claimed {
            Some(c) => self.reuse_claimed_space(config, c)?,
            None => {
                let (id, regions) = self.new_service_space(config)?;
                self.dataplane.reset_service_counter(id)?;
                (id, regions, None, 0, BTreeMap::new(), Vec::new())
            }
        };
        let mut state = ServiceState {
            config: config.clone(),
            key,
            id,
            generation,
            backends: BTreeMap::new(),
            failover: failover.clone(),
            standbys: BTreeMap::new(),
            serving: Serving::Nothing,
            default_pool: PoolState {
                id: POOL_ID_DEFAULT,
                maglev_size: config.maglev_size,
                regions,
                live,
                generation,
                serving: Serving::Nothing,
                primaries: config.backends.iter().map(|b| b.address).collect(),
                slots: BTreeMap::new(),
            },
            pools: BTreeMap::new(),
            rules: BTreeMap::new(),
        };
        if let Err(err) = self.claim_pools(&mut state, claimed_pools) {
            self.release(&state);
            return Err(err);
        }
        let state = self.fill_service(config, failover, forwarding, state)?;
        let name = config.name.clone();
        let named: Vec<String> = state.pools.keys().cloned().collect();
        self.services.insert(name.clone(), state);
        for pool in &named {
            self.publish_pool(&name, pool)?;
        }
        self.apply_client_rules(&name, &config.clients, false)?;
        self.publish(&name)?;
        // An inherited table the service no longer uses (its size changed) is free once the
        // new one is live.
        for (offset, size) in leftover {
            self.regions.free(offset, size);
        }
        Ok(())
    }

    /// The id and regions of a service claimed back from an earlier agent: its live table
    /// stays live (its next table goes into its spare region, or a new one) when its size
    /// is unchanged; otherwise it gets two new regions, and its old ones are returned as
    /// `leftover`, to be freed once the new table is live.
    #[allow(clippy::type_complexity)]
    fn reuse_claimed_space(
        &mut self,
        config: &Service,
        claimed: adopt::Claimed,
    ) -> anyhow::Result<(
        u32,
        [u32; 2],
        Option<usize>,
        u32,
        BTreeMap<String, adopt::PoolSnapshot>,
        Vec<adopt::Region>,
    )> {
        let size = config.maglev_size;
        let id = match claimed.id {
            Some(id) => id,
            None => {
                let id = self.service_ids.take().ok_or_else(|| {
                    anyhow!("no free service id (at most {MAX_SERVICES} services)")
                })?;
                self.dataplane.reset_service_counter(id)?;
                id
            }
        };
        let mut leftover: Vec<adopt::Region> = claimed.spare.into_iter().collect();
        let (regions, live) = match claimed.live {
            Some((offset, live_size)) if live_size == size => {
                let other = match claimed.spare {
                    Some((spare, spare_size)) if spare_size == size => {
                        leftover.clear();
                        spare
                    }
                    _ => self.regions.alloc(size).ok_or_else(|| {
                        anyhow!(
                            "maglev_tables has no room for a table of {size} slots for service {} (capacity {} slots; raise maglev_table_slots)",
                            config.name,
                            self.dataplane.table_capacity()
                        )
                    })?,
                };
                ([offset, other], Some(0))
            }
            live => {
                leftover.extend(live);
                let regions = self.two_regions(size).ok_or_else(|| {
                    anyhow!(
                        "maglev_tables has no room for two tables of {size} slots for service {} (capacity {} slots; raise maglev_table_slots)",
                        config.name,
                        self.dataplane.table_capacity()
                    )
                })?;
                (regions, None)
            }
        };
        Ok((
            id,
            regions,
            live,
            claimed.generation,
            claimed.pools,
            leftover,
        ))
    }

    /// A new service id and two table regions.
    fn new_service_space(&mut self, config: &Service) -> anyhow::Result<(u32, [u32; 2])> {
        let size = config.maglev_size;
        let id = self
            .service_ids
            .take()
            .ok_or_else(|| anyhow!("no free service id (at most {MAX_SERVICES} services)"))?;
        match self.two_regions(size) {
            Some(regions) => Ok((id, regions)),
            None => {
                self.service_ids.give_back(id);
                bail!(
                    "maglev_tables has no room for two tables of {size} slots for service {} (capacity {} slots; raise maglev_table_slots)",
                    config.name,
                    self.dataplane.table_capacity()
                );
            }
        }
    }

    /// Two regions of `size` slots, or none when they do not both fit.
    fn two_regions(&mut self, size: u32) -> Option<[u32; 2]> {
        match (self.regions.alloc(size), self.regions.alloc(size)) {
            (Some(a), Some(b)) => Some([a, b]),
            (a, b) => {
                for r in [a, b].into_iter().flatten() {
                    self.regions.free(r, size);
                }
                None
            }
        }
    }

    /// Gives the service's backends (of every pool) and standbys their ids and entries.
    fn fill_service(
        &mut self,
        config: &Service,
        failover: &ServiceFailover,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
        mut state: ServiceState,
    ) -> anyhow::Result<ServiceState> {
        let owner = state.owner();
        let mut sorted: Vec<&Backend> = config.all_backends().collect();
        sorted.sort_by_key(|b| b.address);
        for backend in sorted {
            let healthy = failover
                .initial_health(backend.address, Role::Primary)
                .is_up();
            match self.new_backend(owner, backend, forwarding(backend), healthy) {
                Ok(b) => {
                    state.backends.insert(backend.address, b);
                }
                Err(err) => {
                    self.release(&state);
                    return Err(err);
                }
            }
        }
        match self.new_standbys(owner, failover, &state.standbys, forwarding) {
            Ok(standbys) => state.standbys = standbys,
            Err(err) => {
                self.release(&state);
                return Err(err);
            }
        }
        Ok(state)
    }

    /// Takes an id for a backend and writes its entry (not yet named by any slot).
    fn new_backend(
        &mut self,
        owner: Owner,
        config: &Backend,
        forwarding: Option<Forwarding>,
        healthy: bool,
    ) -> anyhow::Result<BackendState> {
        // An earlier agent's server keeps its id, epoch (so its flows stay) and health,
        // and its pinned MAC while a slow ARP reply leaves it unresolved.
        if let Some(claimed) = self.claim_server(config.address) {
            let state = BackendState {
                id: claimed.id,
                config: config.clone(),
                forwarding: forwarding.or(claimed.forwarding),
                healthy: claimed.healthy.unwrap_or(healthy),
                epoch: claimed.epoch,
                when_down: owner.when_down,
            };
            self.write_backend(&owner.key, &state)?;
            return Ok(state);
        }
        let id = self
            .backend_ids
            .take()
            .ok_or_else(|| anyhow!("no free backend id (at most {MAX_BACKENDS} backends)"))?;
        self.next_epoch = self.next_epoch.wrapping_add(1).max(1);
        let state = BackendState {
            id,
            config: config.clone(),
            forwarding,
            healthy,
            epoch: self.next_epoch,
            when_down: owner.when_down,
        };
        let written = self
            .dataplane
            .reset_backend_counter(id)
            .and_then(|()| self.write_backend(&owner.key, &state));
        if let Err(err) = written {
            self.backend_ids.give_back(id);
            return Err(err);
        }
        Ok(state)
    }

    /// Adds a backend to a running service's own backends (its default pool). Flows already
    /// placed keep their backends.
    pub fn add_backend(
        &mut self,
        service: &str,
        config: &Backend,
        forwarding: Option<Forwarding>,
    ) -> anyhow::Result<()> {
        self.add_pool_backend(service, DEFAULT_POOL, config, forwarding)
    }

    /// Adds a backend to pool `pool` of a running service. Flows already placed keep their
    /// backends.
    pub fn add_pool_backend(
        &mut self,
        service: &str,
        pool: &str,
        config: &Backend,
        forwarding: Option<Forwarding>,
    ) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        let target = state
            .pool(pool)
            .ok_or_else(|| anyhow!("service {service} has no pool {pool}"))?;
        if state.backends.contains_key(&config.address) {
            bail!(
                "service {service} already has backend {} (in pool {})",
                config.address,
                state.pool_of(config.address)
            );
        }
        if config.address.is_ipv4() != state.config.vip.is_ipv4() {
            bail!(
                "backend {} is not of the family of {service}'s VIP {}",
                config.address,
                state.config.vip
            );
        }
        if target.primaries.len() >= target.maglev_size as usize {
            bail!("pool {pool} of service {service} has as many backends as its table has slots");
        }
        let healthy = state
            .failover
            .initial_health(config.address, Role::Primary)
            .is_up();
        let owner = state.owner();
        let backend = self.new_backend(owner, config, forwarding, healthy)?;
        let state = self.state_mut(service)?;
        if pool == DEFAULT_POOL {
            state.config.backends.push(config.clone());
        } else if let Some(p) = state.config.pools.iter_mut().find(|p| p.name == pool) {
            p.backends.push(config.clone());
        }
        state.backends.insert(config.address, backend);
        if let Some(p) = state.pool_mut(pool) {
            p.primaries.insert(config.address);
        }
        self.publish_pool(service, pool)
    }

    /// Removes a backend (of any pool) from a running service: it leaves its pool's table
    /// first, then its entry is invalidated, so flows on it are balanced afresh and none is
    /// sent to a stale MAC.
    pub fn remove_backend(&mut self, service: &str, address: IpAddr) -> anyhow::Result<()> {
        let state = self.state_mut(service)?;
        let pool = state.pool_of(address).to_owned();
        let backend = state
            .backends
            .remove(&address)
            .ok_or_else(|| anyhow!("service {service} has no backend {address}"))?;
        if let Some(p) = state.pool_mut(&pool) {
            p.primaries.remove(&address);
        }
        state.config.backends.retain(|b| b.address != address);
        for p in &mut state.config.pools {
            p.backends.retain(|b| b.address != address);
        }
        self.publish_pool(service, &pool)?;
        self.clear_backend(backend.id)?;
        self.backend_ids.give_back(backend.id);
        Ok(())
    }

    /// Removes a service: its frames are passed from now on, then its client rules and
    /// pools go, and its ids and regions are freed.
    pub fn remove_service(&mut self, name: &str) -> anyhow::Result<()> {
        let state = self
            .services
            .remove(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        self.dataplane.remove_service(&state.key)?;
        for prefix in state.rules.keys() {
            if let Err(err) =
                self.dataplane
                    .remove_client_rule(state.id, prefix.addr(), prefix.prefix_len())
            {
                log::warn!("service {name}: {err:#}");
            }
        }
        for pool in state.pools.values() {
            if let Err(err) = self.dataplane.remove_pool(pool.id) {
                log::warn!("service {name}: {err:#}");
            }
        }
        self.release(&state);
        Ok(())
    }

    fn release(&mut self, state: &ServiceState) {
        for b in state.backends.values().chain(state.standbys.values()) {
            self.forget_backend(b.id);
        }
        for pool in state.pools.values() {
            self.release_pool_space(pool);
        }
        for r in state.default_pool.regions {
            self.regions.free(r, state.default_pool.maglev_size);
        }
        self.service_ids.give_back(state.id);
    }

    /// Records where a backend's frames go (or that it cannot be reached).
    pub fn set_forwarding(
        &mut self,
        service: &str,
        address: IpAddr,
        forwarding: Option<Forwarding>,
    ) -> anyhow::Result<()> {
        self.update_backend(service, address, |b| b.forwarding = forwarding)
    }

    /// Records a health verdict of a primary or a standby: an unhealthy one leaves its
    /// pool's table (a backup takes a dead primary's slots, the fallback pool the whole table
    /// when no primary is left) and its entry becomes invalid, so no frame reaches it; a
    /// healthy one comes back.
    pub fn set_health(
        &mut self,
        service: &str,
        address: IpAddr,
        healthy: bool,
    ) -> anyhow::Result<()> {
        self.update_backend(service, address, |b| b.healthy = healthy)
    }

    /// Changes a backend's weight; 0 drains it (no new flows, its entry stays valid).
    pub fn set_weight(
        &mut self,
        service: &str,
        address: IpAddr,
        weight: u32,
    ) -> anyhow::Result<()> {
        self.update_backend(service, address, |b| b.config.weight = weight)
    }

    /// Puts a backend on its own VLAN (`None`: its service's), which its frames' outer tag
    /// is rewritten to; its flows stay.
    pub fn set_vlan(
        &mut self,
        service: &str,
        address: IpAddr,
        vlan: Option<u16>,
    ) -> anyhow::Result<()> {
        self.update_backend(service, address, |b| b.config.vlan = vlan)
    }

    /// Applies `change` to one server (a primary or a standby), then brings its entry and
    /// the tables of its pools up to date in an order that never lets a frame see a slot
    /// naming an invalid entry: a server becoming unusable leaves the tables before its
    /// entry is invalidated; one becoming usable gets a valid entry before any slot names
    /// it. Only the tables whose filling changes are rebuilt.
    fn update_backend(
        &mut self,
        service: &str,
        address: IpAddr,
        change: impl FnOnce(&mut BackendState),
    ) -> anyhow::Result<()> {
        let state = self.state_mut(service)?;
        let plans_before = state.table_plans();
        let key = state.key;
        let backend = state
            .server_mut(address)
            .ok_or_else(|| anyhow!("service {service} has no backend {address}"))?;
        let (old_entry, old_healthy) = (backend.entry(), backend.healthy);
        change(backend);
        let (entry, healthy) = (backend.entry(), backend.healthy);
        let backend = backend.clone();
        let changed = changed_pools(&plans_before, &state.table_plans());
        // A server that stops taking new flows leaves the tables before its entry says so;
        // one that starts taking them gets its entry first.
        let leaving = backend::accepts_new(&old_entry) && !backend::accepts_new(&entry);
        if leaving {
            self.publish_pools(service, &changed)?;
        }
        if entry != old_entry || healthy != old_healthy {
            self.write_backend(&key, &backend)?;
        }
        if !leaving {
            self.publish_pools(service, &changed)?;
        }
        Ok(())
    }

    /// Changes a running service's own settings (table size, no-backend action,
    /// persistence, hash mode) in place: its id, backends and remembered flows are kept. A
    /// new table size takes two new regions; the old ones are freed once the new table is
    /// live.
    pub fn update_service_settings(&mut self, config: &Service) -> anyhow::Result<()> {
        let name = config.name.as_str();
        let state = self
            .services
            .get(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        if (state.config.vip, state.config.port, state.config.protocol)
            != (config.vip, config.port, config.protocol)
        {
            bail!(
                "service {name}: a new VIP, port or protocol is a new service (remove and add it)"
            );
        }
        let old_size = state.default_pool.maglev_size;
        let new_size = config.maglev_size;
        let members = state.default_pool.primaries.len();
        if (new_size as usize) < members {
            bail!("service {name}: {new_size} slots cannot hold its {members} backends");
        }
        let old_regions = state.default_pool.regions;
        let new_regions = if new_size == old_size {
            None
        } else {
            Some(self.two_regions(new_size).ok_or_else(|| {
                anyhow!(
                    "service {name}: maglev_tables has no room for two tables of {new_size} slots (capacity {} slots)",
                    self.dataplane.table_capacity()
                )
            })?)
        };
        let state = self.state_mut(name)?;
        state.config.maglev_size = new_size;
        state.config.when_no_backend = config.when_no_backend;
        let when_down_changed = state.config.when_backend_down != config.when_backend_down;
        state.config.when_backend_down = config.when_backend_down;
        state.config.persistence = config.persistence;
        state.config.hash = config.hash;
        if let Some(regions) = new_regions {
            state.default_pool.maglev_size = new_size;
            state.default_pool.regions = regions;
            state.default_pool.live = None;
        }
        self.publish(name)?;
        if new_regions.is_some() {
            for r in old_regions {
                self.regions.free(r, old_size);
            }
        }
        if when_down_changed {
            self.set_when_down(name, config.when_backend_down)?;
        }
        Ok(())
    }

    /// Rewrites the entries of every server of a service for a new `when_backend_down`:
    /// only down servers' entries change (their flows are kept, or balanced afresh).
    fn set_when_down(&mut self, name: &str, when_down: DownAction) -> anyhow::Result<()> {
        let state = self.state_mut(name)?;
        let key = state.key;
        let mut rewritten = Vec::new();
        for b in state
            .backends
            .values_mut()
            .chain(state.standbys.values_mut())
        {
            let before = b.entry();
            b.when_down = when_down;
            if b.entry() != before {
                rewritten.push(b.clone());
            }
        }
        for b in rewritten {
            self.write_backend(&key, &b)?;
        }
        Ok(())
    }

    /// Renames a running service in place (a reload that keeps its listener under another
    /// name): its id, backends, tables and flows are untouched.
    pub fn rename_service(&mut self, from: &str, to: &str) -> anyhow::Result<()> {
        if self.services.contains_key(to) {
            bail!("service {to} already exists");
        }
        let mut state = self
            .services
            .remove(from)
            .ok_or_else(|| anyhow!("no service named {from}"))?;
        state.config.name = to.to_owned();
        self.services.insert(to.to_owned(), state);
        Ok(())
    }

    /// Writes a server's `backends` entry and its owner record.
    fn write_backend(&mut self, service: &ServiceKey, b: &BackendState) -> anyhow::Result<()> {
        self.dataplane.set_backend(b.id, b.entry())?;
        self.dataplane.set_backend_owner(b.id, b.owner(service))
    }

    /// Clears a backend id's entry (no frame reaches it) and owner record.
    fn clear_backend(&mut self, id: u32) -> anyhow::Result<()> {
        self.dataplane.set_backend(id, BackendValue::default())?;
        self.dataplane
            .set_backend_owner(id, xdp_lb_common::BackendOwner::default())
    }
}

/// The stable identity Maglev derives a backend's permutation from: its address bytes.
fn address_key(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Small integer ids, lowest free first.
struct IdPool {
    free: BTreeSet<u32>,
}

impl IdPool {
    fn new(capacity: u32) -> Self {
        Self {
            free: (0..capacity).collect(),
        }
    }
    fn take(&mut self) -> Option<u32> {
        self.free.pop_first()
    }
    fn give_back(&mut self, id: u32) {
        self.free.insert(id);
    }
    /// Takes exactly `id`; false when it is not free.
    fn reserve(&mut self, id: u32) -> bool {
        self.free.remove(&id)
    }
}
