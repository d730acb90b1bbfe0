//! Restart paths through the real data plane (root only): a second agent on the same pins,
//! with another config and with or without the first one's snapshot, keeps every live flow
//! on its backend, claims services by listener, and sends new flows where its config says.

mod support;

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{HashMap as AyaHashMap, Map, MapData};
use support::{frames::Ipv4Frame, harness::*, scratch_pins::ScratchPins};
use xdp_lb::{
    balancer::{Balancer, adopt::Snapshot},
    config::{Backend, FlowTable, Protocol, Service},
    dataplane::{Dataplane, LoadOptions, LogLevel},
};
use xdp_lb_common::{
    BPF_F_NO_COMMON_LRU, FLOW_TABLE_DEFAULT_SIZE, FLOW_TABLE_FLAGS, FlowKey, FlowValue, PROTO_TCP,
    ServiceKey, flow_stat, map_names, verdict,
};

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
    fill(
        load(pins, FlowTable::default()),
        services,
        snapshot,
        forwarding,
    )
}

/// What every agent here loads with, and a connection table of `flow_table`.
fn options(flow_table: FlowTable) -> LoadOptions {
    LoadOptions {
        flow_hash_seed: SEED,
        maglev_table_slots: 8 * 65537,
        flow_table,
        log_level: LogLevel::Warn,
    }
}

/// An agent's load on `pins` with a connection table of `flow_table`.
fn load(pins: &ScratchPins, flow_table: FlowTable) -> Dataplane {
    Dataplane::load_pinned(&options(flow_table), Some(pins.0.clone())).expect("load")
}

