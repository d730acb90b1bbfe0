//! A real `FlowSync` session over UDP on loopback: this LB listens on 127.0.0.1, a fake
//! peer (a plain socket that encodes and decodes with `xdp_lb::sync::wire`) on 127.0.0.2,
//! both on the same free port; a stranger sends from 127.0.0.3. Included by `sync.rs`
//! (it needs `tokio` among the crate's dev-dependencies).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use xdp_lb::{
    config::SyncSettings,
    control::protocol::SyncStatus,
    sync::{
        FlowSync,
        wire::{self, Key, Kind, MAX_DATAGRAM, MAX_ENTRIES, Message},
    },
};

use super::*;

const LB: &str = "127.0.0.1";
const PEER: &str = "127.0.0.2";
const STRANGER_HOST: &str = "127.0.0.3";
const KEY_HEX: &str = "3c1f8e0a9b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";
const OTHER_KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// One session test at a time: they time datagrams, and the flood takes both CPUs.
static SERIAL: Mutex<()> = Mutex::new(());

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// This LB: the data plane, a `FlowSync` on it and the runtime its tasks run on.
struct Lb {
    // Dropped in this order: the session's tasks, then their runtime, then the data plane.
    sync: FlowSync,
    runtime: tokio::runtime::Runtime,
    h: Harness,
    settings: SyncSettings,
    _dir: tempfile::TempDir,
}

/// The fake peer on 127.0.0.2.
struct Peer {
    socket: UdpSocket,
    lb: SocketAddr,
    key: Key,
    sender: u64,
    seq: u64,
}

/// A `FlowSync` on `h`'s data plane, as the agent starts one: with `sync:` settings and
/// its bound socket, or without (the ring reader alone); and the runtime it runs on.
fn start_sync(
    h: &mut Harness,
    session: Option<(&SyncSettings, UdpSocket)>,
) -> (tokio::runtime::Runtime, FlowSync) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let directory = Directory::of(&h.balancer);
    let (settings, socket) = session.unzip();
    let sync = {
        let _inside = runtime.enter();
        FlowSync::start(
            h.balancer.dataplane_mut(),
            directory,
            settings,
            socket,
            FlowTable::default(),
        )
        .expect("starting flow sync")
    };
    (runtime, sync)
}

impl Lb {
    /// A session with `max_rate` and `refresh`, and the peer it listens to. `before` runs
    /// on the data plane before the session starts.
    fn start(max_rate: u32, refresh: Duration, before: impl FnOnce(&Harness)) -> (Lb, Peer) {
        let h = rtmp();
        before(&h);
        let dir = tempfile::tempdir().unwrap();
        let key_file: PathBuf = dir.path().join("sync.key");
        std::fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut settings = SyncSettings {
            peers: vec![addr(LB), addr(PEER)],
            listen: Some(addr(LB)),
            port: 0,
            key_file,
            refresh,
            max_rate,
            max_clock_skew: Duration::from_secs(10),
        };
        // A port free on both addresses: the session sends to the peers on its own port.
        let (peer_socket, lb_socket) = (0..100)
            .find_map(|_| {
                let peer = UdpSocket::bind((PEER, 0)).unwrap();
                settings.port = peer.local_addr().unwrap().port();
                xdp_lb::sync::bind(&settings).ok().map(|lb| (peer, lb))
            })
            .expect("a free port on 127.0.0.1 and 127.0.0.2");
        let mut h = h;
        let (runtime, sync) = start_sync(&mut h, Some((&settings, lb_socket)));
        assert!(h.balancer.dataplane().sync_on());
        let peer = Peer {
            socket: peer_socket,
            lb: SocketAddr::new(addr(LB), settings.port),
            key: Key::from_hex(KEY_HEX.as_bytes()).unwrap(),
            sender: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
            seq: 0,
        };
        (
            Lb {
                sync,
                runtime,
                h,
                settings,
                _dir: dir,
            },
            peer,
        )
    }

    fn status(&self) -> SyncStatus {
        self.sync
            .status(Some(&self.settings))
            .expect("status with sync on")
    }

