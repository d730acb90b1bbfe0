//! The agent's control loop: load, fill the maps from the config, attach, check the
//! servers' health and apply the verdicts (`agent/failover.rs`), keep backend MACs current
//! (`agent/resolve.rs`), audit the data plane against the agent's intent (`crate::audit`),
//! reload on SIGHUP (`agent/apply.rs`), detach on SIGINT/SIGTERM.
//!
//! [`run`] reads as the steps a config takes from the file to the maps, one function each:
//! the run-time changes applied over the file (`settle_file`), every listener bound
//! (`Listeners::bind`), the data plane loaded or adopted (`load_dataplane`), the interfaces
//! read (`open_interfaces`, `check_tags_visible`), the backends resolved
//! (`resolve::resolve_all`), the balancer filled (`fill`) and attached (`attach`); then the
//! running state (`Agent`) starts its checks and announcements (`Agent::start`), serves
//! until a signal (`Agent::serve`) and stops (`Agent::stop`).

mod apply;
mod control;
mod failover;
mod info;
mod resolve;
mod systemd;

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
    time::Interval,
};

use crate::{
    announce::{self, Announcer},
    audit::{AUDIT_INTERVAL, Auditor},
    balancer::{Balancer, Forwarding, adopt::Snapshot},
    config::{self, Backend, ConfigFile, LiveHost, XdpAttachMode},
    control::{census::FlowCensus, protocol::AgentInfo, server::Pending},
    dataplane::{Dataplane, LoadOptions},
    http1::Endpoint,
    neighbour::{Egress, Neighbours},
    pins::PinDir,
    runtime::RuntimeChanges,
    sync::FlowSync,
};

pub use resolve::{CHANGE_RESOLVE_TIMEOUT, REFRESH_INTERVAL, RESOLVE_TIMEOUT};

/// How often, with `announce:`, the agent checks that its program is still attached (a
/// detached data plane withdraws the VIPs).
pub const ATTACH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the config's `xdp_mode`.
    pub xdp_mode: Option<XdpAttachMode>,
    /// The control socket to serve (`None`: no control socket).
    pub socket: Option<PathBuf>,
    /// Where run-time changes are kept (`None`: only in memory, lost at exit).
    pub runtime_file: Option<PathBuf>,
    /// Where the data plane is pinned so it outlives the agent (`None`: not pinned).
    pub pin_dir: Option<PathBuf>,
    /// Where the agent keeps its bookkeeping (ids, epochs, table regions) for the next agent
    /// that adopts the pinned data plane.
    pub state_file: Option<PathBuf>,
}

/// A start refused before anything was loaded or attached, because what the file asks for
/// conflicts with what the host has (a listener's port already taken, another agent on the
/// control socket): the operator's to fix, so the agent exits 2, like a bad file.
#[derive(Debug, thiserror::Error)]
#[error("{0}; nothing was attached or changed")]
pub struct Conflict(pub String);

/// Runs the agent until SIGINT or SIGTERM; SIGHUP reloads the config file.
pub async fn run(file: ConfigFile, opts: RunOptions) -> anyhow::Result<()> {
    let snapshot = load_snapshot(&opts);
    let (file, runtime) = settle_file(file, &opts, snapshot.as_ref())?;
    let mut listeners = Listeners::bind(&file, &opts)?;
    let mut dataplane = load_dataplane(&file, &opts)?;
    let _ebpf_log = spawn_ebpf_logger(&mut dataplane);
    let neighbours = Neighbours::new().context("opening netlink")?;
    let interfaces = open_interfaces(&neighbours, &file).await?;
    check_tags_visible(&file)?;
    systemd::status("resolving the backends' MACs");
    let resolved = resolve::resolve_all(&neighbours, &file, &interfaces, &mut dataplane).await;
    let adopted = dataplane.adopted();
    let mut balancer = fill(dataplane, &file, &resolved, snapshot)?;
    save_snapshot(&balancer, opts.state_file.as_deref());
    attach(&mut balancer, &file, &interfaces, &opts)?;
    let parts = Loaded {
        file,
        runtime,
        neighbours,
        interfaces,
        balancer,
        adopted,
        sync_socket: listeners.sync.take(),
    };
    let (mut agent, wakeups) = Agent::start(parts, opts.state_file).await?;
    let leave_running = agent.serve(wakeups, &mut listeners.requests).await;
    agent.stop(leave_running).await;
    Ok(())
}

