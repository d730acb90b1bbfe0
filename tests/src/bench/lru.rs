//! The connection table's LRU, measured: one `flows` table with one LRU list shared by all
//! CPUs (`FLOW_TABLE_FLAGS`, 0, as the data plane ships it) against one table with per-CPU
//! LRU lists (`BPF_F_NO_COMMON_LRU`, as earlier versions shipped it), on the real `xdp_lb`
//! program through BPF_PROG_TEST_RUN.
//!
//! The map's type and flags are compiled into the object, but the loader reuses a map it
//! finds pinned at a map's pin path. So, on a scratch bpffs: the data plane is loaded once
//! as the agent loads it (`Dataplane::load_pinned`, which creates and pins every map, and
//! the balancer fills the services, backends and Maglev tables); then, for each variant,
//! the benchmark creates a `flows` map of that variant with `bpftool map create` and loads
//! the program again with every map's pin path pointing at the data plane's pinned maps,
//! except `flows`, which points at the variant's map. (`Dataplane::load_pinned` itself never
//! runs the program on a pinned `flows` whose flags differ from the object's: an agent moves
//! its flows into a new table of the shipped flags.)
//! The benchmark checks that the loaded program's maps include the variant's map, and reads
//! the data plane's own counters (pinned, shared by every instance) per CPU after every run.

use std::{
    fmt::Write as _,
    path::{Path as FsPath, PathBuf},
    process::Command,
    sync::Barrier,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::{
    EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray},
    programs::Xdp,
};
use serde::Serialize;
use xdp_lb::{config::FlowTable, pins::PinDir};
use xdp_lb_common::{
    BPF_F_NO_COMMON_LRU, Counter, FLOW_HASH_SEED_GLOBAL, FLOW_TABLE_FLAGS, FLOW_TCP_TIMEOUT_GLOBAL,
    FLOW_UDP_TIMEOUT_GLOBAL, FlowKey, FlowValue, PROGRAM_NAME, flow_stat, map_names, verdict,
};

use super::{
    packet::{
        CLIENT4, Case, Counters, Noop, PORT, Path, Rig, SEED, VIP4, XDP_TX, clear_flows,
        distinct_first_ack, pin_to_cpu, possible_cpus, time_repeat, time_single,
    },
    stats::{Summary, paired_difference, paired_ratio},
};
use crate::frames;

/// The most a CPU's local free list takes from the shared LRU list at once (the kernel's
/// `LOCAL_FREE_TARGET`), so a CPU takes the shared list's lock about once per this many
/// inserts; a full table with the shared list holds at least
/// `max_entries - FREE_BATCH * possible CPUs` entries.
pub const FREE_BATCH: u64 = 128;

/// A two-CPU run counts if both threads were timing at least this share of the time...
pub const MIN_OVERLAP_PERCENT: f64 = 80.0;
/// ... else it is repeated, up to this many attempts (the last one counts whatever).
pub const PAIR_ATTEMPTS: usize = 4;

/// aya-log's level global (`aya_log::LEVEL`); 1 = errors only, as the agent loads it.
const AYA_LOG_LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";

#[derive(Clone, Debug)]
pub struct LruOptions {
    /// Iterations of a repeat-method run (the hit path).
    pub repeat: u32,
    /// Runs of every case.
    pub runs: usize,
    /// Packets (one test run each) per single-method run, and per thread in the two-CPU
    /// cases.
    pub single_packets: u32,
    /// Entries of every variant's `flows` (the data plane's default).
    pub table_size: u32,
    /// The CPU the one-thread cases run on (the caller must be pinned there).
    pub cpu: usize,
    /// The two CPUs of the two-thread cases (`None`: a single-CPU machine, not measured).
    pub pair: Option<[usize; 2]>,
}

/// One thread's figures in a two-CPU case.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadFigures {
    pub cpu: usize,
    pub ns: Summary,
    pub noop_ns: Summary,
    pub net_ns: Summary,
    /// The kernel's timed time over the thread's wall time (the rest is the syscall and
    /// the frame copies around each test run), in %.
    pub in_kernel_percent: Summary,
}

/// Two threads, pinned to two CPUs, each timing its own distinct new flows at the same time.
#[derive(Clone, Debug, Serialize)]
pub struct Concurrent {
    pub id: String,
    pub title: String,
    pub packets_per_thread: u64,
    /// What each CPU's counters showed for every run.
    pub confirmed: String,
    pub threads: Vec<ThreadFigures>,
    /// The time both threads were timing, over the time either was, in %.
    pub overlap_percent: Summary,
    /// Runs timed again because the threads overlapped less than [`MIN_OVERLAP_PERCENT`].
    pub repeated_runs: u64,
}

impl Concurrent {
    /// The mean of the threads' net figures, run by run.
    pub fn mean_net(&self) -> Summary {
        let runs = self.threads.first().map_or(0, |t| t.net_ns.samples.len());
        let means: Vec<f64> = (0..runs)
            .map(|i| {
                self.threads
                    .iter()
                    .map(|t| t.net_ns.samples[i])
                    .sum::<f64>()
                    / self.threads.len() as f64
            })
            .collect();
        Summary::of(&means)
    }
}

