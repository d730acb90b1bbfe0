//! Faults a test injects into a running [`Lab`]: a backend's nginx stopped gracefully and
//! started again, a listener that accepts TCP but never says a word (a hung server), and a
//! backend that lost the VIP from its `lo` (the classic LVS/DR mistake).

use std::{
    fs::File,
    net::{Ipv4Addr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use nix::sched::{CloneFlags, setns};

use crate::{Lab, netns};

/// How long a graceful nginx stop may take before it is an error.
const QUIT_TIMEOUT: Duration = Duration::from_secs(15);

impl Lab {
    /// Asks backend `i`'s (0-based) nginx to quit gracefully (`nginx -s quit`: it stops
    /// listening at once, lets the sessions it has finish, then exits) and returns without
    /// waiting; see [`Self::wait_backend_nginx_stopped`].
    pub fn quit_backend_nginx(&self, i: usize) -> Result<()> {
        ensure!(i < self.backends, "lab {} has no backend {i}", self.id);
        let nginx = &self.nginx[i];
        let conf = nginx.conf_path();
        let prefix = format!("{}/", nginx.prefix.display());
        let conf = conf
            .to_str()
            .ok_or_else(|| anyhow!("{} is not UTF-8", conf.display()))?;
        self.exec_ok(
            self.ns_backend(i),
            &["nginx", "-s", "quit", "-c", conf, "-p", &prefix],
        )
        .with_context(|| format!("stopping nginx on {}", Lab::backend_name(i)))?;
        Ok(())
    }

    /// Waits until backend `i`'s nginx master has exited (after [`Self::quit_backend_nginx`]).
    pub fn wait_backend_nginx_stopped(&self, i: usize) -> Result<()> {
        ensure!(i < self.backends, "lab {} has no backend {i}", self.id);
        let Some(pid) = self.nginx[i].pid else {
            return Ok(());
        };
        let deadline = Instant::now() + QUIT_TIMEOUT;
        while nginx_alive(pid) {
            if Instant::now() >= deadline {
                bail!(
                    "nginx on {} (pid {pid}) still runs {QUIT_TIMEOUT:?} after quit",
                    Lab::backend_name(i)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Removes the VIP from backend `i`'s `lo`: the server still answers on its own address
    /// (every check of it passes) but drops every frame a client sends through the LB.
    pub fn remove_backend_vip(&self, i: usize) -> Result<()> {
        ensure!(i < self.backends, "lab {} has no backend {i}", self.id);
        let vip = format!("{}/32", Self::VIP);
        self.exec_ok(
            &self.ns_backends[i],
            &["ip", "addr", "del", &vip, "dev", "lo"],
        )?;
        Ok(())
    }

    /// Removes the IPv6 VIP from backend `i`'s lo (a lab with `ipv6`).
    pub fn remove_backend_vip6(&self, i: usize) -> Result<()> {
        ensure!(i < self.backends, "lab {} has no backend {i}", self.id);
        ensure!(self.ipv6, "lab {} has no IPv6", self.id);
        let vip = format!("{}/128", Self::VIP6);
        self.exec_ok(
            &self.ns_backends[i],
            &["ip", "addr", "del", &vip, "dev", "lo"],
        )?;
        Ok(())
    }

    /// [`Self::quit_backend_nginx`], then [`Self::wait_backend_nginx_stopped`].
    pub fn stop_backend_nginx(&self, i: usize) -> Result<()> {
        self.quit_backend_nginx(i)?;
        self.wait_backend_nginx_stopped(i)
    }

    /// Starts backend `i`'s nginx again (same configuration); it listens when this returns.
    pub fn start_backend_nginx(&mut self, i: usize) -> Result<()> {
        ensure!(i < self.backends, "lab {} has no backend {i}", self.id);
        self.nginx[i].start()
    }

    /// A listener on `port` of every address of backend `i` that accepts connections and
    /// never answers: a server whose process is hung but whose kernel still completes TCP
    /// handshakes. It stops when the returned handle drops. Backend `i`'s nginx must not
    /// hold the port (stop it first).
    pub fn hung_listener(&self, i: usize, port: u16) -> Result<HungListener> {
        ensure!(i < self.backends, "lab {} has no backend {i}", self.id);
        HungListener::start(self.ns_backend(i), port)
    }
}

/// Whether `pid` is an nginx process that has not exited (a zombie counts as exited).
fn nginx_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.contains("(nginx)")
            && stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// See [`Lab::hung_listener`].
pub struct HungListener {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    port: u16,
}

impl HungListener {
    fn start(ns: &str, port: u16) -> Result<Self> {
        let file =
            File::open(netns::path(ns)).with_context(|| format!("opening namespace {ns}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let stopping = stop.clone();
        let thread = thread::Builder::new()
            .name(format!("hung-{ns}-{port}"))
            .spawn(move || {
                // setns(2) moves only this thread.
                if let Err(err) = setns(&file, CloneFlags::CLONE_NEWNET) {
                    let _ =
                        ready_tx.send(Err(anyhow!("setns into the backend's namespace: {err}")));
                    return;
                }
                let listener = match bind_soon((Ipv4Addr::UNSPECIFIED, port)) {
                    Ok(listener) => listener,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                hold_connections(&listener, &stopping);
            })
            .context("spawning the hung listener's thread")?;
        match ready_rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Ok(())) => Ok(Self {
                stop,
                thread: Some(thread),
                port,
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => bail!("the hung listener on port {port} did not start within 15 s"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Binds `addr`, retrying for a while: a server just stopped may still hold the port.
fn bind_soon(addr: (Ipv4Addr, u16)) -> Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .context("a non-blocking listener")?;
                return Ok(listener);
            }
            Err(err)
                if Instant::now() < deadline && err.kind() == std::io::ErrorKind::AddrInUse =>
            {
                thread::sleep(Duration::from_millis(50));
            }
            Err(err) => return Err(err).with_context(|| format!("binding port {}", addr.1)),
        }
    }
}

/// Accepts every connection and keeps it open, silent, until `stop`.
fn hold_connections(listener: &TcpListener, stop: &AtomicBool) {
    let mut held: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => held.push(conn),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
        // Connections the peer gave up on are dropped; the rest stay open.
        held.retain(|conn| {
            let mut byte = [0u8; 1];
            conn.set_nonblocking(true).is_ok() && !matches!(conn.peek(&mut byte), Ok(0))
        });
    }
}

impl Drop for HungListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
