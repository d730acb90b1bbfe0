//! BENCHMARKS.md and BENCHMARKS.json from a [`Bench`]: every number in them is a figure
//! of the runs (median, min, max) or a sample; the prose only states what the figures show.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{Bench, Section, charts, explain, lb_failover::LbFailoverResults, stats::Summary};

pub const MARKDOWN: &str = "BENCHMARKS.md";
pub const JSON: &str = "BENCHMARKS.json";

/// Targets, net of the no-op, in ns per packet.
pub const HIT_TARGET_NS: f64 = 50.0;
pub const NEW_TARGET_NS: f64 = 100.0;
pub const NOT_SERVICE_TARGET_NS: f64 = 15.0;
/// A known flow's net cost over the floor program's (repeat method), at most.
pub const HIT_PER_FLOOR_TARGET: f64 = 1.5;
/// 65537 slots, 100 backends.
pub const BUILD_TARGET_MS: f64 = 2.0;
/// Health change to the new table live in the kernel, 65537 slots.
pub const SWITCH_TARGET_MS: f64 = 10.0;

/// The target of a per-packet case, if it has one.
pub fn target_ns(case: &str) -> Option<f64> {
    match case {
        "hit" => Some(HIT_TARGET_NS),
        "new" => Some(NEW_TARGET_NS),
        "not_service" | "not_service_port" => Some(NOT_SERVICE_TARGET_NS),
        _ => None,
    }
}

/// "met" or "**missed**": the median against the target.
pub fn verdict(median: f64, target: f64) -> &'static str {
    if median <= target {
        "met"
    } else {
        "**missed**"
    }
}

/// Writes the charts, BENCHMARKS.md and BENCHMARKS.json under `root`.
pub fn write(bench: &Bench, root: &Path) -> Result<()> {
    let charts = charts::draw_all(bench, root)?;
    fs::write(root.join(MARKDOWN), render(bench, &charts)).context("writing BENCHMARKS.md")?;
    // Keys in sorted order, as `--only` writes them back (through serde_json's map), so
    // that rewriting one section changes only its own lines.
    let json = serde_json::to_string_pretty(&serde_json::to_value(bench)?)?;
    fs::write(root.join(JSON), json + "\n").context("writing BENCHMARKS.json")?;
    Ok(())
}

fn chart(out: &mut String, charts: &[(String, std::path::PathBuf)], name: &str, alt: &str) {
    if let Some((_, path)) = charts.iter().find(|(n, _)| n == name) {
        let _ = writeln!(out, "\n![{alt}]({})\n", path.display());
    }
}

fn ms(s: &Summary) -> String {
    format!("{} ms", s.show(3))
}

