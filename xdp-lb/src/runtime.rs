//! Run-time changes (`xdp-lb backend add|remove|drain|enable|weight`, `xdp-lb client
//! set|remove`): kept in a JSON file
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

use crate::config::{
    Backend, ClientAction, ClientPrefix, ClientRule, Config, ConfigFile, HostFacts, LiveHost,
    MacAddr,
};

/// Default file of run-time changes.
pub const DEFAULT_RUNTIME_FILE: &str = "/var/lib/xdp-lb/runtime-changes.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RuntimeChange {
    BackendAdd {
        service: String,
        address: IpAddr,
        weight: u32,
        mac: Option<MacAddr>,
        /// Its own VLAN (`--vlan`); absent from changes saved before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
    BackendRemove {
        service: String,
        address: IpAddr,
    },
    /// Drain is weight 0; enable puts the YAML's weight back (the override is removed).
    BackendWeight {
        service: String,
        address: IpAddr,
        weight: u32,
    },
    /// The client rule for `prefix` (`change.py -o change-client`): added, or replacing the
    /// YAML's.
    ClientSet {
        service: String,
        prefix: ClientPrefix,
        action: ClientAction,
    },
    /// The client rule for `prefix` removed.
    ClientRemove {
        service: String,
        prefix: ClientPrefix,
    },
    /// A whole service added (`yaml`: one item of `services:`).
    ServiceAdd {
        service: String,
        yaml: String,
    },
    /// A whole service removed.
    ServiceRemove {
        service: String,
    },
}

