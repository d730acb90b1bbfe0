//! The per-packet part of BENCHMARKS.md: the method, the cases, the eviction evidence, and
//! where the time goes (cost differences between cases, the program's size, perf samples).

use std::{fmt::Write as _, path::PathBuf};

use super::{
    Bench,
    packet::{Case, PacketResults},
    profile::Profile,
    report::{target_ns, verdict},
    stats::{Summary, paired_difference},
};

/// What a kernel or BPF symbol spends its time on, for grouping perf samples.
pub fn category(symbol: &str) -> &'static str {
    let s = symbol.to_ascii_lowercase();
    if s.starts_with("bpf_prog_") && s.ends_with("_xdp_lb") {
        "the program's own instructions (parse, hash, Maglev slot, MAC rewrite, counters)"
    } else if s.contains("lru") {
        "LRU connection table: lookup, insert, list upkeep"
    } else if s.contains("htab")
        || s.contains("jhash")
        || s.contains("lookup_nulls")
        || s.contains("map_lookup")
    {
        "hash-map lookups (service_by_vip, flows)"
    } else if s.contains("ktime") || s.contains("clock") || s.contains("tsc") {
        "clock reads (bpf_ktime_get_ns)"
    } else if s.contains("test_run")
        || s.contains("bpf_test")
        || s.contains("xdp")
        || s.contains("resched")
    {
        "BPF_PROG_TEST_RUN loop (also in the no-op)"
    } else {
        "other kernel code"
    }
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
         the same frame and method; *net* is case minus no-op, run by run, and *× no-op* their \
         ratio. {} runs per case.\n",
        xdp_lb_common::FLOW_TABLE_DEFAULT_SIZE,
        p.cpu,
        p.runs
    );
    let _ = writeln!(
        out,
        "* **repeat** ({} iterations per run): the kernel's mean time per iteration. Iteration \
         k+1 sees the frame iteration k wrote; the program only rewrites MACs, so the 5-tuple \
         stays and a service frame is a connection-table hit from the second iteration on. A \
         warm-up packet puts the flow in the table first, so every timed iteration hits.\n\
         * **first packet of a new flow** needs a new flow every iteration, which `repeat` cannot \
         give. The `new` case loads the data plane with a TCP timeout of 0 s (allowed at load, \
         refused in a config file): every lookup finds the flow's entry expired and the packet \
         takes the whole new-flow path (Maglev slot, backend, insert). That is the new-flow path \
         **plus one extra lookup hit**, so it overstates a real first packet slightly.\n\
         * **single** ({} test runs of one packet per run, each with its own frame): for paths \
         that need distinct 5-tuples (`new_distinct`, `new_evicting`). The kernel's per-run time \
         then includes the timer's own overhead, so the no-op is timed the same way (its figure \
         is much higher than in the repeat method); `hit_single` times the hit path this way too, \
         to show what the method adds.\n\
         * **Every run checks the data plane's counters**: each timed packet must be counted under \
         the case's verdict and connection-table event exactly once (column *confirmed*), or the \
         benchmark stops.\n",
        p.repeat, p.single_packets
    );
    let _ = writeln!(
        out,
        "| case | method | ns per packet | no-op | net | × no-op | confirmed per run |\n|---|---|---|---|---|---|---|"
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
        "### The eviction path\n\n`new_evicting` runs on a connection table of {} entries. The \
         table is an LRU hash with per-CPU LRU lists, so the {} possible CPUs each get a share; \
         the benchmark first inserted {} distinct flows from its one CPU, leaving {} entries \
         (every insert past that evicts). The timed runs inserted {} more distinct flows; the \
         table then held {} entries, and the very first flow inserted was {}.\n",
        e.table_size,
        e.possible_cpus,
        e.prefilled_flows,
        e.entries_after_prefill,
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
        "| `{}`: {} | {} | {} | {} | {} | {} | {} |",
        c.id,
        c.title,
        c.method,
        c.ns.show(1),
        c.noop_ns.show(1),
        c.net_ns.show(1),
        c.ratio.show(2),
        c.confirmed
    );
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
                " — so the profile below samples time with perf's software `cpu-clock` event instead"
            }
        );
    }
    let steps: [(&str, &str, &str); 4] = [
        (
            "not_service",
            "",
            "parse Ethernet/IPv4/TCP, one `service_by_vip` lookup (miss), one verdict counter",
        ),
        (
            "no_backend",
            "not_service",
            "the service found, `bpf_ktime_get_ns`, one `flows` lookup (miss), no table",
        ),
        (
            "hit",
            "no_backend",
            "the `flows` lookup hits; the backend read, both MACs rewritten, three more counters",
        ),
        (
            "new",
            "hit",
            "Maglev: flow hash, table slot, backend; the flow inserted (LRU update); two flow counters",
        ),
    ];
    let _ = writeln!(
        out,
        "Each case adds work to the one before it. The differences are taken run by run (the cases of a run ran back to back):\n\n| step | adds | ns (median, min–max over the runs) |\n|---|---|---|"
    );
    for (id, before, adds) in steps {
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
        let total = case.ns.median;
        let _ = writeln!(
            out,
            "**perf, case `{}`** ({} samples of `cpu-clock` on the pinned CPU while the case ran; \
             ns are the share of the case's {:.1} ns, which includes the test-run loop the no-op \
             also pays):\n\n| symbol | share | ≈ ns |\n|---|---|---|",
            profile.case, profile.samples, total
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
    missed(out, p);
}

/// A paragraph per missed target, built from the figures above.
fn missed(out: &mut String, p: &PacketResults) {
    for id in ["hit", "new", "not_service"] {
        let (Some(case), Some(target)) = (p.case(id), target_ns(id)) else {
            continue;
        };
        if verdict(case.net_ns.median, target) == "met" {
            continue;
        }
        let _ = write!(
            out,
            "**Target missed: `{id}`** is {:.1} ns net against {target:.0} ns.",
            case.net_ns.median
        );
        if let Some(profile) = p.profiles.iter().find(|pr| pr.case == id) {
            let groups: Vec<(&str, f64)> = by_category(profile)
                .into_iter()
                .filter(|(c, _)| !c.starts_with("BPF_PROG_TEST_RUN"))
                .collect();
            if let Some((largest, percent)) = groups.first() {
                let _ = write!(
                    out,
                    " Of the samples outside the test-run loop, the largest part is {largest} \
                     ({percent:.0}% of the case, ≈ {:.1} ns).",
                    percent * case.ns.median / 100.0
                );
            }
        }
        let _ = writeln!(out, "\n");
    }
}
