//! Flow-state sync between LBs against the real data plane (root only), through
//! BPF_PROG_TEST_RUN: the entries a peer tells are applied to the connection table and the
//! data plane follows them; the data plane hands every new entry (and only new ones, and
//! only while sync is on) to the agent through its ring buffer; a refresh walk lists the
//! flows this LB carried since the last walk, never the learnt ones.
//!
//! The session over real UDP (a `FlowSync` on 127.0.0.1 and a fake peer on 127.0.0.2,
//! with `status()` counters, refusals, the rate bound and the refresh timer) is in
//! `support/sync_session.rs`.

#[path = "support/sync_session.rs"]
mod session;
mod support;

use std::{
    net::{IpAddr, SocketAddr},
    thread,
    time::Duration,
};

use support::{
    frames::{Ipv4Frame, Ipv6Frame, tagged},
    harness::*,
};
use xdp_lb::{
    config::{FlowTable, Protocol},
    control::census::monotonic_ns,
    sync::{Directory, apply, live_since, wire::SyncEntry},
};
use xdp_lb_common::{
    FLOW_F_FIN, FLOW_F_LEARNT, FLOW_F_RST, FlowEvent, FlowKey, FlowValue, PROTO_TCP, PROTO_UDP,
    flow_stat,
};

const VIP: &str = "10.0.0.100";
const VIP_PORT: u16 = 1935;
const SERVICE: &str = "video-rtmp";
const CLIENT: &str = "192.168.1.50";
const BACKENDS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];
/// An address none of the service's backends has.
const STRANGER: &str = "10.0.0.99";
/// Offset of the TCP flags byte in the fixtures' frames (Ethernet, IPv4 without options).
const TCP_FLAGS: usize = 14 + 20 + 13;

fn rtmp() -> Harness {
    Harness::new(&[service(SERVICE, VIP, VIP_PORT, Protocol::Tcp, &BACKENDS)])
}

fn addr(a: &str) -> IpAddr {
    a.parse().unwrap()
}

fn client(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(addr(ip), port)
}

fn vip() -> SocketAddr {
    SocketAddr::new(addr(VIP), VIP_PORT)
}

fn syn(ip: &str, port: u16) -> Vec<u8> {
    Ipv4Frame::tcp(ip, port, VIP, VIP_PORT).build()
}

/// A later segment of the flow (ACK, no SYN).
fn ack(ip: &str, port: u16) -> Vec<u8> {
    let mut f = syn(ip, port);
    f[TCP_FLAGS] = 0x10;
    f
}

/// The flow's connection-table key, as sync names it.
fn key(ip: &str, port: u16) -> FlowKey {
    FlowKey::new(client(ip, port), vip(), PROTO_TCP, 0)
}

/// The handshake as the LB sees it (SYN, then the client's ACK, which makes the entry);
/// the backend both went to.
fn connect(h: &Harness, ip: &str, port: u16) -> IpAddr {
    let to = h.sent_to(&h.run(&syn(ip, port))).expect("SYN forwarded");
    assert_eq!(h.sent_to(&h.run(&ack(ip, port))), Some(to), "ACK after SYN");
    to
}

/// What a peer says of a flow from `ip`:`port` to the VIP.
fn entry(ip: &str, port: u16, backend: IpAddr, age_ms: u32) -> SyncEntry {
    SyncEntry {
        client: client(ip, port),
        vip: vip(),
        proto: PROTO_TCP,
        vlan: 0,
        backend,
        flags: 0,
        age_ms,
    }
}

/// A client port from `from` up whose new flow Maglev does not send to `backend`.
fn port_not_placed_on(h: &Harness, ip: &str, backend: IpAddr, from: u16) -> u16 {
    (from..from + 100)
        .find(|p| h.predict(SERVICE, ip, *p) != backend)
        .expect("Maglev spreads 100 ports over three backends")
}

fn stat(h: &Harness, slot: u32) -> u64 {
    h.flow_stats()[slot as usize].packets
}

/// The backend id and epoch the balancer gave `backend`.
fn placed(h: &Harness, backend: IpAddr) -> (u32, u32, u32) {
    h.placed(SERVICE, backend)
}

