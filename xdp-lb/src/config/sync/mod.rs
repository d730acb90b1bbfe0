//! `sync:`: flow-state sync with the other LBs of the same VIPs.
//!
//! Every LB tells the others where it placed each new flow (and, every `refresh`, which
//! of its flows are still live); each inserts what it hears into its own connection
//! table. A flow that ECMP moves to another LB then finds its backend there even when that
//! LB's Maglev table changed meanwhile (a backend added, drained or down). The same file
//! serves every LB: `peers` lists all of them, this one included, and the agent listens on
//! the one that is its own (or on `listen`). Datagrams are UDP to `port`, each carrying an
//! HMAC-SHA256 tag made with the key in `key_file` (the same on every LB).
//!
//! As written in `raw.rs`; checked, validated and written back here.

pub(crate) mod raw;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use self::raw::RawSync;
use crate::{
    config::shared::{
        checker::Checker,
        duration::{DurationRule, Resolution, format_duration},
        errors::shown,
        host::HostFacts,
        number::at,
        yaml::{address, string},
    },
    sync::wire::Key,
};

/// The UDP port of flow-state sync unless the file says.
pub const DEFAULT_SYNC_PORT: u16 = 7946;
/// How often live flows are told again unless the file says.
pub const DEFAULT_SYNC_REFRESH: Duration = Duration::from_secs(30);
/// Entries per second this LB sends to, and takes from, each peer unless the file says.
pub const DEFAULT_SYNC_MAX_RATE: u32 = 50_000;
/// How far a datagram's send time may be from this LB's clock unless the file says.
pub const DEFAULT_SYNC_MAX_CLOCK_SKEW: Duration = Duration::from_secs(10);
/// Most LBs one `peers` list may name.
pub const MAX_SYNC_PEERS: usize = 64;
/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 1024;

const REFRESH_RULE: DurationRule = DurationRule {
    range: Duration::from_secs(1)..=Duration::from_secs(3600),
    resolution: Resolution::Millis,
};
const SKEW_RULE: DurationRule = DurationRule {
    range: Duration::from_secs(1)..=Duration::from_secs(600),
    resolution: Resolution::Millis,
};

/// What `sync:` says; absent: this LB shares no flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// Every LB's sync address, this one's included, as written.
    pub peers: Vec<IpAddr>,
    /// This LB's own sync address; `None`: the one of `peers` the host has.
    pub listen: Option<IpAddr>,
    /// The UDP port every LB listens on.
    pub port: u16,
    /// The shared key (hex, 32 to 64 bytes), root's only.
    pub key_file: PathBuf,
    /// How often this LB tells its peers again about its flows that saw packets since.
    pub refresh: Duration,
    /// Entries per second sent to, and taken from, each peer.
    pub max_rate: u32,
    /// How far a datagram's send time may be from this LB's clock (replays older than
    /// that are refused whatever their sequence number).
    pub max_clock_skew: Duration,
}

/// The shared key in `path`: hex digits (32 to 64 bytes), in a regular file nobody but its
/// owner and group can read.
pub fn read_key_file(path: &Path) -> Result<Key, String> {
    let bytes = crate::files::read_regular(path, MAX_KEY_FILE_BYTES)?;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(format!(
            "is readable by every user (mode {mode:04o}); make it root's only: chmod 600"
        ));
    }
    Key::from_hex(&bytes).map_err(|e| format!("{e} (make one with `openssl rand -hex 32`)"))
}

