//! The program's maps. The agent is their single writer (lb-userspace's dataplane module
//! opens them by the names in `lb_common::maps`); the program only reads them, except for the
//! flow table, the new-flow rate windows and the counters.
//!
//! Sizes here are defaults; the agent sets the real ones from its configuration at load time.
//! The agent pins every map under its pin path so a restarted agent adopts them (flows and
//! counters survive); tests load them unpinned.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    stat, Backend, Counters, Flow, FlowKey, LocalMacs, RateWindow, Ring, Service, ServiceKey, Settings, VipFilter, LOCAL_MAC_SLOTS,
    MAX_BACKENDS, MAX_SERVICES, RING_SLOTS_PER_SERVICE,
};

/// Each CPU keeps its own LRU list of flows: inserting a new flow takes no lock shared with
/// the other CPUs (a flow stays on the CPU its NIC queue hashes it to).
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// (VIP, port, protocol, family) -> service.
#[map]
pub static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES * 2, 0);
/// Maglev tables, `RING_SLOTS_PER_SERVICE` per service; `Service::ring_slot` picks the live one.
#[map]
pub static RINGS: Array<Ring> = Array::with_max_entries(64 * RING_SLOTS_PER_SERVICE, 0);
/// Backend slot -> MACs, egress interface, flags, and the owner (service, address).
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);
/// Established flows: client-to-VIP 5-tuple -> backend.
#[map]
pub static FLOWS: LruHashMap<FlowKey, Flow> = LruHashMap::with_max_entries(1 << 20, BPF_F_NO_COMMON_LRU);
/// Interfaces backends are reached through other than the ingress one (XDP_REDIRECT).
#[map]
pub static EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);
#[map]
pub static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);
#[map]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
/// Slot `ifindex % LOCAL_MAC_SLOTS` -> the MACs frames arriving on that interface must be
/// addressed to for balancing. An interface without an entry accepts every destination (the
/// agent writes one for each interface it attaches to; BPF_PROG_TEST_RUN fixtures may not).
#[map]
pub static LOCAL_MACS: Array<LocalMacs> = Array::with_max_entries(LOCAL_MAC_SLOTS, 0);
/// One entry: a bitmap of the VIPs (see `lb_common::VipFilter`).
#[map]
pub static VIP_FILTER: Array<VipFilter> = Array::with_max_entries(1, 0);
/// Verdict and event counters, indexed by `lb_common::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// One entry: the program's settings (`lb_common::Settings`).
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
/// Each CPU's count of the flows it recorded this second (the new-flow limit).
#[map]
pub static NEW_FLOW_RATE: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);
/// Each CPU's count of the ICMP too-big answers it sent this second.
#[map]
pub static TOO_BIG_RATE: PerCpuArray<RateWindow> = PerCpuArray::with_max_entries(1, 0);

/// A CPU's latest reading of the coarse clock (`track::now`), and the jiffy it was taken in.
#[repr(C)]
pub struct ClockReading {
    pub jiffies: u64,
    pub ns: u64,
}

/// Each CPU's [`ClockReading`]: a hit reads the coarse clock once per jiffy (a timer tick),
/// not once per packet (the helper call was about a sixth of a hit's cost). Not read by the
/// agent, nor pinned.
#[map]
pub static HIT_CLOCK: PerCpuArray<ClockReading> = PerCpuArray::with_max_entries(1, 0);
