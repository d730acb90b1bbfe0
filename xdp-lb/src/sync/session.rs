//! One sync session: the socket, the batching of new entries, the refresh walks, the
//! heartbeats, and every datagram heard checked and applied.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::sync::mpsc;
use xdp_lb_common::{FLOW_F_FIN, FLOW_F_LEARNT, FLOW_F_RST, FlowEvent, FlowKey, FlowValue};

use super::{
    Shared,
    directory::{Directory, flow_ends, service_of},
    wire::{
        self, FLAG_FIN, FLAG_RST, Key, Kind, MAX_DATAGRAM, MAX_ENTRIES, Message, ReplayGuard,
        SyncEntry, TokenBucket,
    },
};
use crate::dataplane::flow_filter::FlowFilter;
use crate::{
    config::{FlowTable, SyncSettings},
    control::census::{COARSE_CLOCK_LAG_NS, coarse_floor_ns, expired, monotonic_ns},
};

/// How long a new entry may wait for others to fill its datagram.
pub const BATCH_DELAY: Duration = Duration::from_millis(10);
/// How often each peer is sent a heartbeat (a peer is `up` while they arrive).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

type Flows = BpfHashMap<MapData, FlowKey, FlowValue>;

/// How far before a walk's start the next walk looks: the coarse clock's lag (the data
/// plane's last-seen times lag the precise clock by up to a jiffy).
pub const WALK_OVERLAP_NS: u64 = COARSE_CLOCK_LAG_NS;

/// What a session runs on.
pub struct SessionParts {
    pub settings: SyncSettings,
    pub key: Arc<Key>,
    pub socket: tokio::net::UdpSocket,
    pub local: SocketAddr,
    pub events: mpsc::Receiver<FlowEvent>,
    /// A handle on the connection table for the entries peers tell.
    pub apply_map: Flows,
    /// The flow filter, told of every entry applied.
    pub filter: Arc<FlowFilter>,
    /// Another, for the refresh walks' thread.
    pub walk_map: Flows,
    pub shared: Arc<Shared>,
    pub timeouts: FlowTable,
}

/// Refreshed entries sent per batching tick: `max_rate` spread over the ticks of a second
/// (at least one datagram's worth).
fn per_tick(max_rate: u32) -> usize {
    let ticks = (Duration::from_secs(1).as_micros() / BATCH_DELAY.as_micros()).max(1);
    usize::try_from(u128::from(max_rate) / ticks)
        .unwrap_or(usize::MAX)
        .max(MAX_ENTRIES)
}

