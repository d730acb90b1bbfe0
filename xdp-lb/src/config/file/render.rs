//! The effective configuration as YAML, every default filled in (`xdp-lb check` prints it).
//! Reading the output back gives the same configuration.

use std::{fmt::Write as _, time::Duration};

use super::model::{Config, ConfigFile, XdpAttachMode};
use crate::config::{
    announce::{self, Announce},
    failover::{self, model::Failover},
    ops::{self, Ops},
    pools,
    services::model::{DownAction, HashMode, NoBackendAction},
    shared::{
        duration::format_duration,
        errors::escape_controls,
        yaml::{address, string},
    },
    sync::{self, SyncSettings},
};

/// A count of seconds (the flow table's and persistence's unit), written with its unit.
fn seconds(s: u32) -> String {
    format_duration(Duration::from_secs(s.into()))
}

/// The effective configuration as YAML: services and backends in file order, each default
/// written out, a backend without a MAC shown as `mac: null` with a comment saying it is
/// resolved at start.
pub fn render(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_config(&mut out, config, None, None);
    out
}

/// [`render`] with the failover settings (each service's health check and fallback pool,
/// each backend's backup and own check, and `notify`) and the operations endpoints.
pub fn render_file(file: &ConfigFile) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let extras = (&file.failover, &file.ops, file.announce.as_ref());
    let _ = write_config(&mut out, &file.config, Some(extras), file.sync.as_ref());
    out
}

fn write_config(
    out: &mut String,
    c: &Config,
    extras: Option<(&Failover, &Ops, Option<&Announce>)>,
    sync: Option<&SyncSettings>,
) -> std::fmt::Result {
    let failover = extras.map(|(f, _, _)| f);
    let announced = extras.and_then(|(_, _, a)| a);
    writeln!(
        out,
        "# Effective xdp-lb configuration (all defaults filled in)"
    )?;
    writeln!(
        out,
        "# read from {}",
        escape_controls(&c.path.display().to_string())
    )?;
    writeln!(out, "flow_hash_seed: {:#010x}", c.flow_hash_seed)?;
    let mode = match c.xdp_mode {
        XdpAttachMode::Native => "native",
        XdpAttachMode::Generic => "generic",
    };
    writeln!(out, "xdp_mode: {mode}")?;
    if c.interfaces.is_empty() {
        writeln!(out, "interfaces: []")?;
    } else {
        writeln!(out, "interfaces:")?;
        for name in &c.interfaces {
            writeln!(out, "  - {}", string(name))?;
        }
    }
    writeln!(out, "maglev_table_slots: {}", c.maglev_table_slots)?;
    writeln!(out, "flow_table:")?;
    writeln!(out, "  size: {}", c.flow_table.size)?;
    writeln!(
        out,
        "  tcp_timeout: {}",
        seconds(c.flow_table.tcp_timeout_s)
    )?;
    writeln!(
        out,
        "  udp_timeout: {}",
        seconds(c.flow_table.udp_timeout_s)
    )?;
    writeln!(
        out,
        "  tcp_fin_timeout: {}",
        seconds(c.flow_table.tcp_fin_timeout_s)
    )?;
    writeln!(
        out,
        "  tcp_close_timeout: {}",
        seconds(c.flow_table.tcp_close_timeout_s)
    )?;
    failover::render::notify(out, failover.and_then(|f| f.notify.as_ref()))?;
    if let Some((_, ops, _)) = extras {
        ops::render(out, ops)?;
    }
    announce::render(out, announced)?;
    sync::render(out, sync)?;
    if c.services.is_empty() {
        return writeln!(out, "services: []");
    }
    writeln!(out, "services:")?;
    for s in &c.services {
        writeln!(out, "  - name: {}", string(&s.name))?;
        writeln!(out, "    vip: {}", address(s.vip))?;
        writeln!(out, "    port: {}", s.port)?;
        writeln!(out, "    protocol: {}", s.protocol)?;
        writeln!(out, "    maglev_size: {}", s.maglev_size)?;
        let action = match s.when_no_backend {
            NoBackendAction::Drop => "drop",
            NoBackendAction::Pass => "pass",
        };
        writeln!(out, "    when_no_backend: {action}")?;
        let down = match s.when_backend_down {
            DownAction::KeepFlows => "keep_flows",
            DownAction::Rebalance => "rebalance",
        };
        writeln!(out, "    when_backend_down: {down}")?;
        match s.hash {
            HashMode::Flow => writeln!(out, "    hash: flow")?,
            HashMode::Source => writeln!(out, "    hash: source")?,
        }
        if let Some(vlan) = s.vlan {
            writeln!(out, "    vlan: {vlan}")?;
        }
        match s.persistence {
            None => writeln!(out, "    persistence: 0s")?,
            Some(p) => {
                writeln!(out, "    persistence: {}", seconds(p.timeout_s))?;
                writeln!(out, "    persistence_netmask: {}", p.prefix_len)?;
            }
        }
        announce::render_service(out, announced, &s.name)?;
        let service_failover = failover.and_then(|f| f.services.get(&s.name));
        failover::render::service(out, service_failover, s.vlan)?;
        if s.backends.is_empty() {
            writeln!(out, "    backends: []")?;
        } else {
            writeln!(out, "    backends:")?;
        }
        for b in &s.backends {
            b.render(out, "      ", s.vlan)?;
            failover::render::backend(out, service_failover, b.address)?;
        }
        pools::render::service(out, s, service_failover)?;
    }
    Ok(())
}
