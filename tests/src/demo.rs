//! The demo behind `cargo xtask run`: a lab with the agent, a topology picture, HTTP flows
//! and an RTMP publish through the VIP, the agent's log, then (unless `once`) the lab stays
//! up for poking at by hand until SIGINT/SIGTERM, its web console forwarded to a port on
//! the host. The lab is always torn down before [`run`] returns.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{Lab, LabOptions, forward};

/// How many HTTP requests (each from its own source port) the demo sends.
pub const HTTP_REQUESTS: u16 = 30;
/// The first client source port of those requests (outside the ephemeral range).
const FIRST_SOURCE_PORT: u16 = 20001;
/// How long the demo's RTMP publish lasts.
const PUBLISH_SECONDS: u32 = 5;
/// Where the host reaches the console (another port of 127.0.0.1 when this one is taken).
const CONSOLE_ON_HOST: &str = "127.0.0.1:9742";

/// Sets a flag on SIGINT and SIGTERM (instead of dying), for a loop to poll.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .with_context(|| format!("installing a handler for signal {signal}"))?;
    }
    Ok(flag)
}

fn step(what: &str) {
    println!("==> {what}");
}

/// Runs the demo with `agent` (the xdp-lb binary). `stop` is polled between steps and, at
/// the end, every 100 ms; once it is set the lab is torn down and this returns.
pub fn run(agent: &Path, once: bool, stop: &AtomicBool) -> Result<()> {
    step("bringing the lab up");
    let lab = Lab::up(LabOptions::default())?;
    let stopped = || stop.load(Ordering::Relaxed);
    if stopped() {
        return Ok(());
    }
    step(&format!(
        "starting the agent {} in {}",
        agent.display(),
        lab.ns_lb()
    ));
    let config = lab.write_lab_config_with_console()?;
    let mut agent_process = lab.start_agent(agent, &config)?;
    print_topology(&lab)?;
    if stopped() {
        return Ok(());
    }
    step(&format!(
        "{HTTP_REQUESTS} HTTP requests to {}:{} from distinct source ports",
        Lab::VIP,
        Lab::HTTP_PORT
    ));
    http_table(&lab, stop);
    if stopped() {
        return Ok(());
    }
    step(&format!(
        "one {PUBLISH_SECONDS}-second RTMP publish to rtmp://{}/live/demo",
        Lab::VIP
    ));
    rtmp_demo(&lab);
    step("the agent's log (last 20 lines)");
    let log = lab.agent_log();
    let lines: Vec<&str> = log.lines().collect();
    for line in &lines[lines.len().saturating_sub(20)..] {
        println!("    {line}");
    }
    if once {
        step("tearing the lab down");
        return Ok(());
    }
    let console = forward::start(
        CONSOLE_ON_HOST.parse()?,
        lab.ns_lb(),
        (Lab::LB_ADDR.parse::<std::net::IpAddr>()?, Lab::CONSOLE_PORT).into(),
    );
    print_howto(&lab, &config);
    match &console {
        Ok(forwarded) => println!(
            "    web console: http://{}/ in a browser on this host (forwarded to the agent's {} in {}; \
             from the client: ip netns exec {} curl {}status.json)",
            forwarded.local,
            Lab::console_url(),
            lab.ns_lb(),
            lab.ns_client(),
            Lab::console_url()
        ),
        Err(err) => println!(
            "    web console: {} from the lab's client (forwarding it to the host failed: {err:#})",
            Lab::console_url()
        ),
    }
    let mut agent_gone = false;
    while !stopped() {
        if !agent_gone && !agent_process.is_running() {
            agent_gone = true;
            println!(
                "!!  the agent exited; its log: {}",
                lab.agent_log_path().display()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    step("tearing the lab down");
    Ok(())
}

fn print_topology(lab: &Lab) -> Result<()> {
    step("topology (one L2 segment, 10.77.0.0/24)");
    println!(
        "    {:<8}{:<14}{:<15}{:<19}role",
        "host", "namespace", "eth0", "MAC"
    );
    let row = |host: &str, ns: &str, addr: &str, role: &str| -> Result<()> {
        let mac = lab.mac(ns, "eth0")?;
        println!("    {host:<8}{ns:<14}{addr:<15}{mac:<19}{role}");
        Ok(())
    };
    println!("    [ bridge br0 in {} ]", lab.ns_switch());
    row("client", lab.ns_client(), Lab::CLIENT_ADDR, "curl, ffmpeg")?;
    let role = format!(
        "VIP {}/32 on eth0, xdp-lb on eth0, own nginx :{}",
        Lab::VIP,
        Lab::LB_SERVICE_PORT
    );
    row("lb", lab.ns_lb(), Lab::LB_ADDR, &role)?;
    for i in 0..lab.backends() {
        let addr = Lab::backend_addr(i);
        row(
            &Lab::backend_name(i),
            lab.ns_backend(i),
            &addr,
            "VIP on lo; nginx http :8080, rtmp :1935",
        )?;
    }
    println!(
        "    client -> VIP -> lb (XDP: dst MAC := backend, src MAC := lb, XDP_TX) -> backend -> client"
    );
    Ok(())
}

fn http_table(lab: &Lab, stop: &AtomicBool) {
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for n in 0..HTTP_REQUESTS {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match lab.http_get_via_vip_from_port("/", FIRST_SOURCE_PORT + n) {
            Ok(body) => *answered.entry(body.trim().to_owned()).or_default() += 1,
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    println!("    {:<10}{:>8}", "backend", "requests");
    for i in 0..lab.backends() {
        let name = Lab::backend_name(i);
        let count = answered.remove(&name).unwrap_or(0);
        println!("    {name:<10}{count:>8}  {}", "#".repeat(count as usize));
    }
    for (other, count) in answered {
        println!(
            "    {:<10}{count:>8}  (unexpected body)",
            format!("{other:?}")
        );
    }
    println!("    {:<10}{:>8}", "failed", failures.len());
    if let Some(first) = failures.first() {
        println!("    first failure: {first}");
    }
}

fn rtmp_demo(lab: &Lab) {
    let result = lab.rtmp_publish_ok(PUBLISH_SECONDS, "demo").and_then(|()| {
        let backend = lab.wait_rtmp_publish("demo", Duration::from_secs(10))?;
        let line = lab
            .rtmp_publishes(backend)?
            .into_iter()
            .last()
            .unwrap_or_default();
        Ok((backend, line))
    });
    match result {
        Ok((backend, line)) => {
            println!(
                "    received by {} ({})",
                Lab::backend_name(backend),
                Lab::backend_addr(backend)
            );
            println!("    its rtmp access log: {line}");
        }
        Err(err) => println!("    the publish failed: {err:#}"),
    }
}

fn print_howto(lab: &Lab, config: &Path) {
    step("the lab is up; try it by hand (Ctrl-C tears it down)");
    let (cl, lb) = (lab.ns_client(), lab.ns_lb());
    let vip = Lab::VIP;
    println!("    ip netns exec {cl} curl http://{vip}:8080/");
    println!("    ip netns exec {cl} curl http://{vip}:8080/live.m3u8");
    println!(
        "    ip netns exec {cl} ffmpeg -re -f lavfi -i testsrc=size=320x240:rate=25 -t 10 -c:v flv1 -f flv rtmp://{vip}/live/test"
    );
    println!(
        "    ip netns exec {cl} curl http://{}:{}/",
        Lab::LB_ADDR,
        Lab::LB_SERVICE_PORT
    );
    println!("    ip netns exec {lb} tcpdump -eni eth0 tcp port 8080");
    println!(
        "    ip netns exec {} tcpdump -eni eth0 tcp port 8080",
        lab.ns_backend(0)
    );
    println!("    ip netns exec {lb} bpftool net show");
    println!(
        "    agent config {}, log {}",
        config.display(),
        lab.agent_log_path().display()
    );
    for i in 0..lab.backends() {
        if let Ok(path) = lab.rtmp_log_path(i) {
            println!(
                "    {} rtmp access log {}",
                Lab::backend_name(i),
                path.display()
            );
        }
    }
}

/// The `xdp-lb-lab` command line: `xdp-lb-lab --agent PATH [--once] [--lbs N]` (N of 2 or
/// 3: the BGP demo of `demo_bgp.rs`).
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> Result<()> {
    let mut agent = None;
    let mut once = false;
    let mut lbs = 1;
    let mut args = args.into_iter();
    let usage = "usage: xdp-lb-lab --agent PATH [--once] [--lbs 1|2|3]";
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => once = true,
            "--agent" => agent = Some(args.next().context("--agent needs a path")?),
            "--lbs" => {
                let n = args.next().context("--lbs needs a number")?;
                lbs = match n.parse::<usize>() {
                    Ok(n @ 1..=3) => n,
                    _ => bail!("--lbs takes 1, 2 or 3, not `{n}` ({usage})"),
                };
            }
            other => bail!("unknown argument `{other}` ({usage})"),
        }
    }
    let agent = match agent {
        Some(path) => path.into(),
        None => Lab::locate_agent_binary()?,
    };
    let stop = stop_flag()?;
    if lbs > 1 {
        return crate::demo_bgp::run(&agent, lbs, once, &stop);
    }
    run(&agent, once, &stop)
}
