//! Map keys and values shared by the XDP program (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every type is `#[repr(C)]` with explicit padding so both sides agree byte for byte. With the
//! `user` feature the types implement `aya::Pod` so the agent can read and write them.
//!
//! Addresses are 16 bytes in network order; an IPv4 address takes the first 4 bytes and the
//! rest are zero (the `family` field tells them apart). Ports are kept in network byte order,
//! exactly as they appear in the packet.
//!
//! The `status` feature holds the status the control socket reports ([`status`]), shared by
//! the agent and its clients (the CLI, the tests). It needs `alloc`; the XDP program builds
//! without it.
#![no_std]

#[cfg(feature = "status")]
extern crate alloc;

pub mod hash;
#[cfg(feature = "status")]
pub mod status;

/// Address family tags used in keys.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers the data plane balances.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Largest Maglev table a service can use (a prime). Each ring slot in the `RINGS` map holds
/// this many entries; a service with a smaller table uses the first `ring_size` of them.
pub const MAX_RING_SIZE: usize = 65537;
/// Default Maglev table size (the Maglev paper's and Katran's choice).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Ring entry meaning "no backend": a service whose every backend is out (drops, counted).
pub const RING_EMPTY: u32 = u32::MAX;

/// Upper bound on services; the agent sizes the maps from its configuration below this.
pub const MAX_SERVICES: u32 = 512;
/// Upper bound on backends over all services (one entry per service and real server): 100
/// services of 100 real servers each fit.
pub const MAX_BACKENDS: u32 = 16384;
/// Ring slots per service: the agent writes the idle one, then flips `Service::ring_slot`.
pub const RING_SLOTS_PER_SERVICE: u32 = 2;

/// An address as the maps hold it: IPv4 in the first 4 bytes, IPv6 in all 16.
pub fn addr16(ip: core::net::IpAddr) -> [u8; 16] {
    let mut a = [0u8; 16];
    match ip {
        core::net::IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        core::net::IpAddr::V6(v6) => a = v6.octets(),
    }
    a
}

/// The family tag of an address.
pub fn family(ip: core::net::IpAddr) -> u8 {
    if ip.is_ipv4() {
        FAMILY_V4
    } else {
        FAMILY_V6
    }
}

/// Service key: (VIP, port, protocol, family). `port == 0` matches every port of the VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

impl ServiceKey {
    /// The key of (VIP, port in host order, IP protocol number).
    pub fn new(vip: core::net::IpAddr, port: u16, proto: u8) -> Self {
        ServiceKey { addr: addr16(vip), port: port.to_be(), proto, family: family(vip) }
    }
}

/// `Service::flags`: pick the backend from the source address alone (LVS `sh`,
/// keepalived `persistence_timeout`).
pub const SERVICE_F_HASH_SOURCE: u32 = 1;
/// `Service::flags`: a port-0 entry the agent adds for a VIP and protocol that has no all-ports
/// service, so that IP fragments (which carry no ports) find a table. Matches fragments only.
pub const SERVICE_F_FRAGMENTS_ONLY: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Index of this service in the per-service counters.
    pub id: u32,
    pub flags: u32,
    /// Number of valid entries in the ring (a prime, at most `MAX_RING_SIZE`).
    pub ring_size: u32,
    /// Index into the `RINGS` map of the table currently in use.
    pub ring_slot: u32,
}

/// One Maglev table: backend indices into `BACKENDS`.
pub type Ring = [u32; MAX_RING_SIZE];

/// `Backend::flags`: the entry is complete (MAC learnt) and may receive packets. A flow whose
/// backend lost this flag is re-balanced on its next packet.
pub const BACKEND_F_USABLE: u32 = 1;
/// `Backend::flags`: the slot belongs to a backend, named by `Backend::service` and
/// `Backend::addr`. A restarted agent reads these to give every backend its slot back.
pub const BACKEND_F_ASSIGNED: u32 = 2;
/// `Backend::flags`: the backend is its service's sorry server (a role apart from the members,
/// even when a member has the same address).
pub const BACKEND_F_SORRY: u32 = 4;

