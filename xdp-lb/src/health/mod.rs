//! Health checks: one checker task per (service, server), run concurrently on tokio.
//!
//! * A check is described by [`HealthCheck`](crate::config::HealthCheck) (its kind, port,
//!   timing, rise and fall); [`probe::probe`] runs one (`tcp.rs`, `http.rs`, `rtmp.rs`,
//!   `dsr.rs`: each a `check::Check`, the trait in `check.rs` they share with it)
//!   from the LB's own address towards the server ([`SourceAddress`]; never a VIP).
//! * `checker.rs` checks a server every interval and feeds `hysteresis.rs`: a state flips
//!   only after `fall` bad or `rise` good checks in a row. Each flip is an [`Event`] on a
//!   channel the agent's loop reads: it applies it to the balancer, logs [`log_line`] and
//!   runs the notify command (`notify.rs`).
//! * [`Checks`] keeps the set of running checkers equal to the config's: on reload it
//!   starts the new, stops the gone and restarts the changed, a restarted checker keeping
//!   the server's current state.
//!
//! Worst case with the defaults (interval 1 s, timeout 800 ms, fall 2): a server dying
//! just after a good check fails the next two, the second ending at most 2 × 1 s + 800 ms
//! = 2.8 s after its death; the table switch that follows takes milliseconds.

mod check;
mod checker;
mod dsr;
mod http;
mod hysteresis;
pub mod notify;
pub mod probe;
mod rtmp;
mod tcp;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use tokio::{
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
    task::JoinHandle,
};

pub use check::Link;
pub(crate) use check::random_u64;
pub use http::MAX_BODY;
pub use hysteresis::{Flip, Hysteresis};
pub use notify::{Notifier, NotifyRuns};
pub use rtmp::{HANDSHAKE_SIZE, RTMP_VERSION};

use crate::config::{ConfigFile, HealthCheck, HealthState, Role};

/// One server of one service to check, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    /// The service's VIP (what a `dsr` check connects to).
    pub vip: IpAddr,
    pub address: IpAddr,
    pub role: Role,
    pub check: HealthCheck,
}

/// A server changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The checker run that saw it (see [`Checks::is_current`]).
    pub run: u64,
    pub service: String,
    pub address: IpAddr,
    pub role: Role,
    pub from: HealthState,
    pub to: HealthState,
    /// What the last check saw.
    pub reason: String,
    /// Checks in a row that made the change.
    pub checks: u32,
    pub at: SystemTime,
}

/// A checked server as its checker sees it now: read by `xdp-lb status` and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    pub role: Role,
    /// The state its checks have decided (the balancer follows it).
    pub state: HealthState,
    /// `None` until its first check has ended.
    pub last: Option<LastCheck>,
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastCheck {
    pub ok: bool,
    /// What it saw (`HTTP 200`) or why it failed (`connect: connection refused`).
    pub detail: String,
    /// How long it took.
    pub took: Duration,
    /// When it ended.
    pub at: SystemTime,
}

/// Where checks of a server leave from.
pub trait SourceAddress: Send + Sync {
    /// The LB's own address to check `backend` from, or why there is none.
    fn source_for(&self, backend: IpAddr) -> BoxFuture<'_, Result<IpAddr, String>>;

    /// The link-layer path to `backend` a `dsr` check frames its SYN for, or why there is
    /// none.
    fn link_for(&self, backend: IpAddr) -> BoxFuture<'_, Result<Link, String>> {
        let _ = backend;
        Box::pin(async { Err("no link-layer path to the server here".to_owned()) })
    }
}

/// Always the same source (tests on one host).
#[derive(Clone, Copy, Debug)]
pub struct Fixed(pub IpAddr);

impl SourceAddress for Fixed {
    fn source_for(&self, _backend: IpAddr) -> BoxFuture<'_, Result<IpAddr, String>> {
        let source = self.0;
        Box::pin(async move { Ok(source) })
    }
}