#[test]
fn a_peers_entry_applied_to_the_table_pins_its_flow_until_a_packet_of_it_makes_it_local() {
    let h = rtmp();
    let target = addr(BACKENDS[1]);
    let port = port_not_placed_on(&h, CLIENT, target, 41000);
    let maglev = h.predict(SERVICE, CLIENT, port);
    let directory = Directory::of(&h.balancer);
    let mut flows = h.balancer.dataplane().flows_handle().unwrap();

    let now = monotonic_ns();
    apply(
        &mut flows,
        &directory,
        &entry(CLIENT, port, target, 2500),
        now,
    )
    .expect("an entry naming a backend of a service this LB has");
    let (id, epoch, service_id) = placed(&h, target);
    let value = h.balancer.dataplane().flow(&key(CLIENT, port)).unwrap();
    assert_eq!(
        value,
        FlowValue {
            backend_id: id,
            backend_epoch: epoch,
            service_id,
            flags: FLOW_F_LEARNT,
            last_seen_ns: now - 2_500_000_000,
        }
    );

    // A FIN or RST the peer saw comes along.
    let mut closing = entry(CLIENT, port + 1000, target, 0);
    closing.flags = xdp_lb::sync::wire::FLAG_FIN | xdp_lb::sync::wire::FLAG_RST;
    apply(&mut flows, &directory, &closing, now).unwrap();
    let value = h
        .balancer
        .dataplane()
        .flow(&key(CLIENT, port + 1000))
        .unwrap();
    assert_eq!(value.flags, FLOW_F_LEARNT | FLOW_F_FIN | FLOW_F_RST);

    // The flow's next packet here goes where the peer said, not where Maglev would.
    let went = h.sent_to(&h.run(&ack(CLIENT, port)));
    assert_eq!(went, Some(target), "Maglev alone says {maglev}");
    assert_eq!(stat(&h, flow_stat::HIT), 1);
    assert_eq!(stat(&h, flow_stat::NEW), 0, "no entry of its own");
    let after = h.balancer.dataplane().flow(&key(CLIENT, port)).unwrap();
    assert_eq!(
        after.flags, 0,
        "a packet here makes the entry this LB's own"
    );
    assert_eq!((after.backend_id, after.backend_epoch), (id, epoch));
    assert!(
        after.last_seen_ns > now - 2_500_000_000,
        "touched: it was 2.5 s old"
    );
    println!(
        "port {port}: Maglev {maglev}, peer said {target}, sent to {target}; learnt flag cleared"
    );
}

#[test]
fn apply_refuses_unknown_services_and_backends_and_keeps_a_fresher_local_entry() {
    let h = rtmp();
    let directory = Directory::of(&h.balancer);
    let mut flows = h.balancer.dataplane().flows_handle().unwrap();
    let b0 = addr(BACKENDS[0]);

    let mut elsewhere = entry(CLIENT, 42000, b0, 0);
    elsewhere.vip = SocketAddr::new(addr(VIP), 8080);
    assert_eq!(
        apply(&mut flows, &directory, &elsewhere, monotonic_ns()),
        Err("unknown_service")
    );
    let on_vlan = SyncEntry {
        vlan: 7,
        ..entry(CLIENT, 42001, b0, 0)
    };
    assert_eq!(
        apply(&mut flows, &directory, &on_vlan, monotonic_ns()),
        Err("unknown_service"),
        "the service listens untagged only"
    );
    assert_eq!(
        apply(
            &mut flows,
            &directory,
            &entry(CLIENT, 42002, addr(STRANGER), 0),
            monotonic_ns()
        ),
        Err("unknown_backend")
    );
    assert!(
        h.balancer.dataplane().flows().is_empty(),
        "refused entries leave the table empty"
    );

    // A flow this LB carries, just seen here: an older word from a peer is refused.
    let local_to = connect(&h, CLIENT, 42003);
    let other = BACKENDS
        .iter()
        .map(|b| addr(b))
        .find(|b| *b != local_to)
        .unwrap();
    let local = h.balancer.dataplane().flow(&key(CLIENT, 42003)).unwrap();
    assert_eq!(
        apply(
            &mut flows,
            &directory,
            &entry(CLIENT, 42003, other, 5000),
            monotonic_ns()
        ),
        Err("local_fresher")
    );
    assert_eq!(
        h.balancer.dataplane().flow(&key(CLIENT, 42003)),
        Some(local),
        "the local entry is kept as it was"
    );
    assert_eq!(h.sent_to(&h.run(&ack(CLIENT, 42003))), Some(local_to));

    // A peer that saw the flow after this LB did (ECMP moved it there) wins.
    let later = monotonic_ns();
    assert!(later > local.last_seen_ns);
    apply(
        &mut flows,
        &directory,
        &entry(CLIENT, 42003, other, 0),
        later,
    )
    .unwrap();
    let learnt = h.balancer.dataplane().flow(&key(CLIENT, 42003)).unwrap();
    assert_eq!(learnt.backend_id, placed(&h, other).0);
    assert_eq!(learnt.flags, FLOW_F_LEARNT);
    assert_eq!(h.sent_to(&h.run(&ack(CLIENT, 42003))), Some(other));
    println!(
        "local entry on {local_to} kept against an older peer entry, replaced by a newer one on {other}"
    );
}

