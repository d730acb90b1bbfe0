// YAML is read with serde-saphyr rather than the archived serde_yaml: it is pure Rust,
// designed and fuzzed not to panic on any input, and its errors and `Spanned<T>` values
// carry the line and column we need to point operators at the exact place in the file.

//! The file as written: the serde schema. Every value keeps its location (`Spanned`) so
//! validation can point at it; values whose check gives a better message than serde's
//! (addresses, names, enumerations, numbers) are read loosely here and checked in
//! `validate.rs`, so all their errors are reported at once.

use std::fmt;

use serde::{Deserialize, Deserializer, de};
use serde_saphyr::{Location, Spanned};

use super::{
    duration::RawDuration,
    raw_failover::{RawHealthCheck, RawNotify},
    raw_ops::{RawAnnounce, RawMetrics, RawRegistration},
    raw_pools::{RawClientRule, RawPools},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub flow_hash_seed: Option<Spanned<Number>>,
    #[serde(default)]
    pub xdp_mode: Option<Spanned<String>>,
    pub interfaces: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub maglev_table_slots: Option<Spanned<Number>>,
    #[serde(default)]
    pub flow_table: Option<Spanned<RawFlowTable>>,
    #[serde(default)]
    pub notify: Option<Spanned<RawNotify>>,
    #[serde(default)]
    pub metrics: Option<Spanned<RawMetrics>>,
    #[serde(default)]
    pub registration: Option<Spanned<RawRegistration>>,
    #[serde(default)]
    pub announce: Option<Spanned<RawAnnounce>>,
    pub services: Spanned<Vec<Spanned<RawService>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlowTable {
    #[serde(default)]
    pub size: Option<Spanned<Number>>,
    #[serde(default)]
    pub tcp_timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub udp_timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub tcp_fin_timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub tcp_close_timeout: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Spanned<String>,
    pub vip: Spanned<String>,
    pub port: Spanned<Number>,
    pub protocol: Spanned<String>,
    #[serde(default)]
    pub maglev_size: Option<Spanned<Number>>,
    #[serde(default)]
    pub when_no_backend: Option<Spanned<String>>,
    #[serde(default)]
    pub when_backend_down: Option<Spanned<String>>,
    #[serde(default)]
    pub persistence: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub persistence_netmask: Option<Spanned<Number>>,
    #[serde(default)]
    pub hash: Option<Spanned<String>>,
    #[serde(default)]
    pub vlan: Option<Spanned<Number>>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
    #[serde(default)]
    pub fallback: Option<Spanned<Vec<Spanned<RawBackend>>>>,
    pub backends: Spanned<Vec<Spanned<RawBackend>>>,
    #[serde(default)]
    pub pools: Option<Spanned<RawPools>>,
    #[serde(default)]
    pub clients: Option<Spanned<Vec<Spanned<RawClientRule>>>>,
    /// Read with `announce:` (`announce.rs`).
    #[serde(default)]
    pub min_healthy: Option<Spanned<Number>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub address: Spanned<String>,
    #[serde(default)]
    pub weight: Option<Spanned<Number>>,
    #[serde(default)]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    pub vlan: Option<Spanned<Number>>,
    #[serde(default)]
    pub backup: Option<Spanned<String>>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
}

/// A number as written: a whole number (decimal, `0x` hex, `0o` octal), or any other scalar,
/// kept as a description for the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Number {
    Int(i128),
    NotInt(String),
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl<'de> de::Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }
    fn visit_i64<E>(self, v: i64) -> Result<Number, E> {
        Ok(Number::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Number, E> {
        Ok(Number::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Number, E> {
        Ok(Number::Int(v))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Number, E> {
        Ok(i128::try_from(v).map_or_else(|_| Number::NotInt(v.to_string()), Number::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Number, E> {
        Ok(Number::NotInt(format!("the floating-point number {v}")))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Number, E> {
        Ok(Number::NotInt(format!("the boolean {v}")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Number, E> {
        Ok(Number::NotInt(format!(
            "the string {}",
            super::errors::shown(v)
        )))
    }
    fn visit_unit<E>(self) -> Result<Number, E> {
        Ok(Number::NotInt("null".to_owned()))
    }
    fn visit_none<E>(self) -> Result<Number, E> {
        Ok(Number::NotInt("null".to_owned()))
    }
}

/// Where a value is written: for a value reached through an alias (`*name`), the anchored
/// definition, which is what the operator has to edit.
pub(crate) fn at<T>(value: &Spanned<T>) -> Location {
    value.defined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(yaml: &str) -> Number {
        #[derive(Deserialize)]
        struct Doc {
            n: Number,
        }
        match serde_saphyr::from_str::<Doc>(yaml) {
            Ok(doc) => doc.n,
            Err(e) => panic!("{yaml:?}: {e}"),
        }
    }

    #[test]
    fn numbers_are_read_in_decimal_hex_and_octal() {
        assert_eq!(number("n: 1935"), Number::Int(1935));
        assert_eq!(number("n: 0x5eed1b5d"), Number::Int(0x5eed_1b5d));
        assert_eq!(number("n: 0o17"), Number::Int(15));
        assert_eq!(number("n: -3"), Number::Int(-3));
    }

    #[test]
    fn other_scalars_are_kept_for_the_error_message() {
        assert_eq!(
            number("n: \"12\""),
            Number::NotInt("the string `12`".to_owned())
        );
        assert_eq!(
            number("n: 1.5"),
            Number::NotInt("the floating-point number 1.5".to_owned())
        );
        assert_eq!(
            number("n: true"),
            Number::NotInt("the boolean true".to_owned())
        );
        assert_eq!(number("n: ~"), Number::NotInt("null".to_owned()));
    }
}
