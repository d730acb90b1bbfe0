//! The `dsr` check: the path a client's connection takes. A TCP SYN to VIP:port, from the
//! LB's own address, framed by hand to the server's MAC (an AF_PACKET frame, as the data
//! plane forwards a client's SYN), must be answered by a SYN-ACK *from the VIP*. A server
//! that lacks the VIP on `lo` (the classic LVS/DR mistake) drops the frame and passes every
//! check of its own address while failing every balanced session; it fails this one.
//!
//! Half-open: after the SYN-ACK the check resets the connection itself (and the LB's kernel,
//! which has no such socket, answers the SYN-ACK with a RST too). A RST from the VIP means
//! the server has the VIP but nothing listens on the port: down as well.
//!
//! IPv4 and IPv6 alike: an IPv6 VIP is probed from the LB's own IPv6 address on the
//! server's link (the SYN's header has no extension headers, and the answer is matched on a
//! plain IPv6 + TCP header too, which is what a server sends).

use std::{
    io, mem,
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use super::check::{Check, Deadline, Link, Outcome, random_u64};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HEADER: usize = 14;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const IPPROTO_TCP: u8 = 6;
const TCP_HEADER: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// Source ports of the probes: the top of the ephemeral range, where the LB's own
/// connections rarely are (and a clash only costs one check).
const PROBE_PORTS: std::ops::Range<u16> = 61000..65000;

/// A `dsr` check: a SYN to `vip`:`port` framed for the server at `link`.
pub(super) struct Dsr<'a> {
    pub link: &'a Link,
    pub vip: IpAddr,
    pub port: u16,
}

impl Check for Dsr<'_> {
    async fn run(self, deadline: &Deadline) -> Outcome {
        syn(deadline, self.link, self.vip, self.port).await
    }
}

async fn syn(deadline: &Deadline, link: &Link, vip: IpAddr, port: u16) -> Outcome {
    let source = link.source;
    if vip.is_ipv4() != source.is_ipv4() {
        return Err(format!(
            "the LB has no {} address on the server's link to probe {vip} from (it has {source})",
            if vip.is_ipv4() { "IPv4" } else { "IPv6" }
        ));
    }
    let probe = Probe {
        link,
        vip,
        source,
        port,
        source_port: PROBE_PORTS.start
            + (random_u64() % u64::from(PROBE_PORTS.end - PROBE_PORTS.start)) as u16,
        isn: random_u64() as u32,
    };
    let socket = deadline
        .run("opening a packet socket", async { probe.socket() })
        .await?;
    deadline
        .run("sending the SYN", async {
            probe.send(&socket, TCP_SYN, probe.isn, 0)
        })
        .await?;
    let answer = deadline
        .run("waiting for the VIP's SYN-ACK", probe.answer(&socket))
        .await
        .map_err(|why| format!("{why}: is the VIP on the server's lo?"))?;
    if answer.flags & TCP_RST != 0 {
        return Err(format!(
            "{vip}:{port} answered RST: the server holds the VIP but nothing listens there"
        ));
    }
    // Half-open: reset it, so the server does not keep retransmitting its SYN-ACK.
    let _ = probe.send(&socket, TCP_RST | TCP_ACK, probe.isn.wrapping_add(1), 0);
    Ok(format!("SYN-ACK from {vip}:{port}"))
}

/// One probe's addresses and sequence number.
struct Probe<'a> {
    link: &'a Link,
    /// The VIP and the LB's own address: both IPv4 or both IPv6.
    vip: IpAddr,
    source: IpAddr,
    port: u16,
    source_port: u16,
    isn: u32,
}

/// A TCP segment from the VIP to the probe.
struct Answer {
    flags: u8,
}

