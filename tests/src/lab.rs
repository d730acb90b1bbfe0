//! [`Lab`]: building the topology and tearing it all down.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::Ebpf;
use tempfile::TempDir;

use crate::{
    LabProcess,
    cmd::{self, EXEC_TIMEOUT},
    netns,
    nginx::Nginx,
    process::Registry,
    stale,
};

/// The most backends a lab can have (addresses 10.77.0.11 ..= 10.77.0.30).
pub const MAX_BACKENDS: usize = 20;

/// Set this environment variable to keep a lab's directory (configs, logs) after teardown.
pub const KEEP_DIR_ENV: &str = "XDP_LB_KEEP_LAB_DIR";

/// What [`Lab::up`] builds.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// How many backends (1 ..= [`MAX_BACKENDS`]); default 3.
    pub backends: usize,
    /// Whether [`Lab::up`] also writes the lab config and starts the agent in the LB
    /// namespace (see [`Lab::agent`]); default false.
    pub lb_agent: bool,
    /// The agent binary used when `lb_agent` is set; `None` means
    /// [`Lab::locate_agent_binary`].
    pub agent_binary: Option<PathBuf>,
    /// Puts the client behind a router namespace: the client is
    /// [`Lab::ROUTED_CLIENT_ADDR`] on a link of its own, whose router end has this MTU (the
    /// client's end keeps 1500, so the client's MSS does not reveal it); the router is
    /// [`Lab::ROUTER_ADDR`] on the segment, where the client would be, and the LB and the
    /// backends route the client's subnet through it. `None` (the default): the client is
    /// on the segment.
    pub client_behind_router: Option<u32>,
    /// With 2 or 3: that many LBs on the segment, each running BIRD, behind a router
    /// running BIRD with ECMP (`bgp.rs`): the client is behind the router (as with
    /// `client_behind_router: Some(1500)`), the LBs do not hold the VIP, and the router
    /// reaches it through the routes the LBs' agents announce. 0 (the default): one LB
    /// holding the VIP, no BIRD.
    pub bgp_lbs: usize,
    /// With `bgp_lbs`: BFD between the router and each LB with this interval (ms; the
    /// multiplier is [`crate::bgp::BFD_MULTIPLIER`]), so a dead LB leaves the route after
    /// about three intervals instead of the BGP hold time. `None` (the default): no BFD.
    pub bgp_bfd_ms: Option<u32>,
    /// Gives every host an IPv6 address too (on fd77::/64, without duplicate address
    /// detection), the VIP [`Lab::VIP6`] on the LB's eth0 and every backend's lo, the
    /// router's client link fd77:1::/64, and the backends' nginx an HTTP listener on
    /// `[::]:8080`. Default false: IPv6 is off in every namespace.
    pub ipv6: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            backends: 3,
            lb_agent: false,
            agent_binary: None,
            client_behind_router: None,
            bgp_lbs: 0,
            bgp_bfd_ms: None,
            ipv6: false,
        }
    }
}

