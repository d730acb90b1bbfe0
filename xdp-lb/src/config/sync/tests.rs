//! `sync:`: its defaults, every key read, each rule's error with its line, column, field
//! path and what to do, the key file, and the effective configuration read back.

use std::{
    fs,
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::config::{
    file::tests::{BASE, FakeHost, assert_file_round_trips, errors, ok_file, only_error},
    *,
};

/// Lines 1 to 3 of a minimal section: `sync:`, its peers (the first at column 11, the
/// second at column 22) and its key file (column 13).
const PEERS: &str = "  peers: [192.0.2.1, 192.0.2.2]\n";
const KEY: &str = "  key_file: /etc/xdp-lb/sync.key\n";

/// `sync:` holding `keys` (each indented by two spaces), before `BASE`: line 1 is `sync:`,
/// line 2 the first key.
fn with_sync(keys: &str) -> String {
    format!("sync:\n{keys}{BASE}")
}

/// The minimal section with `more` keys after the key file (the first on line 4).
fn minimal_and(more: &str) -> String {
    with_sync(&format!("{PEERS}{KEY}{more}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn settings(text: &str) -> SyncSettings {
    ok_file(text).sync.expect("sync is on")
}

/// A host with eth0, eth1 and lo whose sync key check answers `key`.
struct KeyHost(Result<(), String>);

impl HostFacts for KeyHost {
    fn interface_exists(&self, name: &str) -> bool {
        FakeHost.interface_exists(name)
    }

    fn sync_key(&self, _path: &Path) -> Result<(), String> {
        self.0.clone()
    }
}

/// Writes `text` to `dir/name` with permissions `mode`.
fn file(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// 64 hex digits: a 32-byte key, as `openssl rand -hex 32` writes it.
const GOOD_KEY: &str = "5f4dcc3b5aa765d61d8327deb882cf99b6b1e4c0a9d3b2f8e7c6d5a4b3c2d1e0\n";

#[test]
fn without_a_sync_section_sync_is_off() {
    assert_eq!(ok_file(BASE).sync, None);
}

#[test]
fn a_minimal_sync_section_gets_every_default() {
    let s = settings(&minimal_and(""));
    assert_eq!(
        s,
        SyncSettings {
            peers: vec![ip("192.0.2.1"), ip("192.0.2.2")],
            listen: None,
            port: 7946,
            key_file: PathBuf::from("/etc/xdp-lb/sync.key"),
            refresh: Duration::from_secs(30),
            max_rate: 50_000,
            max_clock_skew: Duration::from_secs(10),
        }
    );
    assert_eq!(
        (s.port, s.refresh, s.max_rate, s.max_clock_skew),
        (
            DEFAULT_SYNC_PORT,
            DEFAULT_SYNC_REFRESH,
            DEFAULT_SYNC_MAX_RATE,
            DEFAULT_SYNC_MAX_CLOCK_SKEW
        )
    );
}

#[test]
fn every_sync_key_is_read_when_given() {
    let text = with_sync(
        "  peers:\n    - 192.0.2.1\n    - 192.0.2.2\n    - 192.0.2.3\n  listen: 192.0.2.2\n  port: 7000\n  key_file: /etc/xdp-lb/sync.key\n  refresh: 5s\n  max_rate: 1000\n  max_clock_skew: 2.5s\n",
    );
    assert_eq!(
        settings(&text),
        SyncSettings {
            peers: vec![ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")],
            listen: Some(ip("192.0.2.2")),
            port: 7000,
            key_file: PathBuf::from("/etc/xdp-lb/sync.key"),
            refresh: Duration::from_secs(5),
            max_rate: 1000,
            max_clock_skew: Duration::from_millis(2500),
        }
    );
}

#[test]
fn ipv6_peers_are_read() {
    let s = settings(&with_sync(&format!(
        "  peers: [\"2001:db8::1\", \"2001:db8::2\", \"2001:db8::3\"]\n  listen: \"2001:db8::1\"\n{KEY}"
    )));
    assert_eq!(
        s.peers,
        [ip("2001:db8::1"), ip("2001:db8::2"), ip("2001:db8::3")]
    );
    assert_eq!(s.listen, Some(ip("2001:db8::1")));
}

#[test]
fn fewer_than_two_peers_are_refused() {
    for peers in ["[192.0.2.1]", "[]"] {
        let e = only_error(
            &with_sync(&format!("  peers: {peers}\n{KEY}")),
            2,
            "sync.peers",
        );
        assert_eq!(e.column, 10, "{e}");
        assert_eq!(
            e.message,
            "list every LB's sync address, this one's included (at least two: sync needs another LB)"
        );
    }
}

#[test]
fn more_peers_than_allowed_are_refused() {
    let peers: Vec<String> = (1..=MAX_SYNC_PEERS + 1)
        .map(|i| format!("10.1.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let e = only_error(
        &with_sync(&format!("  peers: [{}]\n{KEY}", peers.join(", "))),
        2,
        "sync.peers",
    );
    assert_eq!(e.message, "65 addresses, at most 64 are allowed");
}

#[test]
fn a_peer_listed_twice_is_refused_at_its_second_place() {
    let e = only_error(
        &with_sync(&format!(
            "  peers: [192.0.2.1, 192.0.2.2, 192.0.2.1]\n{KEY}"
        )),
        2,
        "sync.peers[2]",
    );
    assert_eq!(e.column, 33);
    assert_eq!(e.message, "192.0.2.1 is listed twice");
    // The same address written otherwise is the same peer.
    let e = only_error(
        &with_sync(&format!(
            "  peers: [\"2001:db8::1\", \"2001:0db8:0:0::1\"]\n{KEY}"
        )),
        2,
        "sync.peers[1]",
    );
    assert_eq!(e.message, "2001:db8::1 is listed twice");
}

#[test]
fn a_peer_that_is_not_an_ip_address_is_refused_with_what_to_write() {
    for (written, shown) in [
        ("lb2.example.net", "`lb2.example.net`"),
        ("192.0.2.2:7946", "`192.0.2.2:7946`"),
        ("192.0.2.0/24", "`192.0.2.0/24`"),
    ] {
        let e = only_error(
            &with_sync(&format!("  peers: [192.0.2.1, {written}]\n{KEY}")),
            2,
            "sync.peers[1]",
        );
        assert_eq!(e.column, 22, "{e}");
        assert_eq!(
            e.message,
            format!(
                "{shown} is not an IP address (write the address only: every LB uses sync.port)"
            )
        );
    }
}

#[test]
fn loopback_multicast_and_unspecified_peers_are_refused() {
    for addr in [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "224.0.0.1",
        "239.1.1.1",
        "ff02::1",
        "0.0.0.0",
        "::",
    ] {
        let e = only_error(
            &with_sync(&format!("  peers: [192.0.2.1, \"{addr}\"]\n{KEY}")),
            2,
            "sync.peers[1]",
        );
        assert_eq!(
            e.message,
            format!("{addr} is not an address another LB can send to")
        );
    }
}

#[test]
fn a_wrong_peer_gives_one_error_only() {
    // Neither "fewer than two peers" nor "listen is not in peers" follows from it.
    let e = only_error(
        &with_sync(&format!(
            "  peers: [192.0.2.1, 127.0.0.1]\n  listen: 192.0.2.9\n{KEY}"
        )),
        2,
        "sync.peers[1]",
    );
    assert_eq!(
        e.message,
        "127.0.0.1 is not an address another LB can send to"
    );
}

#[test]
fn a_listen_address_that_is_not_among_the_peers_is_refused() {
    let e = only_error(&minimal_and("  listen: 192.0.2.9\n"), 4, "sync.listen");
    assert_eq!(e.column, 11);
    assert_eq!(
        e.message,
        "192.0.2.9 is not in sync.peers: list this LB there too (every LB reads the same list)"
    );
    let e = only_error(&minimal_and("  listen: 127.0.0.1\n"), 4, "sync.listen");
    assert_eq!(
        e.message,
        "127.0.0.1 is not an address another LB can send to"
    );
    let e = only_error(&minimal_and("  listen: lb1\n"), 4, "sync.listen");
    assert_eq!(
        e.message,
        "`lb1` is not an IP address (write the address only: every LB uses sync.port)"
    );
}

#[test]
fn a_port_out_of_range_is_refused() {
    for (port, message) in [
        ("0", "0 is out of range (1..=65535)"),
        ("70000", "70000 is out of range (1..=65535)"),
        ("-1", "-1 is out of range (1..=65535)"),
        (
            "ssh",
            "expected a whole number in 1..=65535, found the string `ssh`",
        ),
    ] {
        let e = only_error(&minimal_and(&format!("  port: {port}\n")), 4, "sync.port");
        assert_eq!(e.column, 9, "{e}");
        assert_eq!(e.message, message);
    }
    assert_eq!(settings(&minimal_and("  port: 65535\n")).port, 65535);
    assert_eq!(settings(&minimal_and("  port: 1\n")).port, 1);
}

#[test]
fn a_relative_key_file_is_refused() {
    for path in ["sync.key", "./sync.key", "etc/xdp-lb/sync.key"] {
        let e = only_error(
            &with_sync(&format!("{PEERS}  key_file: {path}\n")),
            3,
            "sync.key_file",
        );
        assert_eq!(e.column, 13, "{e}");
        assert_eq!(
            e.message,
            format!("`{path}` is not an absolute path (write the full path of the key file)")
        );
    }
}

#[test]
fn a_key_file_the_host_rejects_is_refused_with_the_hosts_reason() {
    let why = "is readable by every user (mode 0644); make it root's only: chmod 600";
    let host = KeyHost(Err(why.to_owned()));
    let text = minimal_and("");
    let all = parse_file(Path::new("test.yaml"), &text, &host)
        .unwrap_err()
        .0;
    assert_eq!(all.len(), 1, "{}", ConfigErrors(all.clone()));
    let e = &all[0];
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (3, 13, "sync.key_file"),
        "{e}"
    );
    assert_eq!(e.message, format!("`/etc/xdp-lb/sync.key` {why}"));
    // A relative path is refused before the host is asked.
    let e = &parse_file(
        Path::new("test.yaml"),
        &with_sync(&format!("{PEERS}  key_file: sync.key\n")),
        &host,
    )
    .unwrap_err()
    .0[0];
    assert!(e.message.contains("is not an absolute path"), "{e}");
    // A host that accepts it.
    let file = parse_file(Path::new("test.yaml"), &text, &KeyHost(Ok(()))).unwrap();
    assert!(file.sync.is_some());
}

#[test]
fn a_key_is_64_to_128_hex_digits_in_a_file_nobody_else_reads() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(&dir, "good", GOOD_KEY, 0o600);
    let key = read_key_file(&good).unwrap();
    // Its Debug shows the length, never the key.
    assert_eq!(format!("{key:?}"), "Key { len: 32, .. }");
    let group = file(&dir, "group", GOOD_KEY, 0o640);
    read_key_file(&group).unwrap();
    let long = file(&dir, "long", &format!("  {}\n\n", "AB".repeat(64)), 0o400);
    read_key_file(&long).unwrap();
}

#[test]
fn a_bad_key_file_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let make = "(make one with `openssl rand -hex 32`)";
    let cases = [
        (
            file(&dir, "open", GOOD_KEY, 0o644),
            "is readable by every user (mode 0644); make it root's only: chmod 600".to_owned(),
        ),
        (
            file(&dir, "world", GOOD_KEY, 0o604),
            "is readable by every user (mode 0604); make it root's only: chmod 600".to_owned(),
        ),
        (
            file(&dir, "password", "password: hunter2\n", 0o600),
            format!(
                "the sync key has a character that is not a hex digit at position 1 (counting from 1) {make}"
            ),
        ),
        (
            file(
                &dir,
                "inner-space",
                &format!("{} {}", &GOOD_KEY[..32], &GOOD_KEY[32..]),
                0o600,
            ),
            format!(
                "the sync key has a character that is not a hex digit at position 33 (counting from 1) {make}"
            ),
        ),
        (
            file(&dir, "short", &format!("{}\n", &GOOD_KEY[..32]), 0o600),
            format!("the sync key is too short: 16 bytes, at least 32 {make}"),
        ),
        (
            file(&dir, "too-long", &"ab".repeat(65), 0o600),
            format!("the sync key is too long: 65 bytes, at most 64 {make}"),
        ),
        (
            file(&dir, "odd", &GOOD_KEY[..63], 0o600),
            format!(
                "the sync key has an odd number of hex digits (63); two digits make a byte {make}"
            ),
        ),
        (
            file(&dir, "empty", " \n", 0o600),
            format!("the sync key is empty; it needs 64 to 128 hex digits (32 to 64 bytes) {make}"),
        ),
        (
            file(&dir, "huge", &"0".repeat(1025), 0o600),
            "is larger than 1024 bytes".to_owned(),
        ),
    ];
    for (path, why) in cases {
        assert_eq!(read_key_file(&path).unwrap_err(), why, "{}", path.display());
    }
    assert_eq!(
        read_key_file(dir.path()).unwrap_err(),
        "is a directory, not a regular file"
    );
    assert!(
        read_key_file(&dir.path().join("missing"))
            .unwrap_err()
            .starts_with("cannot be opened: ")
    );
}

#[test]
fn a_bad_key_never_shows_its_digits() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("{}q", &GOOD_KEY[..40]);
    let path = file(&dir, "leaky", &secret, 0o600);
    let why = read_key_file(&path).unwrap_err();
    assert!(!why.contains(&GOOD_KEY[..8]), "{why}");
    assert!(!why.contains('q'), "{why}");
}

#[test]
fn the_live_host_refuses_a_bad_key_file_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = file(&dir, "sync.key", GOOD_KEY, 0o644);
    let text = format!(
        "interfaces: [lo]\nsync:\n  peers: [192.0.2.1, 192.0.2.2]\n  key_file: {}\nservices: []\n",
        key.display()
    );
    let errors = parse_file(Path::new("t.yaml"), &text, &LiveHost).unwrap_err();
    let e = &errors.0[0];
    assert_eq!(
        (errors.len(), e.line, e.column, e.field.as_str()),
        (1, 4, 13, "sync.key_file"),
        "{errors}"
    );
    assert_eq!(
        e.message,
        format!(
            "`{}` is readable by every user (mode 0644); make it root's only: chmod 600",
            key.display()
        )
    );

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let file = parse_file(Path::new("t.yaml"), &text, &LiveHost).unwrap();
    assert_eq!(file.sync.map(|s| s.key_file), Some(key));

    let missing = dir.path().join("absent.key");
    let text = text.replace(
        &dir.path().join("sync.key").display().to_string(),
        &missing.display().to_string(),
    );
    let e = &parse_file(Path::new("t.yaml"), &text, &LiveHost)
        .unwrap_err()
        .0[0];
    assert_eq!(e.field, "sync.key_file");
    assert!(
        e.message
            .starts_with(&format!("`{}` cannot be opened: ", missing.display())),
        "{e}"
    );
}

#[test]
fn a_refresh_of_more_than_half_the_tcp_timeout_is_refused() {
    let timeout = "flow_table:\n  tcp_timeout: 60s\n";
    let e = only_error(
        &minimal_and(&format!("  refresh: 31s\n{timeout}")),
        4,
        "sync.refresh",
    );
    assert_eq!(e.column, 12);
    assert_eq!(
        e.message,
        "31s is more than half flow_table.tcp_timeout (or udp_timeout, with UDP services; 1m): the peers' copies of quiet flows would expire before they are told again"
    );
    // Half is allowed.
    let s = settings(&minimal_and(&format!("  refresh: 30s\n{timeout}")));
    assert_eq!(s.refresh, Duration::from_secs(30));
    // The default timeout (15m) allows up to 7.5 minutes.
    assert_eq!(
        settings(&minimal_and("  refresh: 450s\n")).refresh,
        Duration::from_secs(450)
    );
    only_error(&minimal_and("  refresh: 451s\n"), 4, "sync.refresh");
}

#[test]
fn a_bare_number_for_a_sync_duration_is_refused_with_the_units_to_write() {
    let e = only_error(&minimal_and("  refresh: 30\n"), 4, "sync.refresh");
    assert_eq!(e.message, "a bare number is ambiguous: write 30ms or 30s");
    let e = only_error(
        &minimal_and("  max_clock_skew: 10\n"),
        4,
        "sync.max_clock_skew",
    );
    assert_eq!(e.column, 19);
    assert_eq!(e.message, "a bare number is ambiguous: write 10ms or 10s");
}

#[test]
fn sync_durations_out_of_range_or_malformed_are_refused() {
    for (key, written, message) in [
        ("refresh", "500ms", "`500ms` is out of range (1s..=1h)"),
        ("refresh", "2h", "`2h` is out of range (1s..=1h)"),
        ("max_clock_skew", "0s", "`0s` is out of range (1s..=10m)"),
        ("max_clock_skew", "11m", "`11m` is out of range (1s..=10m)"),
        (
            "refresh",
            "soon",
            "`soon` is not a duration (write a number and a unit: 800ms, 30s, 1.5s, 15m, 1h)",
        ),
    ] {
        let e = only_error(
            &minimal_and(&format!("  {key}: {written}\n")),
            4,
            &format!("sync.{key}"),
        );
        assert_eq!(e.message, message, "{key}: {written}");
    }
    let s = settings(&minimal_and("  refresh: 1s\n  max_clock_skew: 10m\n"));
    assert_eq!(
        (s.refresh, s.max_clock_skew),
        (Duration::from_secs(1), Duration::from_secs(600))
    );
}

#[test]
fn a_max_rate_out_of_range_is_refused() {
    for (rate, message) in [
        ("99", "99 is out of range (100..=10000000)"),
        ("10000001", "10000001 is out of range (100..=10000000)"),
        ("0", "0 is out of range (100..=10000000)"),
        (
            "1.5",
            "expected a whole number in 100..=10000000, found the floating-point number 1.5",
        ),
    ] {
        let e = only_error(
            &minimal_and(&format!("  max_rate: {rate}\n")),
            4,
            "sync.max_rate",
        );
        assert_eq!(e.column, 13, "{e}");
        assert_eq!(e.message, message);
    }
    assert_eq!(settings(&minimal_and("  max_rate: 100\n")).max_rate, 100);
    assert_eq!(
        settings(&minimal_and("  max_rate: 10000000\n")).max_rate,
        10_000_000
    );
}

#[test]
fn an_unknown_key_under_sync_is_refused_with_its_location() {
    let e = only_error(&minimal_and("  peer: 192.0.2.3\n"), 4, "sync");
    assert_eq!(e.column, 3);
    assert!(
        e.message
            .starts_with("unknown field `peer`, expected one of"),
        "{e}"
    );
    // `interval` is not `refresh`, `key` not `key_file`.
    let e = only_error(&minimal_and("  interval: 30s\n"), 4, "sync");
    assert!(e.message.starts_with("unknown field `interval`"), "{e}");
}

#[test]
fn peers_and_key_file_are_required() {
    let e = only_error(&with_sync(KEY), 2, "sync");
    assert_eq!(e.message, "missing field `peers`");
    let e = only_error(&with_sync(PEERS), 2, "sync");
    assert_eq!(e.message, "missing field `key_file`");
}

#[test]
fn every_wrong_sync_key_is_reported_at_once() {
    let all = errors(&with_sync(
        "  peers: [192.0.2.1, 192.0.2.1]\n  key_file: sync.key\n  port: 0\n  refresh: 30\n  max_rate: 1\n  max_clock_skew: 1h\n",
    ));
    let fields: Vec<(usize, &str)> = all.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        fields,
        [
            (2, "sync.peers[1]"),
            (4, "sync.port"),
            (3, "sync.key_file"),
            (5, "sync.refresh"),
            (6, "sync.max_rate"),
            (7, "sync.max_clock_skew"),
        ],
        "{}",
        ConfigErrors(all.clone())
    );
    for e in &all {
        assert_eq!(e.path, PathBuf::from("test.yaml"));
    }
}