/// One `flows` map variant and its figures.
#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    pub id: String,
    pub title: String,
    /// As the kernel reports the variant's map.
    pub map_type: String,
    pub map_flags: u32,
    pub max_entries: u32,
    /// The program instances timed with this variant list its map among theirs.
    pub program_uses_map: bool,
    /// One thread: `hit` (repeat), `new` (table with room) and `new_evicting` (table full).
    pub cases: Vec<Case>,
    /// Two threads on two CPUs: `new_2cpu` and `new_evicting_2cpu`.
    pub concurrent: Vec<Concurrent>,
    /// Entries of the full table after it was filled (from every CPU), and after the timed
    /// runs. An LRU hash evicts in batches to refill a free list (up to
    /// [`FREE_BATCH`] a CPU with the shared list), so a full table holds a little less
    /// than `max_entries`.
    pub full_entries_after_prefill: u64,
    pub full_entries_after_runs: u64,
    /// New flows the timed runs put into the full table, and the entries that left it
    /// meanwhile (evicted: nothing deletes from it): after-prefill + inserted − after-runs.
    pub full_timed_inserts: u64,
    pub full_evictions: u64,
}

impl Variant {
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }

    pub fn concurrent(&self, id: &str) -> Option<&Concurrent> {
        self.concurrent.iter().find(|c| c.id == id)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LruResults {
    pub table_size: u32,
    pub possible_cpus: usize,
    pub cpu: usize,
    pub runs: usize,
    pub repeat: u32,
    pub single_packets: u32,
    /// Flags of the `flows` map the data plane itself created (`Dataplane::load_pinned`),
    /// as the kernel reports them: what "as shipped" means.
    pub shipped_flags: u32,
    pub variants: Vec<Variant>,
    /// Why the two-CPU cases were not measured, if they were not.
    pub concurrent_not_measured: Option<String>,
    /// Alternatives not measured, and why.
    pub not_measured: Vec<(String, String)>,
}

impl LruResults {
    pub fn variant(&self, id: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.id == id)
    }
}

/// The variants: (id, title, flags).
pub const VARIANTS: [(&str, &str, u32); 2] = [
    (
        "per_cpu_lists",
        "one table, per-CPU LRU lists (`BPF_F_NO_COMMON_LRU`, as earlier versions shipped)",
        BPF_F_NO_COMMON_LRU,
    ),
    (
        "shared_list",
        "one table, one LRU list shared by all CPUs (flags 0, as shipped)",
        FLOW_TABLE_FLAGS,
    ),
];

/// Why `BPF_MAP_TYPE_LRU_PERCPU_HASH` is not a candidate.
pub const LRU_PERCPU_HASH_REASON: &str = "not usable for the connection table: its keys are \
     shared but every CPU has its own value, so a flow placed by a packet on CPU 0 has an \
     empty (all-zero) value on CPU 1. After an RSS change, or for the agent reading flows, the \
     entry names backend 0 with epoch 0 and a last-seen time of 0: it is expired, so the flow \
     is balanced afresh and may move backend, which is what the table exists to prevent. It \
     also costs one value per possible CPU per flow. Timing it would time a table that does \
     not do the job, so it is not measured.";

/// A bpffs mounted on a temporary directory, unmounted (and removed) on drop.
struct ScratchBpffs {
    dir: tempfile::TempDir,
}

impl ScratchBpffs {
    fn mount() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("xdp-lb-bench-bpffs.")
            .tempdir()
            .context("creating a directory for a scratch bpffs")?;
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .context("running mount -t bpf")?;
        ensure!(
            status.success(),
            "mount -t bpf bpf {} failed ({status})",
            dir.path().display()
        );
        Ok(Self { dir })
    }

    fn path(&self) -> &FsPath {
        self.dir.path()
    }
}

