//! Where a case's time goes: the program's size as the kernel reports it, the helpers and
//! kernel functions its translated code calls, and a `perf` sample of the CPU the test
//! runs are pinned to (the software `cpu-clock` event: hardware counters, which
//! `bpftool prog profile` needs, are not available in every VM).

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
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
    /// x86-64 instructions of the JITed image (objdump), and how many are calls.
    pub jited_insns: Option<u32>,
    pub jited_calls: Option<u32>,
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
    let disassembly =
        jited_image(program, info.size_jitted()).and_then(|image| disassemble(&image));
    let (jited_insns, jited_calls) = match disassembly {
        Ok((insns, calls)) => (Some(insns), Some(calls)),
        Err(err) => {
            eprintln!("xdp-lb-bench: the JITed image: {err:#}");
            (None, None)
        }
    };
    Ok(ProgramFacts {
        id,
        xlated_insns: info.size_translated().unwrap_or(0) / 8,
        jited_bytes: info.size_jitted(),
        verified_insns: info.verified_instruction_count(),
        calls,
        jited_insns,
        jited_calls,
    })
}

/// The program's JITed machine code, through `BPF_OBJ_GET_INFO_BY_FD` (Debian's bpftool
/// is built without the disassembler that `bpftool prog dump jited` needs).
fn jited_image(program: &Xdp, len: u32) -> Result<Vec<u8>> {
    /// `BPF_OBJ_GET_INFO_BY_FD` (linux/bpf.h).
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut image = vec![0u8; len as usize];
    // The head of struct bpf_prog_info, up to and including `jited_prog_insns`: type, id,
    // tag[8], jited_prog_len, xlated_prog_len, jited_prog_insns.
    let mut info = [0u8; 32];
    info[16..20].copy_from_slice(&len.to_ne_bytes());
    info[24..32].copy_from_slice(&(image.as_mut_ptr() as u64).to_ne_bytes());
    let fd = program
        .fd()
        .context("the program's fd")?
        .as_fd()
        .as_raw_fd();
    let attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` points at `info`, whose `jited_prog_insns` points at `image` of the
    // length given in `jited_prog_len`; the kernel writes at most that much into each.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("BPF_OBJ_GET_INFO_BY_FD");
    }
    Ok(image)
}

/// Instructions and calls in x86-64 machine code (`objdump` from binutils).
fn disassemble(image: &[u8]) -> Result<(u32, u32)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("jited.bin");
    std::fs::write(&path, image)?;
    let out = Command::new("objdump")
        .args(["-D", "-b", "binary", "-mi386:x86-64"])
        .arg(&path)
        .output()
        .context("running objdump")?;
    if !out.status.success() {
        bail!("objdump failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let insns: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_once(":\t")
                .is_some_and(|(addr, _)| u64::from_str_radix(addr.trim(), 16).is_ok())
        })
        .collect();
    let calls = insns.iter().filter(|l| l.contains("\tcall")).count();
    Ok((insns.len() as u32, calls as u32))
}

/// What `bpftool prog profile` (hardware cycles and instructions per run) says while
/// `work` runs: its output, or its refusal.
pub fn bpftool_profile(id: u32, work: &mut dyn FnMut() -> Result<()>) -> String {
    let child = Command::new("bpftool")
        .args([
            "prog",
            "profile",
            "id",
            &id.to_string(),
            "duration",
            "1",
            "cycles",
            "instructions",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => return format!("bpftool could not run: {err}"),
    };
    while matches!(child.try_wait(), Ok(None)) {
        if let Err(err) = work() {
            return format!("the workload failed: {err:#}");
        }
    }
    match child.wait_with_output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        }
        Err(err) => format!("bpftool failed: {err}"),
    }
}

/// The mark of a user-space symbol in [`Profile::top`].
pub const USER: &str = "(user) ";

/// A perf profile of one case.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub case: String,
    pub samples: u64,
    /// (symbol, share of the samples in %), largest first, down to 1%. User-space symbols
    /// (the benchmark's own loop) are marked `(user) `.
    pub top: Vec<(String, f64)>,
    /// The profiled thread's CPU time in the samples (perf's event count for `cpu-clock`).
    pub cpu_ns: u64,
    /// Packets the profiled loop sent, for single-method profiles (one syscall per packet,
    /// all of it sampled); `None` for the repeat method, whose loop is all inside test runs.
    pub packets: Option<u64>,
}

impl Profile {
    /// The thread's CPU time per packet, for single-method profiles.
    pub fn ns_per_packet(&self) -> Option<f64> {
        self.packets
            .filter(|&p| p > 0)
            .map(|p| self.cpu_ns as f64 / p as f64)
    }

    /// One profile of several windows of the same case: samples added, every symbol's
    /// share weighted by its window's samples (symbols under 1% of a window count as 0
    /// there).
    pub fn merge(parts: &[Profile]) -> Option<Profile> {
        let first = parts.first()?;
        let total: u64 = parts.iter().map(|p| p.samples).sum();
        if total == 0 {
            return Some(first.clone());
        }
        let mut shares: Vec<(String, f64)> = Vec::new();
        for part in parts {
            let weight = part.samples as f64 / total as f64;
            for (symbol, percent) in &part.top {
                match shares.iter_mut().find(|(s, _)| s == symbol) {
                    Some(entry) => entry.1 += percent * weight,
                    None => shares.push((symbol.clone(), percent * weight)),
                }
            }
        }
        shares.retain(|(_, percent)| *percent >= 1.0);
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        let packets = parts.iter().filter_map(|p| p.packets).sum::<u64>();
        Some(Profile {
            case: first.case.clone(),
            samples: total,
            top: shares,
            cpu_ns: parts.iter().map(|p| p.cpu_ns).sum(),
            packets: parts.iter().any(|p| p.packets.is_some()).then_some(packets),
        })
    }
}

/// Samples CPU `cpu` with `perf record -e cpu-clock` for `seconds` while `work` runs
/// (over and over) on that CPU, in the calling thread; only that thread's samples (user
/// and kernel) are kept, so whatever else runs on the CPU meanwhile does not count.
pub fn perf_profile(
    case: &str,
    cpu: usize,
    seconds: f64,
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
            &format!("{seconds:.2}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running perf (apt package linux-perf)")?;
    // Only this thread's samples count: other work on the machine shares the CPU.
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
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
            "--tid",
            &tid.to_string(),
            "--percentage",
            "relative",
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
    let (samples, cpu_ns, top) = parse_report(&String::from_utf8_lossy(&report.stdout));
    Ok(Profile {
        case: case.to_owned(),
        samples,
        top,
        cpu_ns,
        packets: None,
    })
}

/// The sample count, the event count (for `cpu-clock`: ns of CPU time) and the (symbol, %)
/// lines of `perf report --stdio --sort sym`.
fn parse_report(text: &str) -> (u64, u64, Vec<(String, f64)>) {
    let mut samples = 0;
    let mut events = 0;
    let mut top = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# Event count (approx.): ") {
            events = rest.trim().parse().unwrap_or(0);
            continue;
        }
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
        let (marker, symbol) = rest.trim().split_once("] ").unwrap_or(("", rest.trim()));
        let symbol = symbol.trim();
        if marker.ends_with('.') {
            top.push((format!("{USER}{symbol}"), percent));
        } else {
            top.push((symbol.to_owned(), percent));
        }
    }
    (samples, events, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_of_one_case_merge_weighted_by_their_samples() {
        let part = |samples, top: &[(&str, f64)]| Profile {
            case: "new".to_owned(),
            samples,
            top: top.iter().map(|(s, p)| ((*s).to_owned(), *p)).collect(),
            cpu_ns: samples * 100_000,
            packets: Some(samples),
        };
        let merged = Profile::merge(&[
            part(1000, &[("a", 50.0), ("b", 30.0)]),
            part(3000, &[("a", 10.0), ("c", 2.0)]),
        ])
        .unwrap();
        assert_eq!(merged.samples, 4000);
        assert_eq!((merged.cpu_ns, merged.packets), (400_000_000, Some(4000)));
        assert_eq!(merged.ns_per_packet(), Some(100_000.0));
        assert_eq!(
            merged.top,
            vec![
                ("a".to_owned(), 20.0),
                ("b".to_owned(), 7.5),
                ("c".to_owned(), 1.5)
            ]
        );
    }

    #[test]
    fn a_perf_report_gives_its_sample_count_and_symbols() {
        let text = "# Samples: 29K of event 'cpu-clock'\n# Event count (approx.): 2903000000\n\
                    #\n# Overhead  Symbol\n\
                    #\n    41.20%  [k] bpf_prog_6deef7357e7b4530_xdp_lb\n\
                    \x20    9.05%  [k] htab_lru_map_lookup_elem\n\
                    \x20    1.20%  [.] xdp_lb_tests::bench::frames::ipv4\n\n";
        let (samples, cpu_ns, top) = parse_report(text);
        assert_eq!((samples, cpu_ns), (29_000, 2_903_000_000));
        assert_eq!(
            top,
            vec![
                ("bpf_prog_6deef7357e7b4530_xdp_lb".to_owned(), 41.2),
                ("htab_lru_map_lookup_elem".to_owned(), 9.05),
                ("(user) xdp_lb_tests::bench::frames::ipv4".to_owned(), 1.2)
            ]
        );
    }
}
