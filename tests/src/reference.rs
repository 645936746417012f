//! A reference model of the XDP program: for a frame, the ingress interface and the contents
//! of the maps, what the program must answer (the XDP action, the verdict counter, the event
//! counters, the frame it leaves, the flow it records and the packet it counts for a service
//! and backend). Written from the README's "How it forwards" and a reading of lb-ebpf, in
//! plain Rust over byte slices; it shares with the program only lb-common's layouts and
//! hashes. `tests/tests/xdp_differential.rs` runs many frames through both and compares.
//!
//! The rules, in the order the program applies them:
//!
//! 1. An 802.1Q / 802.1ad tag: `pass_vlan`; any other Ethernet type but IPv4 or IPv6 (ARP):
//!    `pass_not_ip`.
//! 2. An IP header that is cut short, of the wrong version, or whose lengths do not fit the
//!    frame (IPv4: IHL below 5, total length below the header or past the frame; IPv6: the
//!    payload length past the frame): `pass_malformed`. So is a TCP or UDP header (20 or 8
//!    bytes) that does not fit in the frame and the IP packet.
//! 3. IPv4 TCP/UDP with the more-fragments flag or an offset, or IPv6 with a Fragment header
//!    before TCP/UDP: a fragment, steered by (source, destination, protocol) with both ports 0.
//!    An IPv6 Fragment header before anything else: `pass_not_service`.
//! 4. ICMP "fragmentation needed" (type 3 code 4, not itself a fragment), ICMPv6 "packet too
//!    big" (type 2): the flow whose IP header and first 4 transport bytes it quotes, turned
//!    into the client-to-VIP direction; a quote cut short is `pass_malformed`, one of another
//!    protocol and every other ICMP message (echo, neighbour discovery, other errors, ICMP
//!    fragments) `pass_icmp`, to any destination.
//! 5. Other IPv6 extension headers: `pass_ipv6_ext`; any other protocol: `pass_not_service`.
//! 6. A destination (the quoted VIP for ICMP) whose bit in the VIP bitmap is clear:
//!    `pass_not_service`.
//! 7. A TCP/UDP packet of a flow in the flow table whose backend is usable goes there
//!    (`flow_hit`), without a service lookup. A TCP RST removes the entry (`flow_reset`); a
//!    FIN marks it (`FLOW_F_FIN`), a SYN without ACK takes the mark off; the entry's `seen`
//!    is refreshed (the model leaves `seen` to the test: it is the program's clock).
//! 8. Otherwise the service of (VIP, port, protocol), then of (VIP, port 0, protocol); an entry
//!    for fragments only (the agent's) serves fragments alone, and fragments look up port 0
//!    only. No service: `pass_not_service`.
//! 9. Steps 7 and 8 forward only frames addressed to the ingress interface: with a
//!    `LOCAL_MACS` entry for it, the destination MAC must be one of its MACs, else
//!    `pass_not_service` for a group address and `pass_other_host` for another host's.
//! 10. The backend: an ICMP error goes to its flow's backend if the flow table has it and the
//!     backend is usable (`icmp_too_big`); otherwise the Maglev table's entry at hash mod size,
//!     the hash being of the 5-tuple, or of the source alone for a source-hash service. An empty
//!     entry, a table of size 0 or an unusable backend: `drop_no_backend` (XDP_DROP). A new TCP/UDP
//!     flow is recorded (`flow_new`, or `flow_rebalanced` when its recorded backend was unusable),
//!     FIN-marked if it carries a FIN, unless it is a RST, which records nothing and removes an
//!     entry with an unusable backend (`flow_reset`), a SYN without ACK, which records
//!     nothing (the handshake's ACK does), or a new flow past the CPU's new-flow
//!     limit (`flow_unrecorded`; the model holds no limit, as the fixture sets none);
//!     fragments count `fragment`.
//! 11. Forwarding rewrites the destination MAC to the backend's and the source MAC to its
//!     interface's; XDP_TX when the backend sits behind the ingress interface, else
//!     XDP_REDIRECT through the devmap, or XDP_DROP (`drop_redirect_failed`) when its interface
//!     is not in the devmap. Forwarded packets count for their service and backend (the IP
//!     length, and a new flow when one was recorded with the packet), and `ipv4_options` when
//!     the IPv4 header has options.
//!
//! Where the program does more, or other, than the README says, the model follows the program
//! (each is a finding for the README or the program, not a choice made here):
//!
//! - ICMP that is not "fragmentation needed" / "packet too big" is `pass_icmp` whatever its
//!   destination (the README and the counter's doc say "to a VIP"; neighbour discovery to the
//!   node's own address counts there too);
//! - an ICMP error is steered by the packet it quotes alone: one sent to another address than
//!   the VIP (the node's own, say) that quotes a VIP's flow is forwarded like one to the VIP;
//! - every IPv6 packet with a Fragment header is a fragment, atomic fragments (offset 0, no
//!   more fragments: whole packets, RFC 6946) included, so they do not follow their flow;
//! - a flow is recorded, and `flow_new`, `flow_rebalanced`, `flow_hit`, `fragment` and
//!   `icmp_too_big` counted, also when the frame is then dropped (`drop_redirect_failed`, or
//!   `drop_no_backend` for the last two);
//! - a VIP frame to another host's MAC for a port without a service is `pass_not_service`,
//!   not `pass_other_host`: the MAC is only checked once a flow or service matched.