/// The session's sending side.
struct Sender {
    key: Arc<Key>,
    peers: Vec<SocketAddr>,
    incarnation: u64,
    seq: u64,
    /// New entries waiting for their datagram.
    pending: Vec<SyncEntry>,
    /// Refreshed entries, sent as the rate leaves room.
    backlog: VecDeque<SyncEntry>,
    backlog_cap: usize,
    bucket: TokenBucket,
    burst: u32,
    /// Refreshed entries sent per batching tick at most.
    per_tick: usize,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs until aborted (a reload that changes `sync:`, or the agent's end).
pub async fn run_session(parts: SessionParts) {
    let SessionParts {
        settings,
        key,
        socket,
        local,
        mut events,
        apply_map,
        filter,
        walk_map,
        shared,
        timeouts,
    } = parts;
    let peers: Vec<SocketAddr> = settings
        .peers
        .iter()
        .filter(|a| **a != local.ip())
        .map(|a| SocketAddr::new(*a, settings.port))
        .collect();
    let now = Instant::now();
    let incarnation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut sender = Sender {
        key: key.clone(),
        peers: peers.clone(),
        incarnation,
        seq: 0,
        pending: Vec::with_capacity(MAX_ENTRIES),
        backlog: VecDeque::new(),
        backlog_cap: usize::try_from(
            u64::from(settings.max_rate).saturating_mul(settings.refresh.as_secs().max(1)),
        )
        .unwrap_or(usize::MAX),
        bucket: TokenBucket::new(settings.max_rate, settings.max_rate, now),
        burst: settings.max_rate,
        per_tick: per_tick(settings.max_rate),
    };
    let mut receiver = Receiver {
        key,
        peers: peers.iter().map(SocketAddr::ip).collect(),
        guards: HashMap::new(),
        buckets: HashMap::new(),
        settings: settings.clone(),
        appliers: Appliers::start(&apply_map, &filter, &shared),
        shared: shared.clone(),
    };
    let (walked_tx, mut walked_rx) = mpsc::channel::<Vec<SyncEntry>>(1);
    let walker = Walker::start(walk_map, timeouts, shared.clone(), walked_tx);
    let mut flush = tokio::time::interval(BATCH_DELAY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: a new session tells its peers about every live flow.
    let mut refresh = tokio::time::interval(settings.refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        tokio::select! {
            Some(event) = events.recv() => {
                sender.queue_event(&event, &shared);
                if sender.pending.len() >= MAX_ENTRIES {
                    sender.flush(&socket, &shared).await;
                }
            }
            _ = flush.tick() => {
                sender.flush(&socket, &shared).await;
                sender.send_backlog(&socket, &shared).await;
            }
            _ = heartbeat.tick() => sender.heartbeat(&socket, &shared).await,
            _ = refresh.tick() => walker.walk(),
            Some(entries) = walked_rx.recv() => sender.queue_refresh(entries, &shared),
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => {
                    let datagram = buf.get(..len).unwrap_or_default();
                    receiver.hear(datagram, from);
                }
                Err(err) => log::debug!("sync: receiving: {err}"),
            },
        }
    }
}

impl Sender {
    /// A new entry from the data plane, named by address; dropped (and counted) when the
    /// rate is used up or the backend is unknown.
    fn queue_event(&mut self, event: &FlowEvent, shared: &Shared) {
        let directory = shared.directory();
        let Some(entry) = entry_of(&directory, &event.key, event.backend_id, event.flags, 0) else {
            shared.count(|c| *c.not_sent.entry("unknown_backend").or_default() += 1);
            return;
        };
        if self.bucket.take(1, Instant::now()) == 0 {
            shared.count(|c| *c.not_sent.entry("rate_limited").or_default() += 1);
            return;
        }
        self.pending.push(entry);
    }

    /// A refresh walk's entries, sent as the rate leaves room (new entries first).
    fn queue_refresh(&mut self, entries: Vec<SyncEntry>, shared: &Shared) {
        let n = entries.len() as u64;
        let room = self.backlog_cap.saturating_sub(self.backlog.len());
        let dropped = entries.len().saturating_sub(room) as u64;
        self.backlog.extend(entries.into_iter().take(room));
        shared.count(|c| {
            c.last_refresh_entries = n;
            if dropped > 0 {
                *c.not_sent.entry("backlog_full").or_default() += dropped;
            }
        });
    }

    /// Sends the refresh backlog, paced: at most a batching delay's share of `max_rate`
    /// each tick (a burst would overflow the peers' receive buffers), and only while at
    /// least half the bucket is left for new entries.
    async fn send_backlog(&mut self, socket: &tokio::net::UdpSocket, shared: &Shared) {
        let mut budget = self.per_tick;
        while !self.backlog.is_empty() && budget > 0 {
            let now = Instant::now();
            let want = MAX_ENTRIES.min(self.backlog.len()).min(budget) as u32;
            let room = self.bucket.available(now).saturating_sub(self.burst / 2);
            let took = self.bucket.take(room.min(want), now) as usize;
            if took == 0 {
                break;
            }
            let batch: Vec<SyncEntry> = self.backlog.drain(..took).collect();
            budget = budget.saturating_sub(took);
            self.send(Kind::Flows, &batch, socket, shared).await;
        }
    }

    async fn flush(&mut self, socket: &tokio::net::UdpSocket, shared: &Shared) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.send(Kind::Flows, &batch, socket, shared).await;
    }

    async fn heartbeat(&mut self, socket: &tokio::net::UdpSocket, shared: &Shared) {
        self.send(Kind::Heartbeat, &[], socket, shared).await;
    }

    /// One datagram of `entries` (at most `MAX_ENTRIES`) to every peer.
    async fn send(
        &mut self,
        kind: Kind,
        entries: &[SyncEntry],
        socket: &tokio::net::UdpSocket,
        shared: &Shared,
    ) {
        self.seq = self.seq.saturating_add(1);
        let message = Message {
            kind,
            sender: self.incarnation,
            seq: self.seq,
            sent_unix_ms: unix_ms(),
            entries: entries.to_vec(),
        };
        let datagram = match wire::encode(&self.key, &message) {
            Ok(datagram) => datagram,
            Err(err) => {
                log::warn!("sync: not sent: {err}");
                let n = entries.len() as u64;
                shared.count(|c| *c.not_sent.entry("encode").or_default() += n);
                return;
            }
        };
        for peer in &self.peers {
            let n = entries.len() as u64;
            match socket.send_to(&datagram, peer).await {
                Ok(_) => shared.count(|c| {
                    c.sent += n;
                    c.datagrams_sent += 1;
                    c.bytes_sent += datagram.len() as u64;
                }),
                Err(err) => {
                    log::debug!("sync: sending to {peer}: {err}");
                    shared.count(|c| *c.not_sent.entry("send_error").or_default() += n);
                }
            }
        }
    }
}

/// A connection-table entry as the peers are told it: `None` when its backend id is not
/// one of this LB's (removed meanwhile).
fn entry_of(
    directory: &Directory,
    key: &FlowKey,
    backend_id: u32,
    flags: u32,
    age_ms: u32,
) -> Option<SyncEntry> {
    let placed = directory.by_id(backend_id)?;
    if placed.service != service_of(key) {
        return None;
    }
    let (client, vip) = flow_ends(key);
    let mut wire_flags = 0;
    if flags & FLOW_F_FIN != 0 {
        wire_flags |= FLAG_FIN;
    }
    if flags & FLOW_F_RST != 0 {
        wire_flags |= FLAG_RST;
    }
    Some(SyncEntry {
        client,
        vip,
        proto: key.proto,
        vlan: key.vlan,
        backend: placed.address,
        flags: wire_flags,
        age_ms,
    })
}

/// The session's receiving side.
struct Receiver {
    key: Arc<Key>,
    peers: Vec<IpAddr>,
    guards: HashMap<IpAddr, ReplayGuard>,
    buckets: HashMap<IpAddr, TokenBucket>,
    settings: SyncSettings,
    appliers: Appliers,
    shared: Arc<Shared>,
}

impl Receiver {
    /// One datagram from `from`: refused (counted by reason) unless it comes from a
    /// listed peer, is authentic, fresh and not a replay; its entries then applied within
    /// the peer's rate.
    fn hear(&mut self, datagram: &[u8], from: SocketAddr) {
        let peer = from.ip();
        if !self.peers.contains(&peer) {
            self.refuse(None, "not_a_peer");
            return;
        }
        let message = match wire::decode(&self.key, datagram) {
            Ok(message) => message,
            Err(err) => {
                self.refuse(Some(peer), err.reason());
                return;
            }
        };
        let now_ms = unix_ms();
        let skew = u64::try_from(self.settings.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        let guard = self.guards.entry(peer).or_default();
        if let Err(why) = guard.check(
            message.sender,
            message.seq,
            message.sent_unix_ms,
            now_ms,
            skew,
        ) {
            self.refuse(Some(peer), why.reason());
            return;
        }
        let lag = i64::try_from(now_ms).unwrap_or(i64::MAX)
            - i64::try_from(message.sent_unix_ms).unwrap_or(i64::MAX);
        let n = message.entries.len() as u64;
        self.shared.peer(peer, |p| {
            p.last_heard = Some(Instant::now());
            p.lag_ms = Some(lag);
            p.received += n;
        });
        if message.entries.is_empty() {
            return;
        }
        self.shared.count(|c| c.received += n);
        // Dated from the datagram's send time, not its arrival: a late (or replayed)
        // datagram's entries are that much older.
        let transit =
            u32::try_from(now_ms.saturating_sub(message.sent_unix_ms)).unwrap_or(u32::MAX);
        let rate = self.settings.max_rate;
        let now = Instant::now();
        let allowed = self
            .buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(rate, rate, now))
            .take(n as u32, now) as usize;
        let mut entries = message.entries;
        let limited = entries.len().saturating_sub(allowed) as u64;
        entries.truncate(allowed);
        for entry in &mut entries {
            entry.age_ms = entry.age_ms.saturating_add(transit);
        }
        if limited > 0 {
            self.shared
                .count(|c| *c.rejected.entry("rate_limited").or_default() += limited);
            self.shared.peer(peer, |p| p.rejected += limited);
        }
        if !entries.is_empty() {
            self.appliers.apply(peer, entries, self.shared.directory());
        }
    }

