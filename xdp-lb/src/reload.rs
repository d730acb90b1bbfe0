//! Reload: the difference between the running config and a new one, as the smallest list
//! of changes. Services and backends that did not change are not touched, so no live flow
//! moves; settings fixed at load time refuse the reload with the reason.

use std::{collections::BTreeMap, net::IpAddr};

use crate::config::{Backend, Config, ConfigFile, Service};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    RemoveService(String),
    /// Table size, no-backend action or persistence changed.
    UpdateServiceSettings(Service),
    AddService(Service),
    RemoveBackend {
        service: String,
        address: IpAddr,
    },
    AddBackend {
        service: String,
        backend: Backend,
    },
    SetWeight {
        service: String,
        address: IpAddr,
        weight: u32,
    },
    /// The configured MAC changed (or appeared, or went): resolve it again.
    Remac {
        service: String,
        backend: Backend,
    },
}

/// [`plan`] for a whole file: a change of the metrics or registration endpoints (bound at
/// start) also needs a restart.
pub fn plan_file(old: &ConfigFile, new: &ConfigFile) -> Result<Vec<Change>, String> {
    if let Some(what) = new.ops.restart_needed(&old.ops) {
        return Err(format!("these settings only change with a restart: {what}"));
    }
    plan(&old.config, &new.config)
}

/// The changes turning `old` into `new`, in the order to apply them (removals first, so
/// their ids and table space are free for additions). `Err` says why the new config can
/// only take effect through a restart.
pub fn plan(old: &Config, new: &Config) -> Result<Vec<Change>, String> {
    let mut fixed = Vec::new();
    if old.flow_hash_seed != new.flow_hash_seed {
        fixed.push("flow_hash_seed (a new seed would move every flow)");
    }
    if old.xdp_mode != new.xdp_mode {
        fixed.push("xdp_mode");
    }
    if old.interfaces != new.interfaces {
        fixed.push("interfaces");
    }
    if old.maglev_table_slots != new.maglev_table_slots {
        fixed.push("maglev_table_slots (the map is sized at load)");
    }
    if old.flow_table != new.flow_table {
        fixed.push("flow_table (sized and timed at load)");
    }
    if !fixed.is_empty() {
        return Err(format!(
            "these settings only change with a restart: {}",
            fixed.join(", ")
        ));
    }

    let old_services: BTreeMap<&str, &Service> =
        old.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_services: BTreeMap<&str, &Service> =
        new.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let same_listener =
        |a: &Service, b: &Service| (a.vip, a.port, a.protocol) == (b.vip, b.port, b.protocol);

    let mut removals = Vec::new();
    let mut updates = Vec::new();
    let mut additions = Vec::new();
    let mut backend_changes = Vec::new();
    for (name, old_s) in &old_services {
        match new_services.get(name) {
            Some(new_s) if same_listener(old_s, new_s) => {}
            _ => removals.push(Change::RemoveService((*name).to_owned())),
        }
    }
    for (name, new_s) in &new_services {
        let Some(old_s) = old_services.get(name).filter(|o| same_listener(o, new_s)) else {
            additions.push(Change::AddService((*new_s).clone()));
            continue;
        };
        if (old_s.maglev_size, old_s.when_no_backend, old_s.persistence, old_s.hash)
            != (new_s.maglev_size, new_s.when_no_backend, new_s.persistence, new_s.hash)
        {
            updates.push(Change::UpdateServiceSettings((*new_s).clone()));
        }
        backend_diff(name, old_s, new_s, &mut removals, &mut backend_changes);
    }
    // Backend removals go with the service removals (first); then settings, then new
    // services, then backend additions and changes.
    let mut changes = removals;
    changes.extend(updates);
    changes.extend(additions);
    changes.extend(backend_changes);
    Ok(changes)
}

