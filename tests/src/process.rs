//! Background processes a lab owns ([`LabProcess`]) and the registry of those not reaped
//! yet, which the lab's teardown sweeps.

use std::os::unix::process::CommandExt;
use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::{describe, quote_output, signal_group};

/// How long a process gets to exit after SIGTERM before it is sent SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The pids of every lab process that has not been reaped yet. A pid is reaped only while
/// this lock is held, and removed in the same critical section, so a pid in the set can
/// never have been reused by an unrelated process.
#[derive(Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<BTreeSet<u32>>>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Signals every registered process group; returns how many there were.
    pub(crate) fn signal_all(&self, signal: libc::c_int) -> usize {
        let pids = self.lock();
        for &pid in pids.iter() {
            signal_group(pid, signal);
        }
        pids.len()
    }

    /// Whether every registered process has exited (zombies count as exited).
    pub(crate) fn all_exited(&self) -> bool {
        self.lock().iter().all(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| {
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(true)
        })
    }
}

/// A background process the lab started (see `Lab::spawn`). Dropping it kills it (SIGTERM,
/// then SIGKILL after 5 s); so does dropping the lab.
pub struct LabProcess {
    child: Child,
    label: String,
    stdout_path: PathBuf,
    stderr_path: Option<PathBuf>,
    status: Option<ExitStatus>,
    registry: Registry,
}

impl LabProcess {
    /// Starts `argv` with stdout to `stdout_path` and stderr to `stderr_path` (or to the
    /// same file when `None`), in a process group of its own, registered in `registry`.
    pub(crate) fn start(
        argv: &[&str],
        env: &[(&str, &str)],
        stdout_path: &Path,
        stderr_path: Option<&Path>,
        registry: &Registry,
    ) -> Result<Self> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| anyhow!("empty command line"))?;
        let what = describe(argv);
        let stdout = File::options()
            .create(true)
            .append(true)
            .open(stdout_path)
            .with_context(|| format!("opening {}", stdout_path.display()))?;
        let stderr = match stderr_path {
            Some(path) => File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
            None => stdout.try_clone().context("duplicating a file handle")?,
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let mut pids = registry.lock();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{what}`"))?;
        pids.insert(child.id());
        drop(pids);
        Ok(Self {
            child,
            label: what,
            stdout_path: stdout_path.to_owned(),
            stderr_path: stderr_path.map(Path::to_owned),
            status: None,
            registry: registry.clone(),
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with.
    pub fn command_line(&self) -> &str {
        &self.label
    }

    /// The file its stdout goes to (and its stderr, when they share one).
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Its exit status, if it has exited (reaping it).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let mut pids = self.registry.lock();
        let status = self
            .child
            .try_wait()
            .with_context(|| format!("checking on `{}`", self.label))?;
        if status.is_some() {
            pids.remove(&self.child.id());
            self.status = status;
        }
        Ok(status)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to it and its process group, if it still runs.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        let pids = self.registry.lock();
        if self.status.is_none() && pids.contains(&self.child.id()) {
            signal_group(self.child.id(), signal);
        }
        Ok(())
    }

    /// Stops it: SIGTERM, then SIGKILL if it has not exited within 5 s. Returns its exit
    /// status (at once when it had exited already).
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL)?;
        let deadline = Instant::now() + TERM_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "`{}` (pid {}) survived SIGKILL for 5 s",
            self.label,
            self.pid()
        )
    }

    /// Waits at most `timeout` for it to exit and returns its status and everything it
    /// wrote. On timeout this fails and the process keeps running (call [`Self::kill`]).
    pub fn wait_with_timeout(&mut self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = self.try_status()? {
                break status;
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` still runs after {:.1} s; its output so far: {}",
                    self.label,
                    timeout.as_secs_f64(),
                    quote_output(self.stdout().as_bytes())
                );
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        Ok(Output {
            status,
            stdout: self.stdout().into_bytes(),
            stderr: self.stderr().into_bytes(),
        })
    }

    /// What it has written to stdout so far (with stderr, when they share a file).
    pub fn stdout(&self) -> String {
        std::fs::read(&self.stdout_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What it has written to stderr so far (empty when stderr goes to the stdout file).
    pub fn stderr(&self) -> String {
        self.stderr_path
            .as_ref()
            .and_then(|path| std::fs::read(path).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if let Err(err) = self.kill() {
            eprintln!("xdp-lb lab: stopping a process: {err:#}");
        }
    }
}

impl std::fmt::Debug for LabProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabProcess")
            .field("pid", &self.child.id())
            .field("command", &self.label)
            .field("status", &self.status)
            .finish()
    }
}