/// A complete lab: a switch namespace with a bridge, a client, the LB and LVS/DR backends
/// running nginx (see the crate docs for the topology). Dropping it tears everything down:
/// every process it started is killed, every process still inside one of its namespaces
/// too, and its namespaces are deleted. Several labs can run side by side.
pub struct Lab {
    pub(crate) id: String,
    pub(crate) backends: usize,
    pub(crate) dir: Option<TempDir>,
    pub(crate) dir_path: PathBuf,
    pub(crate) ns_switch: String,
    pub(crate) ns_client: String,
    pub(crate) ns_lb: String,
    /// With `bgp_lbs`: the second and third LBs' namespaces (`<id>-lb2`, `<id>-lb3`).
    pub(crate) ns_extra_lbs: Vec<String>,
    /// With `bgp_lbs`: the BIRD daemons, the router's first, then each LB's.
    pub(crate) birds: Vec<(String, LabProcess)>,
    pub(crate) ns_backends: Vec<String>,
    /// The router namespace and the MTU of its link toward the client, with
    /// `client_behind_router`.
    pub(crate) router: Option<(String, u32)>,
    /// Whether the hosts have IPv6 addresses (`LabOptions::ipv6`).
    pub(crate) ipv6: bool,
    /// Namespaces created so far, in creation order.
    pub(crate) created: Vec<String>,
    pub(crate) registry: Registry,
    pub(crate) nginx: Vec<Nginx>,
    /// `xdp_pass` on the switch side of each LB's veth.
    pub(crate) xdp_pass: Vec<Ebpf>,
    pub(crate) agent: Option<LabProcess>,
    pub(crate) spawned: AtomicUsize,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// The virtual IP the services listen on (on the LB's eth0, and on every backend's lo).
    pub const VIP: &str = "10.77.0.100";
    /// The client's address.
    pub const CLIENT_ADDR: &str = "10.77.0.2";
    /// The LB's own address.
    pub const LB_ADDR: &str = "10.77.0.1";
    /// The prefix length of the lab's segment, 10.77.0.0/24.
    pub const PREFIX_LEN: u8 = 24;
    /// With `client_behind_router`: the router's address on the segment.
    pub const ROUTER_ADDR: &str = "10.77.0.3";
    /// With `client_behind_router`: the client's subnet, the router's and the client's
    /// addresses on it.
    pub const ROUTED_CLIENT_NET: &str = "10.77.1.0/24";
    pub const ROUTER_CLIENT_SIDE_ADDR: &str = "10.77.1.1";
    pub const ROUTED_CLIENT_ADDR: &str = "10.77.1.2";
    /// With `ipv6`: the IPv6 VIP (on the LB's eth0 and every backend's lo), the client's,
    /// the LB's and the router's addresses on the segment (fd77::/64), and behind the
    /// router the client's subnet, the router's and the client's addresses on it.
    pub const VIP6: &str = "fd77::100";
    pub const CLIENT_ADDR6: &str = "fd77::2";
    pub const LB_ADDR6: &str = "fd77::1";
    pub const ROUTER_ADDR6: &str = "fd77::3";
    pub const ROUTED_CLIENT_NET6: &str = "fd77:1::/64";
    pub const ROUTER_CLIENT_SIDE_ADDR6: &str = "fd77:1::1";
    pub const ROUTED_CLIENT_ADDR6: &str = "fd77:1::2";
    /// The client's eth0 MAC.
    pub const CLIENT_MAC: &str = "02:77:00:00:00:02";
    /// The LB's eth0 MAC.
    pub const LB_MAC: &str = "02:77:00:00:00:01";
    /// The HLS (HTTP) service port on the VIP and on every backend.
    pub const HTTP_PORT: u16 = 8080;
    /// The RTMP service port on the VIP and on every backend.
    pub const RTMP_PORT: u16 = 1935;
    /// The port of the LB host's own HTTP service on [`Lab::LB_ADDR`] (answers `lb\n`).
    pub const LB_SERVICE_PORT: u16 = 8000;
    /// The port of the agent's management listener (metrics, web console) on
    /// [`Lab::LB_ADDR`], with [`Lab::write_lab_config_with_console`].
    pub const CONSOLE_PORT: u16 = 9742;
    /// The line the agent logs once it is attached and its maps are filled.
    pub const AGENT_READY_LINE: &str = "xdp-lb is running";

    /// Backend `i`'s (0-based) address: 10.77.0.11, .12, ...
    pub fn backend_addr(i: usize) -> String {
        format!("10.77.0.{}", 11 + i)
    }

    /// With `ipv6`: backend `i`'s (0-based) IPv6 address: fd77::11, fd77::12, ...
    pub fn backend_addr6(i: usize) -> String {
        format!("fd77::{}", 11 + i)
    }

    /// Backend `i`'s (0-based) name: "b1", "b2", ... (what its nginx answers at `/`).
    pub fn backend_name(i: usize) -> String {
        format!("b{}", i + 1)
    }

    /// LB `k`'s (0-based) address: 10.77.0.1 ([`Self::LB_ADDR`]), then 10.77.0.5, .6 (the
    /// BGP lab's further LBs).
    pub fn lb_addr(k: usize) -> String {
        match k {
            0 => Self::LB_ADDR.to_owned(),
            k => format!("10.77.0.{}", 4 + k),
        }
    }

