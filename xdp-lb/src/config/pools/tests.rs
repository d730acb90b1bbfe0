//! Named pools and client rules: what a valid file gives, and one test per rule, each
//! checking the error's line, field path and message.

use std::net::IpAddr;

use crate::config::file::tests::{assert_file_round_trips, errors, ok_file, only_error};
use crate::config::*;

/// A valid file; line numbers matter: 7 backends, 10 pools, 11 premium, 12 its backends,
/// 13 and 14 its servers, 16 the backup, 17 clients, 18 to 20 the rules.
const POOLS: &str = "\
interfaces: [eth0]
services:
  - name: video
    vip: 10.0.0.100
    port: 1935
    protocol: tcp
    backends:
      - address: 10.0.0.11
      - address: 10.0.0.12
    pools:
      premium:
        backends:
          - address: 10.0.0.21
          - address: 10.0.0.22
            weight: 2
            backup: 10.0.0.29
    clients:
      - {prefix: 198.51.100.0/24, pool: premium}
      - {prefix: 198.51.100.7/32, action: drop}
      - {prefix: 198.51.100.8, pool: default}
";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn prefix(text: &str) -> ClientPrefix {
    text.parse().expect("test prefix")
}

#[test]
fn pools_and_client_rules_are_read_with_their_defaults_and_render_back_the_same() {
    let file = ok_file(POOLS);
    let video = &file.config.services[0];
    assert_eq!(video.pools.len(), 1);
    let premium = &video.pools[0];
    assert_eq!(
        (premium.name.as_str(), premium.maglev_size),
        ("premium", 65537),
        "a pool's table is the service's size by default"
    );
    assert_eq!(premium.backends[1].weight, 2);
    assert_eq!(
        video.clients,
        [
            ClientRule {
                prefix: prefix("198.51.100.0/24"),
                action: ClientAction::Pool("premium".into())
            },
            ClientRule {
                prefix: prefix("198.51.100.7/32"),
                action: ClientAction::Drop
            },
            ClientRule {
                prefix: prefix("198.51.100.8/32"),
                action: ClientAction::Pool("default".into())
            },
        ]
    );
    let failover = &file.failover.services["video"];
    assert_eq!(failover.backup_of(ip("10.0.0.22")), Some(ip("10.0.0.29")));
    assert_eq!(
        failover.pools["premium"].primaries,
        [ip("10.0.0.21"), ip("10.0.0.22")].into()
    );
    assert_eq!(video.pool_of(ip("10.0.0.21")), Some("premium"));
    assert_eq!(video.pool_of(ip("10.0.0.11")), Some(DEFAULT_POOL));
    // The fixed default, whatever the pools; the service and its pool need 2 × 2 tables.
    assert_eq!(
        file.config.maglev_table_slots,
        crate::config::file::validate::DEFAULT_TABLE_SLOTS
    );
    assert_eq!(file.config.table_slots_needed(), 4 * 65537);
    assert_file_round_trips(&file);
}

#[test]
fn a_pools_health_check_applies_to_its_servers_and_its_backups_but_not_to_the_others() {
    let text = POOLS.replace(
        "      premium:\n",
        "      premium:\n        health_check: {port: 8080, rise: 1}\n        fallback:\n          - address: 10.0.0.31\n",
    );
    let file = ok_file(&text);
    let f = &file.failover.services["video"];
    let port = |address: &str, role: Role| f.check_for(ip(address), role).map(|c| c.port);
    assert_eq!(port("10.0.0.21", Role::Primary), Some(8080));
    assert_eq!(port("10.0.0.29", Role::Backup), Some(8080));
    assert_eq!(port("10.0.0.31", Role::Fallback), Some(8080));
    assert_eq!(port("10.0.0.11", Role::Primary), Some(1935));
    assert_eq!(f.fallback_of("premium").len(), 1);
    assert!(f.fallback_of(DEFAULT_POOL).is_empty());
    assert!(
        f.standbys().contains(&(ip("10.0.0.31"), Role::Fallback)),
        "a pool's fallback servers are standbys of the service"
    );
    assert_file_round_trips(&file);
}

