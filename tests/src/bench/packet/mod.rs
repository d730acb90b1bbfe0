//! Per-packet cost of the `xdp_lb` program through BPF_PROG_TEST_RUN, each case beside the
//! no-op XDP_TX program timed in the same run, with the data plane's own counters proving
//! that every timed packet took the path being timed.
//!
//! Two methods (see BENCHMARKS.md):
//! * **repeat**: one test run of `repeat` iterations; the kernel reports the mean time per
//!   iteration. Iteration k+1 sees the frame iteration k wrote; the program only rewrites
//!   MACs, so the 5-tuple never changes and a service frame is a connection-table hit from
//!   the second iteration on. A warm-up packet puts the flow in the table first.
//! * **single**: many test runs of one iteration, each with its own frame (distinct
//!   5-tuples), for paths that need a new key per packet. The kernel's per-run time then
//!   includes the timer's own overhead, so the no-op is timed the same way.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData},
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use serde::Serialize;
use xdp_lb::{
    balancer::{Balancer, Forwarding},
    config::{Backend, FlowTable, MacAddr},
    dataplane::{Dataplane, LoadOptions, LogLevel},
    pins::PinDir,
};
use xdp_lb_common::{FlowKey, FlowValue, MAGLEV_DEFAULT_SIZE, flow_stat, map_names, verdict};

use super::{
    profile::{Profile, ProgramFacts},
    service_yaml, services,
    stats::{Summary, paired_difference, paired_ratio},
};
use crate::frames::{self, LB_MAC};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
/// BPF_PROG_TEST_RUN's ingress interface (loopback): backends "behind" it get XDP_TX.
const LOOPBACK_IFINDEX: u32 = 1;
pub const SEED: u32 = 0x5eed_1b5d;
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
pub const PORT: u16 = 1935;
/// A port of the VIP with a service whose only backend has weight 0 (no table).
const EMPTY_PORT: u16 = 9999;
/// A UDP service of the VIP (three backends): a datagram without an entry creates one.
pub const UDP_PORT: u16 = 9000;
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 0x50);

#[derive(Clone, Debug)]
pub struct PacketOptions {
    /// Iterations of one repeat-method run.
    pub repeat: u32,
    /// Runs of every case.
    pub runs: usize,
    /// Test runs (one packet each) of one single-method run.
    pub single_packets: u32,
    /// Entries of the connection table in the eviction case.
    pub evict_table: u32,
    /// Seconds perf samples each profiled case (0: no profile).
    pub profile_seconds: u32,
    /// The CPU every test run is pinned to.
    pub cpu: usize,
}

/// One timed case.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    pub id: String,
    pub title: String,
    /// "repeat" or "single".
    pub method: String,
    /// Packets timed in one run.
    pub packets_per_run: u64,
    /// What the counters showed for every run (all of them identical by construction: a
    /// run whose counters differ aborts the benchmark).
    pub confirmed: String,
    pub ns: Summary,
    pub noop_ns: Summary,
    pub net_ns: Summary,
    pub ratio: Summary,
    /// The floor program (`xdp_floor`) on the same frames in the same runs, for the cases
    /// it can take (IPv4 TCP or UDP to a service): ns per packet, and this case's net
    /// figure over the floor's, run by run.
    pub floor_ns: Option<Summary>,
    pub per_floor: Option<Summary>,
}

/// Proof that the eviction case ran on a full table.
#[derive(Clone, Debug, Serialize)]
pub struct Eviction {
    pub table_size: u32,
    pub prefilled_flows: u64,
    pub entries_after_prefill: u64,
    pub entries_after_timed_runs: u64,
    pub timed_new_flows: u64,
    pub first_prefilled_flow_still_present: bool,
}

