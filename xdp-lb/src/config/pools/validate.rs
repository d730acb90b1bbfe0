//! Validation of a service's named pools (`pools:`) and client rules (`clients:`).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use serde_saphyr::{Location, Spanned};

use super::model::{ClientAction, ClientPrefix, ClientRule, DEFAULT_POOL, Pool, PrefixError};
use crate::config::{
    failover::{
        model::{BackendFailover, PoolFailover},
        validate::{RawPoolServers, ServiceFacts},
    },
    health::model::HealthCheck,
    services::{backend::RawBackend, model::Protocol, raw::RawService, side::ServiceSide},
    shared::{
        checker::{Checker, MAX_NAME_LEN},
        errors::shown,
        number::at,
    },
};

/// What a service's pools are checked against.
pub(crate) struct PoolContext<'a> {
    /// The service's name, VIP and VLAN.
    pub side: ServiceSide<'a>,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    /// The service's table size: a pool's by default.
    pub maglev_size: Option<u32>,
    /// The service's check: its pools' servers are checked with it unless a pool says
    /// otherwise.
    pub check: Option<&'a HealthCheck>,
}

/// A service's named pools: the pools, their failover settings, and their primaries'
/// backups and own checks.
pub(crate) type CheckedPools = (
    Vec<Pool>,
    BTreeMap<String, PoolFailover>,
    BTreeMap<IpAddr, BackendFailover>,
);

/// Whether `name` can name a pool (`default` is the service's own backends).
pub(crate) fn valid_pool_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    !name.is_empty() && name.chars().count() <= MAX_NAME_LEN && name.chars().all(allowed)
}

