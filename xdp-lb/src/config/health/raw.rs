//! A `health_check:` block as written (a service's, a pool's or a server's): the serde
//! schema, read loosely as in `file/raw.rs` and checked in `validate.rs`.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::shared::{duration::RawDuration, number::Number};

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
