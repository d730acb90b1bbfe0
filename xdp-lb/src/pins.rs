//! What the agent leaves in bpffs so the data plane outlives it: every map, and the XDP link
//! of every interface. A new agent (after `kill -9`, a crash or an upgrade) finds them,
//! checks the maps have the layout its program expects, and carries on with them.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/xdp-lb`):
//! `maps/<map name>` and `links/<interface>`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::MapInfo;
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use xdp_lb_common::{BPF_F_NO_COMMON_LRU, map_names};

/// Map flag (linux/bpf.h) the kernel adds to devmaps on its own.
const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// Where the agent pins by default.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xdp-lb";

/// The maps that carry state across agents (everything but the loader's own globals and
/// the log ring, which belong to one program instance).
pub const PINNED_MAPS: [&str; 13] = [
    map_names::SERVICE_BY_VIP,
    map_names::SERVICE_EPOCH,
    map_names::POOLS,
    map_names::MAGLEV_TABLES,
    map_names::BACKENDS,
    map_names::BACKEND_OWNERS,
    map_names::TX_PORTS,
    map_names::SERVICE_STATS,
    map_names::BACKEND_STATS,
    map_names::VERDICT_STATS,
    map_names::FLOWS,
    map_names::PERSISTENCE,
    map_names::FLOW_STATS,
];

/// Pinned maps an agent may replace by a new map of another size or flags, moving their
/// entries over, instead of refusing them: the connection table (`flow_table.size`
/// changed, or pinned by a version whose table had per-CPU LRU lists).
pub const MIGRATABLE_MAPS: [&str; 1] = [map_names::FLOWS];

/// What a new map's pin is called until it replaces the old one.
const STAGED_SUFFIX: &str = "-new";

/// Maps an earlier version pinned that the data plane no longer has: an agent adopting
/// such pins removes them once its program is loaded (the older program, still attached
/// until it is replaced, holds its own reference).
pub const RETIRED_MAPS: [&str; 1] = [map_names::RETIRED_SERVICE_PORTS];

