//! Rewrite and send. Direct routing: the frame keeps its IP packet byte for byte, only the
//! Ethernet addresses change. Tunnels (`encap`): the packet is wrapped for the backend, or
//! answered with ICMP when it no longer fits. Then it leaves through the backend's interface.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{stat, Backend, FORWARD_DR};
use network_types::eth::EthHdr;

use crate::{
    encap,
    maps::EGRESS,
    parse::{ptr_at, Packet},
    stats::count,
};

/// Verdict and the counter it is recorded under.
pub struct Verdict {
    pub action: u32,
    pub stat: u32,
}

#[inline(always)]
fn drop(stat: u32) -> Verdict {
    Verdict { action: xdp_action::XDP_DROP, stat }
}

/// Sends the packet to `backend` by its method.
#[inline(always)]
pub fn forward(ctx: &XdpContext, packet: &Packet, backend: &Backend) -> Verdict {
    if backend.method == FORWARD_DR {
        direct(ctx, backend)
    } else {
        tunnel(ctx, packet, backend)
    }
}

#[inline(always)]
fn tunnel(ctx: &XdpContext, packet: &Packet, backend: &Backend) -> Verdict {
    if !encap::fits(packet, backend) {
        return match encap::answer_too_big(ctx, packet, backend) {
            Ok(()) => Verdict { action: xdp_action::XDP_TX, stat: stat::TOO_BIG_SENT },
            Err(stat::DROP_TOO_BIG) => drop(stat::DROP_TOO_BIG),
            Err(_) => drop(stat::DROP_TUNNEL),
        };
    }
    // Whatever failed once the frame was grown left it unfit to pass on.
    if encap::encapsulate(ctx, packet, backend).is_err() {
        return drop(stat::DROP_TUNNEL);
    }
    count(stat::EVENT_ENCAPSULATED);
    transmit(ctx, backend)
}

#[inline(always)]
fn direct(ctx: &XdpContext, backend: &Backend) -> Verdict {
    let eth: *mut EthHdr = match ptr_at(ctx, 0) {
        Ok(eth) => eth,
        Err(reason) => return Verdict { action: xdp_action::XDP_PASS, stat: reason },
    };
    // SAFETY: ptr_at checked that a whole Ethernet header lies inside the frame.
    unsafe {
        (*eth).dst_addr = backend.dst_mac;
        (*eth).src_addr = backend.src_mac;
    }
    transmit(ctx, backend)
}

/// XDP_TX when the backend is behind the ingress interface, else XDP_REDIRECT to its own.
#[inline(always)]
fn transmit(ctx: &XdpContext, backend: &Backend) -> Verdict {
    if backend.ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict { action: xdp_action::XDP_TX, stat: stat::VERDICT_TX };
    }
    match EGRESS.redirect(backend.ifindex, xdp_action::XDP_DROP as u64) {
        Ok(action) => Verdict { action, stat: stat::VERDICT_REDIRECT },
        Err(_) => drop(stat::DROP_REDIRECT_FAILED),
    }
}