impl Drop for ScratchBpffs {
    fn drop(&mut self) {
        // Lazily: maps still open elsewhere live on until their last fd closes.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Creates an LRU hash for `flows` pinned at `path`, with the data plane's key and value
/// sizes and the given flags.
fn create_flows_map(path: &FsPath, entries: u32, flags: u32) -> Result<()> {
    let out = Command::new("bpftool")
        .arg("map")
        .arg("create")
        .arg(path)
        .args(["type", "lru_hash", "key"])
        .arg(size_of::<FlowKey>().to_string())
        .arg("value")
        .arg(size_of::<FlowValue>().to_string())
        .arg("entries")
        .arg(entries.to_string())
        .args(["name", map_names::FLOWS, "flags"])
        .arg(flags.to_string())
        .output()
        .context("running bpftool map create")?;
    ensure!(
        out.status.success(),
        "bpftool map create {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The `xdp_lb` program loaded again on the data plane's pinned maps, with `flows` taken
/// from `flows_pin`; the same globals and sizes as `Dataplane::load_pinned` gives it.
struct Instance {
    ebpf: aya::Ebpf,
}

impl Instance {
    /// `vip_filter`: the data plane's words (that map is not pinned: each loaded program
    /// has its own, which the agent fills before attaching).
    fn load(
        base_maps: &FsPath,
        flows_pin: &FsPath,
        table_slots: u32,
        size: u32,
        vip_filter: &[u64],
    ) -> Result<Self> {
        let flow_table = FlowTable::default();
        let tcp_timeout_ns = u64::from(flow_table.tcp_timeout_s) * 1_000_000_000;
        let udp_timeout_ns = u64::from(flow_table.udp_timeout_s) * 1_000_000_000;
        let level = 1u8;
        let pinned: Vec<(String, PathBuf)> = std::fs::read_dir(base_maps)
            .with_context(|| format!("listing {}", base_maps.display()))?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .filter(|(name, _)| name != map_names::FLOWS)
            .collect();
        let mut loader = EbpfLoader::new();
        loader
            .override_global(FLOW_HASH_SEED_GLOBAL, &SEED, true)
            .override_global(FLOW_TCP_TIMEOUT_GLOBAL, &tcp_timeout_ns, true)
            .override_global(FLOW_UDP_TIMEOUT_GLOBAL, &udp_timeout_ns, true)
            .override_global(AYA_LOG_LEVEL_GLOBAL, &level, false)
            .map_max_entries(map_names::MAGLEV_TABLES, table_slots)
            .map_max_entries(map_names::FLOWS, size);
        for (name, path) in &pinned {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        loader.map_pin_path(map_names::FLOWS, flows_pin);
        let mut ebpf = loader
            .load(xdp_lb::EBPF_OBJECT)
            .context("loading the object on the pinned maps")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("the object has no program {PROGRAM_NAME}"))?
            .try_into()?;
        program
            .load()
            .context("loading xdp_lb on the variant's map")?;
        let mut filter: Array<&mut MapData, u64> = ebpf
            .map_mut(map_names::VIP_FILTER)
            .ok_or_else(|| anyhow!("the object has no map {}", map_names::VIP_FILTER))?
            .try_into()?;
        for (i, word) in vip_filter.iter().enumerate() {
            let i = u32::try_from(i)?;
            filter
                .set(i, word, 0)
                .with_context(|| format!("writing vip_filter[{i}]"))?;
        }
        Ok(Self { ebpf })
    }

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded above")
    }

    fn map_ids(&self) -> Result<Vec<u32>> {
        self.program()
            .info()?
            .map_ids()?
            .ok_or_else(|| anyhow!("this kernel does not list a program's maps"))
    }
}

/// The data plane's counters, read per CPU from its pinned maps.
struct PerCpuCounters {
    verdicts: PerCpuArray<MapData, Counter>,
    flows: PerCpuArray<MapData, Counter>,
}

impl PerCpuCounters {
    fn open(base_maps: &FsPath) -> Result<Self> {
        let open = |name: &str| -> Result<PerCpuArray<MapData, Counter>> {
            let data = MapData::from_pin(base_maps.join(name))
                .with_context(|| format!("opening the pinned {name}"))?;
            Ok(PerCpuArray::try_from(Map::PerCpuArray(data))?)
        };
        Ok(Self {
            verdicts: open(map_names::VERDICT_STATS)?,
            flows: open(map_names::FLOW_STATS)?,
        })
    }

    /// Counters of every possible CPU, in CPU order.
    fn read(&self, cpus: usize) -> Result<Vec<Counters>> {
        let column = |map: &PerCpuArray<MapData, Counter>, slots: u32| -> Result<Vec<Vec<u64>>> {
            let mut per_cpu = vec![vec![0; slots as usize]; cpus];
            for slot in 0..slots {
                let values = map.get(&slot, 0)?;
                for (cpu, value) in values.iter().enumerate().take(cpus) {
                    per_cpu[cpu][slot as usize] = value.packets;
                }
            }
            Ok(per_cpu)
        };
        let verdicts = column(&self.verdicts, verdict::COUNT)?;
        let flows = column(&self.flows, flow_stat::COUNT)?;
        Ok(verdicts
            .into_iter()
            .zip(flows)
            .map(|(verdicts, flows)| Counters { verdicts, flows })
            .collect())
    }

    fn total(&self, cpus: usize) -> Result<Counters> {
        let per_cpu = self.read(cpus)?;
        let mut total = per_cpu[0].clone();
        for c in &per_cpu[1..] {
            for (t, v) in total.verdicts.iter_mut().zip(&c.verdicts) {
                *t += v;
            }
            for (t, v) in total.flows.iter_mut().zip(&c.flows) {
                *t += v;
            }
        }
        Ok(total)
    }
}

/// One thread's single-method run.
#[derive(Clone, Copy, Debug)]
struct Span {
    mean_ns: f64,
    kernel_ns: f64,
    start: Instant,
    end: Instant,
}

fn time_span(program: &Xdp, frames: &[Vec<u8>], action: u32) -> Result<Span> {
    let start = Instant::now();
    let mean_ns = time_single(program, frames, action)?;
    let end = Instant::now();
    Ok(Span {
        mean_ns,
        kernel_ns: mean_ns * frames.len().max(1) as f64,
        start,
        end,
    })
}

/// Runs `frames[i]` through `program` on CPU `pair[i]`, both threads starting together.
fn time_pair(program: &Xdp, pair: [usize; 2], frames: &[Vec<Vec<u8>>; 2]) -> Result<[Span; 2]> {
    let barrier = Barrier::new(2);
    let spans: Vec<Result<Span>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let pinned = pin_to_cpu(pair[i]);
                    // SAFETY: setpriority has no memory-safety preconditions.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
                    barrier.wait();
                    pinned?;
                    time_span(program, &frames[i], XDP_TX)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a timing thread panicked")))
            })
            .collect()
    });
    let mut spans = spans.into_iter();
    let a = spans.next().expect("two threads")?;
    let b = spans.next().expect("two threads")?;
    Ok([a, b])
}

