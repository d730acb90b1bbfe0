//! Owner records of labs, so that a lab whose process died without tearing it down (a
//! SIGKILL, a test-runner timeout) is cleaned up by the next lab that comes up.
//!
//! Each lab claims its id by creating `/run/xdp-lb-lab/<id>` (atomically: `create_new`),
//! holding the owner's pid and start time. A record whose owner is gone is stale: the
//! namespaces `<id>-*` are emptied and deleted, the lab directory removed, the record too.

use std::{
    fs,
    io::{ErrorKind, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::netns;

/// Where the owner records live.
pub const RECORD_DIR: &str = "/run/xdp-lb-lab";

fn record_path(id: &str) -> PathBuf {
    Path::new(RECORD_DIR).join(id)
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), which
/// tells a process from a later one that got the same pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Claims lab id `id` for this process; `Ok(false)` when another record holds it.
pub(crate) fn claim(id: &str) -> Result<bool> {
    fs::create_dir_all(RECORD_DIR).with_context(|| format!("creating {RECORD_DIR}"))?;
    let path = record_path(id);
    let mut file = match fs::File::options().write(true).create_new(true).open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::AlreadyExists => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
    };
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    writeln!(file, "{pid} {start}").with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// Gives lab id `id` up (after its teardown).
pub(crate) fn release(id: &str) -> Result<()> {
    let path = record_path(id);
    match fs::remove_file(&path) {
        Err(err) if err.kind() != ErrorKind::NotFound => {
            Err(err).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Whether the owner a record names is still alive.
fn owner_alive(record: &str) -> bool {
    let mut words = record.split_whitespace();
    let (Some(pid), Some(start)) = (
        words.next().and_then(|w| w.parse::<u32>().ok()),
        words.next().and_then(|w| w.parse::<u64>().ok()),
    ) else {
        // Half-written by a claim in progress (or garbage): leave it alone unless it is old.
        return false;
    };
    start_time(pid).is_some_and(|now| start == 0 || now == start)
}

/// Tears down every lab whose owner process is gone; returns their ids. Labs of live
/// processes (this one included) are left alone.
pub fn reap_stale_labs() -> Result<Vec<String>> {
    let entries = match fs::read_dir(RECORD_DIR) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("listing {RECORD_DIR}")),
    };
    let mut reaped = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {RECORD_DIR}"))?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let record = fs::read_to_string(entry.path()).unwrap_or_default();
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 10);
        if owner_alive(&record) || (record.is_empty() && young) {
            continue;
        }
        let prefix = format!("{id}-");
        for ns in netns::list()?
            .into_iter()
            .filter(|ns| ns.starts_with(&prefix))
        {
            netns::kill_all_inside(&ns)?;
            netns::delete(&ns)?;
        }
        let tmp = std::env::temp_dir();
        if let Ok(dirs) = fs::read_dir(&tmp) {
            let dir_prefix = format!("xdp-lb-lab-{id}-");
            for dir in dirs.flatten() {
                if dir
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&dir_prefix))
                {
                    // A dead lab's bpffs (its agents' pins) goes first.
                    let bpf = dir.path().join("bpf");
                    if bpf.exists() {
                        let _ = crate::cmd::run(
                            &["umount", "-l", &bpf.to_string_lossy()],
                            crate::EXEC_TIMEOUT,
                        );
                    }
                    fs::remove_dir_all(dir.path())
                        .with_context(|| format!("removing {}", dir.path().display()))?;
                }
            }
        }
        release(&id)?;
        reaped.push(id);
    }
    Ok(reaped)
}
