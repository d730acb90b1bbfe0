//! `xdp-lb status`: the report as an `ipvsadm -Ln --stats`-like table.

use std::fmt::Write as _;

use super::protocol::{BackendStatus, PoolStatus, ServiceStatus, StatusReport};

/// Longest check detail shown in the table (the JSON report has all of it).
const MAX_DETAIL: usize = 40;

/// Counts as ipvsadm prints them: plain below 100000, then K, M, G.
pub fn human(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "K")];
    if n < 100_000 {
        return n.to_string();
    }
    for (size, unit) in UNITS {
        if n >= size {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

fn service_line(s: &ServiceStatus) -> String {
    let vip = if s.vip.is_ipv6() {
        format!("[{}]:{}", s.vip, s.port)
    } else {
        format!("{}:{}", s.vip, s.port)
    };
    let mut flags = format!("maglev({})", s.maglev_size);
    if s.hash != "flow" {
        let _ = write!(flags, " hash={}", s.hash);
    }
    if let Some(p) = s.persistence_s {
        let _ = write!(flags, " persistent {p}");
    }
    if let Some(v) = s.vlan {
        let _ = write!(flags, " vlan {v}");
    }
    format!(
        "{:<4} {:<28} {:<34} {:>9} {:>9}  {}",
        s.protocol.to_uppercase(),
        vip,
        flags,
        human(s.packets),
        human(s.bytes),
        s.name
    )
}

/// Microseconds as milliseconds with one decimal: `1.2ms`.
fn millis(us: u64) -> String {
    format!("{}.{}ms", us / 1000, us % 1000 / 100)
}

/// The backend's last check: `ok 1.2ms HTTP 200`, `FAIL 800.0ms connect: timed out`, or
/// `-` when it is not checked.
fn last_check(b: &BackendStatus) -> String {
    let Some(health) = &b.health else {
        return "-".to_owned();
    };
    let Some(last) = &health.last_check else {
        return "pending".to_owned();
    };
    let mut detail: String = last.detail.chars().take(MAX_DETAIL).collect();
    if last.detail.chars().count() > MAX_DETAIL {
        detail.push('…');
    }
    let verdict = if last.ok { "ok" } else { "FAIL" };
    format!("{verdict} {} {detail}", millis(last.duration_us))
}

/// Lines above everything else when the kernel's maps differ from the agent's intent: a
/// summary, then one `DRIFT:` line per difference. Empty when they agree.
fn drift_banner(report: &StatusReport) -> String {
    let mut out = String::new();
    if report.drift.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "DRIFT: the data plane differs from the agent's intent in {} place(s); the agent does \
         not repair it: restart the agent",
        report.drift.len()
    );
    for d in &report.drift {
        let _ = writeln!(out, "DRIFT: {d}");
    }
    out
}

/// The whole table, one service per block.
pub fn render(report: &StatusReport) -> String {
    let mut out = drift_banner(report);
    let _ = writeln!(
        out,
        "xdp-lb: {} service(s), {} active flow(s)",
        report.services.len(),
        report.active_flows
    );
    let t = &report.flow_table;
    if t.entries != 0 {
        let _ = writeln!(
            out,
            "flow table: {} entries ({} configured), one LRU list shared by all CPUs",
            t.entries, t.configured
        );
    }
    if let Some(f) = &report.flow_filter {
        let _ = writeln!(out, "{}", flow_filter_line(f));
    }
    if let Some(a) = &report.announce {
        for v in &a.vips {
            let word = if v.announced {
                "announced"
            } else {
                "withdrawn"
            };
            let _ = writeln!(
                out,
                "announce: {}/{} {word} (table {}): {}",
                v.vip,
                crate::announce::host_prefix(v.vip),
                a.table,
                v.reason
            );
        }
    }
    if let Some(s) = &report.sync {
        sync_lines(&mut out, s);
    }
    let _ = writeln!(
        out,
        "{:<4} {:<28} {:<34} {:>9} {:>9}  Name",
        "Prot", "LocalAddress:Port", "Scheduler Flags", "Pkts", "Bytes"
    );
    let _ = writeln!(
        out,
        "  -> {:<26} {:<7} {:>6} {:<10} {:>7} {:>9} {:>9}  {:<17}  Last check",
        "RemoteAddress:Port", "Forward", "Weight", "State", "Flows", "Pkts", "Bytes", "MAC"
    );
    for s in &report.services {
        let _ = writeln!(out, "{}", service_line(s));
        // A service with pools lists its backends pool by pool, under a line for each.
        let pools: Vec<Option<&PoolStatus>> = if s.pools.is_empty() {
            vec![None]
        } else {
            s.pools.iter().map(Some).collect()
        };
        for pool in pools {
            if let Some(p) = pool {
                let _ = writeln!(
                    out,
                    "  pool {:<21} maglev({}) {} serving, {} client rule(s)",
                    p.name, p.maglev_size, p.serving, p.rules
                );
            }
            for b in s
                .backends
                .iter()
                .filter(|b| pool.is_none_or(|p| p.name == b.pool))
            {
                let remote = if b.address.is_ipv6() {
                    format!("[{}]:{}", b.address, s.port)
                } else {
                    format!("{}:{}", b.address, s.port)
                };
                // A backend on its own VLAN is routed with its frames re-tagged.
                let forward = b
                    .vlan
                    .map_or_else(|| "Route".to_owned(), |v| format!("vlan{v}"));
                let _ = writeln!(
                    out,
                    "  -> {:<26} {:<7} {:>6} {:<10} {:>7} {:>9} {:>9}  {:<17}  {}",
                    remote,
                    forward,
                    b.weight,
                    b.state,
                    b.flows,
                    human(b.packets),
                    human(b.bytes),
                    b.mac.as_deref().unwrap_or("-"),
                    last_check(b)
                );
            }
        }
    }
    if !report.verdicts.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Verdicts:");
        for v in &report.verdicts {
            let _ = writeln!(
                out,
                "  {:<22} {:>12} pkts {:>12} bytes",
                v.name, v.packets, v.bytes
            );
        }
    }
    if !report.flow_events.is_empty() {
        let _ = writeln!(out, "Connection table:");
        for v in &report.flow_events {
            let _ = writeln!(out, "  {:<22} {:>12}", v.name, v.packets);
        }
    }
    if !report.services.is_empty() {
        let _ = writeln!(out, "Table switches:");
        for s in &report.services {
            let last = s
                .last_switch_us
                .map_or_else(String::new, |us| format!(" (last {})", millis(us)));
            let _ = writeln!(out, "  {:<22} {:>12}{last}", s.name, s.table_switches);
        }
    }
    if report.notify_runs.values().any(|&n| n > 0) {
        let runs: Vec<String> = report
            .notify_runs
            .iter()
            .map(|(result, n)| format!("{n} {result}"))
            .collect();
        let _ = writeln!(out, "Notify command runs: {}", runs.join(", "));
    }
    out
}

