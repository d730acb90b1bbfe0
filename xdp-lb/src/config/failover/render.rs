//! The failover settings in the effective configuration (see `file/render.rs`): the
//! `notify` command, a service's check (`health/render.rs` writes it) and fallback servers,
//! a primary's backup and own check (only where it differs from its service's, which reads
//! back as the same effective check).

use std::{fmt::Write as _, net::IpAddr};

use super::model::{Notify, ServiceFailover};
use crate::config::{
    health::render::write_check,
    shared::{
        duration::format_duration,
        yaml::{address, string},
    },
};

type Result = std::fmt::Result;

pub(crate) fn notify(out: &mut String, notify: Option<&Notify>) -> Result {
    let Some(n) = notify else { return Ok(()) };
    writeln!(out, "notify:")?;
    writeln!(out, "  command: {}", string(&n.command.to_string_lossy()))?;
    writeln!(out, "  timeout: {}", format_duration(n.timeout))
}

/// The service's `health_check` and `fallback` (after its own settings).
pub(crate) fn service(
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
        server.backend.render(out, "      ", vlan)?;
        if let (Some(own), Some(base)) = (&server.check, &f.check) {
            write_check(out, "        ", own, Some(base))?;
        }
    }
    Ok(())
}

/// A primary's `backup` and own `health_check` (after its address, weight and MAC).
pub(crate) fn backend(
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
