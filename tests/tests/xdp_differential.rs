//! The XDP program against its reference model (`xlb_tests::reference`): 120,000 frames from a
//! fixed seed, valid and broken, each run once through BPF_PROG_TEST_RUN and through the model
//! with the same map contents; the action, the verdict and event counters, the frame out, the
//! flow recorded and, at the end, every service and backend counter must agree.
//!
//! The frames: TCP and UDP over IPv4 and IPv6 to VIPs and to other addresses, flows the flow
//! table holds, IPv4 options, IPv6 extension headers, fragments (first and later), 802.1Q
//! tags, ICMP errors quoting flows and other ICMP, non-IP frames, to the node's MAC, a virtual
//! MAC, broadcast, multicast and another host's MAC, arriving on three interfaces; then cut
//! short, with bits flipped, with their length fields changed, padded, or random bytes.
//!
//! The flow table is reset after every frame: a flow the program recorded is checked against
//! the model's and deleted (or, for a flow of the fixture's table, written back), so every
//! frame meets the same maps and the LRU's evictions play no part.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use aya::programs::{TestRun, TestRunOptions};
use lb_common::{
    stat, Backend, Counters, Flow, FlowKey, LocalMacs, Service, ServiceKey, VipFilter, BACKEND_F_ASSIGNED, BACKEND_F_USABLE, FLOW_F_FIN,
    LOCAL_MAC_SLOTS, MAX_BACKENDS, PROTO_TCP, PROTO_UDP, RING_EMPTY, SERVICE_F_FRAGMENTS_ONLY, SERVICE_F_HASH_SOURCE,
};
use lb_userspace::{
    dataplane::{Dataplane, Sizes},
    flowscan::coarse_now,
};
use xlb_tests::{
    frames::{self, flow_frame, Rng, V4, NODE_MAC, PROTO_ICMP, PROTO_ICMPV6},
    reference::{Answer, Maps},
};

const FRAMES: usize = 120_000;
const SEED: u64 = 0x786c_625f_6469_6666;
/// Disagreements printed in full (all are counted).
const SHOWN: usize = 20;

const CLIENT4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10);
const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
/// Every TCP port: a port-0 service.
const VIP4_ANY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 101);
/// Source hash, a table of 65537 entries.
const VIP4_SH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 102);
/// Backends behind another interface: one in the devmap, one not.
const VIP4_REDIRECT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 103);
/// A table without a backend.
const VIP4_EMPTY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 104);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100);
/// Every UDP port, source hash.
const VIP6_ANY: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x101);
const OTHER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);

const VIPS4: [Ipv4Addr; 5] = [VIP4, VIP4_ANY, VIP4_SH, VIP4_REDIRECT, VIP4_EMPTY];
const VIPS6: [Ipv6Addr; 2] = [VIP6, VIP6_ANY];

const VMAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 51];
const XA_MAC: [u8; 6] = [0x02, 0, 0, 0, 9, 1];
const XB_MAC: [u8; 6] = [0x02, 0, 0, 0, 9, 2];
const OTHER_HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];

/// Backend slots: 0-2 behind `lo`, 3 behind `xb` (in the devmap), 4 unusable, 5 behind `xa`
/// (not in the devmap: the redirect fails), and one past the map.
const UNUSABLE: u32 = 4;
const BEHIND_XB: u32 = 3;
const BEHIND_XA: u32 = 5;
const PAST_THE_MAP: u32 = MAX_BACKENDS + 7;

/// The interfaces of the private namespace.
struct Links {
    lo: u32,
    xa: u32,
    xb: u32,
}

fn addr4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn addr6(a: Ipv6Addr) -> IpAddr {
    IpAddr::V6(a)
}

