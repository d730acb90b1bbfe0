//! The agent as a systemd service: the shipped unit is one systemd accepts, and the agent
//! speaks the service protocol (root only for the lab part): READY once it is attached
//! with its listeners bound, RELOADING and READY around a reload, the watchdog fed from
//! its control loop, STOPPING on the way out.

mod support;

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use support::stream::rtmp_config;
use xdp_lb_tests::{Lab, LabOptions, is_root};

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
}

#[test]
fn systemd_accepts_the_shipped_unit_file() {
    let unit = std::fs::read_to_string(repository().join("examples/xdp-lb.service"))
        .expect("the unit file");
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("xdp-lb.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/sbin/xdp-lb", &binary.to_string_lossy()),
    )
    .expect("writing the unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (cargo xtask deps installs systemd)");
    let said = String::from_utf8_lossy(&out.stderr);
    // Unknown keys or bad values are warnings, not failures: none is allowed.
    let about_the_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("xdp-lb.service"))
        .collect();
    assert!(
        out.status.success() && about_the_unit.is_empty(),
        "systemd-analyze verify: {said}"
    );
    for needed in [
        "Type=notify",
        "ExecReload=/",
        "WatchdogSec=",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
}

/// Everything the agent told the socket, one message per entry.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    /// Waits (20 s at most) for a message containing `needle` among those from the
    /// `from`-th on; its index.
    fn wait_for(&mut self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = self.seen[from.min(self.seen.len())..]
                .iter()
                .position(|m| m.contains(needle))
            {
                return from + i;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from the agent; it said {:?}",
                self.seen
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.seen.iter().filter(|m| m.contains(needle)).count()
    }
}

#[test]
fn the_agent_tells_systemd_it_is_ready_once_attached_reloads_feeds_the_watchdog_and_stops() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        backends: 2,
        ..LabOptions::default()
    })
    .expect("lab");
    let config = lab.dir().join("xdp-lb.yaml");
    std::fs::write(&config, rtmp_config(&[(0, 1), (1, 1)], "")).expect("config");
    let path = lab.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let mut heard = Notifications {
        socket,
        seen: Vec::new(),
    };
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let sock = path.to_string_lossy().into_owned();
    let mut agent = lab
        .start_agent_with_env(
            &binary,
            &config,
            &[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", "1000000")],
        )
        .expect("agent");

    let at = heard.wait_for(0, "READY=1");
    let ready = &heard.seen[at];
    assert!(
        ready.contains("STATUS=serving 1 service(s) on eth0 with 2 backend(s)"),
        "{ready:?}"
    );
    assert!(
        heard.seen[..at]
            .iter()
            .any(|m| m.contains("STATUS=loading")),
        "says what it does before it is ready: {:?}",
        heard.seen
    );
    // Ready means attached and answering.
    let link = lab
        .exec_ok(lab.ns_lb(), &["ip", "link", "show", "eth0"])
        .unwrap();
    assert!(link.contains("xdp"), "{link}");
    let status = lab.agent_command(&binary, &["status"]).expect("status");
    assert!(status.status.success());

    // The watchdog is fed from the loop, every half period (500 ms here).
    let fed = heard.count("WATCHDOG=1");
    let mark = heard.seen.len();
    let second = heard.wait_for(mark, "WATCHDOG=1");
    heard.wait_for(second + 1, "WATCHDOG=1");
    assert!(heard.count("WATCHDOG=1") >= fed + 2, "{:?}", heard.seen);

    let mark = heard.seen.len();
    let out = lab.agent_command(&binary, &["reload"]).expect("reload");
    assert!(out.status.success(), "{out:?}");
    let reloading = heard.wait_for(mark, "RELOADING=1");
    heard.wait_for(reloading + 1, "READY=1");

    agent.signal(libc::SIGTERM).expect("SIGTERM");
    let mark = heard.seen.len();
    heard.wait_for(mark, "STOPPING=1");
    agent
        .wait_with_timeout(Duration::from_secs(10))
        .expect("the agent stopped");
}
