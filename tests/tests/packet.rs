//! Packet-level tests of the XDP program through BPF_PROG_TEST_RUN (root only).
//!
//! Each fixture is a description, an input frame, the expected verdict and the expected
//! output frame, as in Katran's tester. The expected backend of a flow comes from
//! userspace's prediction (same flow hash, same seed, the table read back from the kernel),
//! so these tests fail if the service lookup, the Maglev fill or the MAC rewrite break.

mod support;

use std::{collections::BTreeMap, net::IpAddr};

use support::{
    frames::{self, Ipv4Frame, Ipv6Frame, LB_MAC},
    harness::*,
};
use xdp_lb::{
    balancer::Forwarding,
    config::{Backend, HashMode, MacAddr, NoBackendAction, Protocol},
    maglev::{self, MaglevBackend},
};
use xdp_lb_common::{FAMILY_IPV4, FAMILY_IPV6, addr_words, verdict, vip_filter_bit};

const VIP: &str = "10.0.0.100";
const VIP6: &str = "fd00::100";
const CLIENT: &str = "192.168.1.50";
const BACKENDS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];

fn video_lb() -> Harness {
    Harness::new(&[
        service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS),
        service("video-hls", VIP, 8080, Protocol::Tcp, &BACKENDS),
        service("video-srt", VIP, 9000, Protocol::Udp, &BACKENDS),
        service(
            "video-v6",
            VIP6,
            1935,
            Protocol::Tcp,
            &["fd00::11", "fd00::12"],
        ),
    ])
}

/// What the frame must look like after the program.
enum Expect {
    /// Byte for byte the input.
    Untouched,
    /// The input with the destination MAC set to this backend's and the source MAC to the LB's.
    RewrittenFor(IpAddr),
}

struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    action: u32,
    output: Expect,
}

fn rewritten(input: &[u8], backend: IpAddr) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&backend_mac(backend).0);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

fn check(h: &Harness, fixtures: Vec<Fixture>) {
    for f in fixtures {
        let run = h.run(&f.input);
        assert_eq!(run.action, f.action, "{}: verdict", f.description);
        let expected = match f.output {
            Expect::Untouched => f.input.clone(),
            Expect::RewrittenFor(backend) => rewritten(&f.input, backend),
        };
        assert_eq!(run.frame, expected, "{}: output frame", f.description);
    }
}

#[test]
fn service_frames_get_the_predicted_backends_mac_and_nothing_else_changes() {
    let h = video_lb();
    let with_options = Ipv4Frame {
        // Record-route style option bytes: the program must skip a 32-byte header.
        options: vec![0x07, 0x0b, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0x01],
        ..Ipv4Frame::tcp(CLIENT, 40001, VIP, 1935)
    };
    check(
        &h,
        vec![
            Fixture {
                description: "TCP SYN to the RTMP service",
                input: Ipv4Frame::tcp(CLIENT, 40000, VIP, 1935).build(),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("video-rtmp", CLIENT, 40000)),
            },
            Fixture {
                description: "TCP to the HLS service",
                input: Ipv4Frame::tcp(CLIENT, 40000, VIP, 8080).build(),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("video-hls", CLIENT, 40000)),
            },
            Fixture {
                description: "UDP to a UDP service",
                input: Ipv4Frame::udp(CLIENT, 5000, VIP, 9000).build(),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("video-srt", CLIENT, 5000)),
            },
            Fixture {
                description: "IPv4 with options (IHL 8)",
                input: with_options.build(),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("video-rtmp", CLIENT, 40001)),
            },
            Fixture {
                description: "IPv6 TCP to an IPv6 service",
                input: Ipv6Frame::tcp("fd00::50", 40000, VIP6, 1935).build(),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("video-v6", "fd00::50", 40000)),
            },
        ],
    );
}

