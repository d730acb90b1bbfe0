//! VLANs end to end (root only): the agent on the LB's interface balances 802.1Q and QinQ
//! tagged frames of a service bound to VLAN 100, and they reach the backends on VLAN 100
//! with their tags exactly as they were, and the backend on VLAN 200 with the outer tag's
//! VLAN id rewritten to 200 (an inner tag kept).
//!
//! This kernel has neither 802.1Q devices nor bridge VLAN filtering, so no host here can
//! hold a TCP session on a VLAN: the client sends tagged frames raw (AF_PACKET) and the
//! backends' captures show what arrived (the backends themselves are reached over the
//! untagged bridge, which carries the tags through).

mod support;

use std::{collections::BTreeMap, net::IpAddr, thread, time::Duration};

use support::{
    frames::{Ipv4Frame, tagged},
    predict::lab_owner,
    raw::{parse_mac, send_raw},
};
use xdp_lb_tests::{Lab, LabOptions, LabProcess, is_root};

const FIRST_PORT: u16 = 51000;
const FLOWS: u16 = 30;
/// The backend (by index) on VLAN 200; the others are on the service's VLAN 100.
const ON_VLAN_200: usize = 1;

fn capture(lab: &Lab, i: usize) -> (LabProcess, String) {
    let pcap = lab
        .dir()
        .join(format!("b{}.pcap", i + 1))
        .to_string_lossy()
        .into_owned();
    let process = lab
        .spawn(
            lab.ns_backend(i),
            &[
                "tcpdump",
                "-Z",
                "root",
                "--immediate-mode",
                "-U",
                "-i",
                "eth0",
                "-n",
                "-e",
                "-w",
                &pcap,
                "vlan",
            ],
        )
        .expect("tcpdump");
    (process, pcap)
}

/// A TCP SYN from the client to the VIP's HTTP port from `port`, addressed to the LB.
fn syn(port: u16, tags: &[(u16, u16)]) -> Vec<u8> {
    let mut frame = Ipv4Frame::tcp(Lab::CLIENT_ADDR, port, Lab::VIP, Lab::HTTP_PORT).build();
    frame[0..6].copy_from_slice(&parse_mac(Lab::LB_MAC));
    frame[6..12].copy_from_slice(&parse_mac(Lab::CLIENT_MAC));
    tagged(&frame, tags)
}

