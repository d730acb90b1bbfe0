//! Health verdicts while a big connection table is scraped (issue 15). The release agent
//! runs in the lab with a connection table of a million live entries (written into its
//! pinned `flows` map from here), and one backend's `tcp` check goes to a listener this
//! benchmark opens and closes. Each run closes it right after a check passed and times the
//! agent's verdict where it takes effect, the service's table switch in the kernel, then
//! opens it again and times the way back; once without scraping, once with `status` and
//! `/metrics` every second and once with both back to back, so the three are compared run
//! by run.

mod kernel;
mod observe;
mod render;
mod results;
mod scrapers;
mod target;
#[cfg(test)]
mod tests;

use std::{
    fmt::Write as _,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
pub use render::{render, target_row};
pub use results::{ModeResults, ScrapedHealthResults};
use xdp_lb::pins::PinDir;

use self::{
    kernel::{BackendId, ServiceMaps, online_cpus},
    observe::{all_up, load_average, other_health_changes, thread_nice, thread_ticks},
    results::{Cycle, summarise},
    scrapers::{Endpoints, Scrapers, Scraping},
    target::CheckTarget,
};
use super::{agent::proc_usage, stats::Summary};
use crate::Lab;

/// Entries written into the connection table.
pub const FLOWS: u64 = 1_000_000;
/// The service whose backend fails, and the backend (0-based).
const SERVICE: &str = "video-hls";
const VICTIM: usize = 0;
/// The victim's check port: the benchmark's listener (nginx keeps serving 8080).
const CHECK_PORT: u16 = 7000;
/// Where the agent serves its metrics, inside the LB's namespace.
const METRICS: &str = "127.0.0.1:9742";
/// The check every backend gets (the defaults, written out: the timing below needs them).
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: &str = "800ms";
const FALL: u32 = 2;
const RISE: u32 = 3;
/// How long any one wait may take before the run fails.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Scrapers run this long before a scraped cycle starts.
const WARM_UP: Duration = Duration::from_secs(2);
/// Single scrapes timed on the idle agent.
const SINGLE_SCRAPES: usize = 5;
/// The target: down verdicts scraped every second within 1% of unscraped ones (median of
/// the run-by-run ratios).
pub const SCRAPED_VERDICT_TARGET_RATIO: f64 = 1.01;

/// `flow_table.size` holding `flows` with a quarter to spare: the table has one LRU list
/// shared by all CPUs, so any CPU's inserts can use all of it (the spare also covers the
/// free entries each CPU keeps aside, up to 128).
fn table_size(flows: u64) -> Result<u32> {
    u32::try_from((flows * 5).div_ceil(4)).context("the connection table would be too big")
}

fn config(lab: &Lab, table_size: u32) -> String {
    let mut yaml = format!(
        "interfaces: [eth0]\nflow_table:\n  size: {table_size}\nmetrics:\n  listen: {METRICS}\nservices:\n"
    );
    for (name, port) in [("video-rtmp", Lab::RTMP_PORT), (SERVICE, Lab::HTTP_PORT)] {
        // Writing to a String cannot fail.
        let _ = write!(
            yaml,
            "  - name: {name}\n    vip: {}\n    port: {port}\n    protocol: tcp\n    \
             maglev_size: 65537\n    health_check: {{kind: tcp, interval: {}s, timeout: {TIMEOUT}, \
             fall: {FALL}, rise: {RISE}}}\n    backends:\n",
            Lab::VIP,
            INTERVAL.as_secs()
        );
        for i in 0..lab.backends() {
            let _ = writeln!(yaml, "      - address: {}", Lab::backend_addr(i));
            if name == SERVICE && i == VICTIM {
                let _ = writeln!(yaml, "        health_check: {{port: {CHECK_PORT}}}");
            }
        }
    }
    yaml
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `b - a` in ms, negative when `b` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if b >= a { ms(b - a) } else { -ms(a - b) }
}

/// Raises the calling thread's priority, so the times it takes are not its own scheduling.
fn raise_priority() {
    // SAFETY: setpriority has no memory-safety preconditions (Linux: this thread only).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
}

struct Rig<'a> {
    maps: &'a ServiceMaps,
    victim: BackendId,
    target: &'a mut CheckTarget,
    agent_pid: u32,
}

impl Rig<'_> {
    /// Fails the victim's check target right after a check passed, times the down verdict,
    /// opens it again half-way between two checks and times the up verdict.
    fn cycle(&mut self) -> Result<Cycle> {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let (agent0, _) = proc_usage(self.agent_pid)?;
        let census0 = thread_ticks(self.agent_pid, "flow-census").unwrap_or(0);
        let started = Instant::now();

        let closed = self.target.close_after_next_check(GIVE_UP)?;
        let down_live = self.maps.wait_down(self.victim.id, GIVE_UP)?;
        let due = closed.accepted_at + INTERVAL * FALL;

        let mut reopen = due + INTERVAL / 2;
        while reopen < Instant::now() {
            reopen += INTERVAL;
        }
        thread::sleep(reopen.saturating_duration_since(Instant::now()));
        let before = self.maps.generation()?;
        let opened_at = self.target.open()?;
        let up_live = self.maps.wait_up(self.victim.id, before, GIVE_UP)?;
        let passed: Vec<Instant> = self
            .target
            .accepts()
            .into_iter()
            .filter(|&t| t > opened_at)
            .collect();
        ensure!(
            passed.len() >= RISE as usize,
            "the victim was back after {} passed check(s), not {RISE}",
            passed.len()
        );

        let wall = started.elapsed().as_secs_f64();
        let (agent1, _) = proc_usage(self.agent_pid)?;
        let census1 = thread_ticks(self.agent_pid, "flow-census").unwrap_or(0);
        let percent = |ticks: u64| ticks as f64 / ticks_per_s / wall * 100.0;
        Ok(Cycle {
            down: ms(down_live - closed.closed_at),
            down_after_check: signed_ms(due, down_live),
            up: ms(up_live - opened_at),
            up_after_check: signed_ms(passed[RISE as usize - 1], up_live),
            agent_cpu: percent(agent1 - agent0),
            census_cpu: percent(census1.saturating_sub(census0)),
        })
    }
}