#[test]
fn frames_that_are_not_for_a_service_pass_untouched() {
    let h = video_lb();
    let mut not_ip = Ipv4Frame::tcp(CLIENT, 40000, VIP, 1935).build();
    not_ip[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
    let icmp = Ipv4Frame {
        proto: frames::ICMP,
        ..Ipv4Frame::tcp(CLIENT, 0, VIP, 0)
    };
    check(
        &h,
        vec![
            Fixture {
                description: "SSH to the LB's own address",
                input: Ipv4Frame::tcp(CLIENT, 40000, "10.0.0.1", 22).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "the VIP on a port with no service",
                input: Ipv4Frame::tcp(CLIENT, 40000, VIP, 22).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "UDP to a TCP-only port",
                input: Ipv4Frame::udp(CLIENT, 40000, VIP, 1935).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "ARP request for the VIP",
                input: frames::arp_request(CLIENT, VIP),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "ICMP echo to the VIP",
                input: icmp.build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "a non-IP ethertype",
                input: not_ip,
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "IPv6 to an IPv4 service's port on another address",
                input: Ipv6Frame::tcp("fd00::50", 40000, "fd00::1", 1935).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
        ],
    );
    let v = h.verdicts();
    assert_eq!(v[verdict::PASS_NOT_SERVICE as usize].packets, 7);
    assert_eq!(v[verdict::TX as usize].packets, 0);
}

#[test]
fn a_service_s_port_on_an_address_that_is_no_vip_passes_before_the_connection_table() {
    let h = video_lb();
    // Not one of these (address, port) pairs shares a service's `vip_filter` bit: they take
    // the filter's path (a shared bit would take the lookups after it, to the same verdict).
    let bit = |a: &str, port: u16| {
        let addr: IpAddr = a.parse().expect("test address");
        let family = if addr.is_ipv4() {
            FAMILY_IPV4
        } else {
            FAMILY_IPV6
        };
        vip_filter_bit(&addr_words(addr), family, port.to_be())
    };
    let service_bits = [
        bit(VIP, 1935),
        bit(VIP, 8080),
        bit(VIP, 9000),
        bit(VIP6, 1935),
    ];
    for (a, port) in [
        ("10.0.0.200", 1935),
        ("10.0.0.1", 8080),
        ("10.0.0.200", 9000),
        ("fd00::200", 1935),
    ] {
        assert!(
            !service_bits.contains(&bit(a, port)),
            "{a} port {port} shares a service's vip_filter bit"
        );
    }
    let mut ack = Ipv4Frame::tcp(CLIENT, 40000, "10.0.0.200", 1935).build();
    ack[14 + 20 + 13] = 0x10; // ACK: a segment of an established connection, were it a VIP's
    check(
        &h,
        vec![
            Fixture {
                description: "SYN to a service's port on another address",
                input: Ipv4Frame::tcp(CLIENT, 40000, "10.0.0.200", 1935).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "ACK to a service's port on another address",
                input: ack,
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "TCP to a service's port on the LB's own address",
                input: Ipv4Frame::tcp(CLIENT, 40000, "10.0.0.1", 8080).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "UDP to a UDP service's port on another address",
                input: Ipv4Frame::udp(CLIENT, 40000, "10.0.0.200", 9000).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "IPv6 to an IPv6 service's port on another address",
                input: Ipv6Frame::tcp("fd00::50", 40000, "fd00::200", 1935).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
        ],
    );
    let v = h.verdicts();
    assert_eq!(v[verdict::PASS_NOT_SERVICE as usize].packets, 5);
    assert_eq!(v[verdict::TX as usize].packets, 0);
    assert!(
        h.flow_stats().iter().all(|c| c.packets == 0),
        "no connection-table event: {:?}",
        h.flow_stats()
    );
    assert!(h.balancer.dataplane().flows().is_empty());
    // To another host's MAC it is the same: the filter settles it before the MAC check.
    let mut flooded = Ipv4Frame::tcp(CLIENT, 40000, "10.0.0.200", 1935).build();
    flooded[0..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 0x42]);
    let run = h.run(&flooded);
    assert_eq!((run.action, &run.frame), (XDP_PASS, &flooded));
    assert_eq!(h.verdicts()[verdict::PASS_NOT_SERVICE as usize].packets, 6);
    assert_eq!(h.verdicts()[verdict::PASS_NOT_OUR_MAC as usize].packets, 0);
    // The VIP's own frames still pass the filter.
    assert_eq!(
        h.run(&Ipv4Frame::tcp(CLIENT, 40000, VIP, 1935).build())
            .action,
        XDP_TX
    );
    assert_eq!(
        h.run(&Ipv6Frame::tcp("fd00::50", 40000, VIP6, 1935).build())
            .action,
        XDP_TX
    );
}

#[test]
fn truncated_and_garbage_frames_pass_untouched_and_are_counted() {
    let h = video_lb();
    let good = Ipv4Frame::tcp(CLIENT, 40000, VIP, 1935).build();
    let good6 = Ipv6Frame::tcp("fd00::50", 40000, VIP6, 1935).build();
    let mut fixtures = Vec::new();
    // Every prefix of a service frame shorter than its TCP header is malformed. (Frames
    // shorter than an Ethernet header never reach XDP: BPF_PROG_TEST_RUN refuses them too.)
    let mut malformed = 0;
    for len in [14, 20, 33, 34, 40, 53] {
        fixtures.push(Fixture {
            description: "truncated IPv4 service frame",
            input: good[..len].to_vec(),
            action: XDP_PASS,
            output: Expect::Untouched,
        });
        malformed += 1;
    }
    for len in [20, 53, 60, 73] {
        fixtures.push(Fixture {
            description: "truncated IPv6 service frame",
            input: good6[..len].to_vec(),
            action: XDP_PASS,
            output: Expect::Untouched,
        });
        malformed += 1;
    }
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44; // IHL 4 (< 20 bytes)
    let mut ihl_past_end = Ipv4Frame::tcp(CLIENT, 40000, VIP, 1935).build();
    ihl_past_end[14] = 0x4f; // 60-byte header: the TCP header would start past the frame's end
    let mut version_6_in_ipv4 = good.clone();
    version_6_in_ipv4[14] = 0x65;
    for (description, input) in [
        ("IHL below 5", bad_ihl),
        ("IHL beyond the frame", ihl_past_end),
        ("IP version 6 in an IPv4 ethertype", version_6_in_ipv4),
    ] {
        fixtures.push(Fixture {
            description,
            input,
            action: XDP_PASS,
            output: Expect::Untouched,
        });
        malformed += 1;
    }
    check(&h, fixtures);

    let mut garbage_frames = 0;
    for seed in 1..=200u64 {
        let len = 14 + (seed as usize * 7) % 300;
        let input = frames::garbage(seed, len);
        let run = h.run(&input);
        assert_eq!(run.action, XDP_PASS, "garbage frame {seed}");
        assert_eq!(run.frame, input, "garbage frame {seed} changed");
        garbage_frames += 1;
    }
    // Garbage that happens to claim IPv4/IPv6 in its ethertype: random bytes hit neither.
    let ipv4_garbage: Vec<u8> = frames::ethernet(0x0800)
        .into_iter()
        .chain(frames::garbage(99, 60))
        .collect();
    assert_eq!(h.run(&ipv4_garbage).action, XDP_PASS);
    assert_eq!(h.run(&ipv4_garbage).frame, ipv4_garbage);

    let v = h.verdicts();
    assert!(
        v[verdict::PASS_MALFORMED as usize].packets as usize >= malformed,
        "every truncated or lying frame was counted as malformed"
    );
    assert_eq!(v[verdict::TX as usize].packets, 0, "nothing was forwarded");
    let total: u64 = v.iter().map(|c| c.packets).sum();
    assert_eq!(total as usize, malformed + garbage_frames + 2);
}

#[test]
fn flows_spread_over_every_backend_exactly_as_userspace_predicts() {
    let h = video_lb();
    let mut per_backend: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for port in 20000..20300u16 {
        let input = Ipv4Frame::tcp(CLIENT, port, VIP, 8080).build();
        let predicted = h.predict("video-hls", CLIENT, port);
        let run = h.run(&input);
        assert_eq!(run.action, XDP_TX);
        assert_eq!(
            run.frame,
            rewritten(&input, predicted),
            "source port {port}"
        );
        *per_backend.entry(predicted).or_default() += 1;
    }
    assert_eq!(
        per_backend.len(),
        3,
        "all three backends get flows: {per_backend:?}"
    );
    for (backend, n) in &per_backend {
        assert!(*n > 60, "backend {backend} got only {n} of 300 flows");
    }
    let hls = h.balancer.service("video-hls").expect("service");
    let stats = h.balancer.dataplane().service_counter(hls.id);
    assert_eq!(stats.packets, 300);
    let by_backend: u64 = hls
        .backends
        .values()
        .map(|b| h.balancer.dataplane().backend_counter(b.id).packets)
        .sum();
    assert_eq!(by_backend, 300);
    assert_eq!(h.verdicts()[verdict::TX as usize].packets, 300);
}

#[test]
fn the_kernel_table_is_the_maglev_table_of_the_configured_backends() {
    let h = video_lb();
    let state = h.balancer.service("video-rtmp").expect("service");
    let keys: Vec<(u32, Vec<u8>)> = state
        .backends
        .values()
        .map(|b| match b.config.address {
            IpAddr::V4(a) => (b.id, a.octets().to_vec()),
            IpAddr::V6(a) => (b.id, a.octets().to_vec()),
        })
        .collect();
    let members: Vec<MaglevBackend<'_>> = keys
        .iter()
        .map(|(id, key)| MaglevBackend {
            id: *id,
            key,
            weight: 1,
        })
        .collect();
    let expected = maglev::build_table(&members, 65537);
    assert_eq!(
        h.balancer.live_table("video-rtmp").expect("table"),
        expected
    );
}

#[test]
fn a_withdrawn_backend_loses_only_its_own_flows() {
    let mut h = video_lb();
    let ports: Vec<u16> = (30000..30300).collect();
    let before: Vec<IpAddr> = ports
        .iter()
        .map(|p| h.predict("video-rtmp", CLIENT, *p))
        .collect();
    let gone: IpAddr = BACKENDS[1].parse().unwrap();
    h.balancer
        .set_forwarding("video-rtmp", gone, None)
        .expect("withdraw");
    for (port, old) in ports.iter().zip(&before) {
        let input = Ipv4Frame::tcp(CLIENT, *port, VIP, 1935).build();
        let run = h.run(&input);
        assert_eq!(run.action, XDP_TX);
        let now = h.predict("video-rtmp", CLIENT, *port);
        assert_eq!(run.frame, rewritten(&input, now));
        assert_ne!(now, gone, "no flow goes to the withdrawn backend");
        if *old != gone {
            assert_eq!(
                now, *old,
                "a flow on a healthy backend stayed put (port {port})"
            );
        }
    }
    // Other services keep the backend.
    let hls_gets_it = (0..300u16).any(|p| h.predict("video-hls", CLIENT, 30000 + p) == gone);
    assert!(hls_gets_it);
}

#[test]
fn a_service_with_no_backend_drops_by_default_or_passes_when_configured() {
    let mut dropping = service("empty-drop", VIP, 1935, Protocol::Tcp, &[]);
    dropping.maglev_size = 251;
    let mut passing = service("empty-pass", VIP, 8080, Protocol::Tcp, &[]);
    passing.maglev_size = 251;
    passing.when_no_backend = NoBackendAction::Pass;
    let h = Harness::new(&[dropping, passing]);
    check(
        &h,
        vec![
            Fixture {
                description: "no backend, drop",
                input: Ipv4Frame::tcp(CLIENT, 1, VIP, 1935).build(),
                action: XDP_DROP,
                output: Expect::Untouched,
            },
            Fixture {
                description: "no backend, pass",
                input: Ipv4Frame::tcp(CLIENT, 1, VIP, 8080).build(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
        ],
    );
    let v = h.verdicts();
    assert_eq!(v[verdict::DROP_NO_BACKEND as usize].packets, 1);
    assert_eq!(v[verdict::PASS_NO_BACKEND as usize].packets, 1);
}

#[test]
fn unresolved_backends_get_no_flows_and_never_a_zero_mac() {
    let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    let only: IpAddr = BACKENDS[2].parse().unwrap();
    let h = Harness::with_forwarding(&[svc], &|b: &Backend| {
        (b.address == only).then(|| Forwarding {
            mac: backend_mac(b.address),
            src_mac: MacAddr(LB_MAC),
            ifindex: LOOPBACK_IFINDEX,
        })
    });
    for port in 1000..1100u16 {
        let input = Ipv4Frame::tcp(CLIENT, port, VIP, 1935).build();
        let run = h.run(&input);
        assert_eq!(run.action, XDP_TX);
        assert_eq!(run.frame, rewritten(&input, only));
    }
}

#[test]
fn a_backend_behind_another_interface_is_redirected_through_the_devmap() {
    let dummy = ScratchInterface::create();
    let svc = service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS);
    let ifindex = dummy.ifindex;
    let mut h = Harness::with_forwarding(&[svc], &|b: &Backend| {
        Some(Forwarding {
            mac: backend_mac(b.address),
            src_mac: MacAddr([0x02, 0xdd, 0, 0, 0, 1]),
            ifindex,
        })
    });
    let input = Ipv4Frame::tcp(CLIENT, 4242, VIP, 1935).build();
    // Not yet a redirect target: passed untouched rather than sent into the void.
    let run = h.run(&input);
    assert_eq!((run.action, &run.frame), (XDP_PASS, &input));
    assert_eq!(
        h.verdicts()[verdict::PASS_REDIRECT_FAILED as usize].packets,
        1
    );

    h.balancer
        .dataplane_mut()
        .add_tx_port(ifindex)
        .expect("tx port");
    let run = h.run(&input);
    assert_eq!(run.action, XDP_REDIRECT);
    let backend = h.predict("video-rtmp", CLIENT, 4242);
    let mut expected = input.clone();
    expected[0..6].copy_from_slice(&backend_mac(backend).0);
    expected[6..12].copy_from_slice(&[0x02, 0xdd, 0, 0, 0, 1]);
    assert_eq!(run.frame, expected);
}

/// A veth pair in the host namespace that carries no traffic (only its ifindex is used),
/// deleted on drop. (veth, because this kernel has no dummy driver.)
struct ScratchInterface {
    name: String,
    ifindex: u32,
}

impl ScratchInterface {
    fn create() -> Self {
        let name = format!("xlbd{}", std::process::id() % 100_000);
        let peer = format!("{name}p");
        let status = std::process::Command::new("ip")
            .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
            .status()
            .expect("running ip");
        assert!(status.success(), "ip link add {name} type veth");
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert_ne!(ifindex, 0);
        Self { name, ifindex }
    }
}

impl Drop for ScratchInterface {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}

fn vlan_lb() -> Harness {
    let mut on_vlan = service(
        "hls-vlan100",
        VIP,
        8080,
        Protocol::Tcp,
        &["10.0.0.21", "10.0.0.22"],
    );
    on_vlan.vlan = Some(100);
    Harness::new(&[
        on_vlan,
        service("hls-any", VIP, 8080, Protocol::Tcp, &BACKENDS),
    ])
}

#[test]
fn tagged_frames_are_balanced_with_their_vlan_tags_kept_as_they_are() {
    let h = vlan_lb();
    let plain = Ipv4Frame::tcp(CLIENT, 50000, VIP, 8080).build();
    check(
        &h,
        vec![
            Fixture {
                description: "802.1Q VLAN 100: the service bound to VLAN 100",
                input: frames::tagged(&plain, &[(0x8100, 100)]),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("hls-vlan100", CLIENT, 50000)),
            },
            Fixture {
                description: "QinQ, outer 802.1ad VLAN 100, inner 802.1Q VLAN 7",
                input: frames::tagged(&plain, &[(0x88a8, 100), (0x8100, 7)]),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("hls-vlan100", CLIENT, 50000)),
            },
            Fixture {
                description: "VLAN 300 (no service bound to it): the any-VLAN service",
                input: frames::tagged(&plain, &[(0x8100, 300)]),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("hls-any", CLIENT, 50000)),
            },
            Fixture {
                description: "untagged: the any-VLAN service",
                input: plain.clone(),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("hls-any", CLIENT, 50000)),
            },
            Fixture {
                description: "a tag cut short",
                input: frames::tagged(&plain, &[(0x8100, 100)])[..16].to_vec(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
        ],
    );
    assert!(
        ["10.0.0.21", "10.0.0.22"]
            .contains(&h.predict("hls-vlan100", CLIENT, 50000).to_string().as_str()),
        "the VLAN service has its own backends"
    );
}

#[test]
fn a_service_bound_to_one_vlan_ignores_frames_of_other_vlans() {
    let mut svc = service("hls-vlan100", VIP, 8080, Protocol::Tcp, &BACKENDS);
    svc.vlan = Some(100);
    let h = Harness::new(&[svc]);
    let plain = Ipv4Frame::tcp(CLIENT, 50001, VIP, 8080).build();
    check(
        &h,
        vec![
            Fixture {
                description: "VLAN 200",
                input: frames::tagged(&plain, &[(0x8100, 200)]),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "untagged",
                input: plain.clone(),
                action: XDP_PASS,
                output: Expect::Untouched,
            },
            Fixture {
                description: "VLAN 100",
                input: frames::tagged(&plain, &[(0x8100, 100)]),
                action: XDP_TX,
                output: Expect::RewrittenFor(h.predict("hls-vlan100", CLIENT, 50001)),
            },
        ],
    );
}

#[test]
fn source_hashing_sends_every_connection_of_a_client_to_one_backend_without_state() {
    let mut svc = service("video-hls", VIP, 8080, Protocol::Tcp, &BACKENDS);
    svc.hash = HashMode::Source;
    let h = Harness::new(&[svc]);
    let first = h.predict("video-hls", CLIENT, 1);
    for port in 20000..20100u16 {
        let input = Ipv4Frame::tcp(CLIENT, port, VIP, 8080).build();
        let run = h.run(&input);
        assert_eq!(
            run.frame,
            rewritten(&input, first),
            "connection from port {port}"
        );
    }
    let clients: std::collections::BTreeSet<IpAddr> = (1..=60u8)
        .map(|i| {
            let client = format!("192.168.3.{i}");
            let run = h.run(&Ipv4Frame::tcp(&client, 20000, VIP, 8080).build());
            assert_eq!(
                &run.frame[0..6],
                &backend_mac(h.predict("video-hls", &client, 1)).0
            );
            h.predict("video-hls", &client, 1)
        })
        .collect();
    assert_eq!(clients.len(), 3, "different clients still spread");
}

#[test]
fn frames_to_another_hosts_mac_pass_untouched_and_are_counted() {
    let h = video_lb();
    let ours = Ipv4Frame::tcp(CLIENT, 40000, VIP, 1935).build();
    let mut flooded = ours.clone();
    flooded[0..6].copy_from_slice(&[0x02, 0x99, 0, 0, 0, 0x42]);
    let mut broadcast = ours.clone();
    broadcast[0..6].copy_from_slice(&[0xff; 6]);
    for input in [flooded, broadcast] {
        let run = h.run(&input);
        assert_eq!(run.action, XDP_PASS);
        assert_eq!(run.frame, input, "passed untouched");
    }
    assert!(
        h.balancer.dataplane().flows().is_empty(),
        "a frame not addressed to the LB leaves no connection-table entry"
    );
    assert_eq!(h.verdicts()[verdict::PASS_NOT_OUR_MAC as usize].packets, 2);
    assert_eq!(
        h.run(&ours).action,
        XDP_TX,
        "the same frame to the LB's MAC"
    );
}

#[test]
fn an_interface_whose_ifindex_is_past_the_indexed_array_still_has_its_macs_checked() {
    // The LB's MAC on an interface of an ifindex too large for `local_macs_ix`, which
    // `local_macs` (the hash map) holds instead.
    const BIG_MAC: [u8; 6] = [0x02, 0x1b, 0, 0, 0x50, 0x00];
    const BIG_IFINDEX: u32 = xdp_lb_common::LOCAL_MACS_IX_SLOTS + 904;
    let ns = format!("xlb-ifx-{}", std::process::id());
    xdp_lb_tests::netns::add(&ns).unwrap();
    let made = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "add", "big", "index"])
        .arg(BIG_IFINDEX.to_string())
        .args(["type", "veth", "peer", "name", "big-peer"])
        .status()
        .unwrap();
    assert!(
        made.success(),
        "making an interface of ifindex {BIG_IFINDEX}"
    );
    let mut h = video_lb();
    h.balancer.set_local_interfaces([
        xdp_lb::balancer::LocalInterface {
            ifindex: LOOPBACK_IFINDEX,
            name: "lo".to_owned(),
            macs: vec![MacAddr(LB_MAC)],
        },
        xdp_lb::balancer::LocalInterface {
            ifindex: BIG_IFINDEX,
            name: "big".to_owned(),
            macs: vec![MacAddr(BIG_MAC)],
        },
    ]);
    h.balancer.sync_local_macs().unwrap();
    let to = |mac: [u8; 6], port: u16| {
        let mut frame = Ipv4Frame::tcp(CLIENT, port, VIP, 8080).build();
        frame[0..6].copy_from_slice(&mac);
        frame
    };
    let actions = xdp_lb_tests::netns::on_this_thread(&ns, || {
        [
            to(BIG_MAC, 42000),
            to(LB_MAC, 42001),
            to([0x02, 0x99, 0, 0, 0, 0x42], 42002),
        ]
        .map(|frame| h.run_on(&frame, BIG_IFINDEX).action)
    })
    .unwrap();
    xdp_lb_tests::netns::delete(&ns).unwrap();
    assert_eq!(actions, [XDP_PASS; 3]);
    let verdicts = h.verdicts();
    assert_eq!(
        verdicts[verdict::PASS_NOT_OUR_MAC as usize].packets,
        2,
        "frames there to another interface's MAC and to another host's are not the LB's"
    );
    // The backends are behind loopback, which `tx_ports` does not hold: the frame to the
    // interface's own MAC got past the check, to its backend's interface.
    assert_eq!(
        verdicts[verdict::PASS_REDIRECT_FAILED as usize].packets,
        1,
        "the frame to the interface's own MAC is the LB's"
    );
    assert_eq!(
        h.run(&to(LB_MAC, 42003)).action,
        XDP_TX,
        "the small ifindex's MACs are still the array's"
    );
}

