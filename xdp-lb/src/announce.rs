//! Announcing the VIPs to the routers through BIRD (`announce:` in the file).
//!
//! The agent keeps a `VIP/32` (`/128`) `dev lo` route in a table of its own (`routes.rs`)
//! exactly while this LB can serve the VIP (`quorum.rs` decides); BIRD's `kernel` protocol
//! learns the table and its BGP sessions carry the routes to the routers, which spread the
//! VIP's traffic over every LB announcing it (ECMP). See `examples/bird-lb.conf`.
//!
//! A clean stop withdraws every route before the data plane is detached; a flow-keeping
//! exit (SIGQUIT) or a killed agent leaves them, since the pinned data plane still
//! forwards, and the next agent takes them over.

mod quorum;
mod routes;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Instant,
};

pub use quorum::{Quorums, ServiceQuorum, Verdict, VipServices};
pub use routes::{Routes, host_prefix};

use crate::{
    balancer::Balancer,
    config::Announce,
    control::protocol::{AnnounceStatus, VipAnnouncement},
    neighbour::Neighbours,
};

/// The announcer: the quorum state of every VIP and the routes it keeps in the kernel.
pub struct Announcer {
    routes: Routes,
    quorums: Quorums,
    /// The VIPs whose route is in the kernel now, and the table they are in.
    installed: BTreeSet<IpAddr>,
    table: Option<u32>,
    /// `Err(why)` while the data plane is not attached everywhere it should be.
    attached: Result<(), String>,
    /// The last netlink failure on a VIP's route (cleared by a success).
    failures: BTreeMap<IpAddr, String>,
}

impl Announcer {
    /// Opens netlink and takes over the routes of the agent's protocol found in the
    /// table. With an adopted data plane (the earlier agent left it forwarding) the VIPs
    /// it announced stay announced while they keep their quorum; otherwise they are
    /// withdrawn until this agent may announce them.
    pub async fn start(settings: Option<&Announce>, adopted: bool) -> anyhow::Result<Self> {
        let routes = Routes::open().await?;
        let mut installed = BTreeSet::new();
        if let Some(settings) = settings {
            installed.extend(routes.list(settings.table).await?);
        }
        if !installed.is_empty() {
            log::info!(
                "announce: found the routes of {} in table {} ({})",
                list(&installed),
                settings.map_or(0, |s| s.table),
                if adopted {
                    "the earlier agent's, kept with its data plane"
                } else {
                    "a stopped agent's: withdrawn until this one can serve"
                }
            );
        }
        let inherited = if adopted {
            installed.clone()
        } else {
            BTreeSet::new()
        };
        Ok(Self {
            routes,
            quorums: Quorums::new(Instant::now(), inherited),
            table: settings.map(|s| s.table),
            installed,
            attached: Ok(()),
            failures: BTreeMap::new(),
        })
    }

    /// Records whether the data plane is attached (see [`attachment`]).
    pub fn set_attached(&mut self, attached: Result<(), String>) {
        if attached != self.attached {
            match &attached {
                Ok(()) => log::info!("announce: the data plane is attached again"),
                Err(why) => log::warn!("announce: the data plane is not attached: {why}"),
            }
        }
        self.attached = attached;
    }

