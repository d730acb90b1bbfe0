//! The failover keys as written (`health_check`, `notify` and durations): the serde
//! schema, read loosely as in `raw.rs` and checked in `health.rs` and `standby.rs`.

use std::fmt;

use serde::{Deserialize, Deserializer, de};
use serde_saphyr::Spanned;

use super::raw::Number;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<Number>>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub expect_status: Option<Spanned<Number>>,
    #[serde(default)]
    pub expect_body: Option<Spanned<String>>,
    #[serde(default)]
    pub interval: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub rise: Option<Spanned<Number>>,
    #[serde(default)]
    pub fall: Option<Spanned<Number>>,
    #[serde(default)]
    pub initial_state: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub command: Spanned<String>,
    #[serde(default)]
    pub timeout: Option<Spanned<RawDuration>>,
}

/// A duration as written: a whole number (milliseconds), a string such as `500ms` or `2s`,
/// or anything else, kept as a description for the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawDuration {
    Millis(i128),
    Text(String),
    Other(String),
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
        f.write_str("a duration (500ms, 2s, or a whole number of milliseconds)")
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawDuration, E> {
        Ok(RawDuration::Millis(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawDuration, E> {
        Ok(RawDuration::Millis(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawDuration, E> {
        Ok(RawDuration::Millis(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<RawDuration, E> {
        Ok(i128::try_from(v)
            .map_or_else(|_| RawDuration::Other(v.to_string()), RawDuration::Millis))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawDuration, E> {
        Ok(RawDuration::Other(format!("the floating-point number {v}")))
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

/// Milliseconds of `text` (`500ms`, `2s`), or `None` when it is not such a duration.
pub(crate) fn parse_duration_text(text: &str) -> Option<u128> {
    let (digits, scale) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1000)
    } else {
        return None;
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    digits.parse::<u128>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(yaml: &str) -> RawDuration {
        #[derive(Deserialize)]
        struct Doc {
            d: RawDuration,
        }
        match serde_saphyr::from_str::<Doc>(yaml) {
            Ok(doc) => doc.d,
            Err(e) => panic!("{yaml:?}: {e}"),
        }
    }

    #[test]
    fn durations_are_read_as_milliseconds_or_text() {
        assert_eq!(duration("d: 500"), RawDuration::Millis(500));
        assert_eq!(duration("d: 2s"), RawDuration::Text("2s".to_owned()));
        assert_eq!(
            duration("d: 1.5"),
            RawDuration::Other("the floating-point number 1.5".to_owned())
        );
    }

    #[test]
    fn duration_texts_take_ms_and_s_suffixes_only() {
        assert_eq!(parse_duration_text("500ms"), Some(500));
        assert_eq!(parse_duration_text("2s"), Some(2000));
        assert_eq!(parse_duration_text("0s"), Some(0));
        for bad in [
            "",
            "s",
            "ms",
            "1.5s",
            "2 s",
            "-1s",
            "2m",
            "1h",
            "+3s",
            "9".repeat(40).as_str(),
        ] {
            assert_eq!(parse_duration_text(bad), None, "{bad:?}");
        }
    }
}
