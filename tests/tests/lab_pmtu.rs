//! Path MTU discovery through the LB, in the namespace lab (root only). The client sits
//! behind a router whose link toward it has an MTU of 1400 while everything else has 1500:
//! the backends' full-size packets (sent from the VIP, straight to the router) make the
//! router answer "fragmentation needed" to the VIP, i.e. to the LB. Only if the LB hands
//! that to the backend serving the download does the backend lower its path MTU; otherwise
//! the download stalls as soon as its segments grow to the full MSS.

mod support;

use support::pmtu;
use xdp_lb_tests::{Lab, LabOptions, is_root};

/// The MTU of the router's link toward the client.
const NARROW_MTU: u32 = 1400;
/// The file the client downloads: several megabytes, so many full-size segments.
const SEGMENT: &str = "pmtu-segment.ts";
const SEGMENT_LEN: usize = 4 << 20;

fn lab_behind_router() -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        lb_agent: true,
        client_behind_router: Some(NARROW_MTU),
        ..LabOptions::default()
    })
    .expect("bringing the lab up");
    pmtu::serve_segment(&lab, SEGMENT, SEGMENT_LEN);
    lab
}

/// Downloads the segment through the VIP from the client, giving up after `seconds`.
fn download(lab: &Lab, seconds: u32) -> (usize, Option<i32>) {
    pmtu::download(
        lab,
        &format!("http://{}:{}/{SEGMENT}", Lab::VIP, Lab::HTTP_PORT),
        false,
        seconds,
    )
}

#[test]
fn a_download_over_a_narrower_link_completes_because_frag_needed_reaches_the_backend() {
    let lab = lab_behind_router();
    pmtu::assert_completed_and_learned(
        &lab,
        download(&lab, 30),
        SEGMENT_LEN,
        Lab::ROUTED_CLIENT_ADDR,
        false,
        NARROW_MTU,
    );
}

#[test]
fn without_frag_needed_reaching_the_backend_the_same_download_stalls() {
    let lab = lab_behind_router();
    // What the backends see when the LB keeps the ICMP errors to itself: none arrive. A
    // policy rule ahead of the local table blackholes every ICMP packet coming in on eth0
    // (this host has no iptables, and tc lacks its action modules).
    for i in 0..lab.backends() {
        let ns = lab.ns_backend(i);
        for rule in [
            &[
                "rule",
                "add",
                "pref",
                "10",
                "iif",
                "eth0",
                "ipproto",
                "icmp",
                "blackhole",
            ][..],
            &["rule", "add", "pref", "100", "lookup", "local"],
            &["rule", "del", "pref", "0", "lookup", "local"],
        ] {
            let mut argv = vec!["ip"];
            argv.extend_from_slice(rule);
            lab.exec_ok(ns, &argv).unwrap();
        }
    }
    let (size, status) = download(&lab, 8);
    assert!(
        size < SEGMENT_LEN && status != Some(0),
        "the download stalls: {size} bytes, curl exit {status:?}"
    );
}
