//! Header parsing: Ethernet, then IPv4 or IPv6, then TCP, UDP, or the ICMP error that carries a
//! VIP flow's headers. Every read goes through [`ptr_at`], the one bounds-checked accessor.
//!
//! The result is the flow's 5-tuple in the client-to-VIP direction, or the reason the frame is
//! left to the kernel.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lb_common::{stat, FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

pub const ETH_LEN: usize = size_of::<EthHdr>();
pub const IPV4_MIN_LEN: usize = 20;
pub const IPV6_LEN: usize = size_of::<Ipv6Hdr>();
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q and 802.1ad (QinQ) tags.
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const TCP_MIN_LEN: usize = 20;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_AT: usize = 13;
pub const UDP_LEN: usize = 8;
/// ICMP and ICMPv6 headers are 8 bytes before the quoted packet.
pub const ICMP_LEN: usize = 8;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// IPv4 flags/offset: "more fragments" and the offset bits.
pub const IPV4_FRAG_MASK: u16 = 0x3fff;
/// IPv4 flags/offset: "don't fragment".
pub const IPV4_DONT_FRAGMENT: u16 = 0x4000;
const IPV6_NEXT_FRAGMENT: u8 = 44;

/// How the packet is steered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ordinary TCP/UDP packet: flow table, then Maglev by the 5-tuple.
    Flow,
    /// IP fragment: no ports, so Maglev by (source, destination, protocol); not recorded.
    Fragment,
    /// ICMP frag-needed / ICMPv6 packet-too-big about a flow: goes where the flow goes.
    TooBig,
}

pub struct Packet {
    /// Client-to-VIP 5-tuple (reconstructed from the quoted header for `TooBig`; ports 0 for
    /// `Fragment`).
    pub key: FlowKey,
    pub kind: Kind,
    /// IP packet length (header included), for byte counters.
    pub ip_len: u32,
    /// IPv4 header carried options.
    pub ipv4_options: bool,
    /// The TCP header's flags byte (FIN, SYN, RST, ACK, ...); 0 for anything else.
    pub tcp_flags: u8,
    /// The sender forbids fragmentation: IPv4 with DF set, and every IPv6 packet.
    pub dont_fragment: bool,
}

/// The bounds check every header access goes through: a pointer to a `T` at `offset` bytes into
/// the frame, or `PASS_MALFORMED` when the frame is too short to hold it.
///
/// Call it before any length check against the IP header's own lengths: the compiler may
/// otherwise prove this check redundant from them and drop it, and the verifier, which only
/// trusts comparisons with `data_end`, then refuses the program.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, u32> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return Err(stat::PASS_MALFORMED);
    }
    Ok((start + offset) as *mut T)
}

/// Reads the headers. `Err` carries the counter of the reason the frame goes to the kernel.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let ether_type = u16::from_be(unsafe { (*eth).ether_type });
    // Non-IP frames (ARP above all) leave before the MAC lookup: nothing of theirs is balanced.
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        return Err(stat::PASS_VLAN);
    }
    if ether_type != ETH_P_IP && ether_type != ETH_P_IPV6 {
        return Err(stat::PASS_NOT_IP);
    }
    if ether_type == ETH_P_IP {
        parse_ipv4(ctx)
    } else {
        parse_ipv6(ctx)
    }
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Copies the two ports (network order) at `offset`, and TCP's flags, after checking that a
/// whole transport header of `proto` fits below `ip_end` (the end of the IP packet).
#[inline(always)]
fn read_ports(ctx: &XdpContext, offset: usize, ip_end: usize, proto: u8) -> Result<([u16; 2], u8), u32> {
    // The packet checks first: the verifier needs them, and after the length check below the
    // compiler could prove them redundant and drop them.
    let ports: *const [u8; 4] = ptr_at(ctx, offset)?;
    let tcp: Option<*const [u8; TCP_MIN_LEN]> = if proto == PROTO_TCP { Some(ptr_at(ctx, offset)?) } else { None };
    let header_len = if proto == PROTO_TCP { TCP_MIN_LEN } else { UDP_LEN };
    if offset + header_len > ip_end {
        return Err(stat::PASS_MALFORMED);
    }
    // SAFETY: the pointers came from ptr_at, which checked they lie inside the frame.
    let (p, flags) = unsafe { (*ports, tcp.map_or(0, |t| (*t)[TCP_FLAGS_AT])) };
    Ok(([u16::from_ne_bytes([p[0], p[1]]), u16::from_ne_bytes([p[2], p[3]])], flags))
}

