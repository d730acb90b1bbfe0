//! What can go wrong finding a backend's MAC, worded for the operator. Each message is whole:
//! the underlying error is part of the text, not a separate `source`.

use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("cannot open a netlink route socket: {0}")]
    Connect(std::io::Error),
    #[error("neighbour resolution needs a tokio runtime, and none is running")]
    NoRuntime,
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface with index {0} does not exist")]
    NoSuchInterfaceIndex(u32),
    #[error(
        "interface {ifname} is not an Ethernet interface with a MAC address (link type \
         {link_type}); direct server return rewrites Ethernet MACs"
    )]
    NotEthernet { ifname: String, link_type: String },
    #[error("no route to backend {0}")]
    NoRoute(IpAddr),
    #[error(
        "the kernel refuses to route to backend {addr} ({reason}); is there a blackhole or \
         prohibit route?"
    )]
    RouteRejected {
        addr: IpAddr,
        reason: std::io::Error,
    },
    #[error(
        "backend {addr} is not on a directly connected network (the route goes via gateway \
         {gateway} on {ifname}); direct server return needs backends on the LB's L2 segment"
    )]
    NotOnLink {
        addr: IpAddr,
        gateway: IpAddr,
        ifname: String,
    },
    #[error("backend {0} is a local address of this host; a backend must be another machine")]
    LocalAddress(IpAddr),
    #[error("backend {addr} is not a unicast address (the kernel routes it as {kind})")]
    NotUnicast { addr: IpAddr, kind: String },
    /// `protocol` is "ARP" or "neighbour discovery"; `state` the entry's last state, e.g.
    /// "INCOMPLETE", "FAILED" or "no entry".
    #[error(
        "backend {addr} did not answer {protocol} on {ifname} within {timeout:?} (neighbour \
         state {state})"
    )]
    Unanswered {
        addr: IpAddr,
        protocol: &'static str,
        ifname: String,
        timeout: Duration,
        state: String,
    },
    #[error(
        "this host has no address on {ifname} to health-check backend {backend} from (none of \
         its family, or only VIPs)"
    )]
    NoSourceAddress { backend: IpAddr, ifname: String },
    #[error("netlink request failed while {context}: {error}")]
    Netlink {
        context: String,
        error: rtnetlink::Error,
    },
}
