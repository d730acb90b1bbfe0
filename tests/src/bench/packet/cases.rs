//! The per-packet cases: which frames, on which data plane, along which path.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use xdp_lb::config::FlowTable;
use xdp_lb_common::{flow_stat, verdict};

use super::{
    CLIENT4, CLIENT6, EMPTY_PORT, Eviction, Noop, PORT, PacketOptions, PacketResults, Path,
    RepeatCase, Rig, SingleCase, TimeoutZero, VIP4, VIP6, XDP_DROP, XDP_PASS, XDP_TX,
    distinct_first_ack, distinct_first_ack6, distinct_syn, distinct_udp, possible_cpus,
    run_flood_case, run_repeat_cases, run_single_cases, time_repeat, time_single,
};
use crate::{
    bench::{lru::FREE_BATCH, profile},
    frames,
};

/// The LB's own address in the frames to it (ssh, not a service).
const LB_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Connection table of the `new` profile: more flows than half a second of single test runs
/// inserts (its one LRU list is shared by all CPUs: the profiled CPU can use all of it).
const NEW_PROFILE_TABLE: u32 = 1 << 20;

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
    let fresh = Rig::load(FlowTable::default())?;
    let small = Rig::load(FlowTable {
        size: opts.evict_table,
        ..FlowTable::default()
    })?;

    let ack4 = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
    let ack6 = frames::tcp_v6(CLIENT6, 40_000, VIP6, PORT, false);
    let repeat_cases = [
        RepeatCase {
            id: "not_service_port",
            title: "frame not for a service: to a port no service uses (IPv4 TCP to the LB's own address, port 22)",
            rig: &main,
            warmup: None,
            frame: frames::tcp_v4(CLIENT4, 40_000, LB_ADDRESS, 22, false),
            path: Some(Path {
                verdict: verdict::PASS_NOT_SERVICE,
                flows: Vec::new(),
                action: XDP_PASS,
            }),
            floor: false,
        },
        RepeatCase {
            id: "not_service",
            title: "frame not for a service: a service's port, another address (IPv4 TCP to 10.0.0.200:1935)",
            rig: &main,
            warmup: None,
            frame: frames::tcp_v4(CLIENT4, 40_000, Ipv4Addr::new(10, 0, 0, 200), PORT, false),
            path: Some(Path {
                verdict: verdict::PASS_NOT_SERVICE,
                flows: Vec::new(),
                action: XDP_PASS,
            }),
            floor: false,
        },
        RepeatCase {
            id: "hit",
            title: "known flow: connection-table hit (IPv4)",
            rig: &main,
            warmup: Some(ack4.clone()),
            frame: ack4,
            path: Some(tx_path(vec![(flow_stat::HIT, 1)])),
            floor: true,
        },
        RepeatCase {
            id: "ipv6_hit",
            title: "IPv6 service packet: connection-table hit",
            rig: &main,
            warmup: Some(ack6.clone()),
            frame: ack6,
            path: Some(tx_path(vec![(flow_stat::HIT, 1)])),
            floor: false,
        },
        RepeatCase {
            id: "garbage",
            title: "garbage frame (64 random bytes)",
            rig: &main,
            warmup: None,
            frame: frames::garbage(0x9a7b_a9e0, 64),
            path: None,
            floor: false,
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
            floor: false,
        },
        RepeatCase {
            id: "syn",
            title: "a connection's SYN (IPv4): placed by the Maglev table, not remembered",
            rig: &main,
            warmup: None,
            // A SYN creates no entry, so every iteration takes the same path.
            frame: frames::tcp_v4(CLIENT4, 40_002, VIP4, PORT, true),
            path: Some(tx_path(vec![(flow_stat::SYN_NOT_REMEMBERED, 1)])),
            floor: true,
        },
    ];
    let mut cases = run_repeat_cases(&repeat_cases, &noop, opts)?;

    // Single-packet runs, interleaved run by run: the same hit (the method's own offset);
    // distinct new flows into a table with room (emptied before every run), IPv4 and IPv6;
    // distinct new flows into a full table (eviction).
    time_repeat(
        main.program(),
        &frames::tcp_v4(CLIENT4, 40_001, VIP4, PORT, false),
        1,
    )?;
    let ack = frames::tcp_v4(CLIENT4, 40_001, VIP4, PORT, false);
    time_repeat(
        main.program(),
        &frames::tcp_v6(CLIENT6, 40_001, VIP6, PORT, false),
        1,
    )?;
    let ack6 = frames::tcp_v6(CLIENT6, 40_001, VIP6, PORT, false);

    let prefilled = u64::from(opts.evict_table) + u64::from(opts.evict_table / 4);
    let first_key_frame = distinct_first_ack(1);
    for m in 1..=prefilled {
        time_repeat(small.program(), &distinct_first_ack(m), 1)?;
    }
    let entries_after_prefill = small.balancer.dataplane().flows().len() as u64;

    // The table with room is emptied before every run; use it once first, so that every
    // run sees free entries in the order a used table has them (not as allocated).
    for n in 1..=u64::from(opts.single_packets) {
        time_repeat(fresh.program(), &distinct_first_ack(n), 1)?;
    }
    let clear_fresh = || fresh.clear_flows();
    let (mut n4, mut n6, mut m, mut s, mut u) = (0u64, 0u64, prefilled, 0u64, 0u64);
    let evicting_counter = std::cell::Cell::new(0u64);
    let mut single_cases = [
        SingleCase {
            id: "hit_single",
            title: "known flow, one packet per test run (the single method's own offset)",
            rig: &main,
            path: tx_path(vec![(flow_stat::HIT, 1)]),
            before_run: None,
            next_frame: Box::new(|| ack.clone()),
            floor: true,
        },
        SingleCase {
            id: "ipv6_hit_single",
            title: "known IPv6 flow, one packet per test run",
            rig: &main,
            path: tx_path(vec![(flow_stat::HIT, 1)]),
            before_run: None,
            next_frame: Box::new(|| ack6.clone()),
            floor: false,
        },
        SingleCase {
            id: "syn_single",
            title: "a connection's SYN, distinct 5-tuples: placed by the Maglev table, nothing remembered",
            rig: &main,
            path: tx_path(vec![(flow_stat::SYN_NOT_REMEMBERED, 1)]),
            before_run: None,
            next_frame: Box::new(|| {
                s += 1;
                distinct_syn(s)
            }),
            floor: true,
        },
        SingleCase {
            id: "new",
            title: "first remembered packet of a new flow (IPv4 handshake ACK, distinct 5-tuples, table with room)",
            rig: &fresh,
            path: tx_path(vec![(flow_stat::TCP_MISS_NO_SYN, 1), (flow_stat::NEW, 1)]),
            before_run: Some(&clear_fresh),
            next_frame: Box::new(|| {
                n4 += 1;
                distinct_first_ack(n4)
            }),
            floor: true,
        },
        SingleCase {
            id: "ipv6_new",
            title: "IPv6 first remembered packet of a new flow (handshake ACK, distinct 5-tuples, table with room)",
            rig: &fresh,
            path: tx_path(vec![(flow_stat::TCP_MISS_NO_SYN, 1), (flow_stat::NEW, 1)]),
            before_run: Some(&clear_fresh),
            next_frame: Box::new(|| {
                n6 += 1;
                distinct_first_ack6(n6)
            }),
            floor: false,
        },
        SingleCase {
            id: "udp_new",
            title: "first datagram of a new UDP flow (IPv4, distinct 5-tuples, table with room)",
            rig: &fresh,
            path: tx_path(vec![(flow_stat::NEW, 1)]),
            before_run: Some(&clear_fresh),
            next_frame: Box::new(|| {
                u += 1;
                distinct_udp(u)
            }),
            floor: true,
        },
        SingleCase {
            id: "new_evicting",
            title: "first remembered packet of a new flow (handshake ACK), distinct 5-tuples, table full (evicts)",
            rig: &small,
            path: tx_path(vec![(flow_stat::TCP_MISS_NO_SYN, 1), (flow_stat::NEW, 1)]),
            before_run: None,
            next_frame: Box::new(|| {
                m += 1;
                evicting_counter.set(evicting_counter.get() + 1);
                distinct_first_ack(m)
            }),
            floor: true,
        },
    ];
    cases.extend(run_single_cases(&mut single_cases, &noop, opts)?);
    drop(single_cases);
    // Under a spoofed-SYN flood: the flood's own packets cost what `syn_single` times; the
    // established flows' packets are timed between its SYNs.
    cases.push(run_flood_case(
        &main,
        &noop,
        opts,
        &frames::tcp_v4(CLIENT4, 40_003, VIP4, PORT, false),
        &mut || {
            s += 1;
            distinct_syn(s)
        },
    )?);
    fresh.clear_flows()?;

    let flows_now = small.balancer.dataplane().flows();
    let first_present = {
        // The flow of the very first prefilled frame: is it still remembered?
        let before = small.counters();
        time_repeat(small.program(), &first_key_frame, 1)?;
        small.counters().since(&before).flows[flow_stat::HIT as usize] == 1
    };
    let eviction = Eviction {
        table_size: opts.evict_table,
        prefilled_flows: prefilled,
        entries_after_prefill,
        entries_after_timed_runs: flows_now.len() as u64,
        timed_new_flows: evicting_counter.get(),
        first_prefilled_flow_still_present: first_present,
    };
    if eviction.entries_after_timed_runs >= eviction.prefilled_flows + eviction.timed_new_flows {
        bail!("the eviction case evicted nothing: {eviction:?}");
    }

    let timeout_zero = timeout_zero(opts)?;
    let program = profile::program_facts(main.program()).ok();
    let profiles = if opts.profile_seconds > 0 {
        profiles(opts, &main)?
    } else {
        Vec::new()
    };
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
        timeout_zero,
        program,
        profiles,
    })
}