use std::collections::{HashMap, HashSet};

use lb_common::{
    hash::{flow_hash, source_hash},
    stat, Backend, Flow, FlowKey, LocalMacs, Service, ServiceKey, VipFilter, BACKEND_F_USABLE, FAMILY_V4, FAMILY_V6, FLOW_F_FIN,
    LOCAL_MAC_SLOTS, MAX_RING_SIZE, PROTO_TCP, PROTO_UDP, RING_EMPTY, SERVICE_F_FRAGMENTS_ONLY, SERVICE_F_HASH_SOURCE,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// What the maps hold, as the model reads them.
#[derive(Clone, Debug, Default)]
pub struct Maps {
    pub services: HashMap<ServiceKey, Service>,
    /// Ring slot -> its entries (entries past the written ones are empty).
    pub rings: HashMap<u32, Vec<u32>>,
    /// Backend slot -> entry; a slot absent here is all zeros (not usable).
    pub backends: HashMap<u32, Backend>,
    /// Slots in `BACKENDS`: an index past them has no entry at all.
    pub backend_slots: u32,
    pub flows: HashMap<FlowKey, Flow>,
    /// Interfaces in the `EGRESS` devmap.
    pub egress: HashSet<u32>,
    /// `LOCAL_MACS` by slot.
    pub local_macs: HashMap<u32, LocalMacs>,
    pub vip_filter: VipFilter,
}

/// The program's answer for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub action: u32,
    /// The verdict counter (`lb_common::stat`, below `EVENT_FLOW_HIT`).
    pub verdict: u32,
    /// Event counters counted.
    pub events: Vec<u32>,
    /// The frame as the program leaves it.
    pub frame: Vec<u8>,
    /// The flow table entry written (`seen` left 0: the program's clock, which the test checks).
    pub flow_written: Option<(FlowKey, Flow)>,
    /// The flow table entry removed.
    pub flow_removed: Option<FlowKey>,
    /// (service id, backend slot, bytes, a new flow recorded) counted for a forwarded packet.
    pub counted: Option<(u32, u32, u32, bool)>,
}

/// How a packet is steered (the program's `parse::Kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Flow,
    Fragment,
    TooBig,
}

struct Packet {
    key: FlowKey,
    kind: Kind,
    ip_len: u32,
    ipv4_options: bool,
    /// TCP's flags byte; 0 for anything else.
    tcp_flags: u8,
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// A flow entry's flags after a packet with `tcp_flags`.
fn marked(tcp_flags: u8, flags: u32) -> u32 {
    if tcp_flags & TCP_FIN != 0 {
        flags | FLOW_F_FIN
    } else if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        flags & !FLOW_F_FIN
    } else {
        flags
    }
}

const ETH: usize = 14;
const ICMP_HEADER: usize = 8;

fn be16(f: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([f[at], f[at + 1]]))
}

/// The port at `at`, as the maps keep it (network order read as a native integer).
fn port(f: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([f[at], f[at + 1]])
}

/// A key with the addresses of an IPv4 (4-byte) or IPv6 (16-byte) header, ports 0.
fn flow_key(proto: u8, src: &[u8], dst: &[u8]) -> FlowKey {
    let mut k = FlowKey { proto, family: if src.len() == 4 { FAMILY_V4 } else { FAMILY_V6 }, ..FlowKey::default() };
    k.src[..src.len()].copy_from_slice(src);
    k.dst[..dst.len()].copy_from_slice(dst);
    k
}

