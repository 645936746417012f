//! Lookup: which service a packet belongs to and which backend serves it.
//!
//! An established flow keeps its backend through the LRU flow table; a new flow takes the
//! backend its hash points at in the service's Maglev table and is recorded.

use lb_common::{
    hash::{flow_hash, source_hash},
    stat, Backend, Flow, FlowKey, Service, ServiceKey, BACKEND_F_USABLE, RING_EMPTY,
    SERVICE_F_FRAGMENTS_ONLY, SERVICE_F_HASH_SOURCE,
};

use crate::{parse::Kind, stats::count, BACKENDS, FLOWS, RINGS, SERVICES, VIP_FILTER};

/// False when the destination is certainly no VIP (one inlined array read).
#[inline(always)]
pub fn maybe_vip(key: &FlowKey) -> bool {
    match VIP_FILTER.get(0) {
        Some(f) => f.may_contain(&key.dst),
        None => true,
    }
}

/// The service for the packet: exact (VIP, port, protocol) first, then the VIP's port-0 entry.
/// Fragments carry no port and only match port 0 (an all-ports service, or the fragment entry
/// the agent installs for each VIP and protocol).
#[inline(always)]
pub fn service(key: &FlowKey, kind: Kind) -> Option<Service> {
    let mut skey = ServiceKey { addr: key.dst, port: key.dport, proto: key.proto, family: key.family };
    if kind != Kind::Fragment {
        if let Some(s) = unsafe { SERVICES.get(&skey) } {
            if s.flags & SERVICE_F_FRAGMENTS_ONLY == 0 {
                return Some(*s);
            }
        }
    }
    skey.port = 0;
    let s = unsafe { SERVICES.get(&skey) }?;
    if s.flags & SERVICE_F_FRAGMENTS_ONLY != 0 && kind != Kind::Fragment {
        return None;
    }
    Some(*s)
}

/// The backend for the packet, as its index into `BACKENDS` and its entry, or the drop reason.
/// The flow table's entry for a flow, if any.
#[inline(always)]
pub fn known_flow(key: &FlowKey) -> Option<Flow> {
    unsafe { FLOWS.get(key) }.copied()
}

/// The backend of a packet the flow table did not settle: `known` says the flow was in the
/// table with a backend no longer usable (it is moved and counted as rebalanced).
#[inline(always)]
pub fn backend(svc: &Service, key: &FlowKey, kind: Kind, known: bool) -> Result<(u32, Backend), u32> {
    match kind {
        Kind::Flow => {
            let (index, b) = from_ring(svc, key)?;
            let _ = FLOWS.insert(key, &Flow { backend: index, service: svc.id }, 0);
            count(if known { stat::EVENT_FLOW_REBALANCED } else { stat::EVENT_FLOW_NEW });
            Ok((index, b))
        }
        Kind::Fragment => {
            count(stat::EVENT_FRAGMENT);
            from_ring(svc, key)
        }
        Kind::TooBig => {
            count(stat::EVENT_ICMP_TOO_BIG);
            if let Some(flow) = known_flow(key) {
                if let Some(b) = usable(flow.backend) {
                    return Ok((flow.backend, b));
                }
            }
            from_ring(svc, key)
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
