//! Several LBs behind ECMP (root only): two LB namespaces, each running BIRD and an agent
//! with the same YAML and `announce:`, behind a router running BIRD with `merge paths` and
//! the L4 multipath hash (`LabOptions::bgp_lbs`, `tests/src/bgp.rs`). New sessions spread
//! over both LBs; a clean stop of one LB withdraws its route and every live publish that
//! went through it continues through the other LB to the same backend; a service whose
//! backends all fail as one LB sees them withdraws that LB's route only.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use support::stream::wait_for;
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

const BACKENDS: usize = 3;
const STREAM_SECONDS: u32 = 20;
const PUBLISHES: usize = 6;

/// The lab's two services with `announce:` (a short restore_after and stop_grace).
fn announce_config(lab: &Lab) -> PathBuf {
    lab.write_announce_config().expect("writing the config")
}

/// A BGP lab of two LBs, no agent running yet: the lab, the agents' config, the binary.
fn bgp_lab() -> (Lab, PathBuf, PathBuf) {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions {
        backends: BACKENDS,
        bgp_lbs: 2,
        ..LabOptions::default()
    })
    .expect("lab");
    let config = announce_config(&lab);
    let binary = Lab::locate_agent_binary().expect("agent binary");
    (lab, config, binary)
}

/// A BGP lab with both agents running and both routes in the router.
fn two_lbs() -> (Lab, PathBuf, Vec<LabProcess>) {
    let (lab, config, binary) = bgp_lab();
    let agents = (0..2)
        .map(|k| lab.start_agent_on(k, &binary, &config).expect("agent"))
        .collect();
    let took = lab
        .wait_router_nexthops(&[0, 1], Duration::from_secs(30))
        .unwrap_or_else(|err| {
            panic!(
                "{err:#}\nrouter: {}\nlb1 log:\n{}",
                lab.birdc(lab.ns_router().unwrap(), &["show", "protocols"])
                    .unwrap_or_default(),
                lab.agent_log_on(0)
            )
        });
    eprintln!("both LBs' routes reached the router {took:?} after the second agent was ready");
    (lab, binary, agents)
}

/// LB `k`'s counter `name` (a flow event) from `status --json`.
fn flow_event(lab: &Lab, binary: &Path, k: usize, name: &str) -> u64 {
    lab.flow_event_on(k, binary, name).expect("status")
}

/// What LB `k`'s `status` says about the VIP: (announced, the line).
fn announce_line(lab: &Lab, binary: &Path, k: usize) -> String {
    let out = lab
        .agent_command_on(k, binary, &["status"])
        .expect("status");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("announce: "))
        .unwrap_or_default()
        .to_owned()
}

/// The client's source ports of its established RTMP connections to the VIP.
fn publish_ports(lab: &Lab) -> Vec<u16> {
    support::stream::publish_ports_from(lab, Lab::ROUTED_CLIENT_ADDR)
}

/// Whether LB `k` holds a connection-table entry for the client's flow from `port`: the
/// flow went through it.
fn went_through(lab: &Lab, binary: &Path, k: usize, port: u16) -> bool {
    let client = format!("{}:{port}", Lab::ROUTED_CLIENT_ADDR);
    let vip = format!("{}:{}", Lab::VIP, Lab::RTMP_PORT);
    let out = lab
        .agent_command_on(k, binary, &["lookup", &client, &vip, "tcp"])
        .expect("lookup");
    String::from_utf8_lossy(&out.stdout).contains("from the connection table")
}

#[test]
fn new_sessions_spread_over_both_lbs() {
    let (lab, binary, _agents) = two_lbs();
    let before: Vec<u64> = (0..2)
        .map(|k| flow_event(&lab, &binary, k, "syn_not_remembered"))
        .collect();
    let sessions = 40u16;
    for i in 0..sessions {
        let body = lab
            .http_get_via_vip_from_port("/", 42000 + i)
            .expect("a session through the VIP");
        assert!(body.starts_with('b'), "a backend answered: {body:?}");
    }
    let took: Vec<u64> = (0..2)
        .map(|k| flow_event(&lab, &binary, k, "syn_not_remembered") - before[k])
        .collect();
    eprintln!("new sessions per LB: {took:?} of {sessions}");
    assert_eq!(
        took.iter().sum::<u64>(),
        u64::from(sessions),
        "every session's SYN went through one LB"
    );
    for (k, n) in took.iter().enumerate() {
        assert!(
            *n >= u64::from(sessions) / 5,
            "LB {} took {n} of {sessions} new sessions (both take a share): {took:?}",
            k + 1
        );
    }
    for k in 0..2 {
        let line = announce_line(&lab, &binary, k);
        assert!(
            line.contains(" announced (table 100)"),
            "LB {}: {line}",
            k + 1
        );
    }
}

