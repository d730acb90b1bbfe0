//! One check of one server: the dispatcher that picks the kind's probe (a `Check`:
//! `tcp.rs`, `http.rs`, `rtmp.rs`, `dsr.rs`) and runs it under the check's timeout, from a
//! given source address. A probe says what it saw: `Ok("HTTP 200")` or `Err("connect:
//! connection refused")`, the reason that ends up in logs and notifications.

use std::net::{IpAddr, SocketAddr};

pub use super::check::{COULD_NOT_CHECK, Outcome, counted};
use super::{
    Link,
    check::{Check as _, Deadline},
    dsr::Dsr,
    http::Http,
    rtmp::Rtmp,
    tcp::Tcp,
};
use crate::config::{CheckKind, HealthCheck};

/// Runs one check of `check`'s kind against `address`, bound to `source` (or to whatever
/// the kernel picks when `None`), all within `check.timeout`.
pub async fn probe(check: &HealthCheck, address: IpAddr, source: Option<IpAddr>) -> Outcome {
    let deadline = Deadline::after(check.timeout);
    let to = SocketAddr::new(address, check.port);
    match &check.kind {
        CheckKind::Tcp => Tcp { source, to }.run(&deadline).await,
        CheckKind::Http(http) => Http { source, to, http }.run(&deadline).await,
        CheckKind::Rtmp => Rtmp { source, to }.run(&deadline).await,
        CheckKind::Dsr => Err("the dsr check needs the server's link-layer path".to_owned()),
    }
}

/// Runs one `dsr` check: a SYN to `vip`:`check.port` framed for the server at `link`,
/// within `check.timeout`.
pub async fn probe_path(check: &HealthCheck, link: &Link, vip: IpAddr) -> Outcome {
    let deadline = Deadline::after(check.timeout);
    let port = check.port;
    Dsr { link, vip, port }.run(&deadline).await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

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
}
