//! Tests of reading the file: schema errors, defaults, anchors, rendering, loading. The rules
//! of validation are tested in each section's `tests.rs`.

use std::path::{Path, PathBuf};

use crate::config::{file::validate, services::validate::is_prime, *};

/// A host where eth0, eth1 and lo exist.
pub(crate) struct FakeHost;

impl HostFacts for FakeHost {
    fn interface_exists(&self, name: &str) -> bool {
        matches!(name, "eth0" | "eth1" | "lo")
    }

    /// Commands under /etc/xdp-lb/ and /usr/ exist and are executable.
    fn is_executable(&self, path: &Path) -> bool {
        path.starts_with("/etc/xdp-lb") || path.starts_with("/usr")
    }
}

/// A valid file; line numbers matter to the tests: 1 interfaces, 2 services, 3 name, 4 vip,
/// 5 port, 6 protocol, 7 backends, 8 and 9 the two backends.
pub(crate) const BASE: &str = "\
interfaces: [eth0]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    backends:
      - address: 10.0.0.11
      - address: 10.0.0.12
";

pub(crate) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_str(Path::new("test.yaml"), text, &FakeHost)
}

pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.0,
    }
}

/// The only error of `text`, checked to be at `line` and `field`.
pub(crate) fn only_error(text: &str, line: usize, field: &str) -> ConfigError {
    let all = errors(text);
    assert_eq!(
        all.len(),
        1,
        "expected one error, got:\n{}",
        ConfigErrors(all.clone())
    );
    let e = all.into_iter().next().unwrap();
    assert_eq!((e.line, e.field.as_str()), (line, field), "{e}");
    assert_eq!(e.path, PathBuf::from("test.yaml"));
    e
}

pub(crate) fn ok(text: &str) -> Config {
    ok_file(text).config
}

/// The whole file, failover settings included.
pub(crate) fn ok_file(text: &str) -> ConfigFile {
    match parse_file(Path::new("test.yaml"), text, &FakeHost) {
        Ok(c) => c,
        Err(e) => panic!("refused:\n{e}\n{text}"),
    }
}

/// `file` rendered and read back is the same.
pub(crate) fn assert_file_round_trips(file: &ConfigFile) {
    let text = render_file(file);
    let mut again = ok_file(&text);
    again.config.path.clone_from(&file.config.path);
    assert_eq!(again, *file, "{text}");
}

fn assert_round_trips(config: &Config) {
    let text = render(config);
    let again = ok(&text);
    assert_eq!(
        Config {
            path: config.path.clone(),
            ..again
        },
        *config,
        "{text}"
    );
}

#[test]
fn a_minimal_file_gets_every_default() {
    let c = ok("interfaces: [eth0]\nservices: []\n");
    assert_eq!(c.path, PathBuf::from("test.yaml"));
    assert_eq!(c.flow_hash_seed, DEFAULT_FLOW_HASH_SEED);
    assert_eq!(c.xdp_mode, XdpAttachMode::Native);
    assert_eq!(c.interfaces, ["eth0"]);
    assert_eq!(c.maglev_table_slots, validate::DEFAULT_TABLE_SLOTS);
    assert!(c.services.is_empty());
}

