//! `cargo xtask bench`: measures xdp-lb and writes BENCHMARKS.md and BENCHMARKS.json
//! (with SVG charts under `tests/charts/`). Every figure is the median of several runs,
//! shown with their min and max; the JSON keeps every run's sample.
//!
//! * [`packet`]: per-packet cost of the XDP program (BPF_PROG_TEST_RUN), beside a no-op;
//! * [`lru`]: the connection table with one LRU list shared by all CPUs (as shipped) against
//!   per-CPU LRU lists;
//! * [`maglev`]: table build time, health change to live table, slot-by-slot writes;
//! * [`distribution`]: how flows spread, weights, flows moved, two independent LBs;
//! * [`agent`], [`failover`], [`throughput`]: in the network-namespace lab;
//! * [`scraped_health`]: health verdicts while a 1M-entry connection table is scraped (lab);
//! * [`lb_failover`]: one of two LBs behind ECMP leaving, until the router forwards the
//!   VIP to the other alone (the BGP lab; `--only lb-failover` measures it alone);
//! * [`sync`]: flow-state sync between LBs: what handing a new entry to the agent adds to
//!   its first packet, entries per second sent and applied, sync traffic per peer
//!   (`--only sync` measures it alone).
//!
//! Speed targets are reported here, never asserted by tests.

pub mod agent;
pub mod charts;
pub mod distribution;
pub mod explain;
pub mod failover;
/// The frames the benchmarks feed the program: the crate's one copy of the builders.
pub use crate::frames;
pub mod lb_failover;
pub mod lru;
pub mod maglev;
pub mod packet;
pub mod profile;
pub mod report;
#[cfg(test)]
mod report_tests;
pub mod scraped_health;
pub mod stats;
pub mod sync;
pub mod throughput;

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow};
use serde::Serialize;
use xdp_lb::{
    config::{self, Service},
    simulate::AnyHost,
};

use crate::{Lab, LabOptions};

/// Services parsed from YAML as an operator's file would be (`services:` entries; the
/// interfaces are not checked), so they carry every default the agent applies.
pub fn services(entries: &str) -> Result<Vec<Service>> {
    let text = format!("interfaces: [eth0]\nservices:\n{entries}");
    config::parse_str(Path::new("bench.yaml"), &text, &AnyHost)
        .map(|c| c.services)
        .map_err(|errors| anyhow!("the benchmark's own config is invalid: {errors}"))
}

/// One `services:` entry.
pub fn service_yaml(
    name: &str,
    vip: IpAddr,
    port: u16,
    protocol: &str,
    maglev_size: u32,
    backends: &[(IpAddr, u32)],
) -> String {
    let mut yaml = format!(
        "  - name: {name}\n    vip: \"{vip}\"\n    port: {port}\n    protocol: {protocol}\n    \
         maglev_size: {maglev_size}\n    backends:\n"
    );
    for (address, weight) in backends {
        // Writing to a String cannot fail.
        let _ = writeln!(
            yaml,
            "      - {{ address: \"{address}\", weight: {weight} }}"
        );
    }
    yaml
}

/// What to run, and how much of it.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Fewer repeats and runs, for developing the benchmark (never for the published report).
    pub quick: bool,
    /// The release agent binary (for the lab sections).
    pub agent: PathBuf,
    /// Where BENCHMARKS.md and BENCHMARKS.json go (the repository root); charts go to
    /// `tests/charts/` under it.
    pub root: PathBuf,
}

/// A section that could not be measured on this machine, and why.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Section<T> {
    Measured(T),
    NotMeasured { reason: String },
}

impl<T> Section<T> {
    fn from_result(result: Result<T>) -> Self {
        match result {
            Ok(value) => Section::Measured(value),
            Err(err) => Section::NotMeasured {
                reason: format!("{err:#}"),
            },
        }
    }

    fn not_measured(reason: &str) -> Self {
        Section::NotMeasured {
            reason: reason.to_owned(),
        }
    }

    pub fn measured(&self) -> Option<&T> {
        match self {
            Section::Measured(value) => Some(value),
            Section::NotMeasured { .. } => None,
        }
    }
}

