//! The flow table: look a flow up, record a new one (under the per-CPU new-flow limit),
//! refresh an established one, and forget one the client reset.
//!
//! A TCP connection is recorded by its first packet after the SYN (the handshake's ACK):
//! spoofed SYNs never get that far, so a SYN flood writes nothing to the table.
//!
//! The program sees only the client's side (replies go from the backend straight to the
//! client), so it knows a flow ended only from what the client sends: a RST removes the entry
//! at once; a FIN marks it, and the agent removes it once it has been quiet for the FIN
//! timeout (the client still ACKs the backend's FIN, and a half-closed connection may go on);
//! idle entries go after the idle timeouts (agent side too, from `Flow::seen`).

use aya_ebpf::{
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use lb_common::{stat, Flow, FlowKey, FLOW_F_FIN, FLOW_SEEN_GRANULARITY_NS};

use crate::{
    maps::{FLOWS, HIT_CLOCK, NEW_FLOW_RATE, SETTINGS},
    rate::{self, Spent},
    stats::count,
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: what `Flow::seen` and the rate windows hold.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments that only reads the kernel's coarse clock.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// How far the reading of this jiffy may trail the coarse clock: the coarse clock moves when
/// jiffies do, but a reading taken between the two updates keeps the previous tick's time for
/// the rest of the jiffy, a tick (10 ms at HZ 100) late. Generously more than a tick.
const READING_LAG_NS: u64 = 50_000_000;

/// [`now`] as of this jiffy: the CPU's reading, taken again when jiffies moved. May trail
/// [`now`] by up to [`READING_LAG_NS`]. `bpf_jiffies64` is a load (the verifier inlines it).
#[inline(always)]
fn reading() -> u64 {
    // SAFETY: a helper without arguments that only reads jiffies.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(r) = HIT_CLOCK.get_ptr_mut(0) else {
        return now();
    };
    // SAFETY: a per-CPU slot the map returned; nothing else on this CPU runs meanwhile.
    unsafe {
        if (*r).jiffies != jiffies {
            (*r).jiffies = jiffies;
            (*r).ns = now();
        }
        (*r).ns
    }
}

/// The flow table's entry for a flow, if any: a copy, and where it lies (for [`refresh`]).
#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<(Flow, *mut Flow)> {
    let entry = FLOWS.get_ptr_mut(key)?;
    // SAFETY: the map returned the pointer; the value is copied out at once (an LRU entry may
    // be recycled afterwards, and a copy read from a recycled entry is only stale).
    Some((unsafe { *entry }, entry))
}

/// The flow table's entry for a flow, if any (for an ICMP error about it: nothing is written).
#[inline(always)]
pub fn known(key: &FlowKey) -> Option<Flow> {
    lookup(key).map(|(flow, _)| flow)
}

/// A packet of an established flow went to its backend: a RST removes the entry; otherwise
/// the FIN mark and `seen` are brought up to date (a write only when they change, or `seen`
/// is a second old). A SYN without ACK on a FIN-marked entry is a new connection on the
/// same 5-tuple: the mark goes.
///
/// Most packets of a busy flow change nothing; this CPU's clock reading of the jiffy (a load,
/// no helper call) tells them so. Only when that reading says `seen` may be within
/// [`READING_LAG_NS`] of a second old is the clock read, and the write decided on it, exactly
/// as if every packet read it.
#[inline(always)]
pub fn refresh(key: &FlowKey, entry: *mut Flow, tcp_flags: u8) {
    if tcp_flags & TCP_RST != 0 {
        if FLOWS.remove(key).is_ok() {
            count(stat::EVENT_FLOW_RESET);
        }
        return;
    }
    // SAFETY: the pointer came from the map lookup of this packet; a concurrent removal
    // leaves it pointing at a freed-for-reuse entry, which a stale write cannot harm.
    unsafe {
        let (flags, seen) = ((*entry).flags, (*entry).seen);
        let marks = marked(tcp_flags, flags);
        // Signed: a `seen` written from the clock may lie ahead of this jiffy's reading.
        if marks == flags && (reading().wrapping_sub(seen) as i64) < (FLOW_SEEN_GRANULARITY_NS - READING_LAG_NS) as i64 {
            return;
        }
        let now = now();
        if marks != flags || now.wrapping_sub(seen) >= FLOW_SEEN_GRANULARITY_NS {
            (*entry).flags = marks;
            (*entry).seen = now;
        }
    }
}

/// The entry's flags after a packet with `tcp_flags`.
#[inline(always)]
fn marked(tcp_flags: u8, flags: u32) -> u32 {
    if tcp_flags & TCP_FIN != 0 {
        flags | FLOW_F_FIN
    } else if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        flags & !FLOW_F_FIN
    } else {
        flags
    }
}

/// Records that the flow of `key` goes to backend `index` of service `service`. `known`: the
/// table had an entry whose backend is no longer usable (it is replaced, counted
/// `flow_rebalanced`). A RST records nothing (and removes such an entry). A SYN records
/// nothing either: a connection is recorded by the handshake's ACK, which the table sends
/// to the same backend, so a flood of spoofed SYNs (which never complete) takes no entry
/// from established flows. A new flow past this CPU's limit (a flood of something else) is
/// not recorded (`flow_unrecorded`). Says whether the flow was recorded.
#[inline(always)]
pub fn record(ctx: &XdpContext, key: &FlowKey, index: u32, service: u32, tcp_flags: u8, known: bool) -> bool {
    if tcp_flags & TCP_RST != 0 {
        if known && FLOWS.remove(key).is_ok() {
            count(stat::EVENT_FLOW_RESET);
        }
        return false;
    }
    if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return false;
    }
    let now = now();
    if !known && !within_rate(ctx, now) {
        count(stat::EVENT_FLOW_UNRECORDED);
        return false;
    }
    let flow = Flow { backend: index, service, seen: now, flags: marked(tcp_flags, 0), _pad: 0 };
    let _ = FLOWS.insert(key, &flow, 0);
    count(if known { stat::EVENT_FLOW_REBALANCED } else { stat::EVENT_FLOW_NEW });
    true
}

/// Whether this CPU may record one more new flow in the current one-second window (and
/// counts it). The first refusal of a window is logged (aya-log): at most once a second per
/// CPU, never per packet.
#[inline(always)]
fn within_rate(ctx: &XdpContext, now: u64) -> bool {
    let limit = match SETTINGS.get(0) {
        Some(s) if s.new_flows_per_cpu != 0 => s.new_flows_per_cpu as u64,
        _ => return true,
    };
    let Some(window) = NEW_FLOW_RATE.get_ptr_mut(0) else {
        return true;
    };
    match rate::spend(window, limit, now) {
        Spent::Yes => true,
        Spent::FirstRefusal => {
            warn!(ctx, "new-flow limit of {} a second reached on this CPU: new flows are forwarded unrecorded until the second ends", limit);
            false
        }
        Spent::No => false,
    }
}
