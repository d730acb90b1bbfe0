//! `cargo xtask deb [--binary FILE] [--out DIR]`: a Debian package of the agent, built with
//! `dpkg-deb` from the same files `cargo xtask install` puts in place (installed under a
//! staging root with the prefix `/usr`), no cargo-deb needed.
//!
//! The package: `/usr/sbin/xdp-lb` (stripped), `/lib/systemd/system/xdp-lb.service`,
//! `/etc/xdp-lb/xdp-lb.yaml` and `/etc/xdp-lb/notify-mail.sh` as conffiles (dpkg keeps an
//! operator's edits on upgrade), the completions and the man page. `Depends` is what
//! `dpkg-shlibdeps` finds the binary linked against; nothing else is needed at run time.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    install::{self, Layout, Sources},
    process::{capture_ok, command, step},
};

/// Where the package installs its files, as `cargo xtask install --prefix /usr` does but
/// for the unit, which a package puts in systemd's vendor directory.
const PACKAGE_UNIT: &str = "lib/systemd/system/xdp-lb.service";

/// The package's description: one summary line, then the long text (each line indented).
const DESCRIPTION: &str = "XDP layer-4 load balancer (Maglev, L2 direct server return)
 xdp-lb replaces an IPVS LVS/DR + keepalived setup with one YAML file and one
 agent: an XDP program balances each service's flows over its backends with
 weighted Maglev hashing and sends them by direct server return; the agent
 health-checks the backends, fails over to backups and fallback pools, and
 applies configuration changes and restarts without losing a flow.";

/// The maintainer field when `DEBFULLNAME`/`DEBEMAIL` do not say (as dch reads them).
const DEFAULT_MAINTAINER: &str = "xdp-lb maintainers <root@localhost>";

/// What `cargo xtask deb` was asked.
#[derive(Clone, Debug)]
pub struct Options {
    /// The agent binary to package; `None`: build the release one and use it.
    pub binary: Option<PathBuf>,
    /// Where the `.deb` goes (default `target/debian`).
    pub out: Option<PathBuf>,
}

pub fn run(workspace: &Path, target: &Path, opts: &Options) -> Result<i32> {
    let binary = match &opts.binary {
        Some(binary) => binary.clone(),
        None => {
            crate::install::build_release_agent(workspace)?;
            target.join("release/xdp-lb")
        }
    };
    let out = opts.out.clone().unwrap_or_else(|| target.join("debian"));
    step("package");
    let sources = Sources {
        binary,
        ..Sources::of_workspace(workspace, target)
    };
    let version = workspace_version(workspace)?;
    let deb = build(&sources, &out, &version, Compression::Default)?;
    println!("built {}", deb.display());
    Ok(0)
}

/// How hard `dpkg-deb` compresses (xz either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// dpkg-deb's default: the package to ship.
    Default,
    /// Level 0: for the test, which checks the contents, not the size.
    Fast,
}

/// Builds `OUT/xdp-lb_VERSION_ARCH.deb` from `sources`; returns its path.
pub fn build(
    sources: &Sources,
    out: &Path,
    version: &str,
    compression: Compression,
) -> Result<PathBuf> {
    let arch = capture_ok(&mut command("dpkg", &["--print-architecture"]))?
        .trim()
        .to_owned();
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // dpkg-shlibdeps wants the binary in debian/PACKAGE/ under a directory with a
    // debian/control.
    let work = out.join(format!("xdp-lb_{version}_{arch}.work"));
    let _ = fs::remove_dir_all(&work);
    let staging = work.join("debian/xdp-lb");
    let mut layout = Layout::new(&staging, Path::new("/usr"))?;
    layout.unit = staging.join(PACKAGE_UNIT);
    install::install(&layout, sources)?;
    // systemd makes the state directory (StateDirectory=); the package does not own it.
    for dir in layout.state_dir.ancestors().take(3) {
        fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let usr_sbin = path_str(&layout.binary)?;
    capture_ok(&mut command("strip", &["--strip-unneeded", usr_sbin]))?;

    let depends = shlib_depends(&work, &layout.binary)?;
    let control_dir = staging.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    let installed_kib = tree_bytes(&staging)?.div_ceil(1024);
    let maintainer = match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(name), Ok(email)) => format!("{name} <{email}>"),
        _ => DEFAULT_MAINTAINER.to_owned(),
    };
    let control = format!(
        "Package: xdp-lb\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {maintainer}\n\
         Installed-Size: {installed_kib}\nDepends: {depends}\n\
         Suggests: bsd-mailx | mailutils\nSection: net\nPriority: optional\n\
         Description: {DESCRIPTION}\n"
    );
    write(&control_dir.join("control"), &control, 0o644)?;
    write(
        &control_dir.join("conffiles"),
        "/etc/xdp-lb/xdp-lb.yaml\n/etc/xdp-lb/notify-mail.sh\n",
        0o644,
    )?;
    for (script, text) in MAINTAINER_SCRIPTS {
        write(&control_dir.join(script), text, 0o755)?;
    }
    let deb = out.join(format!("xdp-lb_{version}_{arch}.deb"));
    let mut dpkg_deb = command("dpkg-deb", &["--root-owner-group", "-Zxz"]);
    if compression == Compression::Fast {
        dpkg_deb.arg("-z0");
    }
    dpkg_deb.args(["--build", path_str(&staging)?, path_str(&deb)?]);
    capture_ok(&mut dpkg_deb)?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(deb)
}