/// `sync:` lines of `status`: the totals, then one line per peer.
fn sync_lines(out: &mut String, s: &crate::control::protocol::SyncStatus) {
    let reasons = |m: &std::collections::BTreeMap<String, u64>| {
        let total: u64 = m.values().sum();
        if total == 0 {
            return "0".to_owned();
        }
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("{total} ({})", parts.join(", "))
    };
    let place = if s.listening {
        format!("listening on {}", s.listen)
    } else {
        format!("not listening ({})", s.listen)
    };
    let _ = writeln!(
        out,
        "sync: {place}: sent {} entries in {} datagrams, not sent {}; received {}, applied {}, rejected {}; datagrams refused {}; last refresh {} live flows",
        s.sent,
        s.datagrams_sent,
        reasons(&s.not_sent),
        s.received,
        s.applied,
        reasons(&s.rejected),
        reasons(&s.datagrams_rejected),
        s.last_refresh_entries
    );
    for p in &s.peers {
        let heard = p.last_heard_ms.map_or_else(String::new, |ms| {
            format!(", heard {:.1} s ago", ms as f64 / 1e3)
        });
        let lag = p
            .lag_ms
            .map_or_else(String::new, |ms| format!(", lag {ms} ms"));
        let _ = writeln!(
            out,
            "sync peer {}: {}{heard}{lag}, received {}, applied {}, rejected {}, datagrams refused {}",
            p.addr, p.state, p.received, p.applied, p.rejected, p.datagrams_rejected
        );
    }
}

