//! Test frames: Ethernet + IPv4 (with or without options) or IPv6 + TCP or UDP, built byte by
//! byte with valid IPv4 header checksums, so every fixture reads like a real packet. The one
//! copy of the frame builders: the integration tests (`tests/tests/support`) and the
//! benchmarks ([`crate::bench`]: [`tcp_v4`], [`udp_v4`], [`tcp_v6`]) both build from here.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The client's MAC (source of every frame) and the LB's (destination).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x00, 0x00, 0x00, 0x02];
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0x00, 0x00, 0x00, 0x01];
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

#[derive(Clone, Debug)]
pub struct Ipv4Frame {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// IPv4 options (padded to a multiple of 4 bytes).
    pub options: Vec<u8>,
    /// Flags and fragment offset field (host order), e.g. 0x2000 for "more fragments".
    pub frag: u16,
    pub payload: Vec<u8>,
    pub ttl: u8,
}

impl Ipv4Frame {
    pub fn tcp(src: &str, src_port: u16, dst: &str, dst_port: u16) -> Self {
        Self {
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
            proto: TCP,
            src_port,
            dst_port,
            options: Vec::new(),
            frag: 0x4000, // DF, as TCP stacks send
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            ttl: 64,
        }
    }

    pub fn udp(src: &str, src_port: u16, dst: &str, dst_port: u16) -> Self {
        Self {
            proto: UDP,
            frag: 0,
            payload: b"udp video chunk".to_vec(),
            ..Self::tcp(src, src_port, dst, dst_port)
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.src_port.to_be_bytes());
        l4.extend_from_slice(&self.dst_port.to_be_bytes());
        match self.proto {
            TCP => {
                l4.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
                l4.extend_from_slice(&0u32.to_be_bytes()); // ack
                l4.extend_from_slice(&[0x50, 0x02]); // data offset 5, SYN
                l4.extend_from_slice(&64240u16.to_be_bytes()); // window
                l4.extend_from_slice(&[0xab, 0xcd]); // checksum (left as is: XDP must not touch it)
                l4.extend_from_slice(&[0, 0]); // urgent
            }
            UDP => {
                let len = 8 + self.payload.len() as u16;
                l4.extend_from_slice(&len.to_be_bytes());
                l4.extend_from_slice(&[0x12, 0x34]);
            }
            _ => {}
        }
        l4.extend_from_slice(&self.payload);
        let mut options = self.options.clone();
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let ihl = 5 + options.len() / 4;
        let total = (ihl * 4 + l4.len()) as u16;
        let mut ip = vec![0x40 | ihl as u8, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&0x1c46u16.to_be_bytes()); // id
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&options);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = ethernet(0x0800);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        frame
    }
}

#[derive(Clone, Debug)]
pub struct Ipv6Frame {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

impl Ipv6Frame {
    pub fn tcp(src: &str, src_port: u16, dst: &str, dst_port: u16) -> Self {
        Self {
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
            next_header: TCP,
            src_port,
            dst_port,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.src_port.to_be_bytes());
        l4.extend_from_slice(&self.dst_port.to_be_bytes());
        l4.extend_from_slice(&[0; 8]);
        l4.extend_from_slice(&[0x50, 0x02, 0xfa, 0xf0, 0xab, 0xcd, 0, 0]);
        l4.extend_from_slice(&self.payload);
        ipv6(
            [0x60, 0x01, 0x23, 0x45],
            self.src,
            self.dst,
            self.next_header,
            &l4,
        )
    }
}

/// An Ethernet header from the client to the LB.
pub fn ethernet(ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// An ARP request for `target` from the client.
pub fn arp_request(sender: &str, target: &str) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&sender.parse::<Ipv4Addr>().expect("test address").octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.parse::<Ipv4Addr>().expect("test address").octets());
    f
}

