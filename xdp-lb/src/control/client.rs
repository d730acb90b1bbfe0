//! The subcommands' side of the control socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, anyhow};

use super::protocol::{Request, Response};

/// How long a request may take (a reload resolves backends: allow for ARP timeouts).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one request to the agent and returns its answer.
pub fn call(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow!(
            "no agent is listening on {} ({err}); is `xdp-lb` running (with this --socket)?",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => {
            anyhow!(
                "{}: permission denied: the control socket is root's",
                socket.display()
            )
        }
        _ => anyhow!("connecting to {}: {err}", socket.display()),
    })?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .context("sending the request")?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the agent's answer")?;
    if answer.is_empty() {
        return Err(anyhow!("the agent closed the connection without answering"));
    }
    serde_json::from_str(&answer)
        .with_context(|| format!("the agent's answer is not understood: {answer}"))
}
