//! Run-time changes (`xdp-lb backend add|remove|drain|enable|weight`): kept in a JSON file
//! beside the YAML's effect, so they survive an agent restart, as the old setup saved its
//! rules for reboot. The running configuration is always the YAML file with these changes
//! applied in order; a change the YAML has since made true, or made meaningless (its
//! service or backend is gone), is dropped from the file with a log line.

use std::{
    fs,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::config::{Backend, Config, MacAddr};

/// Default file of run-time changes.
pub const DEFAULT_RUNTIME_FILE: &str = "/var/lib/xdp-lb/runtime-changes.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RuntimeChange {
    BackendAdd { service: String, address: IpAddr, weight: u32, mac: Option<MacAddr> },
    BackendRemove { service: String, address: IpAddr },
    /// Drain is weight 0; enable puts the YAML's weight back (the override is removed).
    BackendWeight { service: String, address: IpAddr, weight: u32 },
}

impl RuntimeChange {
    fn target(&self) -> (&str, IpAddr) {
        match self {
            RuntimeChange::BackendAdd { service, address, .. }
            | RuntimeChange::BackendRemove { service, address }
            | RuntimeChange::BackendWeight { service, address, .. } => (service, *address),
        }
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeChanges {
    /// `None`: kept in memory only.
    path: Option<PathBuf>,
    changes: Vec<RuntimeChange>,
}

impl RuntimeChanges {
    /// The changes saved at `path` (none when the file does not exist).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let changes = match fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a list of run-time changes", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self { path: Some(path.to_path_buf()), changes })
    }

    /// Changes kept in memory only (an agent run without a run-time file).
    pub fn unsaved() -> Self {
        Self { path: None, changes: Vec::new() }
    }

    pub fn changes(&self) -> &[RuntimeChange] {
        &self.changes
    }

    /// Where they are saved (`(not saved)` when they are not).
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("(not saved)"))
    }

    /// Records a change (replacing earlier ones it makes pointless) and saves the file.
    pub fn record(&mut self, change: RuntimeChange) -> anyhow::Result<()> {
        let target = change.target();
        let (service, address) = (target.0.to_owned(), target.1);
        match &change {
            // A removal or a new add supersedes everything earlier about the backend.
            RuntimeChange::BackendRemove { .. } | RuntimeChange::BackendAdd { .. } => {
                self.changes.retain(|c| c.target() != (service.as_str(), address));
            }
            RuntimeChange::BackendWeight { .. } => self
                .changes
                .retain(|c| !(matches!(c, RuntimeChange::BackendWeight { .. }) && c.target() == (service.as_str(), address))),
        }
        self.changes.push(change);
        self.save()
    }

    /// Forgets the weight override of a backend (`enable`), saving the file.
    pub fn clear_weight(&mut self, service: &str, address: IpAddr) -> anyhow::Result<()> {
        self.changes
            .retain(|c| !(matches!(c, RuntimeChange::BackendWeight { .. }) && c.target() == (service, address)));
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.changes)?;
        let mut file = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// `yaml` with every change applied in order. Changes that no longer apply are dropped
    /// from the list (and the file), each with the reason returned.
    pub fn apply(&mut self, yaml: &Config) -> anyhow::Result<(Config, Vec<String>)> {
        let mut config = yaml.clone();
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for change in std::mem::take(&mut self.changes) {
            match apply_one(&mut config, &change) {
                Ok(true) => kept.push(change),
                Ok(false) => dropped.push(format!("{change:?}: the configuration already says so")),
                Err(why) => dropped.push(format!("{change:?}: {why}")),
            }
        }
        let changed = !dropped.is_empty();
        self.changes = kept;
        if changed {
            self.save()?;
        }
        Ok((config, dropped))
    }
}

/// Applies one change; `Ok(false)` when it changes nothing.
fn apply_one(config: &mut Config, change: &RuntimeChange) -> anyhow::Result<bool> {
    let (name, address) = change.target();
    let service = config
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("there is no service {name}"))?;
    let position = service.backends.iter().position(|b| b.address == address);
    match change {
        RuntimeChange::BackendAdd { weight, mac, .. } => {
            if position.is_some() {
                return Ok(false);
            }
            check_backend(service.vip, address, *weight)?;
            service.backends.push(Backend { address, weight: *weight, mac: *mac });
            Ok(true)
        }
        RuntimeChange::BackendRemove { .. } => match position {
            None => Ok(false),
            Some(i) => {
                service.backends.remove(i);
                Ok(true)
            }
        },
        RuntimeChange::BackendWeight { weight, .. } => {
            let i = position.ok_or_else(|| anyhow!("service {name} has no backend {address}"))?;
            if service.backends[i].weight == *weight {
                return Ok(false);
            }
            check_backend(service.vip, address, *weight)?;
            service.backends[i].weight = *weight;
            Ok(true)
        }
    }
}