/// A backend's entry. Its index in `BACKENDS` (and `BACKEND_STATS`, and `Flow::backend`) is
/// the backend's slot: it stays the same for as long as the backend, identified by
/// (service, address, role), stays in the configuration, whatever else is edited.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// The backend's own MAC (destination of forwarded frames).
    pub dst_mac: [u8; 6],
    /// MAC of the node's interface the backend is reached through (source of forwarded frames).
    pub src_mac: [u8; 6],
    /// Interface the backend is reached through. Equal to the ingress interface: XDP_TX;
    /// otherwise XDP_REDIRECT through the `EGRESS` devmap.
    pub ifindex: u32,
    pub flags: u32,
    /// Id of the service the backend belongs to (`Service::id`). Not read by the program.
    pub service: u32,
    /// The backend's address (16-byte form, as in [`ServiceKey::addr`]), of family `family`.
    /// It names the slot's owner for the agent, and is the outer destination of a tunnel.
    pub addr: [u8; 16],
    /// How frames reach the backend: [`FORWARD_DR`], [`FORWARD_IPIP`] or [`FORWARD_GUE`].
    pub method: u8,
    /// Family of `addr` ([`FAMILY_V4`], [`FAMILY_V6`]): a tunnel's outer header.
    pub family: u8,
    /// Tunnels: the largest frame's IP packet the egress interface carries (its MTU). A packet
    /// that no longer fits once the tunnel's header is added is answered with ICMP
    /// fragmentation-needed / packet-too-big. 0 for direct routing (nothing is added).
    pub mtu: u16,
    /// GUE: the outer UDP destination port (network byte order), the backend's fou port.
    pub gue_port: u16,
    pub _pad: u16,
}

/// `Backend::method`: direct routing, only the Ethernet addresses change (the default).
pub const FORWARD_DR: u8 = 0;
/// `Backend::method`: IP in IP: an outer IPv4 header (protocol 4, IPIP; or 41 for an IPv6
/// packet) or IPv6 header (next header 41, IP6IP6; or 4 for an IPv4 packet) to the backend.
pub const FORWARD_IPIP: u8 = 1;
/// `Backend::method`: GUE variant 1 (as Katran and Linux `fou ... gue` read it): outer IPv4,
/// UDP to `Backend::gue_port` with a source port from the flow's hash, then the client's IP
/// packet. NICs spread the received traffic over their queues by the outer ports.
pub const FORWARD_GUE: u8 = 2;
/// Hop limit of the outer header a tunnel adds, and of the ICMP errors the program sends.
pub const TUNNEL_TTL: u8 = 64;
/// ICMP fragmentation-needed / packet-too-big messages each CPU sends per second at most;
/// past it, the too-big packets are dropped (`drop_too_big`).
pub const TOO_BIG_PER_CPU: u64 = 1000;

/// Flow table key: the 5-tuple in the client-to-VIP direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// The key of a client-to-VIP flow (ports in host order).
    pub fn new(proto: u8, src: core::net::IpAddr, sport: u16, dst: core::net::IpAddr, dport: u16) -> Self {
        FlowKey {
            src: addr16(src),
            dst: addr16(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            family: family(src),
            _pad: [0; 2],
        }
    }
}

/// A flow table entry. The program writes it when a flow starts, marks its FIN, and refreshes
/// `seen` at most once per [`FLOW_SEEN_GRANULARITY_NS`]; the agent removes the entries whose
/// flows ended (FIN and quiet for the FIN timeout) or went idle (the idle timeouts).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Flow {
    /// Index into `BACKENDS`.
    pub backend: u32,
    /// Service id the flow belongs to (lets the agent purge a service's flows).
    pub service: u32,
    /// When the flow last sent a packet: `CLOCK_MONOTONIC_COARSE` in nanoseconds (the
    /// program's `bpf_ktime_get_coarse_ns`), late by up to [`FLOW_SEEN_GRANULARITY_NS`].
    pub seen: u64,
    /// `FLOW_F_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// The client sent a FIN: the flow ends once it has been quiet for the FIN timeout.
pub const FLOW_F_FIN: u32 = 1;
/// How stale `Flow::seen` may get before a packet rewrites it: one write per flow per second
/// at most, so a busy flow does not write its entry with every packet.
pub const FLOW_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// The program's settings (one entry of the `SETTINGS` array, written by the agent).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// New flows each CPU records in the flow table per second; past it, new flows are
    /// forwarded by the Maglev table without an entry (`flow_unrecorded`), so a flood of
    /// spoofed SYNs cannot evict established flows. 0: no limit.
    pub new_flows_per_cpu: u32,
    /// Tunnels over IPv4: the outer source address (network order) ...
    pub tunnel_src4: [u8; 4],
    /// ... whose bits in this mask (network order) are replaced by the flow's hash, so that a
    /// backend's receive hashing (RSS) spreads the flows; 0: the address as is.
    pub tunnel_src4_hash_mask: [u8; 4],
    /// Tunnels over IPv6: the outer source address, and the mask of its last 4 bytes that the
    /// flow's hash fills in.
    pub tunnel_src6: [u8; 16],
    pub tunnel_src6_hash_mask: [u8; 4],
}

