//! The benchmarks' own code, run small on the real data plane (root): every figure comes
//! from runs whose counters proved the path, and a run that takes another path is refused.

use std::net::Ipv4Addr;

use xdp_lb::config::FlowTable;
use xdp_lb_common::{flow_stat, verdict};
use xdp_lb_tests::bench::{
    distribution::{DistributionOptions, two_lbs},
    frames,
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
    // As the benchmark does: one CPU, so the per-CPU LRU lists fill as it expects.
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
        "not_service",
        "hit",
        "new",
        "ipv6_hit",
        "ipv6_new",
        "garbage",
        "no_backend",
        "hit_single",
        "new_distinct",
        "new_evicting",
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
    let hit = results.case("hit").unwrap();
    assert_eq!(hit.confirmed, "tx 1000/1000, flow hit 1000/1000");
    let new = results.case("new").unwrap();
    assert_eq!(
        new.confirmed,
        "tx 1000/1000, flow expired 1000/1000, flow new 1000/1000"
    );
    let other = results.case("not_service").unwrap();
    assert_eq!(
        other.confirmed,
        "pass_not_service 1000/1000, no connection-table event"
    );
    assert_eq!(
        results.case("new_evicting").unwrap().confirmed,
        "tx 100/100, flow new 100/100"
    );
    let e = &results.eviction;
    assert!(e.entries_after_prefill < e.prefilled_flows, "{e:?}");
    assert!(
        e.entries_after_timed_runs <= e.entries_after_prefill,
        "{e:?}"
    );
    assert!(!e.first_prefilled_flow_still_present, "{e:?}");
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
