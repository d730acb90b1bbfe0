//! Client prefixes of client rules: `198.51.100.0/24`, `2001:db8:7::/48`, or a bare address
//! for one client. The host bits must be zero, so a prefix is written one way only.

use std::{fmt, net::IpAddr, str::FromStr};

/// An IPv4 or IPv6 prefix with its host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientPrefix {
    addr: IpAddr,
    len: u8,
}

/// Why a text is not a client prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("`{0}` is not an IPv4 or IPv6 prefix (expected ADDRESS/LENGTH like 198.51.100.0/24)")]
    Malformed(String),
    #[error("/{len} is longer than an {family} address (at most /{max})")]
    TooLong {
        len: u32,
        family: &'static str,
        max: u8,
    },
    #[error("{text} has host bits set (did you mean {suggest}?)")]
    HostBits { text: String, suggest: ClientPrefix },
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

/// `addr` with every bit after the first `len` cleared.
fn masked(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

impl ClientPrefix {
    /// `addr/len`, or why not (a length beyond the family's, host bits set).
    pub fn new(addr: IpAddr, len: u32) -> Result<Self, PrefixError> {
        let max = max_len(addr);
        let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
        let len_u8 = u8::try_from(len)
            .ok()
            .filter(|l| *l <= max)
            .ok_or(PrefixError::TooLong { len, family, max })?;
        let net = masked(addr, len_u8);
        if net != addr {
            return Err(PrefixError::HostBits {
                text: format!("{addr}/{len}"),
                suggest: Self {
                    addr: net,
                    len: len_u8,
                },
            });
        }
        Ok(Self { addr, len: len_u8 })
    }

    /// The prefix of exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(addr),
        }
    }

    /// Its first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Its length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `client` is in the prefix.
    pub fn contains(&self, client: IpAddr) -> bool {
        client.is_ipv4() == self.addr.is_ipv4() && masked(client, self.len) == self.addr
    }
}

impl FromStr for ClientPrefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || PrefixError::Malformed(text.to_owned());
        match text.split_once('/') {
            None => text.parse().map(Self::host).map_err(|_| malformed()),
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| malformed())?;
                if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed());
                }
                let len: u32 = len.parse().map_err(|_| malformed())?;
                Self::new(addr, len)
            }
        }
    }
}

impl fmt::Display for ClientPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for ClientPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClientPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> ClientPrefix {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn prefixes_of_both_families_and_any_length_parse_and_print_back() {
        for text in [
            "198.51.100.0/24",
            "0.0.0.0/0",
            "198.51.100.7/32",
            "2001:db8:7::/48",
            "::/0",
        ] {
            assert_eq!(prefix(text).to_string(), text);
        }
        assert_eq!(prefix("198.51.100.7"), prefix("198.51.100.7/32"));
        assert_eq!(prefix("2001:db8::1").prefix_len(), 128);
    }

    #[test]
    fn host_bits_lengths_and_garbage_are_refused_with_the_reason() {
        assert_eq!(
            "198.51.100.1/24"
                .parse::<ClientPrefix>()
                .unwrap_err()
                .to_string(),
            "198.51.100.1/24 has host bits set (did you mean 198.51.100.0/24?)"
        );
        assert_eq!(
            "10.0.0.0/33"
                .parse::<ClientPrefix>()
                .unwrap_err()
                .to_string(),
            "/33 is longer than an IPv4 address (at most /32)"
        );
        for bad in [
            "",
            "/24",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "10.0.0.0/0024",
            "net",
        ] {
            assert!(bad.parse::<ClientPrefix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_prefix_contains_exactly_the_addresses_under_it() {
        let p = prefix("198.51.100.0/24");
        assert!(p.contains("198.51.100.255".parse().unwrap()));
        assert!(!p.contains("198.51.101.0".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        assert!(prefix("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert!(prefix("2001:db8:7::/48").contains("2001:db8:7:ffff::1".parse().unwrap()));
    }
}
