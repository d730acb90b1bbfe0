//! Client-source pools in the real data plane, frame by frame through BPF_PROG_TEST_RUN
//! (root only): the longest client prefix picks the pool, clients matching no rule use the
//! service's own backends, a drop rule refuses its clients, tagged frames follow the rules,
//! and a rule change moves new flows only.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use support::{
    frames::{Ipv4Frame, Ipv6Frame, LB_MAC, tagged},
    harness::*,
};
use xdp_lb::config::{
    Backend, BackendFailover, ClientAction, ClientRule, HashMode, Persistence, Pool, PoolFailover,
    Protocol, Service, ServiceFailover,
};
use xdp_lb_common::{SERVICE_F_HAS_RULES, ServiceKey, flow_stat, verdict};

const VIP: &str = "10.0.0.100";
const VIP6: &str = "fd00::100";
const PORT: u16 = 1935;

fn addr(a: &str) -> IpAddr {
    a.parse().expect("test address")
}

fn pool(name: &str, backends: &[&str]) -> Pool {
    Pool {
        name: name.to_owned(),
        maglev_size: 65537,
        backends: backends
            .iter()
            .map(|a| Backend {
                address: addr(a),
                weight: 1,
                mac: None,
                vlan: None,
            })
            .collect(),
    }
}

fn to_pool(prefix: &str, pool: &str) -> ClientRule {
    ClientRule {
        prefix: prefix.parse().expect("test prefix"),
        action: ClientAction::Pool(pool.to_owned()),
    }
}

fn drop_rule(prefix: &str) -> ClientRule {
    ClientRule {
        prefix: prefix.parse().expect("test prefix"),
        action: ClientAction::Drop,
    }
}

/// IPv4: overlapping /16, /24 and /32 rules, a drop rule and an exception back to the
/// default pool.
fn video() -> Service {
    let mut s = service(
        "video",
        VIP,
        PORT,
        Protocol::Tcp,
        &["10.0.0.11", "10.0.0.12", "10.0.0.13"],
    );
    s.pools = vec![
        pool("partners", &["10.0.0.31"]),
        pool("premium", &["10.0.0.21", "10.0.0.22"]),
        pool("vip", &["10.0.0.41"]),
    ];
    s.clients = vec![
        to_pool("198.51.0.0/16", "partners"),
        to_pool("198.51.100.0/24", "premium"),
        to_pool("198.51.100.7/32", "vip"),
        drop_rule("198.51.100.9/32"),
        to_pool("198.51.100.128/25", "default"),
    ];
    s
}

/// IPv6: the same shape.
fn video6() -> Service {
    let mut s = service(
        "video6",
        VIP6,
        PORT,
        Protocol::Tcp,
        &["fd00::11", "fd00::12"],
    );
    s.pools = vec![
        pool("partners", &["fd00::31"]),
        pool("premium", &["fd00::21", "fd00::22"]),
        pool("vip", &["fd00::41"]),
    ];
    s.clients = vec![
        to_pool("2001:db8::/32", "partners"),
        to_pool("2001:db8:7::/48", "premium"),
        to_pool("2001:db8:7::7/128", "vip"),
        drop_rule("2001:db8:7::9/128"),
    ];
    s
}

fn servers(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|a| addr(a)).collect()
}

fn syn(client: &str, port: u16) -> Vec<u8> {
    Ipv4Frame::tcp(client, port, VIP, PORT).build()
}

/// A later segment of the flow (ACK, no SYN).
fn ack(client: &str, port: u16) -> Vec<u8> {
    let mut f = syn(client, port);
    f[14 + 20 + 13] = 0x10;
    f
}

/// A connection's SYN, then its handshake-completing ACK (which creates its entry); where it
/// went.
fn connect(h: &Harness, client: &str, port: u16) -> Option<IpAddr> {
    let to = h.sent_to(&h.run(&syn(client, port)));
    assert_eq!(h.sent_to(&h.run(&ack(client, port))), to, "ACK after SYN");
    to
}

