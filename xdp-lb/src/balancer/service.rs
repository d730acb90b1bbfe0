//! One service as the balancer holds it: its servers (of every pool), standbys, pools and
//! client rules, and what follows from them: its `service_by_vip` value and who fills each
//! pool's table.

use std::{collections::BTreeMap, net::IpAddr};

use xdp_lb_common::{
    SERVICE_F_HAS_RULES, SERVICE_F_HASH_SOURCE, SERVICE_F_PASS_WHEN_EMPTY, ServiceKey, ServiceValue,
};

use super::{
    BackendState, Owner, PoolState, Serving,
    table_plan::{Candidate, TablePlan},
};
use crate::config::{
    ClientAction, ClientPrefix, DEFAULT_POOL, HashMode, NoBackendAction, Role, Service,
    ServiceFailover,
};

#[derive(Clone, Debug)]
pub struct ServiceState {
    pub config: Service,
    pub key: ServiceKey,
    pub id: u32,
    /// Table switches of all its pools since it was set up.
    pub generation: u32,
    /// The primaries of every pool, by address (a server is in one pool of a service).
    pub backends: BTreeMap<IpAddr, BackendState>,
    /// Its backups and fallback pools, and the state its servers start in.
    pub failover: ServiceFailover,
    /// The backups and fallback servers of every pool, by address, each with an id and
    /// entry of its own.
    pub standbys: BTreeMap<IpAddr, BackendState>,
    /// Where its default pool's new flows go now.
    pub serving: Serving,
    /// Its own backends as a pool (`default`): the table its `service_by_vip` value names.
    pub default_pool: PoolState,
    /// Its named pools, by name.
    pub pools: BTreeMap<String, PoolState>,
    /// The client rules in the data plane, by prefix.
    pub rules: BTreeMap<ClientPrefix, ClientAction>,
}

impl ServiceState {
    /// What its servers' entries and owner records say of it.
    pub(super) fn owner(&self) -> Owner {
        Owner {
            key: self.key,
            when_down: self.config.when_backend_down,
        }
    }

    /// Its `service_by_vip` value: its default pool's live table, its flags and settings.
    pub(super) fn value(&self) -> ServiceValue {
        let pool = &self.default_pool;
        let (table_offset, table_size) = pool.live_table();
        let (persist_timeout_s, persist_prefix_len) = self
            .config
            .persistence
            .map_or((0, 0), |p| (p.timeout_s, u32::from(p.prefix_len)));
        ServiceValue {
            service_id: self.id,
            table_offset,
            table_size,
            flags: self.flags(),
            generation: pool.generation,
            persist_timeout_s,
            persist_prefix_len,
        }
    }

    pub(super) fn flags(&self) -> u32 {
        let mut flags = match self.config.when_no_backend {
            NoBackendAction::Drop => 0,
            NoBackendAction::Pass => SERVICE_F_PASS_WHEN_EMPTY,
        };
        if self.config.hash == HashMode::Source {
            flags |= SERVICE_F_HASH_SOURCE;
        }
        if !self.rules.is_empty() {
            flags |= SERVICE_F_HAS_RULES;
        }
        flags
    }

    /// Backends currently in a table (of any pool).
    pub fn active_backends(&self) -> usize {
        self.backends.values().filter(|b| b.in_table()).count()
    }

    /// The server at `address`: a primary, else a standby.
    pub fn server(&self, address: IpAddr) -> Option<&BackendState> {
        self.backends
            .get(&address)
            .or_else(|| self.standbys.get(&address))
    }

    pub(super) fn server_mut(&mut self, address: IpAddr) -> Option<&mut BackendState> {
        match self.backends.get_mut(&address) {
            Some(primary) => Some(primary),
            None => self.standbys.get_mut(&address),
        }
    }

    /// Pool `name` (`default`: its own backends).
    pub fn pool(&self, name: &str) -> Option<&PoolState> {
        if name == DEFAULT_POOL {
            Some(&self.default_pool)
        } else {
            self.pools.get(name)
        }
    }

    pub(super) fn pool_mut(&mut self, name: &str) -> Option<&mut PoolState> {
        if name == DEFAULT_POOL {
            Some(&mut self.default_pool)
        } else {
            self.pools.get_mut(name)
        }
    }

    /// Every pool with its name, the default one first.
    pub fn all_pools(&self) -> impl Iterator<Item = (&str, &PoolState)> {
        std::iter::once((DEFAULT_POOL, &self.default_pool))
            .chain(self.pools.iter().map(|(name, p)| (name.as_str(), p)))
    }

    /// The pool the server at `address` (a primary or a standby) is in.
    pub fn pool_of(&self, address: IpAddr) -> &str {
        if let Some((name, _)) = self
            .pools
            .iter()
            .find(|(_, p)| p.primaries.contains(&address))
        {
            return name;
        }
        [Role::Backup, Role::Fallback]
            .into_iter()
            .find_map(|role| self.failover.pool_of(address, role))
            .map_or(DEFAULT_POOL, |(name, _)| name)
    }

    /// Who fills pool `name`'s table now (see `table_plan.rs`).
    pub(super) fn table_plan(&self, name: &str) -> TablePlan {
        let candidate = |b: &BackendState| Candidate {
            id: b.id,
            address: b.config.address,
            weight: b.config.weight,
            usable: b.usable(),
        };
        let members = self.pool(name).map(|p| &p.primaries);
        let primaries: Vec<(Candidate, Option<Candidate>)> = members
            .into_iter()
            .flatten()
            .filter_map(|address| self.backends.get(address))
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
            .fallback_of(name)
            .iter()
            .filter_map(|f| self.standbys.get(&f.backend.address))
            .map(candidate)
            .collect();
        TablePlan::new(&primaries, &fallback)
    }

    /// Who fills each pool's table now, by pool name.
    pub(super) fn table_plans(&self) -> BTreeMap<String, TablePlan> {
        self.all_pools()
            .map(|(name, _)| (name.to_owned(), self.table_plan(name)))
            .collect()
    }
}
