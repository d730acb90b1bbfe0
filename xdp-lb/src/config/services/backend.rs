//! One server entry (`backends:`, and the servers of pools and fallbacks): as written
//! ([`RawBackend`]) and as validated ([`Backend`], with its [`MacAddr`]).

use std::{fmt, net::IpAddr, str::FromStr};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{
    health::raw::RawHealthCheck,
    shared::{
        number::Number,
        yaml::{address, vlan_line},
    },
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub address: Spanned<String>,
    #[serde(default)]
    pub weight: Option<Spanned<Number>>,
    #[serde(default)]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    pub vlan: Option<Spanned<Number>>,
    #[serde(default)]
    pub backup: Option<Spanned<String>>,
    #[serde(default)]
    pub health_check: Option<Spanned<RawHealthCheck>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub address: IpAddr,
    /// 0..=MAX_WEIGHT; 0 takes no new flows.
    pub weight: u32,
    /// Given in the config; otherwise resolved from the kernel's neighbour table.
    pub mac: Option<MacAddr>,
    /// The VLAN the backend is on when it is not its service's: its frames leave with their
    /// outer tag's VLAN id rewritten to this. `None`: the service's VLAN (the tag is kept).
    /// Only a VLAN-bound service's backends have one (a tag is rewritten, never pushed).
    pub vlan: Option<u16>,
}

impl Backend {
    /// The server as a list item of the effective configuration (`file/render.rs`): its
    /// address at `indent` (the item's dash there), then its weight, MAC and VLAN
    /// (`service_vlan`: its service's) two columns further in.
    pub(crate) fn render(
        &self,
        out: &mut String,
        indent: &str,
        service_vlan: Option<u16>,
    ) -> std::fmt::Result {
        use std::fmt::Write as _;
        writeln!(out, "{indent}- address: {}", address(self.address))?;
        writeln!(out, "{indent}  weight: {}", self.weight)?;
        match self.mac {
            Some(mac) => writeln!(out, "{indent}  mac: {mac}")?,
            None => writeln!(
                out,
                "{indent}  mac: null  # resolved from the neighbour table at start"
            )?,
        }
        vlan_line(out, &format!("{indent}  "), self.vlan, service_vlan)
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
    /// Group (multicast or broadcast) addresses can never name one backend.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex bytes like 02:00:5e:10:00:01)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_with_colons_or_dashes_and_print_with_colons() {
        let mac: MacAddr = "02:00:5E:10:00:01".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
        assert_eq!(mac.to_string(), "02:00:5e:10:00:01");
        assert_eq!("02-00-5e-10-00-01".parse::<MacAddr>().unwrap(), mac);
    }

    #[test]
    fn malformed_mac_addresses_are_refused() {
        for bad in [
            "",
            "02:00:5e:10:00",
            "02:00:5e:10:00:01:02",
            "2:00:5e:10:00:01",
            "zz:00:5e:10:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} parsed");
        }
    }
}
