//! The flow filter (see `xdp_lb_common::FLOW_FILTER_OFF`): the agent's side. The data plane
//! sets a flow's slot in both halves of `flow_filter` right after it makes the flow's
//! entry; the agent does the same for the entries it writes itself (peers' entries, moved
//! ones), turns the filter on once it has walked the table into a half, and renews the
//! other half the same way before it switches to it, so slots of entries long gone clear.
//!
//! The promise the packet path relies on: while the filter is on, every entry in the table
//! has its slot set in the half being read. A renewal keeps it:
//!
//! 1. The half to renew was cleared at the end of the previous renewal (for the first, it is
//!    the fresh map's), a whole [`RENEW_INTERVAL`] ago, and since then every entry made set
//!    its slot there too.
//! 2. The table is walked and every entry's slot set in that half. An entry made since the
//!    clear set its own (a slot a clear wiped belongs to an entry made before the clear,
//!    which is in the table during the walk); one made before is walked.
//! 3. `flow_filter_on` names that half.
//! 4. After [`GRACE`] (far longer than any program run that read the old half's number), the
//!    other half is cleared: it is the next one renewed.
//!
//! The first renewal waits [`GRACE`] after the program is attached, so that an earlier
//! program's entries (it sets slots in its own filter, not in this one) are all in the
//! table when it walks. Every write is a byte store: the data plane's two-byte store of a
//! slot pair and the agent's stores of single slots never undo one another.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, HashMap, MapData};
use xdp_lb_common::{
    FLOW_FILTER_OFF, FLOW_FILTER_SET, FlowKey, FlowValue, flow_filter_slot, map_names,
};

use super::Mapping;
pub use crate::control::protocol::FlowFilterStatus;

/// How long the agent waits after the attach before the first renewal, and after switching
/// halves before it clears the old one: longer than any run of the program.
pub const GRACE: Duration = Duration::from_secs(1);
/// How often the filter is renewed (each renewal walks the whole connection table).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(60);

/// The flow filter's two halves (mmap-ed) and the switch naming the one read.
pub struct FlowFilter {
    bytes: Mapping,
    /// Slots of each half.
    slots: u32,
    seed: u32,
    on: Mutex<Array<MapData, u32>>,
    renewed: Mutex<Option<Renewal>>,
}

/// What the last renewal did.
#[derive(Clone, Copy, Debug)]
struct Renewal {
    at: Instant,
    entries: usize,
}

impl FlowFilter {
    pub(super) fn new(
        bytes: MapData,
        on: Array<MapData, u32>,
        slots: u32,
        seed: u32,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            bytes: Mapping::new(bytes, 2 * slots as usize, map_names::FLOW_FILTER)?,
            slots,
            seed,
            on: Mutex::new(on),
            renewed: Mutex::new(None),
        })
    }

    /// Slot `slot` of half `half`.
    fn slot(&self, half: u32, slot: u32) -> &AtomicU8 {
        // The halves' slots alternate (as the data plane reads them).
        let offset = slot as usize * 2 + half as usize;
        // SAFETY: `half` is 0 or 1 and `slot` below `slots` (every caller), so the byte lies
        // in the mapping; the data plane only stores whole bytes there too.
        unsafe { AtomicU8::from_ptr(self.bytes.at::<u8>(offset)) }
    }

    fn key_slot(&self, key: &FlowKey) -> u32 {
        flow_filter_slot(key, self.seed, self.slots)
    }

    /// Sets the key's slot in both halves, for an entry the agent writes into the
    /// connection table, after the write (as the data plane does).
    pub fn mark(&self, key: &FlowKey) {
        let slot = self.key_slot(key);
        self.slot(0, slot).store(FLOW_FILTER_SET, Ordering::SeqCst);
        self.slot(1, slot).store(FLOW_FILTER_SET, Ordering::SeqCst);
    }

    /// The half the packet path reads (1 or 2), or 0 (off).
    pub fn half(&self) -> u32 {
        self.on
            .lock()
            .ok()
            .and_then(|on| on.get(&0, 0).ok())
            .unwrap_or(FLOW_FILTER_OFF)
    }

    fn set_half(&self, half: u32) -> anyhow::Result<()> {
        self.on
            .lock()
            .map_err(|_| anyhow!("the flow filter's switch lock is poisoned"))?
            .set(0, half, 0)
            .with_context(|| format!("setting {}", map_names::FLOW_FILTER_ON))
    }

    /// Walks `flows` into the half not read, switches the packet path to it, and after
    /// [`GRACE`] clears the other one (see the module's doc). Blocks for the walk and the
    /// grace: run it on a thread of its own.
    pub fn renew(&self, flows: &HashMap<MapData, FlowKey, FlowValue>) -> anyhow::Result<usize> {
        let target = if self.half() == 1 { 1 } else { 0 };
        let mut entries = 0;
        for key in flows.keys() {
            // A walk cut short would switch to a half missing entries: nothing is switched.
            let key = key.context("walking the connection table into the flow filter")?;
            self.slot(target, self.key_slot(&key))
                .store(FLOW_FILTER_SET, Ordering::SeqCst);
            entries += 1;
        }
        self.set_half(target + 1)?;
        if let Ok(mut renewed) = self.renewed.lock() {
            *renewed = Some(Renewal {
                at: Instant::now(),
                entries,
            });
        }
        std::thread::sleep(GRACE);
        let other = 1 - target;
        for slot in 0..self.slots {
            self.slot(other, slot).store(0, Ordering::Relaxed);
        }
        Ok(entries)
    }

    pub fn status(&self) -> FlowFilterStatus {
        let half = self.half();
        let set = if half == FLOW_FILTER_OFF {
            0
        } else {
            (0..self.slots)
                .filter(|slot| self.slot((half - 1) & 1, *slot).load(Ordering::Relaxed) != 0)
                .count() as u64
        };
        let renewed = self.renewed.lock().ok().and_then(|r| *r);
        FlowFilterStatus {
            half,
            slots: self.slots,
            set,
            renewed_s_ago: renewed.map(|r| r.at.elapsed().as_secs()),
            renewed_entries: renewed.map(|r| r.entries),
        }
    }
}

/// Renews `filter` from `flows` for the agent's whole life: first after [`GRACE`], then
/// every [`RENEW_INTERVAL`]. A failed renewal leaves the filter as it was (still true: no
/// slot was cleared) and is logged.
pub fn keep_renewed(
    filter: std::sync::Arc<FlowFilter>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("flow-filter".to_owned())
        .spawn(move || {
            std::thread::sleep(GRACE);
            loop {
                match filter.renew(&flows) {
                    Ok(entries) => {
                        log::debug!("flow filter renewed from {entries} connection-table entries")
                    }
                    Err(err) => log::error!("flow filter: {err:#}"),
                }
                std::thread::sleep(RENEW_INTERVAL.saturating_sub(GRACE));
            }
        })
        .context("starting the flow filter's thread")?;
    Ok(())
}