/// The whole report.
pub fn render(bench: &Bench, charts: &[(String, std::path::PathBuf)]) -> String {
    let mut out = String::new();
    let m = &bench.machine;
    // Writing to a String cannot fail; the results are ignored throughout.
    let _ = writeln!(out, "# xdp-lb benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench`{} on {} from commit {}, in {:.0} s. Do not edit it: run \
         the command again. Every figure is the **median of its runs, with the min–max in \
         parentheses**; [`{JSON}`]({JSON}) holds the same figures and every run's sample.\n",
        if bench.quick {
            " --quick (a development run: fewer repeats; not for publishing)"
        } else {
            ""
        },
        m.date,
        m.commit,
        bench.seconds
    );
    let _ = writeln!(out, "## Machine\n\n| | |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} ({} CPUs online) |", m.cpu, m.cpus);
    let _ = writeln!(out, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(out, "| kernel | {} |", m.kernel);
    let _ = writeln!(out, "| virtualisation | {} |\n", m.virtualization);

    targets(&mut out, bench);
    explain::packet(&mut out, bench, charts);
    match &bench.lru {
        Section::Measured(lru) => super::lru::render(&mut out, lru),
        Section::NotMeasured { reason } => {
            let _ = writeln!(
                out,
                "## Connection table: per-CPU LRU lists or one shared list\n\nNot measured: {reason}\n"
            );
        }
    }
    maglev(&mut out, bench, charts);
    distribution(&mut out, bench, charts);
    lab(&mut out, bench);
    super::scraped_health::render(&mut out, &bench.scraped_health);
    out.push_str(&lb_failover_block(&bench.lb_failover, bench.quick, None));
    let _ = writeln!(out, "{SIDE_BY_SIDE}");
    let _ = writeln!(
        out,
        "## Reproducing\n\n`cargo xtask bench` (root; it installs what is missing, builds the \
         release agent and `xdp-lb-bench`, and rewrites this file, `{JSON}` and `{}/*.svg`). \
         `xdp-lb simulate --config FILE` runs the distribution analysis on your own config.",
        charts::DIR
    );
    out
}

fn targets(out: &mut String, bench: &Bench) {
    let _ = writeln!(out, "## Targets\n\n| target | measured | |\n|---|---|---|");
    for (id, what) in [
        ("hit", "connection-table hit"),
        (
            "new",
            "first packet of a new flow (distinct 5-tuples, one test run each)",
        ),
        (
            "not_service",
            "frame not for a service (a service's port, another address)",
        ),
        (
            "not_service_port",
            "frame not for a service (a port no service uses)",
        ),
    ] {
        if let (Some(case), Some(target)) = (bench.packet.case(id), target_ns(id)) {
            let _ = writeln!(
                out,
                "| {what}: at most {target:.0} ns net of the no-op | {} ns | {} |",
                case.net_ns.show(1),
                verdict(case.net_ns.median, target)
            );
        }
    }
    if let Some(per_floor) = bench.packet.case("hit").and_then(|c| c.per_floor.as_ref()) {
        let _ = writeln!(
            out,
            "| connection-table hit: at most {HIT_PER_FLOOR_TARGET}× the floor program, net of \
             the no-op (repeat) | {}× | {} |",
            per_floor.show(2),
            verdict(per_floor.median, HIT_PER_FLOOR_TARGET)
        );
    }
    if let Some(b) = bench
        .maglev
        .builds
        .iter()
        .find(|b| b.slots == 65_537 && b.backends == 100)
    {
        let _ = writeln!(
            out,
            "| Maglev build, 65537 slots, 100 backends: under {BUILD_TARGET_MS:.0} ms | {} | {} |",
            ms(&b.ms),
            verdict(b.ms.median, BUILD_TARGET_MS)
        );
    }
    for s in bench.maglev.switches.iter().filter(|s| s.slots == 65_537) {
        let _ = writeln!(
            out,
            "| health change ({}) to new table live, 65537 slots, {} backends: under {SWITCH_TARGET_MS:.0} ms | {} | {} |",
            s.change,
            s.backends,
            ms(&s.ms),
            verdict(s.ms.median, SWITCH_TARGET_MS)
        );
    }
    super::scraped_health::target_row(out, &bench.scraped_health);
    let _ = writeln!(out);
}

fn maglev(out: &mut String, bench: &Bench, charts: &[(String, std::path::PathBuf)]) {
    let m = &bench.maglev;
    let _ = writeln!(out, "## Maglev\n\n### Table build time\n");
    let _ = writeln!(
        out,
        "`maglev::build_table` for N equal-weight backends keyed by their addresses, timed \
         in-process ({} runs each).\n\n| slots M | backends N | build time |\n|---|---|---|",
        m.builds.first().map_or(0, |b| b.ms.runs())
    );
    for b in &m.builds {
        let _ = writeln!(out, "| {} | {} | {} |", b.slots, b.backends, ms(&b.ms));
    }
    chart(
        out,
        charts,
        "maglev",
        "Maglev build time per table size and backend count",
    );
    let _ = writeln!(
        out,
        "### Health change to new table live in the kernel\n\n`Balancer::set_health` on a loaded \
         data plane, from the call until it returns: the new table is built, written into the \
         service's idle region through the mmap of `maglev_tables`, made live by replacing the \
         service's `service_by_vip` value, and the backend's entry updated. After every change \
         the benchmark reads the service's value back from the kernel (its generation must have \
         changed) and the kernel's live table (the backend must have left it, or be back). \
         Backends rotate from run to run.\n\n| slots M | backends N | change | time |\n|---|---|---|---|"
    );
    for s in &m.switches {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            s.slots,
            s.backends,
            s.change,
            ms(&s.ms)
        );
    }
    let su = &m.single_updates;
    let _ = writeln!(
        out,
        "\nFor comparison, writing one table of {} slots with one `bpf_map_update_elem` per slot \
         (no mmap) takes {} — which is why tables are written through the mmap.\n",
        su.slots,
        ms(&su.ms)
    );
    match &bench.agent {
        Section::Measured(a) => {
            let _ = writeln!(
                out,
                "### Agent memory and CPU\n\nThe release agent in the lab's LB namespace, {} \
                 windows of {:.0} s after a 2 s settling time; CPU is CPU time over wall time \
                 (100% = one core), RSS is VmRSS at the end of each window. The last column \
                 counts TCP connections the backends accepted (their `PassiveOpens`), i.e. \
                 health checks actually made.\n\n| scenario | backends | CPU | RSS | checks seen by backends |\n|---|---|---|---|---|",
                a.usages.first().map_or(0, |u| u.cpu_percent.runs()),
                a.usages.first().map_or(0.0, |u| u.window_s)
            );
            for u in &a.usages {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} % | {} MiB | {} /s |",
                    u.scenario,
                    u.backends,
                    u.cpu_percent.show(2),
                    u.rss_mib.show(1),
                    u.backend_accepts_per_s.show(1)
                );
            }
            if a.usages.iter().all(|u| u.backend_accepts_per_s.max == 0.0) {
                let _ = writeln!(
                    out,
                    "\nNo backend saw a single check: this agent build does not run health \
                     checks yet, so both rows are the idle agent."
                );
            }
            let _ = writeln!(out);
        }
        Section::NotMeasured { reason } => {
            let _ = writeln!(out, "### Agent memory and CPU\n\nNot measured: {reason}\n");
        }
    }
}

