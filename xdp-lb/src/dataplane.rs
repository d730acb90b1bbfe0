//! The data plane as the agent sees it: the loaded program and typed handles on its maps.
//!
//! Maglev tables are written through an mmap of `maglev_tables` (a `BPF_F_MMAPABLE` array):
//! a whole table is one memcpy, where 65537 single-element updates would cost tens of
//! milliseconds. Everything else goes through ordinary map updates.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    ptr::NonNull,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, DevMapHash, HashMap, Map, MapData, PerCpuArray,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use xdp_lb_common::{
    BackendOwner, BackendValue, CLIENT_RULE_SERVICE_BITS, ClientRuleKey, ClientRuleValue, Counter,
    FLOW_FILTER_SLOTS_GLOBAL, FLOW_HASH_SEED_GLOBAL, FLOW_TCP_CLOSE_TIMEOUT_GLOBAL,
    FLOW_TCP_FIN_TIMEOUT_GLOBAL, FLOW_TCP_TIMEOUT_GLOBAL, FLOW_UDP_TIMEOUT_GLOBAL, FlowKey,
    FlowValue, LocalMacs, MAGLEV_SLOT_STRIDE, MAX_LOCAL_MACS, PROGRAM_NAME, PoolValue, ServiceKey,
    ServiceValue, VIP_FILTER_WORDS, VipKey, flow_filter_slots, flow_stat, mac_word, map_names,
    verdict, vip_filter_bit,
};

use crate::{
    config::{FlowTable, XdpAttachMode},
    pins::{self, PINNED_MAPS, PinDir},
};

mod audit;
pub mod flow_filter;
mod local_macs;
pub mod rx_vlan;

/// Levels of the data plane's aya-log records.
pub use aya_log::Level as LogLevel;

/// What is fixed when the program is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub flow_hash_seed: u32,
    /// Capacity of `maglev_tables`, in slots.
    pub maglev_table_slots: u32,
    /// Size and idle timeouts of the connection table.
    pub flow_table: FlowTable,
    /// Most verbose aya-log level the program emits (its logging is off the packet path).
    pub log_level: LogLevel,
}

/// How often the agent makes every CPU's cache of services stale
/// (`Dataplane::bump_service_epoch`) even when it changed no service itself.
pub const SERVICE_CACHE_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    service_by_vip: HashMap<MapData, ServiceKey, ServiceValue>,
    /// `service_epoch[0]`, bumped after every write to `service_by_vip`: each CPU's cache
    /// of its lookups is stale from then on.
    service_epoch: Array<MapData, u64>,
    backends: Array<MapData, BackendValue>,
    backend_owners: Array<MapData, BackendOwner>,
    /// Every key in `service_by_vip`.
    service_keys: std::collections::HashSet<ServiceKey>,
    /// `vips`, kept as the distinct addresses of `service_keys`.
    vips: HashMap<MapData, VipKey, u32>,
    vip_keys: std::collections::HashSet<VipKey>,
    /// `vip_filter`, kept with `vips`: the bit of each key of `service_keys`.
    vip_filter: Array<MapData, u64>,
    /// `vip_filter` as last written (all ones until the first write: unknown).
    filter_words: Vec<u64>,
    /// The flow filter in front of `flows`, shared with the threads that renew it and
    /// write entries.
    flow_filter: std::sync::Arc<flow_filter::FlowFilter>,
    /// The LB's MACs of an interface with an ifindex below `LOCAL_MACS_IX_SLOTS`.
    local_macs_ix: local_macs::IfindexMacsArea,
    /// The same for a larger ifindex.
    local_macs: HashMap<MapData, u32, LocalMacs>,
    /// The MACs last written for each interface, in `local_macs_ix` or `local_macs`.
    local_mac_values: std::collections::BTreeMap<u32, LocalMacs>,
    tx_ports: DevMapHash<MapData>,
    service_stats: PerCpuArray<MapData, Counter>,
    backend_stats: PerCpuArray<MapData, Counter>,
    verdict_stats: PerCpuArray<MapData, Counter>,
    flows: aya::maps::HashMap<MapData, FlowKey, FlowValue>,
    flow_stats: PerCpuArray<MapData, Counter>,
    /// `sync_on[0]`: whether new entries go to `flow_events` for flow-state sync.
    sync_on: Array<MapData, u32>,
    pools: HashMap<MapData, u32, PoolValue>,
    client_rules: LpmTrie<MapData, ClientRuleKey, ClientRuleValue>,
    tables: TableArea,
    links: Vec<(String, XdpLinkId)>,
    pins: Option<PinDir>,
    /// The maps were found pinned by an earlier agent (and reused).
    adopted: bool,
    /// A pinned connection table of another shape whose flows were moved into `flows` at
    /// load: what is left to do once the program is attached (`settle_flow_migration`).
    migration: Option<FlowMigration>,
}