/// The rules the YAML's validation applies to one backend.
pub fn check_backend(vip: IpAddr, address: IpAddr, weight: u32) -> anyhow::Result<()> {
    if weight > xdp_lb_common::MAX_WEIGHT {
        bail!("weight {weight} is out of range (0..={})", xdp_lb_common::MAX_WEIGHT);
    }
    if address.is_ipv4() != vip.is_ipv4() {
        bail!("{address} is not of the family of the VIP {vip}");
    }
    if address.is_unspecified() || address.is_loopback() || address.is_multicast() {
        bail!("{address} cannot be a backend");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FlowTable, HashMode, NoBackendAction, Protocol, Service, XdpAttachMode};

    fn yaml() -> Config {
        Config {
            path: "x.yaml".into(),
            flow_hash_seed: 1,
            xdp_mode: XdpAttachMode::Native,
            interfaces: vec!["eth0".into()],
            maglev_table_slots: 1 << 20,
            flow_table: FlowTable::default(),
            services: vec![Service {
                name: "rtmp".into(),
                vip: "10.0.0.100".parse().unwrap(),
                port: 1935,
                protocol: Protocol::Tcp,
                maglev_size: 65537,
                when_no_backend: NoBackendAction::Drop,
                persistence: None,
                hash: HashMode::Flow,
                vlan: None,
                backends: vec![Backend { address: "10.0.0.11".parse().unwrap(), weight: 1, mac: None }],
            }],
        }
    }

    fn scratch() -> RuntimeChanges {
        let dir = std::env::temp_dir().join(format!("xdp-lb-runtime-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = fs::remove_dir_all(&dir);
        RuntimeChanges::load(&dir.join("changes.json")).unwrap()
    }

    #[test]
    fn changes_are_saved_and_read_back_in_order() {
        let mut changes = scratch();
        let add = RuntimeChange::BackendAdd {
            service: "rtmp".into(),
            address: "10.0.0.12".parse().unwrap(),
            weight: 2,
            mac: Some(MacAddr([2, 0, 0, 0, 0, 12])),
        };
        changes.record(add.clone()).unwrap();
        changes.record(RuntimeChange::BackendWeight { service: "rtmp".into(), address: "10.0.0.11".parse().unwrap(), weight: 0 }).unwrap();
        let again = RuntimeChanges::load(changes.path()).unwrap();
        assert_eq!(again.changes(), changes.changes());
        assert_eq!(again.changes()[0], add);
    }

    #[test]
    fn the_running_config_is_the_yaml_with_the_changes_applied() {
        let mut changes = scratch();
        changes.record(RuntimeChange::BackendAdd { service: "rtmp".into(), address: "10.0.0.12".parse().unwrap(), weight: 3, mac: None }).unwrap();
        changes.record(RuntimeChange::BackendWeight { service: "rtmp".into(), address: "10.0.0.11".parse().unwrap(), weight: 0 }).unwrap();
        let (config, dropped) = changes.apply(&yaml()).unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        let b = &config.services[0].backends;
        assert_eq!((b[0].weight, b[1].address, b[1].weight), (0, "10.0.0.12".parse().unwrap(), 3));
    }

    #[test]
    fn changes_the_yaml_made_moot_are_dropped_with_the_reason() {
        let mut changes = scratch();
        changes.record(RuntimeChange::BackendAdd { service: "rtmp".into(), address: "10.0.0.11".parse().unwrap(), weight: 1, mac: None }).unwrap();
        changes.record(RuntimeChange::BackendRemove { service: "hls".into(), address: "10.0.0.11".parse().unwrap() }).unwrap();
        let (config, dropped) = changes.apply(&yaml()).unwrap();
        assert_eq!(config, yaml());
        assert_eq!(dropped.len(), 2, "{dropped:?}");
        assert!(dropped[1].contains("no service hls"));
        assert!(RuntimeChanges::load(changes.path()).unwrap().changes().is_empty());
    }

    #[test]
    fn a_bad_change_is_refused() {
        let mut config = yaml();
        let v6 = RuntimeChange::BackendAdd { service: "rtmp".into(), address: "fd00::1".parse().unwrap(), weight: 1, mac: None };
        assert!(apply_one(&mut config, &v6).is_err());
        let heavy = RuntimeChange::BackendWeight { service: "rtmp".into(), address: "10.0.0.11".parse().unwrap(), weight: 5000 };
        assert!(apply_one(&mut config, &heavy).is_err());
    }
}
