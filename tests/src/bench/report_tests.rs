//! The report shows exactly the figures of the samples it is given.

use std::{collections::BTreeMap, path::PathBuf};

use super::{
    Bench, Machine, Section,
    distribution::{DistributionResults, Movement, Spread, TwoLbs, Weighted},
    maglev::{BuildTime, MaglevResults, SingleUpdates, SwitchTime},
    packet::{Case, Eviction, PacketResults},
    profile::{Profile, ProgramFacts},
    report::render,
    stats::{Summary, paired_difference, paired_ratio},
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
                possible_cpus: 2,
                prefilled_flows: 1280,
                entries_after_prefill: 512,
                entries_after_timed_runs: 512,
                timed_new_flows: 500,
                first_prefilled_flow_still_present: false,
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
            }],
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
