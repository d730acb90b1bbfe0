//! Header parsing. Every read goes through `ptr_at`, which checks the frame's end first.

use core::mem;

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};
use xdp_lb_common::{FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, PROTO_UDP, ServiceKey, verdict};

use crate::icmp::{self, PROTO_ICMP, PROTO_ICMPV6};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q (C-tag) and 802.1ad (S-tag) ethertypes.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_TAG_LEN: usize = 4;
const VLAN_VID_MASK: u16 = 0x0fff;
const IPV6_NEXT_FRAGMENT: u8 = 44;
/// IPv4 "more fragments" flag, and the fragment offset.
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// The IPv6 fragment header: next header, reserved, offset (13 bits) and flags, id.
const IPV6_FRAGMENT_HEADER_LEN: usize = 8;
const IPV6_OFFSET_MASK: u16 = 0xfff8;

/// What the balancer needs from a frame it may forward.
#[derive(Default)]
pub struct Flow {
    pub service: ServiceKey,
    /// Source and destination address words, as in the packet (IPv4 uses word 0).
    pub src: [u32; 4],
    /// Both ports as one word (see `xdp_lb_common::flow_hash`); 0 in a later fragment.
    pub ports: u32,
    /// The TCP flags byte (0 for UDP): SYN, FIN and RST drive the connection table. A
    /// word, not a byte: with a byte, zeroing a new `Flow` took a byte-by-byte `memset`
    /// call on every packet (its tail was 9 bytes long).
    pub tcp_flags: u32,
    /// The IP identification of a fragmented datagram (its first fragment or a later one).
    pub fragment_id: Option<u32>,
}

/// What kind of frame `parse_frame` found.
pub enum Frame {
    /// A TCP or UDP packet, or the first fragment of one (it carries the ports).
    Flow,
    /// A fragment after the first: no L4 header, only the datagram's identity (the flow's
    /// addresses, protocol and `fragment_id`).
    LaterFragment,
    /// An ICMP(v6) error about a packet sent from a VIP; the flow is the client's it is
    /// about (client -> VIP, as the client's own packets have it). `too_big`: it asks for
    /// a smaller MTU.
    IcmpError { too_big: bool },
}

impl Flow {
    /// A TCP segment with SYN set: a connection's first packet (or its retransmission).
    #[inline(always)]
    pub fn syn(&self) -> bool {
        self.tcp_flags & u32::from(TCP_SYN) != 0
    }

    /// A TCP segment with RST set: the connection is over.
    #[inline(always)]
    pub fn rst(&self) -> bool {
        self.tcp_flags & u32::from(TCP_RST) != 0
    }

    /// A TCP segment with FIN set: the client is closing.
    #[inline(always)]
    pub fn fin(&self) -> bool {
        self.tcp_flags & u32::from(TCP_FIN) != 0
    }
}

/// One VLAN tag: tag control information, then the next ethertype.
#[repr(C)]
struct VlanTag {
    tci: [u8; 2],
    ether_type: [u8; 2],
}

/// A pointer to a `T` at `offset` bytes into the frame, or `None` when the frame is shorter.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

#[inline(always)]
pub fn read_word(ctx: &XdpContext, offset: usize) -> Option<u32> {
    let p = ptr_at::<[u8; 4]>(ctx, offset)?;
    // SAFETY: `ptr_at` checked the four bytes lie inside the frame.
    Some(u32::from_ne_bytes(unsafe { *p }))
}