#[test]
fn a_service_gets_default_size_action_weight_and_no_mac() {
    let c = ok(BASE);
    let s = &c.services[0];
    assert_eq!(
        (s.name.as_str(), s.port, s.protocol),
        ("web", 80, Protocol::Tcp)
    );
    assert_eq!(s.vip, "10.0.0.100".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(s.maglev_size, 65537);
    assert_eq!(s.when_no_backend, NoBackendAction::Drop);
    assert_eq!(s.when_backend_down, DownAction::KeepFlows);
    assert_eq!(s.backends.len(), 2);
    assert_eq!((s.backends[1].weight, s.backends[1].mac), (1, None));
    assert_eq!(c.maglev_table_slots, validate::DEFAULT_TABLE_SLOTS);
}

#[test]
fn every_key_is_read_when_given() {
    let c = ok("\
flow_hash_seed: 12345
xdp_mode: generic
interfaces: [eth0, eth1]
maglev_table_slots: 1048576
services:
  - name: dns
    vip: \"2001:db8::53\"
    port: 53
    protocol: udp
    maglev_size: 251
    when_no_backend: pass
    backends:
      - {address: \"2001:db8::1\", weight: 0, mac: 02:00:00:00:00:01}
");
    assert_eq!(
        (c.flow_hash_seed, c.xdp_mode),
        (12345, XdpAttachMode::Generic)
    );
    assert_eq!(c.interfaces, ["eth0", "eth1"]);
    assert_eq!(c.maglev_table_slots, 1 << 20);
    let s = &c.services[0];
    assert_eq!(
        (s.protocol, s.maglev_size, s.when_no_backend),
        (Protocol::Udp, 251, NoBackendAction::Pass)
    );
    assert_eq!(s.backends[0].weight, 0);
    assert_eq!(s.backends[0].mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
    assert_round_trips(&c);
}

#[test]
fn a_malformed_service_name_is_refused() {
    let e = only_error(
        &BASE.replace("name: web", "name: web server"),
        3,
        "services[0].name",
    );
    assert_eq!(
        e.message,
        "`web server` is not a valid service name (1 to 64 characters of A-Z a-z 0-9 _ . -)"
    );
    only_error(
        &BASE.replace("name: web", &format!("name: {}", "w".repeat(65))),
        3,
        "services[0].name",
    );
    only_error(
        &BASE.replace("name: web", "name: \"\""),
        3,
        "services[0].name",
    );
}

#[test]
fn the_flow_hash_seed_is_read_in_hex_or_decimal() {
    assert_eq!(
        ok(&format!("flow_hash_seed: 0x5eed1b5d\n{BASE}")).flow_hash_seed,
        0x5eed_1b5d
    );
    assert_eq!(
        ok(&format!("flow_hash_seed: 4294967295\n{BASE}")).flow_hash_seed,
        u32::MAX
    );
}

#[test]
fn a_flow_hash_seed_above_32_bits_is_refused_with_its_line() {
    let e = only_error(
        &format!("{BASE}flow_hash_seed: 0x100000000\n"),
        10,
        "flow_hash_seed",
    );
    assert_eq!(e.message, "4294967296 is out of range (0..=4294967295)");
}

#[test]
fn an_unknown_top_level_key_is_refused_with_its_location() {
    let e = only_error(&format!("{BASE}flow_hash: 3\n"), 10, "");
    assert_eq!(e.column, 1);
    assert!(
        e.message
            .starts_with("unknown field `flow_hash`, expected one of"),
        "{e}"
    );
}

#[test]
fn an_unknown_key_in_a_service_names_the_service() {
    let e = only_error(
        &BASE.replace("    protocol: tcp", "    prot: tcp"),
        6,
        "services[0]",
    );
    assert_eq!(e.column, 5);
    assert!(
        e.message
            .starts_with("unknown field `prot`, expected one of"),
        "{e}"
    );
    assert_eq!(
        e.to_string().split(", expected").next(),
        Some("test.yaml:6:5: services[0]: unknown field `prot`")
    );
}

#[test]
fn an_unknown_key_in_a_backend_names_the_backend() {
    let text = BASE.replace(
        "      - address: 10.0.0.12",
        "      - address: 10.0.0.12\n        wieght: 2",
    );
    let e = only_error(&text, 10, "services[0].backends[1]");
    assert!(e.message.starts_with("unknown field `wieght`"), "{e}");
}

#[test]
fn a_missing_required_key_is_refused() {
    let e = only_error(&BASE.replace("    port: 80\n", ""), 6, "services[0]");
    assert_eq!(e.message, "missing field `port`");
}

#[test]
fn a_value_of_the_wrong_shape_is_refused_with_its_path() {
    let e = only_error(&BASE.replace("[eth0]", "eth0"), 1, "interfaces");
    assert!(e.message.contains("expected sequence"), "{e}");
}

#[test]
fn a_value_of_the_wrong_type_in_a_flow_mapping_names_its_key() {
    let text = BASE.replace(
        "10.0.0.12",
        "10.0.0.12\n      - {address: 10.0.0.13, weight: [1]}",
    );
    let e = only_error(&text, 10, "services[0].backends[2].weight");
    assert_eq!(e.message, "invalid type: sequence, expected a whole number");
}

#[test]
fn a_yaml_syntax_error_is_one_error_with_its_location() {
    let e = only_error(&BASE.replace("[eth0]", "[eth0"), 2, "");
    assert!(e.line > 0 && e.column > 0, "{e}");
}

#[test]
fn an_empty_file_is_refused() {
    let all = errors("");
    assert_eq!(all.len(), 1);
}

#[test]
fn a_duplicate_key_is_refused() {
    let e = only_error(
        &BASE.replace("    port: 80\n", "    port: 80\n    port: 81\n"),
        6,
        "services[0]",
    );
    assert!(e.message.contains("duplicate"), "{e}");
}

#[test]
fn anchors_and_aliases_share_a_backend_list() {
    let text = "\
interfaces: [eth0]
services:
  - name: a
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    backends: &servers
      - address: 10.0.0.11
      - address: 10.0.0.12
  - name: b
    vip: 10.0.0.100
    port: 443
    protocol: tcp
    backends: *servers
";
    let c = ok(text);
    assert_eq!(c.services[0].backends, c.services[1].backends);
    assert_eq!(c.services[1].backends.len(), 2);
    // An error in the shared list points at the anchored definition, under each user.
    let bad = text.replace("10.0.0.12", "10.0.0.300");
    let all = errors(&bad);
    let shown: Vec<_> = all.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        shown,
        [
            (9, "services[0].backends[1].address"),
            (9, "services[1].backends[1].address")
        ]
    );
}

#[test]
fn every_error_of_a_file_is_reported_in_file_order() {
    let text = BASE
        .replace("port: 80", "port: 0")
        .replace("protocol: tcp", "protocol: sctp")
        .replace("10.0.0.12", "fd00::12");
    let all = errors(&text);
    let shown: Vec<_> = all.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        shown,
        [
            (5, "services[0].port"),
            (6, "services[0].protocol"),
            (9, "services[0].backends[1].address")
        ]
    );
    assert_eq!(ConfigErrors(all).to_string().lines().count(), 3);
}

#[test]
fn rendering_fills_defaults_and_marks_macs_to_resolve() {
    let text = render(&ok(BASE));
    assert!(text.contains("flow_hash_seed: 0x5eed1b5d\n"), "{text}");
    assert!(text.contains("xdp_mode: native\n"), "{text}");
    assert!(text.contains("maglev_size: 65537\n"), "{text}");
    assert!(text.contains("when_no_backend: drop\n"), "{text}");
    assert!(
        text.contains("mac: null  # resolved from the neighbour table at start\n"),
        "{text}"
    );
}

#[test]
fn rendered_configs_read_back_the_same() {
    assert_round_trips(&ok(BASE));
    assert_round_trips(&ok("interfaces: [lo]\nservices: []\n"));
    let mut odd = ok(BASE);
    odd.interfaces = vec!["no".into(), "a\"b".into(), "0".into()];
    odd.services[0].name = "123".into();
    let text = render(&odd);
    struct Any;
    impl HostFacts for Any {
        fn interface_exists(&self, _: &str) -> bool {
            true
        }
    }
    let again = parse_str(Path::new("x"), &text, &Any).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.interfaces, odd.interfaces);
    assert_eq!(again.services, odd.services);
}

#[test]
fn a_missing_file_is_one_error_at_line_0() {
    let path = Path::new("/nonexistent/xdp-lb.yaml");
    let e = match load(path, &FakeHost) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    assert_eq!(e.len(), 1);
    assert_eq!((e.0[0].line, e.0[0].path.as_path()), (0, path));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/xdp-lb.yaml: the file cannot be opened"),
        "{e}"
    );
}

#[test]
fn a_file_is_loaded_and_keeps_its_path() {
    let path = std::env::temp_dir().join(format!("xdp-lb-config-test-{}.yaml", std::process::id()));
    std::fs::write(&path, BASE).unwrap();
    let loaded = load(&path, &FakeHost);
    let _ = std::fs::remove_file(&path);
    assert_eq!(loaded.unwrap().path, path);
}

#[test]
fn the_live_host_never_finds_path_like_names() {
    for name in ["", ".", "..", "../lo", "lo/..", "/lo", "a/b"] {
        assert!(!LiveHost.interface_exists(name), "{name:?}");
    }
    assert!(!LiveHost.interface_exists("xdplb-no-such-if"));
    if Path::new("/sys/class/net/lo").exists() {
        assert!(LiveHost.interface_exists("lo"));
    }
}

#[test]
fn primes_are_recognised() {
    let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
    assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(65537) && is_prime(655373) && is_prime(251));
    assert!(!is_prime(65536) && !is_prime(65537 * 3));
    assert!(is_prime(4294967291));
}
