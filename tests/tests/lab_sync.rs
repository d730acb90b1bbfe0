//! Flow-state sync between LBs (root only), on the BGP lab of two LBs behind a router
//! with ECMP: live RTMP publishes and keep-alive HTTP connections run through both LBs; a
//! backend is added to LB 2 at the moment LB 1 stops. The flows LB 1 carried move to LB 2,
//! whose Maglev table now sends some of them to the new backend: only the entries LB 1
//! told LB 2 about keep them on their backends. With sync every stream goes on; without
//! it, the same change breaks the moved connections the new table sends elsewhere.

mod support;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use support::stream::wait_for;
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

/// Backends in the lab; the first config lists all but the last, which the change adds.
const BACKENDS: usize = 4;
const STREAM_SECONDS: u32 = 24;
const PUBLISHES: usize = 6;
/// Keep-alive HTTP connections held through the change: half from source ports the new
/// table sends to another backend, half from ports it leaves on theirs.
const PROBES: usize = 40;
/// The probes' source ports are chosen from here up (above the ephemeral range, 32768-60999,
/// and the new sessions' 61000-61029).
const PROBE_PORTS_FROM: u16 = 62000;
const PROBE_SECONDS: u32 = 22;
const PROBE_SCRIPT: &str = include_str!("support/probe_connections.py");

/// The lab's services with `announce:`, the first `backends` backends, and (with `sync`)
/// `sync:` between the two LBs.
fn config(lab: &Lab, backends: usize, sync: bool) -> String {
    let mut yaml = lab.announce_config();
    for i in backends..BACKENDS {
        yaml = yaml.replace(&format!("      - address: {}\n", Lab::backend_addr(i)), "");
    }
    if sync {
        let key = lab.dir().join("sync.key");
        std::fs::write(
            &key,
            "5f4dcc3b5aa765d61d8327deb882cf99b6b1e4c0a9d3b2f8e7c6d5a4b3c2d1e0\n",
        )
        .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        yaml = format!(
            "sync:\n  peers: [{}, {}]\n  key_file: {}\n  refresh: 5s\n{yaml}",
            Lab::lb_addr(0),
            Lab::lb_addr(1),
            key.display()
        );
    }
    yaml
}