impl Probe<'_> {
    /// An AF_PACKET socket on the server's interface that receives only TCP segments from
    /// VIP:port to the probe's port (a classic BPF filter, attached before the socket is
    /// bound so no other frame is ever queued).
    fn socket(&self) -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let filter = self.filter();
        let filter = filter.as_slice();
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: `program` points at `filter`, alive for the call; the kernel copies it.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&raw const program).cast(),
                mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        })?;
        let address = self.link_address();
        // SAFETY: `address` is a valid sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: the AsyncFd owns the descriptor; nothing else closes or replaces it.
        unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
    }

    fn link_address(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = self.ethertype().to_be();
        address.sll_ifindex = self.link.ifindex as i32;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&self.link.mac.0);
        address
    }

    fn ethertype(&self) -> u16 {
        if self.vip.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        }
    }

    /// Accepts TCP from VIP:port to our port (IPv4 with any header length, IPv6 with TCP
    /// right after the fixed header), drops everything else.
    fn filter(&self) -> Vec<libc::sock_filter> {
        const LD_H_ABS: u16 = 0x28;
        const LD_B_ABS: u16 = 0x30;
        const LD_W_ABS: u16 = 0x20;
        const LDX_B_MSH: u16 = 0xb1;
        const LD_H_IND: u16 = 0x48;
        const JEQ_K: u16 = 0x15;
        const RET_K: u16 = 0x06;
        // (opcode, k, whether it is a test that drops the frame when false).
        let mut steps: Vec<(u16, u32, bool)> = vec![(LD_H_ABS, 12, false)];
        match self.vip {
            IpAddr::V4(vip) => {
                steps.extend([
                    (JEQ_K, u32::from(ETH_P_IP), true),
                    (LD_B_ABS, 23, false),
                    (JEQ_K, u32::from(IPPROTO_TCP), true),
                    (LD_W_ABS, 26, false),
                    (JEQ_K, u32::from(vip), true),
                    (LDX_B_MSH, 14, false),
                    (LD_H_IND, 14, false),
                    (JEQ_K, u32::from(self.port), true),
                    (LD_H_IND, 16, false),
                    (JEQ_K, u32::from(self.source_port), true),
                ]);
            }
            IpAddr::V6(vip) => {
                steps.extend([
                    (JEQ_K, u32::from(ETH_P_IPV6), true),
                    (LD_B_ABS, 20, false),
                    (JEQ_K, u32::from(IPPROTO_TCP), true),
                ]);
                let octets = vip.octets();
                for (i, word) in octets.chunks(4).enumerate() {
                    let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                    steps.extend([(LD_W_ABS, 22 + 4 * i as u32, false), (JEQ_K, word, true)]);
                }
                let tcp = (ETH_HEADER + IPV6_HEADER) as u32;
                steps.extend([
                    (LD_H_ABS, tcp, false),
                    (JEQ_K, u32::from(self.port), true),
                    (LD_H_ABS, tcp + 2, false),
                    (JEQ_K, u32::from(self.source_port), true),
                ]);
            }
        }
        // Every failed test jumps to the last instruction (drop).
        let drop_at = steps.len() + 1;
        let mut filter: Vec<libc::sock_filter> = steps
            .iter()
            .enumerate()
            .map(|(i, &(code, k, test))| libc::sock_filter {
                code,
                jt: 0,
                jf: if test { (drop_at - i - 1) as u8 } else { 0 },
                k,
            })
            .collect();
        filter.push(libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0xffff,
        });
        filter.push(libc::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        });
        filter
    }

    fn send(&self, socket: &AsyncFd<OwnedFd>, flags: u8, seq: u32, ack: u32) -> io::Result<()> {
        let frame = self.frame(flags, seq, ack);
        let address = self.link_address();
        // SAFETY: `frame` and `address` are valid for the sizes given.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ethernet to the server's MAC from the LB's, IP from the LB's address to the VIP, TCP
    /// to the service port.
    fn frame(&self, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
        let mut f = Vec::with_capacity(ETH_HEADER + IPV6_HEADER + TCP_HEADER);
        f.extend_from_slice(&self.link.mac.0);
        f.extend_from_slice(&self.link.src_mac.0);
        f.extend_from_slice(&self.ethertype().to_be_bytes());
        let mut tcp = [0u8; TCP_HEADER];
        tcp[0..2].copy_from_slice(&self.source_port.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.port.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = ((TCP_HEADER / 4) as u8) << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        // The pseudo-header: addresses, protocol and TCP length (RFC 793 and RFC 8200 8.1;
        // the sum is the same whatever the order and width of its zero-padded fields).
        let (source, vip) = (octets(self.source), octets(self.vip));
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(&source);
        pseudo.extend_from_slice(&vip);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&(TCP_HEADER as u16).to_be_bytes());
        let sum = checksum(&tcp, sum_words(&pseudo, 0));
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        if self.vip.is_ipv4() {
            let mut ip = [0u8; IPV4_HEADER];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((IPV4_HEADER + TCP_HEADER) as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = IPPROTO_TCP;
            ip[12..16].copy_from_slice(&source);
            ip[16..20].copy_from_slice(&vip);
            let sum = checksum(&ip, 0);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ip);
        } else {
            let mut ip = [0u8; IPV6_HEADER];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(TCP_HEADER as u16).to_be_bytes());
            ip[6] = IPPROTO_TCP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&source);
            ip[24..40].copy_from_slice(&vip);
            f.extend_from_slice(&ip);
        }
        f.extend_from_slice(&tcp);
        f
    }

    /// The first segment from the VIP that answers our SYN (a SYN-ACK or a RST
    /// acknowledging it).
    async fn answer(&self, socket: &AsyncFd<OwnedFd>) -> io::Result<Answer> {
        let mut buf = [0u8; 256];
        loop {
            let mut ready = socket.readable().await?;
            let read = ready.try_io(|fd| {
                // SAFETY: `buf` is valid for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let Ok(read) = read else { continue };
            if let Some(answer) = self.parse(&buf[..read?]) {
                return Ok(answer);
            }
        }
    }

    fn parse(&self, frame: &[u8]) -> Option<Answer> {
        let ip = frame.get(ETH_HEADER..)?;
        let (to, header) = match *ip.first()? >> 4 {
            4 => (ip.get(16..20)?, usize::from(ip[0] & 0x0f) * 4),
            6 => (ip.get(24..40)?, IPV6_HEADER),
            _ => return None,
        };
        if to != octets(self.source).as_slice() {
            return None;
        }
        let tcp = ip.get(header..header + TCP_HEADER)?;
        let flags = tcp[13];
        let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
        let answers_syn = flags & TCP_ACK != 0 && ack == self.isn.wrapping_add(1);
        let syn_ack = flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
        (answers_syn && (syn_ack || flags & TCP_RST != 0) && flags & TCP_FIN == 0)
            .then_some(Answer { flags })
    }
}

/// An address's bytes in network order (4 or 16).
fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sum_words(bytes: &[u8], mut sum: u32) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    sum
}