#[test]
fn a_pool_server_overriding_its_pools_check_keeps_the_rest_of_the_pools_check() {
    let text = POOLS
        .replace(
            "      premium:\n",
            "      premium:\n        health_check: {port: 8080}\n",
        )
        .replace(
            "          - address: 10.0.0.21\n",
            "          - address: 10.0.0.21\n            health_check: {rise: 5}\n",
        );
    let file = ok_file(&text);
    let check = file.failover.services["video"]
        .check_for(ip("10.0.0.21"), Role::Primary)
        .cloned()
        .expect("checked");
    assert_eq!((check.port, check.rise), (8080, 5));
    assert_file_round_trips(&file);
}

#[test]
fn the_name_default_is_reserved_for_the_services_own_backends() {
    let e = only_error(
        &POOLS
            .replace("      premium:", "      default:")
            .replace("pool: premium", "pool: default"),
        11,
        "services[0].pools.default",
    );
    assert!(e.message.contains("the service's own backends"), "{e}");
}

#[test]
fn a_pool_name_with_other_characters_is_refused() {
    let e = only_error(
        &POOLS
            .replace("      premium:", "      \"pre mium\":")
            .replace("pool: premium", "pool: \"pre mium\""),
        11,
        "services[0].pools.pre mium",
    );
    assert!(
        e.message.starts_with("`pre mium` is not a valid pool name"),
        "{e}"
    );
}

#[test]
fn a_rule_must_name_a_pool_of_its_service() {
    let e = only_error(
        &POOLS.replace("pool: premium}", "pool: gold}"),
        18,
        "services[0].clients[0].pool",
    );
    assert_eq!(
        e.message,
        "this service has no pool `gold` (its pools: default, premium)"
    );
}

#[test]
fn a_rule_has_a_pool_or_drops_not_both_and_not_neither() {
    let both = only_error(
        &POOLS.replace("action: drop}", "action: drop, pool: premium}"),
        19,
        "services[0].clients[1].action",
    );
    assert!(both.message.contains("not both"), "{both}");
    let neither = only_error(
        &POOLS.replace(
            "{prefix: 198.51.100.7/32, action: drop}",
            "{prefix: 198.51.100.7/32}",
        ),
        19,
        "services[0].clients[1]",
    );
    assert_eq!(
        neither.message,
        "a client rule needs `pool: NAME` or `action: drop`"
    );
    let other = only_error(
        &POOLS.replace("action: drop}", "action: reject}"),
        19,
        "services[0].clients[1].action",
    );
    assert_eq!(
        other.message,
        "`reject` is not a rule action (expected drop)"
    );
}

#[test]
fn a_prefix_with_host_bits_a_bad_length_or_of_the_other_family_is_refused() {
    let host_bits = only_error(
        &POOLS.replace("198.51.100.0/24", "198.51.100.1/24"),
        18,
        "services[0].clients[0].prefix",
    );
    assert_eq!(
        host_bits.message,
        "198.51.100.1/24 has host bits set (did you mean 198.51.100.0/24?)"
    );
    let long = only_error(
        &POOLS.replace("198.51.100.7/32", "198.51.100.7/33"),
        19,
        "services[0].clients[1].prefix",
    );
    assert_eq!(
        long.message,
        "/33 is longer than an IPv4 address (at most /32)"
    );
    let v6 = only_error(
        &POOLS.replace("198.51.100.7/32", "\"2001:db8:7::/48\""),
        19,
        "services[0].clients[1].prefix",
    );
    assert_eq!(
        v6.message,
        "2001:db8:7::/48 is IPv6 but the service's VIP 10.0.0.100 is IPv4 (a rule must be of its VIP's family)"
    );
    let garbage = only_error(
        &POOLS.replace("198.51.100.7/32", "clients-of-acme"),
        19,
        "services[0].clients[1].prefix",
    );
    assert!(
        garbage
            .message
            .starts_with("`clients-of-acme` is not an IPv4 or IPv6 prefix")
    );
}

