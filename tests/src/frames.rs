//! Ethernet frames built byte by byte, with correct lengths and checksums, for feeding the XDP
//! program through BPF_PROG_TEST_RUN (tests and `cargo xtask bench`), or for sending as they
//! are onto a lab segment ([`send_raw`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_packet::{
    ip::IpNextHeaderProtocol,
    util::{checksum, ipv4_checksum, ipv6_checksum},
};

pub const ETH_LEN: usize = 14;
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_VRRP: u8 = 112;

/// An Ethernet header (client to node) with `ethertype`.
pub fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&NODE_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Transport header and payload: TCP (20-byte header, ACK) or UDP, checksum left zero for
/// [`finish_l4`] to fill.
pub fn transport(proto: u8, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == PROTO_TCP {
        l4.extend_from_slice(&1000u32.to_be_bytes()); // seq
        l4.extend_from_slice(&0u32.to_be_bytes()); // ack
        l4.extend_from_slice(&[0x50, TCP_ACK]); // data offset 5, ACK: a segment of a connection
        l4.extend_from_slice(&65535u16.to_be_bytes()); // window
        l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    } else {
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    l4
}

fn l4_checksum_word(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(8),
        PROTO_UDP => Some(3),
        PROTO_ICMPV6 => Some(1),
        _ => None,
    }
}

/// Fills the transport checksum of `l4` for the given addresses.
pub fn finish_l4(l4: &mut [u8], src: IpAddr, dst: IpAddr, proto: u8) {
    let Some(word) = l4_checksum_word(proto) else { return };
    let sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_checksum(l4, word, &[], &s, &d, IpNextHeaderProtocol(proto)),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_checksum(l4, word, &[], &s, &d, IpNextHeaderProtocol(proto)),
        _ => panic!("mixed address families"),
    };
    l4[word * 2..word * 2 + 2].copy_from_slice(&sum.to_be_bytes());
}

/// IPv4 header fields a test may want to vary.
#[derive(Clone, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    /// Flags and fragment offset field (host order): 0x2000 = more fragments.
    pub frag: u16,
    /// Options (padded to a multiple of 4 by the caller).
    pub options: Vec<u8>,
}

impl V4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        V4 { src, dst, proto, ttl: 64, frag: 0x4000, options: Vec::new() }
    }

    /// The IP packet (header and `payload`).
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let ihl = 20 + self.options.len();
        let mut p = Vec::with_capacity(ihl + payload.len());
        p.push(0x40 | (ihl / 4) as u8);
        p.push(0);
        p.extend_from_slice(&((ihl + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&0x1234u16.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.proto);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        p.extend_from_slice(&self.options);
        let sum = checksum(&p[..ihl], 5);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let mut f = ethernet(0x0800);
        f.extend_from_slice(&self.packet(payload));
        f
    }
}

/// An IPv6 packet: fixed header with `next` and `payload`.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(next);
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

pub fn ipv6_frame(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = ethernet(0x86dd);
    f.extend_from_slice(&ipv6_packet(src, dst, next, payload));
    f
}

/// A TCP SYN or UDP datagram frame between two addresses of the same family.
pub fn flow_frame(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp_or_udp_frame(proto, None, src, sport, dst, dport, payload)
}

/// TCP flags.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment with these flags (a checksum to match).
pub fn tcp_frame(flags: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp_or_udp_frame(PROTO_TCP, Some(flags), src, sport, dst, dport, payload)
}

fn tcp_or_udp_frame(proto: u8, flags: Option<u8>, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = transport(proto, sport, dport, payload);
    if let Some(flags) = flags {
        l4[13] = flags;
    }
    finish_l4(&mut l4, src, dst, proto);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => V4::new(s, d, proto).frame(&l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_frame(s, d, proto, &l4),
        _ => panic!("mixed address families"),
    }
}

/// ICMP "fragmentation needed" from `router` to `vip` quoting `quoted` (an IP packet the
/// backend sent from the VIP; only its header and first 8 transport bytes are carried).
pub fn icmp4_frag_needed(router: Ipv4Addr, vip: Ipv4Addr, quoted: &[u8], mtu: u16) -> Vec<u8> {
    let ihl = ((quoted[0] & 0x0f) as usize) * 4;
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quoted[..(ihl + 8).min(quoted.len())]);
    let sum = checksum(&icmp, 1);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    V4::new(router, vip, PROTO_ICMP).frame(&icmp)
}

