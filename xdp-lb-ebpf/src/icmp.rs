//! ICMP errors about a service's packets. With direct server return the backends send from
//! the VIP, so what routers say about those packets (above all "fragmentation needed" /
//! "packet too big", which path MTU discovery lives on) comes back to the VIP, i.e. here.
//! The embedded packet (backend -> client) is turned around into the client's flow, so the
//! error can go to the backend that owns that flow.

use aya_ebpf::programs::XdpContext;
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use xdp_lb_common::{FAMILY_IPV4, PROTO_TCP, PROTO_UDP, verdict};

use crate::parse::{Flow, Frame, ptr_at, read_word, words};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_DEST_UNREACHABLE: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// Type, code, checksum and the 4-byte field (unused, or the next-hop MTU) before the
/// embedded packet, in both ICMP and ICMPv6.
const ICMP_HEADER_LEN: usize = 8;
/// What RFC 792 guarantees of the embedded packet's L4 header: enough for both ports.
const EMBEDDED_L4_LEN: usize = 8;

/// An ICMPv4 error at `offset` sent to `dst`: destination unreachable (any code) about a
/// TCP or UDP packet sent from `dst`.
#[inline(always)]
pub fn parse_icmpv4(
    ctx: &XdpContext,
    offset: usize,
    dst: u32,
    flow: &mut Flow,
) -> Result<Frame, u32> {
    let header = ptr_at::<[u8; 2]>(ctx, offset).ok_or(verdict::PASS_MALFORMED)?;
    // SAFETY: checked by `ptr_at`.
    let [kind, code] = unsafe { *header };
    if kind != ICMP_DEST_UNREACHABLE {
        return Err(verdict::PASS_NOT_SERVICE);
    }
    let inner = offset + ICMP_HEADER_LEN;
    let ip = ptr_at::<Ipv4Hdr>(ctx, inner).ok_or(verdict::PASS_ICMP_TRUNCATED)?;
    // SAFETY: checked by `ptr_at`.
    let (vihl, frags, proto, from, to) = unsafe {
        (
            (*ip).vihl,
            (*ip).frags,
            (*ip).proto,
            u32::from_ne_bytes((*ip).src_addr),
            u32::from_ne_bytes((*ip).dst_addr),
        )
    };
    let header_len = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
        return Err(verdict::PASS_MALFORMED);
    }
    // A later fragment carries no ports: no flow to find.
    if (proto != PROTO_TCP && proto != PROTO_UDP) || u16::from_be_bytes(frags) & 0x1fff != 0 {
        return Err(verdict::PASS_ICMP_NOT_SERVICE);
    }
    let ports = embedded_ports(ctx, inner + header_len)?;
    // Only an error about a packet the VIP sent is the backends' business.
    if from != dst {
        return Err(verdict::PASS_ICMP_NOT_SERVICE);
    }
    flow.service.addr = [from, 0, 0, 0];
    flow.service.family = FAMILY_IPV4;
    flow.src = [to, 0, 0, 0];
    Ok(about_flow(flow, ports, proto, code == ICMP_FRAG_NEEDED))
}

/// An ICMPv6 error at `offset` sent to the VIP in `flow.service.addr`: destination
/// unreachable or packet too big about a TCP or UDP packet sent from that VIP (one without
/// extension headers).
#[inline(always)]
pub fn parse_icmpv6(ctx: &XdpContext, offset: usize, flow: &mut Flow) -> Result<Frame, u32> {
    let header = ptr_at::<[u8; 2]>(ctx, offset).ok_or(verdict::PASS_MALFORMED)?;
    // SAFETY: checked by `ptr_at`.
    let [kind, _code] = unsafe { *header };
    if kind != ICMPV6_DEST_UNREACHABLE && kind != ICMPV6_PACKET_TOO_BIG {
        return Err(verdict::PASS_NOT_SERVICE);
    }
    let inner = offset + ICMP_HEADER_LEN;
    let ip = ptr_at::<Ipv6Hdr>(ctx, inner).ok_or(verdict::PASS_ICMP_TRUNCATED)?;
    // SAFETY: checked by `ptr_at`; the whole fixed header lies in the frame.
    let (version, proto) = unsafe { ((*ip).vcf[0] >> 4, (*ip).next_hdr) };
    if version != 6 {
        return Err(verdict::PASS_MALFORMED);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(verdict::PASS_ICMP_NOT_SERVICE);
    }
    let ports = embedded_ports(ctx, inner + Ipv6Hdr::LEN)?;
    // SAFETY: as above.
    if words(unsafe { &(*ip).src_addr }) != flow.service.addr {
        return Err(verdict::PASS_ICMP_NOT_SERVICE);
    }
    // The client's address goes straight into `flow` (see `parse_ipv6`).
    // SAFETY: as above.
    flow.src = words(unsafe { &(*ip).dst_addr });
    Ok(about_flow(
        flow,
        ports,
        proto,
        kind == ICMPV6_PACKET_TOO_BIG,
    ))
}

/// The embedded packet's two ports as one word (source port's bytes first), after checking
/// its first 8 L4 bytes are there.
#[inline(always)]
fn embedded_ports(ctx: &XdpContext, offset: usize) -> Result<u32, u32> {
    ptr_at::<[u8; EMBEDDED_L4_LEN]>(ctx, offset).ok_or(verdict::PASS_ICMP_TRUNCATED)?;
    read_word(ctx, offset).ok_or(verdict::PASS_ICMP_TRUNCATED)
}

/// Completes the client's flow a packet VIP -> client with `ports` belongs to (the caller
/// has swapped the addresses): the halves of the ports word exchanged, so the client's
/// port's bytes come first as in its own packets.
#[inline(always)]
fn about_flow(flow: &mut Flow, ports: u32, proto: u8, too_big: bool) -> Frame {
    let ports = ports.rotate_left(16);
    flow.ports = ports;
    flow.service.port = (ports >> 16) as u16;
    flow.service.proto = proto;
    Frame::IcmpError { too_big }
}