/// Both threads' timing time over either's, in %.
fn overlap_percent(spans: &[Span; 2]) -> f64 {
    let start = spans[0].start.max(spans[1].start);
    let end = spans[0].end.min(spans[1].end);
    let union = spans[0].end.max(spans[1].end) - spans[0].start.min(spans[1].start);
    let both = end.saturating_duration_since(start);
    100.0 * both.as_secs_f64() / union.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn tx_new() -> Path {
    Path {
        verdict: verdict::TX,
        // A new flow's first remembered packet is its handshake's ACK: a miss, then an entry.
        flows: vec![(flow_stat::TCP_MISS_NO_SYN, 1), (flow_stat::NEW, 1)],
        action: XDP_TX,
    }
}

fn tx_hit() -> Path {
    Path {
        verdict: verdict::TX,
        flows: vec![(flow_stat::HIT, 1)],
        action: XDP_TX,
    }
}

/// Samples of a one-thread case.
#[derive(Default)]
struct Samples {
    case: Vec<f64>,
    noop: Vec<f64>,
}

impl Samples {
    fn case(&self, id: &str, title: &str, method: &str, packets: u64, confirmed: String) -> Case {
        Case {
            id: id.to_owned(),
            title: title.to_owned(),
            method: method.to_owned(),
            packets_per_run: packets,
            confirmed,
            ns: Summary::of(&self.case),
            noop_ns: Summary::of(&self.noop),
            net_ns: Summary::of(&paired_difference(&self.case, &self.noop)),
            ratio: Summary::of(&paired_ratio(&self.case, &self.noop)),
            floor_ns: None,
            per_floor: None,
        }
    }
}

/// Samples of a two-thread case.
#[derive(Default)]
struct PairSamples {
    case: [Vec<f64>; 2],
    noop: [Vec<f64>; 2],
    in_kernel: [Vec<f64>; 2],
    overlap: Vec<f64>,
    repeated: u64,
}

impl PairSamples {
    fn concurrent(&self, id: &str, title: &str, pair: [usize; 2], packets: u64) -> Concurrent {
        Concurrent {
            id: id.to_owned(),
            title: title.to_owned(),
            packets_per_thread: packets,
            confirmed: format!(
                "CPU {}: {}; CPU {}: the same",
                pair[0],
                tx_new().describe(packets),
                pair[1]
            ),
            threads: (0..2)
                .map(|i| ThreadFigures {
                    cpu: pair[i],
                    ns: Summary::of(&self.case[i]),
                    noop_ns: Summary::of(&self.noop[i]),
                    net_ns: Summary::of(&paired_difference(&self.case[i], &self.noop[i])),
                    in_kernel_percent: Summary::of(&self.in_kernel[i]),
                })
                .collect(),
            overlap_percent: Summary::of(&self.overlap),
            repeated_runs: self.repeated,
        }
    }
}

/// A variant under test: its maps and program instances.
struct Rigged {
    id: &'static str,
    title: &'static str,
    /// Table with room (emptied between runs): the hit and new cases.
    room: Instance,
    room_map: BpfHashMap<MapData, FlowKey, FlowValue>,
    /// Table kept full: the evicting cases.
    full: Instance,
    full_map: BpfHashMap<MapData, FlowKey, FlowValue>,
    map_type: String,
    map_flags: u32,
    max_entries: u32,
    program_uses_map: bool,
    full_entries_after_prefill: u64,
    full_timed_inserts: u64,
    hit: Samples,
    new: Samples,
    evicting: Samples,
    new_pair: PairSamples,
    evicting_pair: PairSamples,
}

/// Distinct new flows' first ACKs, numbered on from `next`.
fn syns(next: &mut u64, count: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            *next += 1;
            distinct_first_ack(*next)
        })
        .collect()
}

/// Fills a variant's full table: `per_cpu` new flows from each CPU (the caller's CPU, or
/// both CPUs of the pair), so the table is full whatever the variant (with per-CPU lists,
/// every CPU's list).
fn prefill(program: &Xdp, opts: &LruOptions, next: &mut u64, per_cpu: u64) -> Result<()> {
    match opts.pair {
        Some(pair) => {
            let frames = [syns(next, per_cpu), syns(next, per_cpu)];
            time_pair(program, pair, &frames)?;
        }
        None => {
            time_span(program, &syns(next, per_cpu), XDP_TX)?;
        }
    }
    Ok(())
}

fn entries(map: &BpfHashMap<MapData, FlowKey, FlowValue>) -> u64 {
    map.keys().filter(Result::is_ok).count() as u64
}

