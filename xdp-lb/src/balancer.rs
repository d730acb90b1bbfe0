//! The balancer's state, and the only code that writes services, backends and Maglev tables
//! into the data plane.
//!
//! Each service owns two regions of `maglev_tables` of M slots. A new table is written into
//! the region that is not live, then the service's `service_by_vip` value is replaced whole
//! with the other region's offset: a packet sees the old table or the new one, never a mix.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{Context as _, anyhow, bail};
use xdp_lb_common::{
    BACKEND_F_VALID, BackendValue, MAX_BACKENDS, MAX_SERVICES, SERVICE_F_HASH_SOURCE,
    SERVICE_F_PASS_WHEN_EMPTY,
    ServiceKey, ServiceValue, addr_words, flow_hash, source_hash,
};

use crate::{
    config::{Backend, HashMode, MacAddr, NoBackendAction, Role, Service, ServiceFailover},
    dataplane::Dataplane,
    regions::RegionAllocator,
};

pub mod adopt;
mod standby;
mod table_plan;

pub use table_plan::Serving;
use table_plan::{Candidate, TablePlan};

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
    fn entry(&self) -> BackendValue {
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

#[derive(Clone, Debug)]
pub struct ServiceState {
    pub config: Service,
    pub key: ServiceKey,
    pub id: u32,
    /// Offsets of the service's two table regions.
    regions: [u32; 2],
    /// Which region is live (`None` while the service has no backend in its table).
    live: Option<usize>,
    pub generation: u32,
    pub backends: BTreeMap<IpAddr, BackendState>,
    /// Its backups and fallback pool, and the state its servers start in.
    pub failover: ServiceFailover,
    /// The backups and fallback servers, by address, each with an id and entry of its own.
    pub standbys: BTreeMap<IpAddr, BackendState>,
    /// Where its new flows go now.
    pub serving: Serving,
}

impl ServiceState {
    /// Its `service_by_vip` value for a live table at `offset` of `size` slots.
    fn value(&self, offset: u32, size: u32, flags: u32) -> ServiceValue {
        let (persist_timeout_s, persist_prefix_len) = self
            .config
            .persistence
            .map_or((0, 0), |p| (p.timeout_s, u32::from(p.prefix_len)));
        ServiceValue {
            service_id: self.id,
            table_offset: offset,
            table_size: size,
            flags,
            generation: self.generation,
            persist_timeout_s,
            persist_prefix_len,
        }
    }

    /// Backends currently in the table.
    pub fn active_backends(&self) -> usize {
        self.backends.values().filter(|b| b.in_table()).count()
    }

    /// The server at `address`: a primary, else a standby.
    pub fn server(&self, address: IpAddr) -> Option<&BackendState> {
        self.backends
            .get(&address)
            .or_else(|| self.standbys.get(&address))
    }

    fn server_mut(&mut self, address: IpAddr) -> Option<&mut BackendState> {
        match self.backends.get_mut(&address) {
            Some(primary) => Some(primary),
            None => self.standbys.get_mut(&address),
        }
    }

    /// Who fills the table now (see `table_plan.rs`).
    fn table_plan(&self) -> TablePlan {
        let candidate = |b: &BackendState| Candidate {
            id: b.id,
            address: b.config.address,
            weight: b.config.weight,
            usable: b.usable(),
        };
        let primaries: Vec<(Candidate, Option<Candidate>)> = self
            .backends
            .values()
            .map(|p| {
                let backup = self
                    .failover
                    .backup_of(p.config.address)
                    .and_then(|a| self.standbys.get(&a));
                (candidate(p), backup.map(candidate))
            })
            .collect();
        let fallback: Vec<Candidate> = self
            .failover
            .fallback
            .iter()
            .filter_map(|f| self.standbys.get(&f.backend.address))
            .map(candidate)
            .collect();
        TablePlan::new(&primaries, &fallback)
    }
}

pub struct Balancer {
    dataplane: Dataplane,
    flow_hash_seed: u32,
    services: BTreeMap<String, ServiceState>,
    service_ids: IdPool,
    backend_ids: IdPool,
    /// Last epoch handed to a backend.
    next_epoch: u32,
    regions: RegionAllocator,
    /// What an earlier agent used, still to be claimed back (see `adopt.rs`).
    adopting: Option<adopt::Snapshot>,
    /// The service being added while claiming.
    claiming: Option<String>,
}

impl Balancer {
    pub fn new(dataplane: Dataplane, flow_hash_seed: u32) -> Self {
        let capacity = dataplane.table_capacity();
        Self {
            dataplane,
            flow_hash_seed,
            services: BTreeMap::new(),
            service_ids: IdPool::new(MAX_SERVICES),
            backend_ids: IdPool::new(MAX_BACKENDS),
            next_epoch: 0,
            regions: RegionAllocator::new(capacity),
            adopting: None,
            claiming: None,
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

    /// Adds a service with its backends. Backends with a MAC in the config are usable at once;
    /// the others wait for `set_forwarding`. Ids are taken in (name, address) order, so LBs
    /// that load one config number everything alike whatever order the file lists it in.
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
        let claimed = self.claim_service(config);
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
        let (id, regions, live, generation) = match claimed {
            Some(c) => (c.id, c.regions, c.live, c.generation),
            None => {
                let (id, regions) = self.new_service_space(config)?;
                self.dataplane.reset_service_counter(id)?;
                (id, regions, None, 0)
            }
        };
        let state = ServiceState {
            config: config.clone(),
            key,
            id,
            regions,
            live,
            generation,
            backends: BTreeMap::new(),
            failover: failover.clone(),
            standbys: BTreeMap::new(),
            serving: Serving::Nothing,
        };
        let state = self.fill_service(config, failover, forwarding, state)?;
        let name = config.name.clone();
        self.services.insert(name.clone(), state);
        self.publish(&name)
    }

    /// A new service id and two table regions.
    fn new_service_space(&mut self, config: &Service) -> anyhow::Result<(u32, [u32; 2])> {
        let size = config.maglev_size;
        let id = self
            .service_ids
            .take()
            .ok_or_else(|| anyhow!("no free service id (at most {MAX_SERVICES} services)"))?;
        let regions = match (self.regions.alloc(size), self.regions.alloc(size)) {
            (Some(a), Some(b)) => [a, b],
            (a, b) => {
                for r in [a, b].into_iter().flatten() {
                    self.regions.free(r, size);
                }
                self.service_ids.give_back(id);
                bail!(
                    "maglev_tables has no room for two tables of {size} slots for service {} (capacity {} slots; raise maglev_table_slots)",
                    config.name,
                    self.dataplane.table_capacity()
                );
            }
        };
        Ok((id, regions))
    }

    /// Gives the service's backends and standbys their ids and entries.
    fn fill_service(
        &mut self,
        config: &Service,
        failover: &ServiceFailover,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
        mut state: ServiceState,
    ) -> anyhow::Result<ServiceState> {
        let mut sorted: Vec<&Backend> = config.backends.iter().collect();
        sorted.sort_by_key(|b| b.address);
        for backend in sorted {
            let healthy = failover
                .initial_health(backend.address, Role::Primary)
                .is_up();
            match self.new_backend(backend, forwarding(backend), healthy) {
                Ok(b) => {
                    state.backends.insert(backend.address, b);
                }
                Err(err) => {
                    self.release(&state);
                    return Err(err);
                }
            }
        }
        match self.new_standbys(failover, &state.standbys, forwarding) {
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
        config: &Backend,
        forwarding: Option<Forwarding>,
        healthy: bool,
    ) -> anyhow::Result<BackendState> {
        // An earlier agent's server keeps its id, epoch (so its flows stay) and health.
        if let Some(claimed) = self.claim_server(config.address) {
            let state = BackendState {
                id: claimed.id,
                config: config.clone(),
                forwarding,
                healthy: claimed.healthy,
                epoch: claimed.epoch,
            };
            self.dataplane.set_backend(claimed.id, state.entry())?;
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
        };
        let written = self
            .dataplane
            .reset_backend_counter(id)
            .and_then(|()| self.dataplane.set_backend(id, state.entry()));
        if let Err(err) = written {
            self.backend_ids.give_back(id);
            return Err(err);
        }
        Ok(state)
    }

    /// Adds a backend to a running service. Flows already placed keep their backends.
    pub fn add_backend(
        &mut self,
        service: &str,
        config: &Backend,
        forwarding: Option<Forwarding>,
    ) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        if state.backends.contains_key(&config.address) {
            bail!("service {service} already has backend {}", config.address);
        }
        if config.address.is_ipv4() != state.config.vip.is_ipv4() {
            bail!(
                "backend {} is not of the family of {service}'s VIP {}",
                config.address,
                state.config.vip
            );
        }
        if state.backends.len() >= state.config.maglev_size as usize {
            bail!("service {service} has as many backends as its table has slots");
        }
        let healthy = state
            .failover
            .initial_health(config.address, Role::Primary)
            .is_up();
        let backend = self.new_backend(config, forwarding, healthy)?;
        let state = self
            .services
            .get_mut(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        state.config.backends.push(config.clone());
        state.backends.insert(config.address, backend);
        self.publish(service)
    }

    /// Removes a backend from a running service: it leaves the table first, then its entry
    /// is invalidated, so flows on it are balanced afresh and none is sent to a stale MAC.
    pub fn remove_backend(&mut self, service: &str, address: IpAddr) -> anyhow::Result<()> {
        let state = self
            .services
            .get_mut(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        let backend = state
            .backends
            .remove(&address)
            .ok_or_else(|| anyhow!("service {service} has no backend {address}"))?;
        state.config.backends.retain(|b| b.address != address);
        self.publish(service)?;
        self.dataplane
            .set_backend(backend.id, BackendValue::default())?;
        self.backend_ids.give_back(backend.id);
        Ok(())
    }

    /// Removes a service: its frames are passed from now on, its ids and regions are freed.
    pub fn remove_service(&mut self, name: &str) -> anyhow::Result<()> {
        let state = self
            .services
            .remove(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        self.dataplane.remove_service(&state.key)?;
        self.release(&state);
        Ok(())
    }

    fn release(&mut self, state: &ServiceState) {
        for b in state.backends.values().chain(state.standbys.values()) {
            if let Err(err) = self.dataplane.set_backend(b.id, BackendValue::default()) {
                log::warn!("clearing backend {}: {err:#}", b.id);
            }
            self.backend_ids.give_back(b.id);
        }
        for r in state.regions {
            self.regions.free(r, state.config.maglev_size);
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

    /// Records a health verdict of a primary or a standby: an unhealthy one leaves the table
    /// (a backup takes a dead primary's slots, the fallback pool the whole table when no
    /// primary is left) and its entry becomes invalid, so no frame reaches it; a healthy one
    /// comes back.
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

    /// Applies `change` to one server (a primary or a standby), then brings its entry and
    /// the service's table up to date in an order that never lets a frame see a slot naming
    /// an invalid entry: a server becoming unusable leaves the table before its entry is
    /// invalidated; one becoming usable gets a valid entry before any slot names it. The
    /// table is rebuilt only when who fills it changes.
    fn update_backend(
        &mut self,
        service: &str,
        address: IpAddr,
        change: impl FnOnce(&mut BackendState),
    ) -> anyhow::Result<()> {
        let state = self
            .services
            .get_mut(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        let plan_before = state.table_plan();
        let backend = state
            .server_mut(address)
            .ok_or_else(|| anyhow!("service {service} has no backend {address}"))?;
        let (old_entry, was_usable) = (backend.entry(), backend.usable());
        change(backend);
        let (entry, usable, id) = (backend.entry(), backend.usable(), backend.id);
        let table_changes = state.table_plan() != plan_before;
        let leaving = was_usable && !usable;
        if leaving && table_changes {
            self.publish(service)?;
        }
        if entry != old_entry {
            self.dataplane.set_backend(id, entry)?;
        }
        if table_changes && !leaving {
            self.publish(service)?;
        }
        Ok(())
    }

    /// Changes a running service's own settings (table size, no-backend action,
    /// persistence) in place: its id, backends and remembered flows are kept. A new table
    /// size takes two new regions; the old ones are freed once the new table is live.
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
        let old_size = state.config.maglev_size;
        let new_size = config.maglev_size;
        if (new_size as usize) < state.backends.len() {
            bail!(
                "service {name}: {new_size} slots cannot hold its {} backends",
                state.backends.len()
            );
        }
        let old_regions = state.regions;
        let new_regions = if new_size == old_size {
            None
        } else {
            match (self.regions.alloc(new_size), self.regions.alloc(new_size)) {
                (Some(a), Some(b)) => Some([a, b]),
                (a, b) => {
                    for r in [a, b].into_iter().flatten() {
                        self.regions.free(r, new_size);
                    }
                    bail!(
                        "service {name}: maglev_tables has no room for two tables of {new_size} slots (capacity {} slots)",
                        self.dataplane.table_capacity()
                    );
                }
            }
        };
        let state = self
            .services
            .get_mut(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        state.config.maglev_size = new_size;
        state.config.when_no_backend = config.when_no_backend;
        state.config.persistence = config.persistence;
        state.config.hash = config.hash;
        if let Some(regions) = new_regions {
            state.regions = regions;
            state.live = None;
        }
        self.publish(name)?;
        if new_regions.is_some() {
            for r in old_regions {
                self.regions.free(r, old_size);
            }
        }
        Ok(())
    }

    /// Builds the service's table from its current backends and makes it live.
    fn publish(&mut self, name: &str) -> anyhow::Result<()> {
        let state = self
            .services
            .get_mut(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        let plan = state.table_plan();
        let table = plan.build(state.config.maglev_size);
        standby::note_serving(name, state, plan.serving);
        let mut flags = match state.config.when_no_backend {
            NoBackendAction::Drop => 0,
            NoBackendAction::Pass => SERVICE_F_PASS_WHEN_EMPTY,
        };
        if state.config.hash == HashMode::Source {
            flags |= SERVICE_F_HASH_SOURCE;
        }
        state.generation = state.generation.wrapping_add(1);
        let value = if table.is_empty() {
            state.live = None;
            log::error!(
                "service {} ({}:{}/{}) has no usable backend: its frames are {}",
                name,
                state.config.vip,
                state.config.port,
                state.config.protocol,
                if flags & SERVICE_F_PASS_WHEN_EMPTY == 0 {
                    "dropped"
                } else {
                    "passed to the host"
                }
            );
            state.value(state.regions[0], 0, flags)
        } else {
            let next = match state.live {
                Some(live) => 1 - live,
                None => 0,
            };
            self.dataplane
                .write_table(state.regions[next], &table)
                .with_context(|| format!("writing the Maglev table of {name}"))?;
            state.live = Some(next);
            state.value(state.regions[next], state.config.maglev_size, flags)
        };
        self.dataplane.set_service(state.key, value)
    }

    /// The live table of a service (empty while it has no backend).
    pub fn live_table(&self, name: &str) -> anyhow::Result<Vec<u32>> {
        let state = self
            .services
            .get(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        match state.live {
            Some(live) => self
                .dataplane
                .read_table(state.regions[live], state.config.maglev_size),
            None => Ok(Vec::new()),
        }
    }

    /// The backend the data plane picks for a flow from `client`:`client_port` to the
    /// service, computed in userspace from the same hash and the live table.
    pub fn predict(
        &self,
        name: &str,
        client: IpAddr,
        client_port: u16,
    ) -> anyhow::Result<Option<IpAddr>> {
        let state = self
            .services
            .get(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        let Some(live) = state.live else {
            return Ok(None);
        };
        let hash = match state.config.hash {
            HashMode::Source if client.is_ipv4() == state.config.vip.is_ipv4() => {
                Some(source_hash(&addr_words(client), client.is_ipv4(), self.flow_hash_seed))
            }
            HashMode::Source => None,
            HashMode::Flow => flow_hash(
                client,
                client_port,
                state.config.vip,
                state.config.port,
                state.config.protocol.number(),
                self.flow_hash_seed,
            ),
        }
        .ok_or_else(|| {
            anyhow!(
                "client {client} and VIP {} are of different families",
                state.config.vip
            )
        })?;
        let slot = state.regions[live] + hash % state.config.maglev_size;
        let id = self.dataplane.read_table(slot, 1)?[0];
        Ok(state
            .backends
            .values()
            .chain(state.standbys.values())
            .find(|b| b.id == id)
            .map(|b| b.config.address))
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
