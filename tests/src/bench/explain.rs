//! The per-packet part of BENCHMARKS.md: the method, the cases, the eviction evidence, and
//! where the time goes (cost differences between cases, the program's size, perf samples).

use std::{fmt::Write as _, path::PathBuf};

use super::{
    Bench,
    packet::{Case, PacketResults},
    profile::{Profile, USER},
    report::{target_ns, verdict},
    stats::{Summary, paired_difference},
};

/// What a kernel or BPF symbol spends its time on, for grouping perf samples.
pub fn category(symbol: &str) -> &'static str {
    let s = symbol.to_ascii_lowercase();
    if symbol.starts_with(USER) {
        "the benchmark's own loop in user space (frames, syscall wrapper)"
    } else if s.starts_with("bpf_prog_") && s.ends_with("_xdp_lb") {
        "the program's own instructions (parse, hash, Maglev slot, MAC rewrite, counters)"
    } else if s.contains("lru") {
        "LRU connection table: insert, list upkeep, eviction"
    } else if s.contains("htab")
        || s.contains("jhash")
        || s.contains("lookup_nulls")
        || s.contains("map_lookup")
        || s == "memcmp"
    {
        "hash-map lookups (local_macs, flows, service_by_vip)"
    } else if s.starts_with("bpf_ktime_get") {
        "the program's clock read (bpf_ktime_get_coarse_ns)"
    } else if s.contains("ktime") || s.contains("clock") || s.contains("tsc") {
        "the test run's timer reading the clock (also in the no-op)"
    } else if s.contains("test_run")
        || s.contains("bpf_test")
        || s.contains("xdp")
        || s.contains("resched")
        || s.contains("local_bh")
    {
        "BPF_PROG_TEST_RUN loop (also in the no-op)"
    } else if s.contains("sys")
        || s.contains("copy_")
        || s.contains("memset")
        || s.contains("kmalloc")
        || s.contains("kfree")
        || s.contains("check_object_size")
        || s.contains("virt_addr_valid")
        || s.contains("vmalloc_addr")
        || s.contains("fdget")
        || s.contains("fput")
        || s.contains("security_")
        || s.contains("bpf_prog_get")
        || s.contains("bpf_prog_put")
        || s.contains("cgroup_storage")
        || s.contains("memchr_inv")
        || s.contains("entry_")
    {
        "the syscall around each test run: entry, frame copies, set-up (also in the no-op)"
    } else {
        "other kernel code"
    }
}

/// Whether a category is paid by the no-op too (the test-run machinery, not the program).
pub fn paid_by_noop(category: &str) -> bool {
    category.contains("also in the no-op") || category.starts_with("the benchmark's own loop")
}

