//! `announce:` as written: the serde schema, read loosely as in `file/raw.rs` and checked
//! in `mod.rs`.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::shared::{duration::RawDuration, number::Number};

/// `announce:` (`mod.rs` checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnnounce {
    #[serde(default)]
    pub table: Option<Spanned<Number>>,
    #[serde(default)]
    pub min_healthy: Option<Spanned<Number>>,
    #[serde(default)]
    pub restore_after: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub warm_up: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub stop_grace: Option<Spanned<RawDuration>>,
}
