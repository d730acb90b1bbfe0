//! IP fragments of a service's datagrams. Only the first fragment carries the ports; it is
//! balanced like any packet of its flow and its backend remembered in `fragments` under the
//! datagram's identity, which the later fragments carry too (as Cilium does).

use xdp_lb_common::{FragmentKey, PROTO_TCP, PROTO_UDP, VipKey};

use crate::{maps::VIPS, parse::Flow};

/// The `fragments` key of the datagram a fragment belongs to.
#[inline(always)]
pub fn key(flow: &Flow) -> FragmentKey {
    FragmentKey {
        src: flow.src,
        dst: flow.service.addr,
        id: flow.fragment_id.unwrap_or(0),
        proto: flow.service.proto,
        family: flow.service.family,
        vlan: flow.service.vlan,
    }
}

/// Whether a fragment is of a TCP or UDP datagram to a VIP: one a backend may be owed.
#[inline(always)]
pub fn to_vip(flow: &Flow) -> bool {
    let proto = flow.service.proto;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return false;
    }
    let vip = VipKey {
        addr: flow.service.addr,
        family: flow.service.family,
        _pad: [0; 3],
    };
    // SAFETY: only presence is read.
    unsafe { VIPS.get(vip) }.is_some()
}
