//! `sync:` as written: the serde schema, read loosely as in `file/raw.rs` and checked in
//! `mod.rs`.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::shared::{duration::RawDuration, number::Number};

/// `sync:` (`mod.rs` checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSync {
    pub peers: Spanned<Vec<Spanned<String>>>,
    pub key_file: Spanned<String>,
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<Number>>,
    #[serde(default)]
    pub refresh: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub max_rate: Option<Spanned<Number>>,
    #[serde(default)]
    pub max_clock_skew: Option<Spanned<RawDuration>>,
}