    /// The status once `done` holds of it (within 2 s).
    fn wait(&self, what: &str, done: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}: {status:#?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn flow(&self, ip: &str, port: u16) -> Option<FlowValue> {
        self.h.balancer.dataplane().flow(&key(ip, port))
    }
}

impl Peer {
    /// The next datagram of entries, from this peer's incarnation, sent now.
    fn message(&mut self, entries: Vec<SyncEntry>) -> Message {
        self.seq += 1;
        Message {
            kind: Kind::Flows,
            sender: self.sender,
            seq: self.seq,
            sent_unix_ms: unix_ms(),
            entries,
        }
    }

    fn datagram(&mut self, entries: Vec<SyncEntry>) -> Vec<u8> {
        let message = self.message(entries);
        wire::encode(&self.key, &message).unwrap()
    }

    fn send_raw(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.lb).unwrap();
    }

    fn send(&mut self, entries: Vec<SyncEntry>) -> Vec<u8> {
        let d = self.datagram(entries);
        self.send_raw(&d);
        d
    }

    /// Every datagram the LB sends here until `until`, each checked authentic, with its
    /// arrival time.
    fn hear_until(&self, until: Instant) -> Vec<(Instant, Message)> {
        let mut heard = Vec::new();
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return heard;
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    assert_eq!(from, self.lb, "only the LB sends here");
                    let message = wire::decode(&self.key, &buf[..len])
                        .unwrap_or_else(|e| panic!("the LB's datagram: {e}"));
                    heard.push((Instant::now(), message));
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("receiving: {e}"),
            }
        }
    }
}

/// When each datagram heard carried an entry for `port`, and the entry.
fn sightings(heard: &[(Instant, Message)], port: u16) -> Vec<(Instant, SyncEntry)> {
    heard
        .iter()
        .flat_map(|(at, m)| m.entries.iter().map(move |e| (*at, *e)))
        .filter(|(_, e)| e.client.port() == port)
        .collect()
}

fn count(map: &BTreeMap<String, u64>, reason: &str) -> u64 {
    map.get(reason).copied().unwrap_or(0)
}

#[test]
fn a_peers_entry_arrives_over_udp_is_applied_and_the_flow_follows_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lb, mut peer) = Lb::start(1000, Duration::from_secs(30), |_| {});
    let target = addr(BACKENDS[2]);
    let port = port_not_placed_on(&lb.h, CLIENT, target, 45000);
    let maglev = lb.h.predict(SERVICE, CLIENT, port);
    // The flow filter on, as the agent has it a second after the attach: an entry applied
    // from now on must set its slot.
    let filter = lb.h.balancer.dataplane().flow_filter();
    filter
        .renew(&lb.h.balancer.dataplane().flows_handle().unwrap())
        .unwrap();

    let before = monotonic_ns();
    peer.send(vec![entry(CLIENT, port, target, 3000)]);
    let status = lb.wait("applied", |s| s.applied == 1);
    let after = monotonic_ns();
    let value = lb.flow(CLIENT, port).expect("the entry is in the table");
    let (id, epoch, service_id) = placed(&lb.h, target);
    assert_eq!(
        (value.backend_id, value.backend_epoch, value.service_id),
        (id, epoch, service_id)
    );
    assert_eq!(value.flags, FLOW_F_LEARNT);
    // 3 s before it was sent, give or take the millisecond of the send time's clock (the
    // transit, if counted, makes it older than 3 s before it was applied).
    assert!(
        (before - 3_001_000_000..=after - 3_000_000_000).contains(&value.last_seen_ns),
        "last seen {} ms before `before`",
        (before - value.last_seen_ns) / 1_000_000
    );
    assert_eq!((status.received, status.applied), (1, 1));
    assert!(status.rejected.is_empty(), "{:?}", status.rejected);
    assert!(status.datagrams_rejected.is_empty());
    assert!(status.listening);
    assert_eq!(status.listen, format!("{LB}:{}", lb.settings.port));
    assert_eq!(status.peers.len(), 1, "this LB is not its own peer");
    let p = &status.peers[0];
    assert_eq!(p.addr, addr(PEER));
    assert_eq!(p.state, "up");
    assert_eq!((p.received, p.applied, p.rejected), (1, 1, 0));
    assert!(
        p.lag_ms.is_some_and(|l| l.abs() < 1000),
        "lag {:?}",
        p.lag_ms
    );

    let went = lb.h.sent_to(&lb.h.run(&ack(CLIENT, port)));
    assert_eq!(went, Some(target), "Maglev alone says {maglev}");
    assert_eq!(
        lb.flow(CLIENT, port).unwrap().flags,
        0,
        "learnt flag cleared"
    );
    // The applier set the entry's flow-filter slot: a new connection reusing the 5-tuple
    // finds the entry, as without the filter.
    assert_eq!(
        lb.h.sent_to(&lb.h.run(&syn(CLIENT, port))),
        Some(target),
        "a SYN reusing the applied entry's 5-tuple (Maglev alone says {maglev})"
    );
    println!(
        "entry applied in {} µs; port {port} sent to {target} (Maglev: {maglev})",
        (after - before) / 1000
    );
}

