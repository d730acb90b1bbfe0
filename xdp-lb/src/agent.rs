//! The agent's control loop: load, fill the maps from the config, attach, check the
//! servers' health and apply the verdicts (`agent/failover.rs`), keep backend MACs current,
//! audit the data plane against the agent's intent (`crate::audit`), reload on SIGHUP,
//! detach on SIGINT/SIGTERM.

mod control;
mod failover;
mod info;
mod systemd;

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use futures::future::join_all;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    announce::{self, Announcer},
    audit::{AUDIT_INTERVAL, Auditor},
    balancer::{Balancer, Forwarding, LocalInterface, adopt::Snapshot},
    config::{self, Backend, ConfigFile, LiveHost, XdpAttachMode},
    control::census::FlowCensus,
    dataplane::{Dataplane, LoadOptions},
    neighbour::{Egress, Neighbours, xdp_ifindex},
    pins::PinDir,
    reload::{self, Change},
    runtime::RuntimeChanges,
};

/// How long one backend's ARP/ND resolution may take before it is reported.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often unresolved backends are retried and resolved ones re-checked for a new MAC.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a reload or a run-time change waits on ARP/ND for a server it adds, inside the
/// control loop: a silent server holds the loop (health verdicts, `status`) this long at
/// most, then is added unresolved and resolved by the next re-resolution round.
pub const CHANGE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
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
pub async fn run(mut file: ConfigFile, opts: RunOptions) -> anyhow::Result<()> {
    let mut snapshot = match opts.state_file.as_deref().map(Snapshot::load) {
        Some(Ok(snapshot)) => snapshot,
        Some(Err(err)) => {
            log::warn!("{err:#}: live flows are kept from the pinned maps alone");
            None
        }
        None => None,
    };
    let mut runtime = match &opts.runtime_file {
        Some(path) => RuntimeChanges::load(path)?,
        None => RuntimeChanges::unsaved(),
    };
    // Run-time changes follow a service renamed on its listener while no agent ran.
    let renames = snapshot
        .as_ref()
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
    file = effective;
    let config = &file.config;
    let mode = opts.xdp_mode.unwrap_or(config.xdp_mode);
    let load_options = LoadOptions {
        flow_hash_seed: config.flow_hash_seed,
        maglev_table_slots: config.maglev_table_slots,
        flow_table: config.flow_table,
        log_level: ebpf_log_level(),
    };
    // Every listener is bound before anything is loaded or attached: a port already taken
    // (or a second agent on the control socket) stops the start with nothing changed, and
    // exits 2 so that `Restart=on-failure` does not loop on it (RestartPreventExitStatus).
    // Requests that arrive before the loop runs wait for it.
    let (control_tx, mut control_rx) = mpsc::channel(16);
    let conflict = |e: anyhow::Error| anyhow::Error::new(Conflict(format!("{e:#}")));
    let _metrics =
        crate::metrics::start(file.ops.metrics.as_ref(), &control_tx).map_err(conflict)?;
    let _registration =
        crate::register::start(file.ops.registration.as_ref(), &control_tx).map_err(conflict)?;
    let _control_socket = match &opts.socket {
        Some(path) => Some(crate::control::server::serve(path, control_tx).map_err(conflict)?),
        None => None,
    };
    systemd::status("loading the data plane");
    let mut dataplane =
        Dataplane::load_pinned(&load_options, opts.pin_dir.clone().map(PinDir::new))?;
    if dataplane.adopted() {
        log::info!(
            "adopted the data plane pinned under {}: live flows keep their backends",
            opts.pin_dir
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
    }
    let _ebpf_log = spawn_ebpf_logger(&mut dataplane);

    let neighbours = Neighbours::new().context("opening netlink")?;
    let mut interfaces = Vec::new();
    for name in &config.interfaces {
        interfaces.push(
            neighbours
                .interface(name)
                .await
                .with_context(|| format!("interface {name}"))?,
        );
    }

    // Before anything is written: a NIC that strips VLAN tags would never match a
    // VLAN-bound service.
    if config.services.iter().any(|s| s.vlan.is_some()) {
        for name in &config.interfaces {
            crate::dataplane::rx_vlan::check_tags_visible(name)?;
        }
    }
    systemd::status("resolving the backends' MACs");
    let resolved = resolve_all(&neighbours, &file, &interfaces, &mut dataplane).await;
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
        let service_failover = failover::service_failover(&file, &service.name);
        balancer
            .add_service_with_failover(service, &service_failover, &|b: &Backend| {
                resolved.get(&b.address).copied().flatten()
            })
            .with_context(|| format!("service {}", service.name))?;
    }

    balancer.finish_adoption();
    save_snapshot(&balancer, opts.state_file.as_deref());
    // Before the program is attached: frames to other MACs are not balanced from the start.
    balancer.set_local_interfaces(interfaces.iter().map(local_interface));
    sync_local_macs(&mut balancer);
    for name in &config.interfaces {
        balancer.dataplane_mut().attach(name, mode)?;
    }
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
    let mut health = failover::Health::start(&neighbours, &file, &balancer);
    health.timeline.observe(&balancer);

    let mut announcer = Announcer::start(file.announce.as_ref(), adopted)
        .await
        .context("announce: the VIP routes")?;
    if file.announce.is_some() {
        let attached = announce::attachment(&balancer, &neighbours, &file.config.interfaces).await;
        announcer.set_attached(attached);
    }
    announcer.sync(file.announce.as_ref(), &balancer).await;
    let mut attach_check = tokio::time::interval(ATTACH_CHECK_INTERVAL);
    attach_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sigquit = signal(SignalKind::quit()).context("installing the SIGQUIT handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
    refresh.tick().await;
    let (refreshed_tx, mut refreshed_rx) = mpsc::channel(1);
    let mut refreshing = None;
    let mut auditor = Auditor::new();
    let mut audit = tokio::time::interval(AUDIT_INTERVAL);
    audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leave_running = false;
    let mut info = info::started(&file.config.path);
    let census = FlowCensus::start(balancer.dataplane().flows_handle()?, file.config.flow_table)?;
    let mut watchdog = systemd::Watchdog::new();
    // Ready for systemd only now: attached, tables live, every listener bound.
    systemd::ready(&serving_status(&balancer, &file.config.interfaces));
    loop {
        // A warm-up or restore_after ending changes a verdict with no other event.
        let announce_deadline = announcer
            .next_deadline(file.announce.as_ref())
            .map_or_else(far_future, tokio::time::Instant::from_std);
        tokio::select! {
            _ = sigquit.recv() => {
                leave_running = true;
                break;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                let outcome = reload(&neighbours, &file, &mut runtime, &interfaces, &mut balancer).await;
                info::record_reload(&mut info, &outcome, &file.config.path);
                if let Ok((new, _)) = outcome {
                    file = new;
                    health.sync(&file, &balancer);
                }
            }
            Some((request, reply)) = control_rx.recv() => {
                // Its client gave up waiting (a timed-out registration, say) and was told
                // so: applying it now would change what the client believes failed.
                if reply.is_closed() {
                    log::warn!(
                        "control: dropped a `{}` request whose client stopped waiting before the agent took it",
                        request.command()
                    );
                    continue;
                }
                let mut ctx = control::Context {
                    neighbours: &neighbours,
                    file: &mut file,
                    runtime: &mut runtime,
                    interfaces: &interfaces,
                    balancer: &mut balancer,
                    health: &mut health,
                    auditor: &mut auditor,
                    info: &mut info,
                    census: &census,
                    announcer: &announcer,
                };
                let response = ctx.handle(request).await;
                health.sync(&file, &balancer);
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
            Some(event) = health.events.recv() => health.apply(event, &mut balancer),
            _ = refresh.tick() => start_refresh(&neighbours, &file, &mut refreshing, &refreshed_tx),
            Some(found) = refreshed_rx.recv() => apply_refresh(found, &interfaces, &mut balancer),
            _ = audit.tick() => {
                auditor.run(&balancer, &neighbours, &file.config.interfaces).await;
            }
            _ = attach_check.tick(), if file.announce.is_some() => {
                let attached = announce::attachment(&balancer, &neighbours, &file.config.interfaces).await;
                announcer.set_attached(attached);
            }
            _ = tokio::time::sleep_until(announce_deadline) => {}
            // Fed from the loop itself: a loop stuck anywhere stops feeding it.
            _ = watchdog.tick() => watchdog.feed(),
        }
        health.timeline.observe(&balancer);
        save_snapshot(&balancer, opts.state_file.as_deref());
        // Servers added, re-resolved or removed, an interface's MACs read anew.
        sync_local_macs(&mut balancer);
        announcer.sync(file.announce.as_ref(), &balancer).await;
    }
    if leave_running {
        // The routes stay too: the pinned data plane forwards, and the next agent takes
        // them over.
        systemd::stopping("leaving the data plane running for the next agent");
        match balancer.dataplane_mut().leave_running() {
            Ok(()) => {
                log::info!(
                    "xdp-lb exits leaving the data plane running for the next agent (SIGQUIT)"
                );
                return Ok(());
            }
            Err(err) => log::error!("cannot leave the data plane running: {err:#}; detaching"),
        }
    }
    if let Some(settings) = &file.announce {
        systemd::stopping("withdrawing the VIP routes");
        announcer.withdraw_all().await;
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
    balancer.dataplane_mut().detach_all();
    if let Some(path) = &opts.state_file {
        let _ = std::fs::remove_file(path);
    }
    log::info!(
        "xdp-lb detached from {}; exiting",
        file.config.interfaces.join(", ")
    );
    Ok(())
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

/// What systemd's STATUS line says while the agent serves.
fn serving_status(balancer: &Balancer, interfaces: &[String]) -> String {
    let services = balancer.services().count();
    let backends: usize = balancer.services().map(|s| s.active_backends()).sum();
    format!(
        "serving {services} service(s) on {} with {backends} backend(s) in their tables",
        interfaces.join(", ")
    )
}

/// Re-reads the config file, applies the run-time changes over it, and applies the
/// difference to the running state. An invalid file, or one changing settings fixed at
/// load, changes nothing; `Err` says why. systemd hears RELOADING, then READY.
async fn reload(
    neighbours: &Neighbours,
    current: &ConfigFile,
    runtime: &mut RuntimeChanges,
    interfaces: &[Egress],
    balancer: &mut Balancer,
) -> Result<(ConfigFile, String), String> {
    systemd::reloading();
    let result = reload_file(neighbours, current, runtime, interfaces, balancer).await;
    let names = match &result {
        Ok((new, _)) => &new.config.interfaces,
        Err(_) => &current.config.interfaces,
    };
    systemd::ready(&serving_status(balancer, names));
    result
}

async fn reload_file(
    neighbours: &Neighbours,
    current: &ConfigFile,
    runtime: &mut RuntimeChanges,
    interfaces: &[Egress],
    balancer: &mut Balancer,
) -> Result<(ConfigFile, String), String> {
    log::info!("reloading {}", current.config.path.display());
    let mut new = match config::load_file_settled(&current.config.path, &LiveHost).await {
        Ok(new) => new,
        Err(errors) => {
            log::error!("reload refused, nothing changed:\n{errors}");
            return Err(format!("reload refused, nothing changed:\n{errors}"));
        }
    };
    // The run-time changes are applied to a copy, kept only if the reload is: a refused
    // reload leaves the saved changes as they were.
    let mut candidate = runtime.clone();
    for (to, from) in reload::predecessors(&current.config, &new.config) {
        if to != from {
            candidate.rename_service(&from, &to);
        }
    }
    let dropped = match candidate.apply_file(&new, &LiveHost) {
        Ok((effective, dropped)) => {
            new = effective;
            dropped
        }
        Err(err) => {
            let why = format!(
                "reload refused, nothing changed: run-time changes in {}: {err:#}",
                runtime.path().display()
            );
            log::error!("{why}");
            return Err(why);
        }
    };
    let capacity = u64::from(balancer.dataplane().table_capacity());
    let needed = new.config.table_slots_needed();
    if needed > capacity {
        let why = format!(
            "reload refused, nothing changed: the services' Maglev tables need {needed} slots, more than the {capacity} of maglev_tables; raise maglev_table_slots (it takes effect at a clean restart) or use smaller maglev_size values"
        );
        log::error!("{why}");
        return Err(why);
    }
    let summary = apply_config(neighbours, current, &new, interfaces, balancer).await?;
    for why in dropped {
        log::warn!("run-time change dropped: {why}");
    }
    if *runtime != candidate {
        *runtime = candidate;
        if let Err(err) = runtime.save() {
            log::warn!("saving {}: {err:#}", runtime.path().display());
        }
    }
    Ok((new, summary))
}

/// Brings the running state from `current` to `new` with the smallest set of changes.
/// `Err` (nothing changed) when `new` changes settings fixed at load.
async fn apply_config(
    neighbours: &Neighbours,
    current: &ConfigFile,
    new: &ConfigFile,
    interfaces: &[Egress],
    balancer: &mut Balancer,
) -> Result<String, String> {
    let changes = match reload::plan_file(current, new) {
        Ok(changes) => changes,
        Err(why) => {
            log::error!("refused, nothing changed: {why}");
            return Err(format!("refused, nothing changed: {why}"));
        }
    };
    // Services re-added by the plan get their failover settings with them; the others
    // whose settings changed get them first (see below).
    let re_added: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::AddService(s) => Some(s.name.as_str()),
            _ => None,
        })
        .collect();
    // A renamed service is known to the balancer by its old name until the rename.
    let predecessors = reload::predecessors(&current.config, &new.config);
    let failover_updates: Vec<&String> = new
        .failover
        .services
        .iter()
        .filter(|(name, settings)| {
            let running = predecessors.get(*name).unwrap_or(name);
            !re_added.contains(&name.as_str())
                && balancer
                    .service(running)
                    .is_some_and(|s| s.failover != **settings)
        })
        .map(|(name, _)| name)
        .collect();
    if changes.is_empty() && failover_updates.is_empty() {
        let summary = if new.failover.notify == current.failover.notify {
            "no change"
        } else {
            "new notify settings"
        };
        log::info!("reload: {summary}");
        return Ok(summary.to_owned());
    }
    // Resolve every backend that needs it before touching anything.
    let mut wanted: BTreeMap<IpAddr, Backend> = BTreeMap::new();
    for change in &changes {
        match change {
            Change::AddService(s) => {
                wanted.extend(s.all_backends().map(|b| (b.address, b.clone())))
            }
            Change::AddPool { pool, .. } => {
                wanted.extend(pool.backends.iter().map(|b| (b.address, b.clone())))
            }
            Change::AddBackend { backend, .. } | Change::Remac { backend, .. } => {
                wanted.insert(backend.address, backend.clone());
            }
            _ => {}
        }
    }
    for (name, settings) in &new.failover.services {
        let known = balancer.service(name);
        for standby in failover::standby_backends(settings) {
            if known.is_none_or(|s| !s.standbys.contains_key(&standby.address)) {
                wanted.insert(standby.address, standby);
            }
        }
    }
    let results = join_all(
        wanted
            .values()
            .map(|b| forwarding_for(neighbours, b, CHANGE_RESOLVE_TIMEOUT)),
    )
    .await;
    let mut resolved: BTreeMap<IpAddr, Option<Forwarding>> = BTreeMap::new();
    for (backend, result) in wanted.values().zip(results) {
        let forwarding = match result {
            Ok(f) => {
                note_egress(balancer.dataplane_mut(), interfaces, backend.address, &f);
                Some(f)
            }
            Err(err) => {
                log::error!(
                    "backend {} is unreachable and gets no traffic until it resolves (retried every {}s): {err:#}",
                    backend.address,
                    REFRESH_INTERVAL.as_secs()
                );
                None
            }
        };
        resolved.insert(backend.address, forwarding);
    }
    let lookup = |address: &IpAddr| resolved.get(address).copied().flatten();
    let mut failed = 0;
    let apply = |balancer: &mut Balancer, change: &Change| -> usize {
        match apply_change(balancer, change, new, &lookup) {
            Ok(()) => {
                log::info!("reload: {}", describe(change));
                0
            }
            Err(err) => {
                log::error!("reload: {} failed: {err:#}", describe(change));
                1
            }
        }
    };
    // Services removed and renamed first (the plan puts them first), so the failover
    // settings below find every service under its new name.
    let named_early = changes
        .iter()
        .position(|c| !matches!(c, Change::RemoveService(_) | Change::RenameService { .. }))
        .unwrap_or(changes.len());
    for change in &changes[..named_early] {
        failed += apply(balancer, change);
    }
    // Failover settings next: backends added below then start in their checks' initial
    // state, and standbys no longer named leave before anything else changes.
    for name in &failover_updates {
        let settings = failover::service_failover(new, name);
        let forwarding = |b: &Backend| lookup(&b.address);
        match balancer.set_failover(name, &settings, &forwarding) {
            Ok(()) => log::info!("reload: updated the failover settings of service {name}"),
            Err(err) => {
                failed += 1;
                log::error!(
                    "reload: updating the failover settings of service {name} failed: {err:#}"
                );
            }
        }
    }
    for change in &changes[named_early..] {
        failed += apply(balancer, change);
    }
    let total = changes.len() + failover_updates.len();
    if failed == 0 {
        let summary = format!("reload applied: {total} change(s)");
        log::info!("{summary}");
        Ok(summary)
    } else {
        let summary = format!("reload applied with {failed} failed change(s) of {total}");
        log::error!("{summary}");
        Err(summary)
    }
}

/// Applies one change of a reload plan; `lookup` gives the backends resolved for it.
fn apply_change(
    balancer: &mut Balancer,
    change: &Change,
    new: &ConfigFile,
    lookup: &dyn Fn(&IpAddr) -> Option<Forwarding>,
) -> anyhow::Result<()> {
    match change {
        Change::RemoveService(name) => balancer.remove_service(name),
        Change::RenameService { from, to } => balancer.rename_service(from, to),
        Change::UpdateServiceSettings(s) => balancer.update_service_settings(s),
        Change::AddService(s) => balancer.add_service_with_failover(
            s,
            &failover::service_failover(new, &s.name),
            &|b: &Backend| lookup(&b.address),
        ),
        Change::RemoveBackend { service, address } => balancer.remove_backend(service, *address),
        Change::AddBackend {
            service,
            pool,
            backend,
        } => balancer.add_pool_backend(service, pool, backend, lookup(&backend.address)),
        Change::AddPool { service, pool } => {
            balancer.add_pool(service, pool, &|b: &Backend| lookup(&b.address))
        }
        Change::UpdatePoolSettings { service, pool } => {
            balancer.update_pool_settings(service, pool)
        }
        Change::MoveBackend {
            service,
            address,
            pool,
        } => balancer.move_backend(service, *address, pool),
        Change::SetClients { service, clients } => balancer.set_client_rules(service, clients),
        Change::RemovePool { service, pool } => balancer.remove_pool(service, pool),
        Change::SetWeight {
            service,
            address,
            weight,
        } => balancer.set_weight(service, *address, *weight),
        Change::Remac { service, backend } => {
            balancer.set_forwarding(service, backend.address, lookup(&backend.address))
        }
        Change::SetVlan {
            service,
            address,
            vlan,
        } => balancer.set_vlan(service, *address, *vlan),
    }
}

fn describe(change: &Change) -> String {
    match change {
        Change::RemoveService(name) => format!("removed service {name}"),
        Change::RenameService { from, to } => {
            format!("renamed service {from} to {to} (its listener, backends and flows stay)")
        }
        Change::UpdateServiceSettings(s) => format!("updated the settings of service {}", s.name),
        Change::AddService(s) => format!(
            "added service {} ({}:{}/{})",
            s.name, s.vip, s.port, s.protocol
        ),
        Change::RemoveBackend { service, address } => {
            format!("removed backend {address} from {service}")
        }
        Change::AddBackend {
            service,
            pool,
            backend,
        } => format!(
            "added backend {} to {service} (pool {pool})",
            backend.address
        ),
        Change::AddPool { service, pool } => format!(
            "added pool {} to {service} ({} new backend(s))",
            pool.name,
            pool.backends.len()
        ),
        Change::UpdatePoolSettings { service, pool } => format!(
            "resized the table of pool {} of {service} to {} slots",
            pool.name, pool.maglev_size
        ),
        Change::MoveBackend {
            service,
            address,
            pool,
        } => format!("moved backend {address} of {service} to pool {pool}"),
        Change::SetClients { service, clients } => {
            format!("set the {} client rule(s) of {service}", clients.len())
        }
        Change::RemovePool { service, pool } => format!("removed pool {pool} from {service}"),
        Change::SetWeight {
            service,
            address,
            weight,
        } => format!("set the weight of {address} in {service} to {weight}"),
        Change::Remac { service, backend } => {
            format!("re-resolved backend {} of {service}", backend.address)
        }
        Change::SetVlan {
            service,
            address,
            vlan: Some(vlan),
        } => format!("backend {address} of {service} is on VLAN {vlan}"),
        Change::SetVlan {
            service, address, ..
        } => format!("backend {address} of {service} is on the service's VLAN"),
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

/// Where frames to `backend` go, or why that is not known.
async fn forwarding_for(
    neighbours: &Neighbours,
    backend: &Backend,
    wait: Duration,
) -> anyhow::Result<Forwarding> {
    match backend.mac {
        Some(mac) => {
            let egress = neighbours.egress_for(backend.address).await?;
            Ok(Forwarding {
                mac,
                src_mac: egress.mac,
                ifindex: xdp_ifindex(&egress),
            })
        }
        None => {
            let resolved = neighbours.resolve(backend.address, wait).await?;
            Ok(Forwarding {
                mac: resolved.mac,
                src_mac: resolved.egress.mac,
                ifindex: xdp_ifindex(&resolved.egress),
            })
        }
    }
}

/// Resolves every backend (and standby) at once; unresolvable ones are reported and left
/// out (`None`).
async fn resolve_all(
    neighbours: &Neighbours,
    file: &ConfigFile,
    interfaces: &[Egress],
    dataplane: &mut Dataplane,
) -> BTreeMap<IpAddr, Option<Forwarding>> {
    let backends = failover::distinct_servers(file);
    let results = join_all(
        backends
            .values()
            .map(|b| forwarding_for(neighbours, b, RESOLVE_TIMEOUT)),
    )
    .await;
    let mut out = BTreeMap::new();
    for (backend, result) in backends.values().zip(results) {
        let forwarding = match result {
            Ok(f) => {
                note_egress(dataplane, interfaces, backend.address, &f);
                log::info!(
                    "backend {} is at {} via ifindex {}",
                    backend.address,
                    f.mac,
                    f.ifindex
                );
                Some(f)
            }
            Err(err) => {
                log::error!(
                    "backend {} is unreachable and gets no traffic until it resolves (retried every {}s): {err:#}",
                    backend.address,
                    REFRESH_INTERVAL.as_secs()
                );
                None
            }
        };
        out.insert(backend.address, forwarding);
    }
    out
}

/// An interface the program is attached to, as `local_macs` needs it: its own MAC and its
/// VLAN devices'. (The balancer adds the source MAC of every server reached through it.)
fn local_interface(egress: &Egress) -> LocalInterface {
    let mut macs = vec![egress.mac];
    macs.extend(crate::neighbour::vlan_device_macs(egress.ifindex));
    LocalInterface {
        ifindex: egress.ifindex,
        name: egress.ifname.clone(),
        macs,
    }
}

/// Brings `local_macs` in line with the interfaces and the servers: which destination MACs
/// are the LB's on each interface it is attached to. Frames to any other MAC (promiscuous
/// mode, flooded unknown unicast) are passed, not balanced. Nothing is written when nothing
/// changed.
fn sync_local_macs(balancer: &mut Balancer) {
    if let Err(err) = balancer.sync_local_macs() {
        log::error!("local_macs: {err:#}");
    }
}

/// Makes the backend's interface a redirect target when it is not where frames come in.
fn note_egress(dataplane: &mut Dataplane, interfaces: &[Egress], address: IpAddr, f: &Forwarding) {
    if let Err(err) = dataplane.add_tx_port(f.ifindex) {
        log::error!("backend {address}: {err:#}");
    }
    if !interfaces.iter().any(|i| i.ifindex == f.ifindex) {
        log::warn!(
            "backend {address} is reached through ifindex {}, which xdp-lb is not attached to: \
             frames are redirected there, which needs a driver that accepts XDP redirects",
            f.ifindex
        );
    }
}

/// What a round of re-resolution found: for each server, and the attached interfaces read
/// again (those that could be).
struct Refreshed {
    servers: Vec<(Backend, Result<Forwarding, String>)>,
    interfaces: Vec<LocalInterface>,
}

/// Starts a round of re-resolution (ARP/ND waits up to `RESOLVE_TIMEOUT` on a silent
/// server) on a task of its own, so the control loop never waits on the network; the
/// results come back on `done`. One round at a time: a tick while one runs starts none.
fn start_refresh(
    neighbours: &Neighbours,
    file: &ConfigFile,
    running: &mut Option<tokio::task::JoinHandle<()>>,
    done: &mpsc::Sender<Refreshed>,
) {
    if running.as_ref().is_some_and(|task| !task.is_finished()) {
        return;
    }
    let servers: Vec<Backend> = failover::distinct_servers(file).into_values().collect();
    let names = file.config.interfaces.clone();
    let (neighbours, done) = (neighbours.clone(), done.clone());
    *running = Some(tokio::spawn(async move {
        let results = join_all(
            servers
                .iter()
                .map(|b| forwarding_for(&neighbours, b, RESOLVE_TIMEOUT)),
        )
        .await;
        let servers = servers
            .into_iter()
            .zip(results)
            .map(|(b, r)| (b, r.map_err(|err| format!("{err:#}"))))
            .collect();
        // An interface's MAC may change, a VLAN device come or go, while the agent runs.
        let mut interfaces = Vec::new();
        for name in &names {
            match neighbours.interface(name).await {
                Ok(egress) => interfaces.push(local_interface(&egress)),
                Err(err) => log::debug!("interface {name} not read again: {err}"),
            }
        }
        let _ = done
            .send(Refreshed {
                servers,
                interfaces,
            })
            .await;
    }));
}

/// Applies a round of re-resolution: unresolved backends that answered get their entries,
/// resolved ones a new MAC when theirs changed, and the interfaces' MACs as read now (the
/// loop then brings `local_macs` up to date).
fn apply_refresh(found: Refreshed, interfaces: &[Egress], balancer: &mut Balancer) {
    balancer.set_local_interfaces(found.interfaces);
    for (backend, result) in &found.servers {
        let backend = backend.clone();
        let users: Vec<(String, Option<Forwarding>)> = balancer
            .services()
            .filter_map(|s| {
                s.server(backend.address)
                    .map(|b| (s.config.name.clone(), b.forwarding))
            })
            .collect();
        match result {
            Ok(f) => {
                let f = *f;
                if users.iter().any(|(_, old)| *old != Some(f)) {
                    note_egress(balancer.dataplane_mut(), interfaces, backend.address, &f);
                    log::info!(
                        "backend {} is now at {} via ifindex {}",
                        backend.address,
                        f.mac,
                        f.ifindex
                    );
                }
                for (service, _) in &users {
                    if let Err(err) = balancer.set_forwarding(service, backend.address, Some(f)) {
                        log::error!("service {service}, backend {}: {err:#}", backend.address);
                    }
                }
            }
            Err(err) => {
                // A resolved backend keeps its last MAC: one missed ARP reply must not
                // withdraw a server that may be fine (health checks decide that).
                if users.iter().any(|(_, old)| old.is_none()) {
                    log::error!("backend {} is still unreachable: {err}", backend.address);
                } else {
                    log::warn!(
                        "backend {} did not re-resolve, keeping its last MAC: {err}",
                        backend.address
                    );
                }
            }
        }
    }
}
