//! `xdp-lb simulate`: how flows would spread over a config's backends, and what share of
//! them would move if a backend were removed or added, computed with the data plane's own
//! pieces: random 5-tuples hashed by `xdp_lb_common::flow_hash` with the config's seed,
//! over tables from `maglev::build_table` keyed by the backends' addresses, exactly as the
//! balancer builds them.
//!
//! The benchmarks' distribution analysis is built on the same functions.

mod plot;

use std::{fmt::Write as _, net::IpAddr};

use xdp_lb_common::{addr_words, flow_hash, source_hash};

use crate::{
    config::{Backend, Config, HashMode, HostFacts, Service},
    maglev::{self, MaglevBackend},
};

pub use plot::plot;

/// Flows drawn per service when `--flows` is not given.
pub const DEFAULT_FLOWS: u32 = 100_000;
/// Seed of the generator of random flows: fixed, so a simulation is repeatable.
pub const DEFAULT_SAMPLE_SEED: u64 = 0x5151_0a1e_b5ee_d001;

/// Host facts for a simulation: interfaces are not looked at (the config may be another
/// machine's).
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyHost;

impl HostFacts for AnyHost {
    fn interface_exists(&self, _name: &str) -> bool {
        true
    }
}

/// SplitMix64: a small, fast, well-spread generator (Steele, Lea, Flood 2014), enough for
/// drawing test flows; fixed seeds make every run repeatable.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A random client address of the same family as `like`.
pub fn random_client(rng: &mut SplitMix64, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::from((rng.next_u64() as u32).to_be_bytes()),
        IpAddr::V6(_) => {
            let bits = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            IpAddr::from(bits.to_be_bytes())
        }
    }
}

/// The hash the data plane computes for a flow from `client`:`client_port` to `service`
/// (the 5-tuple, or the client address alone for `hash: source`); `None` when the
/// families differ.
pub fn service_hash(service: &Service, client: IpAddr, client_port: u16, seed: u32) -> Option<u32> {
    match service.hash {
        HashMode::Source if client.is_ipv4() == service.vip.is_ipv4() => {
            Some(source_hash(&addr_words(client), client.is_ipv4(), seed))
        }
        HashMode::Source => None,
        HashMode::Flow => flow_hash(
            client,
            client_port,
            service.vip,
            service.port,
            service.protocol.number(),
            seed,
        ),
    }
}

/// The hashes the data plane computes for `count` random flows to `service` (random
/// client addresses of the VIP's family, random source ports), with `flow_hash_seed`.
pub fn random_flow_hashes(
    service: &Service,
    flow_hash_seed: u32,
    count: u32,
    rng: &mut SplitMix64,
) -> Vec<u32> {
    (0..count)
        .filter_map(|_| {
            let client = random_client(rng, service.vip);
            let port = (rng.next_u64() % 65535) as u16 + 1;
            service_hash(service, client, port, flow_hash_seed)
        })
        .collect()
}

/// The key Maglev derives a backend's permutation from: its address bytes (as the
/// balancer keys it).
pub fn address_key(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The Maglev table of `backends` with `size` slots; a slot holds the index of its
/// backend in `backends`.
pub fn table(backends: &[Backend], size: u32) -> Vec<u32> {
    let keys: Vec<Vec<u8>> = backends.iter().map(|b| address_key(b.address)).collect();
    let members: Vec<MaglevBackend<'_>> = backends
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (b, key))| MaglevBackend {
            id: i as u32,
            key,
            weight: b.weight,
        })
        .collect();
    maglev::build_table(&members, size)
}

/// Where each flow goes: the address of its backend, `None` when the table is empty.
pub fn place(backends: &[Backend], size: u32, hashes: &[u32]) -> Vec<Option<IpAddr>> {
    let slots = table(backends, size);
    hashes
        .iter()
        .map(|h| {
            let slot = *slots.get((h % size.max(1)) as usize)?;
            backends.get(slot as usize).map(|b| b.address)
        })
        .collect()
}

