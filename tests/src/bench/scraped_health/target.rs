//! The health check's target: a TCP listener the benchmark opens and closes in a backend's
//! namespace, noting when every check connected. A `tcp` check passes while it listens and
//! is refused once it is closed.

use std::{
    net::{Ipv4Addr, TcpListener},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::netns;

/// When a check connected, and when the listener was closed right after it.
#[derive(Clone, Copy, Debug)]
pub struct Closed {
    pub accepted_at: Instant,
    pub closed_at: Instant,
}

struct Serving {
    stop: Arc<AtomicBool>,
    close_after_next: Arc<AtomicBool>,
    closed: mpsc::Receiver<Closed>,
    thread: thread::JoinHandle<()>,
}

pub struct CheckTarget {
    ns: String,
    port: u16,
    accepts: Arc<Mutex<Vec<Instant>>>,
    serving: Option<Serving>,
}

impl CheckTarget {
    pub fn new(ns: &str, port: u16) -> Self {
        Self {
            ns: ns.to_owned(),
            port,
            accepts: Arc::default(),
            serving: None,
        }
    }

    /// Starts listening (on every address of the namespace); returns when it listens.
    pub fn open(&mut self) -> Result<Instant> {
        if self.serving.is_some() {
            bail!("the check target is already open");
        }
        let port = self.port;
        // std binds with SO_REUSEADDR: the port closed a moment ago binds again.
        let listener = netns::run_inside(&self.ns, move || {
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                .with_context(|| format!("listening on port {port}"))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })?;
        let opened_at = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let close_after_next = Arc::new(AtomicBool::new(false));
        let (closed_tx, closed) = mpsc::channel();
        let accepts = self.accepts.clone();
        let (stopping, closing) = (stop.clone(), close_after_next.clone());
        let thread = thread::Builder::new()
            .name("check-target".into())
            .spawn(move || serve(listener, &accepts, &stopping, &closing, &closed_tx))
            .context("spawning the check target's thread")?;
        self.serving = Some(Serving {
            stop,
            close_after_next,
            closed,
            thread,
        });
        Ok(opened_at)
    }

    /// Closes the listener right after the next check connects (waiting `give_up` at
    /// most for one), so the next `fall` checks are refused.
    pub fn close_after_next_check(&mut self, give_up: Duration) -> Result<Closed> {
        let serving = self
            .serving
            .take()
            .ok_or_else(|| anyhow!("the check target is not open"))?;
        serving.close_after_next.store(true, Ordering::SeqCst);
        let closed = serving.closed.recv_timeout(give_up);
        serving.stop.store(true, Ordering::SeqCst);
        let _ = serving.thread.join();
        closed.map_err(|_| anyhow!("no check connected within {} s", give_up.as_secs()))
    }

    /// When checks connected, in order.
    pub fn accepts(&self) -> Vec<Instant> {
        self.accepts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for CheckTarget {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.stop.store(true, Ordering::SeqCst);
            let _ = serving.thread.join();
        }
    }
}

/// Accepts checks (waking on the listener, not on a timer, so the time noted is the
/// connection's) until told to stop, or until the first one after `close_after_next`.
fn serve(
    listener: TcpListener,
    accepts: &Mutex<Vec<Instant>>,
    stop: &AtomicBool,
    close_after_next: &AtomicBool,
    closed: &mpsc::Sender<Closed>,
) {
    super::raise_priority();
    while !stop.load(Ordering::SeqCst) {
        let mut fds = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut fds, 1, 20) } <= 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let accepted_at = Instant::now();
        drop(stream);
        accepts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(accepted_at);
        if close_after_next.load(Ordering::SeqCst) {
            drop(listener);
            let _ = closed.send(Closed {
                accepted_at,
                closed_at: Instant::now(),
            });
            return;
        }
    }
}
