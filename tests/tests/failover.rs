//! Backups and fallback pools in the real data plane, frame by frame through
//! BPF_PROG_TEST_RUN (root only): who gets the slots of a dead primary, when the fallback
//! pool serves, and that standbys come and go without a frame ever meeting a stale entry.

mod support;

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use support::{frames::Ipv4Frame, harness::*};
use xdp_lb::{
    balancer::Serving,
    config::{
        Backend, BackendFailover, CheckKind, FallbackServer, HealthCheck, HealthState, Protocol,
        ServiceFailover,
    },
};
use xdp_lb_common::BACKEND_F_VALID;

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.168.1.50";

fn addr(a: &str) -> IpAddr {
    a.parse().unwrap()
}

fn hls(backends: &[&str]) -> Harness {
    Harness::new(&[service("hls", VIP, 8080, Protocol::Tcp, backends)])
}

/// Unchecked settings (servers start up) with these backups and fallback servers.
fn settings(backups: &[(&str, &str)], fallback: &[&str]) -> ServiceFailover {
    ServiceFailover {
        check: None,
        backends: backups
            .iter()
            .map(|(primary, backup)| {
                (
                    addr(primary),
                    BackendFailover {
                        check: None,
                        backup: Some(addr(backup)),
                        backup_vlan: None,
                    },
                )
            })
            .collect(),
        fallback: fallback
            .iter()
            .map(|a| FallbackServer {
                backend: Backend {
                    address: addr(a),
                    weight: 1,
                    mac: None,
                    vlan: None,
                },
                check: None,
            })
            .collect(),
        pools: BTreeMap::new(),
    }
}

/// The server a new flow from client port `port` is sent to, by its destination MAC.
fn new_flow(h: &Harness, port: u16) -> Option<IpAddr> {
    let run = h.run(&Ipv4Frame::tcp(CLIENT, port, VIP, 8080).build());
    if run.action != XDP_TX {
        return None;
    }
    let state = h.balancer.service("hls").expect("the service");
    state
        .backends
        .keys()
        .chain(state.standbys.keys())
        .find(|a| backend_mac(**a).0 == run.frame[0..6])
        .copied()
}

/// Backend id → address of every server of the service.
fn ids(h: &Harness) -> BTreeMap<u32, IpAddr> {
    let state = h.balancer.service("hls").expect("the service");
    state
        .backends
        .values()
        .chain(state.standbys.values())
        .map(|b| (b.id, b.config.address))
        .collect()
}

fn set_health(h: &mut Harness, server: &str, healthy: bool) {
    h.balancer
        .set_health("hls", addr(server), healthy)
        .expect("set_health");
}

#[test]
fn a_backup_gets_exactly_the_slots_of_its_dead_primary_and_gives_them_back() {
    let mut h = hls(&["10.0.0.11", "10.0.0.12", "10.0.0.13"]);
    h.balancer
        .set_failover(
            "hls",
            &settings(&[("10.0.0.11", "10.0.0.21")], &[]),
            &Harness::loopback_forwarding,
        )
        .expect("set_failover");
    let healthy = h.balancer.live_table("hls").unwrap();
    let names = ids(&h);
    assert!(
        !healthy.iter().any(|id| names[id] == addr("10.0.0.21")),
        "a standby gets no slot while its primary is up"
    );

    set_health(&mut h, "10.0.0.11", false);
    let standing_in = h.balancer.live_table("hls").unwrap();
    for (before, after) in healthy.iter().zip(&standing_in) {
        let expected = if names[before] == addr("10.0.0.11") {
            addr("10.0.0.21")
        } else {
            names[before]
        };
        assert_eq!(names[after], expected);
    }
    let mut saw_backup = false;
    for port in 40000..40200 {
        let to = new_flow(&h, port).expect("forwarded");
        assert_ne!(
            to,
            addr("10.0.0.11"),
            "no new flow reaches the dead primary"
        );
        saw_backup |= to == addr("10.0.0.21");
    }
    assert!(saw_backup, "the backup takes new flows");

    set_health(&mut h, "10.0.0.11", true);
    assert_eq!(
        h.balancer.live_table("hls").unwrap(),
        healthy,
        "every slot is given back"
    );
    assert_eq!(
        new_flow(&h, 40300).map(|a| a != addr("10.0.0.21")),
        Some(true)
    );
}

#[test]
fn a_dead_primary_whose_backup_is_dead_too_leaves_the_table() {
    let mut h = hls(&["10.0.0.11", "10.0.0.12"]);
    h.balancer
        .set_failover(
            "hls",
            &settings(&[("10.0.0.11", "10.0.0.21")], &[]),
            &Harness::loopback_forwarding,
        )
        .expect("set_failover");
    set_health(&mut h, "10.0.0.21", false);
    set_health(&mut h, "10.0.0.11", false);
    for port in 41000..41100 {
        assert_eq!(new_flow(&h, port), Some(addr("10.0.0.12")));
    }
}

