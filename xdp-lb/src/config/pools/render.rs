//! A service's servers, named pools and client rules in the effective configuration (see
//! `file/render.rs`). A pool's `health_check` is written where it differs from the
//! service's, and a pool server's own check where it differs from its pool's, which reads
//! back as the same effective checks.

use std::fmt::Write as _;

use super::model::ClientAction;
use crate::config::{
    failover::model::ServiceFailover,
    health::render::write_check,
    services::model::Service,
    shared::yaml::{address, string},
};

type Result = std::fmt::Result;

/// `pools:` and `clients:` of a service (after its backends); nothing when it has neither.
pub(crate) fn service(out: &mut String, s: &Service, failover: Option<&ServiceFailover>) -> Result {
    if !s.pools.is_empty() {
        writeln!(out, "    pools:")?;
    }
    for pool in &s.pools {
        let settings = failover.and_then(|f| f.pools.get(&pool.name));
        let service_check = failover.and_then(|f| f.check.as_ref());
        let check = settings.and_then(|p| p.check.as_ref()).or(service_check);
        writeln!(out, "      {}:", string(&pool.name))?;
        writeln!(out, "        maglev_size: {}", pool.maglev_size)?;
        if let (Some(own), Some(base)) = (settings.and_then(|p| p.check.as_ref()), service_check) {
            write_check(out, "        ", own, Some(base))?;
        }
        let fallback = settings.map_or(&[][..], |p| p.fallback.as_slice());
        if !fallback.is_empty() {
            writeln!(out, "        fallback:")?;
            for server in fallback {
                server.backend.render(out, "          ", s.vlan)?;
                if let (Some(own), Some(base)) = (&server.check, check) {
                    write_check(out, "            ", own, Some(base))?;
                }
            }
        }
        if pool.backends.is_empty() {
            writeln!(out, "        backends: []")?;
            continue;
        }
        writeln!(out, "        backends:")?;
        for b in &pool.backends {
            b.render(out, "          ", s.vlan)?;
            let own = failover.and_then(|f| f.backends.get(&b.address));
            if let Some(backup) = own.and_then(|o| o.backup) {
                writeln!(out, "            backup: {}", address(backup))?;
            }
            if let (Some(own), Some(base)) = (own.and_then(|o| o.check.as_ref()), check) {
                write_check(out, "            ", own, Some(base))?;
            }
        }
    }
    if s.clients.is_empty() {
        return Ok(());
    }
    writeln!(out, "    clients:")?;
    for rule in &s.clients {
        writeln!(out, "      - prefix: {}", string(&rule.prefix.to_string()))?;
        match &rule.action {
            ClientAction::Pool(name) => writeln!(out, "        pool: {}", string(name))?,
            ClientAction::Drop => writeln!(out, "        action: drop")?,
        }
    }
    Ok(())
}