/// Samples grouped by [`category`]: (category, %), largest first.
pub fn by_category(profile: &Profile) -> Vec<(&'static str, f64)> {
    let mut groups: Vec<(&'static str, f64)> = Vec::new();
    for (symbol, percent) in &profile.top {
        let c = category(symbol);
        match groups.iter_mut().find(|(name, _)| *name == c) {
            Some(group) => group.1 += percent,
            None => groups.push((c, *percent)),
        }
    }
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups
}

pub fn packet(out: &mut String, bench: &Bench, charts: &[(String, PathBuf)]) {
    let p = &bench.packet;
    // Writing to a String cannot fail; the results are ignored throughout.
    let _ = writeln!(
        out,
        "## Per-packet cost\n\nThe `xdp_lb` program, loaded as the agent loads it (services with \
         three backends, IPv4 and IPv6, default connection table of {} entries), run through \
         `BPF_PROG_TEST_RUN` on CPU {} (the benchmark thread is pinned there). Every case is \
         timed beside the no-op program `xdp_noop_tx` (returns XDP_TX) **in the same run**, with \
         the same frames and method; *net* is case minus no-op, run by run, and *× no-op* their \
         ratio. {} runs per case; within a run the cases of a method run back to back.\n",
        xdp_lb_common::FLOW_TABLE_DEFAULT_SIZE,
        p.cpu,
        p.runs
    );
    let tz = &p.timeout_zero;
    let _ = writeln!(
        out,
        "* **repeat** ({} iterations per run): the kernel's mean time per iteration. Iteration \
         k+1 sees the frame iteration k wrote; the program only rewrites MACs, so the 5-tuple \
         stays and a service frame is a connection-table hit from the second iteration on. A \
         warm-up packet puts the flow in the table first, so every timed iteration hits.\n\
         * **single** ({} test runs of one packet per run, each with its own frame): for paths \
         that need a distinct 5-tuple per packet, i.e. every new flow. The kernel's per-run time \
         then includes the test-run timer's own clock reads and a cold start, so the no-op is \
         timed the same way (its figure is much higher than in the repeat method); \
         `hit_single` times the hit path this way too, to show what the method adds. `new` and \
         `ipv6_new` insert into a table with room (the default size, emptied before every run \
         and used once before the first); `new_evicting` into a full one.\n\
         * **Which packet creates a flow's entry**: a TCP SYN creates none (it is placed by the \
         Maglev table and counted `syn_not_remembered`); the handshake's ACK, which finds no \
         entry (`tcp_miss_no_syn`), creates it (`new`), as a UDP flow's first datagram does. So \
         `new`, `ipv6_new` and `new_evicting` time that ACK and `udp_new` a first datagram; `syn` \
         (repeat: the same SYN never creates an entry, so every iteration takes its path) and \
         `syn_single` (distinct 5-tuples) time the SYN, and `syn_single` → `new` is what \
         remembering a flow costs.\n\
         * **Why new flows are not timed with repeat**: the program reads the coarse clock \
         (`bpf_ktime_get_coarse_ns`, once a jiffy per CPU), which advances once a tick. A data plane loaded with a TCP \
         timeout of 0, which the report used to time the new-flow path with, now finds the \
         entry of the previous iteration fresh: in one repeat run of {} iterations here, {} were \
         hits, {} found the entry expired and {} took the new-flow path. So every new flow is \
         now a distinct 5-tuple, timed with the single method.\n\
         * **Every run checks the data plane's counters**: each timed packet must be counted under \
         the case's verdict and connection-table event exactly once (column *confirmed*), or the \
         benchmark stops.\n\
         * **Under a spoofed-SYN flood**: a flood's packets are SYNs of distinct 5-tuples, \
         which `syn_single` times (placed by the Maglev table, nothing remembered, so the flood \
         evicts no entry); `hit_during_flood` times an established flow's packets while such a \
         flood runs through the same program, 8 SYNs (untimed) before each timed packet, so the \
         hit pays for the caches the flood leaves. Against `hit_single` it is what the flood \
         costs the live streams.\n\
         * **× floor**: for the IPv4 service cases, the floor program `xdp_floor` \
         (`xdp-lb-ebpf/src/floor.rs`) is timed on the same frames in the same runs: the least an \
         L2-DSR Maglev balancer does per packet, on the project's own maps and hash (parse \
         Ethernet/IPv4/ports, the `service_by_vip` lookup, the flow hash, one Maglev slot and its \
         backend, both MACs rewritten, XDP_TX; no connection table, counters, pre-filter or MAC \
         check). A test proves it sends every new flow where `xdp_lb` does. *× floor* is the \
         case's net figure over the floor's, run by run: what the product's safety costs over \
         the bare minimum.\n",
        p.repeat, p.single_packets, tz.iterations, tz.hits, tz.expired, tz.new
    );
    let _ = writeln!(
        out,
        "| case | method | ns per packet | no-op | net | × no-op | floor | × floor | confirmed per run |\n|---|---|---|---|---|---|---|---|---|"
    );
    for c in &p.cases {
        row(out, c);
    }
    let _ = writeln!(out);
    if let Some((_, path)) = charts.iter().find(|(n, _)| n == "packet") {
        let _ = writeln!(
            out,
            "![Per-packet cost net of the no-op, with targets]({})\n",
            path.display()
        );
    }
    let e = &p.eviction;
    let _ = writeln!(
        out,
        "### The eviction path\n\nNothing deletes entries from the connection table (idle ones \
         are only found expired when their flow comes back), so once a busy balancer's table \
         has filled, **every** new flow evicts: `new_evicting` is the steady state, `new` the \
         first minutes after a start. `new_evicting` runs on a connection table of {} entries. \
         The table is an LRU hash with one LRU list shared by all CPUs, so the benchmark's one \
         CPU fills all of it: it first inserted {} distinct flows, leaving {} entries (every \
         insert past the table's size evicts; the kernel evicts in batches of up to {} to \
         refill a CPU's free list, so a full table holds a little less than its size). The \
         timed runs inserted {} more distinct flows; the table then held {} entries, and the \
         very first flow inserted was {}.\n",
        e.table_size,
        e.prefilled_flows,
        e.entries_after_prefill,
        super::lru::FREE_BATCH,
        e.timed_new_flows,
        e.entries_after_timed_runs,
        if e.first_prefilled_flow_still_present {
            "still there"
        } else {
            "gone (evicted)"
        }
    );
    where_time_goes(out, p);
}

fn row(out: &mut String, c: &Case) {
    let _ = writeln!(
        out,
        "| `{}`: {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        c.id,
        c.title,
        c.method,
        c.ns.show(1),
        c.noop_ns.show(1),
        c.net_ns.show(1),
        c.ratio.show(2),
        c.floor_ns.as_ref().map_or("—".to_owned(), |f| f.show(1)),
        c.per_floor.as_ref().map_or("—".to_owned(), |f| f.show(2)),
        c.confirmed
    );
}

/// Steps from one case to the next: (case, the case before it, what it adds).
pub const STEPS: [(&str, &str, &str); 8] = [
    (
        "not_service_port",
        "",
        "parse Ethernet/IPv4/TCP, one read of the `vip_filter` bitmap (the (address, port) \
         bit is clear: no key hashed, no MAC check), one verdict counter",
    ),
    (
        "not_service",
        "not_service_port",
        "the same path on a service's port: the (address, port) bit is clear, so \
         `pass_not_service` as above (this step is the noise between two identical paths)",
    ),
    (
        "no_backend",
        "not_service",
        "the (address, port) `vip_filter` bit is set (a service's): the MAC check (one \
         `local_macs_ix` read), the flow filter, whose clear slot lets the SYN skip the `flows` \
         lookup (and a SYN reads no clock), the service found (`service_cache`, else \
         `service_by_vip`), its empty table; a drop",
    ),
    (
        "hit",
        "no_backend",
        "the `flows` lookup hits, so there is no service lookup at all (a negative step: a \
         hit can do less than a frame that finds a service without a backend); the clock (the \
         CPU's reading of this jiffy, `clock_cache`), the backend read and checked, both MACs \
         rewritten, service and backend counters",
    ),
    (
        "syn",
        "no_backend",
        "the service has a table: flow hash, Maglev slot, the backend read and checked, both \
         MACs rewritten, service and backend counters; a SYN is not remembered",
    ),
    (
        "syn_single",
        "hit_single",
        "(single method) the `flows` lookup misses: the `service_by_vip` lookup, flow hash, \
         Maglev slot, backend; nothing remembered (a SYN)",
    ),
    (
        "new",
        "syn_single",
        "(single method) the handshake's ACK: the same placement, and the flow inserted into \
         the LRU table",
    ),
    (
        "new_evicting",
        "new",
        "(single method) the insert first evicts the least recently used flow",
    ),
];

/// The ns a profile's symbol share stands for: the share of the profiled thread's CPU time
/// per packet for the single method (syscall included), of the kernel's time per iteration
/// for repeat.
pub fn profile_total_ns(profile: &Profile, case: &Case) -> f64 {
    profile.ns_per_packet().unwrap_or(case.ns.median)
}

/// By category, the ns per packet a new flow spends beyond a hit, both timed with the
/// single method and profiled the same way: (category, hit ns, new ns), largest difference
/// first.
pub fn new_over_hit(p: &PacketResults) -> Option<Vec<(&'static str, f64, f64)>> {
    let hit = p.profiles.iter().find(|pr| pr.case == "hit_single")?;
    let new = p.profiles.iter().find(|pr| pr.case == "new")?;
    let (hit_total, new_total) = (
        profile_total_ns(hit, p.case("hit_single")?),
        profile_total_ns(new, p.case("new")?),
    );
    let mut rows: Vec<(&'static str, f64, f64)> = Vec::new();
    for (profile, total, column) in [(hit, hit_total, 0), (new, new_total, 1)] {
        for (c, percent) in by_category(profile) {
            let ns = percent * total / 100.0;
            match rows.iter_mut().find(|(name, _, _)| *name == c) {
                Some(row) if column == 0 => row.1 += ns,
                Some(row) => row.2 += ns,
                None if column == 0 => rows.push((c, ns, 0.0)),
                None => rows.push((c, 0.0, ns)),
            }
        }
    }
    rows.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)));
    Some(rows)
}

