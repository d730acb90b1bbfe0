//! Flow-state sync between LBs (`sync:`, `xdp-lb/src/sync/`): what it costs and what it
//! carries. `cargo xtask bench --only sync` measures this section alone.
//!
//! * **handoff**: what handing a new entry to the agent (`hand_to_agent`: one
//!   `bpf_ringbuf_output` into `flow_events` while `sync_on[0]` is 1) adds to the packet that
//!   creates it, the handshake's ACK (the `new` case of the per-packet section). The same
//!   frames through the same loaded data plane with `sync_on` off and on, in every run,
//!   beside the no-op; the counters confirm every timed packet's path (`sync_queued` once
//!   per packet, `sync_ring_full` never) and the ring's records are read back and matched
//!   with the flows sent.
//! * **throughput**: entries per second that `xdp_lb::sync::apply` writes into a real
//!   connection table, end to end over loopback UDP (`wire::encode` + send on one core,
//!   receive + `wire::decode` + replay check + `apply` on the other), `encode` and `decode`
//!   alone, a refresh walk (`live_since`), and what a peer keeps of a refresh burst.
//! * **bandwidth**: bytes on the wire per entry, from datagrams encoded here, and the
//!   traffic per peer at given new-connection rates, heartbeats and refreshes.

use std::{
    collections::HashSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path as FsPath,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use serde::Serialize;
use xdp_lb::{
    config::{DEFAULT_SYNC_MAX_RATE, DEFAULT_SYNC_REFRESH, FlowTable},
    control::census::monotonic_ns,
    sync::{
        self as lb_sync, BATCH_DELAY, Directory, HEARTBEAT,
        wire::{self, Key, Kind, MAX_ENTRIES, Message, ReplayGuard, SyncEntry},
    },
};
use xdp_lb_common::{
    FLOW_EVENTS_BYTES, FLOW_F_LEARNT, FlowEvent, FlowKey, FlowValue, flow_stat, verdict,
};

use super::{
    packet::{Noop, PORT, Path, Rig, VIP4, XDP_TX, pin_to_cpu, time_repeat, time_single},
    report,
    stats::{Summary, paired_difference, paired_ratio},
};
use crate::frames;

/// The key in BENCHMARKS.json.
pub const KEY: &str = "sync";
pub const BEGIN: &str = "<!-- section sync: `cargo xtask bench --only sync` rewrites it -->";
pub const END: &str = "<!-- end of section sync -->";
/// UDP and IPv4 headers of one datagram (IPv6: 48).
pub const UDP_IPV4_BYTES: usize = 28;
pub const UDP_IPV6_BYTES: usize = 48;
/// New-connection rates the bandwidth table is given for.
pub const RATES: [u64; 3] = [1_000, 10_000, 100_000];
/// Live flows of the refresh example.
pub const REFRESH_LIVE: u64 = 100_000;
/// A figure that moved more than this between two measurements is named (percent).
pub const MOVED_PERCENT: f64 = 10.0;

#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub quick: bool,
    /// The CPU test runs, `apply` and the receiving side are pinned to.
    pub cpu: usize,
    /// Another CPU, for the sending side and the ring's waiting reader (none: the same).
    pub other_cpu: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SyncResults {
    pub date: String,
    pub commit: String,
    pub quick: bool,
    pub seconds: f64,
    pub cpus: usize,
    /// Whether the CPU has the hypervisor flag (interrupts cost a VM exit).
    pub virtualized: bool,
    pub cpu: usize,
    pub other_cpu: Option<usize>,
    /// `/proc/loadavg`'s 1-minute figure before and after: other work on the machine.
    pub load_before: f64,
    pub load_after: f64,
    pub handoff: Handoff,
    pub throughput: Throughput,
    pub bandwidth: Bandwidth,
    /// The main figures, to compare with the next measurement.
    pub headline: Vec<Figure>,
    /// The same figures of the measurement this one replaced, if it had them.
    pub previous: Option<Previous>,
}

/// One headline figure: its median.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub id: String,
    pub what: String,
    pub unit: String,
    pub median: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Previous {
    pub date: String,
    pub commit: String,
    pub quick: bool,
    pub load_before: f64,
    pub load_after: f64,
    pub figures: Vec<Figure>,
}

/// (a) What handing a new entry to the agent adds to its first packet.
#[derive(Clone, Debug, Serialize)]
pub struct Handoff {
    pub runs: usize,
    pub packets_per_run: u64,
    /// "on": the ring is read (emptied) after every this many packets, outside the timing.
    pub drain_every: u64,
    pub ring_bytes: u32,
    /// Bytes of one ring record (8-byte header + the event, rounded to 8).
    pub record_bytes: u64,
    pub ring_records: u64,
    pub noop_ns: Summary,
    /// `off`, `on`, `on_emptied`, `on_woken`.
    pub variants: Vec<HandoffVariant>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HandoffVariant {
    pub id: String,
    pub ns: Summary,
    pub net_ns: Summary,
    /// This variant − off, run by run (ns per packet); `None` for off.
    pub added_ns: Option<Summary>,
    /// (net ÷ off's net − 1) × 100, run by run.
    pub added_percent: Option<Summary>,
    /// Wake-ups the reader waiting in `epoll_wait` saw, per timed packet.
    pub wakeups_per_packet: Summary,
    /// IRQ work interrupts of the timed CPU (`IWI` of /proc/interrupts) per timed packet,
    /// if the kernel shows them.
    pub irq_works_per_packet: Option<Summary>,
    pub confirmed: String,
}

impl Handoff {
    pub fn variant(&self, id: &str) -> Option<&HandoffVariant> {
        self.variants.iter().find(|v| v.id == id)
    }
}

/// (b) Entries per second through each part.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub table_entries: u32,
    pub entries_per_run: u64,
    pub apply_runs: usize,
    pub apply_new_per_s: Summary,
    pub apply_again_per_s: Summary,
    pub end_to_end: EndToEnd,
    pub codec_runs: usize,
    pub codec_datagrams: u64,
    pub encode_per_s: Summary,
    pub decode_per_s: Summary,
    pub walk: Walk,
    pub burst: Burst,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndToEnd {
    pub runs: usize,
    pub entries: u64,
    pub datagrams: u64,
    /// Datagrams the sender may be ahead of the receiver.
    pub window: u64,
    /// Entries applied per second of wall time, first send to last apply.
    pub per_s: Summary,
    /// Entries per second of the sender's encode + send time.
    pub sender_per_core_s: Summary,
    /// Entries per second of the receiving thread's CPU time.
    pub receiver_per_core_s: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct Walk {
    pub runs: usize,
    pub live_entries: u64,
    /// `live_since(since = 0)`: every entry returned.
    pub all_per_s: Summary,
    pub all_ms: Summary,
    /// `live_since(since = now)`: every entry read, none returned.
    pub none_per_s: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct Burst {
    pub runs: usize,
    pub datagrams: u64,
    pub entries: u64,
    /// The receiving socket's SO_RCVBUF as the kernel reports it (the default).
    pub rcvbuf_bytes: u64,
    /// Applier threads (one per CPU) and the datagrams each one's queue holds.
    pub appliers: usize,
    pub apply_queue: usize,
    /// As the agent receives: decode on the receiving thread, apply on the appliers.
    /// Of the burst's entries, the share applied, and the share refused `queue_full`
    /// (percent); the rest never left the socket's buffer.
    pub applied_percent: Summary,
    pub queue_full_percent: Summary,
    /// Decode and apply on the receiving thread (the session as it was first written).
    pub inline_applied_percent: Summary,
}

/// (c) Bytes on the wire.
#[derive(Clone, Debug, Serialize)]
pub struct Bandwidth {
    /// UDP payload of a datagram of 0, 1 and 20 IPv4 entries, of one IPv6 entry, and of a
    /// heartbeat, as `wire::encode` made them.
    pub empty_datagram: usize,
    pub one_entry_datagram: usize,
    pub full_datagram: usize,
    pub one_ipv6_entry_datagram: usize,
    pub heartbeat_datagram: usize,
    pub entry_bytes: usize,
    pub full_wire_bytes_per_entry: f64,
    pub batch_delay_ms: f64,
    pub max_rate: u32,
    pub rates: Vec<RateRow>,
    pub heartbeat_bits_per_s: f64,
    pub refresh: RefreshRow,
}

#[derive(Clone, Debug, Serialize)]
pub struct RateRow {
    pub new_per_s: u64,
    /// Entries sent per second: the new flows, at most `max_rate`.
    pub sent_per_s: u64,
    pub entries_per_datagram: f64,
    pub datagrams_per_s: f64,
    pub bytes_per_s: f64,
    pub bits_per_s: f64,
    /// With `max_rate` at least the rate.
    pub uncapped_bits_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RefreshRow {
    pub live: u64,
    pub refresh_s: f64,
    pub datagrams: u64,
    pub bytes: u64,
    pub average_bits_per_s: f64,
    /// How long the backlog takes at `max_rate` entries/s.
    pub seconds_at_max_rate: f64,
    /// Datagrams the first flush tick after a walk sends back to back (half the bucket).
    pub first_tick_datagrams: u64,
    pub first_tick_bytes: u64,
}

/// Runs the section on threads of its own (pinned) and returns its figures; `root` is where
/// the report of a previous measurement is, to compare with.
pub fn run(opts: &SyncOptions, root: &FsPath, date: String, commit: String) -> Result<SyncResults> {
    let started = Instant::now();
    let load_before = load_average();
    let previous = previous(root);
    let worker = opts.clone();
    let (handoff, throughput, bandwidth) = std::thread::spawn(move || {
        pin_to_cpu(worker.cpu)?;
        // SAFETY: setpriority has no memory-safety preconditions.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
        let mut rig = Rig::load(FlowTable::default())?;
        println!("    handoff: new flows with sync_on off and on");
        let handoff = handoff(&worker, &mut rig)?;
        println!("    throughput: apply, loopback UDP, encode, decode, refresh walk");
        let throughput = throughput(&worker, &rig)?;
        let bandwidth = bandwidth()?;
        anyhow::Ok((handoff, throughput, bandwidth))
    })
    .join()
    .map_err(|_| anyhow!("the sync benchmark panicked"))??;
    let headline = headline(&handoff, &throughput);
    Ok(SyncResults {
        date,
        commit,
        quick: opts.quick,
        seconds: started.elapsed().as_secs_f64(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        virtualized: std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|c| c.contains(" hypervisor")),
        cpu: opts.cpu,
        other_cpu: opts.other_cpu,
        load_before,
        load_after: load_average(),
        handoff,
        throughput,
        bandwidth,
        headline,
        previous,
    })
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------
// (a) the handoff

/// A client of the benchmark's flows: a distinct address and port for every `n`.
fn client(n: u64) -> SocketAddrV4 {
    let address = Ipv4Addr::from(0x6440_0000u32.wrapping_add((n / 50_000) as u32));
    SocketAddrV4::new(address, 10_000 + (n % 50_000) as u16)
}

fn vip() -> SocketAddr {
    SocketAddr::new(VIP4.into(), PORT)
}

/// The handshake-completing ACK of client `n` (the packet that creates the entry).
fn first_ack(n: u64) -> Vec<u8> {
    let c = client(n);
    frames::tcp_v4(*c.ip(), c.port(), VIP4, PORT, false)
}

fn flow_of(n: u64) -> FlowKey {
    FlowKey::new(SocketAddr::V4(client(n)), vip(), 6, 0)
}

fn new_flow_path(sync: bool) -> Path {
    let mut flows = vec![(flow_stat::TCP_MISS_NO_SYN, 1), (flow_stat::NEW, 1)];
    if sync {
        flows.push((flow_stat::SYNC_QUEUED, 1));
    }
    Path {
        verdict: verdict::TX,
        flows,
        action: XDP_TX,
    }
}

/// Reads every record of the ring, keeping the keys of the events.
fn drain(ring: &mut RingBuf<MapData>, keys: &mut Vec<FlowKey>) -> Result<u64> {
    let mut n = 0;
    while let Some(item) = ring.next() {
        ensure!(
            item.len() >= size_of::<FlowEvent>(),
            "a flow_events record of {} bytes",
            item.len()
        );
        // SAFETY: FlowEvent is plain old data and the length was checked.
        let event: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        keys.push(event.key);
        n += 1;
    }
    Ok(n)
}

/// A thread blocked in `epoll_wait`, as the agent's ring reader is (tokio's `AsyncFd`,
/// edge-triggered), on the ring while [`Waiter::watch`] says so: the kernel wakes it when a
/// record is written into a ring its reader had emptied. It only counts the wake-ups; the
/// benchmark reads the records.
struct Waiter {
    epoll: libc::c_int,
    stop: libc::c_int,
    ring: libc::c_int,
    wakeups: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const RING_TOKEN: u64 = 1;
const STOP_TOKEN: u64 = 2;

fn epoll_ctl(
    epoll: libc::c_int,
    op: libc::c_int,
    fd: libc::c_int,
    events: i32,
    token: u64,
) -> Result<()> {
    let mut event = libc::epoll_event {
        events: events as u32,
        u64: token,
    };
    // SAFETY: a plain syscall on descriptors we own; the event struct lives on the stack.
    let rc = unsafe { libc::epoll_ctl(epoll, op, fd, &mut event) };
    ensure!(rc == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    Ok(())
}

impl Waiter {
    fn start(ring: libc::c_int, cpu: Option<usize>) -> Result<Waiter> {
        // SAFETY: plain syscalls creating descriptors we own.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        ensure!(
            epoll >= 0,
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        );
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        ensure!(stop >= 0, "eventfd: {}", std::io::Error::last_os_error());
        epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stop, libc::EPOLLIN, STOP_TOKEN)?;
        let wakeups = Arc::new(AtomicU64::new(0));
        let counted = wakeups.clone();
        let thread = std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                let _ = pin_to_cpu(cpu);
            }
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            loop {
                // SAFETY: `events` is writable for 4 entries.
                let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 4, -1) };
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return;
                }
                for event in events.iter().take(n as usize) {
                    match event.u64 {
                        RING_TOKEN => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            }
        });
        Ok(Waiter {
            epoll,
            stop,
            ring,
            wakeups,
            thread: Some(thread),
        })
    }

    /// Whether the thread waits on the ring (registered in its epoll) or not at all.
    fn watch(&self, on: bool) -> Result<()> {
        if on {
            epoll_ctl(
                self.epoll,
                libc::EPOLL_CTL_ADD,
                self.ring,
                libc::EPOLLIN | libc::EPOLLET,
                RING_TOKEN,
            )
        } else {
            epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, self.ring, 0, 0)
        }
    }

    fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a u64 to our eventfd; then closes our descriptors.
        unsafe { libc::write(self.stop, (&raw const one).cast(), 8) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        unsafe {
            libc::close(self.stop);
            libc::close(self.epoll);
        }
    }
}

/// The IRQ work interrupts `cpu` took so far (`IWI` of /proc/interrupts).
fn irq_work_interrupts(cpu: usize) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    let line = text.lines().find(|l| l.trim_start().starts_with("IWI:"))?;
    line.split_whitespace().nth(1 + cpu)?.parse().ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Noop,
    /// `sync_on` 0.
    Off,
    /// `sync_on` 1, the ring read every `drain_every` packets, nobody waiting on it.
    On,
    /// `sync_on` 1, the ring read after every packet, nobody waiting on it.
    OnEmptied,
    /// `sync_on` 1, the ring read after every packet, a thread waiting in `epoll_wait`.
    OnWoken,
}

