//! The operations keys as written (`metrics`, `registration`, `announce`): the serde schema, read
//! loosely as in `raw.rs` and checked in `ops.rs`.

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Spanned<String>,
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistration {
    pub listen: Spanned<String>,
    pub token_file: Spanned<String>,
}

/// `announce:` (`announce.rs` checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnnounce {
    #[serde(default)]
    pub table: Option<Spanned<super::raw::Number>>,
    #[serde(default)]
    pub min_healthy: Option<Spanned<super::raw::Number>>,
    #[serde(default)]
    pub restore_after: Option<Spanned<super::duration::RawDuration>>,
    #[serde(default)]
    pub warm_up: Option<Spanned<super::duration::RawDuration>>,
    #[serde(default)]
    pub stop_grace: Option<Spanned<super::duration::RawDuration>>,
}
