//! The connection table under a spoofed-SYN flood, end to end (root only): live RTMP
//! publishes keep their servers while a flood of many times the table's size arrives and a
//! backend is added that Maglev alone would send them to.
//!
//! The table holds its live flows with room to spare, as a well-sized one does: quiet
//! connections fill about 60% of each CPU's LRU list. (An LRU list whose live entries are
//! few keeps them in its active half, out of reach of never-used SYN entries; a list that
//! is mostly live, as under real load, rotates them out and evicts them.)

mod support;

use std::{thread, time::Duration};

use support::{
    flood::{frames_dropped_on_the_way, hold_connections, start_syn_flood},
    predict::lab_owner,
    sessions::status,
    stream::{addr, assert_one_uninterrupted_publish, publish_ports, rtmp_config, wait_for},
};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

const STREAM_SECONDS: u32 = 30;
/// The smallest table the config allows, so that a cheap flood is many times its size.
const TABLE: u64 = 1024;
/// Frames each of the two senders sends at most (one per CPU), and in how long.
const FLOOD_PER_CPU: u64 = 200_000;
const FLOOD_SECONDS: u32 = 8;
const FLOOD_RATE: u64 = 40_000;
/// Quiet connections held open from each CPU: 60% of a CPU's share of the table.
const HELD_PER_CPU: usize = 300;

/// A publish of `seconds` at two frames a second: a quiet stream (like a viewer's stream of
/// ACKs, or a talk-show feed) whose entry sits idle between packets, when a flood can push
/// it out of an LRU list if SYNs create entries.
fn start_quiet_publish(lab: &Lab, stream: &str, seconds: u32) -> LabProcess {
    let url = format!("rtmp://{}:{}/live/{stream}", Lab::VIP, Lab::RTMP_PORT);
    let argv: Vec<String> = Lab::publish_argv(&url, seconds)
        .into_iter()
        .map(|a| a.replace("rate=25", "rate=2"))
        .collect();
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.spawn(lab.ns_client(), &args).expect("starting ffmpeg")
}

/// The backend holding the client's connection from `port`.
fn holder_of(lab: &Lab, port: u16, backends: usize) -> Option<usize> {
    let peer = format!("{}:{port}", Lab::CLIENT_ADDR);
    (0..backends).find(|i| {
        lab.exec_ok(
            lab.ns_backend(*i),
            &["ss", "-Htn", "state", "established", "dst", &peer],
        )
        .is_ok_and(|out| out.contains(&peer))
    })
}