/// Runs the comparison. The caller is pinned to `opts.cpu`.
pub fn run(opts: &LruOptions) -> Result<LruResults> {
    let possible = possible_cpus()?;
    let bpffs = ScratchBpffs::mount()?;
    let pins = PinDir::new(bpffs.path().join("dataplane"));
    let base = Rig::load_pinned(FlowTable::default(), Some(pins.clone()))
        .context("loading the data plane pinned on a scratch bpffs")?;
    let base_maps = pins.root().join("maps");
    let shipped_flags = aya::maps::MapInfo::from_pin(base_maps.join(map_names::FLOWS))?.map_flags();
    let counters = PerCpuCounters::open(&base_maps)?;
    let noop = Noop::load()?;
    let packets = u64::from(opts.single_packets);
    let mut next = 0u64;

    let mut rigged = Vec::new();
    for (id, title, flags) in VARIANTS {
        let dir = bpffs.path().join(id);
        std::fs::create_dir_all(&dir)?;
        let (room_pin, full_pin) = (dir.join("flows-room"), dir.join("flows-full"));
        create_flows_map(&room_pin, opts.table_size, flags)?;
        create_flows_map(&full_pin, opts.table_size, flags)?;
        let filter = base.balancer.dataplane().vip_filter_words();
        let room = Instance::load(
            &base_maps,
            &room_pin,
            base.table_slots,
            opts.table_size,
            &filter,
        )?;
        let full = Instance::load(
            &base_maps,
            &full_pin,
            base.table_slots,
            opts.table_size,
            &filter,
        )?;
        let room_data = MapData::from_pin(&room_pin)?;
        let full_data = MapData::from_pin(&full_pin)?;
        let info = room_data.info()?;
        let uses = room.map_ids()?.contains(&info.id())
            && full.map_ids()?.contains(&full_data.info()?.id());
        ensure!(
            uses,
            "variant {id}: the loaded program does not use the variant's flows map"
        );
        let (map_flags, max_entries) = (info.map_flags(), info.max_entries());
        ensure!(
            map_flags == flags,
            "variant {id}: the kernel reports flags {map_flags:#x}, not {flags:#x}"
        );
        let mut room_map = BpfHashMap::try_from(Map::LruHashMap(room_data))?;
        // A table that has been used: its free entries no longer come in the order they
        // were allocated (the first run after creating the map is otherwise measurably
        // faster than every later one).
        prefill(room.program(), opts, &mut next, packets)?;
        clear_flows(&mut room_map)?;
        let full_map = BpfHashMap::try_from(Map::LruHashMap(full_data))?;
        prefill(full.program(), opts, &mut next, u64::from(max_entries))?;
        let full_entries_after_prefill = entries(&full_map);
        ensure!(
            full_entries_after_prefill + FREE_BATCH * possible as u64 >= u64::from(max_entries),
            "variant {id}: the table to evict from holds {full_entries_after_prefill} of \
             {max_entries} entries after the prefill: not full"
        );
        rigged.push(Rigged {
            id,
            title,
            room,
            room_map,
            full,
            full_map,
            map_type: "lru_hash".to_owned(),
            map_flags,
            max_entries,
            program_uses_map: uses,
            full_entries_after_prefill,
            full_timed_inserts: 0,
            hit: Samples::default(),
            new: Samples::default(),
            evicting: Samples::default(),
            new_pair: PairSamples::default(),
            evicting_pair: PairSamples::default(),
        });
    }

    // The flow's first ACK creates its entry (a SYN creates none).
    let first = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
    let ack = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
    let total = |c: &PerCpuCounters| c.total(possible);
    for run in 0..opts.runs {
        // Alternate the order of the variants from run to run.
        let order: Vec<usize> = if run % 2 == 0 {
            (0..rigged.len()).collect()
        } else {
            (0..rigged.len()).rev().collect()
        };
        for &v in &order {
            let r = &mut rigged[v];
            let what = |case: &str| format!("variant {}, case {case}", r.id);

            // Hit (repeat): the flow is put in the table first.
            clear_flows(&mut r.room_map)?;
            time_repeat(r.room.program(), &first, 1)?;
            let (noop_ns, _) = time_repeat(noop.program(), &ack, opts.repeat)?;
            let before = total(&counters)?;
            let (ns, action) = time_repeat(r.room.program(), &ack, opts.repeat)?;
            ensure!(action == XDP_TX, "{}: action {action}", what("hit"));
            total(&counters)?
                .since(&before)
                .confirm(u64::from(opts.repeat), &tx_hit())
                .with_context(|| what("hit"))?;
            r.hit.noop.push(noop_ns);
            r.hit.case.push(ns);

            // New flows, table with room.
            clear_flows(&mut r.room_map)?;
            let frames = syns(&mut next, packets);
            let noop_span = time_span(noop.program(), &frames, XDP_TX)?;
            let before = total(&counters)?;
            let span = time_span(r.room.program(), &frames, XDP_TX)?;
            total(&counters)?
                .since(&before)
                .confirm(packets, &tx_new())
                .with_context(|| what("new"))?;
            r.new.noop.push(noop_span.mean_ns);
            r.new.case.push(span.mean_ns);

            // New flows, table full: every insert evicts.
            let frames = syns(&mut next, packets);
            let noop_span = time_span(noop.program(), &frames, XDP_TX)?;
            let before = total(&counters)?;
            let span = time_span(r.full.program(), &frames, XDP_TX)?;
            total(&counters)?
                .since(&before)
                .confirm(packets, &tx_new())
                .with_context(|| what("new_evicting"))?;
            r.evicting.noop.push(noop_span.mean_ns);
            r.evicting.case.push(span.mean_ns);
            r.full_timed_inserts += packets;

            let Some(pair) = opts.pair else { continue };
            for evicting in [false, true] {
                let id = if evicting {
                    "new_evicting_2cpu"
                } else {
                    "new_2cpu"
                };
                let program = if evicting {
                    r.full.program()
                } else {
                    r.room.program()
                };
                // A run counts only if the two threads were timing together most of the
                // time (another process on one CPU can hold a thread back); others are
                // repeated, a few times at most.
                for attempt in 1..=PAIR_ATTEMPTS {
                    if !evicting {
                        clear_flows(&mut r.room_map)?;
                    }
                    let frames = [syns(&mut next, packets), syns(&mut next, packets)];
                    let noop_spans = time_pair(noop.program(), pair, &frames)?;
                    let before = counters.read(possible)?;
                    let spans = time_pair(program, pair, &frames)?;
                    let after = counters.read(possible)?;
                    for cpu in pair {
                        after[cpu]
                            .since(&before[cpu])
                            .confirm(packets, &tx_new())
                            .with_context(|| format!("{}, CPU {cpu}", what(id)))?;
                    }
                    if evicting {
                        r.full_timed_inserts += 2 * packets;
                    }
                    let overlap = overlap_percent(&spans);
                    let s = if evicting {
                        &mut r.evicting_pair
                    } else {
                        &mut r.new_pair
                    };
                    if overlap < MIN_OVERLAP_PERCENT && attempt < PAIR_ATTEMPTS {
                        s.repeated += 1;
                        continue;
                    }
                    for i in 0..2 {
                        s.noop[i].push(noop_spans[i].mean_ns);
                        s.case[i].push(spans[i].mean_ns);
                        let wall = (spans[i].end - spans[i].start).as_nanos() as f64;
                        s.in_kernel[i].push(100.0 * spans[i].kernel_ns / wall.max(1.0));
                    }
                    s.overlap.push(overlap);
                    break;
                }
            }
        }
    }

    let mut variants = Vec::new();
    for mut r in rigged {
        clear_flows(&mut r.room_map)?;
        let full_entries_after_runs = entries(&r.full_map);
        ensure!(
            full_entries_after_runs + FREE_BATCH * possible as u64 >= u64::from(r.max_entries),
            "variant {}: the table to evict from holds {full_entries_after_runs} of {} entries \
             after the timed runs: not full",
            r.id,
            r.max_entries
        );
        let full_evictions = (r.full_entries_after_prefill + r.full_timed_inserts)
            .saturating_sub(full_entries_after_runs);
        let repeat = u64::from(opts.repeat);
        let cases = vec![
            r.hit.case(
                "hit",
                "known flow: connection-table hit",
                "repeat",
                repeat,
                tx_hit().describe(repeat),
            ),
            r.new.case(
                "new",
                "first packet of a new flow, table with room",
                "single",
                packets,
                tx_new().describe(packets),
            ),
            r.evicting.case(
                "new_evicting",
                "first packet of a new flow, table full (evicts)",
                "single",
                packets,
                tx_new().describe(packets),
            ),
        ];
        let concurrent = match opts.pair {
            Some(pair) => vec![
                r.new_pair.concurrent(
                    "new_2cpu",
                    "new flows from two CPUs at once, table with room",
                    pair,
                    packets,
                ),
                r.evicting_pair.concurrent(
                    "new_evicting_2cpu",
                    "new flows from two CPUs at once, table full (evicts)",
                    pair,
                    packets,
                ),
            ],
            None => Vec::new(),
        };
        variants.push(Variant {
            id: r.id.to_owned(),
            title: r.title.to_owned(),
            map_type: r.map_type,
            map_flags: r.map_flags,
            max_entries: r.max_entries,
            program_uses_map: r.program_uses_map,
            cases,
            concurrent,
            full_entries_after_prefill: r.full_entries_after_prefill,
            full_entries_after_runs,
            full_timed_inserts: r.full_timed_inserts,
            full_evictions,
        });
    }
    drop(base);
    drop(bpffs);
    Ok(LruResults {
        table_size: opts.table_size,
        possible_cpus: possible,
        cpu: opts.cpu,
        runs: opts.runs,
        repeat: opts.repeat,
        single_packets: opts.single_packets,
        shipped_flags,
        variants,
        concurrent_not_measured: opts
            .pair
            .is_none()
            .then(|| "this machine has one CPU".to_owned()),
        not_measured: vec![(
            "BPF_MAP_TYPE_LRU_PERCPU_HASH".to_owned(),
            LRU_PERCPU_HASH_REASON.to_owned(),
        )],
    })
}

