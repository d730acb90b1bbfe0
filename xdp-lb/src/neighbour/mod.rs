//! Backend MAC resolution through the kernel's neighbour table (netlink).
//!
//! L2 direct server return rewrites a frame's destination MAC to the backend's and its source
//! MAC to the LB interface's, so every backend needs two facts from the kernel: the interface
//! it is reached through (a route lookup, `RTM_GETROUTE`, which must not go via a gateway) and
//! its MAC (the ARP/ND table, `RTM_GETNEIGH`). When the table has no usable entry the kernel is
//! asked to resolve it, and the table is polled until an answer appears or time runs out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use rtnetlink::packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::config::MacAddr;

mod error;
mod source;
#[cfg(test)]
mod tests;
mod xdp;

pub use error::NeighbourError;

/// How often the neighbour table is read while the kernel resolves an address.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The discard port: the datagram that makes the kernel resolve an address goes there.
const DISCARD_PORT: u16 = 9;

// Kernel neighbour states (`NUD_*`), as bits: `ndm_state` may carry any of them.
const NUD_REACHABLE: u16 = 0x02;
const NUD_STALE: u16 = 0x04;
const NUD_DELAY: u16 = 0x08;
const NUD_PROBE: u16 = 0x10;
const NUD_FAILED: u16 = 0x20;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// States whose link-layer address the kernel itself would send to.
const NUD_USABLE: u16 =
    NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP;
const NUD_NAMES: [&str; 8] = [
    "INCOMPLETE",
    "REACHABLE",
    "STALE",
    "DELAY",
    "PROBE",
    "FAILED",
    "NOARP",
    "PERMANENT",
];

/// An interface of the LB: where frames to a backend leave, and the source MAC they get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    pub ifindex: u32,
    pub ifname: String,
    pub mac: MacAddr,
}

/// A backend's MAC and the LB interface it is reached through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub mac: MacAddr,
    pub egress: Egress,
}

/// A netlink route connection, in the network namespace it was opened in.
#[derive(Clone, Debug)]
pub struct Neighbours {
    handle: rtnetlink::Handle,
    /// Held through every dump. The kernel refuses a dump on a netlink socket while another
    /// one is still running on it (EBUSY), and every clone shares this connection's socket:
    /// health checkers looking up their source at once failed checks of healthy servers.
    dumps: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The interface whose XDP program sends frames out through `egress`: a VLAN device's
/// frames leave through its parent (XDP sees and keeps the tag), any other device is its
/// own.
pub fn xdp_ifindex(egress: &Egress) -> u32 {
    vlan_parent(&egress.ifname).unwrap_or(egress.ifindex)
}

/// Where the kernel lists its network devices.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// The parent ifindex of a VLAN device (`DEVTYPE=vlan` in sysfs; its `iflink` is then the
/// parent). `None` for anything else, including veth, whose `iflink` is its peer.
fn vlan_parent(ifname: &str) -> Option<u32> {
    vlan_parent_in(std::path::Path::new(SYS_CLASS_NET), ifname)
}

/// The MACs of the VLAN devices on top of interface `parent` (a frame to the LB on one of
/// their VLANs carries its device's MAC, which may differ from the parent's).
pub fn vlan_device_macs(parent: u32) -> Vec<MacAddr> {
    vlan_device_macs_in(std::path::Path::new(SYS_CLASS_NET), parent)
}

/// [`vlan_device_macs`] over a sysfs-like directory `root`.
fn vlan_device_macs_in(root: &std::path::Path, parent: u32) -> Vec<MacAddr> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut macs: Vec<(String, MacAddr)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| vlan_parent_in(root, name) == Some(parent))
        .filter_map(|name| {
            let text = std::fs::read_to_string(root.join(&name).join("address")).ok()?;
            let mac = text.trim().parse::<MacAddr>().ok()?;
            Some((name, mac))
        })
        .collect();
    macs.sort();
    macs.into_iter().map(|(_, mac)| mac).collect()
}

