//! Health checks and failover in the network-namespace lab (root only), against real nginx
//! servers: a server that dies stops getting new sessions and comes back when it recovers,
//! the rtmp and http checks catch what a TCP connect does not, the notify command runs
//! with the change and never holds checking up, backups and the fallback pool stand in.
//!
//! Every condition is waited for with a generous bound; how fast a death is detected is
//! measured by the benchmarks, not asserted here.

mod support;

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use support::sessions::http_session_lands_on as session;
use xdp_lb::{config::DEFAULT_FLOW_HASH_SEED, maglev};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

/// The longest any awaited state change may take.
const PATIENCE: Duration = Duration::from_secs(20);

fn lab(backends: usize) -> Lab {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    Lab::up(LabOptions {
        backends,
        ..LabOptions::default()
    })
    .expect("bringing the lab up")
}

/// Writes `yaml` as the agent's config in the lab directory and starts the agent on it.
fn start_agent(lab: &Lab, yaml: &str) -> LabProcess {
    let path = lab.dir().join("xdp-lb.yaml");
    fs::write(&path, yaml).expect("writing the config");
    let binary = Lab::locate_agent_binary().expect("the agent binary");
    let agent = lab.start_agent(&binary, &path).expect("starting the agent");
    wait_log(lab, 0, "health: checking");
    agent
}

/// An HLS service on the VIP (port 8080) with `extra` service keys (indented by 4) and the
/// backends `primaries` (0-based) each with its own `backend_keys`.
fn hls_config(extra: &str, primaries: &[usize], backend_keys: &dyn Fn(usize) -> String) -> String {
    let mut yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: video-hls\n    vip: {}\n    port: {}\n    protocol: tcp\n{extra}    backends:\n",
        Lab::VIP,
        Lab::HTTP_PORT
    );
    for &i in primaries {
        yaml.push_str(&format!(
            "      - address: {}\n{}",
            Lab::backend_addr(i),
            backend_keys(i)
        ));
    }
    yaml
}