/// One repeat run of a SYN on a data plane whose TCP timeout is 0, as the `new` case was
/// once timed: what the counters show.
fn timeout_zero(opts: &PacketOptions) -> Result<TimeoutZero> {
    let rig = Rig::load(FlowTable {
        tcp_timeout_s: 0,
        udp_timeout_s: 0,
        ..FlowTable::default()
    })?;
    // The handshake's ACK: the packet that creates an entry.
    let first = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
    time_repeat(rig.program(), &first, 1)?;
    let before = rig.counters();
    time_repeat(rig.program(), &first, opts.repeat)?;
    let d = rig.counters().since(&before);
    Ok(TimeoutZero {
        iterations: u64::from(opts.repeat),
        hits: d.flows[flow_stat::HIT as usize],
        expired: d.flows[flow_stat::EXPIRED as usize],
        new: d.flows[flow_stat::NEW as usize],
    })
}

/// perf profiles of `hit` and `not_service` (repeat method), and of `hit_single` and `new`
/// (single method: one test run per packet, so their difference is what a new flow adds).
fn profiles(opts: &PacketOptions, main: &Rig) -> Result<Vec<profile::Profile>> {
    let mut profiles = Vec::new();
    let mut keep = |id: &str, result: Result<profile::Profile>| match result {
        Ok(p) => profiles.push(p),
        Err(err) => eprintln!("xdp-lb-bench: profiling {id}: {err:#}"),
    };
    let ack = frames::tcp_v4(CLIENT4, 40_000, VIP4, PORT, false);
    let other = frames::tcp_v4(CLIENT4, 40_000, Ipv4Addr::new(10, 0, 0, 200), PORT, false);
    for (id, frame) in [("hit", ack.clone()), ("not_service", other)] {
        keep(
            id,
            profile::perf_profile(id, opts.cpu, f64::from(opts.profile_seconds), &mut || {
                time_repeat(main.program(), &frame, opts.repeat).map(drop)
            }),
        );
    }
    let batch = vec![ack; 1000];
    let mut packets = 0u64;
    let hit_single = profile::perf_profile(
        "hit_single",
        opts.cpu,
        f64::from(opts.profile_seconds),
        &mut || {
            time_single(main.program(), &batch, XDP_TX)?;
            packets += batch.len() as u64;
            Ok(())
        },
    )
    .map(|p| profile::Profile {
        packets: Some(packets),
        ..p
    });
    keep("hit_single", hit_single);
    // New flows into a table with room for as long as perf samples: windows of half a
    // second (perf needs 0.3 s to start, so each inserts a few hundred thousand flows),
    // the table emptied between windows (unsampled), merged into one profile.
    let rig = Rig::load(FlowTable {
        size: NEW_PROFILE_TABLE,
        ..FlowTable::default()
    })?;
    // What the table surely holds before it evicts: the other CPUs' local free lists may
    // keep up to a batch each (none of them inserts here).
    let capacity = u64::from(NEW_PROFILE_TABLE) - FREE_BATCH * possible_cpus()? as u64;
    let mut windows = Vec::new();
    for _ in 0..opts.profile_seconds * 2 {
        rig.clear_flows()?;
        let mut n = 0u64;
        let before = rig.counters();
        let window = profile::perf_profile("new", opts.cpu, 0.5, &mut || {
            let frames: Vec<Vec<u8>> = (0..1000)
                .map(|_| {
                    n += 1;
                    distinct_first_ack(n)
                })
                .collect();
            time_single(rig.program(), &frames, XDP_TX).map(drop)
        })
        .map(|p| profile::Profile {
            packets: Some(n),
            ..p
        });
        // Every profiled packet must have been a new flow into a table with room.
        rig.counters().since(&before).confirm(
            n,
            &tx_path(vec![(flow_stat::TCP_MISS_NO_SYN, 1), (flow_stat::NEW, 1)]),
        )?;
        let entries = rig.balancer.dataplane().flows().len() as u64;
        if entries != n || n >= capacity {
            bail!(
                "profiling `new`: {n} flows inserted, {entries} kept, the table surely holds \
                 {capacity} before it evicts: the table filled"
            );
        }
        match window {
            Ok(p) => windows.push(p),
            Err(err) => {
                eprintln!("xdp-lb-bench: profiling new: {err:#}");
                break;
            }
        }
    }
    rig.clear_flows()?;
    if let Some(merged) = profile::Profile::merge(&windows) {
        profiles.push(merged);
    }
    Ok(profiles)
}
