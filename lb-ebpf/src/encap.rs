//! Tunnel forwarding, for backends beyond the segment: the client's IP packet is wrapped in an
//! outer header to the backend and sent to the next hop toward it (the agent writes the
//! next hop's MAC and the egress interface in the backend's entry).
//!
//! - IPIP: outer IPv4 (protocol 4), IP6IP6: outer IPv6 (next header 41), 4-in-6: outer IPv6
//!   (next header 4); the outer family is the backend address's.
//! - GUE variant 1: outer IPv4, UDP to the backend's fou port, then the client's packet.
//!
//! The outer header copies the inner DSCP/ECN, has hop limit `TUNNEL_TTL`, comes from the
//! node's tunnel source (`Settings`, with bits filled from the flow's hash so that backends'
//! RSS spreads flows), and, over IPv6, carries the flow's hash as flow label. IPv4 outer headers
//! set DF when the inner packet forbids fragmentation.
//!
//! A packet that no longer fits the egress MTU once wrapped is answered from the VIP with
//! ICMP fragmentation-needed / ICMPv6 packet-too-big giving the MTU left for it (rate-limited
//! per CPU), so that the client's path MTU discovery shrinks the flow's packets.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{hash::flow_hash, stat, Backend, FAMILY_V6, FORWARD_GUE, PROTO_UDP, TOO_BIG_PER_CPU, TUNNEL_TTL};
use network_types::eth::EthHdr;

use crate::{
    maps::{SETTINGS, TOO_BIG_RATE},
    parse::{
        ptr_at, Kind, Packet, ETH_LEN, ETH_P_IP, ETH_P_IPV6, ICMPV6_PACKET_TOO_BIG, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_LEN,
        IPV4_DONT_FRAGMENT, IPV4_MIN_LEN, IPV6_LEN, PROTO_ICMP, PROTO_ICMPV6, UDP_LEN,
    },
    rate::{self, Spent},
    track,
};

/// IP protocol numbers of an IPv4 and an IPv6 packet carried in IP.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
/// Bytes of the too-big packet an ICMP answer quotes: its IP header (with options) and the
/// start of its transport header, which is what the client's stack needs to find the socket.
const QUOTE: usize = 128;

/// Bytes the tunnel to `b` puts in front of the client's packet.
#[inline(always)]
pub fn overhead(b: &Backend) -> usize {
    let ip = if b.family == FAMILY_V6 { IPV6_LEN } else { IPV4_MIN_LEN };
    if b.method == FORWARD_GUE {
        ip + UDP_LEN
    } else {
        ip
    }
}

/// Whether `packet` still fits the path to `b` once wrapped.
#[inline(always)]
pub fn fits(packet: &Packet, b: &Backend) -> bool {
    packet.ip_len as usize + overhead(b) <= b.mtu as usize
}

/// Writes `bytes` at `offset` into the frame.
#[inline(always)]
fn put<const N: usize>(ctx: &XdpContext, offset: usize, bytes: [u8; N]) -> Result<(), u32> {
    let p: *mut [u8; N] = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked that N bytes at `offset` lie inside the frame.
    unsafe { *p = bytes };
    Ok(())
}

/// Grows (negative `delta`) or shrinks the frame at its front.
#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), u32> {
    // SAFETY: the helper checks the headroom itself and fails without touching the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(stat::DROP_TUNNEL);
    }
    Ok(())
}

