//! `announce:`: the VIPs this LB offers to the network through BIRD, and when.
//!
//! While it can serve a VIP, the agent keeps a `VIP/32` (`/128`) route on `lo` in a
//! kernel table of its own (`table`, default 100) that BIRD's `kernel` protocol learns and
//! exports over BGP (`examples/bird-lb.conf`); `agent/announce.rs` decides when. A VIP is
//! served while the data plane is attached and every service on it has at least
//! `min_healthy` backends in its tables (per service with its own `min_healthy:`); one
//! that lost it comes back only after holding it for `restore_after`; nothing is
//! announced before `warm_up` has passed since the agent started. A clean stop withdraws
//! every route and keeps forwarding for `stop_grace` before it detaches.
//!
//! As written in `raw.rs`; checked, validated and written back here.

pub(crate) mod raw;

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde_saphyr::Spanned;

use self::raw::RawAnnounce;
use crate::config::{
    file::raw::RawConfig,
    services::raw::RawService,
    shared::{
        checker::Checker,
        duration::{DurationRule, Resolution, format_duration},
        errors::shown,
        number::{Number, at},
    },
};

/// The kernel table the agent's routes go to unless the file says.
pub const DEFAULT_ANNOUNCE_TABLE: u32 = 100;
/// Backends in its tables a service needs unless the file says.
pub const DEFAULT_MIN_HEALTHY: u32 = 1;
/// How long a VIP that lost its quorum must hold it again before it is announced again.
pub const DEFAULT_RESTORE_AFTER: Duration = Duration::from_secs(5);
/// How long a clean stop keeps forwarding after withdrawing the routes, unless the file
/// says: time for BIRD and the routers to move the VIPs' traffic to the other LBs.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);
/// The route protocol of the agent's routes (`ip route show table 100 proto 77`): the
/// agent only ever removes routes of its own protocol. Free in iproute2's `rt_protos`.
pub const ANNOUNCE_ROUTE_PROTOCOL: u8 = 77;

/// The kernel's own tables (unspec, default, main, local): never the agent's.
const RESERVED_TABLES: [(u32, &str); 4] = [
    (0, "no table (unspec)"),
    (253, "the kernel's default table"),
    (254, "the kernel's main table"),
    (255, "the kernel's local table"),
];
/// `restore_after`, `warm_up` and `stop_grace`.
const ANNOUNCE_DELAYS: DurationRule = DurationRule {
    range: Duration::ZERO..=Duration::from_secs(3600),
    resolution: Resolution::Millis,
};

/// What `announce:` says; absent: the agent announces nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The kernel routing table the agent keeps its VIP routes in.
    pub table: u32,
    /// Backends in its tables each service needs, unless it says otherwise.
    pub min_healthy: u32,
    /// Services with a `min_healthy` of their own, by name.
    pub service_min_healthy: BTreeMap<String, u32>,
    /// How long a VIP that lost its quorum must hold it before it is announced again.
    pub restore_after: Duration,
    /// Nothing is announced until this long after the agent started.
    pub warm_up: Duration,
    /// A clean stop withdraws the routes, then forwards this long before it detaches.
    pub stop_grace: Duration,
}

impl Announce {
    /// The backends `service` needs in its tables for its VIP to be announced.
    pub fn min_healthy_of(&self, service: &str) -> u32 {
        self.service_min_healthy
            .get(service)
            .copied()
            .unwrap_or(self.min_healthy)
    }
}