/// Flows per backend of `backends`, in their order.
pub fn count(backends: &[Backend], placement: &[Option<IpAddr>]) -> Vec<u64> {
    backends
        .iter()
        .map(|b| placement.iter().filter(|p| **p == Some(b.address)).count() as u64)
        .collect()
}

/// The share each backend should get: its weight over the sum of weights.
pub fn ideal_shares(backends: &[Backend]) -> Vec<f64> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    backends
        .iter()
        .map(|b| {
            if total == 0 {
                0.0
            } else {
                b.weight as f64 / total as f64
            }
        })
        .collect()
}

/// The share of flows whose backend differs between two placements of the same flows.
pub fn moved_share(before: &[Option<IpAddr>], after: &[Option<IpAddr>]) -> f64 {
    let total = before.len().min(after.len());
    if total == 0 {
        return 0.0;
    }
    let moved = before.iter().zip(after).filter(|(b, a)| b != a).count();
    moved as f64 / total as f64
}

/// Largest share over mean share of the backends that take flows (1.0 is perfect).
pub fn max_over_mean(counts: &[u64]) -> f64 {
    let taking: Vec<u64> = counts.iter().copied().filter(|&c| c > 0).collect();
    if taking.is_empty() {
        return 0.0;
    }
    let mean = taking.iter().sum::<u64>() as f64 / taking.len() as f64;
    taking.iter().copied().max().unwrap_or(0) as f64 / mean
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    pub flows: u32,
    pub sample_seed: u64,
    /// Backends to take out, each on its own (from every service that has it).
    pub remove: Vec<IpAddr>,
    /// Backends to bring in with weight 1, each on its own (into every service of its
    /// family that does not have it yet).
    pub add: Vec<IpAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            flows: DEFAULT_FLOWS,
            sample_seed: DEFAULT_SAMPLE_SEED,
            remove: Vec::new(),
            add: Vec::new(),
        }
    }
}

/// One backend's line of a service's spread.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendShare {
    pub address: IpAddr,
    pub weight: u32,
    pub flows: u64,
    pub share: f64,
    pub ideal: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Remove,
    Add,
}

/// What one removal or addition would do to a service.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub address: IpAddr,
    /// Share of the service's flows that would go to another backend.
    pub moved: f64,
    /// The least that must move: the removed backend's share, or the added one's.
    pub ideal: f64,
}

/// One service's simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpread {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub maglev_size: u32,
    pub flows: u64,
    pub backends: Vec<BackendShare>,
    pub changes: Vec<Change>,
}

impl ServiceSpread {
    pub fn max_over_mean(&self) -> f64 {
        max_over_mean(&self.backends.iter().map(|b| b.flows).collect::<Vec<_>>())
    }
}

/// A request the config cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulateError {
    #[error("--remove {0}: no service has this backend")]
    UnknownRemove(IpAddr),
    #[error("--add {0}: no service has a VIP of this address family")]
    AddWrongFamily(IpAddr),
    #[error("--add {0}: already a backend of every service of its family")]
    AddExisting(IpAddr),
    #[error("--flows must be at least 1")]
    NoFlows,
    #[error("the config has no service")]
    NoService,
}

/// Simulates every service of `config`.
pub fn simulate(config: &Config, opts: &Options) -> Result<Vec<ServiceSpread>, SimulateError> {
    if opts.flows == 0 {
        return Err(SimulateError::NoFlows);
    }
    if config.services.is_empty() {
        return Err(SimulateError::NoService);
    }
    for &address in &opts.remove {
        let known = config
            .services
            .iter()
            .any(|s| s.backends.iter().any(|b| b.address == address));
        if !known {
            return Err(SimulateError::UnknownRemove(address));
        }
    }
    for &address in &opts.add {
        let same_family: Vec<&Service> = config
            .services
            .iter()
            .filter(|s| s.vip.is_ipv4() == address.is_ipv4())
            .collect();
        if same_family.is_empty() {
            return Err(SimulateError::AddWrongFamily(address));
        }
        if same_family
            .iter()
            .all(|s| s.backends.iter().any(|b| b.address == address))
        {
            return Err(SimulateError::AddExisting(address));
        }
    }
    let mut rng = SplitMix64::new(opts.sample_seed);
    Ok(config
        .services
        .iter()
        .map(|service| simulate_service(service, config.flow_hash_seed, opts, &mut rng))
        .collect())
}