/// Writes the fixture into the maps and returns what the model reads of them.
fn fixture(dp: &mut Dataplane, links: &Links) -> Maps {
    let mut maps = Maps { backend_slots: MAX_BACKENDS, ..Maps::default() };
    let backend = |n: u8, src_mac, ifindex, flags| Backend { dst_mac: [0x02, 0, 0, 0, 1, n], src_mac, ifindex, flags, ..Default::default() };
    let usable = BACKEND_F_USABLE | BACKEND_F_ASSIGNED;
    let backends = [
        backend(1, NODE_MAC, links.lo, usable),
        backend(2, NODE_MAC, links.lo, usable),
        backend(3, NODE_MAC, links.lo, usable),
        backend(4, XB_MAC, links.xb, usable),
        backend(5, NODE_MAC, links.lo, BACKEND_F_ASSIGNED),
        backend(6, XA_MAC, links.xa, usable),
    ];
    for (slot, b) in backends.iter().enumerate() {
        dp.set_backend(slot as u32, b).unwrap();
        maps.backends.insert(slot as u32, *b);
    }
    dp.add_egress(links.xb).unwrap();
    maps.egress.insert(links.xb);

    let cycle = |size: usize, slots: &[u32]| -> Vec<u32> { (0..size).map(|i| slots[i % slots.len()]).collect() };
    // Service i is SERVICES[i]: its flags and Maglev table (a size 0 one for VIP4:443).
    let tables: [(u32, Vec<u32>); 10] = [
        (0, cycle(13, &[0, 1, 2])),
        (0, cycle(7, &[0, 1, 2, UNUSABLE])),
        (0, vec![]),
        (0, cycle(13, &[0, 1, 2, BEHIND_XB])),
        (SERVICE_F_HASH_SOURCE, cycle(65537, &[2, 0, 1])),
        (0, cycle(13, &[BEHIND_XB, BEHIND_XA])),
        (0, vec![RING_EMPTY; 13]),
        (0, cycle(13, &[0, 1, 2])),
        (0, cycle(11, &[2, 1, 0, UNUSABLE])),
        (SERVICE_F_HASH_SOURCE, cycle(13, &[1, BEHIND_XB, 0])),
    ];
    for (id, ((proto, vip, port), (flags, table))) in SERVICES.into_iter().zip(tables).enumerate() {
        let key = ServiceKey::new(vip, port, proto);
        dp.publish_service(&key, Service { id: id as u32, flags, ..Default::default() }, &table).unwrap();
        let live = dp.service_entry(&key).unwrap();
        maps.services.insert(key, live);
        maps.rings.insert(live.ring_slot, table);
    }
    // Fragment entries, as the agent writes them: VIP4's UDP and TCP fragments follow its
    // port-53 and port-80 tables, VIP6's UDP ones its port-53 table.
    for (vip, port, proto) in [(addr4(VIP4), 53, PROTO_UDP), (addr4(VIP4), 80, PROTO_TCP), (addr6(VIP6), 53, PROTO_UDP)] {
        let live = maps.services[&ServiceKey::new(vip, port, proto)];
        let entry = Service { flags: live.flags | SERVICE_F_FRAGMENTS_ONLY, ..live };
        dp.set_service_entry(&ServiceKey::new(vip, 0, proto), entry).unwrap();
        maps.services.insert(ServiceKey::new(vip, 0, proto), entry);
    }

    for (key, flow) in known_flows() {
        dp.insert_flow(&key, flow).unwrap();
        maps.flows.insert(key, flow);
    }
    for (ifindex, macs) in [(links.lo, &[NODE_MAC, VMAC][..]), (links.xa, &[XA_MAC][..])] {
        dp.set_local_macs(ifindex, macs).unwrap();
        maps.local_macs.insert(ifindex % LOCAL_MAC_SLOTS, LocalMacs::new(ifindex, macs).unwrap());
    }
    let vips: Vec<IpAddr> = VIPS4.iter().map(|v| addr4(*v)).chain(VIPS6.iter().map(|v| addr6(*v))).collect();
    dp.set_vips(&vips).unwrap();
    maps.vip_filter = VipFilter::new(&vips.iter().map(|v| ServiceKey::new(*v, 0, 0).addr).collect::<Vec<_>>());
    maps
}