impl Checker<'_> {
    /// `announce:` and each service's `min_healthy`. `Some(None)`: valid and off.
    pub(crate) fn announce(&mut self, raw: &RawConfig) -> Option<Option<Announce>> {
        let before = self.errors.len();
        let Some(section) = &raw.announce else {
            for (i, service) in raw.services.value.iter().enumerate() {
                if let Some(n) = &service.value.min_healthy {
                    self.error(
                        at(n),
                        format!("services[{i}].min_healthy"),
                        "min_healthy only applies when VIPs are announced: add an `announce:` section (or remove it)",
                    );
                }
            }
            return (self.errors.len() == before).then_some(None);
        };
        let announce = self.announce_section(&section.value);
        let mut service_min_healthy = BTreeMap::new();
        for (i, service) in raw.services.value.iter().enumerate() {
            if let Some(n) = self.service_min_healthy(i, &service.value) {
                service_min_healthy.insert(service.value.name.value.clone(), n);
            }
        }
        let announce = announce?;
        (self.errors.len() == before).then_some(Some(Announce {
            service_min_healthy,
            ..announce
        }))
    }

    fn announce_section(&mut self, raw: &RawAnnounce) -> Option<Announce> {
        let before = self.errors.len();
        let mut announce = Announce {
            table: DEFAULT_ANNOUNCE_TABLE,
            min_healthy: DEFAULT_MIN_HEALTHY,
            service_min_healthy: BTreeMap::new(),
            restore_after: DEFAULT_RESTORE_AFTER,
            warm_up: Duration::ZERO,
            stop_grace: DEFAULT_STOP_GRACE,
        };
        if let Some(table) = &raw.table
            && let Some(n) = self.number(table, "announce.table", 0..=i128::from(u32::MAX))
        {
            let n = u32::try_from(n).unwrap_or_default();
            match RESERVED_TABLES.iter().find(|(t, _)| *t == n) {
                Some((_, what)) => self.error(
                    at(table),
                    "announce.table",
                    format!(
                        "{n} is {what}: give the VIP routes a table of their own (e.g. 100) for BIRD's kernel protocol to learn"
                    ),
                ),
                None => announce.table = n,
            }
        }
        if let Some(n) = &raw.min_healthy
            && let Some(n) = self.min_healthy(n, "announce.min_healthy")
        {
            announce.min_healthy = n;
        }
        for (value, field, out) in [
            (
                &raw.restore_after,
                "announce.restore_after",
                &mut announce.restore_after,
            ),
            (&raw.warm_up, "announce.warm_up", &mut announce.warm_up),
            (
                &raw.stop_grace,
                "announce.stop_grace",
                &mut announce.stop_grace,
            ),
        ] {
            if let Some(v) = value
                && let Some(d) = self.duration(v, field, &ANNOUNCE_DELAYS)
            {
                *out = d;
            }
        }
        (self.errors.len() == before).then_some(announce)
    }

    /// A service's own `min_healthy`: never more than the primaries it lists, or its VIP
    /// could never be announced.
    fn service_min_healthy(&mut self, i: usize, s: &RawService) -> Option<u32> {
        let value = s.min_healthy.as_ref()?;
        let field = format!("services[{i}].min_healthy");
        let n = self.min_healthy(value, &field)?;
        let primaries = s.backends.value.len()
            + s.pools.as_ref().map_or(0, |p| {
                p.value
                    .0
                    .iter()
                    .map(|(_, p)| p.value.backends.value.len())
                    .sum()
            });
        if n as usize > primaries {
            let message = format!(
                "{n} is more than the {primaries} backend(s) {} lists: its VIP would never be announced",
                shown(&s.name.value)
            );
            self.error(at(value), field, message);
            return None;
        }
        Some(n)
    }

    fn min_healthy(&mut self, value: &Spanned<Number>, field: &str) -> Option<u32> {
        let max = i128::from(xdp_lb_common::MAX_BACKENDS);
        self.number(value, field, 0..=max)
            .and_then(|n| u32::try_from(n).ok())
    }
}

/// `announce:` in the effective configuration (nothing when off).
pub(crate) fn render(out: &mut String, announce: Option<&Announce>) -> std::fmt::Result {
    let Some(a) = announce else { return Ok(()) };
    writeln!(out, "announce:")?;
    writeln!(out, "  table: {}", a.table)?;
    writeln!(out, "  min_healthy: {}", a.min_healthy)?;
    writeln!(out, "  restore_after: {}", format_duration(a.restore_after))?;
    writeln!(out, "  warm_up: {}", format_duration(a.warm_up))?;
    writeln!(out, "  stop_grace: {}", format_duration(a.stop_grace))
}

/// A service's own `min_healthy`, when it has one.
pub(crate) fn render_service(
    out: &mut String,
    announce: Option<&Announce>,
    service: &str,
) -> std::fmt::Result {
    match announce.and_then(|a| a.service_min_healthy.get(service)) {
        Some(n) => writeln!(out, "    min_healthy: {n}"),
        None => Ok(()),
    }
}
