//! A service's `pools:` and `clients:` as written: the serde schema, read loosely as in
//! `file/raw.rs` and checked in `validate.rs`.

use std::fmt;

use serde::{Deserialize, Deserializer, de};
use serde_saphyr::Spanned;

use crate::config::{
    health::raw::RawHealthCheck, services::backend::RawBackend, shared::number::Number,
};

/// `pools:` — a mapping of pool name to pool, kept in file order with each name's location.
#[derive(Debug, Default)]
pub(crate) struct RawPools(pub Vec<(Spanned<String>, Spanned<RawPool>)>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub backends: Spanned<Vec<Spanned<RawBackend>>>,
    #[serde(default)]
    pub maglev_size: Option<Spanned<Number>>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
    #[serde(default)]
    pub fallback: Option<Spanned<Vec<Spanned<RawBackend>>>>,
}

/// One entry of `clients:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientRule {
    pub prefix: Spanned<String>,
    #[serde(default)]
    pub pool: Option<Spanned<String>>,
    #[serde(default)]
    pub action: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawPools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PoolsVisitor)
    }
}

struct PoolsVisitor;

impl<'de> de::Visitor<'de> for PoolsVisitor {
    type Value = RawPools;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of pool names to pools (name: {backends: [...]})")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RawPools, A::Error> {
        let mut pools = Vec::new();
        while let Some(entry) = map.next_entry::<Spanned<String>, Spanned<RawPool>>()? {
            pools.push(entry);
        }
        Ok(RawPools(pools))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_keep_their_file_order_and_the_line_of_each_name() {
        #[derive(Deserialize)]
        struct Doc {
            pools: RawPools,
        }
        let yaml = "pools:\n  zeta:\n    backends: []\n  alpha:\n    backends: []\n";
        let doc: Doc = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<(&str, u64)> = doc
            .pools
            .0
            .iter()
            .map(|(name, _)| (name.value.as_str(), name.referenced.line()))
            .collect();
        assert_eq!(names, [("zeta", 2), ("alpha", 4)]);
    }
}
