//! `cargo xtask deps | test | run | bench | install`: install what is missing, build, run
//! the tests, run the agent on this host or in the namespace lab, measure it, install it.

mod bench;
mod deb;
mod deps;
mod install;
mod manual;
mod process;

use std::{
    env,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};

use crate::process::{attached, attached_ok, command, exit_code, forwarding_signals, step};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Install, build, test and run xdp-lb"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (apt packages, rust nightly with rust-src, bpf-linker) and
    /// mount bpffs. Needs root.
    Deps,
    /// deps, build the workspace (debug), then `cargo test` on it; ARGS after `--` go to
    /// `cargo test` (e.g. `cargo xtask test -- lab_smoke -- --nocapture`).
    Test {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// deps, build the agent (release), then: with `-- --config FILE [ARGS]`, run it on this
    /// host with those arguments; without, run the lab demo (namespaces, backends, the agent
    /// in the LB namespace, traffic through the VIP) and keep the lab up until Ctrl-C.
    Run {
        /// Tear the lab down right after the demo instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Several LBs behind a BIRD router (2 or 3): sessions spread over them, one stopped
        /// cleanly while live publishes go on.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
        lbs: u8,
        /// The agent's arguments (must include --config FILE).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// deps, build the agent and the benchmarks (release), run them: writes BENCHMARKS.md,
    /// BENCHMARKS.json and tests/charts/*.svg at the repository root.
    Bench {
        /// Fewer repeats and runs, for working on the benchmarks (not for publishing).
        #[arg(long)]
        quick: bool,
        /// Measure one section only and rewrite just its part of the report
        /// (`lb-failover` or `sync`).
        #[arg(long, value_name = "SECTION")]
        only: Option<String>,
    },
    /// Build the release agent and install it with its systemd unit, /etc/xdp-lb/xdp-lb.yaml
    /// (only where none is), the notify script, bash/zsh/fish completions and the man page;
    /// --uninstall takes them away. Needs root
    /// unless --root.
    Install(InstallArgs),
    /// Build a Debian package, target/debian/xdp-lb_VERSION_ARCH.deb, with dpkg-deb: the
    /// release agent in /usr/sbin, its unit, the example config and notify script as
    /// conffiles, completions and man page.
    Deb {
        /// Package this agent binary instead of building the release one.
        #[arg(long, value_name = "FILE")]
        binary: Option<PathBuf>,
        /// Where the .deb goes (default: target/debian).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct InstallArgs {
    /// Where the binary goes: PREFIX/sbin/xdp-lb.
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Install under DIR instead of / (packaging; nothing on this system changes).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Remove what install put in place (the config and run-time changes stay).
    #[arg(long)]
    uninstall: bool,
    /// With --uninstall: also remove /etc/xdp-lb and /var/lib/xdp-lb.
    #[arg(long, requires = "uninstall")]
    purge: bool,
    /// Install the release binary already built instead of building it.
    #[arg(long)]
    no_build: bool,
}

impl From<InstallArgs> for install::Options {
    fn from(a: InstallArgs) -> Self {
        Self {
            prefix: a.prefix,
            root: a.root,
            uninstall: a.uninstall,
            purge: a.purge,
            no_build: a.no_build,
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask's parent directory).
fn root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| anyhow!("xtask's manifest directory has no parent"))
}

/// The cargo target directory: `$CARGO_TARGET_DIR` (relative to the root) or `target`.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// `cargo ARGS` in the workspace root, attached to the terminal.
fn cargo(root: &Path, args: &[&str]) -> std::process::Command {
    let program = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = command(&program, args);
    cmd.current_dir(root);
    cmd
}

fn run(cli: Cli) -> Result<i32> {
    let root = root()?;
    match cli.command {
        Cmd::Deps => deps::run().map(|()| 0),
        Cmd::Test { args } => test(&root, &args),
        Cmd::Run { once, lbs, args } => run_agent(&root, once, lbs, &args),
        Cmd::Bench { quick, only } => bench::run(&root, quick, only.as_deref()),
        Cmd::Install(args) => install::run(&root, &target_dir(&root), &args.into()),
        Cmd::Deb { binary, out } => {
            deb::run(&root, &target_dir(&root), &deb::Options { binary, out })
        }
    }
}

fn test(root: &Path, args: &[String]) -> Result<i32> {
    deps::run()?;
    // The suite builds forty-odd test binaries; incremental caches would add about 0.8 GB
    // to a clean clone's 2 GB target (CI once ran out of disk). Set CARGO_INCREMENTAL to
    // keep them.
    let incremental = std::env::var_os("CARGO_INCREMENTAL").unwrap_or_else(|| "0".into());
    step("build (debug)");
    attached_ok(
        cargo(root, &["build", "--workspace", "--exclude", "xdp-lb-ebpf"])
            .env("CARGO_INCREMENTAL", &incremental),
    )?;
    step("test");
    let mut test_args = vec!["test", "--workspace", "--exclude", "xdp-lb-ebpf"];
    test_args.extend(args.iter().map(String::as_str));
    let mut cargo_test = cargo(root, &test_args);
    cargo_test.env("CARGO_INCREMENTAL", &incremental);
    // The package test wraps the debug agent just built (xtask's deb.rs).
    cargo_test.env("XDP_LB_AGENT_BINARY", target_dir(root).join("debug/xdp-lb"));
    let status = attached(&mut cargo_test)?;
    Ok(exit_code(status))
}

fn run_agent(root: &Path, once: bool, lbs: u8, args: &[String]) -> Result<i32> {
    let host_mode = !args.is_empty();
    // The agent's own --help and --version need no config.
    let passes = |a: &String| {
        a == "--config"
            || a.starts_with("--config=")
            || ["-h", "--help", "-V", "--version"].contains(&a.as_str())
    };
    if host_mode && !args.iter().any(passes) {
        bail!("arguments after `--` go to the agent and must include --config FILE");
    }
    if host_mode && (once || lbs > 1) {
        bail!(
            "--once and --lbs are for the lab demo; they do not go with the agent's own arguments"
        );
    }
    deps::run()?;
    step("build the agent (release)");
    attached_ok(&mut cargo(root, &["build", "--release", "-p", "xdp-lb"]))?;
    let release = target_dir(root).join("release");
    let agent = release.join("xdp-lb");
    let agent = agent
        .to_str()
        .context("the target directory's path is not UTF-8")?;
    if host_mode {
        step(&format!("run {agent} {}", args.join(" ")));
        let mut cmd = command(agent, &[]);
        cmd.args(args);
        return forwarding_signals(&mut cmd);
    }
    step("build the lab (release)");
    attached_ok(&mut cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "xdp-lb-tests",
            "--bin",
            "xdp-lb-lab",
        ],
    ))?;
    let lab = release.join("xdp-lb-lab");
    let lab = lab
        .to_str()
        .context("the target directory's path is not UTF-8")?;
    let lbs = lbs.to_string();
    let mut lab_args = vec!["--agent", agent, "--lbs", &lbs];
    if once {
        lab_args.push("--once");
    }
    forwarding_signals(&mut command(lab, &lab_args))
}