/// The earlier agent's connection table, replaced by one of the shape this agent needs
/// (another `flow_table.size`, or per-CPU LRU lists): its live flows were moved into the
/// new table at load, while the earlier program still ran on the old one.
struct FlowMigration {
    old: HashMap<MapData, FlowKey, FlowValue>,
    change: pins::ShapeChange,
    /// The data plane's clock (coarse monotonic) when the first move began, less its lag:
    /// an entry seen since was made or touched by the earlier program meanwhile.
    started_ns: u64,
    moved: usize,
}

/// What moving a pinned connection table into a new one did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMigrationReport {
    pub pinned: pins::MapShape,
    pub wanted: pins::MapShape,
    /// Entries moved at load.
    pub moved: usize,
    /// Entries the earlier program made or touched during the move, moved after the
    /// attach.
    pub moved_late: usize,
}

impl std::fmt::Display for FlowMigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "moved {} live flow(s) ({} of them after the attach) from the pinned connection table \
             ({} entries, flags {:#x}) into a new one ({} entries, flags {:#x})",
            self.moved + self.moved_late,
            self.moved_late,
            self.pinned.max_entries,
            self.pinned.flags,
            self.wanted.max_entries,
            self.wanted.flags
        )
    }
}

fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("the data plane object has no map `{name}`"))?;
    T::try_from(map).with_context(|| format!("map `{name}` has an unexpected type"))
}