#[test]
fn frames_to_a_vlan_devices_mac_are_balanced_while_the_lb_owns_that_mac() {
    // The MACs of two VLAN devices of the ingress interface.
    const VLAN_200_MAC: [u8; 6] = [0x02, 0x1b, 0, 0, 0x02, 0x00];
    const VLAN_300_MAC: [u8; 6] = [0x02, 0x1b, 0, 0, 0x03, 0x00];
    let mut h = video_lb();
    let to = |mac: [u8; 6], port: u16| {
        let mut frame = Ipv4Frame::tcp(CLIENT, port, VIP, 8080).build();
        frame[0..6].copy_from_slice(&mac);
        frame
    };
    assert_eq!(
        h.run(&to(VLAN_200_MAC, 41000)).action,
        XDP_PASS,
        "not ours yet"
    );

    // A backend added at run time, reached through the VLAN 200 device: its MAC is the LB's.
    let tagged = Backend {
        address: "10.0.0.14".parse().unwrap(),
        weight: 1,
        mac: None,
        vlan: None,
    };
    let through_device = Some(Forwarding {
        src_mac: MacAddr(VLAN_200_MAC),
        ..Harness::loopback_forwarding(&tagged).unwrap()
    });
    h.balancer
        .add_backend("video-hls", &tagged, through_device)
        .unwrap();
    h.balancer.sync_local_macs().unwrap();
    assert_eq!(h.run(&to(VLAN_200_MAC, 41001)).action, XDP_TX);

    // A VLAN device the agent reads on the interface, with no backend behind it.
    h.balancer
        .set_local_interfaces([xdp_lb::balancer::LocalInterface {
            ifindex: LOOPBACK_IFINDEX,
            name: "lo".to_owned(),
            macs: vec![MacAddr(LB_MAC), MacAddr(VLAN_300_MAC)],
        }]);
    h.balancer.sync_local_macs().unwrap();
    assert_eq!(h.run(&to(VLAN_300_MAC, 41002)).action, XDP_TX);

    // The backend gone, its device's MAC is no longer the LB's.
    h.balancer
        .remove_backend("video-hls", "10.0.0.14".parse().unwrap())
        .unwrap();
    h.balancer.sync_local_macs().unwrap();
    let gone = to(VLAN_200_MAC, 41003);
    let run = h.run(&gone);
    assert_eq!(run.action, XDP_PASS);
    assert_eq!(run.frame, gone, "passed untouched");
    assert_eq!(
        h.run(&to(LB_MAC, 41004)).action,
        XDP_TX,
        "the interface's own"
    );
    assert_eq!(h.verdicts()[verdict::PASS_NOT_OUR_MAC as usize].packets, 2);
}