impl Checker<'_> {
    /// `sync:`. `Some(None)`: valid and off. `idle_timeout_s`: the shorter of the flow
    /// table's TCP and UDP timeouts (a peer's copy of a quiet flow lives that long).
    pub(crate) fn sync(
        &mut self,
        raw: Option<&RawSync>,
        idle_timeout_s: Option<u32>,
        host: &dyn HostFacts,
    ) -> Option<Option<SyncSettings>> {
        let Some(raw) = raw else { return Some(None) };
        let before = self.errors.len();
        // Told again at least twice within the shortest idle timeout, a peer's copy of a
        // live flow never expires (the default shrinks to fit; a written one must).
        let limit = idle_timeout_s.map(|s| Duration::from_secs(u64::from(s) / 2));
        let mut settings = SyncSettings {
            peers: Vec::new(),
            listen: None,
            port: DEFAULT_SYNC_PORT,
            key_file: PathBuf::new(),
            refresh: limit
                .filter(|l| *l < DEFAULT_SYNC_REFRESH)
                .map_or(DEFAULT_SYNC_REFRESH, |l| l.max(Duration::from_secs(1))),
            max_rate: DEFAULT_SYNC_MAX_RATE,
            max_clock_skew: DEFAULT_SYNC_MAX_CLOCK_SKEW,
        };
        let mut seen = BTreeSet::new();
        for (i, peer) in raw.peers.value.iter().enumerate() {
            let field = format!("sync.peers[{i}]");
            match self.sync_address(peer, &field) {
                Some(addr) if !seen.insert(addr) => {
                    let message = format!("{addr} is listed twice");
                    self.error(at(peer), field, message);
                }
                Some(addr) => settings.peers.push(addr),
                None => {}
            }
        }
        if let (Some(first), Some(other)) = (
            settings.peers.first(),
            settings
                .peers
                .iter()
                .find(|a| a.is_ipv4() != settings.peers[0].is_ipv4()),
        ) {
            let message = format!(
                "{first} and {other} are of different families: one LB listens on one address, so every peer must be IPv4, or every one IPv6"
            );
            self.error(at(&raw.peers), "sync.peers", message);
        }
        if raw.peers.value.len() < 2 {
            self.error(
                at(&raw.peers),
                "sync.peers",
                "list every LB's sync address, this one's included (at least two: sync needs another LB)",
            );
        } else if raw.peers.value.len() > MAX_SYNC_PEERS {
            let message = format!(
                "{} addresses, at most {MAX_SYNC_PEERS} are allowed",
                raw.peers.value.len()
            );
            self.error(at(&raw.peers), "sync.peers", message);
        }
        if let Some(listen) = &raw.listen
            && let Some(addr) = self.sync_address(listen, "sync.listen")
        {
            if settings.peers.len() == raw.peers.value.len() && !seen.contains(&addr) {
                let message = format!(
                    "{addr} is not in sync.peers: list this LB there too (every LB reads the same list)"
                );
                self.error(at(listen), "sync.listen", message);
            }
            settings.listen = Some(addr);
        }
        if let Some(port) = &raw.port
            && let Some(n) = self.number(port, "sync.port", 1..=65535)
        {
            settings.port = u16::try_from(n).unwrap_or(DEFAULT_SYNC_PORT);
        }
        let key_file = &raw.key_file;
        let path = Path::new(&key_file.value);
        if !path.is_absolute() {
            let message = format!(
                "{} is not an absolute path (write the full path of the key file)",
                shown(&key_file.value)
            );
            self.error(at(key_file), "sync.key_file", message);
        } else if let Err(why) = host.sync_key(path) {
            let message = format!("{} {why}", shown(&key_file.value));
            self.error(at(key_file), "sync.key_file", message);
        } else {
            settings.key_file = path.to_path_buf();
        }
        if let Some(value) = &raw.refresh
            && let Some(d) = self.duration(value, "sync.refresh", &REFRESH_RULE)
        {
            match limit {
                Some(limit) if d > limit => {
                    let message = format!(
                        "{} is more than half flow_table.tcp_timeout (or udp_timeout, with UDP services; {}): the peers' copies of quiet flows would expire before they are told again",
                        format_duration(d),
                        format_duration(limit * 2)
                    );
                    self.error(at(value), "sync.refresh", message);
                }
                _ => settings.refresh = d,
            }
        }
        if let Some(rate) = &raw.max_rate
            && let Some(n) = self.number(rate, "sync.max_rate", 100..=10_000_000)
        {
            settings.max_rate = u32::try_from(n).unwrap_or(DEFAULT_SYNC_MAX_RATE);
        }
        if let Some(value) = &raw.max_clock_skew
            && let Some(d) = self.duration(value, "sync.max_clock_skew", &SKEW_RULE)
        {
            settings.max_clock_skew = d;
        }
        (self.errors.len() == before).then_some(Some(settings))
    }

    /// A unicast address another LB can send to.
    fn sync_address(
        &mut self,
        value: &serde_saphyr::Spanned<String>,
        field: &str,
    ) -> Option<IpAddr> {
        let Ok(addr) = value.value.trim().parse::<IpAddr>() else {
            let message = format!(
                "{} is not an IP address (write the address only: every LB uses sync.port)",
                shown(&value.value)
            );
            self.error(at(value), field, message);
            return None;
        };
        let broadcast = matches!(addr, IpAddr::V4(v4) if v4.is_broadcast());
        let link_local = matches!(addr, IpAddr::V6(v6) if v6.is_unicast_link_local());
        if link_local {
            let message = format!(
                "{addr} is link-local: it needs an interface to be reached; use a global or unique-local address"
            );
            self.error(at(value), field, message);
            return None;
        }
        if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() || broadcast {
            let message = format!("{addr} is not an address another LB can send to");
            self.error(at(value), field, message);
            return None;
        }
        Some(addr)
    }
}

/// `sync:` in the effective configuration (nothing when off).
pub(crate) fn render(out: &mut String, sync: Option<&SyncSettings>) -> std::fmt::Result {
    let Some(s) = sync else { return Ok(()) };
    writeln!(out, "sync:")?;
    writeln!(out, "  peers:")?;
    for peer in &s.peers {
        writeln!(out, "    - {}", address(*peer))?;
    }
    if let Some(listen) = s.listen {
        writeln!(out, "  listen: {}", address(listen))?;
    }
    writeln!(out, "  port: {}", s.port)?;
    writeln!(out, "  key_file: {}", string(&s.key_file.to_string_lossy()))?;
    writeln!(out, "  refresh: {}", format_duration(s.refresh))?;
    writeln!(out, "  max_rate: {}", s.max_rate)?;
    writeln!(
        out,
        "  max_clock_skew: {}",
        format_duration(s.max_clock_skew)
    )
}

#[cfg(test)]
mod tests;
