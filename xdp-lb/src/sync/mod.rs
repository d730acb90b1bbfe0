//! Flow-state sync between LBs (`sync:`): a stream keeps its backend when ECMP moves it to
//! another LB even if that LB's Maglev table changed meanwhile (a backend added, drained
//! or down while an LB died).
//!
//! * The data plane hands every connection-table entry it makes to the agent through the
//!   `flow_events` ring buffer (only while `sync_on` is set); the agent names the backend
//!   by its service's listener and its address (`directory.rs`), batches the entries and
//!   sends them to every peer (`session.rs`). Every `refresh`, a walk of the table tells
//!   the peers again about the flows that saw packets here since the last walk.
//! * What a peer tells is inserted into the connection table, marked learnt, unless this
//!   LB's own entry for the flow is fresher, or it names a service or backend this LB does
//!   not have (each counted by reason).
//! * Every datagram carries an HMAC-SHA256 tag (`wire.rs`), a sender incarnation and a
//!   sequence number (replays are refused), and its send time (stale ones are refused);
//!   only the listed peers are heard, and each is bounded to `max_rate` entries per
//!   second both ways.
//!
//! [`FlowSync`] is the agent's handle: it owns the ring reader (for the agent's whole life)
//! and the session for the current settings, which a reload replaces.

mod directory;
mod session;
pub mod wire;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use anyhow::Context as _;
use tokio::sync::mpsc;
use xdp_lb_common::FlowEvent;

pub use self::{
    directory::{Directory, Placed, flow_ends, service_of},
    session::{
        BATCH_DELAY, HEARTBEAT, SessionParts, WALK_OVERLAP_NS, apply, live_since, run_session,
    },
};
use crate::{
    balancer::Balancer,
    config::{FlowTable, SyncSettings, read_key_file},
    control::protocol::{SyncPeerStatus, SyncStatus},
    dataplane::Dataplane,
};

/// A peer heard from within this long is `up`.
pub const PEER_UP_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);
/// New entries waiting between the ring reader and the session; past it they are dropped
/// (and counted `queue_full`).
const EVENT_QUEUE: usize = 65_536;

/// Counters and peer states, shared by the session, the ring reader and the loop.
#[derive(Debug, Default)]
pub struct Shared {
    pub(crate) counters: Mutex<Counters>,
    pub(crate) peers: Mutex<BTreeMap<IpAddr, PeerState>>,
    pub(crate) directory: RwLock<Arc<Directory>>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub listen: String,
    pub listening: bool,
    pub sent: u64,
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub received: u64,
    pub applied: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub datagrams_rejected: BTreeMap<&'static str, u64>,
    pub not_sent: BTreeMap<&'static str, u64>,
    pub last_refresh_entries: u64,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct PeerState {
    pub last_heard: Option<Instant>,
    pub lag_ms: Option<i64>,
    pub received: u64,
    pub applied: u64,
    pub rejected: u64,
    pub datagrams_rejected: u64,
}

impl Shared {
    pub(crate) fn count(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut c) = self.counters.lock() {
            f(&mut c);
        }
    }

    pub(crate) fn peer(&self, addr: IpAddr, f: impl FnOnce(&mut PeerState)) {
        if let Ok(mut peers) = self.peers.lock() {
            f(peers.entry(addr).or_default());
        }
    }

    pub(crate) fn directory(&self) -> Arc<Directory> {
        self.directory.read().map(|d| d.clone()).unwrap_or_default()
    }
}

