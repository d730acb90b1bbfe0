//! The running agent's data plane, through its pinned maps: the connection table filled
//! from here, and the health verdict watched where it takes effect (the service's table
//! switch in `service_by_vip`, the backend's entry in `backends`).

use std::{
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use xdp_lb::pins::PinDir;
use xdp_lb_common::{
    BACKEND_F_NO_NEW, BACKEND_F_VALID, BackendOwner, BackendValue, FAMILY_IPV4, FlowKey, FlowValue,
    MAX_BACKENDS, PROTO_TCP, ServiceKey, ServiceValue, addr_words, flow_hash::ports_word,
    map_names, port_raw,
};

use crate::bench::packet::pin_to_cpu;

/// How often the verdict's table switch is looked for.
const POLL: Duration = Duration::from_micros(200);

fn open(pins: &PinDir, name: &str) -> Result<MapData> {
    let path = pins.map(name);
    MapData::from_pin(&path).with_context(|| format!("opening the pinned map {}", path.display()))
}

/// One service of the agent, as the kernel holds it.
pub struct ServiceMaps {
    key: ServiceKey,
    services: BpfHashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, BackendValue>,
    owners: Array<MapData, BackendOwner>,
    pins: PinDir,
}

/// A backend of the service: its id, and the epoch its flows carry.
#[derive(Clone, Copy, Debug)]
pub struct BackendId {
    pub id: u32,
    pub epoch: u32,
}

impl ServiceMaps {
    /// The maps pinned under `pins`, for the service at `vip`:`port`/tcp.
    pub fn open(pins: &PinDir, vip: IpAddr, port: u16) -> Result<Self> {
        Ok(Self {
            key: ServiceKey::new(vip, port, PROTO_TCP),
            services: BpfHashMap::try_from(Map::HashMap(open(pins, map_names::SERVICE_BY_VIP)?))?,
            backends: Array::try_from(Map::Array(open(pins, map_names::BACKENDS)?))?,
            owners: Array::try_from(Map::Array(open(pins, map_names::BACKEND_OWNERS)?))?,
            pins: pins.clone(),
        })
    }

    pub fn service(&self) -> Result<ServiceValue> {
        self.services
            .get(&self.key, 0)
            .context("the service's key in service_by_vip")
    }

    /// Bumped by every table switch of the service.
    pub fn generation(&self) -> Result<u32> {
        Ok(self.service()?.generation)
    }

    /// The id the agent gave `address` in this service (from `backend_owners`) and its
    /// current epoch.
    pub fn backend(&self, address: IpAddr) -> Result<BackendId> {
        let words = addr_words(address);
        for id in 0..MAX_BACKENDS {
            let owner = self.owners.get(&id, 0)?;
            if owner.service == self.key && owner.addr == words {
                let value = self.backends.get(&id, 0)?;
                return Ok(BackendId {
                    id,
                    epoch: value.epoch,
                });
            }
        }
        bail!("no backend {address} of the service in backend_owners")
    }

    /// Whether the backend's entry takes new flows (valid, and not marked no-new).
    pub fn takes_new_flows(&self, id: u32) -> Result<bool> {
        let flags = self.backends.get(&id, 0)?.flags;
        Ok(flags & BACKEND_F_VALID != 0 && flags & BACKEND_F_NO_NEW == 0)
    }

    /// Waits for backend `id`'s down verdict to take effect: the table that leaves it out
    /// is made live first, its entry marked no-new right after (within microseconds), so
    /// the entry is what is watched. Returns when it was seen (within [`POLL`] and a map
    /// lookup); fails after `give_up`. Another backend's switch meanwhile does not count.
    pub fn wait_down(&self, id: u32, give_up: Duration) -> Result<Instant> {
        let started = Instant::now();
        loop {
            if !self.takes_new_flows(id)? {
                return Ok(Instant::now());
            }
            ensure!(
                started.elapsed() < give_up,
                "backend id {id} still takes new flows {} s after its check target closed",
                give_up.as_secs()
            );
            thread::sleep(POLL);
        }
    }

    /// Waits for backend `id`'s up verdict to take effect: its entry takes new flows first,
    /// then the table that names it again goes live, a generation of the service's value
    /// other than `before` (read before its check target opened), which is the moment
    /// returned. Fails after `give_up`.
    pub fn wait_up(&self, id: u32, before: u32, give_up: Duration) -> Result<Instant> {
        let started = Instant::now();
        loop {
            // The generation first: the entry is written before the switch.
            if self.generation()? != before && self.takes_new_flows(id)? {
                return Ok(Instant::now());
            }
            ensure!(
                started.elapsed() < give_up,
                "backend id {id} is not back in the service's table {} s after its check \
                 target opened",
                give_up.as_secs()
            );
            thread::sleep(POLL);
        }
    }

    /// Writes `count` live connections to the service into the agent's connection table
    /// (`flows`), spread over `backends`, from a thread on each CPU of `cpus` at once (the
    /// table's one LRU list takes them from any CPU; the threads share the work). Distinct
    /// clients from 100.64.0.0; the entries are as fresh as a packet just seen would leave
    /// them.
    pub fn fill_flows(&self, count: u64, backends: &[BackendId], cpus: &[usize]) -> Result<()> {
        ensure!(
            !backends.is_empty() && !cpus.is_empty(),
            "nothing to fill with"
        );
        let service_id = self.service()?.service_id;
        let (vip, port) = (self.key.addr, self.key.port);
        let each = count.div_ceil(cpus.len() as u64);
        let mut threads = Vec::new();
        for (i, &cpu) in cpus.iter().enumerate() {
            let first = i as u64 * each;
            let last = count.min(first + each);
            let pins = self.pins.clone();
            let backends = backends.to_vec();
            threads.push(thread::spawn(move || -> Result<()> {
                pin_to_cpu(cpu)?;
                let mut flows: BpfHashMap<MapData, FlowKey, FlowValue> =
                    BpfHashMap::try_from(Map::LruHashMap(open(&pins, map_names::FLOWS)?))?;
                let now = xdp_lb::control::census::monotonic_ns();
                for n in first..last {
                    let client = Ipv4Addr::from(0x6440_0000u32 + (n / 50_000) as u32);
                    let client_port = 10_000 + (n % 50_000) as u16;
                    let key = FlowKey {
                        src: addr_words(client.into()),
                        dst: vip,
                        ports: ports_word(port_raw(client_port), port),
                        proto: PROTO_TCP,
                        family: FAMILY_IPV4,
                        vlan: 0,
                    };
                    let backend = backends[(n % backends.len() as u64) as usize];
                    let value = FlowValue {
                        backend_id: backend.id,
                        backend_epoch: backend.epoch,
                        service_id,
                        flags: 0,
                        last_seen_ns: now,
                    };
                    flows
                        .insert(key, value, 0)
                        .with_context(|| format!("writing flow {n} into the connection table"))?;
                }
                Ok(())
            }));
        }
        for t in threads {
            t.join()
                .map_err(|_| anyhow!("a thread filling the connection table panicked"))??;
        }
        Ok(())
    }
}

/// The CPUs this process may run on (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> Result<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let mut cpus = Vec::new();
    for range in text.trim().split(',') {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        cpus.extend(a.parse::<usize>()?..=b.parse::<usize>()?);
    }
    Ok(cpus)
}
