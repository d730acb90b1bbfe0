//! The failover keys: health checks, backups, fallback pools and notify. Each rule's test
//! checks the error's line, field path and message.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use crate::config::file::tests::{assert_file_round_trips, errors, ok_file, only_error};
use crate::config::*;

/// A valid file; line numbers matter: 7 health_check, 8 kind, 9 path, 10 expect_body,
/// 11 fallback, 12 its server, 13 backends, 14 first backend, 15 its backup, 16 second
/// backend, 17 its own check.
const HC: &str = "\
interfaces: [eth0]
services:
  - name: hls
    vip: 10.0.0.100
    port: 8080
    protocol: tcp
    health_check:
      kind: http
      path: /health
      expect_body: ok
    fallback:
      - address: 10.0.0.31
    backends:
      - address: 10.0.0.11
        backup: 10.0.0.21
      - address: 10.0.0.12
        health_check: {port: 8081}
";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn service(file: &ConfigFile) -> &ServiceFailover {
    file.failover.services.get("hls").expect("the hls service")
}

fn http(path: &str, body: Option<&str>) -> CheckKind {
    CheckKind::Http(HttpCheck {
        path: path.to_owned(),
        expect_status: 200,
        expect_body: body.map(str::to_owned),
    })
}

#[test]
fn a_tcp_service_without_a_health_check_gets_a_tcp_connect_every_second_on_its_port() {
    let file = ok_file(
        &HC.replace(
            "    health_check:\n      kind: http\n      path: /health\n      expect_body: ok\n",
            "",
        )
        .replace("        health_check: {port: 8081}\n", ""),
    );
    let check = service(&file).check.clone().expect("checked");
    assert_eq!(check, HealthCheck::default_for_port(8080));
    assert_eq!(
        (
            check.kind,
            check.interval,
            check.timeout,
            check.rise,
            check.fall,
            check.initial_state
        ),
        (
            CheckKind::Tcp,
            Duration::from_secs(1),
            Duration::from_millis(800),
            3,
            2,
            HealthState::Up
        )
    );
}

#[test]
fn a_udp_service_without_a_health_check_is_not_checked() {
    let file = ok_file(
        "interfaces: [eth0]\nservices:\n  - {name: dns, vip: 10.0.0.53, port: 53, protocol: udp, backends: [{address: 10.0.0.11}]}\n",
    );
    let dns = &file.failover.services["dns"];
    assert_eq!(dns.check, None);
    assert_eq!(
        dns.initial_health(ip("10.0.0.11"), Role::Primary),
        HealthState::Up
    );
    assert_eq!(file.failover.notify, None);
}

#[test]
fn a_service_check_backups_fallback_and_per_backend_overrides_are_read() {
    let file = ok_file(HC);
    let s = service(&file);
    let check = s.check.clone().expect("checked");
    assert_eq!(check.kind, http("/health", Some("ok")));
    assert_eq!(check.port, 8080);
    assert_eq!(s.backup_of(ip("10.0.0.11")), Some(ip("10.0.0.21")));
    assert_eq!(s.backup_of(ip("10.0.0.12")), None);
    let own = s
        .check_for(ip("10.0.0.12"), Role::Primary)
        .expect("checked");
    assert_eq!(
        (own.port, &own.kind),
        (8081, &check.kind),
        "an override keeps the rest of the service's check"
    );
    assert_eq!(s.check_for(ip("10.0.0.21"), Role::Backup), Some(&check));
    assert_eq!(s.fallback.len(), 1);
    assert_eq!(
        (s.fallback[0].backend.address, s.fallback[0].backend.weight),
        (ip("10.0.0.31"), 1)
    );
    assert_eq!(
        s.standbys(),
        [
            (ip("10.0.0.21"), Role::Backup),
            (ip("10.0.0.31"), Role::Fallback)
        ]
    );
    // The balancing half does not see the standbys.
    assert_eq!(file.config.services[0].backends.len(), 2);
}

