//! The data-plane audit against the real maps (root only; the data plane is loaded, not
//! attached): after every kind of change the balancer makes (pools, client rules, backups,
//! the fallback pool, drains, unresolved servers, new table sizes, removals, services and
//! VIPs added and removed, servers reached through a VLAN device) the kernel holds exactly
//! its intent, and a change written behind its back is found and named.

mod support;

use std::{collections::BTreeMap, net::IpAddr};

use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData, MapInfo},
};
use support::{frames::LB_MAC, harness::*};
use xdp_lb::{
    audit::{Drift, compare},
    balancer::{ExpectedTables, Forwarding},
    config::{
        Backend, BackendFailover, ClientAction, ClientRule, FallbackServer, MacAddr, Pool,
        Protocol, Service, ServiceFailover,
    },
};
use xdp_lb_common::{
    BackendValue, FAMILY_IPV4, IfindexMacs, NO_MAC_WORD, PROTO_TCP, ServiceKey, VipKey, addr_words,
    mac_word, map_names, vip_filter_bit,
};

const VIP: &str = "10.0.0.100";
/// A VIP that only a service added at run time has.
const NEW_VIP: &str = "10.0.0.200";
/// The MAC of a VLAN device of the ingress interface (loopback under BPF_PROG_TEST_RUN).
const VLAN_DEVICE_MAC: [u8; 6] = [0x02, 0x1b, 0, 0, 0x01, 0x00];

fn addr(a: &str) -> IpAddr {
    a.parse().expect("test address")
}

fn backend(a: &str) -> Backend {
    Backend {
        address: addr(a),
        weight: 1,
        mac: None,
        vlan: None,
    }
}

fn pool(name: &str, maglev_size: u32, backends: &[&str]) -> Pool {
    Pool {
        name: name.to_owned(),
        maglev_size,
        backends: backends.iter().map(|a| backend(a)).collect(),
    }
}

fn to_pool(prefix: &str, pool: &str) -> ClientRule {
    ClientRule {
        prefix: prefix.parse().expect("test prefix"),
        action: ClientAction::Pool(pool.to_owned()),
    }
}

/// RTMP with a named pool and client rules (one of them a drop rule).
fn video() -> Service {
    let mut s = service(
        "video",
        VIP,
        1935,
        Protocol::Tcp,
        &["10.0.0.11", "10.0.0.12", "10.0.0.13"],
    );
    s.pools = vec![pool("premium", 65537, &["10.0.0.21", "10.0.0.22"])];
    s.clients = vec![
        to_pool("198.51.100.0/24", "premium"),
        ClientRule {
            prefix: "198.51.100.9/32".parse().unwrap(),
            action: ClientAction::Drop,
        },
    ];
    s
}

/// 10.0.0.31 backs 10.0.0.11 up; 10.0.0.41 is the fallback pool.
fn hls_failover() -> ServiceFailover {
    ServiceFailover {
        check: None,
        backends: [(
            addr("10.0.0.11"),
            BackendFailover {
                check: None,
                backup: Some(addr("10.0.0.31")),
                backup_vlan: None,
            },
        )]
        .into(),
        fallback: vec![FallbackServer {
            backend: backend("10.0.0.41"),
            check: None,
        }],
        pools: BTreeMap::new(),
    }
}

/// A second handle on the data plane's hash map `name`, opened by id as another tool would.
fn behind_the_back<K: Pod, V: Pod>(h: &Harness, name: &str) -> HashMap<MapData, K, V> {
    let map = Map::HashMap(map_behind_the_back(h, name));
    HashMap::try_from(map).expect("a hash map")
}

/// The `vip_filter` array, opened as `behind_the_back` opens a hash map.
fn vip_filter_behind_the_back(h: &Harness) -> Array<MapData, u64> {
    let map = Map::Array(map_behind_the_back(h, map_names::VIP_FILTER));
    Array::try_from(map).expect("an array")
}

/// Whether `vip_filter` has the bit of the IPv4 address `a` and `port`.
fn vip_filter_has(h: &Harness, a: &str, port: u16) -> bool {
    let bit = filter_bit(a, port);
    let word = vip_filter_behind_the_back(h)
        .get(&(bit / 64), 0)
        .expect("a vip_filter word");
    word >> (bit % 64) & 1 == 1
}