fn rewritten(input: &[u8], backend: IpAddr) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&backend_mac(backend).0);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

/// Where new flows of `client` from `ports` go, each checked against userspace's
/// prediction and the frame checked byte for byte.
fn spread(
    h: &Harness,
    service: &str,
    client: &str,
    ports: std::ops::Range<u16>,
) -> BTreeSet<IpAddr> {
    ports
        .map(|port| {
            let input = if client.contains(':') {
                Ipv6Frame::tcp(client, port, VIP6, PORT).build()
            } else {
                syn(client, port)
            };
            let run = h.run(&input);
            assert_eq!(run.action, XDP_TX, "{client}:{port}: verdict");
            let predicted = h.predict(service, client, port);
            assert_eq!(
                run.frame,
                rewritten(&input, predicted),
                "{client}:{port}: output frame"
            );
            predicted
        })
        .collect()
}

#[test]
fn the_longest_matching_prefix_picks_the_pool_of_an_ipv4_client() {
    let h = Harness::new(&[video()]);
    let cases = [
        ("198.51.3.3", "the /16", servers(&["10.0.0.31"])),
        (
            "198.51.100.50",
            "the /24 inside the /16",
            servers(&["10.0.0.21", "10.0.0.22"]),
        ),
        (
            "198.51.100.7",
            "the /32 inside the /24",
            servers(&["10.0.0.41"]),
        ),
        (
            "198.51.100.200",
            "the /25 sending it back to the default pool",
            servers(&["10.0.0.11", "10.0.0.12", "10.0.0.13"]),
        ),
    ];
    for (client, rule, pool) in cases {
        let got = spread(&h, "video", client, 40000..40200);
        assert_eq!(got, pool, "{client} follows {rule}");
    }
}

#[test]
fn the_longest_matching_prefix_picks_the_pool_of_an_ipv6_client() {
    let h = Harness::new(&[video6()]);
    let cases = [
        ("2001:db8:1::5", servers(&["fd00::31"])),
        ("2001:db8:7:1::5", servers(&["fd00::21", "fd00::22"])),
        ("2001:db8:7::7", servers(&["fd00::41"])),
        ("2001:db9::5", servers(&["fd00::11", "fd00::12"])),
    ];
    for (client, pool) in cases {
        assert_eq!(spread(&h, "video6", client, 40000..40200), pool, "{client}");
    }
}

#[test]
fn a_client_no_rule_matches_uses_the_services_own_backends() {
    let h = Harness::new(&[video()]);
    let own = servers(&["10.0.0.11", "10.0.0.12", "10.0.0.13"]);
    for client in ["192.0.2.1", "203.0.113.77", "198.52.0.1"] {
        assert_eq!(spread(&h, "video", client, 41000..41300), own, "{client}");
    }
}

#[test]
fn a_drop_rule_drops_its_clients_frames_and_counts_them() {
    let h = Harness::new(&[video(), video6()]);
    let refused = [
        syn("198.51.100.9", 42000),
        ack("198.51.100.9", 42001),
        Ipv6Frame::tcp("2001:db8:7::9", 42000, VIP6, PORT).build(),
    ];
    for frame in &refused {
        let run = h.run(frame);
        assert_eq!(run.action, XDP_DROP);
        assert_eq!(run.frame, *frame, "a dropped frame is not rewritten");
    }
    let v = h.verdicts();
    assert_eq!(v[verdict::DROP_CLIENT_RULE as usize].packets, 3);
    assert_eq!(v[verdict::DROP_NO_BACKEND as usize].packets, 0);
    assert_eq!(
        h.flow_stats()[flow_stat::NEW as usize].packets,
        0,
        "a refused client gets no connection-table entry"
    );
    // Its neighbours are served.
    assert_eq!(h.run(&syn("198.51.100.10", 42000)).action, XDP_TX);
    assert_eq!(
        h.balancer
            .predict("video", addr("198.51.100.9"), 42000)
            .unwrap(),
        None,
        "userspace predicts the drop too"
    );
}

