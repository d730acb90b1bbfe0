//! Packets per second through the LB in the lab, with a real generator: `xdp-trafficgen`
//! (xdp-tools) sends UDP frames to the VIP from the switch's end of the LB's veth, straight
//! into the LB's eth0, first with the agent's `xdp_lb` attached there (frames go back out
//! to a backend), then with `xdp_pass` (frames go up the LB's own stack). veth is not a NIC:
//! the generator, the LB and the rest of the lab share this machine's CPUs.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde::Serialize;

use super::stats::Summary;
use crate::{Lab, netns};

/// The UDP service port on the VIP.
const UDP_PORT: u16 = 9000;
/// The generator's source port (one flow: every frame is a connection-table hit).
const SOURCE_PORT: u16 = 40_000;

#[derive(Clone, Debug, Serialize)]
pub struct Mode {
    /// "xdp_lb" or "xdp_pass".
    pub program: String,
    /// Frames the LB's eth0 received per second.
    pub lb_rx_pps: Summary,
    /// Frames the backends' eth0 received per second.
    pub backends_rx_pps: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThroughputResults {
    pub generator: String,
    pub window_s: f64,
    pub modes: Vec<Mode>,
}

fn rx_packets(lab: &Lab, ns: &str) -> Result<u64> {
    Ok(lab
        .exec_ok(ns, &["cat", "/sys/class/net/eth0/statistics/rx_packets"])?
        .trim()
        .parse()?)
}

fn backends_rx(lab: &Lab) -> Result<u64> {
    (0..lab.backends())
        .map(|i| rx_packets(lab, lab.ns_backend(i)))
        .sum()
}

fn udp_config(lab: &Lab) -> String {
    let mut yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: video-udp\n    vip: {}\n    port: {UDP_PORT}\n    \
         protocol: udp\n    backends:\n",
        Lab::VIP
    );
    for i in 0..lab.backends() {
        // Writing to a String cannot fail.
        let _ = writeln!(yaml, "      - address: {}", Lab::backend_addr(i));
    }
    yaml
}

/// Runs the generator for `runs` windows; LB and backend receive rates.
fn measure(lab: &Lab, program: &str, runs: usize, window: Duration) -> Result<Mode> {
    let port = UDP_PORT.to_string();
    let sport = SOURCE_PORT.to_string();
    let argv = [
        "xdp-trafficgen",
        "udp",
        "-m",
        Lab::LB_MAC,
        "-M",
        Lab::CLIENT_MAC,
        "-a",
        Lab::VIP,
        "-A",
        Lab::CLIENT_ADDR,
        "-p",
        &port,
        "-P",
        &sport,
        "-t",
        "1",
        "lb",
    ];
    let (mut lb, mut backends) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut generator = lab.spawn(lab.ns_switch(), &argv)?;
        thread::sleep(Duration::from_secs(1));
        ensure!(
            generator.is_running(),
            "xdp-trafficgen exited at once: {} {}",
            generator.stdout(),
            generator.stderr()
        );
        let (lb0, b0, t0) = (
            rx_packets(lab, lab.ns_lb())?,
            backends_rx(lab)?,
            Instant::now(),
        );
        thread::sleep(window);
        let (lb1, b1, t1) = (
            rx_packets(lab, lab.ns_lb())?,
            backends_rx(lab)?,
            Instant::now(),
        );
        generator.kill().context("stopping xdp-trafficgen")?;
        let secs = (t1 - t0).as_secs_f64();
        lb.push((lb1 - lb0) as f64 / secs);
        backends.push((b1 - b0) as f64 / secs);
    }
    Ok(Mode {
        program: program.to_owned(),
        lb_rx_pps: Summary::of(&lb),
        backends_rx_pps: Summary::of(&backends),
    })
}

pub fn run(lab: &Lab, agent_bin: &Path, quick: bool) -> Result<ThroughputResults> {
    let (runs, window) = if quick {
        (3, Duration::from_secs(1))
    } else {
        (5, Duration::from_secs(3))
    };
    let version = crate::run(&["xdp-trafficgen", "--version"], crate::EXEC_TIMEOUT)
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let config = lab.dir().join("throughput.yaml");
    fs::write(&config, udp_config(lab))?;
    let mut agent = lab.start_agent(agent_bin, &config)?;
    let with_lb = measure(lab, "xdp_lb", runs, window);
    agent.kill().context("stopping the agent")?;
    let with_lb = with_lb?;
    let pass = netns::attach_xdp_pass(lab.ns_lb(), "eth0")?;
    let with_pass = measure(lab, "xdp_pass", runs, window);
    netns::drop_inside(lab.ns_lb(), pass)?;
    Ok(ThroughputResults {
        generator: if version.is_empty() {
            "xdp-trafficgen".to_owned()
        } else {
            version
        },
        window_s: window.as_secs_f64(),
        modes: vec![with_lb, with_pass?],
    })
}
