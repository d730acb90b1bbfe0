//! One test per validation rule: each checks the error's line, field path and message.

use std::fmt::Write as _;

use crate::config::file::tests::{BASE, errors, ok, only_error};
use crate::config::file::validate::{DEFAULT_TABLE_SLOTS, MAX_TABLE_SLOTS};

/// A file with `services` services (ports 1..), each with `backends` backends and the given
/// maglev_size.
fn many(services: usize, backends: usize, maglev_size: u32) -> String {
    let mut text = String::from("interfaces: [eth0]\nservices:\n");
    for i in 0..services {
        let _ = write!(
            text,
            "  - name: s{i}\n    vip: 10.0.0.100\n    port: {}\n    protocol: tcp\n    maglev_size: {maglev_size}\n    backends:{}\n",
            i + 1,
            if backends == 0 { " []" } else { "" }
        );
        for j in 0..backends {
            let _ = writeln!(
                text,
                "      - address: 10.{}.{}.{}",
                1 + i % 200,
                j / 250,
                1 + j % 250
            );
        }
    }
    text
}

#[test]
fn port_0_is_refused_with_its_line() {
    let e = only_error(&BASE.replace("port: 80", "port: 0"), 5, "services[0].port");
    assert_eq!(e.column, 11);
    assert_eq!(e.message, "0 is out of range (1..=65535)");
}

#[test]
fn a_port_above_65535_is_refused_with_its_line() {
    let e = only_error(
        &BASE.replace("port: 80", "port: 65536"),
        5,
        "services[0].port",
    );
    assert_eq!(e.message, "65536 is out of range (1..=65535)");
}

#[test]
fn a_port_that_is_not_a_number_is_refused_with_its_line() {
    let e = only_error(
        &BASE.replace("port: 80", "port: http"),
        5,
        "services[0].port",
    );
    assert_eq!(
        e.message,
        "expected a whole number in 1..=65535, found the string `http`"
    );
}

#[test]
fn a_malformed_vip_is_refused_with_its_line() {
    let e = only_error(
        &BASE.replace("vip: 10.0.0.100", "vip: 10.0.0.256"),
        4,
        "services[0].vip",
    );
    assert_eq!(e.message, "`10.0.0.256` is not an IPv4 or IPv6 address");
}

#[test]
fn a_malformed_backend_address_is_refused_with_its_line() {
    let e = only_error(
        &BASE.replace("10.0.0.12", "backend-2"),
        9,
        "services[0].backends[1].address",
    );
    assert_eq!(
        (e.column, e.message.as_str()),
        (18, "`backend-2` is not an IPv4 or IPv6 address")
    );
}

#[test]
fn unspecified_loopback_and_multicast_addresses_are_refused() {
    let e = only_error(&BASE.replace("10.0.0.100", "0.0.0.0"), 4, "services[0].vip");
    assert_eq!(
        e.message,
        "0.0.0.0 is the unspecified address, it cannot be a VIP"
    );
    let e = only_error(
        &BASE.replace("10.0.0.11", "127.0.0.1"),
        8,
        "services[0].backends[0].address",
    );
    assert_eq!(
        e.message,
        "127.0.0.1 is a loopback address, it cannot be a backend"
    );
    let e = only_error(
        &BASE.replace("10.0.0.100", "224.0.0.1"),
        4,
        "services[0].vip",
    );
    assert_eq!(
        e.message,
        "224.0.0.1 is a multicast address, it cannot be a VIP"
    );
}

#[test]
fn a_backend_of_the_other_family_than_its_vip_is_refused() {
    let e = only_error(
        &BASE.replace("10.0.0.12", "\"fd00::12\""),
        9,
        "services[0].backends[1].address",
    );
    assert_eq!(
        e.message,
        "fd00::12 is IPv6 but the service's VIP 10.0.0.100 is IPv4 (a backend must be of its VIP's family)"
    );
}

#[test]
fn a_backend_listed_twice_in_a_service_is_refused() {
    let e = only_error(
        &BASE.replace("10.0.0.12", "10.0.0.11"),
        9,
        "services[0].backends[1].address",
    );
    assert_eq!(
        e.message,
        "10.0.0.11 is listed twice in this service (first as backends[0], line 8)"
    );
}

