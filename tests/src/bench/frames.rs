//! The frames the per-packet benchmark feeds the program: Ethernet + IPv4 or IPv6 + TCP,
//! with valid IPv4 header checksums, and garbage.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The client's MAC (source of every frame) and the LB's (destination).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x00, 0x00, 0x00, 0x02];
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0x00, 0x00, 0x00, 0x01];

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const PAYLOAD: &[u8] = b"GET /live/stream.m3u8 HTTP/1.1\r\n\r\n";

fn ethernet(ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + PAYLOAD.len());
    l4.extend_from_slice(&src_port.to_be_bytes());
    l4.extend_from_slice(&dst_port.to_be_bytes());
    l4.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
    l4.extend_from_slice(&0u32.to_be_bytes()); // ack
    l4.extend_from_slice(&[0x50, flags]); // data offset 5
    l4.extend_from_slice(&64240u16.to_be_bytes()); // window
    l4.extend_from_slice(&[0xab, 0xcd, 0, 0]); // checksum (XDP never reads it), urgent
    l4.extend_from_slice(PAYLOAD);
    l4
}

/// An IPv4 TCP segment; `syn` for a connection's first packet, else a plain ACK.
pub fn tcp_v4(src: Ipv4Addr, src_port: u16, dst: Ipv4Addr, dst_port: u16, syn: bool) -> Vec<u8> {
    let l4 = tcp(src_port, dst_port, if syn { TCP_SYN } else { TCP_ACK });
    ipv4(src, dst, 6, &l4)
}

/// An IPv4 UDP datagram with a `payload_len`-byte payload.
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
    ipv4(src, dst, 17, &l4)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&0x1c46u16.to_be_bytes()); // id
    ip.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip.extend_from_slice(&[64, proto, 0, 0]); // ttl, protocol, checksum
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut frame = ethernet(0x0800);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(l4);
    frame
}

/// An IPv6 TCP segment (SYN or ACK).
pub fn tcp_v6(src: Ipv6Addr, src_port: u16, dst: Ipv6Addr, dst_port: u16, syn: bool) -> Vec<u8> {
    let l4 = tcp(src_port, dst_port, if syn { TCP_SYN } else { TCP_ACK });
    let mut frame = ethernet(0x86dd);
    frame.extend_from_slice(&[0x60, 0x01, 0x23, 0x45]);
    frame.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[6, 64]); // TCP, hop limit
    frame.extend_from_slice(&src.octets());
    frame.extend_from_slice(&dst.octets());
    frame.extend_from_slice(&l4);
    frame
}

/// `len` deterministic pseudo-random bytes (xorshift64 from `seed`).
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

/// The Internet checksum.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
