//! Recent events for the status report's timeline (the web console draws it): health
//! verdicts as the checkers gave them, and what the agent's loop sees change after each
//! step, whatever made the change (a verdict, a control request, a reload, a MAC found or
//! lost): Maglev table switches, backend states, services added or removed. Bounded: the
//! oldest event goes when a new one comes and [`MAX_EVENTS`] are kept.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use super::{protocol::TimelineEvent, report};
use crate::{balancer::Balancer, health::Event};

/// Events kept; a health flap of a few backends over a few minutes fits.
pub const MAX_EVENTS: usize = 100;

/// What the last look saw of a service.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    generation: u32,
    /// Backends taking new flows (`serving` in `status`).
    serving: usize,
    /// Each backend's (and standby's) state word and health.
    backends: BTreeMap<IpAddr, (String, bool)>,
}

#[derive(Debug, Default)]
pub struct Timeline {
    events: VecDeque<TimelineEvent>,
    /// `None` before the first look, which records nothing (the start is no change).
    seen: Option<BTreeMap<String, Seen>>,
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Timeline {
    /// The events, oldest first.
    pub fn events(&self) -> Vec<TimelineEvent> {
        self.events.iter().cloned().collect()
    }

    fn push(&mut self, event: TimelineEvent) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// A checker's verdict (applied or not: a verdict is what the checks saw).
    pub fn health(&mut self, event: &Event) {
        self.push(TimelineEvent {
            at_ms: millis(event.at),
            kind: "health".into(),
            service: event.service.clone(),
            backend: Some(event.address),
            from: Some(event.from.to_string()),
            to: Some(event.to.to_string()),
            detail: format!("{} ({} checks in a row)", event.reason, event.checks),
        });
    }

    /// Compares the balancer with the last look and records what changed.
    pub fn observe(&mut self, balancer: &Balancer) {
        self.look(look(balancer), millis(SystemTime::now()));
    }

    fn look(&mut self, now: BTreeMap<String, Seen>, at_ms: u64) {
        if let Some(before) = &self.seen {
            for event in changes(before, &now, at_ms) {
                self.push(event);
            }
        }
        self.seen = Some(now);
    }
}

/// What the balancer holds now, as [`Timeline::observe`] compares it.
fn look(balancer: &Balancer) -> BTreeMap<String, Seen> {
    balancer
        .services()
        .map(|s| {
            let primaries = s.backends.values().map(|b| (b, None));
            let standbys = s.standbys.values().map(|b| (b, Some("standby")));
            let backends = primaries
                .chain(standbys)
                .map(|(b, role)| {
                    let state = report::backend_state(b, role, report::slots(s, b));
                    (b.config.address, (state, b.healthy))
                })
                .collect();
            let seen = Seen {
                generation: s.generation,
                serving: s.active_backends(),
                backends,
            };
            (s.config.name.clone(), seen)
        })
        .collect()
}

/// The events between two looks. A backend's state change that comes with a change of its
/// health is left to the verdict's own event.
fn changes(
    before: &BTreeMap<String, Seen>,
    now: &BTreeMap<String, Seen>,
    at_ms: u64,
) -> Vec<TimelineEvent> {
    let event = |kind: &str,
                 service: &str,
                 backend: Option<IpAddr>,
                 from: Option<&String>,
                 to: Option<&String>,
                 detail: &str| TimelineEvent {
        at_ms,
        kind: kind.into(),
        service: service.into(),
        backend,
        from: from.cloned(),
        to: to.cloned(),
        detail: detail.into(),
    };
    let mut found = Vec::new();
    for (name, seen) in now {
        let Some(old) = before.get(name) else {
            found.push(event("service", name, None, None, None, "added"));
            continue;
        };
        for (address, (state, healthy)) in &seen.backends {
            match old.backends.get(address) {
                None => found.push(event(
                    "state",
                    name,
                    Some(*address),
                    None,
                    Some(state),
                    "added",
                )),
                Some((old_state, old_healthy)) if old_state != state && old_healthy == healthy => {
                    found.push(event(
                        "state",
                        name,
                        Some(*address),
                        Some(old_state),
                        Some(state),
                        "",
                    ));
                }
                Some(_) => {}
            }
        }
        for (address, (old_state, _)) in &old.backends {
            if !seen.backends.contains_key(address) {
                found.push(event(
                    "state",
                    name,
                    Some(*address),
                    Some(old_state),
                    None,
                    "removed",
                ));
            }
        }
        if seen.generation != old.generation {
            let detail = format!(
                "Maglev table switch (generation {}): {} of {} backend(s) take new flows",
                seen.generation,
                seen.serving,
                seen.backends.len()
            );
            found.push(event("switch", name, None, None, None, &detail));
        }
    }
    for name in before.keys().filter(|name| !now.contains_key(*name)) {
        found.push(event("service", name, None, None, None, "removed"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(generation: u32, backends: &[(&str, &str, bool)]) -> Seen {
        Seen {
            generation,
            serving: backends.iter().filter(|b| b.1 == "up").count(),
            backends: backends
                .iter()
                .map(|(a, state, healthy)| (a.parse().unwrap(), ((*state).into(), *healthy)))
                .collect(),
        }
    }

    fn world(services: Vec<(&str, Seen)>) -> BTreeMap<String, Seen> {
        services
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect()
    }

    fn summary(timeline: &Timeline) -> Vec<String> {
        timeline
            .events()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {}->{} {}",
                    e.kind,
                    e.service,
                    e.backend.map_or("-".into(), |b| b.to_string()),
                    e.from.as_deref().unwrap_or("-"),
                    e.to.as_deref().unwrap_or("-"),
                    e.detail
                )
            })
            .collect()
    }

    #[test]
    fn the_first_look_records_nothing_and_later_ones_record_switches_states_and_services() {
        let mut t = Timeline::default();
        let a = "10.0.0.11";
        let b = "10.0.0.12";
        t.look(
            world(vec![(
                "web",
                service(1, &[(a, "up", true), (b, "up", true)]),
            )]),
            1,
        );
        assert!(t.events().is_empty(), "{:?}", summary(&t));
        // b drained by a control request: its state changes, its health does not.
        t.look(
            world(vec![(
                "web",
                service(2, &[(a, "up", true), (b, "drain", true)]),
            )]),
            2,
        );
        // a down by health: the verdict's own event tells it, not a state event.
        t.look(
            world(vec![
                ("web", service(3, &[(a, "down", false), (b, "drain", true)])),
                ("rtmp", service(1, &[(a, "down", false)])),
            ]),
            3,
        );
        t.look(world(vec![("web", service(3, &[(a, "down", false)]))]), 4);
        assert_eq!(
            summary(&t),
            [
                "state web 10.0.0.12 up->drain ",
                "switch web - -->- Maglev table switch (generation 2): 1 of 2 backend(s) take new flows",
                "service rtmp - -->- added",
                "switch web - -->- Maglev table switch (generation 3): 0 of 2 backend(s) take new flows",
                "state web 10.0.0.12 drain->- removed",
                "service rtmp - -->- removed",
            ]
        );
        assert_eq!(t.events()[0].at_ms, 2);
    }

    #[test]
    fn the_timeline_keeps_the_newest_events_only() {
        let mut t = Timeline::default();
        t.look(world(vec![("web", service(0, &[]))]), 0);
        for generation in 1..=(MAX_EVENTS as u32 + 5) {
            t.look(
                world(vec![("web", service(generation, &[]))]),
                u64::from(generation),
            );
        }
        let events = t.events();
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events[0].at_ms, 6);
        assert_eq!(events.last().unwrap().at_ms, MAX_EVENTS as u64 + 5);
    }
}