impl Variant {
    const TIMED: [Variant; 5] = [
        Variant::Noop,
        Variant::Off,
        Variant::On,
        Variant::OnEmptied,
        Variant::OnWoken,
    ];

    fn id(self) -> &'static str {
        match self {
            Variant::Noop => "noop",
            Variant::Off => "off",
            Variant::On => "on",
            Variant::OnEmptied => "on_emptied",
            Variant::OnWoken => "on_woken",
        }
    }
}

fn handoff(opts: &SyncOptions, rig: &mut Rig) -> Result<Handoff> {
    let runs = if opts.quick { 5 } else { 31 };
    let packets: u64 = if opts.quick { 2_000 } else { 20_000 };
    let record_bytes = 8 + (size_of::<FlowEvent>() as u64).div_ceil(8) * 8;
    let ring_records = u64::from(FLOW_EVENTS_BYTES) / record_bytes;
    // Well below the ring's capacity: the timed packets never meet a full ring.
    let drain_every = (ring_records / 4).min(4_096);
    let noop = Noop::load()?;
    let mut ring = rig.balancer.dataplane_mut().take_flow_events()?;
    let waiter = Waiter::start(ring.as_raw_fd(), opts.other_cpu)?;
    rig.balancer.dataplane_mut().set_sync_on(false)?;
    // Use the table once first, so every run finds its free entries in the order a used
    // table has them (as the per-packet section's `new` case does).
    for n in 0..packets {
        time_repeat(rig.program(), &first_ack(n), 1)?;
    }
    let mut next = packets;
    // Per variant (in `Variant::TIMED`'s order): ns per packet, wake-ups per packet.
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); Variant::TIMED.len()];
    let mut wakeups: Vec<Vec<f64>> = vec![Vec::new(); Variant::TIMED.len()];
    let mut irq_works: Vec<Vec<f64>> = vec![Vec::new(); Variant::TIMED.len()];
    for run in 0..runs {
        let first = next;
        next += packets;
        let frames: Vec<Vec<u8>> = (first..next).map(first_ack).collect();
        let expected: HashSet<FlowKey> = (first..next).map(flow_of).collect();
        for k in 0..Variant::TIMED.len() {
            // Another order every run: no variant always runs first or after another.
            let slot = (k + run) % Variant::TIMED.len();
            let variant = Variant::TIMED[slot];
            if variant == Variant::Noop {
                ns[slot].push(time_single(noop.program(), &frames, XDP_TX)?);
                wakeups[slot].push(0.0);
                continue;
            }
            let sync = variant != Variant::Off;
            rig.clear_flows()?;
            let mut keys = Vec::new();
            ensure!(
                drain(&mut ring, &mut keys)? == 0,
                "flow_events held records before a run"
            );
            rig.balancer.dataplane_mut().set_sync_on(sync)?;
            let watched = variant == Variant::OnWoken;
            if watched {
                waiter.watch(true)?;
            }
            let before = rig.counters();
            let wakeups_before = waiter.wakeups();
            let iwi_before = irq_work_interrupts(opts.cpu);
            let mut total_ns = 0f64;
            let mut read = 0u64;
            match variant {
                Variant::Off => {
                    total_ns = time_single(rig.program(), &frames, XDP_TX)? * frames.len() as f64;
                }
                Variant::On => {
                    for chunk in frames.chunks(drain_every as usize) {
                        total_ns += time_single(rig.program(), chunk, XDP_TX)? * chunk.len() as f64;
                        read += drain(&mut ring, &mut keys)?;
                    }
                }
                _ => {
                    for frame in &frames {
                        total_ns +=
                            time_single(rig.program(), std::slice::from_ref(frame), XDP_TX)?;
                        read += drain(&mut ring, &mut keys)?;
                    }
                }
            }
            let iwi_after = irq_work_interrupts(opts.cpu);
            rig.balancer.dataplane_mut().set_sync_on(false)?;
            let delta = rig.counters().since(&before);
            if watched {
                // Let the last wake-up land before it is counted.
                std::thread::sleep(Duration::from_millis(2));
                waiter.watch(false)?;
            }
            delta
                .confirm(packets, &new_flow_path(sync))
                .with_context(|| format!("{}, run {}", variant.id(), run + 1))?;
            ns[slot].push(total_ns / packets as f64);
            wakeups[slot].push((waiter.wakeups() - wakeups_before) as f64 / packets as f64);
            if let (Some(a), Some(b)) = (iwi_before, iwi_after) {
                irq_works[slot].push(b.saturating_sub(a) as f64 / packets as f64);
            }
            if sync {
                ensure!(
                    read == packets,
                    "{}: {read} records read from flow_events for {packets} new flows",
                    variant.id()
                );
                let got: HashSet<FlowKey> = keys.iter().copied().collect();
                ensure!(
                    got == expected,
                    "{}: the records of flow_events are not the flows sent",
                    variant.id()
                );
            }
        }
    }
    drop(waiter);
    rig.clear_flows()?;
    let noop_ns = &ns[0];
    let off_ns = &ns[1];
    let off_net = paired_difference(off_ns, noop_ns);
    let variants = Variant::TIMED
        .iter()
        .enumerate()
        .skip(1)
        .map(|(slot, variant)| {
            let net = paired_difference(&ns[slot], noop_ns);
            let off = *variant == Variant::Off;
            HandoffVariant {
                id: variant.id().to_owned(),
                ns: Summary::of(&ns[slot]),
                added_ns: (!off).then(|| Summary::of(&paired_difference(&ns[slot], off_ns))),
                added_percent: (!off).then(|| {
                    Summary::of(
                        &paired_ratio(&net, &off_net)
                            .iter()
                            .map(|r| (r - 1.0) * 100.0)
                            .collect::<Vec<_>>(),
                    )
                }),
                net_ns: Summary::of(&net),
                wakeups_per_packet: Summary::of(&wakeups[slot]),
                irq_works_per_packet: (irq_works[slot].len() == runs)
                    .then(|| Summary::of(&irq_works[slot])),
                confirmed: new_flow_path(!off).describe(packets),
            }
        })
        .collect();
    Ok(Handoff {
        runs,
        packets_per_run: packets,
        drain_every,
        ring_bytes: FLOW_EVENTS_BYTES,
        record_bytes,
        ring_records,
        noop_ns: Summary::of(noop_ns),
        variants,
    })
}