#[test]
fn refused_datagrams_and_entries_are_counted_by_reason_and_change_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lb, mut peer) = Lb::start(1000, Duration::from_secs(30), |_| {});
    let b = addr(BACKENDS[0]);
    let table = || {
        let mut t = lb.h.balancer.dataplane().flows();
        t.sort_by_key(|(k, _)| k.ports);
        t
    };

    // Accepted once...
    let first = peer.send(vec![entry(CLIENT, 46000, b, 0)]);
    lb.wait("applied", |s| s.applied == 1);
    let applied = table();
    assert_eq!(applied.len(), 1);
    // ...then the same bytes again.
    peer.send_raw(&first);
    lb.wait("replay", |s| count(&s.datagrams_rejected, "replay") == 1);
    assert_eq!(table(), applied, "the replay rewrote nothing");

    // Another key.
    let mut forger = Peer {
        key: Key::from_hex(OTHER_KEY_HEX.as_bytes()).unwrap(),
        socket: peer.socket.try_clone().unwrap(),
        ..peer
    };
    forger.send(vec![entry(CLIENT, 46001, b, 0)]);
    lb.wait("auth", |s| count(&s.datagrams_rejected, "auth") == 1);
    let mut peer = Peer {
        key: Key::from_hex(KEY_HEX.as_bytes()).unwrap(),
        ..forger
    };

    // The right key from an address not among the peers.
    let stranger = UdpSocket::bind((STRANGER_HOST, 0)).unwrap();
    let d = peer.datagram(vec![entry(CLIENT, 46002, b, 0)]);
    stranger.send_to(&d, peer.lb).unwrap();
    lb.wait("not a peer", |s| {
        count(&s.datagrams_rejected, "not_a_peer") == 1
    });

    // Broken datagrams.
    peer.send_raw(&[0x58; 20]);
    peer.send_raw(&[0x55; 200]);
    peer.send_raw(&vec![0u8; MAX_DATAGRAM + 1]);
    let good = peer.datagram(vec![entry(CLIENT, 46003, b, 0)]);
    let mut version = good.clone();
    version[4] = 2;
    peer.send_raw(&version);
    let mut longer = good.clone();
    longer.push(0);
    peer.send_raw(&longer);
    let mut altered = good.clone();
    altered[32 + 37] ^= 0x01; // the entry's client port
    peer.send_raw(&altered);
    let status = lb.wait("broken datagrams", |s| {
        ["short", "magic", "long", "version", "length"]
            .iter()
            .all(|r| count(&s.datagrams_rejected, r) == 1)
            && count(&s.datagrams_rejected, "auth") == 2
    });

    // Sent a minute ago, and a minute ahead (max_clock_skew 10 s).
    for shift in [-60_000i64, 60_000] {
        let mut m = peer.message(vec![entry(CLIENT, 46004, b, 0)]);
        m.sent_unix_ms = m.sent_unix_ms.saturating_add_signed(shift);
        peer.send_raw(&wire::encode(&peer.key, &m).unwrap());
    }
    lb.wait("stale", |s| count(&s.datagrams_rejected, "stale") == 2);
    assert_eq!(table(), applied, "no refused datagram changed the table");
    assert_eq!(
        status.received, 1,
        "refused datagrams' entries are not received"
    );

    // Authentic datagrams whose entries this LB cannot use.
    let mut elsewhere = entry(CLIENT, 46005, b, 0);
    elsewhere.vip = SocketAddr::new(addr(VIP), 8080);
    peer.send(vec![elsewhere]);
    lb.wait("unknown service", |s| {
        count(&s.rejected, "unknown_service") == 1
    });
    peer.send(vec![entry(CLIENT, 46006, addr(STRANGER), 0)]);
    lb.wait("unknown backend", |s| {
        count(&s.rejected, "unknown_backend") == 1
    });
    assert_eq!(table(), applied);

    // A flow this LB placed itself a moment ago, told 5 s old by the peer.
    let local_to = connect(&lb.h, CLIENT, 46007);
    let local = lb.flow(CLIENT, 46007).unwrap();
    let other = BACKENDS.iter().map(|a| addr(a)).find(|a| *a != local_to);
    peer.send(vec![entry(CLIENT, 46007, other.unwrap(), 5000)]);
    let status = lb.wait("local fresher", |s| {
        count(&s.rejected, "local_fresher") == 1
    });
    assert_eq!(lb.flow(CLIENT, 46007), Some(local), "the local entry kept");
    assert_eq!(table().len(), 2);

    assert_eq!((status.received, status.applied), (4, 1));
    assert_eq!(status.rejected.values().sum::<u64>(), 3);
    let refused: u64 = status.datagrams_rejected.values().sum();
    assert_eq!(refused, 11, "{:?}", status.datagrams_rejected);
    let p = &status.peers[0];
    assert_eq!((p.received, p.applied, p.rejected), (4, 1, 3));
    assert_eq!(
        p.datagrams_rejected, 10,
        "all but the stranger's are the peer's"
    );
    assert_eq!(p.state, "up");
    println!("refused datagrams {:?}", status.datagrams_rejected);
    println!("refused entries {:?}", status.rejected);
}

