//! Every map of the data plane. The agent writes all of them; the program writes only the
//! per-CPU stats.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use xdp_lb_common::{
    BPF_F_MMAPABLE, BackendOwner, BackendValue, ClientRuleKey, ClientRuleValue, Counter,
    FLOW_EVENTS_BYTES, FLOW_STATS_SLOTS, FLOW_TABLE_DEFAULT_SIZE, FLOW_TABLE_FLAGS,
    FRAGMENT_TABLE_SIZE, FlowKey, FlowValue, FragmentKey, IfindexMacs, LOCAL_MACS_IX_SLOTS,
    LocalMacs, MAX_BACKENDS, MAX_CLIENT_RULES, MAX_LOCAL_INTERFACES, MAX_POOLS, MAX_SERVICES,
    MAX_TX_PORTS, MAX_VIPS, PERSIST_TABLE_SIZE, PersistKey, PoolValue, SERVICE_CACHE_SLOTS,
    ServiceCacheEntry, ServiceKey, ServiceValue, VERDICT_STATS_SLOTS, VIP_FILTER_WORDS, VipKey,
    flow_filter_slots, vip_filter_bit,
};

/// (VIP, port, protocol) -> the service's id and its live Maglev table.
#[map(name = "service_by_vip")]
pub static SERVICE_BY_VIP: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(MAX_SERVICES, 0);

/// Each CPU's cache of `service_by_vip` lookups (see `ServiceCacheEntry`). Written by the
/// program only; never pinned: a new program starts with an empty one.
#[map(name = "service_cache")]
pub static SERVICE_CACHE: PerCpuArray<ServiceCacheEntry> =
    PerCpuArray::with_max_entries(SERVICE_CACHE_SLOTS, 0);

/// `service_epoch[0]`: bumped by the agent after every change to `service_by_vip`, which
/// makes every CPU's `service_cache` stale. Pinned with `service_by_vip`, so that a program
/// still attached while a new agent writes services sees its bumps.
#[map(name = "service_epoch")]
pub static SERVICE_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// All services' Maglev tables back to back; a slot holds a backend id. Two regions per
/// service (live and next); the agent sizes the map at load and writes it through mmap.
#[map(name = "maglev_tables")]
pub static MAGLEV_TABLES: Array<u32> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// (service id, client prefix) -> the pool its new flows go to, or `drop`: every service's
/// client rules in one LPM trie (see `ClientRuleKey`); read only for services flagged
/// `SERVICE_F_HAS_RULES`.
#[map(name = "client_rules")]
pub static CLIENT_RULES: LpmTrie<ClientRuleKey, ClientRuleValue> =
    LpmTrie::with_max_entries(MAX_CLIENT_RULES, 0);

/// Pool id -> a named pool's live Maglev table (a service's default pool is its
/// `service_by_vip` value). A hash map so the agent's update replaces a value whole.
#[map(name = "pools")]
pub static POOLS: HashMap<u32, PoolValue> = HashMap::with_max_entries(MAX_POOLS, 0);

/// Backend id -> the MACs to write and the interface to send through.
#[map(name = "backends")]
pub static BACKENDS: Array<BackendValue> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Backend id -> the (service, address) it belongs to and its health. Written and read by
/// the agent only (never on the packet path): a new agent adopting the pinned data plane
/// learns from it which backend each live id is.
#[map(name = "backend_owners")]
pub static BACKEND_OWNERS: Array<BackendOwner> = Array::with_max_entries(MAX_BACKENDS, 0);

/// ifindex -> ifindex, for backends reached through an interface other than the ingress one.
#[map(name = "tx_ports")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

/// Per service id: frames and bytes forwarded.
#[map(name = "service_stats")]
pub static SERVICE_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Per backend id: frames and bytes forwarded.
#[map(name = "backend_stats")]
pub static BACKEND_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Per `verdict::*` slot: what happened to frames, and why.
#[map(name = "verdict_stats")]
pub static VERDICT_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(VERDICT_STATS_SLOTS, 0);

/// The connection table: 5-tuple -> backend, read before the Maglev table. One LRU hash
/// with one LRU list for all CPUs (`FLOW_TABLE_FLAGS`: each CPU pops free entries from a
/// local list the kernel refills 128 at a time, so the shared lock is taken once per 128
/// new flows); sized by the agent at load.
#[map(name = "flows")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(FLOW_TABLE_DEFAULT_SIZE, FLOW_TABLE_FLAGS);

/// The flow filter (see `xdp_lb_common::FLOW_FILTER_OFF`): two halves of
/// `FLOW_FILTER_SLOTS` one-byte slots, interleaved (byte `2s + h` is slot `s` of half `h`),
/// as 8-byte words; sized by the agent at load, which reads and renews it through an mmap.
/// Not pinned: a new program's is off until its agent has walked the table into it.
#[map(name = "flow_filter")]
pub static FLOW_FILTER: Array<u64> =
    Array::with_max_entries(flow_filter_slots(0) / 4, BPF_F_MMAPABLE);