#[test]
fn the_same_backend_may_serve_two_services() {
    let text = format!(
        "{BASE}{}",
        &BASE[BASE.find("  - name").unwrap()..]
            .replace("port: 80", "port: 81")
            .replace("web", "web2")
    );
    assert_eq!(ok(&text).services.len(), 2);
}

#[test]
fn a_weight_above_the_maximum_is_refused_with_its_line() {
    let text = BASE.replace("10.0.0.12", "10.0.0.12\n        weight: 5000");
    let e = only_error(&text, 10, "services[0].backends[1].weight");
    assert_eq!(
        (e.column, e.message.as_str()),
        (17, "5000 is out of range (0..=1000)")
    );
    let text = BASE.replace("10.0.0.12", "10.0.0.12\n        weight: -1");
    only_error(&text, 10, "services[0].backends[1].weight");
    let text = BASE.replace("10.0.0.12", "10.0.0.12\n        weight: 0");
    assert_eq!(ok(&text).services[0].backends[1].weight, 0);
}

#[test]
fn a_malformed_mac_is_refused_with_its_line() {
    let text = BASE.replace("10.0.0.11", "10.0.0.11\n        mac: 02:00:00:00:11");
    let e = only_error(&text, 9, "services[0].backends[0].mac");
    assert_eq!(
        e.message,
        "`02:00:00:00:11` is not a MAC address (expected six hex bytes like 02:00:5e:10:00:01)"
    );
}

#[test]
fn an_all_zero_or_group_mac_is_refused() {
    let with_mac = |mac: &str| BASE.replace("10.0.0.11", &format!("10.0.0.11\n        mac: {mac}"));
    let e = only_error(
        &with_mac("00:00:00:00:00:00"),
        9,
        "services[0].backends[0].mac",
    );
    assert_eq!(
        e.message,
        "00:00:00:00:00:00 is the all-zero address, not a backend's MAC"
    );
    let e = only_error(
        &with_mac("01:00:5e:00:00:01"),
        9,
        "services[0].backends[0].mac",
    );
    assert_eq!(
        e.message,
        "01:00:5e:00:00:01 is a multicast or broadcast address, not a backend's MAC"
    );
    only_error(
        &with_mac("ff:ff:ff:ff:ff:ff"),
        9,
        "services[0].backends[0].mac",
    );
    assert!(
        ok(&with_mac("02-00-00-00-00-0a")).services[0].backends[0]
            .mac
            .is_some()
    );
}

#[test]
fn an_unknown_protocol_mode_or_action_is_refused() {
    let e = only_error(
        &BASE.replace("protocol: tcp", "protocol: sctp"),
        6,
        "services[0].protocol",
    );
    assert_eq!(e.message, "`sctp` is not a protocol (expected tcp or udp)");
    let e = only_error(&format!("xdp_mode: offload\n{BASE}"), 1, "xdp_mode");
    assert_eq!(
        e.message,
        "`offload` is not an XDP attach mode (expected native or generic)"
    );
    let text = BASE.replace(
        "    backends:",
        "    when_no_backend: reject\n    backends:",
    );
    let e = only_error(&text, 7, "services[0].when_no_backend");
    assert_eq!(
        e.message,
        "`reject` is not an action (expected drop or pass)"
    );
}

#[test]
fn a_maglev_size_that_is_not_prime_is_refused_with_a_suggestion() {
    let text = BASE.replace("    backends:", "    maglev_size: 65536\n    backends:");
    let e = only_error(&text, 7, "services[0].maglev_size");
    assert_eq!(
        (e.column, e.message.as_str()),
        (18, "65536 is not prime (try 65537)")
    );
}

#[test]
fn a_maglev_size_too_small_or_too_large_is_refused() {
    let text = BASE.replace("    backends:", "    maglev_size: 13\n    backends:");
    let e = only_error(&text, 7, "services[0].maglev_size");
    assert_eq!(
        e.message,
        "13 is too small (251..=655373, a prime; default 65537)"
    );
    let text = BASE.replace("    backends:", "    maglev_size: 1000003\n    backends:");
    let e = only_error(&text, 7, "services[0].maglev_size");
    assert_eq!(
        e.message,
        "1000003 is too large (251..=655373, a prime; default 65537)"
    );
}

