//! What a new agent inherits from the pinned maps and the earlier agent's snapshot, path by
//! path (no kernel: `inherit` reads plain values).

use std::collections::BTreeMap;

use xdp_lb_common::{
    BACKEND_F_NO_NEW, BACKEND_F_VALID, BackendOwner, BackendValue, OWNER_F_HEALTHY, PROTO_TCP,
    ServiceKey, ServiceValue, addr_words,
};

use super::*;

const VIP: &str = "10.0.0.100";

fn key(port: u16) -> ServiceKey {
    ServiceKey::new(VIP.parse().unwrap(), port, PROTO_TCP)
}

fn value(id: u32, offset: u32, size: u32) -> ServiceValue {
    ServiceValue {
        service_id: id,
        table_offset: offset,
        table_size: size,
        generation: 7,
        ..ServiceValue::default()
    }
}

fn entry(epoch: u32, flags: u32) -> BackendValue {
    BackendValue {
        mac: [2, 0, 0, 0, 0, epoch as u8],
        src_mac: [2, 1, 0, 0, 0, 1],
        ifindex: 3,
        flags,
        epoch,
    }
}

fn owner(port: u16, address: &str, healthy: bool) -> BackendOwner {
    BackendOwner {
        service: key(port),
        addr: addr_words(address.parse().unwrap()),
        flags: if healthy { OWNER_F_HEALTHY } else { 0 },
    }
}

fn snapshot_of(
    name: &str,
    port: u16,
    id: u32,
    live: usize,
    servers: &[(&str, u32, u32)],
) -> Snapshot {
    let service = ServiceSnapshot {
        vip: VIP.parse().unwrap(),
        port,
        protocol: PROTO_TCP,
        vlan: 0,
        maglev_size: 251,
        id,
        regions: [0, 251],
        live: Some(live),
        generation: 7,
        servers: servers
            .iter()
            .map(|(a, id, epoch)| {
                (
                    a.parse().unwrap(),
                    ServerSnapshot {
                        id: *id,
                        epoch: *epoch,
                        healthy: true,
                    },
                )
            })
            .collect(),
        pools: BTreeMap::new(),
    };
    Snapshot {
        next_epoch: 9,
        services: [(name.to_owned(), service)].into(),
    }
}

#[test]
fn owner_records_alone_name_every_live_backend_by_listener_and_address() {
    let got = inherit(
        &[(key(1935), value(4, 0, 251))],
        &[],
        &[
            (0, entry(1, BACKEND_F_VALID), owner(1935, "10.0.0.11", true)),
            (
                1,
                entry(2, BACKEND_F_VALID | BACKEND_F_NO_NEW),
                owner(1935, "10.0.0.12", false),
            ),
        ],
        None,
    );
    let s = &got.services[&key(1935)];
    assert_eq!(s.id, Some(4));
    assert_eq!(s.live, Some((0, 251)), "the live table is kept where it is");
    assert_eq!(
        s.spare, None,
        "without a snapshot the other region is unknown"
    );
    assert_eq!(s.name, None);
    let a = s.servers[&"10.0.0.11".parse().unwrap()];
    assert_eq!((a.id, a.epoch, a.healthy), (0, 1, Some(true)));
    assert_eq!(
        a.forwarding.unwrap().mac.0,
        [2, 0, 0, 0, 0, 1],
        "its pinned MAC"
    );
    let b = s.servers[&"10.0.0.12".parse().unwrap()];
    assert_eq!(
        (b.id, b.epoch, b.healthy),
        (1, 2, Some(false)),
        "down stays down"
    );
    assert!(got.orphans.is_empty());
}

#[test]
fn the_snapshot_adds_the_name_and_the_spare_region_when_it_agrees_with_the_maps() {
    let snapshot = snapshot_of("video-rtmp", 1935, 4, 1, &[]);
    let got = inherit(
        &[(key(1935), value(4, 251, 251))],
        &[],
        &[],
        Some(&snapshot),
    );
    let s = &got.services[&key(1935)];
    assert_eq!(s.name.as_deref(), Some("video-rtmp"));
    assert_eq!(s.spare, Some((0, 251)));

    // A snapshot whose live region is not the kernel's is stale: its spare may be live.
    let got = inherit(&[(key(1935), value(4, 0, 251))], &[], &[], Some(&snapshot));
    assert_eq!(got.services[&key(1935)].spare, None);
}