/// [`vlan_parent`] over a sysfs-like directory `root`.
fn vlan_parent_in(root: &std::path::Path, ifname: &str) -> Option<u32> {
    if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
        return None;
    }
    let dir = root.join(ifname);
    let uevent = std::fs::read_to_string(dir.join("uevent")).ok()?;
    if !uevent.lines().any(|l| l == "DEVTYPE=vlan") {
        return None;
    }
    std::fs::read_to_string(dir.join("iflink"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Neighbours {
    /// Opens a netlink connection in the current network namespace (spawns the connection
    /// task on the current tokio runtime).
    pub fn new() -> Result<Self, NeighbourError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| NeighbourError::NoRuntime)?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(NeighbourError::Connect)?;
        runtime.spawn(connection);
        Ok(Self {
            handle,
            dumps: std::sync::Arc::default(),
        })
    }

    /// ifindex and MAC of an interface by name.
    pub async fn interface(&self, name: &str) -> Result<Egress, NeighbourError> {
        // The kernel's limit is IFNAMSIZ - 1 bytes; such names cannot exist.
        if name.is_empty() || name.len() > 15 || name.contains(['\0', '/']) {
            return Err(NeighbourError::NoSuchInterface(name.to_owned()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.get_link(msg).await {
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(NeighbourError::NoSuchInterface(name.to_owned()))
            }
            Err(error) => Err(NeighbourError::Netlink {
                context: format!("looking up interface {name}"),
                error,
            }),
            Ok(link) => egress_of(link),
        }
    }

    /// The interface a backend is reached through (`RTM_GETROUTE` for the address); an error
    /// when the route has a gateway (not on-link) or there is none, or it is a local address of
    /// this host.
    pub async fn egress_for(&self, addr: IpAddr) -> Result<Egress, NeighbourError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(addr);
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        let route = match self.request(RouteNetlinkMessage::GetRoute(msg)).await {
            Ok(RouteNetlinkMessage::NewRoute(route)) => route,
            Ok(other) => return Err(route_error(addr, unexpected(other))),
            Err(e) => match errno(&e) {
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => {
                    return Err(NeighbourError::NoRoute(addr));
                }
                Some(code @ (libc::EACCES | libc::EINVAL)) => {
                    let reason = std::io::Error::from_raw_os_error(code);
                    return Err(NeighbourError::RouteRejected { addr, reason });
                }
                _ => return Err(route_error(addr, e)),
            },
        };
        match route.header.kind {
            RouteType::Unicast => {}
            RouteType::Local => return Err(NeighbourError::LocalAddress(addr)),
            RouteType::Unreachable | RouteType::BlackHole | RouteType::Prohibit => {
                return Err(NeighbourError::NoRoute(addr));
            }
            kind => {
                let kind = format!("{kind:?}").to_lowercase();
                return Err(NeighbourError::NotUnicast { addr, kind });
            }
        }
        let oif = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        });
        let egress = self
            .interface_by_index(oif.ok_or(NeighbourError::NoRoute(addr))?)
            .await?;
        let gateway = route.attributes.iter().find_map(gateway_of);
        match gateway {
            Some(gateway) if gateway != addr => Err(NeighbourError::NotOnLink {
                addr,
                gateway,
                ifname: egress.ifname,
            }),
            _ => Ok(egress),
        }
    }

    /// The backend's MAC from the kernel neighbour table (ARP for IPv4, ND for IPv6) on its
    /// egress interface. When there is no usable entry the kernel is asked to resolve it, and
    /// the table is polled every 50 ms until an entry with a unicast MAC appears or `timeout`
    /// passes. Never returns a zero MAC.
    pub async fn resolve(
        &self,
        addr: IpAddr,
        timeout: Duration,
    ) -> Result<Resolved, NeighbourError> {
        // A timeout too large to add to the clock never expires.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let egress = self.egress_for(addr).await?;
        loop {
            let entry = self.neighbour(addr, &egress).await?;
            if let Some((state, Some(mac))) = entry
                && usable(state, mac, &egress)
            {
                return Ok(Resolved { mac, egress });
            }
            let now = tokio::time::Instant::now();
            let left = deadline.map_or(POLL_INTERVAL, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                let state = describe(entry, &egress);
                return Err(NeighbourError::Unanswered {
                    addr,
                    protocol: if addr.is_ipv4() {
                        "ARP"
                    } else {
                        "neighbour discovery"
                    },
                    ifname: egress.ifname,
                    timeout,
                    state,
                });
            }
            // Missing, NONE or FAILED: nothing is resolving it now. INCOMPLETE is under way,
            // NOARP (or a zero MAC) cannot be helped by asking again.
            if entry.is_none_or(|(state, _)| state == 0 || state & NUD_FAILED != 0) {
                self.trigger(addr, &egress).await?;
            }
            tokio::time::sleep(POLL_INTERVAL.min(left)).await;
        }
    }

    /// The neighbour entry for `addr` on the egress interface: its state bits and MAC.
    async fn neighbour(
        &self,
        addr: IpAddr,
        egress: &Egress,
    ) -> Result<Option<(u16, Option<MacAddr>)>, NeighbourError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(addr);
        msg.header.ifindex = egress.ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(addr.into()));
        let entry = match self.request(RouteNetlinkMessage::GetNeighbour(msg)).await {
            Ok(RouteNetlinkMessage::NewNeighbour(entry)) => entry,
            Err(e) if errno(&e) == Some(libc::ENOENT) => return Ok(None),
            Ok(other) => return Err(neighbour_error(addr, egress, unexpected(other))),
            Err(e) => return Err(neighbour_error(addr, egress, e)),
        };
        let mac = entry.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(lladdr) => mac_of(lladdr),
            _ => None,
        });
        Ok(Some((u16::from(entry.header.state), mac)))
    }

    /// Makes the kernel ARP/ND for `addr`: a netlink `NTF_USE` on the entry (what a packet to
    /// it would do, on exactly the egress interface), plus one datagram to the discard port,
    /// whose queued packet gives the solicitation a source address even where the interface
    /// has none of its own to use (IPv6 without a usable link-local address).
    async fn trigger(&self, addr: IpAddr, egress: &Egress) -> Result<(), NeighbourError> {
        self.handle
            .neighbours()
            .add(egress.ifindex, addr)
            .state(NeighbourState::None)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .map_err(|e| neighbour_error(addr, egress, e))?;
        let unspecified = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        // Best effort: the netlink request above already started resolution.
        let sent = match tokio::net::UdpSocket::bind(SocketAddr::new(unspecified, 0)).await {
            Ok(socket) => socket
                .send_to(&[], SocketAddr::new(addr, DISCARD_PORT))
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            log::debug!("datagram to {addr} port {DISCARD_PORT} to start resolution: {e}");
        }
        Ok(())
    }

    async fn interface_by_index(&self, ifindex: u32) -> Result<Egress, NeighbourError> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        match self.get_link(msg).await {
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(NeighbourError::NoSuchInterfaceIndex(ifindex))
            }
            Err(error) => Err(NeighbourError::Netlink {
                context: format!("looking up interface index {ifindex}"),
                error,
            }),
            Ok(link) => egress_of(link),
        }
    }

    async fn get_link(&self, msg: LinkMessage) -> Result<LinkMessage, rtnetlink::Error> {
        match self.request(RouteNetlinkMessage::GetLink(msg)).await? {
            RouteNetlinkMessage::NewLink(link) => Ok(link),
            other => Err(unexpected(other)),
        }
    }

    /// One request, one answer (not a dump).
    async fn request(
        &self,
        msg: RouteNetlinkMessage,
    ) -> Result<RouteNetlinkMessage, rtnetlink::Error> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST;
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req)?;
        let Some(response) = responses.next().await else {
            return Err(rtnetlink::Error::RequestFailed);
        };
        let (header, payload) = response.into_parts();
        match payload {
            NetlinkPayload::InnerMessage(inner) => Ok(inner),
            NetlinkPayload::Error(e) => Err(rtnetlink::Error::NetlinkError(e)),
            other => Err(rtnetlink::Error::UnexpectedMessage(NetlinkMessage::new(
                header, other,
            ))),
        }
    }
}

