//! What the control loop answers `status` and `lookup` with, read from the balancer, the
//! data plane's maps and what the agent observed (health checks, switch times, alerts).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use xdp_lb_common::{BACKEND_F_VALID, FlowKey, flow_stat, verdict};

use super::census::{Census, expired, monotonic_ns};
use super::protocol::{
    BackendStatus, CheckResult, FlowTableSize, HealthStatus, LookupAnswer, NamedCounter,
    PoolStatus, ServiceStatus, StatusReport,
};
use crate::{
    balancer::{BackendState, Balancer, ServiceState},
    config::{ClientAction, DEFAULT_POOL, FlowTable, HashMode, Protocol},
    health::{CheckRecord, notify::rfc3339},
};

/// What the agent knows besides the balancer and the maps.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Each checked server's checker view, by (service, address).
    pub checks: BTreeMap<(String, IpAddr), CheckRecord>,
    /// The last measured table switch of each service.
    pub last_switch: BTreeMap<String, Duration>,
    /// Notify command runs by how they ended.
    pub notify_runs: Vec<(&'static str, u64)>,
    /// The connection table's idle timeouts: older entries are not counted.
    pub flow_table: FlowTable,
    /// The connection table counted by `census.rs` (`None`: not counted, every figure 0).
    pub census: Option<std::sync::Arc<Census>>,
    /// The timeline's recent events, oldest first.
    pub events: Vec<super::protocol::TimelineEvent>,
}

