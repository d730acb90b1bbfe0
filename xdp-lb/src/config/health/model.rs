//! A validated check ([`HealthCheck`]: its [`CheckKind`], port, timing, rise and fall, and
//! the [`HealthState`] a server starts in) and the defaults a `health_check:` block falls
//! back on.

use std::{fmt, time::Duration};

/// Default time between two checks of one server.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Default time one check may take.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Default good checks in a row that bring a server back.
pub const DEFAULT_RISE: u32 = 3;

/// Default bad checks in a row that take a server out.
pub const DEFAULT_FALL: u32 = 2;

/// Default path of an `http` check.
pub const DEFAULT_HTTP_PATH: &str = "/";

/// Default status an `http` check expects.
pub const DEFAULT_HTTP_STATUS: u16 = 200;

/// How one server is checked, every default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// The server's port checked (by default the service's).
    pub port: u16,
    /// Time from the start of one check to the start of the next.
    pub interval: Duration,
    /// Time one check may take (shorter than `interval`).
    pub timeout: Duration,
    /// Good checks in a row that bring a down server up.
    pub rise: u32,
    /// Bad checks in a row that take an up server down (at least 2).
    pub fall: u32,
    /// The state a server is in before its first checks.
    pub initial_state: HealthState,
}

impl HealthCheck {
    /// The defaults: a TCP connect to `port` every second.
    pub fn default_for_port(port: u16) -> Self {
        Self {
            kind: CheckKind::Tcp,
            port,
            interval: DEFAULT_CHECK_INTERVAL,
            timeout: DEFAULT_CHECK_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            initial_state: HealthState::Up,
        }
    }
}

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 GET, answered with the expected status (and body substring).
    Http(HttpCheck),
    /// An RTMP handshake: C0+C1 out, a valid S0+S1 back.
    Rtmp,
    /// The path clients take: a SYN to VIP:port framed to the server's MAC, answered by a
    /// SYN-ACK from the VIP (IPv4 services).
    Dsr,
}

impl CheckKind {
    /// `tcp`, `http`, `rtmp` or `dsr`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(_) => "http",
            CheckKind::Rtmp => "rtmp",
            CheckKind::Dsr => "dsr",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// Starts with `/`; no spaces or control characters.
    pub path: String,
    pub expect_status: u16,
    /// A substring the body (its first 64 KiB) must contain; never empty.
    pub expect_body: Option<String>,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            path: DEFAULT_HTTP_PATH.to_owned(),
            expect_status: DEFAULT_HTTP_STATUS,
            expect_body: None,
        }
    }
}

/// A server's health as the checks decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthState {
    Up,
    Down,
}

impl HealthState {
    pub fn is_up(self) -> bool {
        self == HealthState::Up
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
        })
    }
}
