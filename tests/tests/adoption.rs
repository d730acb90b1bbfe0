//! Restart paths through the real data plane (root only): a second agent on the same pins,
//! with another config and with or without the first one's snapshot, keeps every live flow
//! on its backend, claims services by listener, and sends new flows where its config says.

mod support;

use std::{collections::BTreeMap, net::IpAddr};

use support::{frames::Ipv4Frame, harness::*, scratch_pins::ScratchPins};
use xdp_lb::{
    balancer::{Balancer, adopt::Snapshot},
    config::{Backend, FlowTable, Protocol, Service},
    dataplane::{Dataplane, LoadOptions, LogLevel},
};
use xdp_lb_common::{PROTO_TCP, ServiceKey, flow_stat, verdict};

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.168.1.50";
const BACKENDS: [&str; 3] = ["10.0.0.11", "10.0.0.12", "10.0.0.13"];

/// An agent's start on `pins`: adopt what is pinned (with `snapshot`), add `services` in
/// name order, finish adoption, as `agent::run` does.
fn start(
    pins: &ScratchPins,
    services: &[Service],
    snapshot: Option<Snapshot>,
    forwarding: &dyn Fn(&Backend) -> Option<xdp_lb::balancer::Forwarding>,
) -> Harness {
    let dataplane = Dataplane::load_pinned(
        &LoadOptions {
            flow_hash_seed: SEED,
            maglev_table_slots: 8 * 65537,
            flow_table: FlowTable::default(),
            log_level: LogLevel::Warn,
        },
        Some(pins.0.clone()),
    )
    .expect("load");
    let adopted = dataplane.adopted();
    let mut balancer = Balancer::new(dataplane, SEED);
    if adopted {
        balancer.adopt(snapshot);
    }
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for s in sorted {
        balancer
            .add_service(s, forwarding)
            .expect("adding a service");
    }
    balancer.finish_adoption();
    Harness { balancer }
}

fn rtmp(name: &str, maglev_size: u32, backends: &[&str]) -> Service {
    let mut s = service(name, VIP, 1935, Protocol::Tcp, backends);
    s.maglev_size = maglev_size;
    s
}

fn syn(port: u16) -> Vec<u8> {
    Ipv4Frame::tcp(CLIENT, port, VIP, 1935).build()
}

fn ack(port: u16) -> Vec<u8> {
    let mut f = syn(port);
    f[14 + 20 + 13] = 0x10;
    f
}

/// The backend a frame went to, by the MAC written into it (whatever the agent knows).
fn mac_target(run: &Run) -> IpAddr {
    assert_eq!(run.action, XDP_TX, "not forwarded");
    BACKENDS
        .iter()
        .chain(["10.0.0.14", "10.0.0.15"].iter())
        .map(|a| a.parse::<IpAddr>().unwrap())
        .find(|a| backend_mac(*a).0 == run.frame[0..6])
        .expect("a known backend MAC")
}

/// Opens flows from `ports`; where each went.
fn open(h: &Harness, ports: std::ops::Range<u16>) -> BTreeMap<u16, IpAddr> {
    ports
        .map(|p| {
            let to = mac_target(&h.run(&syn(p)));
            // The handshake's ACK creates the entry.
            assert_eq!(mac_target(&h.run(&ack(p))), to);
            (p, to)
        })
        .collect()
}

