//! xlb's XDP program: direct-routing layer-4 load balancing.
//!
//! For each frame: parse (Ethernet, IP, TCP/UDP or a quoted ICMP error), rule out non-VIP
//! destinations with one bitmap read, find the service, check the frame was addressed to one
//! of the ingress interface's MACs,
//! find the backend (flow table, else Maglev; `track` keeps the table), rewrite the Ethernet
//! addresses (direct routing) or wrap the packet in a tunnel to the backend (`encap`), send
//! with XDP_TX or XDP_REDIRECT. Anything that is not for a service goes to the kernel untouched.
//! Every frame is counted under exactly one verdict counter.
#![no_std]
#![no_main]

mod bench;
mod decap;
mod encap;
mod forward;
mod maps;
mod parse;
mod rate;
mod select;
mod stats;
mod track;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{stat, Backend};

use crate::{
    forward::{forward, Verdict},
    parse::Kind,
};

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    let verdict = balance(&ctx);
    stats::count(verdict.stat);
    verdict.action
}

#[inline(always)]
fn pass(reason: u32) -> Verdict {
    Verdict { action: xdp_action::XDP_PASS, stat: reason }
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> Verdict {
    let packet = match parse::parse(ctx) {
        Ok(p) => p,
        Err(reason) => return pass(reason),
    };
    if !select::maybe_vip(&packet.key) {
        return pass(stat::PASS_NOT_SERVICE);
    }
    // A known flow goes to its backend without a service lookup (the agent removes flows
    // that no longer fit its services).
    let known = if packet.kind == Kind::Flow { track::lookup(&packet.key) } else { None };
    if let Some((flow, entry)) = known {
        if let Some(backend) = select::usable(flow.backend) {
            if let Err(reason) = select::addressed_here(ctx) {
                return pass(reason);
            }
            stats::count(stat::EVENT_FLOW_HIT);
            track::refresh(&packet.key, entry, packet.tcp_flags);
            return send(ctx, &packet, flow.service, flow.backend, &backend, false);
        }
    }
    let Some(svc) = select::service(&packet.key, packet.kind) else {
        return pass(stat::PASS_NOT_SERVICE);
    };
    if let Err(reason) = select::addressed_here(ctx) {
        return pass(reason);
    }
    match select::backend(ctx, &svc, &packet, known.is_some()) {
        Ok((index, backend, recorded)) => send(ctx, &packet, svc.id, index, &backend, recorded),
        Err(reason) => Verdict { action: xdp_action::XDP_DROP, stat: reason },
    }
}

/// Rewrites and sends the frame to `backend`, counting it for its service and backend
/// (`recorded`: a new flow was recorded with it).
#[inline(always)]
fn send(ctx: &XdpContext, packet: &parse::Packet, service: u32, index: u32, backend: &Backend, recorded: bool) -> Verdict {
    let verdict = forward(ctx, packet, backend);
    if verdict.stat == stat::VERDICT_TX || verdict.stat == stat::VERDICT_REDIRECT {
        stats::count_forwarded(service, index, packet.ip_len, recorded);
        if packet.ipv4_options {
            stats::count(stat::EVENT_IPV4_OPTIONS);
        }
    }
    verdict
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