#[test]
fn a_maglev_size_below_the_backend_count_is_refused() {
    let e = only_error(&many(1, 252, 251), 7, "services[0].maglev_size");
    assert_eq!(
        e.message,
        "251 is smaller than the 252 backends of the service (each needs a slot)"
    );
    assert_eq!(ok(&many(1, 251, 251)).services[0].backends.len(), 251);
}

#[test]
fn a_service_name_used_twice_is_refused() {
    let second = BASE[BASE.find("  - name").unwrap()..].replace("port: 80", "port: 81");
    let e = only_error(&format!("{BASE}{second}"), 10, "services[1].name");
    assert_eq!(
        e.message,
        "service name `web` is already used by services[0] (line 3)"
    );
}

#[test]
fn two_services_on_the_same_vip_port_and_protocol_are_refused() {
    let second = BASE[BASE.find("  - name").unwrap()..].replace("web", "web2");
    let e = only_error(&format!("{BASE}{second}"), 10, "services[1]");
    assert_eq!(
        e.message,
        "10.0.0.100 port 80/tcp is already served by services[0] (line 3)"
    );
    let udp = second.replace("tcp", "udp");
    assert_eq!(ok(&format!("{BASE}{udp}")).services.len(), 2);
}

#[test]
fn an_interface_listed_twice_is_refused() {
    let e = only_error(
        &BASE.replace("[eth0]", "[eth0, eth1, eth0]"),
        1,
        "interfaces[2]",
    );
    assert_eq!(
        (e.column, e.message.as_str()),
        (26, "`eth0` is listed twice (first at line 1)")
    );
}

#[test]
fn an_interface_missing_on_the_host_is_refused() {
    let e = only_error(&BASE.replace("[eth0]", "[eth0, eth7]"), 1, "interfaces[1]");
    assert_eq!(
        e.message,
        "interface `eth7` does not exist on this host (see `ip link`)"
    );
}

#[test]
fn an_empty_interface_list_is_refused() {
    let e = only_error(&BASE.replace("[eth0]", "[]"), 1, "interfaces");
    assert_eq!(
        e.message,
        "no interface is listed (list at least one, e.g. [eth0])"
    );
}

#[test]
fn more_services_than_the_maximum_are_refused() {
    let e = only_error(&many(1025, 0, 251), 3, "services");
    assert_eq!(
        e.message,
        "1025 services are listed, at most 1024 are allowed"
    );
    assert_eq!(ok(&many(1024, 0, 251)).services.len(), 1024);
}

#[test]
fn more_backends_in_total_than_the_maximum_are_refused() {
    let e = only_error(&many(2, 8193, 8209), 3, "services");
    assert_eq!(
        e.message,
        "16386 backends in total (backups and fallback servers included), at most 16384 are allowed"
    );
}

#[test]
fn table_slots_too_few_for_the_services_are_refused() {
    let e = only_error(
        &format!("maglev_table_slots: 131073\n{BASE}"),
        1,
        "maglev_table_slots",
    );
    assert_eq!(
        e.message,
        "131073 slots cannot hold the services' tables: at least 131074 are needed (2 × the sum of maglev_size: a live and a next table per service)"
    );
    assert_eq!(
        ok(&format!("maglev_table_slots: 131074\n{BASE}")).maglev_table_slots,
        131074
    );
}

#[test]
fn bad_table_slots_are_reported_even_when_a_service_is_invalid() {
    let text = format!(
        "maglev_table_slots: lots\n{}",
        BASE.replace("port: 80", "port: 0")
    );
    let fields: Vec<String> = errors(&text).into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["services[0].port", "maglev_table_slots"]);
}

#[test]
fn table_slots_above_64_mi_are_refused() {
    let e = only_error(
        &format!("maglev_table_slots: {}\n{BASE}", MAX_TABLE_SLOTS + 1),
        1,
        "maglev_table_slots",
    );
    assert_eq!(e.message, "67108865 is out of range (0..=67108864)");
}

