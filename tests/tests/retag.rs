//! Backends on another VLAN than their service's, through BPF_PROG_TEST_RUN (root only).
//!
//! Every frame the data plane forwards to such a backend (a flow's packets, new and
//! remembered, an ICMP error about its flow, a datagram's first and later fragments)
//! leaves with its outer tag's VLAN id rewritten to the backend's, its priority bits and
//! any inner tag as they came. A backend on its service's VLAN gets the tag untouched.

mod support;

use std::{collections::BTreeSet, net::IpAddr};

use support::{
    frames::{self, Ipv4Frame, LB_MAC, outer_vid, tagged_tci, tci, with_outer_vid},
    harness::*,
};
use xdp_lb::config::Protocol;
use xdp_lb_common::{flow_stat, verdict};

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.168.1.50";
/// The service's clients come on VLAN 100; this backend is on VLAN 200.
const ON_200: &str = "10.0.0.21";
/// On the service's VLAN (no `vlan` of its own).
const ON_100: &str = "10.0.0.22";
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `hls` (TCP) and `srt` (UDP) bound to VLAN 100, each with a backend on VLAN 200 and one
/// on VLAN 100.
fn retag_lb() -> Harness {
    let on_vlan_100 = |name, port, protocol| {
        let mut s = service(name, VIP, port, protocol, &[ON_200, ON_100]);
        s.vlan = Some(100);
        s.backends[0].vlan = Some(200);
        s
    };
    Harness::new(&[
        on_vlan_100("hls", 8080, Protocol::Tcp),
        on_vlan_100("srt", 9000, Protocol::Udp),
    ])
}

/// What `input` must look like at `backend`: its MACs rewritten, and its outer VLAN id
/// 200 when the backend is the one on VLAN 200.
fn expected(input: &[u8], backend: IpAddr) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&backend_mac(backend).0);
    out[6..12].copy_from_slice(&LB_MAC);
    if backend == addr(ON_200) {
        out = with_outer_vid(&out, 200);
    }
    out
}

/// A client's TCP segment to `hls` tagged VLAN 100 with priority 5 and DEI set; `flags`
/// the TCP flags byte.
fn hls_segment(client_port: u16, flags: u8) -> Vec<u8> {
    let mut plain = Ipv4Frame::tcp(CLIENT, client_port, VIP, 8080).build();
    plain[14 + 20 + 13] = flags;
    tagged_tci(&plain, &[(ETH_P_8021Q, tci(5, true, 100))])
}

/// A client port whose flow the Maglev table gives to `backend`.
fn port_for(h: &Harness, service: &str, backend: &str) -> u16 {
    (40000..41000)
        .find(|port| h.predict(service, CLIENT, *port) == addr(backend))
        .expect("some port reaches each backend")
}

#[test]
fn a_flows_packets_leave_with_the_backends_vlan_and_their_priority_kept() {
    let h = retag_lb();
    let mut seen = BTreeSet::new();
    for port in 40000..40040u16 {
        let backend = h.predict("hls", CLIENT, port);
        // The SYN is placed by the table, the handshake's ACK creates the entry, the next
        // segment is a connection-table hit: each must leave tagged for its backend.
        for (what, flags) in [("SYN", 0x02), ("ACK", 0x10), ("data", 0x18)] {
            let input = hls_segment(port, flags);
            let run = h.run(&input);
            assert_eq!(run.action, XDP_TX, "{what} from port {port}");
            assert_eq!(
                run.frame,
                expected(&input, backend),
                "{what} from port {port} to {backend}"
            );
        }
        seen.insert(backend);
    }
    assert_eq!(seen.len(), 2, "both backends were used: {seen:?}");
    let hits = h.flow_stats()[flow_stat::HIT as usize].packets;
    assert_eq!(hits, 40, "every flow's third segment was a table hit");
    // The tag's priority (5) and DEI survive the rewrite.
    let port = port_for(&h, "hls", ON_200);
    let run = h.run(&hls_segment(port, 0x18));
    assert_eq!(
        u16::from_be_bytes([run.frame[14], run.frame[15]]),
        tci(5, true, 200)
    );
}

