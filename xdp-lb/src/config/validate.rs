//! From the file as written ([`RawConfig`]) to the validated [`Config`]: every rule is checked
//! and every violation collected, each with its location and field path.

use std::{collections::HashMap, net::IpAddr, ops::RangeInclusive, path::Path, time::Duration};

use serde_saphyr::{Location, Spanned};
use xdp_lb_common::{
    MAGLEV_DEFAULT_SIZE, MAGLEV_MAX_SIZE, MAGLEV_MIN_SIZE, MAX_BACKENDS, MAX_CLIENT_RULES,
    MAX_POOLS, MAX_SERVICES,
};

use super::{
    Config, ConfigFile, DEFAULT_FLOW_HASH_SEED, Failover, FlowTable, HostFacts, Protocol, Service,
    XdpAttachMode,
    duration::{DurationRule, Resolution},
    errors::{ConfigError, ConfigErrors, shown},
    raw::{Number, RawConfig, RawFlowTable, RawService, at},
};

/// Smallest and largest `flow_table.size` (the largest is about 7 GiB of kernel memory).
pub(crate) const MIN_FLOW_TABLE: u32 = 1024;
pub(crate) const MAX_FLOW_TABLE: u32 = 64 * 1024 * 1024;
/// Flow idle timeouts: the table counts whole seconds, up to a week.
pub(crate) const FLOW_TIMEOUTS: DurationRule = DurationRule {
    range: Duration::from_secs(1)..=Duration::from_secs(604_800),
    resolution: Resolution::Seconds,
};

/// Largest `maglev_table_slots`: 64 Mi slots (512 MiB of map at 8 bytes a slot).
pub(crate) const MAX_TABLE_SLOTS: u64 = 64 * 1024 * 1024;
/// `maglev_table_slots` when the file does not say: 4 Mi slots (32 MiB of kernel memory),
/// room for 32 services of the default size with their next tables. It does not depend on
/// the services, so reloads add, remove and resize services and pools freely within it.
pub(crate) const DEFAULT_TABLE_SLOTS: u32 = 1 << 22;
/// Longest service name.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Whether `n` is prime (trial division; `n` is at most a few million here).
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The prime to suggest instead of `n`: the next one up, or the one below when that would
/// be too large.
pub(super) fn prime_near(n: u32) -> u32 {
    let up = (n..=MAGLEV_MAX_SIZE).find(|&p| is_prime(p));
    up.or_else(|| (MAGLEV_MIN_SIZE..n).rev().find(|&p| is_prime(p)))
        .unwrap_or(MAGLEV_DEFAULT_SIZE)
}

pub(crate) fn validate(
    path: &Path,
    raw: &RawConfig,
    host: &dyn HostFacts,
) -> Result<ConfigFile, ConfigErrors> {
    let mut check = Checker {
        path,
        errors: Vec::new(),
        vips: raw
            .services
            .value
            .iter()
            .filter_map(|s| s.value.vip.value.parse().ok())
            .collect(),
        local: host.local_addresses(),
    };

    let flow_hash_seed = match &raw.flow_hash_seed {
        None => Some(DEFAULT_FLOW_HASH_SEED),
        Some(seed) => check
            .number(seed, "flow_hash_seed", 0..=i128::from(u32::MAX))
            .and_then(|v| u32::try_from(v).ok()),
    };
    let xdp_mode = match &raw.xdp_mode {
        None => Some(XdpAttachMode::default()),
        Some(mode) => check.word(
            mode,
            "xdp_mode",
            "an XDP attach mode",
            &[
                ("native", XdpAttachMode::Native),
                ("generic", XdpAttachMode::Generic),
            ],
        ),
    };
    let interfaces = check.interfaces(&raw.interfaces, host);

    if raw.services.value.len() > MAX_SERVICES as usize {
        let n = raw.services.value.len();
        check.error(
            at(&raw.services),
            "services",
            format!("{n} services are listed, at most {MAX_SERVICES} are allowed"),
        );
    }
    let mut seen = Seen::default();
    let mut services = Vec::with_capacity(raw.services.value.len());
    let mut failover = Failover::default();
    // Sum of 2 × maglev_size, known while every size is valid.
    let mut needed_slots = Some(0u64);
    for (i, service) in raw.services.value.iter().enumerate() {
        let checked = check.service(i, service, &mut seen);
        needed_slots = match (&checked, needed_slots) {
            (Some((s, _)), Some(sum)) => {
                let pools: u64 = s.pools.iter().map(|p| u64::from(p.maglev_size)).sum();
                Some(sum + 2 * (u64::from(s.maglev_size) + pools))
            }
            _ => None,
        };
        if let Some((service, service_failover)) = checked {
            failover
                .services
                .insert(service.name.clone(), service_failover);
            services.push(service);
        }
    }
    let notify = check.notify(raw.notify.as_ref(), host);
    let ops = check.ops(raw, host);
    let announce = check.announce(raw);

    let total_backends: usize = raw
        .services
        .value
        .iter()
        .map(|s| server_count(&s.value))
        .sum();
    if total_backends > MAX_BACKENDS as usize {
        check.error(
            at(&raw.services),
            "services",
            format!(
                "{total_backends} backends in total (backups and fallback servers included), at most {MAX_BACKENDS} are allowed"
            ),
        );
    }
    check.pool_and_rule_totals(at(&raw.services), &services);
    let maglev_table_slots = check.table_slots(raw, needed_slots);
    let flow_table = check.flow_table(raw.flow_table.as_ref());

    match (
        flow_hash_seed,
        xdp_mode,
        interfaces,
        maglev_table_slots,
        flow_table,
        notify,
        ops,
        announce,
    ) {
        (
            Some(flow_hash_seed),
            Some(xdp_mode),
            Some(interfaces),
            Some(maglev_table_slots),
            Some(flow_table),
            Some(notify),
            Some(ops),
            Some(announce),
        ) if check.errors.is_empty() => Ok(ConfigFile {
            config: Config {
                path: path.to_path_buf(),
                flow_hash_seed,
                xdp_mode,
                interfaces,
                maglev_table_slots,
                flow_table,
                services,
            },
            failover: Failover { notify, ..failover },
            ops,
            announce,
        }),
        _ => Err(ConfigErrors(check.errors)),
    }
}