/// The earlier agent's bookkeeping, when it left one (`None` when it cannot be read: live
/// flows are then kept from the pinned maps alone).
fn load_snapshot(opts: &RunOptions) -> Option<Snapshot> {
    match opts.state_file.as_deref().map(Snapshot::load) {
        Some(Ok(snapshot)) => snapshot,
        Some(Err(err)) => {
            log::warn!("{err:#}: live flows are kept from the pinned maps alone");
            None
        }
        None => None,
    }
}

/// The effective config: the run-time changes (following services renamed while no agent
/// ran) applied over `file`, and the changes themselves.
fn settle_file(
    file: ConfigFile,
    opts: &RunOptions,
    snapshot: Option<&Snapshot>,
) -> anyhow::Result<(ConfigFile, RuntimeChanges)> {
    let mut runtime = match &opts.runtime_file {
        Some(path) => RuntimeChanges::load(path)?,
        None => RuntimeChanges::unsaved(),
    };
    // Run-time changes follow a service renamed on its listener while no agent ran.
    let renames = snapshot
        .map(|s| s.renames(&file.config))
        .unwrap_or_default();
    for (from, to) in &renames {
        log::info!("service {from} is now named {to}: its run-time changes follow it");
        runtime.rename_service(from, to);
    }
    let (effective, dropped) = runtime.apply_file(&file, &LiveHost)?;
    if !(dropped.is_empty() && renames.is_empty())
        && let Err(err) = runtime.save()
    {
        log::warn!("saving {}: {err:#}", runtime.path().display());
    }
    for why in dropped {
        log::warn!("run-time change dropped: {why}");
    }
    if !runtime.changes().is_empty() {
        log::info!(
            "{} run-time change(s) from {} applied over the YAML",
            runtime.changes().len(),
            runtime.path().display()
        );
    }
    Ok((effective, runtime))
}

/// The listeners bound at start (metrics, registration, the control socket) and the
/// requests they pass to the loop. Fields drop in this order: the socket file goes first,
/// the requests' receiver last.
struct Listeners {
    _control_socket: Option<crate::control::server::ControlSocket>,
    _registration: Option<Endpoint>,
    _metrics: Option<Endpoint>,
    /// The flow-sync socket (`sync:`), handed to the running agent.
    sync: Option<std::net::UdpSocket>,
    requests: mpsc::Receiver<Pending>,
}

impl Listeners {
    /// Binds every listener before anything is loaded or attached: a port already taken
    /// (or a second agent on the control socket) stops the start with nothing changed, and
    /// exits 2 so that `Restart=on-failure` does not loop on it (RestartPreventExitStatus).
    /// Requests that arrive before the loop runs wait for it.
    fn bind(file: &ConfigFile, opts: &RunOptions) -> anyhow::Result<Self> {
        let (control_tx, requests) = mpsc::channel(16);
        let conflict = |e: anyhow::Error| anyhow::Error::new(Conflict(format!("{e:#}")));
        let metrics =
            crate::metrics::start(file.ops.metrics.as_ref(), &control_tx).map_err(conflict)?;
        let registration = crate::register::start(file.ops.registration.as_ref(), &control_tx)
            .map_err(conflict)?;
        let control_socket = match &opts.socket {
            Some(path) => Some(crate::control::server::serve(path, control_tx).map_err(conflict)?),
            None => None,
        };
        let sync = match &file.sync {
            Some(settings) => Some(crate::sync::bind(settings).map_err(conflict)?),
            None => None,
        };
        Ok(Self {
            sync,
            _control_socket: control_socket,
            _registration: registration,
            _metrics: metrics,
            requests,
        })
    }
}

