//! Reading a configuration file: from its path ([`load_file`]; [`load_file_settled`] as the
//! running agent reads it) or its text ([`parse_file`]) to the validated [`ConfigFile`] or
//! every error found, and the host the agent checks it against ([`LiveHost`]).

use std::path::{Component, Path};

use super::{
    model::{Config, ConfigFile},
    raw::RawConfig,
    validate,
};
use crate::config::{
    ops::read_token_file,
    shared::{
        errors::{ConfigError, ConfigErrors},
        host::HostFacts,
        locate,
    },
};

/// Largest configuration file read (a full one, 16384 backends, is about 1 MiB).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

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

    fn sync_key(&self, path: &Path) -> Result<(), String> {
        crate::config::read_key_file(path).map(|_| ())
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
    let raw: RawConfig = serde_saphyr::from_str_with_options(text, locate::options())
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