#[test]
fn a_flood_from_a_peer_is_held_to_max_rate_and_the_agent_stays_responsive() {
    const MAX_RATE: u32 = 1000;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lb, mut peer) = Lb::start(MAX_RATE, Duration::from_secs(30), |_| {});
    let b = addr(BACKENDS[1]);
    // Distinct flows: clients 10.200.0.0/16, ports 1024 and up.
    let mut n = 0u64;
    let mut next_entry = || {
        n += 1;
        let ip = Ipv4Addr::from(0x0ac8_0000 | (n as u32 & 0xffff)).to_string();
        entry(&ip, 1024 + (n >> 16) as u16, b, 0)
    };

    let started = Instant::now();
    let mut worst_status = Duration::ZERO;
    let mut sent = 0u64;
    std::thread::scope(|s| {
        let (sync, settings) = (&lb.sync, &lb.settings);
        let watcher = s.spawn(move || {
            let mut worst = Duration::ZERO;
            while started.elapsed() < Duration::from_millis(1100) {
                let t = Instant::now();
                assert!(sync.status(Some(settings)).is_some());
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(10));
            }
            worst
        });
        while started.elapsed() < Duration::from_secs(1) {
            let entries = (0..MAX_ENTRIES).map(|_| next_entry()).collect();
            peer.send(entries);
            sent += MAX_ENTRIES as u64;
        }
        worst_status = watcher.join().unwrap();
    });
    // Settled: the counters unchanged for 200 ms. `settled` is when their final values
    // were first read, so after the session's last take from the bucket.
    let mut last = lb.status();
    let mut settled = Instant::now();
    while settled.elapsed() < Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(5));
        let now = lb.status();
        if (now.received, now.applied) != (last.received, last.applied) {
            settled = Instant::now();
        }
        last = now;
    }
    // The peer's bucket starts full (burst = max_rate) when its first datagram is heard,
    // after `started`, and refills at max_rate per second: by `settled` it can have given
    // at most max_rate + max_rate × (settled − started) tokens, one per applied entry.
    let elapsed = settled.duration_since(started);
    let status = last;
    let bound = u64::from(MAX_RATE) + (f64::from(MAX_RATE) * elapsed.as_secs_f64()) as u64;
    let limited = count(&status.rejected, "rate_limited");
    println!(
        "sent {sent} entries in 1 s; heard {} ({} datagrams dropped by the socket buffer); \
         applied {}, rate_limited {limited}; bound {bound} over {elapsed:?}; slowest status {worst_status:?}",
        status.received,
        (sent - status.received) / MAX_ENTRIES as u64,
        status.applied
    );
    assert!(sent >= 20 * u64::from(MAX_RATE), "a flood: {sent} entries");
    assert!(
        status.received >= 10 * u64::from(MAX_RATE),
        "heard {}",
        status.received
    );
    assert!(
        status.applied <= bound,
        "applied {} > {bound}",
        status.applied
    );
    assert!(status.applied >= u64::from(MAX_RATE), "the burst at least");
    assert_eq!(
        status.applied + limited,
        status.received,
        "{:?}",
        status.rejected
    );
    assert_eq!(status.rejected.len(), 1, "{:?}", status.rejected);
    let learnt =
        lb.h.balancer
            .dataplane()
            .flows()
            .iter()
            .filter(|(_, v)| v.flags == FLOW_F_LEARNT)
            .count() as u64;
    assert_eq!(learnt, status.applied, "one table entry per applied entry");
    assert!(
        worst_status < Duration::from_millis(100),
        "status took {worst_status:?} during the flood"
    );

    // The session is still at work: after a second's rest the peer is heard again at once.
    std::thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    let status = lb.status();
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(status.peers[0].state, "up");
    let one = entry(CLIENT, 47000, b, 0);
    let asked = Instant::now();
    peer.send(vec![one]);
    lb.wait("applied after the flood", |s| {
        s.applied == status.applied + 1
    });
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(lb.flow(CLIENT, 47000).unwrap().flags, FLOW_F_LEARNT);
    println!("after the flood an entry was applied in {took:?}");
}

