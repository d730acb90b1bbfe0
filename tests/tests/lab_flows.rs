//! The connection table end to end (root only): a live RTMP publish keeps its nginx through
//! a reload that adds a backend, changes weights and drains another; client persistence
//! keeps a player's successive requests on one server.

mod support;

use std::{net::IpAddr, path::PathBuf, time::Duration};

use support::{
    predict::lab_owner,
    stream::{
        addr, assert_one_uninterrupted_publish, backend_holding_the_stream, publish_port,
        rtmp_config, start_publish, wait_for,
    },
};
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

fn write(lab: &Lab, name: &str, yaml: &str) -> PathBuf {
    let path = lab.dir().join(name);
    std::fs::write(&path, yaml).expect("writing the config");
    path
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

    let mut ffmpeg = start_publish(&lab, "longstream", STREAM_SECONDS);
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
    // The holder keeps weight 1; the others go up to 1000, which reshuffles the holder's
    // slots too.
    let scale = [1u32, 2, 3, 5, 10, 20, 50, 100, 1000];
    let candidates: Vec<(u32, u32)> = scale
        .iter()
        .flat_map(|a| scale.iter().map(move |b| (*a, *b)))
        .collect();
    let (w_other, w_new) = candidates
        .iter()
        .copied()
        .find(|(w_other, w_new)| {
            let table = [
                (addr(holder), 1),
                (addr(reweighted), *w_other),
                (addr(3), *w_new),
            ];
            let owner = lab_owner(&table, port, Lab::RTMP_PORT);
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
    assert_one_uninterrupted_publish(&lab, &mut ffmpeg, "longstream", STREAM_SECONDS, holder, 4);
    assert!(agent.is_running(), "the agent is still running");
}

#[test]
fn with_persistence_a_players_successive_requests_land_on_one_backend() {
    let lab = lab(3);
    let yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: video-hls\n    vip: {}\n    port: {}\n    protocol: tcp\n    persistence: 5m\n    backends:\n{}",
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
            lab_owner(
                &[(addr(0), 1), (addr(1), 1), (addr(2), 1)],
                port,
                Lab::HTTP_PORT,
            )
        })
        .collect();
    assert!(
        spread.len() > 1,
        "the same ports would spread without persistence"
    );
}
