//! Raw Ethernet frames sent from inside a lab namespace (AF_PACKET), for traffic no
//! ordinary client produces: garbage, truncated headers, VLAN tags.

#![allow(dead_code)]

use anyhow::{Context as _, Result, bail};
use xdp_lb_tests::netns;

/// Sends raw Ethernet frames out of `ifname` inside namespace `ns` (AF_PACKET).
pub fn send_raw(ns: &str, ifname: &str, frames: Vec<Vec<u8>>) -> Result<()> {
    let ifname = ifname.to_owned();
    netns::run_inside(ns, move || {
        let c_name = std::ffi::CString::new(ifname.clone())?;
        // SAFETY: plain libc calls on values we own; the socket is closed below.
        unsafe {
            let ifindex = libc::if_nametoindex(c_name.as_ptr());
            if ifindex == 0 {
                bail!("no interface {ifname}");
            }
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
            }
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            for frame in &frames {
                addr.sll_addr[..6].copy_from_slice(&frame[0..6]);
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if sent < 0 {
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    return Err(err).context("sendto");
                }
            }
            libc::close(fd);
        }
        Ok(())
    })
}

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("lab MAC");
    }
    mac
}
