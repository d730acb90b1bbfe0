//! The agent's side of failover: where checks leave from, the checkers kept in step with
//! the config, verdicts applied to the balancer, logged and notified, and the standbys
//! resolved like backends. It also keeps what `status` and the metrics show of it: the
//! checkers' last results, the notify command's runs, the table switches' times and the
//! timeline of recent events.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{Arc, RwLock},
};

use futures::future::BoxFuture;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    balancer::Balancer,
    config::{Backend, ConfigFile, FlowTable, HealthState, ServiceFailover},
    control::{report::Observed, switches::TableSwitches, timeline::Timeline},
    health::{self, Checks, Event, Link, Notifier, NotifyRuns, SourceAddress, Target},
    neighbour::Neighbours,
};

/// Checks leave from the LB's own address on the interface towards the server, never from
/// a VIP (the servers hold the VIPs too).
struct LbSource {
    neighbours: Neighbours,
    vips: Arc<RwLock<BTreeSet<IpAddr>>>,
}

impl SourceAddress for LbSource {
    fn source_for(&self, backend: IpAddr) -> BoxFuture<'_, Result<IpAddr, String>> {
        let vips = self
            .vips
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        Box::pin(async move {
            self.neighbours
                .source_for(backend, &vips)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn link_for(&self, backend: IpAddr) -> BoxFuture<'_, Result<Link, String>> {
        let source = self.source_for(backend);
        Box::pin(async move {
            let source = source.await?;
            // The neighbour table, as the balancer resolves a backend (ARP if missing);
            // the checker's timeout bounds the wait.
            let resolved = self
                .neighbours
                .resolve(backend, std::time::Duration::from_secs(3600))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Link {
                ifindex: resolved.egress.ifindex,
                src_mac: resolved.egress.mac,
                mac: resolved.mac,
                source,
            })
        })
    }
}

/// The running checkers, their verdicts and the notify command.
pub(super) struct Health {
    checks: Checks,
    /// The checkers' verdicts, read by the agent's loop.
    pub events: UnboundedReceiver<Event>,
    notifier: Option<Notifier>,
    notify_runs: Arc<NotifyRuns>,
    vips: Arc<RwLock<BTreeSet<IpAddr>>>,
    /// The (server count, notify command) of the last "health: checking" line.
    logged: Option<(usize, String)>,
    /// How long table switches took (those of verdicts here, of control requests in
    /// `agent/control.rs`).
    pub switches: TableSwitches,
    /// Recent verdicts (recorded here) and changes (the agent's loop looks after each step).
    pub timeline: Timeline,
}

impl Health {
    /// Starts a checker for every checked server of `file`, each in the state the balancer
    /// gave it (its check's `initial_state`).
    pub(super) fn start(neighbours: &Neighbours, file: &ConfigFile, balancer: &Balancer) -> Self {
        let vips = Arc::new(RwLock::new(BTreeSet::new()));
        let source = LbSource {
            neighbours: neighbours.clone(),
            vips: vips.clone(),
        };
        let (checks, events) = Checks::new(Arc::new(source));
        let mut health = Self {
            checks,
            events,
            notifier: None,
            notify_runs: Arc::default(),
            vips,
            logged: None,
            switches: TableSwitches::default(),
            timeline: Timeline::default(),
        };
        health.sync(file, balancer);
        health
    }

