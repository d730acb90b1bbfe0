//! From the file as written ([`RawConfig`]) to the validated [`Config`]: every rule is checked
//! and every violation collected, each with its location and field path.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    ops::RangeInclusive,
    path::Path,
};

use serde_saphyr::{Location, Spanned};
use xdp_lb_common::{
    MAGLEV_DEFAULT_SIZE, MAGLEV_MAX_SIZE, MAGLEV_MIN_SIZE, MAX_BACKENDS, MAX_SERVICES, MAX_WEIGHT,
};

use super::{
    Backend, Config, DEFAULT_FLOW_HASH_SEED, HostFacts, MacAddr, NoBackendAction, Protocol,
    Service, XdpAttachMode,
    errors::{ConfigError, ConfigErrors, shown},
    raw::{Number, RawBackend, RawConfig, RawService, at},
};

/// Largest `maglev_table_slots`: 64 Mi slots (512 MiB of map at 8 bytes a slot).
pub(crate) const MAX_TABLE_SLOTS: u64 = 64 * 1024 * 1024;
/// Tables the default `maglev_table_slots` leaves room for beyond the configured services,
/// so services can be added at run time.
pub(crate) const SPARE_DEFAULT_TABLES: u64 = 4;
/// Longest service name.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Whether `n` is prime (trial division; `n` is at most a few million here).
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// The prime to suggest instead of `n`: the next one up, or the one below when that would
/// be too large.
fn prime_near(n: u32) -> u32 {
    let up = (n..=MAGLEV_MAX_SIZE).find(|&p| is_prime(p));
    up.or_else(|| (MAGLEV_MIN_SIZE..n).rev().find(|&p| is_prime(p)))
        .unwrap_or(MAGLEV_DEFAULT_SIZE)
}

pub(crate) fn validate(
    path: &Path,
    raw: &RawConfig,
    host: &dyn HostFacts,
) -> Result<Config, ConfigErrors> {
    let mut check = Checker {
        path,
        errors: Vec::new(),
    };

    let flow_hash_seed = match &raw.flow_hash_seed {
        None => Some(DEFAULT_FLOW_HASH_SEED),
        Some(seed) => check
            .number(seed, "flow_hash_seed", 0..=i128::from(u32::MAX))
            .and_then(|v| u32::try_from(v).ok()),
    };
    let xdp_mode = match &raw.xdp_mode {
        None => Some(XdpAttachMode::default()),
        Some(mode) => check.word(
            mode,
            "xdp_mode",
            "an XDP attach mode",
            &[
                ("native", XdpAttachMode::Native),
                ("generic", XdpAttachMode::Generic),
            ],
        ),
    };
    let interfaces = check.interfaces(&raw.interfaces, host);

    if raw.services.value.len() > MAX_SERVICES as usize {
        let n = raw.services.value.len();
        check.error(
            at(&raw.services),
            "services",
            format!("{n} services are listed, at most {MAX_SERVICES} are allowed"),
        );
    }
    let mut seen = Seen::default();
    let mut services = Vec::with_capacity(raw.services.value.len());
    // Sum of 2 × maglev_size, known while every size is valid.
    let mut needed_slots = Some(0u64);
    for (i, service) in raw.services.value.iter().enumerate() {
        let checked = check.service(i, service, &mut seen);
        needed_slots = match (&checked, needed_slots) {
            (Some(s), Some(sum)) => Some(sum + 2 * u64::from(s.maglev_size)),
            _ => None,
        };
        services.extend(checked);
    }

    let total_backends: usize = raw
        .services
        .value
        .iter()
        .map(|s| s.value.backends.value.len())
        .sum();
    if total_backends > MAX_BACKENDS as usize {
        check.error(
            at(&raw.services),
            "services",
            format!("{total_backends} backends in total, at most {MAX_BACKENDS} are allowed"),
        );
    }
    let maglev_table_slots = needed_slots.and_then(|needed| check.table_slots(raw, needed));

    match (flow_hash_seed, xdp_mode, interfaces, maglev_table_slots) {
        (Some(flow_hash_seed), Some(xdp_mode), Some(interfaces), Some(maglev_table_slots))
            if check.errors.is_empty() =>
        {
            Ok(Config {
                path: path.to_path_buf(),
                flow_hash_seed,
                xdp_mode,
                interfaces,
                maglev_table_slots,
                services,
            })
        }
        _ => Err(ConfigErrors(check.errors)),
    }
}

/// What earlier services used, for the uniqueness rules.
#[derive(Default)]
struct Seen {
    names: HashMap<String, (usize, Location)>,
    listeners: HashMap<(IpAddr, u16, Protocol), (usize, Location)>,
}

