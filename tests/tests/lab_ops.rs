//! Operating a running agent in the network-namespace lab (root only), through the `xdp-lb`
//! subcommands, the metrics endpoint and the registration API, with real clients: `status`
//! shows traffic, `backend add|remove|drain|enable|weight` change where new sessions go,
//! bad changes are refused and change nothing, `lookup` predicts the backend a client port
//! reaches, a broken YAML reload changes nothing, run-time changes outlive the agent, the
//! control socket is root's only and registration needs its token.
//!
//! Every condition is waited for with a bound.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use xdp_lb::control::protocol::{BackendStatus, ServiceStatus, StatusReport};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

/// The longest any awaited condition may take.
const PATIENCE: Duration = Duration::from_secs(20);
/// The metrics endpoint, inside the LB's namespace.
const METRICS: &str = "127.0.0.1:9100";
/// The registration endpoint, on the LB's own address.
const REGISTRATION_PORT: u16 = 9180;
const TOKEN: &str = "9f2c1e7a-lab-token";

/// A lab of `backends` servers and the agent on a config naming the first `configured` of
/// them in `video-hls` (and `video-rtmp`), with `extra` top-level keys.
struct Ops {
    lab: Lab,
    binary: PathBuf,
    config: PathBuf,
    agent: Option<LabProcess>,
    /// The next fresh client port: every session is a new flow.
    next_port: u16,
}

fn config_yaml(configured: usize, extra: &str) -> String {
    let mut yaml = format!("interfaces: [eth0]\n{extra}services:\n");
    for (name, port) in [
        ("video-rtmp", Lab::RTMP_PORT),
        ("video-hls", Lab::HTTP_PORT),
    ] {
        yaml.push_str(&format!(
            "  - name: {name}\n    vip: {}\n    port: {port}\n    protocol: tcp\n    maglev_size: 65537\n    backends:\n",
            Lab::VIP
        ));
        for i in 0..configured {
            yaml.push_str(&format!("      - address: {}\n", Lab::backend_addr(i)));
        }
    }
    yaml
}

impl Ops {
    fn up(backends: usize, configured: usize, extra: &str) -> Self {
        assert!(is_root(), "the lab needs root (cargo xtask test)");
        let lab = Lab::up(LabOptions {
            backends,
            ..LabOptions::default()
        })
        .expect("bringing the lab up");
        let config = lab.dir().join("xdp-lb.yaml");
        fs::write(&config, config_yaml(configured, extra)).expect("writing the config");
        let binary = Lab::locate_agent_binary().expect("the agent binary");
        let mut ops = Self {
            lab,
            binary,
            config,
            agent: None,
            next_port: 40000,
        };
        ops.start_agent();
        ops
    }

    fn start_agent(&mut self) {
        let mark = self.lab.agent_log().len();
        self.agent = Some(
            self.lab
                .start_agent(&self.binary, &self.config)
                .expect("starting the agent"),
        );
        self.wait_log(mark, "health: checking");
    }

    fn wait_log(&self, from: usize, needle: &str) {
        wait_for(&format!("{needle:?} in the agent's log"), || {
            self.lab
                .agent_log()
                .get(from..)
                .is_some_and(|new| new.contains(needle))
                .then_some(())
        });
    }

    /// `xdp-lb ARGS --socket <the lab's socket>`.
    fn xdp_lb(&self, args: &[&str]) -> Output {
        self.lab
            .agent_command(&self.binary, args)
            .unwrap_or_else(|e| panic!("running xdp-lb {args:?}: {e:#}"))
    }

    /// A subcommand that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.xdp_lb(args);
        assert!(
            out.status.success(),
            "xdp-lb {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A subcommand that must fail; its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.xdp_lb(args);
        assert!(
            !out.status.success(),
            "xdp-lb {args:?} was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn status(&self) -> StatusReport {
        let text = self.ok(&["status", "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json: {e}: {text}"))
    }

    fn service(&self, name: &str) -> ServiceStatus {
        self.status()
            .services
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} in status"))
    }