/// The running session and what it was started with.
struct Running {
    settings: SyncSettings,
    /// The key's fingerprint: a reload with a new key in the same file restarts the
    /// session.
    key_print: Vec<u8>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// Flow-state sync as the agent runs it.
pub struct FlowSync {
    shared: Arc<Shared>,
    /// Where the ring reader hands new entries: the running session's queue.
    events: Arc<Mutex<Option<mpsc::Sender<FlowEvent>>>>,
    ring: Option<tokio::task::JoinHandle<()>>,
    running: Option<Running>,
    timeouts: FlowTable,
    /// [`Directory::fingerprint`] of the directory last published (0: none yet).
    published: std::sync::atomic::AtomicU64,
}

/// The sync socket for `settings`, bound before anything is attached (a port taken, or
/// no address of this host among the peers, stops the start with nothing changed).
pub fn bind(settings: &SyncSettings) -> anyhow::Result<UdpSocket> {
    let candidates: Vec<IpAddr> = match settings.listen {
        Some(addr) => vec![addr],
        None => settings.peers.clone(),
    };
    let mut bound = Vec::new();
    let mut last_err = None;
    for addr in candidates {
        match UdpSocket::bind(SocketAddr::new(addr, settings.port)) {
            Ok(socket) => bound.push(socket),
            Err(err) if err.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
            Err(err) => last_err = Some((addr, err)),
        }
    }
    if let Some((addr, err)) = last_err {
        anyhow::bail!("sync: cannot listen on {addr}:{}: {err}", settings.port);
    }
    let socket = match bound.len() {
        1 => bound.remove(0),
        0 => anyhow::bail!(
            "sync: none of sync.peers ({}) is an address of this host: list this LB's own address there, or set sync.listen",
            list(&settings.peers)
        ),
        _ => anyhow::bail!(
            "sync: {} of sync.peers are addresses of this host ({}): set sync.listen to the one to use",
            bound.len(),
            bound
                .iter()
                .filter_map(|s| s.local_addr().ok())
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    socket
        .set_nonblocking(true)
        .context("sync: making the socket non-blocking")?;
    grow_receive_buffer(&socket);
    Ok(socket)
}

/// The sync socket's receive buffer: a peer's refresh arrives as a stream of datagrams
/// (paced, but at `max_rate`), which the default buffer of about 200 KiB drops in bursts.
pub const RECEIVE_BUFFER: usize = 8 << 20;

/// Sets [`RECEIVE_BUFFER`], past `net.core.rmem_max` as root (SO_RCVBUFFORCE), else as far
/// as the limit allows.
fn grow_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err()
        && let Err(err) = setsockopt(socket, sockopt::RcvBuf, &RECEIVE_BUFFER)
    {
        log::warn!("sync: cannot grow the socket's receive buffer: {err}");
    }
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FlowSync {
    /// Starts the ring reader and, with `settings`, a session on `socket` (bound by
    /// [`bind`]).
    pub fn start(
        dataplane: &mut Dataplane,
        balancer_dir: Directory,
        settings: Option<&SyncSettings>,
        socket: Option<UdpSocket>,
        timeouts: FlowTable,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        if let Ok(mut d) = shared.directory.write() {
            *d = Arc::new(balancer_dir);
        }
        let events = Arc::new(Mutex::new(None));
        let ring = start_ring_reader(dataplane, events.clone(), shared.clone())?;
        let mut sync = Self {
            shared,
            events,
            ring: Some(ring),
            running: None,
            timeouts,
            published: std::sync::atomic::AtomicU64::new(0),
        };
        if let (Some(settings), Some(socket)) = (settings, socket)
            && let Err(err) = read_key(settings)
                .and_then(|key| sync.start_session(dataplane, settings, socket, key))
        {
            // The data plane is attached and forwarding: a sync session that cannot start
            // stops nothing else. `status` says so, and a reload tries again.
            log::error!("flow-state sync is off: {err:#}");
            sync.shared.count(|c| {
                c.listening = false;
                c.listen = format!("off: {err:#}");
            });
        }
        Ok(sync)
    }

    fn start_session(
        &mut self,
        dataplane: &mut Dataplane,
        settings: &SyncSettings,
        socket: UdpSocket,
        key: wire::Key,
    ) -> anyhow::Result<()> {
        let key_print = fingerprint(&key);
        let local = socket.local_addr().context("sync: the socket's address")?;
        let socket = tokio::net::UdpSocket::from_std(socket).context("sync: the socket")?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let parts = SessionParts {
            settings: settings.clone(),
            key: Arc::new(key),
            socket,
            local,
            events: rx,
            apply_map: dataplane.flows_handle()?,
            filter: dataplane.flow_filter(),
            walk_map: dataplane.flows_handle()?,
            shared: self.shared.clone(),
            timeouts: self.timeouts,
        };
        self.shared.count(|c| {
            c.listen = local.to_string();
            c.listening = true;
        });
        if let Ok(mut peers) = self.shared.peers.lock() {
            peers.retain(|addr, _| settings.peers.contains(addr) && *addr != local.ip());
        }
        let task = tokio::spawn(run_session(parts));
        if let Ok(mut slot) = self.events.lock() {
            *slot = Some(tx);
        }
        dataplane.set_sync_on(true)?;
        log::info!(
            "sync: listening on {local}, telling {} peer(s) about new flows; live ones again every {}",
            settings.peers.len().saturating_sub(1),
            crate::config::format_duration(settings.refresh)
        );
        // A new session starts from a directory published afresh.
        self.published
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.running = Some(Running {
            settings: settings.clone(),
            key_print,
            local,
            task,
        });
        Ok(())
    }

    /// Stops the session: the data plane stops handing entries over, the socket closes.
    async fn stop_session(&mut self, dataplane: &mut Dataplane) {
        if let Err(err) = dataplane.set_sync_on(false) {
            log::warn!("sync: {err:#}");
        }
        if let Ok(mut slot) = self.events.lock() {
            *slot = None;
        }
        if let Some(running) = self.running.take() {
            running.task.abort();
            let _ = running.task.await;
        }
        self.shared.count(|c| {
            c.listening = false;
            c.listen = "off".to_owned();
        });
    }

    /// After a reload: the session follows the new `sync:` (started, stopped, or restarted
    /// when its settings or its key changed). A new socket is bound before the old session
    /// stops when the address changes, so a failure leaves the old one running.
    pub async fn follow(
        &mut self,
        dataplane: &mut Dataplane,
        settings: Option<&SyncSettings>,
        timeouts: FlowTable,
    ) -> anyhow::Result<()> {
        self.timeouts = timeouts;
        let Some(settings) = settings else {
            if self.running.is_some() {
                self.stop_session(dataplane).await;
                log::info!("sync: off (no sync: section)");
            }
            return Ok(());
        };
        let key = read_key(settings)?;
        let print = fingerprint(&key);
        if let Some(running) = &self.running
            && running.settings == *settings
            && running.key_print == print
        {
            return Ok(());
        }
        let same_address = self.running.as_ref().is_some_and(|r| {
            r.settings.port == settings.port
                && (settings.listen.is_none_or(|a| a == r.local.ip()))
                && settings.peers.contains(&r.local.ip())
        });
        let socket = if same_address {
            // Rebinding the same port would fail while the old session holds it.
            self.stop_session(dataplane).await;
            bind(settings)
        } else {
            let socket = bind(settings)?;
            self.stop_session(dataplane).await;
            Ok(socket)
        };
        let started =
            socket.and_then(|socket| self.start_session(dataplane, settings, socket, key));
        if let Err(err) = &started {
            // The old session is gone: status says so, and why.
            self.shared.count(|c| {
                c.listening = false;
                c.listen = format!("off: {err:#}");
            });
        }
        started
    }

    /// Where `sync_on` differs from what this agent runs: new entries handed over with no
    /// session to send them, or a session that gets none (set behind the agent's back).
    pub fn drift(&self, dataplane: &Dataplane) -> Option<crate::audit::Drift> {
        let wanted = self.running.is_some();
        (dataplane.sync_on() != wanted).then(|| {
            crate::audit::Drift::new(
                "flow-state sync",
                xdp_lb_common::map_names::SYNC_ON,
                if wanted {
                    "sync_on[0] is 0: new flows are not told to the peers"
                } else {
                    "sync_on[0] is set without a sync session: new flows fill a ring nobody reads"
                },
            )
        })
    }

    /// Rebuilds the directory from the balancer when it changed.
    ///
    /// Called after every wake-up of the agent's loop, so it costs nothing without a
    /// session, and with one only a pass over the backends (no allocation) while nothing
    /// changed.
    pub fn publish(&self, balancer: &Balancer) {
        if self.running.is_none() {
            return;
        }
        let print = Directory::fingerprint(balancer);
        if self
            .published
            .swap(print, std::sync::atomic::Ordering::Relaxed)
            == print
        {
            return;
        }
        let fresh = Directory::of(balancer);
        if let Ok(mut current) = self.shared.directory.write() {
            *current = Arc::new(fresh);
        }
    }

    /// What `status` shows; `None` without `sync:`.
    pub fn status(&self, settings: Option<&SyncSettings>) -> Option<SyncStatus> {
        let settings = settings?;
        let counters = self.shared.counters.lock().ok()?.clone();
        let peers = self.shared.peers.lock().ok()?.clone();
        let local = self.running.as_ref().map(|r| r.local.ip());
        let now = Instant::now();
        let named = |m: &BTreeMap<&'static str, u64>| {
            m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        Some(SyncStatus {
            listen: counters.listen.clone(),
            listening: counters.listening,
            peers: settings
                .peers
                .iter()
                .filter(|a| Some(**a) != local)
                .map(|addr| {
                    let p = peers.get(addr).cloned().unwrap_or_default();
                    let ago = p.last_heard.map(|t| now.duration_since(t));
                    SyncPeerStatus {
                        addr: *addr,
                        state: match ago {
                            None => "never heard",
                            Some(d) if d <= PEER_UP_WITHIN => "up",
                            Some(_) => "silent",
                        }
                        .to_owned(),
                        last_heard_ms: ago
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        lag_ms: p.lag_ms,
                        received: p.received,
                        applied: p.applied,
                        rejected: p.rejected,
                        datagrams_rejected: p.datagrams_rejected,
                    }
                })
                .collect(),
            sent: counters.sent,
            datagrams_sent: counters.datagrams_sent,
            bytes_sent: counters.bytes_sent,
            received: counters.received,
            applied: counters.applied,
            rejected: named(&counters.rejected),
            datagrams_rejected: named(&counters.datagrams_rejected),
            not_sent: named(&counters.not_sent),
            last_refresh_entries: counters.last_refresh_entries,
        })
    }
}

impl Drop for FlowSync {
    fn drop(&mut self) {
        if let Some(ring) = self.ring.take() {
            ring.abort();
        }
        if let Some(running) = self.running.take() {
            running.task.abort();
        }
    }
}

/// The shared key `settings` name, read from its file.
fn read_key(settings: &SyncSettings) -> anyhow::Result<wire::Key> {
    read_key_file(&settings.key_file)
        .map_err(|why| anyhow::anyhow!("sync.key_file {}: {why}", settings.key_file.display()))
}

/// A key's fingerprint: the tag of a fixed heartbeat (equal keys, equal prints).
fn fingerprint(key: &wire::Key) -> Vec<u8> {
    let message = wire::Message {
        kind: wire::Kind::Heartbeat,
        sender: 0,
        seq: 0,
        sent_unix_ms: 0,
        entries: Vec::new(),
    };
    wire::encode(key, &message).unwrap_or_default()
}

/// Reads `flow_events` every [`BATCH_DELAY`] for the agent's whole life and hands each
/// entry to the running session (none: dropped; the data plane only writes while a
/// session runs). Polled, not woken: the data plane writes without a wake-up, which would
/// cost each new flow an interrupt whenever this reader keeps up; an entry waits at most
/// one batching delay here, as it may in the session's batch anyway.
fn start_ring_reader(
    dataplane: &mut Dataplane,
    events: Arc<Mutex<Option<mpsc::Sender<FlowEvent>>>>,
    shared: Arc<Shared>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut ring = dataplane.take_flow_events()?;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(BATCH_DELAY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sender = events.lock().ok().and_then(|s| s.clone());
            while let Some(item) = ring.next() {
                let Some(event) = read_event(&item) else {
                    continue;
                };
                let Some(sender) = &sender else { continue };
                if sender.try_send(event).is_err() {
                    shared.count(|c| *c.not_sent.entry("queue_full").or_default() += 1);
                }
            }
        }
    }))
}

/// One ring record as a [`FlowEvent`] (`None`: not one; never from our program).
fn read_event(bytes: &[u8]) -> Option<FlowEvent> {
    if bytes.len() < std::mem::size_of::<FlowEvent>() {
        return None;
    }
    // SAFETY: FlowEvent is plain old data (every bit pattern valid), and the length was
    // checked; read_unaligned copes with the ring's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) })
}