// ---------------------------------------------------------------------------------------
// (b) throughput

type Flows = BpfHashMap<MapData, FlowKey, FlowValue>;

/// A peer's entry for client `n`'s flow: one of the rig's three IPv4 backends.
fn entry(n: u64) -> SyncEntry {
    SyncEntry {
        client: SocketAddr::V4(client(n)),
        vip: vip(),
        proto: 6,
        vlan: 0,
        backend: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11 + (n % 3) as u8)),
        flags: 0,
        age_ms: 0,
    }
}

fn clear(flows: &mut Flows) -> Result<()> {
    super::packet::clear_flows(flows)
}

fn key() -> Key {
    Key::from_bytes(&[0x5a; 32]).expect("a 32-byte key")
}

/// A received datagram as the session takes it: decoded (its tag verified) and checked
/// against the replay window (send times within 10 s).
fn accept(key: &wire::Key, guard: &mut ReplayGuard, datagram: &[u8]) -> Result<wire::Message> {
    let message = wire::decode(key, datagram)?;
    guard
        .check(
            message.sender,
            message.seq,
            message.sent_unix_ms,
            unix_ms(),
            10_000,
        )
        .map_err(|why| anyhow!("refused: {why}"))?;
    Ok(message)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn message(seq: u64, entries: &[SyncEntry]) -> Message {
    Message {
        kind: Kind::Flows,
        sender: 1,
        seq,
        sent_unix_ms: unix_ms(),
        entries: entries.to_vec(),
    }
}

/// Applies `entries` in datagram-sized groups (one clock read per group, as the session
/// does); every one must be inserted.
fn apply_all(flows: &mut Flows, directory: &Directory, entries: &[SyncEntry]) -> Result<f64> {
    let started = Instant::now();
    for group in entries.chunks(MAX_ENTRIES) {
        let now = monotonic_ns();
        for e in group {
            lb_sync::apply(flows, directory, e, now)
                .map_err(|why| anyhow!("apply refused an entry: {why}"))?;
        }
    }
    Ok(entries.len() as f64 / started.elapsed().as_secs_f64())
}

fn throughput(opts: &SyncOptions, rig: &Rig) -> Result<Throughput> {
    let q = opts.quick;
    let n: u64 = if q { 20_000 } else { 100_000 };
    let directory = Directory::of(&rig.balancer);
    let mut flows = rig.balancer.dataplane().flows_handle()?;
    let table_entries = rig.balancer.dataplane().flow_table_entries()?;
    let entries: Vec<SyncEntry> = (0..n).map(entry).collect();

    // apply into the table: new entries, then the same again (each replaces an older one).
    let apply_runs = if q { 3 } else { 11 };
    let (mut new, mut again) = (Vec::new(), Vec::new());
    for run in 0..apply_runs {
        clear(&mut flows)?;
        new.push(apply_all(&mut flows, &directory, &entries)?);
        again.push(apply_all(&mut flows, &directory, &entries)?);
        if run == 0 {
            let kept = rig.balancer.dataplane().flows();
            ensure!(
                kept.len() as u64 == n && kept.iter().all(|(_, v)| v.flags & FLOW_F_LEARNT != 0),
                "{} entries in the table after applying {n} (all learnt expected)",
                kept.len()
            );
        }
    }

    // end to end over loopback UDP.
    let e2e_runs = if q { 3 } else { 9 };
    let window = 32u64;
    let (mut e2e, mut sender_core, mut receiver_core) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..e2e_runs {
        clear(&mut flows)?;
        let (wall, sender, receiver) = end_to_end(opts, &mut flows, &directory, &entries, window)?;
        e2e.push(wall);
        sender_core.push(sender);
        receiver_core.push(receiver);
    }

    // encode and decode alone.
    let codec_runs = if q { 3 } else { 11 };
    let key = key();
    let groups: Vec<&[SyncEntry]> = entries.chunks(MAX_ENTRIES).collect();
    let (mut encode, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..codec_runs {
        let started = Instant::now();
        let datagrams: Vec<Vec<u8>> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| wire::encode(&key, &message(i as u64 + 1, g)))
            .collect::<Result<_, _>>()?;
        encode.push(n as f64 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        let mut decoded = 0;
        for d in &datagrams {
            decoded += wire::decode(&key, d)?.entries.len();
        }
        decode.push(decoded as f64 / started.elapsed().as_secs_f64());
        ensure!(decoded as u64 == n, "decoded {decoded} of {n} entries");
    }

    // the refresh walk over a table of live entries made by the data plane itself.
    clear(&mut flows)?;
    for i in 0..n {
        let (_, action) = time_repeat(rig.program(), &first_ack(1_000_000 + i), 1)?;
        ensure!(action == XDP_TX, "a first ACK returned action {action}");
    }
    let timeouts = FlowTable::default();
    let walk_runs = if q { 2 } else { 7 };
    let (mut all, mut all_ms, mut none) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..walk_runs {
        let started = Instant::now();
        let found = lb_sync::live_since(&flows, &directory, 0, &timeouts);
        let took = started.elapsed().as_secs_f64();
        ensure!(
            found.len() as u64 == n,
            "the walk found {} live entries of {n}",
            found.len()
        );
        all.push(n as f64 / took);
        all_ms.push(took * 1000.0);
        let since = monotonic_ns();
        let started = Instant::now();
        let found = lb_sync::live_since(&flows, &directory, since, &timeouts);
        let took = started.elapsed().as_secs_f64();
        ensure!(found.is_empty(), "{} entries live since now", found.len());
        none.push(n as f64 / took);
    }
    clear(&mut flows)?;

    let burst = burst(opts, rig, &mut flows, &directory)?;
    clear(&mut flows)?;
    Ok(Throughput {
        table_entries,
        entries_per_run: n,
        apply_runs,
        apply_new_per_s: Summary::of(&new),
        apply_again_per_s: Summary::of(&again),
        end_to_end: EndToEnd {
            runs: e2e_runs,
            entries: n,
            datagrams: n.div_ceil(MAX_ENTRIES as u64),
            window,
            per_s: Summary::of(&e2e),
            sender_per_core_s: Summary::of(&sender_core),
            receiver_per_core_s: Summary::of(&receiver_core),
        },
        codec_runs,
        codec_datagrams: groups.len() as u64,
        encode_per_s: Summary::of(&encode),
        decode_per_s: Summary::of(&decode),
        walk: Walk {
            runs: walk_runs,
            live_entries: n,
            all_per_s: Summary::of(&all),
            all_ms: Summary::of(&all_ms),
            none_per_s: Summary::of(&none),
        },
        burst,
    })
}

fn loopback_pair() -> Result<(UdpSocket, UdpSocket)> {
    let receiver = UdpSocket::bind("127.0.0.1:0").context("binding the receiver")?;
    receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
    let sender = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    sender.connect(receiver.local_addr()?)?;
    Ok((sender, receiver))
}

/// One run: the sender (pinned to the other CPU) encodes and sends every datagram, at most
/// `window` ahead of the receiver (pinned to this one), which decodes, checks and applies
/// them all. Entries per second: of wall time, of the sender's encode + send time, of the
/// receiver's CPU time.
fn end_to_end(
    opts: &SyncOptions,
    flows: &mut Flows,
    directory: &Directory,
    entries: &[SyncEntry],
    window: u64,
) -> Result<(f64, f64, f64)> {
    let (tx, rx) = loopback_pair()?;
    let groups: Vec<&[SyncEntry]> = entries.chunks(MAX_ENTRIES).collect();
    let datagrams = groups.len() as u64;
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let (sender_busy, receiver) = std::thread::scope(|scope| {
        let done = &done;
        let groups = &groups;
        let sender = scope.spawn(move || -> Result<f64> {
            pin_to_cpu(opts.other_cpu.unwrap_or(opts.cpu))?;
            let key = key();
            let mut busy = Duration::ZERO;
            for (i, group) in groups.iter().enumerate() {
                while i as u64 >= done.load(Ordering::Acquire) + window {
                    std::thread::sleep(Duration::from_micros(20));
                }
                let t = Instant::now();
                let datagram = wire::encode(&key, &message(i as u64 + 1, group))?;
                tx.send(&datagram).context("sending")?;
                busy += t.elapsed();
            }
            Ok(busy.as_secs_f64())
        });
        let receiver = (|| -> Result<(f64, Instant)> {
            let key = key();
            let mut guard = ReplayGuard::default();
            let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
            let cpu0 = thread_cpu_ns();
            for _ in 0..datagrams {
                let len = rx
                    .recv(&mut buf)
                    .context("a datagram lost (receive timed out)")?;
                let message = accept(&key, &mut guard, &buf[..len])?;
                let now = monotonic_ns();
                for e in &message.entries {
                    lb_sync::apply(flows, directory, e, now)
                        .map_err(|why| anyhow!("apply refused an entry: {why}"))?;
                }
                done.fetch_add(1, Ordering::Release);
            }
            Ok(((thread_cpu_ns() - cpu0) as f64 / 1e9, Instant::now()))
        })();
        if receiver.is_err() {
            // Let the sender finish.
            done.store(u64::MAX / 2, Ordering::Release);
        }
        let sender = sender
            .join()
            .map_err(|_| anyhow!("the sender panicked"))
            .and_then(|r| r);
        anyhow::Ok((sender?, receiver?))
    })?;
    let (receiver_cpu, finished) = receiver;
    let n = entries.len() as f64;
    Ok((
        n / finished.duration_since(started).as_secs_f64(),
        n / sender_busy,
        n / receiver_cpu,
    ))
}

/// Datagrams an applier's queue holds (the session's `APPLY_QUEUE`).
pub const APPLY_QUEUE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receiving {
    /// Decode and apply on the receiving thread.
    Inline,
    /// Decode on the receiving thread, apply on one pinned thread per CPU, datagrams dealt
    /// round-robin through queues of `APPLY_QUEUE` (refused when full), as the session does.
    Appliers,
}

/// What a peer keeps of a refresh burst: the first flush tick after a walk sends half the
/// bucket (`max_rate / 2` entries) back to back. Sent as fast as encode + send go, to a
/// receiver with the default receive buffer, received both ways.
fn burst(opts: &SyncOptions, rig: &Rig, flows: &mut Flows, directory: &Directory) -> Result<Burst> {
    let runs = if opts.quick { 2 } else { 5 };
    let entries_n = u64::from(DEFAULT_SYNC_MAX_RATE / 2);
    let entries: Vec<SyncEntry> = (0..entries_n).map(|i| entry(2_000_000 + i)).collect();
    let groups: Vec<&[SyncEntry]> = entries.chunks(MAX_ENTRIES).collect();
    // The machine's CPUs (this thread is pinned to one: not its own affinity).
    // SAFETY: sysconf has no memory-safety preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpus = usize::try_from(online).unwrap_or(1).max(1);
    let (mut applied, mut refused, mut inline) = (Vec::new(), Vec::new(), Vec::new());
    let mut rcvbuf = 0u64;
    for run in 0..runs {
        let ways = if run % 2 == 0 {
            [Receiving::Appliers, Receiving::Inline]
        } else {
            [Receiving::Inline, Receiving::Appliers]
        };
        for way in ways {
            clear(flows)?;
            let handles = (0..cpus)
                .map(|_| rig.balancer.dataplane().flows_handle())
                .collect::<Result<Vec<_>>>()?;
            let (tx, rx) = loopback_pair()?;
            rx.set_read_timeout(Some(Duration::from_millis(300)))?;
            rcvbuf = socket_rcvbuf(&rx)?;
            let (ok, full) = burst_once(opts, way, tx, rx, flows, handles, directory, &groups)?;
            let percent = |n: u64| n as f64 * 100.0 / entries_n as f64;
            match way {
                Receiving::Inline => inline.push(percent(ok)),
                Receiving::Appliers => {
                    applied.push(percent(ok));
                    refused.push(percent(full));
                }
            }
        }
    }
    Ok(Burst {
        runs,
        datagrams: groups.len() as u64,
        entries: entries_n,
        rcvbuf_bytes: rcvbuf,
        appliers: cpus,
        apply_queue: APPLY_QUEUE,
        applied_percent: Summary::of(&applied),
        queue_full_percent: Summary::of(&refused),
        inline_applied_percent: Summary::of(&inline),
    })
}

/// One burst: entries applied, and entries refused because an applier's queue was full.
#[allow(clippy::too_many_arguments)]
fn burst_once(
    opts: &SyncOptions,
    way: Receiving,
    tx: UdpSocket,
    rx: UdpSocket,
    flows: &mut Flows,
    handles: Vec<Flows>,
    directory: &Directory,
    groups: &[&[SyncEntry]],
) -> Result<(u64, u64)> {
    let applied = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let applied = &applied;
        let sender = scope.spawn(move || -> Result<()> {
            pin_to_cpu(opts.other_cpu.unwrap_or(opts.cpu))?;
            let key = key();
            for (i, group) in groups.iter().enumerate() {
                tx.send(&wire::encode(&key, &message(i as u64 + 1, group))?)?;
            }
            Ok(())
        });
        let mut queues = Vec::new();
        if way == Receiving::Appliers {
            for (cpu, mut handle) in handles.into_iter().enumerate() {
                let (queue, jobs) = std::sync::mpsc::sync_channel::<Vec<SyncEntry>>(APPLY_QUEUE);
                queues.push(queue);
                scope.spawn(move || {
                    let _ = pin_to_cpu(cpu);
                    while let Ok(entries) = jobs.recv() {
                        let now = monotonic_ns();
                        for e in &entries {
                            if lb_sync::apply(&mut handle, directory, e, now).is_ok() {
                                applied.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        }
        let key = key();
        let mut guard = ReplayGuard::default();
        let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
        let (mut full, mut next) = (0u64, 0usize);
        // Until the sender is done and nothing came for 300 ms.
        while let Ok(len) = rx.recv(&mut buf) {
            let message = accept(&key, &mut guard, &buf[..len])?;
            match way {
                Receiving::Inline => {
                    let now = monotonic_ns();
                    for e in &message.entries {
                        if lb_sync::apply(flows, directory, e, now).is_ok() {
                            applied.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Receiving::Appliers => {
                    let n = message.entries.len() as u64;
                    let queue = &queues[next % queues.len()];
                    next += 1;
                    if queue.try_send(message.entries).is_err() {
                        full += n;
                    }
                }
            }
        }
        // The appliers finish their queues and end.
        drop(queues);
        sender
            .join()
            .map_err(|_| anyhow!("the sender panicked"))??;
        anyhow::Ok(full)
    })
    .map(|full| (applied.load(Ordering::Relaxed), full))
}

fn socket_rcvbuf(socket: &UdpSocket) -> Result<u64> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes an int into `value`, whose size is passed.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    ensure!(rc == 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    Ok(value as u64)
}

// ---------------------------------------------------------------------------------------
// (c) bandwidth

/// Wire bytes (UDP payload + UDP/IPv4 headers) a steady `sent` entries per second take,
/// flushed every `batch` seconds, of datagrams of at most `MAX_ENTRIES` entries of
/// `entry` bytes each on an `empty`-byte datagram.
fn steady(sent: f64, batch: f64, empty: usize, entry: usize) -> (f64, f64, f64) {
    let per_tick = sent * batch;
    let full = (per_tick / MAX_ENTRIES as f64).floor();
    let rest = per_tick - full * MAX_ENTRIES as f64;
    let datagrams_per_tick = full + if rest > 1e-9 { 1.0 } else { 0.0 };
    let bytes_per_tick =
        datagrams_per_tick * (empty + UDP_IPV4_BYTES) as f64 + per_tick * entry as f64;
    let ticks = 1.0 / batch;
    let datagrams = datagrams_per_tick * ticks;
    let per_datagram = if datagrams_per_tick > 0.0 {
        per_tick / datagrams_per_tick
    } else {
        0.0
    };
    (per_datagram, datagrams, bytes_per_tick * ticks)
}

fn bandwidth() -> Result<Bandwidth> {
    let key = key();
    let len = |entries: &[SyncEntry]| -> Result<usize> {
        Ok(wire::encode(&key, &message(1, entries))?.len())
    };
    let twenty: Vec<SyncEntry> = (0..MAX_ENTRIES as u64).map(entry).collect();
    let empty = len(&[])?;
    let one = len(&twenty[..1])?;
    let full = len(&twenty)?;
    let v6 = SyncEntry {
        client: SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 7)),
            40_000,
        ),
        vip: SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)),
            PORT,
        ),
        backend: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11)),
        ..entry(0)
    };
    let one_v6 = len(&[v6])?;
    let heartbeat = wire::encode(
        &key,
        &Message {
            kind: Kind::Heartbeat,
            ..message(1, &[])
        },
    )?
    .len();
    let entry_bytes = one - empty;
    ensure!(
        full == empty + MAX_ENTRIES * entry_bytes && one_v6 == one,
        "datagram sizes are not linear in their entries: {empty}, {one}, {full}, IPv6 {one_v6}"
    );
    let batch = BATCH_DELAY.as_secs_f64();
    let max_rate = DEFAULT_SYNC_MAX_RATE;
    let rates = RATES
        .iter()
        .map(|&rate| {
            let sent = rate.min(u64::from(max_rate));
            let (per_datagram, datagrams, bytes) = steady(sent as f64, batch, empty, entry_bytes);
            let (_, _, uncapped) = steady(rate as f64, batch, empty, entry_bytes);
            RateRow {
                new_per_s: rate,
                sent_per_s: sent,
                entries_per_datagram: per_datagram,
                datagrams_per_s: datagrams,
                bytes_per_s: bytes,
                bits_per_s: bytes * 8.0,
                uncapped_bits_per_s: uncapped * 8.0,
            }
        })
        .collect();
    let refresh_s = DEFAULT_SYNC_REFRESH.as_secs_f64();
    let live = REFRESH_LIVE;
    let datagrams = live.div_ceil(MAX_ENTRIES as u64);
    let bytes = datagrams * (empty + UDP_IPV4_BYTES) as u64 + live * entry_bytes as u64;
    let first_tick_entries = u64::from(max_rate / 2).min(live);
    let first_tick_datagrams = first_tick_entries.div_ceil(MAX_ENTRIES as u64);
    Ok(Bandwidth {
        empty_datagram: empty,
        one_entry_datagram: one,
        full_datagram: full,
        one_ipv6_entry_datagram: one_v6,
        heartbeat_datagram: heartbeat,
        entry_bytes,
        full_wire_bytes_per_entry: (full + UDP_IPV4_BYTES) as f64 / MAX_ENTRIES as f64,
        batch_delay_ms: batch * 1000.0,
        max_rate,
        rates,
        heartbeat_bits_per_s: (heartbeat + UDP_IPV4_BYTES) as f64 * 8.0 / HEARTBEAT.as_secs_f64(),
        refresh: RefreshRow {
            live,
            refresh_s,
            datagrams,
            bytes,
            average_bits_per_s: bytes as f64 * 8.0 / refresh_s,
            seconds_at_max_rate: live as f64 / f64::from(max_rate),
            first_tick_datagrams,
            first_tick_bytes: first_tick_datagrams * (full + UDP_IPV4_BYTES) as u64,
        },
    })
}

// ---------------------------------------------------------------------------------------
// headline figures and the previous measurement

fn headline(h: &Handoff, t: &Throughput) -> Vec<Figure> {
    let f = |id: &str, what: &str, unit: &str, s: &Summary| Figure {
        id: id.to_owned(),
        what: what.to_owned(),
        unit: unit.to_owned(),
        median: s.median,
    };
    let mut figures = Vec::new();
    for v in &h.variants {
        match &v.added_ns {
            None => figures.push(f(
                "off_net_ns",
                "new flow, sync off, net of the no-op",
                "ns",
                &v.net_ns,
            )),
            Some(added) => figures.push(f(
                &format!("added_ns_{}", v.id),
                &format!("added by the handoff ({})", variant_title(&v.id)),
                "ns",
                added,
            )),
        }
    }
    figures.extend([
        f(
            "apply_new_per_s",
            "apply, new entries",
            "entries/s",
            &t.apply_new_per_s,
        ),
        f(
            "apply_again_per_s",
            "apply, entries present",
            "entries/s",
            &t.apply_again_per_s,
        ),
        f(
            "e2e_per_s",
            "end to end over loopback UDP",
            "entries/s",
            &t.end_to_end.per_s,
        ),
        f(
            "sender_per_core_s",
            "sender, per core",
            "entries/s",
            &t.end_to_end.sender_per_core_s,
        ),
        f(
            "receiver_per_core_s",
            "receiver, per core",
            "entries/s",
            &t.end_to_end.receiver_per_core_s,
        ),
        f("encode_per_s", "encode only", "entries/s", &t.encode_per_s),
        f("decode_per_s", "decode only", "entries/s", &t.decode_per_s),
        f(
            "walk_all_per_s",
            "refresh walk, every entry live",
            "entries/s",
            &t.walk.all_per_s,
        ),
        f(
            "walk_none_per_s",
            "refresh walk, none live",
            "entries/s",
            &t.walk.none_per_s,
        ),
        f(
            "burst_appliers_applied_percent",
            "refresh burst applied by the peer (appliers)",
            "%",
            &t.burst.applied_percent,
        ),
        f(
            // The id the inline figure had when it was the only one.
            "burst_applied_percent",
            "refresh burst applied by the peer (inline)",
            "%",
            &t.burst.inline_applied_percent,
        ),
    ]);
    figures
}

/// How a variant of the handoff is named in the report.
fn variant_title(id: &str) -> &'static str {
    match id {
        "off" => "off",
        "on" => "on, ring read in batches",
        "on_emptied" => "on, ring read after every packet, nobody waiting",
        "on_woken" => "on, ring read after every packet, reader waiting",
        _ => "?",
    }
}

