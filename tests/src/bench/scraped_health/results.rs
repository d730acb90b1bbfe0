//! What the runs give: each cycle's times, and each way of scraping's figures compared run
//! by run with the unscraped cycles.

use serde::Serialize;

use super::scrapers::{Scraped, Scraping};
use crate::bench::stats::Summary;

/// One run's times for one way of scraping (ms).
#[derive(Clone, Copy, Debug)]
pub struct Cycle {
    /// Listener closed (right after a check passed) → the table switch seen in the kernel.
    pub down: f64,
    /// When the `fall`-th refused check was due (the last good one + `fall` intervals) →
    /// the switch: what the agent itself took, whatever the checks' phase.
    pub down_after_check: f64,
    /// Listener open again (half-way between two checks) → the switch back.
    pub up: f64,
    /// The `rise`-th check accepted → the switch back.
    pub up_after_check: f64,
    /// The agent's CPU over the cycle, % of one core, and its census thread's.
    pub agent_cpu: f64,
    pub census_cpu: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModeResults {
    pub scraping: Scraping,
    pub down_ms: Summary,
    pub down_after_check_ms: Summary,
    pub up_ms: Summary,
    pub up_after_check_ms: Summary,
    /// Run by run, against the unscraped cycle of the same run (`None` for that one).
    pub down_ratio: Option<Summary>,
    pub down_after_check_over_unscraped_ms: Option<Summary>,
    pub up_after_check_over_unscraped_ms: Option<Summary>,
    /// Every scrape answered during the cycles and their warm-up (ms each), and why the
    /// others failed.
    pub status_ms: Option<Summary>,
    pub metrics_ms: Option<Summary>,
    pub status_failed: Vec<String>,
    pub metrics_failed: Vec<String>,
    pub agent_cpu_percent: Summary,
    pub census_cpu_percent: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScrapedHealthResults {
    pub runs: usize,
    pub flows: u64,
    /// `flow_table.size` as configured, and the entries the kernel made (as `status`
    /// reports them: the same, with one LRU list shared by all CPUs).
    pub flow_table_size: u32,
    pub flow_table_entries: u32,
    /// Writing the entries into the pinned map.
    pub fill_s: f64,
    pub check_settings: String,
    /// One scrape at a time on the otherwise idle agent.
    pub one_status_ms: Summary,
    pub one_metrics_ms: Summary,
    pub modes: Vec<ModeResults>,
    /// Health changes the agent logged for any other server (or service) while the runs
    /// went on: none is expected.
    pub other_health_changes: Vec<String>,
    /// The census thread's nice value, read from /proc (`None`: no such thread found).
    pub census_nice: Option<i64>,
    /// `/proc/loadavg`'s 1-minute figure before and after the runs: what else the machine
    /// was doing.
    pub load_before: f64,
    pub load_after: f64,
}

impl ScrapedHealthResults {
    pub fn mode(&self, scraping: Scraping) -> Option<&ModeResults> {
        self.modes.iter().find(|m| m.scraping == scraping)
    }
}

/// Each way of scraping's figures from its cycles (`cycles[i]` and `scraped[i]` are those of
/// `Scraping::ALL[i]`, run `k` of each taken in the same run), compared run by run with the
/// unscraped cycles.
pub fn summarise(cycles: &[Vec<Cycle>], scraped: &[Scraped]) -> Vec<ModeResults> {
    let unscraped = &cycles[0];
    let summary = |v: Vec<f64>| Summary::of(&v);
    Scraping::ALL
        .iter()
        .zip(cycles)
        .zip(scraped)
        .map(|((&scraping, c), s)| {
            let paired = |f: fn(&Cycle) -> f64, ratio: bool| {
                (scraping != Scraping::None).then(|| {
                    summary(
                        c.iter()
                            .zip(unscraped)
                            .map(|(x, u)| if ratio { f(x) / f(u) } else { f(x) - f(u) })
                            .collect(),
                    )
                })
            };
            let answered = |ms: &[f64]| (!ms.is_empty()).then(|| Summary::of(ms));
            ModeResults {
                scraping,
                down_ms: summary(c.iter().map(|x| x.down).collect()),
                down_after_check_ms: summary(c.iter().map(|x| x.down_after_check).collect()),
                up_ms: summary(c.iter().map(|x| x.up).collect()),
                up_after_check_ms: summary(c.iter().map(|x| x.up_after_check).collect()),
                down_ratio: paired(|x| x.down, true),
                down_after_check_over_unscraped_ms: paired(|x| x.down_after_check, false),
                up_after_check_over_unscraped_ms: paired(|x| x.up_after_check, false),
                status_ms: answered(&s.status.ms),
                metrics_ms: answered(&s.metrics.ms),
                status_failed: s.status.failed.clone(),
                metrics_failed: s.metrics.failed.clone(),
                agent_cpu_percent: summary(c.iter().map(|x| x.agent_cpu).collect()),
                census_cpu_percent: summary(c.iter().map(|x| x.census_cpu).collect()),
            }
        })
        .collect()
}