/// The `vip_filter` bit of the IPv4 address `a` and `port`.
fn filter_bit(a: &str, port: u16) -> u32 {
    vip_filter_bit(&vip_key(a).addr, FAMILY_IPV4, port.to_be())
}

fn map_behind_the_back(h: &Harness, name: &str) -> MapData {
    let info = h
        .balancer
        .dataplane()
        .program()
        .info()
        .expect("program info");
    let ids = info.map_ids().expect("map ids").expect("map ids");
    let id = ids
        .into_iter()
        .find(|id| MapInfo::from_id(*id).is_ok_and(|m| m.name_as_str() == Some(name)))
        .unwrap_or_else(|| panic!("the program has no map {name}"));
    MapData::from_id(id).expect("opening the map")
}

fn vip_key(a: &str) -> VipKey {
    VipKey {
        addr: addr_words(addr(a)),
        family: FAMILY_IPV4,
        _pad: [0; 3],
    }
}

/// The VIPs in `vips`, sorted.
fn vips(h: &Harness) -> Vec<IpAddr> {
    let map: HashMap<MapData, VipKey, u32> = behind_the_back(h, map_names::VIPS);
    let mut out: Vec<IpAddr> = map
        .keys()
        .map(|k| {
            let k = k.expect("a vips key");
            IpAddr::from(k.addr[0].to_ne_bytes())
        })
        .collect();
    out.sort();
    out
}

/// `local_macs_ix`, the array of the LB's MACs by ifindex, opened as `behind_the_back`
/// opens a hash map.
fn local_macs_behind_the_back(h: &Harness) -> Array<MapData, IfindexMacs> {
    let map = Map::Array(map_behind_the_back(h, map_names::LOCAL_MACS_IX));
    Array::try_from(map).expect("an array")
}

/// The MACs `local_macs_ix` holds for the ingress interface, in slot order.
fn local_macs(h: &Harness) -> Vec<MacAddr> {
    let value = local_macs_behind_the_back(h)
        .get(&LOOPBACK_IFINDEX, 0)
        .expect("loopback's entry");
    assert_eq!(value.checked, 1, "loopback's MACs are checked");
    value
        .macs
        .iter()
        .filter(|w| **w != NO_MAC_WORD)
        .map(|w| {
            let b = w.to_le_bytes();
            MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
        })
        .collect()
}

/// Reached through a VLAN device of the ingress interface, whose MAC frames to the LB on
/// that VLAN carry.
fn through_vlan_device(b: &Backend) -> Option<Forwarding> {
    Some(Forwarding {
        src_mac: MacAddr(VLAN_DEVICE_MAC),
        ..Harness::loopback_forwarding(b)?
    })
}

/// Every difference the audit finds now (no interface: the attachment is not checked).
fn drift(h: &Harness, expected: &mut ExpectedTables) -> Vec<Drift> {
    let intent = h.balancer.audit_intent(expected, &[]);
    let kernel = h.balancer.dataplane().audit_view(&intent, BTreeMap::new());
    compare(&intent, &kernel)
}

