//! systemd's service protocol (`sd_notify`): READY once the program is attached and every
//! table is live, a STATUS line saying what the agent does, RELOADING around a reload,
//! STOPPING on the way out, and the watchdog fed by the control loop itself, so a stalled
//! loop is restarted. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::balancer::Balancer;

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        log::debug!("telling systemd {states:?}: {err}");
    }
}

/// What systemd's STATUS line says while the agent serves.
pub fn serving_status(balancer: &Balancer, interfaces: &[String]) -> String {
    let services = balancer.services().count();
    let backends: usize = balancer.services().map(|s| s.active_backends()).sum();
    format!(
        "serving {services} service(s) on {} with {backends} backend(s) in their tables",
        interfaces.join(", ")
    )
}

/// The agent serves: the program is attached and its tables are live.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// A reload begins; `ready` ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    // systemd ≥ 253 ties RELOADING to the monotonic clock; older ones ignore it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often the control loop feeds the watchdog: half of `WatchdogSec=`, when set.
pub struct Watchdog {
    interval: Option<tokio::time::Interval>,
}

impl Watchdog {
    pub fn new() -> Self {
        let interval = sd_notify::watchdog_enabled().map(|period| {
            let half = (period / 2).max(Duration::from_millis(100));
            log::info!("systemd watchdog: the control loop reports every {half:?}");
            tokio::time::interval(half)
        });
        Self { interval }
    }

    /// Waits for the next feeding time (forever without a watchdog).
    pub async fn tick(&mut self) {
        match &mut self.interval {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Tells systemd the loop is alive.
    pub fn feed(&self) {
        send(&[NotifyState::Watchdog]);
    }
}