#[test]
fn tagged_frames_follow_the_client_rules_with_their_tags_kept() {
    let h = Harness::new(&[video()]);
    for tags in [vec![(0x8100, 100)], vec![(0x88a8, 200), (0x8100, 100)]] {
        for (client, pool) in [
            ("198.51.100.7", servers(&["10.0.0.41"])),
            ("198.51.100.50", servers(&["10.0.0.21", "10.0.0.22"])),
        ] {
            for port in 43000..43050 {
                let input = tagged(&syn(client, port), &tags);
                let run = h.run(&input);
                assert_eq!(run.action, XDP_TX, "{client} with tags {tags:?}");
                let to = h.sent_to(&run).expect("a known backend");
                assert!(
                    pool.contains(&to),
                    "{client} with tags {tags:?} went to {to}"
                );
                assert_eq!(run.frame, rewritten(&input, to), "only the MACs change");
            }
        }
        let refused = tagged(&syn("198.51.100.9", 43000), &tags);
        assert_eq!(h.run(&refused).action, XDP_DROP, "tags {tags:?}");
    }
}

#[test]
fn a_flow_placed_before_a_rule_change_keeps_its_backend_while_new_flows_follow_the_new_rule() {
    let mut h = Harness::new(&[video()]);
    let client = "192.0.2.1";
    let before: BTreeMap<u16, IpAddr> = (44000..44100)
        .map(|p| (p, connect(&h, client, p).unwrap()))
        .collect();
    let own = servers(&["10.0.0.11", "10.0.0.12", "10.0.0.13"]);
    assert!(before.values().all(|b| own.contains(b)));

    // `xdp-lb client set 192.0.2.1/32 --pool premium`.
    h.balancer
        .set_client_rule("video", &to_pool("192.0.2.1/32", "premium"))
        .unwrap();
    for (port, backend) in &before {
        assert_eq!(
            h.sent_to(&h.run(&ack(client, *port))),
            Some(*backend),
            "the running flow from port {port} keeps its server"
        );
    }
    let premium = servers(&["10.0.0.21", "10.0.0.22"]);
    assert_eq!(spread(&h, "video", client, 45000..45100), premium);

    // And back: the rule removed, new flows use the default pool again.
    h.balancer
        .remove_client_rule("video", "192.0.2.1/32".parse().unwrap())
        .unwrap();
    assert_eq!(spread(&h, "video", client, 46000..46200), own);
}

#[test]
fn only_services_with_rules_look_rules_up_and_the_flag_follows_the_rules() {
    let plain = service("plain", VIP, 8080, Protocol::Tcp, &["10.0.0.11"]);
    let mut h = Harness::new(&[plain]);
    let key = ServiceKey::new(addr(VIP), 8080, 6);
    let flags = |h: &Harness| h.balancer.dataplane().service(&key).unwrap().flags;
    assert_eq!(flags(&h) & SERVICE_F_HAS_RULES, 0);
    h.balancer
        .set_client_rule("plain", &drop_rule("192.0.2.0/24"))
        .unwrap();
    assert_ne!(flags(&h) & SERVICE_F_HAS_RULES, 0);
    let refused = Ipv4Frame::tcp("192.0.2.5", 1000, VIP, 8080).build();
    assert_eq!(h.run(&refused).action, XDP_DROP);
    h.balancer
        .remove_client_rule("plain", "192.0.2.0/24".parse().unwrap())
        .unwrap();
    assert_eq!(flags(&h) & SERVICE_F_HAS_RULES, 0);
    assert_eq!(h.run(&refused).action, XDP_TX);
    assert!(
        h.balancer
            .set_client_rule("plain", &to_pool("192.0.2.0/24", "gold"))
            .is_err(),
        "a rule to a pool the service lacks is refused"
    );
}

