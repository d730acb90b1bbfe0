//! The LB's own MACs on each interface the program is attached to, which the packet path
//! checks every frame's destination against: `local_macs_ix`, an array indexed by ifindex
//! that the agent writes through an mmap one aligned word at a time, for an ifindex below
//! `LOCAL_MACS_IX_SLOTS`; the hash map `local_macs` for a larger one.

use std::{
    collections::BTreeMap,
    mem::offset_of,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use anyhow::Context as _;
use aya::maps::MapData;
use xdp_lb_common::{
    IFINDEX_MACS_STRIDE, IfindexMacs, LOCAL_MACS_IX_SLOTS, LocalMacs, MAX_LOCAL_MACS, NO_MAC_WORD,
    map_names,
};

use super::{Dataplane, Mapping, local_macs_value};

/// The mmap-ed view of `local_macs_ix`.
pub(super) struct IfindexMacsArea {
    mapping: Mapping,
}

impl IfindexMacsArea {
    pub(super) fn map(map: MapData) -> anyhow::Result<Self> {
        let bytes = LOCAL_MACS_IX_SLOTS as usize * IFINDEX_MACS_STRIDE;
        Ok(Self {
            mapping: Mapping::new(map, bytes, map_names::LOCAL_MACS_IX)?,
        })
    }

    fn checked(&self, ifindex: u32) -> &AtomicU32 {
        let offset = ifindex as usize * IFINDEX_MACS_STRIDE + offset_of!(IfindexMacs, checked);
        // SAFETY: `ifindex` is below LOCAL_MACS_IX_SLOTS (every caller checks), so the word
        // lies in the mapping, 4-byte aligned (values are 8-byte aligned, `checked` first);
        // the data plane only reads it.
        unsafe { AtomicU32::from_ptr(self.mapping.at::<u32>(offset)) }
    }

    fn slot(&self, ifindex: u32, slot: usize) -> &AtomicU64 {
        let offset = ifindex as usize * IFINDEX_MACS_STRIDE
            + offset_of!(IfindexMacs, macs)
            + slot * std::mem::size_of::<u64>();
        // SAFETY: as in `checked`, with `slot` below MAX_LOCAL_MACS; 8-byte aligned.
        unsafe { AtomicU64::from_ptr(self.mapping.at::<u64>(offset)) }
    }

    /// The value at `ifindex`, as the data plane reads it.
    fn value(&self, ifindex: u32) -> IfindexMacs {
        IfindexMacs {
            checked: self.checked(ifindex).load(Ordering::Acquire),
            _pad: 0,
            macs: std::array::from_fn(|slot| self.slot(ifindex, slot).load(Ordering::Relaxed)),
        }
    }

    /// The MAC words registered at `ifindex`, or `None` when frames there are not checked.
    fn get(&self, ifindex: u32) -> Option<Vec<u64>> {
        let value = self.value(ifindex);
        (value.checked != 0).then(|| {
            value
                .macs
                .into_iter()
                .filter(|word| *word != NO_MAC_WORD)
                .collect()
        })
    }

    /// Makes `ifindex` check exactly the distinct MAC words `macs`, or nothing (`None`),
    /// by the stores of [`stores`], in their order.
    fn set(&self, ifindex: u32, macs: Option<&[u64]>) {
        for store in stores(&self.value(ifindex), macs) {
            match store {
                Store::Checked(value) => self.checked(ifindex).store(value, Ordering::Release),
                Store::Slot(slot, word) => self.slot(ifindex, slot).store(word, Ordering::Release),
            }
        }
    }
}

/// One aligned word written into a `local_macs_ix` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Checked(u32),
    Slot(usize, u64),
}

