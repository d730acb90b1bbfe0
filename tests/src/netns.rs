//! Named network namespaces (`ip netns`): creating, entering from a thread, emptying and
//! deleting them, and attaching the `xdp_pass` program inside one.

use std::{
    fs::File,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};

use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::cmd::{self, EXEC_TIMEOUT};

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// The file that names namespace `ns`.
pub fn path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Whether a namespace named `ns` exists.
pub fn exists(ns: &str) -> bool {
    path(ns).exists()
}

/// Every named namespace (`ip netns list`, names only).
pub fn list() -> Result<Vec<String>> {
    let out = cmd::run_ok(&["ip", "netns", "list"], EXEC_TIMEOUT)?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Creates namespace `ns`.
pub fn add(ns: &str) -> Result<()> {
    cmd::run_ok(&["ip", "netns", "add", ns], EXEC_TIMEOUT).map(drop)
}

/// Deletes namespace `ns` (its interfaces go with it once no process is left inside).
pub fn delete(ns: &str) -> Result<()> {
    cmd::run_ok(&["ip", "netns", "delete", ns], EXEC_TIMEOUT).map(drop)
}

/// The pids of the processes inside namespace `ns` (`ip netns pids`).
pub fn pids(ns: &str) -> Result<Vec<i32>> {
    let out = cmd::run_ok(&["ip", "netns", "pids", ns], EXEC_TIMEOUT)?;
    out.split_whitespace()
        .map(|word| {
            word.parse::<i32>()
                .with_context(|| format!("`ip netns pids {ns}` printed `{word}`, not a pid"))
        })
        .collect()
}

/// Kills (SIGKILL) every process inside namespace `ns` except this one, and waits up to 5 s
/// for them to be gone.
pub fn kill_all_inside(ns: &str) -> Result<()> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Zombies no longer hold the namespace; `ip netns pids` does not list them either
        // once their namespace reference is released.
        let left: Vec<i32> = pids(ns)?.into_iter().filter(|&pid| pid != me).collect();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("processes {left:?} are still inside namespace {ns} after SIGKILL");
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Moves the CALLING THREAD into namespace `ns`. Only ever call this on a thread of its own.
fn enter(ns: &str) -> Result<()> {
    let file = File::open(path(ns)).with_context(|| format!("opening {}", path(ns).display()))?;
    // setns(2) changes only the calling thread.
    setns(&file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns into network namespace {ns}"))
}

/// Runs `f` on this thread inside namespace `ns`, then brings the thread back to the
/// namespace it was in (for work that cannot move to another thread, such as running a
/// loaded program whose handle is not `Send`).
pub fn on_this_thread<T>(ns: &str, f: impl FnOnce() -> T) -> Result<T> {
    let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    enter(ns)?;
    let out = f();
    setns(&home, CloneFlags::CLONE_NEWNET).context("setns back into the thread's own netns")?;
    Ok(out)
}

/// Runs `f` on a new thread that has entered namespace `ns`, and returns its result.
pub fn run_inside<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let owned = ns.to_owned();
    thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            enter(&owned)?;
            f()
        })
        .context("spawning a thread to enter a network namespace")?
        .join()
        .map_err(|_| anyhow!("the thread working inside namespace {ns} panicked"))?
}

/// Loads the `xdp_pass` program from the data plane object and attaches it to `ifname`
/// inside namespace `ns`. The program stays attached while the returned [`Ebpf`] lives; drop
/// it with [`drop_inside`].
pub fn attach_xdp_pass(ns: &str, ifname: &str) -> Result<Ebpf> {
    let ifname = ifname.to_owned();
    let ns_owned = ns.to_owned();
    run_inside(ns, move || {
        let mut ebpf = Ebpf::load(xdp_lb::EBPF_OBJECT).context(
            "loading the data plane object xdp_lb::EBPF_OBJECT (is it built, and are we root?)",
        )?;
        let program: &mut Xdp = ebpf
            .program_mut("xdp_pass")
            .ok_or_else(|| anyhow!("the data plane object has no program named `xdp_pass`"))?
            .try_into()
            .context("`xdp_pass` in the data plane object is not an XDP program")?;
        program
            .load()
            .context("loading `xdp_pass` into the kernel")?;
        program
            .attach(&ifname, XdpMode::Default)
            .with_context(|| format!("attaching `xdp_pass` to {ifname} in namespace {ns_owned}"))?;
        Ok(ebpf)
    })
}

/// Drops `ebpf` (detaching its programs) from inside namespace `ns`, so that a detach that
/// goes through netlink finds the right interface.
pub fn drop_inside(ns: &str, ebpf: Ebpf) -> Result<()> {
    run_inside(ns, move || {
        drop(ebpf);
        Ok(())
    })
}
