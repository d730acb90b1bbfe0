//! The flow hash: one implementation, compiled into the data plane and the agent alike, so
//! userspace predicts exactly which Maglev slot (and so which backend) a flow gets.
//!
//! Contract: the inputs are the packet's own bytes read as native-endian words. An address
//! is its 4 (IPv4) or 16 (IPv6) network-order bytes as `u32`s; `ports` is the source port's
//! two network-order bytes as a native `u16` in the low half and the destination port's in
//! the high half. The function is MurmurHash3's 32-bit block mix and finaliser over those
//! words, keyed by the seed from the config: cheap in BPF (multiplies and rotates, no loop
//! that depends on data) and well spread.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix(h: u32, word: u32) -> u32 {
    let k = word.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32, words: u32) -> u32 {
    h ^= words * 4;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Packs two ports as read from a TCP/UDP header (network-order bytes as native `u16`s).
#[inline(always)]
pub fn ports_word(src_port_raw: u16, dst_port_raw: u16) -> u32 {
    (src_port_raw as u32) | ((dst_port_raw as u32) << 16)
}

/// Flow hash of an IPv4 5-tuple.
#[inline(always)]
pub fn flow_hash_v4(src: u32, dst: u32, ports: u32, proto: u8, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, src);
    h = mix(h, dst);
    h = mix(h, ports);
    h = mix(h, proto as u32);
    finish(h, 4)
}

/// Flow hash of an IPv6 5-tuple.
#[inline(always)]
pub fn flow_hash_v6(src: &[u32; 4], dst: &[u32; 4], ports: u32, proto: u8, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    h = mix(h, ports);
    h = mix(h, proto as u32);
    finish(h, 10)
}

/// Source hash (`hash: source`): the client address alone, so every connection of a client
/// gets the same slot without any per-client state.
#[inline(always)]
pub fn source_hash(src: &[u32; 4], family_v4: bool, seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, src[0]);
    if family_v4 {
        return finish(h, 1);
    }
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    finish(h, 4)
}

/// An address as the data plane's words (see the module contract).
pub fn addr_words(addr: core::net::IpAddr) -> [u32; 4] {
    match addr {
        core::net::IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        core::net::IpAddr::V6(v6) => {
            let o = v6.octets();
            [
                u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
                u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
                u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
                u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
            ]
        }
    }
}

/// The address the data plane's words hold, in `family` (`FAMILY_IPV4`: word 0 only): the
/// inverse of [`addr_words`].
pub fn addr_from_words(words: &[u32; 4], family: u8) -> core::net::IpAddr {
    if family == crate::FAMILY_IPV4 {
        return core::net::IpAddr::from(words[0].to_ne_bytes());
    }
    let mut octets = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        octets[4 * i..4 * i + 4].copy_from_slice(&b);
        i += 1;
    }
    core::net::IpAddr::from(octets)
}

/// A port as the data plane reads it: its network-order bytes as a native `u16`.
pub fn port_raw(port: u16) -> u16 {
    u16::from_ne_bytes(port.to_be_bytes())
}

/// The port a data-plane `u16` holds: the inverse of [`port_raw`].
pub fn port_from_raw(raw: u16) -> u16 {
    u16::from_be_bytes(raw.to_ne_bytes())
}

/// The flow hash the data plane computes for a packet from `src`:`src_port` to
/// `dst`:`dst_port` (userspace's prediction). `None` when the families differ.
pub fn flow_hash(
    src: core::net::IpAddr,
    src_port: u16,
    dst: core::net::IpAddr,
    dst_port: u16,
    proto: u8,
    seed: u32,
) -> Option<u32> {
    let ports = ports_word(port_raw(src_port), port_raw(dst_port));
    match (src, dst) {
        (core::net::IpAddr::V4(_), core::net::IpAddr::V4(_)) => Some(flow_hash_v4(
            addr_words(src)[0],
            addr_words(dst)[0],
            ports,
            proto,
            seed,
        )),
        (core::net::IpAddr::V6(_), core::net::IpAddr::V6(_)) => Some(flow_hash_v6(
            &addr_words(src),
            &addr_words(dst),
            ports,
            proto,
            seed,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MurmurHash3_x86_32 of the 16 bytes 00..0f with seed 0 (reference implementation).
    #[test]
    fn matches_reference_murmur3_on_sixteen_bytes() {
        let words = [0x0302_0100u32, 0x0706_0504, 0x0b0a_0908, 0x0f0e_0d0c];
        let h = flow_hash_v4(words[0], words[1], words[2], words[3] as u8, 0);
        // proto is a single byte, so compare against the reference over the same words.
        let mut r = 0u32;
        for w in [words[0], words[1], words[2], words[3] & 0xff] {
            r = mix(r, w);
        }
        assert_eq!(h, finish(r, 4));
        // The reference value of MurmurHash3_x86_32("\0\x01...\x0f", seed 0).
        let mut full = 0u32;
        for w in words {
            full = mix(full, w);
        }
        assert_eq!(finish(full, 4), 0x1915_73dd);
    }

    #[test]
    fn seed_changes_the_hash() {
        let a = flow_hash_v4(1, 2, 3, 6, 0);
        let b = flow_hash_v4(1, 2, 3, 6, 1);
        assert_ne!(a, b);
    }

    #[test]
    fn every_field_of_the_tuple_matters() {
        let base = flow_hash_v4(0x0a00_0001, 0x0a00_0064, ports_word(1000, 80), 6, 7);
        assert_ne!(
            base,
            flow_hash_v4(0x0a00_0002, 0x0a00_0064, ports_word(1000, 80), 6, 7)
        );
        assert_ne!(
            base,
            flow_hash_v4(0x0a00_0001, 0x0a00_0065, ports_word(1000, 80), 6, 7)
        );
        assert_ne!(
            base,
            flow_hash_v4(0x0a00_0001, 0x0a00_0064, ports_word(1001, 80), 6, 7)
        );
        assert_ne!(
            base,
            flow_hash_v4(0x0a00_0001, 0x0a00_0064, ports_word(1000, 81), 6, 7)
        );
        assert_ne!(
            base,
            flow_hash_v4(0x0a00_0001, 0x0a00_0064, ports_word(1000, 80), 17, 7)
        );
        let v6 = flow_hash_v6(&[1, 2, 3, 4], &[5, 6, 7, 8], 9, 6, 7);
        assert_ne!(v6, flow_hash_v6(&[1, 2, 3, 5], &[5, 6, 7, 8], 9, 6, 7));
        assert_ne!(v6, flow_hash_v6(&[1, 2, 3, 4], &[5, 6, 7, 9], 9, 6, 7));
    }
}