/// Flows from `ports` opened through a first agent on `pins` serving video-rtmp (251 slots,
/// the three backends); the agent then goes, leaving its pins.
fn first_agent_flows(pins: &ScratchPins, ports: std::ops::Range<u16>) -> BTreeMap<u16, IpAddr> {
    let h = start(
        pins,
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    open(&h, ports)
}

fn assert_flows_kept(h: &Harness, flows: &BTreeMap<u16, IpAddr>) {
    for (port, backend) in flows {
        assert_eq!(
            mac_target(&h.run(&ack(*port))),
            *backend,
            "live flow from port {port} moved"
        );
    }
    assert_eq!(h.flow_stats()[flow_stat::STALE as usize].packets, 0);
}

#[test]
fn a_renamed_resized_service_keeps_every_live_flow_across_a_restart_without_its_snapshot() {
    let pins = ScratchPins::new("rename");
    let flows = first_agent_flows(&pins, 30000..30200);
    // New name, new table size, one more backend, no snapshot: only the pinned maps say
    // whose each backend id is.
    let mut backends = BACKENDS.to_vec();
    backends.push("10.0.0.14");
    let h = start(
        &pins,
        &[rtmp("live-rtmp", 509, &backends)],
        None,
        &Harness::loopback_forwarding,
    );
    assert_flows_kept(&h, &flows);
    let key = ServiceKey::new(VIP.parse().unwrap(), 1935, PROTO_TCP);
    assert_eq!(
        h.balancer.dataplane().service(&key).unwrap().table_size,
        509
    );
    for port in 31000..31200 {
        assert_eq!(
            h.sent_to(&h.run(&syn(port))),
            Some(h.predict("live-rtmp", CLIENT, port)),
            "a new flow follows the new table"
        );
    }
}

#[test]
fn a_restart_removes_a_service_no_longer_configured_and_adds_a_new_one_keeping_the_others() {
    let pins = ScratchPins::new("gone");
    let hls = service("video-hls", VIP, 8080, Protocol::Tcp, &BACKENDS);
    let (flows, snapshot) = {
        let h = start(
            &pins,
            &[rtmp("video-rtmp", 251, &BACKENDS), hls],
            None,
            &Harness::loopback_forwarding,
        );
        (open(&h, 32000..32100), h.balancer.snapshot())
    };
    let dash = service("video-dash", VIP, 8443, Protocol::Tcp, &BACKENDS[..2]);
    let h = start(
        &pins,
        &[rtmp("video-rtmp", 251, &BACKENDS), dash],
        Some(snapshot),
        &Harness::loopback_forwarding,
    );
    assert_flows_kept(&h, &flows);
    let hls_key = ServiceKey::new(VIP.parse().unwrap(), 8080, PROTO_TCP);
    assert_eq!(
        h.balancer.dataplane().service(&hls_key),
        None,
        "video-hls removed"
    );
    let before = h.verdicts()[verdict::PASS_NOT_SERVICE as usize].packets;
    assert_eq!(
        h.run(&Ipv4Frame::tcp(CLIENT, 33000, VIP, 8080).build())
            .action,
        XDP_PASS
    );
    assert_eq!(
        h.verdicts()[verdict::PASS_NOT_SERVICE as usize].packets,
        before + 1
    );
    let to = h.sent_to(&h.run(&Ipv4Frame::tcp(CLIENT, 33001, VIP, 8443).build()));
    assert_eq!(
        to,
        Some(h.predict("video-dash", CLIENT, 33001)),
        "the new service balances"
    );
}

#[test]
fn new_backends_after_a_restart_without_snapshot_never_take_a_pinned_epoch() {
    let pins = ScratchPins::new("epochs");
    let (flows, old_epochs) = {
        let h = start(
            &pins,
            &[rtmp("video-rtmp", 251, &BACKENDS)],
            None,
            &Harness::loopback_forwarding,
        );
        let epochs: Vec<u32> = h
            .balancer
            .service("video-rtmp")
            .unwrap()
            .backends
            .values()
            .map(|b| b.epoch)
            .collect();
        (open(&h, 34000..34100), epochs)
    };
    // Every server replaced: the new ones may get the old ids, never the old epochs.
    let h = start(
        &pins,
        &[rtmp("video-rtmp", 251, &["10.0.0.14", "10.0.0.15"])],
        None,
        &Harness::loopback_forwarding,
    );
    let max_old = old_epochs.iter().max().copied().unwrap();
    for b in h.balancer.service("video-rtmp").unwrap().backends.values() {
        assert!(
            b.epoch > max_old,
            "epoch {} reused (old up to {max_old})",
            b.epoch
        );
    }
    for port in flows.keys() {
        let to = mac_target(&h.run(&ack(*port)));
        assert_eq!(
            to,
            h.predict("video-rtmp", CLIENT, *port),
            "flow {port} balanced afresh"
        );
    }
    assert_eq!(
        h.flow_stats()[flow_stat::STALE as usize].packets,
        flows.len() as u64
    );
}

#[test]
fn a_backend_whose_arp_is_slow_at_start_keeps_its_pinned_mac_and_its_flows() {
    let pins = ScratchPins::new("mac");
    let flows = first_agent_flows(&pins, 35000..35100);
    // Nothing resolves this time.
    let h = start(&pins, &[rtmp("video-rtmp", 251, &BACKENDS)], None, &|_| {
        None
    });
    assert_flows_kept(&h, &flows);
}

#[test]
fn a_server_down_before_the_restart_stays_down_and_keeps_its_flows() {
    let pins = ScratchPins::new("down");
    let (flows, down) = {
        let mut h = start(
            &pins,
            &[rtmp("video-rtmp", 251, &BACKENDS)],
            None,
            &Harness::loopback_forwarding,
        );
        let flows = open(&h, 36000..36100);
        let down: IpAddr = BACKENDS[1].parse().unwrap();
        h.balancer.set_health("video-rtmp", down, false).unwrap();
        (flows, down)
    };
    let h = start(
        &pins,
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    assert!(!h.balancer.service("video-rtmp").unwrap().backends[&down].healthy);
    assert_flows_kept(&h, &flows);
    for port in 37000..37200 {
        assert_ne!(
            h.sent_to(&h.run(&syn(port))),
            Some(down),
            "a new flow to the down server"
        );
    }
}

/// An agent adopting the pins of a version whose data plane had a map this one no longer
/// has (`service_ports`) keeps every live flow and removes that map's pin.
#[test]
fn an_upgrade_keeps_the_flows_and_removes_the_pin_of_a_retired_map() {
    let pins = ScratchPins::new("retired");
    let flows = first_agent_flows(&pins, 33000..33100);
    // The older version's port bitmap: any pinned array stands in for it.
    let retired = pins.0.map(xdp_lb_common::map_names::RETIRED_SERVICE_PORTS);
    let map = aya::maps::MapData::from_pin(pins.0.map(xdp_lb_common::map_names::BACKENDS)).unwrap();
    map.pin(&retired).unwrap();
    assert!(retired.exists());
    let h = start(
        &pins,
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    assert!(h.balancer.dataplane().adopted());
    assert!(!retired.exists(), "the retired map's pin is gone");
    assert_flows_kept(&h, &flows);
}