/// The stores that take `value` to checking exactly the distinct MAC words `macs` (at most
/// `MAX_LOCAL_MACS`), or to checking nothing (`None`), ordered so that a frame read between
/// any two of them is judged as before the change or as after it: a MAC that stays keeps
/// its slot; one that goes is emptied first, one that comes then fills an empty slot, and
/// `checked` is set last (cleared first when the interface goes, its MACs emptied after).
/// A MAC word only ever changes to or from `NO_MAC_WORD`, so even a torn word matches
/// nothing it should not. Words that already hold what they should are not written.
fn stores(value: &IfindexMacs, macs: Option<&[u64]>) -> Vec<Store> {
    let mut out = Vec::new();
    let Some(macs) = macs else {
        // An unchecked value's MACs are never read: a fresh one is left as it is.
        if value.checked != 0 {
            out.push(Store::Checked(0));
            for (slot, word) in value.macs.iter().enumerate() {
                if *word != NO_MAC_WORD {
                    out.push(Store::Slot(slot, NO_MAC_WORD));
                }
            }
        }
        return out;
    };
    let mut slots = value.macs;
    let mut kept = Vec::with_capacity(MAX_LOCAL_MACS);
    for (slot, word) in slots.iter_mut().enumerate() {
        if macs.contains(word) && !kept.contains(word) {
            kept.push(*word);
        } else if *word != NO_MAC_WORD {
            *word = NO_MAC_WORD;
            out.push(Store::Slot(slot, NO_MAC_WORD));
        }
    }
    for mac in macs.iter().filter(|mac| !kept.contains(mac)) {
        if let Some(slot) = slots.iter().position(|word| *word == NO_MAC_WORD) {
            slots[slot] = *mac;
            out.push(Store::Slot(slot, *mac));
        }
    }
    if value.checked == 0 {
        out.push(Store::Checked(1));
    }
    out
}

impl Dataplane {
    /// Brings `local_macs_ix` and `local_macs` to `wanted`: for each interface (by ifindex)
    /// the MACs frames addressed to the LB carry there (at most `MAX_LOCAL_MACS`,
    /// distinct); frames there to any other MAC are not balanced. Interfaces not in
    /// `wanted` lose their entry (and are not checked). Only the entries that differ from
    /// the last written are touched.
    pub fn sync_local_macs(&mut self, wanted: &BTreeMap<u32, Vec<[u8; 6]>>) -> anyhow::Result<()> {
        let mut values = BTreeMap::new();
        for (ifindex, macs) in wanted {
            values.insert(*ifindex, local_macs_value(*ifindex, macs)?);
        }
        let gone: Vec<u32> = self
            .local_mac_values
            .keys()
            .filter(|ifindex| !values.contains_key(ifindex))
            .copied()
            .collect();
        for ifindex in gone {
            self.write_local_macs(ifindex, None)?;
            self.local_mac_values.remove(&ifindex);
        }
        for (ifindex, value) in values {
            if self.local_mac_values.get(&ifindex) == Some(&value) {
                continue;
            }
            self.write_local_macs(ifindex, Some(&value))?;
            self.local_mac_values.insert(ifindex, value);
        }
        Ok(())
    }

    /// Writes (`None`: removes) the MACs of `ifindex` where the packet path reads them:
    /// `local_macs_ix` below `LOCAL_MACS_IX_SLOTS`, `local_macs` from there on.
    fn write_local_macs(&mut self, ifindex: u32, value: Option<&LocalMacs>) -> anyhow::Result<()> {
        if ifindex < LOCAL_MACS_IX_SLOTS {
            let macs = value.map(|v| &v.macs[..(v.count as usize).min(MAX_LOCAL_MACS)]);
            self.local_macs_ix.set(ifindex, macs);
            return Ok(());
        }
        match value {
            Some(value) => self
                .local_macs
                .insert(ifindex, *value, 0)
                .with_context(|| format!("updating local_macs for ifindex {ifindex}")),
            None => self
                .local_macs
                .remove(&ifindex)
                .with_context(|| format!("removing ifindex {ifindex} from local_macs")),
        }
    }