/// A CPU's count of the flows it recorded in the current one-second window (`NEW_FLOW_RATE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateWindow {
    /// Start of the window (`bpf_ktime_get_coarse_ns`).
    pub start: u64,
    /// Flows recorded since.
    pub recorded: u64,
}

/// Length of a `RateWindow`.
pub const RATE_WINDOW_NS: u64 = 1_000_000_000;

/// Packet and byte counters (bytes are IP packet lengths, headers included), and the new
/// flows recorded to the service or backend (`flow_new` and `flow_rebalanced`) whose first
/// packet was forwarded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

/// Bits of `VIP_FILTER`.
pub const VIP_FILTER_BITS: u32 = 4096;

/// `VIP_FILTER` (a one-entry array): a bitmap with one bit set per VIP, at [`VipFilter::bit`]
/// of its address. A packet whose destination's bit is clear is no VIP's, and passes after
/// one array read, without a service lookup (most of a node's non-VIP traffic). A set bit
/// only says "maybe": the service lookup decides. `enabled == 0` (a map nobody wrote, as in
/// test fixtures) lets everything through to the lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipFilter {
    pub enabled: u32,
    pub _pad: u32,
    pub bits: [u64; (VIP_FILTER_BITS / 64) as usize],
}

impl Default for VipFilter {
    fn default() -> Self {
        VipFilter { enabled: 0, _pad: 0, bits: [0; (VIP_FILTER_BITS / 64) as usize] }
    }
}

impl VipFilter {
    /// The filter holding `addrs` (16-byte forms, as in [`ServiceKey::addr`]), enabled.
    pub fn new<'a>(addrs: impl IntoIterator<Item = &'a [u8; 16]>) -> VipFilter {
        let mut f = VipFilter { enabled: 1, ..VipFilter::default() };
        for a in addrs {
            let b = Self::bit(a);
            f.bits[(b / 64) as usize] |= 1 << (b % 64);
        }
        f
    }

    /// Bit of an address: its four 32-bit words folded and mixed (Fibonacci hashing), the
    /// top 12 bits.
    #[inline(always)]
    pub fn bit(addr: &[u8; 16]) -> u32 {
        let w = |i: usize| u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
        (w(0) ^ w(4) ^ w(8) ^ w(12)).wrapping_mul(0x9e37_79b1) >> 20
    }

    /// False when `addr` is certainly no VIP.
    #[inline(always)]
    pub fn may_contain(&self, addr: &[u8; 16]) -> bool {
        if self.enabled == 0 {
            return true;
        }
        let b = Self::bit(addr);
        match self.bits.get((b / 64) as usize) {
            Some(word) => word & (1 << (b % 64)) != 0,
            None => true,
        }
    }
}

/// Most MACs one interface answers to in `LOCAL_MACS`: its own address and a few extra ones
/// (a VRRP virtual MAC held on a macvlan over it).
pub const MAX_LOCAL_MACS: usize = 4;

/// Slots of `LOCAL_MACS`, a direct-mapped array: interface `i` has slot `i % LOCAL_MAC_SLOTS`
/// (an array read the verifier inlines, where a hash lookup would cost a call). The agent
/// refuses two attached interfaces in one slot.
pub const LOCAL_MAC_SLOTS: u32 = 1024;

/// `LOCAL_MACS` value: the unicast MACs frames arriving on interface `ifindex` must be
/// addressed to for the program to balance them. The first `count` entries of `macs` are
/// valid. A slot holding another interface (or none: `ifindex` 0) means no entry, and every
/// destination is accepted.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LocalMacs {
    pub ifindex: u32,
    pub count: u32,
    pub macs: [[u8; 6]; MAX_LOCAL_MACS],
}

impl LocalMacs {
    /// The entry holding `macs` (duplicates kept once), or `None` when more than
    /// `MAX_LOCAL_MACS` distinct MACs are given.
    pub fn new(ifindex: u32, macs: &[[u8; 6]]) -> Option<LocalMacs> {
        let mut entry = LocalMacs { ifindex, ..LocalMacs::default() };
        for mac in macs {
            if !entry.contains(mac) {
                entry.push(*mac)?;
            }
        }
        Some(entry)
    }