    fn refuse(&self, peer: Option<IpAddr>, why: &'static str) {
        self.shared
            .count(|c| *c.datagrams_rejected.entry(why).or_default() += 1);
        if let Some(peer) = peer {
            self.shared.peer(peer, |p| p.datagrams_rejected += 1);
        }
    }
}

/// Datagrams of entries waiting for an applier thread; past it they are refused
/// (`queue_full`).
const APPLY_QUEUE: usize = 1024;

/// One datagram's entries for an applier.
struct Job {
    peer: IpAddr,
    entries: Vec<SyncEntry>,
    directory: Arc<Directory>,
}

/// Applies peers' entries on one thread per CPU the agent may run on, each pinned to its
/// CPU, datagrams dealt round-robin: a burst (a peer's refresh) is applied by every CPU at
/// once, each taking free entries from its own local list of the connection table's LRU
/// (refilled 128 at a time), as the data plane's CPUs do.
struct Appliers {
    queues: Vec<std::sync::mpsc::SyncSender<Job>>,
    next: usize,
    shared: Arc<Shared>,
}

impl Appliers {
    fn start(flows: &Flows, filter: &Arc<FlowFilter>, shared: &Arc<Shared>) -> Self {
        let cpus = allowed_cpus();
        let mut queues = Vec::new();
        for cpu in cpus {
            let handle = match crate::dataplane::duplicate_flows(flows) {
                Ok(handle) => handle,
                Err(err) => {
                    log::error!("sync: a connection-table handle for CPU {cpu}: {err:#}");
                    continue;
                }
            };
            let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(APPLY_QUEUE);
            let (shared, filter) = (shared.clone(), filter.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("sync-apply-{cpu}"))
                .spawn(move || applier(cpu, handle, filter, rx, shared));
            match spawned {
                Ok(_) => queues.push(tx),
                Err(err) => log::error!("sync: cannot start the applier for CPU {cpu}: {err}"),
            }
        }
        if queues.is_empty() {
            log::error!("sync: no applier thread: entries from peers are refused");
        }
        Self {
            queues,
            next: 0,
            shared: shared.clone(),
        }
    }

