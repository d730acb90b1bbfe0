//! The checkers' registry, the targets a config gives and the log line.

use std::{path::Path, time::Duration};

use super::*;
use crate::config::parse_file;

struct AnyHost;

impl crate::config::HostFacts for AnyHost {
    fn interface_exists(&self, _: &str) -> bool {
        true
    }
}

const FILE: &str = "\
interfaces: [eth0]
services:
  - name: hls
    vip: 10.0.0.100
    port: 8080
    protocol: tcp
    health_check: {kind: http, path: /health}
    fallback: [{address: 10.0.0.31}]
    backends:
      - {address: 10.0.0.11, backup: 10.0.0.21}
      - {address: 10.0.0.12, health_check: {port: 8081}}
  - name: dns
    vip: 10.0.0.100
    port: 53
    protocol: udp
    backends: [{address: 10.0.0.11}]
";

fn file(text: &str) -> ConfigFile {
    parse_file(Path::new("t.yaml"), text, &AnyHost).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn every_checked_server_is_a_target_with_its_role_and_effective_check() {
    let targets = targets(&file(FILE));
    let shown: Vec<(&str, IpAddr, Role, u16)> = targets
        .iter()
        .map(|t| (t.service.as_str(), t.address, t.role, t.check.port))
        .collect();
    assert_eq!(
        shown,
        [
            ("hls", ip("10.0.0.11"), Role::Primary, 8080),
            ("hls", ip("10.0.0.12"), Role::Primary, 8081),
            ("hls", ip("10.0.0.21"), Role::Backup, 8080),
            ("hls", ip("10.0.0.31"), Role::Fallback, 8080),
        ],
        "the udp service without a health_check is not checked"
    );
    assert!(targets.iter().all(|t| t.check.kind.name() == "http"));
}

#[tokio::test]
async fn syncing_starts_new_checkers_stops_gone_ones_and_restarts_changed_ones_in_their_current_state()
 {
    let (mut checks, _events) = Checks::new(Arc::new(Fixed(ip("127.0.0.1"))));
    let mut config = file(FILE);
    let synced = checks.sync(targets(&config), |_| HealthState::Up);
    assert_eq!(
        synced,
        Synced {
            started: 4,
            stopped: 0,
            restarted: 0
        }
    );
    assert_eq!(checks.len(), 4);
    assert_eq!(
        checks.sync(targets(&config), |_| HealthState::Up),
        Synced::default(),
        "nothing changed"
    );

    {
        let hls = config.failover.services.get_mut("hls").unwrap();
        hls.fallback.clear();
        hls.check.as_mut().unwrap().rise = 5;
    }
    let mut asked = Vec::new();
    let synced = checks.sync(targets(&config), |t| {
        asked.push(t.address);
        HealthState::Down
    });
    assert_eq!(
        synced,
        Synced {
            started: 0,
            stopped: 1,
            restarted: 2
        },
        "10.0.0.12 has a check of its own"
    );
    assert_eq!(asked, [ip("10.0.0.11"), ip("10.0.0.21")]);

    let synced = checks.sync(Vec::new(), |_| HealthState::Up);
    assert_eq!(synced.stopped, 3);
    assert!(checks.is_empty());
}

#[tokio::test]
async fn events_of_a_stopped_or_restarted_checker_are_not_current() {
    let (mut checks, _events) = Checks::new(Arc::new(Fixed(ip("127.0.0.1"))));
    let config = file(FILE);
    checks.sync(targets(&config), |_| HealthState::Up);
    let event = |run| Event {
        run,
        service: "hls".into(),
        address: ip("10.0.0.11"),
        role: Role::Primary,
        from: HealthState::Up,
        to: HealthState::Down,
        reason: String::new(),
        checks: 2,
        at: SystemTime::now(),
    };
    let current = checks
        .running
        .get(&("hls".to_owned(), ip("10.0.0.11")))
        .map(|r| r.run)
        .unwrap();
    assert!(checks.is_current(&event(current)));
    assert!(!checks.is_current(&event(current + 100)));
    checks.sync(Vec::new(), |_| HealthState::Up);
    assert!(!checks.is_current(&event(current)));
}

#[tokio::test]
async fn checking_a_dead_local_server_reports_it_down_through_the_channel() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    // Loopback backends are refused by validation: the target is made by hand.
    let mut target = targets(&file(FILE)).remove(0);
    target.address = ip("127.0.0.1");
    target.check = HealthCheck {
        kind: crate::config::CheckKind::Tcp,
        port,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(50),
        ..target.check
    };
    let (mut checks, mut events) = Checks::new(Arc::new(Fixed(ip("127.0.0.1"))));
    checks.sync(vec![target], |_| HealthState::Up);
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(checks.is_current(&event));
    assert_eq!(
        (event.to, event.reason.as_str()),
        (HealthState::Down, "connect: connection refused")
    );
}

#[test]
fn the_log_line_is_one_line_of_key_values_with_the_reason_quoted() {
    let event = Event {
        run: 1,
        service: "video-hls".into(),
        address: ip("10.77.0.11"),
        role: Role::Primary,
        from: HealthState::Up,
        to: HealthState::Down,
        reason: "HTTP 200 but the body does not contain \"ok\"\n".into(),
        checks: 2,
        at: SystemTime::now(),
    };
    assert_eq!(
        log_line(&event),
        "health: service=video-hls backend=10.77.0.11 role=primary old=up new=down \
         reason=\"HTTP 200 but the body does not contain \\\"ok\\\"\\u{a}\" checks=2"
    );
}

#[test]
fn random_numbers_differ_from_call_to_call() {
    let draws: std::collections::BTreeSet<u64> = (0..100).map(|_| random_u64()).collect();
    assert_eq!(draws.len(), 100);
}
