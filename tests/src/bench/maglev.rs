//! Maglev: how long a table takes to build, how long a health change takes to put a new
//! table live in the kernel, and what writing the same table slot by slot would cost.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::{
    EbpfLoader,
    maps::{Array, MapData},
};
use serde::Serialize;
use xdp_lb::{
    balancer::{Balancer, Forwarding},
    config::{Backend, FlowTable, MacAddr},
    dataplane::{Dataplane, LoadOptions, LogLevel},
    maglev::{MaglevBackend, build_table},
    simulate::address_key,
};
use xdp_lb_common::{ServiceKey, map_names};

use super::{service_yaml, services, stats::Summary};

#[derive(Clone, Debug)]
pub struct MaglevOptions {
    pub build_runs: usize,
    pub switch_runs: usize,
    pub single_update_runs: usize,
    /// (slots, backends) pairs to build.
    pub builds: Vec<(u32, u32)>,
    /// (slots, backends) pairs whose health change is timed.
    pub switches: Vec<(u32, u32)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BuildTime {
    pub slots: u32,
    pub backends: u32,
    pub ms: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct SwitchTime {
    pub slots: u32,
    pub backends: u32,
    /// "down" (a backend leaves the table) or "up" (it comes back).
    pub change: String,
    pub ms: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct SingleUpdates {
    pub slots: u32,
    pub ms: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct MaglevResults {
    pub builds: Vec<BuildTime>,
    pub switches: Vec<SwitchTime>,
    pub single_updates: SingleUpdates,
}

/// Backend `i`'s address: 10.1.x.y from i (distinct for i < 65536).
fn backend_addr(i: u32) -> IpAddr {
    let [_, _, x, y] = (i + 1).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, 1, x, y))
}

/// Times `build_table` for `backends` equal-weight backends keyed by their addresses.
pub fn build_time(slots: u32, backends: u32, runs: usize) -> Result<BuildTime> {
    let keys: Vec<Vec<u8>> = (0..backends)
        .map(|i| address_key(backend_addr(i)))
        .collect();
    let members: Vec<MaglevBackend<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| MaglevBackend {
            id: i as u32,
            key,
            weight: 1,
        })
        .collect();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let table = build_table(black_box(&members), black_box(slots));
        samples.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(
            table.len() == slots as usize,
            "a table of {} slots",
            table.len()
        );
    }
    Ok(BuildTime {
        slots,
        backends,
        ms: Summary::of(&samples),
    })
}

fn loopback(b: &Backend) -> Option<Forwarding> {
    let [_, _, x, y] = match b.address {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    };
    Some(Forwarding {
        mac: MacAddr([0x02, 0xbe, 0, 0, x, y]),
        src_mac: MacAddr([0x02, 0x1b, 0, 0, 0, 1]),
        ifindex: 1,
    })
}

/// Times `Balancer::set_health` (build, mmap write, `service_by_vip` switch, backend
/// entry) for alternate down and up changes of rotating backends, and checks after each
/// that the kernel's live table is the new one.
pub fn switch_time(slots: u32, backends: u32, runs: usize) -> Result<[SwitchTime; 2]> {
    let dataplane = Dataplane::load(&LoadOptions {
        flow_hash_seed: 1,
        maglev_table_slots: 2 * slots,
        flow_table: FlowTable {
            size: 1024,
            ..FlowTable::default()
        },
        log_level: LogLevel::Error,
    })?;
    let mut balancer = Balancer::new(dataplane, 1);
    let members: Vec<(IpAddr, u32)> = (0..backends).map(|i| (backend_addr(i), 1)).collect();
    let vip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
    let service = services(&service_yaml("switch", vip, 8080, "tcp", slots, &members))?.remove(0);
    balancer.add_service(&service, &loopback)?;
    let key = ServiceKey::new(service.vip, service.port, service.protocol.number());
    let mut down = Vec::with_capacity(runs);
    let mut up = Vec::with_capacity(runs);
    for run in 0..runs {
        let address = backend_addr(run as u32 % backends);
        let id = balancer
            .service("switch")
            .and_then(|s| s.backends.get(&address))
            .map(|b| b.id)
            .ok_or_else(|| anyhow!("no backend {address}"))?;
        for (healthy, samples) in [(false, &mut down), (true, &mut up)] {
            let generation = balancer.dataplane().service(&key).map(|v| v.generation);
            let start = Instant::now();
            balancer.set_health("switch", address, healthy)?;
            samples.push(start.elapsed().as_secs_f64() * 1e3);
            let live = balancer.dataplane().service(&key).map(|v| v.generation);
            ensure!(
                live != generation,
                "the kernel's service value did not change"
            );
            let in_table = balancer.live_table("switch")?.contains(&id);
            ensure!(
                in_table == healthy,
                "backend {address} is {}in the kernel's live table after set_health({healthy})",
                if in_table { "" } else { "not " }
            );
        }
    }
    Ok([
        SwitchTime {
            slots,
            backends,
            change: "down".to_owned(),
            ms: Summary::of(&down),
        },
        SwitchTime {
            slots,
            backends,
            change: "up".to_owned(),
            ms: Summary::of(&up),
        },
    ])
}

/// Times writing a table of `slots` slots into a BPF array with one
/// `bpf_map_update_elem` per slot (what the mmap spares).
pub fn single_updates(slots: u32, runs: usize) -> Result<SingleUpdates> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(map_names::MAGLEV_TABLES, slots)
        .map_max_entries(map_names::FLOWS, 1024)
        .load(xdp_lb::EBPF_OBJECT)
        .context("loading the object")?;
    let map = ebpf
        .take_map(map_names::MAGLEV_TABLES)
        .ok_or_else(|| anyhow!("no map maglev_tables"))?;
    let mut array: Array<MapData, u32> = Array::try_from(map)?;
    let table = (0..slots).map(|i| i % 100).collect::<Vec<u32>>();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        for (i, id) in table.iter().enumerate() {
            array.set(i as u32, id, 0)?;
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(SingleUpdates {
        slots,
        ms: Summary::of(&samples),
    })
}

pub fn run(opts: &MaglevOptions) -> Result<MaglevResults> {
    let builds = opts
        .builds
        .iter()
        .map(|&(slots, backends)| build_time(slots, backends, opts.build_runs))
        .collect::<Result<Vec<_>>>()?;
    let mut switches = Vec::new();
    for &(slots, backends) in &opts.switches {
        switches.extend(switch_time(slots, backends, opts.switch_runs)?);
    }
    let single_updates =
        single_updates(xdp_lb_common::MAGLEV_DEFAULT_SIZE, opts.single_update_runs)?;
    Ok(MaglevResults {
        builds,
        switches,
        single_updates,
    })
}
