//! The agent's side of the control socket: accepts root's connections only, reads one
//! request per connection and hands it to the control loop, which owns all state.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::protocol::{Request, Response, parse_request};

/// A request waiting for the control loop, with where to send its answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most control connections served at once. One more is accepted, answered "busy"
/// and closed at once, so idle or slow clients can never take the agent's descriptors
/// (which the health checks and the data plane's maps need).
pub const MAX_CONNECTIONS: usize = 64;

/// The socket file, removed on drop.
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds `path` (mode 0600, its directory created 0700 when missing) and serves it until
/// the returned guard is dropped or the receiver goes away.
pub fn serve(path: &Path, requests: mpsc::Sender<Pending>) -> anyhow::Result<ControlSocket> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        // A live agent answers; a stale socket of a dead one does not.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another agent is already listening on {}", path.display());
        }
        fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    tokio::spawn(accept_loop(listener, requests));
    Ok(ControlSocket {
        path: path.to_path_buf(),
    })
}

async fn accept_loop(listener: UnixListener, requests: mpsc::Sender<Pending>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refused += 1;
                    // Logged at powers of two, so a flood does not flood the journal.
                    if refused.is_power_of_two() {
                        log::warn!(
                            "control socket: {refused} connection(s) refused so far: {MAX_CONNECTIONS} already open"
                        );
                    }
                    tokio::spawn(async move {
                        let busy = Response::error(format!(
                            "busy: {MAX_CONNECTIONS} control connections are open; try again"
                        ));
                        if let Ok(mut line) = serde_json::to_string(&busy) {
                            line.push('\n');
                            let _ = tokio::time::timeout(
                                Duration::from_secs(1),
                                stream.write_all(line.as_bytes()),
                            )
                            .await;
                        }
                    });
                    continue;
                };
                let requests = requests.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Err(err) = handle(stream, requests).await {
                        log::warn!("control connection: {err:#}");
                    }
                });
            }
            Err(err) => {
                log::warn!("control socket accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if requests.is_closed() {
            return;
        }
    }
}

async fn handle(mut stream: UnixStream, requests: mpsc::Sender<Pending>) -> anyhow::Result<()> {
    let uid = stream
        .peer_cred()
        .context("reading the peer's credentials")?
        .uid();
    let response = if uid != 0 {
        Response::error(format!(
            "refused: the control socket is root's (your uid is {uid})"
        ))
    } else {
        match read_request(&mut stream).await {
            Ok(request) => ask(&requests, request).await,
            Err(err) => Response::error(format!("bad request: {err:#}")),
        }
    };
    let mut line = serde_json::to_string(&response)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    Ok(())
}

/// Hands `request` to the control loop and waits for its answer (the metrics and
/// registration endpoints use it too).
pub async fn ask(requests: &mpsc::Sender<Pending>, request: Request) -> Response {
    let (tx, rx) = oneshot::channel();
    if requests.send((request, tx)).await.is_err() {
        return Response::error("the agent is shutting down");
    }
    rx.await
        .unwrap_or_else(|_| Response::error("the agent dropped the request"))
}

async fn read_request(stream: &mut UnixStream) -> anyhow::Result<Request> {
    let mut reader = BufReader::new(AsyncReadExt::take(stream, MAX_REQUEST as u64));
    let mut line = String::new();
    tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line))
        .await
        .context("no request within 10 s")??;
    if !line.ends_with('\n') && line.len() >= MAX_REQUEST {
        bail!("request longer than {MAX_REQUEST} bytes");
    }
    let request = parse_request(line.trim()).map_err(|e| anyhow::anyhow!("not a request: {e}"))?;
    request.check_names().map_err(|e| anyhow::anyhow!(e))?;
    Ok(request)
}