#[test]
fn a_new_flow_is_told_to_the_peer_and_nothing_is_queued_with_sync_off() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut lb, peer) = Lb::start(1000, Duration::from_secs(30), |_| {});
    // The session's first heartbeat (and empty first walk).
    let heard = peer.hear_until(Instant::now() + Duration::from_millis(300));
    assert!(
        heard.iter().any(|(_, m)| m.kind == Kind::Heartbeat),
        "a heartbeat at once"
    );
    let incarnation = heard[0].1.sender;

    let queued = stat(&lb.h, flow_stat::SYNC_QUEUED);
    let to = lb.h.sent_to(&lb.h.run(&syn(CLIENT, 48000))).unwrap();
    assert_eq!(
        stat(&lb.h, flow_stat::SYNC_QUEUED),
        queued,
        "a SYN makes no entry"
    );
    let acked = Instant::now();
    assert_eq!(lb.h.sent_to(&lb.h.run(&ack(CLIENT, 48000))), Some(to));
    assert_eq!(stat(&lb.h, flow_stat::SYNC_QUEUED), queued + 1);
    let heard = peer.hear_until(acked + Duration::from_secs(1));
    let told = sightings(&heard, 48000);
    assert_eq!(told.len(), 1, "told once: {heard:?}");
    let (at, e) = told[0];
    assert_eq!(
        e,
        SyncEntry {
            client: client(CLIENT, 48000),
            vip: vip(),
            proto: PROTO_TCP,
            vlan: 0,
            backend: to,
            flags: 0,
            age_ms: 0,
        }
    );
    assert!(heard.iter().all(|(_, m)| m.sender == incarnation));
    let status = lb.status();
    assert_eq!((status.sent, status.datagrams_sent > 1), (1, true));
    assert!(status.not_sent.is_empty(), "{:?}", status.not_sent);
    println!(
        "ACK to told in {:?} (sync_queued {} -> {})",
        at.duration_since(acked),
        queued,
        queued + 1
    );

    // The session stopped (a reload without `sync:`): the data plane hands nothing over.
    {
        let Lb {
            sync, h, runtime, ..
        } = &mut lb;
        runtime
            .block_on(sync.follow(h.balancer.dataplane_mut(), None, FlowTable::default()))
            .unwrap();
    }
    assert!(!lb.h.balancer.dataplane().sync_on());
    connect(&lb.h, CLIENT, 48001);
    assert_eq!(stat(&lb.h, flow_stat::SYNC_QUEUED), queued + 1);
    let heard = peer.hear_until(Instant::now() + Duration::from_millis(300));
    assert!(heard.is_empty(), "the session is gone: {heard:?}");
    drop(lb);

    // Started without `sync:`: the ring reader runs, the data plane hands nothing over.
    let mut h = rtmp();
    let (_runtime, sync) = start_sync(&mut h, None);
    assert!(!h.balancer.dataplane().sync_on());
    connect(&h, CLIENT, 48002);
    assert_eq!(stat(&h, flow_stat::NEW), 1);
    assert_eq!(stat(&h, flow_stat::SYNC_QUEUED), 0);
    assert!(sync.status(None).is_none());
    drop(sync);
}