fn distribution(out: &mut String, bench: &Bench, charts: &[(String, std::path::PathBuf)]) {
    let d = &bench.distribution;
    let _ = writeln!(
        out,
        "## Distribution\n\nComputed by `xdp_lb::simulate` (the same code as `xdp-lb simulate`): \
         {} random flows (random client address and port to 10.0.0.100:8080/tcp) hashed by the \
         data plane's `flow_hash` with the default seed, over tables of M = {} slots from \
         `maglev::build_table`. Each of the {} runs draws its own flows.\n",
        d.flows, d.maglev_size, d.runs
    );
    let _ = writeln!(
        out,
        "### Share per backend, N equal backends\n\n| N | ideal | lowest share | highest share | max/mean |\n|---|---|---|---|---|"
    );
    for s in &d.spreads {
        let low = s
            .shares_percent
            .iter()
            .map(|v| v.median)
            .fold(f64::MAX, f64::min);
        let high = s
            .shares_percent
            .iter()
            .map(|v| v.median)
            .fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "| {} | {:.2}% | {low:.2}% | {high:.2}% | {} |",
            s.backends,
            100.0 / f64::from(s.backends),
            s.max_over_mean.show(4)
        );
    }
    let _ = writeln!(
        out,
        "\nLowest and highest are the medians of the least and most loaded backend."
    );
    chart(
        out,
        charts,
        "spread",
        "Share of flows per backend and imbalance for N = 2 to 10",
    );
    let _ = writeln!(
        out,
        "### Weights\n\n| weights | shares (ideal) | flows over the lightest backend's |\n|---|---|---|"
    );
    for w in &d.weighted {
        let shares: Vec<String> = w
            .shares_percent
            .iter()
            .zip(&w.ideal_percent)
            .map(|(s, i)| format!("{:.2}% ({i:.2}%)", s.median))
            .collect();
        let ratios: Vec<String> = w.ratio_to_lightest.iter().map(|r| r.show(3)).collect();
        let _ = writeln!(
            out,
            "| {:?} | {} | {} |",
            w.weights,
            shares.join(", "),
            ratios.join(", ")
        );
    }
    chart(
        out,
        charts,
        "weights",
        "Shares with weights against the ideal",
    );
    let _ = writeln!(
        out,
        "### Flows moved when one backend leaves or joins\n\nThe share of the same flows whose \
         backend changes, next to the least that must move: the leaving backend's share (1/N) \
         or the new one's (1/(N+1)). Each run removes a different backend.\n\n| N | one removed | ideal | one added | ideal |\n|---|---|---|---|---|"
    );
    for mv in &d.movements {
        let _ = writeln!(
            out,
            "| {} | {}% | {:.2}% | {}% | {:.2}% |",
            mv.backends,
            mv.removed_percent.show(2),
            mv.remove_ideal_percent,
            mv.added_percent.show(2),
            mv.add_ideal_percent
        );
    }
    chart(
        out,
        charts,
        "moved",
        "Flows moved on removal and addition against the ideal",
    );
    let _ = writeln!(
        out,
        "### Two LBs building their tables independently\n\nTwo data planes loaded side by side, \
         each with its own balancer: LB B gets the backends in reverse order and has another \
         service loaded first (so its backend ids and table regions differ). Their live tables \
         are read back from the kernel and compared slot by slot as backend addresses, then \
         again after the same backend is removed on both.\n\n| N | slots compared | slots differing | after a removal | random flows sent differently |\n|---|---|---|---|---|"
    );
    for t in &d.two_lbs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {}% |",
            t.backends,
            t.slots_compared,
            t.slots_differing,
            t.slots_differing_after_removal,
            t.flows_differing_percent.show(3)
        );
    }
    let _ = writeln!(out);
}

