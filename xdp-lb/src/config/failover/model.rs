//! The validated failover settings: how each server is health-checked, who stands in for a
//! dead one, and who is told (the checks themselves are in `health/model.rs`).
//!
//! They are kept apart from `Config` (the balanced services) on purpose:
//! `reload::plan` diffs the balancing half into table changes, while the agent diffs this
//! half into checkers to start, stop or restart; neither needs the other's details.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use crate::config::{
    health::model::{HealthCheck, HealthState},
    pools::model::DEFAULT_POOL,
    services::backend::Backend,
};

/// Default time a notify command may run before it is killed.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Health checks, backups, fallback pools and alerts of every service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failover {
    /// The command run on every state change; `None`: state changes are only logged.
    pub notify: Option<Notify>,
    /// By service name; every service of the file has an entry.
    pub services: BTreeMap<String, ServiceFailover>,
}

/// One service's failover settings. The fields other than `pools` are its default pool's
/// (its own backends), except `backends`, which holds the primaries of every pool (a server
/// is in one pool of a service).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFailover {
    /// The service's check; `None`: its servers are not checked (a UDP service without a
    /// `health_check`), so they are always taken as healthy.
    pub check: Option<HealthCheck>,
    /// The primaries that have a backup or a check of their own, by address.
    pub backends: BTreeMap<IpAddr, BackendFailover>,
    /// The sorry servers, used only while no primary (nor a backup standing in) is usable.
    pub fallback: Vec<FallbackServer>,
    /// Each named pool's own settings, by pool name.
    pub pools: BTreeMap<String, PoolFailover>,
}

/// What a primary adds to its pool's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendFailover {
    /// Its effective check when it differs from its pool's (the service's for the default
    /// pool).
    pub check: Option<HealthCheck>,
    /// The standby that takes its Maglev slots while it is down.
    pub backup: Option<IpAddr>,
    /// The VLAN its backup is on when it is not the service's: the primary's own.
    pub backup_vlan: Option<u16>,
}

/// A server of the fallback pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackServer {
    pub backend: Backend,
    /// Its effective check when it differs from its pool's (the service's for the default
    /// pool).
    pub check: Option<HealthCheck>,
}

/// A named pool's own failover settings: its check and fallback servers (its primaries'
/// backups and checks are in [`ServiceFailover::backends`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolFailover {
    /// The check of the pool's servers when it differs from the service's.
    pub check: Option<HealthCheck>,
    /// The pool's primaries, whose standbys and checks are the pool's.
    pub primaries: BTreeSet<IpAddr>,
    /// The pool's sorry servers.
    pub fallback: Vec<FallbackServer>,
}

/// The role a server plays in its service (`XDP_LB_ROLE` of a notification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Primary,
    Backup,
    Fallback,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Fallback => "fallback",
        })
    }
}

impl ServiceFailover {
    /// The check of the server at `address` in `role` (`None` when the service is not
    /// checked): its own, else its pool's, else the service's.
    pub fn check_for(&self, address: IpAddr, role: Role) -> Option<&HealthCheck> {
        let pool = self.pool_of(address, role).map(|(_, p)| p);
        let own = match role {
            Role::Primary => self.backends.get(&address).and_then(|b| b.check.as_ref()),
            Role::Backup => None,
            Role::Fallback => pool
                .map_or(self.fallback.as_slice(), |p| p.fallback.as_slice())
                .iter()
                .find(|f| f.backend.address == address)
                .and_then(|f| f.check.as_ref()),
        };
        let pool_check = pool.and_then(|p| p.check.as_ref());
        self.check
            .as_ref()
            .map(|service| own.or(pool_check).unwrap_or(service))
    }

    /// The named pool the server at `address` in `role` belongs to, with its name (`None`:
    /// the default pool).
    pub fn pool_of(&self, address: IpAddr, role: Role) -> Option<(&str, &PoolFailover)> {
        let found = self.pools.iter().find(|(_, p)| match role {
            Role::Primary => p.primaries.contains(&address),
            Role::Backup => p
                .primaries
                .iter()
                .any(|primary| self.backup_of(*primary) == Some(address)),
            Role::Fallback => p.fallback.iter().any(|f| f.backend.address == address),
        });
        found.map(|(name, p)| (name.as_str(), p))
    }

    /// The fallback server at `address`, of any pool.
    pub fn fallback_server(&self, address: IpAddr) -> Option<&FallbackServer> {
        self.fallback
            .iter()
            .chain(self.pools.values().flat_map(|p| &p.fallback))
            .find(|f| f.backend.address == address)
    }

    /// The fallback servers of pool `name` (`default`: the service's own).
    pub fn fallback_of(&self, name: &str) -> &[FallbackServer] {
        match self.pools.get(name) {
            Some(pool) => &pool.fallback,
            None if name == DEFAULT_POOL => &self.fallback,
            None => &[],
        }
    }

    /// The health a server of this service starts in: `initial_state` of its check, up when
    /// it is not checked.
    pub fn initial_health(&self, address: IpAddr, role: Role) -> HealthState {
        self.check_for(address, role)
            .map_or(HealthState::Up, |c| c.initial_state)
    }

    /// The backup named by the primary at `address`.
    pub fn backup_of(&self, address: IpAddr) -> Option<IpAddr> {
        self.backends.get(&address).and_then(|b| b.backup)
    }

    /// The configuration a standby is resolved and given its entry with: a fallback
    /// server's own; a backup's address, on the VLAN of the primaries it stands in for.
    pub fn standby_backend(&self, address: IpAddr, role: Role) -> Backend {
        if let Some(f) = self
            .fallback_server(address)
            .filter(|_| role == Role::Fallback)
        {
            return f.backend.clone();
        }
        let vlan = self
            .backends
            .values()
            .find(|b| b.backup == Some(address))
            .and_then(|b| b.backup_vlan);
        Backend {
            address,
            weight: 1,
            mac: None,
            vlan,
        }
    }

    /// Every standby of every pool (backups, then the fallback servers) with its role, each
    /// address once.
    pub fn standbys(&self) -> Vec<(IpAddr, Role)> {
        let mut out: Vec<(IpAddr, Role)> = Vec::new();
        for backup in self.backends.values().filter_map(|b| b.backup) {
            if !out.iter().any(|(a, _)| *a == backup) {
                out.push((backup, Role::Backup));
            }
        }
        let fallback = self
            .fallback
            .iter()
            .chain(self.pools.values().flat_map(|p| &p.fallback));
        out.extend(fallback.map(|f| (f.backend.address, Role::Fallback)));
        out
    }
}

/// The command run on every state change (keepalived's `notify`, mon's alerts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    /// An absolute path to an executable; run without arguments, the change in its
    /// environment.
    pub command: PathBuf,
    /// Killed when it runs longer.
    pub timeout: Duration,
}
