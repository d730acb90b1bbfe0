//! Restart without a lost flow (root only): `kill -9` of the agent leaves traffic flowing,
//! and a new agent adopts the pinned program, maps and connection table while a live RTMP
//! publish goes on, which ends as one uninterrupted session on the server it started on,
//! although the table has changed so that Maglev alone would now send it elsewhere.

mod support;

use std::{
    fmt::Write as _,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use support::predict::maglev_owner;
use xdp_lb::config::DEFAULT_FLOW_HASH_SEED;
use xdp_lb_tests::{Lab, LabOptions, is_root};

const STREAM_SECONDS: u32 = 25;

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

#[test]
fn kill_9_of_the_agent_loses_no_flow_and_the_next_agent_adopts_the_data_plane() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions { backends: 4, ..LabOptions::default() }).expect("lab");
    let config = lab.dir().join("xdp-lb.yaml");
    std::fs::write(&config, rtmp_config(&[(0, 1), (1, 1), (2, 1)])).expect("config");
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let mut first = lab.start_agent(&binary, &config).expect("first agent");

    let url = format!("rtmp://{}:{}/live/restart", Lab::VIP, Lab::RTMP_PORT);
    let seconds = STREAM_SECONDS.to_string();
    let mut ffmpeg = lab
        .spawn(
            lab.ns_client(),
            &[
                "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                "testsrc=size=320x240:rate=25", "-t", &seconds, "-c:v", "flv1", "-f", "flv", &url,
            ],
        )
        .expect("ffmpeg");
    let holder = wait_for(Duration::from_secs(15), || {
        (0..3).find(|i| {
            lab.exec_ok(lab.ns_backend(*i), &["ss", "-Htn", "state", "established", "sport", "=", ":1935"])
                .is_ok_and(|out| out.contains(Lab::CLIENT_ADDR))
        })
    })
    .expect("the publish reached a backend");

    // Change the table under the stream: a fourth backend, weighted so that Maglev alone
    // would now give this flow to another server.
    let port = wait_for(Duration::from_secs(5), || {
        let out = lab
            .exec_ok(lab.ns_client(), &["ss", "-Htn", "state", "established", "dst", &format!("{}:{}", Lab::VIP, Lab::RTMP_PORT)])
            .ok()?;
        let local = out.split_whitespace().find(|f| f.starts_with(Lab::CLIENT_ADDR))?;
        local.rsplit(':').next()?.parse::<u16>().ok()
    })
    .expect("the client's port");
    let addr = |i: usize| -> IpAddr { Lab::backend_addr(i).parse().unwrap() };
    let weights = |(w_other, w_new): (u32, u32)| -> Vec<(usize, u32)> {
        (0..4)
            .map(|i| {
                let w = if i == holder { 1 } else if i == 3 { w_new } else { w_other };
                (i, w)
            })
            .collect()
    };
    let moved = (1..=10u32)
        .flat_map(|w_other| (1..=10u32).map(move |w_new| (w_other, w_new)))
        .find(|pair| {
            let table: Vec<(IpAddr, u32)> = weights(*pair).into_iter().map(|(i, w)| (addr(i), w)).collect();
            maglev_owner(&table, 65537, DEFAULT_FLOW_HASH_SEED, Lab::CLIENT_ADDR.parse().unwrap(), port, Lab::VIP.parse().unwrap(), Lab::RTMP_PORT)
                != Some(addr(holder))
        })
        .expect("weights that move the flow in the table");
    std::fs::write(&config, rtmp_config(&weights(moved))).unwrap();
    first.signal(libc::SIGHUP).expect("SIGHUP");
    wait_for(Duration::from_secs(20), || lab.agent_log().contains("reload applied").then_some(())).expect("reloaded");

    first.signal(libc::SIGKILL).expect("kill -9");
    first.wait_with_timeout(Duration::from_secs(10)).expect("the agent died");
    // No agent: the pinned program keeps balancing.
    let link = lab.exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("xdp"), "still attached after kill -9: {link}");
    connect_via_vip(&lab).expect("a new session is balanced with no agent running");
    thread::sleep(Duration::from_secs(2));
    assert!(ffmpeg.is_running(), "the publish goes on with no agent");

    let _second = lab.start_agent(&binary, &config).expect("second agent");
    assert!(lab.agent_log().contains("adopted the data plane"), "{}", lab.agent_log());

    let output = ffmpeg.wait_with_timeout(Duration::from_secs(u64::from(STREAM_SECONDS) + 40)).expect("ffmpeg ends");
    assert!(output.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&output.stderr));
    let lines = |i: usize| lab.rtmp_publishes(i).unwrap().iter().filter(|l| l.contains("restart")).count();
    wait_for(Duration::from_secs(15), || (lines(holder) > 0).then_some(())).expect("the publish was logged");
    assert_eq!(lines(holder), 1, "one uninterrupted publish on {}", Lab::backend_name(holder));
    for i in (0..4).filter(|i| *i != holder) {
        assert_eq!(lines(i), 0, "no part of the stream reached {}", Lab::backend_name(i));
    }
    // And the adopted agent still balances new sessions.
    connect_via_vip(&lab).expect("balanced by the new agent");
}

/// An RTMP service on the VIP with these (backend index, weight) pairs.
fn rtmp_config(backends: &[(usize, u32)]) -> String {
    let mut yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: video-rtmp\n    vip: {}\n    port: {}\n    protocol: tcp\n    backends:\n",
        Lab::VIP,
        Lab::RTMP_PORT
    );
    for (i, weight) in backends {
        let _ = writeln!(yaml, "      - address: {}\n        weight: {weight}", Lab::backend_addr(*i));
    }
    yaml
}

/// Opens (and closes) a TCP connection from the client to the VIP's RTMP port: a backend's
/// nginx accepts it only if the LB balanced the SYN to it.
fn connect_via_vip(lab: &Lab) -> anyhow::Result<()> {
    let script = format!("exec 3<>/dev/tcp/{}/{}", Lab::VIP, Lab::RTMP_PORT);
    lab.exec_ok(lab.ns_client(), &["timeout", "5", "bash", "-c", &script]).map(|_| ())
}