/// Takes an array of the object that the agent reads and writes through an mmap (see
/// `Mapping`): its map data, for the view of its own.
fn take_mmapable(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<MapData> {
    match ebpf.take_map(name) {
        Some(Map::Array(data)) => Ok(data),
        Some(_) => bail!("map `{name}` is not an array"),
        None => bail!("the data plane object has no map `{name}`"),
    }
}

impl Dataplane {
    /// Loads the object into the kernel and the `xdp_lb` program, without attaching it.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        Self::load_pinned(opts, None)
    }

    /// Loads as `load`, with maps (and later links) pinned under `pins` so the data plane
    /// outlives the agent; maps an earlier agent pinned there are checked and reused.
    pub fn load_pinned(opts: &LoadOptions, pins: Option<PinDir>) -> anyhow::Result<Self> {
        let level = opts.log_level as u8;
        let tcp_timeout_ns = u64::from(opts.flow_table.tcp_timeout_s) * 1_000_000_000;
        let udp_timeout_ns = u64::from(opts.flow_table.udp_timeout_s) * 1_000_000_000;
        let fin_timeout_ns = u64::from(opts.flow_table.tcp_fin_timeout_s) * 1_000_000_000;
        let close_timeout_ns = u64::from(opts.flow_table.tcp_close_timeout_s) * 1_000_000_000;
        let table_slots = adopted_table_slots(opts, pins.as_ref())?;
        let filter_slots = flow_filter_slots(opts.flow_table.size);
        let sizes = [
            (map_names::MAGLEV_TABLES, table_slots),
            (map_names::FLOWS, opts.flow_table.size),
            (map_names::FLOW_FILTER, filter_slots / 4),
        ];
        let mut loader = EbpfLoader::new();
        loader
            .override_global(FLOW_HASH_SEED_GLOBAL, &opts.flow_hash_seed, true)
            .override_global(FLOW_TCP_TIMEOUT_GLOBAL, &tcp_timeout_ns, true)
            .override_global(FLOW_UDP_TIMEOUT_GLOBAL, &udp_timeout_ns, true)
            .override_global(FLOW_TCP_FIN_TIMEOUT_GLOBAL, &fin_timeout_ns, true)
            .override_global(FLOW_TCP_CLOSE_TIMEOUT_GLOBAL, &close_timeout_ns, true)
            .override_global(FLOW_FILTER_SLOTS_GLOBAL, &filter_slots, true)
            .override_global(aya_log::LEVEL, &level, false);
        for (name, size) in sizes {
            loader.map_max_entries(name, size);
        }
        let mut adopted = false;
        let mut flows_change = None;
        let map_paths: Vec<(&str, PathBuf)> = match &pins {
            None => Vec::new(),
            Some(pins) => {
                pins.prepare()?;
                for path in pins.remove_staged()? {
                    log::warn!(
                        "removed {}: a new map an earlier agent died before it replaced the old one",
                        path.display()
                    );
                }
                adopted = pins.has_maps();
                if adopted {
                    let changes =
                        pins.check_compatible(&pins::expected_shapes(crate::EBPF_OBJECT, &sizes)?)?;
                    flows_change = changes.into_iter().find(|c| c.name == map_names::FLOWS);
                }
                // A table of another shape is not reused: the loader makes a new one, pinned
                // once the program runs on it (`settle_flow_migration`).
                PINNED_MAPS
                    .iter()
                    .filter(|name| flows_change.is_none() || **name != map_names::FLOWS)
                    .map(|name| (*name, pins.map(name)))
                    .collect()
            }
        };
        // Opened before the load, so that the old table is the one the earlier agent left.
        let old_flows = match (&flows_change, &pins) {
            (Some(_), Some(pins)) => Some(open_pinned_flows(pins)?),
            _ => None,
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(crate::EBPF_OBJECT)
            .context("loading the data plane object into the kernel")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("the data plane object has no program `{PROGRAM_NAME}`"))?
            .try_into()?;
        program
            .load()
            .context("the kernel refused the XDP program")?;
        if let Some(pins) = &pins {
            for path in pins.remove_retired()? {
                log::info!(
                    "removed {}: an earlier version's map this data plane no longer has",
                    path.display()
                );
            }
        }

        let tables = TableArea::map(
            take_mmapable(&mut ebpf, map_names::MAGLEV_TABLES)?,
            table_slots,
        )?;
        let local_macs_ix =
            local_macs::IfindexMacsArea::map(take_mmapable(&mut ebpf, map_names::LOCAL_MACS_IX)?)?;
        let flow_filter = std::sync::Arc::new(flow_filter::FlowFilter::new(
            take_mmapable(&mut ebpf, map_names::FLOW_FILTER)?,
            take(&mut ebpf, map_names::FLOW_FILTER_ON)?,
            filter_slots,
            opts.flow_hash_seed,
        )?);

        let service_by_vip: HashMap<MapData, ServiceKey, ServiceValue> =
            take(&mut ebpf, map_names::SERVICE_BY_VIP)?;
        // Adopted maps already hold services: the bitmap must cover them.
        let service_keys = service_by_vip.keys().filter_map(Result::ok).collect();
        let mut dataplane = Self {
            service_by_vip,
            service_epoch: take(&mut ebpf, map_names::SERVICE_EPOCH)?,
            backends: take(&mut ebpf, map_names::BACKENDS)?,
            backend_owners: take(&mut ebpf, map_names::BACKEND_OWNERS)?,
            tx_ports: take(&mut ebpf, map_names::TX_PORTS)?,
            vips: take(&mut ebpf, map_names::VIPS)?,
            vip_keys: std::collections::HashSet::new(),
            vip_filter: take(&mut ebpf, map_names::VIP_FILTER)?,
            filter_words: vec![u64::MAX; VIP_FILTER_WORDS as usize],
            local_macs_ix,
            flow_filter,
            local_macs: take(&mut ebpf, map_names::LOCAL_MACS)?,
            local_mac_values: std::collections::BTreeMap::new(),
            service_stats: take(&mut ebpf, map_names::SERVICE_STATS)?,
            backend_stats: take(&mut ebpf, map_names::BACKEND_STATS)?,
            verdict_stats: take(&mut ebpf, map_names::VERDICT_STATS)?,
            flows: take(&mut ebpf, map_names::FLOWS)?,
            flow_stats: take(&mut ebpf, map_names::FLOW_STATS)?,
            sync_on: take(&mut ebpf, map_names::SYNC_ON)?,
            pools: take(&mut ebpf, map_names::POOLS)?,
            client_rules: take(&mut ebpf, map_names::CLIENT_RULES)?,
            tables,
            links: Vec::new(),
            pins,
            adopted,
            migration: None,
            ebpf,
            service_keys,
        };
        // `filter_words` starts unknown (all ones), so every word is written once.
        dataplane.sync_vips()?;
        if let (Some(change), Some(old)) = (flows_change, old_flows) {
            dataplane.migration = Some(dataplane.move_flows(old, change)?);
        }
        Ok(dataplane)
    }

    /// Moves the live flows of the earlier agent's connection table into the new one, the
    /// least recently seen first (a smaller table keeps the most recent).
    fn move_flows(
        &mut self,
        old: HashMap<MapData, FlowKey, FlowValue>,
        change: pins::ShapeChange,
    ) -> anyhow::Result<FlowMigration> {
        let started_ns = crate::control::census::coarse_floor_ns();
        let mut entries: Vec<(FlowKey, FlowValue)> = old.iter().filter_map(Result::ok).collect();
        entries.sort_by_key(|(_, value)| value.last_seen_ns);
        for (key, value) in &entries {
            self.flows
                .insert(key, *value, 0)
                .context("moving a live flow into the new connection table")?;
            self.flow_filter.mark(key);
        }
        log::info!(
            "the pinned connection table ({}) is not the one this agent needs ({}): moved its {} \
             live flow(s) into a new one; the earlier program keeps the old one until the attach",
            change.pinned,
            change.wanted,
            entries.len()
        );
        Ok(FlowMigration {
            old,
            change,
            started_ns,
            moved: entries.len(),
        })
    }

    /// Once the program is attached everywhere: moves the flows the earlier program made
    /// or touched since the first move (none it already has: this program's entries are
    /// newer), and pins the new table in the old one's place. Nothing to do without a
    /// migration.
    pub fn settle_flow_migration(&mut self) -> anyhow::Result<Option<FlowMigrationReport>> {
        let Some(migration) = self.migration.take() else {
            return Ok(None);
        };
        let mut late = 0;
        for (key, value) in migration.old.iter().filter_map(Result::ok) {
            if value.last_seen_ns < migration.started_ns {
                continue;
            }
            if self.flows.insert(key, value, BPF_NOEXIST).is_ok() {
                self.flow_filter.mark(&key);
                late += 1;
            }
        }
        if let Some(pins) = &self.pins {
            use aya::maps::IterableMap as _;
            pins.replace_map_pin(map_names::FLOWS, self.flows.map())
                .context("pinning the new connection table")?;
        }
        let report = FlowMigrationReport {
            pinned: migration.change.pinned,
            wanted: migration.change.wanted,
            moved: migration.moved,
            moved_late: late,
        };
        log::info!("{report}");
        Ok(Some(report))
    }

    /// Whether the maps (and so the tables and live flows) were taken over from an earlier
    /// agent rather than created empty.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn pins(&self) -> Option<&PinDir> {
        self.pins.as_ref()
    }

    /// The aya object (the benchmarks load its other programs on the same maps).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The aya object, for the logger.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The loaded `xdp_lb` program (tests run it through BPF_PROG_TEST_RUN).
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("load() checked the program exists and is XDP")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("load() checked the program exists and is XDP")
    }

    /// Attaches the program to an interface; it stays attached until `detach_all` or drop.
    /// With pins, an interface an earlier agent attached to keeps its link: the program in it
    /// is replaced atomically (no frame goes unprocessed), and a new link is pinned.
    pub fn attach(&mut self, ifname: &str, mode: XdpAttachMode) -> anyhow::Result<()> {
        if let Some(path) = self
            .pins
            .as_ref()
            .map(|p| p.link(ifname))
            .filter(|p| p.exists())
        {
            let pinned = PinnedLink::from_pin(&path)
                .map_err(|err| anyhow!("opening the pinned XDP link {}: {err}", path.display()))?;
            let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|err| {
                anyhow!(
                    "the pinned link {} is not an XDP link: {err}",
                    path.display()
                )
            })?;
            let id = self.program_mut().attach_to_link(link).map_err(|err| {
                anyhow!("replacing the program in the XDP link of {ifname}: {err}")
            })?;
            self.links.push((ifname.to_owned(), id));
            return Ok(());
        }
        let xdp_mode = match mode {
            XdpAttachMode::Native => XdpMode::Driver,
            XdpAttachMode::Generic => XdpMode::Skb,
        };
        let link = self.program_mut().attach(ifname, xdp_mode).map_err(|err| {
            let hint = match mode {
                XdpAttachMode::Native => format!(
                    "; if the driver of {ifname} lacks native XDP, set `xdp_mode: generic` in the \
                     config or pass `--xdp-mode generic` (slower, works everywhere)"
                ),
                XdpAttachMode::Generic => String::new(),
            };
            anyhow!("attaching XDP ({mode:?} mode) to {ifname} failed: {err}{hint}")
        })?;
        if let Some(pins) = &self.pins {
            let path = pins.link(ifname);
            let owned = self.program_mut().take_link(link)?;
            let fd_link = FdLink::try_from(owned)
                .map_err(|err| anyhow!("the XDP link of {ifname} cannot be pinned (kernel without bpf_link for XDP?): {err}"))?;
            let pinned = fd_link.pin(&path).map_err(|err| {
                anyhow!(
                    "pinning the XDP link of {ifname} at {}: {err}",
                    path.display()
                )
            })?;
            let link = XdpLink::try_from(FdLink::from(pinned))
                .map_err(|err| anyhow!("re-opening the XDP link of {ifname}: {err}"))?;
            let id = self.program_mut().attach_to_link(link)?;
            self.links.push((ifname.to_owned(), id));
            return Ok(());
        }
        self.links.push((ifname.to_owned(), link));
        Ok(())
    }

    /// Detaches from every interface and removes every pin: a clean stop.
    pub fn detach_all(&mut self) {
        if let Some(pins) = &self.pins
            && let Err(err) = pins.remove_all()
        {
            log::warn!("removing the pins under {}: {err:#}", pins.root().display());
        }
        let links = std::mem::take(&mut self.links);
        for (ifname, link) in links {
            if let Err(err) = self.program_mut().detach(link) {
                log::warn!("detaching from {ifname}: {err}");
            }
        }
    }

    /// Leaves the program attached and every map pinned for the next agent: the links'
    /// pins keep them alive once this process is gone.
    pub fn leave_running(&mut self) -> anyhow::Result<()> {
        if self.pins.is_none() {
            bail!("the data plane is not pinned: it cannot outlive the agent");
        }
        let links = std::mem::take(&mut self.links);
        for (ifname, link) in links {
            let owned = self.program_mut().take_link(link)?;
            // Dropping our handle closes its fd; the pinned link stays.
            drop(owned);
            log::info!("left the data plane attached to {ifname}");
        }
        Ok(())
    }

    /// Interfaces the program is attached to.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|(name, _)| name.as_str())
    }

    /// Adds or replaces a service; its (VIP, port) bit in `vip_filter` is set first, so its
    /// frames are looked up from the moment it exists.
    pub fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> anyhow::Result<()> {
        if self.service_keys.insert(key) {
            self.sync_vips()?;
        }
        self.service_by_vip
            .insert(key, value, 0)
            .context("updating service_by_vip")?;
        self.bump_service_epoch()
    }

    /// Removes a service; its `vip_filter` bit goes when no other service shares it.
    pub fn remove_service(&mut self, key: &ServiceKey) -> anyhow::Result<()> {
        self.service_by_vip
            .remove(key)
            .context("removing from service_by_vip")?;
        self.bump_service_epoch()?;
        if self.service_keys.remove(key) {
            self.sync_vips()?;
        }
        Ok(())
    }

    /// Makes every CPU's cached `service_by_vip` lookups stale (`ServiceCacheEntry`): a
    /// packet that starts after this returns reads the map's new value. Called after each
    /// write, never before: a CPU that refilled its cache between a bump and the write
    /// would keep the old value. The agent also calls it every `SERVICE_CACHE_REFRESH`,
    /// so that a change made to the map behind its back (`bpftool map delete` in an
    /// emergency) reaches every CPU within that time, as it reached them at once before
    /// there was a cache.
    pub fn bump_service_epoch(&mut self) -> anyhow::Result<()> {
        let epoch = self.service_epoch().wrapping_add(1);
        self.service_epoch
            .set(0, epoch, 0)
            .context("updating service_epoch (each CPU's cache of services may be stale)")
    }

    /// `service_epoch[0]` as the kernel has it (an adopted one goes on from an earlier
    /// agent's count).
    fn service_epoch(&self) -> u64 {
        self.service_epoch.get(&0, 0).unwrap_or(0)
    }

    /// Brings `vips` to the distinct addresses of `service_keys`, and `vip_filter` to their
    /// (address, port) bits (`set_service` calls it before writing a key, `remove_service`
    /// after removing one: a service's frames never find their bit clear).
    fn sync_vips(&mut self) -> anyhow::Result<()> {
        let wanted: std::collections::HashSet<VipKey> = self
            .service_keys
            .iter()
            .map(|key| VipKey {
                addr: key.addr,
                family: key.family,
                _pad: [0; 3],
            })
            .collect();
        for gone in self.vip_keys.difference(&wanted) {
            self.vips.remove(gone).context("removing from vips")?;
        }
        for new in wanted.difference(&self.vip_keys) {
            self.vips.insert(new, 0, 0).context("updating vips")?;
        }
        let words = vip_filter_words(&self.service_keys);
        for (i, word) in words.iter().enumerate() {
            if self.filter_words.get(i) != Some(word) {
                self.vip_filter
                    .set(i as u32, *word, 0)
                    .with_context(|| format!("updating vip_filter[{i}]"))?;
            }
        }
        self.filter_words = words;
        self.vip_keys = wanted;
        Ok(())
    }

    /// The `vip_filter` bitmap as the kernel has it.
    pub fn vip_filter_words(&self) -> Vec<u64> {
        (0..VIP_FILTER_WORDS)
            .map(|i| self.vip_filter.get(&i, 0).unwrap_or(0))
            .collect()
    }

    pub fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        self.service_by_vip.get(key, 0).ok()
    }

    /// Makes `value` the live table of pool `id` (one hash-map update: atomic for readers).
    pub fn set_pool(&mut self, id: u32, value: PoolValue) -> anyhow::Result<()> {
        self.pools
            .insert(id, value, 0)
            .with_context(|| format!("updating pools[{id}]"))
    }

    pub fn remove_pool(&mut self, id: u32) -> anyhow::Result<()> {
        self.pools
            .remove(&id)
            .with_context(|| format!("removing pools[{id}]"))
    }

    pub fn pool(&self, id: u32) -> Option<PoolValue> {
        self.pools.get(&id, 0).ok()
    }

    /// Every (id, value) of `pools`, as the kernel has it.
    pub fn all_pools(&self) -> Vec<(u32, PoolValue)> {
        self.pools.iter().filter_map(Result::ok).collect()
    }

    /// Sets (or replaces, atomically) the rule of service `service_id` for the clients in
    /// `addr`/`prefix_len`.
    pub fn set_client_rule(
        &mut self,
        service_id: u32,
        addr: std::net::IpAddr,
        prefix_len: u8,
        value: ClientRuleValue,
    ) -> anyhow::Result<()> {
        let key = rule_key(service_id, addr, prefix_len);
        self.client_rules
            .insert(&key, value, 0)
            .with_context(|| format!("adding the client rule {addr}/{prefix_len}"))
    }

    pub fn remove_client_rule(
        &mut self,
        service_id: u32,
        addr: std::net::IpAddr,
        prefix_len: u8,
    ) -> anyhow::Result<()> {
        let key = rule_key(service_id, addr, prefix_len);
        self.client_rules
            .remove(&key)
            .with_context(|| format!("removing the client rule {addr}/{prefix_len}"))
    }

    /// The rule the kernel's trie gives `client` of service `service_id` (longest prefix).
    pub fn client_rule(
        &self,
        service_id: u32,
        client: std::net::IpAddr,
    ) -> Option<ClientRuleValue> {
        let full = if client.is_ipv4() { 32 } else { 128 };
        self.client_rules
            .get(&rule_key(service_id, client, full), 0)
            .ok()
    }

    pub fn set_backend(&mut self, id: u32, value: BackendValue) -> anyhow::Result<()> {
        self.backends
            .set(id, value, 0)
            .with_context(|| format!("updating backends[{id}]"))
    }

    pub fn backend(&self, id: u32) -> anyhow::Result<BackendValue> {
        self.backends
            .get(&id, 0)
            .with_context(|| format!("reading backends[{id}]"))
    }

    /// Records whose backend id `id` is (`backend_owners`; the data plane never reads it).
    pub fn set_backend_owner(&mut self, id: u32, owner: BackendOwner) -> anyhow::Result<()> {
        self.backend_owners
            .set(id, owner, 0)
            .with_context(|| format!("updating backend_owners[{id}]"))
    }

    /// Every backend id in use, with its entry and owner record: ids whose entry or owner
    /// is not all zero.
    pub fn used_backends(&self) -> Vec<(u32, BackendValue, BackendOwner)> {
        (0..self.backends.len())
            .filter_map(|id| {
                let entry = self.backends.get(&id, 0).ok()?;
                let owner = self.backend_owners.get(&id, 0).unwrap_or_default();
                (entry != BackendValue::default() || owner != BackendOwner::default())
                    .then_some((id, entry, owner))
            })
            .collect()
    }

    /// Every (key, value) of `service_by_vip`, as the kernel has it.
    pub fn services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.service_by_vip.iter().filter_map(Result::ok).collect()
    }

    /// Makes an interface a redirect target for backends behind it.
    pub fn add_tx_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|err| anyhow!("adding ifindex {ifindex} to tx_ports: {err}"))
    }

    /// Writes `table` into `maglev_tables` starting at slot `offset`.
    pub fn write_table(&mut self, offset: u32, table: &[u32]) -> anyhow::Result<()> {
        self.tables.write(offset, table)
    }

    /// Reads `len` slots of `maglev_tables` from `offset`.
    pub fn read_table(&self, offset: u32, len: u32) -> anyhow::Result<Vec<u32>> {
        self.tables.read(offset, len)
    }

    pub fn table_capacity(&self) -> u32 {
        self.tables.slots
    }

    pub fn service_counter(&self, service_id: u32) -> Counter {
        sum_per_cpu(&self.service_stats, service_id)
    }

    pub fn backend_counter(&self, backend_id: u32) -> Counter {
        sum_per_cpu(&self.backend_stats, backend_id)
    }

    /// Counters of every `verdict` slot, in slot order.
    pub fn verdict_counters(&self) -> Vec<Counter> {
        (0..verdict::COUNT)
            .map(|slot| sum_per_cpu(&self.verdict_stats, slot))
            .collect()
    }

    /// Counters of every `flow_stat` slot, in slot order.
    pub fn flow_counters(&self) -> Vec<Counter> {
        (0..flow_stat::COUNT)
            .map(|slot| sum_per_cpu(&self.flow_stats, slot))
            .collect()
    }

    /// The connection table's entry for a flow.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flows.get(key, 0).ok()
    }

    /// Writes a connection-table entry, as the data plane would have.
    pub fn set_flow(&mut self, key: &FlowKey, value: FlowValue) -> anyhow::Result<()> {
        self.flows
            .insert(key, value, 0)
            .context("updating the connection table")?;
        self.flow_filter.mark(key);
        Ok(())
    }

    /// The flow filter, for the threads that renew it or write entries into `flows`.
    pub fn flow_filter(&self) -> std::sync::Arc<flow_filter::FlowFilter> {
        self.flow_filter.clone()
    }

    /// A handle of its own on the connection table, for a thread that walks it (see
    /// `control/census.rs`).
    pub fn flows_handle(&self) -> anyhow::Result<HashMap<MapData, FlowKey, FlowValue>> {
        duplicate_flows(&self.flows)
    }

    /// The connection table's entries as the kernel sized it (`flow_table.size`).
    pub fn flow_table_entries(&self) -> anyhow::Result<u32> {
        use aya::maps::IterableMap as _;
        let info = self
            .flows
            .map()
            .info()
            .context("reading the connection table's info")?;
        Ok(info.max_entries())
    }

    /// Every entry of the connection table (a snapshot; the table changes meanwhile).
    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flows.iter().filter_map(Result::ok).collect()
    }

    /// Whether the program hands its new connection-table entries to the agent
    /// (`flow_events`) for flow-state sync.
    pub fn set_sync_on(&mut self, on: bool) -> anyhow::Result<()> {
        self.sync_on
            .set(0, u32::from(on), 0)
            .context("updating sync_on")
    }

    /// Whether the program hands its new entries to the agent now.
    pub fn sync_on(&self) -> bool {
        self.sync_on.get(&0, 0).is_ok_and(|on| on != 0)
    }

    /// The ring buffer the program hands its new entries through (once: the reader owns
    /// it).
    pub fn take_flow_events(&mut self) -> anyhow::Result<aya::maps::RingBuf<MapData>> {
        take(&mut self.ebpf, map_names::FLOW_EVENTS)
    }

    /// Zeroes a backend's counters (when its id is given to a new backend).
    pub fn reset_backend_counter(&mut self, backend_id: u32) -> anyhow::Result<()> {
        reset_per_cpu(&mut self.backend_stats, backend_id)
    }

    /// Zeroes a service's counters (when its id is given to a new service).
    pub fn reset_service_counter(&mut self, service_id: u32) -> anyhow::Result<()> {
        reset_per_cpu(&mut self.service_stats, service_id)
    }
}

