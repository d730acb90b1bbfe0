use std::{net::IpAddr, path::Path};

use super::*;
use crate::config::{self, Protocol};

fn addr(a: &str) -> IpAddr {
    a.parse().unwrap()
}

fn backends(addresses: &[&str], weights: &[u32]) -> Vec<Backend> {
    addresses
        .iter()
        .zip(weights)
        .map(|(a, &weight)| Backend {
            address: addr(a),
            weight,
            mac: None,
            vlan: None,
        })
        .collect()
}

const CONFIG: &str = "\
interfaces: [eth0]
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    backends:
      - address: 10.0.0.11
      - address: 10.0.0.12
      - address: 10.0.0.13
      - address: 10.0.0.14
  - name: v6
    vip: \"2001:db8::100\"
    port: 443
    protocol: udp
    backends:
      - address: \"2001:db8::11\"
        weight: 2
      - address: \"2001:db8::12\"
";

fn config() -> Config {
    config::parse_str(Path::new("sim.yaml"), CONFIG, &AnyHost).expect("valid config")
}

#[test]
fn moved_share_counts_flows_whose_backend_differs() {
    let a = Some(addr("10.0.0.1"));
    let b = Some(addr("10.0.0.2"));
    assert_eq!(moved_share(&[a, a, b, b], &[a, b, b, None]), 0.5);
    assert_eq!(moved_share(&[a, b], &[a, b]), 0.0);
    assert_eq!(moved_share(&[], &[]), 0.0);
}

#[test]
fn max_over_mean_ignores_backends_without_flows() {
    assert_eq!(max_over_mean(&[10, 10, 10]), 1.0);
    assert_eq!(max_over_mean(&[30, 10, 0]), 1.5);
    assert_eq!(max_over_mean(&[0, 0]), 0.0);
}

#[test]
fn ideal_shares_follow_weights() {
    let set = backends(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], &[2, 1, 1]);
    assert_eq!(ideal_shares(&set), vec![0.5, 0.25, 0.25]);
    assert_eq!(ideal_shares(&backends(&["10.0.0.1"], &[0])), vec![0.0]);
}

#[test]
fn placement_is_what_the_table_names_for_each_flow_hash() {
    let set = backends(&["10.0.0.1", "10.0.0.2"], &[1, 1]);
    let slots = table(&set, 251);
    let hashes: Vec<u32> = (0..1000).map(|i| i * 7919).collect();
    let placed = place(&set, 251, &hashes);
    for (h, p) in hashes.iter().zip(&placed) {
        assert_eq!(*p, Some(set[slots[(h % 251) as usize] as usize].address));
    }
}

#[test]
fn the_same_seed_draws_the_same_flows_and_another_seed_others() {
    let service = &config().services[0];
    let a = random_flow_hashes(service, 1, 100, &mut SplitMix64::new(7));
    assert_eq!(
        a,
        random_flow_hashes(service, 1, 100, &mut SplitMix64::new(7))
    );
    assert_ne!(
        a,
        random_flow_hashes(service, 1, 100, &mut SplitMix64::new(8))
    );
    assert_ne!(
        a,
        random_flow_hashes(service, 2, 100, &mut SplitMix64::new(7))
    );
}

#[test]
fn equal_backends_get_about_equal_shares_and_weights_are_honoured() {
    let spreads = simulate(&config(), &Options::default()).unwrap();
    let web = &spreads[0];
    assert_eq!(web.flows, u64::from(DEFAULT_FLOWS));
    assert_eq!(web.backends.iter().map(|b| b.flows).sum::<u64>(), web.flows);
    for b in &web.backends {
        assert_eq!(b.ideal, 0.25);
        assert!((b.share - 0.25).abs() < 0.01, "{b:?}");
    }
    let v6 = &spreads[1];
    let ratio = v6.backends[0].flows as f64 / v6.backends[1].flows as f64;
    assert!((ratio - 2.0).abs() < 0.1, "2:1 weights gave {ratio}");
}

#[test]
fn removing_one_of_n_backends_moves_about_one_nth_of_the_flows() {
    let opts = Options {
        remove: vec![addr("10.0.0.12")],
        add: vec![addr("10.0.0.15")],
        ..Options::default()
    };
    let spreads = simulate(&config(), &opts).unwrap();
    let web = &spreads[0];
    assert_eq!(web.changes.len(), 2);
    let removed = &web.changes[0];
    assert_eq!(removed.kind, ChangeKind::Remove);
    assert_eq!(removed.ideal, 0.25);
    assert!((removed.moved - 0.25).abs() < 0.02, "{removed:?}");
    let added = &web.changes[1];
    assert_eq!(added.kind, ChangeKind::Add);
    assert_eq!(added.ideal, 0.2);
    assert!((added.moved - 0.2).abs() < 0.02, "{added:?}");
    // Neither change touches the IPv6 service.
    assert!(spreads[1].changes.is_empty());
}

#[test]
fn requests_the_config_cannot_answer_are_errors() {
    let c = config();
    let with = |remove: &[&str], add: &[&str]| Options {
        remove: remove.iter().map(|a| addr(a)).collect(),
        add: add.iter().map(|a| addr(a)).collect(),
        ..Options::default()
    };
    assert_eq!(
        simulate(&c, &with(&["10.0.0.99"], &[])),
        Err(SimulateError::UnknownRemove(addr("10.0.0.99")))
    );
    assert_eq!(
        simulate(&c, &with(&[], &["10.0.0.11"])),
        Err(SimulateError::AddExisting(addr("10.0.0.11")))
    );
    let mut v4_only = c.clone();
    v4_only.services.retain(|s| s.protocol == Protocol::Tcp);
    assert_eq!(
        simulate(&v4_only, &with(&[], &["2001:db8::99"])),
        Err(SimulateError::AddWrongFamily(addr("2001:db8::99")))
    );
    let none = Options {
        flows: 0,
        ..Options::default()
    };
    assert_eq!(simulate(&c, &none), Err(SimulateError::NoFlows));
}

#[test]
fn the_report_lists_every_backend_with_its_share_and_each_change() {
    let opts = Options {
        remove: vec![addr("10.0.0.11")],
        flows: 1000,
        ..Options::default()
    };
    let spreads = simulate(&config(), &opts).unwrap();
    let text = render(&spreads);
    assert!(text.contains("service web (10.0.0.100:80/tcp, maglev_size 65537): 1000 random flows"));
    assert!(text.contains("service v6 ([2001:db8::100]:443/udp"));
    for b in &spreads[0].backends {
        let row = format!("{:>9} {:>7.2}%", b.flows, b.share * 100.0);
        assert!(text.contains(&row), "no row {row:?} in\n{text}");
    }
    let moved = &spreads[0].changes[0];
    assert!(text.contains(&format!(
        "removing 10.0.0.11: {:.2}% of flows move (ideal 25.00%)",
        moved.moved * 100.0
    )));
}

#[test]
fn the_plot_is_an_svg_naming_every_backend() {
    let opts = Options {
        remove: vec![addr("10.0.0.11")],
        flows: 1000,
        ..Options::default()
    };
    let spreads = simulate(&config(), &opts).unwrap();
    let dir = std::env::temp_dir().join(format!("xdp-lb-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plot.svg");
    plot(&spreads, &path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(svg.starts_with("<svg"));
    for b in spreads.iter().flat_map(|s| &s.backends) {
        assert!(
            svg.contains(&b.address.to_string()),
            "{} missing",
            b.address
        );
    }
    assert!(svg.contains("- 10.0.0.11"));
}
