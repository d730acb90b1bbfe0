//! What a test does with a running [`Lab`]: its names, commands inside its namespaces,
//! background processes, and the agent.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::{
    Lab, LabProcess,
    cmd::{self, EXEC_TIMEOUT},
};

/// Where one agent runs and keeps its files.
pub(crate) struct AgentSite {
    pub ns: String,
    pub log: PathBuf,
    pub socket: PathBuf,
    pub runtime: PathBuf,
    pub pins: PathBuf,
    pub state: PathBuf,
}

impl Lab {
    /// The lab's id, the prefix of all its namespace names (e.g. `xl12340`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lab's directory: nginx prefixes and logs, the agent's config and log.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// How many backends the lab has.
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// The switch namespace (`<id>-sw`, bridge `br0`; ports `cl`, `lb`, `b1`...).
    pub fn ns_switch(&self) -> &str {
        &self.ns_switch
    }

    /// The client namespace (`<id>-cl`).
    pub fn ns_client(&self) -> &str {
        &self.ns_client
    }

    /// The LB namespace (`<id>-lb`), where the agent runs.
    pub fn ns_lb(&self) -> &str {
        &self.ns_lb
    }

    /// Backend `i`'s (0-based) namespace (`<id>-b1`, ...). For an `i` out of range this is
    /// a name that is no namespace of the lab, so [`Self::exec`] and friends fail on it.
    pub fn ns_backend(&self, i: usize) -> &str {
        self.ns_backends
            .get(i)
            .map_or("no-such-backend", String::as_str)
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// The MAC address of `ifname` inside namespace `ns`, as the kernel reports it.
    pub fn mac(&self, ns: &str, ifname: &str) -> Result<String> {
        Ok(self
            .exec_ok(ns, &["cat", &format!("/sys/class/net/{ifname}/address")])?
            .trim()
            .to_owned())
    }

    fn check_ns(&self, ns: &str) -> Result<()> {
        ensure!(
            self.created.iter().any(|own| own == ns),
            "`{ns}` is not a namespace of lab {} (it has {:?})",
            self.id,
            self.created
        );
        Ok(())
    }

    /// Runs `args` inside namespace `ns` (`ip netns exec`), killed after 60 s. A non-zero
    /// exit is not an error here (see [`Self::exec_ok`]).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output> {
        self.exec_timeout(ns, args, EXEC_TIMEOUT)
    }

    /// [`Self::exec`] with a timeout of your own.
    pub fn exec_timeout(&self, ns: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        self.check_ns(ns)?;
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(args);
        cmd::run(&argv, timeout)
    }

    /// Runs `args` inside namespace `ns` and returns its stdout; fails, quoting its stderr,
    /// when it exits non-zero.
    pub fn exec_ok(&self, ns: &str, args: &[&str]) -> Result<String> {
        self.check_ns(ns)?;
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(args);
        cmd::check(&argv, cmd::run(&argv, EXEC_TIMEOUT)?)
    }

