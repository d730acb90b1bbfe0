//! `xdp-lb simulate` as an operator runs it: on the reference config, with removals,
//! additions and a plot, and with requests it must refuse (exit status 2).

use std::{path::PathBuf, process::Command};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/xdp-lb.yaml")
}

fn simulate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xdp-lb"))
        .arg("simulate")
        .arg("--config")
        .arg(example())
        .args(args)
        .output()
        .expect("running xdp-lb simulate")
}

/// The percentage on the line that starts with `prefix` (after trimming), e.g. the share
/// in "removing 10.0.0.12: 33.41% of flows move (ideal 33.33%)".
fn percent_after(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{text}"));
    line[prefix.len()..]
        .split('%')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no percentage in {line:?}"))
}

#[test]
fn the_reference_config_spreads_flows_evenly_over_its_three_servers() {
    let out = simulate(&["--flows", "30000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for service in [
        "video-rtmp (10.0.0.100:1935/tcp",
        "video-hls (10.0.0.100:8080/tcp",
    ] {
        assert!(
            text.contains(&format!(
                "service {service}, maglev_size 65537): 30000 random flows"
            )),
            "{text}"
        );
    }
    for server in ["10.0.0.11", "10.0.0.12", "10.0.0.13"] {
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(server))
            .collect();
        assert_eq!(rows.len(), 2, "{server} once per service:\n{text}");
        for row in rows {
            let share: f64 = row
                .split_whitespace()
                .nth(3)
                .unwrap()
                .trim_end_matches('%')
                .parse()
                .unwrap();
            assert!((share - 33.33).abs() < 1.5, "{row}");
            assert!(row.trim_end().ends_with("33.33%"), "ideal share in {row}");
        }
    }
}

#[test]
fn removing_one_of_three_servers_moves_about_a_third_and_adding_a_fourth_about_a_quarter() {
    let out = simulate(&[
        "--remove",
        "10.0.0.12",
        "--add",
        "10.0.0.14",
        "--flows",
        "30000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let removed = percent_after(&text, "removing 10.0.0.12:");
    assert!((removed - 33.33).abs() < 2.0, "{text}");
    assert!(text.contains("of flows move (ideal 33.33%)"));
    let added = percent_after(&text, "adding 10.0.0.14:");
    assert!((added - 25.0).abs() < 2.0, "{text}");
    assert!(text.contains("of flows move (ideal 25.00%)"));
}

#[test]
fn plot_writes_an_svg() {
    let dir = std::env::temp_dir().join(format!("xdp-lb-simulate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spread.svg");
    let out = simulate(&[
        "--flows",
        "2000",
        "--remove",
        "10.0.0.11",
        "--plot",
        path.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = svg.expect("the plot was written");
    assert!(svg.starts_with("<svg") && svg.contains("video-hls") && svg.contains("10.0.0.13"));
}

#[test]
fn an_unknown_remove_address_is_an_error_with_exit_status_2() {
    let out = simulate(&["--remove", "10.0.0.99"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--remove 10.0.0.99: no service has this backend"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_add_address_is_an_error_with_exit_status_2() {
    for (bad, says) in [
        (
            "10.0.0.300",
            "invalid value '10.0.0.300' for '--add <ADDR>'",
        ),
        (
            "10.0.0.11",
            "--add 10.0.0.11: already a backend of every service of its family",
        ),
        (
            "2001:db8::1",
            "--add 2001:db8::1: no service has a VIP of this address family",
        ),
    ] {
        let out = simulate(&["--add", bad]);
        assert_eq!(out.status.code(), Some(2), "--add {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "--add {bad}: {err}");
    }
}

#[test]
fn a_missing_config_is_an_error_with_exit_status_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_xdp-lb"))
        .args(["simulate", "--config", "/nonexistent/xdp-lb.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the file cannot be opened"));
}