#[test]
fn every_health_check_key_and_notify_are_read_when_given() {
    let text = format!(
        "notify: {{command: /etc/xdp-lb/notify-mail.sh, timeout: 2500ms}}\n{}",
        HC.replace(
            "      expect_body: ok\n",
            "      expect_body: ok\n      port: 80\n      expect_status: 204\n      interval: 2s\n      timeout: 1500ms\n      rise: 1\n      fall: 10\n      initial_state: down\n"
        )
    );
    let file = ok_file(&text);
    let check = service(&file).check.clone().expect("checked");
    let want = HealthCheck {
        kind: CheckKind::Http(HttpCheck {
            path: "/health".into(),
            expect_status: 204,
            expect_body: Some("ok".into()),
        }),
        port: 80,
        interval: Duration::from_secs(2),
        timeout: Duration::from_millis(1500),
        rise: 1,
        fall: 10,
        initial_state: HealthState::Down,
    };
    assert_eq!(check, want);
    assert_eq!(
        service(&file).initial_health(ip("10.0.0.11"), Role::Primary),
        HealthState::Down
    );
    assert_eq!(
        file.failover.notify,
        Some(Notify {
            command: PathBuf::from("/etc/xdp-lb/notify-mail.sh"),
            timeout: Duration::from_millis(2500)
        })
    );
    assert_file_round_trips(&file);
}

#[test]
fn a_backend_changing_the_kind_starts_from_that_kinds_defaults() {
    let file = ok_file(&HC.replace("{port: 8081}", "{kind: tcp}"));
    let own = service(&file)
        .check_for(ip("10.0.0.12"), Role::Primary)
        .expect("checked");
    assert_eq!((&own.kind, own.port), (&CheckKind::Tcp, 8080));
    let file = ok_file(&HC.replace(
        "{port: 8081}",
        "{kind: http, path: /hls/live.m3u8, expect_body: \"\"}",
    ));
    let own = service(&file)
        .check_for(ip("10.0.0.12"), Role::Primary)
        .expect("checked");
    assert_eq!(
        own.kind,
        http("/hls/live.m3u8", None),
        "an empty expect_body means no body check"
    );
    assert_file_round_trips(&file);
}

#[test]
fn an_override_that_changes_nothing_is_not_kept() {
    let file = ok_file(&HC.replace("{port: 8081}", "{port: 8080, kind: http}"));
    assert_eq!(service(&file).backends.get(&ip("10.0.0.12")), None);
}

#[test]
fn checks_backups_fallbacks_and_overrides_read_back_the_same() {
    assert_file_round_trips(&ok_file(HC));
    let odd = HC
        .replace("      - address: 10.0.0.31\n", "      - {address: 10.0.0.31, weight: 3, mac: 02:00:00:00:00:31, health_check: {kind: rtmp, initial_state: down}}\n      - address: 10.0.0.32\n")
        .replace("{port: 8081}", "{expect_status: 301, expect_body: \"a \\\"b\\\"\", interval: 1500ms, fall: 3}");
    assert_file_round_trips(&ok_file(&odd));
    let udp = "interfaces: [eth0]\nservices:\n  - name: srt\n    vip: 10.0.0.100\n    port: 9000\n    protocol: udp\n    health_check: {port: 8080, timeout: 100ms}\n    backends:\n      - {address: 10.0.0.11, backup: 10.0.0.21}\n";
    assert_file_round_trips(&ok_file(udp));
}

#[test]
fn an_unknown_check_kind_is_refused_with_its_line() {
    let e = only_error(
        &HC.replace("kind: http", "kind: icmp"),
        8,
        "services[0].health_check.kind",
    );
    assert_eq!(
        e.message,
        "`icmp` is not a check kind (expected tcp or http or rtmp or dsr)"
    );
}

#[test]
fn http_keys_on_a_check_that_is_not_http_are_refused_with_their_lines() {
    let all = errors(&HC.replace("kind: http", "kind: rtmp"));
    let shown: Vec<_> = all
        .iter()
        .map(|e| (e.line, e.field.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            (
                9,
                "services[0].health_check.path",
                "path is for http checks only; this check is rtmp"
            ),
            (
                10,
                "services[0].health_check.expect_body",
                "expect_body is for http checks only; this check is rtmp"
            ),
        ]
    );
    let e = only_error(
        &HC.replace("{port: 8081}", "{kind: tcp, expect_status: 200}"),
        17,
        "services[0].backends[1].health_check.expect_status",
    );
    assert_eq!(
        e.message,
        "expect_status is for http checks only; this check is tcp"
    );
}

