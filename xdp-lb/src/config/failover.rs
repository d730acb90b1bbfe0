//! The validated failover settings: how each server is health-checked, who stands in for a
//! dead one, and who is told.
//!
//! They are kept apart from [`Config`](super::Config) (the balanced services) on purpose:
//! `reload::plan` diffs the balancing half into table changes, while the agent diffs this
//! half into checkers to start, stop or restart; neither needs the other's details.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use super::{Backend, Config, Ops};

/// Default time between two checks of one server.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Default time one check may take.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(800);
/// Default good checks in a row that bring a server back.
pub const DEFAULT_RISE: u32 = 3;
/// Default bad checks in a row that take a server out.
pub const DEFAULT_FALL: u32 = 2;
/// Default time a notify command may run before it is killed.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default path of an `http` check.
pub const DEFAULT_HTTP_PATH: &str = "/";
/// Default status an `http` check expects.
pub const DEFAULT_HTTP_STATUS: u16 = 200;

/// Everything one configuration file says: the balanced services, their failover
/// settings and the operations endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    pub config: Config,
    pub failover: Failover,
    pub ops: Ops,
    /// When this LB announces its VIPs through BIRD; `None`: never.
    pub announce: Option<super::Announce>,
}

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
            None if name == super::DEFAULT_POOL => &self.fallback,
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

/// How one server is checked, every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// The server's port checked (by default the service's).
    pub port: u16,
    /// Time from the start of one check to the start of the next.
    pub interval: Duration,
    /// Time one check may take (shorter than `interval`).
    pub timeout: Duration,
    /// Good checks in a row that bring a down server up.
    pub rise: u32,
    /// Bad checks in a row that take an up server down (at least 2).
    pub fall: u32,
    /// The state a server is in before its first checks.
    pub initial_state: HealthState,
}

impl HealthCheck {
    /// The defaults: a TCP connect to `port` every second.
    pub fn default_for_port(port: u16) -> Self {
        Self {
            kind: CheckKind::Tcp,
            port,
            interval: DEFAULT_CHECK_INTERVAL,
            timeout: DEFAULT_CHECK_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            initial_state: HealthState::Up,
        }
    }
}

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 GET, answered with the expected status (and body substring).
    Http(HttpCheck),
    /// An RTMP handshake: C0+C1 out, a valid S0+S1 back.
    Rtmp,
    /// The path clients take: a SYN to VIP:port framed to the server's MAC, answered by a
    /// SYN-ACK from the VIP (IPv4 services).
    Dsr,
}

impl CheckKind {
    /// `tcp`, `http`, `rtmp` or `dsr`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(_) => "http",
            CheckKind::Rtmp => "rtmp",
            CheckKind::Dsr => "dsr",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// Starts with `/`; no spaces or control characters.
    pub path: String,
    pub expect_status: u16,
    /// A substring the body (its first 64 KiB) must contain; never empty.
    pub expect_body: Option<String>,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            path: DEFAULT_HTTP_PATH.to_owned(),
            expect_status: DEFAULT_HTTP_STATUS,
            expect_body: None,
        }
    }
}

/// A server's health as the checks decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    Up,
    Down,
}

impl HealthState {
    pub fn is_up(self) -> bool {
        self == HealthState::Up
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
        })
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
