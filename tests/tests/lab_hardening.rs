//! The agent under local trouble, in the namespace lab (root only): its own descriptors run
//! out (what 22,000 idle clients did), and a listener's port is already taken at start.

mod support;

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use support::sessions::{Ports, http_session_lands_on, status};
use xdp_lb_tests::{Lab, LabOptions, is_root};

fn lab() -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    Lab::up(LabOptions::default()).expect("bringing the lab up")
}

/// An HLS service on the VIP over every backend, checked by fast TCP checks; `extra` goes
/// at the top of the file.
fn write_config(lab: &Lab, extra: &str) -> std::path::PathBuf {
    let mut yaml = format!(
        "interfaces: [eth0]\n{extra}services:\n  - name: video-hls\n    vip: {}\n    port: {}\n    protocol: tcp\n    health_check: {{kind: tcp, interval: 300ms, timeout: 200ms, fall: 2}}\n    backends:\n",
        Lab::VIP,
        Lab::HTTP_PORT
    );
    for i in 0..lab.backends() {
        yaml.push_str(&format!("      - address: {}\n", Lab::backend_addr(i)));
    }
    let path = lab.dir().join("xdp-lb.yaml");
    fs::write(&path, yaml).expect("writing the config");
    path
}

/// Sets the soft limit on open files of process `pid` (the hard one stays: raising it
/// again would need CAP_SYS_RESOURCE).
fn set_nofile(pid: u32, limit: usize) {
    let limit = format!("--nofile={limit}:");
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &limit])
        .output()
        .expect("running prlimit");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn running_out_of_its_own_descriptors_takes_no_backend_down_and_sessions_go_on() {
    let lab = lab();
    let config = write_config(&lab, "");
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let agent = lab
        .start_agent(&binary, &config)
        .expect("starting the agent");
    thread::sleep(Duration::from_secs(2));
    let report = status(&lab, &binary);
    assert!(
        report.services[0].backends.iter().all(|b| b.state == "up"),
        "every backend up first: {:?}",
        report.services[0].backends
    );

    // No descriptor left: every check fails to open its socket, for ten check intervals.
    let pid = agent.pid();
    let open = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's descriptors")
        .count();
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("its limits");
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .expect("its soft limit on open files");
    // Below what it holds: its open descriptors stay, every new one fails (a limit of
    // exactly the count would leave the slot of a check's socket that happened to be open).
    assert!(open > 8, "the agent holds {open} descriptors");
    set_nofile(pid, open / 2);
    let start = Instant::now();
    let mut ports = Ports(41000);
    let mut landed = 0;
    while start.elapsed() < Duration::from_secs(3) {
        // The data plane still balances (no backend was withdrawn).
        match http_session_lands_on(&lab, ports.next()) {
            Ok(_) => landed += 1,
            Err(e) => panic!("a session failed while the agent had no descriptor left: {e}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    set_nofile(pid, soft);
    thread::sleep(Duration::from_secs(1));

    let log = lab.agent_log();
    assert!(
        log.contains("could not check (the LB's own resources)"),
        "the checks saw the shortage:\n{log}"
    );
    assert!(
        !log.contains("new=down"),
        "no backend went down for the LB's own shortage:\n{log}"
    );
    assert!(landed >= 5, "sessions ran through it: {landed}");
    let report = status(&lab, &binary);
    assert!(
        report.services[0].backends.iter().all(|b| b.state == "up"),
        "every backend still up: {:?}",
        report.services[0].backends
    );
}

#[test]
fn a_taken_metrics_port_stops_the_start_with_status_2_and_nothing_attached() {
    let lab = lab();
    // Something of the host's already listens where the metrics would.
    let _holder = lab
        .spawn(
            lab.ns_lb(),
            &[
                "python3",
                "-c",
                "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',9742))\ns.listen()\ntime.sleep(60)",
            ],
        )
        .expect("holding the port");
    let start = Instant::now();
    while !lab
        .exec_ok(lab.ns_lb(), &["ss", "-ltnH", "sport = :9742"])
        .is_ok_and(|out| out.contains("9742"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the port holder never listened"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let config = write_config(&lab, "metrics:\n  listen: 0.0.0.0:9742\n");
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let err = lab
        .start_agent(&binary, &config)
        .expect_err("the agent must not start");
    let err = format!("{err:#}");
    assert!(err.contains("exit status 2"), "exits 2: {err}");
    assert!(err.contains("nothing was attached or changed"), "{err}");
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .unwrap();
    assert!(!link.contains("xdp"), "no program on eth0: {link}");
    let pins = lab.pin_dir().unwrap();
    assert!(
        !pins.exists() || fs::read_dir(&pins).unwrap().next().is_none(),
        "nothing pinned under {}",
        pins.display()
    );
}

#[test]
fn run_time_changes_obey_the_files_rules_and_refusals_leave_later_changes_working() {
    let lab = lab();
    let config = write_config(&lab, "");
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let _agent = lab
        .start_agent(&binary, &config)
        .expect("starting the agent");
    for (address, why) in [
        (Lab::VIP, "is a VIP of this file"),
        (Lab::LB_ADDR, "is one of this LB's own addresses"),
        ("10.77.0.255", "is the broadcast address of 10.77.0.0/24"),
        ("10.77.0.0", "is the network address of 10.77.0.0/24"),
        ("255.255.255.255", "is the broadcast address"),
    ] {
        let out = lab
            .agent_command(&binary, &["backend", "add", "video-hls", address])
            .expect("xdp-lb backend add");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{address} was accepted");
        assert!(stderr.contains(why), "{address}: {stderr}");
    }
    // Nothing of those was kept: a new service and a proper backend still go in.
    let service = lab.dir().join("extra.yaml");
    fs::write(
        &service,
        format!(
            "name: extra\nvip: {}\nport: 8081\nprotocol: tcp\nbackends:\n  - address: {}\n",
            Lab::VIP,
            Lab::backend_addr(0)
        ),
    )
    .unwrap();
    support::sessions::ctl_ok(
        &lab,
        &binary,
        &["service", "add", service.to_str().unwrap()],
    );
    support::sessions::ctl_ok(
        &lab,
        &binary,
        &["backend", "remove", "video-hls", &Lab::backend_addr(2)],
    );
    support::sessions::ctl_ok(
        &lab,
        &binary,
        &["backend", "add", "video-hls", &Lab::backend_addr(2)],
    );
    let report = status(&lab, &binary);
    assert_eq!(report.services.len(), 2, "{:?}", report.services);
}

/// A powered-off server on the segment: no host answers its ARP.
const SILENT_SERVER: &str = "10.77.0.60";

#[test]
fn a_silent_server_on_the_segment_stalls_neither_status_nor_another_servers_withdrawal() {
    let lab = lab();
    // The lab's servers and one more that never answers ARP (every 5 s the agent tries to
    // resolve it again, waiting up to 3 s each time).
    let config = write_config(&lab, "");
    let yaml = fs::read_to_string(&config).expect("the config");
    fs::write(&config, format!("{yaml}      - address: {SILENT_SERVER}\n"))
        .expect("adding the silent server");
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let _agent = lab
        .start_agent(&binary, &config)
        .expect("starting the agent");
    thread::sleep(Duration::from_secs(1));
    let log = lab.agent_log();
    assert!(
        log.contains(&format!("backend {SILENT_SERVER} is unreachable")),
        "the silent server is left out at start:\n{log}"
    );

    // Two re-resolution rounds and more: status is asked every 100 ms all along, and b1 dies
    // in the middle.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut killed_at = None;
    let mut down_after = None;
    let log_start = lab.agent_log().len();
    while started.elapsed() < Duration::from_secs(12) {
        let asked = Instant::now();
        let report = status(&lab, &binary);
        slowest = slowest.max(asked.elapsed());
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(5) {
            lab.stop_backend_nginx(0).expect("stopping nginx on b1");
            killed_at = Some(Instant::now());
        }
        if let (Some(killed), None) = (killed_at, down_after)
            && report.services[0]
                .backends
                .iter()
                .any(|b| b.address.to_string() == Lab::backend_addr(0) && b.state == "down")
        {
            down_after = Some(killed.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let log = lab.agent_log();
    let rounds = log[log_start..]
        .matches(&format!("backend {SILENT_SERVER} is still unreachable"))
        .count();
    eprintln!(
        "slowest status {:.0} ms over 12 s; b1 down {:?} after its nginx stopped (bound 0.8 s); \
         {rounds} log lines about the silent server meanwhile",
        slowest.as_secs_f64() * 1000.0,
        down_after
    );
    // The loop never waited on the silent server's ARP (3 s a round when it did).
    assert!(
        slowest < Duration::from_millis(1500),
        "status took {slowest:?}: the control loop waited on the network"
    );
    assert!(
        rounds >= 1,
        "the silent server was tried again during the window:\n{log}"
    );
    assert!(
        down_after.is_some(),
        "b1 was taken out while the silent server was re-resolved:\n{log}"
    );
}