fn health_status(record: &CheckRecord) -> HealthStatus {
    HealthStatus {
        role: record.role.to_string(),
        state: record.state.to_string(),
        last_check: record.last.as_ref().map(|last| CheckResult {
            ok: last.ok,
            detail: last.detail.clone(),
            duration_us: u64::try_from(last.took.as_micros()).unwrap_or(u64::MAX),
            at: rfc3339(last.at),
        }),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The state word `status` shows for a backend.
pub fn state_word(b: &BackendState) -> &'static str {
    if b.forwarding.is_none() {
        "unresolved"
    } else if !b.healthy {
        "down"
    } else if b.config.weight == 0 {
        "drain"
    } else {
        "up"
    }
}

/// Slots `b` holds in its pool's live Maglev table.
pub fn slots(service: &ServiceState, b: &BackendState) -> u32 {
    service
        .pool(service.pool_of(b.config.address))
        .and_then(|p| p.slots.get(&b.id))
        .copied()
        .unwrap_or(0)
}

/// The state `status` shows for a backend (`role`: a standby's, `None` for a primary).
pub fn backend_state(b: &BackendState, role: Option<&str>, slots: u32) -> String {
    match role {
        Some(role) if b.usable() => role.to_owned(),
        // Up with a weight, yet Maglev gave it nothing: never a plain `up`.
        None if b.in_table() && slots == 0 => "no-slot".to_owned(),
        _ => state_word(b).to_owned(),
    }
}

pub fn status(balancer: &Balancer, observed: &Observed) -> StatusReport {
    let dp = balancer.dataplane();
    let empty = Census::default();
    let census = observed.census.as_deref().unwrap_or(&empty);
    let (flows, active_flows) = (&census.by_backend, census.total);
    let backend = |service: &ServiceState, b: &BackendState, role: Option<&str>| {
        let counter = dp.backend_counter(b.id);
        let slots = slots(service, b);
        let state = backend_state(b, role, slots);
        BackendStatus {
            id: b.id,
            epoch: b.epoch,
            address: b.config.address,
            weight: b.config.weight,
            state,
            slots,
            mac: b.forwarding.map(|f| f.mac.to_string()),
            vlan: b.config.vlan,
            flows: flows.get(&(b.id, b.epoch)).copied().unwrap_or(0),
            packets: counter.packets,
            bytes: counter.bytes,
            health: observed
                .checks
                .get(&(service.config.name.clone(), b.config.address))
                .map(health_status),
            pool: service.pool_of(b.config.address).to_owned(),
        }
    };
    let services = balancer
        .services()
        .map(|s| {
            let counter = dp.service_counter(s.id);
            let name = s.config.name.as_str();
            let mut backends: Vec<BackendStatus> =
                s.backends.values().map(|b| backend(s, b, None)).collect();
            backends.extend(s.standbys.values().map(|b| backend(s, b, Some("standby"))));
            ServiceStatus {
                name: s.config.name.clone(),
                vip: s.config.vip,
                port: s.config.port,
                protocol: s.config.protocol.to_string(),
                vlan: s.config.vlan,
                maglev_size: s.config.maglev_size,
                hash: match s.config.hash {
                    HashMode::Flow => "flow".into(),
                    HashMode::Source => "source".into(),
                },
                persistence_s: s.config.persistence.map(|p| p.timeout_s),
                serving: s.active_backends(),
                packets: counter.packets,
                bytes: counter.bytes,
                backends,
                table_switches: u64::from(s.generation),
                last_switch_us: observed.last_switch.get(name).copied().map(micros),
                pools: pools(s),
            }
        })
        .collect();
    let named = |names: &[&str], counters: Vec<xdp_lb_common::Counter>| {
        names
            .iter()
            .zip(counters)
            .map(|(name, c)| NamedCounter {
                name: (*name).to_owned(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect()
    };
    StatusReport {
        services,
        verdicts: named(&verdict::NAMES, dp.verdict_counters()),
        flow_events: named(&flow_stat::NAMES, dp.flow_counters()),
        active_flows,
        flow_table: flow_table_size(balancer, &observed.flow_table),
        flow_filter: Some(dp.flow_filter().status()),
        notify_runs: observed
            .notify_runs
            .iter()
            .map(|(result, runs)| ((*result).to_owned(), *runs))
            .collect(),
        // The audit's verdict is added by the control loop, which runs the audit.
        drift: Vec::new(),
        audit_last_run_ms: None,
        // Likewise what the agent says of itself.
        agent: Default::default(),
        // And what it announces.
        announce: None,
        // And what flow-state sync does.
        sync: None,
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        events: observed.events.clone(),
    }
}

/// The connection table's size: configured and as the kernel made it (0 if unreadable).
fn flow_table_size(balancer: &Balancer, table: &FlowTable) -> FlowTableSize {
    let entries = balancer.dataplane().flow_table_entries().unwrap_or(0);
    FlowTableSize::new(table.size, entries)
}

/// A service's pools for `status`: none for a service without named pools or rules.
fn pools(s: &ServiceState) -> Vec<PoolStatus> {
    if s.pools.is_empty() && s.rules.is_empty() {
        return Vec::new();
    }
    s.all_pools()
        .map(|(name, pool)| PoolStatus {
            name: name.to_owned(),
            maglev_size: pool.maglev_size,
            serving: pool
                .primaries
                .iter()
                .filter(|a| s.backends.get(a).is_some_and(BackendState::in_table))
                .count(),
            rules: s
                .rules
                .values()
                .filter(|action| matches!(action, ClientAction::Pool(p) if p == name))
                .count(),
        })
        .collect()
}

/// The client rule `client` of `service` matches, as `lookup` says it, and the pool it
/// places the client in.
fn rule_for(service: &ServiceState, client: std::net::IpAddr) -> (Option<String>, String) {
    match service.client_rule(client) {
        None => (None, DEFAULT_POOL.to_owned()),
        Some((prefix, ClientAction::Drop)) => {
            (Some(format!("{prefix} -> drop")), DEFAULT_POOL.to_owned())
        }
        Some((prefix, ClientAction::Pool(pool))) => {
            (Some(format!("{prefix} -> pool {pool}")), pool.clone())
        }
    }
}

/// Which backend a flow gets now: its connection-table entry when that is fresh and still
/// names a usable backend, otherwise the live Maglev table of the pool its client's rule
/// names (as a new flow would).
pub fn lookup(
    balancer: &Balancer,
    timeouts: &FlowTable,
    client: SocketAddr,
    vip: SocketAddr,
    protocol: Protocol,
) -> Result<LookupAnswer, String> {
    let service = balancer
        .services()
        .find(|s| {
            s.config.vip == vip.ip() && s.config.port == vip.port() && s.config.protocol == protocol
        })
        .ok_or_else(|| format!("no service at {vip}/{protocol}"))?;
    if client.is_ipv4() != vip.is_ipv4() {
        return Err(format!(
            "client {client} and VIP {vip} are of different families"
        ));
    }
    let key = FlowKey::new(
        client,
        vip,
        protocol.number(),
        service.config.vlan.unwrap_or(0),
    );
    if let Some(entry) = balancer.dataplane().flow(&key)
        && !expired(&key, &entry, monotonic_ns(), timeouts)
        && let Ok(value) = balancer.dataplane().backend(entry.backend_id)
        && value.flags & BACKEND_F_VALID != 0
        && value.epoch == entry.backend_epoch
        && let Some(b) = service
            .backends
            .values()
            .chain(service.standbys.values())
            .find(|b| b.id == entry.backend_id)
    {
        return Ok(LookupAnswer {
            service: service.config.name.clone(),
            backend: Some(b.config.address),
            source: if entry.flags & xdp_lb_common::FLOW_F_LEARNT != 0 {
                "connection table, learnt from a peer".into()
            } else {
                "connection table".into()
            },
            rule: None,
            pool: service.pool_of(b.config.address).to_owned(),
        });
    }
    let backend = balancer
        .predict(&service.config.name, client.ip(), client.port())
        .map_err(|err| format!("{err:#}"))?;
    let (rule, pool) = rule_for(service, client.ip());
    Ok(LookupAnswer {
        service: service.config.name.clone(),
        backend,
        source: "maglev".into(),
        rule,
        pool,
    })
}

/// Puts a census's figures into a report made without one.
pub fn fill_flows(report: &mut StatusReport, census: &Census) {
    report.active_flows = census.total;
    for b in report
        .services
        .iter_mut()
        .flat_map(|s| s.backends.iter_mut())
    {
        b.flows = census
            .by_backend
            .get(&(b.id, b.epoch))
            .copied()
            .unwrap_or(0);
    }
}
