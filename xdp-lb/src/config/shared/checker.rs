//! The validation pass ([`Checker`]): the errors found so far, each with its location and
//! field path, what rules need to know of the whole file (its VIPs, the host's addresses),
//! and the checks every section uses (a number in a range, one of a few words). Each
//! section adds its own checks, as more methods, in its `validate.rs`.

use std::{ops::RangeInclusive, path::Path};

use serde_saphyr::{Location, Spanned};

use super::{
    errors::{ConfigError, shown},
    number::{Number, at},
};

/// Longest service name.
pub(crate) const MAX_NAME_LEN: usize = 64;

pub(crate) struct Checker<'a> {
    pub(crate) path: &'a Path,
    pub(crate) errors: Vec<ConfigError>,
    /// Every VIP the file names (none can be a server too).
    pub(crate) vips: std::collections::BTreeSet<std::net::IpAddr>,
    /// The host's own addresses and their prefix lengths (no server can be one of them, nor
    /// the network or broadcast address of an IPv4 subnet of theirs).
    pub(crate) local: Vec<(std::net::IpAddr, u8)>,
}

impl Checker<'_> {
    pub(crate) fn error(
        &mut self,
        at: Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line: usize::try_from(at.line()).unwrap_or(usize::MAX),
            column: usize::try_from(at.column()).unwrap_or(usize::MAX),
            field: field.into(),
            message: message.into(),
        });
    }

    /// A whole number within `range`.
    pub(crate) fn number(
        &mut self,
        value: &Spanned<Number>,
        field: &str,
        range: RangeInclusive<i128>,
    ) -> Option<i128> {
        let (lo, hi) = (range.start(), range.end());
        match &value.value {
            Number::Int(v) if range.contains(v) => return Some(*v),
            Number::Int(v) => self.error(
                at(value),
                field,
                format!("{v} is out of range ({lo}..={hi})"),
            ),
            Number::NotInt(what) => self.error(
                at(value),
                field,
                format!("expected a whole number in {lo}..={hi}, found {what}"),
            ),
        }
        None
    }

    /// One of a few keywords.
    pub(crate) fn word<T: Copy>(
        &mut self,
        value: &Spanned<String>,
        field: &str,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, v)) = words.iter().find(|(w, _)| *w == value.value) {
            return Some(*v);
        }
        let allowed: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let message = format!(
            "{} is not {what} (expected {})",
            shown(&value.value),
            allowed.join(" or ")
        );
        self.error(at(value), field, message);
        None
    }
}
