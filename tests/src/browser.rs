//! A headless Chromium inside a lab namespace, driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by a NUL byte, commands on the browser's
//! fd 3, answers and events on its fd 4). Enough to load a page, read its DOM as it
//! renders (real time: the page's own timers and fetches run as they would for a person)
//! and take a screenshot.

use std::{
    io::{BufRead as _, BufReader, PipeReader, PipeWriter, Write as _},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::Lab;

/// How long one DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The flags every run gets: headless, as root, nothing fetched but the page.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

/// A running browser with one page; killed (with its profile removed) on drop.
pub struct Browser {
    child: Child,
    commands: PipeWriter,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium in namespace `ns` of `lab` with a `width` x `height` window and
    /// opens `url` in it.
    pub fn open(lab: &Lab, ns: &str, url: &str, width: u32, height: u32) -> Result<Self> {
        let profile = tempfile::Builder::new()
            .prefix("chromium-")
            .tempdir_in(lab.dir())
            .context("creating the browser's profile directory")?;
        let (browser_reads, commands) = std::io::pipe()?;
        let (messages_in, browser_writes) = std::io::pipe()?;
        let (read_fd, write_fd) = (browser_reads.as_raw_fd(), browser_writes.as_raw_fd());
        ensure!(
            read_fd > 4 && write_fd > 4,
            "the pipe's descriptors {read_fd} and {write_fd} would clash with fds 3 and 4"
        );
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, "chromium"])
            .args(CHROMIUM_FLAGS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: between fork and exec only dup2(2), which is async-signal-safe, on
        // descriptors this process owns; dup2 clears close-on-exec on the copies.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(read_fd, 3) < 0 || libc::dup2(write_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .context("starting chromium (installed by `cargo xtask deps`)")?;
        drop((browser_reads, browser_writes));
        let mut browser = Self {
            child,
            commands,
            messages: read_messages(messages_in),
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": url }))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.createTarget answered {target}"))?
            .to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.attachToTarget answered {attached}"))?
            .to_owned();
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        Ok(browser)
    }

    /// Sends a command (to the page's session, or the browser's with `None`) and waits for
    /// its answer's `result`, skipping the events that come meanwhile.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .with_context(|| format!("sending {method} to chromium"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.messages.recv_timeout(left) {
                Ok(answer) => answer,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("chromium did not answer {method} within {COMMAND_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "chromium closed its DevTools pipe (it exited?) before answering {method}"
                    )
                }
            };
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                bail!("chromium refused {method}: {error}");
            }
            return Ok(answer["result"].clone());
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Result<Value> {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// The value of a JavaScript expression evaluated in the page.
    pub fn eval(&mut self, expression: &str) -> Result<Value> {
        let result = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(thrown) = result.get("exceptionDetails") {
            bail!("evaluating `{expression}` threw: {thrown}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// The page as it is rendered now, as a PNG file at `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| anyhow!("Page.captureScreenshot answered no data"))?;
        let png = base64_decode(data).context("decoding the screenshot")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromium's own helper processes too.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// A thread reading NUL-ended JSON messages off the browser's pipe into a channel.
fn read_messages(pipe: PipeReader) -> Receiver<Value> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(0, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if buf.last() == Some(&0) {
                        buf.pop();
                    }
                    if let Ok(message) = serde_json::from_slice::<Value>(&buf)
                        && tx.send(message).is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Standard base64 (what DevTools sends binary data as).
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let value = |c: u8| -> Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            other => bail!("{:?} is not a base64 character", other as char),
        }
        .into())
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut word = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            word |= value(c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => bail!("a base64 text cannot end with a single character"),
        };
        out.extend_from_slice(&word.to_be_bytes()[1..=take]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(base64_decode("aA==").unwrap(), b"h");
        assert!(base64_decode("a").is_err());
        assert!(base64_decode("a*==").is_err());
    }
}
