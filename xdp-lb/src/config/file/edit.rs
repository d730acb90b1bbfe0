//! Whole-service edits of a running configuration (`xdp-lb service add|remove`): the
//! result is validated exactly as a file is, so a service added at run time obeys every
//! rule a service written in the YAML does.

use std::path::Path;

use super::{load::parse_file, model::ConfigFile, render::render_file};
use crate::config::shared::host::HostFacts;

/// `file` with the service described by `snippet` (one item of `services:`, in YAML)
/// added. `Err` explains why it cannot be: the snippet's own errors, or the rules it breaks
/// next to the other services (a taken name or listener, no table room, ...).
pub fn with_service_added(
    file: &ConfigFile,
    snippet: &str,
    host: &dyn HostFacts,
) -> Result<ConfigFile, String> {
    let service: serde_json::Value =
        serde_saphyr::from_str(snippet).map_err(|err| format!("the service is not YAML: {err}"))?;
    if !service.is_object() {
        return Err(
            "the service must be a YAML mapping (name, vip, port, protocol, backends, ...)".into(),
        );
    }
    let name = service
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_owned();
    if file.config.services.iter().any(|s| s.name == name) {
        return Err(format!("there is already a service named {name}"));
    }
    // The running configuration as a document, with the new service appended; JSON is
    // YAML, and the config reader checks all of it.
    let mut whole: serde_json::Value = serde_saphyr::from_str(&render_file(file))
        .map_err(|err| format!("the running configuration does not read back: {err}"))?;
    let services = whole
        .get_mut("services")
        .and_then(|s| s.as_array_mut())
        .ok_or("the running configuration has no services list")?;
    services.push(service);
    let text = serde_json::to_string_pretty(&whole).map_err(|err| err.to_string())?;
    let label = Path::new("(service added at run time)");
    let mut edited = parse_file(label, &text, host).map_err(|errors| errors.to_string())?;
    edited.config.path = file.config.path.clone();
    Ok(edited)
}

/// `file` validated again as a whole, exactly as the file on disk is: every run-time change
/// (a backend added or reweighted, a client rule) is applied to a copy of the running
/// configuration and the copy must pass this, so the control socket and registration
/// accept only what the YAML would. `Err` lists the rules the copy breaks.
pub fn revalidated(file: &ConfigFile, host: &dyn HostFacts) -> Result<ConfigFile, String> {
    let label = Path::new("(the running configuration with the change)");
    let mut checked = parse_file(label, &render_file(file), host).map_err(|errors| {
        errors
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    checked.config.path = file.config.path.clone();
    Ok(checked)
}

/// `file` without the service `name`; `None` when there is no such service.
pub fn with_service_removed(file: &ConfigFile, name: &str) -> Option<ConfigFile> {
    let mut edited = file.clone();
    let before = edited.config.services.len();
    edited.config.services.retain(|s| s.name != name);
    if edited.config.services.len() == before {
        return None;
    }
    edited.failover.services.remove(name);
    if let Some(announce) = &mut edited.announce {
        announce.service_min_healthy.remove(name);
    }
    Some(edited)
}