/// Why new flows are no longer timed with the repeat method and a TCP timeout of 0: what
/// the counters show for one repeat run of the same handshake ACK on such a data plane. The program
/// reads the coarse clock, which only advances once a tick, so an entry is found expired
/// only when a tick passed since the previous iteration.
#[derive(Clone, Debug, Serialize)]
pub struct TimeoutZero {
    pub iterations: u64,
    pub hits: u64,
    pub expired: u64,
    pub new: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PacketResults {
    pub cpu: usize,
    pub repeat: u32,
    pub runs: usize,
    pub single_packets: u32,
    pub cases: Vec<Case>,
    pub eviction: Eviction,
    pub timeout_zero: TimeoutZero,
    pub program: Option<ProgramFacts>,
    pub profiles: Vec<Profile>,
    /// What `bpftool prog profile` said while the hit case ran.
    pub bpftool_profile: String,
}

impl PacketResults {
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }
}

/// The path a case must take, as the counters show it: every packet counted once in
/// `verdict` (no other verdict), and `flows` times per packet in each listed `flow_stat`
/// slot (no other flow stat).
#[derive(Clone, Debug)]
pub struct Path {
    pub verdict: u32,
    pub flows: Vec<(u32, u64)>,
    pub action: u32,
}

impl Path {
    /// What the counters must show for `packets` packets along this path.
    pub fn describe(&self, packets: u64) -> String {
        let mut parts = vec![format!(
            "{} {packets}/{packets}",
            verdict::NAMES[self.verdict as usize]
        )];
        for (slot, per) in &self.flows {
            parts.push(format!(
                "flow {} {}/{packets}",
                flow_stat::NAMES[*slot as usize],
                per * packets
            ));
        }
        if self.flows.is_empty() {
            parts.push("no connection-table event".to_owned());
        }
        parts.join(", ")
    }
}

/// Packet counters of the data plane (summed over CPUs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    pub verdicts: Vec<u64>,
    pub flows: Vec<u64>,
}

impl Counters {
    pub fn read(dataplane: &Dataplane) -> Counters {
        Counters {
            verdicts: dataplane
                .verdict_counters()
                .iter()
                .map(|c| c.packets)
                .collect(),
            flows: dataplane
                .flow_counters()
                .iter()
                .map(|c| c.packets)
                .collect(),
        }
    }

    pub fn since(&self, before: &Counters) -> Counters {
        let sub = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(x, y)| x - y).collect();
        Counters {
            verdicts: sub(&self.verdicts, &before.verdicts),
            flows: sub(&self.flows, &before.flows),
        }
    }

    /// Fails unless these counters are exactly `packets` packets along `path`.
    pub fn confirm(&self, packets: u64, path: &Path) -> Result<()> {
        let mut want_verdicts = vec![0; self.verdicts.len()];
        want_verdicts[path.verdict as usize] = packets;
        let mut want_flows = vec![0; self.flows.len()];
        for (slot, per) in &path.flows {
            want_flows[*slot as usize] = per * packets;
        }
        let flows = without_filter_skips(&self.flows, packets)?;
        ensure!(
            self.verdicts == want_verdicts && flows == want_flows,
            "{packets} packets did not all take the path `{}`: verdicts {:?} (slots {:?}), flow stats {:?} (slots {:?})",
            path.describe(packets),
            self.verdicts,
            verdict::NAMES,
            self.flows,
            flow_stat::NAMES
        );
        Ok(())
    }
}

/// Flow stats without the `filter_skip` slot, which counts the SYNs the flow filter let
/// skip the connection table: not a path of its own (a SYN skips it, or looks it up when a
/// slot an earlier case's entry set says it may hold the flow), and at most once for each
/// of the `packets`.
fn without_filter_skips(flows: &[u64], packets: u64) -> Result<Vec<u64>> {
    let mut flows = flows.to_vec();
    let skipped = flows
        .get_mut(flow_stat::FILTER_SKIP as usize)
        .map_or(0, std::mem::take);
    ensure!(
        skipped <= packets,
        "{skipped} packets skipped the connection table, more than the {packets} run"
    );
    Ok(flows)
}

