//! A status report as OpenMetrics text (what Prometheus scrapes), built with
//! `prometheus-client`: a fresh registry per scrape, every value set from the report, so
//! the agent's loop stays the only owner of the numbers.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::control::protocol::{AgentInfo, BackendStatus, StatusReport};

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type Seconds = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// The states a backend can be in (`xdp-lb status`'s State column).
pub const BACKEND_STATES: [&str; 6] = ["up", "drain", "down", "unresolved", "standby", "no-slot"];

/// Whether a backend in `state` may receive frames (a drained one may: its flows stay; a
/// no-slot one too, it only gets no new flow).
fn receives_frames(state: &str) -> bool {
    matches!(state, "up" | "drain" | "standby" | "no-slot")
}

fn micros_to_seconds(us: u64) -> f64 {
    // Exact below 2^53 µs (285 years).
    us as f64 / 1e6
}

/// Every metric of `report`, as OpenMetrics text.
pub fn render(report: &StatusReport) -> String {
    let mut registry = Registry::with_prefix("xdp_lb");
    let mut counters = |name: &str, help: &str| {
        let family = Counters::default();
        registry.register(name, help, family.clone());
        family
    };
    let service_packets = counters("service_packets", "Packets balanced per service");
    let service_bytes = counters("service_bytes", "Bytes balanced per service");
    let backend_packets = counters("backend_packets", "Packets sent to each backend");
    let backend_bytes = counters("backend_bytes", "Bytes sent to each backend");
    let verdict_packets = counters(
        "verdict_packets",
        "Packets per data-plane verdict and reason",
    );
    let verdict_bytes = counters("verdict_bytes", "Bytes per data-plane verdict and reason");
    let flow_events = counters("flow_events", "Connection-table events");
    let table_switches = counters(
        "table_switches",
        "Maglev table switches per service since the agent set it up",
    );
    let notify_runs = counters("notify_runs", "Notify command runs by how they ended");
    let mut gauges = |name: &str, help: &str| {
        let family = Gauges::default();
        registry.register(name, help, family.clone());
        family
    };
    let serving = gauges(
        "service_serving_backends",
        "Backends in the service's live Maglev table",
    );
    let backend_up = gauges(
        "backend_up",
        "1 while the backend may receive frames (healthy and resolved; drained ones too)",
    );
    let backend_state = gauges(
        "backend_state",
        "1 for the backend's current state, 0 for the others",
    );
    let backend_weight = gauges("backend_weight", "The backend's weight (0: drained)");
    let backend_slots = gauges(
        "backend_maglev_slots",
        "Slots the backend holds in its pool's live Maglev table (0 with a weight: it gets no new flow)",
    );
    let backend_flows = gauges(
        "backend_flows",
        "Connection-table entries naming the backend",
    );
    let check_success = gauges(
        "backend_check_success",
        "1 when the backend's last health check passed",
    );
    let active_flows = Gauge::<i64>::default();
    registry.register(
        "active_flows",
        "Entries in the connection table",
        active_flows.clone(),
    );
    let flow_table_entries = Gauge::<i64>::default();
    registry.register(
        "flow_table_entries",
        "Entries the connection table holds at most (flow_table.size)",
        flow_table_entries.clone(),
    );
    let filter_slots_set = Gauge::<i64>::default();
    registry.register(
        "flow_filter_slots_set",
        "Slots of the flow filter set, in the half the packet path reads; -1 while the filter is off (every SYN looks the connection table up)",
        filter_slots_set.clone(),
    );
    let filter_slots = Gauge::<i64>::default();
    registry.register(
        "flow_filter_slots",
        "Slots of each half of the flow filter",
        filter_slots.clone(),
    );
    let drift = Gauge::<i64>::default();
    registry.register(
        "dataplane_drift",
        "Differences between the kernel's maps (and XDP attachment) and the agent's intent, as the audit for this scrape found",
        drift.clone(),
    );
    let mut seconds = |name: &str, help: &str| {
        let family = Seconds::default();
        registry.register_with_unit(name, help, Unit::Seconds, family.clone());
        family
    };
    let check_duration = seconds(
        "backend_check_duration",
        "How long the backend's last health check took",
    );
    let switch_duration = seconds(
        "table_switch_duration",
        "How long the service's last measured table switch took",
    );
    // Without an audit there is no time to give (a 0 would read as "1970").
    if let Some(ms) = report.audit_last_run_ms {
        let last_run = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        last_run.set(ms as f64 / 1e3);
        registry.register_with_unit(
            "dataplane_audit_last_run_timestamp",
            "When the data-plane audit last ran (Unix time)",
            Unit::Seconds,
            last_run,
        );
    }

    agent_metrics(&mut registry, &report.agent);
    if let Some(announce) = &report.announce {
        let announced = Gauges::default();
        registry.register(
            "vip_announced",
            "1 while this LB's route to the VIP is in its announce table (BIRD exports it), 0 while withdrawn",
            announced.clone(),
        );
        for v in &announce.vips {
            announced
                .get_or_create(&vec![("vip", v.vip.to_string())])
                .set(i64::from(v.announced));
        }
    }

    if let Some(sync) = &report.sync {
        sync_metrics(&mut registry, sync);
    }

    let gauge_value = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    for s in &report.services {
        let service = vec![("service", s.name.clone())];
        service_packets.get_or_create(&service).inc_by(s.packets);
        service_bytes.get_or_create(&service).inc_by(s.bytes);
        table_switches
            .get_or_create(&service)
            .inc_by(s.table_switches);
        serving
            .get_or_create(&service)
            .set(i64::try_from(s.serving).unwrap_or(i64::MAX));
        if let Some(us) = s.last_switch_us {
            switch_duration
                .get_or_create(&service)
                .set(micros_to_seconds(us));
        }
        for b in &s.backends {
            let labels = backend_labels(&s.name, b);
            backend_packets.get_or_create(&labels).inc_by(b.packets);
            backend_bytes.get_or_create(&labels).inc_by(b.bytes);
            backend_up
                .get_or_create(&labels)
                .set(i64::from(receives_frames(&b.state)));
            backend_weight
                .get_or_create(&labels)
                .set(i64::from(b.weight));
            backend_slots.get_or_create(&labels).set(i64::from(b.slots));
            backend_flows
                .get_or_create(&labels)
                .set(gauge_value(b.flows));
            for state in BACKEND_STATES {
                let mut with_state = labels.clone();
                with_state.push(("state", state.to_owned()));
                backend_state
                    .get_or_create(&with_state)
                    .set(i64::from(b.state == state));
            }
            if let Some(last) = b.health.as_ref().and_then(|h| h.last_check.as_ref()) {
                check_duration
                    .get_or_create(&labels)
                    .set(micros_to_seconds(last.duration_us));
                check_success.get_or_create(&labels).set(i64::from(last.ok));
            }
        }
    }
    for v in &report.verdicts {
        let labels = vec![("verdict", v.name.clone())];
        verdict_packets.get_or_create(&labels).inc_by(v.packets);
        verdict_bytes.get_or_create(&labels).inc_by(v.bytes);
    }
    for e in &report.flow_events {
        flow_events
            .get_or_create(&vec![("event", e.name.clone())])
            .inc_by(e.packets);
    }
    for (result, runs) in &report.notify_runs {
        notify_runs
            .get_or_create(&vec![("result", result.clone())])
            .inc_by(*runs);
    }
    active_flows.set(gauge_value(report.active_flows));
    flow_table_entries.set(gauge_value(u64::from(report.flow_table.entries)));
    if let Some(filter) = &report.flow_filter {
        filter_slots.set(gauge_value(u64::from(filter.slots)));
        filter_slots_set.set(if filter.half == 0 {
            -1
        } else {
            gauge_value(filter.set)
        });
    }
    drift.set(gauge_value(report.drift.len() as u64));

    let mut text = String::new();
    // Writing to a String cannot fail; an encoding error would leave a partial text,
    // which a scraper refuses as a whole.
    if let Err(err) = encode(&mut text, &registry) {
        log::error!("metrics: encoding: {err}");
    }
    text
}