    /// The valid MACs.
    pub fn macs(&self) -> &[[u8; 6]] {
        &self.macs[..(self.count as usize).min(MAX_LOCAL_MACS)]
    }

    pub fn contains(&self, mac: &[u8; 6]) -> bool {
        self.macs().contains(mac)
    }

    /// Adds `mac` at the end; `None` when the entry is full.
    fn push(&mut self, mac: [u8; 6]) -> Option<()> {
        let slot = self.macs.get_mut(self.count as usize)?;
        *slot = mac;
        self.count += 1;
        Some(())
    }
}

/// Indices of the global per-CPU `STATS` counters. Every packet the program sees is counted
/// under exactly one *verdict* counter (`VERDICT_*`); the `EVENT_*` counters count things that
/// happened on the way and overlap with the verdicts.
pub mod stat {
    /// Forwarded with XDP_TX (backend behind the ingress interface).
    pub const VERDICT_TX: u32 = 0;
    /// Forwarded with XDP_REDIRECT (backend behind another interface).
    pub const VERDICT_REDIRECT: u32 = 1;
    /// Passed: not IPv4/IPv6 (ARP, LLDP, ...) and not tagged.
    pub const PASS_NOT_IP: u32 = 2;
    /// Passed: IP but not addressed to a configured VIP/port/protocol (SSH, VRRP, health checks),
    /// or sent to a broadcast or multicast MAC on an interface with a `LOCAL_MACS` entry.
    pub const PASS_NOT_SERVICE: u32 = 3;
    /// Passed: header cut short or inconsistent (bad IHL, length, version); the kernel drops it.
    pub const PASS_MALFORMED: u32 = 4;
    /// Passed: IPv6 extension header other than Fragment before the transport header.
    pub const PASS_IPV6_EXT: u32 = 5;
    /// Passed: ICMP to a VIP that is not an error about one of its flows (echo, ND, ...).
    pub const PASS_ICMP: u32 = 6;
    /// Passed: the destination MAC is another host's, not one of the ingress interface's own
    /// (`LOCAL_MACS`): a flooded or promiscuously received frame. The kernel drops it.
    pub const PASS_OTHER_HOST: u32 = 7;
    /// Dropped: the service has no usable backend.
    pub const DROP_NO_BACKEND: u32 = 8;
    /// Dropped: the backend's egress interface refused the redirect.
    pub const DROP_REDIRECT_FAILED: u32 = 9;
    /// Passed: an 802.1Q / 802.1ad tagged frame. Not balanced: attach xlb where frames arrive
    /// untagged (the kernel gives it a VLAN device's traffic in generic mode only).
    pub const PASS_VLAN: u32 = 10;
    /// Sent back (XDP_TX): an ICMP fragmentation-needed / ICMPv6 packet-too-big from the node,
    /// for a packet to a tunnelled backend that no longer fits once the tunnel's header is added.
    pub const TOO_BIG_SENT: u32 = 11;
    /// Dropped: too big for the tunnel to its backend and not answered (IPv4 without DF, a
    /// fragment or an ICMP error, or past `TOO_BIG_PER_CPU`).
    pub const DROP_TOO_BIG: u32 = 12;
    /// Dropped: the frame could not be grown for a tunnel's header (the driver left no
    /// headroom) or cut to an ICMP answer.
    pub const DROP_TUNNEL: u32 = 13;
    /// Event: established flow found in the flow table. Every index from here on is an event;
    /// the ones below are verdicts (each frame is counted under exactly one).
    pub const EVENT_FLOW_HIT: u32 = 14;
    /// Event: new flow, backend chosen from the Maglev table and recorded.
    pub const EVENT_FLOW_NEW: u32 = 15;
    /// Event: a flow whose backend became unusable was moved to a new one.
    pub const EVENT_FLOW_REBALANCED: u32 = 16;
    /// Event: IP fragment steered by the 3-tuple (no ports; no flow entry).
    pub const EVENT_FRAGMENT: u32 = 17;
    /// Event: ICMP frag-needed / ICMPv6 packet-too-big sent to the backend of the flow it is about.
    pub const EVENT_ICMP_TOO_BIG: u32 = 18;
    /// Event: IPv4 packet with options forwarded (options are carried unchanged).
    pub const EVENT_IPV4_OPTIONS: u32 = 19;
    /// Event: a new flow forwarded by the Maglev table without a flow entry, because this CPU
    /// recorded its `Settings::new_flows_per_cpu` this second (a SYN flood, most likely).
    pub const EVENT_FLOW_UNRECORDED: u32 = 20;
    /// Event: a flow entry removed because the client reset the connection (TCP RST).
    pub const EVENT_FLOW_RESET: u32 = 21;
    /// Event: a packet sent to its backend through a tunnel (IPIP, IP6IP6, 4-in-6, GUE).
    pub const EVENT_ENCAPSULATED: u32 = 22;
    /// Number of counters.
    pub const COUNT: u32 = 23;

