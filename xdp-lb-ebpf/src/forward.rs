//! The last step of every forwarded frame, and the check before it: is the frame
//! addressed to this host at all, and out it goes to its backend, only its MACs rewritten.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use aya_log_ebpf::warn;
use network_types::eth::EthHdr;
use xdp_lb_common::{BackendValue, MAX_LOCAL_MACS, verdict};

use crate::{
    maps::{LOCAL_MACS, TX_PORTS},
    parse::ptr_at,
};

/// Rewrites the two MACs and sends the frame to `backend`: XDP_TX out of the ingress
/// interface, or XDP_REDIRECT through `tx_ports`; `Err` is the pass verdict when neither
/// can be used.
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
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(verdict::PASS_MALFORMED)?;
    // SAFETY: checked by `ptr_at`; this is the only write to the frame.
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

/// Whether the frame's destination MAC is one the receiving interface owns
/// (`local_macs`); an interface the agent registered nothing for is not checked.
#[inline(always)]
pub fn addressed_to_us(ctx: &XdpContext) -> bool {
    // The destination MAC and the first two bytes of the source, read as one word.
    let Some(head) = ptr_at::<[u8; 8]>(ctx, 0) else {
        return false;
    };
    // SAFETY: checked by `ptr_at`.
    let dst = u64::from_le_bytes(unsafe { *head }) & MAC_WORD_MASK;
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(local) = LOCAL_MACS.get_ptr(ifindex) else {
        return true;
    };
    // SAFETY: a map value, valid for the program run; read word by word, never copied
    // whole (a copy would be spilled byte by byte onto the small stack).
    let count = unsafe { (*local).count } as usize;
    let mut i = 0;
    while i < MAX_LOCAL_MACS {
        // SAFETY: as above; `i` is in bounds.
        if i < count && unsafe { (*local).macs[i] } == dst {
            return true;
        }
        i += 1;
    }
    false
}

/// The bytes of `mac_word` a MAC fills.
const MAC_WORD_MASK: u64 = 0x0000_ffff_ffff_ffff;
