//! The LB's own address to health-check a backend from.
//!
//! Backends hold the VIPs on lo, so a check sent from a VIP would be answered to the
//! backend itself; and on a host whose first address on the interface is a VIP the kernel
//! would pick it. Checks therefore bind to an address of the interface the backend is
//! reached through, of its family, that is not a VIP.

use std::{collections::BTreeSet, net::IpAddr};

use futures::TryStreamExt as _;
use rtnetlink::packet_route::address::AddressAttribute;

use super::{NeighbourError, Neighbours};

impl Neighbours {
    /// The address to check `backend` from: one of the egress interface's addresses of the
    /// backend's family, never one of `avoid` (the VIPs); one whose subnet holds the backend
    /// is preferred.
    pub async fn source_for(
        &self,
        backend: IpAddr,
        avoid: &BTreeSet<IpAddr>,
    ) -> Result<IpAddr, NeighbourError> {
        let egress = self.egress_for(backend).await?;
        let addresses =
            self.addresses_of(egress.ifindex)
                .await
                .map_err(|error| NeighbourError::Netlink {
                    context: format!("listing the addresses of {}", egress.ifname),
                    error,
                })?;
        pick_source(backend, &addresses, avoid).ok_or(NeighbourError::NoSourceAddress {
            backend,
            ifname: egress.ifname,
        })
    }

    /// Every address of interface `ifindex` with its prefix length.
    async fn addresses_of(&self, ifindex: u32) -> Result<Vec<(IpAddr, u8)>, rtnetlink::Error> {
        let one_dump_at_a_time = self.dumps.lock().await;
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await?;
        drop(one_dump_at_a_time);
        Ok(messages
            .into_iter()
            .filter_map(|m| {
                // IFA_LOCAL is this host's end on point-to-point links; IFA_ADDRESS otherwise.
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                local.or(address).map(|ip| (ip, m.header.prefix_len))
            })
            .collect())
    }
}

/// The source for `backend` among `addresses`: same family, not in `avoid`, not IPv6
/// link-local (unless the backend is), in the backend's subnet if any is.
pub(super) fn pick_source(
    backend: IpAddr,
    addresses: &[(IpAddr, u8)],
    avoid: &BTreeSet<IpAddr>,
) -> Option<IpAddr> {
    let candidates: Vec<(IpAddr, u8)> = addresses
        .iter()
        .copied()
        .filter(|(ip, _)| ip.is_ipv4() == backend.is_ipv4() && !avoid.contains(ip))
        .filter(|(ip, _)| link_local(*ip) == link_local(backend) || !link_local(*ip))
        .collect();
    candidates
        .iter()
        .find(|(ip, prefix)| same_subnet(*ip, backend, *prefix))
        .or(candidates.first())
        .map(|(ip, _)| *ip)
}

fn link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let bits = |ip: IpAddr| -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            IpAddr::V6(v6) => u128::from(v6),
        }
    };
    let width = if a.is_ipv4() { 32 } else { 128 };
    // A host address (/32, /128) holds only itself.
    if a.is_ipv4() != b.is_ipv4() || prefix >= width {
        return false;
    }
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    bits(a) & mask == bits(b) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_source_is_never_a_vip_even_when_the_vip_is_listed_first() {
        let addresses = [(ip("10.0.0.100"), 24), (ip("10.0.0.1"), 24)];
        let vips = BTreeSet::from([ip("10.0.0.100")]);
        assert_eq!(
            pick_source(ip("10.0.0.11"), &addresses, &vips),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(pick_source(ip("10.0.0.11"), &addresses[..1], &vips), None);
    }

    #[test]
    fn an_address_in_the_backends_subnet_is_preferred_and_the_family_must_match() {
        let addresses = [
            (ip("192.0.2.1"), 24),
            (ip("fd00::1"), 64),
            (ip("10.0.0.1"), 24),
            (ip("fe80::1"), 64),
        ];
        let none = BTreeSet::new();
        assert_eq!(
            pick_source(ip("10.0.0.11"), &addresses, &none),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            pick_source(ip("172.16.0.9"), &addresses, &none),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            pick_source(ip("fd00::11"), &addresses, &none),
            Some(ip("fd00::1"))
        );
        assert_eq!(
            pick_source(ip("fe80::11"), &addresses, &none),
            Some(ip("fe80::1"))
        );
        assert_eq!(pick_source(ip("fd00::11"), &addresses[..1], &none), None);
    }

    #[test]
    fn subnets_are_compared_on_their_prefix() {
        assert!(same_subnet(ip("10.0.0.1"), ip("10.0.0.200"), 24));
        assert!(!same_subnet(ip("10.0.0.1"), ip("10.0.1.1"), 24));
        assert!(!same_subnet(ip("10.0.0.100"), ip("10.0.0.11"), 32));
        assert!(same_subnet(ip("fd00::1"), ip("fd00::ffff"), 64));
        assert!(!same_subnet(ip("10.0.0.1"), ip("fd00::1"), 8));
    }
}
