//! Packets per second through the LB in the lab, and the steady-state cost per frame
//! inside the program (the kernel's own accounting), with a real generator sending UDP
//! frames to the VIP from the switch's end of the LB's veth, straight into the LB's eth0:
//! with `xdp_lb` attached there and then the floor `xdp_floor` on the same maps (frames go
//! back out to a backend), then with `xdp_pass` (frames go up the LB's own stack; the
//! accounting's own cost). The generator is `xdp-trafficgen`
//! (xdp-tools) when it runs on this kernel, else the same mechanism built in: an XDP_TX
//! program run through BPF_PROG_TEST_RUN in live-frames mode, which transmits every frame
//! out of the interface. veth is not a NIC: the generator, the LB and the rest of the lab
//! share this machine's CPUs.
//!
//! That stream is one flow. A second one, always from the built-in mechanism, runs
//! `xdp_gen_flows` (`xdp-lb-ebpf/src/gen.rs`) instead of `xdp_noop_tx`: every frame it
//! sends is a packet of the next of [`MANY_FLOWS`] distinct UDP flows, so `xdp_lb` and the
//! floor are timed again over that many live flows, after a warm-up that creates their
//! connection-table entries; `xdp_lb`'s own `flow_stats` counters prove they are distinct.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::{
    EbpfLoader,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions},
};
use serde::Serialize;

use xdp_lb::config::MacAddr;
use xdp_lb_common::{MAGLEV_DEFAULT_SIZE, PROGRAM_NAME, flow_stat};

use super::{
    packet::{FLOOR, LoneProgram, Noop, XDP_TX},
    stats::Summary,
};
use crate::{Lab, LabProcess, frames, netns};

/// The UDP service port on the VIP.
const UDP_PORT: u16 = 9000;
/// The generator's source port (one flow: every frame is a connection-table hit).
const SOURCE_PORT: u16 = 40_000;

/// Distinct UDP flows of the many-flows stream: `xdp_gen_flows` sends one frame of each in
/// turn, over and over. A quarter of the default connection table
/// (`FLOW_TABLE_DEFAULT_SIZE`, 262144 entries), so no entry is evicted, and far more than
/// any cache holds: each frame's entry, hash bucket and Maglev slot are another cache line
/// than the frame's before.
pub const MANY_FLOWS: u32 = 65_536;
/// The many-flows generator (`xdp-lb-ebpf/src/gen.rs`) and the global that sets its flow
/// count at load.
const GEN_FLOWS_PROGRAM: &str = "xdp_gen_flows";
const GEN_FLOWS_GLOBAL: &str = "GEN_FLOWS";
/// Source ports per source address in `xdp_gen_flows`, and the first one: flow `i` is
/// (198.18.a.b, `GEN_FIRST_PORT + i % GEN_PORTS_PER_ADDR`) with `a.b` = `1 + i /
/// GEN_PORTS_PER_ADDR`.
const GEN_PORTS_PER_ADDR: u32 = 1 << 15;
const GEN_FIRST_PORT: u32 = 1 << 15;
/// The many-flows stream's first source address (198.18.0.0/15: RFC 2544's benchmarking
/// range, nobody's in the lab); the generator rewrites its low 16 bits.
const GEN_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The longest the warm-up of the many-flows stream may take.
const WARMUP_LIMIT: Duration = Duration::from_secs(60);

/// Which stream of frames the built-in generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// `xdp_noop_tx`: the frame as it is, one flow.
    OneFlow,
    /// `xdp_gen_flows`: each frame the next of this many distinct flows.
    ManyFlows(u32),
}