/// The machine the figures come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub virtualization: String,
    pub commit: String,
    pub date: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bench {
    pub machine: Machine,
    pub quick: bool,
    pub seconds: f64,
    pub packet: packet::PacketResults,
    pub lru: Section<lru::LruResults>,
    pub maglev: maglev::MaglevResults,
    pub distribution: distribution::DistributionResults,
    pub agent: Section<agent::AgentResults>,
    pub failover: Section<failover::FailoverResults>,
    pub throughput: Section<throughput::ThroughputResults>,
    pub scraped_health: Section<scraped_health::ScrapedHealthResults>,
    pub lb_failover: Section<lb_failover::LbFailoverResults>,
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub fn machine(root: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let detected = command_line("systemd-detect-virt", &[]);
    let hypervisor = cpuinfo.contains(" hypervisor");
    let virtualization = format!(
        "{}; CPU {} the hypervisor flag",
        detected.map_or_else(
            || "systemd-detect-virt unavailable".to_owned(),
            |d| format!("systemd-detect-virt: {d}")
        ),
        if hypervisor { "has" } else { "does not have" }
    );
    let root_arg = root.to_string_lossy();
    let commit = command_line("git", &["-C", &root_arg, "rev-parse", "--short", "HEAD"])
        .map(|c| {
            let dirty = command_line("git", &["-C", &root_arg, "status", "--porcelain"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c} (with uncommitted changes)")
            } else {
                c
            }
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kib / (1024.0 * 1024.0),
        kernel: command_line("uname", &["-r"]).unwrap_or_default(),
        virtualization,
        commit,
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
    }
}

fn step(what: &str) {
    println!("==> {what}");
}

/// How many backends the lab for the agent, failover and throughput sections has (the 100
/// checked backends are 5 services over 20 servers).
pub const LAB_BACKENDS: usize = 20;

/// Runs every section and writes the report.
pub fn run(opts: &BenchOptions) -> Result<Bench> {
    let started = Instant::now();
    let q = opts.quick;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = machine(&opts.root);

    step("per-packet cost (BPF_PROG_TEST_RUN)");
    let packet_opts = packet::PacketOptions {
        repeat: if q { 100_000 } else { 1_000_000 },
        runs: if q { 5 } else { 11 },
        single_packets: if q { 2_000 } else { 20_000 },
        evict_table: if q { 8_192 } else { 65_536 },
        profile_seconds: if q { 1 } else { 3 },
        cpu: cpus - 1,
    };
    let lru_opts = lru::LruOptions {
        repeat: packet_opts.repeat,
        runs: packet_opts.runs,
        single_packets: packet_opts.single_packets,
        table_size: xdp_lb_common::FLOW_TABLE_DEFAULT_SIZE,
        cpu: packet_opts.cpu,
        pair: (cpus >= 2).then_some([cpus - 2, cpus - 1]),
    };
    let (packet, lru) = std::thread::spawn(move || {
        packet::pin_to_cpu(packet_opts.cpu)?;
        // Fewer interruptions by whatever else runs on the machine (Linux: this thread only).
        // SAFETY: setpriority has no memory-safety preconditions.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
        let packet = packet::run(&packet_opts)?;
        step("connection table: one shared LRU list against per-CPU LRU lists");
        let lru = Section::from_result(lru::run(&lru_opts));
        anyhow::Ok((packet, lru))
    })
    .join()
    .map_err(|_| anyhow!("the per-packet benchmark panicked"))??;

    step("flow-state sync: handoff cost, entries per second, bandwidth");
    let sync = Section::from_result(sync::run(
        &sync::SyncOptions {
            quick: q,
            cpu: cpus - 1,
            other_cpu: (cpus >= 2).then(|| cpus - 2),
        },
        &opts.root,
        machine.date.clone(),
        machine.commit.clone(),
    ));

    step("Maglev: build time, health change to live table, slot-by-slot writes");
    let maglev = maglev::run(&maglev::MaglevOptions {
        build_runs: if q { 5 } else { 11 },
        switch_runs: if q { 5 } else { 11 },
        single_update_runs: if q { 3 } else { 5 },
        builds: [65_537, 655_373]
            .into_iter()
            .flat_map(|m| [3, 100, 1000].map(|n| (m, n)))
            .collect(),
        switches: vec![(65_537, 3), (65_537, 100), (65_537, 1000), (655_373, 100)],
    })?;

    step("distribution of flows");
    let distribution = distribution::run(&distribution::DistributionOptions {
        flows: if q { 20_000 } else { 100_000 },
        runs: 5,
        maglev_size: xdp_lb_common::MAGLEV_DEFAULT_SIZE,
    })?;

    step(&format!(
        "the lab ({LAB_BACKENDS} backends): agent usage, failover, throughput, health verdicts \
         while scraped"
    ));
    let lab = Lab::up(LabOptions {
        backends: LAB_BACKENDS,
        ..LabOptions::default()
    });
    let (agent, failover, throughput, scraped_health) = match lab {
        Ok(mut lab) => {
            step("agent memory and CPU");
            let agent = Section::from_result(agent::run(&lab, &opts.agent, q));
            step("failover");
            let failover = Section::from_result(failover::run(&mut lab, &opts.agent, q));
            step(&format!(
                "health verdicts while a {}-entry connection table is scraped",
                scraped_health::FLOWS
            ));
            let scraped_health = Section::from_result(scraped_health::run(&lab, &opts.agent, q));
            step("throughput");
            let throughput = Section::from_result(throughput::run(&lab, q));
            (agent, failover, throughput, scraped_health)
        }
        Err(err) => {
            let reason = format!("the lab could not be built: {err:#}");
            (
                Section::not_measured(&reason),
                Section::not_measured(&reason),
                Section::not_measured(&reason),
                Section::not_measured(&reason),
            )
        }
    };

    step("failover between two LBs behind ECMP (BGP lab)");
    let lb_failover = Section::from_result(lb_failover::run(&opts.agent, q));

    let bench = Bench {
        machine,
        quick: q,
        seconds: started.elapsed().as_secs_f64(),
        packet,
        lru,
        maglev,
        distribution,
        agent,
        failover,
        throughput,
        scraped_health,
        lb_failover,
    };
    step("writing BENCHMARKS.md, BENCHMARKS.json and the charts");
    report::write(&bench, &opts.root).context("writing the report")?;
    // Not a field of `Bench`: written into the report as `--only sync` writes it.
    sync::write(&opts.root, &sync, None).context("writing the sync section")?;
    Ok(bench)
}

/// `xdp-lb-bench --only lb-failover|sync`: that section alone, written into the existing
/// report.
fn run_only(section: &str, opts: &BenchOptions) -> Result<()> {
    match section {
        "lb-failover" => {
            let machine = machine(&opts.root);
            step("failover between two LBs behind ECMP (BGP lab)");
            let results = Section::from_result(lb_failover::run(&opts.agent, opts.quick));
            if let Section::NotMeasured { reason } = &results {
                anyhow::bail!("not measured: {reason}");
            }
            report::update_section(
                &opts.root,
                "lb_failover",
                &serde_json::to_value(&results)?,
                &report::lb_failover_block(
                    &results,
                    opts.quick,
                    Some(&format!(
                        "Measured by itself (`cargo xtask bench --only lb-failover`) on {} from \
                         commit {}, after the rest of this report.",
                        machine.date, machine.commit
                    )),
                ),
            )?;
            println!(
                "rewrote the LB-failover part of {} and {}",
                opts.root.join(report::MARKDOWN).display(),
                opts.root.join(report::JSON).display()
            );
            Ok(())
        }
        "sync" => {
            step("flow-state sync: handoff cost, entries per second, bandwidth");
            sync::run_only(opts)?;
            println!(
                "rewrote the flow-state sync part of {} and {}",
                opts.root.join(report::MARKDOWN).display(),
                opts.root.join(report::JSON).display()
            );
            Ok(())
        }
        other => anyhow::bail!("unknown section `{other}` (--only takes: lb-failover, sync)"),
    }
}

/// `xdp-lb-bench [--quick] [--only SECTION] [--agent PATH] [--root DIR]`.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> Result<()> {
    let mut quick = false;
    let mut only = None;
    let mut agent = None;
    let mut root = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => only = Some(args.next().context("--only needs a section")?),
            "--agent" => agent = Some(PathBuf::from(args.next().context("--agent needs a path")?)),
            "--root" => {
                root = Some(PathBuf::from(
                    args.next().context("--root needs a directory")?,
                ))
            }
            other => anyhow::bail!(
                "unknown argument `{other}` (usage: xdp-lb-bench [--quick] [--only lb-failover|sync] [--agent PATH] [--root DIR])"
            ),
        }
    }
    let agent = match agent {
        Some(path) => path,
        None => Lab::locate_agent_binary()?,
    };
    let root = match root {
        Some(root) => root,
        None => std::env::current_dir()?,
    };
    let opts = BenchOptions {
        quick,
        agent,
        root: root.clone(),
    };
    if let Some(section) = only {
        return run_only(&section, &opts);
    }
    let bench = run(&opts)?;
    println!(
        "wrote {} and {} in {:.0} s",
        root.join(report::MARKDOWN).display(),
        root.join(report::JSON).display(),
        bench.seconds
    );
    Ok(())
}
