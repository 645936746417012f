//! xlb's XDP program: direct-routing layer-4 load balancing.
//!
//! For each frame: parse (Ethernet, IP, TCP/UDP or a quoted ICMP error), rule out non-VIP
//! destinations with one bitmap read, find the service, check the frame was addressed to one
//! of the ingress interface's MACs,
//! find the backend (flow table, else Maglev), rewrite the Ethernet addresses, send with
//! XDP_TX or XDP_REDIRECT. Anything that is not for a service goes to the kernel untouched.
//! Every frame is counted under exactly one verdict counter.
#![no_std]
#![no_main]

mod bench;
mod forward;
mod parse;
mod select;
mod stats;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    stat, Backend, Counters, Flow, FlowKey, LocalMacs, Ring, LOCAL_MAC_SLOTS, Service, ServiceKey, VipFilter, MAX_BACKENDS,
    MAX_SERVICES, RING_SLOTS_PER_SERVICE,
};

use crate::{
    forward::{forward, Verdict},
    parse::Kind,
};

/// Each CPU keeps its own LRU list of flows: inserting a new flow takes no lock shared with
/// the other CPUs (a flow stays on the CPU its NIC queue hashes it to).
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

// Sizes here are defaults; the agent sets the real ones from its configuration at load time.
// The agent pins every map under its pin path so a restarted agent adopts them (flows and
// counters survive); tests load them unpinned.

/// (VIP, port, protocol, family) -> service.
#[map]
static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES * 2, 0);
/// Maglev tables, `RING_SLOTS_PER_SERVICE` per service; `Service::ring_slot` picks the live one.
#[map]
static RINGS: Array<Ring> = Array::with_max_entries(64 * RING_SLOTS_PER_SERVICE, 0);
/// Backend index -> MACs, egress interface, flags.
#[map]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);
/// Established flows: client-to-VIP 5-tuple -> backend.
#[map]
static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(1 << 20, BPF_F_NO_COMMON_LRU);
/// Interfaces backends are reached through other than the ingress one (XDP_REDIRECT).
#[map]
static EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);
#[map]
static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);
#[map]
static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
/// Slot `ifindex % LOCAL_MAC_SLOTS` -> the MACs frames arriving on that interface must be
/// addressed to for balancing. An interface without an entry accepts every destination (the
/// agent writes one for each interface it attaches to; BPF_PROG_TEST_RUN fixtures may not).
#[map]
static LOCAL_MACS: Array<LocalMacs> = Array::with_max_entries(LOCAL_MAC_SLOTS, 0);
/// One entry: a bitmap of the VIPs (see `lb_common::VipFilter`).
#[map]
static VIP_FILTER: Array<VipFilter> = Array::with_max_entries(1, 0);
/// Verdict and event counters, indexed by `lb_common::stat`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[xdp]
pub fn xlb(ctx: XdpContext) -> u32 {
    let verdict = balance(&ctx);
    stats::count(verdict.stat);
    verdict.action
}

#[inline(always)]
fn pass(reason: u32) -> Verdict {
    Verdict { action: xdp_action::XDP_PASS, stat: reason }
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> Verdict {
    let packet = match parse::parse(ctx) {
        Ok(p) => p,
        Err(reason) => return pass(reason),
    };
    if !select::maybe_vip(&packet.key) {
        return pass(stat::PASS_NOT_SERVICE);
    }
    // A known flow goes to its backend without a service lookup (the agent removes flows
    // that no longer fit its services).
    let known = if packet.kind == Kind::Flow { select::known_flow(&packet.key) } else { None };
    if let Some(flow) = known {
        if let Some(backend) = select::usable(flow.backend) {
            if let Err(reason) = parse::addressed_here(ctx) {
                return pass(reason);
            }
            stats::count(stat::EVENT_FLOW_HIT);
            return send(ctx, &packet, flow.service, flow.backend, &backend);
        }
    }
    let Some(svc) = select::service(&packet.key, packet.kind) else {
        return pass(stat::PASS_NOT_SERVICE);
    };
    if let Err(reason) = parse::addressed_here(ctx) {
        return pass(reason);
    }
    match select::backend(&svc, &packet.key, packet.kind, known.is_some()) {
        Ok((index, backend)) => send(ctx, &packet, svc.id, index, &backend),
        Err(reason) => Verdict { action: xdp_action::XDP_DROP, stat: reason },
    }
}

/// Rewrites and sends the frame to `backend`, counting it for its service and backend.
#[inline(always)]
fn send(ctx: &XdpContext, packet: &parse::Packet, service: u32, index: u32, backend: &Backend) -> Verdict {
    let verdict = forward(ctx, backend);
    if verdict.stat == stat::VERDICT_TX || verdict.stat == stat::VERDICT_REDIRECT {
        stats::count_forwarded(service, index, packet.ip_len);
        if packet.ipv4_options {
            stats::count(stat::EVENT_IPV4_OPTIONS);
        }
    }
    verdict
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