#[test]
fn live_publishes_survive_a_spoofed_syn_flood_many_times_the_table_while_a_backend_is_added() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        backends: 4,
        ..LabOptions::default()
    })
    .expect("bringing the lab up");
    let config = lab.dir().join("xdp-lb.yaml");
    let table = format!("flow_table:\n  size: {TABLE}\n");
    let yaml = |backends: &[(usize, u32)]| format!("{table}{}", rtmp_config(backends, ""));
    std::fs::write(&config, yaml(&[(0, 1), (1, 1), (2, 1)])).expect("writing the config");
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let mut agent = lab.start_agent(&binary, &config).expect("agent");

    let holders_of_quiet: Vec<_> = (0..2)
        .map(|cpu| hold_connections(&lab, cpu, HELD_PER_CPU, STREAM_SECONDS + 10))
        .collect();
    for holder in &holders_of_quiet {
        wait_for(Duration::from_secs(20), || {
            (holder.stdout().trim() == HELD_PER_CPU.to_string()).then_some(())
        })
        .unwrap_or_else(|| panic!("the quiet connections opened: {}", holder.stderr()));
    }

    // Backend 4 joins with weight 1000 (below): the Maglev table alone then sends nearly
    // every flow there.
    let after = [(0, 1), (1, 1), (2, 1), (3, 1000)];
    let table_after: Vec<_> = after.iter().map(|(i, w)| (addr(*i), *w)).collect();

    // One publish after the other, so each one's client port is known. Each weight-1
    // backend keeps about 65 of the 65537 slots, so about one port in a thousand stays
    // with its holder in the new table: such a publish would test nothing, and is stopped
    // for another (a stream name of its own, so the server logs tell them apart).
    let mut publishes = Vec::new();
    let mut streams = Vec::new();
    let mut holders = Vec::new();
    let mut handshakes = (2 * HELD_PER_CPU) as u64;
    let mut known = publish_ports(&lab);
    for name in ["flood-a", "flood-b"] {
        for attempt in 0.. {
            assert!(
                attempt < 5,
                "five publishes of {name} in a row stayed with their server in the new table"
            );
            let stream = format!("{name}{attempt}");
            let mut publish = start_quiet_publish(&lab, &stream, STREAM_SECONDS);
            let port = wait_for(Duration::from_secs(15), || {
                publish_ports(&lab).into_iter().find(|p| !known.contains(p))
            })
            .unwrap_or_else(|| panic!("the publish of {stream} connected"));
            known.push(port);
            handshakes += 1;
            let holder = wait_for(Duration::from_secs(5), || holder_of(&lab, port, 3))
                .expect("a backend holds it");
            if lab_owner(&table_after, port, Lab::RTMP_PORT) == Some(addr(holder)) {
                publish
                    .kill()
                    .expect("stopping a publish the new table leaves in place");
                continue;
            }
            publishes.push(publish);
            streams.push(stream);
            holders.push(holder);
            break;
        }
    }

    let dropped_before = frames_dropped_on_the_way(&lab);
    let floods: Vec<_> = (0..2)
        .map(|cpu| {
            start_syn_flood(
                &lab,
                cpu,
                FLOOD_SECONDS,
                FLOOD_PER_CPU,
                FLOOD_RATE,
                cpu as u64 + 1,
            )
        })
        .collect();
    // The backend is added while the flood runs, and the flood goes on after it.
    thread::sleep(Duration::from_secs(2));
    std::fs::write(&config, yaml(&after)).expect("rewriting the config");
    agent.signal(libc::SIGHUP).expect("SIGHUP");
    wait_for(Duration::from_secs(20), || {
        lab.agent_log().contains("reload applied").then_some(())
    })
    .unwrap_or_else(|| panic!("the agent applied the reload: {}", lab.agent_log()));
    let mut sent = 0;
    for mut flood in floods {
        let out = flood
            .wait_with_timeout(Duration::from_secs(u64::from(FLOOD_SECONDS) + 20))
            .expect("the flood ends");
        assert!(
            out.status.success(),
            "the flood sender failed: {}",
            flood.stderr()
        );
        sent += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .expect("frames sent");
    }
    let dropped = frames_dropped_on_the_way(&lab) - dropped_before;
    assert!(
        sent >= 20 * TABLE,
        "the flood was many times the table: {sent} SYNs"
    );
    let report = status(&lab, &binary);
    let counted = |name: &str| {
        report
            .flow_events
            .iter()
            .find(|e| e.name == name)
            .map_or(0, |e| e.packets)
    };
    // The flood reached the program: all of it but what the machine's links dropped on the
    // way when it fell behind (counted, and printed here), and at most 1% in all. (A lost
    // SYN is not a lost entry: that is what the next two checks count.)
    assert!(
        counted("syn_not_remembered") >= sent - sent / 100,
        "the flood's SYNs reached the balancer and were forwarded without an entry: {sent} \
         sent, {dropped} dropped on the links on the way; {:?}; verdicts {:?}",
        report.flow_events,
        report.verdicts
    );
    // Every entry was made by a handshake's ACK, none by a SYN.
    assert_eq!(
        counted("new"),
        handshakes,
        "only the handshakes' ACKs made entries, no SYN: {:?}",
        report.flow_events
    );
    assert!(
        report.active_flows < TABLE,
        "the flood left no entries of its own: {} active",
        report.active_flows
    );
    assert_eq!(
        counted("tcp_miss_no_syn"),
        handshakes,
        "only the handshakes' ACKs missed: no live entry was evicted"
    );

    // Each publish runs to its end as one session on the server it started on.
    for ((ffmpeg, stream), holder) in publishes.iter_mut().zip(&streams).zip(holders) {
        assert_one_uninterrupted_publish(&lab, ffmpeg, stream, STREAM_SECONDS, holder, 4);
    }
    assert!(agent.is_running(), "the agent is still running");
}
