//! One check of one server: the kind's probe under the check's timeout, from a given
//! source address. A probe says what it saw: `Ok("HTTP 200")` or `Err("connect: connection
//! refused")`, the reason that ends up in logs and notifications.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    net::{TcpSocket, TcpStream},
    time::Instant,
};

use super::{Link, dsr, http, rtmp, tcp};
use crate::config::{CheckKind, HealthCheck, format_duration};

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

/// Runs one check of `check`'s kind against `address`, bound to `source` (or to whatever
/// the kernel picks when `None`), all within `check.timeout`.
pub async fn probe(check: &HealthCheck, address: IpAddr, source: Option<IpAddr>) -> Outcome {
    let deadline = Deadline::after(check.timeout);
    let to = SocketAddr::new(address, check.port);
    match &check.kind {
        CheckKind::Tcp => tcp::probe(&deadline, source, to).await,
        CheckKind::Http(http) => http::probe(&deadline, source, to, http).await,
        CheckKind::Rtmp => rtmp::probe(&deadline, source, to).await,
        CheckKind::Dsr => Err("the dsr check needs the server's link-layer path".to_owned()),
    }
}

/// Runs one `dsr` check: a SYN to `vip`:`check.port` framed for the server at `link`,
/// within `check.timeout`.
pub async fn probe_path(check: &HealthCheck, link: &Link, vip: IpAddr) -> Outcome {
    let deadline = Deadline::after(check.timeout);
    dsr::probe(&deadline, link, vip, check.port).await
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::HealthState;

    pub(crate) const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A check of `kind` on `port` of 127.0.0.1 with a timeout of `timeout_ms`.
    pub(crate) fn check(kind: CheckKind, port: u16, timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            kind,
            port,
            interval: Duration::from_millis(timeout_ms * 2),
            timeout: Duration::from_millis(timeout_ms),
            rise: 2,
            fall: 2,
            initial_state: HealthState::Up,
        }
    }

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
