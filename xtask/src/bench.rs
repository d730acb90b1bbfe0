//! `cargo xtask bench [--quick] [--only SECTION]`: deps, release builds of the agent and of `xdp-lb-bench`,
//! then the benchmarks, which write BENCHMARKS.md, BENCHMARKS.json and `tests/charts/*.svg`
//! at the repository root. (xtask only runs the binary: it must build before `deps` has
//! installed what the workspace's own crates need.)

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::{
    cargo, deps,
    process::{attached_ok, command, forwarding_signals, step},
    target_dir,
};

pub fn run(root: &Path, quick: bool, only: Option<&str>) -> Result<i32> {
    deps::run()?;
    step("build the agent and the benchmarks (release)");
    attached_ok(&mut cargo(root, &["build", "--release", "-p", "xdp-lb"]))?;
    attached_ok(&mut cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "xdp-lb-tests",
            "--bin",
            "xdp-lb-bench",
        ],
    ))?;
    let release = target_dir(root).join("release");
    let agent = release.join("xdp-lb");
    let bench = release.join("xdp-lb-bench");
    let agent = agent
        .to_str()
        .context("the target directory's path is not UTF-8")?;
    let bench = bench
        .to_str()
        .context("the target directory's path is not UTF-8")?;
    let root_arg = root.to_str().context("the workspace path is not UTF-8")?;
    step(if quick {
        "benchmarks (--quick: fewer repeats and runs; not for publishing)"
    } else {
        "benchmarks (several minutes)"
    });
    let mut args = vec!["--agent", agent, "--root", root_arg];
    if quick {
        args.push("--quick");
    }
    if let Some(section) = only {
        args.extend(["--only", section]);
    }
    let mut cmd = command(bench, &args);
    cmd.current_dir(root);
    forwarding_signals(&mut cmd)
}
