//! The floor: the least an L2-DSR Maglev balancer does per packet, on the project's own
//! maps and hash, for the benchmarks to time `xdp_lb` against (`cargo xtask bench`). It
//! parses Ethernet, IPv4 (no options) and the TCP or UDP ports, looks the service up, hashes
//! the 5-tuple, reads one Maglev slot and its backend, rewrites both MACs and sends the
//! frame back out. No connection table, no counters, no VIP pre-filter, no MAC check, no
//! VLAN, IPv6, fragment or ICMP handling: a lower bound, never attached by the agent.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use xdp_lb_common::{BACKEND_F_VALID, FAMILY_IPV4, PROTO_TCP, PROTO_UDP, ServiceKey, flow_hash_v4};

use crate::{
    FLOW_HASH_SEED,
    maps::{BACKENDS, MAGLEV_TABLES, SERVICE_BY_VIP},
    parse::{ptr_at, read_word},
};

const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// Version 4, header length 5 words: IPv4 without options.
const IPV4_NO_OPTIONS: u8 = 0x45;

#[xdp]
pub fn xdp_floor(ctx: XdpContext) -> u32 {
    floor(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn floor(ctx: &XdpContext) -> Option<u32> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: `ptr_at` checked the header lies inside the frame.
    if unsafe { (*eth).ether_type } != ETH_P_IP_BE {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)?;
    // SAFETY: as above.
    let (version_ihl, proto, src, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).proto,
            u32::from_ne_bytes((*ip).src_addr),
            u32::from_ne_bytes((*ip).dst_addr),
        )
    };
    if version_ihl != IPV4_NO_OPTIONS || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return None;
    }
    let ports = read_word(ctx, EthHdr::LEN + Ipv4Hdr::LEN)?;
    let key = ServiceKey {
        addr: [dst, 0, 0, 0],
        port: (ports >> 16) as u16,
        proto,
        family: FAMILY_IPV4,
        vlan: 0,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let service = unsafe { SERVICE_BY_VIP.get(&key) }.copied()?;
    if service.table_size == 0 {
        return None;
    }
    let hash = flow_hash_v4(src, dst, ports, proto, FLOW_HASH_SEED.load());
    let backend_id = *MAGLEV_TABLES.get(service.table_offset + hash % service.table_size)?;
    let backend = BACKENDS.get(backend_id)?;
    if backend.flags & BACKEND_F_VALID == 0 {
        return Some(xdp_action::XDP_DROP);
    }
    // Read out first (volatile, so the compiler keeps the copy): a copy from the map value
    // straight into the frame may overlap for all it knows, and becomes a byte-by-byte
    // `memmove` call, which `xdp_lb` (its backend copied out of the map) never makes.
    // SAFETY: a map value, valid for the program run.
    let (mac, src_mac) = unsafe {
        (
            core::ptr::read_volatile(&backend.mac),
            core::ptr::read_volatile(&backend.src_mac),
        )
    };
    // SAFETY: `ptr_at` checked the header above; the frame's only writes.
    unsafe {
        (*eth).dst_addr = mac;
        (*eth).src_addr = src_mac;
    }
    Some(xdp_action::XDP_TX)
}
