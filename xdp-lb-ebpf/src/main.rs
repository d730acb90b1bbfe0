//! The xdp-lb data plane: L2 direct server return over Maglev.
//!
//! A frame to a configured (VIP, port, protocol) gets a backend from its service's Maglev
//! table (or, when a client rule places its client in another pool, that pool's), its
//! destination MAC rewritten to the backend's and its source MAC to the LB's own, and
//! leaves again (XDP_TX, or XDP_REDIRECT through `tx_ports`). No other byte changes but,
//! for a backend on another VLAN than the frame's, the outer tag's VLAN id. The
//! later fragments of its datagrams follow their first (`fragments.rs`), and ICMP errors
//! about the packets the backends send from the VIP go to the backend of the flow they are
//! about (`icmp.rs`). Every other frame, and every frame not addressed to this host's MAC,
//! is passed untouched.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod floor;
mod flows;
mod forward;
mod fragments;
mod r#gen;
mod icmp;
mod maps;
mod parse;
mod pools;

use core::{
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{Global, bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::warn;
use xdp_lb_common::{
    BACKEND_F_VALID, BackendValue, SERVICE_F_HASH_SOURCE, SERVICE_F_PASS_WHEN_EMPTY,
    ServiceCacheEntry, ServiceKey, ServiceValue, flow_hash_v4, flow_hash_v6, service_cache_slot,
    source_hash, verdict,
};

use crate::{
    maps::{
        BACKEND_STATS, BACKENDS, MAGLEV_TABLES, SERVICE_BY_VIP, SERVICE_CACHE, SERVICE_EPOCH,
        SERVICE_STATS, VERDICT_STATS, count,
    },
    parse::{Flow, Frame, parse_frame},
    pools::{Placement, Table},
};

/// Seed of the flow hash, set by the agent at load from the config (`flow_hash_seed`).
#[unsafe(no_mangle)]
pub static FLOW_HASH_SEED: Global<u32> = Global::new(0);

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let mut flow = Flow::default();
    match parse_frame(&ctx, &mut flow) {
        Ok(Frame::Flow) => {
            if flow.syn() {
                warm_maglev_slot(&flow);
            }
            match flow_frame(&ctx, &flow, bytes) {
                FLOW_MISS => new_flow_frame(&ctx, &flow, bytes),
                action => action,
            }
        }
        Ok(Frame::IcmpError { too_big }) => icmp_error_frame(&ctx, &flow, too_big, bytes),
        Ok(Frame::LaterFragment) => later_fragment_frame(&ctx, &flow, bytes),
        Err(reason) => counted((xdp_action::XDP_PASS, reason), bytes),
    }
}

// The kinds of frame are handled in functions of their own (BPF-to-BPF calls): each gets
// its own stack frame, where inlined together they would pass the verifier's 512 bytes
// along a call chain. A flow's packet takes two of them, called one after the other from
// `xdp_lb` (siblings, whose frames do not add up): the connection table's hit, and only
// when it misses, the new flow's placement.

/// Reads the Maglev slot a TCP SYN of a service will be placed by before the connection
/// table (or the flow filter in front of it) is consulted: the slot's cache miss then
/// overlaps theirs, where after them it comes on top (measured: a SYN about 80 ns cheaper
/// for a second lookup of its service, from the cache). Read only; a SYN whose client a
/// rule places in another pool warms its service's own table for nothing.
#[inline(never)]
fn warm_maglev_slot(flow: &Flow) {
    if !may_be_service(flow) {
        return;
    }
    let Some(service) = find_service(flow) else {
        return;
    };
    if service.table_size == 0 {
        return;
    }
    let slot = maglev_slot(flow, &service, service.table_offset, service.table_size);
    if let Some(word) = MAGLEV_TABLES.get_ptr(slot) {
        // SAFETY: a map value, valid for the program run; volatile, so the read is made.
        let _ = unsafe { core::ptr::read_volatile(word) };
    }
}

/// What `flow_frame` returns when the connection table has no usable entry for the packet:
/// no XDP action, and nothing counted yet; `new_flow_frame` places it.
const FLOW_MISS: u32 = u32::MAX;

#[inline(never)]
fn flow_frame(ctx: &XdpContext, flow: &Flow, bytes: u64) -> u32 {
    match known_flow(ctx, flow, bytes) {
        Some(result) => counted(result, bytes),
        None => FLOW_MISS,
    }
}

#[inline(never)]
fn new_flow_frame(ctx: &XdpContext, flow: &Flow, bytes: u64) -> u32 {
    counted(new_flow(ctx, flow, bytes), bytes)
}

#[inline(never)]
fn icmp_error_frame(ctx: &XdpContext, flow: &Flow, too_big: bool, bytes: u64) -> u32 {
    counted(forward_icmp_error(ctx, flow, too_big), bytes)
}

#[inline(never)]
fn later_fragment_frame(ctx: &XdpContext, flow: &Flow, bytes: u64) -> u32 {
    counted(forward_later_fragment(ctx, flow, bytes), bytes)
}

/// Counts the frame under its `verdict` slot; returns the XDP action.
#[inline(always)]
fn counted((action, reason): (u32, u32), bytes: u64) -> u32 {
    count(&VERDICT_STATS, reason, bytes);
    action
}

/// A TCP or UDP packet (or a datagram's first fragment) of a known flow: to its remembered
/// backend; `None` when the connection table has no usable entry (see `new_flow`).
#[inline(always)]
fn known_flow(ctx: &XdpContext, flow: &Flow, bytes: u64) -> Option<(u32, u32)> {
    // A frame to an (address, port) no service has, VIP or not: one array read settles it
    // without hashing a key, and without the MAC check (it passes whoever it is for).
    if !may_be_service(flow) {
        return Some((xdp_action::XDP_PASS, verdict::PASS_NOT_SERVICE));
    }
    if !forward::addressed_to_us(ctx) {
        return Some((xdp_action::XDP_PASS, verdict::PASS_NOT_OUR_MAC));
    }
    // A packet of a known flow needs nothing but its connection-table entry; only a new
    // flow (or one whose backend went) looks its service up.
    let key = flows::flow_key(flow);
    if flows::skips_table(&key, flow) {
        return None;
    }
    let (service_id, backend_id, backend, now) = flows::lookup_flow(&key, flow)?;
    Some(forward_flow(
        ctx, flow, service_id, backend_id, &backend, bytes, now,
    ))
}

/// A packet of a flow the connection table has no usable entry for (`known_flow` said so):
/// to the backend its service places it on.
#[inline(always)]
fn new_flow(ctx: &XdpContext, flow: &Flow, bytes: u64) -> (u32, u32) {
    let mut service = ServiceValue::default();
    if !find_service_into(flow, &mut service) {
        return (xdp_action::XDP_PASS, verdict::PASS_NOT_SERVICE);
    }
    flows::count_miss(flow);
    let now = flows::now_if_needed(flow, &service);
    match choose_backend(ctx, flow, &service, now) {
        Choice::Backend(id, backend) => {
            forward_flow(ctx, flow, service.service_id, id, &backend, bytes, now)
        }
        Choice::NoBackend => no_backend(&service),
        Choice::Refused => (xdp_action::XDP_DROP, verdict::DROP_CLIENT_RULE),
    }
}

/// Sends a flow's packet to its backend and counts it; a datagram's first fragment leaves
/// its backend for the later ones.
#[inline(always)]
fn forward_flow(
    ctx: &XdpContext,
    flow: &Flow,
    service_id: u32,
    backend_id: u32,
    backend: &BackendValue,
    bytes: u64,
    now: u64,
) -> (u32, u32) {
    let action = match forward::send(ctx, backend_id, backend) {
        Ok(action) => action,
        Err(reason) => return (xdp_action::XDP_PASS, reason),
    };
    count(&SERVICE_STATS, service_id, bytes);
    count(&BACKEND_STATS, backend_id, bytes);
    if flow.fragment_id.is_some() {
        let fragment = fragments::key(flow);
        flows::remember_fragment(&fragment, service_id, backend_id, backend, now);
        return (action, verdict::FRAGMENT_FIRST_FORWARDED);
    }
    if action == xdp_action::XDP_TX {
        (action, verdict::TX)
    } else {
        (action, verdict::REDIRECT)
    }
}

/// An ICMP error about a service's packet: to the backend owning the client's flow (its
/// connection-table entry, else the backend a new flow of that 5-tuple would get, as every
/// LB of the farm computes it), untouched but for the MACs. It creates no entry.
#[inline(always)]
fn forward_icmp_error(ctx: &XdpContext, flow: &Flow, too_big: bool) -> (u32, u32) {
    if !may_be_service(flow) {
        return (xdp_action::XDP_PASS, verdict::PASS_ICMP_NOT_SERVICE);
    }
    if !forward::addressed_to_us(ctx) {
        return (xdp_action::XDP_PASS, verdict::PASS_NOT_OUR_MAC);
    }
    let now = flows::now_ns();
    let key = flows::flow_key(flow);
    let (backend_id, backend) = match flows::peek_flow(&key, now) {
        Some((_, id, backend)) => (id, backend),
        None => {
            let found =
                find_service(flow).and_then(|service| match pools::placement(flow, &service) {
                    Placement::Table(table) => predict_backend(ctx, flow, &service, &table, now),
                    Placement::Refused => None,
                });
            match found {
                Some(found) => found,
                // Not a service's flow after all, or no backend to tell: the host's.
                None => return (xdp_action::XDP_PASS, verdict::PASS_ICMP_NOT_SERVICE),
            }
        }
    };
    match forward::send(ctx, backend_id, &backend) {
        Ok(action) if too_big => (action, verdict::ICMP_TOO_BIG_FORWARDED),
        Ok(action) => (action, verdict::ICMP_UNREACHABLE_FORWARDED),
        Err(reason) => (xdp_action::XDP_PASS, reason),
    }
}

/// The backend a new flow would get (the client's persistent one, else the Maglev
/// table's), read only.
#[inline(always)]
fn predict_backend(
    ctx: &XdpContext,
    flow: &Flow,
    service: &ServiceValue,
    table: &Table,
    now: u64,
) -> Option<(u32, BackendValue)> {
    if service.persist_timeout_s != 0 {
        let pkey = flows::persist_key(flow, service, table.pool_id);
        if let Some(found) = flows::peek_persistent(&pkey, service, now) {
            return Some(found);
        }
    }
    pick_backend(ctx, flow, service, table)
}

/// A fragment after the first: to where its datagram's first fragment went. Without one
/// (it comes late, or expired) a TCP or UDP datagram to a VIP is dropped: no backend is
/// known, and the LB host's stack, which owns the VIP too, must not get a piece of a
/// backend's datagram. Anything else is the host's own and passes.
#[inline(always)]
fn forward_later_fragment(ctx: &XdpContext, flow: &Flow, bytes: u64) -> (u32, u32) {
    if !forward::addressed_to_us(ctx) {
        return (xdp_action::XDP_PASS, verdict::PASS_NOT_OUR_MAC);
    }
    let now = flows::now_ns();
    let key = fragments::key(flow);
    let Some((service_id, backend_id, backend)) = flows::fragment_backend(&key, now) else {
        return if fragments::to_vip(flow) {
            (xdp_action::XDP_DROP, verdict::DROP_FRAGMENT_UNKNOWN)
        } else {
            (xdp_action::XDP_PASS, verdict::PASS_FRAGMENT)
        };
    };
    match forward::send(ctx, backend_id, &backend) {
        Ok(action) => {
            count(&SERVICE_STATS, service_id, bytes);
            count(&BACKEND_STATS, backend_id, bytes);
            (action, verdict::FRAGMENT_LATER_FORWARDED)
        }
        Err(reason) => (xdp_action::XDP_PASS, reason),
    }
}

/// Whether the frame's (destination address, port) may be a service's (`vip_filter`).
#[inline(always)]
fn may_be_service(flow: &Flow) -> bool {
    maps::may_be_service(&flow.service.addr, flow.service.family, flow.service.port)
}

/// The service of the frame's (VIP, port, protocol, VLAN): from this CPU's
/// `service_cache` when its slot holds the key at the current `service_epoch`, else looked
/// up in `service_by_vip` and remembered there. No frame that is no service's is
/// remembered (the lookup is the answer for those, as before).
#[inline(always)]
fn find_service(flow: &Flow) -> Option<ServiceValue> {
    let mut out = ServiceValue::default();
    find_service_into(flow, &mut out).then_some(out)
}

/// `find_service` writing into `out`: one copy of the value, where returning it made two
/// (the verifier's 512-byte stack limit for three frames has no room for both).
#[inline(always)]
fn find_service_into(flow: &Flow, out: &mut ServiceValue) -> bool {
    let slot = service_cache_slot(&flow.service);
    // Both always exist (a slot below `SERVICE_CACHE_SLOTS`, index 0 of one); without
    // them the map alone answers.
    let cache = SERVICE_CACHE
        .get_ptr_mut(slot)
        .zip(SERVICE_EPOCH.get_ptr_mut(0));
    // The slot to fill after the lookup, and its `seq` then: none when this run interrupted
    // another's write of it, or when a nested write overlapped this run's copy of it.
    let mut fill = None;
    if let Some((entry, epoch)) = cache {
        // SAFETY: `entry` is this CPU's slot and `epoch` the map's one value, both valid for
        // the program run. Only program runs on this CPU write the slot: one that interrupts
        // another's write finds `seq` odd and leaves the slot alone, and one that writes it
        // under a reader's copy moves `seq`, which the reader checks after copying.
        unsafe {
            let seq = read_volatile(addr_of!((*entry).seq));
            if seq & 1 == 0 {
                compiler_fence(Ordering::SeqCst);
                if (*entry).epoch == read_volatile(epoch) && (*entry).key == flow.service {
                    *out = (*entry).value;
                    compiler_fence(Ordering::SeqCst);
                    if read_volatile(addr_of!((*entry).seq)) == seq {
                        return true;
                    }
                } else {
                    fill = Some((entry, epoch, seq));
                }
            }
        }
    }
    // One lookup site (each inlined copy of the lookup takes its own stack for the keys).
    // A full barrier before it when the slot is to be filled: an epoch read after the
    // agent's bump goes with a value read after its update, on any CPU architecture.
    let fill = fill.map(|(entry, epoch, seq)| {
        // SAFETY: as above.
        let current = unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::SeqCst }>(
                epoch, 0,
            )
        };
        (entry, seq, current)
    });
    let Some(found) = lookup_service(flow) else {
        return false;
    };
    *out = *found;
    if let Some((entry, seq, current)) = fill {
        // SAFETY: as above.
        unsafe {
            write_volatile(addr_of_mut!((*entry).seq), seq.wrapping_add(1));
            compiler_fence(Ordering::SeqCst);
            store_cached(entry, &flow.service, found, current);
            compiler_fence(Ordering::SeqCst);
            write_volatile(addr_of_mut!((*entry).seq), seq.wrapping_add(2));
        }
    }
    true
}