/// Parses Ethernet (with up to two VLAN tags), IPv4 or IPv6, then TCP or UDP, an IP
/// fragment, or an ICMP error. `Err` carries the `verdict` slot explaining why the frame is
/// not one to balance (it is then passed untouched).
/// The frame's flow is written into `flow` (one value on the program's small stack, not a
/// copy per parsing step).
#[inline(always)]
pub fn parse_frame(ctx: &XdpContext, flow: &mut Flow) -> Result<Frame, u32> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(verdict::PASS_MALFORMED)?;
    // SAFETY: checked by `ptr_at`.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut offset = EthHdr::LEN;
    let mut vlan = 0u16;
    // An outer tag (802.1ad or 802.1Q), then at most one inner 802.1Q tag. The service is
    // matched on the outer VLAN id; only a backend on another VLAN changes it
    // (`forward::send`), never the inner one.
    if ether_type == ETH_P_8021AD || ether_type == ETH_P_8021Q {
        let tag = ptr_at::<VlanTag>(ctx, offset).ok_or(verdict::PASS_MALFORMED)?;
        // SAFETY: checked by `ptr_at`.
        let (tci, next) = unsafe { ((*tag).tci, (*tag).ether_type) };
        vlan = u16::from_be_bytes(tci) & VLAN_VID_MASK;
        ether_type = u16::from_be_bytes(next);
        offset += VLAN_TAG_LEN;
        if ether_type == ETH_P_8021Q {
            let inner = ptr_at::<VlanTag>(ctx, offset).ok_or(verdict::PASS_MALFORMED)?;
            // SAFETY: checked by `ptr_at`.
            ether_type = u16::from_be_bytes(unsafe { (*inner).ether_type });
            offset += VLAN_TAG_LEN;
        }
    }
    flow.service.vlan = vlan;
    match ether_type {
        ETH_P_IP => parse_ipv4(ctx, offset, flow),
        ETH_P_IPV6 => parse_ipv6(ctx, offset, flow),
        _ => Err(verdict::PASS_NOT_SERVICE),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize, flow: &mut Flow) -> Result<Frame, u32> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, offset).ok_or(verdict::PASS_MALFORMED)?;
    // SAFETY: checked by `ptr_at`.
    let (vihl, frags, proto, id, src, dst) = unsafe {
        (
            (*ip).vihl,
            (*ip).frags,
            (*ip).proto,
            (*ip).id,
            u32::from_ne_bytes((*ip).src_addr),
            u32::from_ne_bytes((*ip).dst_addr),
        )
    };
    let header_len = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN {
        return Err(verdict::PASS_MALFORMED);
    }
    let frags = u16::from_be_bytes(frags);
    let l4 = offset + header_len;
    if proto == PROTO_ICMP && frags & (IPV4_MORE_FRAGMENTS | IPV4_OFFSET_MASK) == 0 {
        return icmp::parse_icmpv4(ctx, l4, dst, flow);
    }
    flow.service.addr = [dst, 0, 0, 0];
    flow.service.proto = proto;
    flow.service.family = FAMILY_IPV4;
    flow.src = [src, 0, 0, 0];
    if frags & (IPV4_MORE_FRAGMENTS | IPV4_OFFSET_MASK) != 0 {
        flow.fragment_id = Some(u32::from(u16::from_ne_bytes(id)));
        if frags & IPV4_OFFSET_MASK != 0 {
            return Ok(Frame::LaterFragment);
        }
    }
    l4_ports(ctx, l4, proto, flow)?;
    Ok(Frame::Flow)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize, flow: &mut Flow) -> Result<Frame, u32> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, offset).ok_or(verdict::PASS_MALFORMED)?;
    // SAFETY: checked by `ptr_at`; the header is 40 bytes and all of it lies in the frame.
    let (version, mut next) = unsafe { ((*ip).vcf[0] >> 4, (*ip).next_hdr) };
    if version != 6 {
        return Err(verdict::PASS_MALFORMED);
    }
    // The addresses go straight into `flow`: held in registers they would be spilled
    // byte by byte onto the stack.
    // SAFETY: as above.
    flow.service.addr = words(unsafe { &(*ip).dst_addr });
    flow.service.family = FAMILY_IPV6;
    let mut l4 = offset + Ipv6Hdr::LEN;
    if next == PROTO_ICMPV6 {
        return icmp::parse_icmpv6(ctx, l4, flow);
    }
    // SAFETY: as above.
    flow.src = words(unsafe { &(*ip).src_addr });
    // Only a fragment header right after the fixed header is understood; one behind other
    // extension headers is not TCP or UDP as far as this parser can tell, and is passed.
    if next == IPV6_NEXT_FRAGMENT {
        let header =
            ptr_at::<[u8; IPV6_FRAGMENT_HEADER_LEN]>(ctx, l4).ok_or(verdict::PASS_MALFORMED)?;
        // SAFETY: checked by `ptr_at`.
        let header = unsafe { *header };
        next = header[0];
        flow.service.proto = next;
        flow.fragment_id = Some(u32::from_ne_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        if u16::from_be_bytes([header[2], header[3]]) & IPV6_OFFSET_MASK != 0 {
            return Ok(Frame::LaterFragment);
        }
        if next != PROTO_TCP && next != PROTO_UDP {
            return Err(verdict::PASS_FRAGMENT);
        }
        l4 += IPV6_FRAGMENT_HEADER_LEN;
    }
    flow.service.proto = next;
    l4_ports(ctx, l4, next, flow)?;
    Ok(Frame::Flow)
}

#[inline(always)]
pub fn words(addr: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

/// TCP flags byte offset and the bits the connection table reads.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// Source and destination port of a TCP or UDP header at `offset` (both sit in its first
/// four bytes), after checking the whole fixed header is in the frame; and the TCP flags
/// byte (0 for UDP).
#[inline(always)]
fn l4_ports(ctx: &XdpContext, offset: usize, proto: u8, flow: &mut Flow) -> Result<(), u32> {
    let header_len = match proto {
        PROTO_TCP => TcpHdr::LEN,
        PROTO_UDP => UdpHdr::LEN,
        _ => return Err(verdict::PASS_NOT_SERVICE),
    };
    if ctx.data() + offset + header_len > ctx.data_end() {
        return Err(verdict::PASS_MALFORMED);
    }
    let ports = read_word(ctx, offset).ok_or(verdict::PASS_MALFORMED)?;
    flow.tcp_flags = if proto == PROTO_TCP {
        let flags = ptr_at::<u8>(ctx, offset + TCP_FLAGS_OFFSET).ok_or(verdict::PASS_MALFORMED)?;
        // SAFETY: checked by `ptr_at`.
        u32::from(unsafe { *flags })
    } else {
        0
    };
    flow.ports = ports;
    flow.service.port = (ports >> 16) as u16;
    Ok(())
}
