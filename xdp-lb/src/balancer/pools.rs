//! Named pools in the balancer: each has an id (its key in `pools`), two table regions and
//! its primaries; its standbys are the service's, named by the failover settings. A pool
//! comes and goes, and changes its table size, like a service: its table is switched in
//! only once its servers have entries, and its entries are cleared only once no rule and
//! no table names it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{anyhow, bail};
use xdp_lb_common::{MAX_POOLS, PoolValue};

use super::{Balancer, Forwarding, ServiceState, Serving, adopt::PoolSnapshot};
use crate::config::{Backend, ClientAction, DEFAULT_POOL, Pool, Role};

/// One pool of a service: the default pool (its own backends) or a named one.
#[derive(Clone, Debug)]
pub struct PoolState {
    /// Its key in `pools` (`POOL_ID_DEFAULT` for the default pool, whose table the
    /// service's `service_by_vip` value names).
    pub id: u32,
    pub maglev_size: u32,
    /// Offsets of its two table regions.
    pub(super) regions: [u32; 2],
    /// Which region is live (`None` while its table is empty).
    pub(super) live: Option<usize>,
    /// Bumped on every switch of its table.
    pub generation: u32,
    /// Where its new flows go now.
    pub serving: Serving,
    /// Its primaries' addresses.
    pub primaries: BTreeSet<IpAddr>,
    /// Slots of its live table per backend id.
    pub slots: BTreeMap<u32, u32>,
}

impl PoolState {
    /// The live region's offset, when its table is not empty.
    pub(super) fn live_offset(&self) -> Option<u32> {
        self.live.and_then(|live| self.regions.get(live).copied())
    }

    /// Offset and size of its live table (size 0 while it is empty).
    pub(super) fn live_table(&self) -> (u32, u32) {
        match self.live_offset() {
            Some(offset) => (offset, self.maglev_size),
            None => (self.regions[0], 0),
        }
    }

    /// Its `pools` value, as a pool of service `service_id`.
    pub(super) fn value(&self, service_id: u32) -> PoolValue {
        let (table_offset, table_size) = self.live_table();
        PoolValue {
            table_offset,
            table_size,
            service_id,
            generation: self.generation,
        }
    }
}

impl Balancer {
    /// A new pool id and two table regions for pool `pool` of `service`.
    fn new_pool_space(&mut self, service: &str, pool: &Pool) -> anyhow::Result<(u32, [u32; 2])> {
        let id = self
            .pool_ids
            .take()
            .ok_or_else(|| anyhow!("no free pool id (at most {} named pools)", MAX_POOLS - 1))?;
        match self.two_regions(pool.maglev_size) {
            Some(regions) => Ok((id, regions)),
            None => {
                self.pool_ids.give_back(id);
                bail!(
                    "maglev_tables has no room for two tables of {} slots for pool {} of service {service} (capacity {} slots; raise maglev_table_slots)",
                    pool.maglev_size,
                    pool.name,
                    self.dataplane.table_capacity()
                );
            }
        }
    }

    /// Frees a pool's id and regions.
    pub(super) fn release_pool_space(&mut self, pool: &PoolState) {
        for r in pool.regions {
            self.regions.free(r, pool.maglev_size);
        }
        self.pool_ids.give_back(pool.id);
    }

    /// Gives the named pools of a service being added their ids and regions: those an
    /// earlier agent used (`claimed`, when the table size is the same) back, the others new.
    /// Claimed pools no longer configured are freed.
    pub(super) fn claim_pools(
        &mut self,
        state: &mut ServiceState,
        mut claimed: BTreeMap<String, PoolSnapshot>,
    ) -> anyhow::Result<()> {
        let mut result = Ok(());
        for pool in &state.config.pools {
            let reused = claimed
                .remove(&pool.name)
                .and_then(|c| self.reuse_claimed(c, pool.maglev_size));
            let (id, regions, live, generation) = match reused {
                Some(c) => (c.id, c.regions, c.live, c.generation),
                None => match self.new_pool_space(&state.config.name, pool) {
                    Ok((id, regions)) => (id, regions, None, 0),
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                },
            };
            state.pools.insert(
                pool.name.clone(),
                PoolState {
                    id,
                    maglev_size: pool.maglev_size,
                    regions,
                    live,
                    generation,
                    serving: Serving::Nothing,
                    primaries: pool.backends.iter().map(|b| b.address).collect(),
                    slots: BTreeMap::new(),
                },
            );
        }
        for (_, unused) in claimed {
            self.free_claimed(&unused);
        }
        result
    }