    /// Brings the verdicts up to `now` and the kernel's routes in line with them.
    pub async fn sync(&mut self, settings: Option<&Announce>, balancer: &Balancer) {
        let Some(settings) = settings else {
            // Turned off by a reload: nothing stays announced.
            self.withdraw_all().await;
            self.table = None;
            return;
        };
        let vips = vip_services(balancer, settings);
        let before: BTreeMap<IpAddr, Verdict> = self
            .quorums
            .verdicts()
            .map(|(vip, v)| (vip, v.clone()))
            .collect();
        let attached = self.attached.as_ref().map(|_| ()).map_err(String::as_str);
        self.quorums
            .update(Instant::now(), settings, attached, &vips);
        for (vip, verdict) in self.quorums.verdicts() {
            if before.get(&vip).map(|v| v.announce) != Some(verdict.announce) {
                if verdict.announce {
                    log::info!("announce: {vip} announced: {}", verdict.reason);
                } else {
                    log::warn!("announce: {vip} withdrawn: {}", verdict.reason);
                }
            }
        }
        if self.table.is_some_and(|t| t != settings.table) {
            // A new table: the routes move.
            self.withdraw_all().await;
        }
        self.table = Some(settings.table);
        let wanted = self.quorums.announced();
        let stale: Vec<IpAddr> = self.installed.difference(&wanted).copied().collect();
        for vip in stale {
            self.remove(vip, settings.table).await;
        }
        let missing: Vec<IpAddr> = wanted.difference(&self.installed).copied().collect();
        for vip in missing {
            match self.routes.add(vip, settings.table).await {
                Ok(()) => {
                    self.installed.insert(vip);
                    self.failures.remove(&vip);
                }
                Err(err) => {
                    if self.failures.insert(vip, format!("{err:#}")).is_none() {
                        log::error!("announce: {err:#}");
                    }
                }
            }
        }
    }

    async fn remove(&mut self, vip: IpAddr, table: u32) {
        match self.routes.remove(vip, table).await {
            Ok(()) => {
                self.installed.remove(&vip);
                self.failures.remove(&vip);
            }
            Err(err) => {
                if self.failures.insert(vip, format!("{err:#}")).is_none() {
                    log::error!("announce: {err:#}");
                }
            }
        }
    }

    /// Withdraws every route (a clean stop, or announcing turned off).
    pub async fn withdraw_all(&mut self) {
        let Some(table) = self.table else { return };
        let all: Vec<IpAddr> = self.installed.iter().copied().collect();
        for vip in &all {
            self.remove(*vip, table).await;
        }
        if !all.is_empty() {
            log::info!("announce: withdrew {} from table {table}", list(&all));
        }
    }

    /// When a verdict may change with no event (a warm-up or `restore_after` ending).
    pub fn next_deadline(&self, settings: Option<&Announce>) -> Option<Instant> {
        self.quorums.next_deadline(settings?)
    }

    /// What `status` shows: each VIP, whether its route is in the table, and why.
    pub fn status(&self, settings: Option<&Announce>) -> Option<AnnounceStatus> {
        let settings = settings?;
        let vips = self
            .quorums
            .verdicts()
            .map(|(vip, verdict)| {
                let announced = self.installed.contains(&vip);
                let reason = match self.failures.get(&vip) {
                    Some(failure) => failure.clone(),
                    None => verdict.reason.clone(),
                };
                VipAnnouncement {
                    vip,
                    announced,
                    reason,
                }
            })
            .collect();
        Some(AnnounceStatus {
            table: settings.table,
            vips,
        })
    }
}

/// Each VIP of the balancer with its services' quorum figures.
pub fn vip_services(balancer: &Balancer, settings: &Announce) -> VipServices {
    let mut vips = VipServices::new();
    for service in balancer.services() {
        vips.entry(service.config.vip)
            .or_default()
            .push(ServiceQuorum {
                name: service.config.name.clone(),
                healthy: u32::try_from(service.active_backends()).unwrap_or(u32::MAX),
                needed: settings.min_healthy_of(&service.config.name),
            });
    }
    vips
}

/// Whether the agent's program is the one attached to every configured interface.
pub async fn attachment(
    balancer: &Balancer,
    neighbours: &Neighbours,
    interfaces: &[String],
) -> Result<(), String> {
    let ours = balancer.dataplane().program().info().ok().map(|i| i.id());
    for ifname in interfaces {
        match neighbours.xdp_program(ifname).await {
            Ok(Some(id)) if Some(id) == ours => {}
            Ok(Some(id)) => return Err(format!("{ifname} runs another XDP program (id {id})")),
            Ok(None) => return Err(format!("no XDP program on {ifname}")),
            Err(err) => return Err(format!("{ifname}: {err}")),
        }
    }
    Ok(())
}

fn list<'a>(vips: impl IntoIterator<Item = &'a IpAddr>) -> String {
    vips.into_iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