    /// Starts `args` in the background inside namespace `ns`; its stdout and stderr go to
    /// files in the lab directory. It is killed when the returned handle or the lab drops.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> Result<LabProcess> {
        self.check_ns(ns)?;
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let stem: String = args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("process")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let base = self.dir_path.join(format!("proc-{n}-{stem}"));
        let mut argv = vec!["ip", "netns", "exec", ns];
        argv.extend_from_slice(args);
        LabProcess::start(
            &argv,
            &[],
            &base.with_extension("stdout"),
            Some(&base.with_extension("stderr")),
            &self.registry,
        )
    }

    /// Where [`Self::start_agent`] writes the agent's output.
    pub fn agent_log_path(&self) -> PathBuf {
        self.dir_path.join("agent.log")
    }

    /// The agent's control socket in this lab (`xdp-lb --socket` for the subcommands).
    pub fn control_socket(&self) -> PathBuf {
        self.dir_path.join("control.sock")
    }

    /// Where the lab's agents keep their run-time changes (`--runtime-file`).
    pub fn runtime_file_path(&self) -> PathBuf {
        self.dir_path.join("runtime-changes.json")
    }

    /// Where the lab's agents keep the snapshot the next agent adopts (`--state-file`).
    pub fn agent_state_path(&self) -> PathBuf {
        self.dir_path.join("agent-state.json")
    }

    /// Where the lab's agents pin the data plane: a bpffs mounted in the lab directory, so
    /// pins outlive an agent (`ip netns exec` hides the host's /sys/fs/bpf) and vanish with
    /// the lab.
    pub fn pin_dir(&self) -> Result<PathBuf> {
        let mount = self.dir_path.join("bpf");
        if !mount.exists() {
            fs::create_dir_all(&mount).with_context(|| format!("creating {}", mount.display()))?;
        }
        let mounted = cmd::run(
            &["mountpoint", "-q", &mount.to_string_lossy()],
            EXEC_TIMEOUT,
        )?
        .status
        .success();
        if !mounted {
            cmd::run_ok(
                &["mount", "-t", "bpf", "bpf", &mount.to_string_lossy()],
                EXEC_TIMEOUT,
            )?;
        }
        Ok(mount.join("xdp-lb"))
    }

    /// Runs `xdp-lb ARGS --socket <this lab's socket>` (a control subcommand) on the host;
    /// its output whatever its exit status.
    pub fn agent_command(
        &self,
        agent_binary: &Path,
        args: &[&str],
    ) -> Result<std::process::Output> {
        let binary = agent_binary.to_string_lossy().into_owned();
        let socket = self.control_socket().to_string_lossy().into_owned();
        let mut argv = vec![binary.as_str()];
        argv.extend_from_slice(args);
        argv.extend(["--socket", &socket]);
        cmd::run(&argv, EXEC_TIMEOUT)
    }

    /// Starts `agent_binary --config CONFIG` in the LB namespace with RUST_LOG=info, its
    /// output appended to [`Self::agent_log_path`], and waits (30 s at most) for it to log
    /// [`Self::AGENT_READY_LINE`]. Fails with its log when it exits or times out first.
    pub fn start_agent(&self, agent_binary: &Path, config: &Path) -> Result<LabProcess> {
        self.start_agent_with_env(agent_binary, config, &[])
    }

    /// [`Self::start_agent`] with `env` added to the agent's environment.
    pub fn start_agent_with_env(
        &self,
        agent_binary: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> Result<LabProcess> {
        let site = self.agent_site(0)?;
        self.start_agent_at(&site, agent_binary, config, env)
    }

    /// Starts an agent where `site` says, as [`Self::start_agent`] does.
    pub(crate) fn start_agent_at(
        &self,
        site: &AgentSite,
        agent_binary: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> Result<LabProcess> {
        let binary = agent_binary
            .to_str()
            .ok_or_else(|| anyhow!("{} is not UTF-8", agent_binary.display()))?;
        let config = config
            .to_str()
            .ok_or_else(|| anyhow!("{} is not UTF-8", config.display()))?;
        ensure!(agent_binary.is_file(), "no agent binary at {binary}");
        let log_path = site.log.clone();
        let start = fs::metadata(&log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let (socket, runtime, pins, state) = (
            site.socket.to_string_lossy().into_owned(),
            site.runtime.to_string_lossy().into_owned(),
            site.pins.to_string_lossy().into_owned(),
            site.state.to_string_lossy().into_owned(),
        );
        let argv = [
            "ip",
            "netns",
            "exec",
            &site.ns,
            binary,
            "--config",
            config,
            "--socket",
            &socket,
            "--runtime-file",
            &runtime,
            "--pin-dir",
            &pins,
            "--state-file",
            &state,
        ];
        let mut environment = vec![("RUST_LOG", "info")];
        environment.extend_from_slice(env);
        let mut agent = LabProcess::start(&argv, &environment, &log_path, None, &self.registry)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = fs::read(&log_path).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(start..).unwrap_or_default());
            if new.contains(Self::AGENT_READY_LINE) {
                return Ok(agent);
            }
            if let Some(status) = agent.try_status()? {
                bail!(
                    "the agent `{}` exited ({}) before logging \"{}\"; its log: {}",
                    cmd::describe(&argv),
                    cmd::status_text(status),
                    Self::AGENT_READY_LINE,
                    cmd::quote_output(new.as_bytes())
                );
            }
            if Instant::now() >= deadline {
                let _ = agent.kill();
                bail!(
                    "the agent `{}` did not log \"{}\" within 30 s (killed); its log: {}",
                    cmd::describe(&argv),
                    Self::AGENT_READY_LINE,
                    cmd::quote_output(new.as_bytes())
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the agents started by this lab have logged (empty if none ran).
    pub fn agent_log(&self) -> String {
        fs::read(self.agent_log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The agent [`Lab::up`] started (with `lb_agent`), e.g. to stop or signal it.
    pub fn agent(&mut self) -> Option<&mut LabProcess> {
        self.agent.as_mut()
    }

    /// The xdp-lb agent binary: `$XDP_LB_BIN` if set, else `xdp-lb` in the cargo target
    /// directory the running executable was built into (`target/debug` for tests).
    pub fn locate_agent_binary() -> Result<PathBuf> {
        if let Some(path) = std::env::var_os("XDP_LB_BIN") {
            let path = PathBuf::from(path);
            ensure!(
                path.is_file(),
                "XDP_LB_BIN={} is not a file",
                path.display()
            );
            return Ok(path);
        }
        let exe = std::env::current_exe().context("finding the current executable")?;
        let mut dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent", exe.display()))?;
        if dir
            .file_name()
            .is_some_and(|name| name == "deps" || name == "examples")
        {
            dir = dir
                .parent()
                .ok_or_else(|| anyhow!("{} has no parent", dir.display()))?;
        }
        let path = dir.join("xdp-lb");
        ensure!(
            path.is_file(),
            "no agent binary at {}: build it (`cargo build -p xdp-lb`) or set XDP_LB_BIN",
            path.display()
        );
        Ok(path)
    }
}
