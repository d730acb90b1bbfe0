//! What a service's servers are checked against wherever they are written (its backends,
//! its pools' servers, its backups and fallback servers): [`ServiceSide`], shared by
//! `services/validate.rs`, `pools/validate.rs` and `failover/validate.rs`.

use std::net::IpAddr;

use serde_saphyr::Spanned;
use xdp_lb_common::MAX_VLAN_ID;

use crate::config::shared::number::Number;

/// What a service's servers are checked against: its name (for messages), its VIP (a
/// server is of its family) and its VLAN (a server's own VLAN needs one).
#[derive(Clone, Copy)]
pub(crate) struct ServiceSide<'a> {
    pub name: &'a str,
    pub vip: Option<IpAddr>,
    /// The service's `vlan` (`Some(None)`: it takes any VLAN and untagged frames); `None`
    /// when it did not validate.
    pub vlan: Option<Option<u16>>,
}

impl ServiceSide<'_> {
    /// The VLAN a server written with `vlan` is on when it is not the service's (what its
    /// entry rewrites the tag to), without reporting anything: for a backup, which is on
    /// the VLAN of the primary it stands in for. `None` when the value is refused (the
    /// primary's own check reports it).
    pub(crate) fn own_vlan(&self, vlan: Option<&Spanned<Number>>) -> Option<Option<u16>> {
        let Some(written) = vlan else {
            return Some(None);
        };
        let Number::Int(v) = written.value else {
            return None;
        };
        let v = u16::try_from(v)
            .ok()
            .filter(|v| (1..=MAX_VLAN_ID).contains(v))?;
        match self.vlan {
            Some(Some(own)) => Some((own != v).then_some(v)),
            _ => None,
        }
    }
}
