//! A check in the effective configuration: written whole for a service, and only where it
//! differs from its base for a pool or a server, which reads back as the same effective
//! check.

use std::fmt::Write as _;

use super::model::{CheckKind, HealthCheck};
use crate::config::shared::{duration::format_duration, yaml::string};

type Result = std::fmt::Result;

/// `health_check:` at `indent`: every key of `check`, or those differing from `base`.
pub(crate) fn write_check(
    out: &mut String,
    indent: &str,
    check: &HealthCheck,
    base: Option<&HealthCheck>,
) -> Result {
    let lines = check_lines(check, base);
    if lines.is_empty() {
        return Ok(());
    }
    writeln!(out, "{indent}health_check:")?;
    for (key, value) in lines {
        writeln!(out, "{indent}  {key}: {value}")?;
    }
    Ok(())
}

fn check_lines(check: &HealthCheck, base: Option<&HealthCheck>) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    let differs = |pick: fn(&HealthCheck) -> String| base.is_none_or(|b| pick(b) != pick(check));
    let same_kind = base.is_some_and(|b| b.kind.name() == check.kind.name());
    if !same_kind {
        lines.push(("kind", check.kind.name().to_owned()));
    }
    if differs(|c| c.port.to_string()) {
        lines.push(("port", check.port.to_string()));
    }
    if let CheckKind::Http(http) = &check.kind {
        // A new kind starts from its defaults, so after `kind` every http key is written.
        let base_http = match base.map(|b| &b.kind) {
            Some(CheckKind::Http(b)) if same_kind => Some(b),
            _ => None,
        };
        if base_http.is_none_or(|b| b.path != http.path) {
            lines.push(("path", string(&http.path)));
        }
        if base_http.is_none_or(|b| b.expect_status != http.expect_status) {
            lines.push(("expect_status", http.expect_status.to_string()));
        }
        match (&http.expect_body, base_http.map(|b| &b.expect_body)) {
            (Some(body), Some(Some(old))) if body == old => {}
            (Some(body), _) => lines.push(("expect_body", string(body))),
            // An empty substring: no body check where the service has one.
            (None, Some(Some(_))) => lines.push(("expect_body", "\"\"".to_owned())),
            (None, _) => {}
        }
    }
    if differs(|c| format_duration(c.interval)) {
        lines.push(("interval", format_duration(check.interval)));
    }
    if differs(|c| format_duration(c.timeout)) {
        lines.push(("timeout", format_duration(check.timeout)));
    }
    if differs(|c| c.rise.to_string()) {
        lines.push(("rise", check.rise.to_string()));
    }
    if differs(|c| c.fall.to_string()) {
        lines.push(("fall", check.fall.to_string()));
    }
    if differs(|c| c.initial_state.to_string()) {
        lines.push(("initial_state", check.initial_state.to_string()));
    }
    lines
}
