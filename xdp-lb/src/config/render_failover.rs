//! The failover settings in the effective configuration (see `render.rs`): a service's
//! check is written whole; a server's own check only where it differs from its service's,
//! which reads back as the same effective check.

use std::{fmt::Write as _, net::IpAddr};

use super::{
    CheckKind, HealthCheck, Notify, ServiceFailover,
    duration::format_duration,
    render::{address, string},
};

type Result = std::fmt::Result;

pub(super) fn notify(out: &mut String, notify: Option<&Notify>) -> Result {
    let Some(n) = notify else { return Ok(()) };
    writeln!(out, "notify:")?;
    writeln!(out, "  command: {}", string(&n.command.to_string_lossy()))?;
    writeln!(out, "  timeout: {}", format_duration(n.timeout))
}

/// The service's `health_check` and `fallback` (after its own settings).
pub(super) fn service(
    out: &mut String,
    failover: Option<&ServiceFailover>,
    vlan: Option<u16>,
) -> Result {
    let Some(f) = failover else { return Ok(()) };
    if let Some(check) = &f.check {
        write_check(out, "    ", check, None)?;
    }
    if f.fallback.is_empty() {
        return Ok(());
    }
    writeln!(out, "    fallback:")?;
    for server in &f.fallback {
        let b = &server.backend;
        writeln!(out, "      - address: {}", address(b.address))?;
        writeln!(out, "        weight: {}", b.weight)?;
        match b.mac {
            Some(mac) => writeln!(out, "        mac: {mac}")?,
            None => writeln!(
                out,
                "        mac: null  # resolved from the neighbour table at start"
            )?,
        }
        super::render::vlan_line(out, "        ", b.vlan, vlan)?;
        if let (Some(own), Some(base)) = (&server.check, &f.check) {
            write_check(out, "        ", own, Some(base))?;
        }
    }
    Ok(())
}

/// A primary's `backup` and own `health_check` (after its address, weight and MAC).
pub(super) fn backend(
    out: &mut String,
    failover: Option<&ServiceFailover>,
    primary: IpAddr,
) -> Result {
    let Some(f) = failover else { return Ok(()) };
    let Some(b) = f.backends.get(&primary) else {
        return Ok(());
    };
    if let Some(backup) = b.backup {
        writeln!(out, "        backup: {}", address(backup))?;
    }
    if let (Some(own), Some(base)) = (&b.check, &f.check) {
        write_check(out, "        ", own, Some(base))?;
    }
    Ok(())
}

/// `health_check:` at `indent`: every key of `check`, or those differing from `base`.
pub(super) fn write_check(
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
