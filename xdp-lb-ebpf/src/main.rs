//! The xdp-lb data plane: L2 direct server return over Maglev.
//!
//! A frame to a configured (VIP, port, protocol) gets a backend from its service's Maglev
//! table (or, when a client rule places its client in another pool, that pool's), its
//! destination MAC rewritten to the backend's and its source MAC to the LB's own, and
//! leaves again (XDP_TX, or XDP_REDIRECT through `tx_ports`). No other byte changes. Every
//! other frame is passed untouched.
#![no_std]
#![no_main]

mod flows;
mod maps;
mod parse;
mod pools;

use aya_ebpf::{Global, bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::warn;
use network_types::eth::EthHdr;
use xdp_lb_common::{
    BACKEND_F_VALID, BackendValue, FlowKey, SERVICE_F_HASH_SOURCE, SERVICE_F_PASS_WHEN_EMPTY,
    ServiceKey, ServiceValue, flow_hash_v4, flow_hash_v6, source_hash, verdict,
};

use crate::{
    maps::{
        BACKEND_STATS, BACKENDS, MAGLEV_TABLES, SERVICE_BY_VIP, SERVICE_PORTS, SERVICE_STATS,
        TX_PORTS, VERDICT_STATS, count,
    },
    parse::{Flow, parse_flow, ptr_at},
    pools::{Placement, Table},
};

/// Seed of the flow hash, set by the agent at load from the config (`flow_hash_seed`).
#[unsafe(no_mangle)]
static FLOW_HASH_SEED: Global<u32> = Global::new(0);

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (action, reason) = balance(&ctx, bytes);
    count(&VERDICT_STATS, reason, bytes);
    action
}

/// Returns the XDP action and the `verdict` slot to count it under.
#[inline(always)]
fn balance(ctx: &XdpContext, bytes: u64) -> (u32, u32) {
    let flow = match parse_flow(ctx) {
        Ok(flow) => flow,
        Err(reason) => return (xdp_action::XDP_PASS, reason),
    };
    // Most frames that are not for a service are to ports no service uses: one array read
    // settles them without hashing a key.
    if !port_has_service(&flow) {
        return (xdp_action::XDP_PASS, verdict::PASS_NOT_SERVICE);
    }
    // A packet of a known flow needs nothing but its connection-table entry; only a new
    // flow (or one whose backend went) looks its service up.
    let now = flows::now_ns();
    let key = flows::flow_key(&flow);
    let (service_id, backend_id, backend) = match flows::lookup_flow(&key, &flow, now) {
        Some(hit) => hit,
        None => {
            let Some(service) = find_service(&flow) else {
                return (xdp_action::XDP_PASS, verdict::PASS_NOT_SERVICE);
            };
            flows::count_miss(&flow);
            match choose_backend(ctx, &flow, &service, &key, now) {
                Choice::Backend(id, backend) => (service.service_id, id, backend),
                Choice::NoBackend => return no_backend(&service),
                Choice::Refused => return (xdp_action::XDP_DROP, verdict::DROP_CLIENT_RULE),
            }
        }
    };

    let (action, reason) = if backend.ifindex == ctx.ingress_ifindex() as u32 {
        (xdp_action::XDP_TX, verdict::TX)
    } else if TX_PORTS.get_ifindex(backend.ifindex).is_some() {
        (xdp_action::XDP_REDIRECT, verdict::REDIRECT)
    } else {
        warn!(
            ctx,
            "backend {} is behind ifindex {} missing from tx_ports", backend_id, backend.ifindex
        );
        return (xdp_action::XDP_PASS, verdict::PASS_REDIRECT_FAILED);
    };

    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return (xdp_action::XDP_PASS, verdict::PASS_MALFORMED);
    };
    // SAFETY: checked by `ptr_at`; this is the only write to the frame.
    unsafe {
        (*eth).dst_addr = backend.mac;
        (*eth).src_addr = backend.src_mac;
    }
    count(&SERVICE_STATS, service_id, bytes);
    count(&BACKEND_STATS, backend_id, bytes);

    if action == xdp_action::XDP_REDIRECT {
        // Present in tx_ports (checked above); fall back to passing if it vanished since.
        return match TX_PORTS.redirect(backend.ifindex, 0) {
            Ok(action) => (action, reason),
            Err(_) => (xdp_action::XDP_PASS, verdict::PASS_REDIRECT_FAILED),
        };
    }
    (action, reason)
}

/// Whether some service listens on the frame's destination port (`service_ports`).
#[inline(always)]
fn port_has_service(flow: &Flow) -> bool {
    let port = u16::from_be(flow.service.port);
    let word = SERVICE_PORTS
        .get(u32::from(port) / 64)
        .copied()
        .unwrap_or(0);
    word & (1u64 << (port % 64)) != 0
}

/// The service at the frame's (VIP, port, protocol): one bound to its VLAN first, else one
/// taking any VLAN.
#[inline(always)]
fn find_service(flow: &Flow) -> Option<ServiceValue> {
    // SAFETY: values are copied out at once; the agent replaces values whole.
    if let Some(service) = unsafe { SERVICE_BY_VIP.get(flow.service) } {
        return Some(*service);
    }
    if flow.service.vlan == 0 {
        return None;
    }
    let any_vlan = ServiceKey {
        vlan: 0,
        ..flow.service
    };
    // SAFETY: as above.
    unsafe { SERVICE_BY_VIP.get(any_vlan) }.copied()
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
fn choose_backend(
    ctx: &XdpContext,
    flow: &Flow,
    service: &ServiceValue,
    key: &FlowKey,
    now: u64,
) -> Choice {
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
            flows::remember_flow(key, flow, service.service_id, id, &backend, now);
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
    let slot = table.offset + hash % table.size;
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
