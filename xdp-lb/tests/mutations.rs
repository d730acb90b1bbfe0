//! Mutation tests of every input path a person or a peer can write to: the configuration
//! file, and the control protocol's request lines. Each shipped example and golden test
//! file, and a set of valid requests, is mutated a few thousand times with a fixed seed
//! (so a failure is repeatable: the seed and the input are in its message), and every
//! mutant must be refused with a located message or accepted as a configuration that
//! renders and reads back the same: never a panic. The HTTP endpoints' own mutation test
//! is in `src/http1.rs` (its parser is private).
//!
//! `XDP_LB_MUTATIONS=N` runs N mutants per input instead of the default (bounded, so the
//! suite stays fast).

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use xdp_lb::{
    config::{parse_file, render_file},
    control::protocol::parse_request,
};

mod support;

use support::FakeHost;

/// xorshift64*: a small, seeded generator, so that every run makes the same mutants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Pieces a careless hand, a broken editor or a hostile peer puts into a file or a line.
const YAML_PIECES: &[&str] = &[
    ": ",
    "- ",
    "\n",
    "  ",
    "\t",
    "#",
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "1e999",
    "NaN",
    "null",
    "~",
    "true",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "!!binary ",
    "<<: *a",
    "? ",
    "|",
    ">",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "0s",
    "1h",
    "800",
    "100000000000h",
    "10.0.0.300",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "255.255.255.255",
    "0.0.0.0",
    "/33",
    "02:00:00:00:00:00",
    "ff:ff:ff:ff:ff:ff",
    "é",
    "\u{0}",
    "\u{feff}",
    "😀",
    "\r",
    "\\",
    "weight: 1001",
    "vlan: 4095",
    "port: 0",
    "maglev_size: 65537",
    "min_healthy: 999",
];

const JSON_PIECES: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "1e999",
    "4294967296",
    "\"command\"",
    "\"reload\"",
    "\"status\"",
    "\"backend_add\"",
    "\"service\"",
    "\"address\"",
    "\"10.0.0.300\"",
    "\"::\"",
    "\"weight\"",
    "99999",
    "\\u0000",
    "\\n",
    "\"dry_run\":true",
    "😀",
    " ",
];

/// One to four edits of `input`: a piece inserted, a span deleted or duplicated, two lines
/// swapped, a byte changed. Edits land on character boundaries.
fn mutate(rng: &mut Rng, input: &str, pieces: &[&str]) -> String {
    let mut text = input.to_owned();
    for _ in 0..1 + rng.below(4) {
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let at = boundaries[rng.below(boundaries.len())];
        let to = boundaries[rng.below(boundaries.len())].max(at);
        let to = to.min(at + 40).min(text.len());
        let to = (to..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        match rng.below(5) {
            0 => text.insert_str(at, rng.pick(pieces)),
            1 => text.replace_range(at..to, ""),
            2 => {
                let span = text[at..to].to_owned();
                text.insert_str(at, &span);
            }
            3 => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                lines.swap(a, b);
                text = lines.join("\n");
            }
            _ => {
                if at < text.len() {
                    let c = text[at..].chars().next().map_or(1, char::len_utf8);
                    let digit = char::from(b'0' + (rng.below(10) as u8));
                    text.replace_range(at..at + c, &digit.to_string());
                }
            }
        }
    }
    text
}

