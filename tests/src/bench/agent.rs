//! The agent's memory and CPU in the lab: with 100 backends that are not health-checked
//! (UDP services), and with 100 backends it checks (TCP services: checked by default). The
//! backends' own TCP counters show whether checks really ran.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;

use super::stats::Summary;
use crate::Lab;

/// VIPs of the usage configs: five services of 20 backends each need five (VIP, port) pairs.
const VIPS: [&str; 3] = ["10.77.0.100", "10.77.0.101", "10.77.0.102"];

#[derive(Clone, Debug, Serialize)]
pub struct Usage {
    pub scenario: String,
    pub backends: usize,
    pub window_s: f64,
    /// CPU time over wall time, % of one core.
    pub cpu_percent: Summary,
    pub rss_mib: Summary,
    /// TCP connections the backends accepted per second (health checks, if any).
    pub backend_accepts_per_s: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct AgentResults {
    pub usages: Vec<Usage>,
}

/// Five services (ports 8080 and 1935 over three VIPs), each with every lab backend.
fn usage_config(lab: &Lab, protocol: &str) -> String {
    let mut yaml = String::from("interfaces: [eth0]\nservices:\n");
    let pairs = VIPS
        .iter()
        .flat_map(|vip| [(vip, 8080), (vip, 1935)])
        .take(5);
    for (i, (vip, port)) in pairs.enumerate() {
        // Writing to a String cannot fail.
        let _ = write!(
            yaml,
            "  - name: s{i}\n    vip: {vip}\n    port: {port}\n    protocol: {protocol}\n    backends:\n"
        );
        for b in 0..lab.backends() {
            let _ = writeln!(yaml, "      - address: {}", Lab::backend_addr(b));
        }
    }
    yaml
}

/// (utime + stime) in clock ticks, and VmRSS in KiB, of process `pid`.
pub(super) fn proc_usage(pid: u32) -> Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based, man 5 proc).
    let ticks = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok((ticks, rss))
}

/// TCP passive opens (accepted connections) summed over the lab's backends.
fn backend_accepts(lab: &Lab) -> Result<u64> {
    let mut total = 0;
    for i in 0..lab.backends() {
        let snmp = lab.exec_ok(lab.ns_backend(i), &["cat", "/proc/net/snmp"])?;
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next(), tcp.next());
        let (Some(names), Some(values)) = (names, values) else {
            return Err(anyhow!("no Tcp lines in /proc/net/snmp"));
        };
        let index = names
            .split_whitespace()
            .position(|n| n == "PassiveOpens")
            .ok_or_else(|| anyhow!("no PassiveOpens"))?;
        total += values
            .split_whitespace()
            .nth(index)
            .ok_or_else(|| anyhow!("short Tcp line"))?
            .parse::<u64>()?;
    }
    Ok(total)
}

fn measure(
    lab: &Lab,
    agent_bin: &Path,
    scenario: &str,
    protocol: &str,
    windows: usize,
    window: Duration,
) -> Result<Usage> {
    let config = lab.dir().join(format!("usage-{protocol}.yaml"));
    fs::write(&config, usage_config(lab, protocol))?;
    let mut agent = lab.start_agent(agent_bin, &config)?;
    let pid = agent.pid();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // Let start-up (neighbour resolution, first checks) settle.
    thread::sleep(Duration::from_secs(2));
    let (mut cpu, mut rss, mut accepts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..windows {
        let (ticks0, _) = proc_usage(pid)?;
        let accepts0 = backend_accepts(lab)?;
        let start = Instant::now();
        thread::sleep(window);
        let (ticks1, rss_kib) = proc_usage(pid)?;
        let accepts1 = backend_accepts(lab)?;
        let wall = start.elapsed().as_secs_f64();
        cpu.push((ticks1 - ticks0) as f64 / ticks_per_s / wall * 100.0);
        rss.push(rss_kib as f64 / 1024.0);
        accepts.push((accepts1 - accepts0) as f64 / wall);
    }
    agent.kill().context("stopping the agent")?;
    Ok(Usage {
        scenario: scenario.to_owned(),
        backends: 5 * lab.backends(),
        window_s: window.as_secs_f64(),
        cpu_percent: Summary::of(&cpu),
        rss_mib: Summary::of(&rss),
        backend_accepts_per_s: Summary::of(&accepts),
    })
}

pub fn run(lab: &Lab, agent_bin: &Path, quick: bool) -> Result<AgentResults> {
    let (windows, window) = if quick {
        (5, Duration::from_secs(1))
    } else {
        (5, Duration::from_secs(5))
    };
    Ok(AgentResults {
        usages: vec![
            measure(
                lab,
                agent_bin,
                "idle: 100 backends, none checked (UDP services)",
                "udp",
                windows,
                window,
            )?,
            measure(
                lab,
                agent_bin,
                "checking 100 backends (TCP services, default checks)",
                "tcp",
                windows,
                window,
            )?,
        ],
    })
}
