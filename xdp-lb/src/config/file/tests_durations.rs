//! Durations in the file: every key takes a unit, a bare number is refused with the unit to
//! write, and the effective config writes them back with units.

use super::tests::{BASE, FakeHost, ok, ok_file, only_error};

/// `BASE` with `flow_table` keys before it.
fn with_flow_table(keys: &str) -> String {
    format!("flow_table:\n{keys}{BASE}")
}

/// `BASE` with service keys after `protocol` (line 7).
fn with_service_keys(keys: &str) -> String {
    BASE.replace("    protocol: tcp\n", &format!("    protocol: tcp\n{keys}"))
}

#[test]
fn flow_table_timeouts_take_any_unit_and_are_kept_in_seconds() {
    let c = ok(&with_flow_table(
        "  tcp_timeout: 15m\n  udp_timeout: 1.5m\n",
    ));
    assert_eq!(c.flow_table.tcp_timeout_s, 900);
    assert_eq!(c.flow_table.udp_timeout_s, 90);
}

#[test]
fn a_bare_flow_table_timeout_is_refused_with_the_seconds_to_write() {
    let e = only_error(
        &with_flow_table("  tcp_timeout: 900\n"),
        2,
        "flow_table.tcp_timeout",
    );
    assert_eq!(e.message, "a bare number is ambiguous: write 900s (or 15m)");
    assert_eq!(e.column, 16);
}

#[test]
fn a_flow_table_timeout_finer_than_a_second_is_refused() {
    let e = only_error(
        &with_flow_table("  udp_timeout: 1500ms\n"),
        2,
        "flow_table.udp_timeout",
    );
    assert_eq!(
        e.message,
        "`1500ms` is not a whole number of seconds (this key counts seconds)"
    );
}

#[test]
fn a_flow_table_timeout_longer_than_a_week_is_refused() {
    let e = only_error(
        &with_flow_table("  tcp_timeout: 169h\n"),
        2,
        "flow_table.tcp_timeout",
    );
    assert_eq!(e.message, "`169h` is out of range (1s..=168h)");
}

#[test]
fn persistence_takes_a_unit_and_0s_turns_it_off() {
    let c = ok(&with_service_keys("    persistence: 5m\n"));
    assert_eq!(c.services[0].persistence.map(|p| p.timeout_s), Some(300));
    let c = ok(&with_service_keys("    persistence: 0s\n"));
    assert_eq!(c.services[0].persistence, None);
}

#[test]
fn a_bare_persistence_is_refused_with_the_seconds_to_write() {
    let e = only_error(
        &with_service_keys("    persistence: 300\n"),
        7,
        "services[0].persistence",
    );
    assert_eq!(e.message, "a bare number is ambiguous: write 300s (or 5m)");
}

#[test]
fn a_bare_notify_timeout_is_refused_with_both_readings() {
    let text = format!("notify: {{command: /etc/xdp-lb/notify.sh, timeout: 30}}\n{BASE}");
    let e = only_error(&text, 1, "notify.timeout");
    assert_eq!(e.message, "a bare number is ambiguous: write 30ms or 30s");
}

#[test]
fn the_effective_config_writes_durations_with_units() {
    let file = ok_file(&with_flow_table(
        "  tcp_timeout: 3600s\n  udp_timeout: 90s\n",
    ));
    let text = crate::config::render_file(&file);
    assert!(text.contains("  tcp_timeout: 1h\n"), "{text}");
    assert!(text.contains("  udp_timeout: 90s\n"), "{text}");
    assert!(text.contains("    persistence: 0s\n"), "{text}");
}

#[test]
fn a_service_added_at_run_time_takes_durations_with_units_only() {
    let file = ok_file(BASE);
    let service =
        "{name: dash, vip: 10.0.0.101, port: 80, protocol: tcp, backends: [{address: 10.0.0.13}]";
    let bare = format!("{service}, persistence: 300}}");
    let why = crate::config::with_service_added(&file, &bare, &FakeHost).unwrap_err();
    assert!(
        why.contains("services[1].persistence: a bare number is ambiguous: write 300s (or 5m)"),
        "{why}"
    );
    let edited = crate::config::with_service_added(
        &file,
        &format!("{service}, persistence: 5m}}"),
        &FakeHost,
    )
    .unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(
        edited.config.services[1].persistence.map(|p| p.timeout_s),
        Some(300)
    );
}
