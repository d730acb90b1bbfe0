//! The last step of every forwarded frame, and the check before it: is the frame
//! addressed to this host at all, and out it goes to its backend, only its MACs rewritten
//! (and its outer VLAN id, for a backend on another VLAN than the frame's).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use aya_log_ebpf::warn;
use network_types::eth::EthHdr;
use xdp_lb_common::{BackendValue, LOCAL_MACS_IX_SLOTS, MAX_LOCAL_MACS, verdict};

use crate::{
    maps::{LOCAL_MACS, LOCAL_MACS_IX, TX_PORTS},
    parse::{ETH_P_8021AD, ETH_P_8021Q, ptr_at},
};

/// Offset of the outer tag's TPID (where an untagged frame has its ethertype); its tag
/// control information follows.
const OUTER_TAG_OFFSET: usize = 12;
/// The bits of a tag control information's first byte that are not the VLAN id: the
/// priority code point and the drop-eligible indicator.
const TCI_PRIORITY_BITS: u8 = 0xf0;

/// Rewrites the two MACs (and, for a backend on a VLAN of its own, the outer VLAN id) and
/// sends the frame to `backend`: XDP_TX out of the ingress interface, or XDP_REDIRECT
/// through `tx_ports`; `Err` is the pass verdict when neither can be used.
#[inline(always)]
pub fn send(ctx: &XdpContext, backend_id: u32, backend: &BackendValue) -> Result<u32, u32> {
    let redirect = backend.ifindex != ctx.ingress_ifindex() as u32;
    if redirect && TX_PORTS.get_ifindex(backend.ifindex).is_none() {
        warn!(
            ctx,
            "backend {} is behind ifindex {} missing from tx_ports", backend_id, backend.ifindex
        );
        return Err(verdict::PASS_REDIRECT_FAILED);
    }
    let vlan = backend.vlan();
    if vlan != 0 {
        retag(ctx, vlan);
    }
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(verdict::PASS_MALFORMED)?;
    // SAFETY: checked by `ptr_at`; with `retag`, the only writes to the frame.
    unsafe {
        (*eth).dst_addr = backend.mac;
        (*eth).src_addr = backend.src_mac;
    }
    if !redirect {
        return Ok(xdp_action::XDP_TX);
    }
    // Present in tx_ports (checked above); fall back to passing if it vanished since.
    TX_PORTS
        .redirect(backend.ifindex, 0)
        .map_err(|_| verdict::PASS_REDIRECT_FAILED)
}

/// Sets the VLAN id of the frame's outer tag (802.1Q or 802.1ad) to `vlan`, keeping its
/// priority and drop-eligible bits; an inner tag and an untagged frame stay as they are (a
/// tag is never pushed: the agent refuses a backend VLAN on a service that takes untagged
/// frames).
#[inline(always)]
fn retag(ctx: &XdpContext, vlan: u16) {
    let Some(tag) = ptr_at::<[u8; 4]>(ctx, OUTER_TAG_OFFSET) else {
        return;
    };
    // SAFETY: checked by `ptr_at`; the TCI's first byte keeps its top four bits (PCP and
    // DEI) and takes the VLAN id's high four, the second byte is the id's low eight.
    unsafe {
        let tpid = u16::from_be_bytes([(*tag)[0], (*tag)[1]]);
        if tpid != ETH_P_8021Q && tpid != ETH_P_8021AD {
            return;
        }
        (*tag)[2] = ((*tag)[2] & TCI_PRIORITY_BITS) | ((vlan >> 8) as u8 & !TCI_PRIORITY_BITS);
        (*tag)[3] = vlan as u8;
    }
}

/// Whether the frame's destination MAC is one the receiving interface owns
/// (`local_macs_ix`, or `local_macs` for a large ifindex); an interface the agent
/// registered nothing for is not checked.
#[inline(always)]
pub fn addressed_to_us(ctx: &XdpContext) -> bool {
    // The destination MAC and the first two bytes of the source, read as one word.
    let Some(head) = ptr_at::<[u8; 8]>(ctx, 0) else {
        return false;
    };
    // SAFETY: checked by `ptr_at`.
    let dst = u64::from_le_bytes(unsafe { *head }) & MAC_WORD_MASK;
    let ifindex = ctx.ingress_ifindex() as u32;
    if ifindex < LOCAL_MACS_IX_SLOTS {
        let Some(local) = LOCAL_MACS_IX.get_ptr(ifindex) else {
            return true;
        };
        // SAFETY: a map value, valid for the program run, read word by word: the agent
        // writes it a word at a time (see `IfindexMacs`). `checked` is read first, and set
        // by the agent only after the MACs; an empty slot never matches.
        unsafe {
            if (*local).checked == 0 {
                return true;
            }
            return holds_mac(&(*local).macs, MAX_LOCAL_MACS, dst);
        }
    }
    let Some(local) = LOCAL_MACS.get_ptr(ifindex) else {
        return true;
    };
    // SAFETY: a map value, valid for the program run; read word by word, never copied
    // whole (a copy would be spilled byte by byte onto the small stack).
    unsafe { holds_mac(&(*local).macs, (*local).count as usize, dst) }
}

/// Whether one of the first `count` of `macs` is `dst`.
///
/// # Safety
/// `macs` is a map value's, read in place word by word.
#[inline(always)]
unsafe fn holds_mac(macs: *const [u64; MAX_LOCAL_MACS], count: usize, dst: u64) -> bool {
    let mut i = 0;
    while i < MAX_LOCAL_MACS {
        // SAFETY: `i` is in bounds; the caller's pointer is a live map value.
        if i < count && unsafe { (*macs)[i] } == dst {
            return true;
        }
        i += 1;
    }
    false
}

/// The bytes of `mac_word` a MAC fills.
const MAC_WORD_MASK: u64 = 0x0000_ffff_ffff_ffff;