    fn apply(&mut self, peer: IpAddr, entries: Vec<SyncEntry>, directory: Arc<Directory>) {
        let n = entries.len() as u64;
        let job = Job {
            peer,
            entries,
            directory,
        };
        let sent = match self.queues.get(self.next % self.queues.len().max(1)) {
            Some(queue) => queue.try_send(job).is_ok(),
            None => false,
        };
        self.next = self.next.wrapping_add(1);
        if !sent {
            self.shared
                .count(|c| *c.rejected.entry("queue_full").or_default() += n);
            self.shared.peer(peer, |p| p.rejected += n);
        }
    }
}

/// An applier thread: pinned to `cpu`, it applies every job until the session ends.
fn applier(
    cpu: usize,
    mut flows: Flows,
    filter: Arc<FlowFilter>,
    jobs: std::sync::mpsc::Receiver<Job>,
    shared: Arc<Shared>,
) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_err()
        || nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_err()
    {
        log::warn!("sync: the applier for CPU {cpu} cannot be pinned there; it runs anywhere");
    }
    while let Ok(job) = jobs.recv() {
        let now_ns = monotonic_ns();
        let (mut applied, mut rejected) = (0u64, 0u64);
        let mut reasons: Vec<&'static str> = Vec::new();
        for entry in &job.entries {
            match apply(&mut flows, &job.directory, entry, now_ns) {
                Ok(()) => {
                    filter.mark(&FlowKey::new(
                        entry.client,
                        entry.vip,
                        entry.proto,
                        entry.vlan,
                    ));
                    applied += 1;
                }
                Err(why) => {
                    rejected += 1;
                    reasons.push(why);
                }
            }
        }
        shared.count(|c| {
            c.applied += applied;
            for why in reasons {
                *c.rejected.entry(why).or_default() += 1;
            }
        });
        shared.peer(job.peer, |p| {
            p.applied += applied;
            p.rejected += rejected;
        });
    }
}