impl Drop for Dataplane {
    /// Unpinned, the program is detached. Pinned, it is left running for the next agent:
    /// only `detach_all` (a clean stop) or `xdp-lb cleanup` removes a pinned data plane.
    fn drop(&mut self) {
        if self.pins.is_some() {
            if let Err(err) = self.leave_running() {
                log::warn!("leaving the data plane running: {err:#}");
            }
        } else {
            self.detach_all();
        }
    }
}

/// `BPF_NOEXIST` (linux/bpf.h): an update that never replaces an entry.
const BPF_NOEXIST: u64 = 1;

/// The connection table an earlier agent pinned.
fn open_pinned_flows(pins: &PinDir) -> anyhow::Result<HashMap<MapData, FlowKey, FlowValue>> {
    let path = pins.map(map_names::FLOWS);
    let data = MapData::from_pin(&path).map_err(|err| {
        anyhow!(
            "opening the pinned connection table {}: {err}",
            path.display()
        )
    })?;
    HashMap::try_from(Map::LruHashMap(data)).context("the pinned connection table's type")
}

/// The capacity of `maglev_tables`: the configured one, or the pinned map's when an earlier
/// agent left one of another size. A map cannot be resized while it is live, and taking
/// it as it is keeps every live table (and so every flow): the new size takes effect at the
/// next clean start.
fn adopted_table_slots(opts: &LoadOptions, pins: Option<&PinDir>) -> anyhow::Result<u32> {
    let Some(pins) = pins else {
        return Ok(opts.maglev_table_slots);
    };
    match pins.pinned_max_entries(map_names::MAGLEV_TABLES)? {
        Some(pinned) if pinned != opts.maglev_table_slots => {
            log::warn!(
                "maglev_table_slots is {} but the pinned data plane has {pinned}: keeping {pinned} so \
                 live tables and flows stay; the new size takes effect after a clean stop \
                 (systemctl stop, then start; live flows are then lost)",
                opts.maglev_table_slots
            );
            Ok(pinned)
        }
        _ => Ok(opts.maglev_table_slots),
    }
}