#[test]
fn the_fallback_pool_takes_new_flows_only_while_every_primary_is_down() {
    let mut h = hls(&["10.0.0.11", "10.0.0.12"]);
    h.balancer
        .set_failover(
            "hls",
            &settings(&[], &["10.0.0.31", "10.0.0.32"]),
            &Harness::loopback_forwarding,
        )
        .expect("set_failover");
    let fallback = [addr("10.0.0.31"), addr("10.0.0.32")];
    for port in 42000..42050 {
        assert!(!fallback.contains(&new_flow(&h, port).expect("forwarded")));
    }
    set_health(&mut h, "10.0.0.11", false);
    assert_eq!(
        h.balancer.service("hls").unwrap().serving,
        Serving::Primaries
    );
    set_health(&mut h, "10.0.0.12", false);
    assert_eq!(
        h.balancer.service("hls").unwrap().serving,
        Serving::Fallback
    );
    let mut seen = std::collections::BTreeSet::new();
    for port in 42100..42200 {
        let to = new_flow(&h, port).expect("forwarded");
        assert!(fallback.contains(&to), "{to}");
        seen.insert(to);
    }
    assert_eq!(seen.len(), 2, "both sorry servers share the flows");

    set_health(&mut h, "10.0.0.12", true);
    assert_eq!(
        h.balancer.service("hls").unwrap().serving,
        Serving::Primaries
    );
    for port in 42300..42350 {
        assert_eq!(new_flow(&h, port), Some(addr("10.0.0.12")));
    }
}

#[test]
fn with_every_server_down_new_flows_are_dropped() {
    let mut h = hls(&["10.0.0.11"]);
    h.balancer
        .set_failover(
            "hls",
            &settings(&[("10.0.0.11", "10.0.0.21")], &["10.0.0.31"]),
            &Harness::loopback_forwarding,
        )
        .expect("set_failover");
    for server in ["10.0.0.11", "10.0.0.21", "10.0.0.31"] {
        set_health(&mut h, server, false);
    }
    assert_eq!(h.balancer.service("hls").unwrap().serving, Serving::Nothing);
    let run = h.run(&Ipv4Frame::tcp(CLIENT, 43000, VIP, 8080).build());
    assert_eq!(run.action, XDP_DROP);
}

#[test]
fn a_standby_dropped_from_the_settings_leaves_the_table_and_loses_its_entry() {
    let mut h = hls(&["10.0.0.11", "10.0.0.12"]);
    h.balancer
        .set_failover(
            "hls",
            &settings(&[("10.0.0.11", "10.0.0.21")], &[]),
            &Harness::loopback_forwarding,
        )
        .expect("set_failover");
    set_health(&mut h, "10.0.0.11", false);
    let backup_id = h.balancer.service("hls").unwrap().standbys[&addr("10.0.0.21")].id;
    assert!(h.balancer.live_table("hls").unwrap().contains(&backup_id));
    assert_ne!(
        h.balancer.dataplane().backend(backup_id).unwrap().flags & BACKEND_F_VALID,
        0
    );

    h.balancer
        .set_failover("hls", &settings(&[], &[]), &Harness::loopback_forwarding)
        .expect("set_failover");
    assert!(!h.balancer.live_table("hls").unwrap().contains(&backup_id));
    assert_eq!(
        h.balancer.dataplane().backend(backup_id).unwrap().flags & BACKEND_F_VALID,
        0
    );
    assert!(h.balancer.service("hls").unwrap().standbys.is_empty());
    for port in 44000..44050 {
        assert_eq!(new_flow(&h, port), Some(addr("10.0.0.12")));
    }
}

#[test]
fn a_standby_kept_across_new_settings_keeps_its_id_and_health() {
    let mut h = hls(&["10.0.0.11", "10.0.0.12"]);
    let first = settings(&[("10.0.0.11", "10.0.0.21")], &[]);
    h.balancer
        .set_failover("hls", &first, &Harness::loopback_forwarding)
        .expect("set_failover");
    set_health(&mut h, "10.0.0.21", false);
    let before = h.balancer.service("hls").unwrap().standbys[&addr("10.0.0.21")].clone();
    let second = settings(
        &[("10.0.0.11", "10.0.0.21"), ("10.0.0.12", "10.0.0.21")],
        &[],
    );
    h.balancer
        .set_failover("hls", &second, &Harness::loopback_forwarding)
        .expect("set_failover");
    let after = &h.balancer.service("hls").unwrap().standbys[&addr("10.0.0.21")];
    assert_eq!(
        (after.id, after.healthy, after.epoch),
        (before.id, false, before.epoch)
    );
}

#[test]
fn a_backend_added_at_run_time_starts_in_its_checks_initial_state() {
    let mut h = hls(&["10.0.0.11"]);
    let mut with_check = settings(&[], &[]);
    with_check.check = Some(HealthCheck {
        kind: CheckKind::Tcp,
        port: 8080,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(800),
        rise: 3,
        fall: 2,
        initial_state: HealthState::Down,
    });
    h.balancer
        .set_failover("hls", &with_check, &Harness::loopback_forwarding)
        .expect("set_failover");
    let newcomer = Backend {
        address: addr("10.0.0.14"),
        weight: 1,
        mac: None,
        vlan: None,
    };
    h.balancer
        .add_backend("hls", &newcomer, Harness::loopback_forwarding(&newcomer))
        .expect("add_backend");
    let state = &h.balancer.service("hls").unwrap().backends[&addr("10.0.0.14")];
    assert!(!state.healthy && !state.in_table());
    for port in 45000..45050 {
        assert_eq!(
            new_flow(&h, port),
            Some(addr("10.0.0.11")),
            "no flow reaches an unchecked newcomer"
        );
    }
    set_health(&mut h, "10.0.0.14", true);
    assert!((45100..45300).any(|port| new_flow(&h, port) == Some(addr("10.0.0.14"))));
}