/// The fixture's services as (protocol, VIP, port): the tables `fixture` writes.
const SERVICES: [(u8, IpAddr, u16); 10] = [
    (PROTO_TCP, IpAddr::V4(VIP4), 80),
    (PROTO_UDP, IpAddr::V4(VIP4), 53),
    (PROTO_TCP, IpAddr::V4(VIP4), 443),
    (PROTO_TCP, IpAddr::V4(VIP4_ANY), 0),
    (PROTO_TCP, IpAddr::V4(VIP4_SH), 80),
    (PROTO_TCP, IpAddr::V4(VIP4_REDIRECT), 80),
    (PROTO_TCP, IpAddr::V4(VIP4_EMPTY), 80),
    (PROTO_TCP, IpAddr::V6(VIP6), 80),
    (PROTO_UDP, IpAddr::V6(VIP6), 53),
    (PROTO_UDP, IpAddr::V6(VIP6_ANY), 0),
];

/// The flow table of the fixture: (protocol, client, client port, VIP, port, backend, service).
const KNOWN: [(u8, IpAddr, u16, IpAddr, u16, u32, u32); 7] = [
    // Pinned to a backend the table does not name.
    (PROTO_TCP, IpAddr::V4(CLIENT4), 50001, IpAddr::V4(VIP4), 80, BEHIND_XB, 0),
    // Its backend is no longer usable (rebalanced), or has no entry at all.
    (PROTO_TCP, IpAddr::V4(CLIENT4), 50002, IpAddr::V4(VIP4), 80, UNUSABLE, 0),
    (PROTO_TCP, IpAddr::V4(CLIENT4), 50006, IpAddr::V4(VIP4), 80, PAST_THE_MAP, 0),
    (PROTO_UDP, IpAddr::V6(CLIENT6), 50003, IpAddr::V6(VIP6), 53, 0, 8),
    // A port no service has: the flow table alone forwards it.
    (PROTO_TCP, IpAddr::V4(CLIENT4), 50004, IpAddr::V4(VIP4), 22, 1, 0),
    // Behind an interface outside the devmap.
    (PROTO_TCP, IpAddr::V4(CLIENT4), 50005, IpAddr::V4(VIP4_ANY), 443, BEHIND_XA, 3),
    // A service whose table is empty.
    (PROTO_TCP, IpAddr::V4(CLIENT4), 50007, IpAddr::V4(VIP4_EMPTY), 80, 2, 6),
];

/// The fixture's flows. Those of odd client ports carry a FIN mark (a SYN takes it off, a FIN
/// keeps it), the others none.
fn known_flows() -> impl Iterator<Item = (FlowKey, Flow)> {
    KNOWN.iter().map(|&(proto, src, sport, dst, dport, backend, service)| {
        let flags = if sport % 2 == 1 { FLOW_F_FIN } else { 0 };
        (FlowKey::new(proto, src, sport, dst, dport), Flow { backend, service, flags, ..Flow::default() })
    })
}

/// Makes the frames: what each one is, and its bytes.
struct Frames {
    rng: Rng,
    /// VIP4's twin in the VIP bitmap: not a VIP, but its bit is set.
    twin4: Ipv4Addr,
}

impl Frames {
    fn dst4(&mut self) -> Ipv4Addr {
        match self.rng.below(10) {
            0..=5 => self.rng.pick(&VIPS4),
            6 => OTHER4,
            7 => self.twin4,
            _ => Ipv4Addr::from(self.rng.next_u64() as u32),
        }
    }

    fn dst6(&mut self) -> Ipv6Addr {
        match self.rng.below(10) {
            0..=6 => self.rng.pick(&VIPS6),
            7 => OTHER6,
            _ => Ipv6Addr::from(u128::from(self.rng.next_u64()) << 64 | u128::from(self.rng.next_u64())),
        }
    }

    fn src4(&mut self) -> Ipv4Addr {
        if self.rng.chance(50) {
            CLIENT4
        } else {
            Ipv4Addr::new(198, 51, 100, self.rng.next_u64() as u8)
        }
    }

    fn src6(&mut self) -> Ipv6Addr {
        if self.rng.chance(50) {
            CLIENT6
        } else {
            Ipv6Addr::new(0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, self.rng.next_u64() as u16)
        }
    }