#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    pub fn link(&self, ifname: &str) -> PathBuf {
        self.root.join("links").join(ifname)
    }

    /// Mounts bpffs on /sys/fs/bpf when the pins go there and it is not mounted; refuses a
    /// directory on any other file system (pins only live on bpffs); creates the directories.
    pub fn prepare(&self) -> anyhow::Result<()> {
        if self.root.starts_with("/sys/fs/bpf") {
            ensure_bpffs()?;
        }
        let mut probe = self.root.as_path();
        while !probe.exists() {
            probe = probe.parent().unwrap_or(Path::new("/"));
        }
        if !is_bpffs(probe) {
            bail!(
                "{} is not on a bpf file system (mount one with `mount -t bpf bpf DIR`): pins cannot live there",
                self.root.display()
            );
        }
        for sub in ["maps", "links"] {
            let dir = self.root.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// The entries of the pinned map `name`, if there is one.
    pub fn pinned_max_entries(&self, name: &str) -> anyhow::Result<Option<u32>> {
        let path = self.map(name);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(pinned_shape(&path)?.max_entries))
    }

    /// Whether a previous agent left maps here.
    pub fn has_maps(&self) -> bool {
        PINNED_MAPS.iter().any(|name| self.map(name).exists())
    }

    /// Removes the pins of `RETIRED_MAPS` an earlier version left; returns what it removed.
    pub fn remove_retired(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for name in RETIRED_MAPS {
            let path = self.map(name);
            if path.exists() {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// Interfaces with a pinned link.
    pub fn pinned_links(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join("links")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Refuses pinned maps whose layout differs from what this program expects (`expected`:
    /// name -> key size, value size, max entries, flags), naming every difference. A map of
    /// `MIGRATABLE_MAPS` whose entries keep their layout (key and value sizes) but whose
    /// size or flags differ is not refused: it is returned, for its entries to move into a
    /// new map of the wanted shape (`dataplane::FlowMigration`).
    pub fn check_compatible(
        &self,
        expected: &[(String, MapShape)],
    ) -> anyhow::Result<Vec<ShapeChange>> {
        let mut problems = Vec::new();
        let mut changes = Vec::new();
        for (name, want) in expected {
            let path = self.map(name);
            if !path.exists() {
                continue;
            }
            let have = pinned_shape(&path)?;
            if have.fits(want) {
                continue;
            }
            if MIGRATABLE_MAPS.contains(&name.as_str())
                && (have.key_size, have.value_size) == (want.key_size, want.value_size)
            {
                changes.push(ShapeChange {
                    name: name.clone(),
                    pinned: have,
                    wanted: *want,
                });
            } else {
                problems.push(format!("{name}: pinned {have}, this agent needs {want}"));
            }
        }
        if !problems.is_empty() {
            bail!(
                "the maps pinned under {} by a running xdp-lb do not fit this agent's data plane:\n  {}\n\
                 Nothing was changed. Run the agent version that pinned them, or drop the live state with \
                 `xdp-lb cleanup` (traffic to the services stops until an agent starts; live flows are forgotten).",
                self.root.display(),
                problems.join("\n  ")
            );
        }
        Ok(changes)
    }

    /// Replaces the pin of map `name` by `map`, atomically: pinned under a temporary name
    /// first, then renamed over the old pin (a reader finds one map or the other, never
    /// none).
    pub fn replace_map_pin(&self, name: &str, map: &aya::maps::MapData) -> anyhow::Result<()> {
        let path = self.map(name);
        let staged = self.map(&format!("{name}{STAGED_SUFFIX}"));
        if staged.exists() {
            fs::remove_file(&staged).with_context(|| format!("removing {}", staged.display()))?;
        }
        map.pin(&staged)
            .map_err(|err| anyhow!("pinning the new {name} at {}: {err}", staged.display()))?;
        fs::rename(&staged, &path).with_context(|| {
            format!(
                "renaming {} over {} (the old pin stays)",
                staged.display(),
                path.display()
            )
        })
    }

    /// Removes what an agent that died while replacing a pin left staged.
    pub fn remove_staged(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for name in MIGRATABLE_MAPS {
            let staged = self.map(&format!("{name}{STAGED_SUFFIX}"));
            if staged.exists() {
                fs::remove_file(&staged)
                    .with_context(|| format!("removing {}", staged.display()))?;
                removed.push(staged);
            }
        }
        Ok(removed)
    }

    /// Removes every pin (links first, so the program detaches, then maps) and the directory.
    pub fn remove_all(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for sub in ["links", "maps"] {
            let dir = self.root.join(sub);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                removed.push(path);
            }
            let _ = fs::remove_dir(&dir);
        }
        let _ = fs::remove_dir(&self.root);
        Ok(removed)
    }
}

/// The shape of the map pinned at `path`, as the kernel reports it.
pub fn pinned_shape(path: &Path) -> anyhow::Result<MapShape> {
    let info = MapInfo::from_pin(path)
        .map_err(|err| anyhow!("reading pinned map {}: {err}", path.display()))?;
    Ok(MapShape {
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// A pinned map an agent replaces by one of another shape, its entries moved over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeChange {
    pub name: String,
    pub pinned: MapShape,
    pub wanted: MapShape,
}

/// A map's shape as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapShape {
    /// The same layout. An LRU hash with per-CPU lists is sized up by the kernel to a
    /// multiple of the CPU count, so its entries may exceed what was asked by less than that.
    fn fits(&self, want: &MapShape) -> bool {
        let cpus = aya::util::nr_cpus().map_or(1, |n| n as u32);
        let entries_fit = if want.flags & BPF_F_NO_COMMON_LRU != 0 {
            self.max_entries >= want.max_entries
                && self.max_entries - want.max_entries < cpus.max(1)
        } else {
            self.max_entries == want.max_entries
        };
        // The kernel sets BPF_F_RDONLY_PROG on devmaps itself.
        let flags = |f: u32| f & !BPF_F_RDONLY_PROG;
        (self.key_size, self.value_size, flags(self.flags))
            == (want.key_size, want.value_size, flags(want.flags))
            && entries_fit
    }
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {} B, value {} B, {} entries, flags {:#x}",
            self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// The shapes the object's maps get at load, with the sizes the agent sets.
pub fn expected_shapes(
    object: &[u8],
    max_entries: &[(&str, u32)],
) -> anyhow::Result<Vec<(String, MapShape)>> {
    let obj = aya_obj::Object::parse(object)
        .map_err(|err| anyhow!("parsing the data plane object: {err}"))?;
    let mut out = Vec::new();
    for name in PINNED_MAPS {
        let map = obj
            .maps
            .get(name)
            .ok_or_else(|| anyhow!("the data plane object has no map `{name}`"))?;
        let max = max_entries
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(map.max_entries(), |(_, v)| *v);
        out.push((
            name.to_owned(),
            MapShape {
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries: max,
                flags: map.map_flags(),
            },
        ));
    }
    Ok(out)
}

/// Where bpffs is mounted on every systemd machine (and where the agent mounts it).
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

/// Whether `path` lies on a bpf file system.
fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

/// Mounts bpffs on /sys/fs/bpf unless it is there (`mount -t bpf bpf /sys/fs/bpf`).
fn ensure_bpffs() -> anyhow::Result<()> {
    if is_bpffs(Path::new(BPFFS_MOUNT)) {
        return Ok(());
    }
    mount(
        Some("bpf"),
        BPFFS_MOUNT,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!("bpffs is not mounted on {BPFFS_MOUNT} and `mount -t bpf bpf {BPFFS_MOUNT}` failed")
    })
}