/// Every record waiting in the ring buffer, as the agent reads it.
fn drain(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<FlowEvent> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        assert!(
            item.len() >= std::mem::size_of::<FlowEvent>(),
            "short record"
        );
        // SAFETY: FlowEvent is plain old data and the length was checked.
        events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
    }
    events
}

#[test]
fn the_data_plane_hands_each_new_entry_to_the_agent_only_while_sync_is_on() {
    let mut h = rtmp();
    let mut ring = h.balancer.dataplane_mut().take_flow_events().unwrap();
    let directory = Directory::of(&h.balancer);
    assert!(!h.balancer.dataplane().sync_on(), "off at load");

    connect(&h, CLIENT, 43000);
    assert_eq!(stat(&h, flow_stat::NEW), 1);
    assert!(drain(&mut ring).is_empty(), "sync off: nothing handed over");
    assert_eq!(stat(&h, flow_stat::SYNC_QUEUED), 0);

    h.balancer.dataplane_mut().set_sync_on(true).unwrap();
    assert!(h.balancer.dataplane().sync_on());
    let to = h.sent_to(&h.run(&syn(CLIENT, 43001))).unwrap();
    assert!(drain(&mut ring).is_empty(), "a SYN makes no entry");
    assert_eq!(stat(&h, flow_stat::SYNC_QUEUED), 0);
    assert_eq!(h.sent_to(&h.run(&ack(CLIENT, 43001))), Some(to));
    let events = drain(&mut ring);
    assert_eq!(events.len(), 1, "the ACK made one entry");
    let (id, _, service_id) = placed(&h, to);
    let e = events[0];
    assert_eq!(e.key, key(CLIENT, 43001));
    assert_eq!((e.backend_id, e.service_id, e.flags), (id, service_id, 0));
    assert_eq!(
        directory.by_id(e.backend_id).map(|p| p.address),
        Some(to),
        "the agent names the backend the packet went to"
    );
    assert_eq!(stat(&h, flow_stat::SYNC_QUEUED), 1);

    // A hit on the entry is no new entry.
    h.run(&ack(CLIENT, 43001));
    assert!(drain(&mut ring).is_empty());

    // A flow's first packet here being a FIN: the entry (and its event) say so.
    let mut fin = ack(CLIENT, 43002);
    fin[TCP_FLAGS] = 0x11;
    let fin_to = h.sent_to(&h.run(&fin)).unwrap();
    let events = drain(&mut ring);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].key, key(CLIENT, 43002));
    assert_eq!(events[0].backend_id, placed(&h, fin_to).0);
    assert_eq!(events[0].flags, FLOW_F_FIN);
    assert_eq!(stat(&h, flow_stat::SYNC_QUEUED), 2);

    h.balancer.dataplane_mut().set_sync_on(false).unwrap();
    connect(&h, CLIENT, 43003);
    assert!(drain(&mut ring).is_empty(), "off again");
    assert_eq!(stat(&h, flow_stat::SYNC_QUEUED), 2);
    assert_eq!(stat(&h, flow_stat::SYNC_RING_FULL), 0);
    assert_eq!(stat(&h, flow_stat::NEW), 4);
    println!(
        "4 new entries, 2 handed over while sync was on (sync_queued {})",
        stat(&h, flow_stat::SYNC_QUEUED)
    );
}

