//! Reloads: the file read again, the run-time changes applied over it, and the running
//! state brought from the old config to the new one with the smallest set of changes
//! (`crate::reload` plans them; each step of applying them is a function here).

use std::{collections::BTreeMap, net::IpAddr};

use futures::future::join_all;

use super::{
    failover,
    resolve::{CHANGE_RESOLVE_TIMEOUT, forwarding_for, log_unreachable, note_egress},
    systemd,
};
use crate::{
    balancer::{Balancer, Forwarding},
    config::{self, Backend, ConfigFile, LiveHost},
    neighbour::{Egress, Neighbours},
    reload::{self, Change},
    runtime::RuntimeChanges,
};

/// Re-reads the config file, applies the run-time changes over it, and applies the
/// difference to the running state. An invalid file, or one changing settings fixed at
/// load, changes nothing; `Err` says why. systemd hears RELOADING, then READY.
pub(super) async fn reload(
    neighbours: &Neighbours,
    current: &ConfigFile,
    runtime: &mut RuntimeChanges,
    interfaces: &[Egress],
    balancer: &mut Balancer,
) -> Result<(ConfigFile, String), String> {
    systemd::reloading();
    let result = reload_file(neighbours, current, runtime, interfaces, balancer).await;
    let names = match &result {
        Ok((new, _)) => &new.config.interfaces,
        Err(_) => &current.config.interfaces,
    };
    systemd::ready(&systemd::serving_status(balancer, names));
    result
}

async fn reload_file(
    neighbours: &Neighbours,
    current: &ConfigFile,
    runtime: &mut RuntimeChanges,
    interfaces: &[Egress],
    balancer: &mut Balancer,
) -> Result<(ConfigFile, String), String> {
    log::info!("reloading {}", current.config.path.display());
    let mut new = match config::load_file_settled(&current.config.path, &LiveHost).await {
        Ok(new) => new,
        Err(errors) => {
            log::error!("reload refused, nothing changed:\n{errors}");
            return Err(format!("reload refused, nothing changed:\n{errors}"));
        }
    };
    // The run-time changes are applied to a copy, kept only if the reload is: a refused
    // reload leaves the saved changes as they were.
    let mut candidate = runtime.clone();
    for (to, from) in reload::predecessors(&current.config, &new.config) {
        if to != from {
            candidate.rename_service(&from, &to);
        }
    }
    let dropped = match candidate.apply_file(&new, &LiveHost) {
        Ok((effective, dropped)) => {
            new = effective;
            dropped
        }
        Err(err) => {
            let why = format!(
                "reload refused, nothing changed: run-time changes in {}: {err:#}",
                runtime.path().display()
            );
            log::error!("{why}");
            return Err(why);
        }
    };
    let capacity = u64::from(balancer.dataplane().table_capacity());
    let needed = new.config.table_slots_needed();
    if needed > capacity {
        let why = format!(
            "reload refused, nothing changed: the services' Maglev tables need {needed} slots, more than the {capacity} of maglev_tables; raise maglev_table_slots (it takes effect at a clean restart) or use smaller maglev_size values"
        );
        log::error!("{why}");
        return Err(why);
    }
    let summary = apply_config(neighbours, current, &new, interfaces, balancer).await?;
    for why in dropped {
        log::warn!("run-time change dropped: {why}");
    }
    if *runtime != candidate {
        *runtime = candidate;
        if let Err(err) = runtime.save() {
            log::warn!("saving {}: {err:#}", runtime.path().display());
        }
    }
    Ok((new, summary))
}

/// Brings the running state from `current` to `new` with the smallest set of changes.
/// `Err` (nothing changed) when `new` changes settings fixed at load. The steps: plan the
/// changes, find the services whose failover settings changed, resolve every backend the
/// plan adds, then apply the plan around those failover updates and say how it went.
pub(super) async fn apply_config(
    neighbours: &Neighbours,
    current: &ConfigFile,
    new: &ConfigFile,
    interfaces: &[Egress],
    balancer: &mut Balancer,
) -> Result<String, String> {
    let changes = plan(current, new)?;
    let failover_updates = failover_updates(current, new, &changes, balancer);
    if changes.is_empty() && failover_updates.is_empty() {
        return Ok(nothing_to_apply(current, new));
    }
    let resolved = resolve_added(neighbours, new, &changes, interfaces, balancer).await;
    let failed = apply_plan(balancer, new, &changes, &failover_updates, &resolved);
    summarize(changes.len() + failover_updates.len(), failed)
}