    /// `claimed` when its table has `size` slots; freed otherwise.
    fn reuse_claimed(&mut self, claimed: PoolSnapshot, size: u32) -> Option<PoolSnapshot> {
        if claimed.maglev_size == size {
            return Some(claimed);
        }
        self.free_claimed(&claimed);
        None
    }

    /// An earlier agent's pool this agent does not reuse: gone once adoption ends, when
    /// every new table is live (the earlier program may read it until then).
    fn free_claimed(&mut self, claimed: &PoolSnapshot) {
        let regions: Vec<_> = claimed
            .regions
            .iter()
            .map(|r| (*r, claimed.maglev_size))
            .collect();
        match self.adopting.as_mut() {
            Some(adopting) => adopting.leftover_pools.push((claimed.id, regions)),
            None => self.forget_pool(claimed.id, regions),
        }
    }

    /// Adds a named pool to a running service, with its backends (in their checks' initial
    /// state). Its fallback servers and backups are the service's standbys (`set_failover`
    /// first). No rule sends clients there yet.
    pub fn add_pool(
        &mut self,
        service: &str,
        pool: &Pool,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
    ) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        if pool.name == DEFAULT_POOL || state.pools.contains_key(&pool.name) {
            bail!("service {service} already has a pool {}", pool.name);
        }
        if let Some(b) = pool
            .backends
            .iter()
            .find(|b| state.backends.contains_key(&b.address))
        {
            bail!(
                "backend {} is already in pool {} of service {service}",
                b.address,
                state.pool_of(b.address)
            );
        }
        if let Some(b) = pool
            .backends
            .iter()
            .find(|b| b.address.is_ipv4() != state.config.vip.is_ipv4())
        {
            bail!(
                "backend {} is not of the family of {service}'s VIP {}",
                b.address,
                state.config.vip
            );
        }
        if pool.backends.len() > pool.maglev_size as usize {
            bail!(
                "pool {} has more backends than its table has slots",
                pool.name
            );
        }
        let failover = state.failover.clone();
        let owner = state.owner();
        let (id, regions) = self.new_pool_space(service, pool)?;
        let mut sorted: Vec<&Backend> = pool.backends.iter().collect();
        sorted.sort_by_key(|b| b.address);
        let mut created = BTreeMap::new();
        for backend in sorted {
            let healthy = failover
                .initial_health(backend.address, Role::Primary)
                .is_up();
            match self.new_backend(owner, backend, forwarding(backend), healthy) {
                Ok(b) => {
                    created.insert(backend.address, b);
                }
                Err(err) => {
                    for b in created.values() {
                        self.forget_backend(b.id);
                    }
                    self.regions.free(regions[0], pool.maglev_size);
                    self.regions.free(regions[1], pool.maglev_size);
                    self.pool_ids.give_back(id);
                    return Err(err);
                }
            }
        }
        let state = self.state_mut(service)?;
        state.pools.insert(
            pool.name.clone(),
            PoolState {
                id,
                maglev_size: pool.maglev_size,
                regions,
                live: None,
                generation: 0,
                serving: Serving::Nothing,
                primaries: created.keys().copied().collect(),
                slots: BTreeMap::new(),
            },
        );
        state.backends.extend(created);
        state.config.pools.push(pool.clone());
        self.publish_pool(service, &pool.name)
    }

    /// Removes a named pool from a running service: its value leaves `pools` first (no rule
    /// may name it any more), then its backends' entries are cleared and its id and regions
    /// freed. Its standbys go with the failover settings that name them.
    pub fn remove_pool(&mut self, service: &str, name: &str) -> anyhow::Result<()> {
        let state = self.state_mut(service)?;
        if !state.pools.contains_key(name) {
            bail!("service {service} has no pool {name}");
        }
        if let Some(prefix) = state
            .rules
            .iter()
            .find(|(_, action)| **action == ClientAction::Pool(name.to_owned()))
            .map(|(prefix, _)| *prefix)
        {
            bail!(
                "the client rule {prefix} of service {service} still sends clients to pool {name}"
            );
        }
        let Some(pool) = state.pools.remove(name) else {
            bail!("service {service} has no pool {name}");
        };
        state.config.pools.retain(|p| p.name != name);
        let gone: Vec<u32> = pool
            .primaries
            .iter()
            .filter_map(|address| state.backends.remove(address))
            .map(|b| b.id)
            .collect();
        self.dataplane.remove_pool(pool.id)?;
        for id in gone {
            self.forget_backend(id);
        }
        self.release_pool_space(&pool);
        Ok(())
    }

    /// Changes a named pool's table size in place: two new regions take the new table, the
    /// old ones are freed once it is live. Its id, backends and flows are kept.
    pub fn update_pool_settings(&mut self, service: &str, pool: &Pool) -> anyhow::Result<()> {
        let state = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service named {service}"))?;
        let current = state
            .pools
            .get(&pool.name)
            .ok_or_else(|| anyhow!("service {service} has no pool {}", pool.name))?;
        let (old_size, new_size) = (current.maglev_size, pool.maglev_size);
        if old_size == new_size {
            return Ok(());
        }
        if (new_size as usize) < current.primaries.len() {
            bail!(
                "pool {} of service {service}: {new_size} slots cannot hold its {} backends",
                pool.name,
                current.primaries.len()
            );
        }
        let old_regions = current.regions;
        let regions = self.two_regions(new_size).ok_or_else(|| {
            anyhow!(
                "pool {} of service {service}: maglev_tables has no room for two tables of {new_size} slots (capacity {} slots)",
                pool.name,
                self.dataplane.table_capacity()
            )
        })?;
        let state = self.state_mut(service)?;
        if let Some(p) = state.pools.get_mut(&pool.name) {
            p.maglev_size = new_size;
            p.regions = regions;
            p.live = None;
        }
        if let Some(p) = state.config.pools.iter_mut().find(|p| p.name == pool.name) {
            p.maglev_size = new_size;
        }
        self.publish_pool(service, &pool.name)?;
        for r in old_regions {
            self.regions.free(r, old_size);
        }
        Ok(())
    }

    /// Moves a primary to another pool of its service: it leaves its old pool's table, then
    /// joins the new one's. It keeps its id, epoch and entry, so its live flows stay.
    pub fn move_backend(&mut self, service: &str, address: IpAddr, to: &str) -> anyhow::Result<()> {
        let state = self.state_mut(service)?;
        let Some(config) = state.backends.get(&address).map(|b| b.config.clone()) else {
            bail!("service {service} has no backend {address}");
        };
        let from = state.pool_of(address).to_owned();
        if from == to {
            return Ok(());
        }
        let target = state
            .pool(to)
            .ok_or_else(|| anyhow!("service {service} has no pool {to}"))?;
        if target.primaries.len() >= target.maglev_size as usize {
            bail!("pool {to} of service {service} has as many backends as its table has slots");
        }
        if let Some(p) = state.pool_mut(&from) {
            p.primaries.remove(&address);
        }
        if let Some(p) = state.pool_mut(to) {
            p.primaries.insert(address);
        }
        state.config.backends.retain(|b| b.address != address);
        for p in &mut state.config.pools {
            p.backends.retain(|b| b.address != address);
        }
        if to == DEFAULT_POOL {
            state.config.backends.push(config);
        } else if let Some(p) = state.config.pools.iter_mut().find(|p| p.name == to) {
            p.backends.push(config);
        }
        self.publish_pool(service, &from)?;
        self.publish_pool(service, to)
    }

    /// Clears a server's entry and owner record and frees its id.
    pub(super) fn forget_backend(&mut self, id: u32) {
        if let Err(err) = self.clear_backend(id) {
            log::warn!("clearing backend {id}: {err:#}");
        }
        self.backend_ids.give_back(id);
    }
}
