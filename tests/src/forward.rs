//! A TCP port on the host forwarded into a lab namespace: how `cargo xtask run` makes the
//! agent's web console, inside the LB's namespace, reachable from a browser on the host.
//! Each accepted connection gets a connection of its own made from inside the namespace
//! (a socket keeps the namespace it was made in), and bytes are copied both ways.

use std::{
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::netns;

/// How long connecting inside the namespace may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A forwarded port; forwarding stops when it is dropped.
pub struct Forward {
    pub local: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Listens on `preferred` (or, when that is taken, any port of its address) and forwards
/// every connection to `target` inside namespace `ns`.
pub fn start(preferred: SocketAddr, ns: &str, target: SocketAddr) -> Result<Forward> {
    let listener = TcpListener::bind(preferred)
        .or_else(|_| TcpListener::bind(SocketAddr::new(preferred.ip(), 0)))
        .with_context(|| format!("listening on {}", preferred.ip()))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let ns = ns.to_owned();
    thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let ns = ns.clone();
                        thread::spawn(move || {
                            if let Err(err) = relay(client, &ns, target) {
                                eprintln!("forward to {target} in {ns}: {err:#}");
                            }
                        });
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(50));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(Forward { local, stop })
}

fn relay(client: TcpStream, ns: &str, target: SocketAddr) -> Result<()> {
    client.set_nonblocking(false)?;
    let server = netns::run_inside(ns, move || {
        TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to {target}"))
    })?;
    let (mut client_read, mut server_write) = (client.try_clone()?, server.try_clone()?);
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let _ = io::copy(&mut server_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}
