//! One check, whatever its kind: the [`Check`] trait every kind implements (`tcp.rs`,
//! `http.rs`, `rtmp.rs`, `dsr.rs`), what a check concludes ([`Outcome`]), the [`Deadline`]
//! every step of it runs under, and the [`Link`] a `dsr` check frames its SYN for. The kinds
//! import only this file; the dispatcher (`probe.rs`) imports them and this, so nothing
//! imports in a circle.

use std::{
    future::Future,
    hash::{BuildHasher as _, Hasher as _},
    io,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use tokio::{
    net::{TcpSocket, TcpStream},
    time::Instant,
};

use crate::config::{MacAddr, format_duration};

/// One kind of check, as the dispatcher (`probe.rs`) runs it: a small value saying where
/// the check goes (and, for `http`, what it asks), run once within a deadline.
pub(crate) trait Check {
    /// Checks the server once, every step cut off at `deadline`: what it saw, or why not.
    async fn run(self, deadline: &Deadline) -> Outcome;
}

/// What one check concluded: what it saw when good, why not when bad.
pub type Outcome = Result<String, String>;

/// How the reason of a check that failed on the LB's own side begins: no descriptor, no
/// buffer, no memory, no local port left. Such a check says nothing about the server, so it
/// is shown but never counted towards a verdict (22,000 idle clients exhausting the
/// agent's descriptors must not take a serving backend out).
pub const COULD_NOT_CHECK: &str = "could not check (the LB's own resources): ";

/// Whether `outcome` counts towards the server's verdict: `Some(passed)`, or `None` for a
/// check that could not be made ([`COULD_NOT_CHECK`]).
pub fn counted(outcome: &Outcome) -> Option<bool> {
    match outcome {
        Ok(_) => Some(true),
        Err(why) if why.starts_with(COULD_NOT_CHECK) => None,
        Err(_) => Some(false),
    }
}

/// Whether `err` is the LB's own shortage rather than anything the server did.
fn is_local(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// The end of one check: every step is cut off there, and says which step it was.
pub(crate) struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    pub(crate) fn after(budget: Duration) -> Self {
        let now = Instant::now();
        // A budget too large to add to the clock is a day: no check waits that long.
        let at = now
            .checked_add(budget)
            .or_else(|| now.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(now);
        Self { at, budget }
    }

    /// `step`, or why it failed: `"{what}: {io error}"` or `"{what}: timed out (800ms)"`.
    pub(crate) async fn run<T>(
        &self,
        what: &str,
        step: impl Future<Output = io::Result<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout_at(self.at, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) if is_local(&err) => {
                Err(format!("{COULD_NOT_CHECK}{what}: {}", io_reason(&err)))
            }
            Ok(Err(err)) => Err(format!("{what}: {}", io_reason(&err))),
            Err(_) => Err(format!(
                "{what}: timed out ({} check timeout)",
                format_duration(self.budget)
            )),
        }
    }

    /// A TCP connection to `to` from `source` (port chosen by the kernel).
    pub(crate) async fn connect(
        &self,
        source: Option<IpAddr>,
        to: SocketAddr,
    ) -> Result<TcpStream, String> {
        self.run("connect", async {
            let socket = if to.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(source) = source {
                socket.bind(SocketAddr::new(source, 0))?;
            }
            socket.connect(to).await
        })
        .await
    }
}

/// An I/O error for a reason line: the OS's words without "(os error N)", lower-cased
/// as the kernel's own messages read in logs ("connection refused").
pub(crate) fn io_reason(err: &io::Error) -> String {
    let text = err.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", err.kind()),
    }
}

/// The LB's way to a server on the wire: what the data plane would frame a client's packet
/// with, and the LB's own address on that interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The LB's interface towards the server.
    pub ifindex: u32,
    /// That interface's MAC.
    pub src_mac: MacAddr,
    /// The server's MAC.
    pub mac: MacAddr,
    /// The LB's own address to send from.
    pub source: IpAddr,
}

/// A random number, for jitter and RTMP's C1: std's per-process random hash keys over a
/// counter and the clock (nothing here needs to be unpredictable to an attacker).
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_shortage_is_not_counted_against_the_server() {
        let deadline = Deadline::after(Duration::from_secs(1));
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let outcome: Outcome = deadline
                .run("connect", async {
                    Err::<(), _>(io::Error::from_raw_os_error(errno))
                })
                .await
                .map(|()| String::new());
            assert_eq!(counted(&outcome), None, "{outcome:?}");
            assert!(outcome.unwrap_err().starts_with(COULD_NOT_CHECK));
        }
        let refused: Outcome = deadline
            .run("connect", async {
                Err::<(), _>(io::Error::from_raw_os_error(libc::ECONNREFUSED))
            })
            .await
            .map(|()| String::new());
        assert_eq!(counted(&refused), Some(false));
        assert_eq!(counted(&Ok("HTTP 200".to_owned())), Some(true));
    }

    #[test]
    fn io_errors_read_as_the_kernels_words() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_reason(&refused), "connection refused");
    }
}