#[derive(Clone, Debug, Serialize)]
pub struct Mode {
    /// "xdp_lb" or "xdp_pass".
    pub program: String,
    /// Frames the generator handed to the switch's end of the LB's veth per second.
    pub generated_pps: Summary,
    /// Frames the LB's eth0 received per second.
    pub lb_rx_pps: Summary,
    /// Frames the switch sent on to the backends per second.
    pub backends_rx_pps: Summary,
    /// Nanoseconds per frame inside the program attached to the LB's eth0, from the
    /// kernel's own accounting (`BPF_ENABLE_STATS`: run time over run count) over the same
    /// windows: the steady-state cost of a live stream, caches warm as they are in one.
    pub program_ns: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThroughputResults {
    pub generator: String,
    /// Why `xdp-trafficgen` was not used, if it was not.
    pub trafficgen_refused: Option<String>,
    pub frame_bytes: usize,
    pub window_s: f64,
    /// The one-flow stream: `xdp_lb`, `xdp_floor`, then `xdp_pass`.
    pub modes: Vec<Mode>,
    /// The many-flows stream: `xdp_lb` and `xdp_floor`, measured as `modes` are (net of
    /// their `xdp_pass`, which does nothing with a frame whatever its flow).
    pub many_flows: ManyFlows,
}

/// The same measurement over [`MANY_FLOWS`] distinct flows.
#[derive(Clone, Debug, Serialize)]
pub struct ManyFlows {
    /// Distinct UDP flows in the stream.
    pub flows: u32,
    pub generator: String,
    /// `xdp_lb`, then `xdp_floor`, each on a fresh data plane, after a warm-up.
    pub modes: Vec<Mode>,
    /// What `xdp_lb`'s connection table counted: the frames are `flows` distinct flows.
    pub lb_flows: FlowCheck,
    /// Seconds the floor's warm-up ran (until the generator had sent every flow twice).
    pub floor_warmup_s: f64,
}

/// `xdp_lb`'s `flow_stats` in the many-flows stream, on a data plane of its own.
#[derive(Clone, Debug, Serialize)]
pub struct FlowCheck {
    /// How long the warm-up ran: until `flow_stats` `new` reached the stream's flow count
    /// and the generator had sent every flow twice.
    pub warmup_s: f64,
    /// `new` and `hit` during the warm-up: about one `new` per flow, the rest hits.
    pub warmup_new: u64,
    pub warmup_hit: u64,
    /// Entries in the connection table after the warm-up.
    pub entries_after_warmup: usize,
    /// `new` and `hit` over the measured runs (their ramps and windows): hits alone, but
    /// for an entry lost meanwhile.
    pub measured_new: u64,
    pub measured_hit: u64,
}

/// Frames the LB's eth0 has received, and frames the switch has sent towards the backends
/// (the sum of the `tx_packets` of its ports b1, b2, ...), each read in one command.
fn counters(lab: &Lab) -> Result<(u64, u64)> {
    let lb = lab
        .exec_ok(
            lab.ns_lb(),
            &["cat", "/sys/class/net/eth0/statistics/rx_packets"],
        )?
        .trim()
        .parse()?;
    let links: serde_json::Value =
        serde_json::from_str(&lab.exec_ok(lab.ns_switch(), &["ip", "-s", "-j", "link", "show"])?)?;
    let mut backends = 0;
    for link in links.as_array().context("`ip -j link` gave no array")? {
        let name = link["ifname"].as_str().unwrap_or_default();
        if name.starts_with('b') && name[1..].parse::<u32>().is_ok() {
            backends += link["stats64"]["tx"]["packets"]
                .as_u64()
                .context("no tx packets in `ip -s -j link`")?;
        }
    }
    Ok((lb, backends))
}

/// The UDP service over the lab's backends, as a `services:` entry.
fn udp_service(lab: &Lab) -> Result<String> {
    let backends = (0..lab.backends())
        .map(|i| Ok((Lab::backend_addr(i).parse()?, 1)))
        .collect::<Result<Vec<_>>>()?;
    Ok(super::service_yaml(
        "video-udp",
        Lab::VIP.parse()?,
        UDP_PORT,
        "udp",
        MAGLEV_DEFAULT_SIZE,
        &backends,
    ))
}

fn trafficgen_argv() -> Vec<String> {
    [
        "xdp-trafficgen",
        "udp",
        "-m",
        Lab::LB_MAC,
        "-M",
        Lab::CLIENT_MAC,
        "-a",
        Lab::VIP,
        "-A",
        Lab::CLIENT_ADDR,
        "-p",
        &UDP_PORT.to_string(),
        "-P",
        &SOURCE_PORT.to_string(),
        "-t",
        "1",
        "lb",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `xdp-trafficgen` for a second: `Err` with its complaint when it does not keep
/// running.
fn probe_trafficgen(lab: &Lab) -> Result<(), String> {
    let argv = trafficgen_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut generator = lab
        .spawn(lab.ns_switch(), &argv)
        .map_err(|e| format!("{e:#}"))?;
    thread::sleep(Duration::from_secs(1));
    if generator.is_running() {
        let _ = generator.kill();
        return Ok(());
    }
    let said = format!("{}\n{}", generator.stdout(), generator.stderr());
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Err(lines.join(" / "))
}

/// A running generator and the frames it has sent so far.
struct Generator {
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<()>>>,
    trafficgen: Option<LabProcess>,
}

impl Generator {
    /// The built-in generator: `xdp_noop_tx` (one flow) or `xdp_gen_flows` (many) run in
    /// live-frames mode on the switch's end of the LB's veth, `BATCH` frames per test run,
    /// until stopped.
    fn live_frames(lab: &Lab, frame: Vec<u8>, stream: Stream) -> Generator {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (sent2, stop2, ns) = (
            Arc::clone(&sent),
            Arc::clone(&stop),
            lab.ns_switch().to_owned(),
        );
        let thread = thread::spawn(move || {
            netns::run_inside(&ns, move || {
                let generator = match stream {
                    Stream::OneFlow => Noop::load()?.0,
                    Stream::ManyFlows(flows) => gen_flows(flows)?,
                };
                let program = generator.program();
                let name = std::ffi::CString::new("lb")?;
                // SAFETY: a valid NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                ensure!(ifindex != 0, "no interface lb in the switch namespace");
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex.
                let md = [0, frame.len() as u32, 0, ifindex, 0, 0];
                let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
                while !stop2.load(Ordering::Relaxed) {
                    program
                        .test_run(TestRunOptions {
                            data_in: Some(&frame),
                            ctx_in: Some(&ctx),
                            repeat: BATCH,
                            attrs: TestRunAttrs::new().xdp_live_frames(64),
                            ..TestRunOptions::default()
                        })
                        .context("BPF_PROG_TEST_RUN in live-frames mode")?;
                    sent2.fetch_add(u64::from(BATCH), Ordering::Relaxed);
                }
                Ok(())
            })
        });
        Generator {
            sent,
            stop,
            thread: Some(thread),
            trafficgen: None,
        }
    }

    fn trafficgen(lab: &Lab) -> Result<Generator> {
        let argv = trafficgen_argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(Generator {
            sent: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            trafficgen: Some(lab.spawn(lab.ns_switch(), &argv)?),
        })
    }

    /// Frames sent so far (`None` for xdp-trafficgen, which does not say while it runs).
    fn sent(&self) -> Option<u64> {
        self.thread
            .as_ref()
            .map(|_| self.sent.load(Ordering::Relaxed))
    }

    /// Whether the built-in generator's thread has ended (on an error) without being
    /// stopped.
    fn finished(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(thread::JoinHandle::is_finished)
    }

    fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut process) = self.trafficgen.take() {
            process.kill().context("stopping xdp-trafficgen")?;
        }
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the generator thread panicked"))??;
        }
        Ok(())
    }
}