/// One's-complement sum of big-endian 16-bit words, not yet folded.
#[inline(always)]
fn sum_words<const N: usize>(bytes: &[u8; N], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Folds a sum into the 16-bit checksum field's value.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// An IPv4 header without options, its checksum filled in.
#[inline(always)]
fn ipv4_header(tos: u8, total: u16, df: bool, proto: u8, src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
    let [tl0, tl1] = total.to_be_bytes();
    let [f0, f1] = (if df { IPV4_DONT_FRAGMENT } else { 0 }).to_be_bytes();
    let mut h = [
        0x45, tos, tl0, tl1, 0, 0, f0, f1, TUNNEL_TTL, proto, 0, 0, src[0], src[1], src[2], src[3], dst[0], dst[1], dst[2], dst[3],
    ];
    let [c0, c1] = fold(sum_words(&h, 0)).to_be_bytes();
    h[10] = c0;
    h[11] = c1;
    h
}

/// An IPv6 header.
#[inline(always)]
fn ipv6_header(traffic_class: u8, flow_label: u32, payload: u16, next: u8, src: &[u8; 16], dst: &[u8; 16]) -> [u8; 40] {
    let first = (6u32 << 28) | ((traffic_class as u32) << 20) | (flow_label & 0xf_ffff);
    let mut h = [0u8; 40];
    h[..4].copy_from_slice(&first.to_be_bytes());
    h[4..6].copy_from_slice(&payload.to_be_bytes());
    h[6] = next;
    h[7] = TUNNEL_TTL;
    h[8..24].copy_from_slice(src);
    h[24..40].copy_from_slice(dst);
    h
}

/// The inner packet's DSCP and ECN bits (IPv4 TOS, IPv6 traffic class).
#[inline(always)]
fn inner_tos(ctx: &XdpContext, family: u8) -> Result<u8, u32> {
    let first: *const [u8; 2] = ptr_at(ctx, ETH_LEN)?;
    // SAFETY: ptr_at checked that two bytes of the IP header lie inside the frame.
    let b = unsafe { *first };
    Ok(if family == FAMILY_V6 { (b[0] << 4) | (b[1] >> 4) } else { b[1] })
}

/// `base` with the bits of `mask` taken from `hash`.
#[inline(always)]
fn with_hash(base: [u8; 4], mask: [u8; 4], hash: u32) -> [u8; 4] {
    let h = hash.to_be_bytes();
    [
        (base[0] & !mask[0]) | (h[0] & mask[0]),
        (base[1] & !mask[1]) | (h[1] & mask[1]),
        (base[2] & !mask[2]) | (h[2] & mask[2]),
        (base[3] & !mask[3]) | (h[3] & mask[3]),
    ]
}

/// Wraps the client's packet for `b` and writes the Ethernet header to its next hop; the
/// caller sends the frame. An error leaves a frame only fit to be dropped.
#[inline(always)]
pub fn encapsulate(ctx: &XdpContext, packet: &Packet, b: &Backend) -> Result<(), u32> {
    let tos = inner_tos(ctx, packet.key.family)?;
    let settings = SETTINGS.get(0).copied().unwrap_or_default();
    let hash = flow_hash(&packet.key);
    let inner_len = packet.ip_len as usize;
    let over = overhead(b);
    adjust_head(ctx, -(over as i32))?;
    let inner_proto = if packet.key.family == FAMILY_V6 { PROTO_IPV6 } else { PROTO_IPIP };
    let ether_type = if b.family == FAMILY_V6 {
        let mut src = settings.tunnel_src6;
        let low = with_hash([src[12], src[13], src[14], src[15]], settings.tunnel_src6_hash_mask, hash);
        src[12..16].copy_from_slice(&low);
        put(ctx, ETH_LEN, ipv6_header(tos, hash, inner_len as u16, inner_proto, &src, &b.addr))?;
        ETH_P_IPV6
    } else {
        let src = with_hash(settings.tunnel_src4, settings.tunnel_src4_hash_mask, hash);
        let dst = [b.addr[0], b.addr[1], b.addr[2], b.addr[3]];
        let proto = if b.method == FORWARD_GUE { PROTO_UDP } else { inner_proto };
        put(ctx, ETH_LEN, ipv4_header(tos, (inner_len + over) as u16, packet.dont_fragment, proto, src, dst))?;
        if b.method == FORWARD_GUE {
            // The source port spreads flows over the receiver's queues: from the flow's hash,
            // in the ephemeral range. A zero checksum is allowed over IPv4.
            let sport = (0xc000 | (hash & 0x3fff) as u16).to_be_bytes();
            let dport = b.gue_port.to_ne_bytes();
            let len = ((UDP_LEN + inner_len) as u16).to_be_bytes();
            put(ctx, ETH_LEN + IPV4_MIN_LEN, [sport[0], sport[1], dport[0], dport[1], len[0], len[1], 0, 0])?;
        }
        ETH_P_IP
    };
    write_eth(ctx, b.dst_mac, b.src_mac, ether_type)
}

#[inline(always)]
fn write_eth(ctx: &XdpContext, dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Result<(), u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that a whole Ethernet header lies inside the frame.
    unsafe {
        (*eth).dst_addr = dst;
        (*eth).src_addr = src;
        (*eth).ether_type = ether_type.to_be();
    }
    Ok(())
}

/// A packet too big for the tunnel to its backend: answered with ICMP fragmentation-needed
/// (IPv4 with DF) or ICMPv6 packet-too-big from the VIP, giving `b`'s MTU less the tunnel's
/// header, and sent back where it came from (`Ok`: XDP_TX). IPv4 without DF, fragments and
/// ICMP errors cannot be answered, nor packets past this CPU's `TOO_BIG_PER_CPU` this
/// second: `Err(DROP_TOO_BIG)`.
#[inline(always)]
pub fn answer_too_big(ctx: &XdpContext, packet: &Packet, b: &Backend) -> Result<(), u32> {
    if packet.kind != Kind::Flow || !packet.dont_fragment || packet.ip_len < QUOTE as u32 {
        return Err(stat::DROP_TOO_BIG);
    }
    let window = TOO_BIG_RATE.get_ptr_mut(0).ok_or(stat::DROP_TOO_BIG)?;
    if rate::spend(window, TOO_BIG_PER_CPU, track::now()) != Spent::Yes {
        return Err(stat::DROP_TOO_BIG);
    }
    let mtu = (b.mtu as u32).saturating_sub(overhead(b) as u32);
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that a whole Ethernet header lies inside the frame.
    let (client_mac, our_mac) = unsafe { ((*eth).src_addr, (*eth).dst_addr) };
    let key = &packet.key;
    if key.family == FAMILY_V6 {
        let headers = IPV6_LEN + ICMP_LEN;
        make_room(ctx, headers)?;
        let [m0, m1, m2, m3] = mtu.to_be_bytes();
        put(ctx, ETH_LEN + IPV6_LEN, [ICMPV6_PACKET_TOO_BIG, 0, 0, 0, m0, m1, m2, m3])?;
        put(ctx, ETH_LEN, ipv6_header(0, 0, (ICMP_LEN + QUOTE) as u16, PROTO_ICMPV6, &key.dst, &key.src))?;
        // The pseudo-header: both addresses, the ICMPv6 length and its next header value.
        let pseudo = sum_words(&key.dst, sum_words(&key.src, (ICMP_LEN + QUOTE) as u32 + PROTO_ICMPV6 as u32));
        checksum_icmp(ctx, ETH_LEN + IPV6_LEN, pseudo)?;
        write_eth(ctx, client_mac, our_mac, ETH_P_IPV6)
    } else {
        let headers = IPV4_MIN_LEN + ICMP_LEN;
        make_room(ctx, headers)?;
        let [m0, m1] = (mtu as u16).to_be_bytes();
        put(ctx, ETH_LEN + IPV4_MIN_LEN, [ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0, m0, m1])?;
        let (vip, client) = ([key.dst[0], key.dst[1], key.dst[2], key.dst[3]], [key.src[0], key.src[1], key.src[2], key.src[3]]);
        put(ctx, ETH_LEN, ipv4_header(0, (headers + QUOTE) as u16, false, PROTO_ICMP, vip, client))?;
        checksum_icmp(ctx, ETH_LEN + IPV4_MIN_LEN, 0)?;
        write_eth(ctx, client_mac, our_mac, ETH_P_IP)
    }
}

/// Makes the frame Ethernet + `headers` + the first `QUOTE` bytes of the original IP packet:
/// room for the new headers in front of it, the rest cut off.
#[inline(always)]
fn make_room(ctx: &XdpContext, headers: usize) -> Result<(), u32> {
    adjust_head(ctx, -(headers as i32))?;
    let len = (ctx.data_end() - ctx.data()) as i32;
    let delta = (ETH_LEN + headers + QUOTE) as i32 - len;
    // SAFETY: the helper checks the new length itself and fails without touching the frame.
    if delta < 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Err(stat::DROP_TUNNEL);
    }
    Ok(())
}

/// Fills in the checksum of the ICMP message at `offset` (its 8-byte header and the quote),
/// starting from `pseudo` (ICMPv6's pseudo-header sum; 0 for ICMP).
#[inline(always)]
fn checksum_icmp(ctx: &XdpContext, offset: usize, pseudo: u32) -> Result<(), u32> {
    let msg: *mut [u8; ICMP_LEN + QUOTE] = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked that the whole message lies inside the frame.
    let sum = sum_words(unsafe { &*msg }, pseudo);
    let [c0, c1] = fold(sum).to_be_bytes();
    // SAFETY: as above.
    unsafe {
        (*msg)[2] = c0;
        (*msg)[3] = c1;
    }
    Ok(())
}