/// A data plane loaded with the benchmark's services: IPv4 and IPv6 RTMP and an IPv4 UDP
/// service with three backends each (reached through the test run's ingress, so XDP_TX),
/// and a service whose only backend has weight 0.
pub struct Rig {
    pub balancer: Balancer,
    /// The capacity of `maglev_tables` it was loaded with (slots).
    pub table_slots: u32,
}

fn loopback(b: &Backend) -> Option<Forwarding> {
    let tail = match b.address {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    Some(Forwarding {
        mac: MacAddr([0x02, 0xbe, 0, 0, 0, tail]),
        src_mac: MacAddr(LB_MAC),
        ifindex: LOOPBACK_IFINDEX,
    })
}

impl Rig {
    pub fn load(flow_table: FlowTable) -> Result<Rig> {
        Self::load_pinned(flow_table, None)
    }

    /// As `load`, with every map pinned under `pins` (a scratch bpffs directory), so that
    /// other instances of the program can be loaded on the same maps.
    pub fn load_pinned(flow_table: FlowTable, pins: Option<PinDir>) -> Result<Rig> {
        let v4 = |last| IpAddr::V4(Ipv4Addr::new(10, 0, 0, last));
        let v6 = |last| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last));
        let yaml = [
            service_yaml(
                "v4",
                VIP4.into(),
                PORT,
                "tcp",
                MAGLEV_DEFAULT_SIZE,
                &[(v4(11), 1), (v4(12), 1), (v4(13), 1)],
            ),
            service_yaml(
                "v6",
                VIP6.into(),
                PORT,
                "tcp",
                MAGLEV_DEFAULT_SIZE,
                &[(v6(0x11), 1), (v6(0x12), 1), (v6(0x13), 1)],
            ),
            service_yaml(
                "v4udp",
                VIP4.into(),
                UDP_PORT,
                "udp",
                MAGLEV_DEFAULT_SIZE,
                &[(v4(11), 1), (v4(12), 1), (v4(13), 1)],
            ),
            service_yaml(
                "empty",
                VIP4.into(),
                EMPTY_PORT,
                "tcp",
                MAGLEV_DEFAULT_SIZE,
                &[(v4(21), 0)],
            ),
        ]
        .concat();
        let services = services(&yaml)?;
        let slots = services.iter().map(|s| 2 * s.maglev_size).sum();
        let dataplane = Dataplane::load_pinned(
            &LoadOptions {
                flow_hash_seed: SEED,
                maglev_table_slots: slots,
                flow_table,
                log_level: LogLevel::Error,
            },
            pins,
        )
        .context("loading the data plane (root, and the object built?)")?;
        let mut balancer = Balancer::new(dataplane, SEED);
        for s in &services {
            balancer.add_service(s, &loopback)?;
        }
        load_floor(balancer.dataplane_mut())?;
        // On, as the agent turns it on a second after the attach (walked from the table,
        // empty here): SYNs of unknown flows skip the connection table.
        let dataplane = balancer.dataplane();
        dataplane
            .flow_filter()
            .renew(&dataplane.flows_handle()?)
            .context("turning the flow filter on")?;
        Ok(Rig {
            balancer,
            table_slots: slots,
        })
    }

    pub fn program(&self) -> &Xdp {
        self.balancer.dataplane().program()
    }

    /// The floor program (`xdp_floor`), loaded on this rig's maps.
    pub fn floor(&self) -> &Xdp {
        self.balancer
            .dataplane()
            .ebpf()
            .program(FLOOR)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded with the rig")
    }

    pub fn counters(&self) -> Counters {
        Counters::read(self.balancer.dataplane())
    }

    /// Forgets every flow of the connection table (between runs of a case that needs a
    /// table with room). Outside the timed part.
    pub fn clear_flows(&self) -> Result<()> {
        clear_flows(&mut flows_map(self.program())?)
    }
}

