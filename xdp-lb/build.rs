//! Builds the data plane (`xdp-lb-ebpf`) for the BPF target with aya-build; `src/lib.rs`
//! embeds the resulting object.
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", manifest_dir.display()))?
        .join("xdp-lb-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", ebpf_dir.display()))?;
    let ebpf_package = aya_build::Package {
        name: "xdp-lb-ebpf",
        root_dir,
        ..Default::default()
    };
    // Pinned by date so a build a year from now uses the same compiler; `cargo xtask deps`
    // installs it (xtask/src/deps.rs, EBPF_NIGHTLY, which a test keeps equal to this).
    aya_build::build_ebpf([ebpf_package], Toolchain::Custom("nightly-2026-05-20"))
}
