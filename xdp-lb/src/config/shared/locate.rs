//! Turning a serde-saphyr error (YAML syntax, unknown key, wrong type) into a [`ConfigError`]
//! with a field path.
//!
//! serde-saphyr reports where an error is but not under which key; to name the field the
//! document is read a second time as a plain tree of located nodes, and the error's location
//! is looked up in it.

use std::{borrow::Cow, fmt, path::Path};

use serde::{Deserialize, Deserializer, de};
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

use super::errors::{ConfigError, escape_controls};

/// Options for every read of a configuration file: the defaults (which already refuse
/// duplicate keys and bound nesting, aliases and size), without source snippets in errors as
/// we print our own one-line form.
pub(crate) fn options() -> serde_saphyr::Options {
    serde_saphyr::options! { with_snippet: false }
}

/// `error`, found while reading `text` from `path`, as one located error.
pub(crate) fn schema_error(path: &Path, text: &str, error: &serde_saphyr::Error) -> ConfigError {
    let inner = original(error);
    let message = escape_controls(&UserMessageFormatter.format_message(inner));
    let location = error.location().or_else(|| inner.location());
    let (line, column, field) = match location {
        Some(at) if at != Location::UNKNOWN => (
            usize::try_from(at.line()).unwrap_or(usize::MAX),
            usize::try_from(at.column()).unwrap_or(usize::MAX),
            field_at(text, at, about_a_key(&message)).unwrap_or_default(),
        ),
        _ => (1, 1, String::new()),
    };
    ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        field,
        message,
    }
}

/// The error beneath the wrappers that only add a snippet or the alias that led to it.
fn original(mut error: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        match error {
            serde_saphyr::Error::AliasError { error: inner, .. }
            | serde_saphyr::Error::WithSnippet { error: inner, .. } => error = inner,
            _ => return error,
        }
    }
}

/// Whether the error is about a key of a mapping rather than a value: then it is an error of
/// the mapping.
fn about_a_key(message: &str) -> bool {
    ["unknown field", "missing field", "duplicate"]
        .iter()
        .any(|start| message.starts_with(start))
}

/// The path of the field at `at` in `text`, e.g. `services[0].port`. At a key's location, the
/// error is about that key's value unless `about_key`, when it is the mapping's.
fn field_at(text: &str, at: Location, about_key: bool) -> Option<String> {
    // Duplicate keys are kept here, so the second one can be found and named.
    let mut options = options();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    let root: Spanned<Node> = serde_saphyr::from_str_with_options(text, options).ok()?;
    let mut found = None;
    find(&root, &mut String::new(), (at, about_key), &mut found);
    found
}

fn same_place(a: Location, b: Location) -> bool {
    a.line() == b.line() && a.column() == b.column()
}

/// Looks for `at` in `node` (at `path`), first match in document order.
fn find(
    node: &Spanned<Node>,
    path: &mut String,
    (at, about_key): (Location, bool),
    found: &mut Option<String>,
) {
    if found.is_some() {
        return;
    }
    if same_place(node.referenced, at) || same_place(node.defined, at) {
        *found = Some(path.clone());
        return;
    }
    let len = path.len();
    match &node.value {
        Node::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                find(item, path, (at, about_key), found);
                path.truncate(len);
            }
        }
        Node::Map(entries) => {
            for (key, value) in entries {
                let at_key = same_place(key.referenced, at) || same_place(key.defined, at);
                if at_key && about_key {
                    *found = Some(path.clone());
                    return;
                }
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&escape_controls(&key.value.to_string()));
                if at_key {
                    *found = Some(path.clone());
                    return;
                }
                find(value, path, (at, about_key), found);
                path.truncate(len);
            }
        }
        Node::Scalar(_) => {}
    }
}

/// A YAML node, enough to know the structure and the location of each key and value.
enum Node {
    Scalar(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Scalar(text) => f.write_str(text),
            Node::Seq(_) => f.write_str("[..]"),
            Node::Map(_) => f.write_str("{..}"),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn scalar<E>(text: impl Into<Cow<'static, str>>) -> Result<Node, E> {
        Ok(Node::Scalar(text.into().into_owned()))
    }
}

impl<'de> de::Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Self::scalar(v.to_string())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Self::scalar(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Self::scalar(v.to_string())
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Self::scalar(v.to_string())
    }
    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Self::scalar(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Self::scalar(v.to_string())
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Self::scalar(v.to_owned())
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Self::scalar("null")
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Self::scalar("null")
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}