fn where_time_goes(out: &mut String, p: &PacketResults) {
    let _ = writeln!(out, "### Where the time goes\n");
    if let Some(facts) = &p.program {
        let calls: Vec<String> = facts
            .calls
            .iter()
            .map(|(name, n)| format!("`{name}` ×{n}"))
            .collect();
        let jited = match (facts.jited_insns, facts.jited_calls) {
            (Some(insns), Some(calls)) => format!(" ({insns} instructions, {calls} of them calls)"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "The loaded program: {} translated BPF instructions, {} bytes of JITed x86-64{jited}, \
             {} instructions processed by the verifier. Its call sites in the translated code: \
             {}. No path loops: each runs a part of this code once.\n",
            facts.xlated_insns,
            facts.jited_bytes,
            facts
                .verified_insns
                .map_or("an unknown number of".to_owned(), |n| n.to_string()),
            calls.join(", ")
        );
    }
    if !p.bpftool_profile.is_empty() {
        let _ = writeln!(
            out,
            "`bpftool prog profile id … cycles instructions` while the hit case ran: `{}`{}\n",
            p.bpftool_profile,
            if p.bpftool_profile.contains("run_cnt") {
                ""
            } else {
                " — so the profiles below sample time with perf's software `cpu-clock` event instead"
            }
        );
    }
    let _ = writeln!(
        out,
        "Each case adds work to the one before it. The differences are taken run by run (the \
         cases of a method ran back to back in every run):\n\n| step | adds | ns (median, min–max over the runs) |\n|---|---|---|"
    );
    for (id, before, adds) in STEPS {
        let Some(now) = p.case(id) else { continue };
        let (label, step) = if before.is_empty() {
            (format!("`{id}`"), now.net_ns.clone())
        } else {
            let Some(prior) = p.case(before) else {
                continue;
            };
            let diff = paired_difference(&now.net_ns.samples, &prior.net_ns.samples);
            (format!("`{before}` → `{id}`"), Summary::of(&diff))
        };
        let _ = writeln!(out, "| {label} | {adds} | {} |", step.show(1));
    }
    let _ = writeln!(out);
    if p.profiles.is_empty() {
        let _ = writeln!(
            out,
            "No perf profile was taken (perf missing or refused).\n"
        );
    }
    for profile in &p.profiles {
        let Some(case) = p.case(&profile.case) else {
            continue;
        };
        let total = profile_total_ns(profile, case);
        let basis = match profile.ns_per_packet() {
            Some(cpu) => format!(
                "ns are the share of the benchmark thread's CPU time per packet while profiled, \
                 {cpu:.1} ns: the single method pays a syscall per packet, and all of it is \
                 sampled"
            ),
            None => format!(
                "ns are the share of the case's {total:.1} ns, which includes the test-run loop \
                 the no-op also pays"
            ),
        };
        let _ = writeln!(
            out,
            "**perf, case `{}`** ({} samples of `cpu-clock` of the benchmark thread, on its \
             pinned CPU, while the case ran; {basis}):\n\n| symbol | share | ≈ ns |\n|---|---|---|",
            profile.case, profile.samples
        );
        for (symbol, percent) in &profile.top {
            let _ = writeln!(
                out,
                "| `{symbol}` | {percent:.1}% | {:.1} |",
                percent * total / 100.0
            );
        }
        let groups = by_category(profile);
        let summary: Vec<String> = groups
            .iter()
            .map(|(c, percent)| format!("{c}: {percent:.0}% (≈ {:.1} ns)", percent * total / 100.0))
            .collect();
        let _ = writeln!(out, "\nBy kind: {}.\n", summary.join("; "));
    }
    if let Some(rows) = new_over_hit(p) {
        let _ = writeln!(
            out,
            "**What a new flow adds over a hit**, by kind, from the `hit_single` and `new` \
             profiles (both single method, so the syscall and test-run set-up are in both and \
             cancel):\n\n| kind | hit (single) ≈ ns | new ≈ ns | new − hit |\n|---|---|---|---|"
        );
        for (c, hit, new) in &rows {
            let _ = writeln!(out, "| {c} | {hit:.1} | {new:.1} | {:+.1} |", new - hit);
        }
        let _ = writeln!(out);
    }
    missed(out, p);
}

/// A paragraph per target, built from the figures above: what the largest part is.
fn missed(out: &mut String, p: &PacketResults) {
    for id in ["hit", "new", "not_service", "not_service_port"] {
        let (Some(case), Some(target)) = (p.case(id), target_ns(id)) else {
            continue;
        };
        let met = verdict(case.net_ns.median, target) == "met";
        let _ = write!(
            out,
            "**Target {}: `{id}`** is {:.1} ns net against {target:.0} ns.",
            if met { "met" } else { "missed" },
            case.net_ns.median
        );
        if met {
            let _ = writeln!(out, "\n");
            continue;
        }
        if id == "new" {
            if let Some(rows) = new_over_hit(p) {
                let program: Vec<&(&str, f64, f64)> =
                    rows.iter().filter(|(c, _, _)| !paid_by_noop(c)).collect();
                if let Some((largest, hit, new)) = program.first() {
                    let rest: Vec<String> = program[1..]
                        .iter()
                        .filter(|(_, h, n)| n - h > 0.0)
                        .map(|(c, h, n)| format!("{c} {:+.1} ns", n - h))
                        .collect();
                    let _ = write!(
                        out,
                        " Of what it adds over a hit, the largest part is {largest} (≈ {:+.1} ns \
                         per packet: {hit:.1} → {new:.1}){}.",
                        new - hit,
                        if rest.is_empty() {
                            String::new()
                        } else {
                            format!("; then {}", rest.join("; "))
                        }
                    );
                }
            }
            if let (Some(new), Some(hit_single), Some(hit)) =
                (p.case("new"), p.case("hit_single"), p.case("hit"))
            {
                let method = hit_single.net_ns.median - hit.net_ns.median;
                let estimate = new.net_ns.median - method;
                let _ = write!(
                    out,
                    " The single method itself adds {method:.1} ns to a hit (`hit_single` {:.1} \
                     against `hit` {:.1} net); taking that off, a new flow amid a stream of \
                     packets costs about {estimate:.1} ns net, {} the target.",
                    hit_single.net_ns.median,
                    hit.net_ns.median,
                    if estimate <= target {
                        "within"
                    } else {
                        "still above"
                    }
                );
            }
        } else if let Some(profile) = p.profiles.iter().find(|pr| pr.case == id) {
            let total = profile_total_ns(profile, case);
            let groups: Vec<(&str, f64)> = by_category(profile)
                .into_iter()
                .filter(|(c, _)| !paid_by_noop(c))
                .collect();
            if let Some((largest, percent)) = groups.first() {
                let rest: Vec<String> = groups[1..]
                    .iter()
                    .map(|(c, pc)| format!("{c} ≈ {:.1} ns", pc * total / 100.0))
                    .collect();
                let _ = write!(
                    out,
                    " Of the samples outside the test-run machinery, the largest part is \
                     {largest} ({percent:.0}% of the case, ≈ {:.1} ns){}.",
                    percent * total / 100.0,
                    if rest.is_empty() {
                        String::new()
                    } else {
                        format!("; then {}", rest.join("; "))
                    }
                );
            }
        }
        let _ = writeln!(out, "\n");
    }
}
