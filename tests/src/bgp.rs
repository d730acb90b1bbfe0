//! The BGP lab (`LabOptions::bgp_lbs`): two or three LBs, each running BIRD and its own
//! agent, announce the VIP to a router running BIRD, which spreads the client's
//! connections over them by ECMP (L4 hash).
//!
//! ```text
//!   <id>-cl 10.77.1.2 ── <id>-rt eth1 10.77.1.1 | eth0 10.77.0.3  BIRD AS 65000, merge paths,
//!                                                                   fib_multipath_hash_policy=1
//!   segment 10.77.0.0/24: rt, lb 10.77.0.1, lb2 10.77.0.5 (lb3 10.77.0.6), b1.. 10.77.0.11..
//!   each LB: BIRD AS 65001 learning kernel table 100 (the agent's VIP routes), exporting
//!   them to the router; the agent with `announce:`; no VIP on its interfaces
//! ```
//!
//! The BIRD configurations are those of `examples/bird-lb.conf` and
//! `examples/bird-router.conf` with the lab's addresses and short timers (hold 3 s).

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{Lab, LabProcess, exec::AgentSite};

/// The router's and the LBs' autonomous systems.
const ROUTER_AS: u32 = 65000;
const LB_AS: u32 = 65001;
/// The kernel table the agents keep their VIP routes in (`announce.table`'s default).
pub const ANNOUNCE_TABLE: u32 = 100;
/// BGP hold time in the lab (keepalives every second).
pub const HOLD_TIME_S: u32 = 3;
/// BFD's detect multiplier with `LabOptions::bgp_bfd_ms`: a session is down after this
/// many intervals without a packet.
pub const BFD_MULTIPLIER: u32 = 3;

/// BIRD's `protocol bfd` for the lab's segment with an interval of `ms`, and the line that
/// turns it on in a `protocol bgp`; both empty without BFD.
fn bfd_parts(bfd_ms: Option<u32>) -> (String, &'static str) {
    match bfd_ms {
        Some(ms) => (
            format!(
                "protocol bfd {{\n  \
                   interface \"eth0\" {{ interval {ms} ms; multiplier {BFD_MULTIPLIER}; }};\n\
                 }}\n"
            ),
            "  bfd on;\n",
        ),
        None => (String::new(), ""),
    }
}

impl Lab {
    /// The LB namespaces: `<id>-lb`, then `<id>-lb2`, `<id>-lb3` with `bgp_lbs`.
    pub fn lb_namespaces(&self) -> Vec<String> {
        std::iter::once(self.ns_lb.clone())
            .chain(self.ns_extra_lbs.iter().cloned())
            .collect()
    }

    /// LB `k`'s (0-based) namespace; a name that is no namespace of the lab when out of
    /// range.
    pub fn ns_lb_k(&self, k: usize) -> String {
        self.lb_namespaces()
            .get(k)
            .cloned()
            .unwrap_or_else(|| "no-such-lb".to_owned())
    }

    /// The router namespace (`<id>-rt`), with `client_behind_router` or `bgp_lbs`.
    pub fn ns_router(&self) -> Option<&str> {
        self.router.as_ref().map(|(ns, _)| ns.as_str())
    }

    /// The BIRD configuration of LB `k`: learn the agent's table, export it to the router.
    pub fn bird_lb_config(k: usize, bfd_ms: Option<u32>) -> String {
        let addr = Self::lb_addr(k);
        let (bfd, bfd_on) = bfd_parts(bfd_ms);
        format!(
            "# LB {k} of the BGP lab: examples/bird-lb.conf with the lab's addresses\n\
             router id {addr};\n\
             protocol device {{ }}\n\
             protocol kernel xdp_lb_vips {{\n  \
               learn;\n  \
               kernel table {ANNOUNCE_TABLE};\n  \
               scan time 1;\n  \
               ipv4 {{ import all; export none; }};\n\
             }}\n\
             protocol bgp upstream {{\n  \
               local {addr} as {LB_AS};\n  \
               neighbor {router} as {ROUTER_AS};\n  \
               hold time {HOLD_TIME_S};\n  \
               keepalive time 1;\n  \
               connect retry time 1;\n\
             {bfd_on}  \
               ipv4 {{ import none; export where proto = \"xdp_lb_vips\"; }};\n\
             }}\n\
             {bfd}",
            router = Self::ROUTER_ADDR,
        )
    }

