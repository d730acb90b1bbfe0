//! The benchmarks' own code, run small on the real data plane (root): every figure comes
//! from runs whose counters proved the path, and a run that takes another path is refused.

use std::net::Ipv4Addr;

use xdp_lb::config::FlowTable;
use xdp_lb_common::{BPF_F_NO_COMMON_LRU, FLOW_TABLE_FLAGS, flow_stat, verdict};
use xdp_lb_tests::bench::{
    distribution::{DistributionOptions, two_lbs},
    frames,
    lru::{self, LruOptions},
    maglev::{build_time, switch_time},
    packet::{self, Noop, PacketOptions, Path, RepeatCase, Rig, XDP_TX},
};

fn require_root() {
    assert!(
        xdp_lb_tests::is_root(),
        "the benchmark tests load BPF programs: run them as root (cargo xtask test)"
    );
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

fn small() -> PacketOptions {
    PacketOptions {
        repeat: 1000,
        runs: 5,
        single_packets: 100,
        evict_table: 1024,
        profile_seconds: 0,
        cpu: 0,
    }
}

#[test]
fn every_per_packet_figure_comes_from_runs_whose_counters_confirm_the_path() {
    require_root();
    let opts = small();
    // As the benchmark does: one CPU, whose local free list the eviction counts expect.
    let results = std::thread::spawn(move || {
        packet::pin_to_cpu(opts.cpu)?;
        packet::run(&opts)
    })
    .join()
    .unwrap()
    .expect("the per-packet benchmark");
    let opts = small();
    let ids: Vec<&str> = results.cases.iter().map(|c| c.id.as_str()).collect();
    for id in [
        "not_service_port",
        "not_service",
        "hit",
        "ipv6_hit",
        "garbage",
        "no_backend",
        "hit_single",
        "ipv6_hit_single",
        "new",
        "ipv6_new",
        "new_evicting",
        "hit_during_flood",
    ] {
        assert!(ids.contains(&id), "no case {id} in {ids:?}");
    }
    for case in &results.cases {
        assert_eq!(case.ns.samples.len(), opts.runs, "{}", case.id);
        assert_eq!(case.noop_ns.samples.len(), opts.runs, "{}", case.id);
        assert!(
            case.ns.samples.iter().all(|&ns| ns > 0.0),
            "{}: {:?}",
            case.id,
            case.ns
        );
        // Net and ratio are taken run by run against the no-op of the same run.
        for i in 0..opts.runs {
            let (ns, noop) = (case.ns.samples[i], case.noop_ns.samples[i]);
            assert_eq!(case.net_ns.samples[i], ns - noop, "{}", case.id);
            assert_eq!(case.ratio.samples[i], ns / noop, "{}", case.id);
        }
    }
    // The floor is timed beside the IPv4 service cases, in the same runs; the ratio is of
    // the two net figures, run by run.
    for case in &results.cases {
        let takes_floor = [
            "hit",
            "syn",
            "hit_single",
            "syn_single",
            "new",
            "udp_new",
            "new_evicting",
        ]
        .contains(&case.id.as_str());
        match (&case.floor_ns, &case.per_floor) {
            (Some(floor), Some(per_floor)) if takes_floor => {
                assert_eq!(floor.samples.len(), opts.runs, "{}", case.id);
                for i in 0..opts.runs {
                    let noop = case.noop_ns.samples[i];
                    assert_eq!(
                        per_floor.samples[i],
                        (case.ns.samples[i] - noop) / (floor.samples[i] - noop),
                        "{}",
                        case.id
                    );
                }
            }
            (None, None) if !takes_floor => {}
            other => panic!("{}: floor figures {other:?}", case.id),
        }
    }
    let hit = results.case("hit").unwrap();
    assert_eq!(hit.confirmed, "tx 1000/1000, flow hit 1000/1000");
    // Every new flow is a distinct 5-tuple: the counters show a new flow per packet and no
    // hit (the coarse clock makes "timeout 0" hits, so no case relies on it).
    let new = results.case("new").unwrap();
    assert_eq!(
        (new.method.as_str(), new.confirmed.as_str()),
        (
            "single",
            "tx 100/100, flow tcp_miss_no_syn 100/100, flow new 100/100"
        )
    );
    assert_eq!(
        results.case("ipv6_new").unwrap().confirmed,
        "tx 100/100, flow tcp_miss_no_syn 100/100, flow new 100/100"
    );
    let other = results.case("not_service").unwrap();
    assert_eq!(
        other.confirmed,
        "pass_not_service 1000/1000, no connection-table event"
    );
    // The established flow's packets between the flood's SYNs: the counters of every run
    // proved 8 SYNs per timed hit, none remembered.
    assert_eq!(
        results.case("hit_during_flood").unwrap().confirmed,
        "tx 900/900, flow hit 100/100, flow syn_not_remembered 800/800 (the flood, untimed)"
    );
    assert_eq!(
        results.case("new_evicting").unwrap().confirmed,
        "tx 100/100, flow tcp_miss_no_syn 100/100, flow new 100/100"
    );
    // The reason the new-flow path is no longer timed with a timeout of 0, from the counters
    // of a real run: every iteration was a hit or a new flow, and few were new.
    let tz = &results.timeout_zero;
    assert_eq!(tz.iterations, 1000);
    assert_eq!(tz.hits + tz.new, tz.iterations, "{tz:?}");
    assert_eq!(tz.expired, tz.new, "{tz:?}");
    let e = &results.eviction;
    assert!(e.entries_after_prefill < e.prefilled_flows, "{e:?}");
    assert!(
        e.entries_after_timed_runs <= e.entries_after_prefill,
        "{e:?}"
    );
    assert!(!e.first_prefilled_flow_still_present, "{e:?}");
}

/// The floor does what the balancer does to a new flow's packet, and no more: the same
/// backend from the same Maglev slot, the same two MACs, nothing else changed; and a frame
/// it cannot take (not a service's, IPv6) passes untouched.
#[test]
fn the_floor_sends_every_new_flow_where_the_balancer_does_and_passes_the_rest() {
    require_root();
    let rig = Rig::load(FlowTable::default()).unwrap();
    use aya::programs::TestRun as _;
    let run = |program: &aya::programs::Xdp, frame: &[u8]| {
        let mut out = vec![0u8; frame.len()];
        let result = program
            .test_run(aya::programs::TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap();
        (result.return_value, out)
    };
    let mut backends = std::collections::BTreeSet::new();
    for port in 20_000..20_200 {
        let syn = frames::tcp_v4(CLIENT, port, VIP, 1935, true);
        let (action, by_balancer) = run(rig.program(), &syn);
        assert_eq!(action, XDP_TX);
        let (floor_action, by_floor) = run(rig.floor(), &syn);
        assert_eq!(floor_action, XDP_TX, "port {port}");
        assert_eq!(by_floor, by_balancer, "port {port}");
        assert_ne!(
            by_floor[..6],
            syn[..6],
            "the destination MAC is the backend's"
        );
        assert_eq!(by_floor[12..], syn[12..], "nothing but the MACs changes");
        backends.insert(by_floor[..6].to_vec());
    }
    assert_eq!(backends.len(), 3, "the three backends all get flows");
    for frame in [
        frames::tcp_v4(CLIENT, 40_000, Ipv4Addr::new(10, 0, 0, 200), 1935, true),
        frames::tcp_v4(CLIENT, 40_000, VIP, 22, true),
        frames::tcp_v6(
            "2001:db8::7".parse().unwrap(),
            40_000,
            "2001:db8::100".parse().unwrap(),
            1935,
            true,
        ),
    ] {
        assert_eq!(
            run(rig.floor(), &frame),
            (xdp_lb_tests::bench::packet::XDP_PASS, frame.clone())
        );
    }
}

#[test]
fn a_run_that_takes_another_path_than_the_one_timed_is_refused() {
    require_root();
    let rig = Rig::load(FlowTable::default()).unwrap();
    let noop = Noop::load().unwrap();
    // Without a warm-up the first packet is a new flow, not a hit: the run must fail.
    let case = RepeatCase {
        id: "hit",
        title: "hit without a warm-up",
        rig: &rig,
        warmup: None,
        frame: frames::tcp_v4(CLIENT, 41_000, VIP, 1935, false),
        path: Some(Path {
            verdict: verdict::TX,
            flows: vec![(flow_stat::HIT, 1)],
            action: XDP_TX,
        }),
        floor: true,
    };
    let err = packet::run_repeat_cases(&[case], &noop, &small()).unwrap_err();
    assert!(
        format!("{err:#}").contains("did not all take the path"),
        "{err:#}"
    );
}

#[test]
fn maglev_figures_are_timed_runs_and_every_switch_is_seen_live_in_the_kernel() {
    require_root();
    let build = build_time(251, 3, 5).unwrap();
    assert_eq!(build.ms.samples.len(), 5);
    assert!(build.ms.samples.iter().all(|&ms| ms > 0.0));
    let [down, up] = switch_time(251, 3, 3).unwrap();
    assert_eq!((down.change.as_str(), up.change.as_str()), ("down", "up"));
    assert_eq!(down.ms.samples.len(), 3);
    assert!(up.ms.samples.iter().all(|&ms| ms > 0.0));
}

#[test]
fn two_lbs_loaded_side_by_side_build_identical_tables() {
    require_root();
    let opts = DistributionOptions {
        flows: 1000,
        runs: 2,
        maglev_size: 251,
    };
    let t = two_lbs(5, &opts).unwrap();
    assert_eq!(t.slots_compared, 251);
    assert_eq!((t.slots_differing, t.slots_differing_after_removal), (0, 0));
    assert_eq!(t.flows_differing_percent.max, 0.0);
}

#[test]
fn the_lru_comparison_times_the_real_program_on_each_variant_map_with_its_path_confirmed() {
    require_root();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = LruOptions {
        repeat: 1000,
        runs: 5,
        single_packets: 100,
        table_size: 4096,
        cpu: cpus - 1,
        pair: (cpus >= 2).then_some([cpus - 2, cpus - 1]),
    };
    let cpu = opts.cpu;
    let results = std::thread::spawn(move || {
        packet::pin_to_cpu(cpu)?;
        lru::run(&opts)
    })
    .join()
    .unwrap()
    .expect("the LRU comparison");
    // "As shipped" is what the data plane itself creates, read back from the kernel.
    assert_eq!(results.shipped_flags, FLOW_TABLE_FLAGS);
    let ids: Vec<(&str, u32)> = results
        .variants
        .iter()
        .map(|v| (v.id.as_str(), v.map_flags))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("per_cpu_lists", BPF_F_NO_COMMON_LRU),
            ("shared_list", FLOW_TABLE_FLAGS)
        ]
    );
    for v in &results.variants {
        // The timed program really used the variant's map ...
        assert!(v.program_uses_map, "{}", v.id);
        // ... whose full table stayed full (but for a free batch a CPU): the timed inserts
        // into it evicted as many older flows (every CPU inserted 5 runs of 100, and 100
        // more from each of two CPUs with a pair).
        let slack = lru::FREE_BATCH * cpus as u64;
        let max = u64::from(v.max_entries);
        assert!(v.full_entries_after_prefill + slack >= max, "{v:?}");
        assert!(v.full_entries_after_runs + slack >= max, "{v:?}");
        let repeated: u64 = v.concurrent.iter().map(|c| c.repeated_runs).sum();
        let inserted = if cpus >= 2 { 5 * 300 } else { 5 * 100 };
        assert!(v.full_timed_inserts >= inserted, "{v:?}");
        assert!(v.full_timed_inserts <= inserted + repeated * 200, "{v:?}");
        assert!(v.full_evictions + slack >= v.full_timed_inserts, "{v:?}");
        // Every figure is a run whose counters showed the path, beside a no-op of the run.
        let confirmed: Vec<(&str, &str, &str)> = v
            .cases
            .iter()
            .map(|c| (c.id.as_str(), c.method.as_str(), c.confirmed.as_str()))
            .collect();
        assert_eq!(
            confirmed,
            vec![
                ("hit", "repeat", "tx 1000/1000, flow hit 1000/1000"),
                (
                    "new",
                    "single",
                    "tx 100/100, flow tcp_miss_no_syn 100/100, flow new 100/100"
                ),
                (
                    "new_evicting",
                    "single",
                    "tx 100/100, flow tcp_miss_no_syn 100/100, flow new 100/100"
                ),
            ],
            "{}",
            v.id
        );
        for c in &v.cases {
            assert_eq!(c.ns.samples.len(), 5, "{} {}", v.id, c.id);
            for i in 0..5 {
                assert!(c.ns.samples[i] > 0.0 && c.noop_ns.samples[i] > 0.0);
                assert_eq!(c.net_ns.samples[i], c.ns.samples[i] - c.noop_ns.samples[i]);
            }
        }
        if let Some(pair) = (cpus >= 2).then_some([cpus - 2, cpus - 1]) {
            let ids: Vec<&str> = v.concurrent.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, vec!["new_2cpu", "new_evicting_2cpu"]);
            for c in &v.concurrent {
                assert_eq!(
                    c.threads.iter().map(|t| t.cpu).collect::<Vec<_>>(),
                    pair.to_vec()
                );
                assert!(
                    c.confirmed
                        .contains("tx 100/100, flow tcp_miss_no_syn 100/100, flow new 100/100"),
                    "{}",
                    c.confirmed
                );
                for t in &c.threads {
                    assert_eq!(t.net_ns.samples.len(), 5);
                    assert!(t.ns.samples.iter().all(|&ns| ns > 0.0));
                }
                assert_eq!(c.overlap_percent.samples.len(), 5);
            }
        }
    }
}