#[test]
fn after_every_change_the_balancer_makes_the_kernel_holds_its_intent() {
    let hls = service("hls", VIP, 8080, Protocol::Tcp, &["10.0.0.11", "10.0.0.12"]);
    let mut h = Harness::new(&[video(), hls.clone()]);
    let mut expected = ExpectedTables::default();
    let mut check = |h: &Harness, after: &str| {
        let found = drift(h, &mut expected);
        assert!(found.is_empty(), "after {after}: {found:#?}");
    };
    check(&h, "adding two services, one with a pool and client rules");
    let loopback = Harness::loopback_forwarding;

    h.balancer
        .set_failover("hls", &hls_failover(), &loopback)
        .unwrap();
    check(&h, "backups and a fallback pool");

    h.balancer
        .set_health("hls", addr("10.0.0.11"), false)
        .unwrap();
    check(&h, "a primary down, its backup standing in");

    h.balancer
        .set_health("hls", addr("10.0.0.31"), false)
        .unwrap();
    h.balancer
        .set_health("hls", addr("10.0.0.12"), false)
        .unwrap();
    check(
        &h,
        "every primary and the backup down: the fallback pool serves",
    );

    for server in ["10.0.0.11", "10.0.0.12", "10.0.0.31"] {
        h.balancer.set_health("hls", addr(server), true).unwrap();
    }
    check(&h, "everyone back");

    h.balancer
        .set_weight("video", addr("10.0.0.12"), 0)
        .unwrap();
    h.balancer
        .set_weight("video", addr("10.0.0.21"), 3)
        .unwrap();
    check(&h, "a drain and a new weight");

    h.balancer
        .set_forwarding("video", addr("10.0.0.13"), None)
        .unwrap();
    check(&h, "a server losing its MAC");

    let added = backend("10.0.0.14");
    h.balancer
        .add_backend("video", &added, loopback(&added))
        .unwrap();
    h.balancer
        .remove_backend("video", addr("10.0.0.11"))
        .unwrap();
    check(&h, "a backend added and one removed");

    h.balancer
        .set_client_rule("video", &to_pool("203.0.113.0/24", "premium"))
        .unwrap();
    h.balancer
        .remove_client_rule("video", "198.51.100.9/32".parse().unwrap())
        .unwrap();
    check(&h, "a client rule set and one removed");

    let gold = pool("gold", 251, &["10.0.0.51"]);
    h.balancer.add_pool("video", &gold, &loopback).unwrap();
    check(&h, "a pool added");
    h.balancer.remove_pool("video", "gold").unwrap();
    check(&h, "a pool removed");

    let smaller = Service {
        maglev_size: 251,
        ..hls
    };
    h.balancer.update_service_settings(&smaller).unwrap();
    check(&h, "a new table size");

    h.balancer.remove_service("hls").unwrap();
    check(&h, "a service removed");

    let dash = Service {
        maglev_size: 251,
        ..service("dash", NEW_VIP, 8443, Protocol::Tcp, &["10.0.0.61"])
    };
    h.balancer.add_service(&dash, &loopback).unwrap();
    check(&h, "a service on a new VIP added");

    let tagged = backend("10.0.0.62");
    h.balancer
        .add_backend("dash", &tagged, through_vlan_device(&tagged))
        .unwrap();
    h.balancer.sync_local_macs().unwrap();
    check(&h, "a server reached through a VLAN device");

    h.balancer.remove_service("dash").unwrap();
    h.balancer.sync_local_macs().unwrap();
    check(&h, "the new VIP's service removed");
}

#[test]
fn vips_and_local_macs_follow_the_services_and_servers_of_a_running_data_plane() {
    let mut h = Harness::new(&[video()]);
    let mut expected = ExpectedTables::default();
    assert_eq!(vips(&h), [addr(VIP)]);
    assert!(vip_filter_has(&h, VIP, 1935));
    assert_ne!(
        filter_bit(VIP, 1935),
        filter_bit(NEW_VIP, 8443),
        "the two services' vip_filter bits differ (else the test below proves nothing)"
    );
    assert!(!vip_filter_has(&h, NEW_VIP, 8443));
    assert_eq!(local_macs(&h), [MacAddr(LB_MAC)]);

    // As a reload or `service add` does: the new VIP's later fragments are the backends'.
    let dash = Service {
        maglev_size: 251,
        ..service("dash", NEW_VIP, 8443, Protocol::Tcp, &["10.0.0.61"])
    };
    h.balancer
        .add_service(&dash, &Harness::loopback_forwarding)
        .unwrap();
    assert_eq!(vips(&h), [addr(VIP), addr(NEW_VIP)]);
    assert!(
        vip_filter_has(&h, NEW_VIP, 8443),
        "the new service's frames pass the filter"
    );

    // A server reached through a VLAN device: the device's MAC is the LB's on that VLAN.
    let tagged = backend("10.0.0.62");
    h.balancer
        .add_backend("dash", &tagged, through_vlan_device(&tagged))
        .unwrap();
    let before_sync: Vec<String> = drift(&h, &mut expected)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        before_sync,
        [
            "interface lo (ifindex 1): local_macs differ: 02:1b:00:00:00:01 (agent: \
             02:1b:00:00:00:01 02:1b:00:00:01:00)"
        ],
        "the audit sees local_macs lag behind the servers"
    );
    h.balancer.sync_local_macs().unwrap();
    assert_eq!(local_macs(&h), [MacAddr(LB_MAC), MacAddr(VLAN_DEVICE_MAC)]);
    assert_eq!(drift(&h, &mut expected), Vec::<Drift>::new());

    h.balancer
        .remove_backend("dash", addr("10.0.0.62"))
        .unwrap();
    h.balancer.sync_local_macs().unwrap();
    assert_eq!(local_macs(&h), [MacAddr(LB_MAC)]);
    h.balancer.remove_service("dash").unwrap();
    assert_eq!(vips(&h), [addr(VIP)]);
    assert!(vip_filter_has(&h, VIP, 1935));
    assert!(
        !vip_filter_has(&h, NEW_VIP, 8443),
        "the removed service's bit is cleared"
    );
    assert_eq!(drift(&h, &mut expected), Vec::<Drift>::new());
}

