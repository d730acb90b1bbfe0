//! Client-source pools end to end (root only): client addresses land on the pools their
//! rules name and an unlisted one on the service's own backends; `xdp-lb client set` moves
//! a client's new sessions to another pool while its running RTMP publish goes on, to end
//! as one uninterrupted session on the server it started on.

mod support;

use std::{fmt::Write as _, time::Duration};

use support::stream::{
    assert_one_uninterrupted_publish, backend_holding_the_stream, publish_port, start_publish,
    wait_for,
};
use xdp_lb_tests::{Lab, LabOptions, is_root};

/// Second and third client addresses, added beside `Lab::CLIENT_ADDR` on the client's eth0.
const SECOND_CLIENT: &str = "10.77.0.3";
const UNLISTED_CLIENT: &str = "10.77.0.4";
const STREAM_SECONDS: u32 = 20;

fn lab() -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    Lab::up(LabOptions {
        backends: 3,
        ..LabOptions::default()
    })
    .expect("bringing the lab up")
}

/// Service `name` on `port`: b1 its own backend, pool `blue` b2 and pool `green` b3, and
/// these (client, pool) rules.
fn pooled_service(name: &str, port: u16, rules: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "  - name: {name}\n    vip: {vip}\n    port: {port}\n    protocol: tcp\n    backends:\n      - address: {b1}\n    pools:\n      blue:\n        backends: [{{address: {b2}}}]\n      green:\n        backends: [{{address: {b3}}}]\n    clients:\n",
        vip = Lab::VIP,
        b1 = Lab::backend_addr(0),
        b2 = Lab::backend_addr(1),
        b3 = Lab::backend_addr(2),
    );
    for (client, pool) in rules {
        let _ = writeln!(yaml, "      - {{prefix: {client}/32, pool: {pool}}}");
    }
    yaml
}

fn start(lab: &Lab, services: &str) -> xdp_lb_tests::LabProcess {
    let path = lab.dir().join("xdp-lb.yaml");
    std::fs::write(&path, format!("interfaces: [eth0]\nservices:\n{services}"))
        .expect("writing the config");
    let binary = Lab::locate_agent_binary().expect("agent binary");
    lab.start_agent(&binary, &path).expect("agent")
}

