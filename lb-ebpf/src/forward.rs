//! Rewrite and send: the frame keeps its IP packet byte for byte; only the Ethernet addresses
//! change (direct routing), then it leaves through the backend's interface.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{stat, Backend};
use network_types::eth::EthHdr;

use crate::{maps::EGRESS, parse::ptr_at};

/// Verdict and the counter it is recorded under.
pub struct Verdict {
    pub action: u32,
    pub stat: u32,
}

#[inline(always)]
pub fn forward(ctx: &XdpContext, backend: &Backend) -> Verdict {
    let eth: *mut EthHdr = match ptr_at(ctx, 0) {
        Ok(eth) => eth,
        Err(reason) => return Verdict { action: xdp_action::XDP_PASS, stat: reason },
    };
    // SAFETY: ptr_at checked that a whole Ethernet header lies inside the frame.
    unsafe {
        (*eth).dst_addr = backend.dst_mac;
        (*eth).src_addr = backend.src_mac;
    }
    if backend.ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict { action: xdp_action::XDP_TX, stat: stat::VERDICT_TX };
    }
    match EGRESS.redirect(backend.ifindex, xdp_action::XDP_DROP as u64) {
        Ok(action) => Verdict { action, stat: stat::VERDICT_REDIRECT },
        Err(_) => Verdict { action: xdp_action::XDP_DROP, stat: stat::DROP_REDIRECT_FAILED },
    }
}