/// The headline figures of the sync section in the report under `root`, if any.
fn previous(root: &FsPath) -> Option<Previous> {
    let text = std::fs::read_to_string(root.join(report::JSON)).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let section = json.get(KEY)?;
    let figures = section
        .get("headline")?
        .as_array()?
        .iter()
        .filter_map(|f| {
            Some(Figure {
                id: f.get("id")?.as_str()?.to_owned(),
                what: f.get("what")?.as_str()?.to_owned(),
                unit: f.get("unit")?.as_str()?.to_owned(),
                median: f.get("median")?.as_f64()?,
            })
        })
        .collect();
    Some(Previous {
        date: section.get("date")?.as_str()?.to_owned(),
        commit: section.get("commit")?.as_str()?.to_owned(),
        quick: section.get("quick")?.as_bool()?,
        load_before: section.get("load_before")?.as_f64().unwrap_or(f64::NAN),
        load_after: section.get("load_after")?.as_f64().unwrap_or(f64::NAN),
        figures,
    })
}

// ---------------------------------------------------------------------------------------
// the report

fn k(s: &Summary) -> String {
    format!(
        "{:.0} k ({:.0}–{:.0} k)",
        s.median / 1e3,
        s.min / 1e3,
        s.max / 1e3
    )
}

fn mbit(bits: f64) -> String {
    if bits >= 1e6 {
        format!("{:.2} Mbit/s", bits / 1e6)
    } else {
        format!("{:.1} kbit/s", bits / 1e3)
    }
}

