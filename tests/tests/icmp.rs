//! ICMP errors about the packets the backends send from the VIP, through
//! BPF_PROG_TEST_RUN (root only). With direct server return a router's "fragmentation
//! needed" (or ICMPv6 "packet too big") about a backend's packet comes back to the VIP,
//! i.e. to the LB: it must reach the backend that owns the client's flow, or path MTU
//! discovery stalls the download.

mod support;

use std::net::IpAddr;

use support::{
    frames::{self, Ipv4Frame, Ipv6Frame, LB_MAC},
    harness::*,
};
use xdp_lb::config::Protocol;
use xdp_lb_common::{
    FAMILY_IPV4, FlowKey, FlowValue, PROTO_TCP, addr_words, flow_hash::ports_word, port_raw,
    verdict,
};

const VIP: &str = "10.0.0.100";
const VIP6: &str = "fd00::100";
const CLIENT: &str = "192.168.1.50";
const CLIENT6: &str = "fd00:c::50";
const ROUTER: &str = "192.168.0.1";
const ROUTER6: &str = "fd00:1::1";
const BACKENDS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_UNREACHABLE: u8 = 1;

fn video_lb() -> Harness {
    Harness::new(&[
        service("video-hls", VIP, 8080, Protocol::Tcp, &BACKENDS),
        service("video-srt", VIP, 9000, Protocol::Udp, &BACKENDS),
        service(
            "video-v6",
            VIP6,
            8080,
            Protocol::Tcp,
            &["fd00::11", "fd00::12", "fd00::13"],
        ),
    ])
}

/// The big HLS segment packet a backend sent from the VIP to the client, as a router
/// quotes it back (Linux quotes up to 576 bytes of it).
fn segment_packet(client_port: u16) -> Vec<u8> {
    let segment = Ipv4Frame {
        payload: vec![0x47; 1400],
        ..Ipv4Frame::tcp(VIP, 8080, CLIENT, client_port)
    };
    frames::ip_packet(&segment.build())[..576 - 28].to_vec()
}

fn frag_needed(client_port: u16) -> Vec<u8> {
    frames::icmpv4_error(
        ROUTER,
        VIP,
        ICMP_UNREACHABLE,
        ICMP_FRAG_NEEDED,
        1400,
        &segment_packet(client_port),
    )
}

fn rewritten(input: &[u8], backend: IpAddr) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&backend_mac(backend).0);
    out[6..12].copy_from_slice(&LB_MAC);
    out
}

fn hls_key(client_port: u16) -> FlowKey {
    FlowKey {
        src: addr_words(CLIENT.parse().unwrap()),
        dst: addr_words(VIP.parse().unwrap()),
        ports: ports_word(port_raw(client_port), port_raw(8080)),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        vlan: 0,
    }
}

#[test]
fn frag_needed_about_a_known_flow_goes_to_that_flows_backend_with_only_the_macs_changed() {
    let mut h = video_lb();
    let syn = Ipv4Frame::tcp(CLIENT, 40000, VIP, 8080).build();
    let first = h.sent_to(&h.run(&syn)).expect("the flow is balanced");
    // The handshake's ACK creates the flow's entry (a SYN creates none).
    let mut ack = syn.clone();
    ack[14 + 20 + 13] = 0x10;
    assert_eq!(h.sent_to(&h.run(&ack)), Some(first), "ACK after SYN");
    // Put the flow on another backend than the one Maglev names, as a flow placed before a
    // table change is: only its connection-table entry knows where it is.
    let other: IpAddr = BACKENDS
        .iter()
        .map(|a| a.parse().unwrap())
        .find(|a| *a != first)
        .unwrap();
    let other_id = h.balancer.service("video-hls").unwrap().backends[&other].id;
    let epoch = h.balancer.dataplane().backend(other_id).unwrap().epoch;
    let mut entry = h.balancer.dataplane().flow(&hls_key(40000)).unwrap();
    entry = FlowValue {
        backend_id: other_id,
        backend_epoch: epoch,
        ..entry
    };
    h.balancer
        .dataplane_mut()
        .set_flow(&hls_key(40000), entry)
        .unwrap();

    let input = frag_needed(40000);
    let run = h.run(&input);
    assert_eq!(run.action, XDP_TX, "frag-needed about a known flow");
    assert_eq!(
        run.frame,
        rewritten(&input, other),
        "sent whole to the flow's backend, only the MACs rewritten"
    );
    assert_eq!(h.balancer.dataplane().flow(&hls_key(40000)), Some(entry));
    assert_eq!(
        h.verdicts()[verdict::ICMP_TOO_BIG_FORWARDED as usize].packets,
        1
    );
}

#[test]
fn frag_needed_about_an_unknown_flow_goes_to_the_backend_maglev_predicts_and_creates_no_entry() {
    let h = video_lb();
    let mut used = std::collections::BTreeSet::new();
    for port in 41000..41060u16 {
        let input = frag_needed(port);
        let run = h.run(&input);
        assert_eq!(run.action, XDP_TX, "port {port}");
        let expected = h.predict("video-hls", CLIENT, port);
        assert_eq!(run.frame, rewritten(&input, expected), "port {port}");
        assert!(
            h.balancer.dataplane().flow(&hls_key(port)).is_none(),
            "an ICMP error creates no connection-table entry"
        );
        used.insert(expected);
    }
    assert_eq!(
        used.len(),
        3,
        "the errors follow the flows to every backend"
    );
    let v = h.verdicts();
    assert_eq!(v[verdict::ICMP_TOO_BIG_FORWARDED as usize].packets, 60);
    assert_eq!(v[verdict::TX as usize].packets, 0);
}

