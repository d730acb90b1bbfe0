//! The section's figures are the runs' own, compared run by run, and the target is judged on
//! them.

use super::{
    results::{Cycle, ScrapedHealthResults, summarise},
    scrapers::{Scraped, Scrapes},
    table_size,
};
use crate::bench::{Section, stats::Summary};

fn cycle(down: f64, up_after_check: f64) -> Cycle {
    Cycle {
        down,
        down_after_check: down - 2000.0,
        up: 2500.0 + up_after_check,
        up_after_check,
        agent_cpu: 1.0,
        census_cpu: 0.0,
    }
}

fn results(unscraped: &[f64], every_second: &[f64], back_to_back: &[f64]) -> ScrapedHealthResults {
    let cycles: Vec<Vec<Cycle>> = [unscraped, every_second, back_to_back]
        .iter()
        .map(|downs| downs.iter().map(|&d| cycle(d, 5.0)).collect())
        .collect();
    let scraped = vec![
        Scraped::default(),
        Scraped {
            status: Scrapes {
                ms: vec![3000.0, 3500.0],
                failed: Vec::new(),
            },
            metrics: Scrapes {
                ms: vec![3100.0],
                failed: vec!["/metrics answered \"HTTP/1.1 503\"".to_owned()],
            },
        },
        Scraped::default(),
    ];
    ScrapedHealthResults {
        runs: unscraped.len(),
        flows: 1_000_000,
        flow_table_size: 1_250_000,
        flow_table_entries: 1_250_000,
        fill_s: 1.5,
        check_settings: "kind: tcp".to_owned(),
        one_status_ms: Summary::of(&[3000.0]),
        one_metrics_ms: Summary::of(&[3100.0]),
        modes: summarise(&cycles, &scraped),
        other_health_changes: Vec::new(),
        census_nice: Some(10),
        load_before: 1.0,
        load_after: 1.0,
    }
}

#[test]
fn scraped_verdicts_are_compared_with_the_unscraped_cycle_of_the_same_run() {
    // Run by run: 2010/2000, 2100/2005 (a slow scraped run), 2004/2004.
    let r = results(
        &[2000.0, 2005.0, 2004.0],
        &[2010.0, 2100.0, 2004.0],
        &[2000.0, 2005.0, 2004.0],
    );
    let every = &r.modes[1];
    let ratio = every.down_ratio.as_ref().expect("a ratio");
    assert_eq!(ratio.samples, vec![1.005, 2100.0 / 2005.0, 1.0]);
    assert_eq!(ratio.median, 1.005);
    let over = every
        .down_after_check_over_unscraped_ms
        .as_ref()
        .expect("a difference");
    assert_eq!((over.median, over.min, over.max), (10.0, 0.0, 95.0));
    assert_eq!(every.down_after_check_ms.samples, vec![10.0, 100.0, 4.0]);
    assert!(
        r.modes[0].down_ratio.is_none(),
        "unscraped has no ratio to itself"
    );
    let status = every.status_ms.as_ref().expect("status answered");
    assert_eq!((status.runs(), status.median), (2, 3250.0));
    assert_eq!(every.metrics_failed.len(), 1);
}

#[test]
fn the_target_is_met_within_one_percent_of_unscraped_and_missed_beyond() {
    let row = |r: ScrapedHealthResults| {
        let mut out = String::new();
        super::target_row(&mut out, &Section::Measured(r));
        out
    };
    let met = row(results(
        &[2000.0, 2000.0, 2000.0],
        &[2010.0, 2019.0, 2001.0],
        &[2000.0; 3],
    ));
    assert!(met.contains("| 1.0050 (1.0005–1.0095)×"), "{met}");
    assert!(met.trim_end().ends_with("| met |"), "{met}");
    let missed = row(results(
        &[2000.0, 2000.0, 2000.0],
        &[2030.0, 2021.0, 2001.0],
        &[2000.0; 3],
    ));
    assert!(missed.contains("| 1.0105 (1.0005–1.0150)×"), "{missed}");
    assert!(missed.trim_end().ends_with("| **missed** |"), "{missed}");
}

#[test]
fn the_report_says_what_failed_and_that_no_other_server_changed_state() {
    let mut r = results(&[2000.0], &[2001.0], &[2002.0]);
    let mut out = String::new();
    super::render(&mut out, &Section::Measured(r.clone()));
    assert!(
        out.contains("1 scrape(s) failed; the first: `/metrics answered"),
        "{out}"
    );
    assert!(out.contains("No other server changed state"), "{out}");
    assert!(
        out.contains(
            "with `flow_table.size: 1250000` (1250000 entries as `status` reports them, one LRU \
             list shared by all CPUs)"
        ),
        "{out}"
    );
    r.other_health_changes = vec!["health: service=video-rtmp backend=10.77.0.12".to_owned()];
    out.clear();
    super::render(&mut out, &Section::Measured(r));
    assert!(
        out.contains("**Other servers changed state during the runs** (1"),
        "{out}"
    );
}

#[test]
fn the_connection_table_holds_the_flows_with_a_quarter_to_spare_whatever_the_cpus() {
    // One LRU list shared by all CPUs: the size does not depend on them.
    assert_eq!(table_size(1_000_000).expect("a size"), 1_250_000);
    assert_eq!(table_size(3).expect("a size"), 4);
    assert!(table_size(u64::from(u32::MAX)).is_err());
}