impl Checker<'_> {
    /// Service `i`'s named pools; `None` when an error was reported.
    pub(crate) fn pools(
        &mut self,
        i: usize,
        s: &RawService,
        service: &PoolContext<'_>,
    ) -> Option<CheckedPools> {
        let before = self.errors.len();
        let mut pools = Vec::new();
        let mut settings = BTreeMap::new();
        let mut primaries_failover = BTreeMap::new();
        let Some(raw) = &s.pools else {
            return Some((pools, settings, primaries_failover));
        };
        for (name, raw_pool) in &raw.value.0 {
            let path = format!("services[{i}].pools.{}", name.value);
            let name_ok = self.pool_name(name, &path);
            let p = &raw_pool.value;
            let maglev_size = match service.maglev_size {
                Some(default) => self.table_size(
                    p.maglev_size.as_ref(),
                    p.backends.value.len(),
                    &format!("{path}.maglev_size"),
                    default,
                ),
                None => None,
            };
            let mut addresses = HashMap::new();
            let mut backends = Vec::with_capacity(p.backends.value.len());
            for (j, backend) in p.backends.value.iter().enumerate() {
                let prefix = format!("{path}.backends[{j}]");
                backends.extend(self.backend(
                    &prefix,
                    j,
                    &backend.value,
                    &service.side,
                    &mut addresses,
                ));
            }
            let check = match &p.health_check {
                None => Some(None),
                Some(hc) => self.server_check(hc, service.check, &format!("{path}.health_check")),
            };
            let effective = check.clone().flatten().or_else(|| service.check.cloned());
            let facts = ServiceFacts {
                side: service.side,
                port: service.port,
                protocol: service.protocol,
                maglev_size,
                primaries: &addresses,
            };
            let servers = RawPoolServers {
                path: path.clone(),
                noun: format!("pool {}", name.value),
                backends: &p.backends,
                fallback: p.fallback.as_ref(),
            };
            let standbys = self.pool_standbys(&servers, &facts, effective.as_ref());
            let (Some(()), Some(maglev_size), Some(check), Some((own, fallback))) =
                (name_ok, maglev_size, check, standbys)
            else {
                continue;
            };
            primaries_failover.extend(own);
            settings.insert(
                name.value.clone(),
                PoolFailover {
                    check,
                    primaries: backends.iter().map(|b| b.address).collect(),
                    fallback,
                },
            );
            pools.push(Pool {
                name: name.value.clone(),
                maglev_size,
                backends,
            });
        }
        self.one_pool_per_server(i, s);
        (self.errors.len() == before).then_some((pools, settings, primaries_failover))
    }

    fn pool_name(&mut self, name: &Spanned<String>, field: &str) -> Option<()> {
        let message = if name.value == DEFAULT_POOL {
            format!(
                "`{DEFAULT_POOL}` is the service's own backends (its `backends` list); name this pool otherwise"
            )
        } else if valid_pool_name(&name.value) {
            return Some(());
        } else {
            format!(
                "{} is not a valid pool name (1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ . -)",
                shown(&name.value)
            )
        };
        self.error(at(name), field, message);
        None
    }

    /// Every server (primary, backup or fallback) of service `i` is in one pool: the
    /// second pool naming an address is told where the first one does.
    fn one_pool_per_server(&mut self, i: usize, s: &RawService) {
        let mut pools = vec![(
            "the default pool".to_owned(),
            RawPoolServers::default_pool(i, s),
        )];
        if let Some(raw) = &s.pools {
            for (name, pool) in &raw.value.0 {
                pools.push((
                    format!("pool {}", name.value),
                    RawPoolServers {
                        path: format!("services[{i}].pools.{}", name.value),
                        noun: String::new(),
                        backends: &pool.value.backends,
                        fallback: pool.value.fallback.as_ref(),
                    },
                ));
            }
        }
        let mut first: HashMap<IpAddr, (usize, String, Location)> = HashMap::new();
        for (index, (_, pool)) in pools.iter().enumerate() {
            for (field, text) in servers(pool) {
                let Ok(address) = text.value.parse::<IpAddr>() else {
                    continue;
                };
                match first.get(&address) {
                    None => {
                        first.insert(address, (index, field, at(text)));
                    }
                    Some((other, other_field, location)) if *other != index => {
                        let message = format!(
                            "{address} is already in {} ({other_field}, line {}); a server is in one pool of a service",
                            pools[*other].0,
                            location.line()
                        );
                        self.error(at(text), field, message);
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// Service `i`'s client rules; `pools` are the names a rule may send clients to.
    pub(crate) fn client_rules(
        &mut self,
        i: usize,
        s: &RawService,
        vip: Option<IpAddr>,
        pools: &BTreeSet<String>,
    ) -> Option<Vec<ClientRule>> {
        let before = self.errors.len();
        let Some(list) = &s.clients else {
            return Some(Vec::new());
        };
        let mut seen: HashMap<ClientPrefix, (usize, Location)> = HashMap::new();
        let mut out = Vec::with_capacity(list.value.len());
        for (k, raw) in list.value.iter().enumerate() {
            let field = |key: &str| format!("services[{i}].clients[{k}].{key}");
            let rule = &raw.value;
            let prefix = self.client_prefix(&rule.prefix, &field("prefix"), vip);
            if let Some(prefix) = prefix {
                if let Some((first, line)) = seen.get(&prefix) {
                    let message = format!(
                        "{prefix} is listed twice (first as clients[{first}], line {})",
                        line.line()
                    );
                    self.error(at(&rule.prefix), field("prefix"), message);
                } else {
                    seen.insert(prefix, (k, at(&rule.prefix)));
                }
            }
            let action = match (&rule.pool, &rule.action) {
                (Some(_), Some(action)) => {
                    self.error(
                        at(action),
                        field("action"),
                        "a rule sends its clients to a `pool` or has `action: drop`, not both",
                    );
                    None
                }
                (None, None) => {
                    self.error(
                        at(raw),
                        format!("services[{i}].clients[{k}]"),
                        "a client rule needs `pool: NAME` or `action: drop`",
                    );
                    None
                }
                (None, Some(action)) => self
                    .word(action, &field("action"), "a rule action", &[("drop", ())])
                    .map(|()| ClientAction::Drop),
                (Some(pool), None) if pools.contains(&pool.value) => {
                    Some(ClientAction::Pool(pool.value.clone()))
                }
                (Some(pool), None) => {
                    let known: Vec<&str> = std::iter::once(DEFAULT_POOL)
                        .chain(
                            pools
                                .iter()
                                .map(String::as_str)
                                .filter(|p| *p != DEFAULT_POOL),
                        )
                        .collect();
                    let message = format!(
                        "this service has no pool {} (its pools: {})",
                        shown(&pool.value),
                        known.join(", ")
                    );
                    self.error(at(pool), field("pool"), message);
                    None
                }
            };
            if let (Some(prefix), Some(action)) = (prefix, action) {
                out.push(ClientRule { prefix, action });
            }
        }
        (self.errors.len() == before).then_some(out)
    }

    /// A rule's `prefix`: parses, has no host bits, is of the VIP's family.
    fn client_prefix(
        &mut self,
        text: &Spanned<String>,
        field: &str,
        vip: Option<IpAddr>,
    ) -> Option<ClientPrefix> {
        let message = match text.value.parse::<ClientPrefix>() {
            Err(PrefixError::Malformed(_)) => format!(
                "{} is not an IPv4 or IPv6 prefix (expected ADDRESS/LENGTH like 198.51.100.0/24)",
                shown(&text.value)
            ),
            Err(other) => other.to_string(),
            Ok(prefix) => match vip {
                Some(vip) if vip.is_ipv4() != prefix.is_ipv4() => {
                    let family = |v4: bool| if v4 { "IPv4" } else { "IPv6" };
                    format!(
                        "{prefix} is {} but the service's VIP {vip} is {} (a rule must be of its VIP's family)",
                        family(prefix.is_ipv4()),
                        family(vip.is_ipv4())
                    )
                }
                _ => return Some(prefix),
            },
        };
        self.error(at(text), field, message);
        None
    }
}

/// Every server entry of a pool: (field path of its address, the address as written).
fn servers<'a>(pool: &'a RawPoolServers<'a>) -> Vec<(String, &'a Spanned<String>)> {
    let mut out = Vec::new();
    let entries = |list: &'a [Spanned<RawBackend>]| list.iter().map(|b| &b.value);
    for (j, b) in entries(&pool.backends.value).enumerate() {
        out.push((format!("{}.backends[{j}].address", pool.path), &b.address));
        if let Some(backup) = &b.backup {
            out.push((format!("{}.backends[{j}].backup", pool.path), backup));
        }
    }
    if let Some(fallback) = pool.fallback {
        for (k, b) in entries(&fallback.value).enumerate() {
            out.push((format!("{}.fallback[{k}].address", pool.path), &b.address));
        }
    }
    out
}
