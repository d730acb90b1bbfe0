//! The two sides the audit compares, as plain data: what the agent means the data plane to
//! hold (`Intent`, from `balancer/audit.rs`) and what the kernel holds now (`KernelView`,
//! from `dataplane/audit.rs`), so the rules in `compare.rs` are tested without a kernel.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{DefaultHasher, Hash as _, Hasher as _},
};

use xdp_lb_common::{
    BackendOwner, BackendValue, LocalMacs, PoolValue, ServiceKey, ServiceValue, VipKey,
};

use crate::config::MacAddr;

/// What the agent means the data plane to hold, derived from the balancer's state.
#[derive(Clone, Debug, Default)]
pub struct Intent {
    pub services: Vec<ServiceIntent>,
    /// Named pools (the default pool's table is in its service's value).
    pub pools: Vec<PoolIntent>,
    /// Every server of every service (primaries and standbys), by backend id.
    pub backends: BTreeMap<u32, BackendIntent>,
    /// Every non-empty live table.
    pub tables: Vec<TableIntent>,
    /// Every service address (`vips`), each once.
    pub vips: Vec<VipIntent>,
    /// The MACs of each attached interface that `local_macs` must hold, by ifindex (an
    /// interface with more than the map holds is left out: it must have no entry).
    pub local_macs: BTreeMap<u32, LocalMacsIntent>,
    /// Interfaces the program must be attached to.
    pub interfaces: Vec<String>,
    /// Whether each interface's link must also be pinned.
    pub pinned: bool,
}

#[derive(Clone, Debug)]
pub struct ServiceIntent {
    /// `service NAME VIP:PORT/PROTO`.
    pub label: String,
    pub key: ServiceKey,
    pub value: ServiceValue,
}

#[derive(Clone, Debug)]
pub struct PoolIntent {
    /// `pool NAME of SERVICE (id N)`.
    pub label: String,
    pub id: u32,
    pub value: PoolValue,
}

#[derive(Clone, Debug)]
pub struct BackendIntent {
    /// `backend ADDRESS of SERVICE (id N)`.
    pub label: String,
    pub entry: BackendValue,
    /// Its `backend_owners` record: what the next agent adopts it by.
    pub owner: BackendOwner,
}

#[derive(Clone, Debug)]
pub struct VipIntent {
    /// `VIP ADDRESS`.
    pub label: String,
    pub key: VipKey,
}

#[derive(Clone, Debug)]
pub struct LocalMacsIntent {
    /// `interface NAME (ifindex N)`.
    pub label: String,
    /// Distinct; their order does not matter to the data plane.
    pub macs: Vec<MacAddr>,
}

#[derive(Clone, Debug)]
pub struct TableIntent {
    /// `Maglev table of SERVICE pool NAME`.
    pub label: String,
    /// First slot of the live region in `maglev_tables`.
    pub offset: u32,
    pub size: u32,
    /// The table the agent computed for it.
    pub expected: TableDigest,
}

/// A Maglev table in brief: how many slots name each backend id, and a hash of the slots in
/// order (so a table with the right counts but moved slots still differs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableDigest {
    pub slots_by_id: BTreeMap<u32, u32>,
    pub hash: u64,
}

impl TableDigest {
    pub fn of(slots: &[u32]) -> Self {
        let mut slots_by_id = BTreeMap::new();
        for id in slots {
            *slots_by_id.entry(*id).or_insert(0) += 1;
        }
        let mut hasher = DefaultHasher::new();
        slots.hash(&mut hasher);
        Self {
            slots_by_id,
            hash: hasher.finish(),
        }
    }
}

/// What the kernel holds now. Reading never fails as a whole: what cannot be read is
/// reported as such.
#[derive(Clone, Debug, Default)]
pub struct KernelView {
    /// Every key of `service_by_vip` with its value.
    pub services: HashMap<ServiceKey, ServiceValue>,
    /// Every `backends` entry that is not all zero, by id.
    pub backends: BTreeMap<u32, BackendValue>,
    /// The `backend_owners` record of every id the agent uses.
    pub owners: BTreeMap<u32, BackendOwner>,
    /// Every key of `pools` with its value.
    pub pools: BTreeMap<u32, PoolValue>,
    /// Every key of `vips`.
    pub vips: HashSet<VipKey>,
    /// The `vip_filter` bitmap (a missing word reads as zero).
    pub vip_filter_words: Vec<u64>,
    /// Every entry of `local_macs`, by ifindex.
    pub local_macs: BTreeMap<u32, LocalMacs>,
    /// The table in each intended live region, by its offset (or why it could not be read).
    pub tables: BTreeMap<u32, Result<TableDigest, String>>,
    /// The id of the agent's loaded XDP program.
    pub program_id: Option<u32>,
    /// What is attached to each configured interface.
    pub interfaces: BTreeMap<String, Attachment>,
    /// Maps that could not be read at all: (map, why).
    pub unreadable: Vec<(String, String)>,
}

/// What the kernel has at one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The XDP program attached to the interface.
    pub xdp: Attached,
    /// The program in the interface's pinned link (`None`: not looked at, unpinned agent).
    pub pinned_link: Option<Attached>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    Program(u32),
    Nothing,
    Unknown(String),
}