/// The `flows` map the loaded `program` uses (found by the program's map ids, so it is the
/// map the program really reads and writes).
pub fn flows_map(program: &Xdp) -> Result<BpfHashMap<MapData, FlowKey, FlowValue>> {
    let ids = program
        .info()
        .context("the program's info")?
        .map_ids()
        .context("the program's map ids")?
        .ok_or_else(|| anyhow!("this kernel does not list a program's maps"))?;
    for id in ids {
        let map = MapData::from_id(id).with_context(|| format!("opening map id {id}"))?;
        if map.info()?.name_as_str() == Some(map_names::FLOWS) {
            return BpfHashMap::try_from(Map::LruHashMap(map)).context("the flows map");
        }
    }
    Err(anyhow!("the program uses no map named `flows`"))
}

/// Deletes every entry of a connection table.
pub fn clear_flows(map: &mut BpfHashMap<MapData, FlowKey, FlowValue>) -> Result<()> {
    let keys: Vec<FlowKey> = map.keys().filter_map(Result::ok).collect();
    for key in keys {
        // An entry evicted meanwhile is already gone.
        let _ = map.remove(&key);
    }
    Ok(())
}

/// The floor: the least an L2-DSR Maglev balancer does per packet, on the project's maps
/// (`xdp-lb-ebpf/src/floor.rs`).
pub const FLOOR: &str = "xdp_floor";

/// Loads the floor program into the kernel, on `dataplane`'s maps.
pub fn load_floor(dataplane: &mut Dataplane) -> Result<&mut Xdp> {
    let floor: &mut Xdp = dataplane
        .ebpf_mut()
        .program_mut(FLOOR)
        .ok_or_else(|| anyhow!("the object has no program {FLOOR}"))?
        .try_into()?;
    floor.load().context("loading the floor program")?;
    Ok(floor)
}

/// One program of the data plane's object, loaded on its own (with the object's own maps,
/// not the agent's): the no-op, the throughput bench's many-flows generator.
pub struct LoneProgram {
    ebpf: aya::Ebpf,
    name: &'static str,
}

impl LoneProgram {
    /// Loads `name` with the globals `loader` sets.
    pub fn load_with(loader: &mut aya::EbpfLoader<'_>, name: &'static str) -> Result<Self> {
        let mut ebpf = loader
            .load(xdp_lb::EBPF_OBJECT)
            .context("loading the object")?;
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the object has no program {name}"))?
            .try_into()?;
        program.load().with_context(|| format!("loading {name}"))?;
        Ok(Self { ebpf, name })
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(self.name)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded by load_with")
    }
}

/// The no-op XDP_TX program, loaded from the same object.
pub struct Noop(pub LoneProgram);

impl Noop {
    pub fn load() -> Result<Noop> {
        LoneProgram::load_with(&mut aya::EbpfLoader::new(), "xdp_noop_tx").map(Noop)
    }

    pub fn program(&self) -> &Xdp {
        self.0.program()
    }
}

/// One test run of `repeat` iterations: the kernel's mean ns per iteration, and the
/// action.
pub fn time_repeat(program: &Xdp, frame: &[u8], repeat: u32) -> Result<(f64, u32)> {
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    Ok((result.duration.as_nanos() as f64, result.return_value))
}

/// One test run per frame: the mean of the kernel's per-run times. Every frame's action
/// must be `action`.
pub fn time_single(program: &Xdp, frames: &[Vec<u8>], action: u32) -> Result<f64> {
    let mut total = 0u128;
    for frame in frames {
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        ensure!(
            result.return_value == action,
            "a frame returned action {} instead of {action}",
            result.return_value
        );
        total += result.duration.as_nanos();
    }
    Ok(total as f64 / frames.len().max(1) as f64)
}

