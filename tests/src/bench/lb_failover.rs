//! Failover between LBs in the BGP lab (`LabOptions::bgp_lbs: 2`): how long after one LB
//! stops or dies the router forwards every packet of the VIP to the other LB alone, which
//! places the moved flows on the same backends by Maglev (`lab_bgp` shows the streams go
//! on unbroken). Taken from the router's kernel route for the VIP, read every 20 ms, so
//! a figure is that much coarse. Three ways of leaving, each in a fresh lab:
//!
//! * a clean stop (SIGTERM to LB 1's agent): the agent withdraws its route first;
//! * LB 1's link down, BGP timers only (`hold time 3; keepalive time 1;`): nothing
//!   withdraws, the router notices when the hold time runs out;
//! * LB 1's link down with BFD (`interval 100 ms; multiplier 3;` on both sides).

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::stats::Summary;
use crate::{HOLD_TIME_S, Lab, LabOptions, bgp::BFD_MULTIPLIER};

/// BFD's interval in the BFD case (ms).
pub const BFD_INTERVAL_MS: u32 = 100;
/// How long a run waits for the route to change before it gives up.
const GIVE_UP: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Serialize)]
pub struct LbFailoverResults {
    pub runs: usize,
    pub hold_time_s: u32,
    pub bfd_interval_ms: u32,
    pub bfd_multiplier: u32,
    /// SIGTERM to the agent until the router's route has the other LB alone.
    pub clean_stop_ms: Summary,
    /// Link down until then, with BGP's hold time only.
    pub link_down_bgp_ms: Summary,
    /// Link down until then, with BFD.
    pub link_down_bfd_ms: Summary,
}

#[derive(Clone, Copy, Debug)]
enum Leaving {
    CleanStop,
    LinkDown,
}

/// One run: a fresh two-LB lab, both agents announcing, then LB 1 leaves; the time until
/// the router's route names LB 2 alone.
fn one_run(agent: &Path, leaving: Leaving, bfd_ms: Option<u32>) -> Result<f64> {
    let lab = Lab::up(LabOptions {
        backends: 3,
        bgp_lbs: 2,
        bgp_bfd_ms: bfd_ms,
        ..LabOptions::default()
    })
    .context("the BGP lab")?;
    let config = lab.write_announce_config()?;
    let mut agents = (0..2)
        .map(|k| lab.start_agent_on(k, agent, &config))
        .collect::<Result<Vec<_>>>()?;
    lab.wait_router_nexthops(&[0, 1], Duration::from_secs(30))
        .context("both LBs in the router's route")?;
    if bfd_ms.is_some() {
        // BFD sessions come up after BGP's; a link cut before would be noticed by BGP.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let sessions = lab.birdc(
                lab.ns_router().unwrap_or_default(),
                &["show", "bfd", "sessions"],
            )?;
            if sessions.matches(" Up ").count() >= 2 {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the router's BFD sessions did not come up:\n{sessions}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Settled: a second of keepalives both ways.
    std::thread::sleep(Duration::from_secs(1));
    let took = match leaving {
        Leaving::CleanStop => {
            agents[0].signal(libc::SIGTERM)?;
            lab.wait_router_nexthops(&[1], GIVE_UP)?
        }
        Leaving::LinkDown => {
            lab.exec_ok(&lab.ns_lb_k(0), &["ip", "link", "set", "eth0", "down"])?;
            lab.wait_router_nexthops(&[1], GIVE_UP)?
        }
    };
    for agent in &mut agents {
        let _ = agent.signal(libc::SIGTERM);
        let _ = agent.wait_with_timeout(Duration::from_secs(10));
    }
    Ok(took.as_secs_f64() * 1000.0)
}

pub fn run(agent: &Path, quick: bool) -> Result<LbFailoverResults> {
    let runs = if quick { 2 } else { 5 };
    let series = |leaving: Leaving, bfd_ms: Option<u32>| -> Result<Summary> {
        let samples = (0..runs)
            .map(|i| {
                let ms = one_run(agent, leaving, bfd_ms)
                    .with_context(|| format!("{leaving:?} (BFD {bfd_ms:?}), run {}", i + 1))?;
                println!("    {leaving:?}, BFD {bfd_ms:?}: {ms:.0} ms");
                Ok(ms)
            })
            .collect::<Result<Vec<f64>>>()?;
        Ok(Summary::of(&samples))
    };
    Ok(LbFailoverResults {
        runs,
        hold_time_s: HOLD_TIME_S,
        bfd_interval_ms: BFD_INTERVAL_MS,
        bfd_multiplier: BFD_MULTIPLIER,
        clean_stop_ms: series(Leaving::CleanStop, None)?,
        link_down_bgp_ms: series(Leaving::LinkDown, None)?,
        link_down_bfd_ms: series(Leaving::LinkDown, Some(BFD_INTERVAL_MS))?,
    })
}