/// Waits until the agent's log, from byte `from` on, contains `needle`; the log's length
/// then.
fn wait_log(lab: &Lab, from: usize, needle: &str) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = lab.agent_log();
        if log.get(from..).is_some_and(|new| new.contains(needle)) {
            return log.len();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the agent's log within {PATIENCE:?}:\n{log}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The log line fragment of backend `i` of video-hls changing state.
fn change(i: usize, role: &str, old: &str, new: &str) -> String {
    format!(
        "service=video-hls backend={} role={role} old={old} new={new}",
        Lab::backend_addr(i)
    )
}

/// Which backend (0-based) the data plane gives a new flow: the flow hash over a Maglev
/// table of the given backends, computed apart from the agent.
struct Predictor {
    members: Vec<usize>,
    table: Vec<u32>,
}

impl Predictor {
    const SIZE: u32 = 65537;

    fn new(members: &[usize]) -> Self {
        let keys: Vec<Vec<u8>> = members
            .iter()
            .map(|&i| {
                Lab::backend_addr(i)
                    .parse::<std::net::Ipv4Addr>()
                    .unwrap()
                    .octets()
                    .to_vec()
            })
            .collect();
        let backends: Vec<maglev::MaglevBackend<'_>> = keys
            .iter()
            .enumerate()
            .map(|(id, key)| maglev::MaglevBackend {
                id: id as u32,
                key,
                weight: 1,
            })
            .collect();
        Self {
            members: members.to_vec(),
            table: maglev::build_table(&backends, Self::SIZE),
        }
    }

    fn backend(&self, client_port: u16) -> usize {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let hash = xdp_lb_common::flow_hash(
            ip(Lab::CLIENT_ADDR),
            client_port,
            ip(Lab::VIP),
            Lab::HTTP_PORT,
            xdp_lb_common::PROTO_TCP,
            DEFAULT_FLOW_HASH_SEED,
        )
        .expect("one family");
        self.members[self.table[(hash % Self::SIZE) as usize] as usize]
    }
}

/// Fresh client source ports: every session is a new flow.
struct Ports(u16);

impl Ports {
    fn next(&mut self) -> u16 {
        self.0 += 1;
        self.0
    }
}

/// Opens `n` sessions; each must be answered by the backend `expect` names for its port.
fn sessions_land(
    lab: &Lab,
    ports: &mut Ports,
    n: usize,
    expect: &dyn Fn(u16) -> usize,
) -> BTreeMap<usize, usize> {
    let mut answered = BTreeMap::new();
    for _ in 0..n {
        let port = ports.next();
        let got =
            session(lab, port).unwrap_or_else(|e| panic!("session from port {port} failed: {e}"));
        assert_eq!(got, expect(port), "session from client port {port}");
        *answered.entry(got).or_insert(0) += 1;
    }
    answered
}

#[test]
fn a_backend_whose_nginx_stops_gets_no_new_session_none_to_the_others_fails_and_it_returns_when_started()
 {
    let mut lab = lab(3);
    // The default check: a TCP connect to the service port every second, fall 2, rise 3.
    let _agent = start_agent(&lab, &hls_config("", &[0, 1, 2], &|_| String::new()));
    let all = Predictor::new(&[0, 1, 2]);
    let without_b1 = Predictor::new(&[1, 2]);
    let mut ports = Ports(46000);
    sessions_land(&lab, &mut ports, 20, &|p| all.backend(p));

    // Stop b1 while sessions keep being opened. A new session to b1 between its stop and
    // its withdrawal is refused by b1's kernel (a direct-return balancer cannot retry a
    // SYN); sessions to the others must all succeed throughout.
    let mark = lab.agent_log().len();
    lab.quit_backend_nginx(0).expect("nginx -s quit on b1");
    let down = change(0, "primary", "up", "down");
    let deadline = Instant::now() + PATIENCE;
    let mut refused_to_b1 = 0;
    while !lab.agent_log()[mark..].contains(&down) {
        assert!(
            Instant::now() < deadline,
            "b1 was never marked down:\n{}",
            lab.agent_log()
        );
        let port = ports.next();
        // Answered by its backend in the old table or, once b1 is out, in the new one.
        match (session(&lab, port), all.backend(port)) {
            (Ok(got), old) => assert!(
                got == old || got == without_b1.backend(port),
                "port {port}: b{}",
                got + 1
            ),
            (Err(_), 0) => refused_to_b1 += 1,
            (Err(e), other) => panic!(
                "a session to healthy b{} failed while b1 died: {e}",
                other + 1
            ),
        }
    }
    lab.wait_backend_nginx_stopped(0)
        .expect("nginx on b1 exits");

    // After the withdrawal every session succeeds and none reaches b1.
    let answered = sessions_land(&lab, &mut ports, 60, &|p| without_b1.backend(p));
    assert!(!answered.contains_key(&0), "{answered:?}");
    eprintln!("sessions refused by b1 before its withdrawal: {refused_to_b1}");

    // Started again, b1 is back in rotation with its own slots.
    let mark = lab.agent_log().len();
    lab.start_backend_nginx(0).expect("starting nginx on b1");
    wait_log(&lab, mark, &change(0, "primary", "down", "up"));
    let answered = sessions_land(&lab, &mut ports, 40, &|p| all.backend(p));
    assert!(
        answered.get(&0).is_some_and(|n| *n > 0),
        "b1 answers again: {answered:?}"
    );
}

/// The three backends as `video-rtmp` (port 1935, checked by `kind`) and as `video-tcp`
/// (port 8080, checked by a plain TCP connect to 1935), both checked twice a second.
fn rtmp_checked_by(kind: &str) -> String {
    let timing = "interval: 500ms, timeout: 400ms";
    format!(
        "interfaces: [eth0]\nservices:\n\
         \x20 - name: video-rtmp\n    vip: {vip}\n    port: 1935\n    protocol: tcp\n    health_check: {{kind: {kind}, {timing}}}\n    backends: &servers\n\
         \x20     - address: {b1}\n      - address: {b2}\n      - address: {b3}\n\
         \x20 - name: video-tcp\n    vip: {vip}\n    port: 8080\n    protocol: tcp\n    health_check: {{kind: tcp, port: 1935, {timing}}}\n    backends: *servers\n",
        vip = Lab::VIP,
        b1 = Lab::backend_addr(0),
        b2 = Lab::backend_addr(1),
        b3 = Lab::backend_addr(2),
    )
}

#[test]
fn a_backend_that_accepts_tcp_on_1935_but_never_answers_the_rtmp_handshake_is_down_for_rtmp_and_not_for_tcp()
 {
    let lab = lab(3);
    // b1's RTMP server hangs: its kernel still accepts on 1935, nothing answers.
    lab.stop_backend_nginx(0).expect("stopping nginx on b1");
    let _hung = lab
        .hung_listener(0, Lab::RTMP_PORT)
        .expect("a hung listener on b1:1935");
    let yaml = rtmp_checked_by("rtmp");
    let _agent = start_agent(&lab, &yaml);
    let rtmp_down = format!(
        "service=video-rtmp backend={} role=primary old=up new=down",
        Lab::backend_addr(0)
    );
    let seen = wait_log(&lab, 0, &rtmp_down);
    let log = lab.agent_log();
    assert!(
        log.contains("S0+S1"),
        "the reason names the handshake:\n{log}"
    );
    // Eight more checks of each kind: the tcp check keeps b1 up, and b2 and b3 are up for both.
    thread::sleep(Duration::from_secs(4));
    let log = lab.agent_log();
    let downs: Vec<&str> = log.lines().filter(|l| l.contains("new=down")).collect();
    assert_eq!(downs.len(), 1, "only b1 for rtmp went down: {downs:#?}");
    assert!(log[..seen].contains(&rtmp_down));

    // An RTMP publish through the VIP lands on a server that answers the handshake.
    lab.rtmp_publish_ok(2, "health")
        .expect("publishing through the VIP");
    let backend = lab
        .wait_rtmp_publish("health", Duration::from_secs(15))
        .expect("one backend logged it");
    assert_ne!(backend, 0, "the hung b1 is out of the RTMP table");
}

#[test]
fn a_backend_without_the_vip_on_lo_is_down_for_the_dsr_check_and_up_for_tcp() {
    let lab = lab(3);
    // b1 answers on its own address, but clients' frames to the VIP find no VIP there.
    lab.remove_backend_vip(0)
        .expect("removing the VIP from b1's lo");
    let yaml = rtmp_checked_by("dsr");
    let _agent = start_agent(&lab, &yaml);
    let dsr_down = format!(
        "service=video-rtmp backend={} role=primary old=up new=down",
        Lab::backend_addr(0)
    );
    wait_log(&lab, 0, &dsr_down);
    let log = lab.agent_log();
    assert!(
        log.contains("is the VIP on the server's lo?"),
        "the reason says what to look at:\n{log}"
    );
    // Eight more checks of each kind: the tcp check keeps b1 up, and b2 and b3 (VIP on lo,
    // nginx listening) pass the dsr check.
    thread::sleep(Duration::from_secs(4));
    let log = lab.agent_log();
    let downs: Vec<&str> = log.lines().filter(|l| l.contains("new=down")).collect();
    assert_eq!(downs.len(), 1, "only b1 for dsr went down: {downs:#?}");

    // Publishes through the VIP land on the servers that hold it.
    for n in 0..3 {
        let stream = format!("dsr{n}");
        lab.rtmp_publish_ok(2, &stream)
            .expect("publishing through the VIP");
        let backend = lab
            .wait_rtmp_publish(&stream, Duration::from_secs(15))
            .expect("one backend logged it");
        assert_ne!(backend, 0, "b1 without the VIP is out of the RTMP table");
    }
}

#[test]
fn an_http_check_answered_with_a_wrong_status_takes_the_backend_out() {
    let lab = lab(3);
    let check = "    health_check: {kind: http, path: /health, interval: 500ms, timeout: 400ms}\n";
    // b1's own check asks for a page it does not have: 404.
    let own = |i: usize| {
        if i == 0 {
            "        health_check: {path: /missing}\n".to_owned()
        } else {
            String::new()
        }
    };
    let _agent = start_agent(&lab, &hls_config(check, &[0, 1, 2], &own));
    wait_log(
        &lab,
        0,
        &format!(
            "{} reason=\"HTTP status 404, expected 200\"",
            change(0, "primary", "up", "down")
        ),
    );
    let without_b1 = Predictor::new(&[1, 2]);
    let answered = sessions_land(&lab, &mut Ports(47000), 30, &|p| without_b1.backend(p));
    assert!(!answered.contains_key(&0), "{answered:?}");
    let log = lab.agent_log();
    assert_eq!(
        log.matches("new=down").count(),
        1,
        "only b1 is down:\n{log}"
    );
}

#[test]
fn the_notify_command_gets_the_change_and_a_hanging_one_does_not_stall_checking() {
    let mut lab = lab(3);
    let out = lab.dir().join("notified");
    fs::create_dir_all(&out).unwrap();
    let script = lab.dir().join("notify.sh");
    // Records its environment, then hangs far beyond its timeout.
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | grep '^XDP_LB_' | sort > {out}/$XDP_LB_NEW_STATE.env\nsleep 120\n",
            out = out.display()
        ),
    )
    .unwrap();
    make_executable(&script);
    let extra =
        "    health_check: {kind: http, path: /health, interval: 500ms, timeout: 400ms, rise: 2}\n";
    let yaml = format!(
        "notify: {{command: {}, timeout: 10s}}\n{}",
        script.display(),
        hls_config(extra, &[0, 1, 2], &|_| String::new())
    );
    let mut agent = start_agent(&lab, &yaml);

    lab.stop_backend_nginx(0).expect("stopping nginx on b1");
    let after_down = wait_log(&lab, 0, &change(0, "primary", "up", "down"));
    lab.start_backend_nginx(0).expect("starting nginx on b1");
    // The down notification still hangs (10 s timeout); checking goes on regardless.
    let after_up = wait_log(&lab, after_down, &change(0, "primary", "down", "up"));
    let killed = "still running after 10s; killed";
    assert!(
        !lab.agent_log()[..after_up].contains(killed),
        "b1 came back while the first notification hung"
    );

    let env = |state: &str| {
        let path = out.join(format!("{state}.env"));
        let deadline = Instant::now() + PATIENCE;
        loop {
            match fs::read_to_string(&path) {
                Ok(text) if text.contains("XDP_LB_TIME") => return text,
                _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => panic!("{} was never written", path.display()),
            }
        }
    };
    let down = env("down");
    for line in [
        "XDP_LB_SERVICE=video-hls",
        &format!("XDP_LB_BACKEND={}", Lab::backend_addr(0)),
        "XDP_LB_ROLE=primary",
        "XDP_LB_OLD_STATE=up",
        "XDP_LB_NEW_STATE=down",
        "XDP_LB_REASON=connect: connection refused",
    ] {
        assert!(down.lines().any(|l| l == line), "{line:?} in:\n{down}");
    }
    let time = down
        .lines()
        .find_map(|l| l.strip_prefix("XDP_LB_TIME="))
        .expect("a time");
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {time}"
    );
    let up = env("up");
    assert!(
        up.lines().any(|l| l == "XDP_LB_NEW_STATE=up")
            && up.lines().any(|l| l == "XDP_LB_OLD_STATE=down"),
        "{up}"
    );

    // Both hanging commands are killed at their timeout, each logged as a warning, and
    // the agent runs on.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.agent_log().matches(killed).count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the hanging commands were not killed:\n{}",
            lab.agent_log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.is_running(), "{}", lab.agent_log());
}

