//! A spoofed-SYN flood from the lab's client (`syn_flood.py`): bounded in frames and time,
//! only ever to the lab's VIP; and quiet connections that fill the connection table as a
//! busy LB's live flows do (`hold_connections.py`).

#![allow(dead_code)]

use xdp_lb_tests::{Lab, LabProcess};

const SCRIPT: &str = include_str!("syn_flood.py");
const HOLD_SCRIPT: &str = include_str!("hold_connections.py");

/// Runs the Python script `body` (written to the lab's directory as `name`) on the client,
/// pinned to `cpu`, with `args` after the VIP and its RTMP port.
fn run_on_client(lab: &Lab, cpu: usize, name: &str, body: &str, args: &[String]) -> LabProcess {
    let script = lab.dir().join(name);
    std::fs::write(&script, body).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    let mut argv = vec![
        "taskset".to_owned(),
        "-c".to_owned(),
        cpu.to_string(),
        "python3".to_owned(),
        script.display().to_string(),
        Lab::VIP.to_owned(),
        Lab::RTMP_PORT.to_string(),
    ];
    argv.extend_from_slice(args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.spawn(lab.ns_client(), &argv)
        .unwrap_or_else(|e| panic!("starting {name}: {e:#}"))
}

/// Opens `count` quiet connections to the VIP's RTMP port from the client, pinned to `cpu`,
/// and holds them for `seconds`. It prints how many it opened once they are all open.
pub fn hold_connections(lab: &Lab, cpu: usize, count: usize, seconds: u32) -> LabProcess {
    let args = [count.to_string(), seconds.to_string()];
    run_on_client(lab, cpu, "hold_connections.py", HOLD_SCRIPT, &args)
}

/// Starts one flood sender on the client, pinned to `cpu` (XDP on a veth runs on the
/// sender's CPU, and the connection table's LRU lists are per CPU): at most `limit` SYNs
/// to the VIP's RTMP port within `seconds`, `rate` a second. It prints what it sent.
pub fn start_syn_flood(
    lab: &Lab,
    cpu: usize,
    seconds: u32,
    limit: u64,
    rate: u64,
    seed: u64,
) -> LabProcess {
    let args = [
        seconds.to_string(),
        limit.to_string(),
        rate.to_string(),
        seed.to_string(),
    ];
    run_on_client(lab, cpu, "syn_flood.py", SCRIPT, &args)
}

/// Frames the lab's links dropped on the way from the client to the LB: the `tx_dropped`
/// of the client's eth0 and of every switch port (a veth counts there what its peer could
/// not take: a full backlog, or a full XDP ring in front of the LB's program). A flood
/// sender counts what it handed to its socket; what reached the balancer is that less these.
pub fn frames_dropped_on_the_way(lab: &Lab) -> u64 {
    let tx_dropped = |ns: &str, args: &[&str]| -> u64 {
        let out = lab
            .exec_ok(ns, args)
            .unwrap_or_else(|e| panic!("ip -s -j link in {ns}: {e:#}"));
        let links: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j link: {e}: {out}"));
        links
            .as_array()
            .map(|links| {
                links
                    .iter()
                    .filter_map(|l| l["stats64"]["tx"]["dropped"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    tx_dropped(
        lab.ns_client(),
        &["ip", "-s", "-j", "link", "show", "dev", "eth0"],
    ) + tx_dropped(lab.ns_switch(), &["ip", "-s", "-j", "link", "show"])
}