#[inline(always)]
fn is_balanced(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_UDP
}

/// Extension headers (RFC 8200 and the IANA list) that may precede the transport header.
#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 50 | 51 | 60 | 135 | 139 | 140)
}

#[inline(always)]
fn copy_v4(dst: &mut [u8; 16], src: &[u8; 4]) {
    dst[0] = src[0];
    dst[1] = src[1];
    dst[2] = src[2];
    dst[3] = src[3];
}

// Always inlined: with more than one caller (the bench programs call `parse` too) LLVM would
// make it a BPF subprogram taking `data_end` as an argument, which the verifier refuses.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext) -> Result<Packet, u32> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_LEN)?;
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let ip = unsafe { &*ip };
    let ihl = ((ip.vihl & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes(ip.tot_len) as usize;
    if ip.vihl >> 4 != 4 || ihl < IPV4_MIN_LEN || tot_len < ihl || ETH_LEN + tot_len > frame_len(ctx) {
        return Err(stat::PASS_MALFORMED);
    }
    let mut key = FlowKey { family: FAMILY_V4, proto: ip.proto, ..FlowKey::default() };
    copy_v4(&mut key.src, &ip.src_addr);
    copy_v4(&mut key.dst, &ip.dst_addr);
    let l4 = ETH_LEN + ihl;
    let ip_end = ETH_LEN + tot_len;
    let frags = u16::from_be_bytes(ip.frags);
    let fragment = frags & IPV4_FRAG_MASK != 0;
    let mut packet = Packet {
        key,
        kind: Kind::Flow,
        ip_len: tot_len as u32,
        ipv4_options: ihl > IPV4_MIN_LEN,
        tcp_flags: 0,
        dont_fragment: frags & IPV4_DONT_FRAGMENT != 0,
    };
    if is_balanced(ip.proto) {
        if fragment {
            packet.kind = Kind::Fragment;
        } else {
            let ([sport, dport], flags) = read_ports(ctx, l4, ip_end, ip.proto)?;
            packet.key.sport = sport;
            packet.key.dport = dport;
            packet.tcp_flags = flags;
        }
        Ok(packet)
    } else if ip.proto == PROTO_ICMP && !fragment {
        packet.key = icmpv4_quoted_flow(ctx, l4, ip_end)?;
        packet.kind = Kind::TooBig;
        Ok(packet)
    } else if ip.proto == PROTO_ICMP {
        Err(stat::PASS_ICMP)
    } else {
        Err(stat::PASS_NOT_SERVICE)
    }
}

/// For ICMP "fragmentation needed": the flow the quoted header belongs to, turned around into
/// the client-to-VIP direction. Any other ICMP is `PASS_ICMP`.
#[inline(always)]
fn icmpv4_quoted_flow(ctx: &XdpContext, l4: usize, ip_end: usize) -> Result<FlowKey, u32> {
    let icmp: *const [u8; ICMP_LEN] = ptr_at(ctx, l4)?;
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let icmp = unsafe { &*icmp };
    if icmp[0] != ICMP_DEST_UNREACH || icmp[1] != ICMP_FRAG_NEEDED {
        return Err(stat::PASS_ICMP);
    }
    let quoted_off = l4 + ICMP_LEN;
    let quoted: *const Ipv4Hdr = ptr_at(ctx, quoted_off)?;
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let quoted = unsafe { &*quoted };
    let ihl = ((quoted.vihl & 0x0f) as usize) * 4;
    if quoted.vihl >> 4 != 4 || ihl < IPV4_MIN_LEN {
        return Err(stat::PASS_MALFORMED);
    }
    if !is_balanced(quoted.proto) {
        return Err(stat::PASS_ICMP);
    }
    // Only the first 8 bytes of the quoted transport header are guaranteed (RFC 792).
    let ports_off = quoted_off + ihl;
    let ports: *const [u8; 4] = ptr_at(ctx, ports_off)?;
    if ports_off + 4 > ip_end {
        return Err(stat::PASS_MALFORMED);
    }
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let p = unsafe { *ports };
    // Quoted: VIP -> client. Ours: client -> VIP.
    let mut key = FlowKey { family: FAMILY_V4, proto: quoted.proto, ..FlowKey::default() };
    copy_v4(&mut key.src, &quoted.dst_addr);
    copy_v4(&mut key.dst, &quoted.src_addr);
    key.sport = u16::from_ne_bytes([p[2], p[3]]);
    key.dport = u16::from_ne_bytes([p[0], p[1]]);
    Ok(key)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext) -> Result<Packet, u32> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_LEN)?;
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let ip = unsafe { &*ip };
    let payload = u16::from_be_bytes(ip.payload_len) as usize;
    if ip.vcf[0] >> 4 != 6 || ETH_LEN + IPV6_LEN + payload > frame_len(ctx) {
        return Err(stat::PASS_MALFORMED);
    }
    let key = FlowKey {
        src: ip.src_addr,
        dst: ip.dst_addr,
        family: FAMILY_V6,
        proto: ip.next_hdr,
        ..FlowKey::default()
    };
    let l4 = ETH_LEN + IPV6_LEN;
    let ip_end = l4 + payload;
    let mut packet =
        Packet { key, kind: Kind::Flow, ip_len: (IPV6_LEN + payload) as u32, ipv4_options: false, tcp_flags: 0, dont_fragment: true };
    let next = ip.next_hdr;
    if is_balanced(next) {
        let ([sport, dport], flags) = read_ports(ctx, l4, ip_end, next)?;
        packet.key.sport = sport;
        packet.key.dport = dport;
        packet.tcp_flags = flags;
        Ok(packet)
    } else if next == IPV6_NEXT_FRAGMENT {
        // Fragment header: next header, reserved, offset+flags, identification.
        let frag: *const [u8; 8] = ptr_at(ctx, l4)?;
        if l4 + 8 > ip_end {
            return Err(stat::PASS_MALFORMED);
        }
        // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
        let inner = unsafe { (*frag)[0] };
        if !is_balanced(inner) {
            return Err(stat::PASS_NOT_SERVICE);
        }
        packet.key.proto = inner;
        packet.kind = Kind::Fragment;
        Ok(packet)
    } else if next == PROTO_ICMPV6 {
        packet.key = icmpv6_quoted_flow(ctx, l4, ip_end)?;
        packet.kind = Kind::TooBig;
        Ok(packet)
    } else if is_ipv6_extension(next) {
        Err(stat::PASS_IPV6_EXT)
    } else {
        Err(stat::PASS_NOT_SERVICE)
    }
}

