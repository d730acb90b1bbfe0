//! The connection table and client persistence, packet by packet through
//! BPF_PROG_TEST_RUN (root only): a flow keeps its backend while that backend is usable,
//! whatever happens to the Maglev table.

mod support;

use std::{collections::BTreeMap, net::IpAddr, thread, time::Duration};

use support::{frames::Ipv4Frame, harness::*};
use xdp_lb::config::{Backend, DownAction, FlowTable, Persistence, Protocol};
use xdp_lb_common::{
    FAMILY_IPV4, FLOW_TABLE_FLAGS, FlowKey, FlowValue, PROTO_TCP, addr_words,
    flow_hash::ports_word, flow_stat, port_raw,
};

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.168.1.50";
const BACKENDS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];

fn rtmp(backends: &[&str]) -> Harness {
    Harness::new(&[service("video-rtmp", VIP, 1935, Protocol::Tcp, backends)])
}

fn syn(client: &str, port: u16) -> Vec<u8> {
    Ipv4Frame::tcp(client, port, VIP, 1935).build()
}

/// A later segment of the flow (ACK, no SYN).
fn ack(client: &str, port: u16) -> Vec<u8> {
    let mut f = syn(client, port);
    f[14 + 20 + 13] = 0x10;
    f
}

fn key(client: &str, port: u16) -> FlowKey {
    FlowKey {
        src: addr_words(client.parse().unwrap()),
        dst: addr_words(VIP.parse().unwrap()),
        ports: ports_word(port_raw(port), port_raw(1935)),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        vlan: 0,
    }
}

