//! A spoofed-SYN flood from the lab's client (`syn_flood.py`): bounded in frames and time,
//! only ever to the lab's VIP; and quiet connections that fill the connection table as a
//! busy LB's live flows do (`hold_connections.py`).

#![allow(dead_code)]

use xdp_lb_tests::{Lab, LabProcess};

const SCRIPT: &str = include_str!("syn_flood.py");
const HOLD_SCRIPT: &str = include_str!("hold_connections.py");

/// Opens `count` quiet connections to the VIP's RTMP port from the client, pinned to `cpu`,
/// and holds them for `seconds`. It prints how many it opened once they are all open.
pub fn hold_connections(lab: &Lab, cpu: usize, count: usize, seconds: u32) -> LabProcess {
    let script = lab.dir().join("hold_connections.py");
    std::fs::write(&script, HOLD_SCRIPT).expect("writing the holder script");
    let args = [
        "taskset".to_owned(),
        "-c".to_owned(),
        cpu.to_string(),
        "python3".to_owned(),
        script.display().to_string(),
        Lab::VIP.to_owned(),
        Lab::RTMP_PORT.to_string(),
        count.to_string(),
        seconds.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(lab.ns_client(), &args)
        .expect("starting the connection holder")
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
    let script = lab.dir().join("syn_flood.py");
    std::fs::write(&script, SCRIPT).expect("writing the flood script");
    let args = [
        "taskset".to_owned(),
        "-c".to_owned(),
        cpu.to_string(),
        "python3".to_owned(),
        script.display().to_string(),
        Lab::VIP.to_owned(),
        Lab::RTMP_PORT.to_string(),
        seconds.to_string(),
        limit.to_string(),
        rate.to_string(),
        seed.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn(lab.ns_client(), &args)
        .expect("starting the flood")
}
