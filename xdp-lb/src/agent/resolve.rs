//! Where frames to each server go: the backends' and standbys' MACs resolved (ARP/ND, or
//! the MAC the file gives) at start and on reload, re-resolved every
//! [`REFRESH_INTERVAL`] off the loop, and the LB's own MACs (`local_macs`) kept in line
//! with the interfaces it is attached to.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use futures::future::join_all;
use tokio::sync::mpsc;

use super::failover;
use crate::{
    balancer::{Balancer, Forwarding, LocalInterface},
    config::{Backend, ConfigFile},
    dataplane::Dataplane,
    neighbour::{Egress, Neighbours, xdp_ifindex},
};

/// How long one backend's ARP/ND resolution may take before it is reported.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often unresolved backends are retried and resolved ones re-checked for a new MAC.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a reload or a run-time change waits on ARP/ND for a server it adds, inside the
/// control loop: a silent server holds the loop (health verdicts, `status`) this long at
/// most, then is added unresolved and resolved by the next re-resolution round.
pub const CHANGE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where frames to `backend` go, or why that is not known.
pub(super) async fn forwarding_for(
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
pub(super) async fn resolve_all(
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
                log_unreachable(backend.address, &err);
                None
            }
        };
        out.insert(backend.address, forwarding);
    }
    out
}

/// An interface the program is attached to, as `local_macs` needs it: its own MAC and its
/// VLAN devices'. (The balancer adds the source MAC of every server reached through it.)
pub(super) fn local_interface(egress: &Egress) -> LocalInterface {
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
pub(super) fn sync_local_macs(balancer: &mut Balancer) {
    if let Err(err) = balancer.sync_local_macs() {
        log::error!("local_macs: {err:#}");
    }
}

/// Makes the backend's interface a redirect target when it is not where frames come in.
pub(super) fn note_egress(
    dataplane: &mut Dataplane,
    interfaces: &[Egress],
    address: IpAddr,
    f: &Forwarding,
) {
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
pub(super) struct Refreshed {
    servers: Vec<(Backend, Result<Forwarding, String>)>,
    interfaces: Vec<LocalInterface>,
}

/// Starts a round of re-resolution (ARP/ND waits up to `RESOLVE_TIMEOUT` on a silent
/// server) on a task of its own, so the control loop never waits on the network; the
/// results come back on `done`. One round at a time: a tick while one runs starts none.
pub(super) fn start_refresh(
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
pub(super) fn apply_refresh(found: Refreshed, interfaces: &[Egress], balancer: &mut Balancer) {
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

/// The error for a server whose MAC could not be resolved: it gets no traffic, and the
/// re-resolution round tries it again.
pub(super) fn log_unreachable(address: IpAddr, err: &anyhow::Error) {
    log::error!(
        "backend {address} is unreachable and gets no traffic until it resolves (retried every {}s): {err:#}",
        REFRESH_INTERVAL.as_secs()
    );
}