fn figure_value(f: &Figure) -> String {
    amount(&f.unit, f.median, "")
}

/// `value` in `unit`, with `sign` ("+" to show it).
fn amount(unit: &str, value: f64, sign: &str) -> String {
    let plus = if sign == "+" && value >= 0.0 { "+" } else { "" };
    match unit {
        "entries/s" => format!("{plus}{:.0} k entries/s", value / 1e3),
        "ns" => format!("{plus}{value:.1} ns"),
        unit => format!("{plus}{value:.1} {unit}"),
    }
}

/// The section, between its markers, for BENCHMARKS.md.
pub fn block(section: &super::Section<SyncResults>, alone: Option<&str>) -> String {
    let mut out = format!("{BEGIN}\n## Flow-state sync between LBs\n\n");
    if let Some(alone) = alone {
        let _ = writeln!(out, "{alone}\n");
    }
    match section {
        super::Section::Measured(r) => render(&mut out, r),
        super::Section::NotMeasured { reason } => {
            let _ = writeln!(out, "Not measured: {reason}.\n");
        }
    }
    let _ = writeln!(out, "{END}\n");
    out
}

fn render(out: &mut String, r: &SyncResults) {
    let h = &r.handoff;
    let t = &r.throughput;
    let b = &r.bandwidth;
    let _ = writeln!(
        out,
        "What flow-state sync (`sync:`, `xdp-lb/src/sync/`) costs the data plane, how many \
         entries one LB can send and apply, and the traffic it makes. Measured{} in {:.0} s \
         on {} from commit {}; the machine's 1-minute load average was {:.2} before and \
         {:.2} after (other work shares its {} CPUs and shows in the spread, which is why \
         every comparison below is taken run by run).\n",
        if r.quick {
            " with --quick (fewer runs; not for publishing)"
        } else {
            ""
        },
        r.seconds,
        r.date,
        r.commit,
        r.load_before,
        r.load_after,
        r.cpus,
    );

    // (a)
    let woken = h
        .variant("on_woken")
        .map_or_else(String::new, |v| v.wakeups_per_packet.show(2));
    let _ = writeln!(
        out,
        "### What handing a new entry to the agent adds to its first packet\n\n\
         While `sync_on[0]` is 1, the packet that creates a connection-table entry (a TCP \
         handshake's ACK, a UDP flow's first datagram) also writes it into the `flow_events` \
         ring buffer (`hand_to_agent`: one `bpf_ringbuf_output` of a {}-byte event, {} bytes \
         of ring with its header; the ring holds {} of them). Timed as the per-packet \
         section's `new` case (single method, on CPU {}): {} distinct handshake ACKs per run \
         into a default table emptied before each variant, one `BPF_PROG_TEST_RUN` each, \
         beside the no-op on the same frames, {} runs, the variants in another order every \
         run:\n\n\
         * **off**: `sync_on` 0, as without `sync:`;\n\
         * **on, ring read in batches**: `sync_on` 1, the ring read (emptied) every {} \
         packets between test runs, so the timed packets never meet a full ring and only the \
         first record of a batch lands in an empty ring (a busy LB whose reader is behind);\n\
         * **on, ring read after every packet, nobody waiting**: every record lands in an \
         empty ring, as at an LB whose reader keeps up. The program passes \
         `BPF_RB_NO_WAKEUP`, so `bpf_ringbuf_commit` queues no irq_work for it (without the \
         flag it queued one per such record to wake the ring's readers);\n\
         * **on, ring read after every packet, reader waiting**: the same with a thread \
         waiting in `epoll_wait` on the ring (edge-triggered, on CPU {}), as an event-driven \
         reader would: the thread saw {} wake-ups per packet. (The agent does not wait so: it \
         reads the ring every `BATCH_DELAY`, 10 ms.)\n\n\
         An irq_work and a wake-up, when there are any, run inside the timed test run (the \
         interrupt is taken at once, on the same CPU). Every run checks the counters (column *confirmed*: \
         `sync_queued` rises by exactly the packets timed, `sync_ring_full` not at all) and \
         reads the ring back: exactly one record per packet, and the records' flows are the \
         flows sent.\n",
        size_of::<FlowEvent>(),
        h.record_bytes,
        h.ring_records,
        r.cpu,
        h.packets_per_run,
        h.runs,
        h.drain_every,
        r.other_cpu.unwrap_or(r.cpu),
        woken,
    );
    let _ = writeln!(
        out,
        "| sync | ns per packet | no-op | net | added over off (run by run) | added, % of off's net | irq_work interrupts per packet (CPU {}) | reader wake-ups per packet | confirmed per run |\n|---|---|---|---|---|---|---|---|---|",
        r.cpu
    );
    for v in &h.variants {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            variant_title(&v.id),
            v.ns.show(1),
            h.noop_ns.show(1),
            v.net_ns.show(1),
            v.added_ns.as_ref().map_or("–".to_owned(), |s| s.show(1)),
            v.added_percent
                .as_ref()
                .map_or("–".to_owned(), |s| format!("{} %", s.show(1))),
            v.irq_works_per_packet
                .as_ref()
                .map_or("not shown".to_owned(), |s| s.show(3)),
            v.wakeups_per_packet.show(3),
            v.confirmed
        );
    }
    let _ = writeln!(out);
    for v in &h.variants {
        if let Some(added) = v.added_ns.as_ref().filter(|a| a.min < 0.0 && a.max > 0.0) {
            let _ = writeln!(
                out,
                "*{}*: the run-by-run difference spans zero ({:.1} to {:.1} ns, median {:.1}): \
                 within this machine's noise, the handoff itself is not told apart from off.\n",
                variant_title(&v.id),
                added.min,
                added.max,
                added.median
            );
        }
    }
    if let Some(woken) = h.variant("on_woken").and_then(|v| v.added_ns.as_ref()) {
        let share = |rate: f64| rate * woken.median / 1e9 * 100.0;
        let _ = writeln!(
            out,
            "What a kept-up reader costs: {:.3} µs per new flow with a reader waiting (at \
             1,000 new flows per second {:.2}% of the CPU taking them, at 10,000 {:.1}%). The \
             first measurements of this section (commit 26d0cfb) were taken before the program \
             passed `BPF_RB_NO_WAKEUP`: then every record written into an emptied ring queued \
             an irq_work that woke the reader, and a new flow at an LB whose reader kept up \
             paid 10.4 to 16.8 µs (medians of four runs), about 17% of a CPU at 10,000 new \
             flows per second. Hence the flag, and the agent reading the ring on its 10 ms \
             batching tick instead of waiting on it: an entry waits at most that long, as it \
             may in its batch anyway.{}\n",
            woken.median / 1000.0,
            share(1_000.0),
            share(10_000.0),
            if r.virtualized {
                " This machine is a virtual machine (the CPU has the hypervisor flag), where \
                 taking an interrupt costs an exit to the hypervisor: on bare metal an irq_work \
                 costs less (not measured here)."
            } else {
                ""
            }
        );
    }

    // (b)
    let e = &t.end_to_end;
    let _ = writeln!(
        out,
        "### Entries per second: sending and applying\n\n\
         Peers' entries for {} distinct IPv4 TCP flows of one service (three backends), \
         applied into the `flows` map of a loaded data plane (the default table: {} entries, \
         a handle from `Dataplane::flows_handle()`, as the session's), with the `Directory` \
         of its balancer; the table is emptied before every run, and the benchmark checks \
         that every entry was inserted (all learnt, none evicted). Entries per second, \
         median of the runs (min–max):\n",
        t.entries_per_run, t.table_entries
    );
    let _ = writeln!(out, "| what | how | runs | entries/s |\n|---|---|---|---|");
    let rows = [
        (
            "`apply`, new entries",
            format!(
                "`sync::apply` of {} entries into an empty table, one clock read per 20 \
                 (CPU {}): a lookup (missing) and an insert each",
                t.entries_per_run, r.cpu
            ),
            t.apply_runs,
            &t.apply_new_per_s,
        ),
        (
            "`apply`, entries present",
            "the same entries again right after: a lookup (older) and a replacing insert each"
                .to_owned(),
            t.apply_runs,
            &t.apply_again_per_s,
        ),
        (
            "end to end over loopback UDP",
            format!(
                "{} datagrams of 20 entries: a sender thread (CPU {}) encodes each with \
                 `wire::encode` and sends it, at most {} datagrams ahead; a receiver (CPU {}) \
                 receives, `wire::decode`s (HMAC checked), checks it with a `ReplayGuard` and \
                 `apply`s every entry. Wall time from the first send to the last apply; every \
                 datagram must arrive",
                e.datagrams,
                r.other_cpu.unwrap_or(r.cpu),
                e.window,
                r.cpu
            ),
            e.runs,
            &e.per_s,
        ),
        (
            "sender, per core",
            "the same runs: entries over the sender's time in `encode` + `send` (the send \
             includes loopback's delivery into the receiver's socket)"
                .to_owned(),
            e.runs,
            &e.sender_per_core_s,
        ),
        (
            "receiver, per core",
            "the same runs: entries over the receiving thread's CPU time (receive, decode, \
             replay check, apply)"
                .to_owned(),
            e.runs,
            &e.receiver_per_core_s,
        ),
        (
            "encode only",
            format!(
                "`wire::encode` of {} datagrams of 20 entries (HMAC-SHA256 included)",
                t.codec_datagrams
            ),
            t.codec_runs,
            &t.encode_per_s,
        ),
        (
            "decode only",
            "`wire::decode` of those datagrams (tag verified, every entry checked)".to_owned(),
            t.codec_runs,
            &t.decode_per_s,
        ),
        (
            "refresh walk, every entry live",
            format!(
                "`live_since(since = 0)` over a table of {} entries the data plane made (one \
                 handshake ACK each): every one returned, {} ms per walk",
                t.walk.live_entries,
                t.walk.all_ms.show(0)
            ),
            t.walk.runs,
            &t.walk.all_per_s,
        ),
        (
            "refresh walk, none live",
            "`live_since(since = now)` over the same table: every entry read, none returned"
                .to_owned(),
            t.walk.runs,
            &t.walk.none_per_s,
        ),
    ];
    for (what, how, runs, s) in rows {
        let _ = writeln!(out, "| {what} | {how} | {runs} | {} |", k(s));
    }
    let _ = writeln!(
        out,
        "\nThe session decodes on its receiving thread and applies on one pinned thread per \
         CPU (so its apply capacity is about the CPUs times the `apply` rate above, the \
         decode being far faster); it takes at most `max_rate` entries per second from each \
         peer (default {}) and sends at most `max_rate` per second in all, so with the \
         defaults the rate bound, not the CPU, limits sync as long as the figures above stay \
         higher. The send side also reads the ring and names each entry's backend (a hash \
         lookup), not timed here. A walk \
         reads the table one `bpf_map_get_next_key` + one lookup per entry: at the rate \
         above, a table of 1,000,000 entries takes about {:.1} s per walk (on the walk's own \
         thread).\n",
        b.max_rate,
        1e6 / t.walk.all_per_s.median
    );
    let bu = &t.burst;
    let _ = writeln!(
        out,
        "**A refresh burst at a peer.** The worst case the session first sent (until commit \
         26d0cfb): the first flush tick after a walk sent the backlog while more than half \
         of the send bucket was left, so from a full bucket (an LB with few new flows) {} \
         entries ({} datagrams) back to back to each peer. The session now paces a refresh to \
         `max_rate` × 10 ms per tick (500 entries, 25 datagrams, with the defaults) and asks \
         for an 8 MiB receive buffer (`xdp_lb::sync::RECEIVE_BUFFER`); the burst is kept here \
         as what a receiver survives. Sent over loopback to a receiver with the default \
         receive buffer (SO_RCVBUF {} bytes), {} runs each way, alternating:\n\n\
         * as the session receives: decode and replay check on the receiving thread, `apply` \
         on one pinned thread per CPU ({} here), datagrams dealt round-robin through queues of \
         {} (refused `queue_full` when one is full): **{} % of the entries applied**, {} % \
         refused `queue_full`, the rest dropped by the receiving socket;\n\
         * decode and apply both on the receiving thread, as the session first did: **{} % \
         applied**, the rest dropped by the receiving socket.\n\n\
         Loopback's sender is paced by its own encode and send; over a fast link a burst \
         arrives faster, and the receiving thread must keep up with it alone.\n",
        bu.entries,
        bu.datagrams,
        bu.rcvbuf_bytes,
        bu.runs,
        bu.appliers,
        bu.apply_queue,
        bu.applied_percent.show(1),
        bu.queue_full_percent.show(1),
        bu.inline_applied_percent.show(1),
    );

    // (c)
    let _ = writeln!(
        out,
        "### Bandwidth\n\n\
         Datagram sizes as `wire::encode` made them here (UDP payload): {} bytes with no \
         entry, {} with one, {} with 20 (the most, `MAX_ENTRIES`), so {} bytes per entry \
         (an IPv6 entry too: {} bytes with one); a heartbeat is {} bytes. On the wire each \
         datagram adds {UDP_IPV4_BYTES} bytes of IPv4 and UDP headers ({UDP_IPV6_BYTES} over \
         IPv6; Ethernet framing not counted): a full datagram is {} bytes, **{:.1} bytes per \
         entry**.\n\n\
         New entries wait for their datagram until the session's next flush tick (every \
         `BATCH_DELAY` = {:.0} ms) unless 20 are queued before, so at a steady rate r a \
         datagram carries min(20, r × {:.2} s) entries: below {:.0} new flows per second \
         datagrams leave partly filled and each entry carries more of the fixed {} bytes. \
         Every datagram goes to every peer; the figures are per peer, and the sender sends \
         at most `max_rate` = {} entries per second (the rest are counted `rate_limited` and \
         wait for the refresh).\n",
        b.empty_datagram,
        b.one_entry_datagram,
        b.full_datagram,
        b.entry_bytes,
        b.one_ipv6_entry_datagram,
        b.heartbeat_datagram,
        b.full_datagram + UDP_IPV4_BYTES,
        b.full_wire_bytes_per_entry,
        b.batch_delay_ms,
        b.batch_delay_ms / 1000.0,
        MAX_ENTRIES as f64 / (b.batch_delay_ms / 1000.0),
        b.empty_datagram + UDP_IPV4_BYTES,
        b.max_rate
    );
    let _ = writeln!(
        out,
        "| new connections/s | entries sent/s | entries per datagram | datagrams/s | bytes/s | per peer | with `max_rate` ≥ the rate |\n|---|---|---|---|---|---|---|"
    );
    for row in &b.rates {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {:.0} | {} | {} |",
            row.new_per_s,
            row.sent_per_s,
            row.entries_per_datagram,
            row.datagrams_per_s,
            row.bytes_per_s,
            mbit(row.bits_per_s),
            if row.sent_per_s == row.new_per_s {
                "same".to_owned()
            } else {
                mbit(row.uncapped_bits_per_s)
            }
        );
    }
    let rf = &b.refresh;
    let _ = writeln!(
        out,
        "\nPlus, per peer: **heartbeats**, one {}-byte datagram per second ({:.0} bytes on the \
         wire): {}; and **refreshes**: every `refresh` R the walk finds the L flows this LB \
         carried with a packet since the last walk and sends them again, ⌈L / 20⌉ datagrams, \
         ⌈L / 20⌉ × ({} + {UDP_IPV4_BYTES}) + L × {} bytes per R ≈ {:.1} × L / R bytes per \
         second. For L = {} live streams and R = {:.0} s (the default): {} datagrams, {} bytes \
         per refresh, **{} on average**; sent as the bucket allows ({:.1} s at `max_rate`, \
         new entries first), starting, when the bucket was full, with a burst of {} datagrams \
         ({} bytes) on the first \
         flush tick (see the burst above).\n",
        b.heartbeat_datagram,
        (b.heartbeat_datagram + UDP_IPV4_BYTES) as f64,
        mbit(b.heartbeat_bits_per_s),
        b.empty_datagram,
        b.entry_bytes,
        b.full_wire_bytes_per_entry,
        rf.live,
        rf.refresh_s,
        rf.datagrams,
        rf.bytes,
        mbit(rf.average_bits_per_s),
        rf.seconds_at_max_rate,
        rf.first_tick_datagrams,
        rf.first_tick_bytes
    );

    // Against the previous measurement.
    match &r.previous {
        Some(p) if !p.figures.is_empty() => {
            let _ = writeln!(
                out,
                "### Against the previous measurement\n\nThe same figures (medians) from the \
                 measurement this one replaced ({}, commit {}{}; load average {:.2} before and \
                 {:.2} after it, {:.2} and {:.2} around this one); a change of more than \
                 {MOVED_PERCENT:.0}% is named below.\n\n| figure | this run | previous | change |\n|---|---|---|---|",
                p.date,
                p.commit,
                if p.quick { ", --quick" } else { "" },
                p.load_before,
                p.load_after,
                r.load_before,
                r.load_after
            );
            let mut moved = Vec::new();
            for f in &r.headline {
                let Some(old) = p.figures.iter().find(|o| o.id == f.id) else {
                    continue;
                };
                let change = if old.median.abs() > f64::EPSILON {
                    (f.median / old.median - 1.0) * 100.0
                } else {
                    f64::NAN
                };
                if change.is_finite() && change.abs() > MOVED_PERCENT {
                    moved.push(format!("{} ({change:+.0}%)", f.what));
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    f.what,
                    figure_value(f),
                    figure_value(old),
                    if change.is_finite() {
                        format!(
                            "{} ({change:+.1}%)",
                            amount(&f.unit, f.median - old.median, "+")
                        )
                    } else {
                        amount(&f.unit, f.median - old.median, "+")
                    }
                );
            }
            let _ = writeln!(
                out,
                "\n{}\n",
                if moved.is_empty() {
                    format!(
                        "No figure moved by more than {MOVED_PERCENT:.0}% between the two measurements."
                    )
                } else {
                    format!(
                        "Moved by more than {MOVED_PERCENT:.0}% between the two measurements \
                         (noise from other work on the machine, unless the code changed in \
                         between): {}.",
                        moved.join("; ")
                    )
                }
            );
        }
        _ => {}
    }
}