    fn port(&mut self) -> u16 {
        if self.rng.chance(70) {
            self.rng.pick(&[80, 53, 443, 22, 0, 8080])
        } else {
            self.rng.next_u64() as u16
        }
    }

    fn payload(&mut self) -> Vec<u8> {
        let n = self.rng.pick(&[0, 1, 7, 18, 64, 300]);
        self.rng.bytes(n)
    }

    fn proto(&mut self) -> u8 {
        self.rng.pick(&[PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_UDP, 132, 47, 112])
    }

    /// (source, destination) of one family.
    fn endpoints(&mut self) -> (IpAddr, IpAddr) {
        if self.rng.chance(60) {
            (addr4(self.src4()), addr4(self.dst4()))
        } else {
            (addr6(self.src6()), addr6(self.dst6()))
        }
    }

    /// An IP packet of `proto` (TCP and UDP with real headers) between one family's addresses.
    fn flow(&mut self, proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Vec<u8> {
        let payload = self.payload();
        match (proto, src, dst) {
            (PROTO_TCP, ..) => {
                let mut f = flow_frame(proto, src, sport, dst, dport, &payload);
                // SYN, ACK, PSH+ACK, FIN+ACK, FIN, RST, RST+ACK, SYN+ACK, SYN+FIN, anything.
                let any = self.rng.next_u64() as u8;
                let flags = self.rng.pick(&[0x02, 0x02, 0x10, 0x18, 0x11, 0x01, 0x04, 0x14, 0x12, 0x03, any]);
                let at = 14 + if src.is_ipv4() { 20 } else { 40 } + 13;
                f[at] = flags;
                f
            }
            (PROTO_UDP, ..) => flow_frame(proto, src, sport, dst, dport, &payload),
            (_, IpAddr::V4(s), IpAddr::V4(d)) => V4::new(s, d, proto).frame(&payload),
            (_, IpAddr::V6(s), IpAddr::V6(d)) => frames::ipv6_frame(s, d, proto, &payload),
            _ => unreachable!("one family"),
        }
    }

    fn valid(&mut self) -> Vec<u8> {
        let (src, dst) = self.endpoints();
        let (proto, sport, dport) = (self.proto(), self.rng.next_u64() as u16, self.port());
        self.flow(proto, src, sport, dst, dport)
    }

    /// A TCP or UDP packet to one of the fixture's services (any port for the port-0 ones).
    fn service_packet(&mut self) -> Vec<u8> {
        let (proto, vip, port) = self.rng.pick(&SERVICES);
        let src = if vip.is_ipv6() { addr6(self.src6()) } else { addr4(self.src4()) };
        let port = if port == 0 { self.rng.next_u64() as u16 } else { port };
        let sport = self.rng.next_u64() as u16;
        self.flow(proto, src, sport, vip, port)
    }

    fn known(&mut self) -> Vec<u8> {
        let (proto, src, sport, dst, dport, ..) = self.rng.pick(&KNOWN);
        self.flow(proto, src, sport, dst, dport)
    }

    fn ipv4_options(&mut self) -> Vec<u8> {
        let (proto, dst, dport) = match self.rng.pick(&SERVICES) {
            (proto, IpAddr::V4(vip), port) if self.rng.chance(70) => (proto, vip, port),
            _ => (self.rng.pick(&[PROTO_TCP, PROTO_UDP]), self.dst4(), self.port()),
        };
        let (src, sport) = (self.src4(), self.rng.next_u64() as u16);
        let mut l4 = frames::transport(proto, sport, dport, &self.payload());
        frames::finish_l4(&mut l4, src.into(), dst.into(), proto);
        let mut ip = V4::new(src, dst, proto);
        let words = 1 + self.rng.below(10);
        ip.options = self.rng.bytes(4 * words);
        ip.frame(&l4)
    }

    fn ipv6_extension(&mut self) -> Vec<u8> {
        let next = self.rng.pick(&[0, 43, 60, 51, 50, 135, 139, 140, 253]);
        let inner = self.rng.pick(&[PROTO_TCP, PROTO_UDP]);
        let mut payload = vec![inner, 0, 1, 4, 0, 0, 0, 0];
        payload.extend_from_slice(&frames::transport(inner, self.rng.next_u64() as u16, self.port(), b""));
        frames::ipv6_frame(self.src6(), self.dst6(), next, &payload)
    }

    fn fragment(&mut self) -> Vec<u8> {
        let first = self.rng.chance(50);
        let inner = self.rng.pick(&[PROTO_TCP, PROTO_UDP, PROTO_UDP, PROTO_ICMP, 47]);
        let body = if first {
            frames::transport(if inner == PROTO_TCP { PROTO_TCP } else { PROTO_UDP }, self.rng.next_u64() as u16, self.port(), &self.payload())
        } else {
            self.payload()
        };
        if self.rng.chance(60) {
            let mut ip = V4::new(self.src4(), self.dst4(), inner);
            ip.frag = if first { 0x2000 } else { self.rng.next_u64() as u16 & 0x3fff | 1 };
            ip.frame(&body)
        } else {
            let inner = if inner == PROTO_ICMP { PROTO_ICMPV6 } else { inner };
            // First: offset 0 with more fragments, or none (an atomic fragment); later: any.
            let offset: u16 = if first { self.rng.pick(&[1, 1, 0]) } else { (self.rng.next_u64() as u16) | 8 };
            let mut header = vec![inner, 0];
            header.extend_from_slice(&offset.to_be_bytes());
            header.extend_from_slice(&self.rng.bytes(4));
            header.extend_from_slice(&body);
            frames::ipv6_frame(self.src6(), self.dst6(), 44, &header)
        }
    }

    fn vlan(&mut self) -> Vec<u8> {
        let mut f = self.valid();
        let tag = [0x81, 0x00, 0x00, self.rng.next_u64() as u8];
        f.splice(12..12, tag);
        f
    }

    /// A reply a backend sent from a VIP (or another address) to a client: what ICMP quotes.
    fn reply(&mut self, v6: bool) -> (IpAddr, IpAddr, Vec<u8>) {
        let (known_proto, client, cport, vip, vport, ..) = self.rng.pick(&KNOWN);
        let (proto, vip, client, vport, cport) = if client.is_ipv6() == v6 && self.rng.chance(40) {
            (known_proto, vip, client, vport, cport)
        } else if v6 {
            (self.rng.pick(&[PROTO_TCP, PROTO_UDP, 1]), addr6(self.dst6()), addr6(self.src6()), self.port(), self.rng.next_u64() as u16)
        } else {
            (self.rng.pick(&[PROTO_TCP, PROTO_UDP, 1]), addr4(self.dst4()), addr4(self.src4()), self.port(), self.rng.next_u64() as u16)
        };
        let l4 = frames::transport(proto, vport, cport, &self.payload());
        (vip, client, self.ip_packet(vip, client, proto, &l4))
    }

    fn ip_packet(&mut self, src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => V4::new(s, d, proto).packet(l4),
            (IpAddr::V6(s), IpAddr::V6(d)) => frames::ipv6_packet(s, d, proto, l4),
            _ => unreachable!("one family"),
        }
    }

