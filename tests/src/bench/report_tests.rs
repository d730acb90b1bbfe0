//! The report shows exactly the figures of the samples it is given.

use std::{collections::BTreeMap, path::PathBuf};

use super::{
    Bench, Machine, Section,
    distribution::{DistributionResults, Movement, Spread, TwoLbs, Weighted},
    lru::{Concurrent, LruResults, ThreadFigures, Variant},
    maglev::{BuildTime, MaglevResults, SingleUpdates, SwitchTime},
    packet::{Case, Eviction, PacketResults, TimeoutZero},
    profile::{Profile, ProgramFacts},
    report::render,
    stats::{Summary, paired_difference, paired_ratio},
    throughput::{FlowCheck, ManyFlows, Mode, ThroughputResults},
};

fn s(samples: &[f64]) -> Summary {
    Summary::of(samples)
}

fn case(id: &str, ns: &[f64], noop: &[f64]) -> Case {
    Case {
        id: id.to_owned(),
        title: format!("the {id} case"),
        method: "repeat".to_owned(),
        packets_per_run: 1000,
        confirmed: "tx 1000/1000".to_owned(),
        ns: s(ns),
        noop_ns: s(noop),
        net_ns: s(&paired_difference(ns, noop)),
        ratio: s(&paired_ratio(ns, noop)),
        floor_ns: None,
        per_floor: None,
    }
}

/// A bench whose every figure comes from the given samples.
fn fixture(hit_ns: &[f64], noop_ns: &[f64]) -> Bench {
    let five = |base: f64| [base, base + 4.0, base - 1.0, base + 1.0, base + 2.0];
    Bench {
        machine: Machine {
            cpu: "Test CPU".to_owned(),
            cpus: 2,
            memory_gib: 4.0,
            kernel: "6.18.0-test".to_owned(),
            virtualization: "none".to_owned(),
            commit: "abc1234".to_owned(),
            date: "2026-01-01 00:00 UTC".to_owned(),
        },
        quick: false,
        seconds: 100.0,
        packet: PacketResults {
            cpu: 1,
            repeat: 1000,
            runs: hit_ns.len(),
            single_packets: 100,
            cases: vec![
                case("not_service", &five(40.0)[..hit_ns.len()], noop_ns),
                case("hit", hit_ns, noop_ns),
                case("no_backend", &five(130.0)[..hit_ns.len()], noop_ns),
                case("new", &five(400.0)[..hit_ns.len()], noop_ns),
            ],
            eviction: Eviction {
                table_size: 1024,
                prefilled_flows: 1280,
                entries_after_prefill: 512,
                entries_after_timed_runs: 512,
                timed_new_flows: 500,
                first_prefilled_flow_still_present: false,
            },
            timeout_zero: TimeoutZero {
                iterations: 1000,
                hits: 999,
                expired: 1,
                new: 1,
            },
            program: Some(ProgramFacts {
                id: 7,
                xlated_insns: 1900,
                jited_bytes: 8800,
                verified_insns: Some(12000),
                calls: BTreeMap::from([("bpf_ktime_get_ns".to_owned(), 1)]),
                jited_insns: Some(2500),
                jited_calls: Some(9),
            }),
            bpftool_profile: "Error: not supported".to_owned(),
            profiles: vec![Profile {
                case: "hit".to_owned(),
                samples: 3000,
                top: vec![
                    ("bpf_prog_0123_xdp_lb".to_owned(), 40.0),
                    ("htab_map_hash".to_owned(), 20.0),
                    ("bpf_test_run".to_owned(), 10.0),
                ],
                cpu_ns: 300_000_000,
                packets: None,
            }],
        },
        lru: Section::NotMeasured {
            reason: "not in this fixture".to_owned(),
        },
        maglev: MaglevResults {
            builds: vec![BuildTime {
                slots: 65_537,
                backends: 100,
                ms: s(&[1.4, 1.5, 1.6, 1.55, 3.0]),
            }],
            switches: vec![SwitchTime {
                slots: 65_537,
                backends: 100,
                change: "down".to_owned(),
                ms: s(&five(1.7)),
            }],
            single_updates: SingleUpdates {
                slots: 65_537,
                ms: s(&five(58.0)),
            },
        },
        distribution: DistributionResults {
            flows: 1000,
            runs: 5,
            maglev_size: 65_537,
            spreads: vec![Spread {
                backends: 2,
                shares_percent: vec![s(&five(49.0)), s(&five(50.0))],
                max_over_mean: s(&[1.01, 1.02, 1.03, 1.04, 1.05]),
            }],
            weighted: vec![Weighted {
                weights: vec![2, 1],
                shares_percent: vec![s(&five(66.0)), s(&five(33.0))],
                ideal_percent: vec![66.7, 33.3],
                ratio_to_lightest: vec![s(&[2.0; 5]), s(&[1.0; 5])],
            }],
            movements: vec![Movement {
                backends: 2,
                removed_percent: s(&five(50.0)),
                remove_ideal_percent: 50.0,
                added_percent: s(&five(33.0)),
                add_ideal_percent: 33.3,
            }],
            two_lbs: vec![TwoLbs {
                backends: 3,
                slots_compared: 65_537,
                slots_differing: 0,
                slots_differing_after_removal: 0,
                flows_differing_percent: s(&[0.0; 5]),
            }],
        },
        agent: Section::NotMeasured {
            reason: "no lab on this test machine".to_owned(),
        },
        failover: Section::NotMeasured {
            reason: "health checks pending".to_owned(),
        },
        throughput: Section::NotMeasured {
            reason: "no lab on this test machine".to_owned(),
        },
        scraped_health: Section::NotMeasured {
            reason: "no lab on this test machine".to_owned(),
        },
        lb_failover: Section::NotMeasured {
            reason: "no lab on this test machine".to_owned(),
        },
    }
}