/// The agent's own series: build, start, the configuration in force and its reloads.
fn agent_metrics(registry: &mut Registry, agent: &AgentInfo) {
    let info = |registry: &mut Registry, name: &str, help: &str, labels: Labels| {
        let family = Gauges::default();
        family.get_or_create(&labels).set(1);
        registry.register(name, help, family);
    };
    info(
        registry,
        "build_info",
        "1, labelled with the agent's version",
        vec![("version", agent.version.clone())],
    );
    info(
        registry,
        "config_info",
        "1, labelled with the hash of the configuration file in force (equal on LBs running the same file)",
        vec![("hash", agent.config_hash.clone())],
    );
    let timestamp = |registry: &mut Registry, name: &str, help: &str, seconds: u64| {
        let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        gauge.set(seconds as f64);
        registry.register_with_unit(name, help, Unit::Seconds, gauge);
    };
    timestamp(
        registry,
        "start_time",
        "When the agent started (Unix time)",
        agent.started_at_s,
    );
    if let Some(at) = agent.last_reload_success_s {
        timestamp(
            registry,
            "config_last_reload_success_timestamp",
            "When a reload was last applied (Unix time)",
            at,
        );
    }
    let reloads = Counters::default();
    // Every outcome is exported, 0 until it happens, so rate() and alerts work from start.
    for result in ["applied", "refused", "failed"] {
        let n = agent.reloads.get(result).copied().unwrap_or(0);
        reloads
            .get_or_create(&vec![("result", result.to_owned())])
            .inc_by(n);
    }
    registry.register(
        "config_reloads",
        "Reloads of the configuration by outcome (refused: nothing changed)",
        reloads,
    );
}

