//! A pin directory of a test's own on the host's bpffs, removed when the test ends.

#![allow(dead_code)]

use xdp_lb::pins::PinDir;

pub struct ScratchPins(pub PinDir);

impl ScratchPins {
    /// `/sys/fs/bpf/xdp-lb-test-PID-TAG`: each test of a run names its own `tag`.
    pub fn new(tag: &str) -> Self {
        Self(PinDir::new(format!(
            "/sys/fs/bpf/xdp-lb-test-{}-{tag}",
            std::process::id()
        )))
    }
}

impl Drop for ScratchPins {
    fn drop(&mut self) {
        let _ = self.0.remove_all();
    }
}
