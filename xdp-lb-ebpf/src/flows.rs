//! The connection table and client persistence: a flow keeps its backend while that
//! backend stays usable, whatever happens to the Maglev table.

use core::{
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{
    Global,
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    maps::LruHashMap,
};
use xdp_lb_common::{
    BACKEND_F_NO_NEW, BACKEND_F_VALID, BackendValue, FLOW_F_FIN, FLOW_F_LEARNT, FLOW_F_RST,
    FLOW_FILTER_OFF, FLOW_FILTER_SET_BOTH, FLOW_TOUCH_INTERVAL_NS, FRAGMENT_TIMEOUT_NS, FlowEvent,
    FlowKey, FlowValue, FragmentKey, PROTO_TCP, PersistKey, ServiceValue, flow_filter_slot,
    flow_filter_slots, flow_stat,
};

use crate::{
    maps::{
        BACKENDS, CLOCK_CACHE, FLOW_EVENTS, FLOW_FILTER, FLOW_FILTER_ON, FLOW_STATS, FLOWS,
        FRAGMENTS, PERSISTENCE, SYNC_ON, count,
    },
    parse::Flow,
};

/// Idle timeouts in ns, set by the agent at load from the config.
#[unsafe(no_mangle)]
static FLOW_TCP_TIMEOUT_NS: Global<u64> = Global::new(900_000_000_000);
#[unsafe(no_mangle)]
static FLOW_UDP_TIMEOUT_NS: Global<u64> = Global::new(300_000_000_000);
#[unsafe(no_mangle)]
static FLOW_TCP_FIN_TIMEOUT_NS: Global<u64> = Global::new(120_000_000_000);
#[unsafe(no_mangle)]
static FLOW_TCP_CLOSE_TIMEOUT_NS: Global<u64> = Global::new(10_000_000_000);

/// Slots of each half of `flow_filter`, set by the agent at load.
#[unsafe(no_mangle)]
static FLOW_FILTER_SLOTS: Global<u32> = Global::new(flow_filter_slots(0));

/// The key's two slots in `flow_filter` (half 0's byte, then half 1's): their word, and
/// the byte offset of the pair in it.
#[inline(always)]
fn filter_slots(key: &FlowKey) -> Option<(*mut u8, usize)> {
    let slots = FLOW_FILTER_SLOTS.load();
    let slot = flow_filter_slot(key, crate::FLOW_HASH_SEED.load(), slots);
    // Four slot pairs per 8-byte word.
    let word = FLOW_FILTER.get_ptr_mut(slot / 4)?;
    Some((word.cast::<u8>(), (slot % 4) as usize * 2))
}

/// Whether a packet skips the connection table's lookup: one that makes no entry (a TCP
/// SYN or RST, see `remembers`) whose flow the filter shows to have none. A packet that
/// makes one looks the table up whatever the filter says, without reading it: its entry's
/// insert walks the same bucket the lookup warms, so skipping the lookup saves it nothing.
#[inline(always)]
pub fn skips_table(key: &FlowKey, flow: &Flow) -> bool {
    if remembers(flow) || may_be_known(key) {
        return false;
    }
    count(&FLOW_STATS, flow_stat::FILTER_SKIP, 0);
    true
}

/// Whether the connection table may hold the key's entry: `false` only when the flow
/// filter is on and the key's slot is clear, which no entry the table holds leaves it.
#[inline(always)]
fn may_be_known(key: &FlowKey) -> bool {
    let on = FLOW_FILTER_ON.get(0).copied().unwrap_or(FLOW_FILTER_OFF);
    if on == FLOW_FILTER_OFF {
        return true;
    }
    let Some((word, pair)) = filter_slots(key) else {
        return true;
    };
    let byte = pair + ((on - 1) & 1) as usize;
    // SAFETY: `byte` is below 8: inside the map value, valid for the program run.
    unsafe { *word.add(byte) != 0 }
}

/// Sets the key's slot in both halves of the flow filter (one two-byte store), right after
/// its entry is made: before, the insert's locked operations would wait for this store to
/// a cold line. The agent clears a half a whole renewal interval before it walks the table
/// into it, so an entry whose slot a clear wiped is in the table by that walk.
#[inline(always)]
fn mark_known(key: &FlowKey) {
    if let Some((word, pair)) = filter_slots(key) {
        // SAFETY: `pair` is 0, 2, 4 or 6: the two bytes lie inside the map value, 2-byte
        // aligned. A plain store: it sets both bytes whatever they held, and other CPUs
        // write only other bytes.
        unsafe { core::ptr::write_volatile(word.add(pair).cast::<u16>(), FLOW_FILTER_SET_BOTH) };
    }
}

/// The coarse clock (a jiffy's resolution), which is plenty for idle timeouts of seconds and
/// costs a fraction of the precise one: read once a jiffy per CPU. The coarse clock moves
/// only at a tick, where the jiffies counter does, and `bpf_jiffies64` is no call (the
/// verifier turns it into a load), where `bpf_ktime_get_coarse_ns` is a helper call and
/// a call further (on a CPU whose kernel returns through a thunk, a good part of a hit).
/// So a CPU keeps its last reading with the jiffy it was read in, and reads the clock again
/// only when the jiffy has moved. A reading taken in the microseconds between a tick's
/// jiffies update and its clock update is a tick old, and is kept for that tick: the
/// readings lag the clock by two ticks at most (the agent's `COARSE_CLOCK_LAG_NS`).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: plain helper calls (the first is inlined by the verifier).
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(cache) = CLOCK_CACHE.get_ptr_mut(0) else {
        // SAFETY: as above.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's slot, valid for the program run; only runs on this CPU write it.
    // A run interrupting another's write finds `jiffies` at `u64::MAX` (no jiffy matches),
    // reads the clock and writes a pair of its own; the interrupted run then writes its own
    // pair over it, a consistent one (both words from that run).
    unsafe {
        if read_volatile(addr_of!((*cache).jiffies)) == jiffies {
            compiler_fence(Ordering::SeqCst);
            return read_volatile(addr_of!((*cache).ns));
        }
        let ns = bpf_ktime_get_coarse_ns();
        write_volatile(addr_of_mut!((*cache).jiffies), u64::MAX);
        compiler_fence(Ordering::SeqCst);
        write_volatile(addr_of_mut!((*cache).ns), ns);
        compiler_fence(Ordering::SeqCst);
        write_volatile(addr_of_mut!((*cache).jiffies), jiffies);
        ns
    }
}

/// The clock for a new flow's placement, read only when something is remembered (the
/// connection table's entry, the client's persistence, a first fragment's backend); 0 for
/// a SYN (or RST) of a service without persistence, which remembers nothing.
#[inline(always)]
pub fn now_if_needed(flow: &Flow, service: &ServiceValue) -> u64 {
    if remembers(flow) || service.persist_timeout_s != 0 || flow.fragment_id.is_some() {
        now_ns()
    } else {
        0
    }
}

#[inline(always)]
pub fn flow_key(flow: &Flow) -> FlowKey {
    FlowKey {
        src: flow.src,
        dst: flow.service.addr,
        ports: flow.ports,
        proto: flow.service.proto,
        family: flow.service.family,
        vlan: flow.service.vlan,
    }
}

/// The idle timeout of an entry: its protocol's, or a closing TCP flow's (never longer than
/// an open one's).
#[inline(always)]
fn timeout_ns(proto: u8, flags: u32) -> u64 {
    if proto != PROTO_TCP {
        return FLOW_UDP_TIMEOUT_NS.load();
    }
    let open = FLOW_TCP_TIMEOUT_NS.load();
    let closing = if flags & FLOW_F_RST != 0 {
        FLOW_TCP_CLOSE_TIMEOUT_NS.load()
    } else if flags & FLOW_F_FIN != 0 {
        FLOW_TCP_FIN_TIMEOUT_NS.load()
    } else {
        open
    };
    if closing < open { closing } else { open }
}

/// The `FLOW_F_*` closing state a TCP segment's FIN or RST puts its flow in.
#[inline(always)]
fn closing_flags(flow: &Flow) -> u32 {
    let mut flags = 0;
    if flow.fin() {
        flags |= FLOW_F_FIN;
    }
    if flow.rst() {
        flags |= FLOW_F_RST;
    }
    flags
}

/// The backend a remembered entry names, if it may still be used: by a packet of the
/// connection it remembers, or (`new_conn`) by a new connection, which a backend taking no
/// new ones (drained, or down with its flows kept) must not get.
#[inline(always)]
fn usable(entry: &FlowValue, new_conn: bool) -> Option<BackendValue> {
    let backend = *BACKENDS.get(entry.backend_id)?;
    let refused = if new_conn { BACKEND_F_NO_NEW } else { 0 };
    (backend.flags & (BACKEND_F_VALID | refused) == BACKEND_F_VALID
        && backend.epoch == entry.backend_epoch)
        .then_some(backend)
}

/// How long an entry may go untouched: the touch interval, or half the timeout when that is
/// shorter, so an entry with packets more often than its timeout never expires.
#[inline(always)]
fn touch_after(timeout: u64) -> u64 {
    let half = timeout / 2;
    if half < FLOW_TOUCH_INTERVAL_NS {
        half
    } else {
        FLOW_TOUCH_INTERVAL_NS
    }
}

/// The backend of an entry that is neither idle past `timeout` nor unusable; counts why
/// not otherwise.
#[inline(always)]
fn fresh(value: &FlowValue, now: u64, timeout: u64, new_conn: bool) -> Option<BackendValue> {
    // Another CPU may have touched the entry with a later clock reading than ours: that
    // is no idleness at all (a wrapping difference would read as ages).
    if now.saturating_sub(value.last_seen_ns) > timeout {
        count(&FLOW_STATS, flow_stat::EXPIRED, 0);
        return None;
    }
    let backend = usable(value, new_conn);
    if backend.is_none() {
        count(&FLOW_STATS, flow_stat::STALE, 0);
    }
    backend
}

/// Rewrites an entry's last-seen time when it is due.
#[inline(always)]
fn touch(entry: *mut FlowValue, value: &FlowValue, now: u64, timeout: u64) {
    if now.saturating_sub(value.last_seen_ns) > touch_after(timeout) {
        // SAFETY: LRU entries stay valid (RCU) for the whole program run; a racing writer
        // can only store another recent time.
        unsafe { (*entry).last_seen_ns = now };
    }
}

/// The flow's remembered service id, backend id and backend, if that backend is still
/// usable, and the clock read to judge it: a TCP SYN (a new connection on a reused
/// 5-tuple) only while its backend takes new connections. A FIN or RST moves the entry to
/// its short timeout; a SYN reusing the 5-tuple opens it again. Nothing here costs more
/// than the one lookup on a hit, and a miss reads no clock.
#[inline(always)]
pub fn lookup_flow(key: &FlowKey, flow: &Flow) -> Option<(u32, u32, BackendValue, u64)> {
    let entry = FLOWS.get_ptr_mut(key)?;
    let now = now_ns();
    // SAFETY: LRU entries stay valid (RCU) for the whole program run.
    let value = unsafe { *entry };
    let syn = flow.syn();
    let timeout = timeout_ns(key.proto, value.flags);
    let Some(backend) = fresh(&value, now, timeout, syn) else {
        if syn {
            // The new connection is placed by the table alone until its ACK; an entry left
            // here would send that ACK to the old backend.
            let _ = FLOWS.remove(key);
        }
        return None;
    };
    // A packet of the flow here makes a learnt entry this LB's own (see FLOW_F_LEARNT).
    let flags = if syn {
        0
    } else {
        (value.flags | closing_flags(flow)) & !FLOW_F_LEARNT
    };
    if flags != value.flags {
        if flags & !value.flags != 0 {
            count(&FLOW_STATS, flow_stat::CLOSED, 0);
        }
        // SAFETY: as above; only FIN, RST and SYN segments (and a learnt entry's first
        // packet here) ever write here.
        unsafe { (*entry).flags = flags };
    }
    touch(entry, &value, now, timeout);
    count(&FLOW_STATS, flow_stat::HIT, 0);
    Some((value.service_id, value.backend_id, backend, now))
}

/// The backend a live entry of `map` names, read only: no touch, no count (an ICMP error
/// about a flow is no sign of the flow's life).
#[inline(always)]
fn peek<K>(
    map: &LruHashMap<K, FlowValue>,
    key: &K,
    now: u64,
    timeout: impl Fn(&FlowValue) -> u64,
) -> Option<FlowValue> {
    // SAFETY: LRU entries stay valid (RCU) for the whole program run; copied out at once.
    let value = unsafe { *map.get_ptr(key)? };
    (now.saturating_sub(value.last_seen_ns) <= timeout(&value)).then_some(value)
}

/// The flow's remembered service id, backend id and backend, as `lookup_flow` but read
/// only.
#[inline(always)]
pub fn peek_flow(key: &FlowKey, now: u64) -> Option<(u32, u32, BackendValue)> {
    let value = peek(&FLOWS, key, now, |v| timeout_ns(key.proto, v.flags))?;
    let backend = usable(&value, false)?;
    Some((value.service_id, value.backend_id, backend))
}

/// The client's persistent backend, as `lookup_persistent` but read only.
#[inline(always)]
pub fn peek_persistent(
    key: &PersistKey,
    service: &ServiceValue,
    now: u64,
) -> Option<(u32, BackendValue)> {
    let timeout = service.persist_timeout_s as u64 * 1_000_000_000;
    let value = peek(&PERSISTENCE, key, now, |_| timeout)?;
    Some((value.backend_id, usable(&value, true)?))
}

/// The backend a datagram's first fragment went to, if it is fresh and still usable.
#[inline(always)]
pub fn fragment_backend(key: &FragmentKey, now: u64) -> Option<(u32, u32, BackendValue)> {
    let value = peek(&FRAGMENTS, key, now, |_| FRAGMENT_TIMEOUT_NS)?;
    let backend = usable(&value, false)?;
    Some((value.service_id, value.backend_id, backend))
}

/// Remembers where a datagram's first fragment went, for its later fragments.
#[inline(always)]
pub fn remember_fragment(
    key: &FragmentKey,
    service_id: u32,
    backend_id: u32,
    backend: &BackendValue,
    now: u64,
) {
    // A full table evicts its oldest entry; a failure costs the later fragments, which are
    // then dropped and counted.
    let _ = FRAGMENTS.insert(key, entry(service_id, backend_id, backend, 0, now), 0);
}

/// Whether a flow without an entry gets one now. Not a TCP SYN: the entry is created by
/// the handshake's ACK, which a spoofed SYN never sends, so a SYN flood cannot evict the
/// entries of established streams; a SYN (and its retransmissions) goes where the Maglev
/// table says, as its ACK will while the table is unchanged. Not a RST either: nothing
/// follows it.
#[inline(always)]
pub fn remembers(flow: &Flow) -> bool {
    !(flow.syn() || flow.rst())
}

/// Counts a TCP segment of a service that found no usable entry although it is not a
/// connection's first: a connection's handshake-completing ACK, or a flow whose entry was
/// evicted (or that began before the table).
#[inline(always)]
pub fn count_miss(flow: &Flow) {
    if flow.service.proto == PROTO_TCP && !flow.syn() {
        count(&FLOW_STATS, flow_stat::TCP_MISS_NO_SYN, 0);
    }
}

fn entry(
    service_id: u32,
    backend_id: u32,
    backend: &BackendValue,
    flags: u32,
    now: u64,
) -> FlowValue {
    FlowValue {
        backend_id,
        backend_epoch: backend.epoch,
        service_id,
        flags,
        last_seen_ns: now,
    }
}

/// Remembers the backend chosen for a new flow of service `service_id`, unless the packet
/// is one that creates no entry (see `remembers`).
#[inline(always)]
pub fn remember_flow(
    key: &FlowKey,
    flow: &Flow,
    service_id: u32,
    backend_id: u32,
    backend: &BackendValue,
    now: u64,
) {
    if !remembers(flow) {
        if flow.syn() {
            count(&FLOW_STATS, flow_stat::SYN_NOT_REMEMBERED, 0);
        }
        return;
    }
    let value = entry(service_id, backend_id, backend, closing_flags(flow), now);
    // A full table evicts its least recently used entry; a failure only costs stickiness.
    let _ = FLOWS.insert(key, value, 0);
    mark_known(key);
    count(&FLOW_STATS, flow_stat::NEW, 0);
    if SYNC_ON.get(0).is_some_and(|on| *on != 0) {
        hand_to_agent(key, &value);
    }
}

/// Hands a new entry to the agent for its peers (flow-state sync). A full ring costs the
/// peers this entry until the agent's next refresh of live entries. No wake-up: the agent
/// reads the ring every 10 ms (its batching delay), where a wake-up per record would cost
/// every new flow an interrupt whenever the agent keeps up (+10 to 17 µs measured).
#[inline(always)]
fn hand_to_agent(key: &FlowKey, value: &FlowValue) {
    // Written in place in the ring (no copy on the stack, where the verifier's limit for
    // three frames is nearly used up on this path).
    let slot = match FLOW_EVENTS.reserve::<FlowEvent>(0) {
        Some(mut entry) => {
            entry.write(FlowEvent {
                key: *key,
                backend_id: value.backend_id,
                service_id: value.service_id,
                flags: value.flags,
                _pad: 0,
            });
            entry.submit(u64::from(BPF_RB_NO_WAKEUP));
            flow_stat::SYNC_QUEUED
        }
        None => flow_stat::SYNC_RING_FULL,
    };
    count(&FLOW_STATS, slot, 0);
}

/// The persistence key of the flow's client in pool `pool_id` of the service.
#[inline(always)]
pub fn persist_key(flow: &Flow, service: &ServiceValue, pool_id: u32) -> PersistKey {
    PersistKey {
        client: masked(flow.src, service.persist_prefix_len),
        service_id: service.service_id,
        pool_id,
    }
}

/// The backend this client was last sent to, if persistence is on and it is still usable.
#[inline(always)]
pub fn lookup_persistent(
    key: &PersistKey,
    service: &ServiceValue,
    now: u64,
) -> Option<(u32, BackendValue)> {
    let timeout = service.persist_timeout_s as u64 * 1_000_000_000;
    let entry = PERSISTENCE.get_ptr_mut(key)?;
    // SAFETY: LRU entries stay valid (RCU) for the whole program run.
    let value = unsafe { *entry };
    // Only new flows ask: a backend taking no new connections is not followed.
    let backend = fresh(&value, now, timeout, true)?;
    touch(entry, &value, now, timeout);
    count(&FLOW_STATS, flow_stat::PERSIST_HIT, 0);
    Some((value.backend_id, backend))
}

#[inline(always)]
pub fn remember_persistent(key: &PersistKey, backend_id: u32, backend: &BackendValue, now: u64) {
    let _ = PERSISTENCE.insert(key, entry(key.service_id, backend_id, backend, 0, now), 0);
}

/// The first `prefix_len` bits of an address in packet byte order (the rest zeroed).
#[inline(always)]
fn masked(addr: [u32; 4], prefix_len: u32) -> [u32; 4] {
    let mut out = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        let bits = prefix_len.saturating_sub(i as u32 * 32);
        out[i] = if bits >= 32 {
            addr[i]
        } else if bits == 0 {
            0
        } else {
            addr[i] & (u32::MAX << (32 - bits)).to_be()
        };
        i += 1;
    }
    out
}
