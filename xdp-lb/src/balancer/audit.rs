//! The balancer's side of the data-plane audit (`crate::audit`): what every map should hold,
//! taken from the balancer's own state (each server's `entry()`, each service's and pool's
//! value, each pool's table plan), never re-derived, so the audit follows the balancer.

use std::collections::{BTreeMap, BTreeSet};

use xdp_lb_common::{POOL_ID_DEFAULT, VipKey};

use super::{Balancer, table_plan::TablePlan};
use crate::audit::{
    BackendIntent, Intent, LocalMacsIntent, PoolIntent, ServiceIntent, TableDigest, TableIntent,
    VipIntent, key_label,
};

/// The tables the agent computed, by (service, pool), with the plan and size each was
/// built from: a Maglev table is only built again when who fills it changes.
#[derive(Default)]
pub struct ExpectedTables {
    tables: BTreeMap<(String, String), (TablePlan, u32, TableDigest)>,
}

impl ExpectedTables {
    fn digest(&mut self, service: &str, pool: &str, plan: TablePlan, size: u32) -> TableDigest {
        let key = (service.to_owned(), pool.to_owned());
        if let Some((built, built_size, digest)) = self.tables.get(&key)
            && *built == plan
            && *built_size == size
        {
            return digest.clone();
        }
        let digest = TableDigest::of(&plan.build(size));
        self.tables.insert(key, (plan, size, digest.clone()));
        digest
    }
}

impl Balancer {
    /// What the maps should hold now, and where the program should be attached.
    pub fn audit_intent(&self, expected: &mut ExpectedTables, interfaces: &[String]) -> Intent {
        let mut intent = Intent {
            interfaces: interfaces.to_vec(),
            pinned: self.dataplane.pins().is_some(),
            ..Intent::default()
        };
        let mut live = BTreeSet::new();
        for (name, s) in &self.services {
            intent.services.push(ServiceIntent {
                label: format!("service {name} {}", key_label(&s.key)),
                key: s.key,
                value: s.value(),
            });
            let vip = VipKey {
                addr: s.key.addr,
                family: s.key.family,
                _pad: [0; 3],
            };
            if !intent.vips.iter().any(|v| v.key == vip) {
                intent.vips.push(VipIntent {
                    label: format!("VIP {}", s.config.vip),
                    key: vip,
                });
            }
            for b in s.backends.values().chain(s.standbys.values()) {
                intent.backends.insert(
                    b.id,
                    BackendIntent {
                        label: format!("backend {} of {name} (id {})", b.config.address, b.id),
                        entry: b.entry(),
                        owner: b.owner(&s.key),
                    },
                );
            }
            for (pool_name, pool) in s.all_pools() {
                if pool.id != POOL_ID_DEFAULT {
                    intent.pools.push(PoolIntent {
                        label: format!("pool {pool_name} of {name} (id {})", pool.id),
                        id: pool.id,
                        value: pool.value(s.id),
                    });
                }
                let Some(offset) = pool.live_offset() else {
                    continue;
                };
                let plan = s.table_plan(pool_name);
                intent.tables.push(TableIntent {
                    label: format!("Maglev table of {name} pool {pool_name}"),
                    offset,
                    size: pool.maglev_size,
                    expected: expected.digest(name, pool_name, plan, pool.maglev_size),
                });
                live.insert((name.clone(), pool_name.to_owned()));
            }
        }
        expected.tables.retain(|key, _| live.contains(key));
        intent.local_macs = self
            .local_macs_plan()
            .into_iter()
            .filter(|(_, p)| p.fits())
            .map(|(ifindex, p)| {
                let label = format!("interface {} (ifindex {ifindex})", p.name);
                (
                    ifindex,
                    LocalMacsIntent {
                        label,
                        macs: p.macs,
                    },
                )
            })
            .collect();
        intent
    }
}
