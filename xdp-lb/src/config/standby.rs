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
    BackendFailover, FallbackServer, HostFacts, Notify, Protocol, ServiceFailover,
    errors::shown,
    failover::DEFAULT_NOTIFY_TIMEOUT,
    raw::{RawService, at},
    raw_failover::RawNotify,
    validate::Checker,
};

/// Shortest and longest time a notify command may run.
const NOTIFY_TIMEOUTS: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

/// What `service_failover` needs to know of the service besides its raw form.
pub(super) struct ServiceFacts<'a> {
    pub vip: Option<IpAddr>,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub maglev_size: Option<u32>,
    /// The primaries by address: their index and location.
    pub primaries: &'a HashMap<IpAddr, (usize, Location)>,
}

impl Checker<'_> {
    /// Service `i`'s failover settings; `None` when an error was reported.
    pub(super) fn service_failover(
        &mut self,
        i: usize,
        s: &RawService,
        facts: &ServiceFacts<'_>,
    ) -> Option<ServiceFailover> {
        let before = self.errors.len();
        let field = |name: &str| format!("services[{i}].{name}");
        // A broken service check is reported; the servers' settings are still checked
        // against the defaults so that every error shows at once.
        let check = self
            .service_check(
                s.health_check.as_ref(),
                facts.port,
                facts.protocol,
                &field("health_check"),
            )
            .unwrap_or_else(|| {
                Some(super::HealthCheck::default_for_port(
                    facts.port.unwrap_or(1),
                ))
            });

        let fallback = self.fallback_pool(i, s, facts, check.as_ref());
        let fallback_addresses: HashMap<IpAddr, usize> = fallback
            .iter()
            .enumerate()
            .map(|(k, f)| (f.backend.address, k))
            .collect();

        let mut backends = BTreeMap::new();
        for (j, raw) in s.backends.value.iter().enumerate() {
            let b = &raw.value;
            let prefix = format!("services[{i}].backends[{j}]");
            // The address itself is checked (and reported) by `backend`.
            let Ok(address) = b.address.value.parse::<IpAddr>() else {
                continue;
            };
            let own_check = match &b.health_check {
                None => None,
                Some(hc) => self
                    .server_check(hc, check.as_ref(), &format!("{prefix}.health_check"))
                    .flatten(),
            };
            let backup = b.backup.as_ref().and_then(|text| {
                let field = format!("{prefix}.backup");
                self.backup(text, &field, address, facts, &fallback_addresses)
            });
            if own_check.is_some() || backup.is_some() {
                backends.insert(
                    address,
                    BackendFailover {
                        check: own_check,
                        backup,
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
                s.fallback.as_ref().map_or(at(&s.backends), at),
                field("fallback"),
                message,
            );
        }
        (self.errors.len() == before).then_some(ServiceFailover {
            check,
            backends,
            fallback,
        })
    }

    /// A primary's `backup`: a standby of the VIP's family that is neither the primary
    /// itself, another primary, nor in the fallback pool.
    fn backup(
        &mut self,
        text: &Spanned<String>,
        field: &str,
        primary: IpAddr,
        facts: &ServiceFacts<'_>,
        fallback: &HashMap<IpAddr, usize>,
    ) -> Option<IpAddr> {
        let backup = self.address(text, field, "backup")?;
        let message = if backup == primary {
            format!("{backup} is this backend itself; a backup must be another server")
        } else if let Some((j, line)) = facts.primaries.get(&backup) {
            format!(
                "{backup} is a backend of this service (backends[{j}], line {}); a backup must be a standby that is not",
                line.line()
            )
        } else if let Some(k) = fallback.get(&backup) {
            format!(
                "{backup} is in this service's fallback pool (fallback[{k}]); a server is a backup or a fallback, not both"
            )
        } else if let Some(vip) = facts.vip.filter(|v| v.is_ipv4() != backup.is_ipv4()) {
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
        i: usize,
        s: &RawService,
        facts: &ServiceFacts<'_>,
        check: Option<&super::HealthCheck>,
    ) -> Vec<FallbackServer> {
        let Some(list) = &s.fallback else {
            return Vec::new();
        };
        let mut seen: HashMap<IpAddr, (usize, Location)> = HashMap::new();
        let mut out = Vec::with_capacity(list.value.len());
        for (k, raw) in list.value.iter().enumerate() {
            let prefix = format!("services[{i}].fallback[{k}]");
            let b = &raw.value;
            // Duplicates are told here, as fallback entries rather than backends.
            let backend = self.backend(&prefix, k, b, facts.vip, &mut HashMap::new());
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
                    "{} is a backend of this service (backends[{j}], line {}); the fallback pool is for other servers",
                    backend.address,
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
    pub(super) fn notify(
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