    /// With `ipv6`: LB `k`'s (0-based) IPv6 address: fd77::1, then fd77::5, fd77::6.
    pub fn lb_addr6(k: usize) -> String {
        match k {
            0 => Self::LB_ADDR6.to_owned(),
            k => format!("fd77::{}", 4 + k),
        }
    }

    /// LB `k`'s (0-based) eth0 MAC.
    pub fn lb_mac(k: usize) -> String {
        match k {
            0 => Self::LB_MAC.to_owned(),
            k => format!("02:77:00:00:00:{:02x}", 4 + k),
        }
    }

    /// Backend `i`'s (0-based) eth0 MAC.
    pub fn backend_mac(i: usize) -> String {
        format!("02:77:00:00:00:{:02x}", 11 + i)
    }

    /// Builds a lab. Needs root. On any failure whatever was built is torn down again.
    pub fn up(opts: LabOptions) -> Result<Lab> {
        ensure!(
            crate::is_root(),
            "the lab needs root (network namespaces, XDP)"
        );
        ensure!(
            (1..=MAX_BACKENDS).contains(&opts.backends),
            "a lab has 1 to {MAX_BACKENDS} backends, not {}",
            opts.backends
        );
        match stale::reap_stale_labs() {
            Ok(reaped) if !reaped.is_empty() => {
                eprintln!("xdp-lb lab: tore down labs left behind by dead processes: {reaped:?}");
            }
            Ok(_) => {}
            Err(err) => eprintln!("xdp-lb lab: tearing down labs left behind: {err:#}"),
        }
        ensure!(
            opts.bgp_lbs == 0 || (2..=3).contains(&opts.bgp_lbs),
            "a BGP lab has 2 or 3 LBs, not {}",
            opts.bgp_lbs
        );
        let router_mtu = match opts.bgp_lbs {
            0 => opts.client_behind_router,
            _ => Some(opts.client_behind_router.unwrap_or(1500)),
        };
        let mut lab = Self::allocate(opts.backends, router_mtu, opts.bgp_lbs)?;
        lab.ipv6 = opts.ipv6;
        lab.build()
            .with_context(|| format!("building lab {}", lab.id))?;
        if opts.bgp_lbs > 0 {
            lab.start_birds(opts.bgp_bfd_ms)
                .with_context(|| format!("starting BIRD in lab {}", lab.id))?;
        }
        if opts.lb_agent {
            let binary = match opts.agent_binary {
                Some(path) => path,
                None => Self::locate_agent_binary()?,
            };
            let config = lab.write_lab_config()?;
            lab.agent = Some(lab.start_agent(&binary, &config)?);
        }
        Ok(lab)
    }

    /// Picks a free lab id, creates the switch namespace (claiming the id) and the lab's
    /// directory.
    fn allocate(backends: usize, router_mtu: Option<u32>, bgp_lbs: usize) -> Result<Lab> {
        for _ in 0..1000 {
            let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
            let id = format!("xl{:04}{n}", std::process::id() % 10000);
            let ns = |suffix: &str| format!("{id}-{suffix}");
            let ns_backends: Vec<String> =
                (0..backends).map(|i| ns(&Self::backend_name(i))).collect();
            let all = [ns("sw"), ns("cl"), ns("lb"), ns("rt")];
            let ns_extra_lbs: Vec<String> = (2..=bgp_lbs).map(|k| ns(&format!("lb{k}"))).collect();
            if !stale::claim(&id)? {
                continue;
            }
            if all
                .iter()
                .chain(&ns_backends)
                .chain(&ns_extra_lbs)
                .any(|name| netns::exists(name))
            {
                // Namespaces nobody has a record for: not ours to touch.
                stale::release(&id)?;
                continue;
            }
            if let Err(err) = netns::add(&all[0]) {
                stale::release(&id)?;
                return Err(err);
            }
            let mut lab = Lab {
                id: id.clone(),
                backends,
                dir: None,
                dir_path: PathBuf::new(),
                ns_switch: all[0].clone(),
                ns_client: all[1].clone(),
                ns_lb: all[2].clone(),
                ns_extra_lbs,
                birds: Vec::new(),
                ns_backends,
                router: router_mtu.map(|mtu| (all[3].clone(), mtu)),
                ipv6: false,
                created: vec![all[0].clone()],
                registry: Registry::default(),
                nginx: Vec::new(),
                xdp_pass: Vec::new(),
                agent: None,
                spawned: AtomicUsize::new(0),
            };
            let dir = tempfile::Builder::new()
                .prefix(&format!("xdp-lb-lab-{id}-"))
                .tempdir()
                .context("creating the lab's temporary directory")?;
            lab.dir_path = dir.path().to_owned();
            lab.dir = Some(dir);
            return Ok(lab);
        }
        bail!("found no free lab id in 1000 tries (stale `xl*` namespaces? see `ip netns list`)")
    }