fn backend_labels(service: &str, b: &BackendStatus) -> Labels {
    vec![
        ("service", service.to_owned()),
        ("backend", b.address.to_string()),
    ]
}

/// Flow-state sync: entries sent, received, applied and refused by reason; each peer's
/// state and lag.
fn sync_metrics(registry: &mut Registry, sync: &crate::control::protocol::SyncStatus) {
    let mut counter = |name: &str, help: &str, value: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        registry.register(name, help, c);
    };
    counter(
        "sync_entries_sent",
        "Flow entries sent to peers (each peer's copy counted)",
        sync.sent,
    );
    counter(
        "sync_datagrams_sent",
        "Flow-sync datagrams sent (heartbeats included)",
        sync.datagrams_sent,
    );
    counter(
        "sync_bytes_sent",
        "Bytes of flow-sync datagrams sent (UDP payload)",
        sync.bytes_sent,
    );
    counter(
        "sync_entries_received",
        "Flow entries received in authentic, fresh datagrams from peers",
        sync.received,
    );
    counter(
        "sync_entries_applied",
        "Flow entries from peers inserted into the connection table",
        sync.applied,
    );
    let by_reason = |registry: &mut Registry,
                     name: &str,
                     help: &str,
                     m: &std::collections::BTreeMap<String, u64>| {
        let family = Counters::default();
        registry.register(name, help, family.clone());
        for (reason, n) in m {
            family
                .get_or_create(&vec![("reason", reason.clone())])
                .inc_by(*n);
        }
    };
    by_reason(
        registry,
        "sync_entries_rejected",
        "Flow entries from peers not applied, by reason",
        &sync.rejected,
    );
    by_reason(
        registry,
        "sync_entries_not_sent",
        "Flow entries placed here but not sent, by reason",
        &sync.not_sent,
    );
    by_reason(
        registry,
        "sync_datagrams_rejected",
        "Flow-sync datagrams refused, by reason",
        &sync.datagrams_rejected,
    );
    let up = Gauges::default();
    registry.register(
        "sync_peer_up",
        "1 while an authentic datagram came from the peer within the last 3 s",
        up.clone(),
    );
    let lag = Seconds::default();
    registry.register_with_unit(
        "sync_lag",
        "The peer's last datagram: receive time minus send time (clock difference included)",
        Unit::Seconds,
        lag.clone(),
    );
    for p in &sync.peers {
        let labels = vec![("peer", p.addr.to_string())];
        up.get_or_create(&labels).set(i64::from(p.state == "up"));
        if let Some(ms) = p.lag_ms {
            lag.get_or_create(&labels).set(ms as f64 / 1e3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit::Drift,
        control::protocol::{
            CheckResult, FlowFilterStatus, FlowTableSize, HealthStatus, NamedCounter, ServiceStatus,
        },
    };

    fn report() -> StatusReport {
        StatusReport {
            services: vec![ServiceStatus {
                name: "video-hls".into(),
                vip: "10.0.0.100".parse().unwrap(),
                port: 8080,
                protocol: "tcp".into(),
                vlan: None,
                maglev_size: 65537,
                hash: "flow".into(),
                persistence_s: None,
                serving: 1,
                packets: 42,
                bytes: 4200,
                backends: vec![
                    BackendStatus {
                        id: 0,
                        epoch: 0,
                        address: "10.0.0.11".parse().unwrap(),
                        slots: 1,
                        weight: 1,
                        state: "up".into(),
                        mac: None,
                        vlan: None,
                        flows: 3,
                        packets: 40,
                        bytes: 4000,
                        health: Some(HealthStatus {
                            role: "primary".into(),
                            state: "up".into(),
                            last_check: Some(CheckResult {
                                ok: true,
                                detail: "HTTP 200".into(),
                                duration_us: 1500,
                                at: "2026-05-01T12:00:00Z".into(),
                            }),
                        }),
                        pool: "default".into(),
                    },
                    BackendStatus {
                        id: 0,
                        epoch: 0,
                        address: "10.0.0.12".parse().unwrap(),
                        slots: 1,
                        weight: 1,
                        state: "down".into(),
                        mac: None,
                        vlan: None,
                        flows: 0,
                        packets: 2,
                        bytes: 200,
                        health: None,
                        pool: "default".into(),
                    },
                ],
                table_switches: 7,
                last_switch_us: Some(250),
                pools: Vec::new(),
            }],
            verdicts: vec![NamedCounter {
                name: "tx".into(),
                packets: 42,
                bytes: 4200,
            }],
            flow_events: vec![NamedCounter {
                name: "new".into(),
                packets: 3,
                bytes: 0,
            }],
            active_flows: 3,
            flow_table: FlowTableSize::new(4097, 4097),
            flow_filter: Some(FlowFilterStatus {
                half: 1,
                slots: 65536,
                set: 3,
                renewed_s_ago: Some(5),
                renewed_entries: Some(3),
            }),
            notify_runs: [("ok".to_owned(), 2), ("failed".to_owned(), 1)].into(),
            drift: vec![Drift::new(
                "service video-hls 10.0.0.100:8080/tcp",
                "service_by_vip",
                "key missing from service_by_vip",
            )],
            audit_last_run_ms: Some(1_780_000_000_500),
            agent: AgentInfo {
                version: "0.1.0".into(),
                started_at_s: 1_780_000_000,
                config_hash: "af63dc4c8601ec8c".into(),
                reloads: [("applied".to_owned(), 2), ("refused".to_owned(), 1)].into(),
                last_reload_success_s: Some(1_780_000_100),
            },
            announce: Some(crate::control::protocol::AnnounceStatus {
                table: 100,
                vips: vec![
                    crate::control::protocol::VipAnnouncement {
                        vip: "10.0.0.100".parse().unwrap(),
                        announced: true,
                        reason: "every service on it has its min_healthy".into(),
                    },
                    crate::control::protocol::VipAnnouncement {
                        vip: "2001:db8::100".parse().unwrap(),
                        announced: false,
                        reason: "warming up: announced in 3.0s".into(),
                    },
                ],
            }),
            sync: Some(crate::control::protocol::SyncStatus {
                listen: "10.0.9.1:7946".into(),
                listening: true,
                peers: vec![crate::control::protocol::SyncPeerStatus {
                    addr: "10.0.9.2".parse().unwrap(),
                    state: "up".into(),
                    last_heard_ms: Some(300),
                    lag_ms: Some(2),
                    received: 120,
                    applied: 110,
                    rejected: 10,
                    datagrams_rejected: 1,
                }],
                sent: 240,
                datagrams_sent: 30,
                bytes_sent: 9000,
                received: 120,
                applied: 110,
                rejected: [("local_fresher".to_owned(), 10)].into(),
                datagrams_rejected: [("auth".to_owned(), 1)].into(),
                not_sent: [("rate_limited".to_owned(), 4)].into(),
                last_refresh_entries: 12,
            }),
            at_ms: 1_780_000_200_000,
            events: Vec::new(),
        }
    }

    #[test]
    fn every_metric_has_its_type_and_the_report_s_values() {
        let text = render(&report());
        for line in [
            "# TYPE xdp_lb_service_packets counter",
            "xdp_lb_service_packets_total{service=\"video-hls\"} 42",
            "xdp_lb_service_bytes_total{service=\"video-hls\"} 4200",
            "xdp_lb_backend_packets_total{service=\"video-hls\",backend=\"10.0.0.11\"} 40",
            "xdp_lb_backend_bytes_total{service=\"video-hls\",backend=\"10.0.0.12\"} 200",
            "xdp_lb_backend_up{service=\"video-hls\",backend=\"10.0.0.11\"} 1",
            "xdp_lb_backend_up{service=\"video-hls\",backend=\"10.0.0.12\"} 0",
            "xdp_lb_backend_state{service=\"video-hls\",backend=\"10.0.0.12\",state=\"down\"} 1",
            "xdp_lb_backend_state{service=\"video-hls\",backend=\"10.0.0.12\",state=\"up\"} 0",
            "xdp_lb_backend_flows{service=\"video-hls\",backend=\"10.0.0.11\"} 3",
            "# TYPE xdp_lb_backend_check_duration_seconds gauge",
            "# UNIT xdp_lb_backend_check_duration_seconds seconds",
            "xdp_lb_backend_check_duration_seconds{service=\"video-hls\",backend=\"10.0.0.11\"} 0.0015",
            "xdp_lb_verdict_packets_total{verdict=\"tx\"} 42",
            "xdp_lb_verdict_bytes_total{verdict=\"tx\"} 4200",
            "xdp_lb_flow_events_total{event=\"new\"} 3",
            "xdp_lb_active_flows 3",
            "# TYPE xdp_lb_flow_table_entries gauge",
            "xdp_lb_flow_table_entries 4097",
            "xdp_lb_flow_filter_slots_set 3",
            "xdp_lb_flow_filter_slots 65536",
            "xdp_lb_table_switches_total{service=\"video-hls\"} 7",
            "xdp_lb_table_switch_duration_seconds{service=\"video-hls\"} 0.00025",
            "xdp_lb_notify_runs_total{result=\"failed\"} 1",
            "xdp_lb_dataplane_drift 1",
            "# UNIT xdp_lb_dataplane_audit_last_run_timestamp_seconds seconds",
            "xdp_lb_dataplane_audit_last_run_timestamp_seconds 1780000000.5",
            "xdp_lb_build_info{version=\"0.1.0\"} 1",
            "xdp_lb_config_info{hash=\"af63dc4c8601ec8c\"} 1",
            "xdp_lb_start_time_seconds 1780000000.0",
            "xdp_lb_config_last_reload_success_timestamp_seconds 1780000100.0",
            "xdp_lb_config_reloads_total{result=\"applied\"} 2",
            "xdp_lb_config_reloads_total{result=\"refused\"} 1",
            "xdp_lb_config_reloads_total{result=\"failed\"} 0",
            "xdp_lb_vip_announced{vip=\"10.0.0.100\"} 1",
            "xdp_lb_vip_announced{vip=\"2001:db8::100\"} 0",
            "xdp_lb_sync_entries_sent_total 240",
            "xdp_lb_sync_bytes_sent_total 9000",
            "xdp_lb_sync_entries_received_total 120",
            "xdp_lb_sync_entries_applied_total 110",
            "xdp_lb_sync_entries_rejected_total{reason=\"local_fresher\"} 10",
            "xdp_lb_sync_entries_not_sent_total{reason=\"rate_limited\"} 4",
            "xdp_lb_sync_datagrams_rejected_total{reason=\"auth\"} 1",
            "xdp_lb_sync_peer_up{peer=\"10.0.9.2\"} 1",
            "xdp_lb_sync_lag_seconds{peer=\"10.0.9.2\"} 0.002",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
        assert!(
            !text.contains(
                "xdp_lb_backend_check_duration_seconds{service=\"video-hls\",backend=\"10.0.0.12\"}"
            ),
            "an unchecked backend has no check duration:\n{text}"
        );
    }

    #[test]
    fn an_empty_report_is_still_valid_exposition() {
        let text = render(&StatusReport::default());
        assert!(text.contains("xdp_lb_active_flows 0\n"), "{text}");
        assert!(text.contains("\nxdp_lb_dataplane_drift 0\n"), "{text}");
        assert!(
            !text.contains("\nxdp_lb_dataplane_audit_last_run_timestamp_seconds "),
            "no audit, no time: {text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Every `xdp_lb_*` name in `text`.
    fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("xdp_lb_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
        names
    }

    #[test]
    fn every_metric_the_shipped_grafana_dashboard_queries_is_exported() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/grafana-dashboard.json"
        );
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard"))
                .expect("the dashboard is JSON");
        let mut queries = String::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                queries.push_str(target["expr"].as_str().expect("an expr"));
                queries.push('\n');
            }
        }
        for variable in dashboard["templating"]["list"]
            .as_array()
            .expect("variables")
        {
            if let Some(query) = variable["query"].as_str() {
                queries.push_str(query);
            }
        }
        let exported: std::collections::BTreeSet<String> = render(&report())
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect();
        let queried = metric_names(&queries);
        assert!(queried.len() >= 15, "{queried:?}");
        let missing: Vec<&String> = queried.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "queried but never exported: {missing:?}"
        );
    }
}