/// Slot 0: the half of `flow_filter` the packet path reads (1 or 2), or 0 (off).
#[map(name = "flow_filter_on")]
pub static FLOW_FILTER_ON: Array<u32> = Array::with_max_entries(1, 0);

/// New connection-table entries for the agent to tell its peers (flow-state sync), written
/// only while `sync_on[0]` is not 0. Not pinned: each loaded program has its own, read by
/// the agent that loaded it.
#[map(name = "flow_events")]
pub static FLOW_EVENTS: RingBuf = RingBuf::with_byte_size(FLOW_EVENTS_BYTES, 0);

/// Slot 0: whether new entries go to `flow_events` (the agent sets it with `sync:`). Not
/// pinned (set at every start).
#[map(name = "sync_on")]
pub static SYNC_ON: Array<u32> = Array::with_max_entries(1, 0);

/// Client persistence: (service, pool, masked client address) -> backend, for services with
/// `persistence` set.
#[map(name = "persistence")]
pub static PERSISTENCE: LruHashMap<PersistKey, FlowValue> =
    LruHashMap::with_max_entries(PERSIST_TABLE_SIZE, 0);

/// Each CPU's last reading of the coarse clock, and the jiffy it was read in (see
/// `flows::now_ns`). Written by the program only; not pinned.
#[map(name = "clock_cache")]
pub static CLOCK_CACHE: PerCpuArray<ClockCache> = PerCpuArray::with_max_entries(1, 0);

/// A `clock_cache` slot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ClockCache {
    /// `bpf_jiffies64()` when `ns` was read; `u64::MAX` while a run writes the slot.
    pub jiffies: u64,
    /// `bpf_ktime_get_coarse_ns()`, read in that jiffy.
    pub ns: u64,
}

/// Per `flow_stat::*` slot: what the connection table did.
#[map(name = "flow_stats")]
pub static FLOW_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(FLOW_STATS_SLOTS, 0);

/// IP datagram -> the backend (id, epoch, service) its first fragment went to, and when:
/// its later fragments, which carry no ports, follow it there. Small and short-lived
/// (`FRAGMENT_TIMEOUT_NS`); not pinned.
#[map(name = "fragments")]
pub static FRAGMENTS: LruHashMap<FragmentKey, FlowValue> =
    LruHashMap::with_max_entries(FRAGMENT_TABLE_SIZE, 0);

/// Every service address (any port, protocol, VLAN), kept by the agent with
/// `service_by_vip`: a later fragment without a known first is dropped only when it is to
/// a VIP. Not pinned (the agent rebuilds it from `service_by_vip`).
#[map(name = "vips")]
pub static VIPS: HashMap<VipKey, u32> = HashMap::with_max_entries(MAX_VIPS, 0);

/// The `vip_filter_bit` of every service's (VIP, port), kept by the agent with
/// `service_by_vip` (a bit is set before its key is written and cleared after it is
/// removed): the first read of a TCP or UDP frame, which settles every frame to an
/// (address, port) whose bit is clear (no service's, VIP or not) without a hashed lookup.
/// A set bit proves nothing (the lookups after it decide). Not pinned (rebuilt at load).
#[map(name = "vip_filter")]
pub static VIP_FILTER: Array<u64> = Array::with_max_entries(VIP_FILTER_WORDS, 0);

/// Whether (`addr`, `port`) may be a service's: its `vip_filter` bit is set.
#[inline(always)]
pub fn may_be_service(addr: &[u32; 4], family: u8, port: u16) -> bool {
    let bit = vip_filter_bit(addr, family, port);
    let word = VIP_FILTER.get(bit / 64).copied().unwrap_or(0);
    word & (1u64 << (bit % 64)) != 0
}

/// ifindex -> the MACs frames addressed to the LB carry there, for an ifindex of
/// `LOCAL_MACS_IX_SLOTS` or more (a smaller one is in `local_macs_ix`), written by the agent
/// before it attaches. A frame to another MAC is not balanced; an interface missing here is
/// not checked. Not pinned.
#[map(name = "local_macs")]
pub static LOCAL_MACS: HashMap<u32, LocalMacs> = HashMap::with_max_entries(MAX_LOCAL_INTERFACES, 0);

/// `local_macs` for an ifindex below `LOCAL_MACS_IX_SLOTS`, indexed by it: an array read,
/// where a hash map costs every frame a hashed key. The agent writes it through an mmap
/// (see `IfindexMacs`). Not pinned.
#[map(name = "local_macs_ix")]
pub static LOCAL_MACS_IX: Array<IfindexMacs> =
    Array::with_max_entries(LOCAL_MACS_IX_SLOTS, BPF_F_MMAPABLE);

#[inline(always)]
pub fn count(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and the program is not reentrant.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
