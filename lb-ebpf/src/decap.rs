//! `lab_decap`: a LAB STAND-IN for the kernel's tunnel receivers, for backends behind a tunnel.
//!
//! A real backend of a tunnel service decapsulates in the kernel:
//!
//! ```sh
//! ip link add tunl type ipip external      # IPIP (IPv4 in IPv4)
//! ip link add tun6 type ip6tnl external    # IP6IP6 and 4-in-6 (mode any)
//! ip fou add port 6080 gue                 # GUE over UDP port 6080 (variant 1 included)
//! ```
//!
//! The lab's kernel is built without ipip, ip6tnl, sit and fou, so the lab's tunnel backends
//! run this tc program (clsact ingress) instead. It is not part of the load balancer: the XDP
//! program shares its object only so that one build serves both.
//!
//! What it accepts, from any source, in a frame addressed to this host (`pkt_type` HOST):
//!
//! - IPv4 carrying protocol 4 (IPIP) or 41 (6-in-4);
//! - IPv6 (no extension headers) carrying next header 41 (IP6IP6) or 4 (4-in-6);
//! - GUE variant 1 (the inner IP packet right after the UDP header, as Katran sends and Linux
//!   fou `gue` accepts) in UDP to port [`LAB_DECAP_GUE_PORT`] (6080 unless the loader sets
//!   it), over IPv4 or IPv6.
//!
//! It strips the outer IP header (and UDP header) with `bpf_skb_adjust_room` at the MAC layer,
//! which also sets `skb->protocol` to the inner family (the `DECAP_L3` flags, kernel 6.3+);
//! when the family changes it also rewrites the Ethernet type so that captures read right.
//! The inner packet then continues up the stack as if it had arrived as it is (TC_ACT_OK).
//!
//! Not checked, unlike the kernel's receivers: the outer IPv4 checksum, the outer
//! destination address (only the MAC's), the UDP checksum. Outer IPv4 fragments and anything
//! else pass untouched. A tunnel packet whose decapsulation fails is dropped.

use aya_ebpf::{
    cty::c_long,
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use lb_common::PROTO_UDP;

use crate::{
    encap::{PROTO_IPIP, PROTO_IPV6},
    parse::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, IPV4_FRAG_MASK, IPV6_LEN, UDP_LEN},
};

/// The GUE port; the loader may change it (aya `EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static LAB_DECAP_GUE_PORT: u16 = 6080;

/// Offset of the Ethernet type.
const ETH_TYPE_AT: usize = 12;
/// `__sk_buff.pkt_type` of a frame sent to one of this host's MACs.
const PACKET_HOST: u32 = 0;

#[classifier]
pub fn lab_decap(ctx: TcContext) -> i32 {
    let action = match outer(&ctx) {
        None => TC_ACT_OK,
        Some((len, inner_v6)) => match strip(&ctx, len, inner_v6) {
            Ok(()) => TC_ACT_OK,
            Err(_) => TC_ACT_SHOT,
        },
    };
    action as i32
}

/// The tunnel headers' length and whether the inner packet is IPv6, for a tunnel packet to
/// this host; `None` for anything else.
#[inline(always)]
fn outer(ctx: &TcContext) -> Option<(usize, bool)> {
    // SAFETY: the context points at the live __sk_buff the kernel passed to the program.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        return None;
    }
    let (ip_len, proto) = match u16::from_be(ctx.load::<u16>(ETH_TYPE_AT).ok()?) {
        ETH_P_IP => {
            let vihl: u8 = ctx.load(ETH_LEN).ok()?;
            let frag = u16::from_be(ctx.load::<u16>(ETH_LEN + 6).ok()?);
            if vihl >> 4 != 4 || vihl & 0x0f < 5 || frag & IPV4_FRAG_MASK != 0 {
                return None;
            }
            (usize::from(vihl & 0x0f) * 4, ctx.load::<u8>(ETH_LEN + 9).ok()?)
        }
        ETH_P_IPV6 => (IPV6_LEN, ctx.load::<u8>(ETH_LEN + 6).ok()?),
        _ => return None,
    };
    let len = match proto {
        PROTO_IPIP | PROTO_IPV6 => ip_len,
        PROTO_UDP => {
            // SAFETY: a read of a plain static that the loader may have rewritten (volatile,
            // so the compiler does not fold the initial value in).
            let port = unsafe { core::ptr::read_volatile(&LAB_DECAP_GUE_PORT) };
            if u16::from_be(ctx.load::<u16>(ETH_LEN + ip_len + 2).ok()?) != port {
                return None;
            }
            ip_len + UDP_LEN
        }
        _ => return None,
    };
    // The inner packet's version must be the one announced (GUE variant 1: its first nibble).
    let version = ctx.load::<u8>(ETH_LEN + len).ok()? >> 4;
    match (proto, version) {
        (PROTO_IPIP | PROTO_UDP, 4) => Some((len, false)),
        (PROTO_IPV6 | PROTO_UDP, 6) => Some((len, true)),
        _ => None,
    }
}

/// Removes `len` bytes after the Ethernet header; the packet becomes the inner one.
#[inline(always)]
fn strip(ctx: &TcContext, len: usize, inner_v6: bool) -> Result<(), c_long> {
    let (family, ethertype) = if inner_v6 {
        (BPF_F_ADJ_ROOM_DECAP_L3_IPV6, ETH_P_IPV6)
    } else {
        (BPF_F_ADJ_ROOM_DECAP_L3_IPV4, ETH_P_IP)
    };
    // FIXED_GSO: without it the kernel refuses to shrink a GSO packet that is not TCP.
    ctx.adjust_room(-(len as i32), BPF_ADJ_ROOM_MAC, u64::from(family | BPF_F_ADJ_ROOM_FIXED_GSO))?;
    // skb->protocol is the inner family now; the Ethernet header still names the outer one.
    ctx.store(ETH_TYPE_AT, &ethertype.to_be(), 0)
}