    fn port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    /// One HTTP session through the VIP from a fresh client port: the backend (0-based)
    /// that answered.
    fn session(&mut self) -> usize {
        let port = self.port();
        self.session_from(port)
    }

    fn session_from(&self, port: u16) -> usize {
        let body = self
            .lab
            .http_get_via_vip_from_port("/", port)
            .unwrap_or_else(|e| panic!("session from client port {port}: {e:#}"));
        (0..self.lab.backends())
            .find(|&i| body.trim() == Lab::backend_name(i))
            .unwrap_or_else(|| panic!("unexpected answer {body:?}"))
    }

    /// `n` sessions: how many each backend answered.
    fn sessions(&mut self, n: usize) -> BTreeMap<usize, usize> {
        let mut answered = BTreeMap::new();
        for _ in 0..n {
            *answered.entry(self.session()).or_insert(0) += 1;
        }
        answered
    }

    /// Sessions until backend `i` answers one (at most 80).
    fn reaches(&mut self, i: usize) -> bool {
        (0..80).any(|_| self.session() == i)
    }
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "no {what} within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn backend(service: &ServiceStatus, i: usize) -> Option<&BackendStatus> {
    let address: std::net::IpAddr = Lab::backend_addr(i).parse().expect("lab address");
    service.backends.iter().find(|b| b.address == address)
}

/// Each service's backends: address, weight and state.
type Shape = Vec<(String, Vec<(String, u32, String)>)>;

/// What a refused change must leave as it was: each backend's address, weight and state.
fn shape(report: &StatusReport) -> Shape {
    report
        .services
        .iter()
        .map(|s| {
            let backends = s
                .backends
                .iter()
                .map(|b| (b.address.to_string(), b.weight, b.state.clone()))
                .collect();
            (s.name.clone(), backends)
        })
        .collect()
}

#[test]
fn status_shows_each_service_and_backend_with_counters_that_move_with_traffic() {
    let mut ops = Ops::up(3, 3, "");
    let before = ops.service("video-hls");
    assert_eq!(before.backends.len(), 3);
    assert_eq!(before.serving, 3);
    assert!(
        before
            .backends
            .iter()
            .all(|b| b.state == "up" && b.weight == 1),
        "{before:?}"
    );

    let answered = ops.sessions(20);
    let after = ops.service("video-hls");
    assert!(
        after.packets >= before.packets + 20,
        "{} -> {}",
        before.packets,
        after.packets
    );
    assert!(after.bytes > before.bytes);
    let backend_packets = |s: &ServiceStatus| s.backends.iter().map(|b| b.packets).sum::<u64>();
    assert!(backend_packets(&after) >= backend_packets(&before) + 20);
    for &i in answered.keys() {
        let b = backend(&after, i).expect("an answering backend is listed");
        assert!(b.packets > 0 && b.flows > 0, "{b:?}");
    }
    let report = ops.status();
    assert!(report.active_flows >= 20, "{}", report.active_flows);
    let tx = report
        .verdicts
        .iter()
        .find(|v| v.name == "tx")
        .expect("a tx verdict");
    assert!(tx.packets >= 20, "{tx:?}");
    // The health checks' last results show up within a few check intervals.
    let checked = wait_for("a check result for every backend", || {
        let s = ops.service("video-hls");
        s.backends
            .iter()
            .all(|b| {
                b.health
                    .as_ref()
                    .is_some_and(|h| h.last_check.as_ref().is_some_and(|c| c.ok))
            })
            .then_some(s)
    });
    assert!(checked.table_switches >= 1, "{checked:?}");

    let text = ops.ok(&["status"]);
    eprintln!("sample `xdp-lb status`:\n{text}");
    assert!(text.starts_with("xdp-lb: 2 service(s), "), "{text}");
    assert!(text.contains(&format!("TCP  {}:8080", Lab::VIP)), "{text}");
    for i in 0..3 {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("-> {}:8080", Lab::backend_addr(i))))
            .unwrap_or_else(|| panic!("no line for backend {i}:\n{text}"));
        assert!(line.contains(" up ") && line.contains("ok "), "{line}");
    }
    assert!(text.contains("Table switches:"), "{text}");
}

