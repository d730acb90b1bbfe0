//! The audit's rules for `vips` and `local_macs`, against the fake kernel view of
//! `tests.rs`.

use xdp_lb_common::{ServiceKey, VipKey, map_names, vip_filter_bit};

use super::tests::{ETH0_MACS, consistent, key, lines, local_macs, vip};
use super::*;

#[test]
fn a_vip_missing_from_vips_is_drift_naming_the_vip_and_what_it_costs() {
    let (intent, mut kernel) = consistent();
    kernel.vips.clear();
    assert_eq!(
        lines(&intent, &kernel),
        [
            "VIP 10.77.0.100: missing from vips: later fragments to it whose first was not seen \
          reach the LB host instead of being dropped"
        ]
    );
    assert_eq!(compare(&intent, &kernel)[0].map, map_names::VIPS);
}

#[test]
fn an_address_in_vips_that_no_service_has_is_drift() {
    let (intent, mut kernel) = consistent();
    kernel.vips.insert(VipKey {
        addr: [u32::from_ne_bytes([10, 77, 0, 101]), 0, 0, 0],
        ..vip()
    });
    assert_eq!(
        lines(&intent, &kernel),
        [
            "vips key 10.77.0.101: an address no configured service has: later fragments to it \
          whose first was not seen are dropped instead of reaching the LB host"
        ]
    );
}

#[test]
fn a_service_s_bit_missing_from_vip_filter_is_drift_naming_the_service_and_what_it_costs() {
    let (intent, mut kernel) = consistent();
    let bit = vip_filter_bit(&key().addr, key().family, key().port);
    kernel.vip_filter_words[bit as usize / 64] &= !(1 << (bit % 64));
    assert_eq!(
        lines(&intent, &kernel),
        [format!(
            "service video-rtmp 10.77.0.100:1935/tcp: bit {bit} missing from vip_filter: its \
             frames are passed to the LB host instead of balanced"
        )]
    );
    assert_eq!(compare(&intent, &kernel)[0].map, map_names::VIP_FILTER);
}

#[test]
fn a_vip_filter_bit_no_service_has_is_drift() {
    let (intent, mut kernel) = consistent();
    let other_port = ServiceKey {
        port: 8080u16.to_be(),
        ..key()
    };
    let bit = vip_filter_bit(&other_port.addr, other_port.family, other_port.port);
    assert_ne!(bit, vip_filter_bit(&key().addr, key().family, key().port));
    kernel.vip_filter_words[bit as usize / 64] |= 1 << (bit % 64);
    assert_eq!(
        lines(&intent, &kernel),
        [format!(
            "vip_filter bit {bit}: set, but no configured service has it: frames to the \
             (address, port) pairs that share it take the lookups after the filter"
        )]
    );
    // A word missing altogether reads as zero: every VIP's bit is then missing.
    kernel.vip_filter_words.clear();
    assert_eq!(compare(&intent, &kernel).len(), 1);
}

#[test]
fn an_interface_missing_from_local_macs_is_drift() {
    let (intent, mut kernel) = consistent();
    kernel.local_macs.clear();
    let drift = compare(&intent, &kernel);
    assert_eq!(
        lines(&intent, &kernel),
        [
            "interface eth0 (ifindex 2): key missing from local_macs: frames there are balanced \
          whatever their destination MAC (promiscuous or flooded ones too)"
        ]
    );
    assert_eq!(drift[0].map, map_names::LOCAL_MACS);
}

#[test]
fn local_macs_differing_from_the_interfaces_are_drift_listing_both() {
    let (intent, mut kernel) = consistent();
    kernel
        .local_macs
        .insert(2, local_macs(&[ETH0_MACS[0], [2, 0, 0, 0, 0, 0x99]]));
    assert_eq!(
        lines(&intent, &kernel),
        [
            "interface eth0 (ifindex 2): local_macs differ: 02:00:00:00:00:99 02:77:00:00:00:01 \
          (agent: 02:77:00:00:00:01 02:77:00:00:01:00)"
        ]
    );
    // A MAC left out by the count is missing too.
    kernel.local_macs.insert(2, {
        let mut value = local_macs(&ETH0_MACS);
        value.count = 1;
        value
    });
    assert_eq!(compare(&intent, &kernel).len(), 1);
}

#[test]
fn a_local_macs_entry_for_an_interface_the_agent_does_not_register_is_drift() {
    let (intent, mut kernel) = consistent();
    kernel
        .local_macs
        .insert(9, local_macs(&[[2, 0, 0, 0, 0, 9]]));
    assert_eq!(
        lines(&intent, &kernel),
        ["local_macs key 9: an interface the agent does not register (02:00:00:00:00:09)"]
    );
}