fn backend_diff(
    name: &str,
    old: &Service,
    new: &Service,
    removals: &mut Vec<Change>,
    changes: &mut Vec<Change>,
) {
    let old_b: BTreeMap<IpAddr, &Backend> = old.backends.iter().map(|b| (b.address, b)).collect();
    let new_b: BTreeMap<IpAddr, &Backend> = new.backends.iter().map(|b| (b.address, b)).collect();
    for address in old_b.keys().filter(|a| !new_b.contains_key(a)) {
        removals.push(Change::RemoveBackend {
            service: name.to_owned(),
            address: *address,
        });
    }
    for (address, b) in &new_b {
        match old_b.get(address) {
            None => changes.push(Change::AddBackend {
                service: name.to_owned(),
                backend: (*b).clone(),
            }),
            Some(o) => {
                if o.mac != b.mac {
                    changes.push(Change::Remac {
                        service: name.to_owned(),
                        backend: (*b).clone(),
                    });
                }
                if o.weight != b.weight {
                    changes.push(Change::SetWeight {
                        service: name.to_owned(),
                        address: *address,
                        weight: b.weight,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{
        FlowTable, HashMode, MacAddr, NoBackendAction, Persistence, Protocol, XdpAttachMode,
    };

    fn backend(a: &str, weight: u32) -> Backend {
        Backend {
            address: a.parse().unwrap(),
            weight,
            mac: None,
        }
    }

    fn service(name: &str, port: u16, backends: Vec<Backend>) -> Service {
        Service {
            name: name.into(),
            vip: "10.0.0.100".parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
            maglev_size: 65537,
            when_no_backend: NoBackendAction::Drop,
            persistence: None,
            hash: HashMode::Flow,
            vlan: None,
            backends,
        }
    }

    fn config(services: Vec<Service>) -> Config {
        Config {
            path: PathBuf::from("x.yaml"),
            flow_hash_seed: 1,
            xdp_mode: XdpAttachMode::Native,
            interfaces: vec!["eth0".into()],
            maglev_table_slots: 1 << 20,
            flow_table: FlowTable::default(),
            services,
        }
    }

    fn three() -> Vec<Backend> {
        vec![
            backend("10.0.0.11", 1),
            backend("10.0.0.12", 1),
            backend("10.0.0.13", 1),
        ]
    }

    #[test]
    fn an_identical_config_changes_nothing() {
        let c = config(vec![service("rtmp", 1935, three())]);
        assert_eq!(plan(&c, &c.clone()), Ok(vec![]));
    }

    #[test]
    fn only_the_backends_that_differ_are_touched() {
        let old = config(vec![
            service("rtmp", 1935, three()),
            service("hls", 8080, three()),
        ]);
        let mut hls = three();
        hls.remove(0);
        hls[0].weight = 0;
        hls.push(backend("10.0.0.14", 2));
        hls[1].mac = Some(MacAddr([2, 0, 0, 0, 0, 13]));
        let new = config(vec![
            service("rtmp", 1935, three()),
            service("hls", 8080, hls.clone()),
        ]);
        assert_eq!(
            plan(&old, &new),
            Ok(vec![
                Change::RemoveBackend {
                    service: "hls".into(),
                    address: "10.0.0.11".parse().unwrap()
                },
                Change::SetWeight {
                    service: "hls".into(),
                    address: "10.0.0.12".parse().unwrap(),
                    weight: 0
                },
                Change::Remac {
                    service: "hls".into(),
                    backend: hls[1].clone()
                },
                Change::AddBackend {
                    service: "hls".into(),
                    backend: hls[2].clone()
                },
            ])
        );
    }

    #[test]
    fn services_are_removed_first_and_added_last_and_a_moved_listener_is_a_new_service() {
        let old = config(vec![
            service("rtmp", 1935, three()),
            service("hls", 8080, three()),
        ]);
        let new = config(vec![
            service("rtmp", 1936, three()),
            service("dash", 8443, three()),
        ]);
        assert_eq!(
            plan(&old, &new),
            Ok(vec![
                Change::RemoveService("hls".into()),
                Change::RemoveService("rtmp".into()),
                Change::AddService(new.services[1].clone()),
                Change::AddService(new.services[0].clone()),
            ])
        );
    }

    #[test]
    fn a_new_table_size_or_persistence_updates_the_service_in_place() {
        let old = config(vec![service("rtmp", 1935, three())]);
        let mut s = service("rtmp", 1935, three());
        s.maglev_size = 251;
        s.persistence = Some(Persistence {
            timeout_s: 60,
            prefix_len: 24,
        });
        let new = config(vec![s.clone()]);
        assert_eq!(plan(&old, &new), Ok(vec![Change::UpdateServiceSettings(s)]));
    }

    #[test]
    fn settings_fixed_at_load_refuse_the_reload_and_say_which() {
        let old = config(vec![]);
        let mut new = config(vec![]);
        new.flow_hash_seed = 2;
        new.interfaces = vec!["eth1".into()];
        let err = plan(&old, &new).unwrap_err();
        assert!(
            err.contains("flow_hash_seed") && err.contains("interfaces"),
            "{err}"
        );
    }

    #[test]
    fn a_new_metrics_or_registration_address_needs_a_restart() {
        let file = |extra: &str| {
            let text = format!("interfaces: [eth0]\n{extra}services: []\n");
            crate::config::parse_file(Path::new("t.yaml"), &text, &crate::simulate::AnyHost).unwrap()
        };
        let off = file("");
        let on = file("metrics: {listen: 127.0.0.1:9100}\n");
        let moved = file("metrics: {listen: 127.0.0.1:9101}\n");
        assert_eq!(plan_file(&off, &off), Ok(Vec::new()));
        assert_eq!(plan_file(&on, &on), Ok(Vec::new()));
        for (old, new) in [(&off, &on), (&on, &moved), (&on, &off)] {
            assert_eq!(
                plan_file(old, new),
                Err("these settings only change with a restart: metrics".to_owned())
            );
        }
    }
}