#[test]
fn a_backend_added_at_run_time_gets_traffic_and_a_removed_one_none() {
    let mut ops = Ops::up(4, 3, "");
    let b4 = Lab::backend_addr(3);
    let said = ops.ok(&["backend", "add", "video-hls", &b4]);
    assert!(said.contains("1 change(s)"), "{said}");
    let hls = ops.service("video-hls");
    assert_eq!(hls.backends.len(), 4);
    assert_eq!(backend(&hls, 3).map(|b| b.state.as_str()), Some("up"));
    assert!(ops.reaches(3), "b4 never answered after it was added");
    assert_eq!(
        ops.service("video-rtmp").backends.len(),
        3,
        "only video-hls changed"
    );

    ops.ok(&["backend", "remove", "video-hls", &b4]);
    let hls = ops.service("video-hls");
    assert!(backend(&hls, 3).is_none(), "{hls:?}");
    let answered = ops.sessions(30);
    assert!(
        !answered.contains_key(&3),
        "b4 answered after its removal: {answered:?}"
    );
}

#[test]
fn a_drained_backend_keeps_its_flows_gets_no_new_session_and_enable_brings_it_back() {
    // Flows are forgotten 8 s after their last packet: the drained backend's count then
    // falls to 0 within the test's patience.
    let mut ops = Ops::up(3, 3, "flow_table:\n  tcp_timeout: 8s\n");
    let answered = ops.sessions(30);
    assert!(
        answered.get(&0).is_some_and(|&n| n > 0),
        "b1 got no session to begin with: {answered:?}"
    );
    let b1 = Lab::backend_addr(0);
    let flows_before = backend(&ops.service("video-hls"), 0).expect("b1").flows;
    assert!(flows_before > 0);

    ops.ok(&["backend", "drain", "video-hls", &b1]);
    let hls = ops.service("video-hls");
    let drained = backend(&hls, 0).expect("b1 is still listed");
    assert_eq!((drained.weight, drained.state.as_str()), (0, "drain"));
    assert_eq!(
        drained.flows, flows_before,
        "its connection-table entries stay"
    );
    assert_eq!(hls.serving, 2);
    let answered = ops.sessions(30);
    assert!(
        !answered.contains_key(&0),
        "a new session reached the drained b1: {answered:?}"
    );
    // Its sessions have ended: once their idle timeout has passed, it has no flow left and
    // can be taken down.
    wait_for("the drained b1's flows to reach 0", || {
        let b = backend(&ops.service("video-hls"), 0).cloned()?;
        (b.flows == 0 && b.state == "drain").then_some(())
    });

    ops.ok(&["backend", "enable", "video-hls", &b1]);
    let enabled = ops.service("video-hls");
    assert_eq!(
        backend(&enabled, 0).map(|b| (b.weight, b.state.as_str())),
        Some((1, "up"))
    );
    assert!(ops.reaches(0), "b1 got no session after enable");

    let b2 = Lab::backend_addr(1);
    ops.ok(&["backend", "weight", "video-hls", &b2, "5"]);
    let weighted = ops.service("video-hls");
    assert_eq!(backend(&weighted, 1).map(|b| b.weight), Some(5));
    let answered = ops.sessions(40);
    let b2_share = answered.get(&1).copied().unwrap_or(0);
    assert!(
        b2_share >= 15,
        "weight 5 of 7 should take most sessions: {answered:?}"
    );
}

