//! IPv6 end to end, in the namespace lab with IPv6 addresses (root only): sessions to an
//! IPv6 VIP are balanced over the backends, whose answers go straight back to the client;
//! path-MTU discovery works through the LB (the router's ICMPv6 packet-too-big, sent to the
//! VIP, reaches the backend serving the download); and the `dsr` check proves the IPv6
//! path (a backend without the IPv6 VIP on lo is down for it).

use std::{
    collections::BTreeSet,
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

mod support;

use support::pmtu;
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

/// The MTU of the router's link toward the client (IPv6's minimum is 1280).
const NARROW_MTU: u32 = 1400;
/// The file the client downloads: several megabytes, so many full-size segments.
const SEGMENT: &str = "pmtu6-segment.ts";
const SEGMENT_LEN: usize = 4 << 20;
/// The longest any awaited state change may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// A lab with IPv6, its client behind the narrower router link, every backend serving the
/// segment.
fn lab() -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        ipv6: true,
        client_behind_router: Some(NARROW_MTU),
        ..LabOptions::default()
    })
    .expect("bringing the lab up");
    pmtu::serve_segment(&lab, SEGMENT, SEGMENT_LEN);
    lab
}

/// An HLS service on the IPv6 VIP over every backend's IPv6 address, checked by `check`.
fn config(lab: &Lab, check: &str) -> PathBuf {
    let mut yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: hls6\n    vip: {}\n    port: {}\n    protocol: tcp\n    health_check: {check}\n    backends:\n",
        Lab::VIP6,
        Lab::HTTP_PORT
    );
    for i in 0..lab.backends() {
        yaml.push_str(&format!("      - address: {}\n", Lab::backend_addr6(i)));
    }
    let path = lab.dir().join("xdp-lb.yaml");
    fs::write(&path, yaml).expect("writing the config");
    path
}

/// Starts the agent with `check`; the agent log's length before it started (the log is
/// appended to by every agent of the lab).
fn start_agent(lab: &Lab, check: &str) -> (LabProcess, usize) {
    let from = lab.agent_log().len();
    let config = config(lab, check);
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let agent = lab
        .start_agent(&binary, &config)
        .expect("starting the agent");
    wait_log(lab, from, "health: checking");
    (agent, from)
}

/// The agent log from byte `from` on.
fn log_since(lab: &Lab, from: usize) -> String {
    lab.agent_log().get(from..).unwrap_or_default().to_owned()
}

