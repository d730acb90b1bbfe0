//! The audit's rules, against a fake kernel view: one service with two backends and a
//! named pool, its table live, the program attached and pinned on eth0.

use xdp_lb_common::{
    BACKEND_F_VALID, BackendOwner, BackendValue, LocalMacs, OWNER_F_HEALTHY, PROTO_TCP, PoolValue,
    SERVICE_F_PASS_WHEN_EMPTY, ServiceKey, ServiceValue, VipKey, mac_word, map_names,
};

use crate::config::MacAddr;

use super::*;

const PROGRAM: u32 = 42;
const RTMP: &str = "service video-rtmp 10.77.0.100:1935/tcp";

pub(super) fn key() -> ServiceKey {
    ServiceKey::new("10.77.0.100".parse().unwrap(), 1935, PROTO_TCP)
}

fn entry(last: u8, epoch: u32) -> BackendValue {
    BackendValue {
        mac: [2, 0x77, 0, 0, 0, last],
        src_mac: [2, 0x77, 0, 0, 0, 1],
        ifindex: 2,
        flags: BACKEND_F_VALID,
        epoch,
    }
}

const TABLE: [u32; 7] = [0, 1, 0, 1, 0, 1, 0];

/// The VIP's `vips` key.
pub(super) fn vip() -> VipKey {
    VipKey {
        addr: key().addr,
        family: key().family,
        _pad: [0; 3],
    }
}

/// eth0's own MAC and its VLAN device's, as `local_macs` holds them for ifindex 2.
pub(super) const ETH0_MACS: [[u8; 6]; 2] = [[2, 0x77, 0, 0, 0, 1], [2, 0x77, 0, 0, 1, 0]];

pub(super) fn local_macs(macs: &[[u8; 6]]) -> LocalMacs {
    let mut value = LocalMacs {
        count: macs.len() as u32,
        ..LocalMacs::default()
    };
    for (slot, mac) in value.macs.iter_mut().zip(macs) {
        *slot = mac_word(*mac);
    }
    value
}

/// The agent's intent, and a kernel that holds exactly that.
pub(super) fn consistent() -> (Intent, KernelView) {
    let service = ServiceValue {
        service_id: 0,
        table_offset: 0,
        table_size: 7,
        flags: 0,
        generation: 3,
        persist_timeout_s: 300,
        persist_prefix_len: 32,
    };
    let pool = PoolValue {
        table_offset: 14,
        table_size: 0,
        service_id: 0,
        generation: 1,
    };
    let intent = Intent {
        services: vec![ServiceIntent {
            label: RTMP.into(),
            key: key(),
            value: service,
        }],
        pools: vec![PoolIntent {
            label: "pool premium of video-rtmp (id 1)".into(),
            id: 1,
            value: pool,
        }],
        backends: [
            (0, "backend 10.77.0.11 of video-rtmp (id 0)", entry(0x11, 1)),
            (1, "backend 10.77.0.12 of video-rtmp (id 1)", entry(0x12, 2)),
            (2, "backend 10.77.0.13 of video-rtmp (id 2)", entry(0x13, 3)),
        ]
        .into_iter()
        .map(|(id, label, entry)| {
            let label = label.into();
            let owner = BackendOwner {
                service: key(),
                addr: [id + 11, 0, 0, 0],
                flags: OWNER_F_HEALTHY,
            };
            (
                id,
                BackendIntent {
                    label,
                    entry,
                    owner,
                },
            )
        })
        .collect(),
        tables: vec![TableIntent {
            label: "Maglev table of video-rtmp pool default".into(),
            offset: 0,
            size: 7,
            expected: TableDigest::of(&TABLE),
        }],
        interfaces: vec!["eth0".into()],
        pinned: true,
        vips: vec![VipIntent {
            label: "VIP 10.77.0.100".into(),
            key: vip(),
        }],
        local_macs: [(
            2,
            LocalMacsIntent {
                label: "interface eth0 (ifindex 2)".into(),
                macs: ETH0_MACS.iter().map(|m| MacAddr(*m)).collect(),
            },
        )]
        .into(),
    };
    let kernel = KernelView {
        services: [(key(), service)].into(),
        backends: intent
            .backends
            .iter()
            .map(|(id, b)| (*id, b.entry))
            .collect(),
        owners: intent
            .backends
            .iter()
            .map(|(id, b)| (*id, b.owner))
            .collect(),
        pools: [(1, pool)].into(),
        vips: [vip()].into(),
        vip_filter_words: crate::dataplane::vip_filter_words(&[key()]),
        // The data plane does not care in which order the MACs are.
        local_macs: [(2, local_macs(&[ETH0_MACS[1], ETH0_MACS[0]]))].into(),
        tables: [(0, Ok(TableDigest::of(&TABLE)))].into(),
        program_id: Some(PROGRAM),
        interfaces: [(
            "eth0".to_owned(),
            Attachment {
                xdp: Attached::Program(PROGRAM),
                pinned_link: Some(Attached::Program(PROGRAM)),
            },
        )]
        .into(),
        unreadable: Vec::new(),
    };
    (intent, kernel)
}