#[test]
fn a_prefix_listed_twice_is_refused_where_it_repeats() {
    let e = only_error(
        &POOLS.replace("198.51.100.8, pool", "198.51.100.0/24, pool"),
        20,
        "services[0].clients[2].prefix",
    );
    assert_eq!(
        e.message,
        "198.51.100.0/24 is listed twice (first as clients[0], line 18)"
    );
}

#[test]
fn a_server_is_in_one_pool_of_a_service() {
    let twice = only_error(
        &POOLS.replace("address: 10.0.0.21", "address: 10.0.0.12"),
        13,
        "services[0].pools.premium.backends[0].address",
    );
    assert_eq!(
        twice.message,
        "10.0.0.12 is already in the default pool (services[0].backends[1].address, line 9); a server is in one pool of a service"
    );
    let backup = only_error(
        &POOLS.replace("backup: 10.0.0.29", "backup: 10.0.0.11"),
        16,
        "services[0].pools.premium.backends[1].backup",
    );
    assert!(
        backup
            .message
            .starts_with("10.0.0.11 is already in the default pool"),
        "{backup}"
    );
}

#[test]
fn a_backup_that_is_a_primary_of_its_own_pool_is_named_by_the_pool() {
    let e = only_error(
        &POOLS.replace("backup: 10.0.0.29", "backup: 10.0.0.21"),
        16,
        "services[0].pools.premium.backends[1].backup",
    );
    assert_eq!(
        e.message,
        "10.0.0.21 is a backend of pool premium (backends[0], line 13); a backup must be a standby that is not"
    );
}

#[test]
fn a_pools_table_size_is_checked_like_a_services() {
    let e = only_error(
        &POOLS.replace(
            "      premium:\n",
            "      premium:\n        maglev_size: 1000\n",
        ),
        12,
        "services[0].pools.premium.maglev_size",
    );
    assert_eq!(e.message, "1000 is not prime (try 1009)");
    let file = ok_file(&POOLS.replace(
        "      premium:\n",
        "      premium:\n        maglev_size: 251\n",
    ));
    assert_eq!(file.config.services[0].pools[0].maglev_size, 251);
    assert_file_round_trips(&file);
}

#[test]
fn a_pool_without_backends_and_a_service_with_rules_but_no_pool_are_accepted() {
    let file = ok_file(&POOLS.replace(
        "        backends:\n          - address: 10.0.0.21\n          - address: 10.0.0.22\n            weight: 2\n            backup: 10.0.0.29\n",
        "        backends: []\n",
    ));
    assert!(file.config.services[0].pools[0].backends.is_empty());
    assert_file_round_trips(&file);
    let text = POOLS
        .replace(
            "    pools:\n      premium:\n        backends:\n          - address: 10.0.0.21\n          - address: 10.0.0.22\n            weight: 2\n            backup: 10.0.0.29\n",
            "",
        )
        .replace("pool: premium", "pool: default");
    let file = ok_file(&text);
    assert_eq!(file.config.services[0].clients.len(), 3);
    assert_file_round_trips(&file);
}

#[test]
fn ipv6_services_take_ipv6_rules() {
    let text = "\
interfaces: [eth0]
services:
  - name: v6
    vip: fd00::100
    port: 1935
    protocol: tcp
    backends:
      - address: fd00::11
    pools:
      premium:
        backends:
          - address: fd00::21
    clients:
      - {prefix: \"2001:db8:7::/48\", pool: premium}
      - {prefix: \"2001:db8:7::1/128\", action: drop}
";
    let file = ok_file(text);
    assert_eq!(
        file.config.services[0].clients[0].prefix,
        prefix("2001:db8:7::/48")
    );
    assert_file_round_trips(&file);
}

#[test]
fn every_rule_error_of_a_file_is_reported_at_once() {
    let text = POOLS
        .replace("pool: premium}", "pool: gold}")
        .replace("198.51.100.7/32", "198.51.100.7/40");
    let all = errors(&text);
    assert_eq!(all.len(), 2, "{}", ConfigErrors(all.clone()));
}