#[test]
fn bad_changes_are_refused_with_a_clear_error_and_change_nothing() {
    let ops = Ops::up(3, 3, "");
    let before = shape(&ops.status());
    let b1 = Lab::backend_addr(0);
    let cases: [(&[&str], &str); 6] = [
        (
            &["backend", "add", "no-such", "10.77.0.14"],
            "error: there is no service no-such",
        ),
        (
            &["backend", "weight", "video-hls", &b1, "5000"],
            "weight 5000 is out of range (0..=1000)",
        ),
        (
            &["backend", "add", "video-hls", "fd00::14"],
            "fd00::14 is not of the family of the VIP 10.77.0.100",
        ),
        (&["backend", "add", "video-hls", &b1], "already has backend"),
        (
            &["backend", "remove", "video-hls", "10.77.0.99"],
            "has no backend 10.77.0.99",
        ),
        (
            &["backend", "drain", "no-such", &b1],
            "there is no service no-such",
        ),
    ];
    for (args, expect) in cases {
        let err = ops.refused(args);
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "xdp-lb {args:?}: {err}"
        );
    }
    assert_eq!(
        shape(&ops.status()),
        before,
        "a refused change changed something"
    );
    let runtime =
        fs::read_to_string(ops.lab.dir().join("runtime-changes.json")).unwrap_or_default();
    assert!(
        !runtime.contains("10.77.0.14") && !runtime.contains("5000"),
        "{runtime}"
    );
}

#[test]
fn lookup_answers_the_backend_that_a_client_port_then_reaches() {
    let mut ops = Ops::up(3, 3, "");
    let vip = format!("{}:{}", Lab::VIP, Lab::HTTP_PORT);
    let predicted = |ops: &Ops, port: u16| {
        let client = format!("{}:{port}", Lab::CLIENT_ADDR);
        let said = ops.ok(&["lookup", &client, &vip]);
        let backend = (0..3)
            .find(|&i| said.contains(&format!(": {} (service video-hls", Lab::backend_addr(i))))
            .unwrap_or_else(|| panic!("no backend in {said:?}"));
        (backend, said)
    };
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let port = ops.port();
        let (expected, said) = predicted(&ops, port);
        assert!(said.contains("from the maglev"), "{said}");
        assert_eq!(
            ops.session_from(port),
            expected,
            "client port {port}: {said}"
        );
        let (again, said) = predicted(&ops, port);
        assert_eq!(again, expected);
        assert!(said.contains("from the connection table"), "{said}");
        seen.insert(expected);
    }
    assert!(seen.len() > 1, "12 ports all went to one backend: {seen:?}");
    let err = ops.refused(&["lookup", "10.77.0.2:1000", "10.77.0.100:9999"]);
    assert!(err.contains("no service at 10.77.0.100:9999/tcp"), "{err}");
}

#[test]
fn reload_of_a_broken_yaml_changes_nothing_and_says_why() {
    let mut ops = Ops::up(3, 3, "");
    let before = shape(&ops.status());
    let good = fs::read_to_string(&ops.config).expect("the config");
    let broken = good.replace("maglev_size: 65537", "maglev_size: 65536");
    fs::write(&ops.config, broken).expect("writing the broken config");
    let err = ops.refused(&["reload"]);
    assert!(err.contains("reload refused, nothing changed"), "{err}");
    assert!(err.contains("maglev_size: 65536 is not prime"), "{err}");
    assert!(
        err.contains(&format!("{}:", ops.config.display())),
        "names the file: {err}"
    );
    assert_eq!(shape(&ops.status()), before);
    ops.sessions(5);

    // Fixed, with a fourth address weighted 2: applied.
    fs::write(
        &ops.config,
        good.replacen(
            "      - address: 10.77.0.13\n",
            "      - address: 10.77.0.13\n        weight: 2\n",
            2,
        ),
    )
    .expect("writing the fixed config");
    let said = ops.ok(&["reload"]);
    assert!(said.contains("reload applied: 2 change(s)"), "{said}");
    assert_eq!(
        backend(&ops.service("video-hls"), 2).map(|b| b.weight),
        Some(2)
    );
}

