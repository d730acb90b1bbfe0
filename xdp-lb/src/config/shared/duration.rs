//! Durations in the file: always a number with a unit (`800ms`, `30s`, `1.5s`, `15m`, `1h`).
//!
//! A bare number is refused everywhere: before units were required, `timeout: 30` meant
//! 30 ms in a health check but 30 s in `flow_table`, and an operator coming from
//! keepalived (seconds) was silently wrong. Every key holding a time is read as a
//! [`RawDuration`] and checked with [`Checker::duration`] against its [`DurationRule`];
//! [`parse_duration`] reads the text and [`format_duration`] writes it back.
//!
//! A new key: declare it `Option<Spanned<RawDuration>>` in its raw type, give it a
//! [`DurationRule`] (or reuse one, e.g. `FLOW_TIMEOUTS` of `file/validate.rs` for a flow-table timeout),
//! check it with `self.duration(value, "flow_table.fin_timeout", &RULE)`, and render it with
//! [`format_duration`].

use std::{fmt, ops::RangeInclusive, time::Duration};

use serde::{Deserialize, Deserializer, de};
use serde_saphyr::Spanned;

use super::{checker::Checker, errors::shown, number::at};

/// A duration as written: a bare number (refused, with a hint), a string such as `500ms`,
/// or anything else, kept as a description for the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawDuration {
    Bare(String),
    Text(String),
    Other(String),
}

/// The finest unit a key is counted in by whoever uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    Millis,
    /// The flow table and persistence entries store whole seconds.
    Seconds,
}

/// What one duration key accepts.
#[derive(Clone, Debug)]
pub(crate) struct DurationRule {
    pub range: RangeInclusive<Duration>,
    pub resolution: Resolution,
}

/// Why a text is not a duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// A number without a unit.
    Bare,
    /// Not `NUMBER UNIT` at all.
    Malformed,
    /// Finer than a millisecond (`1.0001s`).
    SubMillisecond,
    /// Larger than any duration a key allows.
    TooLarge,
}

/// Units, largest first (the order [`format_duration`] tries them in).
const UNITS: [(&str, u128); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];

/// Longest fraction read (`1.000000001s` is refused as finer than a millisecond anyway).
const MAX_FRACTION_DIGITS: usize = 9;

/// `text` as a duration: a decimal number (`30`, `1.5`) directly followed by `ms`, `s`,
/// `m` or `h`, a whole number of milliseconds in all.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let is_number = !whole.is_empty()
        && digits(whole)
        && digits(fraction)
        && (fraction.len() <= MAX_FRACTION_DIGITS)
        && (number.len() == whole.len() || !fraction.is_empty());
    if !is_number {
        return Err(DurationError::Malformed);
    }
    if unit.is_empty() {
        return Err(DurationError::Bare);
    }
    let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(DurationError::Malformed);
    };
    let whole: u128 = whole.parse().map_err(|_| DurationError::TooLarge)?;
    let fraction_ms = if fraction.is_empty() {
        0
    } else {
        let denominator = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(0));
        let numerator = fraction.parse::<u128>().unwrap_or(0) * scale;
        if !numerator.is_multiple_of(denominator) {
            return Err(DurationError::SubMillisecond);
        }
        numerator / denominator
    };
    let ms = whole
        .checked_mul(scale)
        .and_then(|ms| ms.checked_add(fraction_ms))
        .and_then(|ms| u64::try_from(ms).ok())
        .ok_or(DurationError::TooLarge)?;
    Ok(Duration::from_millis(ms))
}

/// A duration as the file writes it, in the largest unit that says it exactly: `800ms`,
/// `30s`, `15m`, `1h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let (unit, scale) = UNITS
        .iter()
        .find(|(_, scale)| ms.is_multiple_of(*scale))
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{unit}", ms / scale)
}

impl Checker<'_> {
    /// A duration key: written with a unit, a whole number of `rule.resolution`, within
    /// `rule.range`. Any new key holding a time goes through here.
    pub(crate) fn duration(
        &mut self,
        value: &Spanned<RawDuration>,
        field: &str,
        rule: &DurationRule,
    ) -> Option<Duration> {
        let form = "a number and a unit: 800ms, 30s, 1.5s, 15m, 1h";
        let (text, parsed) = match &value.value {
            RawDuration::Bare(n) => (n, Err(DurationError::Bare)),
            RawDuration::Text(text) => (text, parse_duration(text)),
            RawDuration::Other(what) => {
                let message = format!("expected a duration ({form}), found {what}");
                self.error(at(value), field, message);
                return None;
            }
        };
        let message = match parsed {
            Ok(d) if !rule.resolution.counts(d) => format!(
                "{} is not a whole number of seconds (this key counts seconds)",
                shown(text)
            ),
            Ok(d) if rule.range.contains(&d) => return Some(d),
            Ok(_) | Err(DurationError::TooLarge) => format!(
                "{} is out of range ({}..={})",
                shown(text),
                format_duration(*rule.range.start()),
                format_duration(*rule.range.end())
            ),
            Err(DurationError::Bare) => bare_number_hint(text, rule.resolution),
            Err(DurationError::SubMillisecond) => {
                format!("{} is finer than a millisecond", shown(text))
            }
            Err(DurationError::Malformed) => {
                format!("{} is not a duration (write {form})", shown(text))
            }
        };
        self.error(at(value), field, message);
        None
    }
}