/// Samples of one case over the runs.
#[derive(Default)]
struct Samples {
    case: Vec<f64>,
    noop: Vec<f64>,
    /// Empty for a case the floor does not take.
    floor: Vec<f64>,
}

impl Samples {
    fn into_case(
        self,
        id: &str,
        title: &str,
        method: &str,
        packets: u64,
        confirmed: String,
    ) -> Case {
        let (floor_ns, per_floor) = if self.floor.is_empty() {
            (None, None)
        } else {
            let net = paired_difference(&self.case, &self.noop);
            let floor_net = paired_difference(&self.floor, &self.noop);
            (
                Some(Summary::of(&self.floor)),
                Some(Summary::of(&paired_ratio(&net, &floor_net))),
            )
        };
        Case {
            floor_ns,
            per_floor,
            id: id.to_owned(),
            title: title.to_owned(),
            method: method.to_owned(),
            packets_per_run: packets,
            confirmed,
            net_ns: Summary::of(&paired_difference(&self.case, &self.noop)),
            ratio: Summary::of(&paired_ratio(&self.case, &self.noop)),
            ns: Summary::of(&self.case),
            noop_ns: Summary::of(&self.noop),
        }
    }
}

/// A repeat-method case: `warmup` (if any) runs once first, then every run times `frame`
/// `repeat` times, beside the no-op, and checks the counters.
pub struct RepeatCase<'a> {
    pub id: &'static str,
    pub title: &'static str,
    pub rig: &'a Rig,
    pub warmup: Option<Vec<u8>>,
    pub frame: Vec<u8>,
    /// `None`: whatever single pass verdict the first packet gets (garbage).
    pub path: Option<Path>,
    /// Whether the floor program is timed beside it (it must send the frame out).
    pub floor: bool,
}

/// Finds the path of a frame nobody can predict (garbage): one probe packet.
fn probe_path(rig: &Rig, frame: &[u8]) -> Result<Path> {
    let before = rig.counters();
    let (_, action) = time_repeat(rig.program(), frame, 1)?;
    let delta = rig.counters().since(&before);
    let slot = delta
        .verdicts
        .iter()
        .position(|&n| n == 1)
        .ok_or_else(|| anyhow!("the probe packet was counted under no verdict"))?;
    Ok(Path {
        verdict: slot as u32,
        flows: Vec::new(),
        action,
    })
}