/// Writes a `service_cache` slot field by field (a whole-struct copy becomes a call to
/// `memcpy`, a third stack frame the verifier's 512-byte limit has no room for here).
#[inline(always)]
fn store_cached(entry: *mut ServiceCacheEntry, key: &ServiceKey, value: &ServiceValue, epoch: u64) {
    // SAFETY: `entry` is this CPU's slot, valid for the program run (see `find_service`).
    unsafe {
        let k = addr_of_mut!((*entry).key);
        (*k).addr = key.addr;
        (*k).port = key.port;
        (*k).proto = key.proto;
        (*k).family = key.family;
        (*k).vlan = key.vlan;
        (*k)._pad = key._pad;
        let v = addr_of_mut!((*entry).value);
        (*v).service_id = value.service_id;
        (*v).table_offset = value.table_offset;
        (*v).table_size = value.table_size;
        (*v).flags = value.flags;
        (*v).generation = value.generation;
        (*v).persist_timeout_s = value.persist_timeout_s;
        (*v).persist_prefix_len = value.persist_prefix_len;
        (*entry).epoch = epoch;
    }
}

/// `service_by_vip`'s service for the frame's VLAN, else the one on any VLAN.
#[inline(always)]
fn lookup_service(flow: &Flow) -> Option<&'static ServiceValue> {
    // SAFETY: the value stays valid (RCU) for the program run; the agent replaces values
    // whole.
    if let Some(service) = unsafe { SERVICE_BY_VIP.get(flow.service) } {
        return Some(service);
    }
    if flow.service.vlan == 0 {
        return None;
    }
    let any_vlan = ServiceKey {
        vlan: 0,
        ..flow.service
    };
    // SAFETY: as above.
    unsafe { SERVICE_BY_VIP.get(any_vlan) }
}