fn balanced(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_UDP
}

/// Reads the headers: the packet, or the verdict counter of a frame left to the kernel. Frames
/// hold an Ethernet header at least (BPF_PROG_TEST_RUN refuses shorter ones).
fn parse(f: &[u8]) -> Result<Packet, u32> {
    match be16(f, 12) {
        0x0800 => parse_v4(f),
        0x86dd => parse_v6(f),
        0x8100 | 0x88a8 => Err(stat::PASS_VLAN),
        _ => Err(stat::PASS_NOT_IP),
    }
}

/// `Ok` when `len` bytes from `at` lie inside both the frame and the IP packet.
fn fits(f: &[u8], at: usize, len: usize, ip_end: usize) -> Result<(), u32> {
    if at + len > f.len() || at + len > ip_end {
        return Err(stat::PASS_MALFORMED);
    }
    Ok(())
}

/// Reads the ports into `key`; TCP's flags byte is returned (0 for UDP).
fn ports(f: &[u8], key: &mut FlowKey, l4: usize, ip_end: usize) -> Result<u8, u32> {
    // The program reads 4 bytes within the frame, and needs a whole header within the packet.
    fits(f, l4, 4, usize::MAX)?;
    fits(f, l4, if key.proto == PROTO_TCP { 20 } else { 8 }, ip_end)?;
    key.sport = port(f, l4);
    key.dport = port(f, l4 + 2);
    Ok(if key.proto == PROTO_TCP { f[l4 + 13] } else { 0 })
}

fn parse_v4(f: &[u8]) -> Result<Packet, u32> {
    fits(f, ETH, 20, usize::MAX)?;
    let ihl = usize::from(f[ETH] & 0x0f) * 4;
    let total = be16(f, ETH + 2);
    if f[ETH] >> 4 != 4 || ihl < 20 || total < ihl || ETH + total > f.len() {
        return Err(stat::PASS_MALFORMED);
    }
    let proto = f[ETH + 9];
    let ip_end = ETH + total;
    let l4 = ETH + ihl;
    let fragment = be16(f, ETH + 6) & 0x3fff != 0;
    let mut key = flow_key(proto, &f[ETH + 12..ETH + 16], &f[ETH + 16..ETH + 20]);
    let mut packet = Packet { key, kind: Kind::Flow, ip_len: total as u32, ipv4_options: ihl > 20, tcp_flags: 0 };
    if balanced(proto) && fragment {
        packet.kind = Kind::Fragment;
    } else if balanced(proto) {
        packet.tcp_flags = ports(f, &mut key, l4, ip_end)?;
        packet.key = key;
    } else if proto == 1 && !fragment {
        // ICMP: only "fragmentation needed" about a TCP/UDP flow is balanced.
        fits(f, l4, ICMP_HEADER, usize::MAX)?;
        if f[l4] != 3 || f[l4 + 1] != 4 {
            return Err(stat::PASS_ICMP);
        }
        let q = l4 + ICMP_HEADER;
        fits(f, q, 20, usize::MAX)?;
        let q_ihl = usize::from(f[q] & 0x0f) * 4;
        if f[q] >> 4 != 4 || q_ihl < 20 {
            return Err(stat::PASS_MALFORMED);
        }
        let q_proto = f[q + 9];
        if !balanced(q_proto) {
            return Err(stat::PASS_ICMP);
        }
        fits(f, q + q_ihl, 4, ip_end)?;
        // Quoted: VIP -> client; the flow is client -> VIP.
        let mut quoted = flow_key(q_proto, &f[q + 16..q + 20], &f[q + 12..q + 16]);
        quoted.sport = port(f, q + q_ihl + 2);
        quoted.dport = port(f, q + q_ihl);
        packet.key = quoted;
        packet.kind = Kind::TooBig;
    } else if proto == 1 {
        return Err(stat::PASS_ICMP);
    } else {
        return Err(stat::PASS_NOT_SERVICE);
    }
    Ok(packet)
}

