//! The demo behind `cargo xtask run --lbs N`: the BGP lab (`bgp.rs`) with N LBs, each with
//! BIRD and an agent announcing the VIP; HTTP sessions spread over the LBs, then live RTMP
//! publishes while one LB is stopped cleanly, each ending as one unbroken session. Unless
//! `once`, the lab then stays up until SIGINT/SIGTERM.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{Lab, LabOptions, LabProcess};

const HTTP_REQUESTS: u16 = 30;
const FIRST_SOURCE_PORT: u16 = 21001;
const PUBLISHES: usize = 6;
const PUBLISH_SECONDS: u32 = 15;

fn step(what: &str) {
    println!("==> {what}");
}

/// Runs the BGP demo with `lbs` LBs (2 or 3) and `agent`.
pub fn run(agent: &Path, lbs: usize, once: bool, stop: &AtomicBool) -> Result<()> {
    step(&format!(
        "bringing the BGP lab up: a router with BIRD (ECMP, L4 hash), {lbs} LBs with BIRD"
    ));
    let lab = Lab::up(LabOptions {
        bgp_lbs: lbs,
        ..LabOptions::default()
    })?;
    let stopped = || stop.load(Ordering::Relaxed);
    let config = lab.write_announce_config()?;
    step(&format!(
        "starting an agent with announce: on each LB ({})",
        config.display()
    ));
    let mut agents: Vec<LabProcess> = (0..lbs)
        .map(|k| lab.start_agent_on(k, agent, &config))
        .collect::<Result<_>>()?;
    let all: Vec<usize> = (0..lbs).collect();
    let took = lab.wait_router_nexthops(&all, Duration::from_secs(30))?;
    println!(
        "    the router's route to {} has a next hop per LB ({:.1} s after the agents were ready):",
        Lab::VIP,
        took.as_secs_f64()
    );
    print_route(&lab);
    if stopped() {
        return Ok(());
    }

    step(&format!(
        "{HTTP_REQUESTS} HTTP sessions from the client (behind the router) to {}:{}",
        Lab::VIP,
        Lab::HTTP_PORT
    ));
    let before = new_flows(&lab, agent, lbs);
    let mut failed = 0;
    for n in 0..HTTP_REQUESTS {
        if lab
            .http_get_via_vip_from_port("/", FIRST_SOURCE_PORT + n)
            .is_err()
        {
            failed += 1;
        }
    }
    let after = new_flows(&lab, agent, lbs);
    for k in 0..lbs {
        let n = after[k].saturating_sub(before[k]);
        println!(
            "    LB {} ({:<10}) {n:>3} new sessions  {}",
            k + 1,
            Lab::lb_addr(k),
            "#".repeat(usize::try_from(n).unwrap_or(0))
        );
    }
    println!("    failed: {failed}");
    if stopped() {
        return Ok(());
    }

    step(&format!(
        "{PUBLISHES} RTMP publishes of {PUBLISH_SECONDS} s; after 4 s, LB 1's agent gets SIGTERM (a clean stop)"
    ));
    let mut publishes = Vec::new();
    for i in 0..PUBLISHES {
        let stream = format!("demo{i}");
        let url = format!("rtmp://{}:{}/live/{stream}", Lab::VIP, Lab::RTMP_PORT);
        let argv = Lab::publish_argv(&url, PUBLISH_SECONDS);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        publishes.push((stream, lab.spawn(lab.ns_client(), &args)?));
    }
    thread::sleep(Duration::from_secs(4));
    let sent = Instant::now();
    agents[0].signal(libc::SIGTERM)?;
    let rest: Vec<usize> = (1..lbs).collect();
    match lab.wait_router_nexthops(&rest, Duration::from_secs(10)) {
        Ok(moved) => println!(
            "    LB 1 withdrew its route: the router dropped its next hop {:.0} ms after the SIGTERM:",
            moved.as_secs_f64() * 1000.0
        ),
        Err(err) => println!("    the route did not move: {err:#}"),
    }
    print_route(&lab);
    let _ = agents[0].wait_with_timeout(Duration::from_secs(15));
    println!(
        "    LB 1's agent exited {:.1} s after the SIGTERM (stop_grace: 2s of forwarding after the withdrawal)",
        sent.elapsed().as_secs_f64()
    );
    for (stream, ffmpeg) in &mut publishes {
        let output = ffmpeg
            .wait_with_timeout(Duration::from_secs(u64::from(PUBLISH_SECONDS) + 40))
            .context("waiting for ffmpeg")?;
        let landed = lab
            .wait_rtmp_publish(stream, Duration::from_secs(10))
            .map(|b| {
                let sessions = lab
                    .rtmp_publishes(b)
                    .unwrap_or_default()
                    .iter()
                    .filter(|l| l.contains(&format!("\"{stream}\"")))
                    .count();
                format!("{} session(s) on {}", sessions, Lab::backend_name(b))
            })
            .unwrap_or_else(|err| format!("{err:#}"));
        let verdict = if output.status.success() {
            "ok, unbroken".to_owned()
        } else {
            format!("BROKEN: {}", String::from_utf8_lossy(&output.stderr).trim())
        };
        println!("    {stream}: {verdict}; {landed}");
    }
    if once {
        step("tearing the lab down");
        return Ok(());
    }
    print_howto(&lab);
    while !stopped() {
        thread::sleep(Duration::from_millis(100));
    }
    step("tearing the lab down");
    Ok(())
}

fn new_flows(lab: &Lab, agent: &Path, lbs: usize) -> Vec<u64> {
    (0..lbs)
        .map(|k| {
            lab.flow_event_on(k, agent, "syn_not_remembered")
                .unwrap_or(0)
        })
        .collect()
}

fn print_route(lab: &Lab) {
    if let Some(router) = lab.ns_router()
        && let Ok(route) = lab.exec_ok(router, &["ip", "route", "show", Lab::VIP])
    {
        for line in route.lines() {
            println!("        {}", line.trim_end());
        }
    }
}

fn print_howto(lab: &Lab) {
    step("the lab is up; try it by hand (Ctrl-C tears it down)");
    let router = lab.ns_router().unwrap_or_default();
    println!(
        "    ip netns exec {router} ip route show {}            # the ECMP route",
        Lab::VIP
    );
    println!(
        "    ip netns exec {router} birdc -s {} show protocols",
        lab.bird_socket(router).display()
    );
    for (k, ns) in lab.lb_namespaces().iter().enumerate() {
        println!(
            "    ip netns exec {ns} ip route show table {}   # LB {}'s announced VIPs",
            crate::ANNOUNCE_TABLE,
            k + 1
        );
    }
    println!(
        "    ip netns exec {} curl http://{}:8080/",
        lab.ns_client(),
        Lab::VIP
    );
}
