//! From the file as written ([`RawConfig`]) to the validated [`Config`]: every rule is checked
//! and every violation collected, each with its location and field path. The top-level
//! keys are checked here; each section's own rules are `Checker` methods in its
//! `validate.rs`.

use std::{collections::HashMap, path::Path, time::Duration};

use serde_saphyr::{Location, Spanned};
use xdp_lb_common::{MAX_BACKENDS, MAX_CLIENT_RULES, MAX_POOLS, MAX_SERVICES};

use super::{
    model::{Config, ConfigFile, DEFAULT_FLOW_HASH_SEED, FlowTable, XdpAttachMode},
    raw::{RawConfig, RawFlowTable},
};
use crate::config::{
    failover::model::Failover,
    services::{model::Service, raw::RawService, validate::Seen},
    shared::{
        checker::Checker,
        duration::{DurationRule, Resolution},
        errors::{ConfigErrors, shown},
        host::HostFacts,
        number::at,
    },
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
    let sync = check.sync(
        raw.sync.as_ref().map(|s| &s.value),
        flow_table.map(|t| {
            // The shortest idle timeout of a protocol a service uses.
            let udp = services
                .iter()
                .any(|s| s.protocol == crate::config::Protocol::Udp);
            if udp {
                t.tcp_timeout_s.min(t.udp_timeout_s)
            } else {
                t.tcp_timeout_s
            }
        }),
        host,
    );

    match (
        flow_hash_seed,
        xdp_mode,
        interfaces,
        maglev_table_slots,
        flow_table,
        notify,
        ops,
        announce,
        sync,
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
            Some(sync),
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
            sync,
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

impl Checker<'_> {
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
