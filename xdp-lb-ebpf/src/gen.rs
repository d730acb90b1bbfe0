//! The many-flows generator of the throughput benchmark (`tests/src/bench/throughput.rs`),
//! never attached by the agent. Run through BPF_PROG_TEST_RUN in live-frames mode on the
//! switch's end of the LB's veth, it sends its one IPv4 UDP frame out (XDP_TX) again and
//! again, each time as a packet of the next of `GEN_FLOWS` distinct flows: flow `i` has
//! source port `32768 + i % 32768` and, in the low 16 bits of its source address,
//! `1 + i / 32768` (so at most 2^31 flows). Everything else is the frame's own, but the
//! UDP checksum, set to 0 (none, legal over IPv4), and the IPv4 header checksum,
//! recomputed. Every field is written from the flow's number alone, never adjusted from
//! what the frame holds: live-frames mode recycles its pages, so a frame may come back
//! already rewritten (by this program, and by the LB, which changes only its MACs).
//!
//! Declared `mod r#gen;` in `main.rs`: `gen` is a keyword in edition 2024. Its one map,
//! `gen_next` (a per-CPU `u32`), is created with every load of the object.

use aya_ebpf::{
    Global,
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use xdp_lb_common::PROTO_UDP;

use crate::parse::ptr_at;

/// How many distinct flows the generator cycles over, set at load (`override_global`);
/// 0 counts as 1.
#[unsafe(no_mangle)]
static GEN_FLOWS: Global<u32> = Global::new(1);

/// The number of the flow the next frame on this CPU belongs to.
#[map(name = "gen_next")]
static GEN_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Source ports per source address, and the first of them.
const PORTS_PER_ADDR: u32 = 1 << 15;
const FIRST_PORT: u32 = 1 << 15;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Version 4, header length 5 words: IPv4 without options.
const IPV4_NO_OPTIONS: u8 = 0x45;

#[xdp]
pub fn xdp_gen_flows(ctx: XdpContext) -> u32 {
    gen_flows(&ctx).unwrap_or(xdp_action::XDP_DROP)
}

/// This CPU's next flow number, and the counter moved on (cycling over `GEN_FLOWS`).
#[inline(always)]
fn next_flow() -> Option<u32> {
    let next = GEN_NEXT.get_ptr_mut(0)?;
    let flows = GEN_FLOWS.load().max(1);
    // SAFETY: a per-CPU slot is only touched by this CPU, and the program is not reentrant.
    unsafe {
        let flow = if *next < flows { *next } else { 0 };
        *next = if flow + 1 < flows { flow + 1 } else { 0 };
        Some(flow)
    }
}

#[inline(always)]
fn gen_flows(ctx: &XdpContext) -> Option<u32> {
    let eth = ptr_at::<[u8; ETH_LEN]>(ctx, 0)?;
    let ip = ptr_at::<[u8; IPV4_LEN]>(ctx, ETH_LEN)?;
    let udp = ptr_at::<[u8; UDP_LEN]>(ctx, ETH_LEN + IPV4_LEN)?;
    // SAFETY: `ptr_at` checked each header lies inside the frame.
    let (eth, ip, udp) = unsafe { (&*eth, &mut *ip, &mut *udp) };
    // IPv4 without options, UDP, not a fragment (flags other than DF, or an offset).
    if eth[12] != 0x08
        || eth[13] != 0x00
        || ip[0] != IPV4_NO_OPTIONS
        || ip[9] != PROTO_UDP
        || ip[6] & 0x3f != 0
        || ip[7] != 0
    {
        return None;
    }
    let flow = next_flow()?;
    let port = (FIRST_PORT + flow % PORTS_PER_ADDR) as u16;
    let host = (1 + flow / PORTS_PER_ADDR) as u16;
    let [host_hi, host_lo] = host.to_be_bytes();
    ip[14] = host_hi;
    ip[15] = host_lo;
    ip[10] = 0;
    ip[11] = 0;
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_LEN {
        sum += u32::from(u16::from_be_bytes([ip[i], ip[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let [check_hi, check_lo] = (!(sum as u16)).to_be_bytes();
    ip[10] = check_hi;
    ip[11] = check_lo;
    let [port_hi, port_lo] = port.to_be_bytes();
    udp[0] = port_hi;
    udp[1] = port_lo;
    udp[6] = 0;
    udp[7] = 0;
    Some(xdp_action::XDP_TX)
}
