//! Running commands under a deadline.
//!
//! Every command's stdout and stderr go to files, never to pipes: a command that leaves a
//! daemon behind (nginx) can then never keep a reader blocked. Every child is started in
//! a process group of its own, so a timeout kills what it started too, and a Ctrl-C at the
//! terminal reaches only the program driving the lab, which then tears the lab down.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};

/// How long [`run`] and `Lab::exec` let a command run before killing it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// A command line as one would type it (for messages).
pub fn describe(argv: &[&str]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains([' ', '\'', '"', '$', '*']) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                (*a).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `argv` and waits for it at most `timeout`; on timeout it is killed (with its whole
/// process group) and this fails. A non-zero exit is NOT an error here: see [`check`].
pub fn run(argv: &[&str], timeout: Duration) -> Result<Output> {
    run_env(argv, &[], timeout)
}

/// [`run`] with extra environment variables.
pub fn run_env(argv: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<Output> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("empty command line"))?;
    let what = describe(argv);
    let mut stdout = tempfile::tempfile().context("creating a temporary file for stdout")?;
    let mut stderr = tempfile::tempfile().context("creating a temporary file for stderr")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().context("duplicating a file handle")?)
        .stderr(stderr.try_clone().context("duplicating a file handle")?)
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    let status = match wait_until(&mut child, Instant::now() + timeout)
        .with_context(|| format!("waiting for `{what}`"))?
    {
        Some(status) => status,
        None => {
            signal_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            let err = read_from_start(&mut stderr).unwrap_or_default();
            bail!(
                "`{what}` did not finish within {} s and was killed; its stderr: {}",
                timeout.as_secs(),
                quote_output(&err)
            );
        }
    };
    Ok(Output {
        status,
        stdout: read_from_start(&mut stdout).context("reading a command's stdout")?,
        stderr: read_from_start(&mut stderr).context("reading a command's stderr")?,
    })
}

/// Fails, naming the command and quoting its stderr, unless `output` is a success; returns
/// its stdout.
pub fn check(argv: &[&str], output: Output) -> Result<String> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let mut message = format!(
        "`{}` failed ({}); stderr: {}",
        describe(argv),
        status_text(output.status),
        quote_output(&output.stderr)
    );
    if output.stderr.iter().all(u8::is_ascii_whitespace) && !output.stdout.is_empty() {
        message.push_str(&format!("; stdout: {}", quote_output(&output.stdout)));
    }
    Err(anyhow!(message))
}

/// [`run`] then [`check`]: the stdout of a command that must succeed.
pub fn run_ok(argv: &[&str], timeout: Duration) -> Result<String> {
    check(argv, run(argv, timeout)?)
}

/// "exit status 3" or "killed by signal 9".
pub fn status_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Command output for a message: trimmed, lossy UTF-8, "(empty)" when there is none, and
/// only the last 4000 bytes of a long one.
pub fn quote_output(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".to_owned();
    }
    let mut start = text.len().saturating_sub(4000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    if start > 0 {
        format!("...{}", &text[start..])
    } else {
        text.to_owned()
    }
}

fn read_from_start(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Polls `child` until it exits (its status) or `deadline` passes (`None`).
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Sends `signal` to the process group led by `pid` and to `pid` itself. Errors (the
/// process is already gone) are of no interest to a caller that wants it gone.
pub(crate) fn signal_group(pid: u32, signal: libc::c_int) {
    let (Ok(pid), Ok(signal)) = (i32::try_from(pid), Signal::try_from(signal)) else {
        return;
    };
    let pid = Pid::from_raw(pid);
    let _ = killpg(pid, signal);
    let _ = kill(pid, signal);
}