#[test]
fn a_clean_stop_of_one_lb_moves_its_live_publishes_to_the_other_lb_and_the_same_backend() {
    let (lab, binary, mut agents) = two_lbs();
    let mut publishes = support::stream::spawn_publishes(&lab, "bgp", PUBLISHES, STREAM_SECONDS);
    let ports = wait_for(Duration::from_secs(15), || {
        let ports = publish_ports(&lab);
        (ports.len() == PUBLISHES).then_some(ports)
    })
    .expect("every publish is established");
    // The LB that stops is the one carrying more of the publishes (never none of them).
    let through: Vec<Vec<u16>> = (0..2)
        .map(|k| {
            ports
                .iter()
                .copied()
                .filter(|p| went_through(&lab, &binary, k, *p))
                .collect()
        })
        .collect();
    let (gone, stays) = if through[0].len() >= through[1].len() {
        (0, 1)
    } else {
        (1, 0)
    };
    let moving = through[gone].clone();
    eprintln!(
        "publishes through LB {}: {} of {PUBLISHES} (client ports {moving:?}); it stops",
        gone + 1,
        moving.len()
    );
    assert_eq!(
        through[0].len() + through[1].len(),
        PUBLISHES,
        "every publish went through exactly one LB: {through:?}"
    );
    // Let them run a while on their first path.
    std::thread::sleep(Duration::from_secs(3));

    let stopped = Instant::now();
    agents[gone].signal(libc::SIGTERM).expect("SIGTERM");
    let moved = lab
        .wait_router_nexthops(&[stays], Duration::from_secs(10))
        .unwrap_or_else(|err| panic!("{err:#}\nits log:\n{}", lab.agent_log_on(gone)));
    eprintln!(
        "failover: the router's route moved to LB {} alone {:.0} ms after SIGTERM to LB {}'s agent",
        stays + 1,
        moved.as_secs_f64() * 1000.0,
        gone + 1
    );
    let status = agents[gone]
        .wait_with_timeout(Duration::from_secs(15))
        .expect("the agent stops");
    assert!(status.status.success(), "a clean stop");
    let log = lab.agent_log_on(gone);
    assert!(log.contains("announce: withdrew 10.77.0.100"), "{log}");
    eprintln!(
        "the stopped agent exited {:.0} ms after SIGTERM (stop_grace 2s)",
        stopped.elapsed().as_secs_f64() * 1000.0
    );
    // The moved flows reach the other LB without an entry there: Maglev places them on
    // the backend the first LB chose.
    for port in &moving {
        assert!(
            wait_for(Duration::from_secs(5), || {
                went_through(&lab, &binary, stays, *port).then_some(())
            })
            .is_some(),
            "LB {} took over the flow from port {port}",
            stays + 1
        );
    }

    assert_unbroken(&lab, &mut publishes);
}