#[test]
fn refresh_tells_the_peer_again_of_touched_local_flows_but_never_of_learnt_ones() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A flow placed before the session starts: no event, but the first walk has it.
    let early = std::cell::Cell::new(None);
    let (lb, mut peer) = Lb::start(1000, Duration::from_secs(1), |h| {
        early.set(Some(connect(h, CLIENT, 49000)));
        // Placed longer ago than a walk's overlap (`WALK_OVERLAP_NS`) when the first walk
        // starts: only that walk has it.
        std::thread::sleep(Duration::from_nanos(xdp_lb::sync::WALK_OVERLAP_NS) * 3);
    });
    let started = Instant::now();
    let early_to = early.get().unwrap();
    let learnt = 49002;
    peer.send(vec![entry(CLIENT, learnt, addr(BACKENDS[0]), 0)]);
    // The learnt entry may come before or after the first walk: every walk from here on,
    // the first included, is heard and none may carry it.
    let first = peer.hear_until(started + Duration::from_millis(300));
    let told = sightings(&first, 49000);
    assert_eq!(told.len(), 1, "the first walk: {first:?}");
    assert_eq!(told[0].1.backend, early_to);
    lb.wait("learnt", |s| s.applied == 1);

    // A new flow: told at once, then again at the next walk (at most a second later).
    let placed_at = Instant::now();
    let to = connect(&lb.h, CLIENT, 49001);
    let mut log = peer.hear_until(placed_at + Duration::from_millis(1300));
    let new = sightings(&log, 49001);
    assert_eq!(new.len(), 2, "new, then refreshed: {new:?}");
    assert_eq!(new[0].1.age_ms, 0);
    assert!(new[0].0.duration_since(placed_at) < Duration::from_millis(200));
    let (again, refreshed) = new[1];
    assert_eq!(refreshed.backend, to);
    assert!(again.duration_since(placed_at) <= Duration::from_millis(1200));
    assert!(
        u128::from(refreshed.age_ms) <= again.duration_since(placed_at).as_millis() + 20,
        "age {} ms",
        refreshed.age_ms
    );
    assert!(
        sightings(&log, 49000).is_empty(),
        "untouched since the first walk"
    );

    // The early flow touched (over a second since its last touch): told again.
    let before = lb.flow(CLIENT, 49000).unwrap().last_seen_ns;
    let touched_at = Instant::now();
    assert_eq!(lb.h.sent_to(&lb.h.run(&ack(CLIENT, 49000))), Some(early_to));
    assert!(lb.flow(CLIENT, 49000).unwrap().last_seen_ns > before);
    let heard = peer.hear_until(touched_at + Duration::from_millis(1300));
    let told = sightings(&heard, 49000);
    assert_eq!(told.len(), 1, "refreshed once: {told:?}");
    assert!(told[0].1.age_ms < 1300);
    assert!(
        sightings(&heard, 49001).is_empty(),
        "untouched since its last walk"
    );
    log.extend(heard);
    log.extend(first);
    assert!(
        sightings(&log, learnt).is_empty(),
        "a learnt entry is never told again"
    );
    assert_eq!(lb.flow(CLIENT, learnt).unwrap().flags, FLOW_F_LEARNT);
    let status = lb.status();
    assert!(status.not_sent.is_empty(), "{:?}", status.not_sent);
    println!(
        "new flow told after {:?} and refreshed after {:?}; touched flow refreshed after {:?}",
        new[0].0.duration_since(placed_at),
        again.duration_since(placed_at),
        told[0].0.duration_since(touched_at)
    );
}