fn wait_log(lab: &Lab, from: usize, needle: &str) {
    let start = Instant::now();
    while !log_since(lab, from).contains(needle) {
        assert!(
            start.elapsed() < PATIENCE,
            "the agent never logged `{needle}`:\n{}",
            log_since(lab, from)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP session from the client to the IPv6 VIP: the answering backend's name, or what
/// went wrong.
fn session(lab: &Lab) -> Result<String, String> {
    let url = format!("http://[{}]:{}/", Lab::VIP6, Lab::HTTP_PORT);
    let out = lab
        .exec_timeout(
            lab.ns_client(),
            &["curl", "-6", "-sS", "--max-time", "5", &url],
            Duration::from_secs(15),
        )
        .map_err(|e| format!("{e:#}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Downloads the segment through the VIP from the client, giving up after `seconds`.
fn download(lab: &Lab, seconds: u32) -> (usize, Option<i32>) {
    pmtu::download(
        lab,
        &format!("http://[{}]:{}/{SEGMENT}", Lab::VIP6, Lab::HTTP_PORT),
        true,
        seconds,
    )
}

const TCP_CHECK: &str = "{kind: tcp, interval: 500ms, timeout: 400ms}";
const DSR_CHECK: &str = "{kind: dsr, interval: 500ms, timeout: 400ms}";

#[test]
fn ipv6_sessions_are_balanced_and_a_download_over_a_narrower_link_completes() {
    let lab = lab();
    let _agent = start_agent(&lab, TCP_CHECK);
    // Sessions from the client's many source ports spread over the backends, each
    // answered from the VIP by the backend itself.
    let names: BTreeSet<String> = (0..12)
        .map(|n| session(&lab).unwrap_or_else(|e| panic!("session {n} failed: {e}")))
        .collect();
    let expected: BTreeSet<String> = (0..lab.backends()).map(Lab::backend_name).collect();
    assert!(
        names.len() >= 2 && names.is_subset(&expected),
        "12 sessions landed on {names:?}"
    );

    pmtu::assert_completed_and_learned(
        &lab,
        download(&lab, 30),
        SEGMENT_LEN,
        Lab::ROUTED_CLIENT_ADDR6,
        true,
        NARROW_MTU,
    );
}

#[test]
fn without_packet_too_big_reaching_the_backend_the_same_ipv6_download_stalls() {
    let lab = lab();
    let _agent = start_agent(&lab, TCP_CHECK);
    // What the backends see when the LB keeps the errors to itself: none arrive. A policy
    // rule ahead of the local table blackholes the ICMPv6 packets to the VIP only (the
    // backends' neighbour discovery, to their own and multicast addresses, goes on).
    for i in 0..lab.backends() {
        let ns = lab.ns_backend(i);
        let vip = format!("{}/128", Lab::VIP6);
        for rule in [
            &[
                "-6",
                "rule",
                "add",
                "pref",
                "10",
                "iif",
                "eth0",
                "to",
                &vip,
                "ipproto",
                "ipv6-icmp",
                "blackhole",
            ][..],
            &["-6", "rule", "add", "pref", "100", "lookup", "local"],
            &["-6", "rule", "del", "pref", "0", "lookup", "local"],
        ] {
            let mut argv = vec!["ip"];
            argv.extend_from_slice(rule);
            lab.exec_ok(ns, &argv).unwrap();
        }
    }
    session(&lab).expect("a small answer still comes through");
    let (size, status) = download(&lab, 8);
    assert!(
        size < SEGMENT_LEN && status != Some(0),
        "the download stalls: {size} bytes, curl exit {status:?}"
    );
}

#[test]
fn a_backend_without_the_ipv6_vip_on_lo_is_down_for_the_dsr_check_and_up_for_tcp() {
    let lab = lab();
    lab.remove_backend_vip6(0)
        .expect("removing the IPv6 VIP from b1's lo");
    let down = format!(
        "service=hls6 backend={} role=primary old=up new=down",
        Lab::backend_addr6(0)
    );

    // The plain check connects to b1's own address: b1 passes it and stays in the table,
    // so some sessions to the VIP go to a server that drops them.
    let (agent, _) = start_agent(&lab, TCP_CHECK);
    thread::sleep(Duration::from_secs(3));
    assert!(
        !lab.agent_log().contains("new=down"),
        "tcp keeps every backend up:\n{}",
        lab.agent_log()
    );
    let failed = (0..12).filter(|_| session(&lab).is_err()).count();
    assert!(failed > 0, "some sessions reach b1 and fail");
    drop(agent);

    let (_agent, from) = start_agent(&lab, DSR_CHECK);
    wait_log(&lab, from, &down);
    let log = log_since(&lab, from);
    assert!(
        log.contains("is the VIP on the server's lo?"),
        "the reason says what to look at:\n{log}"
    );
    thread::sleep(Duration::from_secs(3));
    let log = log_since(&lab, from);
    let downs: Vec<&str> = log.lines().filter(|l| l.contains("new=down")).collect();
    assert_eq!(downs.len(), 1, "only b1 went down: {downs:#?}");
    for n in 0..12 {
        let name = session(&lab).unwrap_or_else(|e| panic!("session {n} failed: {e}"));
        assert_ne!(name, Lab::backend_name(0), "b1 is out of the table");
    }
}