#[test]
fn a_map_written_behind_the_balancer_s_back_is_found_and_named() {
    let mut h = Harness::new(&[video()]);
    let mut expected = ExpectedTables::default();
    assert_eq!(drift(&h, &mut expected), Vec::<Drift>::new());
    let key = ServiceKey::new(addr(VIP), 1935, PROTO_TCP);
    let live = h.balancer.dataplane().service(&key).expect("video's value");
    let b1 = h.balancer.service("video").unwrap().backends[&addr("10.0.0.11")].clone();
    let dp = h.balancer.dataplane_mut();

    let stolen = BackendValue {
        mac: MacAddr([2, 0, 0, 0, 0, 0x99]).0,
        ..dp.backend(b1.id).unwrap()
    };
    dp.set_backend(b1.id, stolen).unwrap();
    dp.write_table(live.table_offset + 7, &[9999]).unwrap();
    dp.remove_service(&key).unwrap();
    let mut vips: HashMap<MapData, VipKey, u32> = behind_the_back(&h, map_names::VIPS);
    vips.insert(vip_key("10.0.0.99"), 0, 0).unwrap();
    let mut macs = local_macs_behind_the_back(&h);
    let foreign = IfindexMacs {
        checked: 1,
        _pad: 0,
        macs: [
            mac_word([2, 0, 0, 0, 0, 0x42]),
            NO_MAC_WORD,
            NO_MAC_WORD,
            NO_MAC_WORD,
        ],
    };
    macs.set(LOOPBACK_IFINDEX, foreign, 0).unwrap();
    let stray = filter_bit("10.0.0.99", 1935);
    let mut filter = vip_filter_behind_the_back(&h);
    let word = filter.get(&(stray / 64), 0).unwrap();
    filter.set(stray / 64, word | 1 << (stray % 64), 0).unwrap();
    let service_bit = filter_bit(VIP, 1935);
    let problems: Vec<String> = drift(&h, &mut expected)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "Maglev table of video pool default: 1 slot(s) name backend id 9999, which the agent does not use".to_owned(),
            "VIP 10.0.0.100: missing from vips: later fragments to it whose first was not seen \
             reach the LB host instead of being dropped"
                .to_owned(),
            format!(
                "backend 10.0.0.11 of video (id {}): backends entry differs: mac 02:00:00:00:00:99 (agent: {})",
                b1.id,
                backend_mac(addr("10.0.0.11"))
            ),
            "interface lo (ifindex 1): local_macs differ: 02:00:00:00:00:42 (agent: \
             02:1b:00:00:00:01)"
                .to_owned(),
            "service video 10.0.0.100:1935/tcp: key missing from service_by_vip".to_owned(),
            format!(
                "service video 10.0.0.100:1935/tcp: bit {service_bit} missing from vip_filter: \
                 its frames are passed to the LB host instead of balanced"
            ),
            format!(
                "vip_filter bit {stray}: set, but no configured service has it: frames to the \
                 (address, port) pairs that share it take the lookups after the filter"
            ),
            "vips key 10.0.0.99: an address no configured service has: later fragments to it \
             whose first was not seen are dropped instead of reaching the LB host"
                .to_owned(),
        ]
    );
}
