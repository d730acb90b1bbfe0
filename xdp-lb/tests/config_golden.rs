//! Golden tests of the configuration file.
//!
//! Each `tests/config/NAME.yaml` (and each `examples/NAME.yaml` of the workspace) is parsed
//! on a fake host where eth0, eth1 and lo exist. A file named `bad-*.yaml` must be refused:
//! the errors, as printed, are compared with `NAME.expected`. Any other file must be
//! accepted: the effective configuration (`render`) is compared with `NAME.expected`, and
//! must read back as the same configuration.
//!
//! `UPDATE_GOLDEN=1 cargo test -p xdp-lb --test config_golden` rewrites the expected files;
//! review the diff before committing them.

use std::{
    fs,
    path::{Path, PathBuf},
};

use xdp_lb::config::{CheckKind, ConfigFile, HttpCheck, parse_file, render_file};

mod support;

use support::FakeHost;

/// The crate's directory: paths below are relative to it, as `cargo test` runs there.
fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.yaml` files of `dir` (relative to the crate), sorted, as relative paths.
fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let entries = fs::read_dir(crate_dir().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("{dir}: {e}")).file_name())
        .filter(|name| name.to_string_lossy().ends_with(".yaml"))
        .map(|name| Path::new(dir).join(name))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What the golden file of `path` must hold.
fn actual(path: &Path) -> Result<String, String> {
    let text = fs::read_to_string(crate_dir().join(path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = parse_file(path, &text, &FakeHost);
    match (stem(path).starts_with("bad-"), parsed) {
        (true, Err(errors)) => Ok(format!("{errors}\n")),
        (true, Ok(_)) => Err(format!(
            "{}: accepted, but a bad-* file must be refused",
            path.display()
        )),
        (false, Err(errors)) => Err(format!("{}: refused:\n{errors}", path.display())),
        (false, Ok(config)) => {
            let rendered = render_file(&config);
            check_round_trip(path, &config, &rendered)?;
            Ok(rendered)
        }
    }
}

fn check_round_trip(path: &Path, config: &ConfigFile, rendered: &str) -> Result<(), String> {
    let again = parse_file(path, rendered, &FakeHost).map_err(|e| {
        format!(
            "{}: its rendering is refused:\n{e}\n{rendered}",
            path.display()
        )
    })?;
    if again != *config {
        return Err(format!(
            "{}: its rendering reads back differently:\n{rendered}",
            path.display()
        ));
    }
    Ok(())
}

/// Compares (or, with UPDATE_GOLDEN=1, rewrites) the golden file of each of `files`, kept in
/// `golden_dir`. Returns the failures.
fn check(files: &[PathBuf], golden_dir: &str) -> Vec<String> {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for path in files {
        let expected_path = crate_dir()
            .join(golden_dir)
            .join(format!("{}.expected", stem(path)));
        let actual = match actual(path) {
            Ok(actual) => actual,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        };
        if update {
            if let Err(e) = fs::write(&expected_path, &actual) {
                failures.push(format!("{}: {e}", expected_path.display()));
            }
            continue;
        }
        match fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}: differs from {}\n--- expected\n{expected}--- actual\n{actual}",
                path.display(),
                expected_path.display()
            )),
            Err(e) => failures.push(format!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                expected_path.display()
            )),
        }
    }
    failures
}

#[test]
fn every_test_file_gives_its_golden_output() {
    let files = yaml_files("tests/config");
    let bad = files.iter().filter(|f| stem(f).starts_with("bad-")).count();
    assert!(
        bad >= 8 && files.len() - bad >= 3,
        "too few golden files: {files:?}"
    );
    let failures = check(&files, "tests/config");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_example_is_accepted_and_gives_its_golden_output() {
    let files = yaml_files("../examples");
    assert!(
        files.iter().any(|f| stem(f) == "xdp-lb"),
        "no reference example: {files:?}"
    );
    let failures = check(&files, "tests/config/examples");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_golden_file_has_its_input() {
    for (dir, inputs) in [
        ("tests/config", "tests/config"),
        ("tests/config/examples", "../examples"),
    ] {
        let Ok(entries) = fs::read_dir(crate_dir().join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".expected") {
                let input = crate_dir().join(inputs).join(format!("{stem}.yaml"));
                assert!(
                    input.exists(),
                    "{dir}/{name} is stale: {} is gone",
                    input.display()
                );
            }
        }
    }
}

#[test]
fn the_reference_example_serves_rtmp_and_hls_from_the_same_three_servers() {
    let path = Path::new("../examples/xdp-lb.yaml");
    let text = fs::read_to_string(crate_dir().join(path)).unwrap_or_else(|e| panic!("{e}"));
    let file = parse_file(path, &text, &FakeHost).unwrap_or_else(|e| panic!("{e}"));
    let config = &file.config;
    assert_eq!(config.interfaces, ["eth0"]);
    let names: Vec<_> = config
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.port))
        .collect();
    assert_eq!(names, [("video-rtmp", 1935), ("video-hls", 8080)]);
    // The anchored backend list is shared.
    assert_eq!(config.services[0].backends, config.services[1].backends);
    let servers: Vec<String> = config.services[1]
        .backends
        .iter()
        .map(|b| b.address.to_string())
        .collect();
    assert_eq!(servers, ["10.0.0.11", "10.0.0.12", "10.0.0.13"]);
}

#[test]
fn the_reference_example_checks_rtmp_with_a_handshake_and_hls_with_its_health_page() {
    let path = Path::new("../examples/xdp-lb.yaml");
    let text = fs::read_to_string(crate_dir().join(path)).unwrap_or_else(|e| panic!("{e}"));
    let file = parse_file(path, &text, &FakeHost).unwrap_or_else(|e| panic!("{e}"));
    let check = |name: &str| {
        file.failover.services[name]
            .check
            .clone()
            .unwrap_or_else(|| panic!("{name} is checked"))
    };
    assert_eq!(check("video-rtmp").kind, CheckKind::Rtmp);
    assert_eq!(
        check("video-hls").kind,
        CheckKind::Http(HttpCheck {
            path: "/health".into(),
            expect_status: 200,
            expect_body: Some("ok".into())
        })
    );
    for name in ["video-rtmp", "video-hls"] {
        let c = check(name);
        assert_eq!(
            (
                c.interval.as_millis(),
                c.timeout.as_millis(),
                c.fall,
                c.rise
            ),
            (1000, 800, 2, 3)
        );
    }
    let notify = file.failover.notify.expect("a notify block");
    assert_eq!(notify.command, Path::new("/etc/xdp-lb/notify-mail.sh"));
    assert_eq!(file.failover.services["video-hls"].fallback.len(), 1);
}

#[test]
fn damaged_copies_of_the_examples_are_refused_or_accepted_without_panicking() {
    // Deterministic damage: delete, duplicate or replace one character, many times over.
    let mut seed: u64 = 0x5eed_1b5d;
    let mut next = move |bound: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        usize::try_from(seed >> 33).unwrap_or(0) % bound.max(1)
    };
    let replacements = [
        ' ', '\t', '\n', ':', '-', '[', '{', '"', '&', '*', '#', '0', 'x', '\u{0}',
    ];
    for path in yaml_files("../examples") {
        let text = fs::read_to_string(crate_dir().join(&path)).unwrap_or_else(|e| panic!("{e}"));
        let chars: Vec<char> = text.chars().collect();
        for _ in 0..300 {
            let mut damaged = chars.clone();
            let at = next(damaged.len());
            match next(3) {
                0 => {
                    damaged.remove(at);
                }
                1 => damaged.insert(at, damaged[at]),
                _ => damaged[at] = replacements[next(replacements.len())],
            }
            let damaged: String = damaged.into_iter().collect();
            if let Ok(config) = parse_file(&path, &damaged, &FakeHost) {
                check_round_trip(&path, &config, &render_file(&config))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}