/// The rest of an agent's start on a loaded `dataplane`, up to where it attaches (these
/// tests run the program through BPF_PROG_TEST_RUN instead) and settles a connection
/// table's move.
fn fill(
    dataplane: Dataplane,
    services: &[Service],
    snapshot: Option<Snapshot>,
    forwarding: &dyn Fn(&Backend) -> Option<xdp_lb::balancer::Forwarding>,
) -> Harness {
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
    balancer
        .dataplane_mut()
        .settle_flow_migration()
        .expect("settling the connection table's move");
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

/// The pinned connection table's shape, as the kernel has it.
fn pinned_flows_shape(pins: &ScratchPins) -> xdp_lb::pins::MapShape {
    xdp_lb::pins::pinned_shape(&pins.0.map(map_names::FLOWS)).expect("the pinned flows")
}

/// Replaces the pinned connection table by a table of the flavour earlier versions made
/// (per-CPU LRU lists, `BPF_F_NO_COMMON_LRU`) holding the same entries: pins as an agent
/// of such a version leaves them.
fn pin_a_per_cpu_lists_table(pins: &ScratchPins) -> AyaHashMap<MapData, FlowKey, FlowValue> {
    let path = pins.0.map(map_names::FLOWS);
    let current: AyaHashMap<MapData, FlowKey, FlowValue> =
        AyaHashMap::try_from(Map::LruHashMap(MapData::from_pin(&path).unwrap())).unwrap();
    let entries: Vec<(FlowKey, FlowValue)> = current.iter().map(Result::unwrap).collect();
    let staged = pins.0.root().join("flows-per-cpu");
    let status = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(&staged)
        .args(["type", "lru_hash", "key", "40", "value", "24", "entries"])
        .arg(FLOW_TABLE_DEFAULT_SIZE.to_string())
        .args(["name", "flows", "flags"])
        .arg(BPF_F_NO_COMMON_LRU.to_string())
        .status()
        .expect("bpftool");
    assert!(status.success(), "bpftool map create");
    std::fs::rename(&staged, &path).expect("pinning the per-CPU lists table as flows");
    let mut old: AyaHashMap<MapData, FlowKey, FlowValue> =
        AyaHashMap::try_from(Map::LruHashMap(MapData::from_pin(&path).unwrap())).unwrap();
    for (key, value) in &entries {
        old.insert(key, value, 0).unwrap();
    }
    assert_eq!(pinned_flows_shape(pins).flags, BPF_F_NO_COMMON_LRU);
    old
}

/// An agent of this version on the pins of one whose connection table had per-CPU LRU
/// lists: every live flow moves into one shared list, also a flow the earlier program
/// made between the new agent's load and its attach, and the new table takes the pin.
#[test]
fn an_upgrade_over_a_table_with_per_cpu_lru_lists_moves_every_live_flow_into_one_shared_list() {
    let pins = ScratchPins::new("flavour");
    let mut flows = first_agent_flows(&pins, 34000..34200);
    let mut old = pin_a_per_cpu_lists_table(&pins);

    let dataplane = load(&pins, FlowTable::default());
    assert!(dataplane.adopted());
    // The earlier program still runs until the attach: a flow it places now is in the old
    // table only.
    let late_port = 34999u16;
    let late_value = FlowValue {
        last_seen_ns: xdp_lb::control::census::monotonic_ns(),
        ..old.get(&flow_key(34000), 0).unwrap()
    };
    old.insert(flow_key(late_port), late_value, 0).unwrap();
    flows.insert(late_port, flows[&34000]);

    let h = fill(
        dataplane,
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    let shape = pinned_flows_shape(&pins);
    assert_eq!(shape.flags, FLOW_TABLE_FLAGS, "the new table is pinned");
    assert_eq!(shape.max_entries, FLOW_TABLE_DEFAULT_SIZE);
    assert!(!pins.0.map("flows-new").exists(), "nothing left staged");
    assert_flows_kept(&h, &flows);
    // The next agent adopts the new table as it is.
    drop(h);
    let again = start(
        &pins,
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    assert_flows_kept(&again, &flows);
}

/// A restart with another `flow_table.size` moves the live flows into a table of that
/// size; a smaller one than the flows keeps the most recently seen.
#[test]
fn a_restart_with_another_flow_table_size_moves_the_live_flows_keeping_the_most_recent() {
    let pins = ScratchPins::new("resize");
    let flows = first_agent_flows(&pins, 35000..35300);
    // The last 64 flows get a packet a little later (touches are one a second at most).
    let recent: BTreeMap<u16, IpAddr> = flows.range(35236..).map(|(p, b)| (*p, *b)).collect();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_flows_kept(
        &start(
            &pins,
            &[rtmp("video-rtmp", 251, &BACKENDS)],
            None,
            &Harness::loopback_forwarding,
        ),
        &recent,
    );

    // 300 flows into a table of 256.
    let smaller = FlowTable {
        size: 256,
        ..FlowTable::default()
    };
    let h = fill(
        load(&pins, smaller),
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    assert_eq!(pinned_flows_shape(&pins).max_entries, 256);
    let kept = h.balancer.dataplane().flows().len();
    assert!(kept <= 256, "{kept} entries in a table of 256");
    for port in recent.keys() {
        assert!(
            h.balancer.dataplane().flow(&flow_key(*port)).is_some(),
            "the recently seen flow from port {port} was kept ({kept} kept)"
        );
    }
    assert_flows_kept(&h, &recent);
    drop(h);

    // And into a bigger one: every flow the small table kept.
    let bigger = FlowTable {
        size: 1 << 19,
        ..FlowTable::default()
    };
    let h = fill(
        load(&pins, bigger),
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    assert_eq!(pinned_flows_shape(&pins).max_entries, 1 << 19);
    assert_eq!(h.balancer.dataplane().flows().len(), kept);
    assert_flows_kept(&h, &recent);
}

/// A pinned connection table whose entries have another layout cannot be moved: the agent
/// refuses it, says why and what to do, and leaves it as it was.
#[test]
fn a_pinned_connection_table_of_another_key_layout_is_refused_and_left_alone() {
    let pins = ScratchPins::new("layout-flows");
    let flows = first_agent_flows(&pins, 36000..36010);
    // Any LRU hash of another key size stands in: the persistence table's.
    let path = pins.0.map(map_names::FLOWS);
    let flows_pin = pins.0.root().join("flows-real");
    std::fs::rename(&path, &flows_pin).unwrap();
    MapData::from_pin(pins.0.map(map_names::PERSISTENCE))
        .unwrap()
        .pin(&path)
        .unwrap();
    let before = pinned_flows_shape(&pins);
    let err = Dataplane::load_pinned(&options(FlowTable::default()), Some(pins.0.clone()))
        .err()
        .expect("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("flows: pinned key 24 B") && message.contains("xdp-lb cleanup"),
        "{message}"
    );
    assert_eq!(pinned_flows_shape(&pins), before, "left alone");
    // Put back, the real table is adopted with its flows.
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&flows_pin, &path).unwrap();
    let h = start(
        &pins,
        &[rtmp("video-rtmp", 251, &BACKENDS)],
        None,
        &Harness::loopback_forwarding,
    );
    assert_flows_kept(&h, &flows);
}

/// The connection-table key of the client's flow from `port` to the RTMP service.
fn flow_key(port: u16) -> FlowKey {
    FlowKey::new(
        std::net::SocketAddr::new(CLIENT.parse().unwrap(), port),
        std::net::SocketAddr::new(VIP.parse().unwrap(), 1935),
        PROTO_TCP,
        0,
    )
}