/// What a flow gets.
enum Choice {
    Backend(u32, BackendValue),
    /// Its pool has no usable backend: the service's `when_no_backend`.
    NoBackend,
    /// A client rule refuses its client.
    Refused,
}

/// A backend for a flow the connection table has no usable entry for: in the pool its
/// client's rule names (the service's own backends without one), the client's persistent
/// one (services with persistence), else the one the pool's Maglev table names; the choice
/// is remembered.
#[inline(always)]
fn choose_backend(ctx: &XdpContext, flow: &Flow, service: &ServiceValue, now: u64) -> Choice {
    let table = match pools::placement(flow, service) {
        Placement::Table(table) => table,
        Placement::Refused => return Choice::Refused,
    };
    // A SYN (or RST) writes no persistence entry either: see `flows::remembers`.
    let remember = flows::remembers(flow);
    let chosen = if service.persist_timeout_s != 0 {
        let pkey = flows::persist_key(flow, service, table.pool_id);
        match flows::lookup_persistent(&pkey, service, now) {
            Some(found) => Some(found),
            None => {
                let picked = pick_backend(ctx, flow, service, &table);
                if let Some((id, backend)) = picked.as_ref().filter(|_| remember) {
                    flows::remember_persistent(&pkey, *id, backend, now);
                }
                picked
            }
        }
    } else {
        pick_backend(ctx, flow, service, &table)
    };
    match chosen {
        Some((id, backend)) => {
            flows::remember_flow(
                &flows::flow_key(flow),
                flow,
                service.service_id,
                id,
                &backend,
                now,
            );
            Choice::Backend(id, backend)
        }
        None => Choice::NoBackend,
    }
}

