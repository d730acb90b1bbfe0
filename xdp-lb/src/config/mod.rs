//! Configuration: the YAML file, its validation and the effective config.
//!
//! [`load_file`] / [`parse_file`] read the file (`raw.rs`, the serde schema), check every
//! rule (`validate.rs`) and give the validated [`ConfigFile`]: the balanced services
//! ([`Config`], with their named pools and client rules: `pools.rs`, `prefix.rs`) and their
//! health checks, backups, fallback pools and alerts ([`Failover`],
//! `failover.rs`; checked in `health.rs` and `standby.rs`) and the metrics and registration
//! endpoints ([`Ops`], `ops.rs`) and when VIPs are announced to the routers ([`Announce`],
//! `announce.rs`), or every error found, each with
//! its file, line, column and field path ([`ConfigErrors`]). [`load`] / [`parse_str`] give
//! the balancing half only (for tools that need no more). [`render_file`] prints the
//! effective configuration back as YAML.
mod announce;
mod duration;
mod edit;
mod errors;
mod failover;
mod health;
mod locate;
mod model;
mod ops;
mod pools;
mod prefix;
mod raw;
mod raw_failover;
mod raw_ops;
mod raw_pools;
mod render;
mod render_failover;
mod render_pools;
mod service;
mod standby;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_durations;
#[cfg(test)]
mod tests_failover;
#[cfg(test)]
mod tests_pools;
#[cfg(test)]
mod tests_rules;
#[cfg(test)]
mod tests_vlans;

use std::path::{Component, Path};

pub use announce::{
    ANNOUNCE_ROUTE_PROTOCOL, Announce, DEFAULT_ANNOUNCE_TABLE, DEFAULT_MIN_HEALTHY,
    DEFAULT_RESTORE_AFTER, DEFAULT_STOP_GRACE,
};
pub use duration::format_duration;
pub use edit::{revalidated, with_service_added, with_service_removed};
pub use errors::{ConfigError, ConfigErrors, quoted};

/// Whether `name` can name a service or a pool (1 to 64 characters of A-Z a-z 0-9 _ . -).
pub fn valid_name(name: &str) -> bool {
    pools::valid_pool_name(name)
}
pub use failover::*;
pub use model::*;
pub use ops::{MAX_TOKEN_BYTES, Metrics, Ops, Registration, read_token_file};
pub use render::{render, render_file};

/// Largest configuration file read (a full one, 16384 backends, is about 1 MiB).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Facts about the host that validation needs (tests inject their own).
pub trait HostFacts {
    fn interface_exists(&self, name: &str) -> bool;

    /// Whether `path` is a file this host can execute (the notify command). The default
    /// says yes: for tools that read a config meant for another host; [`LiveHost`] checks.
    fn is_executable(&self, _path: &Path) -> bool {
        true
    }

    /// Whether `path` holds a usable secret (the registration token), or what is wrong
    /// with it. The default says it does, as for [`Self::is_executable`].
    fn secret_file(&self, _path: &Path) -> Result<(), String> {
        Ok(())
    }

    /// The host's own addresses with their prefix lengths: no backend, backup or fallback
    /// server may be one of them, nor the network or broadcast address of an IPv4 subnet of
    /// theirs. The default knows none (a config checked for another host).
    fn local_addresses(&self) -> Vec<(std::net::IpAddr, u8)> {
        Vec::new()
    }
}

/// The real host: checks /sys/class/net/<name> exists (names with '/' or '..' or empty never
/// exist).
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveHost;

impl HostFacts for LiveHost {
    fn interface_exists(&self, name: &str) -> bool {
        let plain = !name.is_empty()
            && !name.contains('/')
            && !name.contains("..")
            && !name.contains('\0')
            && matches!(
                Path::new(name).components().next(),
                Some(Component::Normal(_))
            );
        plain && Path::new("/sys/class/net").join(name).exists()
    }

    fn is_executable(&self, path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }

    fn secret_file(&self, path: &Path) -> Result<(), String> {
        read_token_file(path).map(|_| ())
    }

