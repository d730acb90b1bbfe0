//! Every LB decides the same (root only): two balancers on two real data planes end with
//! the same configuration after different histories (services added in another order, a
//! service come and gone, backends removed and re-added, re-weighted, down and up), so
//! their backend ids differ; their live Maglev tables, read back from the kernel and
//! translated to backend addresses, are slot for slot the same, and so are the choices
//! `predict` (what `xdp-lb lookup` answers for a new flow) makes. This is what lets a flow
//! the router moves to another LB reach the same backend there.

mod support;

use std::net::IpAddr;

use support::harness::{Harness, service};
use xdp_lb::config::{Backend, Protocol, Service};
use xdp_lb_common::{PROTO_TCP, ServiceKey};

const VIP: &str = "10.0.0.100";

fn rtmp() -> Service {
    service(
        "video-rtmp",
        VIP,
        1935,
        Protocol::Tcp,
        &["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"],
    )
}

fn hls() -> Service {
    service(
        "video-hls",
        VIP,
        8080,
        Protocol::Tcp,
        &["10.0.0.11", "10.0.0.12", "10.0.0.13"],
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The live table of `name` as the kernel holds it, each slot as its backend's address.
fn live_table(h: &Harness, name: &str, port: u16) -> Vec<IpAddr> {
    let dp = h.balancer.dataplane();
    let value = dp
        .service(&ServiceKey::new(ip(VIP), port, PROTO_TCP))
        .expect("the service's key");
    let state = h.balancer.service(name).expect("the service");
    let by_id: std::collections::BTreeMap<u32, IpAddr> = state
        .backends
        .values()
        .chain(state.standbys.values())
        .map(|b| (b.id, b.config.address))
        .collect();
    dp.read_table(value.table_offset, value.table_size)
        .expect("reading the table")
        .iter()
        .map(|id| {
            *by_id
                .get(id)
                .unwrap_or_else(|| panic!("slot names id {id}"))
        })
        .collect()
}

fn ids(h: &Harness, name: &str) -> Vec<(IpAddr, u32)> {
    let state = h.balancer.service(name).expect("the service");
    state
        .backends
        .values()
        .map(|b| (b.config.address, b.id))
        .collect()
}

#[test]
fn two_lbs_with_one_config_and_different_histories_build_the_same_tables() {
    // LB 1: the file, read once at start.
    let first = Harness::new(&[rtmp(), hls()]);

    // LB 2: started with another file, then changed at run time into the same one.
    let old = service(
        "old",
        "10.0.0.200",
        1935,
        Protocol::Tcp,
        &["10.0.0.21", "10.0.0.22", "10.0.0.23"],
    );
    let mut partial = rtmp();
    partial
        .backends
        .retain(|b| ["10.0.0.14", "10.0.0.12"].contains(&b.address.to_string().as_str()));
    let mut second = Harness::new(&[old, hls(), partial]);
    let b = &mut second.balancer;
    b.remove_service("old").expect("removing a service");
    let forwarding = |address: &str| {
        Harness::loopback_forwarding(&Backend {
            address: ip(address),
            weight: 1,
            mac: None,
            vlan: None,
        })
    };
    for address in ["10.0.0.13", "10.0.0.11"] {
        let backend = Backend {
            address: ip(address),
            weight: 1,
            mac: None,
            vlan: None,
        };
        b.add_backend("video-rtmp", &backend, forwarding(address))
            .expect("adding a backend");
    }
    b.remove_backend("video-rtmp", ip("10.0.0.12"))
        .expect("removing a backend");
    let again = Backend {
        address: ip("10.0.0.12"),
        weight: 1,
        mac: None,
        vlan: None,
    };
    b.add_backend("video-rtmp", &again, forwarding("10.0.0.12"))
        .expect("adding it back");
    b.set_weight("video-rtmp", ip("10.0.0.13"), 3).unwrap();
    b.set_weight("video-rtmp", ip("10.0.0.13"), 1).unwrap();
    b.set_health("video-hls", ip("10.0.0.12"), false).unwrap();
    b.set_health("video-hls", ip("10.0.0.12"), true).unwrap();
    b.remove_backend("video-hls", ip("10.0.0.11")).unwrap();
    let hls_again = Backend {
        address: ip("10.0.0.11"),
        weight: 1,
        mac: None,
        vlan: None,
    };
    b.add_backend("video-hls", &hls_again, forwarding("10.0.0.11"))
        .unwrap();

    // The ids differ (the point of the histories)...
    assert_ne!(
        ids(&first, "video-rtmp"),
        ids(&second, "video-rtmp"),
        "the histories gave the backends other ids"
    );
    // ...the choices do not.
    for (name, port) in [("video-rtmp", 1935), ("video-hls", 8080)] {
        let (a, b) = (
            live_table(&first, name, port),
            live_table(&second, name, port),
        );
        assert_eq!(a.len(), b.len(), "{name}: table sizes");
        let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(
            differing,
            0,
            "{name}: {differing} of {} slots name another backend on the second LB",
            a.len()
        );
        for port in 30000..30500 {
            assert_eq!(
                first.predict(name, "198.51.100.7", port),
                second.predict(name, "198.51.100.7", port),
                "{name}: lookup for client port {port}"
            );
        }
    }
}