/// What a run-time change is about: one backend, or one client prefix, of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target<'a> {
    Backend(&'a str, IpAddr),
    Client(&'a str, ClientPrefix),
    Service(&'a str),
}

impl RuntimeChange {
    fn target(&self) -> Target<'_> {
        match self {
            RuntimeChange::BackendAdd {
                service, address, ..
            }
            | RuntimeChange::BackendRemove { service, address }
            | RuntimeChange::BackendWeight {
                service, address, ..
            } => Target::Backend(service, *address),
            RuntimeChange::ClientSet {
                service, prefix, ..
            }
            | RuntimeChange::ClientRemove { service, prefix } => Target::Client(service, *prefix),
            RuntimeChange::ServiceAdd { service, .. }
            | RuntimeChange::ServiceRemove { service } => Target::Service(service),
        }
    }

    fn service(&self) -> &str {
        match self.target() {
            Target::Backend(service, _) | Target::Client(service, _) | Target::Service(service) => {
                service
            }
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
        Ok(Self {
            path: Some(path.to_path_buf()),
            changes,
        })
    }

    /// Changes kept in memory only (an agent run without a run-time file).
    pub fn unsaved() -> Self {
        Self {
            path: None,
            changes: Vec::new(),
        }
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
        let is_weight = |c: &RuntimeChange| matches!(c, RuntimeChange::BackendWeight { .. });
        let kept: Vec<RuntimeChange> = std::mem::take(&mut self.changes)
            .into_iter()
            .filter(|c| match &change {
                // A removal or a new add supersedes everything earlier about the backend;
                // a client change everything earlier about the prefix; a service change
                // everything earlier about the service.
                RuntimeChange::BackendWeight { .. } => !(is_weight(c) && c.target() == target),
                RuntimeChange::ServiceAdd { service, .. }
                | RuntimeChange::ServiceRemove { service } => c.service() != service,
                _ => c.target() != target,
            })
            .collect();
        self.changes = kept;
        self.changes.push(change);
        self.save()
    }

    /// Whether the client rule for `prefix` of `service` comes from a run-time change.
    pub fn sets_client(&self, service: &str, prefix: ClientPrefix) -> bool {
        self.changes.iter().any(|c| {
            matches!(c, RuntimeChange::ClientSet { .. })
                && c.target() == Target::Client(service, prefix)
        })
    }

    /// Forgets the weight override of a backend (`enable`), saving the file.
    pub fn clear_weight(&mut self, service: &str, address: IpAddr) -> anyhow::Result<()> {
        self.changes.retain(|c| {
            !(matches!(c, RuntimeChange::BackendWeight { .. })
                && c.target() == Target::Backend(service, address))
        });
        self.save()
    }

    /// Makes the changes about service `from` about `to` (the service was renamed on its
    /// listener), in memory; `save` keeps it.
    pub fn rename_service(&mut self, from: &str, to: &str) {
        for change in &mut self.changes {
            let service = match change {
                RuntimeChange::BackendAdd { service, .. }
                | RuntimeChange::BackendRemove { service, .. }
                | RuntimeChange::BackendWeight { service, .. }
                | RuntimeChange::ClientSet { service, .. }
                | RuntimeChange::ClientRemove { service, .. }
                | RuntimeChange::ServiceAdd { service, .. }
                | RuntimeChange::ServiceRemove { service } => service,
            };
            if service == from {
                *service = to.to_owned();
            }
        }
    }

    /// Writes the list to its file (atomically: a new file renamed over the old one).
    pub fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(&self.changes)?;
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// `yaml` with every change applied in order. Changes that no longer apply are dropped
    /// from the list (and the file), each with the reason returned.
    pub fn apply(&mut self, yaml: &Config) -> anyhow::Result<(Config, Vec<String>)> {
        let file = ConfigFile {
            config: yaml.clone(),
            failover: Default::default(),
            ops: Default::default(),
            announce: None,
            sync: None,
        };
        let (file, dropped) = self.apply_file(&file, &LiveHost)?;
        if !dropped.is_empty() {
            self.save()?;
        }
        Ok((file.config, dropped))
    }

    /// [`Self::apply`] over the whole file: whole-service changes need it (a service's
    /// health checks and backups live beside its balancing settings). Changes dropped are
    /// dropped in memory only: the caller saves once the result is in force, so a refused
    /// reload loses no saved change.
    pub fn apply_file(
        &mut self,
        yaml: &ConfigFile,
        host: &dyn HostFacts,
    ) -> anyhow::Result<(ConfigFile, Vec<String>)> {
        let mut file = yaml.clone();
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for change in std::mem::take(&mut self.changes) {
            let applied = match &change {
                RuntimeChange::ServiceAdd { service, yaml } => {
                    if file.config.services.iter().any(|s| s.name == *service) {
                        Ok(false)
                    } else {
                        crate::config::with_service_added(&file, yaml, host)
                            .map(|edited| {
                                file = edited;
                                true
                            })
                            .map_err(|why| anyhow!(why))
                    }
                }
                RuntimeChange::ServiceRemove { service } => {
                    Ok(match crate::config::with_service_removed(&file, service) {
                        Some(edited) => {
                            file = edited;
                            true
                        }
                        None => false,
                    })
                }
                _ => {
                    // The same whole validation as at run time: a change saved by an older
                    // agent that the rules now refuse is dropped, with the reason.
                    let mut copy = file.clone();
                    apply_one(&mut copy.config, &change).and_then(|changed| {
                        if changed {
                            file = crate::config::revalidated(&copy, host)
                                .map_err(|why| anyhow!(why))?;
                        }
                        Ok(changed)
                    })
                }
            };
            match applied {
                Ok(true) => kept.push(change),
                Ok(false) => dropped.push(format!("{change:?}: the configuration already says so")),
                Err(why) => dropped.push(format!("{change:?}: {why}")),
            }
        }
        self.changes = kept;
        Ok((file, dropped))
    }
}

/// Applies one change; `Ok(false)` when it changes nothing.
fn apply_one(config: &mut Config, change: &RuntimeChange) -> anyhow::Result<bool> {
    if matches!(
        change,
        RuntimeChange::ServiceAdd { .. } | RuntimeChange::ServiceRemove { .. }
    ) {
        bail!("a whole-service change applies to the whole file (apply_file)");
    }
    let name = change.service();
    let service = config
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("there is no service {name}"))?;
    let Target::Backend(_, address) = change.target() else {
        return apply_client_change(service, change);
    };
    let (vip, service_vlan) = (service.vip, service.vlan);
    // A server of any pool: backends are added to the service's own (default) pool.
    let backends = service.backends_holding_mut(address);
    let position = backends.iter().position(|b| b.address == address);
    match change {
        RuntimeChange::BackendAdd {
            weight, mac, vlan, ..
        } => {
            if position.is_some() {
                return Ok(false);
            }
            check_backend(vip, address, *weight)?;
            let vlan = backend_vlan(name, service_vlan, address, *vlan)?;
            backends.push(Backend {
                address,
                weight: *weight,
                mac: *mac,
                vlan,
            });
            Ok(true)
        }
        RuntimeChange::BackendRemove { .. } => match position {
            None => Ok(false),
            Some(i) => {
                backends.remove(i);
                Ok(true)
            }
        },
        RuntimeChange::BackendWeight { weight, .. } => {
            let i = position.ok_or_else(|| anyhow!("service {name} has no backend {address}"))?;
            if backends[i].weight == *weight {
                return Ok(false);
            }
            check_backend(vip, address, *weight)?;
            backends[i].weight = *weight;
            Ok(true)
        }
        RuntimeChange::ClientSet { .. }
        | RuntimeChange::ClientRemove { .. }
        | RuntimeChange::ServiceAdd { .. }
        | RuntimeChange::ServiceRemove { .. } => apply_client_change(service, change),
    }
}

/// Applies a client change to its service, with the rules the YAML's validation has (the
/// prefix of the VIP's family, the pool one of the service's); `Ok(false)` when it changes
/// nothing.
pub fn apply_client_change(
    service: &mut crate::config::Service,
    change: &RuntimeChange,
) -> anyhow::Result<bool> {
    let name = service.name.clone();
    let position = |service: &crate::config::Service, prefix: ClientPrefix| {
        service.clients.iter().position(|r| r.prefix == prefix)
    };
    match change {
        RuntimeChange::ClientSet { prefix, action, .. } => {
            if prefix.is_ipv4() != service.vip.is_ipv4() {
                bail!(
                    "{prefix} is not of the family of {name}'s VIP {}",
                    service.vip
                );
            }
            if let ClientAction::Pool(pool) = action
                && !service.has_pool(pool)
            {
                let pools: Vec<&str> = std::iter::once(crate::config::DEFAULT_POOL)
                    .chain(service.pools.iter().map(|p| p.name.as_str()))
                    .collect();
                bail!(
                    "service {name} has no pool {pool} (its pools: {})",
                    pools.join(", ")
                );
            }
            let rule = ClientRule {
                prefix: *prefix,
                action: action.clone(),
            };
            match position(service, *prefix) {
                Some(i) if service.clients[i] == rule => Ok(false),
                Some(i) => {
                    service.clients[i] = rule;
                    Ok(true)
                }
                None => {
                    service.clients.push(rule);
                    Ok(true)
                }
            }
        }
        RuntimeChange::ClientRemove { prefix, .. } => match position(service, *prefix) {
            None => Ok(false),
            Some(i) => {
                service.clients.remove(i);
                Ok(true)
            }
        },
        RuntimeChange::BackendAdd { .. }
        | RuntimeChange::BackendRemove { .. }
        | RuntimeChange::BackendWeight { .. }
        | RuntimeChange::ServiceAdd { .. }
        | RuntimeChange::ServiceRemove { .. } => {
            bail!("{change:?} is not a client change")
        }
    }
}

/// The VLAN a backend added at run time with `--vlan` is on, as the YAML's validation has
/// it: only a VLAN-bound service's backend may have one (a tag is rewritten, never pushed),
/// and the service's own VLAN is the default (`None`).
pub fn backend_vlan(
    service: &str,
    service_vlan: Option<u16>,
    address: IpAddr,
    vlan: Option<u16>,
) -> anyhow::Result<Option<u16>> {
    let Some(vlan) = vlan else { return Ok(None) };
    if !(1..=xdp_lb_common::MAX_VLAN_ID).contains(&vlan) {
        bail!(
            "VLAN {vlan} is out of range (1..={})",
            xdp_lb_common::MAX_VLAN_ID
        );
    }
    match service_vlan {
        Some(own) => Ok((vlan != own).then_some(vlan)),
        None => bail!(
            "backend {address} is on VLAN {vlan}, but service {service} takes untagged frames \
             and frames of any VLAN (it has no `vlan:`): xdp-lb rewrites a frame's VLAN tag, it \
             cannot add one. Bind the service to its clients' VLAN, or add the backend without \
             --vlan"
        ),
    }
}

/// The rules the YAML's validation applies to one backend.
pub fn check_backend(vip: IpAddr, address: IpAddr, weight: u32) -> anyhow::Result<()> {
    if weight > xdp_lb_common::MAX_WEIGHT {
        bail!(
            "weight {weight} is out of range (0..={})",
            xdp_lb_common::MAX_WEIGHT
        );
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
            interfaces: vec!["lo".into()],
            maglev_table_slots: 1 << 20,
            flow_table: FlowTable::default(),
            services: vec![Service {
                name: "rtmp".into(),
                vip: "10.0.0.100".parse().unwrap(),
                port: 1935,
                protocol: Protocol::Tcp,
                maglev_size: 65537,
                when_no_backend: NoBackendAction::Drop,
                when_backend_down: Default::default(),
                persistence: None,
                hash: HashMode::Flow,
                vlan: None,
                backends: vec![Backend {
                    address: "10.0.0.11".parse().unwrap(),
                    weight: 1,
                    mac: None,
                    vlan: None,
                }],
                pools: vec![crate::config::Pool {
                    name: "premium".into(),
                    maglev_size: 65537,
                    backends: vec![Backend {
                        address: "10.0.0.21".parse().unwrap(),
                        weight: 1,
                        mac: None,
                        vlan: None,
                    }],
                }],
                clients: Vec::new(),
            }],
        }
    }

    fn scratch() -> RuntimeChanges {
        let dir = std::env::temp_dir().join(format!(
            "xdp-lb-runtime-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
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
            vlan: None,
        };
        changes.record(add.clone()).unwrap();
        changes
            .record(RuntimeChange::BackendWeight {
                service: "rtmp".into(),
                address: "10.0.0.11".parse().unwrap(),
                weight: 0,
            })
            .unwrap();
        let again = RuntimeChanges::load(changes.path()).unwrap();
        assert_eq!(again.changes(), changes.changes());
        assert_eq!(again.changes()[0], add);
    }

    #[test]
    fn the_running_config_is_the_yaml_with_the_changes_applied() {
        let mut changes = scratch();
        changes
            .record(RuntimeChange::BackendAdd {
                service: "rtmp".into(),
                address: "10.0.0.12".parse().unwrap(),
                weight: 3,
                mac: None,
                vlan: None,
            })
            .unwrap();
        changes
            .record(RuntimeChange::BackendWeight {
                service: "rtmp".into(),
                address: "10.0.0.11".parse().unwrap(),
                weight: 0,
            })
            .unwrap();
        let (config, dropped) = changes.apply(&yaml()).unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        let b = &config.services[0].backends;
        assert_eq!(
            (b[0].weight, b[1].address, b[1].weight),
            (0, "10.0.0.12".parse().unwrap(), 3)
        );
    }

    #[test]
    fn a_saved_change_the_files_rules_refuse_is_dropped_with_the_reason() {
        let mut changes = scratch();
        // An older agent accepted a backend that is the service's own VIP.
        changes
            .record(RuntimeChange::BackendAdd {
                service: "rtmp".into(),
                address: yaml().services[0].vip,
                weight: 1,
                mac: None,
                vlan: None,
            })
            .unwrap();
        let (config, dropped) = changes.apply(&yaml()).unwrap();
        assert_eq!(config, yaml());
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(dropped[0].contains("is a VIP of this file"), "{dropped:?}");
    }

    #[test]
    fn changes_the_yaml_made_moot_are_dropped_with_the_reason() {
        let mut changes = scratch();
        changes
            .record(RuntimeChange::BackendAdd {
                service: "rtmp".into(),
                address: "10.0.0.11".parse().unwrap(),
                weight: 1,
                mac: None,
                vlan: None,
            })
            .unwrap();
        changes
            .record(RuntimeChange::BackendRemove {
                service: "hls".into(),
                address: "10.0.0.11".parse().unwrap(),
            })
            .unwrap();
        let (config, dropped) = changes.apply(&yaml()).unwrap();
        assert_eq!(config, yaml());
        assert_eq!(dropped.len(), 2, "{dropped:?}");
        assert!(dropped[1].contains("no service hls"));
        assert!(
            RuntimeChanges::load(changes.path())
                .unwrap()
                .changes()
                .is_empty()
        );
    }

    #[test]
    fn a_bad_change_is_refused() {
        let mut config = yaml();
        let v6 = RuntimeChange::BackendAdd {
            service: "rtmp".into(),
            address: "fd00::1".parse().unwrap(),
            weight: 1,
            mac: None,
            vlan: None,
        };
        assert!(apply_one(&mut config, &v6).is_err());
        let heavy = RuntimeChange::BackendWeight {
            service: "rtmp".into(),
            address: "10.0.0.11".parse().unwrap(),
            weight: 5000,
        };
        assert!(apply_one(&mut config, &heavy).is_err());
    }

    #[test]
    fn a_backend_added_on_its_own_vlan_needs_a_service_bound_to_one() {
        let add = |vlan| RuntimeChange::BackendAdd {
            service: "rtmp".into(),
            address: "10.0.0.12".parse().unwrap(),
            weight: 1,
            mac: None,
            vlan,
        };
        let mut config = yaml();
        let refused = apply_one(&mut config, &add(Some(200))).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("backend 10.0.0.12 is on VLAN 200, but service rtmp takes untagged"),
            "{refused}"
        );
        assert_eq!(config, yaml(), "nothing changed");
        config.services[0].vlan = Some(100);
        assert!(apply_one(&mut config, &add(Some(5000))).is_err());
        assert!(apply_one(&mut config, &add(Some(200))).unwrap());
        assert_eq!(config.services[0].backends[1].vlan, Some(200));
        // The service's own VLAN is the default, as in the YAML.
        config.services[0].backends.pop();
        assert!(apply_one(&mut config, &add(Some(100))).unwrap());
        assert_eq!(config.services[0].backends[1].vlan, None);
    }

    #[test]
    fn changes_saved_before_backends_had_a_vlan_still_load() {
        let saved = r#"{"change":"backend_add","service":"rtmp","address":"10.0.0.12","weight":1,"mac":null}"#;
        let change: RuntimeChange = serde_json::from_str(saved).unwrap();
        assert!(matches!(
            change,
            RuntimeChange::BackendAdd { vlan: None, .. }
        ));
        assert_eq!(serde_json::to_string(&change).unwrap(), saved);
    }

    #[test]
    fn client_rules_set_at_run_time_are_applied_over_the_yaml_and_checked() {
        let mut changes = scratch();
        let prefix: ClientPrefix = "198.51.100.7/32".parse().unwrap();
        let to_premium = RuntimeChange::ClientSet {
            service: "rtmp".into(),
            prefix,
            action: ClientAction::Pool("premium".into()),
        };
        changes.record(to_premium.clone()).unwrap();
        assert!(changes.sets_client("rtmp", prefix));
        let (config, dropped) = changes.apply(&yaml()).unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(
            config.services[0].clients,
            [ClientRule {
                prefix,
                action: ClientAction::Pool("premium".into())
            }]
        );
        // A later change of the same prefix replaces the earlier one.
        changes
            .record(RuntimeChange::ClientSet {
                service: "rtmp".into(),
                prefix,
                action: ClientAction::Drop,
            })
            .unwrap();
        assert_eq!(changes.changes().len(), 1);
        let again = RuntimeChanges::load(changes.path()).unwrap();
        assert_eq!(again.changes(), changes.changes());

        let mut config = yaml();
        let gold = RuntimeChange::ClientSet {
            service: "rtmp".into(),
            prefix,
            action: ClientAction::Pool("gold".into()),
        };
        assert!(
            apply_one(&mut config, &gold)
                .unwrap_err()
                .to_string()
                .contains("no pool gold")
        );
        let v6 = RuntimeChange::ClientSet {
            service: "rtmp".into(),
            prefix: "2001:db8::/32".parse().unwrap(),
            action: ClientAction::Drop,
        };
        assert!(apply_one(&mut config, &v6).is_err());
        let remove = RuntimeChange::ClientRemove {
            service: "rtmp".into(),
            prefix,
        };
        assert!(
            !apply_one(&mut config, &remove).unwrap(),
            "nothing to remove"
        );
    }

    #[test]
    fn a_run_time_weight_reaches_a_server_of_a_named_pool() {
        let mut config = yaml();
        let drain = RuntimeChange::BackendWeight {
            service: "rtmp".into(),
            address: "10.0.0.21".parse().unwrap(),
            weight: 0,
        };
        assert!(apply_one(&mut config, &drain).unwrap());
        assert_eq!(config.services[0].pools[0].backends[0].weight, 0);
        assert_eq!(
            config.services[0].backends.len(),
            1,
            "the default pool is unchanged"
        );
    }
}
