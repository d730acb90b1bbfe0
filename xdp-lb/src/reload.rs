//! Reload: the difference between the running config and a new one, as the smallest list
//! of changes. Services and backends that did not change are not touched, so no live flow
//! moves; settings fixed at load time refuse the reload with the reason.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::config::{Backend, ClientRule, Config, ConfigFile, DEFAULT_POOL, Pool, Service};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    RemoveService(String),
    /// The same listener under a new name: its id, backends, tables and flows stay.
    RenameService {
        from: String,
        to: String,
    },
    /// Table size, no-backend action, persistence or hash mode changed.
    UpdateServiceSettings(Service),
    AddService(Service),
    RemoveBackend {
        service: String,
        address: IpAddr,
    },
    /// A named pool with the backends new to the service (those it takes from other pools
    /// follow as `MoveBackend`).
    AddPool {
        service: String,
        pool: Pool,
    },
    /// A named pool's table size changed.
    UpdatePoolSettings {
        service: String,
        pool: Pool,
    },
    /// A server moves to another pool of its service, keeping its id, so its live flows
    /// stay.
    MoveBackend {
        service: String,
        address: IpAddr,
        pool: String,
    },
    AddBackend {
        service: String,
        /// `default` for the service's own backends.
        pool: String,
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
    /// The backend's own VLAN changed (or appeared, or went): its entry's VLAN id, which
    /// its frames' tag is rewritten to.
    SetVlan {
        service: String,
        address: IpAddr,
        vlan: Option<u16>,
    },
    /// The client rules changed: the entries that differ are replaced.
    SetClients {
        service: String,
        clients: Vec<ClientRule>,
    },
    /// A named pool went (after the rules that sent clients there, with its servers).
    RemovePool {
        service: String,
        pool: String,
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

/// The changes turning `old` into `new`, in the order to apply them: removals first (so
/// their ids and table space are free for additions), then settings, new services and
/// pools, backend changes, client rules, and last the pools no rule names any more. `Err`
/// says why the new config can only take effect through a restart.
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
    let predecessors = predecessors(old, new);

    let mut steps = Steps::default();
    let kept: BTreeSet<&str> = predecessors.values().map(String::as_str).collect();
    for name in old_services.keys() {
        if !kept.contains(name) {
            steps
                .service_removals
                .push(Change::RemoveService((*name).to_owned()));
        }
    }
    rename_steps(&predecessors, &old_services, &mut steps);
    for (name, new_s) in &new_services {
        let Some(old_s) = predecessors
            .get(*name)
            .and_then(|old_name| old_services.get(old_name.as_str()))
        else {
            steps.additions.push(Change::AddService((*new_s).clone()));
            continue;
        };
        if (
            old_s.maglev_size,
            old_s.when_no_backend,
            old_s.when_backend_down,
            old_s.persistence,
            old_s.hash,
        ) != (
            new_s.maglev_size,
            new_s.when_no_backend,
            new_s.when_backend_down,
            new_s.persistence,
            new_s.hash,
        ) {
            steps
                .updates
                .push(Change::UpdateServiceSettings((*new_s).clone()));
        }
        pool_diff(name, old_s, new_s, &mut steps);
        backend_diff(name, old_s, new_s, &mut steps);
        if old_s.clients != new_s.clients {
            steps.rules.push(Change::SetClients {
                service: (*name).to_owned(),
                clients: new_s.clients.clone(),
            });
        }
    }
    Ok(steps.in_order())
}

/// A service's listener: what the data plane keys it by. The name is only a label.
fn listener(s: &Service) -> (IpAddr, u16, crate::config::Protocol, Option<u16>) {
    (s.vip, s.port, s.protocol, s.vlan)
}

/// For each service of `new` that continues one of `old`, that old service's name: the
/// same name on the same listener, else the old service on its listener (a rename). A
/// service moved to another listener is a new service.
pub fn predecessors(old: &Config, new: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for n in &new.services {
        if let Some(o) = old
            .services
            .iter()
            .find(|o| o.name == n.name && listener(o) == listener(n))
        {
            out.insert(n.name.clone(), o.name.clone());
            taken.insert(o.name.clone());
        }
    }
    for n in &new.services {
        if out.contains_key(&n.name) {
            continue;
        }
        if let Some(o) = old
            .services
            .iter()
            .find(|o| listener(o) == listener(n) && !taken.contains(&o.name))
        {
            out.insert(n.name.clone(), o.name.clone());
            taken.insert(o.name.clone());
        }
    }
    out
}

/// Renames in an order that never takes a name still in use: a rename onto the name of a
/// service that is itself renamed goes through a temporary name first.
fn rename_steps(
    predecessors: &BTreeMap<String, String>,
    old_services: &BTreeMap<&str, &Service>,
    steps: &mut Steps,
) {
    let renames: Vec<(&String, &String)> = predecessors
        .iter()
        .filter(|(new, old)| new != old)
        .map(|(new, old)| (old, new))
        .collect();
    let mut second = Vec::new();
    for (from, to) in renames {
        if old_services.contains_key(to.as_str()) {
            let temporary = format!("{from} (renaming to {to})");
            steps.renames.push(Change::RenameService {
                from: from.clone(),
                to: temporary.clone(),
            });
            second.push(Change::RenameService {
                from: temporary,
                to: to.clone(),
            });
        } else {
            steps.renames.push(Change::RenameService {
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    steps.renames.extend(second);
}

/// The changes of a plan by when they are applied.
#[derive(Default)]
struct Steps {
    /// Services removed: first, freeing their names, ids and table space.
    service_removals: Vec<Change>,
    /// Then services renamed, so every later change names them as the new config does.
    renames: Vec<Change>,
    /// Backends removed, freeing ids and table space.
    removals: Vec<Change>,
    updates: Vec<Change>,
    additions: Vec<Change>,
    pools: Vec<Change>,
    backends: Vec<Change>,
    /// After every pool a rule may name exists.
    rules: Vec<Change>,
    /// Last: once no rule names them.
    pool_removals: Vec<Change>,
}

impl Steps {
    fn in_order(self) -> Vec<Change> {
        let mut changes = self.service_removals;
        changes.extend(self.renames);
        changes.extend(self.removals);
        changes.extend(self.updates);
        changes.extend(self.additions);
        changes.extend(self.pools);
        changes.extend(self.backends);
        changes.extend(self.rules);
        changes.extend(self.pool_removals);
        changes
    }
}

/// Named pools added, resized or removed.
fn pool_diff(name: &str, old: &Service, new: &Service, steps: &mut Steps) {
    let old_addresses: BTreeSet<IpAddr> = old.all_backends().map(|b| b.address).collect();
    for pool in &new.pools {
        match old.pool(&pool.name) {
            None => steps.pools.push(Change::AddPool {
                service: name.to_owned(),
                pool: Pool {
                    backends: pool
                        .backends
                        .iter()
                        .filter(|b| !old_addresses.contains(&b.address))
                        .cloned()
                        .collect(),
                    ..pool.clone()
                },
            }),
            Some(o) if o.maglev_size != pool.maglev_size => {
                steps.pools.push(Change::UpdatePoolSettings {
                    service: name.to_owned(),
                    pool: pool.clone(),
                });
            }
            Some(_) => {}
        }
    }
    for pool in old.pools.iter().filter(|p| new.pool(&p.name).is_none()) {
        steps.pool_removals.push(Change::RemovePool {
            service: name.to_owned(),
            pool: pool.name.clone(),
        });
    }
}

/// Backends (of every pool) removed, moved, added, re-weighted, re-MAC-ed or moved to
/// another VLAN. The servers of
/// a removed pool that leave the service go with it.
fn backend_diff(name: &str, old: &Service, new: &Service, steps: &mut Steps) {
    let in_pools = |s: &Service| -> BTreeMap<IpAddr, (String, Backend)> {
        s.all_backends()
            .map(|b| {
                let pool = s.pool_of(b.address).unwrap_or(DEFAULT_POOL).to_owned();
                (b.address, (pool, b.clone()))
            })
            .collect()
    };
    let old_b = in_pools(old);
    let new_b = in_pools(new);
    for (address, (pool, _)) in &old_b {
        if !new_b.contains_key(address) && new.has_pool(pool) {
            steps.removals.push(Change::RemoveBackend {
                service: name.to_owned(),
                address: *address,
            });
        }
    }
    for (address, (pool, b)) in &new_b {
        let Some((old_pool, o)) = old_b.get(address) else {
            // A new pool's new servers come with the pool.
            if old.has_pool(pool) {
                steps.backends.push(Change::AddBackend {
                    service: name.to_owned(),
                    pool: pool.clone(),
                    backend: b.clone(),
                });
            }
            continue;
        };
        if old_pool != pool {
            steps.backends.push(Change::MoveBackend {
                service: name.to_owned(),
                address: *address,
                pool: pool.clone(),
            });
        }
        if o.mac != b.mac {
            steps.backends.push(Change::Remac {
                service: name.to_owned(),
                backend: b.clone(),
            });
        }
        if o.vlan != b.vlan {
            steps.backends.push(Change::SetVlan {
                service: name.to_owned(),
                address: *address,
                vlan: b.vlan,
            });
        }
        if o.weight != b.weight {
            steps.backends.push(Change::SetWeight {
                service: name.to_owned(),
                address: *address,
                weight: b.weight,
            });
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
            vlan: None,
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
            when_backend_down: Default::default(),
            persistence: None,
            hash: HashMode::Flow,
            vlan: None,
            backends,
            pools: Vec::new(),
            clients: Vec::new(),
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
                    pool: "default".into(),
                    backend: hls[2].clone()
                },
            ])
        );
    }

    #[test]
    fn a_backend_moved_to_another_vlan_has_only_its_vlan_set() {
        let on_vlan = |backends: Vec<Backend>| Service {
            vlan: Some(100),
            ..service("hls", 8080, backends)
        };
        let old = config(vec![on_vlan(three())]);
        let mut moved = three();
        moved[1].vlan = Some(200);
        let new = config(vec![on_vlan(moved.clone())]);
        let set = |vlan| {
            Ok(vec![Change::SetVlan {
                service: "hls".into(),
                address: "10.0.0.12".parse().unwrap(),
                vlan,
            }])
        };
        assert_eq!(plan(&old, &new), set(Some(200)));
        assert_eq!(plan(&new, &old), set(None), "back to the service's VLAN");
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
            crate::config::parse_file(Path::new("t.yaml"), &text, &crate::simulate::AnyHost)
                .unwrap()
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

    fn pooled(pools: Vec<Pool>, clients: Vec<ClientRule>) -> Service {
        Service {
            pools,
            clients,
            ..service("rtmp", 1935, three())
        }
    }

    fn pool(name: &str, backends: Vec<Backend>) -> Pool {
        Pool {
            name: name.into(),
            maglev_size: 65537,
            backends,
        }
    }

    fn rule(prefix: &str, pool: &str) -> ClientRule {
        ClientRule {
            prefix: prefix.parse().unwrap(),
            action: crate::config::ClientAction::Pool(pool.into()),
        }
    }

    #[test]
    fn a_new_pool_comes_before_the_rules_naming_it_and_a_gone_pool_after_them() {
        let premium = pool("premium", vec![backend("10.0.0.21", 1)]);
        let rules = vec![rule("198.51.100.0/24", "premium")];
        let old = config(vec![pooled(vec![], vec![])]);
        let new = config(vec![pooled(vec![premium.clone()], rules.clone())]);
        assert_eq!(
            plan(&old, &new),
            Ok(vec![
                Change::AddPool {
                    service: "rtmp".into(),
                    pool: premium
                },
                Change::SetClients {
                    service: "rtmp".into(),
                    clients: rules
                },
            ])
        );
        assert_eq!(
            plan(&new, &old),
            Ok(vec![
                Change::SetClients {
                    service: "rtmp".into(),
                    clients: vec![]
                },
                Change::RemovePool {
                    service: "rtmp".into(),
                    pool: "premium".into()
                },
            ])
        );
    }

    #[test]
    fn a_server_moving_between_pools_is_moved_not_removed_and_added() {
        let old = config(vec![pooled(
            vec![pool("premium", vec![backend("10.0.0.21", 1)])],
            vec![],
        )]);
        let mut rtmp = pooled(
            vec![
                pool("premium", vec![]),
                pool(
                    "gold",
                    vec![backend("10.0.0.21", 3), backend("10.0.0.22", 1)],
                ),
            ],
            vec![],
        );
        rtmp.pools[0].maglev_size = 251;
        let new = config(vec![rtmp.clone()]);
        let gold_new_servers = pool("gold", vec![backend("10.0.0.22", 1)]);
        assert_eq!(
            plan(&old, &new),
            Ok(vec![
                Change::UpdatePoolSettings {
                    service: "rtmp".into(),
                    pool: rtmp.pools[0].clone()
                },
                Change::AddPool {
                    service: "rtmp".into(),
                    pool: gold_new_servers
                },
                Change::MoveBackend {
                    service: "rtmp".into(),
                    address: "10.0.0.21".parse().unwrap(),
                    pool: "gold".into()
                },
                Change::SetWeight {
                    service: "rtmp".into(),
                    address: "10.0.0.21".parse().unwrap(),
                    weight: 3
                },
            ])
        );
    }

    #[test]
    fn a_changed_rule_set_is_one_change_and_an_unchanged_one_none() {
        let premium = vec![pool("premium", vec![backend("10.0.0.21", 1)])];
        let old = config(vec![pooled(
            premium.clone(),
            vec![rule("198.51.100.0/24", "premium")],
        )]);
        assert_eq!(plan(&old, &old.clone()), Ok(vec![]));
        let rules = vec![
            rule("198.51.100.0/24", "default"),
            rule("203.0.113.0/24", "premium"),
        ];
        let new = config(vec![pooled(premium, rules.clone())]);
        assert_eq!(
            plan(&old, &new),
            Ok(vec![Change::SetClients {
                service: "rtmp".into(),
                clients: rules
            }])
        );
    }

    #[test]
    fn the_servers_of_a_removed_pool_go_with_it() {
        let old = config(vec![pooled(
            vec![pool("premium", vec![backend("10.0.0.21", 1)])],
            vec![],
        )]);
        let new = config(vec![pooled(vec![], vec![])]);
        assert_eq!(
            plan(&old, &new),
            Ok(vec![Change::RemovePool {
                service: "rtmp".into(),
                pool: "premium".into()
            }])
        );
    }
}