#[test]
fn a_refused_reload_keeps_the_saved_run_time_changes() {
    let ops = Ops::up(3, 3, "");
    let b1 = Lab::backend_addr(0);
    ops.ok(&["backend", "drain", "video-hls", &b1]);
    let changes = ops.lab.runtime_file_path();
    let saved = fs::read_to_string(&changes).expect("the change file");
    assert!(saved.contains(&b1), "{saved}");
    // A file that drops b1 from video-hls (making the drain moot) and changes a setting
    // fixed at load: refused, so nothing changes, the saved drain included.
    let good = fs::read_to_string(&ops.config).expect("the config");
    let refused = format!(
        "flow_hash_seed: 7\n{}",
        good.replacen(&format!("      - address: {b1}\n"), "", 2)
    );
    fs::write(&ops.config, refused).expect("writing the config");
    let err = ops.refused(&["reload"]);
    assert!(err.contains("flow_hash_seed"), "{err}");
    assert_eq!(
        fs::read_to_string(&changes).expect("the change file"),
        saved,
        "a refused reload rewrote the run-time changes"
    );
    // Back to the original file: the drain is still in force.
    fs::write(&ops.config, good).expect("writing the config");
    ops.ok(&["reload"]);
    assert_eq!(
        backend(&ops.service("video-hls"), 0).map(|b| (b.weight, b.state.clone())),
        Some((0, "drain".to_owned()))
    );
}

#[test]
fn run_time_changes_outlive_the_agent_that_made_them() {
    let mut ops = Ops::up(4, 3, "");
    let (b1, b4) = (Lab::backend_addr(0), Lab::backend_addr(3));
    ops.ok(&["backend", "add", "video-hls", &b4, "--weight", "3"]);
    ops.ok(&["backend", "drain", "video-hls", &b1]);
    let saved =
        fs::read_to_string(ops.lab.dir().join("runtime-changes.json")).expect("the change file");
    assert!(saved.contains(&b4) && saved.contains(&b1), "{saved}");

    // SIGTERM detaches and exits; the change file stays for the next agent.
    let status = ops
        .agent
        .take()
        .expect("the first agent")
        .kill()
        .expect("stopping the agent");
    assert!(status.success(), "the agent exited with {status:?}");
    let mark = ops.lab.agent_log().len();
    ops.start_agent();
    ops.wait_log(mark, "run-time change(s) from");
    let hls = ops.service("video-hls");
    assert_eq!(backend(&hls, 3).map(|b| b.weight), Some(3), "{hls:?}");
    assert_eq!(
        backend(&hls, 0).map(|b| (b.weight, b.state.as_str())),
        Some((0, "drain"))
    );
    assert!(ops.reaches(3), "the re-added b4 gets traffic");
    let answered = ops.sessions(20);
    assert!(
        !answered.contains_key(&0),
        "the drained b1 got a session: {answered:?}"
    );
}