/// ICMPv6 "packet too big" from `router` to `vip` quoting as much of `quoted` as fits.
pub fn icmp6_packet_too_big(router: Ipv6Addr, vip: Ipv6Addr, quoted: &[u8], mtu: u32) -> Vec<u8> {
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quoted[..quoted.len().min(1232)]);
    finish_l4(&mut icmp, IpAddr::V6(router), IpAddr::V6(vip), PROTO_ICMPV6);
    ipv6_frame(router, vip, PROTO_ICMPV6, &icmp)
}

/// IP protocol numbers of the tunnels: IPv4 inside (IPIP, 4-in-6) and IPv6 inside (IP6IP6, 6-in-4).
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;

/// How a packet is wrapped for a backend beyond the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// The inner packet right after the outer IP header: IPIP, IP6IP6, 4-in-6 or 6-in-4,
    /// by the families of the outer and inner headers.
    Ip,
    /// GUE variant 1: outer IP, a UDP header (checksum 0), then the inner packet.
    Gue { sport: u16, dport: u16 },
}

/// The IP packet carrying `inner` (an IP packet) from `src` to `dst` through `tunnel`.
pub fn encapsulate(src: IpAddr, dst: IpAddr, tunnel: Tunnel, inner: &[u8]) -> Vec<u8> {
    let (proto, payload) = match tunnel {
        Tunnel::Ip => (if inner[0] >> 4 == 6 { PROTO_IPV6 } else { PROTO_IPIP }, inner.to_vec()),
        Tunnel::Gue { sport, dport } => {
            let mut udp = Vec::with_capacity(8 + inner.len());
            udp.extend_from_slice(&sport.to_be_bytes());
            udp.extend_from_slice(&dport.to_be_bytes());
            udp.extend_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
            udp.extend_from_slice(&[0, 0]);
            udp.extend_from_slice(inner);
            (PROTO_UDP, udp)
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => V4::new(s, d, proto).packet(&payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_packet(s, d, proto, &payload),
        _ => panic!("mixed address families"),
    }
}

/// An Ethernet frame from `src` to `dst` carrying the IP packet `packet` (its type from the
/// packet's version).
pub fn ethernet_frame(dst: [u8; 6], src: [u8; 6], packet: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + packet.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&(if packet[0] >> 4 == 6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
    f.extend_from_slice(packet);
    f
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet(0x0806);
    f[..6].copy_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A VRRPv3 advertisement (RFC 5798) for `vrid` at `priority` announcing `vips`.
pub fn vrrp3_advert(src: Ipv4Addr, vrid: u8, priority: u8, vips: &[Ipv4Addr]) -> Vec<u8> {
    let mut v = vec![0x31, vrid, priority, vips.len() as u8, 0x00, 100, 0, 0];
    for vip in vips {
        v.extend_from_slice(&vip.octets());
    }
    let dst = Ipv4Addr::new(224, 0, 0, 18);
    let sum = ipv4_checksum(&v, 3, &[], &src, &dst, IpNextHeaderProtocol(PROTO_VRRP));
    v[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut ip = V4::new(src, dst, PROTO_VRRP);
    ip.ttl = 255;
    let mut f = ip.frame(&v);
    f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
    f
}

/// Sends `frame` (Ethernet header included) as it is out of interface `ifname` of the calling
/// thread's network namespace, through an AF_PACKET raw socket: for frames the kernel's stack
/// would never build, such as one to the VIP addressed to another host's MAC.
pub fn send_raw(ifname: &str, frame: &[u8]) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(std::io::Error::from)?;
    // Protocol 0: the socket sends only, it receives nothing.
    // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a C struct of integers and arrays, for which all zeros is a valid value.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a C struct of integers and arrays, for which all zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match sent {
        n if n < 0 => Err(std::io::Error::last_os_error()),
        n if n as usize != frame.len() => Err(std::io::Error::other(format!("sent {n} of {} bytes", frame.len()))),
        _ => Ok(()),
    }
}

/// SplitMix64: small, and the same frames on every run from the same seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A tunnel's outer IPv4 header as xlb's program writes it (id 0, TTL 64, DF as asked), for
/// `payload_len` bytes after it, its checksum filled in.
pub fn outer_ipv4(tos: u8, proto: u8, src: Ipv4Addr, dst: Ipv4Addr, df: bool, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, if df { 0x40 } else { 0 }, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&h, 5);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// A tunnel's outer IPv6 header as xlb's program writes it (hop limit 64).
pub fn outer_ipv6(tc: u8, flow_label: u32, next: u8, src: Ipv6Addr, dst: Ipv6Addr, payload_len: usize) -> Vec<u8> {
    let mut h = ((6u32 << 28) | ((tc as u32) << 20) | (flow_label & 0xf_ffff)).to_be_bytes().to_vec();
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}
