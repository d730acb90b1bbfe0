//! Pinned maps (root only): a second data plane loaded on the same pins takes over the
//! first one's services, tables and connection table; pins of another entry layout are refused
//! (a connection table of another size or flavour is moved instead: `adoption.rs`).

mod support;

use support::{frames::Ipv4Frame, harness::*, scratch_pins::ScratchPins};
use xdp_lb::{
    balancer::Balancer,
    config::{FlowTable, Protocol},
    dataplane::{Dataplane, LoadOptions, LogLevel},
};
use xdp_lb_common::{
    FAMILY_IPV4, FlowKey, PROTO_TCP, ServiceKey, addr_words, flow_hash::ports_word, port_raw,
};

const VIP: &str = "10.0.0.100";
const CLIENT: &str = "192.168.1.50";

fn options(flow_table: FlowTable) -> LoadOptions {
    LoadOptions {
        flow_hash_seed: SEED,
        maglev_table_slots: 2 * 65537,
        flow_table,
        log_level: LogLevel::Warn,
    }
}

#[test]
fn a_second_data_plane_on_the_same_pins_keeps_the_services_and_the_live_flows() {
    let pins = ScratchPins::new("adopt");
    let svc = service(
        "video-rtmp",
        VIP,
        1935,
        Protocol::Tcp,
        &["10.0.0.11", "10.0.0.12", "10.0.0.13"],
    );
    let key = FlowKey {
        src: addr_words(CLIENT.parse().unwrap()),
        dst: addr_words(VIP.parse().unwrap()),
        ports: ports_word(port_raw(40000), port_raw(1935)),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        vlan: 0,
    };
    let (service_value, flow) = {
        let dataplane =
            Dataplane::load_pinned(&options(FlowTable::default()), Some(pins.0.clone()))
                .expect("load");
        assert!(!dataplane.adopted(), "nothing to adopt the first time");
        let mut balancer = Balancer::new(dataplane, SEED);
        balancer
            .add_service(&svc, &Harness::loopback_forwarding)
            .unwrap();
        let h = Harness { balancer };
        let mut segment = Ipv4Frame::tcp(CLIENT, 40000, VIP, 1935).build();
        assert_eq!(h.run(&segment).action, XDP_TX);
        // The handshake's ACK creates the entry.
        segment[14 + 20 + 13] = 0x10;
        assert_eq!(h.run(&segment).action, XDP_TX);
        let dp = h.balancer.dataplane();
        let key_svc = ServiceKey::new(VIP.parse().unwrap(), 1935, PROTO_TCP);
        (
            dp.service(&key_svc).expect("service"),
            dp.flow(&key).expect("flow remembered"),
        )
        // The agent's process ends here: its handles close, the pins keep the maps.
    };
    let again = Dataplane::load_pinned(&options(FlowTable::default()), Some(pins.0.clone()))
        .expect("load again");
    assert!(again.adopted(), "the pinned maps were found and reused");
    let key_svc = ServiceKey::new(VIP.parse().unwrap(), 1935, PROTO_TCP);
    assert_eq!(
        again.service(&key_svc),
        Some(service_value),
        "the service and its live table survive"
    );
    assert_eq!(
        again.flow(&key),
        Some(flow),
        "the connection table survives"
    );
    let table = again
        .read_table(service_value.table_offset, service_value.table_size)
        .unwrap();
    assert!(table.iter().all(|id| *id < 3), "the Maglev table survives");
}

#[test]
fn pins_of_another_layout_are_refused_with_the_reason_and_left_alone() {
    let pins = ScratchPins::new("layout");
    drop(
        Dataplane::load_pinned(&options(FlowTable::default()), Some(pins.0.clone())).expect("load"),
    );
    // A `backends` of another entry layout (any other pinned map stands in: persistence's).
    let backends = pins.0.map(xdp_lb_common::map_names::BACKENDS);
    let real = pins.0.root().join("backends-real");
    std::fs::rename(&backends, &real).unwrap();
    aya::maps::MapData::from_pin(pins.0.map(xdp_lb_common::map_names::PERSISTENCE))
        .unwrap()
        .pin(&backends)
        .unwrap();
    let err = Dataplane::load_pinned(&options(FlowTable::default()), Some(pins.0.clone()))
        .err()
        .expect("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("backends: pinned") && message.contains("xdp-lb cleanup"),
        "{message}"
    );
    assert!(real.exists() && backends.exists(), "nothing was removed");
    // Put back, the pins are usable by an agent of the right layout.
    std::fs::remove_file(&backends).unwrap();
    std::fs::rename(&real, &backends).unwrap();
    assert!(
        Dataplane::load_pinned(&options(FlowTable::default()), Some(pins.0.clone()))
            .expect("load")
            .adopted()
    );
}