/// Loads the data plane, or adopts the one pinned under `opts.pin_dir` (live flows keep
/// their backends).
fn load_dataplane(file: &ConfigFile, opts: &RunOptions) -> anyhow::Result<Dataplane> {
    let config = &file.config;
    let load_options = LoadOptions {
        flow_hash_seed: config.flow_hash_seed,
        maglev_table_slots: config.maglev_table_slots,
        flow_table: config.flow_table,
        log_level: ebpf_log_level(),
    };
    systemd::status("loading the data plane");
    let dataplane = Dataplane::load_pinned(&load_options, opts.pin_dir.clone().map(PinDir::new))?;
    if dataplane.adopted() {
        log::info!(
            "adopted the data plane pinned under {}: live flows keep their backends",
            opts.pin_dir
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
    }
    Ok(dataplane)
}

/// The interfaces the program attaches to, as the kernel has them now.
async fn open_interfaces(
    neighbours: &Neighbours,
    file: &ConfigFile,
) -> anyhow::Result<Vec<Egress>> {
    let mut interfaces = Vec::new();
    for name in &file.config.interfaces {
        interfaces.push(
            neighbours
                .interface(name)
                .await
                .with_context(|| format!("interface {name}"))?,
        );
    }
    Ok(interfaces)
}

/// Before anything is written: a NIC that strips VLAN tags would never match a VLAN-bound
/// service.
fn check_tags_visible(file: &ConfigFile) -> anyhow::Result<()> {
    let config = &file.config;
    if config.services.iter().any(|s| s.vlan.is_some()) {
        for name in &config.interfaces {
            crate::dataplane::rx_vlan::check_tags_visible(name)?;
        }
    }
    Ok(())
}

/// The balancer over `dataplane`: the pinned maps adopted (with the earlier agent's
/// `snapshot`), then every service filled in, in name order, with its backends resolved
/// as `resolved` says.
fn fill(
    dataplane: Dataplane,
    file: &ConfigFile,
    resolved: &BTreeMap<IpAddr, Option<Forwarding>>,
    mut snapshot: Option<Snapshot>,
) -> anyhow::Result<Balancer> {
    let config = &file.config;
    let adopted = dataplane.adopted();
    let mut balancer = Balancer::new(dataplane, config.flow_hash_seed);
    if adopted {
        // The pinned maps say which backend each live id is; the snapshot only adds spare
        // table regions and pools.
        if snapshot.is_none() {
            log::warn!(
                "no snapshot of the earlier agent: live flows are kept from the pinned maps; named pools get new tables"
            );
        }
        systemd::status("adopting the pinned data plane: live flows keep their backends");
        balancer.adopt(snapshot.take());
    }
    let mut services: Vec<_> = config.services.iter().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    for service in services {
        let service_failover = failover::service_failover(file, &service.name);
        balancer
            .add_service_with_failover(service, &service_failover, &|b: &Backend| {
                resolved.get(&b.address).copied().flatten()
            })
            .with_context(|| format!("service {}", service.name))?;
    }
    balancer.finish_adoption();
    Ok(balancer)
}

/// Attaches the program to every interface, once frames to other MACs are known not to be
/// balanced, and logs what now runs.
fn attach(
    balancer: &mut Balancer,
    file: &ConfigFile,
    interfaces: &[Egress],
    opts: &RunOptions,
) -> anyhow::Result<()> {
    let config = &file.config;
    let mode = opts.xdp_mode.unwrap_or(config.xdp_mode);
    // Before the program is attached: frames to other MACs are not balanced from the start.
    balancer.set_local_interfaces(interfaces.iter().map(resolve::local_interface));
    resolve::sync_local_macs(balancer);
    for name in &config.interfaces {
        balancer.dataplane_mut().attach(name, mode)?;
    }
    // The program runs on the new connection table everywhere now: the earlier one's last
    // flows follow, and the new table takes the old one's pin.
    balancer
        .dataplane_mut()
        .settle_flow_migration()
        .context("moving the pinned connection table's live flows")?;
    // The flow filter goes on once the earlier program's last entries are in the table.
    let dataplane = balancer.dataplane();
    crate::dataplane::flow_filter::keep_renewed(
        dataplane.flow_filter(),
        dataplane.flows_handle()?,
    )?;
    log::info!(
        "xdp-lb is running: {} service(s) on {} ({:?} XDP); SIGINT or SIGTERM detaches",
        config.services.len(),
        config.interfaces.join(", "),
        mode
    );
    for service in balancer.services() {
        log::info!(
            "service {} {}:{}/{}: {} of {} backend(s) in its Maglev table of {} slots",
            service.config.name,
            service.config.vip,
            service.config.port,
            service.config.protocol,
            service.active_backends(),
            service.backends.len(),
            service.config.maglev_size
        );
    }
    Ok(())
}

/// What the start has made by the time the program is attached.
struct Loaded {
    file: ConfigFile,
    runtime: RuntimeChanges,
    neighbours: Neighbours,
    interfaces: Vec<Egress>,
    balancer: Balancer,
    /// Whether the data plane was adopted from an earlier agent.
    adopted: bool,
    /// The flow-sync socket, bound at start (`sync:`).
    sync_socket: Option<std::net::UdpSocket>,
}

/// The agent's running state: the effective config and everything the loop reads and
/// changes. Fields drop in this order (the reverse of the order the start made them in).
struct Agent {
    watchdog: systemd::Watchdog,
    census: FlowCensus,
    sync: FlowSync,
    info: AgentInfo,
    auditor: Auditor,
    announcer: Announcer,
    health: failover::Health,
    balancer: Balancer,
    interfaces: Vec<Egress>,
    neighbours: Neighbours,
    runtime: RuntimeChanges,
    file: ConfigFile,
    /// Where the bookkeeping for the next agent is saved.
    state_file: Option<PathBuf>,
}

/// What wakes the loop besides requests and verdicts: signals and timers, and the
/// re-resolution rounds it starts.
struct Wakeups {
    attach_check: Interval,
    sigquit: Signal,
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    refresh: Interval,
    refreshed_tx: mpsc::Sender<resolve::Refreshed>,
    refreshed_rx: mpsc::Receiver<resolve::Refreshed>,
    refreshing: Option<tokio::task::JoinHandle<()>>,
    audit: Interval,
    service_cache: Interval,
}

impl Wakeups {
    async fn new() -> anyhow::Result<Self> {
        let mut attach_check = tokio::time::interval(ATTACH_CHECK_INTERVAL);
        attach_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sigquit = signal(SignalKind::quit()).context("installing the SIGQUIT handler")?;
        let sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
        refresh.tick().await;
        let (refreshed_tx, refreshed_rx) = mpsc::channel(1);
        let mut audit = tokio::time::interval(AUDIT_INTERVAL);
        audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut service_cache = tokio::time::interval(crate::dataplane::SERVICE_CACHE_REFRESH);
        service_cache.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            attach_check,
            sigquit,
            sigint,
            sigterm,
            sighup,
            refresh,
            refreshed_tx,
            refreshed_rx,
            refreshing: None,
            audit,
            service_cache,
        })
    }
}