    /// ICMP errors quoting a flow (frag-needed, packet-too-big, and others), echo and ND.
    fn icmp(&mut self) -> Vec<u8> {
        let v6 = self.rng.chance(40);
        let (vip, _, quoted) = self.reply(v6);
        // Mostly to the address that sent the quoted packet; sometimes to another one.
        let to = match (self.rng.chance(85), v6) {
            (true, _) => vip,
            (false, false) => addr4(OTHER4),
            (false, true) => addr6(OTHER6),
        };
        let router4 = Ipv4Addr::new(198, 51, 100, 1);
        let router6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);
        let kind = self.rng.below(4);
        match (v6, to, kind) {
            (false, IpAddr::V4(vip), 0 | 1) => frames::icmp4_frag_needed(router4, vip, &quoted, 1280),
            (false, IpAddr::V4(vip), _) => {
                let (t, c) = self.rng.pick(&[(3u8, 3u8), (11, 0), (8, 0), (0, 0), (3, 1), (5, 0)]);
                let mut icmp = vec![t, c, 0, 0, 0, 0, 0, 0];
                icmp.extend_from_slice(&quoted[..quoted.len().min(28)]);
                V4::new(router4, vip, PROTO_ICMP).frame(&icmp)
            }
            (true, IpAddr::V6(vip), 0 | 1) => frames::icmp6_packet_too_big(router6, vip, &quoted, 1280),
            (true, IpAddr::V6(vip), _) => {
                let t = self.rng.pick(&[1u8, 3, 128, 129, 135, 136]);
                let mut icmp = vec![t, 0, 0, 0, 0, 0, 0, 0];
                icmp.extend_from_slice(&quoted[..quoted.len().min(48)]);
                frames::ipv6_frame(router6, vip, PROTO_ICMPV6, &icmp)
            }
            _ => unreachable!("one family"),
        }
    }

    fn not_ip(&mut self) -> Vec<u8> {
        match self.rng.below(3) {
            0 => frames::arp_request(CLIENT4, self.dst4()),
            kind => {
                let mut f = frames::ethernet(if kind == 1 { 0x88cc } else { self.rng.next_u64() as u16 });
                f.extend_from_slice(&self.payload());
                f
            }
        }
    }

    /// A frame as a sender means it, before any damage.
    fn clean(&mut self) -> Vec<u8> {
        let mut f = match self.rng.below(100) {
            0..=19 => self.valid(),
            20..=34 => self.service_packet(),
            35..=46 => self.known(),
            47..=52 => self.ipv4_options(),
            53..=58 => self.ipv6_extension(),
            59..=69 => self.fragment(),
            70..=74 => self.vlan(),
            75..=90 => self.icmp(),
            _ => self.not_ip(),
        };
        let mac = match self.rng.below(100) {
            0..=69 => NODE_MAC,
            70..=77 => VMAC,
            78..=84 => [0xff; 6],
            85..=91 => self.rng.pick(&[[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12], [0x33, 0x33, 0, 0, 0, 0x12]]),
            _ => OTHER_HOST_MAC,
        };
        f[..6].copy_from_slice(&mac);
        f
    }

    /// The next frame and the interface it arrives on.
    fn next(&mut self, links: &Links) -> (Vec<u8>, u32) {
        let mut f = self.clean();
        match self.rng.below(100) {
            // Cut short.
            0..=11 => f.truncate(14 + self.rng.below(f.len() - 13)),
            // Bits flipped.
            12..=29 => {
                for _ in 0..1 + self.rng.below(4) {
                    let bit = self.rng.below(f.len() * 8);
                    f[bit / 8] ^= 1 << (bit % 8);
                }
            }
            // A length field changed: IPv4 total length or IHL, IPv6 payload length.
            30..=39 if f.len() >= 20 => {
                let (at, value) = match (u16::from_be_bytes([f[12], f[13]]), self.rng.below(3)) {
                    (0x0800, 0) => (14, 0x40 | self.rng.below(16) as u16),
                    (0x0800, _) => (16, self.length(f.len() - 14)),
                    (_, _) => (18, self.length(f.len().saturating_sub(54))),
                };
                if at == 14 {
                    f[14] = value as u8;
                } else {
                    f[at..at + 2].copy_from_slice(&value.to_be_bytes());
                }
            }
            // Ethernet padding.
            40..=44 => {
                let n = 1 + self.rng.below(40);
                f.extend(self.rng.bytes(n));
            }
            // Random bytes, mostly under an IP type.
            45..=52 => {
                let n = 14 + self.rng.below(120);
                f = self.rng.bytes(n);
                if self.rng.chance(80) {
                    let (ty, version) = self.rng.pick(&[([0x08, 0x00], 0x45), ([0x86, 0xdd], 0x60)]);
                    f[12..14].copy_from_slice(&ty);
                    if f.len() > 14 && self.rng.chance(70) {
                        f[14] = version;
                    }
                }
            }
            _ => {}
        }
        let ingress = match self.rng.below(100) {
            0..=79 => links.lo,
            80..=92 => links.xb,
            _ => links.xa,
        };
        (f, ingress)
    }

    /// A length field's new value: near the true one `len`, or anything.
    fn length(&mut self, len: usize) -> u16 {
        let len = len as i64;
        let near = len + self.rng.below(9) as i64 - 4;
        if self.rng.chance(60) {
            near.clamp(0, 0xffff) as u16
        } else {
            self.rng.next_u64() as u16
        }
    }
}

