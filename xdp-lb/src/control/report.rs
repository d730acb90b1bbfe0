//! What the control loop answers `status` and `lookup` with, read from the balancer, the
//! data plane's maps and what the agent observed (health checks, switch times, alerts).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use xdp_lb_common::{
    BACKEND_F_VALID, FAMILY_IPV4, FAMILY_IPV6, FlowKey, addr_words, flow_hash::ports_word,
    flow_stat, port_raw, verdict,
};

use super::protocol::{
    BackendStatus, CheckResult, HealthStatus, LookupAnswer, NamedCounter, ServiceStatus,
    StatusReport,
};
use crate::{
    balancer::{Balancer, BackendState},
    config::{HashMode, Protocol},
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

/// Connection-table entries per backend id (entries whose backend epoch still matches).
fn flows_by_backend(balancer: &Balancer) -> (HashMap<(u32, u32), u64>, u64) {
    let mut counts = HashMap::new();
    let mut total = 0;
    for (_, value) in balancer.dataplane().flows() {
        total += 1;
        *counts.entry((value.backend_id, value.backend_epoch)).or_insert(0) += 1;
    }
    (counts, total)
}

pub fn status(balancer: &Balancer, observed: &Observed) -> StatusReport {
    let dp = balancer.dataplane();
    let (flows, active_flows) = flows_by_backend(balancer);
    let backend = |service: &str, b: &BackendState, role: Option<&str>| {
        let counter = dp.backend_counter(b.id);
        let state = match role {
            Some(role) if b.usable() => role.to_owned(),
            _ => state_word(b).to_owned(),
        };
        BackendStatus {
            address: b.config.address,
            weight: b.config.weight,
            state,
            mac: b.forwarding.map(|f| f.mac.to_string()),
            flows: flows.get(&(b.id, b.epoch)).copied().unwrap_or(0),
            packets: counter.packets,
            bytes: counter.bytes,
            health: observed
                .checks
                .get(&(service.to_owned(), b.config.address))
                .map(health_status),
        }
    };
    let services = balancer
        .services()
        .map(|s| {
            let counter = dp.service_counter(s.id);
            let name = s.config.name.as_str();
            let mut backends: Vec<BackendStatus> = s.backends.values().map(|b| backend(name, b, None)).collect();
            backends.extend(s.standbys.values().map(|b| backend(name, b, Some("standby"))));
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
            }
        })
        .collect();
    let named = |names: &[&str], counters: Vec<xdp_lb_common::Counter>| {
        names
            .iter()
            .zip(counters)
            .map(|(name, c)| NamedCounter { name: (*name).to_owned(), packets: c.packets, bytes: c.bytes })
            .collect()
    };
    StatusReport {
        services,
        verdicts: named(&verdict::NAMES, dp.verdict_counters()),
        flow_events: named(&flow_stat::NAMES, dp.flow_counters()),
        active_flows,
        notify_runs: observed.notify_runs.iter().map(|(result, runs)| ((*result).to_owned(), *runs)).collect(),
    }
}

/// Which backend a flow gets now: its connection-table entry when that still names a
/// usable backend, otherwise the live Maglev table (as a new flow would).
pub fn lookup(balancer: &Balancer, client: SocketAddr, vip: SocketAddr, protocol: Protocol) -> Result<LookupAnswer, String> {
    let service = balancer
        .services()
        .find(|s| s.config.vip == vip.ip() && s.config.port == vip.port() && s.config.protocol == protocol)
        .ok_or_else(|| format!("no service at {vip}/{protocol}"))?;
    if client.is_ipv4() != vip.is_ipv4() {
        return Err(format!("client {client} and VIP {vip} are of different families"));
    }
    let key = FlowKey {
        src: addr_words(client.ip()),
        dst: addr_words(vip.ip()),
        ports: ports_word(port_raw(client.port()), port_raw(vip.port())),
        proto: protocol.number(),
        family: if vip.is_ipv4() { FAMILY_IPV4 } else { FAMILY_IPV6 },
        vlan: service.config.vlan.unwrap_or(0),
    };
    if let Some(entry) = balancer.dataplane().flow(&key)
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
        });
    }
    let backend = balancer
        .predict(&service.config.name, client.ip(), client.port())
        .map_err(|err| format!("{err:#}"))?;
    Ok(LookupAnswer { service: service.config.name.clone(), backend, source: "maglev".into() })
}