#[test]
fn maps_pinned_before_owner_records_are_named_by_a_snapshot_of_the_same_epoch_only() {
    let snapshot = snapshot_of(
        "video-rtmp",
        1935,
        4,
        0,
        &[("10.0.0.11", 0, 1), ("10.0.0.12", 1, 2)],
    );
    let got = inherit(
        &[(key(1935), value(4, 0, 251))],
        &[],
        &[
            (0, entry(1, BACKEND_F_VALID), BackendOwner::default()),
            // The snapshot says epoch 2, the map 5: the id went to another server since.
            (1, entry(5, BACKEND_F_VALID), BackendOwner::default()),
        ],
        Some(&snapshot),
    );
    let s = &got.services[&key(1935)];
    assert_eq!(s.servers.len(), 1);
    assert_eq!(s.servers[&"10.0.0.11".parse().unwrap()].id, 0);
    assert_eq!(
        got.orphans,
        vec![1],
        "the unknown id is cleared, never guessed"
    );
}

#[test]
fn ids_nobody_owns_and_second_ids_of_one_server_are_orphans() {
    let got = inherit(
        &[(key(1935), value(4, 0, 251))],
        &[],
        &[
            (0, entry(1, BACKEND_F_VALID), owner(1935, "10.0.0.11", true)),
            (1, entry(2, BACKEND_F_VALID), owner(1935, "10.0.0.11", true)),
            (2, entry(3, 0), BackendOwner::default()),
        ],
        None,
    );
    assert_eq!(got.services[&key(1935)].servers.len(), 1);
    assert_eq!(got.orphans, vec![1, 2]);
}

#[test]
fn a_listener_known_only_from_owner_records_is_still_claimable() {
    // Its service_by_vip key is gone (a drifted map): its backends keep their ids.
    let got = inherit(
        &[],
        &[],
        &[(0, entry(1, BACKEND_F_VALID), owner(8080, "10.0.0.11", true))],
        None,
    );
    let s = &got.services[&key(8080)];
    assert_eq!((s.id, s.live), (None, None));
    assert_eq!(s.servers.len(), 1);
}

#[test]
fn an_empty_live_table_reserves_no_region() {
    let got = inherit(&[(key(1935), value(4, 0, 0))], &[], &[], None);
    assert_eq!(got.services[&key(1935)].live, None);
}

#[test]
fn renames_pair_a_snapshot_service_with_the_config_service_on_its_listener() {
    let snapshot = snapshot_of("video-rtmp", 1935, 4, 0, &[]);
    let text = format!(
        "interfaces: [lo]\nservices:\n  - name: live-rtmp\n    vip: {VIP}\n    port: 1935\n    protocol: tcp\n    backends: []\n"
    );
    let config = crate::config::parse_str(
        std::path::Path::new("t.yaml"),
        &text,
        &crate::config::LiveHost,
    )
    .expect("valid");
    assert_eq!(
        snapshot.renames(&config),
        vec![("video-rtmp".to_owned(), "live-rtmp".to_owned())]
    );
}

#[test]
fn pinned_pools_are_claimable_by_name_only_when_the_snapshot_agrees_and_kept_otherwise() {
    let mut snapshot = snapshot_of("video-rtmp", 1935, 4, 0, &[]);
    let pool = |id: u32| PoolSnapshot {
        id,
        maglev_size: 251,
        regions: [502, 753],
        live: Some(0),
        generation: 3,
    };
    let service = snapshot.services.get_mut("video-rtmp").unwrap();
    service.pools.insert("premium".into(), pool(1));
    service.pools.insert("stale".into(), pool(2));
    let pinned = |id: u32, offset: u32| {
        (
            id,
            xdp_lb_common::PoolValue {
                table_offset: offset,
                table_size: 251,
                service_id: 4,
                generation: 3,
            },
        )
    };
    let got = inherit(
        &[(key(1935), value(4, 0, 251))],
        // Pool 1 agrees with the snapshot; pool 2's live table is not one of the snapshot's
        // regions (the snapshot is older); pool 9 the snapshot does not know.
        &[pinned(1, 502), pinned(2, 1004), pinned(9, 1255)],
        &[],
        Some(&snapshot),
    );
    let pools = &got.services[&key(1935)].pools;
    assert_eq!(pools.keys().collect::<Vec<_>>(), ["premium"]);
    assert_eq!(
        got.unnamed_pools,
        [(2, Some((1004, 251))), (9, Some((1255, 251)))].into(),
        "kept, with their live tables, until adoption ends"
    );
}
