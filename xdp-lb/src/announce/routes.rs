//! The VIP routes BIRD learns: `VIP/32` (`/128`) `dev lo` in the announce table, with the
//! agent's own route protocol ([`ANNOUNCE_ROUTE_PROTOCOL`]) so it never touches a route
//! it did not write. Each call is one short netlink request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope},
};

use crate::config::ANNOUNCE_ROUTE_PROTOCOL;

/// A netlink route connection in the agent's network namespace.
#[derive(Clone, Debug)]
pub struct Routes {
    handle: rtnetlink::Handle,
    /// `lo`'s ifindex: every VIP route points at it.
    lo: u32,
}

impl Routes {
    /// Opens the connection (on the current tokio runtime) and finds `lo`.
    pub async fn open() -> anyhow::Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink route socket")?;
        tokio::spawn(connection);
        let lo = handle
            .link()
            .get()
            .match_name("lo".to_owned())
            .execute()
            .try_next()
            .await
            .context("looking up lo")?
            .context("there is no lo")?
            .header
            .index;
        Ok(Self { handle, lo })
    }

    fn message(&self, vip: IpAddr, table: u32) -> RouteMessage {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(vip, host_prefix(vip))
            .map(|b| {
                b.output_interface(self.lo)
                    .table_id(table)
                    .protocol(RouteProtocol::from(ANNOUNCE_ROUTE_PROTOCOL))
                    .scope(RouteScope::Link)
            });
        // A host prefix of the address's own family is always valid.
        builder.map_or_else(|_| RouteMessage::default(), |b| b.build())
    }

    /// Adds (or replaces) the route of `vip` in `table`.
    pub async fn add(&self, vip: IpAddr, table: u32) -> anyhow::Result<()> {
        self.handle
            .route()
            .add(self.message(vip, table))
            .replace()
            .execute()
            .await
            .with_context(|| {
                format!(
                    "adding the route {vip}/{} dev lo table {table}",
                    host_prefix(vip)
                )
            })
    }

    /// Removes the route of `vip` from `table`; one already gone is no error.
    pub async fn remove(&self, vip: IpAddr, table: u32) -> anyhow::Result<()> {
        match self
            .handle
            .route()
            .del(self.message(vip, table))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.to_io().raw_os_error() == Some(libc::ESRCH) =>
            {
                Ok(())
            }
            Err(err) => Err(err).with_context(|| {
                format!(
                    "removing the route {vip}/{} dev lo table {table}",
                    host_prefix(vip)
                )
            }),
        }
    }

    /// The VIPs with a route of the agent's protocol in `table` now.
    pub async fn list(&self, table: u32) -> anyhow::Result<Vec<IpAddr>> {
        let mut found = Vec::new();
        for request in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let mut routes = self.handle.route().get(request).execute();
            while let Some(route) = routes.try_next().await.context("listing routes")? {
                if let Some(vip) = self.ours(&route, table) {
                    found.push(vip);
                }
            }
        }
        Ok(found)
    }

    /// The VIP of `route` when it is one of the agent's in `table`.
    fn ours(&self, route: &RouteMessage, table: u32) -> Option<IpAddr> {
        if u8::from(route.header.protocol) != ANNOUNCE_ROUTE_PROTOCOL {
            return None;
        }
        let mut route_table = u32::from(route.header.table);
        let mut destination = None;
        let mut oif = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Table(t) => route_table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                    destination = Some(IpAddr::V4(*a));
                }
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                    destination = Some(IpAddr::V6(*a));
                }
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        let vip = destination?;
        (route_table == table
            && oif == Some(self.lo)
            && route.header.destination_prefix_length == host_prefix(vip))
        .then_some(vip)
    }
}

/// 32 for IPv4, 128 for IPv6.
pub fn host_prefix(vip: IpAddr) -> u8 {
    if vip.is_ipv4() { 32 } else { 128 }
}
