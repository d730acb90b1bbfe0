//! Failover in the lab: a backend's nginx is killed (every process in its namespace), and
//! two times are taken from that moment: until the agent logs the backend's health change
//! to down, and until a new connection on a flow that hashed to the dead backend is answered
//! by another one. Default check settings (the lab config has no `health_check`).

use std::{
    net::IpAddr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use xdp_lb::{config, simulate};

use super::stats::Summary;
use crate::{Lab, netns};

/// How long a run waits for the withdrawal before it gives up.
const GIVE_UP: Duration = Duration::from_secs(30);
/// The service whose flows are probed (HTTP), and whose health changes are watched.
const SERVICE: &str = "video-hls";
/// The backend that dies (0-based).
const VICTIM: usize = 0;
/// Client ports whose flows hash to the victim (probed in turn).
const PROBE_PORTS: usize = 400;

#[derive(Clone, Debug, Serialize)]
pub struct FailoverResults {
    pub runs: usize,
    /// The check the agent ran, from its effective config (`xdp-lb check`).
    pub check_settings: String,
    /// Death to the agent's `health:` line saying the backend is down.
    pub to_log_ms: Summary,
    /// Death to the first new connection (on a flow of the dead backend) answered by
    /// another backend.
    pub to_traffic_ms: Summary,
    /// nginx back to the agent's line saying the backend is up again.
    pub to_recovery_ms: Summary,
}

/// Client source ports whose flows to the HLS service the live table sends to `victim`.
fn ports_of(lab: &Lab, victim: IpAddr) -> Result<Vec<u16>> {
    let cfg = config::parse_str(Path::new("lab.yaml"), &lab.lab_config(), &simulate::AnyHost)
        .map_err(|e| anyhow::anyhow!("the lab config: {e}"))?;
    let service = cfg
        .services
        .iter()
        .find(|s| s.name == SERVICE)
        .context("the lab config has no HLS service")?;
    let table = simulate::table(&service.backends, service.maglev_size);
    let client: IpAddr = Lab::CLIENT_ADDR.parse()?;
    let ports: Vec<u16> = (30_000..60_000u16)
        .filter(|&port| {
            simulate::service_hash(service, client, port, cfg.flow_hash_seed)
                .map(|h| table[(h % service.maglev_size) as usize] as usize)
                .is_some_and(|i| service.backends[i].address == victim)
        })
        .take(PROBE_PORTS)
        .collect();
    if ports.is_empty() {
        bail!("no client port hashes to {victim}");
    }
    Ok(ports)
}

/// [`SERVICE`]'s `health_check` block of the effective config, on one line.
fn check_settings(lab: &Lab, agent_bin: &Path, config: &Path) -> Result<String> {
    let bin = agent_bin
        .to_str()
        .context("a binary path that is not UTF-8")?;
    let cfg = config.to_str().context("a config path that is not UTF-8")?;
    let effective = lab.exec_ok(lab.ns_lb(), &[bin, "check", cfg])?;
    let mut lines = effective
        .lines()
        .skip_while(|l| l.trim() != format!("- name: {SERVICE}"))
        .skip_while(|l| l.trim() != "health_check:");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(head) = lines.next() else {
        bail!("the effective config has no health_check");
    };
    let settings: Vec<&str> = lines
        .take_while(|l| indent(l) > indent(head))
        .map(str::trim)
        .collect();
    Ok(settings.join(", "))
}

/// Whether the agent's log, past byte `from`, has a `health:` line for [`SERVICE`]'s backend
/// `addr` changing to `state` (each service checks its backends on its own).
fn logged(lab: &Lab, from: usize, addr: &str, state: &str) -> bool {
    let log = lab.agent_log();
    let (service, backend) = (format!("service={SERVICE} "), format!("backend={addr} "));
    let new = format!("new={state} ");
    log.get(from..).unwrap_or_default().lines().any(|l| {
        l.contains("health: ") && l.contains(&service) && l.contains(&backend) && l.contains(&new)
    })
}

pub fn run(lab: &mut Lab, agent_bin: &Path, quick: bool) -> Result<FailoverResults> {
    let runs = if quick { 2 } else { 5 };
    let victim_addr = Lab::backend_addr(VICTIM);
    let victim: IpAddr = victim_addr.parse()?;
    let ports = ports_of(lab, victim)?;
    let config = lab.write_lab_config()?;
    let check_settings = check_settings(lab, agent_bin, &config)?;
    let mut agent = lab.start_agent(agent_bin, &config)?;
    // The prediction holds: a flow of the victim reaches it before it dies.
    let body = lab
        .http_get_via_vip_from_port("/", ports[0])
        .context("a request to the victim before it dies")?;
    if body.trim() != Lab::backend_name(VICTIM) {
        bail!("a flow predicted for {victim_addr} was answered by {body:?}");
    }
    let (mut to_log, mut to_traffic, mut to_recovery) = (Vec::new(), Vec::new(), Vec::new());
    // A port whose connection was answered elsewhere has its flow remembered on that other
    // backend: it would not reach the victim again, so it is never probed again.
    let mut moved: Vec<u16> = vec![ports[0]];
    let mut probe = 0;
    for run in 0..runs {
        let log_start = lab.agent_log().len();
        netns::kill_all_inside(lab.ns_backend(VICTIM))?;
        let died = Instant::now();
        let (mut log_at, mut traffic_at) = (None, None);
        while (log_at.is_none() || traffic_at.is_none()) && died.elapsed() < GIVE_UP {
            if log_at.is_none() && logged(lab, log_start, &victim_addr, "down") {
                log_at = Some(died.elapsed());
            }
            if traffic_at.is_none() {
                probe = (probe + 1) % ports.len();
                let port = ports[probe];
                if moved.contains(&port) {
                    continue;
                }
                let answered = lab.http_get_via_vip_from_port("/", port);
                if answered.is_ok_and(|body| body.trim() != Lab::backend_name(VICTIM)) {
                    traffic_at = Some(died.elapsed());
                    moved.push(port);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Bring the backend back whatever happened, for the next run and the next section.
        let nginx = &mut lab.nginx[VICTIM];
        let _ = std::fs::remove_file(nginx.pid_path());
        nginx.start().context("restarting the victim's nginx")?;
        let restarted = Instant::now();
        let (Some(log_at), Some(traffic_at)) = (log_at, traffic_at) else {
            let _ = agent.kill();
            bail!(
                "run {}: the agent did not withdraw {victim_addr} within {} s of its death \
                 (withdrawal logged: {}, traffic moved: {}): this agent has no working health checks",
                run + 1,
                GIVE_UP.as_secs(),
                log_at.is_some(),
                traffic_at.is_some()
            );
        };
        to_log.push(log_at.as_secs_f64() * 1e3);
        to_traffic.push(traffic_at.as_secs_f64() * 1e3);
        while !logged(lab, log_start, &victim_addr, "up") {
            if restarted.elapsed() > GIVE_UP {
                let _ = agent.kill();
                bail!(
                    "{victim_addr} did not come back up within {} s of its restart",
                    GIVE_UP.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        to_recovery.push(restarted.elapsed().as_secs_f64() * 1e3);
    }
    agent.kill().context("stopping the agent")?;
    Ok(FailoverResults {
        runs,
        check_settings,
        to_log_ms: Summary::of(&to_log),
        to_traffic_ms: Summary::of(&to_traffic),
        to_recovery_ms: Summary::of(&to_recovery),
    })
}