fn lab(out: &mut String, bench: &Bench) {
    let _ = writeln!(out, "## Failover\n");
    match &bench.failover {
        Section::Measured(f) => {
            let _ = writeln!(
                out,
                "In the lab, with the default check settings of `video-hls` (`{}`): every process in backend b1's namespace \
                 is killed (nginx gone: its port answers with a reset), {} times. From that moment: \
                 until the agent logs b1's health change to down for the HLS service `video-hls`, and \
                 until a new HTTP connection on a flow that hashed to b1 is answered by another \
                 backend (client ports whose flows map to b1 are probed in turn; one answered elsewhere is \
                 not probed again). Then nginx is restarted and the time until the agent logs \
                 b1 up again for `video-hls` is taken (`rise` checks in a row must pass).\n\n| | time |\n|---|---|\n| death to withdrawal logged | {} |\n| death to its flows answered elsewhere | {} |\n| restart to back in service | {} |\n",
                f.check_settings,
                f.runs,
                ms(&f.to_log_ms),
                ms(&f.to_traffic_ms),
                ms(&f.to_recovery_ms)
            );
        }
        Section::NotMeasured { reason } => {
            let _ = writeln!(
                out,
                "Not measured yet: {reason}.\n\nThe measurement is ready (`tests/src/bench/failover.rs`): it kills backend b1 in the lab and times the agent's `health:` line with `new=down` and the first connection of one of b1's flows answered elsewhere.\n"
            );
        }
    }
    let _ = writeln!(out, "## Throughput in the lab\n");
    match &bench.throughput {
        Section::Measured(t) => {
            let _ = writeln!(
                out,
                "Generator: {}. It sends {}-byte UDP frames to the VIP (port 9000, one flow) from \
                 the switch's end of the LB's veth, straight into the LB's eth0 (native XDP), for \
                 {:.0} s windows after a 1 s ramp. The rates are the generator's own count, the LB's \
                 eth0 `rx_packets` and the frames the switch sent on to the backends. First with \
                 `xdp_lb`, then with the floor `xdp_floor` on the same maps (frames go back out to \
                 a backend: the benchmark fails if fewer than 90 % of them do), both on a data \
                 plane the benchmark loads itself with the UDP service over the lab's backends; \
                 then with `xdp_pass` in their place (frames go up the LB's own stack and are \
                 dropped there: no socket). Not the agent's data plane: it registers eth0's MAC, \
                 and the live-frames generator sends again the very pages the LB rewrote (by \
                 then addressed to a backend), which the agent's program passes as \
                 `pass_not_our_mac` (an earlier version of this section timed that by mistake). \
                 **veth \
                 is not a NIC**: the generator, the LB, the bridge and the backends all share this \
                 machine's {} CPUs, and a frame the LB sends on costs the bridge and a backend work \
                 on the same CPUs, so these figures describe this lab, not a server with a real NIC.\n",
                t.generator, t.frame_bytes, t.window_s, bench.machine.cpus
            );
            if let Some(refused) = &t.trafficgen_refused {
                let _ = writeln!(
                    out,
                    "`xdp-trafficgen` was tried first and refused to run here: `{refused}`\n"
                );
            }
            let _ = writeln!(
                out,
                "| program on the LB | generated | LB receives | sent on to backends | in the program, per frame |\n|---|---|---|---|---|"
            );
            for mode in &t.modes {
                let generated = if mode.generated_pps.median.is_nan() {
                    "not counted".to_owned()
                } else {
                    format!("{} pps", mode.generated_pps.show(0))
                };
                let _ = writeln!(
                    out,
                    "| `{}` | {generated} | {} pps | {} pps | {} ns |",
                    mode.program,
                    mode.lb_rx_pps.show(0),
                    mode.backends_rx_pps.show(0),
                    mode.program_ns.show(1)
                );
            }
            let _ = writeln!(out);
            throughput_steady_state(out, t);
            throughput_many_flows(out, t);
        }
        Section::NotMeasured { reason } => {
            let _ = writeln!(out, "Not measured: {reason}\n");
        }
    }
}

/// The steady-state per-frame cost the kernel's accounting gave in the throughput windows.
fn throughput_steady_state(out: &mut String, t: &super::throughput::ThroughputResults) {
    use super::packet::FLOOR;
    use xdp_lb_common::PROGRAM_NAME as LB;
    let of = |name: &str| t.modes.iter().find(|m| m.program == name);
    let (Some(lb), Some(floor), Some(pass)) = (of(LB), of(FLOOR), of("xdp_pass")) else {
        return;
    };
    let lb_net = lb.program_ns.median - pass.program_ns.median;
    let floor_net = floor.program_ns.median - pass.program_ns.median;
    let ratio = if floor_net > 0.0 {
        format!("{:.2}×", lb_net / floor_net)
    } else {
        "not comparable with".to_owned()
    };
    let _ = writeln!(
        out,
        "**Steady state.** *In the program, per frame* is the kernel's own accounting over the \
         same windows (`BPF_ENABLE_STATS`: the program's run time over its run count, while a \
         stream of frames arrives on a real interface), not `BPF_PROG_TEST_RUN`: no syscall per \
         packet, caches as warm as a stream keeps them (and as cold as the bridge and the \
         backends, on the same CPUs, leave them). Every frame is a packet of one known flow: \
         the hit path. Net of `xdp_pass` (the accounting's own two clock reads, and a program \
         that does nothing), `xdp_lb` costs {lb_net:.1} ns per frame and the floor \
         {floor_net:.1} ns: `xdp_lb` is **{ratio} the floor** in a stream (the issue's hit \
         target: 1.5×), against the single-packet method's figures under *Per-packet cost*, \
         where each packet follows a syscall.\n"
    );
}

