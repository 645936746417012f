//! Lookup: which service a packet belongs to and which backend serves it.
//!
//! An established flow keeps its backend through the LRU flow table (`track`); a new flow
//! takes the backend its hash points at in the service's Maglev table and is recorded.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    hash::{flow_hash, source_hash},
    stat, Backend, FlowKey, Service, ServiceKey, BACKEND_F_USABLE, LOCAL_MAC_SLOTS, MAX_LOCAL_MACS, RING_EMPTY,
    SERVICE_F_FRAGMENTS_ONLY, SERVICE_F_HASH_SOURCE,
};
use network_types::eth::EthHdr;

use crate::{
    maps::{BACKENDS, LOCAL_MACS, RINGS, SERVICES, VIP_FILTER},
    parse::{ptr_at, Kind, Packet},
    stats::count,
    track,
};

/// False when the destination is certainly no VIP (one inlined array read).
#[inline(always)]
pub fn maybe_vip(key: &FlowKey) -> bool {
    match VIP_FILTER.get(0) {
        Some(f) => f.may_contain(&key.dst),
        None => true,
    }
}

/// Whether the frame was sent to this node: its destination must be one of the ingress
/// interface's MACs in `LOCAL_MACS`. A switch flooding unknown unicast, a promiscuous NIC or a
/// veth (no MAC filter) hands us frames for other hosts; balancing them would duplicate another
/// node's traffic (the backup of a VRRP pair). Those pass to the kernel, which drops
/// PACKET_OTHERHOST frames, counted `PASS_OTHER_HOST`; broadcast and multicast destinations
/// never carry a service's flow and pass as `PASS_NOT_SERVICE`. An interface without an entry
/// accepts every destination. Checked for VIP traffic only: everything else passes anyway.
#[inline(always)]
pub fn addressed_here(ctx: &XdpContext) -> Result<(), u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that a whole Ethernet header lies inside the frame.
    let dst = unsafe { &(*eth).dst_addr };
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(local) = LOCAL_MACS.get(ifindex % LOCAL_MAC_SLOTS) else {
        return Ok(());
    };
    if local.ifindex != ifindex {
        return Ok(());
    }
    let mut i = 0;
    while i < MAX_LOCAL_MACS {
        if (i as u32) < local.count && same_mac(&local.macs[i], dst) {
            return Ok(());
        }
        i += 1;
    }
    Err(if dst[0] & 1 != 0 { stat::PASS_NOT_SERVICE } else { stat::PASS_OTHER_HOST })
}

/// Byte-wise, so that no `memcmp` call (unavailable in BPF) is emitted.
#[inline(always)]
fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5]) == 0
}

/// The service for the packet: exact (VIP, port, protocol) first, then the VIP's port-0 entry.
/// Fragments carry no port and only match port 0 (an all-ports service, or the fragment entry
/// the agent installs for each VIP and protocol).
#[inline(always)]
pub fn service(key: &FlowKey, kind: Kind) -> Option<Service> {
    let mut skey = ServiceKey { addr: key.dst, port: key.dport, proto: key.proto, family: key.family };
    if kind != Kind::Fragment {
        // SAFETY: the value is copied out at once; the agent replaces entries whole.
        if let Some(s) = unsafe { SERVICES.get(&skey) } {
            if s.flags & SERVICE_F_FRAGMENTS_ONLY == 0 {
                return Some(*s);
            }
        }
    }
    skey.port = 0;
    // SAFETY: as above, the value is copied out at once.
    let s = unsafe { SERVICES.get(&skey) }?;
    if s.flags & SERVICE_F_FRAGMENTS_ONLY != 0 && kind != Kind::Fragment {
        return None;
    }
    Some(*s)
}

/// The backend of a packet the flow table did not settle: `known` says the flow was in the
/// table with a backend no longer usable (it is moved and counted as rebalanced). The flag
/// says the flow was recorded with it.
#[inline(always)]
pub fn backend(ctx: &XdpContext, svc: &Service, packet: &Packet, known: bool) -> Result<(u32, Backend, bool), u32> {
    let key = &packet.key;
    match packet.kind {
        Kind::Flow => {
            let (index, b) = from_ring(svc, key)?;
            let recorded = track::record(ctx, key, index, svc.id, packet.tcp_flags, known);
            Ok((index, b, recorded))
        }
        Kind::Fragment => {
            count(stat::EVENT_FRAGMENT);
            from_ring(svc, key).map(|(i, b)| (i, b, false))
        }
        Kind::TooBig => {
            count(stat::EVENT_ICMP_TOO_BIG);
            if let Some(flow) = track::known(key) {
                if let Some(b) = usable(flow.backend) {
                    return Ok((flow.backend, b, false));
                }
            }
            from_ring(svc, key).map(|(i, b)| (i, b, false))
        }
    }
}

#[inline(always)]
pub fn usable(index: u32) -> Option<Backend> {
    let b = BACKENDS.get(index)?;
    if b.flags & BACKEND_F_USABLE != 0 {
        Some(*b)
    } else {
        None
    }
}

/// Maglev lookup: the table entry at hash mod table size.
#[inline(always)]
fn from_ring(svc: &Service, key: &FlowKey) -> Result<(u32, Backend), u32> {
    let hash = if svc.flags & SERVICE_F_HASH_SOURCE != 0 { source_hash(key) } else { flow_hash(key) };
    if svc.ring_size == 0 {
        return Err(stat::DROP_NO_BACKEND);
    }
    let ring = RINGS.get(svc.ring_slot).ok_or(stat::DROP_NO_BACKEND)?;
    let index = *ring.get((hash % svc.ring_size) as usize).ok_or(stat::DROP_NO_BACKEND)?;
    if index == RING_EMPTY {
        return Err(stat::DROP_NO_BACKEND);
    }
    usable(index).map(|b| (index, b)).ok_or(stat::DROP_NO_BACKEND)
}