/// Another handle on the connection table `flows` (a thread of its own walks or writes it
/// through one).
pub fn duplicate_flows(
    flows: &HashMap<MapData, FlowKey, FlowValue>,
) -> anyhow::Result<HashMap<MapData, FlowKey, FlowValue>> {
    use aya::maps::IterableMap as _;
    let fd = flows
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating the connection table's fd")?;
    let data = MapData::from_fd(fd).context("opening the connection table again")?;
    HashMap::try_from(Map::LruHashMap(data)).context("the connection table's type")
}

/// The `vip_filter` words that hold the bits of `services` (and no other bit).
pub fn vip_filter_words<'a>(services: impl IntoIterator<Item = &'a ServiceKey>) -> Vec<u64> {
    let mut words = vec![0u64; VIP_FILTER_WORDS as usize];
    for key in services {
        let bit = vip_filter_bit(&key.addr, key.family, key.port) as usize;
        words[bit / 64] |= 1 << (bit % 64);
    }
    words
}

/// The `local_macs` value holding `macs` (distinct, at most `MAX_LOCAL_MACS`).
fn local_macs_value(ifindex: u32, macs: &[[u8; 6]]) -> anyhow::Result<LocalMacs> {
    let mut distinct: Vec<[u8; 6]> = Vec::new();
    for mac in macs {
        if !distinct.contains(mac) {
            distinct.push(*mac);
        }
    }
    if distinct.len() > MAX_LOCAL_MACS {
        bail!(
            "ifindex {ifindex} has {} MACs, more than the {MAX_LOCAL_MACS} local_macs holds",
            distinct.len()
        );
    }
    let mut value = LocalMacs {
        count: distinct.len() as u32,
        ..LocalMacs::default()
    };
    for (slot, mac) in value.macs.iter_mut().zip(&distinct) {
        *slot = mac_word(*mac);
    }
    Ok(value)
}