/// The same steady state over many distinct flows.
fn throughput_many_flows(out: &mut String, t: &super::throughput::ThroughputResults) {
    use super::packet::FLOOR;
    use xdp_lb_common::PROGRAM_NAME as LB;
    let m = &t.many_flows;
    let one = |name: &str| t.modes.iter().find(|mode| mode.program == name);
    let many = |name: &str| m.modes.iter().find(|mode| mode.program == name);
    let (Some(pass), Some(lb), Some(floor)) = (one("xdp_pass"), many(LB), many(FLOOR)) else {
        return;
    };
    let net = |mode: &super::throughput::Mode| mode.program_ns.median - pass.program_ns.median;
    let (lb_net, floor_net) = (net(lb), net(floor));
    let c = &m.lb_flows;
    let _ = writeln!(
        out,
        "**Many flows.** The same measurement over a live stream of **{} distinct UDP flows**, \
         each program on a fresh data plane. Generator: {}; each frame it sends is the next \
         flow's, in turn (source ports 32768–65535 of 198.18.0.1, then of 198.18.0.2 and so \
         on, in RFC 2544's benchmarking range; no UDP checksum). Each frame's connection-table entry, \
         hash bucket and Maglev data are then another cache line than the frame's before, \
         where in the one-flow stream every frame finds the same ones, as warm as they can \
         be; the frames also go to every backend, not to one. The first pass over the flows \
         (their entries created) comes before the measured runs, as a warm-up: for `xdp_lb` \
         it ran {:.1} s, in which `flow_stats` counted {} new flows and {} hits, and the \
         connection table then held {} entries; over the measured runs (ramps and windows) \
         it counted {} hits and {} new. The figures are so the steady state of {} live \
         flows, every frame a connection-table hit. For this stream the switch's bridge has \
         a static entry for each backend's MAC: the backends answer none of these sources, \
         so it would never learn them and would flood every frame to all the backends.\n",
        m.flows,
        m.generator,
        c.warmup_s,
        c.warmup_new,
        c.warmup_hit,
        c.entries_after_warmup,
        c.measured_hit,
        c.measured_new,
        m.flows,
    );
    let _ = writeln!(
        out,
        "| program on the LB, {} flows | generated | LB receives | sent on to backends | in \
         the program, per frame | net of `xdp_pass` | one flow, net |\n|---|---|---|---|---|---|---|",
        m.flows
    );
    for mode in [lb, floor] {
        let one_net = one(&mode.program).map_or_else(
            || "not measured".to_owned(),
            |o| format!("{:.1} ns", net(o)),
        );
        let _ = writeln!(
            out,
            "| `{}` | {} pps | {} pps | {} pps | {} ns | {:.1} ns | {one_net} |",
            mode.program,
            mode.generated_pps.show(0),
            mode.lb_rx_pps.show(0),
            mode.backends_rx_pps.show(0),
            mode.program_ns.show(1),
            net(mode),
        );
    }
    let ratio = |lb: f64, floor: f64| {
        if floor > 0.0 {
            format!("{:.2}×", lb / floor)
        } else {
            "not comparable with".to_owned()
        }
    };
    let mut sentence = format!(
        "\nNet of the one-flow stream's `xdp_pass` (a program that does nothing with the frame, \
         whatever its flow), `xdp_lb` costs {lb_net:.1} ns per frame over {} flows and the \
         floor {floor_net:.1} ns: `xdp_lb` is **{} the floor** over many flows",
        m.flows,
        ratio(lb_net, floor_net)
    );
    if let (Some(lb1), Some(floor1)) = (one(LB), one(FLOOR)) {
        let (lb1, floor1) = (net(lb1), net(floor1));
        let _ = write!(
            sentence,
            ", against {} over one flow; many flows add {:+.1} ns per frame to `xdp_lb` \
             and {:+.1} ns to the floor",
            ratio(lb1, floor1),
            lb_net - lb1,
            floor_net - floor1
        );
    }
    let _ = writeln!(out, "{sentence}.\n");
}