    /// The router's BIRD configuration: a session to each of `lbs` LBs, their routes
    /// merged into one multipath kernel route.
    pub fn bird_router_config(lbs: usize, bfd_ms: Option<u32>) -> String {
        let (bfd, bfd_on) = bfd_parts(bfd_ms);
        let mut conf = format!(
            "# the BGP lab's router: examples/bird-router.conf with the lab's addresses\n\
             router id {router};\n\
             protocol device {{ }}\n\
             protocol kernel {{\n  \
               merge paths yes;\n  \
               scan time 1;\n  \
               ipv4 {{ import none; export where source = RTS_BGP; }};\n\
             }}\n",
            router = Self::ROUTER_ADDR,
        );
        for k in 0..lbs {
            let _ = write!(
                conf,
                "protocol bgp lb{n} {{\n  \
                   local {router} as {ROUTER_AS};\n  \
                   neighbor {lb} as {LB_AS};\n  \
                   hold time {HOLD_TIME_S};\n  \
                   keepalive time 1;\n  \
                   connect retry time 1;\n\
                 {bfd_on}  \
                   ipv4 {{ import all; export none; }};\n\
                 }}\n",
                n = k + 1,
                router = Self::ROUTER_ADDR,
                lb = Self::lb_addr(k),
            );
        }
        conf.push_str(&bfd);
        conf
    }

    fn bird_paths(&self, ns: &str) -> (PathBuf, PathBuf, PathBuf) {
        let stem = ns.rsplit('-').next().unwrap_or(ns);
        (
            self.dir_path.join(format!("bird-{stem}.conf")),
            self.dir_path.join(format!("bird-{stem}.ctl")),
            self.dir_path.join(format!("bird-{stem}.pid")),
        )
    }

    /// BIRD's control socket in namespace `ns` (for `birdc -s`).
    pub fn bird_socket(&self, ns: &str) -> PathBuf {
        self.bird_paths(ns).1
    }

    /// Writes each BIRD configuration and starts BIRD in the router and every LB.
    pub(crate) fn start_birds(&mut self, bfd_ms: Option<u32>) -> Result<()> {
        let router = self
            .ns_router()
            .context("a BGP lab has a router")?
            .to_owned();
        let lbs = self.lb_namespaces();
        let mut daemons = vec![(router.clone(), Self::bird_router_config(lbs.len(), bfd_ms))];
        daemons.extend(
            lbs.iter()
                .enumerate()
                .map(|(k, ns)| (ns.clone(), Self::bird_lb_config(k, bfd_ms))),
        );
        for (ns, conf) in daemons {
            let process = self.start_bird(&ns, &conf)?;
            self.birds.push((ns, process));
        }
        Ok(())
    }

    /// Starts BIRD in `ns` with `conf` (in the foreground, so the lab owns the process).
    pub fn start_bird(&self, ns: &str, conf: &str) -> Result<LabProcess> {
        let (conf_path, socket, pid) = self.bird_paths(ns);
        fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        let (c, s, p) = (
            conf_path.to_string_lossy().into_owned(),
            socket.to_string_lossy().into_owned(),
            pid.to_string_lossy().into_owned(),
        );
        let mut bird = self.spawn(ns, &["bird", "-f", "-c", &c, "-s", &s, "-P", &p])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Some(status) = bird.try_status()? {
                bail!(
                    "bird in {ns} exited ({}): {}",
                    crate::cmd::status_text(status),
                    bird.stderr()
                );
            }
            ensure!(Instant::now() < deadline, "bird in {ns} did not open {s}");
            thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    /// The BIRD process of namespace `ns` (to stop it, as an LB's death).
    pub fn bird(&mut self, ns: &str) -> Option<&mut LabProcess> {
        self.birds
            .iter_mut()
            .find(|(n, _)| n == ns)
            .map(|(_, process)| process)
    }

    /// `birdc -s SOCKET ARGS` for the BIRD of namespace `ns`; its output.
    pub fn birdc(&self, ns: &str, args: &[&str]) -> Result<String> {
        let socket = self.bird_socket(ns).to_string_lossy().into_owned();
        let mut argv = vec!["birdc", "-s", socket.as_str()];
        argv.extend_from_slice(args);
        self.exec_ok(ns, &argv)
    }

    /// The next hops the router's kernel has for the VIP now (empty: no route).
    pub fn router_nexthops(&self) -> Result<Vec<String>> {
        let router = self.ns_router().context("the lab has no router")?;
        let out = self.exec_ok(
            router,
            &["ip", "-4", "route", "show", &format!("{}/32", Self::VIP)],
        )?;
        let words: Vec<&str> = out.split_whitespace().collect();
        Ok(words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_owned())
            .collect())
    }

