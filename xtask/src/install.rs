//! `cargo xtask install [--prefix /usr/local] [--root DIR] [--uninstall [--purge]]`: puts
//! the release agent, its systemd unit, the example configuration (only where none is), the
//! notify script, the shell completions and the man page in place, and takes them away again. `--root DIR` installs under DIR
//! instead of `/` (for packaging, and for the tests: nothing on the system changes).

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    manual,
    process::{attached_ok, capture, command, step},
};

/// The path the unit's `ExecStart` names for the default prefix.
const UNIT_BINARY: &str = "/usr/local/sbin/xdp-lb";

/// What `cargo xtask install` was asked.
#[derive(Clone, Debug)]
pub struct Options {
    pub prefix: PathBuf,
    /// `/`, or where to install instead.
    pub root: PathBuf,
    pub uninstall: bool,
    /// With `uninstall`: also the configuration and the run-time changes.
    pub purge: bool,
    /// Install the release binary already built.
    pub no_build: bool,
}

/// Where every installed file goes, under the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub binary: PathBuf,
    pub unit: PathBuf,
    pub config_dir: PathBuf,
    pub config: PathBuf,
    pub notify_script: PathBuf,
    pub state_dir: PathBuf,
    pub bash_completion: PathBuf,
    pub zsh_completion: PathBuf,
    pub fish_completion: PathBuf,
    /// The man page, gzip-compressed.
    pub man_page: PathBuf,
    /// The binary's path as the running system sees it (the unit's `ExecStart`).
    pub binary_in_system: PathBuf,
}

impl Layout {
    pub fn new(root: &Path, prefix: &Path) -> Result<Self> {
        if !prefix.is_absolute() {
            bail!(
                "--prefix must be an absolute path, not {}",
                prefix.display()
            );
        }
        let under = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
        let binary_in_system = prefix.join("sbin/xdp-lb");
        let config_dir = under(Path::new("/etc/xdp-lb"));
        Ok(Self {
            binary: under(&binary_in_system),
            unit: under(Path::new("/etc/systemd/system/xdp-lb.service")),
            config: config_dir.join("xdp-lb.yaml"),
            notify_script: config_dir.join("notify-mail.sh"),
            config_dir,
            state_dir: under(Path::new("/var/lib/xdp-lb")),
            // Where the system's shells and man look, whatever the binary's prefix.
            bash_completion: under(Path::new(manual::BASH_COMPLETION)),
            zsh_completion: under(Path::new(manual::ZSH_COMPLETION)),
            fish_completion: under(Path::new(manual::FISH_COMPLETION)),
            man_page: under(Path::new(manual::MAN_PAGE)),
            binary_in_system,
        })
    }
}

/// The files installed from the workspace.
#[derive(Clone, Debug)]
pub struct Sources {
    pub binary: PathBuf,
    pub unit: PathBuf,
    pub config: PathBuf,
    pub notify_script: PathBuf,
}

impl Sources {
    pub fn of_workspace(root: &Path, target: &Path) -> Self {
        let examples = root.join("examples");
        Self {
            binary: target.join("release/xdp-lb"),
            unit: examples.join("xdp-lb.service"),
            config: examples.join("xdp-lb.yaml"),
            notify_script: examples.join("notify-mail.sh"),
        }
    }
}

pub fn run(workspace: &Path, target: &Path, opts: &Options) -> Result<i32> {
    let layout = Layout::new(&opts.root, &opts.prefix)?;
    let on_this_system = opts.root == Path::new("/");
    if on_this_system && !nix::unistd::geteuid().is_root() {
        bail!("installing into the system needs root (or --root DIR to install under DIR)");
    }
    if opts.uninstall {
        if on_this_system && systemd_running() {
            // Stopping detaches the data plane: the VIPs' traffic is the host's again.
            let _ = capture(&mut command("systemctl", &["disable", "--now", "xdp-lb"]));
        }
        for line in uninstall(&layout, opts.purge)? {
            println!("{line}");
        }
    } else {
        if !opts.no_build {
            build_release_agent(workspace)?;
        }
        step("install");
        for line in install(&layout, &Sources::of_workspace(workspace, target))? {
            println!("{line}");
        }
    }
    daemon_reload(on_this_system, &opts.root);
    if !opts.uninstall {
        println!(
            "next: edit /etc/xdp-lb/xdp-lb.yaml, check it with `{} check /etc/xdp-lb/xdp-lb.yaml`, then `systemctl enable --now xdp-lb`",
            layout.binary_in_system.display()
        );
    }
    Ok(0)
}