/// Frames per live-frames test run (one call of the generator's loop).
const BATCH: u32 = 1 << 13;

/// The many-flows generator, loaded from the data plane's object with its flow count.
fn gen_flows(flows: u32) -> Result<LoneProgram> {
    LoneProgram::load_with(
        EbpfLoader::new().override_global(GEN_FLOWS_GLOBAL, &flows, true),
        GEN_FLOWS_PROGRAM,
    )
}

/// Runs `xdp_gen_flows` (flow count `flows`) once on `frame`, without live frames: the
/// frame must come out for XDP_TX, rewritten into a packet of one of the stream's flows
/// (source address 198.18.a.b with the flow's number over 32768, plus 1, as a.b, source port in the
/// generator's range, no UDP checksum, a right IPv4 header checksum) and otherwise unchanged.
fn check_gen_flows(frame: &[u8], flows: u32) -> Result<()> {
    let generator = gen_flows(flows)?;
    let mut out = vec![0u8; frame.len()];
    let result = generator
        .program()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .context("BPF_PROG_TEST_RUN of the many-flows generator")?;
    ensure!(
        result.return_value == XDP_TX,
        "{GEN_FLOWS_PROGRAM} returned {} for the stream's frame, not XDP_TX",
        result.return_value
    );
    ensure!(
        result.data_size_out as usize == frame.len() && frame.len() >= 42,
        "{GEN_FLOWS_PROGRAM} gave a {}-byte frame for a {}-byte one",
        result.data_size_out,
        frame.len()
    );
    let host = u32::from(u16::from_be_bytes([out[28], out[29]]));
    let port = u32::from(u16::from_be_bytes([out[34], out[35]]));
    let changed: Vec<usize> = (0..frame.len())
        .filter(|&i| frame[i] != out[i] && ![24, 25, 28, 29, 34, 35, 40, 41].contains(&i))
        .collect();
    ensure!(
        frames::checksum(&out[14..34]) == 0
            && out[26..28] == [198, 18]
            && (1..=1 + (flows.max(1) - 1) / GEN_PORTS_PER_ADDR).contains(&host)
            && port >= GEN_FIRST_PORT
            && out[40..42] == [0, 0]
            && changed.is_empty(),
        "{GEN_FLOWS_PROGRAM} wrote a frame that is no packet of the stream: {out:02x?}"
    );
    Ok(())
}

