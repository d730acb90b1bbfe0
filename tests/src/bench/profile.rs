//! Where a case's time goes: the program's size as the kernel reports it, the helpers and
//! kernel functions its translated code calls, and a `perf` sample of the CPU the test
//! runs are pinned to (the software `cpu-clock` event: hardware counters, which
//! `bpftool prog profile` needs, are not available in every VM).

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use aya::programs::Xdp;
use serde::Serialize;

/// What the kernel says about the loaded program.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramFacts {
    pub id: u32,
    pub xlated_insns: u32,
    pub jited_bytes: u32,
    pub verified_insns: Option<u32>,
    /// Calls in the translated program, by callee, with how many call sites each.
    pub calls: BTreeMap<String, u32>,
}

pub fn program_facts(program: &Xdp) -> Result<ProgramFacts> {
    let info = program.info().context("reading the program's info")?;
    let id = info.id();
    let out = Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string()])
        .output()
        .context("running bpftool")?;
    if !out.status.success() {
        bail!(
            "bpftool prog dump xlated failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut calls = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // e.g. "  23: (85) call bpf_map_lookup_elem#1" or "(85) call __htab_map_lookup_elem#123"
        if let Some(rest) = line.split(") call ").nth(1) {
            let callee = rest.split('#').next().unwrap_or(rest).trim().to_owned();
            *calls.entry(callee).or_insert(0) += 1;
        }
    }
    Ok(ProgramFacts {
        id,
        xlated_insns: info.size_translated().unwrap_or(0) / 8,
        jited_bytes: info.size_jitted(),
        verified_insns: info.verified_instruction_count(),
        calls,
    })
}

/// A perf profile of one case.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub case: String,
    pub samples: u64,
    /// (symbol, share of the samples in %), largest first, down to 1%.
    pub top: Vec<(String, f64)>,
}

/// Samples CPU `cpu` with `perf record -e cpu-clock` for `seconds` while `work` runs
/// (over and over) on that CPU.
pub fn perf_profile(
    case: &str,
    cpu: usize,
    seconds: u32,
    work: &mut dyn FnMut() -> Result<()>,
) -> Result<Profile> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("perf.data");
    let data_arg = data
        .to_str()
        .context("a temporary path that is not UTF-8")?;
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "10000",
            "-C",
            &cpu.to_string(),
            "-o",
            data_arg,
            "--",
            "sleep",
            &seconds.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running perf (apt package linux-perf)")?;
    // perf needs a moment to open its events; work before that is simply not sampled.
    thread::sleep(Duration::from_millis(300));
    while perf.try_wait()?.is_none() {
        work()?;
    }
    let out = perf.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report = Command::new("perf")
        .args([
            "report",
            "-i",
            data_arg,
            "--stdio",
            "--sort",
            "sym",
            "--percent-limit",
            "1",
        ])
        .output()
        .context("running perf report")?;
    if !report.status.success() {
        bail!(
            "perf report failed: {}",
            String::from_utf8_lossy(&report.stderr)
        );
    }
    let (samples, top) = parse_report(&String::from_utf8_lossy(&report.stdout));
    Ok(Profile {
        case: case.to_owned(),
        samples,
        top,
    })
}

/// The sample count and the (symbol, %) lines of `perf report --stdio --sort sym`.
fn parse_report(text: &str) -> (u64, Vec<(String, f64)>) {
    let mut samples = 0;
    let mut top = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# Samples: ") {
            let count = rest.split_whitespace().next().unwrap_or("0");
            samples = match count.strip_suffix('K') {
                Some(k) => (k.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64,
                None => count.parse().unwrap_or(0),
            };
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((percent, rest)) = line.split_once('%') else {
            continue;
        };
        let Ok(percent) = percent.trim().parse::<f64>() else {
            continue;
        };
        let symbol = rest
            .trim()
            .split_once("] ")
            .map_or(rest.trim(), |(_, s)| s)
            .trim();
        top.push((symbol.to_owned(), percent));
    }
    (samples, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perf_report_gives_its_sample_count_and_symbols() {
        let text = "# Samples: 29K of event 'cpu-clock'\n#\n# Overhead  Symbol\n\
                    #\n    41.20%  [k] bpf_prog_6deef7357e7b4530_xdp_lb\n\
                    \x20    9.05%  [k] htab_lru_map_lookup_elem\n\n";
        let (samples, top) = parse_report(text);
        assert_eq!(samples, 29_000);
        assert_eq!(
            top,
            vec![
                ("bpf_prog_6deef7357e7b4530_xdp_lb".to_owned(), 41.2),
                ("htab_lru_map_lookup_elem".to_owned(), 9.05)
            ]
        );
    }
}
