//! Whether a NIC strips VLAN tags before XDP sees them. Most physical NICs move the tag
//! into the RX descriptor (`rx-vlan-offload`, `NETIF_F_HW_VLAN_CTAG_RX`): native XDP then
//! sees an untagged frame and no VLAN-bound service would ever match. The tag is still
//! readable through the XDP rx-metadata kfunc `bpf_xdp_metadata_rx_vlan_tag` (Linux 6.8+;
//! ice and veth implement it, others list `vlan-tag` in their netdev
//! `xdp-rx-metadata-features`), but aya-ebpf 0.2 cannot call kfuncs yet, so the offload must
//! be off on such an interface.

use std::io;

/// `SIOCETHTOOL` and the legacy `ETHTOOL_GFLAGS` command (linux/ethtool.h), whose
/// `ETH_FLAG_RXVLAN` bit mirrors `rx-vlan-offload`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GFLAGS: u32 = 0x0000_0025;
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Whether `ifname` has `rx-vlan-offload` on (`ethtool -k IF`).
pub fn rx_vlan_offload(ifname: &str) -> io::Result<bool> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    for (dst, src) in req.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a datagram socket only to carry the ioctl; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `req` is a valid ifreq whose data points at `value`, both alive for the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req) };
    let result = if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value.data & ETH_FLAG_RXVLAN != 0)
    };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    result
}

/// Whether `ifname` is a physical NIC (it has a `device` in sysfs). Virtual devices (veth,
/// a VLAN device) keep tags their peer sent in the frame, whatever `ethtool -k` says.
pub fn is_physical(ifname: &str) -> bool {
    !ifname.contains('/')
        && std::path::Path::new("/sys/class/net")
            .join(ifname)
            .join("device")
            .exists()
}

/// Refuses to balance VLAN-bound services on a physical NIC that strips the tags.
pub fn check_tags_visible(ifname: &str) -> anyhow::Result<()> {
    if !is_physical(ifname) {
        return Ok(());
    }
    match rx_vlan_offload(ifname) {
        Ok(false) => Ok(()),
        Ok(true) => anyhow::bail!(
            "interface {ifname} strips VLAN tags into the RX descriptor (rx-vlan-offload: on), so \
             XDP never sees the tag a VLAN-bound service is matched on; turn it off with \
             `ethtool -K {ifname} rxvlan off` (and keep it off across reboots, e.g. in the \
             interface's configuration), or remove `vlan:` from the services"
        ),
        Err(err) => {
            log::warn!(
                "cannot read rx-vlan-offload of {ifname} ({err}); if it is on, VLAN-bound \
                 services never match there (`ethtool -K {ifname} rxvlan off`)"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_not_physical_and_has_no_rx_vlan_offload() {
        assert!(!is_physical("lo"));
        assert!(check_tags_visible("lo").is_ok());
        assert!(rx_vlan_offload("").is_err());
    }

    /// Agrees with `ethtool -k` on every interface of this host that ethtool can read.
    #[test]
    fn rx_vlan_offload_reads_what_ethtool_shows() {
        for entry in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(out) = std::process::Command::new("ethtool")
                .args(["-k", &name])
                .output()
            else {
                return; // no ethtool here
            };
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(line) = text.lines().find(|l| l.starts_with("rx-vlan-offload:")) else {
                continue;
            };
            let on = line.split_whitespace().nth(1) == Some("on");
            assert_eq!(rx_vlan_offload(&name).ok(), Some(on), "{name}: {line}");
        }
    }
}
