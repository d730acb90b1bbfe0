//! Whether each VIP may be announced now: the data plane attached, every service on the
//! VIP at its `min_healthy`, the warm-up over, and, for a VIP that lost its quorum, the
//! quorum held again for `restore_after`. Pure bookkeeping over the instants it is given,
//! so the hysteresis is tested without clocks or netlink.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::config::{Announce, format_duration};

/// One service on a VIP as the quorum sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceQuorum {
    pub name: String,
    /// Its backends in a table now (up, resolved, with a weight).
    pub healthy: u32,
    /// Its `min_healthy`.
    pub needed: u32,
}

/// Every VIP of the configuration with the services on it.
pub type VipServices = BTreeMap<IpAddr, Vec<ServiceQuorum>>;

/// The verdict on one VIP and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub announce: bool,
    pub reason: String,
}

#[derive(Clone, Debug)]
struct VipQuorum {
    /// Since when every service on it has held its quorum (`None`: one lacks it now).
    held_since: Option<Instant>,
    /// It lost its quorum since the agent started: coming back takes `restore_after`.
    lost: bool,
    /// Announced by the earlier agent, whose data plane this one adopted: no warm-up.
    inherited: bool,
    verdict: Verdict,
}

/// The quorum state of every VIP.
#[derive(Clone, Debug)]
pub struct Quorums {
    started: Instant,
    vips: BTreeMap<IpAddr, VipQuorum>,
    /// VIPs the earlier agent announced (routes found at start with an adopted data plane).
    inherited: BTreeSet<IpAddr>,
}

impl Quorums {
    /// `inherited`: the VIPs announced by the earlier agent whose data plane was adopted;
    /// they skip the warm-up, since that data plane never stopped forwarding.
    pub fn new(started: Instant, inherited: BTreeSet<IpAddr>) -> Self {
        Self {
            started,
            vips: BTreeMap::new(),
            inherited,
        }
    }

    /// Brings every VIP's verdict up to `now`. `attached`: `Err(why)` when the data plane
    /// is not attached everywhere it should be.
    pub fn update(
        &mut self,
        now: Instant,
        settings: &Announce,
        attached: Result<(), &str>,
        vips: &VipServices,
    ) {
        self.vips.retain(|vip, _| vips.contains_key(vip));
        for (vip, services) in vips {
            let state = self.vips.entry(*vip).or_insert_with(|| VipQuorum {
                held_since: None,
                lost: false,
                inherited: self.inherited.contains(vip),
                verdict: Verdict {
                    announce: false,
                    reason: String::new(),
                },
            });
            let short = services.iter().find(|s| s.healthy < s.needed);
            match short {
                Some(_) => {
                    if state.held_since.is_some() || state.verdict.announce {
                        state.lost = true;
                    }
                    state.held_since = None;
                }
                None => {
                    state.held_since.get_or_insert(now);
                }
            }
            state.verdict = verdict(self.started, now, settings, attached, short, state);
        }
    }

    /// The verdict on each VIP, by address.
    pub fn verdicts(&self) -> impl Iterator<Item = (IpAddr, &Verdict)> {
        self.vips.iter().map(|(vip, q)| (*vip, &q.verdict))
    }

    /// The VIPs to announce now.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.verdicts()
            .filter(|(_, v)| v.announce)
            .map(|(vip, _)| vip)
            .collect()
    }

    /// When a verdict may change with no other event: the end of the warm-up or of a
    /// `restore_after` wait.
    pub fn next_deadline(&self, settings: &Announce) -> Option<Instant> {
        let warm = self.started + settings.warm_up;
        self.vips
            .values()
            .filter(|q| !q.verdict.announce)
            .filter_map(|q| {
                let held = q.held_since?;
                let restored = if q.lost {
                    held + settings.restore_after
                } else {
                    held
                };
                let at = if q.inherited {
                    restored
                } else {
                    restored.max(warm)
                };
                Some(at)
            })
            .min()
    }
}

fn verdict(
    started: Instant,
    now: Instant,
    settings: &Announce,
    attached: Result<(), &str>,
    short: Option<&ServiceQuorum>,
    state: &VipQuorum,
) -> Verdict {
    let withdrawn = |reason: String| Verdict {
        announce: false,
        reason,
    };
    if let Err(why) = attached {
        return withdrawn(format!("the data plane is not attached: {why}"));
    }
    if let Some(s) = short {
        return withdrawn(format!(
            "service {} has {} of the {} backend(s) min_healthy asks for",
            s.name, s.healthy, s.needed
        ));
    }
    let held = now.saturating_duration_since(state.held_since.unwrap_or(now));
    if !state.verdict.announce {
        let warm_left = (started + settings.warm_up).saturating_duration_since(now);
        if !state.inherited && !warm_left.is_zero() {
            return withdrawn(format!("warming up: announced in {}", rounded(warm_left)));
        }
        if state.lost && held < settings.restore_after {
            return withdrawn(format!(
                "quorum back for {} of the {} restore_after asks for",
                rounded(held),
                format_duration(settings.restore_after)
            ));
        }
    }
    Verdict {
        announce: true,
        reason: "every service on it has its min_healthy".to_owned(),
    }
}

/// A wait as a person reads it: to the tenth of a second.
fn rounded(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
