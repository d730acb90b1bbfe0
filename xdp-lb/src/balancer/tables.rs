//! Building a pool's table and switching it in, reading live tables back, and predicting
//! which backend a new flow gets.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, anyhow};
use xdp_lb_common::{SERVICE_F_PASS_WHEN_EMPTY, addr_words, flow_hash, source_hash};

use super::{Balancer, standby, table_plan::TablePlan};
use crate::config::{ClientAction, DEFAULT_POOL, HashMode};

/// Slots per backend id in `table`.
fn slot_counts(table: &[u32]) -> BTreeMap<u32, u32> {
    let mut counts = BTreeMap::new();
    for id in table {
        *counts.entry(*id).or_insert(0) += 1;
    }
    counts
}

/// Logs each member with a weight that gets no slot of the new table (a light weight among
/// heavy ones in a small table), once when it happens and once when it ends.
fn note_starved(
    service: &str,
    pool: &str,
    plan: &TablePlan,
    before: &BTreeMap<u32, u32>,
    after: &BTreeMap<u32, u32>,
    size: u32,
) {
    let had_slots = |counts: &BTreeMap<u32, u32>, id: &u32| counts.get(id).is_some_and(|n| *n > 0);
    for (id, address, weight) in &plan.members {
        let stood_in = plan.stand_ins.contains_key(id);
        if stood_in {
            continue;
        }
        match (
            had_slots(before, id) || before.is_empty(),
            had_slots(after, id),
        ) {
            (true, false) => log::warn!(
                "service {service}, pool {pool}: backend {address} (weight {weight}) gets no slot of the {size}-slot Maglev table, so no new flow: raise its weight or maglev_size"
            ),
            (false, true) => log::info!(
                "service {service}, pool {pool}: backend {address} has slots in the Maglev table again"
            ),
            _ => {}
        }
    }
}

impl Balancer {
    /// Builds the default pool's table from its current backends and makes it live.
    pub(super) fn publish(&mut self, name: &str) -> anyhow::Result<()> {
        self.publish_pool(name, DEFAULT_POOL)
    }

    pub(super) fn publish_pools(&mut self, service: &str, pools: &[String]) -> anyhow::Result<()> {
        for pool in pools {
            self.publish_pool(service, pool)?;
        }
        Ok(())
    }

    /// Builds pool `pool`'s table from its current servers and makes it live: written into
    /// its region that is not live, then its value replaced whole.
    pub(super) fn publish_pool(&mut self, name: &str, pool: &str) -> anyhow::Result<()> {
        let state = self
            .services
            .get_mut(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        let plan = state.table_plan(pool);
        let service_id = state.id;
        standby::note_serving(name, pool, state, plan.serving);
        state.generation = state.generation.wrapping_add(1);
        let target = state
            .pool_mut(pool)
            .ok_or_else(|| anyhow!("service {name} has no pool {pool}"))?;
        let table = plan.build(target.maglev_size);
        target.generation = target.generation.wrapping_add(1);
        let slots = slot_counts(&table);
        note_starved(name, pool, &plan, &target.slots, &slots, target.maglev_size);
        target.slots = slots;
        if table.is_empty() {
            target.live = None;
        } else {
            let next = match target.live {
                Some(live) => 1 - live,
                None => 0,
            };
            self.dataplane
                .write_table(target.regions[next], &table)
                .with_context(|| format!("writing the Maglev table of {name} pool {pool}"))?;
            target.live = Some(next);
        }
        let id = target.id;
        let pool_value = target.value(service_id);
        let has_servers =
            !target.primaries.is_empty() || !state.failover.fallback_of(pool).is_empty();
        if table.is_empty() {
            let action = if state.flags() & SERVICE_F_PASS_WHEN_EMPTY == 0 {
                "dropped"
            } else {
                "passed to the host"
            };
            if pool == DEFAULT_POOL {
                log::error!(
                    "service {} ({}:{}/{}) has no usable backend: its frames are {action}",
                    name,
                    state.config.vip,
                    state.config.port,
                    state.config.protocol,
                );
            } else if has_servers {
                log::error!(
                    "service {name}, pool {pool} has no usable backend: its clients' new flows are {action}"
                );
            } else {
                log::warn!(
                    "service {name}, pool {pool} has no server: its clients' new flows are {action}"
                );
            }
        }
        if pool == DEFAULT_POOL {
            let value = state.value();
            self.dataplane.set_service(state.key, value)
        } else {
            self.dataplane.set_pool(id, pool_value)
        }
    }

    /// The live table of a service's default pool (empty while it has no backend).
    pub fn live_table(&self, name: &str) -> anyhow::Result<Vec<u32>> {
        self.live_pool_table(name, DEFAULT_POOL)
    }

    /// The live table of pool `pool` of a service (empty while it has no backend).
    pub fn live_pool_table(&self, name: &str, pool: &str) -> anyhow::Result<Vec<u32>> {
        let state = self
            .services
            .get(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        let target = state
            .pool(pool)
            .ok_or_else(|| anyhow!("service {name} has no pool {pool}"))?;
        match target.live {
            Some(live) => self
                .dataplane
                .read_table(target.regions[live], target.maglev_size),
            None => Ok(Vec::new()),
        }
    }

    /// The backend the data plane picks for a new flow from `client`:`client_port` to the
    /// service, computed in userspace from the same rules, hash and live tables (`None`:
    /// no backend, or a rule refuses the client).
    pub fn predict(
        &self,
        name: &str,
        client: IpAddr,
        client_port: u16,
    ) -> anyhow::Result<Option<IpAddr>> {
        let state = self
            .services
            .get(name)
            .ok_or_else(|| anyhow!("no service named {name}"))?;
        let pool = match state.client_rule(client) {
            Some((_, ClientAction::Drop)) => return Ok(None),
            Some((_, ClientAction::Pool(pool))) => pool.as_str(),
            None => DEFAULT_POOL,
        };
        let Some(target) = state.pool(pool) else {
            return Ok(None);
        };
        let Some(live) = target.live else {
            return Ok(None);
        };
        let hash = match state.config.hash {
            HashMode::Source if client.is_ipv4() == state.config.vip.is_ipv4() => Some(
                source_hash(&addr_words(client), client.is_ipv4(), self.flow_hash_seed),
            ),
            HashMode::Source => None,
            HashMode::Flow => flow_hash(
                client,
                client_port,
                state.config.vip,
                state.config.port,
                state.config.protocol.number(),
                self.flow_hash_seed,
            ),
        }
        .ok_or_else(|| {
            anyhow!(
                "client {client} and VIP {} are of different families",
                state.config.vip
            )
        })?;
        let slot = target.regions[live] + hash % target.maglev_size;
        let id = self.dataplane.read_table(slot, 1)?.first().copied();
        Ok(state
            .backends
            .values()
            .chain(state.standbys.values())
            .find(|b| Some(b.id) == id)
            .map(|b| b.config.address))
    }
}

/// The pools whose plans differ between `before` and `after` (pools in only one of them
/// are not: they are being added or removed, which publishes them).
pub(super) fn changed_pools(
    before: &BTreeMap<String, TablePlan>,
    after: &BTreeMap<String, TablePlan>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(name, plan)| before.get(*name).is_some_and(|old| old != *plan))
        .map(|(name, _)| name.clone())
        .collect()
}