#[test]
fn the_effective_config_writes_sync_with_every_default_and_reads_back_the_same() {
    let file = ok_file(&minimal_and(""));
    let text = render_file(&file);
    assert!(
        text.contains(
            "sync:\n  peers:\n    - 192.0.2.1\n    - 192.0.2.2\n  port: 7946\n  key_file: \"/etc/xdp-lb/sync.key\"\n  refresh: 30s\n  max_rate: 50000\n  max_clock_skew: 10s\n"
        ),
        "{text}"
    );
    assert!(!text.contains("listen:"), "{text}");
    assert_file_round_trips(&file);
    // Without sync: no section.
    assert!(!render_file(&ok_file(BASE)).contains("sync:"));
}

#[test]
fn a_sync_section_with_every_key_reads_back_the_same() {
    let file = ok_file(&with_sync(
        "  peers: [10.9.0.1, 10.9.0.2, 10.9.0.3]\n  listen: 10.9.0.3\n  port: 17946\n  key_file: \"/etc/xdp-lb/keys/sync key\"\n  refresh: 1.5s\n  max_rate: 250\n  max_clock_skew: 90s\nflow_table:\n  tcp_timeout: 5m\n",
    ));
    let text = render_file(&file);
    assert!(text.contains("  listen: 10.9.0.3\n"), "{text}");
    assert!(text.contains("  refresh: 1500ms\n"), "{text}");
    assert!(text.contains("  max_clock_skew: 90s\n"), "{text}");
    assert_file_round_trips(&file);
}