/// Milliseconds to the millisecond (the route is read every 20 ms).
fn whole_ms(s: &Summary) -> String {
    format!("{:.0} ms ({:.0}–{:.0})", s.median, s.min, s.max)
}

/// Where the figures beside Katran and xvs are (another harness's, not this command's).
const SIDE_BY_SIDE: &str = "## Side by side with Katran and xvs\n\nNot measured by this command: \
    the per-packet cost beside Katran's and vc5's data planes comes from the shared harness \
    (`../shared/perf/perf-lab.sh`), with its figures and every change tried for issue 19, kept or \
    rejected, with the numbers that decided it, in [docs/perf/README.md](docs/perf/README.md).\n";

const LB_FAILOVER_BEGIN: &str =
    "<!-- section lb-failover: `cargo xtask bench --only lb-failover` rewrites it -->";
const LB_FAILOVER_END: &str = "<!-- end of section lb-failover -->";

/// The LB-failover section, between markers, so that `--only lb-failover` can replace it
/// in a report written earlier.
/// `alone`: when it was measured by itself, what to say of it (the date and commit).
pub fn lb_failover_block(
    section: &Section<LbFailoverResults>,
    quick: bool,
    alone: Option<&str>,
) -> String {
    let mut out = format!("{LB_FAILOVER_BEGIN}\n## Failover between LBs behind ECMP\n\n");
    if let Some(alone) = alone {
        let _ = writeln!(out, "{alone}\n");
    }
    match section {
        Section::Measured(f) => {
            let _ = writeln!(
                out,
                "The BGP lab (`LabOptions::bgp_lbs: 2`, BIRD 2 in every namespace, the router \
                 with ECMP and the L4 hash), a fresh lab for each of {} runs{} per case: both \
                 agents announce the VIP, then LB 1 leaves, and the time is taken until the \
                 router's kernel route for the VIP names LB 2 alone (read every 20 ms). From \
                 then on every packet of the VIP reaches LB 2, which puts the moved flows on \
                 the same backends by Maglev (`tests/tests/lab_bgp.rs` shows their RTMP \
                 publishes go on unbroken).\n\n\
                 | LB 1 leaves by | settings | until the router forwards to LB 2 alone |\n\
                 |---|---|---|\n\
                 | a clean stop (`systemctl stop`: SIGTERM; the agent withdraws first, then \
                 forwards for `stop_grace`) | any | {} |\n\
                 | its link going down (the machine dies) | BGP `hold time {}; keepalive time 1;` | {} |\n\
                 | its link going down | BFD `interval {} ms; multiplier {};` (`bfd on;` both sides) | {} |\n\n\
                 With BGP's timers alone a dead LB's share of the traffic is lost for up to \
                 the hold time (BIRD's default is 240 s: set it short, as in \
                 `examples/bird-*.conf`); BFD brings it to about interval × multiplier. The \
                 streams stall meanwhile and go on once the route moves, as long as TCP has \
                 not given up (it retransmits for minutes).\n",
                f.runs,
                if quick { " (--quick)" } else { "" },
                whole_ms(&f.clean_stop_ms),
                f.hold_time_s,
                whole_ms(&f.link_down_bgp_ms),
                f.bfd_interval_ms,
                f.bfd_multiplier,
                whole_ms(&f.link_down_bfd_ms),
            );
        }
        Section::NotMeasured { reason } => {
            let _ = writeln!(out, "Not measured: {reason}.\n");
        }
    }
    let _ = writeln!(out, "{LB_FAILOVER_END}\n");
    out
}

/// The existing BENCHMARKS.md under `root`, and its path (a section measured alone goes
/// into a whole report).
fn read_markdown(root: &Path) -> Result<(std::path::PathBuf, String)> {
    let md_path = root.join(MARKDOWN);
    let md = fs::read_to_string(&md_path).with_context(|| {
        format!(
            "{}: run the whole `cargo xtask bench` first",
            md_path.display()
        )
    })?;
    Ok((md_path, md))
}