#[test]
fn default_table_slots_do_not_depend_on_the_services() {
    // So a reload adding or resizing services never changes a setting fixed at load.
    assert_eq!(ok(&many(3, 1, 251)).maglev_table_slots, DEFAULT_TABLE_SLOTS);
    assert_eq!(
        ok(&many(30, 1, 65537)).maglev_table_slots,
        DEFAULT_TABLE_SLOTS
    );
}

#[test]
fn services_needing_more_than_the_default_must_set_maglev_table_slots() {
    let e = only_error(&many(4, 1, 655373), 3, "services");
    assert!(
        e.message
            .contains("more than the default maglev_table_slots of 4194304")
            && e.message.contains("set maglev_table_slots"),
        "{e}"
    );
    let explicit = format!("maglev_table_slots: 8000000\n{}", many(4, 1, 655373));
    assert_eq!(ok(&explicit).maglev_table_slots, 8_000_000);
}

#[test]
fn services_whose_tables_exceed_64_mi_slots_are_refused() {
    let e = only_error(&many(52, 1, 655373), 3, "services");
    assert!(
        e.message
            .starts_with("the services' Maglev tables need 68158792 slots"),
        "{e}"
    );
}

/// A host whose own address is 10.0.0.1/24 (and the VIP 10.0.0.100/32 on the same link).
struct Lb;

impl crate::config::HostFacts for Lb {
    fn interface_exists(&self, _: &str) -> bool {
        true
    }

    fn local_addresses(&self) -> Vec<(std::net::IpAddr, u8)> {
        vec![
            ("10.0.0.1".parse().unwrap(), 24),
            ("10.0.0.100".parse().unwrap(), 32),
            ("fd00::1".parse().unwrap(), 64),
        ]
    }
}

/// The one error of `text` on the host [`Lb`]: its field and message.
fn lb_error(text: &str) -> (String, String) {
    let errors = crate::config::parse_file(std::path::Path::new("t.yaml"), text, &Lb)
        .expect_err("refused")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    (errors[0].field.clone(), errors[0].message.clone())
}

#[test]
fn no_server_may_be_a_vip_the_lbs_own_address_or_its_subnets_network_or_broadcast() {
    for (address, why) in [
        (
            "10.0.0.1",
            "10.0.0.1 is one of this LB's own addresses, it cannot be a backend",
        ),
        (
            "10.0.0.0",
            "10.0.0.0 is the network address of 10.0.0.0/24 (this LB's subnet), it cannot be a backend",
        ),
        (
            "10.0.0.255",
            "10.0.0.255 is the broadcast address of 10.0.0.0/24 (this LB's subnet), it cannot be a backend",
        ),
        (
            "10.0.0.100",
            "10.0.0.100 is a VIP of this file, it cannot be a backend",
        ),
        (
            "255.255.255.255",
            "255.255.255.255 is the broadcast address, it cannot be a backend",
        ),
    ] {
        let (field, message) = lb_error(&BASE.replace("10.0.0.11", address));
        assert_eq!(field, "services[0].backends[0].address", "{address}");
        assert_eq!(message, why);
    }
    // Another service's VIP, and a backup, are held to the same rule.
    let two = format!(
        "{BASE}  - name: other\n    vip: 10.0.0.200\n    port: 81\n    protocol: tcp\n    backends:\n      - address: 10.0.0.21\n"
    );
    let (field, message) = lb_error(&two.replace("10.0.0.21", "10.0.0.100"));
    assert_eq!(field, "services[1].backends[0].address");
    assert_eq!(
        message,
        "10.0.0.100 is a VIP of this file, it cannot be a backend"
    );
    // The same file is fine on a host that owns none of these.
    ok(&BASE.replace("10.0.0.11", "10.0.0.1"));
}

#[test]
fn an_ipv4_mapped_ipv6_address_is_refused_with_its_ipv4_spelling() {
    let e = only_error(
        &BASE.replace("10.0.0.100", "::ffff:10.0.0.100"),
        4,
        "services[0].vip",
    );
    assert_eq!(
        e.message,
        "::ffff:10.0.0.100 is an IPv4-mapped IPv6 address (write 10.0.0.100), it cannot be a VIP"
    );
}
