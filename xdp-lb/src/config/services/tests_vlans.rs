//! Backends on another VLAN than their service's: what a valid file gives, and the
//! refusal of a backend VLAN on a service that takes untagged frames.

use std::net::IpAddr;

use crate::config::file::tests::{assert_file_round_trips, errors, ok_file, only_error};
use crate::config::*;

/// A valid file; line numbers matter: 7 the service's VLAN, 9 to 17 its backends.
const VLANS: &str = "\
interfaces: [eth0]
services:
  - name: hls
    vip: 10.0.0.100
    port: 8080
    protocol: tcp
    vlan: 100
    backends:
      - address: 10.0.0.11
      - address: 10.0.0.12
        vlan: 100
      - address: 10.0.20.13
        vlan: 200
        backup: 10.0.20.29
      - address: 10.0.20.14
        vlan: 200
        backup: 10.0.20.29
";

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_backend_keeps_its_own_vlan_and_the_services_is_the_default() {
    let file = ok_file(VLANS);
    let vlans: Vec<(IpAddr, Option<u16>)> = file.config.services[0]
        .backends
        .iter()
        .map(|b| (b.address, b.vlan))
        .collect();
    assert_eq!(
        vlans,
        [
            (addr("10.0.0.11"), None),
            // The service's own VLAN, written out, is the default: its tag is kept.
            (addr("10.0.0.12"), None),
            (addr("10.0.20.13"), Some(200)),
            (addr("10.0.20.14"), Some(200)),
        ]
    );
    assert_file_round_trips(&file);
}

#[test]
fn a_backup_stands_in_on_the_vlan_of_its_primaries() {
    let failover = &ok_file(VLANS).failover.services["hls"];
    let backup = failover.standby_backend(addr("10.0.20.29"), Role::Backup);
    assert_eq!(backup.vlan, Some(200));
    let plain = VLANS.replace("        vlan: 200\n", "");
    let failover = &ok_file(&plain).failover.services["hls"];
    let backup = failover.standby_backend(addr("10.0.20.29"), Role::Backup);
    assert_eq!(backup.vlan, None, "on the service's VLAN");
}

#[test]
fn a_backup_of_backends_on_two_vlans_is_refused() {
    let text = VLANS.replacen("vlan: 200\n        backup", "vlan: 300\n        backup", 1);
    let e = only_error(&text, 17, "services[0].backends[3].backup");
    assert!(
        e.message
            .contains("stands in for 10.0.20.13 on VLAN 300 and for 10.0.20.14 on VLAN 200"),
        "{e}"
    );
}

#[test]
fn a_backend_vlan_on_a_service_taking_untagged_frames_is_refused_with_the_fix() {
    // Every line below the service's `vlan` moves up one.
    let text = VLANS.replacen("    vlan: 100\n", "", 1);
    let all = errors(&text);
    let fields: Vec<(usize, &str)> = all.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        fields,
        [
            (10, "services[0].backends[1].vlan"),
            (12, "services[0].backends[2].vlan"),
            (15, "services[0].backends[3].vlan"),
        ]
    );
    let message = &all[1].message;
    for part in [
        "backend 10.0.20.13 is on VLAN 200",
        "service `hls` takes untagged frames",
        "`vlan: <id>` on the service",
        "remove the backend's `vlan`",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn a_backend_vlan_out_of_range_is_refused() {
    for (vlan, why) in [
        ("0", "0 is out of range (1..=4094)"),
        ("4095", "4095 is out of range (1..=4094)"),
        ("two", "found the string `two`"),
    ] {
        let text = VLANS.replacen("vlan: 200", &format!("vlan: {vlan}"), 1);
        let e = only_error(&text, 13, "services[0].backends[2].vlan");
        assert!(e.message.contains(why), "{vlan}: {e}");
    }
}