#[test]
fn a_malformed_path_or_status_is_refused_with_its_line() {
    let e = only_error(
        &HC.replace("path: /health", "path: health"),
        9,
        "services[0].health_check.path",
    );
    assert!(
        e.message.starts_with("`health` is not a request path"),
        "{e}"
    );
    let e = only_error(
        &HC.replace("expect_body: ok", "expect_status: 99"),
        10,
        "services[0].health_check.expect_status",
    );
    assert_eq!(e.message, "99 is out of range (100..=599)");
}

#[test]
fn a_timeout_not_shorter_than_the_interval_is_refused_where_it_is_written() {
    let e = only_error(
        &HC.replace("expect_body: ok", "interval: 500ms"),
        10,
        "services[0].health_check.interval",
    );
    assert_eq!(
        e.message,
        "the timeout 800ms must be shorter than the interval 500ms (a check ends before the next starts)"
    );
    let e = only_error(
        &HC.replace("{port: 8081}", "{timeout: 1s}"),
        17,
        "services[0].backends[1].health_check.timeout",
    );
    assert_eq!(
        e.message,
        "the timeout 1s must be shorter than the interval 1s (a check ends before the next starts)"
    );
}

#[test]
fn rise_and_fall_out_of_range_are_refused_and_one_lost_check_never_takes_a_server_out() {
    let e = only_error(
        &HC.replace("expect_body: ok", "rise: 0"),
        10,
        "services[0].health_check.rise",
    );
    assert_eq!(e.message, "0 is out of range (1..=10)");
    let e = only_error(
        &HC.replace("expect_body: ok", "rise: 11"),
        10,
        "services[0].health_check.rise",
    );
    assert_eq!(e.message, "11 is out of range (1..=10)");
    let e = only_error(
        &HC.replace("{port: 8081}", "{fall: 1}"),
        17,
        "services[0].backends[1].health_check.fall",
    );
    assert_eq!(
        e.message,
        "1 is out of range (2..=10): one lost check must never take a server out"
    );
}

#[test]
fn bad_durations_are_refused_with_their_lines() {
    let field = "services[0].health_check.interval";
    let form = "a number and a unit: 800ms, 30s, 1.5s, 15m, 1h";
    for (written, message) in [
        ("fast", format!("`fast` is not a duration (write {form})")),
        ("2d", format!("`2d` is not a duration (write {form})")),
        (
            "1.0005s",
            "`1.0005s` is finer than a millisecond".to_owned(),
        ),
        ("50ms", "`50ms` is out of range (100ms..=1h)".to_owned()),
        ("61m", "`61m` is out of range (100ms..=1h)".to_owned()),
        (
            "500",
            "a bare number is ambiguous: write 500ms or 500s".to_owned(),
        ),
        (
            "true",
            format!("expected a duration ({form}), found the boolean true"),
        ),
    ] {
        let e = only_error(
            &HC.replace("expect_body: ok", &format!("interval: {written}")),
            10,
            field,
        );
        assert_eq!(e.message, message, "{written}");
    }
}

#[test]
fn an_unknown_key_in_a_health_check_names_the_block() {
    let e = only_error(
        &HC.replace("expect_body: ok", "expect: ok"),
        10,
        "services[0].health_check",
    );
    assert!(e.message.starts_with("unknown field `expect`"), "{e}");
}

#[test]
fn a_backup_that_is_the_backend_itself_another_backend_a_fallback_or_of_the_wrong_family_is_refused()
 {
    let field = "services[0].backends[0].backup";
    for (backup, message) in [
        (
            "10.0.0.11",
            "10.0.0.11 is this backend itself; a backup must be another server",
        ),
        (
            "10.0.0.12",
            "10.0.0.12 is a backend of this service (backends[1], line 16); a backup must be a standby that is not",
        ),
        (
            "10.0.0.31",
            "10.0.0.31 is in this service's fallback pool (fallback[0]); a server is a backup or a fallback, not both",
        ),
        (
            "\"fd00::21\"",
            "fd00::21 is IPv6 but the service's VIP 10.0.0.100 is IPv4 (a backup must be of its VIP's family)",
        ),
        (
            "127.0.0.1",
            "127.0.0.1 is a loopback address, it cannot be a backup",
        ),
    ] {
        let e = only_error(
            &HC.replace("backup: 10.0.0.21", &format!("backup: {backup}")),
            15,
            field,
        );
        assert_eq!(e.message, message, "{backup}");
    }
}