#[test]
fn a_refresh_walk_lists_the_flows_carried_here_since_the_last_walk_and_never_learnt_ones() {
    let mut h = rtmp();
    let directory = Directory::of(&h.balancer);
    let mut flows = h.balancer.dataplane().flows_handle().unwrap();
    let timeouts = FlowTable::default();

    let old_to = connect(&h, CLIENT, 44000);
    // The coarse clock of the entries ticks every few ms: the next entries are surely
    // stamped after `since`.
    let since = monotonic_ns();
    thread::sleep(Duration::from_millis(30));
    let new_to = connect(&h, CLIENT, 44001);
    apply(
        &mut flows,
        &directory,
        &entry(CLIENT, 44002, addr(BACKENDS[2]), 0),
        monotonic_ns(),
    )
    .unwrap();
    // An entry closed by a RST 11 s ago is past its 10 s timeout.
    let (id, epoch, service_id) = placed(&h, addr(BACKENDS[0]));
    h.balancer
        .dataplane_mut()
        .set_flow(
            &key(CLIENT, 44003),
            FlowValue {
                backend_id: id,
                backend_epoch: epoch,
                service_id,
                flags: FLOW_F_RST,
                last_seen_ns: monotonic_ns() - 11_000_000_000,
            },
        )
        .unwrap();
    assert_eq!(h.balancer.dataplane().flows().len(), 4);

    let ports = |entries: &[SyncEntry]| {
        let mut p: Vec<u16> = entries.iter().map(|e| e.client.port()).collect();
        p.sort_unstable();
        p
    };
    let walked = live_since(&flows, &directory, since, &timeouts);
    assert_eq!(ports(&walked), [44001], "{walked:?}");
    let e = walked[0];
    assert_eq!(
        (e.client, e.vip, e.proto, e.vlan, e.backend, e.flags),
        (client(CLIENT, 44001), vip(), PROTO_TCP, 0, new_to, 0)
    );
    assert!(e.age_ms < 1000, "age {} ms", e.age_ms);

    // A new session's first walk: every live flow of this LB's own.
    let all = live_since(&flows, &directory, 0, &timeouts);
    assert_eq!(ports(&all), [44000, 44001], "{all:?}");

    // A packet of the old flow more than a second after its last touch moves its time on:
    // the next walk lists it again.
    thread::sleep(Duration::from_millis(1050));
    let since = monotonic_ns();
    thread::sleep(Duration::from_millis(30));
    assert_eq!(h.sent_to(&h.run(&ack(CLIENT, 44000))), Some(old_to));
    let walked = live_since(&flows, &directory, since, &timeouts);
    assert_eq!(ports(&walked), [44000], "{walked:?}");
    assert!(walked[0].age_ms < 1000);
    assert_eq!(walked[0].backend, old_to);
    println!(
        "walks listed {:?}, then {:?} (the learnt and the expired entries never)",
        ports(&all),
        ports(&walked)
    );
}

