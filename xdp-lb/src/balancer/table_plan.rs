//! Which servers fill a service's Maglev table, with backups and a fallback pool.
//!
//! * Maglev runs over the primaries that can take new flows: those usable with a weight,
//!   and those down whose backup is usable. Each is placed by its own address, so the
//!   table's shape does not depend on who is standing in.
//! * Every slot of a down primary is then given to its backup: the backup gets exactly the
//!   dead primary's slots and gives them back, slot for slot, when it recovers; no other
//!   flow moves either time. A primary whose backup is down too just leaves the table.
//! * Only when no primary is usable and no backup stands in does the table come from the
//!   usable fallback servers (each placed by its own address); the first primary back
//!   takes the table back.

use std::{collections::BTreeMap, net::IpAddr};

use crate::maglev::{self, MaglevBackend};

/// A server as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Its backend id (what the table's slots hold).
    pub id: u32,
    /// Its address (its Maglev identity).
    pub address: IpAddr,
    pub weight: u32,
    /// Resolved and healthy: its entry is valid.
    pub usable: bool,
}

/// Where a service's new flows go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// The primaries, with backups standing in for those down.
    Primaries,
    /// The fallback pool: no primary is usable.
    Fallback,
    /// Nobody: the service's frames follow `when_no_backend`.
    Nothing,
}

/// The members of one table and who stands in for whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TablePlan {
    /// Maglev's input: (id, address, weight), each placed by its address.
    pub members: Vec<(u32, IpAddr, u32)>,
    /// (down primary's id, its backup's id): the backup takes every slot of the primary.
    pub stand_ins: BTreeMap<u32, u32>,
    pub serving: Serving,
}

impl TablePlan {
    /// The plan for `primaries` (each with its backup, if it has one) and `fallback`.
    pub(crate) fn new(
        primaries: &[(Candidate, Option<Candidate>)],
        fallback: &[Candidate],
    ) -> Self {
        let mut members = Vec::new();
        let mut stand_ins = BTreeMap::new();
        for (primary, backup) in primaries {
            if primary.weight == 0 {
                continue;
            }
            match backup {
                _ if primary.usable => {}
                Some(backup) if backup.usable => {
                    stand_ins.insert(primary.id, backup.id);
                }
                _ => continue,
            }
            members.push((primary.id, primary.address, primary.weight));
        }
        let any_primary = primaries.iter().any(|(p, _)| p.usable);
        if !members.is_empty() || any_primary {
            return Self {
                members,
                stand_ins,
                serving: Serving::Primaries,
            };
        }
        let members: Vec<(u32, IpAddr, u32)> = fallback
            .iter()
            .filter(|f| f.usable && f.weight > 0)
            .map(|f| (f.id, f.address, f.weight))
            .collect();
        let serving = if members.is_empty() {
            Serving::Nothing
        } else {
            Serving::Fallback
        };
        Self {
            members,
            stand_ins,
            serving,
        }
    }