    fn build(&mut self) -> Result<()> {
        // On the segment: the client (or, behind it, the router), the LB, the backends.
        let first = match &self.router {
            Some((router, _)) => router,
            None => &self.ns_client,
        };
        let lbs = self.lb_namespaces();
        let hosts: Vec<(String, String)> = std::iter::once(first)
            .chain(&lbs)
            .chain(&self.ns_backends)
            .map(|ns| (ns.clone(), ns.rsplit('-').next().unwrap_or(ns).to_owned()))
            .collect();
        for (ns, _) in &hosts {
            netns::add(ns)?;
            self.created.push(ns.clone());
        }
        if self.router.is_some() {
            netns::add(&self.ns_client)?;
            self.created.push(self.ns_client.clone());
        }
        for ns in self.created.clone() {
            self.ip(&ns, &["link", "set", "lo", "up"])?;
            let settings: &[&str] = if self.ipv6 {
                // Addresses usable at once (no DAD), and no router advertisements taken.
                &[
                    "net.ipv6.conf.all.disable_ipv6=0",
                    "net.ipv6.conf.default.disable_ipv6=0",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.accept_ra=0",
                    "net.ipv6.conf.default.accept_ra=0",
                ]
            } else {
                &[
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]
            };
            for setting in settings {
                self.exec_ok(&ns, &["sysctl", "-q", "-w", setting])?;
            }
        }
        let sw = self.ns_switch.clone();
        self.ip(
            &sw,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        self.ip(&sw, &["link", "set", "br0", "up"])?;
        for (i, (ns, port)) in hosts.iter().enumerate() {
            let (addr, mac, addr6) = match i {
                0 if self.router.is_some() => (
                    Self::ROUTER_ADDR.to_owned(),
                    Self::CLIENT_MAC.to_owned(),
                    Self::ROUTER_ADDR6.to_owned(),
                ),
                0 => (
                    Self::CLIENT_ADDR.to_owned(),
                    Self::CLIENT_MAC.to_owned(),
                    Self::CLIENT_ADDR6.to_owned(),
                ),
                i if i <= lbs.len() => (
                    Self::lb_addr(i - 1),
                    Self::lb_mac(i - 1),
                    Self::lb_addr6(i - 1),
                ),
                _ => (
                    Self::backend_addr(i - 1 - lbs.len()),
                    Self::backend_mac(i - 1 - lbs.len()),
                    Self::backend_addr6(i - 1 - lbs.len()),
                ),
            };
            self.ip(
                &sw,
                &[
                    "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            self.ip(&sw, &["link", "set", port, "master", "br0", "up"])?;
            self.ip(ns, &["link", "set", "eth0", "address", &mac, "up"])?;
            self.ip(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{addr}/{}", Self::PREFIX_LEN),
                    "dev",
                    "eth0",
                ],
            )?;
            if self.ipv6 {
                self.ip(
                    ns,
                    &[
                        "addr",
                        "add",
                        &format!("{addr6}/64"),
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                )?;
            }
        }
        let lb = self.ns_lb.clone();
        // Behind BGP the router reaches the VIP through the LBs' announcements.
        if self.ns_extra_lbs.is_empty() {
            self.ip(
                &lb,
                &["addr", "add", &format!("{}/32", Self::VIP), "dev", "eth0"],
            )?;
            if self.ipv6 {
                self.ip(
                    &lb,
                    &[
                        "addr",
                        "add",
                        &format!("{}/128", Self::VIP6),
                        "dev",
                        "eth0",
                        "nodad",
                    ],
                )?;
            }
        }
        for ns in self.ns_backends.clone() {
            self.ip(
                &ns,
                &["addr", "add", &format!("{}/32", Self::VIP), "dev", "lo"],
            )?;
            if self.ipv6 {
                // A VIP on lo is never answered for on eth0 by IPv6 neighbour discovery
                // (the kernel answers only for the receiving interface's addresses), so
                // IPv6 needs no counterpart of arp_ignore.
                self.ip(
                    &ns,
                    &["addr", "add", &format!("{}/128", Self::VIP6), "dev", "lo"],
                )?;
            }
            for setting in [
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.eth0.arp_ignore=1",
                "net.ipv4.conf.eth0.arp_announce=2",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.eth0.rp_filter=0",
                "net.ipv4.conf.lo.rp_filter=0",
            ] {
                self.exec_ok(&ns, &["sysctl", "-q", "-w", setting])?;
            }
        }
        if let Some((router, mtu)) = self.router.clone() {
            self.build_router(&router, mtu)?;
        }
        // veth leaves TCP checksums to be completed later; a frame that went through XDP
        // loses that, so every host that sends through the LB's path computes them itself.
        for ns in std::iter::once(&self.ns_client)
            .chain(&lbs)
            .chain(&self.ns_backends)
            .chain(self.router.as_ref().map(|(router, _)| router))
        {
            self.exec_ok(ns, &["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        // A frame XDP_TX-ed out of the LB's eth0 reaches the switch only when the switch's
        // end of that veth runs an XDP program itself.
        for ns in &lbs {
            let port = ns.rsplit('-').next().unwrap_or(ns);
            self.xdp_pass.push(netns::attach_xdp_pass(&sw, port)?);
        }
        for i in 0..self.backends {
            let name = Self::backend_name(i);
            let prefix = self.dir_path.join(format!("nginx-{name}"));
            self.nginx.push(Nginx::backend(
                &name,
                &self.ns_backends[i],
                &prefix,
                self.ipv6,
            )?);
            self.nginx.last_mut().map(Nginx::start).transpose()?;
        }
        let prefix = self.dir_path.join("nginx-lb");
        self.nginx.push(Nginx::lb_service(
            &lb,
            &prefix,
            Self::LB_ADDR,
            Self::LB_SERVICE_PORT,
        )?);
        self.nginx.last_mut().map(Nginx::start).transpose()?;
        Ok(())
    }

    /// The router of `client_behind_router`: its link to the client (the router's end with
    /// MTU `mtu`, the client's with 1500), forwarding on, and the routes both ways.
    fn build_router(&self, router: &str, mtu: u32) -> Result<()> {
        let client = self.ns_client.clone();
        self.ip(
            router,
            &[
                "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &client,
            ],
        )?;
        self.ip(
            router,
            &["link", "set", "eth1", "mtu", &mtu.to_string(), "up"],
        )?;
        self.ip(
            router,
            &[
                "addr",
                "add",
                &format!("{}/24", Self::ROUTER_CLIENT_SIDE_ADDR),
                "dev",
                "eth1",
            ],
        )?;
        self.ip(&client, &["link", "set", "lo", "up"])?;
        self.ip(&client, &["link", "set", "eth0", "up"])?;
        self.ip(
            &client,
            &[
                "addr",
                "add",
                &format!("{}/24", Self::ROUTED_CLIENT_ADDR),
                "dev",
                "eth0",
            ],
        )?;
        self.ip(
            &client,
            &[
                "route",
                "add",
                "default",
                "via",
                Self::ROUTER_CLIENT_SIDE_ADDR,
            ],
        )?;
        if self.ipv6 {
            self.ip(
                router,
                &[
                    "addr",
                    "add",
                    &format!("{}/64", Self::ROUTER_CLIENT_SIDE_ADDR6),
                    "dev",
                    "eth1",
                    "nodad",
                ],
            )?;
            self.ip(
                &client,
                &[
                    "addr",
                    "add",
                    &format!("{}/64", Self::ROUTED_CLIENT_ADDR6),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            )?;
            self.ip(
                &client,
                &[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    Self::ROUTER_CLIENT_SIDE_ADDR6,
                ],
            )?;
            self.exec_ok(
                router,
                &["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"],
            )?;
            for ns in std::iter::once(&self.ns_lb).chain(&self.ns_backends) {
                self.ip(
                    ns,
                    &[
                        "-6",
                        "route",
                        "add",
                        Self::ROUTED_CLIENT_NET6,
                        "via",
                        Self::ROUTER_ADDR6,
                        "dev",
                        "eth0",
                    ],
                )?;
            }
        }
        self.exec_ok(router, &["ethtool", "-K", "eth1", "tx", "off"])?;
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            self.exec_ok(router, &["sysctl", "-q", "-w", setting])?;
        }
        if !self.ns_extra_lbs.is_empty() {
            // ECMP by the L4 hash: each connection of one client takes its own path.
            self.exec_ok(
                router,
                &["sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1"],
            )?;
        }
        for ns in self.lb_namespaces().iter().chain(&self.ns_backends) {
            self.ip(
                ns,
                &[
                    "route",
                    "add",
                    Self::ROUTED_CLIENT_NET,
                    "via",
                    Self::ROUTER_ADDR,
                    "dev",
                    "eth0",
                ],
            )?;
        }
        Ok(())
    }

    /// `ip -n NS ARGS...`, which must succeed.
    fn ip(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut argv = vec!["ip", "-n", ns];
        argv.extend_from_slice(args);
        cmd::run_ok(&argv, EXEC_TIMEOUT)
    }

    /// Tears everything down; errors are reported on stderr, never raised.
    fn teardown(&mut self) {
        let id = self.id.clone();
        let report = |what: &str, err: anyhow::Error| {
            eprintln!("xdp-lb lab {id}: teardown: {what}: {err:#}")
        };
        if let Some(mut agent) = self.agent.take()
            && let Err(err) = agent.kill()
        {
            report("stopping the agent", err);
        }
        if self.registry.signal_all(libc::SIGTERM) > 0 {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !self.registry.all_exited() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            self.registry.signal_all(libc::SIGKILL);
        }
        for nginx in &mut self.nginx {
            nginx.stop();
        }
        for ebpf in std::mem::take(&mut self.xdp_pass) {
            if let Err(err) = netns::drop_inside(&self.ns_switch, ebpf) {
                report("detaching xdp_pass", err);
            }
        }
        let mut all_deleted = true;
        for ns in self.created.iter().rev() {
            if let Err(err) = netns::kill_all_inside(ns) {
                report(&format!("emptying namespace {ns}"), err);
            }
            if let Err(err) = netns::delete(ns) {
                all_deleted = false;
                report(&format!("deleting namespace {ns}"), err);
            }
        }
        self.created.clear();
        // With a namespace left, the record stays: the next lab reaps what is left.
        if all_deleted && let Err(err) = stale::release(&self.id) {
            report("removing the lab's owner record", err);
        }
        // The lab's bpffs (agents' pins): unmounting it frees whatever is still pinned.
        let bpf = self.dir_path.join("bpf");
        if bpf.exists() {
            let _ = cmd::run(&["umount", "-l", &bpf.to_string_lossy()], EXEC_TIMEOUT);
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var_os(KEEP_DIR_ENV).is_some() {
                eprintln!(
                    "xdp-lb lab {}: kept its directory {}",
                    self.id,
                    dir.keep().display()
                );
            } else if let Err(err) = dir.close() {
                report("removing the lab directory", err.into());
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("backends", &self.backends)
            .field("dir", &self.dir_path)
            .finish_non_exhaustive()
    }
}