/// For ICMPv6 "packet too big": the quoted flow in the client-to-VIP direction.
#[inline(always)]
fn icmpv6_quoted_flow(ctx: &XdpContext, l4: usize, ip_end: usize) -> Result<FlowKey, u32> {
    let icmp: *const [u8; ICMP_LEN] = ptr_at(ctx, l4)?;
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    if unsafe { (*icmp)[0] } != ICMPV6_PACKET_TOO_BIG {
        return Err(stat::PASS_ICMP);
    }
    let quoted_off = l4 + ICMP_LEN;
    let quoted: *const Ipv6Hdr = ptr_at(ctx, quoted_off)?;
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let quoted = unsafe { &*quoted };
    if !is_balanced(quoted.next_hdr) {
        return Err(stat::PASS_ICMP);
    }
    let ports_off = quoted_off + IPV6_LEN;
    let ports: *const [u8; 4] = ptr_at(ctx, ports_off)?;
    if ports_off + 4 > ip_end {
        return Err(stat::PASS_MALFORMED);
    }
    // SAFETY: the pointer came from ptr_at, which checked it lies inside the frame.
    let p = unsafe { *ports };
    Ok(FlowKey {
        src: quoted.dst_addr,
        dst: quoted.src_addr,
        sport: u16::from_ne_bytes([p[2], p[3]]),
        dport: u16::from_ne_bytes([p[0], p[1]]),
        proto: quoted.next_hdr,
        family: FAMILY_V6,
        _pad: [0; 2],
    })
}