    /// The table of `size` slots (empty when nobody can take new flows).
    pub(crate) fn build(&self, size: u32) -> Vec<u32> {
        let keys: Vec<(u32, Vec<u8>, u32)> = self
            .members
            .iter()
            .map(|(id, address, weight)| (*id, super::address_key(*address), *weight))
            .collect();
        let members: Vec<MaglevBackend<'_>> = keys
            .iter()
            .map(|(id, key, weight)| MaglevBackend {
                id: *id,
                key,
                weight: *weight,
            })
            .collect();
        let mut table = maglev::build_table(&members, size);
        if !self.stand_ins.is_empty() {
            for slot in &mut table {
                if let Some(backup) = self.stand_ins.get(slot) {
                    *slot = *backup;
                }
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 65537;

    fn server(id: u32, last: u8, usable: bool) -> Candidate {
        Candidate {
            id,
            address: IpAddr::from([10, 0, 0, last]),
            weight: 1,
            usable,
        }
    }

    fn three(p1_up: bool, backup_up: bool) -> Vec<(Candidate, Option<Candidate>)> {
        vec![
            (server(1, 11, p1_up), Some(server(21, 21, backup_up))),
            (server(2, 12, true), None),
            (server(3, 13, true), None),
        ]
    }

    #[test]
    fn a_backup_takes_exactly_the_slots_of_its_dead_primary_and_gives_them_back() {
        let healthy = TablePlan::new(&three(true, true), &[]).build(M);
        let standing_in = TablePlan::new(&three(false, true), &[]).build(M);
        let primary_slots = healthy.iter().filter(|&&id| id == 1).count();
        assert!(primary_slots > 0);
        for (before, after) in healthy.iter().zip(&standing_in) {
            match before {
                1 => assert_eq!(*after, 21, "the primary's slot goes to its backup"),
                other => assert_eq!(after, other, "no other flow moves"),
            }
        }
        let recovered = TablePlan::new(&three(true, true), &[]).build(M);
        assert_eq!(recovered, healthy, "every slot comes back");
    }

    #[test]
    fn a_dead_primary_whose_backup_is_dead_too_just_leaves_the_table() {
        let plan = TablePlan::new(&three(false, false), &[]);
        assert!(plan.stand_ins.is_empty());
        let without = TablePlan::new(&three(true, true)[1..], &[]).build(M);
        assert_eq!(plan.build(M), without);
        assert_eq!(plan.serving, Serving::Primaries);
    }

    #[test]
    fn a_healthy_backup_gets_no_slot_while_its_primary_is_up() {
        let table = TablePlan::new(&three(true, true), &[]).build(M);
        assert!(!table.contains(&21));
    }

    #[test]
    fn one_backup_may_stand_in_for_several_primaries() {
        let backup = Some(server(21, 21, true));
        let primaries = [
            (server(1, 11, false), backup),
            (server(2, 12, false), backup),
            (server(3, 13, true), None),
        ];
        let healthy = TablePlan::new(
            &[
                (server(1, 11, true), None),
                (server(2, 12, true), None),
                (server(3, 13, true), None),
            ],
            &[],
        )
        .build(M);
        let table = TablePlan::new(&primaries, &[]).build(M);
        for (before, after) in healthy.iter().zip(&table) {
            assert_eq!(*after, if *before == 3 { 3 } else { 21 });
        }
    }

    #[test]
    fn a_drained_primary_gets_no_stand_in() {
        let mut primaries = three(false, true);
        primaries[0].0.weight = 0;
        let plan = TablePlan::new(&primaries, &[]);
        assert!(plan.stand_ins.is_empty() && !plan.build(M).contains(&21));
    }

    #[test]
    fn the_fallback_pool_serves_only_while_no_primary_is_usable() {
        let fallback = [server(31, 31, true), server(32, 32, true)];
        let all_down = [(server(1, 11, false), None), (server(2, 12, false), None)];
        let plan = TablePlan::new(&all_down, &fallback);
        assert_eq!(plan.serving, Serving::Fallback);
        let table = plan.build(M);
        assert!(table.iter().all(|id| *id == 31 || *id == 32));
        assert!(table.contains(&31) && table.contains(&32));

        let one_back = [(server(1, 11, true), None), (server(2, 12, false), None)];
        let plan = TablePlan::new(&one_back, &fallback);
        assert_eq!(plan.serving, Serving::Primaries);
        assert!(
            plan.build(M).iter().all(|id| *id == 1),
            "the first primary back takes the table back"
        );
    }

    #[test]
    fn a_backup_standing_in_keeps_the_fallback_pool_out() {
        let primaries = [
            (server(1, 11, false), Some(server(21, 21, true))),
            (server(2, 12, false), None),
        ];
        let plan = TablePlan::new(&primaries, &[server(31, 31, true)]);
        assert_eq!(plan.serving, Serving::Primaries);
        assert!(plan.build(M).iter().all(|id| *id == 21));
    }

    #[test]
    fn with_nothing_usable_the_table_is_empty() {
        let plan = TablePlan::new(
            &[(server(1, 11, false), Some(server(21, 21, false)))],
            &[server(31, 31, false)],
        );
        assert_eq!(plan.serving, Serving::Nothing);
        assert!(plan.build(M).is_empty());
        assert_eq!(TablePlan::new(&[], &[]).serving, Serving::Nothing);
    }

    #[test]
    fn usable_primaries_that_are_all_drained_keep_the_fallback_pool_out() {
        let mut drained = server(1, 11, true);
        drained.weight = 0;
        let plan = TablePlan::new(&[(drained, None)], &[server(31, 31, true)]);
        assert_eq!(plan.serving, Serving::Primaries);
        assert!(plan.build(M).is_empty());
    }
}
