//! Validation of a service's failover settings (its check, its primaries' backups and
//! checks, its fallback pool) and of the top-level `notify`.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_saphyr::{Location, Spanned};

use super::{
    model::{BackendFailover, DEFAULT_NOTIFY_TIMEOUT, FallbackServer, Notify, ServiceFailover},
    raw::RawNotify,
};
use crate::config::{
    health::model::HealthCheck,
    services::{backend::RawBackend, model::Protocol, raw::RawService, side::ServiceSide},
    shared::{
        checker::Checker,
        duration::{DurationRule, Resolution},
        errors::shown,
        host::HostFacts,
        number::at,
    },
};

/// Shortest and longest time a notify command may run.
const NOTIFY_TIMEOUTS: DurationRule = DurationRule {
    range: Duration::from_millis(100)..=Duration::from_secs(3600),
    resolution: Resolution::Millis,
};

/// What the failover checks need to know of the service (and the pool) besides the raw
/// form.
pub(crate) struct ServiceFacts<'a> {
    /// The service's name, VIP and VLAN.
    pub side: ServiceSide<'a>,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    /// The pool's table size.
    pub maglev_size: Option<u32>,
    /// The pool's primaries by address: their index and location.
    pub primaries: &'a HashMap<IpAddr, (usize, Location)>,
}

/// What a backup is checked against.
struct Known<'a> {
    /// How messages name the pool.
    noun: &'a str,
    facts: &'a ServiceFacts<'a>,
    /// The pool's fallback servers by address: their index.
    fallback: &'a HashMap<IpAddr, usize>,
}

/// One pool's servers as written, and how messages name the pool.
pub(crate) struct RawPoolServers<'a> {
    /// The field path of the pool: `services[0]` (the default pool) or
    /// `services[0].pools.premium`.
    pub path: String,
    /// `this service` or `pool premium`.
    pub noun: String,
    pub backends: &'a Spanned<Vec<Spanned<RawBackend>>>,
    pub fallback: Option<&'a Spanned<Vec<Spanned<RawBackend>>>>,
}

impl RawPoolServers<'_> {
    /// The default pool of service `i`: its own backends and fallback.
    pub(crate) fn default_pool(i: usize, s: &RawService) -> RawPoolServers<'_> {
        RawPoolServers {
            path: format!("services[{i}]"),
            noun: "this service".to_owned(),
            backends: &s.backends,
            fallback: s.fallback.as_ref(),
        }
    }
}

/// A pool's failover settings: its primaries' backups and own checks, and its fallback
/// servers.
pub(crate) type PoolStandbys = (BTreeMap<IpAddr, BackendFailover>, Vec<FallbackServer>);