/// An address that is no VIP but shares VIP4's bit in the bitmap.
fn twin4() -> Ipv4Addr {
    let bit = VipFilter::bit(&ServiceKey::new(addr4(VIP4), 0, 0).addr);
    (1..=u32::MAX)
        .map(|i| Ipv4Addr::from(0xc633_6400u32.wrapping_add(i)))
        .find(|a| VipFilter::bit(&ServiceKey::new(addr4(*a), 0, 0).addr) == bit)
        .expect("a twin")
}

/// What BPF_PROG_TEST_RUN made of `frame` arriving on `ingress`: (action, frame out).
fn run(dp: &mut Dataplane, ingress: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let md: Vec<u8> = [0, frame.len() as u32, 0, ingress, 0, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut out = vec![0u8; frame.len() + 512];
    let options = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ctx_in: Some(&md), repeat: 1, ..Default::default() };
    let result = dp.program().test_run(options).expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// Writes a line of the test's report straight to stderr: libtest captures what `println!`
/// and `eprintln!` print in a passing test, and the counts are worth seeing every run.
fn report(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "xdp_differential: {line}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An answer for people: the action, the counters by name, the flow, the frame out in hex.
fn describe(a: &Answer, input: &[u8]) -> String {
    let action = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"].get(a.action as usize).copied().unwrap_or("?");
    let name = |i: u32| stat::NAMES.get(i as usize).copied().unwrap_or("none");
    let events: Vec<&str> = a.events.iter().map(|&e| name(e)).collect();
    let frame = if a.frame == input { "unchanged".to_owned() } else { hex(&a.frame) };
    let flow = match (a.flow_written, a.flow_removed) {
        (Some((_, f)), _) => format!("flow recorded to backend {} of service {} with flags {}", f.backend, f.service, f.flags),
        (None, Some(_)) => "flow removed".to_owned(),
        (None, None) => "no flow recorded".to_owned(),
    };
    format!("XDP_{action} {} {events:?}, {flow}, frame {frame}", name(a.verdict))
}

/// The program's side of a frame, in the model's terms.
fn observed(
    action: u32,
    frame: Vec<u8>,
    counters: &[u64],
    flow_written: Option<(FlowKey, Flow)>,
    flow_removed: Option<FlowKey>,
) -> Answer {
    let verdicts: Vec<u32> = (0..stat::EVENT_FLOW_HIT).filter(|&i| counters[i as usize] > 0).collect();
    let mut events = Vec::new();
    for i in stat::EVENT_FLOW_HIT..stat::COUNT {
        events.extend(std::iter::repeat_n(i, counters[i as usize] as usize));
    }
    let verdict = match verdicts[..] {
        [one] if counters[one as usize] == 1 => one,
        _ => u32::MAX,
    };
    Answer { action, verdict, events, frame, flow_written, flow_removed, counted: None }
}

#[test]
fn the_program_agrees_with_its_reference_model() {
    if !xlb_tests::privileged("the_program_agrees_with_its_reference_model") {
        return;
    }
    xlb_tests::in_private_netns(|| {
        xlb_tests::ip(&["link", "add", "xa", "type", "veth", "peer", "name", "xb"]).unwrap();
        xlb_tests::ip(&["link", "set", "lo", "up"]).unwrap();
        let links = Links { lo: 1, xa: xlb_tests::ifindex("xa").unwrap(), xb: xlb_tests::ifindex("xb").unwrap() };
        let (mut dp, _) = Dataplane::load(Sizes { flow_table: 1024, max_services: 16 }, None).expect("load XDP program");
        let maps = fixture(&mut dp, &links);
        differ(&mut dp, &maps, &links);
    })
    .unwrap();
}

fn differ(dp: &mut Dataplane, maps: &Maps, links: &Links) {
    let started = Instant::now();
    let started_clock = coarse_now();
    let mut frames = Frames { rng: Rng(SEED), twin4: twin4() };
    let mut before = dp.stats().unwrap();
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    // (service, backend) -> what the model says was counted.
    let mut counted: BTreeMap<(&str, u32), Counters> = BTreeMap::new();
    let mut disagreements = 0;
    for n in 0..FRAMES {
        let (frame, ingress) = frames.next(links);
        let want = maps.run(ingress, &frame);
        let (action, out) = run(dp, ingress, &frame);
        let after = dp.stats().unwrap();
        let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        before = after;
        // The flow the program recorded, read where the model says it must be (its `seen`
        // must be the program's clock, taken during the run, which the model leaves at 0); the
        // flow the model says went must be gone. Then the flow table goes back to the
        // fixture's.
        let clock = coarse_now();
        let written = want.flow_written.map(|(key, _)| (key, dp.flow(&key)));
        let fresh = written.is_none_or(|(_, f)| f.is_none_or(|f| f.seen >= started_clock && f.seen <= clock));
        let written = written.map(|(key, f)| (key, f.map(|f| Flow { seen: 0, ..f })));
        let removed = want.flow_removed.filter(|key| dp.flow(key).is_none());
        for key in want.flow_written.map(|(k, _)| k).iter().chain(&want.flow_removed) {
            match maps.flows.get(key) {
                Some(flow) => dp.insert_flow(key, *flow).unwrap(),
                None => assert_eq!(dp.purge_flows(|k, _| k == key).unwrap(), 1),
            }
        }
        // Nothing else written: the fixture's flows as they were, and no other.
        let flows_kept = maps.flows.iter().all(|(key, flow)| dp.flow(key) == Some(*flow)) && dp.flow_count() == maps.flows.len();
        let got = observed(action, out, &delta, written.and_then(|(key, flow)| Some((key, flow?))), removed);
        let want_events = {
            let mut e = want.events.clone();
            e.sort();
            e
        };
        let agree = got.action == want.action
            && got.verdict == want.verdict
            && got.events == want_events
            && got.frame == want.frame
            && got.flow_written == want.flow_written
            && got.flow_removed == want.flow_removed
            && fresh
            && flows_kept;
        if !agree {
            disagreements += 1;
            if disagreements <= SHOWN {
                eprintln!(
                    "DISAGREEMENT at frame {n} (ingress {ingress}): {}\n  model:   {}\n  program: {}, counters {delta:?}, flow table kept: {flows_kept}, seen fresh: {fresh}",
                    hex(&frame),
                    describe(&want, &frame),
                    describe(&got, &frame),
                );
            }
        }
        *verdicts.entry(stat::NAMES.get(got.verdict as usize).unwrap_or(&"no single verdict")).or_default() += 1;
        for e in &got.events {
            *events.entry(stat::NAMES[*e as usize]).or_default() += 1;
        }
        if let Some((service, backend, bytes, recorded)) = want.counted {
            for key in [("service", service), ("backend", backend)] {
                let c = counted.entry(key).or_default();
                c.packets += 1;
                c.bytes += u64::from(bytes);
                c.flows += u64::from(recorded);
            }
        }
    }
    // Per service and backend, over the whole run.
    for (&(what, index), want) in &counted {
        let got = if what == "service" { dp.service_counters(index) } else { dp.backend_counters(index) }.unwrap();
        if got != *want {
            disagreements += 1;
            eprintln!("DISAGREEMENT: {what} {index} counted {got:?}, the model {want:?}");
        }
    }
    report(&format!("{FRAMES} frames in {:.1} s, {disagreements} disagreements", started.elapsed().as_secs_f64()));
    report(&format!("verdicts {verdicts:?}"));
    report(&format!("events {events:?}"));
    assert_eq!(disagreements, 0, "the program and its model disagree (frames above)");
}
