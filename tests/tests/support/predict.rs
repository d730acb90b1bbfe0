//! Which backend the data plane gives a new flow, computed independently of the agent from
//! the same flow hash and Maglev code (ids here are positions; the agent's ids differ, the
//! choice does not).

#![allow(dead_code)]

use std::net::IpAddr;

use xdp_lb::maglev::{self, MaglevBackend};

/// The backend (of `backends`, with weights) that a new TCP flow from `client`:`client_port`
/// to `vip`:`vip_port` gets with a table of `size` slots.
pub fn maglev_owner(
    backends: &[(IpAddr, u32)],
    size: u32,
    seed: u32,
    client: IpAddr,
    client_port: u16,
    vip: IpAddr,
    vip_port: u16,
) -> Option<IpAddr> {
    let keys: Vec<Vec<u8>> = backends
        .iter()
        .map(|(a, _)| match a {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        })
        .collect();
    let members: Vec<MaglevBackend<'_>> = keys
        .iter()
        .zip(backends)
        .enumerate()
        .map(|(i, (key, (_, weight)))| MaglevBackend {
            id: i as u32,
            key,
            weight: *weight,
        })
        .collect();
    let table = maglev::build_table(&members, size);
    if table.is_empty() {
        return None;
    }
    let hash = xdp_lb_common::flow_hash(
        client,
        client_port,
        vip,
        vip_port,
        xdp_lb_common::PROTO_TCP,
        seed,
    )?;
    Some(backends[table[(hash % size) as usize] as usize].0)
}

/// [`maglev_owner`] for the lab's client and VIP, with the default seed and table size.
pub fn lab_owner(backends: &[(IpAddr, u32)], client_port: u16, vip_port: u16) -> Option<IpAddr> {
    lab_owner_from(
        xdp_lb_tests::Lab::CLIENT_ADDR,
        backends,
        client_port,
        vip_port,
    )
}

/// [`lab_owner`] for a flow from another of the lab's clients (`client`, an address such as
/// [`xdp_lb_tests::Lab::ROUTED_CLIENT_ADDR`]).
pub fn lab_owner_from(
    client: &str,
    backends: &[(IpAddr, u32)],
    client_port: u16,
    vip_port: u16,
) -> Option<IpAddr> {
    maglev_owner(
        backends,
        65537,
        xdp_lb::config::DEFAULT_FLOW_HASH_SEED,
        client.parse().ok()?,
        client_port,
        xdp_lb_tests::Lab::VIP.parse().ok()?,
        vip_port,
    )
}