pub fn run(lab: &Lab, agent_bin: &Path, quick: bool) -> Result<ScrapedHealthResults> {
    let size = table_size(FLOWS)?;
    let config_path = lab.dir().join("scraped-health.yaml");
    fs::write(&config_path, config(lab, size))?;
    let log = lab.agent_log_path();
    let setup = Setup {
        log_start: fs::metadata(&log).map_or(0, |m| m.len() as usize),
        log,
        socket: lab.control_socket(),
        pins: PinDir::new(lab.pin_dir()?),
        lb_ns: lab.ns_lb().to_owned(),
        backends: lab.backends(),
        size,
        runs: if quick { 3 } else { 7 },
    };
    let mut target = CheckTarget::new(lab.ns_backend(VICTIM), CHECK_PORT);
    target.open()?;
    let mut agent = lab.start_agent(agent_bin, &config_path)?;
    let agent_pid = agent.pid();
    // On a thread of its own, whose priority (and the check target's) is raised for the
    // runs: the times taken are the agent's, not the benchmark's own scheduling.
    let result = thread::scope(|s| {
        s.spawn(|| measure(&setup, &mut target, agent_pid))
            .join()
            .map_err(|_| anyhow!("the scraped-health benchmark panicked"))?
    });
    agent.kill().context("stopping the agent")?;
    result
}

struct Setup {
    /// The agent's log, and where this agent's part of it starts.
    log: PathBuf,
    log_start: usize,
    socket: PathBuf,
    pins: PinDir,
    lb_ns: String,
    backends: usize,
    size: u32,
    runs: usize,
}

fn measure(
    setup: &Setup,
    target: &mut CheckTarget,
    agent_pid: u32,
) -> Result<ScrapedHealthResults> {
    let runs = setup.runs;
    let vip: IpAddr = Lab::VIP.parse()?;
    let maps = ServiceMaps::open(&setup.pins, vip, Lab::HTTP_PORT)?;
    let backends = (0..setup.backends)
        .map(|i| maps.backend(Lab::backend_addr(i).parse()?))
        .collect::<Result<Vec<_>>>()?;
    let victim = backends[VICTIM];
    let filling = Instant::now();
    maps.fill_flows(FLOWS, &backends, &online_cpus()?)?;
    let fill_s = filling.elapsed().as_secs_f64();

    let at = Endpoints {
        socket: setup.socket.clone(),
        lb_ns: setup.lb_ns.clone(),
        metrics: METRICS.parse()?,
        flows: FLOWS,
    };
    // The agent's own count must be the table we wrote (nothing evicted, nothing expired).
    let (mut one_status, mut one_metrics) = (Vec::new(), Vec::new());
    for _ in 0..SINGLE_SCRAPES {
        one_status.push(scrapers::status(&at).context("the first status of the full table")?);
        let inside = at.clone();
        one_metrics.push(crate::netns::run_inside(&at.lb_ns, move || {
            scrapers::metrics_inside(&inside)
        })?);
    }
    let entries = all_up(&at)?;
    ensure!(
        entries == setup.size,
        "status reports a connection table of {entries} entries, not the configured {}",
        setup.size
    );
    raise_priority();
    let load_before = load_average();

    let mut rig = Rig {
        maps: &maps,
        victim,
        target,
        agent_pid,
    };
    let mut cycles: Vec<Vec<Cycle>> = vec![Vec::new(); Scraping::ALL.len()];
    let mut scraped: Vec<scrapers::Scraped> = vec![Default::default(); Scraping::ALL.len()];
    for run in 0..runs {
        // Every run takes the three in another order.
        for k in 0..Scraping::ALL.len() {
            let i = (k + run) % Scraping::ALL.len();
            let scraping = Scraping::ALL[i];
            let scrapers = Scrapers::start(scraping, &at)?;
            if scraping != Scraping::None {
                thread::sleep(WARM_UP);
            }
            let cycle = rig
                .cycle()
                .with_context(|| format!("run {}, {}", run + 1, scraping.describe()));
            // Stopped (each waits for its answer) before the next cycle: the unscraped one
            // starts on an idle agent.
            let done = scrapers.stop()?;
            cycles[i].push(cycle?);
            scraped[i].status.extend(done.status);
            scraped[i].metrics.extend(done.metrics);
        }
    }

    let load_after = load_average();
    let modes = summarise(&cycles, &scraped);
    Ok(ScrapedHealthResults {
        runs,
        flows: FLOWS,
        flow_table_size: setup.size,
        flow_table_entries: entries,
        fill_s,
        check_settings: format!(
            "kind: tcp, interval: {}s, timeout: {TIMEOUT}, fall: {FALL}, rise: {RISE}",
            INTERVAL.as_secs()
        ),
        one_status_ms: Summary::of(&one_status),
        one_metrics_ms: Summary::of(&one_metrics),
        modes,
        other_health_changes: other_health_changes(setup)?,
        census_nice: thread_nice(agent_pid, "flow-census"),
        load_before,
        load_after,
    })
}
