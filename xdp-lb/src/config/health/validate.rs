//! Validation of `health_check` blocks (a service's, and a server's overrides of it) and
//! of their durations' ranges.

use std::{ops::RangeInclusive, time::Duration};

use serde_saphyr::Spanned;

use super::{
    model::{CheckKind, HealthCheck, HealthState, HttpCheck},
    raw::RawHealthCheck,
};
use crate::config::{
    services::model::Protocol,
    shared::{
        checker::Checker,
        duration::{DurationRule, Resolution, format_duration},
        errors::shown,
        number::{Number, at},
    },
};

/// Shortest and longest `interval`: ten checks a second at most, one an hour at least.
pub(crate) const CHECK_INTERVALS: DurationRule = DurationRule {
    range: Duration::from_millis(100)..=Duration::from_secs(3600),
    resolution: Resolution::Millis,
};

/// Shortest and longest `timeout` (it must also be shorter than the interval).
pub(crate) const CHECK_TIMEOUTS: DurationRule = DurationRule {
    range: Duration::from_millis(10)..=Duration::from_secs(3600),
    resolution: Resolution::Millis,
};

/// `rise`: one good check may bring a server back.
const RISE: RangeInclusive<i128> = 1..=10;

/// `fall`: one lost check never takes a server out.
const FALL: RangeInclusive<i128> = 2..=10;

/// Longest `path` and `expect_body`.
const MAX_HTTP_TEXT: usize = 1024;

