//! What flow-state sync needs to know of this LB's services and backends: a peer names a
//! backend by its service's listener and its address, never by an id (the LBs' ids
//! differ). Rebuilt from the balancer after every change the loop makes.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use xdp_lb_common::{FlowKey, ServiceKey, addr_from_words, port_from_raw};

use crate::balancer::Balancer;

/// One backend id of this LB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub service: ServiceKey,
    pub service_id: u32,
    pub address: IpAddr,
    pub backend_id: u32,
    pub epoch: u32,
}

/// Every backend (primaries, backups and fallback servers) of every service, both ways.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Directory {
    by_id: HashMap<u32, Placed>,
    by_address: HashMap<(ServiceKey, IpAddr), Placed>,
    services: HashSet<ServiceKey>,
}

impl Directory {
    /// The balancer's services and backends as they are now.
    pub fn of(balancer: &Balancer) -> Self {
        let mut directory = Self::default();
        for service in balancer.services() {
            directory.services.insert(service.key);
            for backend in service.backends.values().chain(service.standbys.values()) {
                directory.insert(Placed {
                    service: service.key,
                    service_id: service.id,
                    address: backend.config.address,
                    backend_id: backend.id,
                    epoch: backend.epoch,
                });
            }
        }
        directory
    }

    /// A hash of what [`Self::of`] would hold for `balancer` (never 0), computed without
    /// building it: equal prints, equal directories (but for a hash collision).
    pub fn fingerprint(balancer: &Balancer) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for service in balancer.services() {
            service.key.hash(&mut hasher);
            service.id.hash(&mut hasher);
            for backend in service.backends.values().chain(service.standbys.values()) {
                backend.config.address.hash(&mut hasher);
                backend.id.hash(&mut hasher);
                backend.epoch.hash(&mut hasher);
            }
        }
        hasher.finish().max(1)
    }

    /// Adds one backend (tests and benchmarks build directories by hand).
    pub fn insert(&mut self, placed: Placed) {
        self.services.insert(placed.service);
        self.by_id.insert(placed.backend_id, placed);
        self.by_address
            .insert((placed.service, placed.address), placed);
    }

    /// The backend with id `id`.
    pub fn by_id(&self, id: u32) -> Option<&Placed> {
        self.by_id.get(&id)
    }

    /// The backend at `address` of the service listening on `service`.
    pub fn by_address(&self, service: &ServiceKey, address: IpAddr) -> Option<&Placed> {
        self.by_address.get(&(*service, address))
    }

    /// Whether a service listens on `service`.
    pub fn has_service(&self, service: &ServiceKey) -> bool {
        self.services.contains(service)
    }
}

/// A flow's client and VIP, from its connection-table key.
pub fn flow_ends(key: &FlowKey) -> (SocketAddr, SocketAddr) {
    let client_port = port_from_raw((key.ports & 0xffff) as u16);
    let vip_port = port_from_raw((key.ports >> 16) as u16);
    (
        SocketAddr::new(addr_from_words(&key.src, key.family), client_port),
        SocketAddr::new(addr_from_words(&key.dst, key.family), vip_port),
    )
}

/// The listener key of the service a flow's key belongs to.
pub fn service_of(key: &FlowKey) -> ServiceKey {
    let (_, vip) = flow_ends(key);
    ServiceKey::new(vip.ip(), vip.port(), key.proto).on_vlan(key.vlan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_key_gives_back_its_ends_for_both_families() {
        for (client, vip) in [
            ("192.0.2.7:40123", "198.51.100.1:1935"),
            ("[2001:db8::7]:40123", "[2001:db8::100]:8080"),
        ] {
            let (client, vip): (SocketAddr, SocketAddr) =
                (client.parse().unwrap(), vip.parse().unwrap());
            let key = FlowKey::new(client, vip, 6, 200);
            assert_eq!(flow_ends(&key), (client, vip));
            assert_eq!(
                service_of(&key),
                ServiceKey::new(vip.ip(), vip.port(), 6).on_vlan(200)
            );
        }
    }
}