#[test]
fn a_pool_without_a_usable_backend_follows_the_services_when_no_backend() {
    let mut h = Harness::new(&[video()]);
    for server in ["10.0.0.21", "10.0.0.22"] {
        h.balancer.set_health("video", addr(server), false).unwrap();
    }
    let run = h.run(&syn("198.51.100.50", 47000));
    assert_eq!(run.action, XDP_DROP);
    assert_eq!(h.verdicts()[verdict::DROP_NO_BACKEND as usize].packets, 1);
    // The other pools are untouched.
    assert_eq!(h.run(&syn("192.0.2.1", 47000)).action, XDP_TX);
    assert_eq!(h.run(&syn("198.51.100.7", 47000)).action, XDP_TX);
    h.balancer
        .set_health("video", addr("10.0.0.22"), true)
        .unwrap();
    assert_eq!(
        h.sent_to(&h.run(&syn("198.51.100.50", 47001))),
        Some(addr("10.0.0.22"))
    );
}

#[test]
fn a_pools_backup_takes_its_dead_primarys_slots_in_that_pool_only() {
    let mut h = Harness::new(&[video()]);
    let premium = PoolFailover {
        check: None,
        primaries: servers(&["10.0.0.21", "10.0.0.22"]),
        fallback: Vec::new(),
    };
    let failover = ServiceFailover {
        backends: [(
            addr("10.0.0.21"),
            BackendFailover {
                check: None,
                backup: Some(addr("10.0.0.29")),
                backup_vlan: None,
            },
        )]
        .into(),
        pools: [("premium".to_owned(), premium)].into(),
        ..ServiceFailover::default()
    };
    h.balancer
        .set_failover("video", &failover, &Harness::loopback_forwarding)
        .unwrap();
    let default_before = h.balancer.live_table("video").unwrap();
    let healthy = h.balancer.live_pool_table("video", "premium").unwrap();
    h.balancer
        .set_health("video", addr("10.0.0.21"), false)
        .unwrap();
    let standing_in = h.balancer.live_pool_table("video", "premium").unwrap();
    let state = h.balancer.service("video").unwrap();
    let (primary, backup) = (
        state.backends[&addr("10.0.0.21")].id,
        state.standbys[&addr("10.0.0.29")].id,
    );
    for (before, after) in healthy.iter().zip(&standing_in) {
        let expected = if *before == primary { backup } else { *before };
        assert_eq!(*after, expected);
    }
    assert_eq!(
        h.balancer.live_table("video").unwrap(),
        default_before,
        "the default pool's table did not change"
    );
    assert_eq!(state.pool_of(addr("10.0.0.29")), "premium");
}

#[test]
fn a_drained_pool_server_keeps_its_flows_and_gets_no_new_ones() {
    let mut h = Harness::new(&[video()]);
    let client = "198.51.100.50";
    let before: BTreeMap<u16, IpAddr> = (48000..48200)
        .map(|p| (p, connect(&h, client, p).unwrap()))
        .collect();
    let drained = addr("10.0.0.21");
    h.balancer.set_weight("video", drained, 0).unwrap();
    for (port, backend) in &before {
        assert_eq!(h.sent_to(&h.run(&ack(client, *port))), Some(*backend));
    }
    assert_eq!(
        spread(&h, "video", client, 49000..49200),
        servers(&["10.0.0.22"])
    );
}

#[test]
fn persistence_and_source_hashing_hold_within_a_clients_pool() {
    let mut persistent = video();
    persistent.persistence = Some(Persistence {
        timeout_s: 300,
        prefix_len: 32,
    });
    let mut h = Harness::new(&[persistent]);
    let client = "192.0.2.1";
    let first = connect(&h, client, 50000).unwrap();
    assert!(servers(&["10.0.0.11", "10.0.0.12", "10.0.0.13"]).contains(&first));
    for port in 50001..50050 {
        assert_eq!(
            connect(&h, client, port),
            Some(first),
            "persistent in its pool"
        );
    }
    h.balancer
        .set_client_rule("video", &to_pool("192.0.2.1/32", "premium"))
        .unwrap();
    let moved = connect(&h, client, 50100).unwrap();
    assert!(
        servers(&["10.0.0.21", "10.0.0.22"]).contains(&moved),
        "a client moved to another pool does not follow its old persistent server"
    );
    for port in 50101..50150 {
        assert_eq!(connect(&h, client, port), Some(moved));
    }

    let mut sourced = video();
    sourced.hash = HashMode::Source;
    let h = Harness::new(&[sourced]);
    for client in ["198.51.100.50", "198.51.100.51", "192.0.2.8"] {
        assert_eq!(
            spread(&h, "video", client, 51000..51100).len(),
            1,
            "{client}"
        );
    }
}