struct Checker<'a> {
    path: &'a Path,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, at: Location, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line: usize::try_from(at.line()).unwrap_or(usize::MAX),
            column: usize::try_from(at.column()).unwrap_or(usize::MAX),
            field: field.into(),
            message: message.into(),
        });
    }

    /// A whole number within `range`.
    fn number(
        &mut self,
        value: &Spanned<Number>,
        field: &str,
        range: RangeInclusive<i128>,
    ) -> Option<i128> {
        let (lo, hi) = (range.start(), range.end());
        match &value.value {
            Number::Int(v) if range.contains(v) => return Some(*v),
            Number::Int(v) => self.error(
                at(value),
                field,
                format!("{v} is out of range ({lo}..={hi})"),
            ),
            Number::NotInt(what) => self.error(
                at(value),
                field,
                format!("expected a whole number in {lo}..={hi}, found {what}"),
            ),
        }
        None
    }

    /// One of a few keywords.
    fn word<T: Copy>(
        &mut self,
        value: &Spanned<String>,
        field: &str,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, v)) = words.iter().find(|(w, _)| *w == value.value) {
            return Some(*v);
        }
        let allowed: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let message = format!(
            "{} is not {what} (expected {})",
            shown(&value.value),
            allowed.join(" or ")
        );
        self.error(at(value), field, message);
        None
    }

    fn interfaces(
        &mut self,
        list: &Spanned<Vec<Spanned<String>>>,
        host: &dyn HostFacts,
    ) -> Option<Vec<String>> {
        let before = self.errors.len();
        if list.value.is_empty() {
            self.error(
                at(list),
                "interfaces",
                "no interface is listed (list at least one, e.g. [eth0])",
            );
        }
        let mut seen: HashMap<&str, Location> = HashMap::new();
        for (i, name) in list.value.iter().enumerate() {
            let field = format!("interfaces[{i}]");
            if let Some(first) = seen.get(name.value.as_str()) {
                let message = format!(
                    "{} is listed twice (first at line {})",
                    shown(&name.value),
                    first.line()
                );
                self.error(at(name), field, message);
                continue;
            }
            seen.insert(&name.value, at(name));
            if !host.interface_exists(&name.value) {
                let message = format!(
                    "interface {} does not exist on this host (see `ip link`)",
                    shown(&name.value)
                );
                self.error(at(name), field, message);
            }
        }
        (self.errors.len() == before).then(|| list.value.iter().map(|n| n.value.clone()).collect())
    }

    fn service(&mut self, i: usize, raw: &Spanned<RawService>, seen: &mut Seen) -> Option<Service> {
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
        if let (Some(vip), Some(port), Some(protocol)) = (vip, port, protocol) {
            if let Some((first, line)) = seen.listeners.get(&(vip, port, protocol)) {
                let message = format!(
                    "{vip} port {port}/{protocol} is already served by services[{first}] (line {})",
                    line.line()
                );
                self.error(at(raw), format!("services[{i}]"), message);
            } else {
                seen.listeners.insert((vip, port, protocol), (i, at(raw)));
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

        let mut backends = Vec::with_capacity(s.backends.value.len());
        let mut addresses = HashMap::new();
        for (j, backend) in s.backends.value.iter().enumerate() {
            let prefix = format!("services[{i}].backends[{j}]");
            backends.extend(self.backend(&prefix, j, &backend.value, vip, &mut addresses));
        }

        if self.errors.len() != before {
            return None;
        }
        Some(Service {
            name: name?,
            vip: vip?,
            port: port?,
            protocol: protocol?,
            maglev_size: maglev_size?,
            when_no_backend: when_no_backend?,
            backends,
        })
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
    fn address(&mut self, text: &Spanned<String>, field: &str, role: &str) -> Option<IpAddr> {
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

    fn maglev_size(&mut self, s: &RawService, field: &str) -> Option<u32> {
        let Some(size) = &s.maglev_size else {
            return Some(MAGLEV_DEFAULT_SIZE);
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
            let backends = s.backends.value.len();
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
    fn backend(
        &mut self,
        prefix: &str,
        j: usize,
        b: &RawBackend,
        vip: Option<IpAddr>,
        addresses: &mut HashMap<IpAddr, (usize, Location)>,
    ) -> Option<Backend> {
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
        if self.errors.len() != before {
            return None;
        }
        Some(Backend {
            address: address?,
            weight: weight?,
            mac: mac?,
        })
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

    /// `maglev_table_slots`: as given, or room for every table plus spare default-size ones.
    fn table_slots(&mut self, raw: &RawConfig, needed: u64) -> Option<u32> {
        let why = "2 × the sum of maglev_size: a live and a next table per service";
        let Some(given) = &raw.maglev_table_slots else {
            if needed > MAX_TABLE_SLOTS {
                let message = format!(
                    "the services' Maglev tables need {needed} slots ({why}), more than the {MAX_TABLE_SLOTS} allowed; use smaller maglev_size values"
                );
                self.error(at(&raw.services), "services", message);
                return None;
            }
            let spare = SPARE_DEFAULT_TABLES * 2 * u64::from(MAGLEV_DEFAULT_SIZE);
            return u32::try_from((needed + spare).min(MAX_TABLE_SLOTS)).ok();
        };
        let least = needed.max(1);
        let v = self.number(given, "maglev_table_slots", 0..=i128::from(MAX_TABLE_SLOTS))?;
        let v = u64::try_from(v).ok()?;
        if v < least {
            let message = format!(
                "{v} slots cannot hold the services' tables: at least {least} are needed ({why})"
            );
            self.error(at(given), "maglev_table_slots", message);
            return None;
        }
        u32::try_from(v).ok()
    }
}