pub fn run_repeat_cases(
    cases: &[RepeatCase<'_>],
    noop: &Noop,
    opts: &PacketOptions,
) -> Result<Vec<Case>> {
    let mut paths = Vec::new();
    for case in cases {
        if let Some(warmup) = &case.warmup {
            time_repeat(case.rig.program(), warmup, 1)?;
        }
        paths.push(match &case.path {
            Some(path) => path.clone(),
            None => probe_path(case.rig, &case.frame)?,
        });
    }
    let mut samples: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    for _ in 0..opts.runs {
        for ((case, path), s) in cases.iter().zip(&paths).zip(&mut samples) {
            let (noop_ns, _) = time_repeat(noop.program(), &case.frame, opts.repeat)?;
            if case.floor {
                let (floor_ns, action) = time_repeat(case.rig.floor(), &case.frame, opts.repeat)?;
                ensure!(
                    action == XDP_TX,
                    "{}: the floor returned action {action}",
                    case.id
                );
                s.floor.push(floor_ns);
            }
            let before = case.rig.counters();
            let (ns, action) = time_repeat(case.rig.program(), &case.frame, opts.repeat)?;
            ensure!(
                action == path.action,
                "{}: action {action}, expected {}",
                case.id,
                path.action
            );
            case.rig
                .counters()
                .since(&before)
                .confirm(u64::from(opts.repeat), path)
                .with_context(|| format!("case {}", case.id))?;
            s.noop.push(noop_ns);
            s.case.push(ns);
        }
    }
    Ok(cases
        .iter()
        .zip(paths)
        .zip(samples)
        .map(|((case, path), s)| {
            let packets = u64::from(opts.repeat);
            s.into_case(
                case.id,
                case.title,
                "repeat",
                packets,
                path.describe(packets),
            )
        })
        .collect())
}

/// The handshake-completing ACK (the packet that creates a flow's entry; a SYN creates
/// none) of a distinct client for every `n` (addresses from 100.64.0.0, ports cycling).
pub fn distinct_first_ack(n: u64) -> Vec<u8> {
    let client = Ipv4Addr::from(0x6440_0000u32.wrapping_add((n / 50_000) as u32));
    let port = 10_000 + (n % 50_000) as u16;
    frames::tcp_v4(client, port, VIP4, PORT, false)
}

/// A TCP SYN of a distinct client for every `n` (the clients of [`distinct_first_ack`]).
pub fn distinct_syn(n: u64) -> Vec<u8> {
    let client = Ipv4Addr::from(0x6440_0000u32.wrapping_add((n / 50_000) as u32));
    let port = 10_000 + (n % 50_000) as u16;
    frames::tcp_v4(client, port, VIP4, PORT, true)
}

/// The first UDP datagram of a distinct client for every `n`, to the UDP service.
pub fn distinct_udp(n: u64) -> Vec<u8> {
    let client = Ipv4Addr::from(0x6440_0000u32.wrapping_add((n / 50_000) as u32));
    let port = 10_000 + (n % 50_000) as u16;
    frames::udp_v4(client, port, VIP4, UDP_PORT, 18)
}

/// An IPv6 handshake-completing ACK from a distinct client for every `n` (addresses in
/// 2001:db8:c2::/64).
pub fn distinct_first_ack6(n: u64) -> Vec<u8> {
    let client = Ipv6Addr::new(
        0x2001,
        0xdb8,
        0xc2,
        0,
        0,
        0,
        (n / 50_000) as u16,
        ((n / 50_000) >> 16) as u16,
    );
    let port = 10_000 + (n % 50_000) as u16;
    frames::tcp_v6(client, port, VIP6, PORT, false)
}

/// A single-method case: every run times `single_packets` frames from `next_frame`, after
/// `before_run` (if any) has prepared the rig.
pub struct SingleCase<'a> {
    pub id: &'static str,
    pub title: &'static str,
    pub rig: &'a Rig,
    pub path: Path,
    pub before_run: Option<&'a dyn Fn() -> Result<()>>,
    pub next_frame: Box<dyn FnMut() -> Vec<u8> + 'a>,
    /// Whether the floor program is timed beside it (it must send every frame out).
    pub floor: bool,
}

