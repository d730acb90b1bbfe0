//! Backups and fallback servers in the balancer. Each standby is a backend of its own (id,
//! entry, health, resolved like any backend) that no slot names until its pool's table plan
//! makes it stand in for a dead primary or serve as the fallback pool.

use std::{collections::BTreeMap, net::IpAddr};

use super::{BackendState, Balancer, Forwarding, Owner, ServiceState, Serving};
use crate::config::{Backend, DEFAULT_POOL, ServiceFailover};
use anyhow::anyhow;

impl Balancer {
    /// Applies new failover settings to a running service. Standbys named anew get an id
    /// and an entry, in their check's initial state, before any slot can name them; those
    /// no longer named leave the table before their entry is cleared and their id freed;
    /// the others keep their id and health. The table is rebuilt when who fills it changes.
    pub fn set_failover(
        &mut self,
        name: &str,
        failover: &ServiceFailover,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
    ) -> anyhow::Result<()> {
        let existing = self
            .services
            .get(name)
            .map(|s| s.standbys.clone())
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        let owner = self.state_mut(name)?.owner();
        let wanted = self.new_standbys(owner, failover, &existing, forwarding)?;
        let state = self
            .services
            .get_mut(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        let plans_before = state.table_plans();
        let removed: Vec<u32> = state
            .standbys
            .iter()
            .filter(|(address, _)| !wanted.contains_key(address))
            .map(|(_, b)| b.id)
            .collect();
        let remac: Vec<Backend> = wanted
            .values()
            .filter(|w| {
                state
                    .standbys
                    .get(&w.config.address)
                    .is_some_and(|old| old.config.mac != w.config.mac)
            })
            .map(|w| w.config.clone())
            .collect();
        // A kept standby on another VLAN now (a backup whose primaries moved): its entry
        // changes with nothing else.
        let retagged: Vec<BackendState> = wanted
            .values()
            .filter(|w| {
                state
                    .standbys
                    .get(&w.config.address)
                    .is_some_and(|old| old.entry() != w.entry())
            })
            .cloned()
            .collect();
        let key = state.key;
        state.failover = failover.clone();
        state.standbys = wanted;
        let changed = super::changed_pools(&plans_before, &state.table_plans());
        self.publish_pools(name, &changed)?;
        for id in removed {
            self.clear_backend(id)?;
            self.backend_ids.give_back(id);
        }
        for b in retagged {
            self.write_backend(&key, &b)?;
        }
        for config in remac {
            self.set_forwarding(name, config.address, forwarding(&config))?;
        }
        Ok(())
    }

    /// The standbys `failover` names: those in `existing` as they are (with the weight now
    /// configured), the others new, with an id and an entry. On an error the new ones' ids
    /// are given back.
    pub(super) fn new_standbys(
        &mut self,
        owner: Owner,
        failover: &ServiceFailover,
        existing: &BTreeMap<IpAddr, BackendState>,
        forwarding: &dyn Fn(&Backend) -> Option<Forwarding>,
    ) -> anyhow::Result<BTreeMap<IpAddr, BackendState>> {
        let mut out = BTreeMap::new();
        let mut created = Vec::new();
        for (address, role) in failover.standbys() {
            let config = failover.standby_backend(address, role);
            if let Some(old) = existing.get(&address) {
                out.insert(
                    address,
                    BackendState {
                        config,
                        ..old.clone()
                    },
                );
                continue;
            }
            let healthy = failover.initial_health(address, role).is_up();
            match self.new_backend(owner, &config, forwarding(&config), healthy) {
                Ok(state) => {
                    created.push(state.id);
                    out.insert(address, state);
                }
                Err(err) => {
                    for id in created {
                        self.forget_backend(id);
                    }
                    return Err(err.context(format!("standby {address}")));
                }
            }
        }
        Ok(out)
    }
}

/// Records where pool `pool`'s new flows go, logging a move to or from its fallback servers
/// (having nobody is logged by `publish_pool`).
pub(super) fn note_serving(name: &str, pool: &str, state: &mut ServiceState, serving: Serving) {
    let fallback = state.failover.fallback_of(pool).len();
    let is_default = pool == DEFAULT_POOL;
    let Some(target) = state.pool_mut(pool) else {
        return;
    };
    let before = target.serving;
    target.serving = serving;
    if is_default {
        state.serving = serving;
    }
    if serving == before {
        return;
    }
    let which = if is_default {
        format!("service {name}")
    } else {
        format!("service {name}, pool {pool}")
    };
    match (before, serving) {
        (_, Serving::Fallback) => log::warn!(
            "{which}: no primary is usable; new flows go to the fallback pool ({fallback} server(s))"
        ),
        (Serving::Fallback, Serving::Primaries) => {
            log::info!("{which}: a primary is back; the fallback pool gets no new flows")
        }
        _ => {}
    }
}