/// Every server of `file` that is checked: each service's primaries, backups and fallback
/// servers, with their effective checks. Services that are not checked give none.
pub fn targets(file: &ConfigFile) -> Vec<Target> {
    let mut out = Vec::new();
    for service in &file.config.services {
        let Some(failover) = file.failover.services.get(&service.name) else {
            continue;
        };
        let primaries = service.all_backends().map(|b| (b.address, Role::Primary));
        for (address, role) in primaries.chain(failover.standbys()) {
            if let Some(check) = failover.check_for(address, role) {
                out.push(Target {
                    service: service.name.clone(),
                    vip: service.vip,
                    address,
                    role,
                    check: check.clone(),
                });
            }
        }
    }
    out
}

/// The running checkers, one per (service, server).
pub struct Checks {
    source: Arc<dyn SourceAddress>,
    events: UnboundedSender<Event>,
    running: BTreeMap<(String, IpAddr), Running>,
    next_run: u64,
}

struct Running {
    target: Target,
    run: u64,
    task: JoinHandle<()>,
    record: Arc<Mutex<CheckRecord>>,
}

/// What [`Checks::sync`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub started: usize,
    pub stopped: usize,
    pub restarted: usize,
}

impl Checks {
    /// No checker yet; their events will come out of the receiver.
    pub fn new(source: Arc<dyn SourceAddress>) -> (Self, UnboundedReceiver<Event>) {
        let (events, receiver) = mpsc::unbounded_channel();
        (
            Self {
                source,
                events,
                running: BTreeMap::new(),
                next_run: 0,
            },
            receiver,
        )
    }

    /// Makes the running checkers those of `targets`: new ones start in the state `state_of`
    /// gives, gone ones stop, and those whose check or role changed restart in the state
    /// `state_of` gives (the server's current one), their counts of results reset.
    pub fn sync(
        &mut self,
        targets: Vec<Target>,
        mut state_of: impl FnMut(&Target) -> HealthState,
    ) -> Synced {
        let mut done = Synced::default();
        let wanted: BTreeMap<(String, IpAddr), Target> = targets
            .into_iter()
            .map(|t| ((t.service.clone(), t.address), t))
            .collect();
        let gone: Vec<(String, IpAddr)> = self
            .running
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(old) = self.running.remove(&key) {
                old.task.abort();
                done.stopped += 1;
            }
        }
        for (key, target) in wanted {
            match self.running.get(&key) {
                Some(old) if old.target == target => continue,
                Some(_) => done.restarted += 1,
                None => done.started += 1,
            }
            if let Some(old) = self.running.remove(&key) {
                old.task.abort();
            }
            let initial = state_of(&target);
            self.next_run += 1;
            let run = self.next_run;
            let record = Arc::new(Mutex::new(CheckRecord {
                role: target.role,
                state: initial,
                last: None,
            }));
            let task = tokio::spawn(checker::run(
                target.clone(),
                run,
                initial,
                self.source.clone(),
                self.events.clone(),
                record.clone(),
            ));
            self.running.insert(
                key,
                Running {
                    target,
                    run,
                    task,
                    record,
                },
            );
        }
        done
    }

    /// Whether `event` comes from a checker still running: events of a stopped or
    /// restarted one, still in the channel, must not be applied.
    pub fn is_current(&self, event: &Event) -> bool {
        self.running
            .get(&(event.service.clone(), event.address))
            .is_some_and(|r| r.run == event.run)
    }

    /// Every running checker's view of its server, by (service, address).
    pub fn records(&self) -> BTreeMap<(String, IpAddr), CheckRecord> {
        self.running
            .iter()
            .map(|(key, r)| {
                let record = r
                    .record
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone();
                (key.clone(), record)
            })
            .collect()
    }

    /// How many checkers run.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

/// The structured line logged for `event`:
/// `health: service=video-hls backend=10.77.0.11 role=primary old=up new=down
/// reason="connect: connection refused" checks=2`.
pub fn log_line(event: &Event) -> String {
    let mut reason = String::with_capacity(event.reason.len() + 2);
    reason.push('"');
    for c in event.reason.chars() {
        match c {
            '"' => reason.push_str("\\\""),
            '\\' => reason.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(reason, "\\u{{{:x}}}", u32::from(c));
            }
            c => reason.push(c),
        }
    }
    reason.push('"');
    format!(
        "health: service={} backend={} role={} old={} new={} reason={reason} checks={}",
        event.service, event.address, event.role, event.from, event.to, event.checks
    )
}

#[cfg(test)]
mod tests;
