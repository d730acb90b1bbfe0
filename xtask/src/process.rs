//! Running commands: captured (for checks and installs, quoted in errors) or attached to
//! the terminal (builds, tests, the agent), and the PATH they all run with.

use std::{
    env,
    ffi::OsString,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::PathBuf,
    process::{Command, ExitStatus, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Prints a step header.
pub fn step(what: &str) {
    println!("==> {what}");
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts bpf-linker.
fn cargo_bin_dir() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// PATH for every command xtask runs: the inherited one, with `$CARGO_HOME/bin` appended
/// when missing (so a bpf-linker installed by `deps` is found by the build).
pub fn tool_path() -> OsString {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.push(bin);
    }
    env::join_paths(dirs).unwrap_or_else(|_| env::var_os("PATH").unwrap_or_default())
}

/// A command with xtask's PATH and no standard input.
pub fn command(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).env("PATH", tool_path()).stdin(Stdio::null());
    cmd
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// "exit status 3" or "killed by signal 9".
fn status_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The exit code a shell would report for `status` (128 + signal when killed).
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// The last 3000 bytes of some output, trimmed, for an error message.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".to_owned();
    }
    let mut start = text.len().saturating_sub(3000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Runs `cmd` with its output captured; a non-zero exit is not an error here.
///
/// A binary this process has just written may be refused with ETXTBSY ("Text file busy")
/// for a moment: a thread that forked meanwhile holds the file's write descriptor until its
/// child execs (the tests write and run binaries from several threads). That is retried.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    let mut tries = 0;
    loop {
        match cmd.output() {
            Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => {
                return result.with_context(|| format!("cannot run `{}`", describe(cmd)));
            }
        }
    }
}

/// Runs `cmd` with its output captured and returns its stdout; fails with its stderr (and
/// stdout) when it exits non-zero.
pub fn capture_ok(cmd: &mut Command) -> Result<String> {
    capture_bytes_ok(cmd).map(|stdout| String::from_utf8_lossy(&stdout).into_owned())
}

/// [`capture_ok`], keeping stdout as bytes.
pub fn capture_bytes_ok(cmd: &mut Command) -> Result<Vec<u8>> {
    let output = capture(cmd)?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}); stderr: {}; stdout: {}",
            describe(cmd),
            status_text(output.status),
            tail(&output.stderr),
            tail(&output.stdout)
        );
    }
    Ok(output.stdout)
}

/// Runs `cmd` attached to the terminal; its exit status.
pub fn attached(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Runs `cmd` attached to the terminal and fails unless it succeeds (its stderr went to
/// the terminal, above the error).
pub fn attached_ok(cmd: &mut Command) -> Result<()> {
    let status = attached(cmd)?;
    if !status.success() {
        bail!(
            "`{}` failed ({}); its stderr is above",
            describe(cmd),
            status_text(status)
        );
    }
    Ok(())
}

/// Runs `cmd` in a process group of its own, attached to the terminal's output, passing on
/// every SIGINT and SIGTERM xtask receives (so Ctrl-C reaches it exactly once, and it gets
/// to clean up); returns its exit code.
pub fn forwarding_signals(cmd: &mut Command) -> Result<i32> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let terminated = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted))
        .context("installing a SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&terminated))
        .context("installing a SIGTERM handler")?;
    let mut child = cmd
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).context("a pid out of range")?);
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{}`", describe(cmd)))?
        {
            return Ok(exit_code(status));
        }
        for (flag, signal) in [
            (&interrupted, Signal::SIGINT),
            (&terminated, Signal::SIGTERM),
        ] {
            if flag.swap(false, Ordering::Relaxed) {
                // The child is not reaped yet, so its pid is still its own.
                let _ = kill(pid, signal);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}
