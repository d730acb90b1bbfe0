//! What the path-MTU labs share (`lab_pmtu.rs`, `lab_ipv6.rs`): a download through the VIP
//! and the data plane's verdict counters.

#![allow(dead_code)]

use std::time::Duration;

use xdp_lb_tests::Lab;

/// Downloads `url` from the client with curl (`-6` when `ipv6`), giving up after
/// `seconds`; the bytes received and curl's exit status.
pub fn download(lab: &Lab, url: &str, ipv6: bool, seconds: u32) -> (usize, Option<i32>) {
    let max_time = seconds.to_string();
    let mut argv = vec!["curl"];
    if ipv6 {
        argv.push("-6");
    }
    argv.extend([
        "-sS",
        "--max-time",
        &max_time,
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        url,
    ]);
    let out = lab
        .exec_timeout(
            lab.ns_client(),
            &argv,
            Duration::from_secs(u64::from(seconds) + 10),
        )
        .expect("running curl");
    let size = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (size, out.status.code())
}

/// The `verdict` counter `name` from `xdp-lb status --json`.
pub fn verdict_packets(lab: &Lab, name: &str) -> u64 {
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let out = lab
        .agent_command(&binary, &["status", "--json"])
        .expect("xdp-lb status");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json parses");
    report["verdicts"]
        .as_array()
        .expect("a verdicts array")
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["packets"].as_u64())
        .unwrap_or(0)
}

/// Puts `len` bytes (a pattern, not all one byte) at `name` in every backend's web root.
pub fn serve_segment(lab: &Lab, name: &str, len: usize) {
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    for i in 0..lab.backends() {
        let path = lab.backend_www(i).unwrap().join(name);
        std::fs::write(&path, &body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// A download of `expected` bytes ended whole (`download`'s answer), the data plane
/// forwarded the network's too-big errors, and a backend cached the narrower path MTU
/// `mtu` toward `client` (`ip -6` when `ipv6`): the LB host never sent anything big, so a
/// learned MTU can only be the backends'.
pub fn assert_completed_and_learned(
    lab: &Lab,
    (size, status): (usize, Option<i32>),
    expected: usize,
    client: &str,
    ipv6: bool,
    mtu: u32,
) {
    assert_eq!(
        (size, status),
        (expected, Some(0)),
        "the whole segment arrived"
    );
    assert!(
        verdict_packets(lab, "icmp_too_big_forwarded") >= 1,
        "the router's too-big error went through the LB to a backend"
    );
    let family = if ipv6 { "-6" } else { "-4" };
    let learned = (0..lab.backends()).any(|i| {
        lab.exec_ok(lab.ns_backend(i), &["ip", family, "route", "get", client])
            .is_ok_and(|route| route.contains(&format!("mtu {mtu}")))
    });
    assert!(learned, "no backend has the {mtu}-byte path MTU cached");
}