/// The CPUs this process may run on (CPU 0 alone when that cannot be read).
fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
            .take(256)
            .collect(),
        Err(_) => vec![0],
    }
}

/// Inserts a peer's entry into the connection table, marked learnt, unless this LB's own
/// entry for the flow is fresher or the entry names a service or backend this LB lacks.
pub fn apply(
    flows: &mut Flows,
    directory: &Directory,
    entry: &SyncEntry,
    now_ns: u64,
) -> Result<(), &'static str> {
    let key = FlowKey::new(entry.client, entry.vip, entry.proto, entry.vlan);
    let service = service_of(&key);
    let Some(placed) = directory.by_address(&service, entry.backend) else {
        return Err(if directory.has_service(&service) {
            "unknown_backend"
        } else {
            "unknown_service"
        });
    };
    let last_seen = now_ns.saturating_sub(u64::from(entry.age_ms) * 1_000_000);
    if let Ok(local) = flows.get(&key, 0)
        && local.last_seen_ns >= last_seen
    {
        return Err("local_fresher");
    }
    let mut flags = FLOW_F_LEARNT;
    if entry.flags & FLAG_FIN != 0 {
        flags |= FLOW_F_FIN;
    }
    if entry.flags & FLAG_RST != 0 {
        flags |= FLOW_F_RST;
    }
    let value = FlowValue {
        backend_id: placed.backend_id,
        backend_epoch: placed.epoch,
        service_id: placed.service_id,
        flags,
        last_seen_ns: last_seen,
    };
    flows.insert(key, value, 0).map_err(|_| "map_error")
}

/// The refresh walks, on a thread of their own (a walk of millions of entries takes
/// seconds): each finds the flows this LB carried since the last walk.
struct Walker {
    requests: std::sync::mpsc::Sender<()>,
}

impl Walker {
    fn start(
        flows: Flows,
        timeouts: FlowTable,
        shared: Arc<Shared>,
        walked: mpsc::Sender<Vec<SyncEntry>>,
    ) -> Self {
        let (requests, incoming) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("sync-refresh".into())
            .spawn(move || {
                let mut since = 0u64;
                while incoming.recv().is_ok() {
                    // Requests that queued during a walk share the next one.
                    while incoming.try_recv().is_ok() {}
                    // Entries are stamped by the data plane's coarse clock, up to a jiffy
                    // behind this one: the next walk starts that far back (a flow told
                    // twice is harmless; one missed would not be told again until touched).
                    let started = coarse_floor_ns();
                    let entries = live_since(&flows, &shared.directory(), since, &timeouts);
                    since = started;
                    if walked.blocking_send(entries).is_err() {
                        return;
                    }
                }
            });
        if let Err(err) = spawned {
            log::error!(
                "sync: cannot start the refresh thread: {err}; live flows are not told again"
            );
        }
        Self { requests }
    }

    fn walk(&self) {
        let _ = self.requests.send(());
    }
}

/// The flows this LB carried (not learnt, not expired) with a packet after `since`.
pub fn live_since(
    flows: &Flows,
    directory: &Directory,
    since: u64,
    timeouts: &FlowTable,
) -> Vec<SyncEntry> {
    let now = monotonic_ns();
    flows
        .iter()
        .filter_map(Result::ok)
        .filter(|(key, value)| {
            value.flags & FLOW_F_LEARNT == 0
                && value.last_seen_ns > since
                && !expired(key, value, now, timeouts)
        })
        .filter_map(|(key, value)| {
            let age_ms = now.saturating_sub(value.last_seen_ns) / 1_000_000;
            entry_of(
                directory,
                &key,
                value.backend_id,
                value.flags,
                u32::try_from(age_ms).unwrap_or(u32::MAX),
            )
        })
        .collect()
}
