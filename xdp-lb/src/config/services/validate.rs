//! Validation of one service and its backends (the whole file's rules are in
//! `file/validate.rs`; its pools', checks' and standbys' in their sections).

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use serde_saphyr::{Location, Spanned};
use xdp_lb_common::{
    MAGLEV_DEFAULT_SIZE, MAGLEV_MAX_SIZE, MAGLEV_MIN_SIZE, MAX_VLAN_ID, MAX_WEIGHT,
};

use super::{
    backend::{Backend, MacAddr, RawBackend},
    model::{DownAction, HashMode, NoBackendAction, Persistence, Protocol, Service},
    raw::RawService,
    side::ServiceSide,
};
use crate::config::{
    failover::{model::ServiceFailover, validate::ServiceFacts},
    pools::{model::DEFAULT_POOL, validate::PoolContext},
    shared::{
        checker::{Checker, MAX_NAME_LEN},
        duration::{DurationRule, Resolution},
        errors::shown,
        number::{Number, at},
    },
};

/// Client persistence: whole seconds (0 = off), up to a day.
const PERSISTENCE: DurationRule = DurationRule {
    range: Duration::ZERO..=Duration::from_secs(86_400),
    resolution: Resolution::Seconds,
};

/// What a service listens on: VIP, port, protocol and VLAN (`None`: any).
pub(crate) type Listener = (IpAddr, u16, Protocol, Option<u16>);

/// What earlier services used, for the uniqueness rules.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) names: HashMap<String, (usize, Location)>,
    /// Each listener with the service that first took it.
    pub(crate) listeners: HashMap<Listener, (usize, Location)>,
}

/// Whether `n` is prime (trial division; `n` is at most a few million here).
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The prime to suggest instead of `n`: the next one up, or the one below when that would
/// be too large.
pub(crate) fn prime_near(n: u32) -> u32 {
    let up = (n..=MAGLEV_MAX_SIZE).find(|&p| is_prime(p));
    up.or_else(|| (MAGLEV_MIN_SIZE..n).rev().find(|&p| is_prime(p)))
        .unwrap_or(MAGLEV_DEFAULT_SIZE)
}