#[test]
fn other_destination_unreachable_errors_follow_their_flow_too_udp_included() {
    let h = video_lb();
    let datagram = Ipv4Frame::udp(VIP, 9000, CLIENT, 5000).build();
    // Port unreachable (code 3) from the client itself, quoting 8 bytes of UDP only.
    let embedded = &frames::ip_packet(&datagram)[..28];
    let input = frames::icmpv4_error(CLIENT, VIP, ICMP_UNREACHABLE, 3, 0, embedded);
    let run = h.run(&input);
    assert_eq!(run.action, XDP_TX);
    assert_eq!(
        run.frame,
        rewritten(&input, h.predict("video-srt", CLIENT, 5000))
    );
    assert_eq!(
        h.verdicts()[verdict::ICMP_UNREACHABLE_FORWARDED as usize].packets,
        1
    );
}

#[test]
fn icmp_errors_that_name_no_service_flow_pass_untouched_and_are_counted() {
    let h = video_lb();
    let whole = segment_packet(42000);
    // The IP header and 4 bytes of TCP: both ports, but less than the 8 bytes RFC 792 asks.
    let truncated = [
        frames::icmpv4_error(ROUTER, VIP, 3, 4, 1400, &whole[..24]),
        frames::icmpv4_error(ROUTER, VIP, 3, 4, 1400, &whole[..12]),
    ];
    let ssh_from_vip = frames::ip_packet(&Ipv4Frame::tcp(VIP, 22, CLIENT, 42000).build());
    let from_lb_host = frames::ip_packet(&Ipv4Frame::tcp("10.0.0.1", 8080, CLIENT, 42000).build());
    let ping_from_vip = frames::ip_packet(
        &Ipv4Frame {
            proto: frames::ICMP,
            ..Ipv4Frame::tcp(VIP, 0, CLIENT, 0)
        }
        .build(),
    );
    let not_service = [
        frames::icmpv4_error(ROUTER, VIP, 3, 4, 1400, &ssh_from_vip),
        frames::icmpv4_error(ROUTER, "10.0.0.1", 3, 4, 1400, &from_lb_host),
        frames::icmpv4_error(ROUTER, VIP, 3, 4, 1400, &ping_from_vip),
    ];
    for input in truncated.iter().chain(&not_service) {
        let run = h.run(input);
        assert_eq!(run.action, XDP_PASS);
        assert_eq!(&run.frame, input, "passed untouched");
    }
    // Other ICMP to the VIP (time exceeded, echo) is the host's, as before.
    let time_exceeded = frames::icmpv4_error(ROUTER, VIP, 11, 0, 0, &whole);
    assert_eq!(h.run(&time_exceeded).action, XDP_PASS);
    let v = h.verdicts();
    assert_eq!(v[verdict::PASS_ICMP_TRUNCATED as usize].packets, 2);
    assert_eq!(v[verdict::PASS_ICMP_NOT_SERVICE as usize].packets, 3);
    assert_eq!(v[verdict::PASS_NOT_SERVICE as usize].packets, 1);
}

#[test]
fn icmpv6_packet_too_big_goes_to_the_flows_backend_and_a_truncated_one_passes() {
    let h = video_lb();
    let syn = Ipv6Frame::tcp(CLIENT6, 40000, VIP6, 8080).build();
    let placed = h.sent_to(&h.run(&syn)).unwrap();
    for (port, expected) in [
        (40000, placed),
        (40001, h.predict("video-v6", CLIENT6, 40001)),
    ] {
        let segment = Ipv6Frame {
            payload: vec![0x47; 1400],
            ..Ipv6Frame::tcp(VIP6, 8080, CLIENT6, port)
        };
        let embedded = &frames::ip_packet(&segment.build())[..1280 - 48];
        let input = frames::icmpv6_error(ROUTER6, VIP6, ICMPV6_PACKET_TOO_BIG, 1280, embedded);
        let run = h.run(&input);
        assert_eq!(run.action, XDP_TX, "port {port}");
        assert_eq!(run.frame, rewritten(&input, expected), "port {port}");
    }
    let segment = frames::ip_packet(&Ipv6Frame::tcp(VIP6, 8080, CLIENT6, 40000).build());
    let unreachable = frames::icmpv6_error(ROUTER6, VIP6, ICMPV6_UNREACHABLE, 0, &segment);
    assert_eq!(h.run(&unreachable).action, XDP_TX);
    let truncated =
        frames::icmpv6_error(ROUTER6, VIP6, ICMPV6_PACKET_TOO_BIG, 1280, &segment[..44]);
    let run = h.run(&truncated);
    assert_eq!(run.action, XDP_PASS);
    assert_eq!(run.frame, truncated);
    let v = h.verdicts();
    assert_eq!(v[verdict::ICMP_TOO_BIG_FORWARDED as usize].packets, 2);
    assert_eq!(v[verdict::ICMP_UNREACHABLE_FORWARDED as usize].packets, 1);
    assert_eq!(v[verdict::PASS_ICMP_TRUNCATED as usize].packets, 1);
}

#[test]
fn an_icmp_error_on_a_vlan_goes_to_the_backend_of_the_flow_on_that_vlan_tags_kept() {
    let mut vlan_hls = service("video-hls", VIP, 8080, Protocol::Tcp, &BACKENDS);
    vlan_hls.vlan = Some(100);
    let h = Harness::new(&[vlan_hls]);
    let input = frames::tagged(&frag_needed(43000), &[(0x8100, 100)]);
    let run = h.run(&input);
    assert_eq!(run.action, XDP_TX);
    assert_eq!(
        run.frame,
        rewritten(&input, h.predict("video-hls", CLIENT, 43000))
    );
    let other_vlan = frames::tagged(&frag_needed(43000), &[(0x8100, 200)]);
    assert_eq!(h.run(&other_vlan).action, XDP_PASS);
}
