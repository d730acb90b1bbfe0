//! Each CPU's cache of `service_by_vip` lookups (`service_cache`), packet by packet through
//! BPF_PROG_TEST_RUN (root only): a change to a service (a new Maglev table, the service
//! removed and another put on its VIP and port) is what the very next new flow on every
//! CPU sees, whatever that CPU cached before.

mod support;

use std::{net::IpAddr, thread};

use support::{frames::Ipv4Frame, harness::*};
use xdp_lb::config::Protocol;

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.168.1.50";
const BACKENDS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];
const OTHERS: [&str; 2] = ["10.0.0.21", "10.0.0.22"];

fn syn(port: u16) -> Vec<u8> {
    Ipv4Frame::tcp(CLIENT, port, VIP, 1935).build()
}

/// New flows from `ports` on this CPU, each where `want` says.
fn assert_new_flows_follow(
    h: &Harness,
    ports: std::ops::Range<u16>,
    cpu: usize,
    want: impl Fn(u16) -> IpAddr,
) {
    for port in ports {
        assert_eq!(
            h.sent_to(&h.run(&syn(port))),
            Some(want(port)),
            "new flow from port {port} on CPU {cpu}"
        );
    }
}

/// New flows from `ports` on every CPU, each where userspace predicts for `service`.
fn every_cpus_new_flows_follow(h: &Harness, service: &str, ports: std::ops::Range<u16>) {
    on_every_cpu(|cpu| {
        assert_new_flows_follow(h, ports.clone(), cpu, |p| h.predict(service, CLIENT, p))
    });
}

#[test]
fn a_new_maglev_table_is_what_the_next_new_flow_on_every_cpu_gets() {
    thread::spawn(|| {
        let mut h = Harness::new(&[service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS)]);
        // Every CPU caches the service (and its live table) with new flows.
        every_cpus_new_flows_follow(&h, "video-rtmp", 20_000..20_050);
        let before: Vec<IpAddr> = (21_000..21_300)
            .map(|p| h.predict("video-rtmp", CLIENT, p))
            .collect();
        // A fourth backend joins: one new table, in the service's other region, and a new
        // value in service_by_vip naming that region.
        let generation = h.balancer.service("video-rtmp").unwrap().generation;
        h.add_backend("video-rtmp", "10.0.0.14");
        assert_eq!(
            h.balancer.service("video-rtmp").unwrap().generation,
            generation + 1,
            "one table switch: the old region still holds the old table"
        );
        let moved = (21_000..21_300u16)
            .zip(&before)
            .filter(|(p, old)| h.predict("video-rtmp", CLIENT, *p) != **old)
            .count();
        assert!(
            moved > 40,
            "the change moves many of these flows ({moved} of 300)"
        );
        every_cpus_new_flows_follow(&h, "video-rtmp", 21_000..21_300);
    })
    .join()
    .unwrap();
}

#[test]
fn a_service_replaced_on_its_vip_and_port_takes_the_next_new_flow_on_every_cpu() {
    thread::spawn(|| {
        let mut h = Harness::new(&[service("video-rtmp", VIP, 1935, Protocol::Tcp, &BACKENDS)]);
        every_cpus_new_flows_follow(&h, "video-rtmp", 22_000..22_050);
        // The operator's reload: the service goes, another (its own backends and a table
        // of another size, in the regions the old one had or others) takes its VIP and port.
        h.balancer.remove_service("video-rtmp").unwrap();
        let mut ingest = service("ingest", VIP, 1935, Protocol::Tcp, &OTHERS);
        ingest.maglev_size = 251;
        h.balancer
            .add_service(&ingest, &Harness::loopback_forwarding)
            .unwrap();
        let id = h.balancer.service("ingest").unwrap().id;
        let counted = h.balancer.dataplane().service_counter(id).packets;
        let mut sent = 0;
        on_every_cpu(|cpu| {
            assert_new_flows_follow(&h, 22_000..22_100, cpu, |p| {
                let to = h.predict("ingest", CLIENT, p);
                assert!(OTHERS.contains(&to.to_string().as_str()));
                to
            });
            sent += 100;
        });
        assert_eq!(
            h.balancer.dataplane().service_counter(id).packets - counted,
            sent,
            "every new flow counted as the new service's"
        );
    })
    .join()
    .unwrap();
}