#[test]
fn a_service_whose_backends_all_fail_on_one_lb_withdraws_that_lbs_route_only() {
    let (lab, binary, _agents) = two_lbs();
    // LB 1 loses its path to every backend (its checks fail); LB 2 still reaches them.
    let cut = ["ip", "route", "add", "prohibit", "10.77.0.8/29"];
    lab.exec_ok(&lab.ns_lb_k(0), &cut)
        .expect("cutting LB 1 off");
    let took = lab
        .wait_router_nexthops(&[1], Duration::from_secs(15))
        .unwrap_or_else(|err| panic!("{err:#}\nlb1 log:\n{}", lab.agent_log_on(0)));
    eprintln!("LB 1's route left the router {took:?} after its backends became unreachable");
    let first = announce_line(&lab, &binary, 0);
    assert!(
        first.contains("withdrawn") && first.contains("has 0 of the 1 backend(s)"),
        "LB 1 says why: {first}"
    );
    let second = announce_line(&lab, &binary, 1);
    assert!(
        second.contains(" announced "),
        "LB 2 still announces: {second}"
    );
    for i in 0..10 {
        lab.http_get_via_vip_from_port("/", 43000 + i)
            .expect("sessions go through LB 2");
    }

    let heal = ["ip", "route", "del", "prohibit", "10.77.0.8/29"];
    lab.exec_ok(&lab.ns_lb_k(0), &heal).expect("healing LB 1");
    let back = lab
        .wait_router_nexthops(&[0, 1], Duration::from_secs(20))
        .unwrap_or_else(|err| panic!("{err:#}\nlb1 log:\n{}", lab.agent_log_on(0)));
    eprintln!("LB 1's route was back {back:?} after its backends became reachable");
}

