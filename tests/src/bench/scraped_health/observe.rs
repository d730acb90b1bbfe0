//! What the agent and the machine show besides the verdicts: the agent's threads in /proc,
//! its status, its log, the load average.

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use xdp_lb::control::{
    client,
    protocol::{Request, Response},
};

use super::{SERVICE, Setup, VICTIM, scrapers::Endpoints};
use crate::Lab;

/// The fields of `/proc/PID/task/TID/stat` after the name (`state` first) of the agent's
/// thread named `name`, if it has one.
fn thread_stat(pid: u32, name: &str) -> Option<Vec<String>> {
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let path = task.path();
        if fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name) {
            let stat = fs::read_to_string(path.join("stat")).ok()?;
            let fields = stat.rsplit_once(')')?.1.split_whitespace();
            return Some(fields.map(str::to_owned).collect());
        }
    }
    None
}

/// CPU ticks (user + system: fields 14 and 15 of stat) of the agent's thread `name`.
pub fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    let fields = thread_stat(pid, name)?;
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The nice value (field 19 of stat) of the agent's thread `name`.
pub fn thread_nice(pid: u32, name: &str) -> Option<i64> {
    thread_stat(pid, name)?.get(16)?.parse().ok()
}

pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Waits (30 s at most) until `status` shows every backend up, as the runs need; returns
/// the connection table's entries as the kernel made them.
pub fn all_up(at: &Endpoints) -> Result<u32> {
    let started = Instant::now();
    loop {
        let report = match client::call(&at.socket, &Request::Status)? {
            Response::Status(report) => report,
            other => bail!("status answered {other:?}"),
        };
        let down: Vec<String> = report
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(move |b| (s, b)))
            .filter(|(_, b)| b.state != "up")
            .map(|(s, b)| format!("{} of {} is {}", b.address, s.name, b.state))
            .collect();
        if down.is_empty() {
            return Ok(report.flow_table.entries);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "not every backend is up 30 s after the agent started: {}",
            down.join(", ")
        );
        thread::sleep(Duration::from_millis(500));
    }
}

/// The `health:` lines this agent logged about any server but the victim of [`SERVICE`].
pub fn other_health_changes(setup: &Setup) -> Result<Vec<String>> {
    let log = fs::read(&setup.log).context("reading the agent's log")?;
    let log = String::from_utf8_lossy(log.get(setup.log_start..).unwrap_or_default());
    let victim = format!("service={SERVICE} backend={} ", Lab::backend_addr(VICTIM));
    Ok(log
        .lines()
        .filter(|l| l.contains("health: service=") && !l.contains(&victim))
        .map(str::to_owned)
        .collect())
}