/// The flows of another LB's services: an IPv6 one, one on VLAN 100 and a UDP one, with
/// `extra` as one more backend of each when given.
fn mixed(extra: bool) -> Vec<xdp_lb::config::Service> {
    let with = |backends: &[&'static str], more: &'static str| {
        let mut b = backends.to_vec();
        if extra {
            b.push(more);
        }
        b
    };
    let six = service(
        "six",
        "2001:db8::100",
        1935,
        Protocol::Tcp,
        &with(&["2001:db8::11", "2001:db8::12"], "2001:db8::13"),
    );
    let mut tagged_hls = service(
        "hls",
        VIP,
        8080,
        Protocol::Tcp,
        &with(&["10.0.0.21", "10.0.0.22"], "10.0.0.23"),
    );
    tagged_hls.vlan = Some(100);
    let srt = service(
        "srt",
        VIP,
        9000,
        Protocol::Udp,
        &with(&["10.0.0.31", "10.0.0.32"], "10.0.0.33"),
    );
    if extra {
        // Another order: other service and backend ids than the first LB's.
        vec![srt, tagged_hls, six]
    } else {
        vec![six, tagged_hls, srt]
    }
}

/// A flow's next packet: IPv6 TCP, TCP on VLAN 100 or UDP, by `kind`.
fn mixed_packet(kind: usize, port: u16) -> Vec<u8> {
    match kind {
        0 => {
            let mut f = Ipv6Frame::tcp("2001:db8:1::50", port, "2001:db8::100", 1935).build();
            f[14 + 40 + 13] = 0x10;
            f
        }
        1 => {
            let mut f = Ipv4Frame::tcp(CLIENT, port, VIP, 8080).build();
            f[TCP_FLAGS] = 0x10;
            tagged(&f, &[(0x8100, 100)])
        }
        _ => Ipv4Frame::udp(CLIENT, port, VIP, 9000).build(),
    }
}

#[test]
fn what_one_lb_walks_another_lb_applies_and_each_flow_keeps_its_backend_across_them() {
    let first = Harness::new(&mixed(false));
    let second = Harness::new(&mixed(true));
    let mut sent = Vec::new();
    for kind in 0..3 {
        for port in 50000..50030 {
            let run = first.run(&mixed_packet(kind, port));
            sent.push(((kind, port), first.sent_to(&run).expect("forwarded")));
        }
    }
    let flows = first.balancer.dataplane().flows_handle().unwrap();
    let walked = live_since(
        &flows,
        &Directory::of(&first.balancer),
        0,
        &FlowTable::default(),
    );
    assert_eq!(walked.len(), 90, "every flow placed here");
    for e in &walked {
        let expected = match e.client.ip() {
            IpAddr::V6(_) => (addr("2001:db8::100"), 1935, PROTO_TCP, 0),
            IpAddr::V4(_) if e.proto == PROTO_UDP => (addr(VIP), 9000, PROTO_UDP, 0),
            IpAddr::V4(_) => (addr(VIP), 8080, PROTO_TCP, 100),
        };
        assert_eq!(
            (e.vip.ip(), e.vip.port(), e.proto, e.vlan),
            expected,
            "{e:?}"
        );
    }

    let directory = Directory::of(&second.balancer);
    let mut table = second.balancer.dataplane().flows_handle().unwrap();
    let now = monotonic_ns();
    for e in &walked {
        apply(&mut table, &directory, e, now).unwrap_or_else(|why| panic!("{e:?}: {why}"));
    }
    let mut moved_by_maglev = 0;
    for ((kind, port), to) in &sent {
        let there = second.sent_to(&second.run(&mixed_packet(*kind, *port)));
        assert_eq!(there, Some(*to), "flow {kind}/{port}");
        let maglev = match kind {
            0 => second.predict("six", "2001:db8:1::50", *port),
            1 => second.predict("hls", CLIENT, *port),
            _ => second.predict("srt", CLIENT, *port),
        };
        if maglev != *to {
            moved_by_maglev += 1;
        }
    }
    assert!(
        moved_by_maglev > 10,
        "the second LB's own table sends many elsewhere ({moved_by_maglev} of 90)"
    );
    assert_eq!(stat(&second, flow_stat::HIT), 90);
    assert_eq!(stat(&second, flow_stat::NEW), 0);
    println!(
        "90 flows (IPv6, VLAN 100, UDP) walked on one LB and applied on another: all kept \
         their backend, {moved_by_maglev} of them against that LB's Maglev table"
    );
}

#[test]
fn a_flow_placed_just_after_a_walk_starts_is_listed_by_the_next_walk() {
    let h = rtmp();
    let directory = Directory::of(&h.balancer);
    let flows = h.balancer.dataplane().flows_handle().unwrap();
    let timeouts = FlowTable::default();
    let mut since = 0;
    let mut missed = Vec::new();
    // As the refresh thread does: `started` read (a jiffy's overlap back), the walk, the
    // next walk from `started`.
    for port in 51000..51020 {
        let started = xdp_lb::control::census::coarse_floor_ns();
        live_since(&flows, &directory, since, &timeouts);
        since = started;
        connect(&h, CLIENT, port);
        let next = live_since(&flows, &directory, since, &timeouts);
        if !next.iter().any(|e| e.client.port() == port) {
            let stamped = h.balancer.dataplane().flow(&key(CLIENT, port)).unwrap();
            missed.push((port, since.saturating_sub(stamped.last_seen_ns)));
        }
    }
    println!("missed (port, ns stamped before the walk began): {missed:?}");
    assert!(
        missed.is_empty(),
        "{} of 20 flows placed after a walk began were not in the next walk",
        missed.len()
    );
}
