//! IP fragments of a service's datagrams, through BPF_PROG_TEST_RUN (root only): the
//! first fragment is balanced by its ports, the later ones follow it, and none of them may
//! reach the LB host's stack (which owns the VIP too).

mod support;

use std::{collections::BTreeSet, net::IpAddr, thread, time::Duration};

use support::{
    frames::{self, Ipv4Frame, Ipv6Frame, LB_MAC},
    harness::*,
};
use xdp_lb::config::{Protocol, Service};
use xdp_lb_common::verdict;

const VIP: &str = "10.0.0.100";
const VIP6: &str = "fd00::100";
const CLIENT: &str = "192.168.1.50";
const CLIENT6: &str = "fd00:c::50";
const BACKENDS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];

fn video_lb() -> Harness {
    Harness::new(&[
        service("video-srt", VIP, 9000, Protocol::Udp, &BACKENDS),
        service("video-hls", VIP, 8080, Protocol::Tcp, &BACKENDS),
        service(
            "video-v6",
            VIP6,
            9000,
            Protocol::Udp,
            &["fd00::11", "fd00::12", "fd00::13"],
        ),
    ])
}

fn rewritten(input: &[u8], backend: IpAddr) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&backend_mac(backend).0);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

/// A UDP video datagram too big for one frame.
fn srt_datagram(client_port: u16) -> Ipv4Frame {
    Ipv4Frame {
        payload: vec![0x47; 200],
        ..Ipv4Frame::udp(CLIENT, client_port, VIP, 9000)
    }
}

#[test]
fn a_first_fragment_is_balanced_by_its_ports_and_the_later_one_follows_it() {
    let h = video_lb();
    let mut used = BTreeSet::new();
    for (i, port) in (5000..5030u16).enumerate() {
        let id = 0x100 + i as u16;
        let (first, later) = frames::ipv4_fragments(&srt_datagram(port), id, 104);
        let expected = h.predict("video-srt", CLIENT, port);
        let run = h.run(&first);
        assert_eq!(run.action, XDP_TX, "first fragment, port {port}");
        assert_eq!(run.frame, rewritten(&first, expected), "port {port}");
        let run = h.run(&later);
        assert_eq!(run.action, XDP_TX, "later fragment, port {port}");
        assert_eq!(run.frame, rewritten(&later, expected), "port {port}");
        used.insert(expected);
    }
    assert_eq!(
        used.len(),
        3,
        "each datagram's fragments follow their own first"
    );
    // A TCP segment fragmented on the way (no DF) goes where its flow goes.
    let segment = Ipv4Frame {
        payload: vec![1; 100],
        frag: 0,
        ..Ipv4Frame::tcp(CLIENT, 40000, VIP, 8080)
    };
    let (first, later) = frames::ipv4_fragments(&segment, 0x7777, 48);
    let expected = h.predict("video-hls", CLIENT, 40000);
    assert_eq!(h.run(&first).frame, rewritten(&first, expected));
    assert_eq!(h.run(&later).frame, rewritten(&later, expected));
    let v = h.verdicts();
    assert_eq!(v[verdict::FRAGMENT_FIRST_FORWARDED as usize].packets, 31);
    assert_eq!(v[verdict::FRAGMENT_LATER_FORWARDED as usize].packets, 31);
    assert_eq!(v[verdict::PASS_FRAGMENT as usize].packets, 0);
}

#[test]
fn a_later_fragment_to_a_vip_without_its_first_is_dropped_and_counted_never_passed() {
    let h = video_lb();
    let (first, later) = frames::ipv4_fragments(&srt_datagram(6000), 0x4242, 104);
    let run = h.run(&later);
    assert_eq!(run.action, XDP_DROP, "its first fragment was not seen");
    // The same datagram id from another client is another datagram.
    let (_, stranger) = frames::ipv4_fragments(
        &Ipv4Frame {
            src: "192.168.1.51".parse().unwrap(),
            ..srt_datagram(6000)
        },
        0x4242,
        104,
    );
    assert_eq!(h.run(&first).action, XDP_TX);
    assert_eq!(h.run(&stranger).action, XDP_DROP);
    assert_eq!(
        h.verdicts()[verdict::DROP_FRAGMENT_UNKNOWN as usize].packets,
        2
    );
    // Fragments to the host's own address, and of a big ping to the VIP, are the host's.
    let (_, own) = frames::ipv4_fragments(
        &Ipv4Frame {
            dst: "10.0.0.1".parse().unwrap(),
            ..srt_datagram(6000)
        },
        0x4343,
        104,
    );
    let ping_rest = frames::ipv4_raw(CLIENT, VIP, frames::ICMP, 0x00b9, 0x4444, &[0; 64]);
    for input in [own, ping_rest] {
        let run = h.run(&input);
        assert_eq!(run.action, XDP_PASS);
        assert_eq!(run.frame, input);
    }
    assert_eq!(h.verdicts()[verdict::PASS_FRAGMENT as usize].packets, 2);
}