fn parse_v6(f: &[u8]) -> Result<Packet, u32> {
    fits(f, ETH, 40, usize::MAX)?;
    let payload = be16(f, ETH + 4);
    if f[ETH] >> 4 != 6 || ETH + 40 + payload > f.len() {
        return Err(stat::PASS_MALFORMED);
    }
    let next = f[ETH + 6];
    let l4 = ETH + 40;
    let ip_end = l4 + payload;
    let mut key = flow_key(next, &f[ETH + 8..ETH + 24], &f[ETH + 24..ETH + 40]);
    let mut packet = Packet { key, kind: Kind::Flow, ip_len: (40 + payload) as u32, ipv4_options: false, tcp_flags: 0 };
    match next {
        PROTO_TCP | PROTO_UDP => {
            packet.tcp_flags = ports(f, &mut key, l4, ip_end)?;
            packet.key = key;
        }
        44 => {
            fits(f, l4, 8, ip_end)?;
            if !balanced(f[l4]) {
                return Err(stat::PASS_NOT_SERVICE);
            }
            packet.key.proto = f[l4];
            packet.kind = Kind::Fragment;
        }
        58 => {
            fits(f, l4, ICMP_HEADER, usize::MAX)?;
            if f[l4] != 2 {
                return Err(stat::PASS_ICMP);
            }
            // The quoted IPv6 header need only lie in the frame; its version is not read.
            let q = l4 + ICMP_HEADER;
            fits(f, q, 40, usize::MAX)?;
            let q_next = f[q + 6];
            if !balanced(q_next) {
                return Err(stat::PASS_ICMP);
            }
            fits(f, q + 40, 4, ip_end)?;
            let mut quoted = flow_key(q_next, &f[q + 24..q + 40], &f[q + 8..q + 24]);
            quoted.sport = port(f, q + 42);
            quoted.dport = port(f, q + 40);
            packet.key = quoted;
            packet.kind = Kind::TooBig;
        }
        0 | 43 | 50 | 51 | 60 | 135 | 139 | 140 => return Err(stat::PASS_IPV6_EXT),
        _ => return Err(stat::PASS_NOT_SERVICE),
    }
    Ok(packet)
}

impl Maps {
    fn usable(&self, slot: u32) -> Option<Backend> {
        if slot >= self.backend_slots {
            return None;
        }
        let b = self.backends.get(&slot).copied().unwrap_or_default();
        (b.flags & BACKEND_F_USABLE != 0).then_some(b)
    }

    fn service(&self, key: &FlowKey, kind: Kind) -> Option<Service> {
        let mut skey = ServiceKey { addr: key.dst, port: key.dport, proto: key.proto, family: key.family };
        if kind != Kind::Fragment {
            if let Some(s) = self.services.get(&skey) {
                if s.flags & SERVICE_F_FRAGMENTS_ONLY == 0 {
                    return Some(*s);
                }
            }
        }
        skey.port = 0;
        let s = self.services.get(&skey)?;
        (s.flags & SERVICE_F_FRAGMENTS_ONLY == 0 || kind == Kind::Fragment).then_some(*s)
    }

    /// The verdict counter of a frame not addressed to `ingress`, if it is not.
    fn not_addressed_here(&self, ingress: u32, dst_mac: &[u8]) -> Option<u32> {
        let entry = self.local_macs.get(&(ingress % LOCAL_MAC_SLOTS))?;
        if entry.ifindex != ingress || entry.macs().iter().any(|m| m[..] == *dst_mac) {
            return None;
        }
        Some(if dst_mac[0] & 1 != 0 { stat::PASS_NOT_SERVICE } else { stat::PASS_OTHER_HOST })
    }

    /// The Maglev table's choice for `key`.
    fn maglev_choice(&self, svc: &Service, key: &FlowKey) -> Result<(u32, Backend), u32> {
        let hash = if svc.flags & SERVICE_F_HASH_SOURCE != 0 { source_hash(key) } else { flow_hash(key) };
        if svc.ring_size == 0 {
            return Err(stat::DROP_NO_BACKEND);
        }
        let ring = self.rings.get(&svc.ring_slot).ok_or(stat::DROP_NO_BACKEND)?;
        let at = (hash % svc.ring_size) as usize;
        if at >= MAX_RING_SIZE {
            return Err(stat::DROP_NO_BACKEND);
        }
        let slot = ring.get(at).copied().unwrap_or(RING_EMPTY);
        if slot == RING_EMPTY {
            return Err(stat::DROP_NO_BACKEND);
        }
        self.usable(slot).map(|b| (slot, b)).ok_or(stat::DROP_NO_BACKEND)
    }