/// The Internet checksum.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Deterministic pseudo-random bytes (xorshift), for garbage frames.
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The frame with VLAN tags inserted after the MAC addresses, outermost first:
/// (TPID, VLAN id), e.g. `[(0x88a8, 200), (0x8100, 100)]` for QinQ.
pub fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for (tpid, vid) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// The frame with VLAN tags inserted after the MAC addresses, outermost first, each as
/// (TPID, whole tag control information): priority (PCP), drop-eligible bit and VLAN id.
pub fn tagged_tci(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for (tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// A tag control information: priority code point, drop-eligible bit, VLAN id.
pub fn tci(pcp: u16, dei: bool, vid: u16) -> u16 {
    (pcp << 13) | (u16::from(dei) << 12) | (vid & 0x0fff)
}

/// The VLAN id of a tagged frame's outer tag.
pub fn outer_vid(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff
}

/// The frame with its outer tag's VLAN id set to `vid`, its priority bits kept.
pub fn with_outer_vid(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    let tci = (u16::from_be_bytes([out[14], out[15]]) & 0xf000) | (vid & 0x0fff);
    out[14..16].copy_from_slice(&tci.to_be_bytes());
    out
}

pub const ICMPV6: u8 = 58;

/// The IP packet of a frame (the Ethernet header cut off): what an ICMP error embeds.
pub fn ip_packet(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

/// An ICMPv4 error from `router` to `to` (type `kind`, code `code`, next-hop MTU `mtu`)
/// embedding `embedded` (an IP packet, possibly cut short), with valid checksums.
pub fn icmpv4_error(
    router: &str,
    to: &str,
    kind: u8,
    code: u8,
    mtu: u16,
    embedded: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(embedded);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ipv4_raw(router, to, ICMP, 0x4000, 0x0bad, &icmp)
}

/// An ICMPv6 error from `router` to `to` (type `kind`: 1 unreachable, 2 packet too big)
/// embedding `embedded`. The ICMPv6 checksum is left 0: XDP never reads it.
pub fn icmpv6_error(router: &str, to: &str, kind: u8, mtu: u32, embedded: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(embedded);
    ipv6_raw(router, to, ICMPV6, &icmp)
}

/// Ethernet + an IPv4 header (valid checksum, the given flags/fragment offset field and
/// id) + `payload` as it is.
pub fn ipv4_raw(src: &str, dst: &str, proto: u8, frag: u16, id: u16, payload: &[u8]) -> Vec<u8> {
    let src = src.parse::<Ipv4Addr>().expect("test address");
    let dst = dst.parse::<Ipv4Addr>().expect("test address");
    ipv4(src, dst, proto, frag, id, payload)
}

/// Ethernet + an IPv4 header without options (valid checksum, TTL 64, the given
/// flags/fragment offset field and id) + `payload` as it is.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, id: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = ethernet(0x0800);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(payload);
    frame
}

/// Ethernet + an IPv6 header with next header `next` + `payload` as it is.
pub fn ipv6_raw(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let src = src.parse::<Ipv6Addr>().expect("test address");
    let dst = dst.parse::<Ipv6Addr>().expect("test address");
    ipv6([0x60, 0, 0, 0], src, dst, next, payload)
}

/// Ethernet + an IPv6 header (its first word `version_class_flow`: version 6, traffic
/// class and flow label; hop limit 64) with next header `next` + `payload` as it is.
fn ipv6(
    version_class_flow: [u8; 4],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = ethernet(0x86dd);
    frame.extend_from_slice(&version_class_flow);
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.push(next);
    frame.push(64);
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(payload);
    frame
}

/// The L4 bytes (header and payload) of a frame built by `Ipv4Frame` without options.
pub fn ipv4_l4(frame: &[u8]) -> Vec<u8> {
    frame[14 + 20..].to_vec()
}

/// A service datagram cut in two IPv4 fragments at byte `at` of its L4 bytes (a multiple
/// of 8): the first carries the L4 header, the second the rest; both with IP id `id`.
pub fn ipv4_fragments(datagram: &Ipv4Frame, id: u16, at: usize) -> (Vec<u8>, Vec<u8>) {
    let l4 = ipv4_l4(&datagram.build());
    let (src, dst) = (datagram.src.to_string(), datagram.dst.to_string());
    let first = ipv4_raw(&src, &dst, datagram.proto, 0x2000, id, &l4[..at]);
    let later = ipv4_raw(&src, &dst, datagram.proto, (at / 8) as u16, id, &l4[at..]);
    (first, later)
}

/// A service datagram cut in two IPv6 fragments (fragment header right after the fixed
/// header) at byte `at` of its L4 bytes (a multiple of 8), with identification `id`.
pub fn ipv6_fragments(datagram: &Ipv6Frame, id: u32, at: usize) -> (Vec<u8>, Vec<u8>) {
    let l4 = datagram.build()[14 + 40..].to_vec();
    let (src, dst) = (datagram.src.to_string(), datagram.dst.to_string());
    let header = |offset: usize, more: bool| {
        let mut h = vec![datagram.next_header, 0];
        h.extend_from_slice(&(((offset / 8) << 3) as u16 | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h
    };
    let mut first = header(0, true);
    first.extend_from_slice(&l4[..at]);
    let mut later = header(at, false);
    later.extend_from_slice(&l4[at..]);
    (
        ipv6_raw(&src, &dst, 44, &first),
        ipv6_raw(&src, &dst, 44, &later),
    )
}

// The benchmarks' frames (`cargo xtask bench`): a steady stream of one kind of segment.

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const BENCH_PAYLOAD: &[u8] = b"GET /live/stream.m3u8 HTTP/1.1\r\n\r\n";

/// A TCP header (data offset 5, the given flags) + the benchmarks' payload.
fn bench_tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + BENCH_PAYLOAD.len());
    l4.extend_from_slice(&src_port.to_be_bytes());
    l4.extend_from_slice(&dst_port.to_be_bytes());
    l4.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
    l4.extend_from_slice(&0u32.to_be_bytes()); // ack
    l4.extend_from_slice(&[0x50, flags]); // data offset 5
    l4.extend_from_slice(&64240u16.to_be_bytes()); // window
    l4.extend_from_slice(&[0xab, 0xcd, 0, 0]); // checksum (XDP never reads it), urgent
    l4.extend_from_slice(BENCH_PAYLOAD);
    l4
}

/// An IPv4 TCP segment (DF); `syn` for a connection's first packet, else a plain ACK.
pub fn tcp_v4(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16, syn: bool) -> Vec<u8> {
    let l4 = bench_tcp(src_port, dst_port, if syn { TCP_SYN } else { TCP_ACK });
    ipv4(src, dst, TCP, 0x4000, 0x1c46, &l4)
}

/// An IPv4 UDP datagram (DF) with a `payload_len`-byte payload.
pub fn udp_v4(
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    payload_len: usize,
) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload_len);
    l4.extend_from_slice(&src_port.to_be_bytes());
    l4.extend_from_slice(&dst_port.to_be_bytes());
    l4.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
    l4.resize(8 + payload_len, 0x47);
    ipv4(src, dst, UDP, 0x4000, 0x1c46, &l4)
}

/// An IPv6 TCP segment (SYN or ACK).
pub fn tcp_v6(src: Ipv6Addr, src_port: u16, dst: Ipv6Addr, dst_port: u16, syn: bool) -> Vec<u8> {
    let l4 = bench_tcp(src_port, dst_port, if syn { TCP_SYN } else { TCP_ACK });
    ipv6([0x60, 0x01, 0x23, 0x45], src, dst, TCP, &l4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_header_with_its_checksum_sums_to_zero() {
        let f = tcp_v4(
            "192.0.2.1".parse().unwrap(),
            1000,
            "10.0.0.100".parse().unwrap(),
            1935,
            true,
        );
        assert_eq!(checksum(&f[14..34]), 0);
        assert_eq!(f[14 + 20 + 13], TCP_SYN);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
    }
}