/// The `client_rules` key of a client prefix of a service (see `ClientRuleKey`).
fn rule_key(service_id: u32, addr: std::net::IpAddr, prefix_len: u8) -> LpmKey<ClientRuleKey> {
    LpmKey::new(
        CLIENT_RULE_SERVICE_BITS + u32::from(prefix_len),
        ClientRuleKey::new(service_id, addr),
    )
}

fn sum_per_cpu(map: &PerCpuArray<MapData, Counter>, index: u32) -> Counter {
    let mut total = Counter::default();
    if let Ok(values) = map.get(&index, 0) {
        for c in values.iter() {
            total.packets += c.packets;
            total.bytes += c.bytes;
        }
    }
    total
}

fn reset_per_cpu(map: &mut PerCpuArray<MapData, Counter>, index: u32) -> anyhow::Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, err)| anyhow!("counting CPUs: {err}"))?;
    let zeros = aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus])
        .map_err(|err| anyhow!("building per-CPU zeros: {err}"))?;
    map.set(index, zeros, 0)
        .with_context(|| format!("zeroing counter {index}"))
}

/// A shared read-write mmap of a `BPF_F_MMAPABLE` array, unmapped on drop.
struct Mapping {
    // Keeps the map (and so the mapping's backing) alive.
    _map: MapData,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value and only written through `&mut self`.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `bytes` of `map` (rounded up to whole pages).
    fn new(map: MapData, bytes: usize, name: &str) -> anyhow::Result<Self> {
        let page = page_size();
        let len = bytes.div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared read-write mapping of an mmapable BPF array; the kernel checks
        // the length against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("mmap of {name}"));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| anyhow!("mmap returned null"))?;
        Ok(Self {
            _map: map,
            base,
            len,
        })
    }