#[test]
fn a_flow_keeping_restart_keeps_the_route_and_the_next_agent_takes_it_over() {
    let (lab, binary, mut agents) = two_lbs();
    agents[0].signal(libc::SIGQUIT).expect("SIGQUIT");
    agents[0]
        .wait_with_timeout(Duration::from_secs(15))
        .expect("the agent exits");
    // No agent on LB 1: its pinned data plane forwards, and its route stays, past the
    // BGP hold time.
    std::thread::sleep(Duration::from_secs(
        u64::from(xdp_lb_tests::HOLD_TIME_S) + 1,
    ));
    assert_eq!(
        sorted(lab.router_nexthops().expect("router")),
        [Lab::lb_addr(0), Lab::lb_addr(1)],
        "LB 1's route stays while its data plane forwards"
    );
    for i in 0..10 {
        lab.http_get_via_vip_from_port("/", 44000 + i)
            .expect("sessions go on through both LBs");
    }
    // The next agent, even with a warm-up, takes the route over at once: the data plane
    // it adopts never stopped.
    let warm = lab.dir().join("xdp-lb-warm.yaml");
    let yaml = std::fs::read_to_string(announce_config(&lab))
        .unwrap()
        .replacen("announce:\n", "announce:\n  warm_up: 60s\n", 1);
    std::fs::write(&warm, yaml).unwrap();
    let _next = lab
        .start_agent_on(0, &binary, &warm)
        .expect("the next agent");
    let log = lab.agent_log_on(0);
    assert!(
        log.contains("the earlier agent's, kept with its data plane"),
        "{log}"
    );
    for _ in 0..25 {
        assert_eq!(
            sorted(lab.router_nexthops().expect("router")),
            [Lab::lb_addr(0), Lab::lb_addr(1)],
            "the route never left the router"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let line = announce_line(&lab, &binary, 0);
    assert!(line.contains(" announced "), "{line}");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Starts `PUBLISHES` publishes named `{prefix}N` and waits until all are established.
fn start_publishes(lab: &Lab, prefix: &str) -> Vec<(String, LabProcess)> {
    let publishes = support::stream::spawn_publishes(lab, prefix, PUBLISHES, STREAM_SECONDS);
    wait_for(Duration::from_secs(15), || {
        (publish_ports(lab).len() == PUBLISHES).then_some(())
    })
    .expect("every publish is established");
    publishes
}

/// Waits for every publish to end and asserts each was one unbroken session on one backend.
fn assert_unbroken(lab: &Lab, publishes: &mut [(String, LabProcess)]) {
    for (stream, ffmpeg) in publishes.iter_mut() {
        let output = ffmpeg
            .wait_with_timeout(Duration::from_secs(u64::from(STREAM_SECONDS) + 40))
            .expect("ffmpeg ends");
        assert!(
            output.status.success(),
            "publish {stream} went on to its end: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for (stream, _) in publishes.iter() {
        let holder = lab
            .wait_rtmp_publish(stream, Duration::from_secs(15))
            .expect("one backend logged the publish");
        let lines = lab
            .rtmp_publishes(holder)
            .expect("rtmp log")
            .iter()
            .filter(|l| l.contains(&format!("\"{stream}\"")))
            .count();
        assert_eq!(
            lines,
            1,
            "{stream} was one uninterrupted session on {}",
            Lab::backend_name(holder)
        );
    }
}

#[test]
fn an_lb_joining_takes_new_sessions_and_breaks_no_live_publish() {
    let (lab, config, binary) = bgp_lab();
    let _first = lab.start_agent_on(0, &binary, &config).expect("agent");
    lab.wait_router_nexthops(&[0], Duration::from_secs(30))
        .expect("LB 1 alone");
    let mut publishes = start_publishes(&lab, "join");
    std::thread::sleep(Duration::from_secs(2));

    let _second = lab.start_agent_on(1, &binary, &config).expect("agent");
    let took = lab
        .wait_router_nexthops(&[0, 1], Duration::from_secs(15))
        .expect("LB 2 joins the route");
    eprintln!("LB 2's route reached the router {took:?} after its agent was ready");
    std::thread::sleep(Duration::from_secs(2));
    let moved: Vec<u16> = publish_ports(&lab)
        .into_iter()
        .filter(|p| went_through(&lab, &binary, 1, *p))
        .collect();
    eprintln!(
        "live publishes the router moved to the joining LB: {} of {PUBLISHES}",
        moved.len()
    );
    let before = flow_event(&lab, &binary, 1, "syn_not_remembered");
    for i in 0..20 {
        lab.http_get_via_vip_from_port("/", 45000 + i)
            .expect("a session through the VIP");
    }
    let taken = flow_event(&lab, &binary, 1, "syn_not_remembered") - before;
    assert!(taken > 0, "the joining LB takes a share of new sessions");
    assert_unbroken(&lab, &mut publishes);
}

#[test]
fn an_lb_whose_link_goes_down_leaves_the_route_after_the_hold_time_and_its_publishes_continue() {
    let (lab, binary, _agents) = two_lbs();
    let mut publishes = start_publishes(&lab, "link");
    let on_first = publish_ports(&lab)
        .into_iter()
        .filter(|p| went_through(&lab, &binary, 0, *p))
        .count();
    eprintln!("publishes through LB 1: {on_first} of {PUBLISHES}");
    std::thread::sleep(Duration::from_secs(2));
    // LB 1's link goes down: nothing withdraws; BGP notices after the hold time.
    lab.exec_ok(&lab.ns_lb_k(0), &["ip", "link", "set", "eth0", "down"])
        .expect("link down");
    let took = lab
        .wait_router_nexthops(&[1], Duration::from_secs(15))
        .expect("LB 1 leaves the route");
    eprintln!(
        "failover by the BGP hold time ({} s): LB 1's next hop left {:.0} ms after its link went down",
        xdp_lb_tests::HOLD_TIME_S,
        took.as_secs_f64() * 1000.0
    );
    assert!(
        took >= Duration::from_secs(1),
        "only the hold time takes the route out ({took:?})"
    );
    assert_unbroken(&lab, &mut publishes);
}

#[test]
fn the_example_and_lab_bird_configurations_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scratch = |name: &str| {
        std::env::temp_dir().join(format!("bird-lab-{name}-{}.conf", std::process::id()))
    };
    // The lab's own, with and without BFD (the LB-failover benchmark's).
    let lab_files = [
        (scratch("lb"), Lab::bird_lb_config(1, None)),
        (scratch("router"), Lab::bird_router_config(3, None)),
        (scratch("lb-bfd"), Lab::bird_lb_config(1, Some(100))),
        (scratch("router-bfd"), Lab::bird_router_config(3, Some(100))),
    ];
    for (path, text) in &lab_files {
        std::fs::write(path, text).unwrap();
    }
    let examples = [
        root.join("examples/bird-lb.conf"),
        root.join("examples/bird-router.conf"),
    ];
    for conf in examples
        .iter()
        .chain(lab_files.iter().map(|(path, _)| path))
    {
        let out = std::process::Command::new("bird")
            .args(["-p", "-c"])
            .arg(conf)
            .output()
            .expect("bird (cargo xtask deps installs bird2)");
        assert!(
            out.status.success(),
            "{} parses: {}",
            conf.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (path, _) in lab_files {
        let _ = std::fs::remove_file(path);
    }
}