/// Runs the generator for `runs` windows; generator, LB and backend rates.
fn measure(
    lab: &Lab,
    program: &str,
    use_trafficgen: bool,
    frame: &[u8],
    stream: Stream,
    runs: usize,
    window: Duration,
) -> Result<Mode> {
    let (mut generated, mut lb, mut backends) = (Vec::new(), Vec::new(), Vec::new());
    let mut program_ns = Vec::new();
    // The kernel times every run of every program while this fd is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("turning the kernel's BPF run-time statistics on")?;
    for _ in 0..runs {
        let generator = if use_trafficgen {
            Generator::trafficgen(lab)?
        } else {
            Generator::live_frames(lab, frame.to_vec(), stream)
        };
        thread::sleep(Duration::from_secs(1));
        let (g0, t0, (lb0, b0)) = (generator.sent(), Instant::now(), counters(lab)?);
        let run0 = program_run_stats(lab)?;
        thread::sleep(window);
        let run1 = program_run_stats(lab)?;
        let (g1, t1, (lb1, b1)) = (generator.sent(), Instant::now(), counters(lab)?);
        generator.stop()?;
        let runs_counted = run1.1.saturating_sub(run0.1);
        ensure!(
            runs_counted > 0,
            "the kernel counted no run of {program} on the LB's eth0"
        );
        program_ns.push(run1.0.saturating_sub(run0.0) as f64 / runs_counted as f64);
        let secs = (t1 - t0).as_secs_f64();
        if let (Some(g0), Some(g1)) = (g0, g1) {
            generated.push((g1 - g0) as f64 / secs);
        }
        lb.push((lb1 - lb0) as f64 / secs);
        backends.push((b1 - b0) as f64 / secs);
    }
    ensure!(
        lb.iter().all(|&pps| pps > 0.0),
        "the LB received nothing from the generator"
    );
    Ok(Mode {
        program: program.to_owned(),
        generated_pps: if generated.is_empty() {
            Summary::of(&[f64::NAN])
        } else {
            Summary::of(&generated)
        },
        lb_rx_pps: Summary::of(&lb),
        backends_rx_pps: Summary::of(&backends),
        program_ns: Summary::of(&program_ns),
    })
}

