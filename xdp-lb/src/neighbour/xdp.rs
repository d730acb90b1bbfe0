//! Which XDP program an interface runs, as netlink reports it (`IFLA_XDP`): the audit's
//! check that the agent's program is still attached where it was put.

use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};

use super::{NeighbourError, Neighbours, errno};

impl Neighbours {
    /// The id of the XDP program attached to `ifname` (`None`: none is).
    pub async fn xdp_program(&self, ifname: &str) -> Result<Option<u32>, NeighbourError> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(ifname.to_owned()));
        let link = match self.get_link(msg).await {
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                return Err(NeighbourError::NoSuchInterface(ifname.to_owned()));
            }
            Err(error) => {
                return Err(NeighbourError::Netlink {
                    context: format!("reading the XDP program of {ifname}"),
                    error,
                });
            }
            Ok(link) => link,
        };
        Ok(program_of(&link))
    }
}

/// The program id in a link's `IFLA_XDP`: the one program, or the first of several modes'.
fn program_of(link: &LinkMessage) -> Option<u32> {
    let xdp = link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Xdp(xdp) => Some(xdp),
        _ => None,
    })?;
    let single = xdp.iter().find_map(|x| match x {
        LinkXdp::ProgId(id) if *id != 0 => Some(*id),
        _ => None,
    });
    single.or_else(|| {
        xdp.iter().find_map(|x| match x {
            LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) | LinkXdp::HwProgId(id) if *id != 0 => {
                Some(*id)
            }
            _ => None,
        })
    })
}