/// `--only sync`: the section alone, written into the existing report.
pub fn run_only(opts: &super::BenchOptions) -> Result<()> {
    let machine = super::machine(&opts.root);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = super::Section::from_result(run(
        &SyncOptions {
            quick: opts.quick,
            cpu: cpus - 1,
            other_cpu: (cpus >= 2).then(|| cpus - 2),
        },
        &opts.root,
        machine.date.clone(),
        machine.commit.clone(),
    ));
    if let super::Section::NotMeasured { reason } = &results {
        anyhow::bail!("not measured: {reason}");
    }
    write(
        &opts.root,
        &results,
        Some(&format!(
            "Measured by itself (`cargo xtask bench --only sync`) on {} from commit {}, after the \
         rest of this report.",
            machine.date, machine.commit
        )),
    )
}

/// Writes the section into the report under `root` (its block and its JSON key).
pub fn write(
    root: &FsPath,
    results: &super::Section<SyncResults>,
    alone: Option<&str>,
) -> Result<()> {
    report::update_marked_section(
        root,
        KEY,
        &serde_json::to_value(results)?,
        &block(results, alone),
        BEGIN,
        END,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_fills_datagrams_up_to_twenty_entries() {
        // 1,000/s: 10 entries per 10-ms tick, one datagram of 10 entries.
        let (per, datagrams, bytes) = steady(1_000.0, 0.01, 64, 64);
        assert!((per - 10.0).abs() < 1e-9);
        assert!((datagrams - 100.0).abs() < 1e-9);
        assert!((bytes - 100.0 * (64.0 + 28.0 + 640.0)).abs() < 1e-6);
        // 10,000/s: 100 per tick, five full datagrams.
        let (per, datagrams, _) = steady(10_000.0, 0.01, 64, 64);
        assert!((per - 20.0).abs() < 1e-9);
        assert!((datagrams - 500.0).abs() < 1e-9);
        // 2,500/s: 25 per tick, one full and one of 5.
        let (per, datagrams, _) = steady(2_500.0, 0.01, 64, 64);
        assert!((per - 12.5).abs() < 1e-9);
        assert!((datagrams - 200.0).abs() < 1e-9);
    }
}