#[test]
fn in_qinq_only_the_outer_tag_takes_the_backends_vlan() {
    let h = retag_lb();
    for backend in [ON_200, ON_100] {
        let port = port_for(&h, "hls", backend);
        let plain = Ipv4Frame::tcp(CLIENT, port, VIP, 8080).build();
        let input = tagged_tci(
            &plain,
            &[
                (ETH_P_8021AD, tci(3, false, 100)),
                (ETH_P_8021Q, tci(1, false, 7)),
            ],
        );
        let run = h.run(&input);
        assert_eq!(run.action, XDP_TX);
        assert_eq!(run.frame, expected(&input, addr(backend)), "to {backend}");
        assert_eq!(&run.frame[16..20], &input[16..20], "the inner tag is kept");
    }
}

#[test]
fn a_backend_on_the_services_vlan_gets_the_tag_as_it_came() {
    let h = retag_lb();
    let port = port_for(&h, "hls", ON_100);
    let input = hls_segment(port, 0x02);
    let run = h.run(&input);
    assert_eq!(run.action, XDP_TX);
    assert_eq!(&run.frame[12..], &input[12..], "every byte after the MACs");
    assert_eq!(outer_vid(&run.frame), 100);
}

#[test]
fn an_icmp_error_about_a_flow_reaches_its_backend_on_the_backends_vlan() {
    let h = retag_lb();
    for backend in [ON_200, ON_100] {
        let port = port_for(&h, "hls", backend);
        let segment = Ipv4Frame {
            payload: vec![0x47; 1400],
            ..Ipv4Frame::tcp(VIP, 8080, CLIENT, port)
        };
        let quoted = &frames::ip_packet(&segment.build())[..548];
        let error = frames::icmpv4_error("192.168.0.1", VIP, 3, 4, 1400, quoted);
        let input = tagged_tci(&error, &[(ETH_P_8021Q, tci(6, false, 100))]);
        let run = h.run(&input);
        assert_eq!(run.action, XDP_TX, "frag-needed about a flow on {backend}");
        assert_eq!(run.frame, expected(&input, addr(backend)), "to {backend}");
    }
    let v = h.verdicts();
    assert_eq!(v[verdict::ICMP_TOO_BIG_FORWARDED as usize].packets, 2);
}

#[test]
fn a_datagrams_fragments_reach_its_backend_on_the_backends_vlan() {
    let h = retag_lb();
    for (i, backend) in [ON_200, ON_100].into_iter().enumerate() {
        let port = port_for(&h, "srt", backend);
        let datagram = Ipv4Frame {
            payload: vec![0x47; 200],
            ..Ipv4Frame::udp(CLIENT, port, VIP, 9000)
        };
        let (first, later) = frames::ipv4_fragments(&datagram, 0x500 + i as u16, 104);
        for (what, fragment) in [("first", first), ("later", later)] {
            let input = tagged_tci(&fragment, &[(ETH_P_8021Q, tci(2, false, 100))]);
            let run = h.run(&input);
            assert_eq!(run.action, XDP_TX, "{what} fragment to {backend}");
            assert_eq!(
                run.frame,
                expected(&input, addr(backend)),
                "{what} fragment to {backend}"
            );
        }
    }
    let v = h.verdicts();
    assert_eq!(v[verdict::FRAGMENT_FIRST_FORWARDED as usize].packets, 2);
    assert_eq!(v[verdict::FRAGMENT_LATER_FORWARDED as usize].packets, 2);
}

#[test]
fn a_backend_moved_to_another_vlan_at_run_time_keeps_its_flows_on_the_new_vlan() {
    let mut h = retag_lb();
    let port = port_for(&h, "hls", ON_100);
    for flags in [0x02, 0x10] {
        h.run(&hls_segment(port, flags));
    }
    h.balancer
        .set_vlan("hls", addr(ON_100), Some(300))
        .expect("setting the VLAN");
    let run = h.run(&hls_segment(port, 0x18));
    assert_eq!(run.action, XDP_TX);
    assert_eq!(
        &run.frame[0..6],
        &backend_mac(addr(ON_100)).0,
        "same backend"
    );
    assert_eq!(outer_vid(&run.frame), 300);
    h.balancer
        .set_vlan("hls", addr(ON_100), None)
        .expect("back to the service's VLAN");
    assert_eq!(outer_vid(&h.run(&hls_segment(port, 0x18)).frame), 100);
}
