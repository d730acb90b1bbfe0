//! The per-packet cases: which frames, on which data plane, along which path.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use xdp_lb::config::FlowTable;
use xdp_lb_common::{flow_stat, verdict};

use super::{
    CLIENT4, CLIENT6, EMPTY_PORT, Eviction, Noop, PORT, PacketOptions, PacketResults, Path,
    RepeatCase, Rig, VIP4, VIP6, XDP_DROP, XDP_PASS, XDP_TX, distinct_syn, possible_cpus,
    run_repeat_cases, run_single_case, time_repeat,
};
use crate::bench::{frames, profile};

fn tx_path(flows: Vec<(u32, u64)>) -> Path {
    Path {
        verdict: verdict::TX,
        flows,
        action: XDP_TX,
    }
}

/// Runs every per-packet case.
pub fn run(opts: &PacketOptions) -> Result<PacketResults> {
    let noop = Noop::load()?;
    let main = Rig::load(FlowTable::default())?;
    let expiring = Rig::load(FlowTable {
        tcp_timeout_s: 0,
        udp_timeout_s: 0,
        ..FlowTable::default()
    })?;
    let fresh = Rig::load(FlowTable::default())?;
    let small = Rig::load(FlowTable {
        size: opts.evict_table,
        ..FlowTable::default()
    })?;

    let syn4 = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, true);
    let ack4 = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
    let syn6 = frames::tcp_v6(CLIENT6, 40_000, VIP6, PORT, true);
    let ack6 = frames::tcp_v6(CLIENT6, 40_000, VIP6, PORT, false);
    let expired_new = vec![(flow_stat::EXPIRED, 1), (flow_stat::NEW, 1)];
    let repeat_cases = [
        RepeatCase {
            id: "not_service",
            title: "frame not for a service (IPv4 TCP to another address)",
            rig: &main,
            warmup: None,
            frame: frames::tcp_v4(CLIENT4, 40_000, Ipv4Addr::new(10, 0, 0, 200), PORT, false),
            path: Some(Path {
                verdict: verdict::PASS_NOT_SERVICE,
                flows: Vec::new(),
                action: XDP_PASS,
            }),
        },
        RepeatCase {
            id: "hit",
            title: "known flow: connection-table hit (IPv4)",
            rig: &main,
            warmup: Some(syn4.clone()),
            frame: ack4,
            path: Some(tx_path(vec![(flow_stat::HIT, 1)])),
        },
        RepeatCase {
            id: "new",
            title: "first packet of a new flow (IPv4; timeout 0: finds its expired entry, then Maglev and insert)",
            rig: &expiring,
            warmup: Some(syn4.clone()),
            frame: syn4,
            path: Some(tx_path(expired_new.clone())),
        },
        RepeatCase {
            id: "ipv6_hit",
            title: "IPv6 service packet: connection-table hit",
            rig: &main,
            warmup: Some(syn6.clone()),
            frame: ack6,
            path: Some(tx_path(vec![(flow_stat::HIT, 1)])),
        },
        RepeatCase {
            id: "ipv6_new",
            title: "IPv6 first packet of a new flow (timeout 0, as above)",
            rig: &expiring,
            warmup: Some(syn6.clone()),
            frame: syn6,
            path: Some(tx_path(expired_new)),
        },
        RepeatCase {
            id: "garbage",
            title: "garbage frame (64 random bytes)",
            rig: &main,
            warmup: None,
            frame: frames::garbage(0x9a7b_a9e0, 64),
            path: None,
        },
        RepeatCase {
            id: "no_backend",
            title: "service with no backend (drop): parse, service lookup, table miss",
            rig: &main,
            warmup: None,
            frame: frames::tcp_v4(CLIENT4, 40_000, VIP4, EMPTY_PORT, true),
            path: Some(Path {
                verdict: verdict::DROP_NO_BACKEND,
                flows: Vec::new(),
                action: XDP_DROP,
            }),
        },
    ];
    let mut cases = run_repeat_cases(&repeat_cases, &noop, opts)?;

    // Single-packet runs: the same hit, for the method's own offset; distinct new flows
    // into a table with room; distinct new flows into a full table (eviction).
    let mut n = 0u64;
    time_repeat(
        main.program(),
        &frames::tcp_v4(CLIENT4, 40_001, VIP4, PORT, true),
        1,
    )?;
    let ack = frames::tcp_v4(CLIENT4, 40_001, VIP4, PORT, false);
    cases.push(run_single_case(
        "hit_single",
        "known flow, one packet per test run (calibrates the single method)",
        &main,
        &noop,
        opts,
        &tx_path(vec![(flow_stat::HIT, 1)]),
        &mut || ack.clone(),
    )?);
    cases.push(run_single_case(
        "new_distinct",
        "first packet of a new flow, distinct 5-tuples, table with room",
        &fresh,
        &noop,
        opts,
        &tx_path(vec![(flow_stat::NEW, 1)]),
        &mut || {
            n += 1;
            distinct_syn(n)
        },
    )?);

    let prefilled = u64::from(opts.evict_table) + u64::from(opts.evict_table / 4);
    let mut m = 0u64;
    let first_key_frame = distinct_syn(1);
    for _ in 0..prefilled {
        m += 1;
        time_repeat(small.program(), &distinct_syn(m), 1)?;
    }
    let entries_after_prefill = small.balancer.dataplane().flows().len() as u64;
    cases.push(run_single_case(
        "new_evicting",
        "first packet of a new flow, distinct 5-tuples, table full (evicts)",
        &small,
        &noop,
        opts,
        &tx_path(vec![(flow_stat::NEW, 1)]),
        &mut || {
            m += 1;
            distinct_syn(m)
        },
    )?);
    let flows_now = small.balancer.dataplane().flows();
    let first_present = {
        // The flow of the very first prefilled frame: is it still remembered?
        let before = small.counters();
        time_repeat(small.program(), &first_key_frame, 1)?;
        small.counters().since(&before).flows[flow_stat::HIT as usize] == 1
    };
    let eviction = Eviction {
        table_size: opts.evict_table,
        possible_cpus: possible_cpus()?,
        prefilled_flows: prefilled,
        entries_after_prefill,
        entries_after_timed_runs: flows_now.len() as u64,
        timed_new_flows: m - prefilled,
        first_prefilled_flow_still_present: first_present,
    };
    if eviction.entries_after_timed_runs >= eviction.prefilled_flows + eviction.timed_new_flows {
        bail!("the eviction case evicted nothing: {eviction:?}");
    }

    let program = profile::program_facts(main.program()).ok();
    let mut profiles = Vec::new();
    if opts.profile_seconds > 0 {
        let ack = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
        let syn = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, true);
        let other = frames::tcp_v4(CLIENT4, 40_000, Ipv4Addr::new(10, 0, 0, 200), PORT, false);
        for (id, rig, frame) in [
            ("hit", &main, ack),
            ("new", &expiring, syn),
            ("not_service", &main, other),
        ] {
            match profile::perf_profile(id, opts.cpu, opts.profile_seconds, &mut || {
                time_repeat(rig.program(), &frame, opts.repeat).map(drop)
            }) {
                Ok(p) => profiles.push(p),
                Err(err) => eprintln!("xdp-lb-bench: profiling {id}: {err:#}"),
            }
        }
    }
    let hit_frame = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
    let bpftool_profile = match &program {
        Some(_) if opts.profile_seconds == 0 => String::new(),
        Some(facts) => profile::bpftool_profile(facts.id, &mut || {
            time_repeat(main.program(), &hit_frame, opts.repeat).map(drop)
        }),
        None => "not tried: the program's id is unknown".to_owned(),
    };
    Ok(PacketResults {
        bpftool_profile,
        cpu: opts.cpu,
        repeat: opts.repeat,
        runs: opts.runs,
        single_packets: opts.single_packets,
        cases,
        eviction,
        program,
        profiles,
    })
}