impl Agent {
    /// Starts the health checks and the VIP announcements over the attached data plane,
    /// and the rest of the running state; tells systemd the agent is ready.
    async fn start(loaded: Loaded, state_file: Option<PathBuf>) -> anyhow::Result<(Self, Wakeups)> {
        let Loaded {
            file,
            runtime,
            neighbours,
            interfaces,
            mut balancer,
            adopted,
            sync_socket,
        } = loaded;
        let mut health = failover::Health::start(&neighbours, &file, &balancer);
        health.timeline.observe(&balancer);
        let mut announcer = Announcer::start(file.announce.as_ref(), adopted)
            .await
            .context("announce: the VIP routes")?;
        if file.announce.is_some() {
            let attached =
                announce::attachment(&balancer, &neighbours, &file.config.interfaces).await;
            announcer.set_attached(attached);
        }
        announcer.sync(file.announce.as_ref(), &balancer).await;
        let wakeups = Wakeups::new().await?;
        let auditor = Auditor::new();
        let info = info::started(&file.config.path);
        let census =
            FlowCensus::start(balancer.dataplane().flows_handle()?, file.config.flow_table)?;
        let directory = crate::sync::Directory::of(&balancer);
        let sync = FlowSync::start(
            balancer.dataplane_mut(),
            directory,
            file.sync.as_ref(),
            sync_socket,
            file.config.flow_table,
        )?;
        let watchdog = systemd::Watchdog::new();
        // Ready for systemd only now: attached, tables live, every listener bound.
        systemd::ready(&systemd::serving_status(&balancer, &file.config.interfaces));
        let agent = Self {
            watchdog,
            census,
            sync,
            info,
            auditor,
            announcer,
            health,
            balancer,
            interfaces,
            neighbours,
            runtime,
            file,
            state_file,
        };
        Ok((agent, wakeups))
    }

