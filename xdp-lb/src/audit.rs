//! The data-plane audit: does the kernel still hold what the agent means it to?
//!
//! A map changed behind the agent's back (by hand, by another tool, or by an agent bug)
//! can black-hole a service while every piece of the agent's own state looks right. The
//! audit compares the balancer's intent (`balancer/audit.rs`) with what the kernel's maps
//! hold now (`dataplane/audit.rs`) and the XDP attachment of every configured interface
//! (`neighbour/xdp.rs`), both as plain data (`views.rs`); `compare.rs` holds the rules.
//! It runs every [`AUDIT_INTERVAL`] in the agent's loop and afresh for every `status` and
//! metrics scrape (so neither shows a stale verdict), reads no per-flow state (`flows`,
//! `persistence`), and only reports: repairing is a restart of the agent, which writes
//! every map again.

mod compare;
mod drift;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_local;
mod views;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use compare::{compare, key_label};
pub use drift::Drift;
pub use views::{
    Attached, Attachment, BackendIntent, Intent, KernelView, LocalMacsIntent, PoolIntent,
    ServiceIntent, TableDigest, TableIntent, VipIntent,
};

use crate::{
    balancer::{Balancer, ExpectedTables},
    neighbour::Neighbours,
};

/// How often the agent's loop audits the data plane. One audit reads every `backends`
/// entry and `vip_filter` word (about 17,000 map lookups) and each live table once.
pub const AUDIT_INTERVAL: Duration = Duration::from_secs(5);

/// The audit's memory between runs: the tables the agent computed (rebuilt only when who
/// fills a table changes), the differences last found, and when it last ran.
#[derive(Default)]
pub struct Auditor {
    expected: ExpectedTables,
    drift: BTreeSet<Drift>,
    last_run: Option<SystemTime>,
}

impl Auditor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Audits the data plane now: every difference, sorted. New differences are logged at
    /// WARN once, and the drift clearing at INFO once; an unchanged verdict logs nothing.
    pub async fn run(
        &mut self,
        balancer: &Balancer,
        neighbours: &Neighbours,
        interfaces: &[String],
    ) -> Vec<Drift> {
        let mut attached = BTreeMap::new();
        for ifname in interfaces {
            let xdp = match neighbours.xdp_program(ifname).await {
                Ok(Some(id)) => Attached::Program(id),
                Ok(None) => Attached::Nothing,
                Err(err) => Attached::Unknown(err.to_string()),
            };
            attached.insert(ifname.clone(), xdp);
        }
        let started = std::time::Instant::now();
        let intent = balancer.audit_intent(&mut self.expected, interfaces);
        let kernel = balancer.dataplane().audit_view(&intent, attached);
        let drift = compare(&intent, &kernel);
        log::debug!(
            "data plane audit: {} difference(s), {:?}",
            drift.len(),
            started.elapsed()
        );
        for (level, line) in self.note(&drift) {
            log::log!(level, "{line}");
        }
        self.last_run = Some(SystemTime::now());
        drift
    }

    /// Records the latest differences; the log lines they call for (none when nothing
    /// changed since the last run).
    fn note(&mut self, drift: &[Drift]) -> Vec<(log::Level, String)> {
        let now: BTreeSet<Drift> = drift.iter().cloned().collect();
        let mut lines: Vec<(log::Level, String)> = now
            .difference(&self.drift)
            .map(|d| {
                (
                    log::Level::Warn,
                    format!(
                        "data plane drift: {d} (the agent does not repair it; restart the agent)"
                    ),
                )
            })
            .collect();
        let gone = self.drift.difference(&now).count();
        if gone > 0 {
            let line = if now.is_empty() {
                "data plane drift cleared: the kernel's maps match the agent's intent again"
                    .to_owned()
            } else {
                format!(
                    "data plane drift: {gone} difference(s) gone, {} remain",
                    now.len()
                )
            };
            lines.push((log::Level::Info, line));
        }
        self.drift = now;
        lines
    }

    /// When it last ran, in milliseconds since the Unix epoch.
    pub fn last_run_ms(&self) -> Option<u64> {
        self.last_run
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}