/// One sample of the exposition: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses OpenMetrics text strictly enough for the test: every line a comment (`# TYPE`,
/// `# HELP`, `# UNIT`, `# EOF` last) or `name{labels} value`, every sample of a family
/// that has a TYPE line.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the exposition ends with # EOF"
    );
    for line in &lines {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    types.insert(name.to_owned(), kind.to_owned());
                }
                (Some("HELP" | "UNIT"), Some(_), _) | (Some("EOF"), None, None) => {}
                _ => panic!("unknown comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let labels = inner
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label in {line:?}"));
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (
                            k.to_owned(),
                            v.unwrap_or_else(|| panic!("unquoted label in {line:?}"))
                                .to_owned(),
                        )
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        let family = types
            .keys()
            .find(|f| name == f.as_str() || name.strip_suffix("_total") == Some(f.as_str()))
            .unwrap_or_else(|| panic!("no TYPE line for {name}"));
        if name.ends_with("_total") {
            assert_eq!(types[family], "counter", "{name}");
        }
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

#[test]
fn the_metrics_endpoint_serves_prometheus_text_whose_counters_move_with_traffic() {
    let mut ops = Ops::up(3, 3, &format!("metrics:\n  listen: {METRICS}\n"));
    let scrape = |ops: &Ops| {
        let text = ops
            .lab
            .exec_ok(
                ops.lab.ns_lb(),
                &[
                    "curl",
                    "-sS",
                    "--fail",
                    "--max-time",
                    "5",
                    &format!("http://{METRICS}/metrics"),
                ],
            )
            .expect("scraping the metrics");
        parse_exposition(&text)
    };
    let hls = [("service", "video-hls")];
    let before = scrape(&ops);
    let packets_before =
        value(&before, "xdp_lb_service_packets_total", &hls).expect("video-hls packets");
    let tx_before = value(
        &before,
        "xdp_lb_verdict_packets_total",
        &[("verdict", "tx")],
    )
    .expect("tx");
    ops.sessions(15);
    let after = scrape(&ops);
    let packets_after =
        value(&after, "xdp_lb_service_packets_total", &hls).expect("video-hls packets");
    assert!(
        packets_after >= packets_before + 15.0,
        "{packets_before} -> {packets_after}"
    );
    assert!(
        value(&after, "xdp_lb_verdict_packets_total", &[("verdict", "tx")]).unwrap_or(0.0)
            >= tx_before + 15.0
    );
    assert!(value(&after, "xdp_lb_active_flows", &[]).unwrap_or(0.0) >= 15.0);
    assert!(value(&after, "xdp_lb_flow_events_total", &[("event", "new")]).unwrap_or(0.0) >= 15.0);
    let per_backend: f64 = (0..3)
        .filter_map(|i| {
            value(
                &after,
                "xdp_lb_backend_packets_total",
                &[("service", "video-hls"), ("backend", &Lab::backend_addr(i))],
            )
        })
        .sum();
    assert!(per_backend >= 15.0, "{per_backend}");
    for i in 0..3 {
        let b = Lab::backend_addr(i);
        let labels = [("service", "video-hls"), ("backend", b.as_str())];
        assert_eq!(value(&after, "xdp_lb_backend_up", &labels), Some(1.0));
        let mut up = labels.to_vec();
        up.push(("state", "up"));
        assert_eq!(value(&after, "xdp_lb_backend_state", &up), Some(1.0));
        assert!(value(&after, "xdp_lb_backend_flows", &labels).is_some());
    }
    assert!(value(&after, "xdp_lb_table_switches_total", &hls).unwrap_or(0.0) >= 1.0);
    let checked = wait_for("check durations in the metrics", || {
        let now = scrape(&ops);
        value(
            &now,
            "xdp_lb_backend_check_duration_seconds",
            &[("service", "video-hls")],
        )
        .map(|_| now)
    });
    assert!(
        value(
            &checked,
            "xdp_lb_backend_check_success",
            &[("service", "video-hls")]
        )
        .is_some()
    );
    // A scrape changes nothing in the checks, so it logs nothing about them: the checks
    // were logged once, when the agent started.
    let log = ops.lab.agent_log();
    assert_eq!(log.matches("health: checking").count(), 1, "{log}");
    // The agent's own series: its build, its start, the file in force and its reloads.
    let reloads = |samples: &[Sample], result: &str| {
        value(
            samples,
            "xdp_lb_config_reloads_total",
            &[("result", result)],
        )
    };
    assert_eq!(reloads(&checked, "applied"), Some(0.0));
    assert!(value(&checked, "xdp_lb_start_time_seconds", &[]).is_some_and(|t| t > 1.7e9));
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(value(&checked, "xdp_lb_build_info", &version), Some(1.0));
    ops.ok(&["reload"]);
    let reloaded = scrape(&ops);
    assert_eq!(reloads(&reloaded, "applied"), Some(1.0));
    assert!(
        value(
            &reloaded,
            "xdp_lb_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .is_some()
    );
    let other = ops
        .lab
        .exec(
            ops.lab.ns_lb(),
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{METRICS}/other"),
            ],
        )
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&other.stdout), "404");
}