/// Backend ids a service's servers take: one per primary and fallback server and per
/// distinct backup, in every pool.
fn server_count(s: &RawService) -> usize {
    let mut pools = vec![(&s.backends, s.fallback.as_ref())];
    if let Some(named) = &s.pools {
        pools.extend(
            named
                .value
                .0
                .iter()
                .map(|(_, p)| (&p.value.backends, p.value.fallback.as_ref())),
        );
    }
    pools
        .into_iter()
        .map(|(backends, fallback)| {
            let backups: std::collections::BTreeSet<&str> = backends
                .value
                .iter()
                .filter_map(|b| b.value.backup.as_ref().map(|t| t.value.as_str()))
                .collect();
            backends.value.len() + fallback.map_or(0, |f| f.value.len()) + backups.len()
        })
        .sum()
}

/// What a service listens on: VIP, port, protocol and VLAN (`None`: any).
pub(super) type Listener = (IpAddr, u16, Protocol, Option<u16>);

/// What earlier services used, for the uniqueness rules.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) names: HashMap<String, (usize, Location)>,
    /// Each listener with the service that first took it.
    pub(super) listeners: HashMap<Listener, (usize, Location)>,
}

pub(super) struct Checker<'a> {
    path: &'a Path,
    pub(super) errors: Vec<ConfigError>,
    /// Every VIP the file names (none can be a server too).
    pub(super) vips: std::collections::BTreeSet<std::net::IpAddr>,
    /// The host's own addresses and their prefix lengths (no server can be one of them, nor
    /// the network or broadcast address of an IPv4 subnet of theirs).
    pub(super) local: Vec<(std::net::IpAddr, u8)>,
}