#[test]
fn a_backup_takes_over_for_its_dead_primary_and_the_fallback_pool_serves_only_while_all_primaries_are_down()
 {
    let mut lab = lab(5);
    // Primaries b1 and b2; b3 stands in for b1; b4 and b5 are the sorry servers.
    let extra = format!(
        "    health_check: {{kind: http, path: /health, interval: 500ms, timeout: 400ms, rise: 2}}\n    fallback:\n      - address: {}\n      - address: {}\n",
        Lab::backend_addr(3),
        Lab::backend_addr(4)
    );
    let backup = |i: usize| {
        if i == 0 {
            format!("        backup: {}\n", Lab::backend_addr(2))
        } else {
            String::new()
        }
    };
    let _agent = start_agent(&lab, &hls_config(&extra, &[0, 1], &backup));
    let primaries = Predictor::new(&[0, 1]);
    let sorry = Predictor::new(&[3, 4]);
    let mut ports = Ports(48000);

    let answered = sessions_land(&lab, &mut ports, 30, &|p| primaries.backend(p));
    assert_eq!(
        answered.keys().copied().collect::<Vec<_>>(),
        [0, 1],
        "only the primaries serve"
    );

    // b1 dies: b3 takes exactly b1's sessions, b2 keeps its own.
    let mark = lab.agent_log().len();
    lab.stop_backend_nginx(0).expect("stopping nginx on b1");
    wait_log(&lab, mark, &change(0, "primary", "up", "down"));
    let stand_in = |p: u16| match primaries.backend(p) {
        0 => 2,
        other => other,
    };
    let answered = sessions_land(&lab, &mut ports, 40, &stand_in);
    assert!(answered.contains_key(&2), "the backup served: {answered:?}");

    // b1 recovers: it gets its slots back from b3.
    let mark = lab.agent_log().len();
    lab.start_backend_nginx(0).expect("starting nginx on b1");
    wait_log(&lab, mark, &change(0, "primary", "down", "up"));
    let answered = sessions_land(&lab, &mut ports, 40, &|p| primaries.backend(p));
    assert!(
        !answered.contains_key(&2),
        "the backup gave every slot back: {answered:?}"
    );

    // Every primary and the backup die: the fallback pool serves.
    let mark = lab.agent_log().len();
    for i in [0, 1, 2] {
        lab.quit_backend_nginx(i).expect("nginx -s quit");
    }
    for (i, role) in [(0, "primary"), (1, "primary"), (2, "backup")] {
        wait_log(&lab, mark, &change(i, role, "up", "down"));
    }
    wait_log(&lab, mark, "new flows go to the fallback pool");
    let answered = sessions_land(&lab, &mut ports, 40, &|p| sorry.backend(p));
    assert_eq!(
        answered.keys().copied().collect::<Vec<_>>(),
        [3, 4],
        "both sorry servers serve"
    );

    // One primary back: the fallback pool gets no new session.
    let mark = lab.agent_log().len();
    lab.start_backend_nginx(1).expect("starting nginx on b2");
    wait_log(&lab, mark, &change(1, "primary", "down", "up"));
    sessions_land(&lab, &mut ports, 30, &|_| 1);
}

fn make_executable(path: &PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}