    /// The MACs the packet path checks on each interface, as `local_macs` values by
    /// ifindex: the registered slots of `local_macs_ix`, and the entries of `local_macs`
    /// for the ifindexes too large for it (an entry there for a smaller one is never
    /// read, and not shown). `Err` names what could not be read.
    pub(super) fn local_macs_seen(&self) -> (BTreeMap<u32, LocalMacs>, Option<String>) {
        let mut seen = BTreeMap::new();
        for ifindex in 0..LOCAL_MACS_IX_SLOTS {
            if let Some(words) = self.local_macs_ix.get(ifindex) {
                let mut value = LocalMacs {
                    count: words.len() as u32,
                    ..LocalMacs::default()
                };
                value.macs[..words.len()].copy_from_slice(&words);
                seen.insert(ifindex, value);
            }
        }
        let mut unreadable = None;
        for entry in self.local_macs.iter() {
            match entry {
                Ok((ifindex, value)) if ifindex >= LOCAL_MACS_IX_SLOTS => {
                    seen.insert(ifindex, value);
                }
                Ok(_) => {}
                Err(err) => unreadable = Some(err.to_string()),
            }
        }
        (seen, unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0x0000_0100_1b02;
    const B: u64 = 0x0000_0200_1b02;
    const C: u64 = 0x0000_0300_1b02;
    const D: u64 = 0x0000_0400_1b02;
    const E: u64 = 0x0000_0500_1b02;
    const FRESH: IfindexMacs = IfindexMacs {
        checked: 0,
        _pad: 0,
        macs: [0; MAX_LOCAL_MACS],
    };

    /// Whether the data plane takes a frame to `mac` as addressed to the LB.
    fn accepts(value: &IfindexMacs, mac: u64) -> bool {
        value.checked == 0 || value.macs.contains(&mac)
    }

    fn apply(value: &mut IfindexMacs, store: Store) {
        match store {
            Store::Checked(checked) => value.checked = checked,
            Store::Slot(slot, word) => value.macs[slot] = word,
        }
    }

    /// Takes `from` to `to` store by store, checking every state a frame may meet on the
    /// way; returns the final value.
    fn walk(from: IfindexMacs, to: Option<&[u64]>) -> IfindexMacs {
        let mut value = from;
        let before = |mac: u64| accepts(&from, mac);
        let after = |mac: u64| to.is_none_or(|macs| macs.contains(&mac));
        for store in stores(&from, to) {
            if let Store::Slot(slot, word) = store {
                let old = value.macs[slot];
                assert!(
                    old == NO_MAC_WORD || word == NO_MAC_WORD,
                    "slot {slot} goes straight from {old:#x} to {word:#x}: a torn read could \
                     match a third MAC"
                );
            }
            apply(&mut value, store);
            for mac in [A, B, C, D, E, 0x0000_0900_1b02] {
                let now = accepts(&value, mac);
                assert!(
                    now == before(mac) || now == after(mac),
                    "{mac:#x} is {} between the stores of {from:?} -> {to:?}, as neither \
                     before nor after",
                    if now { "accepted" } else { "refused" }
                );
                if before(mac) && after(mac) {
                    assert!(
                        now,
                        "{mac:#x} refused on the way although both states take it"
                    );
                }
            }
        }
        for mac in [A, B, C, D, E] {
            assert_eq!(
                accepts(&value, mac),
                after(mac),
                "{mac:#x} after the change"
            );
        }
        assert!(stores(&value, to).is_empty(), "nothing left to write");
        value
    }

    #[test]
    fn every_change_of_an_interface_s_macs_is_judged_as_before_or_as_after_at_every_store() {
        let one = walk(FRESH, Some(&[A]));
        assert_eq!(one.macs, [A, NO_MAC_WORD, NO_MAC_WORD, NO_MAC_WORD]);
        let two = walk(one, Some(&[A, B]));
        assert_eq!(two.macs[0], A, "a MAC that stays keeps its slot");
        let moved = walk(two, Some(&[B, C]));
        assert_eq!(moved.macs[1], B, "a MAC that stays keeps its slot");
        let full = walk(moved, Some(&[A, B, C, D]));
        let other = walk(full, Some(&[E]));
        let gone = walk(other, None);
        assert_eq!(gone.checked, 0);
        walk(gone, Some(&[C, D]));
        walk(FRESH, None);
        assert!(
            stores(&FRESH, None).is_empty(),
            "a fresh slot is left alone"
        );
    }
}