    /// Names as the agent prints them, in index order.
    pub const NAMES: [&str; COUNT as usize] = [
        "tx",
        "redirect",
        "pass_not_ip",
        "pass_not_service",
        "pass_malformed",
        "pass_ipv6_ext",
        "pass_icmp",
        "pass_other_host",
        "drop_no_backend",
        "drop_redirect_failed",
        "pass_vlan",
        "too_big_sent",
        "drop_too_big",
        "drop_tunnel",
        "flow_hit",
        "flow_new",
        "flow_rebalanced",
        "fragment",
        "icmp_too_big",
        "ipv4_options",
        "flow_unrecorded",
        "flow_reset",
        "encapsulated",
    ];
}

/// Map names, shared so the agent finds exactly what the program declares.
pub mod maps {
    pub const SERVICES: &str = "SERVICES";
    pub const RINGS: &str = "RINGS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const FLOWS: &str = "FLOWS";
    pub const EGRESS: &str = "EGRESS";
    pub const SERVICE_STATS: &str = "SERVICE_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const STATS: &str = "STATS";
    pub const LOCAL_MACS: &str = "LOCAL_MACS";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const SETTINGS: &str = "SETTINGS";
    pub const NEW_FLOW_RATE: &str = "NEW_FLOW_RATE";
    pub const TOO_BIG_RATE: &str = "TOO_BIG_RATE";
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "xlb";

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), contain only integers and byte arrays, and have no
    // implicit padding (explicit `_pad` fields fill every gap).
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for LocalMacs {}
    unsafe impl aya::Pod for VipFilter {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for RateWindow {}
}

#[cfg(test)]
mod vip_filter_tests {
    use super::*;

    #[test]
    fn the_filter_holds_its_vips_and_clears_most_others() {
        let vip = |a: [u8; 4]| {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&a);
            k
        };
        let vips = [vip([203, 0, 113, 100]), vip([198, 51, 100, 7]), [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]];
        let f = VipFilter::new(&vips);
        assert!(vips.iter().all(|v| f.may_contain(v)));
        // Of 10000 other addresses, about 3 / 4096 of them share a bit with a VIP.
        let false_hits = (0..10000u32).filter(|i| f.may_contain(&vip([10, (i >> 16) as u8, (i >> 8) as u8, *i as u8]))).count();
        assert!(false_hits < 30, "{false_hits}");
        // Nobody wrote the map: everything goes to the lookup.
        assert!(VipFilter::default().may_contain(&vip([10, 0, 0, 1])));
        assert_eq!(core::mem::size_of::<VipFilter>(), 8 + VIP_FILTER_BITS as usize / 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<Service>(), 16);
        assert_eq!(size_of::<Backend>(), 48);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<Flow>(), 24);
        assert_eq!(size_of::<Settings>(), 32);
        assert_eq!(size_of::<RateWindow>(), 16);
        assert_eq!(size_of::<Counters>(), 24);
        assert_eq!(size_of::<LocalMacs>(), 8 + 6 * MAX_LOCAL_MACS);
    }

    #[test]
    fn local_macs_keep_each_mac_once_and_refuse_a_fifth() {
        let m = |n: u8| [0x02, 0, 0, 0, 0, n];
        let e = LocalMacs::new(3, &[m(1), m(2), m(1)]).unwrap();
        assert_eq!(e.macs(), &[m(1), m(2)]);
        assert!(e.contains(&m(2)) && !e.contains(&m(3)) && !e.contains(&[0; 6]));
        assert!(LocalMacs::new(3, &[m(1), m(2), m(3), m(4)]).is_some());
        assert!(LocalMacs::new(3, &[m(1), m(2), m(3), m(4), m(5)]).is_none());
    }

    #[test]
    fn stat_names_cover_every_counter() {
        assert_eq!(stat::NAMES.len(), stat::COUNT as usize);
    }
}