#[test]
fn a_later_fragment_after_its_first_fragments_entry_expired_is_dropped() {
    let h = video_lb();
    let (first, later) = frames::ipv4_fragments(&srt_datagram(6100), 0x5151, 104);
    assert_eq!(h.run(&first).action, XDP_TX);
    thread::sleep(
        Duration::from_nanos(xdp_lb_common::FRAGMENT_TIMEOUT_NS) + Duration::from_millis(200),
    );
    assert_eq!(h.run(&later).action, XDP_DROP);
}

#[test]
fn ipv6_fragments_follow_their_first_like_ipv4() {
    let h = video_lb();
    for port in 7000..7010u16 {
        let datagram = Ipv6Frame {
            next_header: frames::UDP,
            payload: vec![0x47; 200],
            ..Ipv6Frame::tcp(CLIENT6, port, VIP6, 9000)
        };
        let (first, later) = frames::ipv6_fragments(&datagram, 0xabcd_0000 + u32::from(port), 96);
        let expected = h.predict("video-v6", CLIENT6, port);
        assert_eq!(
            h.run(&first).frame,
            rewritten(&first, expected),
            "port {port}"
        );
        let run = h.run(&later);
        assert_eq!(run.action, XDP_TX, "port {port}");
        assert_eq!(run.frame, rewritten(&later, expected), "port {port}");
    }
    let (_, orphan) = frames::ipv6_fragments(
        &Ipv6Frame {
            next_header: frames::UDP,
            payload: vec![0x47; 200],
            ..Ipv6Frame::tcp(CLIENT6, 7100, VIP6, 9000)
        },
        1,
        96,
    );
    assert_eq!(h.run(&orphan).action, XDP_DROP);
    let v = h.verdicts();
    assert_eq!(v[verdict::FRAGMENT_FIRST_FORWARDED as usize].packets, 10);
    assert_eq!(v[verdict::FRAGMENT_LATER_FORWARDED as usize].packets, 10);
    assert_eq!(v[verdict::DROP_FRAGMENT_UNKNOWN as usize].packets, 1);
}

#[test]
fn a_vip_added_at_run_time_has_its_fragments_and_icmp_errors_handled_and_a_removed_one_not() {
    const NEW_VIP: &str = "10.0.0.200";
    let mut h = video_lb();
    // As a reload or `xdp-lb service add` does, on a data plane already running.
    let added = Service {
        maglev_size: 251,
        ..service("srt-new", NEW_VIP, 9000, Protocol::Udp, &BACKENDS)
    };
    h.balancer
        .add_service(&added, &Harness::loopback_forwarding)
        .unwrap();
    let datagram = |port: u16| Ipv4Frame {
        payload: vec![0x47; 200],
        ..Ipv4Frame::udp(CLIENT, port, NEW_VIP, 9000)
    };

    // Its later fragment without a first is a backend's, never the host's.
    let (_, orphan) = frames::ipv4_fragments(&datagram(6200), 0x6200, 104);
    assert_eq!(h.run(&orphan).action, XDP_DROP, "to the new VIP");
    let (first, later) = frames::ipv4_fragments(&datagram(6201), 0x6201, 104);
    let expected = h.predict("srt-new", CLIENT, 6201);
    assert_eq!(h.run(&first).frame, rewritten(&first, expected));
    assert_eq!(h.run(&later).frame, rewritten(&later, expected));

    // A router's frag-needed about the new VIP's datagram to a client reaches its backend.
    let sent = Ipv4Frame {
        payload: vec![0x47; 1400],
        ..Ipv4Frame::udp(NEW_VIP, 9000, CLIENT, 6202)
    };
    let quoted = frames::ip_packet(&sent.build());
    let error = frames::icmpv4_error("192.168.0.1", NEW_VIP, 3, 4, 1400, &quoted[..548]);
    let run = h.run(&error);
    assert_eq!(run.action, XDP_TX, "frag-needed to the new VIP");
    assert_eq!(
        run.frame,
        rewritten(&error, h.predict("srt-new", CLIENT, 6202))
    );

    // Removed, the address is the host's again: its fragments pass.
    h.balancer.remove_service("srt-new").unwrap();
    let (_, orphan) = frames::ipv4_fragments(&datagram(6203), 0x6203, 104);
    let run = h.run(&orphan);
    assert_eq!(run.action, XDP_PASS, "to the removed VIP");
    assert_eq!(run.frame, orphan);
    let v = h.verdicts();
    assert_eq!(v[verdict::DROP_FRAGMENT_UNKNOWN as usize].packets, 1);
    assert_eq!(v[verdict::ICMP_TOO_BIG_FORWARDED as usize].packets, 1);
    assert_eq!(v[verdict::PASS_FRAGMENT as usize].packets, 1);
}