#[test]
fn a_fallback_server_listed_twice_or_also_a_backend_or_with_a_backup_is_refused() {
    let e = only_error(
        &HC.replace(
            "      - address: 10.0.0.31\n",
            "      - address: 10.0.0.31\n      - address: 10.0.0.31\n",
        ),
        13,
        "services[0].fallback[1].address",
    );
    assert_eq!(
        e.message,
        "10.0.0.31 is listed twice in this fallback pool (first as fallback[0], line 12)"
    );
    let e = only_error(
        &HC.replace("address: 10.0.0.31", "address: 10.0.0.12"),
        12,
        "services[0].fallback[0].address",
    );
    assert_eq!(
        e.message,
        "10.0.0.12 is a backend of this service (backends[1], line 16); the fallback pool is for other servers"
    );
    let e = only_error(
        &HC.replace(
            "      - address: 10.0.0.31\n",
            "      - {address: 10.0.0.31, backup: 10.0.0.32}\n",
        ),
        12,
        "services[0].fallback[0].backup",
    );
    assert_eq!(e.message, "a fallback server has no backup");
}

#[test]
fn a_server_check_on_a_service_that_is_not_checked_is_refused() {
    let text = "interfaces: [eth0]\nservices:\n  - name: dns\n    vip: 10.0.0.53\n    port: 53\n    protocol: udp\n    backends:\n      - {address: 10.0.0.11, health_check: {port: 53}}\n";
    let e = only_error(text, 8, "services[0].backends[0].health_check");
    assert!(
        e.message.starts_with("this service is not health-checked"),
        "{e}"
    );
}

#[test]
fn a_notify_command_that_is_not_absolute_or_not_executable_is_refused() {
    let e = only_error(
        &format!("notify: {{command: notify.sh}}\n{HC}"),
        1,
        "notify.command",
    );
    assert_eq!(
        e.message,
        "`notify.sh` is not an absolute path (write the full path of the command)"
    );
    let e = only_error(
        &format!("notify: {{command: /opt/none/notify.sh}}\n{HC}"),
        1,
        "notify.command",
    );
    assert_eq!(
        e.message,
        "`/opt/none/notify.sh` is not an executable file (check the path and its x bit)"
    );
    let e = only_error(
        &format!("notify:\n  command: /usr/bin/true\n  timeout: 0s\n{HC}"),
        3,
        "notify.timeout",
    );
    assert_eq!(e.message, "`0s` is out of range (100ms..=1h)");
    assert_eq!(
        ok_file(&format!("notify: {{command: /usr/bin/true}}\n{HC}"))
            .failover
            .notify
            .map(|n| n.timeout),
        Some(Duration::from_secs(10))
    );
}

#[test]
fn the_live_host_finds_executables_by_their_x_bit() {
    assert!(LiveHost.is_executable(std::path::Path::new("/bin/sh")));
    assert!(!LiveHost.is_executable(std::path::Path::new("/etc/passwd")));
    assert!(!LiveHost.is_executable(std::path::Path::new("/nonexistent/notify.sh")));
    assert!(!LiveHost.is_executable(std::path::Path::new("/")));
}

#[test]
fn every_failover_error_of_a_file_is_reported_at_once() {
    let text = HC
        .replace("kind: http", "kind: http2")
        .replace("backup: 10.0.0.21", "backup: 10.0.0.11")
        .replace("{port: 8081}", "{port: 0}");
    let lines: Vec<_> = errors(&text)
        .iter()
        .map(|e| (e.line, e.field.clone()))
        .collect();
    assert_eq!(
        lines,
        [
            (8, "services[0].health_check.kind".to_owned()),
            (15, "services[0].backends[0].backup".to_owned()),
            (17, "services[0].backends[1].health_check.port".to_owned()),
        ]
    );
}