impl Checker<'_> {
    /// The check of service `i`: its `health_check` over the defaults. A broken one is
    /// reported and a default TCP check stands in, so that the servers' settings are still
    /// checked and every error shows at once.
    pub(crate) fn service_health(
        &mut self,
        i: usize,
        s: &RawService,
        facts: &ServiceFacts<'_>,
    ) -> Option<HealthCheck> {
        let field = format!("services[{i}].health_check");
        let check = self.service_check(s.health_check.as_ref(), facts.port, facts.protocol, &field);
        check.unwrap_or_else(|| Some(HealthCheck::default_for_port(facts.port.unwrap_or(1))))
    }

    /// The failover settings of a service's default pool under the service's `check`;
    /// `None` when an error was reported.
    pub(crate) fn service_failover(
        &mut self,
        i: usize,
        s: &RawService,
        facts: &ServiceFacts<'_>,
        check: Option<HealthCheck>,
    ) -> Option<ServiceFailover> {
        let pool = RawPoolServers::default_pool(i, s);
        let (backends, fallback) = self.pool_standbys(&pool, facts, check.as_ref())?;
        Some(ServiceFailover {
            check,
            backends,
            fallback,
            pools: BTreeMap::new(),
        })
    }

    /// The standbys of one pool whose servers are checked with `check`: each primary's
    /// backup and own check, and the fallback servers. `None` when an error was reported.
    pub(crate) fn pool_standbys(
        &mut self,
        pool: &RawPoolServers<'_>,
        facts: &ServiceFacts<'_>,
        check: Option<&HealthCheck>,
    ) -> Option<PoolStandbys> {
        let before = self.errors.len();
        let fallback = self.fallback_pool(pool, facts, check);
        let fallback_addresses: HashMap<IpAddr, usize> = fallback
            .iter()
            .enumerate()
            .map(|(k, f)| (f.backend.address, k))
            .collect();

        let mut backends = BTreeMap::new();
        // Each backup with the VLAN it is on (its primary's) and the first primary naming it.
        let mut backup_vlans: HashMap<IpAddr, (Option<u16>, IpAddr)> = HashMap::new();
        for (j, raw) in pool.backends.value.iter().enumerate() {
            let b = &raw.value;
            let prefix = format!("{}.backends[{j}]", pool.path);
            // The address itself is checked (and reported) by `backend`.
            let Ok(address) = b.address.value.parse::<IpAddr>() else {
                continue;
            };
            let own_check = match &b.health_check {
                None => None,
                Some(hc) => self
                    .server_check(hc, check, &format!("{prefix}.health_check"))
                    .flatten(),
            };
            let backup = b.backup.as_ref().and_then(|text| {
                let field = format!("{prefix}.backup");
                let known = Known {
                    noun: &pool.noun,
                    facts,
                    fallback: &fallback_addresses,
                };
                self.backup(text, &field, address, &known)
            });
            // A backup stands in on its primary's VLAN.
            let backup_vlan = facts.side.own_vlan(b.vlan.as_ref());
            if let (Some(backup), Some(text), Some(backup_vlan)) = (backup, &b.backup, backup_vlan)
            {
                match backup_vlans.get(&backup) {
                    Some((vlan, first)) if *vlan != backup_vlan => {
                        let on = |v: Option<u16>| {
                            v.map_or_else(
                                || "the service's VLAN".to_owned(),
                                |v| format!("VLAN {v}"),
                            )
                        };
                        let message = format!(
                            "{backup} stands in for {first} on {} and for {address} on {}; a \
                             backup is on the VLAN of the backends it stands in for (give these \
                             backends one VLAN, or each its own backup)",
                            on(*vlan),
                            on(backup_vlan)
                        );
                        self.error(at(text), format!("{prefix}.backup"), message);
                    }
                    Some(_) => {}
                    None => {
                        backup_vlans.insert(backup, (backup_vlan, address));
                    }
                }
            }
            if own_check.is_some() || backup.is_some() {
                backends.insert(
                    address,
                    BackendFailover {
                        check: own_check,
                        backup,
                        backup_vlan: backup.and(backup_vlan.flatten()),
                    },
                );
            }
        }

        if let Some(size) = facts.maglev_size
            && fallback.len() > size as usize
        {
            let message = format!(
                "{} fallback servers do not fit a table of {size} slots (each needs a slot)",
                fallback.len()
            );
            self.error(
                pool.fallback.map_or(at(pool.backends), at),
                format!("{}.fallback", pool.path),
                message,
            );
        }
        (self.errors.len() == before).then_some((backends, fallback))
    }

    /// A primary's `backup`: a standby of the VIP's family that is neither the primary
    /// itself, another primary, nor in the fallback pool.
    fn backup(
        &mut self,
        text: &Spanned<String>,
        field: &str,
        primary: IpAddr,
        known: &Known<'_>,
    ) -> Option<IpAddr> {
        let backup = self.address(text, field, "backup")?;
        let noun = known.noun;
        let message = if backup == primary {
            format!("{backup} is this backend itself; a backup must be another server")
        } else if let Some((j, line)) = known.facts.primaries.get(&backup) {
            format!(
                "{backup} is a backend of {noun} (backends[{j}], line {}); a backup must be a standby that is not",
                line.line()
            )
        } else if let Some(k) = known.fallback.get(&backup) {
            format!(
                "{backup} is in {noun}'s fallback pool (fallback[{k}]); a server is a backup or a fallback, not both"
            )
        } else if let Some(vip) = known
            .facts
            .side
            .vip
            .filter(|v| v.is_ipv4() != backup.is_ipv4())
        {
            let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
            format!(
                "{backup} is {} but the service's VIP {vip} is {} (a backup must be of its VIP's family)",
                family(backup),
                family(vip)
            )
        } else {
            return Some(backup);
        };
        self.error(at(text), field, message);
        None
    }

    /// The `fallback` pool: servers like backends (address, weight, mac, health_check), each
    /// once and none a primary.
    fn fallback_pool(
        &mut self,
        pool: &RawPoolServers<'_>,
        facts: &ServiceFacts<'_>,
        check: Option<&HealthCheck>,
    ) -> Vec<FallbackServer> {
        let Some(list) = pool.fallback else {
            return Vec::new();
        };
        let mut seen: HashMap<IpAddr, (usize, Location)> = HashMap::new();
        let mut out = Vec::with_capacity(list.value.len());
        for (k, raw) in list.value.iter().enumerate() {
            let prefix = format!("{}.fallback[{k}]", pool.path);
            let b = &raw.value;
            // Duplicates are told here, as fallback entries rather than backends.
            let backend = self.backend(&prefix, k, b, &facts.side, &mut HashMap::new());
            if let Some(backend) = &backend {
                if let Some((first, location)) = seen.get(&backend.address) {
                    let message = format!(
                        "{} is listed twice in this fallback pool (first as fallback[{first}], line {})",
                        backend.address,
                        location.line()
                    );
                    self.error(at(&b.address), format!("{prefix}.address"), message);
                    continue;
                }
                seen.insert(backend.address, (k, at(&b.address)));
            }
            if let Some(backup) = &b.backup {
                self.error(
                    at(backup),
                    format!("{prefix}.backup"),
                    "a fallback server has no backup",
                );
            }
            let own_check = match &b.health_check {
                None => Some(None),
                Some(hc) => self.server_check(hc, check, &format!("{prefix}.health_check")),
            };
            let Some(backend) = backend else { continue };
            if let Some((j, line)) = facts.primaries.get(&backend.address) {
                let message = format!(
                    "{} is a backend of {} (backends[{j}], line {}); the fallback pool is for other servers",
                    backend.address,
                    pool.noun,
                    line.line()
                );
                self.error(at(&b.address), format!("{prefix}.address"), message);
                continue;
            }
            if let Some(check) = own_check {
                out.push(FallbackServer { backend, check });
            }
        }
        out
    }

    /// The top-level `notify`: an absolute path to an executable, and a timeout.
    pub(crate) fn notify(
        &mut self,
        raw: Option<&Spanned<RawNotify>>,
        host: &dyn HostFacts,
    ) -> Option<Option<Notify>> {
        let Some(raw) = raw else { return Some(None) };
        let before = self.errors.len();
        let command = &raw.value.command;
        let path = Path::new(&command.value);
        if !path.is_absolute() {
            let message = format!(
                "{} is not an absolute path (write the full path of the command)",
                shown(&command.value)
            );
            self.error(at(command), "notify.command", message);
        } else if !host.is_executable(path) {
            let message = format!(
                "{} is not an executable file (check the path and its x bit)",
                shown(&command.value)
            );
            self.error(at(command), "notify.command", message);
        }
        let timeout = match &raw.value.timeout {
            None => Some(DEFAULT_NOTIFY_TIMEOUT),
            Some(t) => self.duration(t, "notify.timeout", &NOTIFY_TIMEOUTS),
        };
        if self.errors.len() != before {
            return None;
        }
        Some(Some(Notify {
            command: PathBuf::from(&command.value),
            timeout: timeout?,
        }))
    }
}