impl Checker<'_> {
    /// A service's check: its `health_check` over the defaults (a TCP connect to the
    /// service port). `Some(None)`: the service is not checked (UDP without a
    /// `health_check`); `None`: an error was reported.
    pub(crate) fn service_check(
        &mut self,
        raw: Option<&Spanned<RawHealthCheck>>,
        port: Option<u16>,
        protocol: Option<Protocol>,
        field: &str,
    ) -> Option<Option<HealthCheck>> {
        // An invalid port is reported elsewhere; the block is still checked against a
        // stand-in so all its own errors show at once.
        let defaults = HealthCheck::default_for_port(port.unwrap_or(1));
        match raw {
            None if protocol == Some(Protocol::Udp) => Some(None),
            None => Some(Some(defaults)),
            Some(raw) => self.merge_check(&raw.value, &defaults, field).map(Some),
        }
    }

    /// A server's `health_check` over its service's check `service`. `Some(None)` when it
    /// changes nothing.
    pub(crate) fn server_check(
        &mut self,
        raw: &Spanned<RawHealthCheck>,
        service: Option<&HealthCheck>,
        field: &str,
    ) -> Option<Option<HealthCheck>> {
        let Some(service) = service else {
            self.error(
                at(raw),
                field,
                "this service is not health-checked (a udp service is checked only when it has \
                 a health_check of its own), so its servers cannot change the check",
            );
            return None;
        };
        let merged = self.merge_check(&raw.value, service, field)?;
        Some((merged != *service).then_some(merged))
    }

    /// `raw` over `base`: every key given replaces the base's; a new `kind` starts from that
    /// kind's defaults.
    fn merge_check(
        &mut self,
        raw: &RawHealthCheck,
        base: &HealthCheck,
        field: &str,
    ) -> Option<HealthCheck> {
        let before = self.errors.len();
        let sub = |key: &str| format!("{field}.{key}");
        let mut check = base.clone();
        let mut kind_known = true;
        if let Some(kind) = &raw.kind {
            let words = [("tcp", 0), ("http", 1), ("rtmp", 2), ("dsr", 3)];
            match self.word(kind, &sub("kind"), "a check kind", &words) {
                Some(_) if kind.value == base.kind.name() => {}
                Some(0) => check.kind = CheckKind::Tcp,
                Some(1) => check.kind = CheckKind::Http(HttpCheck::default()),
                Some(2) => check.kind = CheckKind::Rtmp,
                Some(_) => check.kind = CheckKind::Dsr,
                None => kind_known = false,
            }
        }
        if let Some(port) = &raw.port
            && let Some(p) = self.number(port, &sub("port"), 1..=i128::from(u16::MAX))
        {
            check.port = u16::try_from(p).unwrap_or(check.port);
        }
        if kind_known {
            self.http_keys(raw, &mut check.kind, field);
        }
        if let Some(v) = &raw.interval
            && let Some(d) = self.duration(v, &sub("interval"), &CHECK_INTERVALS)
        {
            check.interval = d;
        }
        if let Some(v) = &raw.timeout
            && let Some(d) = self.duration(v, &sub("timeout"), &CHECK_TIMEOUTS)
        {
            check.timeout = d;
        }
        if check.timeout >= check.interval {
            let message = format!(
                "the timeout {} must be shorter than the interval {} (a check ends before the next starts)",
                format_duration(check.timeout),
                format_duration(check.interval)
            );
            match (&raw.timeout, &raw.interval) {
                (Some(t), _) => self.error(at(t), sub("timeout"), message),
                (None, Some(i)) => self.error(at(i), sub("interval"), message),
                (None, None) => {}
            }
        }
        if let Some(rise) = &raw.rise
            && let Some(r) = self.number(rise, &sub("rise"), RISE)
        {
            check.rise = u32::try_from(r).unwrap_or(check.rise);
        }
        if let Some(fall) = &raw.fall {
            match fall.value {
                Number::Int(n) if !FALL.contains(&n) => {
                    let message = format!(
                        "{n} is out of range ({}..={}): one lost check must never take a server out",
                        FALL.start(),
                        FALL.end()
                    );
                    self.error(at(fall), sub("fall"), message);
                }
                _ => {
                    if let Some(f) = self.number(fall, &sub("fall"), FALL) {
                        check.fall = u32::try_from(f).unwrap_or(check.fall);
                    }
                }
            }
        }
        if let Some(state) = &raw.initial_state {
            let words = [("up", HealthState::Up), ("down", HealthState::Down)];
            if let Some(s) = self.word(state, &sub("initial_state"), "a state", &words) {
                check.initial_state = s;
            }
        }
        (self.errors.len() == before).then_some(check)
    }

    /// `path`, `expect_status` and `expect_body`: only for an `http` check.
    fn http_keys(&mut self, raw: &RawHealthCheck, kind: &mut CheckKind, field: &str) {
        let sub = |key: &str| format!("{field}.{key}");
        let CheckKind::Http(http) = kind else {
            let name = kind.name();
            let given = [
                ("path", raw.path.as_ref().map(at)),
                ("expect_status", raw.expect_status.as_ref().map(at)),
                ("expect_body", raw.expect_body.as_ref().map(at)),
            ];
            for (key, location) in given {
                if let Some(location) = location {
                    let message = format!("{key} is for http checks only; this check is {name}");
                    self.error(location, sub(key), message);
                }
            }
            return;
        };
        if let Some(path) = &raw.path {
            let p = &path.value;
            let fine = p.starts_with('/')
                && p.len() <= MAX_HTTP_TEXT
                && !p.chars().any(|c| c.is_whitespace() || c.is_control());
            if fine {
                http.path.clone_from(p);
            } else {
                let message = format!(
                    "{} is not a request path (it starts with /, has no spaces or control characters, and at most {MAX_HTTP_TEXT} bytes)",
                    shown(p)
                );
                self.error(at(path), sub("path"), message);
            }
        }
        if let Some(status) = &raw.expect_status
            && let Some(s) = self.number(status, &sub("expect_status"), 100..=599)
        {
            http.expect_status = u16::try_from(s).unwrap_or(http.expect_status);
        }
        if let Some(body) = &raw.expect_body {
            let b = &body.value;
            if b.len() > MAX_HTTP_TEXT {
                let message = format!("{} bytes is too long (at most {MAX_HTTP_TEXT})", b.len());
                self.error(at(body), sub("expect_body"), message);
            } else {
                // An empty substring is in every body: it means no body check.
                http.expect_body = (!b.is_empty()).then(|| b.clone());
            }
        }
    }
}