    /// Waits (at most `timeout`) until the router's next hops for the VIP are exactly the
    /// addresses of LBs `lbs` (0-based); returns how long that took.
    pub fn wait_router_nexthops(&self, lbs: &[usize], timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut want: Vec<String> = lbs.iter().map(|k| Self::lb_addr(*k)).collect();
        want.sort();
        loop {
            let mut now = self.router_nexthops()?;
            now.sort();
            if now == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "the router's next hops for {} are {now:?}, not {want:?}, after {:.1} s",
                    Self::VIP,
                    timeout.as_secs_f64()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where LB `k`'s agent keeps its files (LB 0's are [`Self::start_agent`]'s).
    pub(crate) fn agent_site(&self, k: usize) -> Result<AgentSite> {
        if k == 0 {
            return Ok(AgentSite {
                ns: self.ns_lb.clone(),
                log: self.agent_log_path(),
                socket: self.control_socket(),
                runtime: self.runtime_file_path(),
                pins: self.pin_dir()?,
                state: self.agent_state_path(),
            });
        }
        let stem = format!("lb{}", k + 1);
        Ok(AgentSite {
            ns: self.ns_lb_k(k),
            log: self.dir_path.join(format!("agent-{stem}.log")),
            socket: self.dir_path.join(format!("control-{stem}.sock")),
            runtime: self.dir_path.join(format!("runtime-changes-{stem}.json")),
            pins: self.pin_dir()?.with_file_name(format!("xdp-lb-{stem}")),
            state: self.dir_path.join(format!("agent-state-{stem}.json")),
        })
    }

    /// Starts an agent on LB `k` (0-based) with `config`, as [`Self::start_agent`] does.
    pub fn start_agent_on(
        &self,
        k: usize,
        agent_binary: &Path,
        config: &Path,
    ) -> Result<LabProcess> {
        let site = self.agent_site(k)?;
        self.start_agent_at(&site, agent_binary, config, &[])
    }

    /// What LB `k`'s agents have logged.
    pub fn agent_log_on(&self, k: usize) -> String {
        self.agent_site(k)
            .ok()
            .and_then(|site| fs::read(site.log).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// [`Self::lab_config`] with `announce:` (`restore_after: 1s`, `stop_grace: 2s`).
    pub fn announce_config(&self) -> String {
        self.lab_config().replacen(
            "services:\n",
            "announce:\n  restore_after: 1s\n  stop_grace: 2s\nservices:\n",
            1,
        )
    }

    /// Writes [`Self::announce_config`] to `xdp-lb-bgp.yaml` in the lab directory.
    pub fn write_announce_config(&self) -> Result<PathBuf> {
        let path = self.dir().join("xdp-lb-bgp.yaml");
        fs::write(&path, self.announce_config())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// LB `k`'s connection-table event counter `name` (`syn_not_remembered`: the new
    /// connections it placed) from `status --json`.
    pub fn flow_event_on(&self, k: usize, agent_binary: &Path, name: &str) -> Result<u64> {
        let out = self.agent_command_on(k, agent_binary, &["status", "--json"])?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "LB {}'s status is not JSON: {}",
                k + 1,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok(report["flow_events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .and_then(|e| e["packets"].as_u64())
            .unwrap_or(0))
    }

    /// `xdp-lb ARGS --socket <LB k's socket>`; its output whatever its exit status.
    pub fn agent_command_on(
        &self,
        k: usize,
        agent_binary: &Path,
        args: &[&str],
    ) -> Result<std::process::Output> {
        let site = self.agent_site(k)?;
        let binary = agent_binary.to_string_lossy().into_owned();
        let socket = site.socket.to_string_lossy().into_owned();
        let mut argv = vec![binary.as_str()];
        argv.extend_from_slice(args);
        argv.extend(["--socket", &socket]);
        crate::cmd::run(&argv, crate::cmd::EXEC_TIMEOUT)
    }
}