/// The kernel's run time (ns) and run count of the XDP program attached to the LB's eth0
/// (`bpftool prog show`, with statistics on).
fn program_run_stats(lab: &Lab) -> Result<(u64, u64)> {
    let links: serde_json::Value = serde_json::from_str(
        &lab.exec_ok(lab.ns_lb(), &["ip", "-j", "link", "show", "dev", "eth0"])?,
    )?;
    let id = links
        .get(0)
        .and_then(|link| link.get("xdp"))
        .and_then(find_prog_id)
        .context("no XDP program on the LB's eth0 in `ip -j link`")?;
    let prog: serde_json::Value = serde_json::from_str(&lab.exec_ok(
        lab.ns_lb(),
        &["bpftool", "-j", "prog", "show", "id", &id.to_string()],
    )?)?;
    let field = |name: &str| {
        prog.get(name)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Ok((field("run_time_ns"), field("run_cnt")))
}

/// The program id in `ip -j link`'s `xdp` object (`prog.id`, or under `attached`).
fn find_prog_id(xdp: &serde_json::Value) -> Option<u64> {
    if let Some(id) = xdp
        .get("prog")
        .and_then(|p| p.get("id"))
        .and_then(serde_json::Value::as_u64)
    {
        return Some(id);
    }
    xdp.get("attached")?
        .as_array()?
        .iter()
        .find_map(|a| a.get("prog")?.get("id")?.as_u64())
}

pub fn run(lab: &Lab, quick: bool) -> Result<ThroughputResults> {
    let (runs, window) = if quick {
        (3, Duration::from_secs(1))
    } else {
        (5, Duration::from_secs(3))
    };
    let frame_with_macs = with_macs(frames::udp_v4(
        Lab::CLIENT_ADDR.parse()?,
        SOURCE_PORT,
        Lab::VIP.parse()?,
        UDP_PORT,
        PAYLOAD_BYTES,
    ))?;
    let refused = probe_trafficgen(lab).err();
    let use_trafficgen = refused.is_none();
    // `xdp_lb`, then the floor on the same maps, each attached in turn to the LB's eth0 on
    // a data plane the benchmark loads itself; then `xdp_pass`. Not the agent's: it
    // registers eth0's MAC, and a live-frames generator sends again the very pages the LB
    // rewrote (addressed to a backend by then), which the agent's program rightly passes
    // as `pass_not_our_mac`; with no MAC registered, every frame is a packet of the one
    // flow, balanced.
    let mut modes = Vec::new();
    for program in [PROGRAM_NAME, FLOOR] {
        let plane = OwnDataPlane::attach(lab, program)?;
        let mode = measure(
            lab,
            program,
            use_trafficgen,
            &frame_with_macs,
            Stream::OneFlow,
            runs,
            window,
        );
        plane.detach(lab)?;
        modes.push(forwarded(mode?)?);
    }
    let pass = netns::attach_xdp_pass(lab.ns_lb(), "eth0")?;
    let with_pass = measure(
        lab,
        "xdp_pass",
        use_trafficgen,
        &frame_with_macs,
        Stream::OneFlow,
        runs,
        window,
    );
    netns::drop_inside(lab.ns_lb(), pass)?;
    modes.push(with_pass?);
    let many_flows = many_flows(lab, MANY_FLOWS, runs, window)?;
    Ok(ThroughputResults {
        generator: if use_trafficgen {
            "xdp-trafficgen (xdp-tools), one thread".to_owned()
        } else {
            format!(
                "built-in: xdp_noop_tx through BPF_PROG_TEST_RUN in live-frames mode, {BATCH} frames per call, one thread"
            )
        },
        trafficgen_refused: refused,
        frame_bytes: frame_with_macs.len(),
        window_s: window.as_secs_f64(),
        modes,
        many_flows,
    })
}

/// `mode`, if its program sent on at least 90 % of the frames it received (the forwarding
/// path this section times).
fn forwarded(mode: Mode) -> Result<Mode> {
    ensure!(
        mode.backends_rx_pps.median >= 0.9 * mode.lb_rx_pps.median,
        "{} sent on {:.0} of the {:.0} frames per second it received: not the forwarding \
         path this section times",
        mode.program,
        mode.backends_rx_pps.median,
        mode.lb_rx_pps.median
    );
    Ok(mode)
}

/// The many-flows stream: `xdp_lb`, then the floor, each on a fresh data plane, warmed up
/// (every flow's entry created) before the same measured runs as the one-flow stream's.
fn many_flows(lab: &Lab, flows: u32, runs: usize, window: Duration) -> Result<ManyFlows> {
    let frame = with_macs(frames::udp_v4(
        GEN_SOURCE,
        GEN_FIRST_PORT as u16,
        Lab::VIP.parse()?,
        UDP_PORT,
        PAYLOAD_BYTES,
    ))?;
    check_gen_flows(&frame, flows)?;
    let ports = static_backend_macs(lab)?;
    let result = many_flows_on(lab, &frame, flows, runs, window);
    remove_static_macs(lab, &ports);
    result
}

/// Tells the switch's bridge on which port each backend's MAC is (static entries), as a
/// real switch knows its servers, which answer their clients all the time. In the lab
/// only a backend's own frames teach the bridge its MAC: in the one-flow stream the one
/// backend's ICMP errors to the client (nothing listens on the port) do; in the
/// many-flows stream the backends answer nobody (the sources are in no network of
/// theirs), and the bridge would flood every frame to all of them (it did, before these
/// entries). The (MAC, port) pairs, to remove afterwards.
fn static_backend_macs(lab: &Lab) -> Result<Vec<(String, String)>> {
    let mut ports = Vec::new();
    for i in 0..lab.backends() {
        let ns = lab.ns_backend(i);
        let port = ns.rsplit('-').next().unwrap_or(ns).to_owned();
        let mac = Lab::backend_mac(i);
        if let Err(err) = lab.exec_ok(
            lab.ns_switch(),
            &[
                "bridge", "fdb", "replace", &mac, "dev", &port, "master", "static",
            ],
        ) {
            remove_static_macs(lab, &ports);
            return Err(err.context(format!("a static bridge entry for backend {}", i + 1)));
        }
        ports.push((mac, port));
    }
    Ok(ports)
}

/// Removes the static bridge entries of [`static_backend_macs`]: the bridge learns again.
fn remove_static_macs(lab: &Lab, ports: &[(String, String)]) {
    for (mac, port) in ports {
        // An entry already gone is no harm.
        let _ = lab.exec_ok(
            lab.ns_switch(),
            &["bridge", "fdb", "del", mac, "dev", port, "master"],
        );
    }
}

/// [`many_flows`] once the bridge knows the backends.
fn many_flows_on(
    lab: &Lab,
    frame: &[u8],
    flows: u32,
    runs: usize,
    window: Duration,
) -> Result<ManyFlows> {
    let stream = Stream::ManyFlows(flows);
    let mut modes = Vec::new();
    let mut lb_flows = None;
    let mut floor_warmup_s = 0.0;
    for program in [PROGRAM_NAME, FLOOR] {
        let plane = OwnDataPlane::attach(lab, program)?;
        let measured = (|| {
            let lb = program == PROGRAM_NAME;
            let (warmup_s, warm) = warm_up(lab, &plane, frame, flows, lb)?;
            let entries = if lb {
                plane.balancer.dataplane().flows().len()
            } else {
                0
            };
            let before = flow_counts(&plane);
            let mode = measure(lab, program, false, frame, stream, runs, window)?;
            let after = flow_counts(&plane);
            let check = FlowCheck {
                warmup_s,
                warmup_new: warm.0,
                warmup_hit: warm.1,
                entries_after_warmup: entries,
                measured_new: after.0.saturating_sub(before.0),
                measured_hit: after.1.saturating_sub(before.1),
            };
            anyhow::Ok((mode, check))
        })();
        plane.detach(lab)?;
        let (mode, check) = measured?;
        if program == PROGRAM_NAME {
            ensure!(
                check.entries_after_warmup >= flows as usize
                    && check.measured_hit > 0
                    && check.measured_new.saturating_mul(100) <= check.measured_hit,
                "the many-flows stream was not {flows} live flows in xdp_lb's connection \
                 table: {check:?}"
            );
            lb_flows = Some(check);
        } else {
            floor_warmup_s = check.warmup_s;
        }
        modes.push(forwarded(mode)?);
    }
    Ok(ManyFlows {
        flows,
        generator: format!(
            "built-in: {GEN_FLOWS_PROGRAM} through BPF_PROG_TEST_RUN in live-frames mode, \
             {BATCH} frames per call, one thread"
        ),
        modes,
        lb_flows: lb_flows.context("xdp_lb was not measured in the many-flows stream")?,
        floor_warmup_s,
    })
}

/// `xdp_lb`'s `flow_stats` `new` and `hit` so far (zero for the floor, which counts
/// nothing).
fn flow_counts(plane: &OwnDataPlane) -> (u64, u64) {
    let counters = plane.balancer.dataplane().flow_counters();
    let slot = |i: u32| counters.get(i as usize).map_or(0, |c| c.packets);
    (slot(flow_stat::NEW), slot(flow_stat::HIT))
}

/// The first pass over the stream's flows, before any measured window: the generator runs
/// until it has sent every flow twice and, for `xdp_lb` (`lb`), until `flow_stats` counted
/// a new flow for each. How long it ran, and the `new` and `hit` it caused.
fn warm_up(
    lab: &Lab,
    plane: &OwnDataPlane,
    frame: &[u8],
    flows: u32,
    lb: bool,
) -> Result<(f64, (u64, u64))> {
    let before = flow_counts(plane);
    let started = Instant::now();
    let generator = Generator::live_frames(lab, frame.to_vec(), Stream::ManyFlows(flows));
    let done = loop {
        thread::sleep(Duration::from_millis(100));
        let sent = generator.sent().unwrap_or(0);
        let now = flow_counts(plane);
        let created = now.0.saturating_sub(before.0);
        if sent >= 2 * u64::from(flows) && (!lb || created >= u64::from(flows)) {
            break Ok(());
        }
        if generator.finished() {
            // Stopped by itself: `stop` says why.
            break Ok(());
        }
        if started.elapsed() > WARMUP_LIMIT {
            break Err(anyhow::anyhow!(
                "the warm-up of the many-flows stream did not end in {WARMUP_LIMIT:?}: \
                 {sent} frames sent, {created} of {flows} flows created"
            ));
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    generator.stop()?;
    done?;
    let after = flow_counts(plane);
    let created = after.0.saturating_sub(before.0);
    ensure!(
        !lb || created >= u64::from(flows),
        "the many-flows generator stopped after {created} of {flows} flows were created"
    );
    Ok((
        elapsed,
        (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
        ),
    ))
}

/// `frame` addressed from the client's MAC to the LB's.
fn with_macs(mut frame: Vec<u8>) -> Result<Vec<u8>> {
    frame[0..6].copy_from_slice(&Lab::LB_MAC.parse::<MacAddr>()?.0);
    frame[6..12].copy_from_slice(&Lab::CLIENT_MAC.parse::<MacAddr>()?.0);
    Ok(frame)
}

/// A data plane the bench loads in the LB's namespace: the UDP service over the lab's
/// backends, every backend reached back out of eth0 (XDP_TX, as the agent's are), and one
/// program (`xdp_lb` or the floor, on the same maps) attached to eth0.
struct OwnDataPlane {
    balancer: xdp_lb::balancer::Balancer,
}

impl OwnDataPlane {
    fn attach(lab: &Lab, program: &'static str) -> Result<Self> {
        let services = super::services(&udp_service(lab)?)?;
        // Each backend's real MAC, so that frames reach it as the agent's do.
        let mut macs = std::collections::BTreeMap::new();
        for i in 0..lab.backends() {
            macs.insert(
                Lab::backend_addr(i).parse::<std::net::IpAddr>()?,
                Lab::backend_mac(i).parse::<MacAddr>()?,
            );
        }
        let lb_mac: MacAddr = Lab::LB_MAC.parse()?;
        netns::run_inside(lab.ns_lb(), move || {
            use xdp_lb::dataplane::{Dataplane, LoadOptions, LogLevel};
            let name = std::ffi::CString::new("eth0")?;
            // SAFETY: a valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            ensure!(ifindex != 0, "no eth0 in the LB's namespace");
            let dataplane = Dataplane::load(&LoadOptions {
                flow_hash_seed: 1,
                maglev_table_slots: services.iter().map(|s| 2 * s.maglev_size).sum(),
                flow_table: xdp_lb::config::FlowTable::default(),
                log_level: LogLevel::Error,
            })?;
            let mut balancer = xdp_lb::balancer::Balancer::new(dataplane, 1);
            let forwarding = move |b: &xdp_lb::config::Backend| {
                Some(xdp_lb::balancer::Forwarding {
                    mac: *macs.get(&b.address)?,
                    src_mac: lb_mac,
                    ifindex,
                })
            };
            for service in &services {
                balancer.add_service(service, &forwarding)?;
            }
            if program == PROGRAM_NAME {
                balancer
                    .dataplane_mut()
                    .attach("eth0", xdp_lb::config::XdpAttachMode::Native)?;
            } else {
                super::packet::load_floor(balancer.dataplane_mut())?
                    .attach("eth0", aya::programs::XdpMode::Driver)
                    .context("attaching the floor program to eth0")?;
            }
            Ok(OwnDataPlane { balancer })
        })
    }

    /// Detaches (dropping it inside the namespace, where its links were made).
    fn detach(self, lab: &Lab) -> Result<()> {
        netns::run_inside(lab.ns_lb(), move || {
            drop(self.balancer);
            Ok(())
        })
    }
}

/// UDP payload of the generated frames (a 60-byte frame, the smallest Ethernet allows
/// without padding: the worst case for packet rate).
const PAYLOAD_BYTES: usize = 18;