    /// The loop: requests, verdicts, reloads and timers, each followed by the same upkeep,
    /// until a signal ends it. Whether to leave the data plane running (SIGQUIT).
    async fn serve(&mut self, mut w: Wakeups, requests: &mut mpsc::Receiver<Pending>) -> bool {
        loop {
            // A warm-up or restore_after ending changes a verdict with no other event.
            let announce_deadline = self
                .announcer
                .next_deadline(self.file.announce.as_ref())
                .map_or_else(far_future, tokio::time::Instant::from_std);
            tokio::select! {
                _ = w.sigquit.recv() => return true,
                _ = w.sigint.recv() => return false,
                _ = w.sigterm.recv() => return false,
                _ = w.sighup.recv() => self.reload().await,
                Some((request, reply)) = requests.recv() => {
                    // Its client gave up waiting (a timed-out registration, say) and was
                    // told so: applying it now would change what the client believes failed.
                    if reply.is_closed() {
                        log::warn!(
                            "control: dropped a `{}` request whose client stopped waiting before the agent took it",
                            request.command()
                        );
                        continue;
                    }
                    self.handle(request, reply).await;
                }
                Some(event) = self.health.events.recv() => self.health.apply(event, &mut self.balancer),
                _ = w.refresh.tick() => resolve::start_refresh(&self.neighbours, &self.file, &mut w.refreshing, &w.refreshed_tx),
                Some(found) = w.refreshed_rx.recv() => resolve::apply_refresh(found, &self.interfaces, &mut self.balancer),
                _ = w.audit.tick() => {
                    self.auditor.run(&self.balancer, &self.neighbours, &self.file.config.interfaces).await;
                }
                _ = w.service_cache.tick() => {
                    if let Err(err) = self.balancer.dataplane_mut().bump_service_epoch() {
                        log::warn!("{err:#}");
                    }
                }
                _ = w.attach_check.tick(), if self.file.announce.is_some() => {
                    let attached = announce::attachment(&self.balancer, &self.neighbours, &self.file.config.interfaces).await;
                    self.announcer.set_attached(attached);
                }
                _ = tokio::time::sleep_until(announce_deadline) => {}
                // Fed from the loop itself: a loop stuck anywhere stops feeding it.
                _ = self.watchdog.tick() => self.watchdog.feed(),
            }
            self.upkeep().await;
        }
    }

    /// SIGHUP: the file read again and applied; the checkers follow the new file.
    async fn reload(&mut self) {
        let outcome = apply::reload(
            &self.neighbours,
            &self.file,
            &mut self.runtime,
            &self.interfaces,
            &mut self.balancer,
        )
        .await;
        info::record_reload(&mut self.info, &outcome, &self.file.config.path);
        if let Ok((new, _)) = outcome {
            self.file = new;
            self.health.sync(&self.file, &self.balancer);
            self.sync.publish(&self.balancer);
            if let Err(err) = self
                .sync
                .follow(
                    self.balancer.dataplane_mut(),
                    self.file.sync.as_ref(),
                    self.file.config.flow_table,
                )
                .await
            {
                // `status` shows the sync session's state (`off: why` when none runs).
                log::error!("flow-state sync after the reload: {err:#}");
            }
        }
    }

    /// One request from the control socket, the metrics or registration endpoint.
    async fn handle(
        &mut self,
        request: crate::control::protocol::Request,
        reply: tokio::sync::oneshot::Sender<crate::control::protocol::Response>,
    ) {
        let mut ctx = control::Context {
            neighbours: &self.neighbours,
            file: &mut self.file,
            runtime: &mut self.runtime,
            interfaces: &self.interfaces,
            balancer: &mut self.balancer,
            health: &mut self.health,
            auditor: &mut self.auditor,
            info: &mut self.info,
            census: &self.census,
            announcer: &self.announcer,
            sync: &self.sync,
        };
        let response = ctx.handle(request).await;
        self.health.sync(&self.file, &self.balancer);
        match response {
            control::Reply::Now(response) => {
                let _ = reply.send(*response);
            }
            // Finished off the loop (a walk of the connection table, say).
            control::Reply::Later(response) => {
                tokio::spawn(async move {
                    let _ = reply.send(response.await);
                });
            }
        }
    }

