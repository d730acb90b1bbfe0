//! `xdp-lb service add|remove` against a running agent (root only): a whole service added
//! at run time is validated like the YAML, balances at once, outlives the agent, and goes
//! away on `remove`.

mod support;

use std::time::Duration;

use support::stream::{rtmp_config, wait_for};
use xdp_lb_tests::{Lab, LabOptions, is_root};

fn hls_service(port: u16) -> String {
    format!(
        "name: video-hls\nvip: {}\nport: {port}\nprotocol: tcp\nhealth_check:\n  kind: http\n  path: /health\nbackends:\n{}",
        Lab::VIP,
        (0..3)
            .map(|i| format!("  - address: {}\n", Lab::backend_addr(i)))
            .collect::<String>()
    )
}

/// Whether a request to the VIP's HTTP port is answered by a backend.
fn hls_answers(lab: &Lab) -> bool {
    lab.http_get_via_vip("/")
        .is_ok_and(|body| body.starts_with('b'))
}

#[test]
fn a_service_added_at_run_time_balances_outlives_the_agent_and_goes_on_remove() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions::default()).expect("lab");
    let config = lab.dir().join("xdp-lb.yaml");
    std::fs::write(&config, rtmp_config(&[(0, 1), (1, 1), (2, 1)], "")).unwrap();
    let binary = Lab::locate_agent_binary().unwrap();
    let mut agent = lab.start_agent(&binary, &config).expect("agent");
    assert!(!hls_answers(&lab), "port 8080 is no service yet");

    // Refused, with the reason, and nothing changes.
    let bad = lab.dir().join("bad.yaml");
    std::fs::write(&bad, hls_service(0)).unwrap();
    let out = lab
        .agent_command(&binary, &["service", "add", &bad.to_string_lossy()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("port"), "{stderr}");
    std::fs::write(&bad, hls_service(8080).replace("video-hls", "video-rtmp")).unwrap();
    let out = lab
        .agent_command(&binary, &["service", "add", &bad.to_string_lossy()])
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("already a service named video-rtmp"),
        "{stderr}"
    );
    assert!(!hls_answers(&lab));

    let good = lab.dir().join("hls.yaml");
    std::fs::write(&good, hls_service(8080)).unwrap();
    let out = lab
        .agent_command(&binary, &["service", "add", &good.to_string_lossy()])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_for(Duration::from_secs(10), || hls_answers(&lab).then_some(())).is_some(),
        "the new service balances"
    );
    let status = lab.agent_command(&binary, &["status", "--json"]).unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("video-hls"));

    // A clean stop and a new agent: the change is applied over the YAML again.
    agent.signal(libc::SIGTERM).unwrap();
    agent.wait_with_timeout(Duration::from_secs(15)).unwrap();
    let _agent = lab.start_agent(&binary, &config).expect("second agent");
    assert!(
        lab.agent_log().contains("run-time change(s)"),
        "{}",
        lab.agent_log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || hls_answers(&lab).then_some(())).is_some(),
        "still there after a restart"
    );

    let out = lab
        .agent_command(&binary, &["service", "remove", "video-hls"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !hls_answers(&lab),
        "removed: the LB's own stack refuses port 8080 again"
    );
    let out = lab
        .agent_command(&binary, &["service", "remove", "video-hls"])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service video-hls"));
}