#[test]
fn the_report_shows_the_median_min_and_max_of_exactly_the_samples_given() {
    // ns 150, 140, 170, 135, 160 against no-ops 30, 28, 31, 29, 30: nets 120, 112, 139,
    // 106, 130, whose median is 120, min 106, max 139.
    let bench = fixture(
        &[150.0, 140.0, 170.0, 135.0, 160.0],
        &[30.0, 28.0, 31.0, 29.0, 30.0],
    );
    let text = render(&bench, &[]);
    assert!(text.contains("| `hit`: the hit case | repeat | 150.0 (135.0–170.0) | 30.0 (28.0–31.0) | 120.0 (106.0–139.0) |"), "{text}");
    assert!(text.contains("| connection-table hit: at most 50 ns net of the no-op | 120.0 (106.0–139.0) ns | **missed** |"));
    // Another set of samples gives other figures, and a met target.
    let bench = fixture(
        &[70.0, 72.0, 71.0, 90.0, 69.0],
        &[30.0, 30.0, 30.0, 30.0, 30.0],
    );
    let text = render(&bench, &[]);
    assert!(
        text.contains(
            "| connection-table hit: at most 50 ns net of the no-op | 41.0 (39.0–60.0) ns | met |"
        ),
        "{text}"
    );
}

#[test]
fn the_report_names_the_machine_and_every_section_and_says_what_was_not_measured() {
    let text = render(
        &fixture(&[150.0; 5], &[30.0; 5]),
        &[(
            "packet".to_owned(),
            PathBuf::from("tests/charts/packet-cost.svg"),
        )],
    );
    for needle in [
        "| CPU | Test CPU (2 CPUs online) |",
        "| kernel | 6.18.0-test |",
        "commit abc1234",
        "![Per-packet cost net of the no-op, with targets](tests/charts/packet-cost.svg)",
        "| Maglev build, 65537 slots, 100 backends: under 2 ms | 1.550 (1.400–3.000) ms | met |",
        "| 65537 | 100 | down | 2.700 (0.700–5.700) ms |",
        "takes 59.000 (57.000–62.000) ms",
        "| 2 | 50.00% | 50.00% | 51.00% | 1.0300 (1.0100–1.0500) |",
        "| 3 | 65537 | 0 | 0 | 0.000 (0.000–0.000)% |",
        "Not measured yet: health checks pending.",
        "| `htab_map_hash` | 20.0% | 30.0 |",
        "**Target missed: `hit`** is 120.0 ns net against 50 ns.",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
}

#[test]
fn the_json_holds_every_sample() {
    let bench = fixture(
        &[150.0, 140.0, 170.0, 135.0, 160.0],
        &[30.0, 28.0, 31.0, 29.0, 30.0],
    );
    let json: serde_json::Value = serde_json::to_value(&bench).unwrap();
    let hit = &json["packet"]["cases"][1];
    assert_eq!(hit["id"], "hit");
    assert_eq!(
        hit["ns"]["samples"],
        serde_json::json!([150.0, 140.0, 170.0, 135.0, 160.0])
    );
    assert_eq!(hit["net_ns"]["median"], 120.0);
    assert_eq!(json["failover"]["status"], "not_measured");
}

/// An LRU comparison whose figures are the given nets (no-op 100 ns in every run): per path,
/// five runs around each median.
fn lru_fixture(per_cpu: [f64; 5], shared: [f64; 5]) -> LruResults {
    let runs = |median: f64| {
        [
            median - 2.0,
            median,
            median + 1.0,
            median - 1.0,
            median + 2.0,
        ]
    };
    let noop = [100.0; 5];
    let case = |id: &str, net: f64| {
        let ns: Vec<f64> = runs(net).iter().map(|n| n + 100.0).collect();
        Case {
            id: id.to_owned(),
            title: id.to_owned(),
            method: if id == "hit" { "repeat" } else { "single" }.to_owned(),
            packets_per_run: 100,
            confirmed: "tx 100/100, flow new 100/100".to_owned(),
            net_ns: s(&paired_difference(&ns, &noop)),
            ratio: s(&paired_ratio(&ns, &noop)),
            floor_ns: None,
            per_floor: None,
            ns: s(&ns),
            noop_ns: s(&noop),
        }
    };
    let concurrent = |id: &str, net: f64| Concurrent {
        id: id.to_owned(),
        title: id.to_owned(),
        packets_per_thread: 100,
        confirmed: "CPU 0: tx 100/100, flow new 100/100; CPU 1: the same".to_owned(),
        threads: (0..2)
            .map(|cpu| ThreadFigures {
                cpu,
                ns: s(&runs(net + 100.0)),
                noop_ns: s(&noop),
                net_ns: s(&runs(net)),
                in_kernel_percent: s(&[40.0; 5]),
            })
            .collect(),
        overlap_percent: s(&[95.0; 5]),
        repeated_runs: 1,
    };
    let variant = |id: &str, flags: u32, nets: [f64; 5]| Variant {
        id: id.to_owned(),
        title: id.to_owned(),
        map_type: "lru_hash".to_owned(),
        map_flags: flags,
        max_entries: 4096,
        program_uses_map: true,
        cases: vec![
            case("hit", nets[0]),
            case("new", nets[1]),
            case("new_evicting", nets[2]),
        ],
        concurrent: vec![
            concurrent("new_2cpu", nets[3]),
            concurrent("new_evicting_2cpu", nets[4]),
        ],
        full_entries_after_prefill: 4096,
        full_entries_after_runs: 4000,
        full_timed_inserts: 1500,
        full_evictions: 1596,
    };
    LruResults {
        table_size: 4096,
        possible_cpus: 2,
        cpu: 1,
        runs: 5,
        repeat: 1000,
        single_packets: 100,
        shipped_flags: 0,
        variants: vec![
            variant("per_cpu_lists", 2, per_cpu),
            variant("shared_list", 0, shared),
        ],
        concurrent_not_measured: None,
        not_measured: vec![(
            "BPF_MAP_TYPE_LRU_PERCPU_HASH".to_owned(),
            "not usable.".to_owned(),
        )],
    }
}

fn with_lru(lru: LruResults) -> String {
    let mut bench = fixture(&[150.0; 5], &[30.0; 5]);
    bench.lru = Section::Measured(lru);
    render(&bench, &[])
}

#[test]
fn the_lru_section_shows_each_variant_s_figures_and_the_decision_they_support() {
    // The shared list (shipped) slower when two CPUs insert into a full table, faster
    // nowhere: the report asks for a new measurement before keeping it.
    let text = with_lru(lru_fixture(
        [100.0, 500.0, 900.0, 520.0, 920.0],
        [101.0, 502.0, 899.0, 521.0, 990.0],
    ));
    for needle in [
        "## Connection table: per-CPU LRU lists or one shared list",
        "creates it with flags 0x0 (read back from the kernel: the `shared_list` variant below)",
        "| `per_cpu_lists` | `hit` (repeat) | 200.0 (198.0–202.0) | 100.0 (100.0–100.0) | 100.0 (98.0–102.0) |",
        "| `shared_list` | `new_evicting_2cpu` | 1 | 1090.0 (1088.0–1092.0) | 100.0 (100.0–100.0) | 990.0 (988.0–992.0) | 40 (40–40)% | 95 (95–95)% |",
        "| new flow, full, two CPUs at once (mean of the two threads) | 920.0 (918.0–922.0) | 990.0 (988.0–992.0) | +70.0 ns | shared slower |",
        "| hit (repeat) | 100.0 (98.0–102.0) | 101.0 (99.0–103.0) | +1.0 ns | within the runs' spread |",
        "**Decision: measure again before keeping one shared LRU list (flags 0, as shipped).** The shared list is slower on `new_evicting_2cpu` by 70.0 ns (ranges apart), and faster on no path. That goes against the reason it is shipped: the side-by-side harness",
        "`BPF_MAP_TYPE_LRU_PERCPU_HASH` is not usable.",
        "`per_cpu_lists` held 4096 of its 4096 entries after the fill and 4000 after the timed runs, which inserted 1500 flows into it while 1596 older entries were evicted",
        "(2048 of 4096 entries here, with 2 possible CPUs)",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    assert!(!text.contains("keep per-CPU"), "{text}");
    // The shared list faster on a path, beyond the runs' spread: the measurement supports
    // the shipped flavour, and the report says by how much.
    let text = with_lru(lru_fixture(
        [100.0, 500.0, 900.0, 520.0, 920.0],
        [100.0, 430.0, 900.0, 520.0, 920.0],
    ));
    for needle in [
        "| new flow, table with room (single) | 500.0 (498.0–502.0) | 430.0 (428.0–432.0) | -70.0 ns | shared faster |",
        "**Decision: keep one LRU list shared by all CPUs (flags 0, as shipped).** The shared list is faster on `new` by 70.0 ns (ranges apart), and slower on no path. This run agrees with the reason it is shipped:",
        "70 ns per new flow is 0.7% of one CPU at 100000 new flows per second.",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    // Every path within the runs' spread: the shared list stays, for the side-by-side
    // harness's figures and its lock taken once per batch.
    let text = with_lru(lru_fixture(
        [100.0, 500.0, 900.0, 520.0, 920.0],
        [101.0, 501.0, 899.0, 519.0, 921.0],
    ));
    for needle in [
        "**Decision: keep one LRU list shared by all CPUs (flags 0, as shipped).** On every path the two variants' runs overlap",
        "The shared list is shipped because the side-by-side harness (docs/perf/README.md, \"the connection table's LRU flavour\") measured about 250 ns less per insert with the shared list",
        "its lock is taken once per 128 inserts per CPU.",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    // Both ways: the side-by-side measurement decides.
    let text = with_lru(lru_fixture(
        [100.0, 500.0, 900.0, 520.0, 920.0],
        [100.0, 430.0, 990.0, 520.0, 920.0],
    ));
    for needle in [
        "**Decision: keep one LRU list shared by all CPUs (flags 0, as shipped).** The shared list is slower on `new_evicting` by 90.0 ns and faster on `new` by 70.0 ns (ranges apart).",
        "The runs point both ways, so the side-by-side measurement decides:",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
}

/// A stream's figures for one program: every rate `pps`, the program's time `ns`.
fn mode(program: &str, pps: f64, ns: &[f64]) -> Mode {
    Mode {
        program: program.to_owned(),
        generated_pps: s(&[pps; 3]),
        lb_rx_pps: s(&[pps; 3]),
        backends_rx_pps: s(&[if program == "xdp_pass" { 0.0 } else { pps }; 3]),
        program_ns: s(ns),
    }
}

#[test]
fn the_throughput_section_shows_both_streams_net_of_xdp_pass() {
    let mut bench = fixture(&[150.0; 5], &[30.0; 5]);
    bench.throughput = Section::Measured(ThroughputResults {
        generator: "built-in: xdp_noop_tx".to_owned(),
        trafficgen_refused: None,
        frame_bytes: 60,
        window_s: 3.0,
        modes: vec![
            mode("xdp_lb", 200_000.0, &[118.0, 120.0, 125.0]),
            mode("xdp_floor", 210_000.0, &[90.0, 88.0, 95.0]),
            mode("xdp_pass", 270_000.0, &[30.0, 31.0, 29.0]),
        ],
        many_flows: ManyFlows {
            flows: 65_536,
            generator: "built-in: xdp_gen_flows".to_owned(),
            modes: vec![
                mode("xdp_lb", 150_000.0, &[330.0, 320.0, 340.0]),
                mode("xdp_floor", 160_000.0, &[210.0, 200.0, 215.0]),
            ],
            lb_flows: FlowCheck {
                warmup_s: 0.8,
                warmup_new: 65_536,
                warmup_hit: 73_728,
                entries_after_warmup: 65_536,
                measured_new: 0,
                measured_hit: 1_253_376,
            },
            floor_warmup_s: 0.8,
        },
    });
    let text = render(&bench, &[]);
    for needle in [
        // The one-flow figures, as before.
        "| `xdp_lb` | 200000 (200000–200000) pps | 200000 (200000–200000) pps | 200000 (200000–200000) pps | 120.0 (118.0–125.0) ns |",
        "`xdp_lb` costs 90.0 ns per frame and the floor 60.0 ns: `xdp_lb` is **1.50× the floor** in a stream",
        // The many-flows stream: its rows, net of the one-flow `xdp_pass`, and the ratio.
        "**Many flows.** The same measurement over a live stream of **65536 distinct UDP flows**",
        "Generator: built-in: xdp_gen_flows;",
        "Each frame's connection-table entry, hash bucket and Maglev data are then another cache line than the frame's before",
        "for `xdp_lb` it ran 0.8 s, in which `flow_stats` counted 65536 new flows and 73728 hits, and the connection table then held 65536 entries; over the measured runs (ramps and windows) it counted 1253376 hits and 0 new.",
        "The figures are so the steady state of 65536 live flows",
        "| program on the LB, 65536 flows | generated | LB receives | sent on to backends | in the program, per frame | net of `xdp_pass` | one flow, net |",
        "| `xdp_lb` | 150000 (150000–150000) pps | 150000 (150000–150000) pps | 150000 (150000–150000) pps | 330.0 (320.0–340.0) ns | 300.0 ns | 90.0 ns |",
        "| `xdp_floor` | 160000 (160000–160000) pps | 160000 (160000–160000) pps | 160000 (160000–160000) pps | 210.0 (200.0–215.0) ns | 180.0 ns | 60.0 ns |",
        "`xdp_lb` costs 300.0 ns per frame over 65536 flows and the floor 180.0 ns: `xdp_lb` is **1.67× the floor** over many flows, against 1.50× over one flow; many flows add +210.0 ns per frame to `xdp_lb` and +120.0 ns to the floor.",
    ] {
        assert!(text.contains(needle), "no {needle:?} in\n{text}");
    }
    let json: serde_json::Value = serde_json::to_value(&bench).unwrap();
    let many = &json["throughput"]["many_flows"];
    assert_eq!(many["flows"], 65_536);
    assert_eq!(many["modes"][0]["program_ns"]["median"], 330.0);
    assert_eq!(many["lb_flows"]["measured_new"], 0);
}
