//! A server taken out of rotation keeps its live streams and gets no new ones (root only).
//! Drained, it keeps its live RTMP publish while new connections go elsewhere: those of a
//! client persistence tied to it, and a new connection reusing the 5-tuple of one it
//! served and closed. Failing its HTTP health check while it still
//! serves RTMP (the default `when_backend_down: keep_flows`), it is `down`, keeps its live
//! publish, gets no new session, and takes new sessions again once the check recovers.

mod support;

use std::{fmt::Write as _, path::Path, time::Duration};

use support::{
    sessions::{
        Ports, backend_state, ctl_ok, http_session_from_reused_port, maglev_choice,
        new_sessions_follow, status, tcp_session_lands_on,
    },
    stream::{
        addr, assert_one_uninterrupted_publish, assert_publish_still_on,
        backend_holding_the_stream, publish_port, rtmp_config, start_publish, wait_for,
    },
};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

const STREAM_SECONDS: u32 = 25;
const BACKENDS: usize = 3;
/// The longest a health state change may take to show in `status`.
const PATIENCE: Duration = Duration::from_secs(20);

fn lab() -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    Lab::up(LabOptions {
        backends: BACKENDS,
        ..LabOptions::default()
    })
    .expect("lab")
}

fn start(lab: &Lab, yaml: &str) -> LabProcess {
    let config = lab.dir().join("xdp-lb.yaml");
    std::fs::write(&config, yaml).expect("writing the config");
    let binary = Lab::locate_agent_binary().expect("agent binary");
    lab.start_agent(&binary, &config).expect("agent")
}

/// A live publish from the client: ffmpeg, its client port and the backend holding it.
fn publish(lab: &Lab, stream: &str) -> (LabProcess, u16, usize) {
    let ffmpeg = start_publish(lab, stream, STREAM_SECONDS);
    let port =
        wait_for(Duration::from_secs(15), || publish_port(lab)).expect("the publish connected");
    let holder = wait_for(Duration::from_secs(5), || {
        backend_holding_the_stream(lab, BACKENDS)
    })
    .expect("a backend holds the publish");
    (ffmpeg, port, holder)
}

/// video-rtmp with client persistence and video-hls without, both on every server.
fn drain_config() -> String {
    let all: Vec<(usize, u32)> = (0..BACKENDS).map(|i| (i, 1)).collect();
    let mut yaml = rtmp_config(&all, "    persistence: 5m\n");
    let _ = write!(
        yaml,
        "  - name: video-hls\n    vip: {}\n    port: {}\n    protocol: tcp\n    backends:\n",
        Lab::VIP,
        Lab::HTTP_PORT
    );
    for i in 0..BACKENDS {
        let _ = writeln!(yaml, "      - address: {}", Lab::backend_addr(i));
    }
    yaml
}

/// `xdp-lb backend drain` of backend `x` in both services; `status` shows it draining.
fn drain(lab: &Lab, binary: &Path, x: usize) {
    let x_addr = addr(x).to_string();
    for service in ["video-rtmp", "video-hls"] {
        ctl_ok(lab, binary, &["backend", "drain", service, &x_addr]);
    }
    assert_eq!(
        backend_state(&status(lab, binary), "video-rtmp", x).as_deref(),
        Some("drain")
    );
}

#[test]
fn a_drained_server_keeps_its_live_publish_while_the_persistent_clients_new_connections_go_elsewhere()
 {
    let lab = lab();
    let _agent = start(&lab, &drain_config());
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let (mut ffmpeg, publish_port, x) = publish(&lab, "drained-persistent");
    let mut ports = Ports(43000);
    let persistent = tcp_session_lands_on(&lab, ports.next(), Lab::RTMP_PORT)
        .expect("a second connection of the client");
    assert_eq!(
        persistent,
        x,
        "persistence sends the client's next connection to {}",
        Lab::backend_name(x)
    );

    drain(&lab, &binary, x);
    assert_publish_still_on(&lab, &mut ffmpeg, x, publish_port, "the drain");
    for _ in 0..3 {
        let port = ports.next();
        let landed = tcp_session_lands_on(&lab, port, Lab::RTMP_PORT)
            .unwrap_or_else(|e| panic!("a new connection of the client after the drain: {e}"));
        assert_ne!(
            landed,
            x,
            "a new connection of the persistent client (port {port}) after the drain avoids the drained {}",
            Lab::backend_name(x)
        );
    }

    assert_one_uninterrupted_publish(
        &lab,
        &mut ffmpeg,
        "drained-persistent",
        STREAM_SECONDS,
        x,
        BACKENDS,
    );
}