/// `median (min–max)` of a figure in ns.
fn ns(s: &Summary) -> String {
    s.show(1)
}

/// The figure of one path in a variant: one thread's net, or the mean of two threads' nets.
pub fn path_net(v: &Variant, path: &str) -> Option<Summary> {
    v.case(path)
        .map(|c| c.net_ns.clone())
        .or_else(|| v.concurrent(path).map(Concurrent::mean_net))
}

/// Paths compared, with their description.
pub const PATHS: [(&str, &str); 5] = [
    ("hit", "hit (repeat)"),
    ("new", "new flow, table with room (single)"),
    ("new_evicting", "new flow, table full (single)"),
    (
        "new_2cpu",
        "new flow, room, two CPUs at once (mean of the two threads)",
    ),
    (
        "new_evicting_2cpu",
        "new flow, full, two CPUs at once (mean of the two threads)",
    ),
];

/// Whether two figures' ranges overlap (then their medians' difference is within the noise
/// of the runs).
pub fn ranges_overlap(a: &Summary, b: &Summary) -> bool {
    a.min <= b.max && b.min <= a.max
}

/// The BENCHMARKS.md section.
pub fn render(out: &mut String, lru: &LruResults) {
    let _ = writeln!(
        out,
        "## Connection table: per-CPU LRU lists or one shared list\n\n\
         The `flows` map is an LRU hash; the choice is its flags. The data plane as loaded by \
         the agent creates it with flags {:#x} (read back from the kernel: {}). Each variant below \
         is a `flows` map made with `bpftool map create … type lru_hash key {} value {} entries \
         {} … flags F` on a scratch bpffs; the real `xdp_lb` program is loaded again on the \
         data plane's own pinned maps (services, backends, Maglev tables, counters) with only \
         `flows` pointing at the variant's map (the benchmark checks that the loaded program's \
         maps include it), and timed through `BPF_PROG_TEST_RUN` beside the no-op, as above. \
         {} runs per case, the variants alternating within every run. The data plane's \
         counters, read per CPU, confirm every timed packet's path in every run.\n",
        lru.shipped_flags,
        lru.variants
            .iter()
            .find(|v| v.map_flags == lru.shipped_flags)
            .map_or_else(
                || "none of the variants below".to_owned(),
                |v| format!("the `{}` variant below", v.id)
            ),
        size_of::<FlowKey>(),
        size_of::<FlowValue>(),
        lru.table_size,
        lru.runs,
    );
    let _ = writeln!(
        out,
        "* `hit`: repeat method, {} iterations on CPU {}.\n\
         * `new`: {} distinct new flows per run, one test run each, into a table with room \
         (emptied before every run, and used once before the first).\n\
         * `new_evicting`: the same into a full table: before the runs every CPU inserted as \
         many flows as the table holds, so inserts evict whatever the variant. {}\n\
         * `new_2cpu`, `new_evicting_2cpu`: two threads pinned to two CPUs, each inserting its \
         own {} distinct flows, both started at the same moment; each thread's figure is its \
         own, beside a no-op timed the same way (two threads at once). *In kernel* is the \
         kernel's timed time over the thread's wall time: the rest is the syscall around every \
         test run, so the two CPUs are inside the program at the same time only part of the \
         time, and contention on a shared lock shows less than it would with both CPUs \
         running the program back to back.\n",
        lru.repeat,
        lru.cpu,
        lru.single_packets,
        full_table(lru),
        lru.single_packets
    );
    let _ = writeln!(
        out,
        "| variant | case | ns per packet | no-op | net | confirmed per run |\n|---|---|---|---|---|---|"
    );
    for v in &lru.variants {
        for c in &v.cases {
            let _ = writeln!(
                out,
                "| `{}` | `{}` ({}) | {} | {} | {} | {} |",
                v.id,
                c.id,
                c.method,
                ns(&c.ns),
                ns(&c.noop_ns),
                ns(&c.net_ns),
                c.confirmed
            );
        }
    }
    let _ = writeln!(out);
    if let Some(reason) = &lru.concurrent_not_measured {
        let _ = writeln!(out, "The two-CPU cases were not measured: {reason}.\n");
    } else {
        let _ = writeln!(
            out,
            "| variant | case | CPU | ns per packet | no-op | net | in kernel | both timing |\n|---|---|---|---|---|---|---|---|"
        );
        for v in &lru.variants {
            for c in &v.concurrent {
                for t in &c.threads {
                    let _ = writeln!(
                        out,
                        "| `{}` | `{}` | {} | {} | {} | {} | {}% | {}% |",
                        v.id,
                        c.id,
                        t.cpu,
                        ns(&t.ns),
                        ns(&t.noop_ns),
                        ns(&t.net_ns),
                        t.in_kernel_percent.show(0),
                        c.overlap_percent.show(0)
                    );
                }
            }
        }
        if let Some(c) = lru.variants.first().and_then(|v| v.concurrent.first()) {
            let _ = writeln!(
                out,
                "\nConfirmed per run, from each CPU's counters: {}.\n",
                c.confirmed
            );
        }
        let repeated: Vec<String> = lru
            .variants
            .iter()
            .flat_map(|v| {
                v.concurrent
                    .iter()
                    .map(move |c| format!("`{}` `{}` {}", v.id, c.id, c.repeated_runs))
            })
            .collect();
        let _ = writeln!(
            out,
            "*Both timing* is the time both threads were timing over the time either was; a run \
             where it was under {MIN_OVERLAP_PERCENT:.0}% (another process held one thread \
             back) was timed again, up to {PAIR_ATTEMPTS} attempts. Runs timed again: {}.\n",
            repeated.join(", ")
        );
    }
    for (what, why) in &lru.not_measured {
        let _ = writeln!(out, "`{what}` is {why}\n");
    }
    decision(out, lru);
}