impl Checker<'_> {
    pub(crate) fn service(
        &mut self,
        i: usize,
        raw: &Spanned<RawService>,
        seen: &mut Seen,
    ) -> Option<(Service, ServiceFailover)> {
        let before = self.errors.len();
        let s = &raw.value;
        let field = |name: &str| format!("services[{i}].{name}");

        let name = self.service_name(&s.name, &field("name"));
        if name.is_some() {
            if let Some((first, line)) = seen.names.get(&s.name.value) {
                let message = format!(
                    "service name {} is already used by services[{first}] (line {})",
                    shown(&s.name.value),
                    line.line()
                );
                self.error(at(&s.name), field("name"), message);
            } else {
                seen.names.insert(s.name.value.clone(), (i, at(&s.name)));
            }
        }
        let vip = self.address(&s.vip, &field("vip"), "VIP");
        let port = self.number(&s.port, &field("port"), 1..=i128::from(u16::MAX));
        let port = port.and_then(|p| u16::try_from(p).ok());
        let protocol = self.word(
            &s.protocol,
            &field("protocol"),
            "a protocol",
            &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
        );
        let vlan = match &s.vlan {
            None => Some(None),
            Some(v) => self
                .number(v, &field("vlan"), 1..=i128::from(MAX_VLAN_ID))
                .and_then(|v| u16::try_from(v).ok())
                .map(Some),
        };
        if let (Some(vip), Some(port), Some(protocol), Some(vlan)) = (vip, port, protocol, vlan) {
            if let Some((first, line)) = seen.listeners.get(&(vip, port, protocol, vlan)) {
                let message = format!(
                    "{vip} port {port}/{protocol} is already served by services[{first}] (line {})",
                    line.line()
                );
                self.error(at(raw), format!("services[{i}]"), message);
            } else {
                seen.listeners
                    .insert((vip, port, protocol, vlan), (i, at(raw)));
            }
        }
        let maglev_size = self.maglev_size(s, &field("maglev_size"));
        let when_no_backend = match &s.when_no_backend {
            None => Some(NoBackendAction::default()),
            Some(action) => self.word(
                action,
                &field("when_no_backend"),
                "an action",
                &[
                    ("drop", NoBackendAction::Drop),
                    ("pass", NoBackendAction::Pass),
                ],
            ),
        };
        let when_backend_down = match &s.when_backend_down {
            None => Some(DownAction::default()),
            Some(action) => self.word(
                action,
                &field("when_backend_down"),
                "an action",
                &[
                    ("keep_flows", DownAction::KeepFlows),
                    ("rebalance", DownAction::Rebalance),
                ],
            ),
        };

        let persistence = self.persistence(s, vip, &field);
        let hash = match &s.hash {
            None => Some(HashMode::default()),
            Some(mode) => self.word(
                mode,
                &field("hash"),
                "a hash mode",
                &[("flow", HashMode::Flow), ("source", HashMode::Source)],
            ),
        };

        let side = ServiceSide {
            name: &s.name.value,
            vip,
            vlan,
        };
        let mut backends = Vec::with_capacity(s.backends.value.len());
        let mut addresses = HashMap::new();
        for (j, backend) in s.backends.value.iter().enumerate() {
            let prefix = format!("services[{i}].backends[{j}]");
            backends.extend(self.backend(&prefix, j, &backend.value, &side, &mut addresses));
        }
        let facts = ServiceFacts {
            side,
            port,
            protocol,
            maglev_size,
            primaries: &addresses,
        };
        let check = self.service_health(i, s, &facts);
        let pools = self.pools(
            i,
            s,
            &PoolContext {
                side,
                port,
                protocol,
                maglev_size,
                check: check.as_ref(),
            },
        );
        let failover = self.service_failover(i, s, &facts, check);
        let mut pool_names: BTreeSet<String> = s
            .pools
            .iter()
            .flat_map(|p| &p.value.0)
            .map(|(name, _)| name.value.clone())
            .collect();
        pool_names.insert(DEFAULT_POOL.to_owned());
        let clients = self.client_rules(i, s, vip, &pool_names);

        if self.errors.len() != before {
            return None;
        }
        let (pools, pool_failover, pool_backends) = pools?;
        let mut failover = failover?;
        failover.backends.extend(pool_backends);
        failover.pools = pool_failover;
        let service = Service {
            name: name?,
            vip: vip?,
            port: port?,
            protocol: protocol?,
            maglev_size: maglev_size?,
            when_no_backend: when_no_backend?,
            when_backend_down: when_backend_down?,
            persistence: persistence?,
            hash: hash?,
            vlan: vlan?,
            backends,
            pools,
            clients: clients?,
        };
        Some((service, failover))
    }

    /// `persistence` (a duration, 0s = off) and `persistence_netmask` (a prefix length of the
    /// VIP's family; the whole address by default).
    fn persistence(
        &mut self,
        s: &RawService,
        vip: Option<IpAddr>,
        field: &dyn Fn(&str) -> String,
    ) -> Option<Option<Persistence>> {
        let timeout = match &s.persistence {
            None => 0,
            Some(t) => {
                let t = self.duration(t, &field("persistence"), &PERSISTENCE)?;
                u32::try_from(t.as_secs()).ok()?
            }
        };
        let full = if vip.is_some_and(|v| v.is_ipv6()) {
            128
        } else {
            32
        };
        let prefix_len = match &s.persistence_netmask {
            None => full,
            Some(mask) if timeout == 0 => {
                self.error(
                    at(mask),
                    field("persistence_netmask"),
                    "persistence_netmask needs persistence (more than 0s) on the same service",
                );
                return None;
            }
            Some(mask) => {
                let m = self.number(mask, &field("persistence_netmask"), 1..=i128::from(full))?;
                u8::try_from(m).ok()?
            }
        };
        Some((timeout > 0).then_some(Persistence {
            timeout_s: timeout,
            prefix_len,
        }))
    }

    fn service_name(&mut self, name: &Spanned<String>, field: &str) -> Option<String> {
        let n = &name.value;
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if !n.is_empty() && n.chars().count() <= MAX_NAME_LEN && n.chars().all(allowed) {
            return Some(n.clone());
        }
        let message = format!(
            "{} is not a valid service name (1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ . -)",
            shown(n)
        );
        self.error(at(name), field, message);
        None
    }

    /// An address that can be a VIP or a backend: not unspecified, loopback, multicast or
    /// broadcast.
    pub(crate) fn address(
        &mut self,
        text: &Spanned<String>,
        field: &str,
        role: &str,
    ) -> Option<IpAddr> {
        let Ok(address) = text.value.parse::<IpAddr>() else {
            let message = format!("{} is not an IPv4 or IPv6 address", shown(&text.value));
            self.error(at(text), field, message);
            return None;
        };
        let kind = if address.is_unspecified() {
            "the unspecified address"
        } else if address.is_loopback() {
            "a loopback address"
        } else if address.is_multicast() {
            "a multicast address"
        } else if address == IpAddr::V4(Ipv4Addr::BROADCAST) {
            "the broadcast address"
        } else if let IpAddr::V6(v6) = address
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            &format!("an IPv4-mapped IPv6 address (write {v4})")
        } else if role == "VIP" {
            return Some(address);
        } else if self.vips.contains(&address) {
            "a VIP of this file"
        } else if self.local.iter().any(|(a, _)| *a == address) {
            "one of this LB's own addresses"
        } else if let Some(what) = self.subnet_edge(address) {
            &what.clone()
        } else {
            return Some(address);
        };
        self.error(
            at(text),
            field,
            format!("{address} is {kind}, it cannot be a {role}"),
        );
        None
    }

    /// "the network address of 10.0.0.0/24 (this LB's subnet)" when `address` is the
    /// network or broadcast address of an IPv4 subnet of the LB's own (prefixes up to /30;
    /// /31 and /32 have neither).
    fn subnet_edge(&self, address: IpAddr) -> Option<String> {
        let IpAddr::V4(address) = address else {
            return None;
        };
        let address = u32::from(address);
        self.local.iter().find_map(|(local, prefix)| {
            let (IpAddr::V4(local), 1..=30) = (local, *prefix) else {
                return None;
            };
            let mask = u32::MAX << (32 - u32::from(*prefix));
            let network = u32::from(*local) & mask;
            let net = format!("{}/{prefix}", Ipv4Addr::from(network));
            if address == network {
                Some(format!("the network address of {net} (this LB's subnet)"))
            } else if address == network | !mask {
                Some(format!("the broadcast address of {net} (this LB's subnet)"))
            } else {
                None
            }
        })
    }

    fn maglev_size(&mut self, s: &RawService, field: &str) -> Option<u32> {
        self.table_size(
            s.maglev_size.as_ref(),
            s.backends.value.len(),
            field,
            MAGLEV_DEFAULT_SIZE,
        )
    }

    /// A Maglev table size (`default` when not given): a prime in range, with a slot for each
    /// of the pool's `backends`.
    pub(crate) fn table_size(
        &mut self,
        size: Option<&Spanned<Number>>,
        backends: usize,
        field: &str,
        default: u32,
    ) -> Option<u32> {
        let Some(size) = size else {
            return Some(default);
        };
        let range = i128::from(MAGLEV_MIN_SIZE)..=i128::from(MAGLEV_MAX_SIZE);
        let Number::Int(v) = &size.value else {
            self.number(size, field, range);
            return None;
        };
        let allowed = format!(
            "{MAGLEV_MIN_SIZE}..={MAGLEV_MAX_SIZE}, a prime; default {MAGLEV_DEFAULT_SIZE}"
        );
        let message = if *v < *range.start() {
            format!("{v} is too small ({allowed})")
        } else if *v > *range.end() {
            format!("{v} is too large ({allowed})")
        } else {
            let v = u32::try_from(*v).ok()?;
            if !is_prime(v) {
                format!("{v} is not prime (try {})", prime_near(v))
            } else if (v as usize) < backends {
                format!(
                    "{v} is smaller than the {backends} backends of the service (each needs a slot)"
                )
            } else {
                return Some(v);
            }
        };
        self.error(at(size), field, message);
        None
    }

    /// Backend `j` of a service; `addresses` holds the service's earlier backends.
    pub(crate) fn backend(
        &mut self,
        prefix: &str,
        j: usize,
        b: &RawBackend,
        service: &ServiceSide<'_>,
        addresses: &mut HashMap<IpAddr, (usize, Location)>,
    ) -> Option<Backend> {
        let vip = service.vip;
        let before = self.errors.len();
        let field = |name: &str| format!("{prefix}.{name}");
        let address = self.address(&b.address, &field("address"), "backend");
        if let Some(address) = address {
            if let Some((first, line)) = addresses.get(&address) {
                let message = format!(
                    "{address} is listed twice in this service (first as backends[{first}], line {})",
                    line.line()
                );
                self.error(at(&b.address), field("address"), message);
            } else {
                addresses.insert(address, (j, at(&b.address)));
            }
        }
        if let (Some(address), Some(vip)) = (address, vip)
            && address.is_ipv4() != vip.is_ipv4()
        {
            let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
            let message = format!(
                "{address} is {} but the service's VIP {vip} is {} (a backend must be of its VIP's family)",
                family(address),
                family(vip)
            );
            self.error(at(&b.address), field("address"), message);
        }
        let weight = match &b.weight {
            None => Some(1),
            Some(w) => self
                .number(w, &field("weight"), 0..=i128::from(MAX_WEIGHT))
                .and_then(|w| u32::try_from(w).ok()),
        };
        let mac = match &b.mac {
            None => Some(None),
            Some(text) => self.mac(text, &field("mac")).map(Some),
        };
        let vlan = match &b.vlan {
            None => Some(None),
            Some(v) => self.backend_vlan(v, &field("vlan"), address, service),
        };
        if self.errors.len() != before {
            return None;
        }
        Some(Backend {
            address: address?,
            weight: weight?,
            mac: mac?,
            vlan: vlan?,
        })
    }

    /// A backend's `vlan`: an id in range, on a service bound to a VLAN (a frame's tag is
    /// rewritten, never pushed). The service's own VLAN is the default and is kept as
    /// `None`.
    fn backend_vlan(
        &mut self,
        v: &Spanned<Number>,
        field: &str,
        address: Option<IpAddr>,
        service: &ServiceSide<'_>,
    ) -> Option<Option<u16>> {
        let vlan = self
            .number(v, field, 1..=i128::from(MAX_VLAN_ID))
            .and_then(|v| u16::try_from(v).ok())?;
        match service.vlan {
            // The service's own `vlan` is wrong, and reported as such.
            None => None,
            Some(Some(own)) => Some((vlan != own).then_some(vlan)),
            Some(None) => {
                let backend = address.map_or_else(|| "this backend".to_owned(), |a| a.to_string());
                let message = format!(
                    "backend {backend} is on VLAN {vlan}, but service {} takes untagged frames \
                     and frames of any VLAN (it has no `vlan:`): xdp-lb rewrites a frame's VLAN \
                     tag, it cannot add one. Bind the service to the VLAN its clients' frames \
                     come on (`vlan: <id>` on the service), or remove the backend's `vlan` (its \
                     frames then keep the tag they came with)",
                    shown(service.name)
                );
                self.error(at(v), field, message);
                None
            }
        }
    }

    fn mac(&mut self, text: &Spanned<String>, field: &str) -> Option<MacAddr> {
        let message = match text.value.parse::<MacAddr>() {
            Err(_) => format!(
                "{} is not a MAC address (expected six hex bytes like 02:00:5e:10:00:01)",
                shown(&text.value)
            ),
            Ok(mac) if mac.is_zero() => {
                format!("{mac} is the all-zero address, not a backend's MAC")
            }
            Ok(mac) if mac.is_multicast() => {
                format!("{mac} is a multicast or broadcast address, not a backend's MAC")
            }
            Ok(mac) => return Some(mac),
        };
        self.error(at(text), field, message);
        None
    }
}