fn add_client_address(lab: &Lab, address: &str) {
    lab.exec_ok(
        lab.ns_client(),
        &["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
    )
    .expect("adding a client address");
}

/// The backend answering an HTTP request through the VIP from `client`:`port`.
fn answered_by(lab: &Lab, client: &str, port: u16) -> String {
    let url = format!("http://{}:{}/", Lab::VIP, Lab::HTTP_PORT);
    let port = port.to_string();
    lab.exec_ok(
        lab.ns_client(),
        &[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "5",
            "--interface",
            client,
            "--local-port",
            &port,
            &url,
        ],
    )
    .unwrap_or_else(|e| panic!("request from {client}:{port}: {e:#}"))
    .trim()
    .to_owned()
}

#[test]
fn two_client_addresses_land_on_their_pools_and_an_unlisted_one_on_the_default_pool() {
    let lab = lab();
    add_client_address(&lab, SECOND_CLIENT);
    add_client_address(&lab, UNLISTED_CLIENT);
    let rules = [(Lab::CLIENT_ADDR, "blue"), (SECOND_CLIENT, "green")];
    let _agent = start(&lab, &pooled_service("video-hls", Lab::HTTP_PORT, &rules));

    for (client, expected) in [
        (Lab::CLIENT_ADDR, Lab::backend_name(1)),
        (SECOND_CLIENT, Lab::backend_name(2)),
        (UNLISTED_CLIENT, Lab::backend_name(0)),
    ] {
        for port in 47000..47010 {
            assert_eq!(
                answered_by(&lab, client, port),
                expected,
                "a request from {client}:{port}"
            );
        }
    }
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let lookup = lab
        .agent_command(
            &binary,
            &[
                "lookup",
                &format!("{SECOND_CLIENT}:48000"),
                &format!("{}:{}", Lab::VIP, Lab::HTTP_PORT),
            ],
        )
        .expect("xdp-lb lookup");
    let said = String::from_utf8_lossy(&lookup.stdout);
    assert!(
        said.contains("pool green") && said.contains(&format!("{SECOND_CLIENT}/32 -> pool green")),
        "lookup names the rule and the pool: {said}"
    );
}

#[test]
fn client_set_moves_a_clients_new_sessions_while_its_running_publish_stays_on_its_server() {
    let lab = lab();
    let rules = [(Lab::CLIENT_ADDR, "blue")];
    let _agent = start(&lab, &pooled_service("video-rtmp", Lab::RTMP_PORT, &rules));

    let mut ffmpeg = start_publish(&lab, "pooled-live", STREAM_SECONDS);
    wait_for(Duration::from_secs(15), || publish_port(&lab)).expect("the publish connected");
    let holder = wait_for(Duration::from_secs(5), || {
        backend_holding_the_stream(&lab, 3)
    })
    .expect("a backend holds the publish");
    assert_eq!(holder, 1, "the client's rule sends it to pool blue");

    // `change.py -o change-client`: the client now belongs to pool green.
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let prefix = format!("{}/32", Lab::CLIENT_ADDR);
    let set = lab
        .agent_command(
            &binary,
            &[
                "client",
                "set",
                &prefix,
                "--service",
                "video-rtmp",
                "--pool",
                "green",
            ],
        )
        .expect("xdp-lb client set");
    assert!(
        set.status.success(),
        "client set: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    let list = lab
        .agent_command(&binary, &["client", "list"])
        .expect("xdp-lb client list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&prefix) && l.contains("green") && l.contains("run-time")),
        "client list shows the run-time rule: {listed}"
    );

    // A new session of the client goes to green while the first one runs on.
    lab.rtmp_publish_ok(3, "moved-new").expect("a new publish");
    let new_home = lab
        .wait_rtmp_publish("moved-new", Duration::from_secs(15))
        .expect("the new publish was logged");
    assert_eq!(
        new_home, 2,
        "the new session follows the new rule to pool green"
    );
    assert!(
        ffmpeg.is_running(),
        "the first publish is still running when the second ends"
    );
    assert_one_uninterrupted_publish(&lab, &mut ffmpeg, "pooled-live", STREAM_SECONDS, 1, 3);
}

#[test]
fn after_kill_9_the_next_agent_keeps_the_pools_the_rules_and_a_running_publish() {
    let lab = lab();
    add_client_address(&lab, SECOND_CLIENT);
    let rules = [(Lab::CLIENT_ADDR, "blue"), (SECOND_CLIENT, "green")];
    let services = pooled_service("video-rtmp", Lab::RTMP_PORT, &rules)
        + &pooled_service("video-hls", Lab::HTTP_PORT, &rules);
    let mut first = start(&lab, &services);
    let mut ffmpeg = start_publish(&lab, "pooled-restart", STREAM_SECONDS);
    wait_for(Duration::from_secs(15), || publish_port(&lab)).expect("the publish connected");
    let holder = wait_for(Duration::from_secs(5), || {
        backend_holding_the_stream(&lab, 3)
    })
    .expect("a backend holds the publish");
    assert_eq!(holder, 1, "pool blue");

    first.signal(libc::SIGKILL).expect("kill -9");
    first
        .wait_with_timeout(Duration::from_secs(10))
        .expect("the agent died");
    assert_eq!(
        answered_by(&lab, SECOND_CLIENT, 49000),
        Lab::backend_name(2),
        "with no agent, the pinned program still follows the rules"
    );
    let _second = start(&lab, &services);
    assert!(
        lab.agent_log().contains("adopted the data plane"),
        "{}",
        lab.agent_log()
    );
    for (client, expected) in [
        (SECOND_CLIENT, Lab::backend_name(2)),
        (Lab::CLIENT_ADDR, Lab::backend_name(1)),
    ] {
        for port in 49100..49105 {
            assert_eq!(answered_by(&lab, client, port), expected, "{client}:{port}");
        }
    }
    assert_one_uninterrupted_publish(&lab, &mut ffmpeg, "pooled-restart", STREAM_SECONDS, 1, 3);
}