    /// What the program does with `frame` arriving on interface `ingress`.
    pub fn run(&self, ingress: u32, frame: &[u8]) -> Answer {
        let mut answer = Answer {
            action: XDP_PASS,
            verdict: stat::PASS_NOT_SERVICE,
            events: Vec::new(),
            frame: frame.to_vec(),
            flow_written: None,
            flow_removed: None,
            counted: None,
        };
        let packet = match parse(frame) {
            Ok(p) => p,
            Err(verdict) => return Answer { verdict, ..answer },
        };
        if !self.vip_filter.may_contain(&packet.key.dst) {
            return answer;
        }
        let known = if packet.kind == Kind::Flow { self.flows.get(&packet.key).copied() } else { None };
        if let Some(flow) = known {
            if let Some(backend) = self.usable(flow.backend) {
                if let Some(verdict) = self.not_addressed_here(ingress, &frame[..6]) {
                    return Answer { verdict, ..answer };
                }
                answer.events.push(stat::EVENT_FLOW_HIT);
                if packet.tcp_flags & TCP_RST != 0 {
                    answer.flow_removed = Some(packet.key);
                    answer.events.push(stat::EVENT_FLOW_RESET);
                } else {
                    answer.flow_written = Some((packet.key, Flow { seen: 0, flags: marked(packet.tcp_flags, flow.flags), ..flow }));
                }
                self.send(&mut answer, ingress, &packet, flow.service, flow.backend, &backend, false);
                return answer;
            }
        }
        let Some(svc) = self.service(&packet.key, packet.kind) else { return answer };
        if let Some(verdict) = self.not_addressed_here(ingress, &frame[..6]) {
            return Answer { verdict, ..answer };
        }
        let chosen = match packet.kind {
            Kind::Flow => self.maglev_choice(&svc, &packet.key).inspect(|(slot, _)| {
                if packet.tcp_flags & TCP_RST != 0 {
                    if known.is_some() {
                        answer.flow_removed = Some(packet.key);
                        answer.events.push(stat::EVENT_FLOW_RESET);
                    }
                } else if packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    // A SYN goes by the table unrecorded; the handshake's ACK records the flow.
                } else {
                    let flags = marked(packet.tcp_flags, 0);
                    answer.flow_written = Some((packet.key, Flow { backend: *slot, service: svc.id, flags, ..Flow::default() }));
                    answer.events.push(if known.is_some() { stat::EVENT_FLOW_REBALANCED } else { stat::EVENT_FLOW_NEW });
                }
            }),
            Kind::Fragment => {
                answer.events.push(stat::EVENT_FRAGMENT);
                self.maglev_choice(&svc, &packet.key)
            }
            Kind::TooBig => {
                answer.events.push(stat::EVENT_ICMP_TOO_BIG);
                let recorded = self.flows.get(&packet.key).and_then(|f| Some((f.backend, self.usable(f.backend)?)));
                recorded.map_or_else(|| self.maglev_choice(&svc, &packet.key), Ok)
            }
        };
        match chosen {
            Ok((slot, backend)) => {
                let recorded = packet.kind == Kind::Flow && answer.flow_written.is_some();
                self.send(&mut answer, ingress, &packet, svc.id, slot, &backend, recorded)
            }
            Err(verdict) => {
                answer.action = XDP_DROP;
                answer.verdict = verdict;
            }
        }
        answer
    }

    /// Forwards to `backend`; `recorded`: the packet's new flow was recorded with it.
    fn send(&self, answer: &mut Answer, ingress: u32, packet: &Packet, service: u32, slot: u32, backend: &Backend, recorded: bool) {
        answer.frame[..6].copy_from_slice(&backend.dst_mac);
        answer.frame[6..12].copy_from_slice(&backend.src_mac);
        (answer.action, answer.verdict) = if backend.ifindex == ingress {
            (XDP_TX, stat::VERDICT_TX)
        } else if self.egress.contains(&backend.ifindex) {
            (XDP_REDIRECT, stat::VERDICT_REDIRECT)
        } else {
            (XDP_DROP, stat::DROP_REDIRECT_FAILED)
        };
        if answer.action != XDP_DROP {
            answer.counted = Some((service, slot, packet.ip_len, recorded));
            if packet.ipv4_options {
                answer.events.push(stat::EVENT_IPV4_OPTIONS);
            }
        }
    }
}