/// Replaces one section of an existing report: its block in BENCHMARKS.md (inserted
/// before "## Reproducing" when the report has none yet) and its key in BENCHMARKS.json.
pub fn update_section(
    root: &Path,
    key: &str,
    value: &serde_json::Value,
    block: &str,
) -> Result<()> {
    let (md_path, md) = read_markdown(root)?;
    fs::write(&md_path, replace_block(&md, block)).context("writing BENCHMARKS.md")?;
    let json_path = root.join(JSON);
    let mut json: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(&json_path)
            .with_context(|| format!("reading {}", json_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", json_path.display()))?;
    let object = json
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", json_path.display()))?;
    object.insert(key.to_owned(), value.clone());
    fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .context("writing BENCHMARKS.json")?;
    Ok(())
}

/// `md` with its LB-failover block replaced by `block` (or `block` put before the
/// "## Reproducing" section, or at the end).
fn replace_block(md: &str, block: &str) -> String {
    if let (Some(begin), Some(end)) = (md.find(LB_FAILOVER_BEGIN), md.find(LB_FAILOVER_END))
        && begin < end
    {
        let after = md[end + LB_FAILOVER_END.len()..].trim_start_matches('\n');
        return format!("{}{block}{after}", &md[..begin]);
    }
    match md.find("## Reproducing") {
        Some(at) => format!("{}{block}{}", &md[..at], &md[at..]),
        None => format!("{md}\n{block}"),
    }
}

/// Headings a section measured alone is put before when the report has no block of it
/// yet (the first found), else at the end.
const INSERT_BEFORE: [&str; 2] = ["## Side by side with Katran and xvs", "## Reproducing"];

/// As [`update_section`], for a section between its own `begin` and `end` markers (the
/// `sync` section): its block in BENCHMARKS.md replaced (or inserted before the side-by-side
/// part, or "## Reproducing") and its key in BENCHMARKS.json set.
pub fn update_marked_section(
    root: &Path,
    key: &str,
    value: &serde_json::Value,
    block: &str,
    begin: &str,
    end: &str,
) -> Result<()> {
    let (md_path, md) = read_markdown(root)?;
    fs::write(&md_path, replace_marked(&md, block, begin, end)).context("writing BENCHMARKS.md")?;
    let json_path = root.join(JSON);
    let text = fs::read_to_string(&json_path)
        .with_context(|| format!("reading {}", json_path.display()))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", json_path.display()))?;
    let object = json
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", json_path.display()))?;
    // The other sections' lines as they were: parsing and printing them again would change
    // the last digits of many floats (serde_json parses them to within a few ulps). The
    // splice is checked against the parsed file with the key set to `value` as it reads back
    // once printed.
    object.insert(
        key.to_owned(),
        serde_json::from_str(&serde_json::to_string(value)?)?,
    );
    let spliced = splice_json_key(&text, key, value)
        .filter(|s| serde_json::from_str::<serde_json::Value>(s).ok().as_ref() == Some(&json));
    let out = match spliced {
        Some(s) => s,
        None => {
            if let Some(object) = json.as_object_mut() {
                object.insert(key.to_owned(), value.clone());
            }
            serde_json::to_string_pretty(&json)? + "\n"
        }
    };
    fs::write(&json_path, out).context("writing BENCHMARKS.json")?;
    Ok(())
}

/// `text`, a JSON object as `to_string_pretty` prints it (keys in order), with top-level
/// `key` set to `value` and every other line as it was; `None` if it is not laid out so.
fn splice_json_key(text: &str, key: &str, value: &serde_json::Value) -> Option<String> {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let (&"{", rest) = lines.split_first()? else {
        return None;
    };
    let (&"}", body) = rest.split_last()? else {
        return None;
    };
    // Each top-level entry: its key and its lines (the last without its comma).
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in body {
        let top = line
            .strip_prefix("  \"")
            .filter(|_| !line.starts_with("   "));
        match top.and_then(|l| l.split_once("\": ")) {
            Some((name, _)) => entries.push((name.to_owned(), (*line).to_owned())),
            None => {
                let (_, lines) = entries.last_mut()?;
                lines.push('\n');
                lines.push_str(line);
            }
        }
    }
    for (_, lines) in &mut entries {
        if lines.ends_with(',') {
            lines.pop();
        }
    }
    let printed = serde_json::to_string_pretty(value)
        .ok()?
        .replace('\n', "\n  ");
    let entry = (
        key.to_owned(),
        format!("  {}: {printed}", serde_json::to_string(key).ok()?),
    );
    match entries.iter().position(|(name, _)| name.as_str() >= key) {
        Some(at) if entries[at].0 == key => entries[at] = entry,
        Some(at) => entries.insert(at, entry),
        None => entries.push(entry),
    }
    let body: Vec<String> = entries.into_iter().map(|(_, lines)| lines).collect();
    Some(format!("{{\n{}\n}}\n", body.join(",\n")))
}

/// `md` with the block between `begin` and `end` replaced by `block` (or `block` put
/// before the first of [`INSERT_BEFORE`] found, or at the end).
fn replace_marked(md: &str, block: &str, begin: &str, end: &str) -> String {
    if let Some(at) = md.find(begin)
        && let Some(to) = md[at..].find(end).map(|to| at + to)
    {
        let after = md[to + end.len()..].trim_start_matches('\n');
        return format!("{}{block}{after}", &md[..at]);
    }
    match INSERT_BEFORE.iter().find_map(|h| md.find(h)) {
        Some(at) => format!("{}{block}{}", &md[..at], &md[at..]),
        None => format!("{md}\n{block}"),
    }
}

#[cfg(test)]
mod marked_section_tests {
    use super::*;

    #[test]
    fn a_marked_section_is_inserted_once_then_replaced_and_nothing_else_changes() {
        let (begin, end) = ("<!-- section x -->", "<!-- end of section x -->");
        let old = format!(
            "# r\n\n{LB_FAILOVER_BEGIN}\nlb\n{LB_FAILOVER_END}\n\n\
             ## Side by side with Katran and xvs\n\nz\n\n## Reproducing\n\ny\n"
        );
        let block = format!("{begin}\n## X\n\none\n{end}\n\n");
        let first = replace_marked(&old, &block, begin, end);
        assert_eq!(
            first,
            old.replace("## Side by side", &format!("{block}## Side by side"))
        );
        let again = block.replace("one", "two");
        let second = replace_marked(&first, &again, begin, end);
        assert_eq!(second, first.replace("one", "two"));
        // The LB-failover block is untouched, and still replaceable by its own markers.
        assert!(replace_block(&second, "LB\n").contains(&again));
    }

    #[test]
    fn updating_a_marked_section_leaves_the_other_keys_lines_alone() {
        let dir = tempfile::tempdir().unwrap();
        let json =
            "{\n  \"a\": [\n    50.019999999999996,\n    2.7098774133780394\n  ],\n  \"z\": 1\n}\n";
        fs::write(dir.path().join(JSON), json).unwrap();
        fs::write(dir.path().join(MARKDOWN), "# r\n\n## Reproducing\n").unwrap();
        let value = serde_json::json!({"m": 0.1 + 0.2, "n": 1.0 / 3.0});
        update_marked_section(
            dir.path(),
            "s",
            &value,
            "<!-- b -->\nS\n<!-- e -->\n\n",
            "<!-- b -->",
            "<!-- e -->",
        )
        .unwrap();
        let written = fs::read_to_string(dir.path().join(JSON)).unwrap();
        assert!(written.starts_with(
            "{\n  \"a\": [\n    50.019999999999996,\n    2.7098774133780394\n  ],\n  \"s\": {"
        ));
        assert!(written.ends_with("  \"z\": 1\n}\n"));
        let read: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(
            read["s"]["n"]
                .as_f64()
                .map(|n| (n * 3.0 - 1.0).abs() < 1e-12),
            Some(true)
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(MARKDOWN)).unwrap(),
            "# r\n\n<!-- b -->\nS\n<!-- e -->\n\n## Reproducing\n"
        );
    }

    #[test]
    fn a_json_key_is_spliced_in_and_the_other_lines_stay_as_they_were() {
        // A float serde_json would print back otherwise once parsed.
        let text = "{\n  \"a\": {\n    \"x\": 50.019999999999996\n  },\n  \"z\": 1\n}\n";
        let value = serde_json::json!({"k": [1, 2]});
        let spliced = splice_json_key(text, "sync", &value).unwrap();
        assert_eq!(
            spliced,
            "{\n  \"a\": {\n    \"x\": 50.019999999999996\n  },\n  \"sync\": {\n    \"k\": [\n      1,\n      2\n    ]\n  },\n  \"z\": 1\n}\n"
        );
        let again = splice_json_key(&spliced, "sync", &serde_json::json!(3)).unwrap();
        assert_eq!(
            again,
            "{\n  \"a\": {\n    \"x\": 50.019999999999996\n  },\n  \"sync\": 3,\n  \"z\": 1\n}\n"
        );
        let last = splice_json_key(text, "zz", &serde_json::json!(null)).unwrap();
        assert!(last.ends_with("  \"z\": 1,\n  \"zz\": null\n}\n"));
        assert_eq!(splice_json_key("[1]", "a", &value), None);
    }
}

#[cfg(test)]
mod lb_failover_tests {
    use super::*;

    #[test]
    fn a_section_measured_alone_replaces_its_block_and_nothing_else() {
        let old = "# r\n\n## Failover\n\nx\n\n## Reproducing\n\ny\n";
        let block =
            format!("{LB_FAILOVER_BEGIN}\n## Failover between LBs\n\none\n{LB_FAILOVER_END}\n\n");
        let first = replace_block(old, &block);
        assert_eq!(
            first,
            format!("# r\n\n## Failover\n\nx\n\n{block}## Reproducing\n\ny\n")
        );
        let again = block.replace("one", "two");
        let second = replace_block(&first, &again);
        assert_eq!(
            second,
            format!("# r\n\n## Failover\n\nx\n\n{again}## Reproducing\n\ny\n")
        );
    }
}