/// Whether this machine runs systemd (as `sd_booted()` tells).
/// `cargo build --release -p xdp-lb` in the workspace (install and deb ship that binary).
pub fn build_release_agent(workspace: &Path) -> Result<()> {
    step("build the agent (release)");
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = command(&program, &["build", "--release", "-p", "xdp-lb"]);
    build.current_dir(workspace);
    attached_ok(&mut build)
        .context("building the release agent (on a fresh machine, run `cargo xtask deps` first)")?;
    Ok(())
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn daemon_reload(on_this_system: bool, root: &Path) {
    if !on_this_system {
        println!("systemd: not reloaded (installed under {})", root.display());
    } else if !systemd_running() {
        println!(
            "systemd: not running on this machine (no /run/systemd/system); once it runs, `systemctl daemon-reload` picks the unit up"
        );
    } else {
        match capture(&mut command("systemctl", &["daemon-reload"])) {
            Ok(out) if out.status.success() => println!("systemd: daemon-reload done"),
            Ok(out) => println!(
                "systemd: `systemctl daemon-reload` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => println!("systemd: `systemctl daemon-reload` failed: {err:#}"),
        }
    }
}

/// Installs every file; returns one line per thing done.
pub fn install(layout: &Layout, sources: &Sources) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !sources.binary.is_file() {
        bail!(
            "no agent binary at {} (build it: cargo build --release -p xdp-lb)",
            sources.binary.display()
        );
    }
    copy(&sources.binary, &layout.binary, 0o755)?;
    done.push(format!("installed {}", layout.binary.display()));

    let unit = read(&sources.unit)?;
    let unit = unit.replace(UNIT_BINARY, &layout.binary_in_system.to_string_lossy());
    write(&layout.unit, unit.as_bytes(), 0o644)?;
    done.push(format!("installed {}", layout.unit.display()));

    create_dir(&layout.config_dir, 0o755)?;
    if layout.config.exists() {
        done.push(format!(
            "kept {} (an operator's configuration is never overwritten)",
            layout.config.display()
        ));
    } else {
        copy(&sources.config, &layout.config, 0o644)?;
        done.push(format!(
            "installed {} (the reference example: edit it)",
            layout.config.display()
        ));
    }

    let script = fs::read(&sources.notify_script)
        .with_context(|| format!("reading {}", sources.notify_script.display()))?;
    match fs::read(&layout.notify_script) {
        Ok(existing) if existing != script => {
            // Edited by the operator: theirs stays, the new one goes beside it.
            let new = with_suffix(&layout.notify_script, ".new");
            write(&new, &script, 0o755)?;
            done.push(format!(
                "kept {} (changed locally); the shipped one is {}",
                layout.notify_script.display(),
                new.display()
            ));
        }
        Ok(_) => done.push(format!("{} is up to date", layout.notify_script.display())),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            write(&layout.notify_script, &script, 0o755)?;
            done.push(format!("installed {}", layout.notify_script.display()));
        }
        Err(err) => {
            return Err(err).with_context(|| format!("reading {}", layout.notify_script.display()));
        }
    }
    create_dir(&layout.state_dir, 0o700)?;

    // Generated by the binary being installed, so they describe exactly its options.
    for (shell, path) in [
        ("bash", &layout.bash_completion),
        ("zsh", &layout.zsh_completion),
        ("fish", &layout.fish_completion),
    ] {
        write(path, &manual::completions(&sources.binary, shell)?, 0o644)?;
        done.push(format!("installed {}", path.display()));
    }
    let roff = layout.man_page.with_extension("");
    write(&roff, &manual::man_page(&sources.binary)?, 0o644)?;
    manual::gzip_in_place(&roff)?;
    done.push(format!("installed {}", layout.man_page.display()));
    Ok(done)
}

/// Removes what [`install`] put in place; the configuration and the run-time changes stay
/// unless `purge`. Returns one line per thing done.
pub fn uninstall(layout: &Layout, purge: bool) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut files = vec![
        layout.binary.clone(),
        layout.unit.clone(),
        layout.notify_script.clone(),
        with_suffix(&layout.notify_script, ".new"),
        layout.bash_completion.clone(),
        layout.zsh_completion.clone(),
        layout.fish_completion.clone(),
        layout.man_page.clone(),
    ];
    if purge {
        files.push(layout.config.clone());
    }
    for path in files {
        match fs::remove_file(&path) {
            Ok(()) => done.push(format!("removed {}", path.display())),
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("removing {}", path.display())),
        }
    }
    if purge {
        for dir in [&layout.config_dir, &layout.state_dir] {
            match fs::remove_dir_all(dir) {
                Ok(()) => done.push(format!("removed {}", dir.display())),
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(err).with_context(|| format!("removing {}", dir.display())),
            }
        }
    } else {
        // Empty directories go; one still holding something was the operator's.
        for dir in [&layout.config_dir, &layout.state_dir] {
            if fs::remove_dir(dir).is_ok() {
                done.push(format!("removed {}", dir.display()));
            }
        }
        if layout.config.exists() {
            done.push(format!(
                "kept {} (--purge removes it)",
                layout.config.display()
            ));
        }
        if layout.state_dir.exists() {
            done.push(format!(
                "kept {} with the run-time changes (--purge removes it)",
                layout.state_dir.display()
            ));
        }
    }
    Ok(done)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Writes `bytes` to `to` through a temporary file renamed over it (a running binary is
/// replaced, never overwritten in place).
fn write(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = to
        .parent()
        .with_context(|| format!("{} has no directory", to.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = with_suffix(to, ".xtask-new");
    fs::write(&temporary, bytes).with_context(|| format!("writing {}", temporary.display()))?;
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", temporary.display()))?;
    fs::rename(&temporary, to).with_context(|| format!("moving {} into place", to.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-install-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// The workspace's own unit, config and script, and a stand-in binary.
    fn sources(scratch: &Path) -> Sources {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let binary = scratch.join("xdp-lb-built");
        // Answers `completions SHELL` and `man` as the real agent does, with its arguments.
        fs::write(&binary, b"#!/bin/sh\necho xdp-lb \"$@\"\n").unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        Sources {
            binary,
            ..Sources::of_workspace(workspace, Path::new("/nonexistent"))
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn install_puts_everything_under_the_root_and_uninstall_takes_it_away_but_the_config() {
        let scratch = Scratch::new("round-trip");
        let root = scratch.0.join("root");
        let layout = Layout::new(&root, Path::new("/usr/local")).unwrap();
        let sources = sources(&scratch.0);

        install(&layout, &sources).unwrap();
        assert_eq!(layout.binary, root.join("usr/local/sbin/xdp-lb"));
        assert_eq!(mode(&layout.binary), 0o755);
        let unit = fs::read_to_string(root.join("etc/systemd/system/xdp-lb.service")).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/local/sbin/xdp-lb --config /etc/xdp-lb/xdp-lb.yaml"),
            "{unit}"
        );
        assert!(
            unit.contains("ExecReload=/usr/local/sbin/xdp-lb reload"),
            "{unit}"
        );
        assert_eq!(
            fs::read(&layout.config).unwrap(),
            fs::read(&sources.config).unwrap()
        );
        assert_eq!(mode(&layout.notify_script), 0o755);
        assert_eq!(mode(&layout.state_dir), 0o700);
        for (path, generated) in [
            (
                "usr/share/bash-completion/completions/xdp-lb",
                "completions bash",
            ),
            (
                "usr/share/zsh/vendor-completions/_xdp-lb",
                "completions zsh",
            ),
            (
                "usr/share/fish/vendor_completions.d/xdp-lb.fish",
                "completions fish",
            ),
        ] {
            let text = fs::read_to_string(root.join(path)).unwrap();
            assert_eq!(text, format!("xdp-lb {generated}\n"), "{path}");
            assert_eq!(mode(&root.join(path)), 0o644);
        }
        let man = root.join("usr/share/man/man8/xdp-lb.8.gz");
        assert_eq!(man, layout.man_page);
        let unpacked = std::process::Command::new("gzip")
            .args(["-dc"])
            .arg(&man)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&unpacked.stdout), "xdp-lb man\n");
        assert!(!root.join("usr/share/man/man8/xdp-lb.8").exists());

        // The operator edits the config and the script; a second install keeps both.
        fs::write(&layout.config, "# mine\n").unwrap();
        fs::write(&layout.notify_script, "#!/bin/sh\n# mine\n").unwrap();
        let again = install(&layout, &sources).unwrap();
        assert_eq!(fs::read_to_string(&layout.config).unwrap(), "# mine\n");
        assert_eq!(
            fs::read_to_string(&layout.notify_script).unwrap(),
            "#!/bin/sh\n# mine\n"
        );
        let shipped = with_suffix(&layout.notify_script, ".new");
        assert_eq!(
            fs::read(&shipped).unwrap(),
            fs::read(&sources.notify_script).unwrap()
        );
        assert!(
            again.iter().any(|l| l.contains("never overwritten")),
            "{again:?}"
        );

        let removed = uninstall(&layout, false).unwrap();
        for gone in [
            &layout.binary,
            &layout.unit,
            &layout.notify_script,
            &shipped,
            &layout.bash_completion,
            &layout.zsh_completion,
            &layout.fish_completion,
            &layout.man_page,
        ] {
            assert!(
                !gone.exists(),
                "{} is still there: {removed:?}",
                gone.display()
            );
        }
        assert_eq!(fs::read_to_string(&layout.config).unwrap(), "# mine\n");
        assert!(
            removed.iter().any(|l| l.contains("--purge removes it")),
            "{removed:?}"
        );

        uninstall(&layout, true).unwrap();
        assert!(!layout.config_dir.exists() && !layout.state_dir.exists());
        assert!(
            root.join("usr/local/sbin").is_dir(),
            "directories it did not make stay"
        );
    }

    #[test]
    fn another_prefix_moves_the_binary_and_the_unit_follows() {
        let scratch = Scratch::new("prefix");
        let root = scratch.0.join("root");
        let layout = Layout::new(&root, Path::new("/opt/xdp-lb")).unwrap();
        install(&layout, &sources(&scratch.0)).unwrap();
        assert!(root.join("opt/xdp-lb/sbin/xdp-lb").is_file());
        let unit = fs::read_to_string(&layout.unit).unwrap();
        assert!(
            unit.contains("ExecStart=/opt/xdp-lb/sbin/xdp-lb --config"),
            "{unit}"
        );
        assert!(
            unit.contains("ExecReload=/opt/xdp-lb/sbin/xdp-lb reload"),
            "{unit}"
        );
        assert!(!unit.contains(UNIT_BINARY), "{unit}");
        assert!(Layout::new(&root, Path::new("relative")).is_err());
    }

    #[test]
    fn without_a_built_binary_nothing_is_installed() {
        let scratch = Scratch::new("no-binary");
        let layout = Layout::new(&scratch.0.join("root"), Path::new("/usr/local")).unwrap();
        let mut sources = sources(&scratch.0);
        sources.binary = scratch.0.join("missing");
        let err = install(&layout, &sources).unwrap_err().to_string();
        assert!(err.contains("cargo build --release -p xdp-lb"), "{err}");
        assert!(!scratch.0.join("root").exists());
    }
}
