//! The top-level `notify:` as written: the serde schema, read loosely as in `file/raw.rs`
//! and checked in `validate.rs`. (A primary's `backup` and a pool's `fallback` are keys of
//! `services/backend.rs` and `services/raw.rs`.)

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::shared::duration::RawDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    pub command: Spanned<String>,
    #[serde(default)]
    pub timeout: Option<Spanned<RawDuration>>,
}