    /// After every wake-up of the loop: the timeline, the snapshot, `local_macs` and the
    /// announced routes brought up to date.
    async fn upkeep(&mut self) {
        self.health.timeline.observe(&self.balancer);
        // Backends added, removed or given new epochs: peers' entries name them by address.
        self.sync.publish(&self.balancer);
        save_snapshot(&self.balancer, self.state_file.as_deref());
        // Servers added, re-resolved or removed, an interface's MACs read anew.
        resolve::sync_local_macs(&mut self.balancer);
        self.announcer
            .sync(self.file.announce.as_ref(), &self.balancer)
            .await;
    }

    /// Leaves the data plane running for the next agent (`leave_running`, SIGQUIT), or
    /// withdraws the VIP routes, waits out `stop_grace` and detaches.
    async fn stop(mut self, leave_running: bool) {
        if leave_running {
            // The routes stay too: the pinned data plane forwards, and the next agent takes
            // them over.
            systemd::stopping("leaving the data plane running for the next agent");
            match self.balancer.dataplane_mut().leave_running() {
                Ok(()) => {
                    log::info!(
                        "xdp-lb exits leaving the data plane running for the next agent (SIGQUIT)"
                    );
                    return;
                }
                Err(err) => log::error!("cannot leave the data plane running: {err:#}; detaching"),
            }
        }
        if let Some(settings) = &self.file.announce {
            systemd::stopping("withdrawing the VIP routes");
            self.announcer.withdraw_all().await;
            if !settings.stop_grace.is_zero() {
                // The routers move the VIPs' traffic meanwhile; what still arrives is
                // forwarded as before.
                log::info!(
                    "announce: forwarding for {} more (stop_grace) before detaching",
                    config::format_duration(settings.stop_grace)
                );
                tokio::time::sleep(settings.stop_grace).await;
            }
        }
        systemd::stopping("detaching");
        self.balancer.dataplane_mut().detach_all();
        if let Some(path) = &self.state_file {
            let _ = std::fs::remove_file(path);
        }
        log::info!(
            "xdp-lb detached from {}; exiting",
            self.file.config.interfaces.join(", ")
        );
    }
}

/// A deadline that never comes (no announce timer pending).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// Saves the bookkeeping the next agent needs to adopt the pinned data plane.
fn save_snapshot(balancer: &Balancer, path: Option<&std::path::Path>) {
    if let Some(path) = path
        && balancer.dataplane().pins().is_some()
        && let Err(err) = balancer.snapshot().save(path)
    {
        log::warn!("saving the agent snapshot: {err:#}");
    }
}

/// The aya-log level for the data plane: as verbose as RUST_LOG asks, but never below the
/// program's own needs (it only logs on error paths).
fn ebpf_log_level() -> aya_log::Level {
    match log::max_level() {
        log::LevelFilter::Off | log::LevelFilter::Error => aya_log::Level::Error,
        log::LevelFilter::Warn | log::LevelFilter::Info => aya_log::Level::Warn,
        log::LevelFilter::Debug => aya_log::Level::Debug,
        log::LevelFilter::Trace => aya_log::Level::Trace,
    }
}

/// Forwards the data plane's aya-log records to the normal logger.
fn spawn_ebpf_logger(dataplane: &mut Dataplane) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(dataplane.ebpf_mut()) {
        Ok(logger) => logger,
        Err(err) => {
            log::warn!("data plane logs are unavailable: {err}");
            return None;
        }
    };
    // SAFETY: the logger owns the ring buffer's fd and lives inside the AsyncFd.
    let fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(err) => {
            log::warn!("data plane logs are unavailable: {err}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let mut fd = fd;
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(err) => {
                    log::warn!("reading data plane logs: {err}");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