/// Each difference as the status banner shows it.
pub(super) fn lines(intent: &Intent, kernel: &KernelView) -> Vec<String> {
    compare(intent, kernel)
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn a_kernel_holding_exactly_the_intent_shows_no_drift() {
    let (intent, kernel) = consistent();
    assert_eq!(lines(&intent, &kernel), Vec::<String>::new());
}

#[test]
fn a_service_key_missing_from_service_by_vip_is_drift_naming_the_service() {
    let (intent, mut kernel) = consistent();
    kernel.services.clear();
    let drift = compare(&intent, &kernel);
    assert_eq!(
        lines(&intent, &kernel),
        [format!("{RTMP}: key missing from service_by_vip")]
    );
    assert_eq!(drift[0].map, map_names::SERVICE_BY_VIP);
}

#[test]
fn a_wrong_service_value_names_each_field_that_differs_but_not_the_generation() {
    let (intent, mut kernel) = consistent();
    let value = kernel.services.get_mut(&key()).unwrap();
    value.table_offset = 7;
    value.flags = SERVICE_F_PASS_WHEN_EMPTY;
    value.persist_timeout_s = 0;
    value.generation = 99;
    assert_eq!(
        lines(&intent, &kernel),
        [format!(
            "{RTMP}: service_by_vip value differs: table_offset 7 (agent: 0), flags 0x1 \
             (agent: 0x0), persist_timeout_s 0 (agent: 300)"
        )]
    );
}

#[test]
fn a_service_key_the_agent_does_not_own_is_drift() {
    let (intent, mut kernel) = consistent();
    let stray = ServiceKey::new("10.77.0.200".parse().unwrap(), 1935, PROTO_TCP);
    kernel.services.insert(stray, ServiceValue::default());
    assert_eq!(
        lines(&intent, &kernel),
        [
            "service_by_vip key 10.77.0.200:1935/tcp: a key the agent does not own (service id 0, table of 0 slots)"
        ]
    );
}

#[test]
fn a_backend_entry_with_another_mac_or_epoch_is_drift() {
    let (intent, mut kernel) = consistent();
    kernel.backends.get_mut(&0).unwrap().mac = [2, 0, 0, 0, 0, 0x99];
    kernel.backends.get_mut(&1).unwrap().epoch = 7;
    assert_eq!(
        lines(&intent, &kernel),
        [
            "backend 10.77.0.11 of video-rtmp (id 0): backends entry differs: mac 02:00:00:00:00:99 (agent: 02:77:00:00:00:11)",
            "backend 10.77.0.12 of video-rtmp (id 1): backends entry differs: epoch 7 (agent: 2)",
        ]
    );
}

#[test]
fn an_invalidated_or_zeroed_entry_of_a_usable_backend_is_drift() {
    let (intent, mut kernel) = consistent();
    kernel.backends.get_mut(&0).unwrap().flags = 0;
    kernel.backends.remove(&1);
    let text = lines(&intent, &kernel).join("\n");
    assert!(text.contains("(id 0): backends entry differs: flags 0x0 (agent: 0x1)"));
    assert!(text.contains("(id 1): backends entry differs: mac 00:00:00:00:00:00"));
}

#[test]
fn a_valid_entry_for_an_unused_id_is_drift_but_an_invalid_leftover_is_not() {
    let (intent, mut kernel) = consistent();
    kernel.backends.insert(
        9,
        BackendValue {
            flags: 0,
            ..entry(0x19, 5)
        },
    );
    assert_eq!(lines(&intent, &kernel), Vec::<String>::new());
    kernel.backends.insert(8, entry(0x18, 4));
    assert_eq!(
        lines(&intent, &kernel),
        ["backend id 8: VALID entry (mac 02:77:00:00:00:18) for an id the agent does not use"]
    );
}

#[test]
fn a_table_naming_a_backend_outside_its_plan_is_drift_naming_it() {
    let (intent, mut kernel) = consistent();
    kernel
        .tables
        .insert(0, Ok(TableDigest::of(&[0, 1, 0, 2, 0, 1, 9])));
    assert_eq!(
        lines(&intent, &kernel),
        [
            "Maglev table of video-rtmp pool default: 1 slot(s) name backend 10.77.0.13 of video-rtmp (id 2), which is not a usable server of this table",
            "Maglev table of video-rtmp pool default: 1 slot(s) name backend id 9, which the agent does not use",
        ]
    );
}

#[test]
fn a_table_of_the_right_backends_in_other_slots_differs_from_the_computed_one() {
    let (intent, mut kernel) = consistent();
    kernel
        .tables
        .insert(0, Ok(TableDigest::of(&[1, 0, 1, 0, 1, 0, 0])));
    assert_eq!(
        lines(&intent, &kernel),
        [
            "Maglev table of video-rtmp pool default: the 7 slots differ from the table the agent computed (same slots per backend, in another order)"
        ]
    );
    kernel
        .tables
        .insert(0, Ok(TableDigest::of(&[1, 1, 1, 0, 1, 0, 0])));
    assert!(
        lines(&intent, &kernel)[0]
            .ends_with("(id 0: 3 slots (agent: 4), id 1: 4 slots (agent: 3))")
    );
}

#[test]
fn a_missing_wrong_or_stray_pool_is_drift() {
    let (intent, mut kernel) = consistent();
    kernel.pools.get_mut(&1).unwrap().table_size = 251;
    kernel.pools.insert(5, PoolValue::default());
    assert_eq!(
        lines(&intent, &kernel),
        [
            "pool id 5: a key the agent does not own (service id 0)",
            "pool premium of video-rtmp (id 1): pools value differs: table_size 251 (agent: 0)",
        ]
    );
    kernel.pools.clear();
    assert_eq!(
        lines(&intent, &kernel),
        ["pool premium of video-rtmp (id 1): key missing from pools"]
    );
}

#[test]
fn a_detached_or_replaced_program_or_a_lost_pinned_link_is_drift() {
    let (intent, mut kernel) = consistent();
    let eth0 = kernel.interfaces.get_mut("eth0").unwrap();
    eth0.xdp = Attached::Nothing;
    eth0.pinned_link = Some(Attached::Nothing);
    assert_eq!(
        lines(&intent, &kernel),
        [
            "interface eth0: its pinned link is missing",
            "interface eth0: the agent's XDP program is not attached",
        ]
    );
    let eth0 = kernel.interfaces.get_mut("eth0").unwrap();
    eth0.xdp = Attached::Program(7);
    eth0.pinned_link = Some(Attached::Program(PROGRAM));
    assert_eq!(
        lines(&intent, &kernel),
        ["interface eth0: XDP program id 7 is attached, not the agent's (id 42)"]
    );
}

#[test]
fn an_unpinned_agent_has_no_link_to_check() {
    let (mut intent, mut kernel) = consistent();
    intent.pinned = false;
    kernel.interfaces.get_mut("eth0").unwrap().pinned_link = None;
    assert_eq!(lines(&intent, &kernel), Vec::<String>::new());
}

#[test]
fn each_new_difference_is_logged_once_at_warn_and_the_clearing_once_at_info() {
    let (intent, mut kernel) = consistent();
    let mut auditor = Auditor::new();
    assert!(auditor.note(&compare(&intent, &kernel)).is_empty());
    kernel.services.clear();
    let first = auditor.note(&compare(&intent, &kernel));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, log::Level::Warn);
    assert!(
        first[0].1.contains("key missing from service_by_vip"),
        "{first:?}"
    );
    for _ in 0..3 {
        assert!(
            auditor.note(&compare(&intent, &kernel)).is_empty(),
            "said once"
        );
    }
    kernel.backends.get_mut(&0).unwrap().epoch = 9;
    let second = auditor.note(&compare(&intent, &kernel));
    assert_eq!(second.len(), 1, "only the new difference: {second:?}");
    let (intent_again, consistent_kernel) = consistent();
    let cleared = auditor.note(&compare(&intent_again, &consistent_kernel));
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].0, log::Level::Info);
    assert!(
        auditor
            .note(&compare(&intent, &consistent_kernel))
            .is_empty()
    );
}

#[test]
fn a_missing_or_wrong_owner_record_is_drift_naming_the_backend() {
    let (intent, mut kernel) = consistent();
    kernel.owners.remove(&0);
    kernel.owners.get_mut(&1).unwrap().flags = 0;
    let found = lines(&intent, &kernel);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("backend 10.77.0.11 of video-rtmp (id 0)")
            && found[0].contains("owner record differs"),
        "{found:?}"
    );
    assert!(found[1].contains("(id 1)"), "{found:?}");
}
