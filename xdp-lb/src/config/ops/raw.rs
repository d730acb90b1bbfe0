//! The operations keys as written (`metrics:`, `registration:`): the serde schema, read
//! loosely as in `file/raw.rs` and checked in `mod.rs`.

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