    fn local_addresses(&self) -> Vec<(std::net::IpAddr, u8)> {
        let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        addresses
            .filter_map(|a| {
                let address = a.address?;
                let netmask = a.netmask;
                if let Some(v4) = address.as_sockaddr_in() {
                    let prefix = netmask
                        .as_ref()
                        .and_then(|m| m.as_sockaddr_in())
                        .map_or(32, |m| u32::from(m.ip()).count_ones() as u8);
                    Some((std::net::IpAddr::V4(v4.ip()), prefix))
                } else {
                    let v6 = address.as_sockaddr_in6()?;
                    let prefix = netmask
                        .as_ref()
                        .and_then(|m| m.as_sockaddr_in6())
                        .map_or(128, |m| u128::from(m.ip()).count_ones() as u8);
                    Some((std::net::IpAddr::V6(v6.ip()), prefix))
                }
            })
            .collect()
    }
}

/// Reads and validates the configuration in `text`, which came from `path` (used in messages
/// and kept in [`Config::path`]).
pub fn parse_file(
    path: &Path,
    text: &str,
    host: &dyn HostFacts,
) -> Result<ConfigFile, ConfigErrors> {
    let raw: raw::RawConfig = serde_saphyr::from_str_with_options(text, locate::options())
        .map_err(|e| ConfigErrors::from(locate::schema_error(path, text, &e)))?;
    validate::validate(path, &raw, host)
}

/// [`parse_file`], keeping the balancing half (the failover settings are still validated).
pub fn parse_str(path: &Path, text: &str, host: &dyn HostFacts) -> Result<Config, ConfigErrors> {
    parse_file(path, text, host).map(|file| file.config)
}

/// [`load_file`], keeping the balancing half (the failover settings are still validated).
pub fn load(path: &Path, host: &dyn HostFacts) -> Result<Config, ConfigErrors> {
    load_file(path, host).map(|file| file.config)
}

/// The one error of a file that cannot be read: at line 0, no field.
fn unreadable(path: &Path, message: String) -> ConfigErrors {
    ConfigErrors::from(ConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
    })
}

/// How old the file must be before the agent reads it for a reload: one written less than
/// this ago may still be being written (an editor or a copy that writes in place), so the
/// reload waits until the file is this old.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// [`load_file`] as the running agent reads it, off its loop: after waiting (at most
/// [`SETTLE`]) for a file written just now to settle, with a deadline on the read
/// ([`crate::files::read_within`]: a FIFO or a hung filesystem is an error, never a wait),
/// and refused when the file changed while it was read (written in place, not replaced by a
/// rename).
pub async fn load_file_settled(
    path: &Path,
    host: &dyn HostFacts,
) -> Result<ConfigFile, ConfigErrors> {
    let unreadable = |message: String| unreadable(path, message);
    let stamp = |meta: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt as _;
        (meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec())
    };
    if let Ok(meta) = &std::fs::metadata(path)
        && meta.is_file()
        && let Ok(age) = meta.modified().and_then(|m| {
            m.elapsed()
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        && age < SETTLE
    {
        tokio::time::sleep(SETTLE - age).await;
    }
    let before = std::fs::metadata(path).ok().map(|m| stamp(&m));
    let bytes = crate::files::read_within(path, MAX_FILE_BYTES, crate::files::READ_DEADLINE)
        .await
        .map_err(|e| unreadable(format!("the file {e}")))?;
    let after = std::fs::metadata(path).ok().map(|m| stamp(&m));
    if before != after {
        return Err(unreadable(
            "the file changed while it was read: write the new version beside it and \
             rename it into place (mv is atomic), then reload"
                .to_owned(),
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| unreadable(format!("the file is not UTF-8 text: {e}")))?;
    parse_file(path, &text, host)
}

/// Reads, parses and validates the configuration file at `path`. A file that cannot be read
/// gives one error at line 0.
pub fn load_file(path: &Path, host: &dyn HostFacts) -> Result<ConfigFile, ConfigErrors> {
    let unreadable = |message: String| unreadable(path, message);
    let bytes = crate::files::read_regular(path, MAX_FILE_BYTES)
        .map_err(|e| unreadable(format!("the file {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| unreadable(format!("the file is not UTF-8 text: {e}")))?;
    parse_file(path, &text, host)
}