#[test]
fn ipv6_peers_read_back_the_same() {
    let file = ok_file(&with_sync(&format!(
        "  peers: [\"2001:db8::1\", \"2001:db8::2\"]\n  listen: \"2001:db8::2\"\n{KEY}"
    )));
    assert_file_round_trips(&file);
}

/// An IPv6 address ending in `::` must be quoted to read back as an address (`fe80::` is
/// a mapping key when plain); `sync::render` writes peers and `listen` plain.
#[test]

fn ipv6_peers_ending_in_a_double_colon_read_back_the_same() {
    let file = ok_file(&with_sync(&format!(
        "  peers: [\"2001:db8:1::\", \"2001:db8:2::\"]\n  listen: \"2001:db8:1::\"\n{KEY}"
    )));
    assert_file_round_trips(&file);
}

#[test]
fn the_sync_example_is_valid_with_two_peers_and_defaults_spelt_out() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/xdp-lb-sync.yaml"
    ));
    let text = fs::read_to_string(path).unwrap();
    let file = parse_file(path, &text, &FakeHost).unwrap_or_else(|e| panic!("{e}"));
    let s = file.sync.clone().expect("the example turns sync on");
    assert_eq!(s.peers.len(), 2);
    assert_eq!(s.key_file, Path::new("/etc/xdp-lb/sync.key"));
    assert_eq!(
        (s.port, s.refresh, s.max_rate, s.max_clock_skew),
        (
            DEFAULT_SYNC_PORT,
            DEFAULT_SYNC_REFRESH,
            DEFAULT_SYNC_MAX_RATE,
            DEFAULT_SYNC_MAX_CLOCK_SKEW
        )
    );
    assert!(file.announce.is_some(), "several LBs announce their VIPs");
    assert_eq!(file.config.services.len(), 2);
    assert_file_round_trips(&file);
}