fn simulate_service(
    service: &Service,
    flow_hash_seed: u32,
    opts: &Options,
    rng: &mut SplitMix64,
) -> ServiceSpread {
    let hashes = random_flow_hashes(service, flow_hash_seed, opts.flows, rng);
    let size = service.maglev_size;
    let base = place(&service.backends, size, &hashes);
    let counts = count(&service.backends, &base);
    let ideal = ideal_shares(&service.backends);
    let flows = hashes.len() as u64;
    let backends = service
        .backends
        .iter()
        .zip(counts.iter().zip(&ideal))
        .map(|(b, (&n, &ideal))| BackendShare {
            address: b.address,
            weight: b.weight,
            flows: n,
            share: n as f64 / flows.max(1) as f64,
            ideal,
        })
        .collect();
    let mut changes = Vec::new();
    for &address in &opts.remove {
        let Some(i) = service.backends.iter().position(|b| b.address == address) else {
            continue;
        };
        let mut fewer = service.backends.clone();
        fewer.remove(i);
        changes.push(Change {
            kind: ChangeKind::Remove,
            address,
            moved: moved_share(&base, &place(&fewer, size, &hashes)),
            ideal: ideal[i],
        });
    }
    for &address in &opts.add {
        let family_matches = address.is_ipv4() == service.vip.is_ipv4();
        if !family_matches || service.backends.iter().any(|b| b.address == address) {
            continue;
        }
        let mut more = service.backends.clone();
        more.push(Backend {
            address,
            weight: 1,
            mac: None,
            vlan: None,
        });
        changes.push(Change {
            kind: ChangeKind::Add,
            address,
            moved: moved_share(&base, &place(&more, size, &hashes)),
            ideal: ideal_shares(&more).last().copied().unwrap_or(0.0),
        });
    }
    ServiceSpread {
        name: service.name.clone(),
        vip: service.vip,
        port: service.port,
        protocol: service.protocol.to_string(),
        maglev_size: size,
        flows,
        backends,
        changes,
    }
}

/// The simulation as the command prints it: a table per service, then the moves.
pub fn render(spreads: &[ServiceSpread]) -> String {
    let mut out = String::new();
    for s in spreads {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "service {} ({}:{}/{}, maglev_size {}): {} random flows",
            s.name,
            fmt_vip(s.vip),
            s.port,
            s.protocol,
            s.maglev_size,
            s.flows
        );
        let _ = writeln!(
            out,
            "  {:<40} {:>6} {:>9} {:>8} {:>8}",
            "backend", "weight", "flows", "share", "ideal"
        );
        for b in &s.backends {
            let _ = writeln!(
                out,
                "  {:<40} {:>6} {:>9} {:>7.2}% {:>7.2}%",
                b.address.to_string(),
                b.weight,
                b.flows,
                b.share * 100.0,
                b.ideal * 100.0
            );
        }
        if s.backends.iter().any(|b| b.flows > 0) {
            let _ = writeln!(out, "  max/mean share: {:.4}", s.max_over_mean());
        } else {
            let _ = writeln!(out, "  no backend takes flows (every weight is 0)");
        }
        for c in &s.changes {
            let verb = match c.kind {
                ChangeKind::Remove => "removing",
                ChangeKind::Add => "adding",
            };
            let _ = writeln!(
                out,
                "  {verb} {}: {:.2}% of flows move (ideal {:.2}%)",
                c.address,
                c.moved * 100.0,
                c.ideal * 100.0
            );
        }
        out.push('\n');
    }
    out
}

fn fmt_vip(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests;