impl Checker<'_> {
    pub(super) fn error(
        &mut self,
        at: Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line: usize::try_from(at.line()).unwrap_or(usize::MAX),
            column: usize::try_from(at.column()).unwrap_or(usize::MAX),
            field: field.into(),
            message: message.into(),
        });
    }

    /// A whole number within `range`.
    pub(super) fn number(
        &mut self,
        value: &Spanned<Number>,
        field: &str,
        range: RangeInclusive<i128>,
    ) -> Option<i128> {
        let (lo, hi) = (range.start(), range.end());
        match &value.value {
            Number::Int(v) if range.contains(v) => return Some(*v),
            Number::Int(v) => self.error(
                at(value),
                field,
                format!("{v} is out of range ({lo}..={hi})"),
            ),
            Number::NotInt(what) => self.error(
                at(value),
                field,
                format!("expected a whole number in {lo}..={hi}, found {what}"),
            ),
        }
        None
    }

    /// One of a few keywords.
    pub(super) fn word<T: Copy>(
        &mut self,
        value: &Spanned<String>,
        field: &str,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, v)) = words.iter().find(|(w, _)| *w == value.value) {
            return Some(*v);
        }
        let allowed: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let message = format!(
            "{} is not {what} (expected {})",
            shown(&value.value),
            allowed.join(" or ")
        );
        self.error(at(value), field, message);
        None
    }

    fn interfaces(
        &mut self,
        list: &Spanned<Vec<Spanned<String>>>,
        host: &dyn HostFacts,
    ) -> Option<Vec<String>> {
        let before = self.errors.len();
        if list.value.is_empty() {
            self.error(
                at(list),
                "interfaces",
                "no interface is listed (list at least one, e.g. [eth0])",
            );
        }
        let mut seen: HashMap<&str, Location> = HashMap::new();
        for (i, name) in list.value.iter().enumerate() {
            let field = format!("interfaces[{i}]");
            if let Some(first) = seen.get(name.value.as_str()) {
                let message = format!(
                    "{} is listed twice (first at line {})",
                    shown(&name.value),
                    first.line()
                );
                self.error(at(name), field, message);
                continue;
            }
            seen.insert(&name.value, at(name));
            if !host.interface_exists(&name.value) {
                let message = format!(
                    "interface {} does not exist on this host (see `ip link`)",
                    shown(&name.value)
                );
                self.error(at(name), field, message);
            }
        }
        (self.errors.len() == before).then(|| list.value.iter().map(|n| n.value.clone()).collect())
    }

    /// `flow_table`: the connection table's size and idle timeouts.
    fn flow_table(&mut self, raw: Option<&Spanned<RawFlowTable>>) -> Option<FlowTable> {
        let mut table = FlowTable::default();
        let Some(raw) = raw else { return Some(table) };
        let raw = &raw.value;
        let before = self.errors.len();
        if let Some(size) = &raw.size
            && let Some(v) = self.number(
                size,
                "flow_table.size",
                i128::from(MIN_FLOW_TABLE)..=i128::from(MAX_FLOW_TABLE),
            )
        {
            table.size = u32::try_from(v).unwrap_or(table.size);
        }
        let timeouts = [
            (
                &raw.tcp_timeout,
                "flow_table.tcp_timeout",
                &mut table.tcp_timeout_s,
            ),
            (
                &raw.udp_timeout,
                "flow_table.udp_timeout",
                &mut table.udp_timeout_s,
            ),
            (
                &raw.tcp_fin_timeout,
                "flow_table.tcp_fin_timeout",
                &mut table.tcp_fin_timeout_s,
            ),
            (
                &raw.tcp_close_timeout,
                "flow_table.tcp_close_timeout",
                &mut table.tcp_close_timeout_s,
            ),
        ];
        for (value, field, out) in timeouts {
            if let Some(v) = value
                && let Some(d) = self.duration(v, field, &FLOW_TIMEOUTS)
            {
                *out = u32::try_from(d.as_secs()).unwrap_or(*out);
            }
        }
        (self.errors.len() == before).then_some(table)
    }

    /// Named pools and client rules of all services together fit their maps.
    fn pool_and_rule_totals(&mut self, at: Location, services: &[Service]) {
        let pools: usize = services.iter().map(|s| s.pools.len()).sum();
        let rules: usize = services.iter().map(|s| s.clients.len()).sum();
        // Pool id 0 names every service's default pool.
        let max_pools = MAX_POOLS as usize - 1;
        if pools > max_pools {
            self.error(
                at,
                "services",
                format!("{pools} named pools in total, at most {max_pools} are allowed"),
            );
        }
        if rules > MAX_CLIENT_RULES as usize {
            self.error(
                at,
                "services",
                format!("{rules} client rules in total, at most {MAX_CLIENT_RULES} are allowed"),
            );
        }
    }

    /// `maglev_table_slots`: as given, or the fixed default. `needed` (2 × the sum of
    /// maglev_size) is unknown when a service is invalid.
    fn table_slots(&mut self, raw: &RawConfig, needed: Option<u64>) -> Option<u32> {
        let why = "2 × the sum of maglev_size: a live and a next table per service";
        let Some(given) = &raw.maglev_table_slots else {
            let needed = needed?;
            if needed > MAX_TABLE_SLOTS {
                let message = format!(
                    "the services' Maglev tables need {needed} slots ({why}), more than the {MAX_TABLE_SLOTS} allowed; use smaller maglev_size values"
                );
                self.error(at(&raw.services), "services", message);
                return None;
            }
            if needed > u64::from(DEFAULT_TABLE_SLOTS) {
                let message = format!(
                    "the services' Maglev tables need {needed} slots ({why}), more than the default maglev_table_slots of {DEFAULT_TABLE_SLOTS}; set maglev_table_slots (at least {needed}, with room for the services you will add)"
                );
                self.error(at(&raw.services), "services", message);
                return None;
            }
            return Some(DEFAULT_TABLE_SLOTS);
        };
        let v = self.number(given, "maglev_table_slots", 0..=i128::from(MAX_TABLE_SLOTS))?;
        let v = u64::try_from(v).ok()?;
        let least = needed?.max(1);
        if v < least {
            let message = format!(
                "{v} slots cannot hold the services' tables: at least {least} are needed ({why})"
            );
            self.error(at(given), "maglev_table_slots", message);
            return None;
        }
        u32::try_from(v).ok()
    }
}