/// The `flow filter:` line of `status`.
fn flow_filter_line(f: &crate::control::protocol::FlowFilterStatus) -> String {
    if f.half == 0 {
        return "flow filter: off until its first walk of the connection table (every SYN looks \
                the table up)"
            .to_owned();
    }
    let share = if f.slots == 0 {
        0.0
    } else {
        f.set as f64 * 100.0 / f64::from(f.slots)
    };
    let renewed = match (f.renewed_s_ago, f.renewed_entries) {
        (Some(ago), Some(entries)) => {
            format!(", renewed {ago} s ago from {entries} connection-table entries")
        }
        _ => String::new(),
    };
    format!(
        "flow filter: on, {} of {} slots set ({share:.1} %: a SYN of an unknown flow skips the \
         table {:.1} % of the time){renewed}",
        f.set,
        f.slots,
        100.0 - share
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        audit::Drift,
        control::protocol::{CheckResult, FlowTableSize, HealthStatus},
    };

    #[test]
    fn the_flow_filter_line_says_whether_it_is_on_and_how_full() {
        use crate::control::protocol::FlowFilterStatus;
        let off = FlowFilterStatus {
            slots: 524_288,
            ..FlowFilterStatus::default()
        };
        assert_eq!(
            flow_filter_line(&off),
            "flow filter: off until its first walk of the connection table (every SYN looks the \
             table up)"
        );
        let on = FlowFilterStatus {
            half: 2,
            slots: 524_288,
            set: 131_072,
            renewed_s_ago: Some(12),
            renewed_entries: Some(140_000),
        };
        assert_eq!(
            flow_filter_line(&on),
            "flow filter: on, 131072 of 524288 slots set (25.0 %: a SYN of an unknown flow skips \
             the table 75.0 % of the time), renewed 12 s ago from 140000 connection-table entries"
        );
    }

    #[test]
    fn large_counts_are_shortened_as_ipvsadm_does() {
        assert_eq!(human(99_999), "99999");
        assert_eq!(human(123_456), "123K");
        assert_eq!(human(7_654_321), "7M");
        assert_eq!(human(3_000_000_000), "3G");
    }

    #[test]
    fn the_table_lists_each_service_with_its_backends_states_and_counters() {
        let report = StatusReport {
            services: vec![ServiceStatus {
                name: "video-rtmp".into(),
                vip: "10.0.0.100".parse().unwrap(),
                port: 1935,
                protocol: "tcp".into(),
                maglev_size: 65537,
                hash: "flow".into(),
                persistence_s: Some(300),
                vlan: None,
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
                        flows: 3,
                        packets: 40,
                        bytes: 4000,
                        mac: Some("02:00:00:00:00:11".into()),
                        vlan: None,
                        health: Some(HealthStatus {
                            role: "primary".into(),
                            state: "up".into(),
                            last_check: Some(CheckResult {
                                ok: true,
                                detail: "HTTP 200".into(),
                                duration_us: 1234,
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
                        weight: 0,
                        state: "drain".into(),
                        flows: 1,
                        packets: 2,
                        bytes: 200,
                        mac: None,
                        vlan: Some(200),
                        health: None,
                        pool: "default".into(),
                    },
                ],
                table_switches: 4,
                last_switch_us: Some(350),
                pools: Vec::new(),
            }],
            active_flows: 4,
            flow_table: FlowTableSize::new(4097, 4097),
            ..StatusReport::default()
        };
        let text = render(&report);
        assert!(
            text.contains(
                "flow table: 4097 entries (4097 configured), one LRU list shared by all CPUs"
            ),
            "{text}"
        );
        assert!(text.contains("TCP  10.0.0.100:1935"), "{text}");
        assert!(text.contains("maglev(65537) persistent 300"), "{text}");
        let drained = text.lines().find(|l| l.contains("10.0.0.12:1935")).unwrap();
        assert!(
            drained.contains("drain") && drained.contains(" 0 "),
            "{drained}"
        );
        assert!(drained.contains(" vlan200 "), "re-tagged: {drained}");
        assert!(text.starts_with("xdp-lb: 1 service(s), 4 active flow(s)"));
        let checked = text.lines().find(|l| l.contains("10.0.0.11:1935")).unwrap();
        assert!(checked.ends_with("ok 1.2ms HTTP 200"), "{checked}");
        assert!(checked.contains(" Route "), "{checked}");
        assert!(drained.ends_with(" -"), "{drained}");
        assert!(
            text.contains("video-rtmp                        4 (last 0.3ms)"),
            "{text}"
        );
        assert!(!text.contains("Notify command runs"), "{text}");
    }

    #[test]
    fn drift_comes_first_as_a_banner_naming_each_difference_and_is_absent_without_drift() {
        let mut report = StatusReport::default();
        assert!(!render(&report).contains("DRIFT"));
        report.drift = vec![
            Drift::new(
                "service video-rtmp 10.77.0.100:1935/tcp",
                "service_by_vip",
                "key missing from service_by_vip",
            ),
            Drift::new(
                "interface eth0",
                "xdp",
                "the agent's XDP program is not attached",
            ),
        ];
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0]
                .starts_with("DRIFT: the data plane differs from the agent's intent in 2 place(s)"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "DRIFT: service video-rtmp 10.77.0.100:1935/tcp: key missing from service_by_vip"
        );
        assert_eq!(
            lines[2],
            "DRIFT: interface eth0: the agent's XDP program is not attached"
        );
        assert!(lines[3].starts_with("xdp-lb: 0 service(s)"), "{text}");
    }

    #[test]
    fn a_service_with_pools_lists_its_backends_under_their_pool() {
        let backend = |address: &str, pool: &str| BackendStatus {
            id: 0,
            epoch: 0,
            address: address.parse().unwrap(),
            slots: 1,
            weight: 1,
            state: "up".into(),
            mac: None,
            vlan: None,
            flows: 0,
            packets: 0,
            bytes: 0,
            health: None,
            pool: pool.into(),
        };
        let pool = |name: &str, serving, rules| PoolStatus {
            name: name.into(),
            maglev_size: 251,
            serving,
            rules,
        };
        let report = StatusReport {
            services: vec![ServiceStatus {
                name: "video-rtmp".into(),
                vip: "10.0.0.100".parse().unwrap(),
                port: 1935,
                protocol: "tcp".into(),
                vlan: None,
                maglev_size: 251,
                hash: "flow".into(),
                persistence_s: None,
                serving: 3,
                packets: 0,
                bytes: 0,
                backends: vec![
                    backend("10.0.0.11", "default"),
                    backend("10.0.0.21", "premium"),
                    backend("10.0.0.12", "default"),
                ],
                table_switches: 2,
                last_switch_us: None,
                pools: vec![pool("default", 2, 0), pool("premium", 1, 2)],
            }],
            ..StatusReport::default()
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(
            lines[at("pool premium")].contains("1 serving, 2 client rule(s)"),
            "{text}"
        );
        assert!(
            at("pool default") < at("10.0.0.11:1935") && at("10.0.0.12:1935") < at("pool premium"),
            "{text}"
        );
        assert!(at("pool premium") < at("10.0.0.21:1935"), "{text}");
    }
}