/// Single-method cases, interleaved as the repeat cases are: every run times each case in
/// turn (each beside the no-op, on the same frames), so differences between cases can be
/// taken run by run.
pub fn run_single_cases(
    cases: &mut [SingleCase<'_>],
    noop: &Noop,
    opts: &PacketOptions,
) -> Result<Vec<Case>> {
    let mut samples: Vec<Samples> = cases.iter().map(|_| Samples::default()).collect();
    let packets = u64::from(opts.single_packets);
    for _ in 0..opts.runs {
        for (case, s) in cases.iter_mut().zip(&mut samples) {
            if let Some(prepare) = case.before_run {
                prepare().with_context(|| format!("preparing case {}", case.id))?;
            }
            let frames: Vec<Vec<u8>> = (0..packets).map(|_| (case.next_frame)()).collect();
            s.noop.push(time_single(noop.program(), &frames, XDP_TX)?);
            if case.floor {
                s.floor.push(
                    time_single(case.rig.floor(), &frames, XDP_TX)
                        .with_context(|| format!("the floor on case {}", case.id))?,
                );
            }
            let before = case.rig.counters();
            s.case
                .push(time_single(case.rig.program(), &frames, case.path.action)?);
            case.rig
                .counters()
                .since(&before)
                .confirm(packets, &case.path)
                .with_context(|| format!("case {}", case.id))?;
        }
    }
    Ok(cases
        .iter()
        .zip(samples)
        .map(|(case, s)| {
            s.into_case(
                case.id,
                case.title,
                "single",
                packets,
                case.path.describe(packets),
            )
        })
        .collect())
}

/// Untimed SYNs of the flood before each timed packet of `hit_during_flood`.
pub const FLOOD_PER_PACKET: u64 = 8;

/// `hit_during_flood`: a known flow's packets, one per test run, while a spoofed-SYN flood
/// runs through the same program between them ([`FLOOD_PER_PACKET`] distinct SYNs, untimed,
/// before each timed packet), so the hit is timed with the caches the flood leaves. The
/// no-op is timed the same way, with the same SYNs between. Every run's counters must show
/// exactly that: every frame forwarded, each timed one a hit, no SYN remembered.
pub fn run_flood_case(
    rig: &Rig,
    noop: &Noop,
    opts: &PacketOptions,
    established: &[u8],
    next_syn: &mut dyn FnMut() -> Vec<u8>,
) -> Result<Case> {
    let established = established.to_vec();
    let (_, action) = time_repeat(rig.program(), &established, 1)?;
    ensure!(
        action == XDP_TX,
        "the established flow's warm-up was not forwarded"
    );
    let packets = u64::from(opts.single_packets);
    let mut samples = Samples::default();
    for _ in 0..opts.runs {
        let flood: Vec<Vec<u8>> = (0..packets * FLOOD_PER_PACKET)
            .map(|_| next_syn())
            .collect();
        let timed = |program: &Xdp| -> Result<f64> {
            let mut total = 0f64;
            for burst in flood.chunks(FLOOD_PER_PACKET as usize) {
                for syn in burst {
                    let (_, action) = time_repeat(program, syn, 1)?;
                    ensure!(action == XDP_TX, "a flood SYN returned action {action}");
                }
                total += time_single(program, std::slice::from_ref(&established), XDP_TX)
                    .context("the established flow's packet")?;
            }
            Ok(total / packets.max(1) as f64)
        };
        samples.noop.push(timed(noop.program())?);
        let before = rig.counters();
        samples.case.push(timed(rig.program())?);
        let delta = rig.counters().since(&before);
        let mut verdicts = vec![0; delta.verdicts.len()];
        verdicts[verdict::TX as usize] = packets * (FLOOD_PER_PACKET + 1);
        let mut flows = vec![0; delta.flows.len()];
        flows[flow_stat::HIT as usize] = packets;
        flows[flow_stat::SYN_NOT_REMEMBERED as usize] = packets * FLOOD_PER_PACKET;
        let seen = without_filter_skips(&delta.flows, packets * (FLOOD_PER_PACKET + 1))?;
        ensure!(
            delta.verdicts == verdicts && seen == flows,
            "case hit_during_flood: the run did not take its path: verdicts {:?} (slots {:?}), \
             flow stats {:?} (slots {:?})",
            delta.verdicts,
            verdict::NAMES,
            delta.flows,
            flow_stat::NAMES
        );
    }
    let flood = packets * FLOOD_PER_PACKET;
    let all = packets + flood;
    Ok(samples.into_case(
        "hit_during_flood",
        "known flow during a spoofed-SYN flood: 8 distinct SYNs through the program (untimed) \
         before each timed packet",
        "single",
        packets,
        format!(
            "tx {all}/{all}, flow hit {packets}/{packets}, flow syn_not_remembered \
             {flood}/{flood} (the flood, untimed)"
        ),
    ))
}

pub(super) fn possible_cpus() -> Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut total = 0;
    for range in text.trim().split(',') {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        total += b.parse::<usize>()? - a.parse::<usize>()? + 1;
    }
    Ok(total)
}

/// Pins the calling thread to `cpu` (test runs execute on the caller's CPU).
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

mod cases;

pub use cases::run;