/// The changes that bring the balancer from `current` to `new`, or why there are none to
/// make (settings fixed at load changed).
fn plan(current: &ConfigFile, new: &ConfigFile) -> Result<Vec<Change>, String> {
    match reload::plan_file(current, new) {
        Ok(changes) => Ok(changes),
        Err(why) => {
            log::error!("refused, nothing changed: {why}");
            Err(format!("refused, nothing changed: {why}"))
        }
    }
}

/// The services (by their new names) whose failover settings changed, other than those
/// the plan re-adds: services re-added by the plan get their failover settings with them.
fn failover_updates<'a>(
    current: &ConfigFile,
    new: &'a ConfigFile,
    changes: &[Change],
    balancer: &Balancer,
) -> Vec<&'a String> {
    let re_added: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AddService(s) => Some(s.name.as_str()),
            _ => None,
        })
        .collect();
    // A renamed service is known to the balancer by its old name until the rename.
    let predecessors = reload::predecessors(&current.config, &new.config);
    new.failover
        .services
        .iter()
        .filter(|(name, settings)| {
            let running = predecessors.get(*name).unwrap_or(name);
            !re_added.contains(&name.as_str())
                && balancer
                    .service(running)
                    .is_some_and(|s| s.failover != **settings)
        })
        .map(|(name, _)| name)
        .collect()
}

/// The summary of a reload that changes nothing in the balancer.
fn nothing_to_apply(current: &ConfigFile, new: &ConfigFile) -> String {
    let summary = if new.failover.notify == current.failover.notify {
        "no change"
    } else {
        "new notify settings"
    };
    log::info!("reload: {summary}");
    summary.to_owned()
}

/// Resolves every backend and standby the plan adds, before anything is touched;
/// unreachable ones are reported and left unresolved (`None`).
async fn resolve_added(
    neighbours: &Neighbours,
    new: &ConfigFile,
    changes: &[Change],
    interfaces: &[Egress],
    balancer: &mut Balancer,
) -> BTreeMap<IpAddr, Option<Forwarding>> {
    let mut wanted: BTreeMap<IpAddr, Backend> = BTreeMap::new();
    for change in changes {
        match change {
            Change::AddService(s) => {
                wanted.extend(s.all_backends().map(|b| (b.address, b.clone())))
            }
            Change::AddPool { pool, .. } => {
                wanted.extend(pool.backends.iter().map(|b| (b.address, b.clone())))
            }
            Change::AddBackend { backend, .. } | Change::Remac { backend, .. } => {
                wanted.insert(backend.address, backend.clone());
            }
            _ => {}
        }
    }
    for (name, settings) in &new.failover.services {
        let known = balancer.service(name);
        for standby in failover::standby_backends(settings) {
            if known.is_none_or(|s| !s.standbys.contains_key(&standby.address)) {
                wanted.insert(standby.address, standby);
            }
        }
    }
    let results = join_all(
        wanted
            .values()
            .map(|b| forwarding_for(neighbours, b, CHANGE_RESOLVE_TIMEOUT)),
    )
    .await;
    let mut resolved: BTreeMap<IpAddr, Option<Forwarding>> = BTreeMap::new();
    for (backend, result) in wanted.values().zip(results) {
        let forwarding = match result {
            Ok(f) => {
                note_egress(balancer.dataplane_mut(), interfaces, backend.address, &f);
                Some(f)
            }
            Err(err) => {
                log_unreachable(backend.address, &err);
                None
            }
        };
        resolved.insert(backend.address, forwarding);
    }
    resolved
}

/// Applies the plan and the failover updates, each logged; how many failed.
fn apply_plan(
    balancer: &mut Balancer,
    new: &ConfigFile,
    changes: &[Change],
    failover_updates: &[&String],
    resolved: &BTreeMap<IpAddr, Option<Forwarding>>,
) -> usize {
    let lookup = |address: &IpAddr| resolved.get(address).copied().flatten();
    let mut failed = 0;
    let apply = |balancer: &mut Balancer, change: &Change| -> usize {
        match apply_change(balancer, change, new, &lookup) {
            Ok(()) => {
                log::info!("reload: {}", describe(change));
                0
            }
            Err(err) => {
                log::error!("reload: {} failed: {err:#}", describe(change));
                1
            }
        }
    };
    // Services removed and renamed first (the plan puts them first), so the failover
    // settings below find every service under its new name.
    let named_early = changes
        .iter()
        .position(|c| !matches!(c, Change::RemoveService(_) | Change::RenameService { .. }))
        .unwrap_or(changes.len());
    for change in &changes[..named_early] {
        failed += apply(balancer, change);
    }
    // Failover settings next: backends added below then start in their checks' initial
    // state, and standbys no longer named leave before anything else changes.
    for name in failover_updates {
        let settings = failover::service_failover(new, name);
        let forwarding = |b: &Backend| lookup(&b.address);
        match balancer.set_failover(name, &settings, &forwarding) {
            Ok(()) => log::info!("reload: updated the failover settings of service {name}"),
            Err(err) => {
                failed += 1;
                log::error!(
                    "reload: updating the failover settings of service {name} failed: {err:#}"
                );
            }
        }
    }
    for change in &changes[named_early..] {
        failed += apply(balancer, change);
    }
    failed
}

