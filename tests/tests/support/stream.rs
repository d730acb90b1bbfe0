//! What the live-stream lab tests share: RTMP service configs, a long ffmpeg publish,
//! finding it on the client and on the backends, and waiting on conditions.

#![allow(dead_code)]

use std::{
    fmt::Write as _,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use xdp_lb_tests::{Lab, LabProcess};

/// Polls `what` every 100 ms until it gives a value or `within` passes.
pub fn wait_for<T>(within: Duration, mut what: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = what() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Backend `i`'s address.
pub fn addr(i: usize) -> IpAddr {
    Lab::backend_addr(i).parse().expect("lab address")
}

/// An RTMP service on the VIP with these (backend index, weight) pairs; `extra` is YAML
/// inserted before the backends (service keys, indented by four spaces).
pub fn rtmp_config(backends: &[(usize, u32)], extra: &str) -> String {
    named_rtmp_config("video-rtmp", backends, extra)
}

/// [`rtmp_config`] with the service called `name`. Further services can be appended as
/// items of `services:` (indented by two spaces).
pub fn named_rtmp_config(name: &str, backends: &[(usize, u32)], extra: &str) -> String {
    let mut yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: {name}\n    vip: {}\n    port: {}\n    protocol: tcp\n{extra}    backends:\n",
        Lab::VIP,
        Lab::RTMP_PORT
    );
    for (i, weight) in backends {
        let _ = writeln!(
            yaml,
            "      - address: {}\n        weight: {weight}",
            Lab::backend_addr(*i)
        );
    }
    yaml
}

/// Starts an ffmpeg publish of `seconds` of test pattern from the client to
/// `rtmp://VIP/live/STREAM`.
pub fn start_publish(lab: &Lab, stream: &str, seconds: u32) -> LabProcess {
    let url = format!("rtmp://{}:{}/live/{stream}", Lab::VIP, Lab::RTMP_PORT);
    let argv = Lab::publish_argv(&url, seconds);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.spawn(lab.ns_client(), &args).expect("starting ffmpeg")
}

/// The client's source ports of its established connections to the VIP's RTMP port.
pub fn publish_ports(lab: &Lab) -> Vec<u16> {
    publish_ports_from(lab, Lab::CLIENT_ADDR)
}

/// [`publish_ports`] of a client at `client` (behind the router: `Lab::ROUTED_CLIENT_ADDR`).
pub fn publish_ports_from(lab: &Lab, client: &str) -> Vec<u16> {
    client_ports_to(lab, client, Lab::RTMP_PORT)
}

/// The source ports of `client`'s established connections to the VIP's `port`.
pub fn client_ports_to(lab: &Lab, client: &str, port: u16) -> Vec<u16> {
    let out = lab
        .exec_ok(
            lab.ns_client(),
            &[
                "ss",
                "-Htn",
                "state",
                "established",
                "dst",
                &format!("{}:{port}", Lab::VIP),
            ],
        )
        .unwrap_or_default();
    out.split_whitespace()
        .filter(|f| f.starts_with(client))
        .filter_map(|local| local.rsplit(':').next()?.parse().ok())
        .collect()
}

/// Starts `count` publishes of `seconds` from the client, named `{prefix}0`, `{prefix}1`...
pub fn spawn_publishes(
    lab: &Lab,
    prefix: &str,
    count: usize,
    seconds: u32,
) -> Vec<(String, LabProcess)> {
    (0..count)
        .map(|i| {
            let stream = format!("{prefix}{i}");
            let url = format!("rtmp://{}:{}/live/{stream}", Lab::VIP, Lab::RTMP_PORT);
            let argv = Lab::publish_argv(&url, seconds);
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            (stream, lab.spawn(lab.ns_client(), &args).expect("ffmpeg"))
        })
        .collect()
}

/// The client's source port of its (first) established connection to the VIP's RTMP port.
pub fn publish_port(lab: &Lab) -> Option<u16> {
    publish_ports(lab).first().copied()
}

/// Which of the first `backends` backends holds an established RTMP connection from the
/// client.
pub fn backend_holding_the_stream(lab: &Lab, backends: usize) -> Option<usize> {
    (0..backends).find(|i| {
        lab.exec_ok(
            lab.ns_backend(*i),
            &["ss", "-Htn", "state", "established", "sport", "=", ":1935"],
        )
        .is_ok_and(|out| out.contains(Lab::CLIENT_ADDR))
    })
}

/// Asserts, after `what` was done to the lab, that ffmpeg still publishes and its
/// connection from client port `port` is still established on backend `holder`.
#[track_caller]
pub fn assert_publish_still_on(
    lab: &Lab,
    ffmpeg: &mut LabProcess,
    holder: usize,
    port: u16,
    what: &str,
) {
    // A flow sent to another server is reset by it at its next segment: give it time.
    thread::sleep(Duration::from_millis(500));
    assert!(
        ffmpeg.is_running(),
        "after {what}: the publish is still running; ffmpeg said: {}",
        ffmpeg.stderr()
    );
    let peer = format!("{}:{port}", Lab::CLIENT_ADDR);
    let established = lab
        .exec_ok(
            lab.ns_backend(holder),
            &["ss", "-Htn", "state", "established", "dst", &peer],
        )
        .unwrap_or_default();
    assert!(
        established.contains(&peer),
        "after {what}: the publish from port {port} is still established on {}",
        Lab::backend_name(holder)
    );
}

/// Waits for ffmpeg to end, then asserts the stream was one uninterrupted publish session
/// on backend `holder` and reached none of the other `backends`.
pub fn assert_one_uninterrupted_publish(
    lab: &Lab,
    ffmpeg: &mut LabProcess,
    stream: &str,
    seconds: u32,
    holder: usize,
    backends: usize,
) {
    let output = ffmpeg
        .wait_with_timeout(Duration::from_secs(u64::from(seconds) + 40))
        .expect("ffmpeg ends");
    assert!(
        output.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = |i: usize| {
        lab.rtmp_publishes(i)
            .expect("rtmp log")
            .iter()
            .filter(|l| l.contains(stream))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(15), || (lines(holder) > 0)
            .then_some(()))
        .is_some(),
        "the publish was logged by {}",
        Lab::backend_name(holder)
    );
    assert_eq!(
        lines(holder),
        1,
        "exactly one uninterrupted publish session on {}",
        Lab::backend_name(holder)
    );
    for i in (0..backends).filter(|i| *i != holder) {
        assert_eq!(
            lines(i),
            0,
            "no part of the stream reached {}",
            Lab::backend_name(i)
        );
    }
}
