//! YAML scalars for the effective configuration: a string plain or quoted as it needs, an
//! address (IPv6 quoted), a server's `vlan` line. Every section's `render.rs` writes with
//! these.

use std::{fmt::Write as _, net::IpAddr};

/// A server's `vlan`: its own, else its service's (with a comment saying so); nothing for
/// a service that takes any VLAN.
pub(crate) fn vlan_line(
    out: &mut String,
    indent: &str,
    own: Option<u16>,
    service: Option<u16>,
) -> std::fmt::Result {
    match (own, service) {
        (Some(vlan), _) => writeln!(out, "{indent}vlan: {vlan}"),
        (None, Some(vlan)) => writeln!(out, "{indent}vlan: {vlan}  # the service's: tags kept"),
        (None, None) => Ok(()),
    }
}

/// An address as a YAML scalar. IPv6 addresses are quoted: one ending in `:` (`fe80::`)
/// would otherwise read as a mapping key.
pub(crate) fn address(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"{v6}\""),
    }
}

/// A string as a YAML scalar: plain when that reads back as the same string, double-quoted
/// otherwise.
pub(crate) fn string(text: &str) -> String {
    let plain = text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !RESERVED.iter().any(|w| w.eq_ignore_ascii_case(text));
    if plain {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Plain scalars some YAML readers take for booleans or null.
const RESERVED: &[&str] = &["null", "true", "false", "yes", "no", "on", "off", "y", "n"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_plain_and_others_are_quoted() {
        assert_eq!(string("eth0"), "eth0");
        assert_eq!(string("video-rtmp"), "video-rtmp");
        assert_eq!(string("123"), "\"123\"");
        assert_eq!(string("no"), "\"no\"");
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn ipv6_addresses_are_quoted() {
        assert_eq!(address("fe80::".parse().unwrap()), "\"fe80::\"");
        assert_eq!(address("10.0.0.1".parse().unwrap()), "10.0.0.1");
    }
}
