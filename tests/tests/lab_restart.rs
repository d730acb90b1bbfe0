//! Restart without a lost flow (root only): `kill -9` of the agent leaves traffic flowing,
//! and a new agent adopts the pinned program, maps and connection table while a live RTMP
//! publish goes on, which ends as one uninterrupted session on the server it started on,
//! although its server was drained just before, so Maglev alone would send it elsewhere.

mod support;

use std::{thread, time::Duration};

use support::stream::{
    assert_one_uninterrupted_publish, backend_holding_the_stream, rtmp_config, start_publish,
    wait_for,
};
use xdp_lb_tests::{Lab, LabOptions, is_root};

const STREAM_SECONDS: u32 = 25;

#[test]
fn kill_9_of_the_agent_loses_no_flow_and_the_next_agent_adopts_the_data_plane() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        backends: 4,
        ..LabOptions::default()
    })
    .expect("lab");
    let config = lab.dir().join("xdp-lb.yaml");
    std::fs::write(&config, rtmp_config(&[(1, 1), (2, 1), (3, 1)], "")).expect("config");
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let mut first = lab.start_agent(&binary, &config).expect("first agent");

    let mut ffmpeg = start_publish(&lab, "restart", STREAM_SECONDS);
    let holder = wait_for(Duration::from_secs(15), || {
        backend_holding_the_stream(&lab, 4)
    })
    .expect("the publish reached a backend");

    // Change the table under the stream: its server is drained (it keeps its flows but
    // leaves the Maglev table) and b1 joins. b1 sorts first, so an agent numbering the
    // backends afresh would give b1 the id the stream's entry names: only the earlier
    // agent's ids and epochs, adopted across the restart, keep the stream where it is.
    let others: Vec<(usize, u32)> = (1..4).filter(|i| *i != holder).map(|i| (i, 1)).collect();
    let mut changed = vec![(0, 1), (holder, 0)];
    changed.extend(others);
    std::fs::write(&config, rtmp_config(&changed, "")).unwrap();
    first.signal(libc::SIGHUP).expect("SIGHUP");
    wait_for(Duration::from_secs(20), || {
        lab.agent_log().contains("reload applied").then_some(())
    })
    .expect("reloaded");

    first.signal(libc::SIGKILL).expect("kill -9");
    first
        .wait_with_timeout(Duration::from_secs(10))
        .expect("the agent died");
    // No agent: the pinned program keeps balancing.
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .unwrap();
    assert!(link.contains("xdp"), "still attached after kill -9: {link}");
    connect_via_vip(&lab).expect("a new session is balanced with no agent running");
    thread::sleep(Duration::from_secs(2));
    assert!(ffmpeg.is_running(), "the publish goes on with no agent");

    let _second = lab.start_agent(&binary, &config).expect("second agent");
    assert!(
        lab.agent_log().contains("adopted the data plane"),
        "{}",
        lab.agent_log()
    );

    assert_one_uninterrupted_publish(&lab, &mut ffmpeg, "restart", STREAM_SECONDS, holder, 4);
    // And the adopted agent still balances new sessions.
    connect_via_vip(&lab).expect("balanced by the new agent");
}

/// Opens (and closes) a TCP connection from the client to the VIP's RTMP port: a backend's
/// nginx accepts it only if the LB balanced the SYN to it.
fn connect_via_vip(lab: &Lab) -> anyhow::Result<()> {
    let script = format!("exec 3<>/dev/tcp/{}/{}", Lab::VIP, Lab::RTMP_PORT);
    lab.exec_ok(lab.ns_client(), &["timeout", "5", "bash", "-c", &script])
        .map(|_| ())
}

#[test]
fn cleanup_removes_what_a_dead_agent_left_attached_and_pinned() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions::default()).expect("lab");
    let config = lab.write_lab_config().expect("config");
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let mut agent = lab.start_agent(&binary, &config).expect("agent");
    agent.signal(libc::SIGKILL).expect("kill -9");
    agent
        .wait_with_timeout(Duration::from_secs(10))
        .expect("the agent died");
    let pins = lab.pin_dir().expect("pin dir");
    assert!(
        pins.join("links").join("eth0").exists(),
        "the dead agent's link is pinned"
    );
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .unwrap();
    assert!(link.contains("xdp"), "still attached: {link}");

    let out = lab
        .exec(
            lab.ns_lb(),
            &[
                &binary.to_string_lossy(),
                "cleanup",
                "--pin-dir",
                &pins.to_string_lossy(),
            ],
        )
        .expect("cleanup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed"),
        "{out:?}"
    );
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .unwrap();
    assert!(!link.contains("xdp"), "detached: {link}");
    assert!(!pins.exists(), "nothing left pinned");
    // And the VIP's services are the LB host's own again.
    assert!(lab.http_get_via_vip("/").is_err(), "no longer balanced");
}