/// What a reload of `total` changes, `failed` of them failed, says (and logs).
fn summarize(total: usize, failed: usize) -> Result<String, String> {
    if failed == 0 {
        let summary = format!("reload applied: {total} change(s)");
        log::info!("{summary}");
        Ok(summary)
    } else {
        let summary = format!("reload applied with {failed} failed change(s) of {total}");
        log::error!("{summary}");
        Err(summary)
    }
}

/// Applies one change of a reload plan; `lookup` gives the backends resolved for it.
fn apply_change(
    balancer: &mut Balancer,
    change: &Change,
    new: &ConfigFile,
    lookup: &dyn Fn(&IpAddr) -> Option<Forwarding>,
) -> anyhow::Result<()> {
    match change {
        Change::RemoveService(name) => balancer.remove_service(name),
        Change::RenameService { from, to } => balancer.rename_service(from, to),
        Change::UpdateServiceSettings(s) => balancer.update_service_settings(s),
        Change::AddService(s) => balancer.add_service_with_failover(
            s,
            &failover::service_failover(new, &s.name),
            &|b: &Backend| lookup(&b.address),
        ),
        Change::RemoveBackend { service, address } => balancer.remove_backend(service, *address),
        Change::AddBackend {
            service,
            pool,
            backend,
        } => balancer.add_pool_backend(service, pool, backend, lookup(&backend.address)),
        Change::AddPool { service, pool } => {
            balancer.add_pool(service, pool, &|b: &Backend| lookup(&b.address))
        }
        Change::UpdatePoolSettings { service, pool } => {
            balancer.update_pool_settings(service, pool)
        }
        Change::MoveBackend {
            service,
            address,
            pool,
        } => balancer.move_backend(service, *address, pool),
        Change::SetClients { service, clients } => balancer.set_client_rules(service, clients),
        Change::RemovePool { service, pool } => balancer.remove_pool(service, pool),
        Change::SetWeight {
            service,
            address,
            weight,
        } => balancer.set_weight(service, *address, *weight),
        Change::Remac { service, backend } => {
            balancer.set_forwarding(service, backend.address, lookup(&backend.address))
        }
        Change::SetVlan {
            service,
            address,
            vlan,
        } => balancer.set_vlan(service, *address, *vlan),
    }
}

fn describe(change: &Change) -> String {
    match change {
        Change::RemoveService(name) => format!("removed service {name}"),
        Change::RenameService { from, to } => {
            format!("renamed service {from} to {to} (its listener, backends and flows stay)")
        }
        Change::UpdateServiceSettings(s) => format!("updated the settings of service {}", s.name),
        Change::AddService(s) => format!(
            "added service {} ({}:{}/{})",
            s.name, s.vip, s.port, s.protocol
        ),
        Change::RemoveBackend { service, address } => {
            format!("removed backend {address} from {service}")
        }
        Change::AddBackend {
            service,
            pool,
            backend,
        } => format!(
            "added backend {} to {service} (pool {pool})",
            backend.address
        ),
        Change::AddPool { service, pool } => format!(
            "added pool {} to {service} ({} new backend(s))",
            pool.name,
            pool.backends.len()
        ),
        Change::UpdatePoolSettings { service, pool } => format!(
            "resized the table of pool {} of {service} to {} slots",
            pool.name, pool.maglev_size
        ),
        Change::MoveBackend {
            service,
            address,
            pool,
        } => format!("moved backend {address} of {service} to pool {pool}"),
        Change::SetClients { service, clients } => {
            format!("set the {} client rule(s) of {service}", clients.len())
        }
        Change::RemovePool { service, pool } => format!("removed pool {pool} from {service}"),
        Change::SetWeight {
            service,
            address,
            weight,
        } => format!("set the weight of {address} in {service} to {weight}"),
        Change::Remac { service, backend } => {
            format!("re-resolved backend {} of {service}", backend.address)
        }
        Change::SetVlan {
            service,
            address,
            vlan: Some(vlan),
        } => format!("backend {address} of {service} is on VLAN {vlan}"),
        Change::SetVlan {
            service, address, ..
        } => format!("backend {address} of {service} is on the service's VLAN"),
    }
}