fn addr(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// A fourth backend, 10.0.0.14, joins video-rtmp: Maglev sends a share of every flow's
/// 5-tuples there from now on.
fn add_fourth_backend(h: &mut Harness) {
    h.add_backend("video-rtmp", "10.0.0.14");
}

/// A connection's handshake as the LB sees it: the SYN, then the client's ACK, both to the
/// same backend; where it went.
fn connect(h: &Harness, client: &str, port: u16) -> Option<IpAddr> {
    let to = h.sent_to(&h.run(&syn(client, port)));
    assert_eq!(h.sent_to(&h.run(&ack(client, port))), to, "ACK after SYN");
    to
}

/// Opens `ports` flows from CLIENT; where each one went.
fn open_flows(h: &Harness, ports: std::ops::Range<u16>) -> BTreeMap<u16, IpAddr> {
    ports
        .map(|p| (p, connect(h, CLIENT, p).expect("sent to a backend")))
        .collect()
}

#[test]
fn a_connections_handshake_ack_creates_its_entry_naming_the_backend_its_syn_went_to() {
    let h = rtmp(&BACKENDS);
    let to = h.sent_to(&h.run(&syn(CLIENT, 5000))).unwrap();
    assert!(
        h.balancer.dataplane().flow(&key(CLIENT, 5000)).is_none(),
        "a SYN writes no entry"
    );
    assert_eq!(
        h.flow_stats()[flow_stat::SYN_NOT_REMEMBERED as usize].packets,
        1
    );
    assert_eq!(h.sent_to(&h.run(&ack(CLIENT, 5000))), Some(to));
    let entry = h
        .balancer
        .dataplane()
        .flow(&key(CLIENT, 5000))
        .expect("entry created");
    let backend_id = h.balancer.service("video-rtmp").unwrap().backends[&to].id;
    assert_eq!(entry.backend_id, backend_id);
    assert_eq!(entry.flags, 0, "an open flow");
    assert_eq!(h.flow_stats()[flow_stat::NEW as usize].packets, 1);
    h.run(&ack(CLIENT, 5000));
    assert_eq!(h.flow_stats()[flow_stat::HIT as usize].packets, 1);
}

#[test]
fn live_flows_keep_their_backend_when_the_table_changes_and_new_flows_follow_the_new_table() {
    let mut h = rtmp(&BACKENDS);
    let before = open_flows(&h, 6000..6300);
    // A fourth backend joins and the weights change: Maglev now sends many of these flows
    // elsewhere.
    add_fourth_backend(&mut h);
    h.balancer
        .set_weight("video-rtmp", addr(BACKENDS[0]), 5)
        .unwrap();
    let mut would_move = 0;
    for (port, old) in &before {
        if h.predict("video-rtmp", CLIENT, *port) != *old {
            would_move += 1;
        }
        assert_eq!(
            h.sent_to(&h.run(&ack(CLIENT, *port))),
            Some(*old),
            "flow from port {port} moved"
        );
    }
    assert!(
        would_move > 100,
        "the change moves many flows in the table ({would_move} of 300)"
    );
    for port in 7000..7100 {
        let to = h.sent_to(&h.run(&syn(CLIENT, port))).unwrap();
        assert_eq!(
            to,
            h.predict("video-rtmp", CLIENT, port),
            "new flow from port {port}"
        );
    }
}

#[test]
fn a_drained_backend_keeps_its_flows_and_gets_no_new_ones() {
    let mut h = rtmp(&BACKENDS);
    let before = open_flows(&h, 8000..8300);
    let drained = addr(BACKENDS[1]);
    let on_drained: Vec<u16> = before
        .iter()
        .filter(|(_, b)| **b == drained)
        .map(|(p, _)| *p)
        .collect();
    assert!(!on_drained.is_empty());
    h.balancer.set_weight("video-rtmp", drained, 0).unwrap();
    for port in &on_drained {
        assert_eq!(
            h.sent_to(&h.run(&ack(CLIENT, *port))),
            Some(drained),
            "flow {port} left the drained backend"
        );
    }
    for port in 9000..9300 {
        assert_ne!(
            h.sent_to(&h.run(&syn(CLIENT, port))),
            Some(drained),
            "new flow {port} went to the drained backend"
        );
    }
}

#[test]
fn with_rebalance_a_flow_whose_backend_is_withdrawn_is_balanced_afresh_and_its_entry_replaced() {
    let mut svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    svc.when_backend_down = DownAction::Rebalance;
    let mut h = Harness::new(&[svc]);
    let before = open_flows(&h, 10000..10300);
    let dead = addr(BACKENDS[2]);
    let on_dead: Vec<u16> = before
        .iter()
        .filter(|(_, b)| **b == dead)
        .map(|(p, _)| *p)
        .collect();
    assert!(!on_dead.is_empty());
    h.balancer.set_health("video-rtmp", dead, false).unwrap();
    for port in &on_dead {
        let to = h.sent_to(&h.run(&ack(CLIENT, *port))).unwrap();
        assert_ne!(to, dead, "flow {port} still sent to the withdrawn backend");
        assert_eq!(to, h.predict("video-rtmp", CLIENT, *port));
        let entry = h.balancer.dataplane().flow(&key(CLIENT, *port)).unwrap();
        assert_eq!(
            entry.backend_id,
            h.balancer.service("video-rtmp").unwrap().backends[&to].id,
            "entry replaced"
        );
    }
    assert_eq!(
        h.flow_stats()[flow_stat::STALE as usize].packets as usize,
        on_dead.len()
    );
    // Flows on healthy backends did not move.
    for (port, old) in before.iter().filter(|(_, b)| **b != dead) {
        assert_eq!(h.sent_to(&h.run(&ack(CLIENT, *port))), Some(*old));
    }
}

#[test]
fn a_removed_backends_flows_never_follow_its_reused_id_to_a_new_backend() {
    let mut h = rtmp(&BACKENDS);
    let before = open_flows(&h, 11000..11300);
    let removed = addr(BACKENDS[0]);
    let old_id = h.balancer.service("video-rtmp").unwrap().backends[&removed].id;
    h.balancer.remove_backend("video-rtmp", removed).unwrap();
    let newcomer = Backend {
        address: addr("10.0.0.99"),
        weight: 1,
        mac: None,
        vlan: None,
    };
    h.balancer
        .add_backend(
            "video-rtmp",
            &newcomer,
            Harness::loopback_forwarding(&newcomer),
        )
        .unwrap();
    assert_eq!(
        h.balancer.service("video-rtmp").unwrap().backends[&newcomer.address].id,
        old_id,
        "the id was reused"
    );
    let mut stale = 0;
    for (port, old) in &before {
        let to = h.sent_to(&h.run(&ack(CLIENT, *port))).unwrap();
        if *old == removed {
            stale += 1;
            assert_eq!(
                to,
                h.predict("video-rtmp", CLIENT, *port),
                "flow {port} balanced afresh"
            );
        } else {
            assert_eq!(to, *old);
        }
    }
    assert_eq!(h.flow_stats()[flow_stat::STALE as usize].packets, stale);
}

#[test]
fn a_tcp_segment_without_syn_and_without_an_entry_is_counted_as_a_table_miss() {
    let h = rtmp(&BACKENDS);
    h.run(&ack(CLIENT, 12000));
    assert_eq!(
        h.flow_stats()[flow_stat::TCP_MISS_NO_SYN as usize].packets,
        1
    );
    h.run(&syn(CLIENT, 12001));
    assert_eq!(
        h.flow_stats()[flow_stat::TCP_MISS_NO_SYN as usize].packets,
        1
    );
}

/// Every CPU reads the coarse clock once a jiffy and keeps the reading (`clock_cache`): an
/// entry made on any CPU is stamped with the clock of the moment, within the agent's lag
/// (`COARSE_CLOCK_LAG_NS`), the first time and again once that CPU's last reading is many
/// jiffies old.
#[test]
fn every_cpus_entries_are_stamped_with_the_clock_of_the_moment() {
    use xdp_lb::control::census::{COARSE_CLOCK_LAG_NS, monotonic_ns};
    thread::spawn(|| {
        let h = rtmp(&BACKENDS);
        let mut port = 24_000;
        for round in 0..3 {
            on_every_cpu(|cpu| {
                let before = monotonic_ns();
                connect(&h, CLIENT, port);
                let after = monotonic_ns();
                let stamp = h
                    .balancer
                    .dataplane()
                    .flow(&key(CLIENT, port))
                    .expect("the handshake's entry")
                    .last_seen_ns;
                assert!(
                    stamp <= after && stamp >= before.saturating_sub(COARSE_CLOCK_LAG_NS),
                    "round {round}, CPU {cpu}: entry stamped {stamp}, made between {before} and \
                     {after} (monotonic ns)"
                );
                port += 1;
            });
            // Many jiffies at any HZ: every CPU's last reading is stale by then.
            thread::sleep(Duration::from_millis(120));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn an_idle_flow_is_forgotten_after_its_timeout() {
    let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    let table = FlowTable {
        tcp_timeout_s: 1,
        ..FlowTable::default()
    };
    let h = Harness::with_flow_table(&[svc], table, &Harness::loopback_forwarding);
    connect(&h, CLIENT, 13000);
    h.run(&ack(CLIENT, 13000));
    assert_eq!(h.flow_stats()[flow_stat::EXPIRED as usize].packets, 0);
    thread::sleep(Duration::from_millis(1500));
    h.run(&ack(CLIENT, 13000));
    assert_eq!(h.flow_stats()[flow_stat::EXPIRED as usize].packets, 1);
}

fn persistent(prefix_len: u8) -> Harness {
    let mut svc = service("video-hls", VIP, 1935, Protocol::Tcp, &BACKENDS);
    svc.persistence = Some(Persistence {
        timeout_s: 300,
        prefix_len,
    });
    Harness::new(&[svc])
}

#[test]
fn with_persistence_every_connection_of_a_client_lands_on_one_backend() {
    let h = persistent(32);
    let first = connect(&h, CLIENT, 14000).unwrap();
    for port in 14001..14100 {
        assert_eq!(
            connect(&h, CLIENT, port),
            Some(first),
            "connection from port {port}"
        );
    }
    // Its SYN and its ACK each find the client's backend.
    assert_eq!(
        h.flow_stats()[flow_stat::PERSIST_HIT as usize].packets,
        2 * 99
    );
    // Other clients are still spread.
    let others: std::collections::BTreeSet<IpAddr> = (1..60u8)
        .map(|i| connect(&h, &format!("192.168.7.{i}"), 14000).unwrap())
        .collect();
    assert_eq!(others.len(), 3);
}

#[test]
fn a_persistence_netmask_keeps_a_whole_client_network_on_one_backend() {
    let h = persistent(24);
    let first = connect(&h, "192.168.9.1", 15000).unwrap();
    for i in 2..100u8 {
        assert_eq!(connect(&h, &format!("192.168.9.{i}"), 15000), Some(first));
    }
}

#[test]
fn a_persistent_client_whose_backend_died_is_moved() {
    let mut h = persistent(32);
    let first = connect(&h, CLIENT, 16000).unwrap();
    h.balancer.set_health("video-hls", first, false).unwrap();
    let moved = connect(&h, CLIENT, 16001).unwrap();
    assert_ne!(moved, first);
    for port in 16002..16020 {
        assert_eq!(
            connect(&h, CLIENT, port),
            Some(moved),
            "the client stays on its new backend"
        );
    }
}

/// Ports of `flows` that went to `backend`.
fn ports_on(flows: &BTreeMap<u16, IpAddr>, backend: IpAddr) -> Vec<u16> {
    flows
        .iter()
        .filter(|(_, b)| **b == backend)
        .map(|(p, _)| *p)
        .collect()
}

#[test]
fn a_backend_taken_down_keeps_its_established_flows_by_default_and_gets_no_new_ones() {
    let mut h = rtmp(&BACKENDS);
    let before = open_flows(&h, 17000..17300);
    let down = addr(BACKENDS[2]);
    let on_down = ports_on(&before, down);
    assert!(!on_down.is_empty());
    // A false positive of its health check: the streams on it must not be reset.
    h.balancer.set_health("video-rtmp", down, false).unwrap();
    for port in &on_down {
        assert_eq!(
            h.sent_to(&h.run(&ack(CLIENT, *port))),
            Some(down),
            "established flow {port} left the server marked down"
        );
    }
    for port in 18000..18300 {
        let to = h.sent_to(&h.run(&syn(CLIENT, port))).unwrap();
        assert_ne!(to, down, "new flow {port} went to the down server");
        assert_eq!(to, h.predict("video-rtmp", CLIENT, port));
    }
    // Back up: it takes new flows again.
    h.balancer.set_health("video-rtmp", down, true).unwrap();
    assert!(
        (19000..19300).any(|p| h.sent_to(&h.run(&syn(CLIENT, p))) == Some(down)),
        "the recovered server takes new flows"
    );
}

#[test]
fn a_syn_reusing_the_5_tuple_of_a_drained_backends_flow_gets_a_fresh_choice() {
    let mut h = rtmp(&BACKENDS);
    let before = open_flows(&h, 20000..20300);
    let drained = addr(BACKENDS[0]);
    let on_drained = ports_on(&before, drained);
    assert!(!on_drained.is_empty());
    h.balancer.set_weight("video-rtmp", drained, 0).unwrap();
    let stale_before = h.flow_stats()[flow_stat::STALE as usize].packets;
    for port in &on_drained {
        // The old connection's segments still reach it ...
        assert_eq!(h.sent_to(&h.run(&ack(CLIENT, *port))), Some(drained));
        // ... but a new connection from the same client port (a new SYN) does not.
        let to = h.sent_to(&h.run(&syn(CLIENT, *port))).unwrap();
        assert_ne!(
            to, drained,
            "a new connection on port {port} went to the drained server"
        );
        assert_eq!(to, h.predict("video-rtmp", CLIENT, *port));
        // The entry now names the new choice: the new connection's segments follow it.
        assert_eq!(h.sent_to(&h.run(&ack(CLIENT, *port))), Some(to));
    }
    assert_eq!(
        h.flow_stats()[flow_stat::STALE as usize].packets - stale_before,
        on_drained.len() as u64
    );
    // Flows on the other servers are untouched by their SYN retransmissions.
    for (port, old) in before.iter().filter(|(_, b)| **b != drained) {
        assert_eq!(h.sent_to(&h.run(&syn(CLIENT, *port))), Some(*old));
    }
}

#[test]
fn a_persistent_client_of_a_drained_backend_keeps_its_streams_and_opens_new_ones_elsewhere() {
    let mut h = persistent(32);
    let first = connect(&h, CLIENT, 21000).unwrap();
    h.balancer.set_weight("video-hls", first, 0).unwrap();
    assert_eq!(
        h.sent_to(&h.run(&ack(CLIENT, 21000))),
        Some(first),
        "the live stream stays"
    );
    let moved = connect(&h, CLIENT, 21001).unwrap();
    assert_ne!(
        moved, first,
        "persistence must not send a new connection to a drained server"
    );
    for port in 21002..21020 {
        assert_eq!(
            connect(&h, CLIENT, port),
            Some(moved),
            "the client persists on its new server"
        );
    }
}

#[test]
fn an_entry_touched_by_another_cpu_with_a_later_clock_is_not_expired() {
    let mut h = rtmp(&BACKENDS);
    let to = connect(&h, CLIENT, 22000).unwrap();
    let k = key(CLIENT, 22000);
    let mut entry = h.balancer.dataplane().flow(&k).unwrap();
    // Another CPU read the clock after this one and touched the entry first.
    entry.last_seen_ns += 2_000_000_000;
    h.balancer.dataplane_mut().set_flow(&k, entry).unwrap();
    assert_eq!(h.sent_to(&h.run(&ack(CLIENT, 22000))), Some(to));
    assert_eq!(h.flow_stats()[flow_stat::EXPIRED as usize].packets, 0);
    assert_eq!(h.flow_stats()[flow_stat::HIT as usize].packets, 1);
}

#[test]
fn a_flow_with_packets_more_often_than_its_short_timeout_never_expires() {
    let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    let table = FlowTable {
        tcp_timeout_s: 1,
        ..FlowTable::default()
    };
    let h = Harness::with_flow_table(&[svc], table, &Harness::loopback_forwarding);
    connect(&h, CLIENT, 23000);
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(400));
        h.run(&ack(CLIENT, 23000));
    }
    assert_eq!(h.flow_stats()[flow_stat::EXPIRED as usize].packets, 0);
    assert_eq!(h.flow_stats()[flow_stat::HIT as usize].packets, 6);
}

#[test]
fn a_backend_with_a_weight_but_no_maglev_slot_is_reported_as_no_slot_and_gets_none() {
    let mut svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    svc.maglev_size = 251;
    for (b, weight) in svc.backends.iter_mut().zip([1000, 1000, 1]) {
        b.weight = weight;
    }
    let h = Harness::new(&[svc]);
    let light = addr(BACKENDS[2]);
    let report = xdp_lb::control::report::status(&h.balancer, &Default::default());
    let state = |a: IpAddr| {
        let b = report.services[0]
            .backends
            .iter()
            .find(|b| b.address == a)
            .unwrap();
        (b.state.clone(), b.slots)
    };
    assert_eq!(state(light), ("no-slot".to_owned(), 0), "never a plain up");
    assert_eq!(state(addr(BACKENDS[0])).0, "up");
    assert!(
        (24000..24300).all(|p| h.sent_to(&h.run(&syn(CLIENT, p))) != Some(light)),
        "it really gets no new flow"
    );
}

/// A segment of the flow with these TCP flags.
fn segment(client: &str, port: u16, flags: u8) -> Vec<u8> {
    let mut f = syn(client, port);
    f[14 + 20 + 13] = flags;
    f
}

const FIN_ACK: u8 = 0x11;
const RST_ACK: u8 = 0x14;

#[test]
fn a_flood_of_spoofed_syns_several_times_the_table_evicts_no_established_flow() {
    let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    let table = FlowTable {
        size: 4096,
        ..FlowTable::default()
    };
    let mut h = Harness::with_flow_table(&[svc], table, &Harness::loopback_forwarding);
    let established = open_flows(&h, 25000..25200);
    // Four times the table from 16384 spoofed sources, each a SYN never followed by an ACK.
    let flood = 4 * 4096u32;
    for i in 0..flood {
        let source = format!("100.{}.{}.{}", 64 + (i >> 16), (i >> 8) & 0xff, i & 0xff);
        assert_eq!(
            h.run(&syn(&source, 1024 + (i % 60000) as u16)).action,
            XDP_TX
        );
    }
    assert!(
        h.flow_stats()[flow_stat::SYN_NOT_REMEMBERED as usize].packets >= u64::from(flood),
        "every spoofed SYN counted"
    );
    // A backend joins during the flood: Maglev alone would now move some established flows.
    add_fourth_backend(&mut h);
    let would_move = established
        .iter()
        .filter(|(port, old)| h.predict("video-rtmp", CLIENT, **port) != **old)
        .count();
    assert!(would_move > 20, "the new table moves {would_move} of 200");
    for (port, old) in &established {
        assert_eq!(
            h.sent_to(&h.run(&ack(CLIENT, *port))),
            Some(*old),
            "established flow {port} moved after the flood"
        );
    }
    assert_eq!(
        h.flow_stats()[flow_stat::TCP_MISS_NO_SYN as usize].packets,
        200,
        "only the 200 handshakes' ACKs missed"
    );
}

#[test]
fn a_closed_flows_entry_expires_after_its_short_timeout_while_a_live_one_stays() {
    let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    let table = FlowTable {
        tcp_fin_timeout_s: 1,
        tcp_close_timeout_s: 1,
        ..FlowTable::default()
    };
    let h = Harness::with_flow_table(&[svc], table, &Harness::loopback_forwarding);
    let (finished, reset, live) = (26000, 26001, 26002);
    for port in [finished, reset, live] {
        connect(&h, CLIENT, port);
    }
    h.run(&segment(CLIENT, finished, FIN_ACK));
    h.run(&segment(CLIENT, reset, RST_ACK));
    let flags = |port| {
        h.balancer
            .dataplane()
            .flow(&key(CLIENT, port))
            .unwrap()
            .flags
    };
    assert_eq!(flags(finished), xdp_lb_common::FLOW_F_FIN);
    assert_eq!(flags(reset), xdp_lb_common::FLOW_F_RST);
    assert_eq!(flags(live), 0);
    // The close's last ACK changes nothing more.
    h.run(&ack(CLIENT, finished));
    assert_eq!(h.flow_stats()[flow_stat::CLOSED as usize].packets, 2);

    thread::sleep(Duration::from_millis(1500));
    let expired = h.flow_stats()[flow_stat::EXPIRED as usize].packets;
    let hits = h.flow_stats()[flow_stat::HIT as usize].packets;
    h.run(&ack(CLIENT, live));
    assert_eq!(h.flow_stats()[flow_stat::HIT as usize].packets, hits + 1);
    h.run(&ack(CLIENT, finished));
    h.run(&ack(CLIENT, reset));
    assert_eq!(
        h.flow_stats()[flow_stat::EXPIRED as usize].packets,
        expired + 2,
        "both closed flows were forgotten"
    );
}

#[test]
fn a_syn_reusing_a_closed_flows_5_tuple_opens_its_entry_again() {
    let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    let h = Harness::new(&[svc]);
    let to = connect(&h, CLIENT, 27000);
    h.run(&segment(CLIENT, 27000, FIN_ACK));
    assert_eq!(connect(&h, CLIENT, 27000), to);
    let entry = h.balancer.dataplane().flow(&key(CLIENT, 27000)).unwrap();
    assert_eq!(
        entry.flags, 0,
        "the new connection has the long timeout again"
    );
}

#[test]
fn a_syn_or_a_rst_without_an_entry_creates_none() {
    let h = rtmp(&BACKENDS);
    h.run(&syn(CLIENT, 28000));
    h.run(&segment(CLIENT, 28001, RST_ACK));
    assert!(h.balancer.dataplane().flow(&key(CLIENT, 28000)).is_none());
    assert!(h.balancer.dataplane().flow(&key(CLIENT, 28001)).is_none());
    assert_eq!(h.flow_stats()[flow_stat::NEW as usize].packets, 0);
}

#[test]
fn the_table_has_exactly_its_configured_size_as_status_reports_and_one_cpu_can_fill_it() {
    // On its own thread, pinned to one CPU: BPF_PROG_TEST_RUN runs the program there.
    thread::spawn(|| {
        pin_to_cpu(0);
        let possible = aya::util::nr_cpus().unwrap() as u32;
        // Sizes that are no multiple of the CPUs (per-CPU LRU lists were rounded up to one).
        for configured in [4097, 1021] {
            let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
            let table = FlowTable {
                size: configured,
                ..FlowTable::default()
            };
            let h = Harness::with_flow_table(&[svc], table, &Harness::loopback_forwarding);
            let observed = xdp_lb::control::report::Observed {
                flow_table: table,
                ..Default::default()
            };
            let size = xdp_lb::control::report::status(&h.balancer, &observed).flow_table;
            assert_eq!(
                size,
                xdp_lb::control::protocol::FlowTableSize::new(configured, configured)
            );
            // What the kernel made, from its own map info: an LRU hash of exactly that size
            // with one LRU list for all CPUs.
            let info = {
                use aya::maps::IterableMap as _;
                let flows = h.balancer.dataplane().flows_handle().unwrap();
                flows.map().info().unwrap()
            };
            assert_eq!(info.max_entries(), configured);
            assert_eq!(info.map_flags(), FLOW_TABLE_FLAGS);
            assert_eq!(info.map_type().unwrap(), aya::maps::MapType::LruHash);

            // One CPU holds three quarters of the table, more than any per-CPU share of it,
            // and nothing is evicted (a CPU takes free entries 128 at a time and evicts only
            // when fewer are left, so a table within 128 of full may already evict).
            let flows = configured * 3 / 4;
            assert!(flows > configured / possible.max(2));
            for port in 10_000..10_000 + flows as u16 {
                assert!(h.sent_to(&h.run(&ack(CLIENT, port))).is_some());
            }
            assert_eq!(h.balancer.dataplane().flows().len(), flows as usize);
            for port in [10_000, 10_000 + flows as u16 - 1] {
                assert!(h.balancer.dataplane().flow(&key(CLIENT, port)).is_some());
            }
        }
    })
    .join()
    .unwrap();
}

/// An entry for `port` from CLIENT naming `backend`, as another writer than this program
/// leaves it (an earlier program, before the flow filter's first walk).
fn entry_for(h: &Harness, backend: &str) -> FlowValue {
    let (backend_id, backend_epoch, service_id) = h.placed("video-rtmp", addr(backend));
    FlowValue {
        backend_id,
        backend_epoch,
        service_id,
        flags: 0,
        last_seen_ns: xdp_lb::control::census::monotonic_ns(),
    }
}

/// A backend of BACKENDS other than `not`.
fn other_than(not: IpAddr) -> &'static str {
    BACKENDS.into_iter().find(|b| addr(b) != not).unwrap()
}

#[test]
fn a_syn_skips_the_connection_table_only_where_the_flow_filter_promises_no_entry() {
    let mut h = rtmp(&BACKENDS);
    let filter = h.balancer.dataplane().flow_filter();
    let mut flows = h.balancer.dataplane().flows_handle().unwrap();
    let skipped = |h: &Harness| h.flow_stats()[flow_stat::FILTER_SKIP as usize].packets;

    // Entries an earlier program made (it set no slot in this program's filter), each on
    // another backend than Maglev's: a new connection reusing the 5-tuple goes where the
    // entry says, as without the filter.
    let earlier: BTreeMap<u16, IpAddr> = (30000..30100)
        .map(|port| {
            let other = other_than(h.predict("video-rtmp", CLIENT, port));
            flows
                .insert(key(CLIENT, port), entry_for(&h, other), 0)
                .unwrap();
            (port, addr(other))
        })
        .collect();
    assert_eq!(filter.status().half, 0, "off until its first walk");
    assert_eq!(
        h.sent_to(&h.run(&syn(CLIENT, 40000))),
        Some(h.predict("video-rtmp", CLIENT, 40000))
    );
    assert_eq!(
        skipped(&h),
        0,
        "an unknown flow's SYN looks the table up while the filter is off"
    );

    assert_eq!(
        filter.renew(&flows).unwrap(),
        100,
        "the walk found the earlier entries"
    );
    for (port, backend) in &earlier {
        assert_eq!(
            h.sent_to(&h.run(&syn(CLIENT, *port))),
            Some(*backend),
            "a SYN reusing the earlier entry of port {port} goes to its backend"
        );
    }
    assert_eq!(skipped(&h), 0, "no SYN of a held flow skipped the table");
    let on = filter.status();
    assert_eq!(on.half, 1);
    assert!(on.set >= 90 && on.set <= 100, "{on:?}");

    // Unknown flows' SYNs skip it (all but those whose slot an entry shares), and go where
    // Maglev says; an unknown flow's first ACK looks it up (its entry is made then).
    for port in 41000..41200 {
        let sent = h.sent_to(&h.run(&syn(CLIENT, port)));
        assert_eq!(sent, Some(h.predict("video-rtmp", CLIENT, port)));
    }
    assert!(
        skipped(&h) >= 190,
        "{} of 200 unknown SYNs skipped the table",
        skipped(&h)
    );
    let before = skipped(&h);
    h.run(&ack(CLIENT, 41000));
    assert_eq!(skipped(&h), before, "a first ACK never skips the table");

    // Connections this program makes after the walk set their slots themselves: with the
    // Maglev table changed under them (a fourth backend), a SYN reusing one goes to the
    // backend its entry names.
    let made = open_flows(&h, 42000..42200);
    add_fourth_backend(&mut h);
    let moved: Vec<u16> = made
        .iter()
        .filter(|(port, b)| h.predict("video-rtmp", CLIENT, **port) != **b)
        .map(|(port, _)| *port)
        .collect();
    assert!(
        moved.len() >= 20,
        "Maglev moved {} of 200 flows",
        moved.len()
    );
    let before = skipped(&h);
    for port in &moved {
        assert_eq!(
            h.sent_to(&h.run(&syn(CLIENT, *port))),
            Some(made[port]),
            "a SYN reusing port {port}, whose entry this program made, goes to its backend"
        );
    }
    assert_eq!(skipped(&h), before);

    // A renewal switches halves and keeps every held flow's slot; once the entries are
    // gone, two renewals clear their slots and their SYNs skip the table again.
    filter.renew(&flows).unwrap();
    assert_eq!(filter.status().half, 2);
    for (port, backend) in &earlier {
        assert_eq!(h.sent_to(&h.run(&syn(CLIENT, *port))), Some(*backend));
    }
    let keys: Vec<FlowKey> = flows.keys().filter_map(Result::ok).collect();
    for k in &keys {
        flows.remove(k).unwrap();
    }
    filter.renew(&flows).unwrap();
    filter.renew(&flows).unwrap();
    assert_eq!(filter.status().set, 0, "{:?}", filter.status());
    let before = skipped(&h);
    for port in earlier.keys() {
        h.run(&syn(CLIENT, *port));
    }
    assert_eq!(
        skipped(&h) - before,
        100,
        "their slots cleared with the entries"
    );
}