/// The Internet checksum of `bytes`, starting from the partial sum `start`.
fn checksum(bytes: &[u8], start: u32) -> u16 {
    let mut sum = sum_words(bytes, start);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MacAddr;

    fn link() -> Link {
        Link {
            ifindex: 3,
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            source: "10.0.0.1".parse().unwrap(),
        }
    }

    fn probe(link: &Link) -> Probe<'_> {
        Probe {
            link,
            vip: "10.0.0.100".parse().unwrap(),
            source: "10.0.0.1".parse().unwrap(),
            port: 1935,
            source_port: 61234,
            isn: 1000,
        }
    }

    #[test]
    fn the_syn_frame_has_valid_checksums_and_goes_to_the_servers_mac_and_the_vip() {
        let link = link();
        let f = probe(&link).frame(TCP_SYN, 1000, 0);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[30..34], &[10, 0, 0, 100]);
        // A header with its checksum in place sums to zero.
        assert_eq!(checksum(&f[14..34], 0), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&f[26..30]);
        pseudo[4..8].copy_from_slice(&f[30..34]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(checksum(&f[34..54], sum_words(&pseudo, 0)), 0);
        assert_eq!(f[34 + 13], TCP_SYN);
    }

    #[test]
    fn only_a_syn_ack_or_rst_acknowledging_the_syn_is_an_answer() {
        let link = link();
        let p = probe(&link);
        let reply = |flags: u8, ack: u32| {
            let mut f = vec![0u8; 54];
            f[14] = 0x45;
            f[30..34].copy_from_slice(&[10, 0, 0, 1]);
            f[34 + 8..34 + 12].copy_from_slice(&ack.to_be_bytes());
            f[34 + 13] = flags;
            f
        };
        assert!(p.parse(&reply(TCP_SYN | TCP_ACK, 1001)).is_some());
        assert!(p.parse(&reply(TCP_RST | TCP_ACK, 1001)).is_some());
        assert!(p.parse(&reply(TCP_SYN | TCP_ACK, 5)).is_none());
        assert!(p.parse(&reply(TCP_ACK, 1001)).is_none());
    }

    fn probe6(link: &Link) -> Probe<'_> {
        Probe {
            link,
            vip: "fd00::100".parse().unwrap(),
            source: "fd00::1".parse().unwrap(),
            port: 8080,
            source_port: 61234,
            isn: 1000,
        }
    }

    #[test]
    fn the_ipv6_syn_frame_has_a_valid_checksum_and_goes_to_the_vip() {
        let link = link();
        let p = probe6(&link);
        let f = p.frame(TCP_SYN, 1000, 0);
        assert_eq!(f.len(), 14 + 40 + 20);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(f[14 + 6], 6, "next header TCP");
        assert_eq!(&f[14 + 24..14 + 40], &octets(p.vip)[..]);
        // The IPv6 pseudo-header (RFC 8200 8.1) with the checksum in place sums to zero.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[14 + 8..14 + 40]);
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        assert_eq!(checksum(&f[54..74], sum_words(&pseudo, 0)), 0);
        assert_eq!(f[54 + 13], TCP_SYN);
    }

    #[test]
    fn an_ipv6_syn_ack_to_the_lb_is_an_answer_and_one_to_another_address_is_not() {
        let link = link();
        let p = probe6(&link);
        let reply = |to: &str, flags: u8, ack: u32| {
            let mut f = vec![0u8; 74];
            f[14] = 0x60;
            let to: std::net::Ipv6Addr = to.parse().unwrap();
            f[14 + 24..14 + 40].copy_from_slice(&to.octets());
            f[54 + 8..54 + 12].copy_from_slice(&ack.to_be_bytes());
            f[54 + 13] = flags;
            f
        };
        assert!(
            p.parse(&reply("fd00::1", TCP_SYN | TCP_ACK, 1001))
                .is_some()
        );
        assert!(
            p.parse(&reply("fd00::2", TCP_SYN | TCP_ACK, 1001))
                .is_none()
        );
        assert!(p.parse(&reply("fd00::1", TCP_SYN | TCP_ACK, 7)).is_none());
    }

    #[test]
    fn every_failed_test_of_the_filters_jumps_to_the_drop() {
        let link = link();
        for p in [probe(&link), probe6(&link)] {
            let filter = p.filter();
            let last = filter.len() - 1;
            assert_eq!((filter[last].code, filter[last].k), (0x06, 0));
            assert_eq!((filter[last - 1].code, filter[last - 1].k), (0x06, 0xffff));
            for (i, op) in filter.iter().enumerate().take(last - 1) {
                if op.code == 0x15 {
                    assert_eq!(i + 1 + usize::from(op.jf), last, "test {i}");
                    assert_eq!(op.jt, 0);
                }
            }
        }
    }
}
