//! What the configuration tests share: a host with eth0, eth1 and lo, on which commands
//! under /etc/xdp-lb/ exist and are executable (the examples' notify script).

use std::path::Path;

use xdp_lb::config::HostFacts;

pub struct FakeHost;

impl HostFacts for FakeHost {
    fn interface_exists(&self, name: &str) -> bool {
        matches!(name, "eth0" | "eth1" | "lo")
    }

    fn is_executable(&self, path: &Path) -> bool {
        path.starts_with("/etc/xdp-lb")
    }
}