#[test]
fn tagged_frames_of_a_vlan_service_are_balanced_and_take_their_backends_vlan() {
    assert!(is_root(), "the lab needs root (cargo xtask test)");
    let lab = Lab::up(LabOptions::default()).expect("lab");
    // The bridge takes tags off into packet metadata; with VLAN TX offload off, the switch
    // port towards the LB writes them back into the frame, as a physical trunk does.
    lab.exec_ok(
        lab.ns_switch(),
        &[
            "ethtool",
            "-K",
            "lb",
            "txvlan",
            "off",
            "tx-vlan-stag-hw-insert",
            "off",
        ],
    )
    .expect("ethtool");
    let yaml = format!(
        "interfaces: [eth0]\nservices:\n  - name: hls-vlan100\n    vip: {}\n    port: {}\n    protocol: tcp\n    vlan: 100\n    backends:\n{}",
        Lab::VIP,
        Lab::HTTP_PORT,
        (0..3)
            .map(|i| {
                let vlan = if i == ON_VLAN_200 {
                    "        vlan: 200\n"
                } else {
                    ""
                };
                format!("      - address: {}\n{vlan}", Lab::backend_addr(i))
            })
            .collect::<String>()
    );
    let config = lab.dir().join("vlan.yaml");
    std::fs::write(&config, yaml).unwrap();
    let _agent = lab
        .start_agent(&Lab::locate_agent_binary().unwrap(), &config)
        .expect("agent");

    // Untagged, the VIP's port 8080 is no service: the LB's own stack refuses it.
    let untagged = lab
        .exec(
            lab.ns_client(),
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://{}:8080/", Lab::VIP),
            ],
        )
        .unwrap();
    assert_eq!(
        untagged.status.code(),
        Some(7),
        "untagged traffic is not the VLAN service's: {untagged:?}"
    );

    let captures: Vec<(LabProcess, String)> = (0..3).map(|i| capture(&lab, i)).collect();
    thread::sleep(Duration::from_millis(500));
    let mut frames = Vec::new();
    for port in FIRST_PORT..FIRST_PORT + FLOWS {
        frames.push(syn(port, &[(0x8100, 100)]));
    }
    // QinQ: outer 802.1ad tag 100, inner 802.1Q tag 7.
    for port in FIRST_PORT + FLOWS..FIRST_PORT + 2 * FLOWS {
        frames.push(syn(port, &[(0x88a8, 100), (0x8100, 7)]));
    }
    // Another VLAN: not the service's, so no backend may see it.
    frames.push(syn(FIRST_PORT + 2 * FLOWS, &[(0x8100, 200)]));
    send_raw(lab.ns_client(), "eth0", frames).expect("sending tagged frames");
    thread::sleep(Duration::from_millis(500));

    let mut arrived: BTreeMap<u16, (usize, String)> = BTreeMap::new();
    for (i, (mut process, pcap)) in captures.into_iter().enumerate() {
        process.signal(libc::SIGINT).unwrap();
        process.wait_with_timeout(Duration::from_secs(10)).unwrap();
        let text = lab
            .exec_ok(lab.ns_backend(i), &["tcpdump", "-n", "-e", "-r", &pcap])
            .unwrap();
        for line in text
            .lines()
            .filter(|l| l.contains(&format!("> {}.8080", Lab::VIP)))
        {
            let port: u16 = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{}.", Lab::CLIENT_ADDR)))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no client port in {line}"));
            assert!(
                arrived.insert(port, (i, line.to_owned())).is_none(),
                "flow {port} arrived twice"
            );
        }
    }

    let backends: Vec<(IpAddr, u32)> = (0..3)
        .map(|i| (Lab::backend_addr(i).parse().unwrap(), 1))
        .collect();
    for port in FIRST_PORT..FIRST_PORT + 2 * FLOWS {
        let (at, line) = arrived
            .get(&port)
            .unwrap_or_else(|| panic!("flow {port} reached no backend"));
        let owner = lab_owner(&backends, port, Lab::HTTP_PORT).unwrap();
        assert_eq!(
            backends[*at].0, owner,
            "flow {port} went to the backend the tables name"
        );
        assert!(
            line.contains(&format!("{} > {}", Lab::LB_MAC, Lab::backend_mac(*at))),
            "MACs rewritten: {line}"
        );
        // The backend on VLAN 200 gets its own VLAN id in the outer tag.
        let (vlan, other) = if *at == ON_VLAN_200 {
            ("vlan 200", "vlan 100")
        } else {
            ("vlan 100", "vlan 200")
        };
        if port < FIRST_PORT + FLOWS {
            assert!(
                line.contains(vlan) && !line.contains(other) && !line.contains("vlan 7"),
                "802.1Q tag with {vlan}: {line}"
            );
        } else {
            assert!(
                line.contains("802.1Q-QinQ") || line.contains("0x88a8"),
                "outer 802.1ad tag kept: {line}"
            );
            assert!(
                line.contains(vlan) && !line.contains(other) && line.contains("vlan 7"),
                "outer tag with {vlan}, inner tag kept: {line}"
            );
        }
    }
    assert!(
        !arrived.contains_key(&(FIRST_PORT + 2 * FLOWS)),
        "a frame of VLAN 200 was balanced"
    );
    let used: std::collections::BTreeSet<usize> = arrived.values().map(|(i, _)| *i).collect();
    assert_eq!(used.len(), 3, "the flows spread over every backend");
}