    /// The word of type `T` at byte `offset`.
    ///
    /// # Safety
    /// `offset + size_of::<T>()` is within the mapping and `offset` is aligned for `T`.
    unsafe fn at<T>(&self, offset: usize) -> *mut T {
        debug_assert!(offset + std::mem::size_of::<T>() <= self.len);
        // SAFETY: the caller keeps the offset inside the mapping.
        unsafe { self.base.as_ptr().add(offset).cast::<T>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// The mmap-ed view of `maglev_tables`.
struct TableArea {
    mapping: Mapping,
    slots: u32,
}

impl TableArea {
    fn map(map: MapData, slots: u32) -> anyhow::Result<Self> {
        let mapping = Mapping::new(
            map,
            slots as usize * MAGLEV_SLOT_STRIDE,
            map_names::MAGLEV_TABLES,
        )?;
        Ok(Self { mapping, slots })
    }

    fn check(&self, offset: u32, len: usize) -> anyhow::Result<()> {
        if offset as usize + len > self.slots as usize {
            bail!(
                "table of {len} slots at offset {offset} does not fit maglev_tables ({} slots)",
                self.slots
            );
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, table: &[u32]) -> anyhow::Result<()> {
        self.check(offset, table.len())?;
        let start = offset as usize * MAGLEV_SLOT_STRIDE;
        for (i, id) in table.iter().enumerate() {
            // SAFETY: in bounds (checked above); slots are 8-byte aligned in the mapping.
            unsafe {
                self.mapping
                    .at::<u32>(start + i * MAGLEV_SLOT_STRIDE)
                    .write_volatile(*id);
            }
        }
        // Make every slot visible before the caller publishes the table.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn read(&self, offset: u32, len: u32) -> anyhow::Result<Vec<u32>> {
        self.check(offset, len as usize)?;
        let start = offset as usize * MAGLEV_SLOT_STRIDE;
        Ok((0..len as usize)
            // SAFETY: in bounds (checked above).
            .map(|i| unsafe {
                self.mapping
                    .at::<u32>(start + i * MAGLEV_SLOT_STRIDE)
                    .read_volatile()
            })
            .collect())
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}
