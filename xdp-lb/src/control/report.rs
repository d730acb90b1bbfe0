//! What the control loop answers `status` and `lookup` with, read from the balancer, the
//! data plane's maps and what the agent observed (health checks, switch times, alerts).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use xdp_lb_common::{
    BACKEND_F_VALID, FAMILY_IPV4, FAMILY_IPV6, FLOW_F_FIN, FLOW_F_RST, FlowKey, FlowValue,
    PROTO_TCP, addr_words, flow_hash::ports_word, flow_stat, port_raw, verdict,
};

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

/// `bpf_ktime_get_ns()` now: the clock of the connection table's last-seen times.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec we own; CLOCK_MONOTONIC exists on
    // every Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Whether the data plane would ignore this entry as idle for too long.
fn expired(key: &FlowKey, value: &FlowValue, now: u64, timeouts: &FlowTable) -> bool {
    let seconds = if key.proto != PROTO_TCP {
        timeouts.udp_timeout_s
    } else if value.flags & FLOW_F_RST != 0 {
        timeouts.tcp_close_timeout_s.min(timeouts.tcp_timeout_s)
    } else if value.flags & FLOW_F_FIN != 0 {
        timeouts.tcp_fin_timeout_s.min(timeouts.tcp_timeout_s)
    } else {
        timeouts.tcp_timeout_s
    };
    now.saturating_sub(value.last_seen_ns) > u64::from(seconds) * 1_000_000_000
}

/// Live connection-table entries per (backend id, epoch), and in all. An entry idle longer
/// than its protocol's timeout is not counted: the data plane ignores it (and replaces it
/// at its flow's next packet), so a drained backend's count falls to 0 once its flows
/// have ended and their timeout has passed.
fn flows_by_backend(balancer: &Balancer, timeouts: &FlowTable) -> (HashMap<(u32, u32), u64>, u64) {
    let now = monotonic_ns();
    let mut counts = HashMap::new();
    let mut total = 0;
    for (key, value) in balancer.dataplane().flows() {
        if expired(&key, &value, now, timeouts) {
            continue;
        }
        total += 1;
        *counts
            .entry((value.backend_id, value.backend_epoch))
            .or_insert(0) += 1;
    }
    (counts, total)
}

pub fn status(balancer: &Balancer, observed: &Observed) -> StatusReport {
    let dp = balancer.dataplane();
    let (flows, active_flows) = flows_by_backend(balancer, &observed.flow_table);
    let backend = |service: &ServiceState, b: &BackendState, role: Option<&str>| {
        let counter = dp.backend_counter(b.id);
        let slots = service
            .pool(service.pool_of(b.config.address))
            .and_then(|p| p.slots.get(&b.id))
            .copied()
            .unwrap_or(0);
        let state = match role {
            Some(role) if b.usable() => role.to_owned(),
            // Up with a weight, yet Maglev gave it nothing: never a plain `up`.
            None if b.in_table() && slots == 0 => "no-slot".to_owned(),
            _ => state_word(b).to_owned(),
        };
        BackendStatus {
            address: b.config.address,
            weight: b.config.weight,
            state,
            slots,
            mac: b.forwarding.map(|f| f.mac.to_string()),
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
        notify_runs: observed
            .notify_runs
            .iter()
            .map(|(result, runs)| ((*result).to_owned(), *runs))
            .collect(),
        // The audit's verdict is added by the control loop, which runs the audit.
        drift: Vec::new(),
        audit_last_run_ms: None,
    }
}

/// The connection table's effective size (0 for what cannot be read).
fn flow_table_size(balancer: &Balancer, table: &FlowTable) -> FlowTableSize {
    let entries = balancer.dataplane().flow_table_entries().unwrap_or(0);
    let possible = aya::util::nr_cpus().map_or(0, |n| n as u32);
    let online = aya::util::online_cpus().map_or(0, |cpus| cpus.len() as u32);
    FlowTableSize::new(table.size, entries, possible, online)
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
    let key = FlowKey {
        src: addr_words(client.ip()),
        dst: addr_words(vip.ip()),
        ports: ports_word(port_raw(client.port()), port_raw(vip.port())),
        proto: protocol.number(),
        family: if vip.is_ipv4() {
            FAMILY_IPV4
        } else {
            FAMILY_IPV6
        },
        vlan: service.config.vlan.unwrap_or(0),
    };
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
            source: "connection table".into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_idle_beyond_its_protocol_s_timeout_is_expired() {
        let timeouts = FlowTable {
            tcp_timeout_s: 10,
            udp_timeout_s: 2,
            ..FlowTable::default()
        };
        let key = |proto| FlowKey {
            proto,
            ..FlowKey::default()
        };
        let seen = |s: u64| FlowValue {
            last_seen_ns: s * 1_000_000_000,
            ..FlowValue::default()
        };
        let now = 100 * 1_000_000_000;
        assert!(!expired(&key(PROTO_TCP), &seen(95), now, &timeouts));
        assert!(expired(&key(PROTO_TCP), &seen(89), now, &timeouts));
        assert!(expired(&key(17), &seen(95), now, &timeouts));
        assert!(!expired(&key(17), &seen(99), now, &timeouts));
        assert!(monotonic_ns() > 0);
    }
}
