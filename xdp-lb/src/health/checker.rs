//! One server's checker: a task that checks it every interval, feeds the results to its
//! hysteresis and reports each flip. The first check comes at a random point of the first
//! interval, so the checks of many servers do not run in step.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{
    sync::mpsc::UnboundedSender,
    time::{Instant, MissedTickBehavior},
};

use super::{
    CheckRecord, Event, LastCheck, SourceAddress, Target,
    hysteresis::Hysteresis,
    probe::{counted, probe, probe_path},
    random_u64,
};
use crate::config::{CheckKind, HealthState};

/// Checks `target` until the task is aborted or nobody listens to `events` any more.
/// `run` tags its events (see `Checks::is_current`); every check's result and the state
/// it leaves are written to `record`.
pub(super) async fn run(
    target: Target,
    run: u64,
    initial: HealthState,
    source: Arc<dyn SourceAddress>,
    events: UnboundedSender<Event>,
    record: Arc<Mutex<CheckRecord>>,
) {
    let check = &target.check;
    let mut state = Hysteresis::new(initial, check.rise, check.fall);
    // A zero period would make tokio panic; validation never gives one.
    let period = check.interval.max(Duration::from_millis(1));
    let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    let now = Instant::now();
    let first = now
        .checked_add(Duration::from_millis(random_u64() % period_ms))
        .unwrap_or(now);
    let mut ticks = tokio::time::interval_at(first, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The source that last worked; looked up again after any failure, in case the LB's
    // addresses changed.
    let mut from: Option<IpAddr> = None;
    // Whether the last check could not be made for the LB's own shortage.
    let mut short = false;
    loop {
        ticks.tick().await;
        let started = Instant::now();
        let outcome = if check.kind == CheckKind::Dsr {
            // The path clients take: framed to the server's MAC, to the VIP.
            match tokio::time::timeout(check.timeout, source.link_for(target.address)).await {
                Ok(Ok(link)) => probe_path(check, &link, target.vip).await,
                Ok(Err(why)) => Err(format!("no link-layer path: {why}")),
                Err(_) => Err("looking up the server's MAC timed out".to_owned()),
            }
        } else {
            let source_now = match from {
                Some(address) => Ok(address),
                None => {
                    let lookup = source.source_for(target.address);
                    match tokio::time::timeout(check.timeout, lookup).await {
                        Ok(found) => found,
                        Err(_) => Err("looking it up timed out".to_owned()),
                    }
                }
            };
            match source_now {
                Ok(address) => {
                    let outcome = probe(check, target.address, Some(address)).await;
                    from = outcome.is_ok().then_some(address);
                    outcome
                }
                Err(why) => Err(format!("no source address: {why}")),
            }
        };
        log::trace!(
            "health: service={} backend={} check: {outcome:?}",
            target.service,
            target.address
        );
        let took = started.elapsed();
        let flip = match counted(&outcome) {
            Some(passed) => {
                short = false;
                state.record(passed)
            }
            None => {
                // Shown in status, logged once per spell, never a verdict.
                if let (Err(why), false) = (&outcome, short) {
                    log::warn!(
                        "health: service={} backend={} {why}; the server keeps its state ({:?}) until a check can be made",
                        target.service,
                        target.address,
                        state.state()
                    );
                }
                short = true;
                None
            }
        };
        write_record(&record, state.state(), &outcome, took);
        let Some(flip) = flip else {
            continue;
        };
        let event = Event {
            run,
            service: target.service.clone(),
            address: target.address,
            role: target.role,
            from: flip.from,
            to: flip.to,
            reason: match outcome {
                Ok(saw) | Err(saw) => saw,
            },
            checks: flip.checks,
            at: SystemTime::now(),
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// What the last check saw, for `xdp-lb status` and the metrics.
fn write_record(
    record: &Mutex<CheckRecord>,
    state: HealthState,
    outcome: &Result<String, String>,
    took: Duration,
) {
    let mut record = record
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    record.state = state;
    let (ok, detail) = match outcome {
        Ok(saw) => (true, saw.clone()),
        Err(why) => (false, why.clone()),
    };
    record.last = Some(LastCheck {
        ok,
        detail,
        took,
        at: SystemTime::now(),
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::{
        config::{CheckKind, Role},
        health::{
            Fixed,
            probe::tests::{LOCAL, check},
        },
    };

    fn fresh_record(role: Role) -> Arc<Mutex<CheckRecord>> {
        Arc::new(Mutex::new(CheckRecord {
            role,
            state: HealthState::Up,
            last: None,
        }))
    }

    async fn next(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event within 10 s")
            .expect("the checker is running")
    }

    #[tokio::test]
    async fn a_server_that_stops_listening_goes_down_and_comes_back_when_it_listens_again() {
        let listener = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut check = check(CheckKind::Tcp, port, 50);
        check.interval = Duration::from_millis(100);
        let target = Target {
            service: "video-rtmp".into(),
            vip: LOCAL,
            address: LOCAL,
            role: Role::Primary,
            check,
        };
        let (tx, mut events) = mpsc::unbounded_channel();
        let record = fresh_record(Role::Primary);
        let task = tokio::spawn(run(
            target,
            7,
            HealthState::Up,
            Arc::new(Fixed(LOCAL)),
            tx,
            record.clone(),
        ));

        drop(listener);
        let down = next(&mut events).await;
        assert_eq!(
            (down.run, down.from, down.to, down.checks),
            (7, HealthState::Up, HealthState::Down, 2)
        );
        assert_eq!(
            (down.service.as_str(), down.address, down.role),
            ("video-rtmp", LOCAL, Role::Primary)
        );
        assert_eq!(down.reason, "connect: connection refused");

        let _listener = std::net::TcpListener::bind((LOCAL, port)).unwrap();
        let up = next(&mut events).await;
        assert_eq!(
            (up.from, up.to, up.checks, up.reason.as_str()),
            (HealthState::Down, HealthState::Up, 2, "connected")
        );
        let seen = record.lock().unwrap().clone();
        assert_eq!(seen.state, HealthState::Up);
        let last = seen.last.expect("a check was recorded");
        assert!(last.ok && last.detail == "connected", "{last:?}");
        assert!(last.took < Duration::from_secs(1), "{last:?}");
        task.abort();
    }

    #[tokio::test]
    async fn a_server_starting_down_comes_up_after_rise_good_checks_and_a_healthy_one_sends_nothing()
     {
        let listener = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut check = check(CheckKind::Tcp, port, 50);
        check.interval = Duration::from_millis(100);
        let target = Target {
            service: "s".into(),
            vip: LOCAL,
            address: LOCAL,
            role: Role::Backup,
            check,
        };
        let (tx, mut events) = mpsc::unbounded_channel();
        let down = tokio::spawn(run(
            target.clone(),
            1,
            HealthState::Down,
            Arc::new(Fixed(LOCAL)),
            tx.clone(),
            fresh_record(Role::Backup),
        ));
        let up = tokio::spawn(run(
            target,
            2,
            HealthState::Up,
            Arc::new(Fixed(LOCAL)),
            tx,
            fresh_record(Role::Backup),
        ));
        let event = next(&mut events).await;
        assert_eq!(
            (event.run, event.to, event.role),
            (1, HealthState::Up, Role::Backup)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(events.try_recv().is_err(), "no flip of the healthy server");
        down.abort();
        up.abort();
    }

    #[tokio::test]
    async fn a_checker_whose_source_cannot_be_found_fails_its_checks_with_the_reason() {
        struct Nowhere;
        impl SourceAddress for Nowhere {
            fn source_for(
                &self,
                _backend: IpAddr,
            ) -> futures::future::BoxFuture<'_, Result<IpAddr, String>> {
                Box::pin(async { Err("no address on eth0".to_owned()) })
            }
        }
        let mut check = check(CheckKind::Tcp, 9, 50);
        check.interval = Duration::from_millis(100);
        let target = Target {
            service: "s".into(),
            vip: LOCAL,
            address: LOCAL,
            role: Role::Primary,
            check,
        };
        let (tx, mut events) = mpsc::unbounded_channel();
        let record = fresh_record(Role::Primary);
        let task = tokio::spawn(run(
            target,
            1,
            HealthState::Up,
            Arc::new(Nowhere),
            tx,
            record.clone(),
        ));
        let event = next(&mut events).await;
        assert_eq!(event.reason, "no source address: no address on eth0");
        let last = record
            .lock()
            .unwrap()
            .last
            .clone()
            .expect("a check was recorded");
        assert!(!last.ok && last.detail == event.reason, "{last:?}");
        task.abort();
    }
}