/// The backend the live Maglev table `table` names for this flow.
#[inline(always)]
fn pick_backend(
    ctx: &XdpContext,
    flow: &Flow,
    service: &ServiceValue,
    table: &Table,
) -> Option<(u32, BackendValue)> {
    if table.size == 0 {
        return None;
    }
    let slot = maglev_slot(flow, service, table.offset, table.size);
    let backend_id = *MAGLEV_TABLES.get(slot)?;
    let backend = *BACKENDS.get(backend_id)?;
    if backend.flags & BACKEND_F_VALID == 0 {
        warn!(
            ctx,
            "maglev slot {} names backend {} which has no valid entry", slot, backend_id
        );
        return None;
    }
    Some((backend_id, backend))
}

/// The slot of the Maglev table at `offset` (`size` slots, not 0) naming the flow's
/// backend.
#[inline(always)]
fn maglev_slot(flow: &Flow, service: &ServiceValue, offset: u32, size: u32) -> u32 {
    let seed = FLOW_HASH_SEED.load();
    let key = &flow.service;
    let v4 = key.family == xdp_lb_common::FAMILY_IPV4;
    let hash = if service.flags & SERVICE_F_HASH_SOURCE != 0 {
        source_hash(&flow.src, v4, seed)
    } else if v4 {
        flow_hash_v4(flow.src[0], key.addr[0], flow.ports, key.proto, seed)
    } else {
        flow_hash_v6(&flow.src, &key.addr, flow.ports, key.proto, seed)
    };
    offset + hash % size
}

#[inline(always)]
fn no_backend(service: &ServiceValue) -> (u32, u32) {
    if service.flags & SERVICE_F_PASS_WHEN_EMPTY != 0 {
        (xdp_action::XDP_PASS, verdict::PASS_NO_BACKEND)
    } else {
        (xdp_action::XDP_DROP, verdict::DROP_NO_BACKEND)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Passes every frame. The lab attaches it to the switch side of the LB's veth, because a
/// frame XDP_TX-ed out of a veth only reaches a peer that runs an XDP program itself; the
/// benchmarks use it as the baseline cost of running any program at all.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Sends every frame back out untouched: the no-op XDP_TX baseline of the benchmarks.
#[xdp]
pub fn xdp_noop_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}
