//! The data-plane audit in the lab (root only). An agent whose maps hold what it wrote says
//! so; a map changed behind its back with `bpftool` (a service's key deleted, a backend's
//! MAC rewritten) shows in `status` (a `DRIFT:` banner, exit status 3, the `drift` array of
//! `--json`), in the metrics, and once in the agent's log however many audits see it. Put
//! back by hand, the drift clears (logged once); a restart of the agent repairs it. An agent
//! that adopts the data plane after `kill -9` finds it as it means it.
//!
//! Every condition is waited for with a bound.

use std::{
    path::PathBuf,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use xdp_lb::{
    audit::AUDIT_INTERVAL, control::protocol::StatusReport, dataplane::SERVICE_CACHE_REFRESH,
};
use xdp_lb_common::{BackendValue, PROTO_TCP, ServiceKey, map_names};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

/// The longest any awaited condition may take.
const PATIENCE: Duration = Duration::from_secs(20);
/// The metrics endpoint, inside the LB's namespace.
const METRICS: &str = "127.0.0.1:9100";
/// `xdp-lb status`'s exit status when the data plane drifted.
const EXIT_DRIFT: i32 = 3;
/// The MAC written over a backend's behind the agent's back.
const FOREIGN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const RTMP_DRIFT: &str =
    "DRIFT: service video-rtmp 10.77.0.100:1935/tcp: key missing from service_by_vip";

fn config_yaml() -> String {
    let mut yaml = format!("interfaces: [eth0]\nmetrics:\n  listen: {METRICS}\nservices:\n");
    for (name, port) in [
        ("video-rtmp", Lab::RTMP_PORT),
        ("video-hls", Lab::HTTP_PORT),
    ] {
        yaml.push_str(&format!(
            "  - name: {name}\n    vip: {}\n    port: {port}\n    protocol: tcp\n    maglev_size: 251\n    backends:\n",
            Lab::VIP
        ));
        for i in 0..2 {
            yaml.push_str(&format!("      - address: {}\n", Lab::backend_addr(i)));
        }
    }
    yaml
}

struct Audited {
    lab: Lab,
    binary: PathBuf,
    config: PathBuf,
    maps: PathBuf,
}

impl Audited {
    /// A lab of two backends with the agent running on `config_yaml()`.
    fn up() -> (Self, LabProcess) {
        assert!(is_root(), "the lab needs root (cargo xtask test)");
        let lab = Lab::up(LabOptions {
            backends: 2,
            ..LabOptions::default()
        })
        .expect("lab");
        let config = lab.dir().join("xdp-lb.yaml");
        std::fs::write(&config, config_yaml()).expect("config");
        let binary = Lab::locate_agent_binary().expect("agent binary");
        let agent = lab.start_agent(&binary, &config).expect("agent");
        let maps = lab.pin_dir().expect("pin dir").join("maps");
        let t = Self {
            lab,
            binary,
            config,
            maps,
        };
        (t, agent)
    }

    /// `xdp-lb status ARGS`: its exit status and stdout.
    fn status(&self, args: &[&str]) -> (i32, String) {
        let mut argv = vec!["status"];
        argv.extend_from_slice(args);
        let out: Output = self
            .lab
            .agent_command(&self.binary, &argv)
            .expect("running xdp-lb status");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == EXIT_DRIFT,
            "status failed ({code}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, stdout)
    }

    fn report(&self) -> (i32, StatusReport) {
        let (code, text) = self.status(&["--json"]);
        let report = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (code, report)
    }

    /// `xdp_lb_dataplane_drift` as the metrics endpoint serves it now.
    fn drift_metric(&self) -> f64 {
        let url = format!("http://{METRICS}/metrics");
        let text = self
            .lab
            .exec_ok(
                self.lab.ns_lb(),
                &["curl", "-sS", "--fail", "--max-time", "5", &url],
            )
            .expect("scraping the metrics");
        assert!(
            text.contains("\nxdp_lb_dataplane_audit_last_run_timestamp_seconds "),
            "{text}"
        );
        text.lines()
            .find_map(|l| l.strip_prefix("xdp_lb_dataplane_drift "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no xdp_lb_dataplane_drift in {text}"))
    }

    /// `bpftool ARGS` in the LB's namespace, which must succeed; its stdout.
    fn bpftool(&self, args: &[&str]) -> String {
        let mut argv = vec!["bpftool"];
        argv.extend_from_slice(args);
        self.lab
            .exec_ok(self.lab.ns_lb(), &argv)
            .unwrap_or_else(|e| panic!("{argv:?}: {e:#}"))
    }

    fn map(&self, name: &str) -> String {
        self.maps.join(name).to_string_lossy().into_owned()
    }

    /// The value bytes of `key` in the pinned map `name` (`None`: no such key).
    fn lookup(&self, name: &str, key: &[u8]) -> Option<Vec<u8>> {
        let map = self.map(name);
        let mut argv = vec![
            "bpftool", "-j", "map", "lookup", "pinned", &map, "key", "hex",
        ];
        let key = hex(key);
        argv.extend(key.iter().map(String::as_str));
        let out = self.lab.exec(self.lab.ns_lb(), &argv).expect("bpftool");
        if !out.status.success() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
        let value = json["value"]
            .as_array()
            .unwrap_or_else(|| panic!("no raw value (BTF?) in {json}"));
        Some(
            value
                .iter()
                .map(|b| {
                    let b = b.as_str().expect("a hex byte");
                    u8::from_str_radix(b.trim_start_matches("0x"), 16).expect("a hex byte")
                })
                .collect(),
        )
    }

    fn update(&self, name: &str, key: &[u8], value: &[u8]) {
        let map = self.map(name);
        let (key, value) = (hex(key), hex(value));
        let mut argv = vec!["map", "update", "pinned", &map, "key", "hex"];
        argv.extend(key.iter().map(String::as_str));
        argv.extend(["value", "hex"]);
        argv.extend(value.iter().map(String::as_str));
        self.bpftool(&argv);
    }

    fn delete(&self, name: &str, key: &[u8]) {
        let map = self.map(name);
        let key = hex(key);
        let mut argv = vec!["map", "delete", "pinned", &map, "key", "hex"];
        argv.extend(key.iter().map(String::as_str));
        self.bpftool(&argv);
    }

    /// Lines of the agent's log at `level` about the drift.
    fn drift_log(&self, level: &str) -> Vec<String> {
        self.lab
            .agent_log()
            .lines()
            .filter(|l| l.contains(level) && l.contains("data plane drift"))
            .map(str::to_owned)
            .collect()
    }
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A map key's or value's bytes as the kernel holds them.
fn bytes_of<T: aya::Pod>(value: &T) -> Vec<u8> {
    // SAFETY: a Pod type is plain bytes; reading `size_of::<T>()` of them from a reference
    // stays in bounds.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// Whether a TCP connection from the client to the VIP's RTMP port is accepted (only a
/// backend's nginx listens there).
fn rtmp_connects(lab: &Lab) -> bool {
    let script = format!("exec 3<>/dev/tcp/{}/{}", Lab::VIP, Lab::RTMP_PORT);
    lab.exec_ok(lab.ns_client(), &["timeout", "5", "bash", "-c", &script])
        .is_ok()
}

#[test]
fn a_map_changed_behind_the_agent_s_back_is_drift_in_status_metrics_and_once_in_the_log() {
    let (t, mut agent) = Audited::up();

    // In agreement: no banner, exit 0, an empty drift array, a zero gauge.
    let (code, text) = t.status(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("DRIFT"), "{text}");
    let (code, report) = t.report();
    assert_eq!((code, report.drift.len()), (0, 0), "{:?}", report.drift);
    assert!(report.audit_last_run_ms.is_some());
    assert_eq!(t.drift_metric(), 0.0);
    assert!(rtmp_connects(&t.lab), "video-rtmp is balanced");

    // Behind the agent's back: video-rtmp's key goes, and b1's entry (of one service) gets
    // another MAC.
    let rtmp_key = bytes_of(&ServiceKey::new(
        Lab::VIP.parse().unwrap(),
        Lab::RTMP_PORT,
        PROTO_TCP,
    ));
    let b1_mac = b1_mac();
    let (b1_id, b1_entry) = (0u32..8)
        .find_map(|id| {
            let entry = t.lookup(map_names::BACKENDS, &id.to_ne_bytes())?;
            let mac = std::mem::offset_of!(BackendValue, mac);
            (entry[mac..mac + 6] == b1_mac).then_some((id, entry))
        })
        .expect("an entry with b1's MAC");
    let rtmp_value = t
        .lookup(map_names::SERVICE_BY_VIP, &rtmp_key)
        .expect("video-rtmp's key is in service_by_vip");
    t.delete(map_names::SERVICE_BY_VIP, &rtmp_key);
    let mut rewritten = b1_entry.clone();
    let mac = std::mem::offset_of!(BackendValue, mac);
    rewritten[mac..mac + 6].copy_from_slice(&FOREIGN_MAC);
    t.update(map_names::BACKENDS, &b1_id.to_ne_bytes(), &rewritten);
    // Each CPU's cache of services still holds the key until the agent's next refresh of
    // it (every SERVICE_CACHE_REFRESH), which it does not know has come about.
    let deadline = Instant::now() + SERVICE_CACHE_REFRESH * 3;
    while rtmp_connects(&t.lab) {
        assert!(
            Instant::now() < deadline,
            "with its key gone, video-rtmp is the LB host's, which does not listen there, within {:?}",
            SERVICE_CACHE_REFRESH * 3
        );
        thread::sleep(Duration::from_millis(100));
    }

    // `status` audits afresh: the banner names both differences at once.
    let (code, text) = t.status(&[]);
    assert_eq!(code, EXIT_DRIFT, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("DRIFT: the data plane differs from the agent's intent in 2 place(s)"),
        "{text}"
    );
    assert!(lines.contains(&RTMP_DRIFT), "{text}");
    let b1_drift = format!(
        "(id {b1_id}): backends entry differs: mac 02:00:00:00:00:99 (agent: {})",
        Lab::backend_mac(0)
    );
    assert!(
        lines.iter().any(|l| l.starts_with("DRIFT: backend 10.77.0.11 of video-")
            && l.ends_with(&b1_drift)),
        "{text}"
    );
    let (code, report) = t.report();
    assert_eq!(code, EXIT_DRIFT);
    let maps: Vec<&str> = report.drift.iter().map(|d| d.map.as_str()).collect();
    assert_eq!(maps, ["backends", "service_by_vip"], "{:?}", report.drift);
    assert_eq!(t.drift_metric(), 2.0);

    // Several audit periods (and status requests) later, each difference was logged once.
    let settle = AUDIT_INTERVAL * 3 + AUDIT_INTERVAL / 2;
    let until = Instant::now() + settle;
    while Instant::now() < until {
        t.status(&[]);
        thread::sleep(Duration::from_secs(2));
    }
    let warned = t.drift_log("WARN");
    assert_eq!(warned.len(), 2, "{warned:#?}");
    assert_eq!(
        warned
            .iter()
            .filter(|l| l.contains("key missing from service_by_vip"))
            .count(),
        1,
        "{warned:#?}"
    );
    assert!(t.drift_log("INFO").is_empty());

    // Put back by hand: the next audit sees agreement, and says so once.
    t.update(map_names::SERVICE_BY_VIP, &rtmp_key, &rtmp_value);
    t.update(map_names::BACKENDS, &b1_id.to_ne_bytes(), &b1_entry);
    let cleared = || {
        let info = t.drift_log("INFO");
        info.iter().filter(|l| l.contains("cleared")).count()
    };
    wait_for("the drift clearing in the log", || {
        (cleared() > 0).then_some(())
    });
    thread::sleep(AUDIT_INTERVAL * 2);
    assert_eq!(cleared(), 1, "{:#?}", t.drift_log("INFO"));
    assert_eq!(t.drift_log("WARN").len(), 2, "nothing new");
    let (code, text) = t.status(&[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(t.drift_metric(), 0.0);
    assert!(rtmp_connects(&t.lab));

    // The audit does not repair; a restart of the agent does, the flow-keeping one
    // (`systemctl restart`: SIGQUIT, then a new agent adopting the data plane) too: the
    // new agent rewrites every key, entry and table it owns.
    t.delete(map_names::SERVICE_BY_VIP, &rtmp_key);
    t.update(map_names::BACKENDS, &b1_id.to_ne_bytes(), &rewritten);
    assert_eq!(t.status(&[]).0, EXIT_DRIFT);
    thread::sleep(AUDIT_INTERVAL);
    assert_eq!(
        t.status(&[]).0,
        EXIT_DRIFT,
        "still drifted: nothing repairs it"
    );
    agent.signal(libc::SIGQUIT).expect("SIGQUIT");
    agent
        .wait_with_timeout(Duration::from_secs(10))
        .expect("the agent stopped");
    let _agent = t
        .lab
        .start_agent(&t.binary, &t.config)
        .expect("restarted agent");
    let (code, text) = t.status(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(rtmp_connects(&t.lab), "video-rtmp is balanced again");
}

/// Backend b1's MAC as bytes.
fn b1_mac() -> [u8; 6] {
    let text = Lab::backend_mac(0);
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("a lab MAC");
    }
    mac
}

#[test]
fn an_agent_adopting_the_data_plane_after_kill_9_finds_no_drift() {
    let (t, mut first) = Audited::up();
    assert_eq!(t.status(&[]).0, 0);

    first.signal(libc::SIGKILL).expect("kill -9");
    first
        .wait_with_timeout(Duration::from_secs(10))
        .expect("the agent died");
    let _second = t
        .lab
        .start_agent(&t.binary, &t.config)
        .expect("second agent");
    assert!(t.lab.agent_log().contains("adopted the data plane"));
    let (code, text) = t.status(&[]);
    assert_eq!(code, 0, "{text}");
    thread::sleep(AUDIT_INTERVAL + AUDIT_INTERVAL / 2);
    assert!(t.drift_log("WARN").is_empty(), "{:#?}", t.drift_log("WARN"));
    assert!(rtmp_connects(&t.lab));
}

#[test]
fn a_new_mac_of_the_lbs_interface_is_followed_without_a_restart() {
    let (t, _agent) = Audited::up();
    assert!(rtmp_connects(&t.lab));
    // The LB's interface takes another MAC (a bond failing over, an operator), and the
    // client learns it at its next ARP.
    t.lab
        .exec_ok(
            t.lab.ns_lb(),
            &["ip", "link", "set", "eth0", "address", "02:77:00:00:00:fe"],
        )
        .expect("a new MAC");
    t.lab
        .exec_ok(t.lab.ns_client(), &["ip", "neigh", "flush", "dev", "eth0"])
        .expect("flushing the client's ARP cache");
    // Until the agent reads the interface again, frames to the new MAC are not balanced
    // (the LB host refuses them); then they are, with no restart.
    wait_for("an RTMP connection to the LB's new MAC", || {
        rtmp_connects(&t.lab).then_some(())
    });
    let (code, text) = t.status(&[]);
    assert_eq!(code, 0, "local_macs as the agent means it: {text}");
}
