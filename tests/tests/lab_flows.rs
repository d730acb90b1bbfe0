//! The connection table end to end (root only): a live RTMP publish keeps its nginx through
//! a reload that adds a backend, changes weights and drains another; client persistence
//! keeps a player's successive requests on one server.

mod support;

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use support::predict::maglev_owner;
use xdp_lb::config::DEFAULT_FLOW_HASH_SEED;
use xdp_lb_tests::{Lab, LabOptions, is_root};

const STREAM_SECONDS: u32 = 30;

fn lab(backends: usize) -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    Lab::up(LabOptions {
        backends,
        ..LabOptions::default()
    })
    .expect("bringing the lab up")
}

/// An RTMP service on the VIP with these (backend index, weight) pairs.
fn rtmp_config(backends: &[(usize, u32)], extra: &str) -> String {
    let mut yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: video-rtmp\n    vip: {}\n    port: {}\n    protocol: tcp\n{extra}    backends:\n",
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

fn write(lab: &Lab, name: &str, yaml: &str) -> PathBuf {
    let path = lab.dir().join(name);
    std::fs::write(&path, yaml).expect("writing the config");
    path
}

fn addr(i: usize) -> IpAddr {
    Lab::backend_addr(i).parse().unwrap()
}

/// Polls `what` every 100 ms until it gives a value or `within` passes.
fn wait_for<T>(within: Duration, mut what: impl FnMut() -> Option<T>) -> Option<T> {
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

/// The client's source port of its established connection to the VIP's RTMP port.
fn publish_port(lab: &Lab) -> Option<u16> {
    let out = lab
        .exec_ok(
            lab.ns_client(),
            &[
                "ss",
                "-Htn",
                "state",
                "established",
                "dst",
                &format!("{}:{}", Lab::VIP, Lab::RTMP_PORT),
            ],
        )
        .ok()?;
    let local = out
        .split_whitespace()
        .find(|f| f.starts_with(Lab::CLIENT_ADDR))?;
    local.rsplit(':').next()?.parse().ok()
}

/// Which backend holds an established RTMP connection from the client.
fn backend_holding_the_stream(lab: &Lab, backends: usize) -> Option<usize> {
    (0..backends).find(|i| {
        lab.exec_ok(
            lab.ns_backend(*i),
            &["ss", "-Htn", "state", "established", "sport", "=", ":1935"],
        )
        .is_ok_and(|out| out.contains(Lab::CLIENT_ADDR))
    })
}

#[test]
fn a_live_rtmp_publish_keeps_its_server_while_backends_are_added_reweighted_and_drained() {
    let lab = lab(4);
    let config = write(
        &lab,
        "xdp-lb.yaml",
        &rtmp_config(&[(0, 1), (1, 1), (2, 1)], ""),
    );
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let mut agent = lab.start_agent(&binary, &config).expect("agent");

    let url = format!("rtmp://{}:{}/live/longstream", Lab::VIP, Lab::RTMP_PORT);
    let seconds = STREAM_SECONDS.to_string();
    let mut ffmpeg = lab
        .spawn(
            lab.ns_client(),
            &[
                "ffmpeg",
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=320x240:rate=25",
                "-t",
                &seconds,
                "-c:v",
                "flv1",
                "-f",
                "flv",
                &url,
            ],
        )
        .expect("starting ffmpeg");
    let port =
        wait_for(Duration::from_secs(15), || publish_port(&lab)).expect("the publish connected");
    let holder = wait_for(Duration::from_secs(5), || {
        backend_holding_the_stream(&lab, 3)
    })
    .expect("a backend holds it");

    // Plan the change: add backend 4, drain one of the others, reweight the rest, choosing
    // weights under which Maglev alone would send this very flow elsewhere.
    let others: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    let (drained, reweighted) = (others[0], others[1]);
    let candidates = [
        (5, 5),
        (10, 1),
        (1, 10),
        (3, 7),
        (7, 3),
        (20, 20),
        (2, 9),
        (9, 2),
    ];
    let (w_other, w_new) = candidates
        .iter()
        .copied()
        .find(|(w_other, w_new)| {
            let table = [
                (addr(holder), 1),
                (addr(reweighted), *w_other),
                (addr(3), *w_new),
            ];
            let owner = maglev_owner(
                &table,
                65537,
                DEFAULT_FLOW_HASH_SEED,
                Lab::CLIENT_ADDR.parse().unwrap(),
                port,
                Lab::VIP.parse().unwrap(),
                Lab::RTMP_PORT,
            );
            owner != Some(addr(holder))
        })
        .expect("some weights move this flow in the Maglev table");
    let new_config = rtmp_config(
        &[(holder, 1), (drained, 0), (reweighted, w_other), (3, w_new)],
        "",
    );
    std::fs::write(&config, new_config).expect("rewriting the config");
    agent.signal(libc::SIGHUP).expect("SIGHUP");
    wait_for(Duration::from_secs(20), || {
        lab.agent_log().contains("reload applied").then_some(())
    })
    .unwrap_or_else(|| panic!("the agent applied the reload: {}", lab.agent_log()));

    // The live publish runs to its end on the server it started on.
    let output = ffmpeg
        .wait_with_timeout(Duration::from_secs(u64::from(STREAM_SECONDS) + 40))
        .expect("ffmpeg ends");
    assert!(
        output.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stream_lines = |i: usize| -> usize {
        lab.rtmp_publishes(i)
            .unwrap()
            .iter()
            .filter(|l| l.contains("longstream"))
            .count()
    };
    let got = wait_for(Duration::from_secs(15), || {
        (stream_lines(holder) > 0).then_some(())
    });
    assert!(got.is_some(), "the publish was logged by its backend");
    assert_eq!(
        stream_lines(holder),
        1,
        "exactly one uninterrupted publish session on {}",
        Lab::backend_name(holder)
    );
    for i in (0..4).filter(|i| *i != holder) {
        assert_eq!(
            stream_lines(i),
            0,
            "no part of the stream reached {}",
            Lab::backend_name(i)
        );
    }
    assert!(agent.is_running(), "the agent is still running");
}

#[test]
fn with_persistence_a_players_successive_requests_land_on_one_backend() {
    let lab = lab(3);
    let yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: video-hls\n    vip: {}\n    port: {}\n    protocol: tcp\n    persistence: 300\n    backends:\n{}",
        Lab::VIP,
        Lab::HTTP_PORT,
        (0..3)
            .map(|i| format!("      - address: {}\n", Lab::backend_addr(i)))
            .collect::<String>()
    );
    let config = write(&lab, "xdp-lb.yaml", &yaml);
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let _agent = lab.start_agent(&binary, &config).expect("agent");
    let answers: Vec<String> = (48000..48020u16)
        .map(|port| {
            lab.http_get_via_vip_from_port("/", port)
                .expect("request answered")
                .trim()
                .to_owned()
        })
        .collect();
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "one backend for the player: {answers:?}"
    );
    // Without persistence these source ports spread over several backends.
    let spread: std::collections::BTreeSet<IpAddr> = (48000..48020u16)
        .filter_map(|port| {
            maglev_owner(
                &[(addr(0), 1), (addr(1), 1), (addr(2), 1)],
                65537,
                DEFAULT_FLOW_HASH_SEED,
                Lab::CLIENT_ADDR.parse().unwrap(),
                port,
                Lab::VIP.parse().unwrap(),
                Lab::HTTP_PORT,
            )
        })
        .collect();
    assert!(
        spread.len() > 1,
        "the same ports would spread without persistence"
    );
}