#[test]
fn the_kernels_trie_and_userspace_agree_on_every_clients_rule() {
    let h = Harness::new(&[video()]);
    let state = h.balancer.service("video").unwrap();
    for a in [3u8, 51, 100, 200] {
        for b in (0..=255u8).step_by(3) {
            let client = IpAddr::from([198, a, 100, b]);
            let kernel = h.balancer.dataplane().client_rule(state.id, client);
            let expected = state.client_rule(client).map(|(_, action)| match action {
                ClientAction::Drop => (0, xdp_lb_common::CLIENT_ACTION_DROP),
                ClientAction::Pool(name) => (
                    state.pool(name).unwrap().id,
                    xdp_lb_common::CLIENT_ACTION_POOL,
                ),
            });
            assert_eq!(kernel.map(|v| (v.pool_id, v.action)), expected, "{client}");
        }
    }
}

#[test]
fn a_server_moved_to_another_pool_keeps_its_running_flows() {
    let mut h = Harness::new(&[video()]);
    let client = "192.0.2.1";
    let before: BTreeMap<u16, IpAddr> = (52000..52300)
        .map(|p| (p, connect(&h, client, p).unwrap()))
        .collect();
    let moved = addr("10.0.0.13");
    assert!(before.values().any(|b| *b == moved));
    h.balancer.move_backend("video", moved, "premium").unwrap();
    for (port, backend) in &before {
        assert_eq!(
            h.sent_to(&h.run(&ack(client, *port))),
            Some(*backend),
            "flow {port} keeps its server"
        );
    }
    assert_eq!(
        spread(&h, "video", client, 53000..53300),
        servers(&["10.0.0.11", "10.0.0.12"])
    );
    assert_eq!(
        spread(&h, "video", "198.51.100.50", 53000..53300),
        servers(&["10.0.0.13", "10.0.0.21", "10.0.0.22"])
    );
    assert_eq!(
        h.balancer.service("video").unwrap().pool_of(moved),
        "premium"
    );
}

#[test]
fn a_pool_added_at_run_time_serves_once_a_rule_names_it_and_goes_once_none_does() {
    let mut h = Harness::new(&[video()]);
    // The harness sizes `maglev_tables` to the configured tables; a small one still fits.
    let gold = Pool {
        maglev_size: 251,
        ..pool("gold", &["10.0.0.51"])
    };
    h.balancer
        .add_pool("video", &gold, &Harness::loopback_forwarding)
        .unwrap();
    let client = "203.0.113.9";
    let own = servers(&["10.0.0.11", "10.0.0.12", "10.0.0.13"]);
    assert_eq!(spread(&h, "video", client, 54000..54100), own);
    h.balancer
        .set_client_rule("video", &to_pool("203.0.113.0/24", "gold"))
        .unwrap();
    assert_eq!(
        spread(&h, "video", client, 54100..54200),
        servers(&["10.0.0.51"])
    );
    assert!(
        h.balancer.remove_pool("video", "gold").is_err(),
        "a pool a rule names stays"
    );
    h.balancer
        .remove_client_rule("video", "203.0.113.0/24".parse().unwrap())
        .unwrap();
    let id = h.balancer.service("video").unwrap().backends[&addr("10.0.0.51")].id;
    h.balancer.remove_pool("video", "gold").unwrap();
    assert_eq!(spread(&h, "video", client, 55000..55100), own);
    assert_eq!(
        h.balancer.dataplane().backend(id).unwrap().flags,
        0,
        "the removed pool's server has no valid entry"
    );
}