fn mutants_per_input(default: usize) -> usize {
    std::env::var("XDP_LB_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config_inputs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [root.join("tests/config"), root.join("../examples")] {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 20, "too few inputs: {files:?}");
    files
}

/// What is wrong with the verdict on one mutant, if anything.
fn judge_config(path: &Path, text: &str) -> Option<String> {
    let verdict = catch_unwind(AssertUnwindSafe(|| {
        match parse_file(path, text, &FakeHost) {
            Err(errors) => {
                let shown = errors.to_string();
                if shown.trim().is_empty() {
                    return Some("refused with no message".to_owned());
                }
                let prefix = format!("{}:", path.display());
                for line in shown.lines().filter(|l| !l.starts_with(' ')) {
                    if !line.starts_with(&prefix) {
                        return Some(format!("an error without its location: {line}"));
                    }
                }
                None
            }
            Ok(config) => {
                let rendered = render_file(&config);
                match parse_file(path, &rendered, &FakeHost) {
                    Err(e) => Some(format!("accepted, but its rendering is refused: {e}")),
                    Ok(again) if again != config => {
                        Some(format!("accepted, but reads back otherwise:\n{rendered}"))
                    }
                    Ok(_) => None,
                }
            }
        }
    }));
    verdict.unwrap_or_else(|_| Some("panicked".to_owned()))
}

#[test]
fn mutated_configuration_files_are_refused_with_a_location_or_read_back_the_same() {
    let per_input = mutants_per_input(120);
    let mut failures = Vec::new();
    let (mut refused, mut accepted) = (0usize, 0usize);
    for (n, path) in config_inputs().iter().enumerate() {
        let original = fs::read_to_string(path).expect("an input");
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1);
        let mut rng = Rng(seed);
        for i in 0..per_input {
            let text = mutate(&mut rng, &original, YAML_PIECES);
            // The name the errors carry: where the file was.
            let named = Path::new("mutant.yaml");
            match judge_config(named, &text) {
                Some(why) => failures.push(format!(
                    "{} (seed {seed:#x}, mutant {i}): {why}\n--- mutant\n{text}",
                    path.display()
                )),
                None if parse_file(named, &text, &FakeHost).is_ok() => accepted += 1,
                None => refused += 1,
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the mutants failed; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n\n")
    );
    // Both verdicts were exercised: the mutations neither only break nor only keep files.
    assert!(
        refused > 100 && accepted > 10,
        "refused {refused}, accepted {accepted}"
    );
}

#[test]
fn mutated_control_requests_are_refused_or_read_and_never_panic() {
    let requests = [
        r#"{"command":"status"}"#,
        r#"{"command":"reload"}"#,
        r#"{"command":"backend_add","service":"video-hls","address":"10.0.0.14","weight":2}"#,
        r#"{"command":"backend_remove","service":"video-hls","address":"10.0.0.14"}"#,
        r#"{"command":"backend_weight","service":"video-hls","address":"10.0.0.12","weight":3}"#,
        r#"{"command":"client_set","service":"video-hls","prefix":"198.51.100.7/32","pool":"premium"}"#,
        r#"{"command":"lookup","client":"198.51.100.7:40000","vip":"10.0.0.100:8080","protocol":"tcp"}"#,
    ];
    // The requests above are what the client sends: each one reads as it is.
    for request in requests {
        parse_request(request).unwrap_or_else(|e| panic!("{request}: {e}"));
    }
    let per_input = mutants_per_input(1500);
    let mut failures = Vec::new();
    let (mut refused, mut read) = (0usize, 0usize);
    for (n, request) in requests.iter().enumerate() {
        let seed = 0x51_7cc1_b727_220a ^ (n as u64 + 1);
        let mut rng = Rng(seed);
        for i in 0..per_input {
            let text = mutate(&mut rng, request, JSON_PIECES);
            let verdict = catch_unwind(|| {
                parse_request(&text).map(|r| {
                    let _ = r.check_names();
                })
            });
            match verdict {
                Err(_) => failures.push(format!("seed {seed:#x}, mutant {i}: panicked: {text}")),
                Ok(Err(message)) if message.trim().is_empty() => {
                    failures.push(format!("refused with no reason: {text}"))
                }
                Ok(Err(_)) => refused += 1,
                Ok(Ok(())) => read += 1,
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}",
        failures[..failures.len().min(5)].join("\n")
    );
    assert!(
        refused > 1000 && read > 50,
        "refused {refused}, read {read}"
    );
}