/// Maintainer scripts: systemd is told about the unit; the service is never enabled or
/// started by the package (its configuration must be written first), stopped (a clean
/// detach) before removal, and `purge` removes the run-time changes too.
const MAINTAINER_SCRIPTS: [(&str, &str); 3] = [
    (
        "postinst",
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n",
    ),
    (
        "prerm",
        "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n    systemctl stop xdp-lb.service || true\nfi\n",
    ),
    (
        "postrm",
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\nif [ \"$1\" = purge ]; then rm -rf /var/lib/xdp-lb; fi\n",
    ),
];

/// `Depends` for the libraries `binary` links against, from `dpkg-shlibdeps`.
fn shlib_depends(work: &Path, binary: &Path) -> Result<String> {
    write(
        &work.join("debian/control"),
        "Source: xdp-lb\n\nPackage: xdp-lb\nArchitecture: any\n",
        0o644,
    )?;
    let relative = binary.strip_prefix(work).unwrap_or(binary);
    let mut shlibdeps = command("dpkg-shlibdeps", &["-O", path_str(relative)?]);
    shlibdeps.current_dir(work);
    let output = capture_ok(&mut shlibdeps).context("dpkg-shlibdeps (apt install dpkg-dev)")?;
    let depends = output
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::to_owned);
    match depends {
        Some(d) if !d.is_empty() => Ok(d),
        _ => bail!("dpkg-shlibdeps found no library dependencies: {output}"),
    }
}

/// The workspace's version (`[workspace.package] version` in Cargo.toml).
fn workspace_version(workspace: &Path) -> Result<String> {
    let manifest = fs::read_to_string(workspace.join("Cargo.toml"))?;
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(value) = line.strip_prefix("version") {
            let value = value.trim_start().trim_start_matches('=').trim();
            return Ok(value.trim_matches('"').to_owned());
        }
    }
    bail!("no [workspace.package] version in Cargo.toml")
}

/// Bytes of the regular files under `dir`.
fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// The agent binary the package test wraps: `cargo xtask test` sets it to the debug
    /// agent it has just built (packaging it is cheap; building a release one is not).
    const AGENT_ENV: &str = "XDP_LB_AGENT_BINARY";

    fn run_ok(program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[test]
    fn the_package_holds_the_agent_its_unit_conffiles_completions_and_man_page() {
        let Some(agent) = std::env::var_os(AGENT_ENV) else {
            eprintln!("skipped: {AGENT_ENV} is not set (cargo xtask test sets it)");
            return;
        };
        let scratch = std::env::temp_dir().join(format!("xtask-deb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let sources = Sources {
            binary: PathBuf::from(agent),
            ..Sources::of_workspace(workspace, Path::new("/nonexistent"))
        };
        let deb = build(&sources, &scratch, "0.1.0", Compression::Fast).unwrap();
        assert!(deb.ends_with("xdp-lb_0.1.0_amd64.deb"), "{}", deb.display());
        let deb = deb.to_str().unwrap();

        let listing = run_ok("dpkg-deb", &["-c", deb]);
        for path in [
            "./usr/sbin/xdp-lb",
            "./lib/systemd/system/xdp-lb.service",
            "./etc/xdp-lb/xdp-lb.yaml",
            "./etc/xdp-lb/notify-mail.sh",
            "./usr/share/bash-completion/completions/xdp-lb",
            "./usr/share/zsh/vendor-completions/_xdp-lb",
            "./usr/share/fish/vendor_completions.d/xdp-lb.fish",
            "./usr/share/man/man8/xdp-lb.8.gz",
        ] {
            assert!(
                listing.lines().any(|l| l.ends_with(path)),
                "{path} missing:\n{listing}"
            );
        }
        assert!(listing.contains("root/root"), "{listing}");
        assert!(!listing.contains("var/lib"), "{listing}");

        let fields = run_ok("dpkg-deb", &["-f", deb, "Package", "Version", "Depends"]);
        assert!(fields.contains("Package: xdp-lb\n"), "{fields}");
        assert!(fields.contains("Version: 0.1.0\n"), "{fields}");
        assert!(fields.contains("Depends: libc6 (>="), "{fields}");
        let control = scratch.join("control");
        run_ok("dpkg-deb", &["-e", deb, control.to_str().unwrap()]);
        assert_eq!(
            fs::read_to_string(control.join("conffiles")).unwrap(),
            "/etc/xdp-lb/xdp-lb.yaml\n/etc/xdp-lb/notify-mail.sh\n"
        );

        let root = scratch.join("root");
        run_ok("dpkg", &["-x", deb, root.to_str().unwrap()]);
        let unit = fs::read_to_string(root.join(PACKAGE_UNIT)).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/sbin/xdp-lb --config /etc/xdp-lb/xdp-lb.yaml"),
            "{unit}"
        );
        let agent = root.join("usr/sbin/xdp-lb");
        assert_eq!(
            fs::metadata(&agent).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let version = run_ok(agent.to_str().unwrap(), &["--version"]);
        assert!(version.starts_with("xdp-lb "), "{version}");
        let bash =
            fs::read_to_string(root.join("usr/share/bash-completion/completions/xdp-lb")).unwrap();
        assert!(bash.contains("complete -F _xdp__lb"), "{bash}");
        let man = run_ok(
            "gzip",
            &[
                "-dc",
                root.join("usr/share/man/man8/xdp-lb.8.gz")
                    .to_str()
                    .unwrap(),
            ],
        );
        assert!(man.contains(".TH xdp-lb 8"), "{man}");
        // A shipped config that the agent itself accepts.
        let config = root.join("etc/xdp-lb/xdp-lb.yaml");
        assert_eq!(
            fs::read(&config).unwrap(),
            fs::read(&sources.config).unwrap()
        );
        fs::remove_dir_all(&scratch).unwrap();
    }
}