fn write(lab: &Lab, name: &str, yaml: &str) -> PathBuf {
    let path = lab.dir().join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The probes' source ports, and of them those whose flows LB 2's new table (the added
/// backend among them) sends to another backend than the old table did: without sync a
/// flow from one of those that moves to LB 2 must break, and one from the others must not.
/// Chosen rather than left to the OS: with 3 backends becoming 4, about a quarter of the
/// flows move, and among 17 random ones none did, about one run in 130.
fn probe_ports() -> (Vec<u16>, std::collections::BTreeSet<u16>) {
    let (old, new) = (first_backends(BACKENDS - 1), first_backends(BACKENDS));
    let (mut moving, mut staying) = (Vec::new(), Vec::new());
    for port in PROBE_PORTS_FROM.. {
        if moving.len() == PROBES / 2 && staying.len() == PROBES - PROBES / 2 {
            break;
        }
        let (before, after) = (routed_owner(&old, port), routed_owner(&new, port));
        if before != after && moving.len() < PROBES / 2 {
            moving.push(port);
        } else if before == after && staying.len() < PROBES - PROBES / 2 {
            staying.push(port);
        }
    }
    let mut ports: Vec<u16> = moving.iter().chain(&staying).copied().collect();
    ports.sort_unstable();
    (ports, moving.into_iter().collect())
}

/// The lab's first `n` backends, each of weight 1 (as [`config`] lists them).
fn first_backends(n: usize) -> Vec<(std::net::IpAddr, u32)> {
    (0..n).map(|i| (support::stream::addr(i), 1)).collect()
}

/// The backend a new HTTP flow from the routed client's `port` gets with `backends`.
fn routed_owner(backends: &[(std::net::IpAddr, u32)], port: u16) -> std::net::IpAddr {
    support::predict::lab_owner_from(Lab::ROUTED_CLIENT_ADDR, backends, port, Lab::HTTP_PORT)
        .expect("a Maglev owner")
}

/// One probe connection's story (a line of `probe_connections.py`).
#[derive(Debug, serde::Deserialize)]
struct Probe {
    port: u16,
    backends: Vec<String>,
    requests: u64,
    error: Option<String>,
}

impl Probe {
    fn unbroken(&self) -> bool {
        self.error.is_none() && self.backends.len() == 1
    }
}

/// What happened to the streams through the change.
struct Outcome {
    /// The probes that went through the LB that stopped.
    moved: Vec<Probe>,
    /// The source ports whose flows LB 2's new table sends to another backend.
    reassigned: std::collections::BTreeSet<u16>,
    /// The publishes that ended with an error, and those a backend logged twice.
    broken_publishes: Vec<String>,
    lab: Lab,
    binary: PathBuf,
    /// Kept running until the test has read LB 2's status.
    _agents: Vec<LabProcess>,
}

/// Runs the change under live traffic: publishes and probes through both LBs; then LB 1
/// stops (SIGTERM: its route is withdrawn) while LB 2 reloads with a backend added.
fn stop_one_lb_while_a_backend_is_added(sync: bool) -> Outcome {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        backends: BACKENDS,
        bgp_lbs: 2,
        ..LabOptions::default()
    })
    .expect("lab");
    let binary = Lab::locate_agent_binary().expect("agent binary");
    let before = write(&lab, "xdp-lb-sync.yaml", &config(&lab, BACKENDS - 1, sync));
    let mut agents: Vec<LabProcess> = (0..2)
        .map(|k| lab.start_agent_on(k, &binary, &before).expect("agent"))
        .collect();
    lab.wait_router_nexthops(&[0, 1], Duration::from_secs(30))
        .unwrap_or_else(|err| panic!("{err:#}\nlb1 log:\n{}", lab.agent_log_on(0)));
    if sync {
        for k in 0..2 {
            wait_for(Duration::from_secs(10), || {
                sync_peer_up(&lab, &binary, k).then_some(())
            })
            .unwrap_or_else(|| {
                panic!(
                    "LB {} hears its peer: {}\nits log:\n{}",
                    k + 1,
                    status_text(&lab, &binary, k),
                    lab.agent_log_on(k)
                )
            });
        }
    }

    let mut publishes = support::stream::spawn_publishes(&lab, "sync", PUBLISHES, STREAM_SECONDS);
    let script = lab.dir().join("probe_connections.py");
    std::fs::write(&script, PROBE_SCRIPT).unwrap();
    let (count, seconds) = (PROBES.to_string(), PROBE_SECONDS.to_string());
    let script_path = script.display().to_string();
    let port = Lab::HTTP_PORT.to_string();
    let (probe_ports, reassigned) = probe_ports();
    let sources = probe_ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut probes = lab
        .spawn(
            lab.ns_client(),
            &[
                "python3",
                &script_path,
                Lab::VIP,
                &port,
                &count,
                &seconds,
                &sources,
            ],
        )
        .expect("probes");
    wait_for(Duration::from_secs(15), || {
        (support::stream::publish_ports_from(&lab, Lab::ROUTED_CLIENT_ADDR).len() == PUBLISHES
            && probes.stdout().contains("open"))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("every publish and probe is open: {}", probes.stderr()));
    // The flows through LB 1, by the client's source port.
    let through_first: Vec<u16> = wait_for(Duration::from_secs(5), || {
        let ports = client_ports(&lab);
        let first: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| went_through(&lab, &binary, 0, *p))
            .collect();
        (!first.is_empty()).then_some(first)
    })
    .expect("LB 1 carries some flows");
    eprintln!("flows through LB 1: {}", through_first.len());
    if sync {
        // LB 2 learnt every one of them (a batch leaves within 10 ms).
        for port in &through_first {
            assert!(
                wait_for(Duration::from_secs(5), || {
                    learnt(&lab, &binary, 1, *port).then_some(())
                })
                .is_some(),
                "LB 2 learnt LB 1's flow from port {port}: {}",
                status_text(&lab, &binary, 1)
            );
        }
    }
    std::thread::sleep(Duration::from_secs(2));

    // The change: a backend added to LB 2, LB 1 stopped, at the same moment (the stop
    // follows the reload's answer within milliseconds). The reload comes first: a moved
    // flow's first packet at LB 2 always meets its new table. (Stopped first, LB 1's
    // route left within milliseconds and LB 2, still on its old table, gave the moved
    // flows entries of their old backends before the reload applied: on a loaded machine
    // the test without sync then saw none of 19 break.)
    let after = write(&lab, "xdp-lb-sync-4.yaml", &config(&lab, BACKENDS, sync));
    std::thread::sleep(Duration::from_millis(1100)); // a file this fresh is refused
    std::fs::copy(&after, &before).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let reload = lab
        .agent_command_on(1, &binary, &["reload"])
        .expect("reload LB 2");
    agents[0].signal(libc::SIGTERM).expect("SIGTERM to LB 1");
    assert!(
        reload.status.success(),
        "LB 2 reloads: {}{}",
        String::from_utf8_lossy(&reload.stdout),
        String::from_utf8_lossy(&reload.stderr)
    );
    lab.wait_router_nexthops(&[1], Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("{err:#}\nLB 1's log:\n{}", lab.agent_log_on(0)));
    let stopped = agents[0]
        .wait_with_timeout(Duration::from_secs(15))
        .expect("LB 1's agent stops");
    assert!(stopped.status.success(), "a clean stop of LB 1");

    // New sessions go where LB 2's new state says, the added backend among them.
    let mut landed = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..30u16 {
        // Above the ephemeral range (32768-60999): no probe or publish holds it.
        let port = 61000 + i;
        let body = lab
            .http_get_via_vip_from_port("/", port)
            .expect("a new session through LB 2");
        let predicted = lookup(&lab, &binary, 1, port, Lab::HTTP_PORT);
        let name = body.trim().to_owned();
        assert!(
            predicted.contains(&format!("{} (", backend_addr_of(&name))),
            "a new session from port {port} went to {name}, as LB 2 says: {predicted}"
        );
        *landed.entry(name).or_default() += 1;
    }
    eprintln!("new sessions after the change: {landed:?}");
    assert!(
        landed.contains_key(&Lab::backend_name(BACKENDS - 1)),
        "the added backend takes new sessions: {landed:?}"
    );

    let out = probes
        .wait_with_timeout(Duration::from_secs(u64::from(PROBE_SECONDS) + 30))
        .expect("probes end");
    let all: Vec<Probe> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a probe line"))
        .collect();
    assert_eq!(
        all.len(),
        PROBES,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old_backends = first_backends(BACKENDS - 1);
    for p in &all {
        assert!(
            p.requests > 0,
            "probe {} was answered at all: {p:?}",
            p.port
        );
        // The prediction the ports were chosen by is the data plane's own.
        let first = p.backends.first().map_or("", String::as_str);
        assert_eq!(
            backend_addr_of(first),
            routed_owner(&old_backends, p.port).to_string(),
            "probe {} first went where the old table says: {p:?}",
            p.port
        );
    }
    let moved: Vec<Probe> = all
        .into_iter()
        .filter(|p| through_first.contains(&p.port))
        .collect();
    let mut broken_publishes = Vec::new();
    for (stream, ffmpeg) in publishes.iter_mut() {
        let output = ffmpeg
            .wait_with_timeout(Duration::from_secs(u64::from(STREAM_SECONDS) + 40))
            .expect("ffmpeg ends");
        let sessions = lab
            .wait_rtmp_publish(stream, Duration::from_secs(5))
            .ok()
            .and_then(|holder| lab.rtmp_publishes(holder).ok())
            .map_or(0, |lines| {
                lines
                    .iter()
                    .filter(|l| l.contains(&format!("\"{stream}\"")))
                    .count()
            });
        if !output.status.success() || sessions != 1 {
            broken_publishes.push(stream.clone());
        }
    }
    Outcome {
        moved,
        reassigned,
        broken_publishes,
        lab,
        binary,
        _agents: agents,
    }
}

/// The client's source ports of its connections to the VIP (publishes and probes).
fn client_ports(lab: &Lab) -> Vec<u16> {
    let mut ports = support::stream::publish_ports_from(lab, Lab::ROUTED_CLIENT_ADDR);
    ports.extend(support::stream::client_ports_to(
        lab,
        Lab::ROUTED_CLIENT_ADDR,
        Lab::HTTP_PORT,
    ));
    ports
}

fn lookup(lab: &Lab, binary: &Path, k: usize, port: u16, service_port: u16) -> String {
    let client = format!("{}:{port}", Lab::ROUTED_CLIENT_ADDR);
    let vip = format!("{}:{service_port}", Lab::VIP);
    let out = lab
        .agent_command_on(k, binary, &["lookup", &client, &vip, "tcp"])
        .expect("lookup");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether LB `k` holds an entry of its own (not learnt from its peer) for the client's
/// flow from `port` (to either service): the flow went through it.
fn went_through(lab: &Lab, binary: &Path, k: usize, port: u16) -> bool {
    [Lab::RTMP_PORT, Lab::HTTP_PORT].iter().any(|s| {
        let answer = lookup(lab, binary, k, port, *s);
        answer.contains("from the connection table") && !answer.contains("learnt")
    })
}

/// Whether LB `k` holds an entry it learnt from its peer for the flow from `port`.
fn learnt(lab: &Lab, binary: &Path, k: usize, port: u16) -> bool {
    [Lab::RTMP_PORT, Lab::HTTP_PORT]
        .iter()
        .any(|s| lookup(lab, binary, k, port, *s).contains("learnt from a peer"))
}

/// "b3" -> "10.77.0.13".
fn backend_addr_of(name: &str) -> String {
    let i: usize = name
        .trim_start_matches('b')
        .parse()
        .unwrap_or_else(|_| panic!("a backend's name: {name:?}"));
    Lab::backend_addr(i - 1)
}

fn status_json(lab: &Lab, binary: &Path, k: usize) -> serde_json::Value {
    let out = lab
        .agent_command_on(k, binary, &["status", "--json"])
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn status_text(lab: &Lab, binary: &Path, k: usize) -> String {
    let out = lab
        .agent_command_on(k, binary, &["status"])
        .expect("status");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sync_peer_up(lab: &Lab, binary: &Path, k: usize) -> bool {
    status_json(lab, binary, k)["sync"]["peers"]
        .as_array()
        .is_some_and(|peers| peers.iter().all(|p| p["state"] == "up") && !peers.is_empty())
}

#[test]
fn with_sync_every_stream_survives_its_lb_leaving_while_a_backend_is_added() {
    let outcome = stop_one_lb_while_a_backend_is_added(true);
    let Outcome {
        moved,
        broken_publishes,
        reassigned,
        lab,
        binary,
        _agents,
    } = outcome;
    let status = status_json(&lab, &binary, 1);
    eprintln!("LB 2's sync: {}", status["sync"]);
    eprintln!("{}", status_text(&lab, &binary, 1));
    let broken: Vec<&Probe> = moved.iter().filter(|p| !p.unbroken()).collect();
    let reassigned_moved = moved
        .iter()
        .filter(|p| reassigned.contains(&p.port))
        .count();
    eprintln!(
        "{} of LB 1's {} connections are ones LB 2's new table sends elsewhere",
        reassigned_moved,
        moved.len()
    );
    assert!(
        reassigned_moved > 0,
        "some of LB 1's connections are ones only sync keeps: {moved:?}"
    );
    assert!(
        broken.is_empty(),
        "{} of the {} connections LB 1 carried broke or changed backend: {broken:?}",
        broken.len(),
        moved.len()
    );
    assert!(
        broken_publishes.is_empty(),
        "every publish went on, one session on one backend: broken {broken_publishes:?}"
    );
    assert!(
        status["sync"]["applied"].as_u64().unwrap_or(0) >= moved.len() as u64,
        "LB 2 applied LB 1's entries: {}",
        status["sync"]
    );
    assert_eq!(
        status["drift"],
        serde_json::json!([]),
        "LB 2's data plane hands its new entries to its session (sync_on agrees)"
    );
}

#[test]
fn without_sync_the_same_change_breaks_moved_streams() {
    let Outcome {
        moved, reassigned, ..
    } = stop_one_lb_while_a_backend_is_added(false);
    let broken: Vec<&Probe> = moved.iter().filter(|p| !p.unbroken()).collect();
    eprintln!(
        "without sync, {} of the {} connections LB 1 carried broke or changed backend: {broken:?}",
        broken.len(),
        moved.len()
    );
    // The scenario is only a test of sync if it breaks streams without it: LB 1's flows
    // that LB 2's new table sends to another backend break, exactly those. (Half the
    // probes are such flows; that none of the 20 went through LB 1 is one run in a million.)
    let (must_break, may_live): (Vec<&Probe>, Vec<&Probe>) =
        moved.iter().partition(|p| reassigned.contains(&p.port));
    assert!(
        !must_break.is_empty(),
        "some of LB 1's {} connections are ones the new table sends elsewhere: {moved:?}",
        moved.len()
    );
    let survived: Vec<&&Probe> = must_break.iter().filter(|p| p.unbroken()).collect();
    assert!(
        survived.is_empty(),
        "without sync, every one of LB 1's connections the new table sends elsewhere breaks: \
         {survived:?}"
    );
    let broke: Vec<&&Probe> = may_live.iter().filter(|p| !p.unbroken()).collect();
    assert!(
        broke.is_empty(),
        "without sync, LB 1's connections the new table leaves on their backends go on: \
         {broke:?}"
    );
}