impl Resolution {
    /// Whether `d` is a whole number of this unit (every parsed duration is of `Millis`).
    fn counts(self, d: Duration) -> bool {
        match self {
            Resolution::Millis => true,
            Resolution::Seconds => d.subsec_nanos() == 0,
        }
    }
}

/// What to write instead of the bare number `n`: the unit the key was read in before
/// units were required first, so the fix keeps an old file's meaning.
fn bare_number_hint(n: &str, resolution: Resolution) -> String {
    let ambiguous = "a bare number is ambiguous";
    match resolution {
        Resolution::Millis => format!("{ambiguous}: write {n}ms or {n}s"),
        Resolution::Seconds => {
            let seconds = format!("{n}s");
            match parse_duration(&seconds).map(format_duration) {
                Ok(shorter) if !shorter.ends_with('s') => {
                    format!("{ambiguous}: write {seconds} (or {shorter})")
                }
                _ => format!("{ambiguous}: write {seconds}"),
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = RawDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with a unit (800ms, 30s, 15m, 1h)")
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawDuration, E> {
        Ok(RawDuration::Bare(v.to_string()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawDuration, E> {
        Ok(RawDuration::Other(format!("the boolean {v}")))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawDuration, E> {
        Ok(RawDuration::Text(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<RawDuration, E> {
        Ok(RawDuration::Other("null".to_owned()))
    }
    fn visit_none<E>(self) -> Result<RawDuration, E> {
        Ok(RawDuration::Other("null".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawDuration {
        #[derive(Deserialize)]
        struct Doc {
            d: RawDuration,
        }
        match serde_saphyr::from_str::<Doc>(yaml) {
            Ok(doc) => doc.d,
            Err(e) => panic!("{yaml:?}: {e}"),
        }
    }

    fn ms(text: &str) -> Result<u128, DurationError> {
        parse_duration(text).map(|d| d.as_millis())
    }

    #[test]
    fn numbers_in_the_file_are_kept_as_bare_and_texts_as_written() {
        assert_eq!(raw("d: 500"), RawDuration::Bare("500".to_owned()));
        assert_eq!(raw("d: 1.5"), RawDuration::Bare("1.5".to_owned()));
        assert_eq!(raw("d: 2s"), RawDuration::Text("2s".to_owned()));
        assert_eq!(raw("d: \"30\""), RawDuration::Text("30".to_owned()));
        assert_eq!(
            raw("d: true"),
            RawDuration::Other("the boolean true".to_owned())
        );
    }

    #[test]
    fn every_unit_from_milliseconds_to_hours_is_read() {
        assert_eq!(ms("800ms"), Ok(800));
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("15m"), Ok(900_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("0s"), Ok(0));
    }

    #[test]
    fn fractions_are_read_down_to_the_millisecond() {
        assert_eq!(ms("1.5s"), Ok(1500));
        assert_eq!(ms("0.25m"), Ok(15_000));
        assert_eq!(ms("1.0001s"), Err(DurationError::SubMillisecond));
        assert_eq!(ms("0.5ms"), Err(DurationError::SubMillisecond));
    }

    #[test]
    fn a_number_without_a_unit_is_bare_and_other_forms_are_malformed() {
        assert_eq!(ms("30"), Err(DurationError::Bare));
        assert_eq!(ms("1.5"), Err(DurationError::Bare));
        for bad in [
            "", "s", "ms", "2 s", "-1s", "+3s", "1d", "2sec", ".5s", "5.s", "1.2.3s",
        ] {
            assert_eq!(ms(bad), Err(DurationError::Malformed), "{bad:?}");
        }
        assert_eq!(
            ms(&format!("{}s", "9".repeat(40))),
            Err(DurationError::TooLarge)
        );
    }

    #[test]
    fn durations_are_written_in_the_largest_exact_unit() {
        let s = Duration::from_secs;
        assert_eq!(format_duration(Duration::from_millis(800)), "800ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(s(30)), "30s");
        assert_eq!(format_duration(s(900)), "15m");
        assert_eq!(format_duration(s(7200)), "2h");
        assert_eq!(format_duration(s(90)), "90s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn a_bare_number_gets_the_unit_its_key_used_to_mean() {
        assert_eq!(
            bare_number_hint("300", Resolution::Seconds),
            "a bare number is ambiguous: write 300s (or 5m)"
        );
        assert_eq!(
            bare_number_hint("45", Resolution::Seconds),
            "a bare number is ambiguous: write 45s"
        );
        assert_eq!(
            bare_number_hint("30", Resolution::Millis),
            "a bare number is ambiguous: write 30ms or 30s"
        );
    }
}
