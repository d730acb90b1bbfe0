//! The section of BENCHMARKS.md, and its line in the targets table.

use std::fmt::Write as _;

use super::{
    CHECK_PORT, INTERVAL, SCRAPED_VERDICT_TARGET_RATIO, SINGLE_SCRAPES, ScrapedHealthResults,
    scrapers::Scraping,
};
use crate::bench::{Section, report::verdict, stats::Summary};

fn ms(s: &Summary) -> String {
    format!("{} ms", s.show(1))
}

fn or_dash(s: Option<&Summary>, show: impl Fn(&Summary) -> String) -> String {
    s.map_or_else(|| "–".to_owned(), show)
}

const WHAT: &str = "health verdict (down: check target closed → table switch) with a 1M-entry \
                    connection table scraped every second";

/// The targets table's row.
pub fn target_row(out: &mut String, section: &Section<ScrapedHealthResults>) {
    let target = format!(
        "{WHAT}: within {:.0}% of unscraped (run-by-run ratio)",
        (SCRAPED_VERDICT_TARGET_RATIO - 1.0) * 100.0
    );
    let Some(r) = section.measured() else {
        let _ = writeln!(out, "| {target} | not measured | |");
        return;
    };
    let Some(m) = r.mode(Scraping::EverySecond) else {
        return;
    };
    if let (Some(ratio), Some(diff)) = (&m.down_ratio, &m.down_after_check_over_unscraped_ms) {
        let _ = writeln!(
            out,
            "| {target} | {}× ({} ms after the deciding check, {:+.1} ms over unscraped) | {} |",
            ratio.show(4),
            m.down_after_check_ms.show(1),
            diff.median,
            verdict(ratio.median, SCRAPED_VERDICT_TARGET_RATIO)
        );
    }
}