/// New flows per second at which the report puts a per-flow difference in CPU terms.
pub const NEW_FLOWS_PER_S: f64 = 100_000.0;

/// What the side-by-side harness measured of the two flavours (docs/perf/README.md, "the
/// connection table's LRU flavour"): the reason the shared list is shipped.
pub const SIDE_BY_SIDE_INSERT: &str = "the side-by-side harness (docs/perf/README.md, \
     \"the connection table's LRU flavour\") measured about 250 ns less per insert with the \
     shared list (a new flow's first ACK: 558–578 ns net against 813–832, every lab of one \
     flavour apart from every lab of the other)";

/// The comparison, path by path, and the decision it supports. The data plane ships the
/// shared list (`FLOW_TABLE_FLAGS`); the figures say whether this run bears that out.
fn decision(out: &mut String, lru: &LruResults) {
    let (Some(per_cpu), Some(shared)) = (lru.variant("per_cpu_lists"), lru.variant("shared_list"))
    else {
        return;
    };
    let _ = writeln!(
        out,
        "| path | per-CPU lists, net | shared list, net | shared − per-CPU (medians) | |\n|---|---|---|---|---|"
    );
    let mut shared_slower = Vec::new();
    let mut shared_faster = Vec::new();
    for (path, what) in PATHS {
        let (Some(a), Some(b)) = (path_net(per_cpu, path), path_net(shared, path)) else {
            continue;
        };
        let diff = b.median - a.median;
        let verdict = if ranges_overlap(&a, &b) {
            "within the runs' spread"
        } else if diff > 0.0 {
            shared_slower.push((path, diff));
            "shared slower"
        } else {
            shared_faster.push((path, -diff));
            "shared faster"
        };
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {diff:+.1} ns | {verdict} |",
            ns(&a),
            ns(&b)
        );
    }
    let _ = writeln!(out);
    let list = |items: &[(&str, f64)]| {
        items
            .iter()
            .map(|(p, d)| format!("`{p}` by {d:.1} ns"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let keep = "**Decision: keep one LRU list shared by all CPUs (flags 0, as shipped).**";
    let (headline, figures, why) = match (shared_slower.is_empty(), shared_faster.is_empty()) {
        (true, true) => (
            keep,
            "On every path the two variants' runs overlap: this method does not separate the \
             shared list from per-CPU lists on this machine."
                .to_owned(),
            format!(
                "The shared list is shipped because {SIDE_BY_SIDE_INSERT}, a difference that \
                 this method's spread does not resolve, and because its lock is taken once per \
                 {FREE_BATCH} inserts per CPU."
            ),
        ),
        (true, false) => {
            let worst = shared_faster.iter().map(|(_, d)| *d).fold(0.0, f64::max);
            (
                keep,
                format!(
                    "The shared list is faster on {} (ranges apart), and slower on no path.",
                    list(&shared_faster)
                ),
                format!(
                    "This run agrees with the reason it is shipped: {SIDE_BY_SIDE_INSERT}. \
                     {worst:.0} ns per new flow is {:.1}% of one CPU at {:.0} new flows per \
                     second.",
                    worst * NEW_FLOWS_PER_S / 1e9 * 100.0,
                    NEW_FLOWS_PER_S
                ),
            )
        }
        (false, true) => (
            "**Decision: measure again before keeping one shared LRU list (flags 0, as \
             shipped).**",
            format!(
                "The shared list is slower on {} (ranges apart), and faster on no path.",
                list(&shared_slower)
            ),
            format!(
                "That goes against the reason it is shipped: {SIDE_BY_SIDE_INSERT}. Time the two \
                 flavours again with that harness; should per-CPU lists come out ahead there \
                 too, ship `BPF_F_NO_COMMON_LRU` again (an agent moves its live flows into a \
                 table of the new flags at its restart)."
            ),
        ),
        (false, false) => (
            keep,
            format!(
                "The shared list is slower on {} and faster on {} (ranges apart).",
                list(&shared_slower),
                list(&shared_faster)
            ),
            format!(
                "The runs point both ways, so the side-by-side measurement decides: \
                 {SIDE_BY_SIDE_INSERT}."
            ),
        ),
    };
    let _ = writeln!(
        out,
        "{headline} {figures} {why} Lookups (the hit path, every packet of a known flow) are \
         the same code in both, so the choice only matters when a flow is inserted. There, \
         per-CPU lists never take a lock another CPU takes, but rotate the CPU's active and \
         inactive lists on every insert. The shared list pops a free entry from the CPU's \
         local free list and takes its one lock only to refill that list, up to {FREE_BATCH} \
         entries at a time: about once per {FREE_BATCH} inserts per CPU. Once the table is \
         full (the steady state of a busy balancer: nothing deletes entries) each refill \
         evicts a batch under that lock."
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "What two CPUs cannot show is that lock with 16 or 32 queues inserting at once, when \
         every packet is a new flow: each CPU still takes it once per {FREE_BATCH} new flows, \
         but they take turns on it, while per-CPU lists cannot contend at all. Widen the \
         two-CPU case to every CPU of the production machine to see it there."
    );
    let share = u64::from(lru.table_size) / lru.possible_cpus.max(1) as u64;
    let _ = writeln!(
        out,
        "\nWhat the shared list gives besides: any CPU can use the whole table ({} entries \
         here), a full table evicts its least recently used flow whatever CPU made it, and the \
         kernel makes exactly `flow_table.size` entries. Per-CPU lists round the size up to a \
         multiple of the possible CPUs and give each CPU's list only its share ({share} of {} \
         entries here, with {} possible CPUs), so a CPU that receives more new flows than its \
         share evicts while the table as a whole has room.\n",
        lru.table_size, lru.table_size, lru.possible_cpus
    );
}

/// What the full tables held, and how many entries left them.
fn full_table(lru: &LruResults) -> String {
    let each: Vec<String> = lru
        .variants
        .iter()
        .map(|v| {
            format!(
                "`{}` held {} of its {} entries after the fill and {} after the timed runs, \
                 which inserted {} flows into it while {} older entries were evicted",
                v.id,
                v.full_entries_after_prefill,
                v.max_entries,
                v.full_entries_after_runs,
                v.full_timed_inserts,
                v.full_evictions
            )
        })
        .collect();
    format!(
        "{}. (The shared list evicts in batches, up to {FREE_BATCH} entries at a time to refill \
         a CPU's free list, so it is never quite full.)",
        each.join("; ")
    )
}
