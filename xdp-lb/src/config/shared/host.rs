//! What validation asks of the host ([`HostFacts`]): whether an interface exists, whether
//! the notify command can run, whether a token file is usable, the host's own addresses.
//! Tests inject their own; `file/load.rs` has the real host.

use std::path::Path;

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

    /// Whether `path` holds a usable flow-sync key, or what is wrong with it. The default
    /// says it does.
    fn sync_key(&self, _path: &Path) -> Result<(), String> {
        Ok(())
    }

    /// The host's own addresses with their prefix lengths: no backend, backup or fallback
    /// server may be one of them, nor the network or broadcast address of an IPv4 subnet of
    /// theirs. The default knows none (a config checked for another host).
    fn local_addresses(&self) -> Vec<(std::net::IpAddr, u8)> {
        Vec::new()
    }
}