pub fn render(out: &mut String, section: &Section<ScrapedHealthResults>) {
    let _ = writeln!(
        out,
        "## Health verdicts while the connection table is scraped\n"
    );
    let r = match section {
        Section::Measured(r) => r,
        Section::NotMeasured { reason } => {
            let _ = writeln!(out, "Not measured: {reason}\n");
            return;
        }
    };
    let _ = writeln!(
        out,
        "The release agent in the lab (two services of 20 backends each, every backend checked \
         with `{check}`), with `flow_table.size: {size}` ({entries} entries as `status` reports \
         them, one LRU list shared by all CPUs) holding {flows} live connections of `video-hls`, \
         written into its pinned `flows` map by the benchmark in {fill:.1} s (a thread on each \
         online CPU). Every `status` and `/metrics` answer below counted all {flows} (the benchmark \
         checks each one), so each walked the whole table in the agent's census thread. \
         Backend b1's check of `video-hls` goes to port {CHECK_PORT}, a listener of the \
         benchmark's in b1's namespace.\n\n\
         * **down**: the listener is closed right after a check connected, so the next `fall` \
         checks are refused. The verdict is seen where it takes effect, in the kernel, through \
         the pinned maps, read every 0.2 ms by a thread of raised priority: b1's `backends` \
         entry marked to take no new flow, which the agent writes right after the table switch \
         that leaves b1 out.\n\
         * **up**: the listener is opened again half-way between two checks; the verdict is the \
         switch that puts b1 back after `rise` checks passed (a new generation of the \
         service's `service_by_vip` value, b1's entry taking new flows again).\n\
         * **after the deciding check**: from the moment the `fall`-th refused check was due \
         (the last passed check + `fall` × {interval} s: the checker's ticks are regular), or the \
         `rise`-th check connected, to the switch: what the agent itself takes (check, verdict, \
         control loop, table switch), whatever the checks' phase.\n\
         * {runs} runs; in each, one cycle (down, then up) per way of scraping, in another order \
         every run, so each is compared with the unscraped cycle **of the same run** (× \
         unscraped: the ratio run by run; over unscraped: the difference run by run). \
         Scrapers start {warm} s before their cycle (a random phase for every second) and are \
         stopped, their last answer in, before the next one. `status` goes over the control \
         socket, `/metrics` over HTTP inside the LB's namespace, each on a thread of its own. \
         The agent's census thread ran at nice {nice}; the machine's load average was \
         {load_before:.2} before the runs and {load_after:.2} after (other work shares its \
         CPUs, and shows in the spread).\n",
        check = r.check_settings,
        size = r.flow_table_size,
        entries = r.flow_table_entries,
        flows = r.flows,
        fill = r.fill_s,
        interval = INTERVAL.as_secs(),
        runs = r.runs,
        warm = super::WARM_UP.as_secs(),
        nice = r
            .census_nice
            .map_or_else(|| "(not found)".to_owned(), |n| n.to_string()),
        load_before = r.load_before,
        load_after = r.load_after,
    );
    let _ = writeln!(
        out,
        "One scrape of the {} entries on the otherwise idle agent ({SINGLE_SCRAPES} of each, one \
         at a time): `status` {}, `/metrics` {}.\n",
        r.flows,
        ms(&r.one_status_ms),
        ms(&r.one_metrics_ms)
    );
    let _ = writeln!(
        out,
        "| scraping | down | after the deciding check | × unscraped | over unscraped | up | after the deciding check | over unscraped |\n|---|---|---|---|---|---|---|---|"
    );
    for m in &r.modes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            m.scraping.describe(),
            ms(&m.down_ms),
            ms(&m.down_after_check_ms),
            or_dash(m.down_ratio.as_ref(), |s| format!("{}×", s.show(4))),
            or_dash(m.down_after_check_over_unscraped_ms.as_ref(), ms),
            ms(&m.up_ms),
            ms(&m.up_after_check_ms),
            or_dash(m.up_after_check_over_unscraped_ms.as_ref(), ms),
        );
    }
    let worst: Vec<String> = r
        .modes
        .iter()
        .map(|m| {
            format!(
                "{} {:.1} ms down and {:.1} ms up",
                m.scraping.describe(),
                m.down_after_check_ms.max,
                m.up_after_check_ms.max
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nThe slowest verdicts after their deciding check: {}.",
        worst.join("; ")
    );
    let _ = writeln!(
        out,
        "\nWhat the scrapers got, and what the agent spent, over the cycles (CPU: % of one core \
         over the cycle; the census thread walks the connection table for the scrapes):\n\n\
         | scraping | `status` answers | each | failed | `/metrics` answers | each | failed | agent CPU | census thread CPU |\n|---|---|---|---|---|---|---|---|---|"
    );
    for m in &r.modes {
        let count = |s: Option<&Summary>| s.map_or(0, Summary::runs);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} % | {} % |",
            m.scraping.describe(),
            count(m.status_ms.as_ref()),
            or_dash(m.status_ms.as_ref(), ms),
            m.status_failed.len(),
            count(m.metrics_ms.as_ref()),
            or_dash(m.metrics_ms.as_ref(), ms),
            m.metrics_failed.len(),
            m.agent_cpu_percent.show(1),
            m.census_cpu_percent.show(1),
        );
    }
    let failures: Vec<&String> = r
        .modes
        .iter()
        .flat_map(|m| m.status_failed.iter().chain(&m.metrics_failed))
        .collect();
    if let Some(first) = failures.first() {
        let _ = writeln!(
            out,
            "\n{} scrape(s) failed; the first: `{first}` (every one is in `{}`).",
            failures.len(),
            crate::bench::report::JSON
        );
    }
    if r.one_status_ms.median > 1000.0 {
        let _ = writeln!(
            out,
            "\nOne scrape of this table takes longer than the second between two scrapes, so \
             scraping every second keeps the census thread counting all the time, as scraping \
             back to back does (a scraper skips the seconds its scrape overran, as Prometheus \
             does; a scrape arriving while a count is under way waits for the next whole count, \
             so it takes up to two counts)."
        );
    }
    match r.other_health_changes.as_slice() {
        [] => {
            let _ = writeln!(
                out,
                "\nNo other server changed state during the runs (the agent logged no other \
                 health change)."
            );
        }
        changes => {
            let _ = writeln!(
                out,
                "\n**Other servers changed state during the runs** ({} health change(s) in the \
                 agent's log), e.g. `{}`.",
                changes.len(),
                changes[0]
            );
        }
    }
    let _ = writeln!(out);
}