fn egress_of(link: LinkMessage) -> Result<Egress, NeighbourError> {
    let mut ifname = format!("index {}", link.header.index);
    let mut mac = None;
    for attr in link.attributes {
        match attr {
            LinkAttribute::IfName(name) => ifname = name,
            LinkAttribute::Address(lladdr) => mac = mac_of(&lladdr),
            _ => {}
        }
    }
    match mac {
        Some(mac) if link.header.link_layer_type == LinkLayerType::Ether && !mac.is_zero() => {
            Ok(Egress {
                ifindex: link.header.index,
                ifname,
                mac,
            })
        }
        _ => Err(NeighbourError::NotEthernet {
            ifname,
            link_type: link.header.link_layer_type.to_string(),
        }),
    }
}

fn gateway_of(attr: &RouteAttribute) -> Option<IpAddr> {
    match attr {
        RouteAttribute::Gateway(RouteAddress::Inet(v4))
        | RouteAttribute::Via(RouteVia::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Gateway(RouteAddress::Inet6(v6))
        | RouteAttribute::Via(RouteVia::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn mac_of(lladdr: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(lladdr).ok().map(MacAddr)
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// Whether frames can go to `mac`: a state the kernel itself would send in, and a unicast
/// MAC that is not the LB's own (a NOARP interface gives its own MAC to every neighbour).
fn usable(state: u16, mac: MacAddr, egress: &Egress) -> bool {
    state & NUD_USABLE != 0 && !mac.is_zero() && !mac.is_multicast() && mac != egress.mac
}

/// "FAILED", "NOARP with MAC 00:00:00:00:00:00", "no entry", ... for error messages.
fn describe(entry: Option<(u16, Option<MacAddr>)>, egress: &Egress) -> String {
    let Some((state, mac)) = entry else {
        return "no entry".to_owned();
    };
    let names: Vec<&str> = NUD_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| state & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect();
    let mut text = if names.is_empty() {
        "NONE".to_owned()
    } else {
        names.join("|")
    };
    if state & NUD_USABLE != 0 {
        match mac {
            Some(mac) if mac == egress.mac => {
                text.push_str(&format!(" with {}'s own MAC {mac}", egress.ifname));
            }
            Some(mac) => text.push_str(&format!(" with MAC {mac}")),
            None => text.push_str(" without a MAC"),
        }
    }
    text
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io().raw_os_error(),
        _ => None,
    }
}

fn unexpected(msg: RouteNetlinkMessage) -> rtnetlink::Error {
    rtnetlink::Error::UnexpectedMessage(NetlinkMessage::from(msg))
}

fn route_error(addr: IpAddr, error: rtnetlink::Error) -> NeighbourError {
    let context = format!("looking up the route to backend {addr}");
    NeighbourError::Netlink { context, error }
}

fn neighbour_error(addr: IpAddr, egress: &Egress, error: rtnetlink::Error) -> NeighbourError {
    let context = format!("resolving backend {addr} on {}", egress.ifname);
    NeighbourError::Netlink { context, error }
}
