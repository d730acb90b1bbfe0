//! `cargo xtask deps`: installs whatever is missing, and only that. Quick when everything
//! is there; never asks anything (no tty needed); one line per thing installed.

use std::env;

use anyhow::{Context as _, Result, bail};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
    unistd::geteuid,
};

use crate::process::{capture, capture_ok, command, step, tool_path};

/// Debian packages: LLVM 22 for bpf-linker, nginx with the RTMP module, ffmpeg and the
/// network tools the lab and the tests use, perf for the benchmarks' profiles, and
/// dpkg-dev for `cargo xtask deb` (dpkg-shlibdeps), BIRD for the BGP lab (one daemon per LB
/// namespace and one on the router), and chromium, the headless browser that loads the web
/// console in `tests/tests/lab_web.rs`.
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libclang-22-dev",
    "nginx",
    "libnginx-mod-rtmp",
    "ffmpeg",
    "curl",
    "tcpdump",
    "bpftool",
    "xdp-tools",
    "ethtool",
    "iproute2",
    "libbpf-dev",
    "iputils-ping",
    "linux-perf",
    // systemd-analyze checks the shipped unit file.
    "systemd",
    "dpkg-dev",
    // The BGP lab's routing daemons (`tests/tests/lab_bgp.rs`, `cargo xtask run --lbs N`).
    "bird2",
    "chromium",
];

/// The nightly the data plane is built with: `xdp-lb/build.rs` passes the same name to
/// aya-build (a test keeps the two in step), so a fresh machine a year from now builds
/// what this one does. rustc 1.97.0-nightly (e50aa6fba 2026-05-19) is the nightly of
/// 2026-05-20: a nightly's name is the day it was published, its rustc's the day before.
pub const EBPF_NIGHTLY: &str = "nightly-2026-05-20";

/// The bpf-linker installed (with `--locked`: the dependency versions it was released with).
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where Debian's LLVM 22 keeps llvm-config (bpf-linker's build finds LLVM through it).
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn run() -> Result<()> {
    step("deps");
    if !geteuid().is_root() {
        bail!("`cargo xtask deps` needs root (apt-get, mounting bpffs; the lab needs it too)");
    }
    apt()?;
    nightly()?;
    bpf_linker()?;
    bpffs()?;
    Ok(())
}

fn apt_installed(package: &str) -> Result<bool> {
    let output = capture(&mut command("dpkg-query", &["-W", "-f=${Status}", package]))?;
    // Exit status 1 with "no packages found" means not installed.
    Ok(output.status.success()
        && String::from_utf8_lossy(&output.stdout).trim() == "install ok installed")
}

fn apt() -> Result<()> {
    let mut missing = Vec::new();
    for package in APT_PACKAGES {
        if !apt_installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    capture_ok(command("apt-get", &["update"]).envs(noninteractive))
        .context("refreshing the package lists")?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    capture_ok(command("apt-get", &args).envs(noninteractive))
        .with_context(|| format!("installing {}", missing.join(" ")))?;
    for package in missing {
        println!("installed {package} (apt)");
    }
    Ok(())
}

fn nightly() -> Result<()> {
    let toolchains = capture_ok(&mut command("rustup", &["toolchain", "list"]))
        .context("listing rust toolchains (is rustup installed?)")?;
    // Listed as `nightly-2026-05-20-x86_64-unknown-linux-gnu`.
    let dated = format!("{EBPF_NIGHTLY}-");
    if !toolchains.lines().any(|line| line.starts_with(&dated)) {
        capture_ok(&mut command(
            "rustup",
            &["toolchain", "install", EBPF_NIGHTLY, "--profile", "minimal"],
        ))?;
        println!("installed the rust toolchain {EBPF_NIGHTLY} (rustup)");
    }
    let components = capture_ok(&mut command(
        "rustup",
        &[
            "component",
            "list",
            "--toolchain",
            EBPF_NIGHTLY,
            "--installed",
        ],
    ))?;
    if !components
        .lines()
        .any(|line| line.trim().starts_with("rust-src"))
    {
        capture_ok(&mut command(
            "rustup",
            &["component", "add", "rust-src", "--toolchain", EBPF_NIGHTLY],
        ))?;
        println!("installed rust-src for {EBPF_NIGHTLY} (rustup)");
    }
    Ok(())
}

/// `bpf-linker --version`'s version (`bpf-linker 0.13.0`), or `None` when it does not run.
fn bpf_linker_version() -> Option<String> {
    let output = capture(&mut command("bpf-linker", &["--version"])).ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    output.status.success().then(|| {
        text.trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}

fn bpf_linker() -> Result<()> {
    let installed = bpf_linker_version();
    if installed.as_deref() == Some(BPF_LINKER_VERSION) {
        return Ok(());
    }
    match &installed {
        Some(other) => {
            println!("replacing bpf-linker {other} with {BPF_LINKER_VERSION} (a few minutes)")
        }
        None => println!("installing bpf-linker {BPF_LINKER_VERSION} (a few minutes)"),
    }
    let mut path = env::split_paths(&tool_path()).collect::<Vec<_>>();
    path.insert(0, LLVM_BIN.into());
    let path = env::join_paths(path).context("building PATH for the bpf-linker build")?;
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    capture_ok(
        command(
            &cargo,
            &[
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ],
        )
        .env("PATH", path),
    )?;
    if bpf_linker_version().as_deref() != Some(BPF_LINKER_VERSION) {
        bail!(
            "`cargo install bpf-linker --version {BPF_LINKER_VERSION}` succeeded but `bpf-linker --version` does not say {BPF_LINKER_VERSION}"
        );
    }
    println!("installed bpf-linker {BPF_LINKER_VERSION} (cargo install --locked)");
    Ok(())
}

/// Mounts bpffs on /sys/fs/bpf (`mount -t bpf bpf /sys/fs/bpf`) unless it is there.
fn bpffs() -> Result<()> {
    const BPFFS: &str = "/sys/fs/bpf";
    if statfs(BPFFS).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mount -t bpf bpf {BPFFS}"))?;
    println!("mounted bpffs on {BPFFS}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_builds_its_data_plane_with_the_nightly_deps_installs() {
        let build_rs = include_str!("../../xdp-lb/build.rs");
        assert!(
            build_rs.contains(&format!("Toolchain::Custom(\"{EBPF_NIGHTLY}\")")),
            "xdp-lb/build.rs must pass {EBPF_NIGHTLY} to aya-build"
        );
    }
}
