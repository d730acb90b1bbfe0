//! Errors of the configuration file: every one names the file, line, column and field.

use std::{fmt, path::PathBuf};

/// One thing wrong with a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub path: PathBuf,
    /// 1-based line of the offending value; 0 when the error is about the whole file (it
    /// could not be read).
    pub line: usize,
    /// 1-based column of the offending value; 0 with `line` 0.
    pub column: usize,
    /// Where in the document, e.g. `services[0].backends[1].weight`; empty for the top level
    /// or when the YAML itself is malformed.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE:COL: FIELD: MESSAGE`, dropping the parts that are unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every error found in one configuration file, in the order they were found (the order of
/// the file for per-field errors, then the errors about the file as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A value from the file, shown in a message: between backticks, with control characters
/// escaped so one error stays on one line.
pub(crate) fn shown(text: &str) -> String {
    format!("`{}`", escape_controls(&clipped(text)))
}

/// The most characters of a quoted value shown in a message or log line.
const SHOWN_CHARS: usize = 64;

/// `text`, or its first [`SHOWN_CHARS`] characters and how long it was: a 50 MB service
/// name must not become a 50 MB log line and reply.
pub(crate) fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => {
            std::borrow::Cow::Owned(format!("{}... ({} bytes in all)", &text[..end], text.len()))
        }
    }
}

/// A value from outside (a request's name, a client's header) for a log line or a reply:
/// control characters escaped, clipped, quoted.
pub fn quoted(text: &str) -> String {
    shown(text)
}

/// `text` with control characters (newlines, escapes) written as Rust escapes.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: usize, field: &str) -> ConfigError {
        ConfigError {
            path: PathBuf::from("/etc/xdp-lb/xdp-lb.yaml"),
            line,
            column: 17,
            field: field.to_owned(),
            message: "5000 is out of range (0..=1000)".to_owned(),
        }
    }

    #[test]
    fn an_error_shows_file_line_column_field_and_message() {
        assert_eq!(
            error(12, "services[0].backends[1].weight").to_string(),
            "/etc/xdp-lb/xdp-lb.yaml:12:17: services[0].backends[1].weight: 5000 is out of range (0..=1000)"
        );
    }

    #[test]
    fn an_error_without_line_or_field_leaves_them_out() {
        let mut e = error(0, "");
        e.column = 0;
        assert_eq!(
            e.to_string(),
            "/etc/xdp-lb/xdp-lb.yaml: 5000 is out of range (0..=1000)"
        );
    }

    #[test]
    fn several_errors_show_one_per_line() {
        let errors = ConfigErrors(vec![error(3, "a"), error(4, "b")]);
        assert_eq!(errors.to_string().lines().count(), 2);
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn values_with_control_characters_stay_on_one_line() {
        assert_eq!(shown("a\nb\u{1b}"), "`a\\nb\\u{1b}`");
    }
}

#[cfg(test)]
mod quoting_tests {
    use super::*;

    #[test]
    fn a_long_value_is_clipped_and_control_characters_escaped() {
        assert_eq!(shown("web"), "`web`");
        assert_eq!(shown("a\nb\u{1b}[31m"), "`a\\nb\\u{1b}[31m`");
        let long = "x".repeat(50_000_000);
        let shown = shown(&long);
        assert!(shown.len() < 120, "{} bytes", shown.len());
        assert!(shown.ends_with("... (50000000 bytes in all)`"), "{shown}");
        // Clipped on a character boundary.
        let wide = "é".repeat(100);
        assert!(clipped(&wide).starts_with(&"é".repeat(64)));
    }
}