    /// Brings the checkers, the VIPs avoided as sources and the notify command in line with
    /// `file` (after a reload): a checker whose server or check changed restarts in the
    /// server's current state. Logged at the start and when something changed: the loop
    /// calls it after every control request, and a scrape changes nothing.
    pub(super) fn sync(&mut self, file: &ConfigFile, balancer: &Balancer) {
        let vips: BTreeSet<IpAddr> = file.config.services.iter().map(|s| s.vip).collect();
        match self.vips.write() {
            Ok(mut current) => *current = vips,
            Err(poisoned) => *poisoned.into_inner() = vips,
        }
        self.notifier = file
            .failover
            .notify
            .as_ref()
            .map(|n| Notifier::new(n).counting(self.notify_runs.clone()));
        let targets = health::targets(file);
        let synced = self.checks.sync(targets, |t| current_state(balancer, t));
        let notify = file
            .failover
            .notify
            .as_ref()
            .map_or("off".to_owned(), |n| n.command.display().to_string());
        // Logged when something changed (and once at start), never per request: every
        // `status` and scrape runs this, and a line each would push real alerts out of
        // journald's rate limit.
        let now = (self.checks.len(), notify);
        if synced.started + synced.stopped + synced.restarted > 0
            || self.logged.as_ref() != Some(&now)
        {
            log::info!(
                "health: checking {} server(s) ({} started, {} stopped, {} restarted); notify: {}",
                now.0,
                synced.started,
                synced.stopped,
                synced.restarted,
                now.1
            );
            self.logged = Some(now);
        }
    }

    /// What `status` and the metrics show besides the balancer's state; `flow_table` tells
    /// which connection-table entries are still live.
    pub(super) fn observed(&self, flow_table: FlowTable) -> Observed {
        Observed {
            checks: self.checks.records(),
            last_switch: self.switches.last().clone(),
            notify_runs: self.notify_runs.counts().to_vec(),
            flow_table,
            census: None,
            events: self.timeline.events(),
        }
    }

    /// Applies a verdict: the balancer first (the table switch), then the log line and the
    /// notify command, which nothing waits for. Verdicts of stopped checkers are dropped.
    pub(super) fn apply(&mut self, event: Event, balancer: &mut Balancer) {
        if !self.checks.is_current(&event) {
            log::debug!(
                "health: dropped a verdict of a stopped checker: {}",
                health::log_line(&event)
            );
            return;
        }
        self.timeline.health(&event);
        let watch = TableSwitches::start(balancer);
        let applied = balancer.set_health(&event.service, event.address, event.to.is_up());
        self.switches.stop(watch, balancer);
        if let Err(err) = applied {
            log::error!("health: applying {}: {err:#}", health::log_line(&event));
        }
        let line = health::log_line(&event);
        match event.to {
            HealthState::Down => log::warn!("{line}"),
            HealthState::Up => log::info!("{line}"),
        }
        if let Some(notifier) = &self.notifier {
            notifier.notify(&event);
        }
    }
}

/// The server's health as the balancer holds it (up when it is unknown there).
fn current_state(balancer: &Balancer, target: &Target) -> HealthState {
    let healthy = balancer
        .service(&target.service)
        .and_then(|s| s.server(target.address))
        .is_none_or(|b| b.healthy);
    if healthy {
        HealthState::Up
    } else {
        HealthState::Down
    }
}

/// A service's failover settings in `file` (none when it has no entry).
pub(super) fn service_failover(file: &ConfigFile, name: &str) -> ServiceFailover {
    file.failover
        .services
        .get(name)
        .cloned()
        .unwrap_or_default()
}

/// The backend configuration each standby is resolved with (see
/// `ServiceFailover::standby_backend`).
pub(super) fn standby_backends(failover: &ServiceFailover) -> Vec<Backend> {
    failover
        .standbys()
        .into_iter()
        .map(|(address, role)| failover.standby_backend(address, role))
        .collect()
}

/// One configuration of each distinct server address, primaries and standbys of every
/// service (the MAC, when given, is the same for every service that lists the address:
/// validation does not require it, so the first one given wins).
pub(super) fn distinct_servers(file: &ConfigFile) -> BTreeMap<IpAddr, Backend> {
    let mut out: BTreeMap<IpAddr, Backend> = BTreeMap::new();
    let standbys = file.failover.services.values().flat_map(standby_backends);
    let primaries = file
        .config
        .services
        .iter()
        .flat_map(|s| s.all_backends().cloned());
    for backend in primaries.chain(standbys) {
        let entry = out
            .entry(backend.address)
            .or_insert_with(|| backend.clone());
        if entry.mac.is_none() {
            entry.mac = backend.mac;
        }
    }
    out
}