#[test]
fn broadcast_and_link_local_peers_are_refused() {
    let e = only_error(
        &with_sync(&format!("  peers: [192.0.2.1, 255.255.255.255]\n{KEY}")),
        2,
        "sync.peers[1]",
    );
    assert_eq!(
        e.message,
        "255.255.255.255 is not an address another LB can send to"
    );
    let e = only_error(
        &with_sync(&format!("  peers: [\"2001:db8::1\", \"fe80::2\"]\n{KEY}")),
        2,
        "sync.peers[1]",
    );
    assert_eq!(
        e.message,
        "fe80::2 is link-local: it needs an interface to be reached; use a global or unique-local address"
    );
}

#[test]
fn peers_of_both_families_are_refused() {
    let e = only_error(
        &with_sync(&format!("  peers: [192.0.2.1, \"2001:db8::2\"]\n{KEY}")),
        2,
        "sync.peers",
    );
    assert_eq!(
        e.message,
        "192.0.2.1 and 2001:db8::2 are of different families: one LB listens on one address, so every peer must be IPv4, or every one IPv6"
    );
}

#[test]
fn the_default_refresh_shrinks_to_half_a_short_timeout() {
    // 30s by default, but never more than half the TCP timeout.
    let s = settings(&minimal_and("flow_table:\n  tcp_timeout: 40s\n"));
    assert_eq!(s.refresh, Duration::from_secs(20));
    // UDP's timeout counts only with a UDP service.
    let s = settings(&minimal_and("flow_table:\n  udp_timeout: 20s\n"));
    assert_eq!(s.refresh, DEFAULT_SYNC_REFRESH);
    let udp = minimal_and("flow_table:\n  udp_timeout: 20s\n").replacen(
        "protocol: tcp",
        "protocol: udp",
        1,
    );
    assert!(udp.contains("protocol: udp"), "{udp}");
    assert_eq!(settings(&udp).refresh, Duration::from_secs(10));
}