#[test]
fn the_control_socket_refuses_a_user_other_than_root() {
    let ops = Ops::up(1, 1, "");
    // A copy of the binary that uid 65534 can run (the build directory may not be open).
    let dir = std::env::temp_dir().join(format!("xdp-lb-ops-nobody-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a directory for the copy");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join("xdp-lb");
    fs::copy(&ops.binary, &copy).expect("copying the binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = ops.lab.control_socket();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .expect("running setpriv");
    let _ = fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "uid 65534 got the status: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains(&format!(
            "{}: permission denied: the control socket is root's",
            socket.display()
        )),
        "{err}"
    );
    // Root still gets it.
    assert_eq!(ops.status().services.len(), 2);
}

/// `curl` from the client to the registration endpoint: the status code and the body.
fn register(
    ops: &Ops,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let url = format!("http://{}:{REGISTRATION_PORT}{path}", Lab::LB_ADDR);
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(auth) = &auth {
        args.extend(["-H", auth.as_str()]);
    }
    if let Some(body) = body {
        args.extend([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    args.push(&url);
    let out = ops.lab.exec_ok(ops.lab.ns_client(), &args).expect("curl");
    let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
    (
        code.parse()
            .unwrap_or_else(|_| panic!("no status in {out:?}")),
        body.to_owned(),
    )
}

#[test]
fn registration_needs_the_token_and_the_backend_it_adds_gets_traffic() {
    let token_file = std::env::temp_dir().join(format!("xdp-lb-ops-token-{}", std::process::id()));
    fs::write(&token_file, format!("{TOKEN}\n")).expect("the token file");
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).expect("chmod");
    let _remove = Remove(token_file.clone());
    let extra = format!(
        "registration:\n  listen: {}:{REGISTRATION_PORT}\n  token_file: {}\n",
        Lab::LB_ADDR,
        token_file.display()
    );
    let mut ops = Ops::up(4, 3, &extra);
    let b4 = Lab::backend_addr(3);
    let body = format!(r#"{{"address":"{b4}","weight":1}}"#);
    let path = "/v1/services/video-hls/backends";
    let before = shape(&ops.status());

    for token in [None, Some("wrong-token")] {
        let (code, answer) = register(&ops, "POST", path, token, Some(&body));
        assert_eq!(code, 401, "{token:?}: {answer}");
        assert!(answer.contains(r#""result":"error""#), "{answer}");
    }
    assert_eq!(
        shape(&ops.status()),
        before,
        "a refused registration changed something"
    );

    let (code, answer) = register(&ops, "POST", path, Some(TOKEN), Some("{not json"));
    assert_eq!(code, 400, "{answer}");
    let (code, answer) = register(
        &ops,
        "POST",
        "/v1/services/no-such/backends",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(code, 422, "{answer}");
    assert!(answer.contains("there is no service no-such"), "{answer}");
    let (code, _) = register(&ops, "GET", "/v1/other", Some(TOKEN), None);
    assert_eq!(code, 404);

    let (code, answer) = register(&ops, "POST", path, Some(TOKEN), Some(&body));
    assert_eq!(code, 201, "{answer}");
    assert!(answer.contains(r#""result":"ok""#), "{answer}");
    assert!(backend(&ops.service("video-hls"), 3).is_some());
    assert!(ops.reaches(3), "the registered b4 never answered");

    let (code, answer) = register(&ops, "DELETE", &format!("{path}/{b4}"), Some(TOKEN), None);
    assert_eq!(code, 200, "{answer}");
    assert!(backend(&ops.service("video-hls"), 3).is_none());
}

/// Removes a file when dropped.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