#[test]
fn a_new_connection_reusing_the_5_tuple_of_one_a_drained_server_served_goes_elsewhere_while_its_live_publish_goes_on()
 {
    let lab = lab();
    let _agent = start(&lab, &drain_config());
    let binary = Lab::locate_agent_binary().expect("agent binary");
    // The client port is reused at once even if the client ends up in TIME_WAIT.
    lab.exec_ok(
        lab.ns_client(),
        &["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"],
    )
    .expect("tcp_tw_reuse");
    let (mut ffmpeg, publish_port, x) = publish(&lab, "drained-reused");
    // An HLS request from a port Maglev gives to the same server, answered and closed.
    let all: Vec<(usize, u32)> = (0..BACKENDS).map(|i| (i, 1)).collect();
    let reused = (44000..45000)
        .find(|p| maglev_choice(&all, 65537, *p, Lab::HTTP_PORT) == x)
        .expect("a client port of the server's");
    assert_eq!(
        http_session_from_reused_port(&lab, reused),
        Ok(x),
        "the first request from port {reused}"
    );

    drain(&lab, &binary, x);
    assert_publish_still_on(&lab, &mut ffmpeg, x, publish_port, "the drain");
    let again = http_session_from_reused_port(&lab, reused)
        .unwrap_or_else(|e| panic!("a new request from port {reused}: {e}"));
    assert_ne!(
        again,
        x,
        "a new connection (a new SYN) from port {reused} after the drain avoids the drained {}",
        Lab::backend_name(x)
    );

    assert_one_uninterrupted_publish(
        &lab,
        &mut ffmpeg,
        "drained-reused",
        STREAM_SECONDS,
        x,
        BACKENDS,
    );
}

/// The page the health check asks every server for; a server fails its check while the
/// page is missing.
const HEALTH_PAGE: &str = "flap.html";

fn set_health_page(lab: &Lab, i: usize, present: bool) {
    let page = lab.backend_www(i).expect("document root").join(HEALTH_PAGE);
    if present {
        std::fs::write(&page, "ok\n").expect("writing the health page");
    } else {
        std::fs::remove_file(&page).expect("removing the health page");
    }
}

fn wait_state(lab: &Lab, binary: &Path, i: usize, state: &str) {
    wait_for(PATIENCE, || {
        (backend_state(&status(lab, binary), "video-rtmp", i).as_deref() == Some(state))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} is {state} in status within {PATIENCE:?}:\n{}",
            Lab::backend_name(i),
            lab.agent_log()
        )
    });
}

#[test]
fn a_server_failing_its_health_check_while_still_serving_keeps_its_live_publish_gets_no_new_session_and_takes_them_again_once_it_recovers()
 {
    let lab = lab();
    for i in 0..BACKENDS {
        set_health_page(&lab, i, true);
    }
    let check = format!(
        "    health_check: {{kind: http, port: {}, path: /{HEALTH_PAGE}, interval: 500ms, timeout: 400ms, rise: 2}}\n",
        Lab::HTTP_PORT
    );
    let all: Vec<(usize, u32)> = (0..BACKENDS).map(|i| (i, 1)).collect();
    let _agent = start(&lab, &rtmp_config(&all, &check));
    let binary = Lab::locate_agent_binary().expect("agent binary");
    for i in 0..BACKENDS {
        wait_state(&lab, &binary, i, "up");
    }

    let (mut ffmpeg, publish_port, x) = publish(&lab, "flapping-live");
    let mut ports = Ports(45000);

    set_health_page(&lab, x, false);
    wait_state(&lab, &binary, x, "down");
    assert_publish_still_on(&lab, &mut ffmpeg, x, publish_port, "its server went down");
    let others: Vec<(usize, u32)> = all.iter().copied().filter(|(i, _)| *i != x).collect();
    let landed = new_sessions_follow(
        &lab,
        &binary,
        &mut ports,
        4,
        Lab::RTMP_PORT,
        "its server went down",
        &|p| maglev_choice(&others, 65537, p, Lab::RTMP_PORT),
    );
    assert!(!landed.contains(&x), "{landed:?}");

    set_health_page(&lab, x, true);
    wait_state(&lab, &binary, x, "up");
    assert_publish_still_on(&lab, &mut ffmpeg, x, publish_port, "its server came back");
    // New sessions from ports Maglev gives to the recovered server reach it.
    while ports.0 < 46000 && maglev_choice(&all, 65537, ports.0 + 1, Lab::RTMP_PORT) != x {
        ports.next();
    }
    let landed = new_sessions_follow(
        &lab,
        &binary,
        &mut ports,
        1,
        Lab::RTMP_PORT,
        "its server came back",
        &|p| maglev_choice(&all, 65537, p, Lab::RTMP_PORT),
    );
    assert_eq!(landed, [x], "the recovered server takes new sessions");

    assert_one_uninterrupted_publish(
        &lab,
        &mut ffmpeg,
        "flapping-live",
        STREAM_SECONDS,
        x,
        BACKENDS,
    );
}
