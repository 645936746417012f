//! Part 1: what the XDP program costs per packet, under BPF_PROG_TEST_RUN with a large
//! `repeat`, next to a baseline program that only swaps the MACs and returns XDP_TX.
//!
//! The kernel does not restore the frame between iterations, so every figure comes with the
//! proof that it times the path it names:
//!
//! - Paths the output does not change (flow-table hit, UDP, IPv6, non-VIP, the baseline) run
//!   the program directly. xlb only rewrites the MACs, which it never reads, so iteration 2
//!   takes the same path as iteration 1. Proof: the verdict and the output frame at repeat N
//!   equal those at repeat 1, and the counters moved by exactly N on that path (e.g.
//!   `flow_hit` += N, `tx` += N, `flow_new` += 0).
//! - The new flow goes through `bench_wrap` (lb-ebpf/src/bench.rs): before every iteration it
//!   copies the saved frame back and writes a sequence number into the IPv4 source address
//!   (10.0.0.0 + n), then tail-calls `xlb`. Every iteration is a distinct 5-tuple, so every
//!   iteration misses the flow table, picks from the Maglev table and inserts. Proof:
//!   `flow_new` += N, `flow_hit` += 0, and afterwards each of the N keys is deleted from the
//!   flow table by the benchmark, every delete succeeding (N distinct entries were inserted;
//!   none was evicted: the table has 2^21 entries and never holds more than N + 3). The
//!   deletes also put the table back to the same state for the next run. The output at repeat
//!   N equals that at repeat 1 except for the source address (the last sequence number) and
//!   the destination MAC, which is the Maglev choice for that last 5-tuple, checked.
//! - The wrapper's own cost is measured with `bench_empty` in the tail-call slot and the same
//!   wrapper work, and subtracted; the empty program's direct cost is added back so that every
//!   figure carries the same test-run loop overhead as the baseline:
//!   `new_flow = wrap(xlb) - wrap(empty) + direct(empty)`.
//! - Method check: the flow-table hit is also measured through the restoring wrapper; the two
//!   figures should agree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader, Pod,
};
use lb_common::{
    hash::flow_hash, maps, stat, Backend, Flow, FlowKey, LocalMacs, RateWindow, Ring, Service, ServiceKey, Settings, VipFilter,
    BACKEND_F_USABLE, FAMILY_V4, FORWARD_IPIP, MAX_RING_SIZE, PROTO_TCP, PROTO_UDP, RING_EMPTY,
};
use lb_userspace::{dataplane::OBJECT, maglev};
use serde_json::{json, Value};
use xlb_tests::frames::{flow_frame, outer_ipv4, tcp_frame, NODE_MAC, TCP_SYN};

use crate::report::{floor, median, spread, write_json, Row};
use crate::say;

const PART: &str = "1 program";

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const BACKENDS: u32 = 100;
const TABLE_SIZE: u32 = 65537;
/// Flow table entries: more than the flows one run inserts, so nothing is evicted.
const FLOW_TABLE: u32 = 1 << 21;

const CLIENT4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);
const OTHER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x100);
/// New flows come from 10.0.0.0 + n.
const NEW_FLOW_BASE: u32 = 0x0a00_0000;
/// The tunnelled service (VIP4, this TCP port): every flow to the one IPIP backend in slot
/// `TUNNEL_BACKEND`, behind a router, from the node's tunnel source.
const TUNNEL_PORT: u16 = 8080;
const TUNNEL_BACKEND: u32 = BACKENDS;
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 7, 7];
const TUNNEL_SRC4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const TUNNEL_DST4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
/// Offset of the IPv4 source address in an Ethernet frame.
const V4_SRC_OFFSET: usize = 14 + 12;

/// Mirror of `lb-ebpf/src/bench.rs::BenchFrame`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BenchFrame {
    len: u32,
    bump_offset: u32,
    bump_base: u32,
    alternate: u32,
    bytes: [u8; 128],
    alt_bytes: [u8; 128],
}
// SAFETY: repr(C), integers and bytes only, no implicit padding.
unsafe impl Pod for BenchFrame {}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the program's `bpf_ktime_get_coarse_ns`.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One step of the hit path's breakdown: a bench program of lb-ebpf/src/bench.rs that runs
/// `xlb`'s hit path with steps left out.
struct Step {
    name: &'static str,
    program: &'static str,
    kind: &'static str,
    /// Rewrites the MACs (else: XDP_TX with the frame untouched).
    forwards: bool,
    /// Moves xlb's counters (tx and flow_hit) as `xlb` does.
    counts: bool,
}

/// The hit path built up step by step; `xlb` itself (all steps) follows the last.
const LADDER: [Step; 6] = [
    Step { name: "hit_parse", program: "bench_hit_parse", kind: "hit path, step 1: parse + VIP bitmap, XDP_TX", forwards: false, counts: false },
    Step { name: "hit_lookup", program: "bench_hit_lookup", kind: "hit path, step 2: + flow-table lookup", forwards: false, counts: false },
    Step { name: "hit_rewrite", program: "bench_hit_rewrite", kind: "hit path, step 3: + backend entry, MAC rewrite", forwards: true, counts: false },
    Step { name: "hit_checked", program: "bench_hit_checked", kind: "hit path, step 4: + own-MAC check", forwards: true, counts: false },
    Step { name: "hit_refresh", program: "bench_hit_refresh", kind: "hit path, step 5: + refresh (FIN mark, last seen)", forwards: true, counts: false },
    Step { name: "hit_norefresh", program: "bench_hit_norefresh", kind: "hit path without refresh (steps 1-4 + counters)", forwards: true, counts: true },
];

/// The program's settings: the node's tunnel source, and `new_flows_per_cpu`.
fn tunnel_settings(new_flows_per_cpu: u32) -> Settings {
    Settings { new_flows_per_cpu, tunnel_src4: TUNNEL_SRC4.octets(), ..Default::default() }
}

/// `frame` (IPv4, DF) as the program sends it to the tunnelled backend: to the router, in IPIP.
fn ipip(frame: &[u8]) -> Vec<u8> {
    let mut out = ROUTER_MAC.to_vec();
    out.extend_from_slice(&NODE_MAC);
    out.extend_from_slice(&0x0800u16.to_be_bytes());
    out.extend(outer_ipv4(0, 4, TUNNEL_SRC4, TUNNEL_DST4, true, frame.len() - 14));
    out.extend_from_slice(&frame[14..]);
    out
}

fn backend_mac(i: u32) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, (i >> 8) as u8, i as u8]
}

pub struct Options {
    pub repeat: u32,
    pub runs: usize,
}

/// One BPF_PROG_TEST_RUN.
struct Run {
    verdict: u32,
    /// Kernel's average per iteration (whole nanoseconds).
    ns: u64,
    out: Vec<u8>,
}

struct Fixture {
    ebpf: Ebpf,
    frame: Array<MapData, BenchFrame>,
    seq: Array<MapData, u32>,
    target: ProgramArray<MapData>,
    flows: HashMap<MapData, FlowKey, Flow>,
    stats: PerCpuArray<MapData, u64>,
    settings: Array<MapData, Settings>,
    rate: PerCpuArray<MapData, RateWindow>,
    /// The services' Maglev table (backend indices).
    table: Vec<u32>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(ebpf: &mut Ebpf, name: &str) -> Result<T> {
    let map = ebpf.take_map(name).with_context(|| format!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

impl Fixture {
    fn load() -> Result<Fixture> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::FLOWS, FLOW_TABLE)
            .map_max_entries(maps::RINGS, 8)
            .map_max_entries(maps::SERVICES, 16)
            .map_max_entries(maps::SERVICE_STATS, 4);
        let mut ebpf = loader.load(OBJECT).context("loading the object")?;
        for name in ["xlb", "bench_macswap", "bench_empty", "bench_wrap"].into_iter().chain(LADDER.iter().map(|s| s.program)) {
            let prog: &mut Xdp = ebpf.program_mut(name).with_context(|| format!("program {name} missing"))?.try_into()?;
            prog.load().with_context(|| format!("loading program {name}"))?;
        }
        let mut services: HashMap<MapData, ServiceKey, Service> = take(&mut ebpf, maps::SERVICES)?;
        let mut rings: Array<MapData, Ring> = take(&mut ebpf, maps::RINGS)?;
        let mut backends: Array<MapData, Backend> = take(&mut ebpf, maps::BACKENDS)?;
        for i in 0..BACKENDS {
            backends.set(i, Backend { dst_mac: backend_mac(i), src_mac: NODE_MAC, ifindex: 1, flags: BACKEND_F_USABLE, ..Default::default() }, 0)?;
        }
        let tunnelled = Backend {
            dst_mac: ROUTER_MAC,
            src_mac: NODE_MAC,
            ifindex: 1,
            flags: BACKEND_F_USABLE,
            addr: lb_common::addr16(TUNNEL_DST4.into()),
            method: FORWARD_IPIP,
            family: FAMILY_V4,
            mtu: 1500,
            ..Default::default()
        };
        backends.set(TUNNEL_BACKEND, tunnelled, 0)?;
        let entries: Vec<maglev::Entry> = (0..BACKENDS)
            .map(|i| maglev::Entry::for_name(format!("198.18.{}.{}", i / 250, 1 + i % 250).as_bytes(), 1, TABLE_SIZE))
            .collect();
        let table = maglev::build(&entries, TABLE_SIZE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ring: Box<Ring> = vec![RING_EMPTY; MAX_RING_SIZE].into_boxed_slice().try_into().expect("length");
        ring[..table.len()].copy_from_slice(&table);
        let vip4 = IpAddr::V4(VIP4);
        let vip6 = IpAddr::V6(VIP6);
        let svcs = [
            (ServiceKey::new(vip4, 80, PROTO_TCP), 0u32),
            (ServiceKey::new(vip4, 53, PROTO_UDP), 1),
            (ServiceKey::new(vip6, 80, PROTO_TCP), 2),
        ];
        for (key, id) in svcs {
            // Every service has its own table slot, as the agent lays them out.
            let slot = id * 2;
            rings.set(slot, *ring, 0)?;
            services.insert(key, Service { id, flags: 0, ring_size: TABLE_SIZE, ring_slot: slot }, 0)?;
        }
        let tunnel_ring: Box<Ring> = vec![TUNNEL_BACKEND; MAX_RING_SIZE].into_boxed_slice().try_into().expect("length");
        rings.set(6, *tunnel_ring, 0)?;
        services.insert(ServiceKey::new(vip4, TUNNEL_PORT, PROTO_TCP), Service { id: 3, flags: 0, ring_size: TABLE_SIZE, ring_slot: 6 }, 0)?;
        // What the agent writes besides the services: the VIP bitmap, and the MACs frames
        // must be addressed to. The latter for another interface than the test run's (lo,
        // index 1): the program looks its entry up all the same (and finds none, which
        // accepts the frame), so the figure carries the lookup; with an entry for lo, repeat
        // 2.. would see the backend's MAC that repeat 1 wrote and pass (a path change).
        let mut filter: Array<MapData, VipFilter> = take(&mut ebpf, maps::VIP_FILTER)?;
        filter.set(0, VipFilter::new(&svcs.map(|(k, _)| k.addr)), 0)?;
        let mut local: Array<MapData, LocalMacs> = take(&mut ebpf, maps::LOCAL_MACS)?;
        local.set(2, LocalMacs::new(2, &[NODE_MAC]).context("one MAC")?, 0)?;
        let mut settings: Array<MapData, Settings> = take(&mut ebpf, maps::SETTINGS)?;
        settings.set(0, tunnel_settings(0), 0)?;
        Ok(Fixture {
            settings,
            frame: take(&mut ebpf, "BENCH_FRAME")?,
            seq: take(&mut ebpf, "BENCH_SEQ")?,
            target: take(&mut ebpf, "BENCH_TARGET")?,
            flows: take(&mut ebpf, maps::FLOWS)?,
            stats: take(&mut ebpf, maps::STATS)?,
            rate: take(&mut ebpf, maps::NEW_FLOW_RATE)?,
            ebpf,
            table,
        })
    }

    fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self.ebpf.program(name).with_context(|| format!("program {name}"))?.try_into()?)
    }

    fn run(&self, program: &str, frame: &[u8], repeat: u32) -> Result<Run> {
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .program(program)?
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..Default::default() })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {program}"))?;
        out.truncate(result.data_size_out as usize);
        Ok(Run { verdict: result.return_value, ns: result.duration.as_nanos() as u64, out })
    }

    /// Runs `bench_wrap` restoring `frame` (and bumping the IPv4 source address when `bump`)
    /// before tail-calling `target`.
    fn wrapped(&mut self, target: &str, frame: &[u8], bump: bool, repeat: u32) -> Result<Run> {
        self.wrapped_alt(target, frame, bump, None, repeat)
    }

    /// [`Fixture::wrapped`], and with `alt`, every odd iteration restores `alt` instead of
    /// `frame` (unbumped): `bump` must be set.
    fn wrapped_alt(&mut self, target: &str, frame: &[u8], bump: bool, alt: Option<&[u8]>, repeat: u32) -> Result<Run> {
        ensure!(frame.len() <= 128, "frame too long for the wrapper");
        let mut saved = BenchFrame { len: frame.len() as u32, bump_offset: 0, bump_base: 0, alternate: 0, bytes: [0; 128], alt_bytes: [0; 128] };
        saved.bytes[..frame.len()].copy_from_slice(frame);
        if bump {
            saved.bump_offset = V4_SRC_OFFSET as u32;
            saved.bump_base = NEW_FLOW_BASE;
        }
        if let Some(alt) = alt {
            ensure!(bump && alt.len() == frame.len(), "the alternate frame needs a bumped frame of its length");
            saved.alternate = 1;
            saved.alt_bytes[..alt.len()].copy_from_slice(alt);
        }
        self.frame.set(0, saved, 0)?;
        let fd = self.program(target)?.fd()?.try_clone()?;
        self.target.set(0, &fd, 0)?;
        self.run("bench_wrap", frame, repeat)
    }

    fn stats(&self) -> Result<Vec<u64>> {
        (0..stat::COUNT).map(|i| Ok(self.stats.get(&i, 0)?.iter().sum())).collect()
    }

    /// Puts the program past its new-flow limit on every CPU for the next second: a limit of 1
    /// a second, and a window that started now with the limit already reached and logged.
    fn past_new_flow_limit(&mut self) -> Result<()> {
        self.settings.set(0, tunnel_settings(1), 0)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let window = RateWindow { start: coarse_now_ns(), recorded: 2 };
        self.rate.set(0, aya::maps::PerCpuValues::try_from(vec![window; cpus])?, 0)?;
        Ok(())
    }

    fn no_new_flow_limit(&mut self) -> Result<()> {
        Ok(self.settings.set(0, tunnel_settings(0), 0)?)
    }

    fn seq(&self) -> Result<u32> {
        Ok(self.seq.get(&0, 0)?)
    }

    /// The backend the Maglev table gives `key`.
    fn choice(&self, key: &FlowKey) -> u32 {
        self.table[(flow_hash(key) % TABLE_SIZE) as usize]
    }
}

/// Counter changes between two snapshots, by name, only those that moved.
fn delta(before: &[u64], after: &[u64]) -> Vec<(usize, u64)> {
    before.iter().zip(after).enumerate().filter(|(_, (b, a))| a != b).map(|(i, (b, a))| (i, a - b)).collect()
}

fn expect_delta(what: &str, before: &[u64], after: &[u64], expected: &[(u32, u64)]) -> Result<()> {
    let got = delta(before, after);
    let mut want: Vec<(usize, u64)> = expected.iter().map(|&(i, n)| (i as usize, n)).filter(|(_, n)| *n != 0).collect();
    want.sort();
    if got != want {
        let fmt = |v: &[(usize, u64)]| v.iter().map(|(i, n)| format!("{}+{n}", stat::NAMES[*i])).collect::<Vec<_>>().join(" ");
        bail!("{what}: counters moved {{{}}}, expected {{{}}}", fmt(&got), fmt(&want));
    }
    Ok(())
}

fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

fn swapped(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&frame[6..12]);
    f[6..12].copy_from_slice(&frame[..6]);
    f
}

/// A packet kind run directly (the output does not change its path).
struct Direct {
    name: &'static str,
    program: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    /// Output expected after `repeat` iterations.
    out: Box<dyn Fn(u32) -> Vec<u8>>,
    /// Counter changes expected per iteration.
    counters: Vec<(u32, u64)>,
}

fn pin_to_last_cpu() -> Option<usize> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpu = cpus - 1;
    // SAFETY: a C struct of integers and arrays, for which all zeros is a valid value.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return None;
        }
    }
    Some(cpu)
}

pub fn run(opts: &Options) -> Result<Vec<Row>> {
    xlb_tests::in_private_netns(|| -> Result<Vec<Row>> {
        xlb_tests::ip(&["link", "set", "lo", "up"])?;
        let cpu = pin_to_last_cpu();
        measure(opts, cpu)
    })?
}

fn measure(opts: &Options, cpu: Option<usize>) -> Result<Vec<Row>> {
    let n = opts.repeat;
    let mut fx = Fixture::load()?;
    let tcp4 = |src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16| flow_frame(PROTO_TCP, src.into(), sport, dst.into(), dport, b"");
    let hit_frame = tcp4(CLIENT4, 40000, VIP4, 80);
    let udp_frame = flow_frame(PROTO_UDP, CLIENT4.into(), 40001, VIP4.into(), 53, &[0x5a; 18]);
    let v6_frame = flow_frame(PROTO_TCP, CLIENT6.into(), 40002, VIP6.into(), 80, b"");
    let pass_frame = tcp4(CLIENT4, 40003, OTHER4, 22);
    let new_frame = tcp4(Ipv4Addr::from(NEW_FLOW_BASE), 40000, VIP4, 80);
    let syn_frame = tcp_frame(TCP_SYN, Ipv4Addr::from(NEW_FLOW_BASE).into(), 40000, VIP4.into(), 80, b"");
    ensure!(syn_frame.len() == hit_frame.len(), "the SYN and the hit frame differ in length");
    let tunnel_hit_frame = tcp4(CLIENT4, 40004, VIP4, TUNNEL_PORT);
    let tunnel_new_frame = tcp4(Ipv4Addr::from(NEW_FLOW_BASE), 40000, VIP4, TUNNEL_PORT);
    let before = fx.stats()?;
    let r = fx.run("xlb", &tunnel_hit_frame, 1)?;
    ensure!(r.verdict == XDP_TX && r.out == ipip(&tunnel_hit_frame), "priming the tunnelled flow: verdict {} or output differs", r.verdict);
    expect_delta("priming the tunnelled flow", &before, &fx.stats()?, &[(stat::VERDICT_TX, 1), (stat::EVENT_FLOW_NEW, 1), (stat::EVENT_ENCAPSULATED, 1)])?;

    // Establish the flows of the established kinds (one new flow each) and learn their
    // backends from the flow table.
    let mut established = Vec::new();
    for (frame, key) in [
        (&hit_frame, FlowKey::new(PROTO_TCP, CLIENT4.into(), 40000, VIP4.into(), 80)),
        (&udp_frame, FlowKey::new(PROTO_UDP, CLIENT4.into(), 40001, VIP4.into(), 53)),
        (&v6_frame, FlowKey::new(PROTO_TCP, CLIENT6.into(), 40002, VIP6.into(), 80)),
    ] {
        let before = fx.stats()?;
        let r = fx.run("xlb", frame, 1)?;
        ensure!(r.verdict == XDP_TX, "priming: verdict {} instead of XDP_TX", r.verdict);
        expect_delta("priming", &before, &fx.stats()?, &[(stat::VERDICT_TX, 1), (stat::EVENT_FLOW_NEW, 1)])?;
        let flow = fx.flows.get(&key, 0).context("primed flow not in the flow table")?;
        ensure!(flow.backend == fx.choice(&key), "primed flow's backend is not the Maglev choice");
        established.push(flow.backend);
    }
    let fwd = |frame: &[u8], b: u32| with_macs(frame, backend_mac(b), NODE_MAC);
    let per_packet_fwd = vec![(stat::VERDICT_TX, 1), (stat::EVENT_FLOW_HIT, 1)];
    let mut direct = vec![
        Direct {
            name: "baseline",
            program: "bench_macswap",
            frame: hit_frame.clone(),
            verdict: XDP_TX,
            out: {
                let f = hit_frame.clone();
                Box::new(move |r| if r % 2 == 1 { swapped(&f) } else { f.clone() })
            },
            counters: vec![],
        },
        Direct {
            name: "empty",
            program: "bench_empty",
            frame: hit_frame.clone(),
            verdict: XDP_PASS,
            out: {
                let f = hit_frame.clone();
                Box::new(move |_| f.clone())
            },
            counters: vec![],
        },
        Direct {
            name: "hit",
            program: "xlb",
            frame: hit_frame.clone(),
            verdict: XDP_TX,
            out: {
                let f = fwd(&hit_frame, established[0]);
                Box::new(move |_| f.clone())
            },
            counters: per_packet_fwd.clone(),
        },
        Direct {
            name: "udp",
            program: "xlb",
            frame: udp_frame.clone(),
            verdict: XDP_TX,
            out: {
                let f = fwd(&udp_frame, established[1]);
                Box::new(move |_| f.clone())
            },
            counters: per_packet_fwd.clone(),
        },
        Direct {
            name: "ipv6",
            program: "xlb",
            frame: v6_frame.clone(),
            verdict: XDP_TX,
            out: {
                let f = fwd(&v6_frame, established[2]);
                Box::new(move |_| f.clone())
            },
            counters: per_packet_fwd.clone(),
        },
        Direct {
            name: "pass",
            program: "xlb",
            frame: pass_frame.clone(),
            verdict: XDP_PASS,
            out: {
                let f = pass_frame.clone();
                Box::new(move |_| f.clone())
            },
            counters: vec![(stat::PASS_NOT_SERVICE, 1)],
        },
    ];
    for step in &LADDER {
        let f = if step.forwards { fwd(&hit_frame, established[0]) } else { hit_frame.clone() };
        direct.push(Direct {
            name: step.name,
            program: step.program,
            frame: hit_frame.clone(),
            verdict: XDP_TX,
            out: Box::new(move |_| f.clone()),
            counters: if step.counts { per_packet_fwd.clone() } else { vec![] },
        });
    }

    let mut samples: std::collections::BTreeMap<&'static str, Vec<f64>> = Default::default();
    let mut checks: Vec<String> = Vec::new();
    let scale = |c: &[(u32, u64)], k: u64| c.iter().map(|&(i, x)| (i, x * k)).collect::<Vec<_>>();
    for round in 0..opts.runs {
        say!("program cost: round {}/{} (repeat {n})", round + 1, opts.runs);
        // Directly run kinds.
        for d in &direct {
            let before = fx.stats()?;
            let one = fx.run(d.program, &d.frame, 1)?;
            let mid = fx.stats()?;
            let many = fx.run(d.program, &d.frame, n)?;
            let after = fx.stats()?;
            let what = format!("{} (repeat 1)", d.name);
            ensure!(one.verdict == d.verdict, "{what}: verdict {} instead of {}", one.verdict, d.verdict);
            ensure!(one.out == (d.out)(1), "{what}: output frame differs from the expected one");
            expect_delta(&what, &before, &mid, &d.counters)?;
            let what = format!("{} (repeat {n})", d.name);
            ensure!(many.verdict == one.verdict, "{what}: verdict {} differs from repeat 1's {}", many.verdict, one.verdict);
            ensure!(many.out == (d.out)(n), "{what}: output frame differs from the expected one");
            expect_delta(&what, &mid, &after, &scale(&d.counters, n as u64))?;
            samples.entry(d.name).or_default().push(many.ns as f64);
        }
        if round == 0 {
            checks.push(format!(
                "baseline, empty, hit, udp, ipv6, pass: verdict and output at repeat {n} equal repeat 1's (baseline: MACs swapped N times); counters moved by exactly N on the named path (hit/udp/ipv6: tx+N flow_hit+N; pass: pass_not_service+N; baseline/empty: none)"
            ));
        }

        // New flow: restore + bump, tail call into xlb; then the same wrapper into the empty
        // program (calibration).
        let key_of = |seq: u32| FlowKey::new(PROTO_TCP, Ipv4Addr::from(NEW_FLOW_BASE.wrapping_add(seq)).into(), 40000, VIP4.into(), 80);
        let expect_out = |fx: &Fixture, frame: &[u8], seq: u32| {
            let src = NEW_FLOW_BASE.wrapping_add(seq).to_be_bytes();
            let mut f = fwd(frame, fx.choice(&key_of(seq)));
            f[V4_SRC_OFFSET..V4_SRC_OFFSET + 4].copy_from_slice(&src);
            f
        };
        let new_flow = |fx: &mut Fixture, repeat: u32| -> Result<Run> {
            let s0 = fx.seq()?;
            let before = fx.stats()?;
            let r = fx.wrapped("xlb", &new_frame, true, repeat)?;
            let after = fx.stats()?;
            let what = format!("new flow (repeat {repeat})");
            ensure!(fx.seq()? == s0.wrapping_add(repeat), "{what}: the wrapper ran {} times, not {repeat}", fx.seq()?.wrapping_sub(s0));
            ensure!(r.verdict == XDP_TX, "{what}: verdict {} instead of XDP_TX", r.verdict);
            let last = s0.wrapping_add(repeat - 1);
            ensure!(r.out == expect_out(fx, &new_frame, last), "{what}: output is not the frame of 5-tuple #{last} sent to its Maglev choice");
            expect_delta(&what, &before, &after, &[(stat::VERDICT_TX, repeat as u64), (stat::EVENT_FLOW_NEW, repeat as u64)])?;
            // Every one of the `repeat` distinct 5-tuples is in the flow table, with its
            // Maglev choice; deleting them proves it and restores the table.
            let mut missing = 0u64;
            for i in 0..repeat {
                let key = key_of(s0.wrapping_add(i));
                if i == repeat - 1 || i == 0 {
                    let flow = fx.flows.get(&key, 0).context("new flow missing")?;
                    ensure!(flow.backend == fx.choice(&key), "{what}: flow #{i} recorded backend {} instead of {}", flow.backend, fx.choice(&key));
                }
                if fx.flows.remove(&key).is_err() {
                    missing += 1;
                }
            }
            ensure!(missing == 0, "{what}: {missing} of {repeat} new flows are not in the flow table (not inserted, or evicted)");
            Ok(r)
        };
        let one = new_flow(&mut fx, 1)?;
        let many = new_flow(&mut fx, n)?;
        ensure!(one.verdict == many.verdict, "new flow: verdict at repeat {n} differs from repeat 1");
        let before = fx.stats()?;
        let s0 = fx.seq()?;
        let cal = fx.wrapped("bench_empty", &new_frame, true, n)?;
        ensure!(cal.verdict == XDP_PASS, "wrapper calibration: verdict {} (the tail call failed?)", cal.verdict);
        let mut expect = new_frame.clone();
        expect[V4_SRC_OFFSET..V4_SRC_OFFSET + 4].copy_from_slice(&NEW_FLOW_BASE.wrapping_add(s0 + n - 1).to_be_bytes());
        ensure!(cal.out == expect, "wrapper calibration: output is not the restored frame with the last source address");
        expect_delta("wrapper calibration", &before, &fx.stats()?, &[])?;
        samples.entry("wrap_new").or_default().push(many.ns as f64);
        samples.entry("wrap_new_empty").or_default().push(cal.ns as f64);

        // New flows whose insert is skipped, each iteration a new 5-tuple as in a spoofed
        // flood: a SYN (never recorded), and an ACK past this CPU's new-flow limit.
        let skipped = |fx: &mut Fixture, frame: &[u8], what: &str| -> Result<Run> {
            let s0 = fx.seq()?;
            let before = fx.stats()?;
            let r = fx.wrapped("xlb", frame, true, n)?;
            let after = fx.stats()?;
            ensure!(fx.seq()? == s0.wrapping_add(n), "{what}: the wrapper ran {} times, not {n}", fx.seq()?.wrapping_sub(s0));
            ensure!(r.verdict == XDP_TX, "{what}: verdict {} instead of XDP_TX", r.verdict);
            let last = s0.wrapping_add(n - 1);
            ensure!(r.out == expect_out(fx, frame, last), "{what}: output is not the frame of 5-tuple #{last} sent to its Maglev choice");
            // A window of the limit may end during the run (it lasts 1 s): then one flow is
            // recorded, and removed here.
            let recorded = after[stat::EVENT_FLOW_NEW as usize] - before[stat::EVENT_FLOW_NEW as usize];
            let expected = if frame[47] == TCP_SYN {
                vec![(stat::VERDICT_TX, n as u64)]
            } else {
                ensure!(recorded <= 2, "{what}: {recorded} new flows recorded past the limit");
                vec![(stat::VERDICT_TX, n as u64), (stat::EVENT_FLOW_NEW, recorded), (stat::EVENT_FLOW_UNRECORDED, n as u64 - recorded)]
            };
            expect_delta(what, &before, &after, &expected)?;
            if recorded > 0 {
                let removed = (0..n).filter(|i| fx.flows.remove(&key_of(s0.wrapping_add(*i))).is_ok()).count() as u64;
                ensure!(removed == recorded, "{what}: {removed} flows in the table, {recorded} counted recorded");
            }
            Ok(r)
        };
        let r = skipped(&mut fx, &syn_frame, "new flow, SYN")?;
        samples.entry("wrap_syn").or_default().push(r.ns as f64);
        fx.past_new_flow_limit()?;
        let r = skipped(&mut fx, &new_frame, "new flow past the limit");
        fx.no_new_flow_limit()?;
        samples.entry("wrap_limited").or_default().push(r?.ns as f64);

        // The hit during a SYN flood: flood SYNs (new 5-tuples) and the established flow's
        // packets alternate 1:1; calibrated with the empty program the same way.
        let s0 = fx.seq()?;
        let before = fx.stats()?;
        let r = fx.wrapped_alt("xlb", &syn_frame, true, Some(&hit_frame), n)?;
        let hits = (0..n).filter(|i| s0.wrapping_add(*i) & 1 == 1).count() as u64;
        let last = s0.wrapping_add(n - 1);
        let want = if last & 1 == 1 { fwd(&hit_frame, established[0]) } else { expect_out(&fx, &syn_frame, last) };
        ensure!(r.verdict == XDP_TX && r.out == want, "hit during a SYN flood: verdict or output differs");
        expect_delta("hit during a SYN flood", &before, &fx.stats()?, &[(stat::VERDICT_TX, n as u64), (stat::EVENT_FLOW_HIT, hits)])?;
        let before = fx.stats()?;
        let cal = fx.wrapped_alt("bench_empty", &syn_frame, true, Some(&hit_frame), n)?;
        ensure!(cal.verdict == XDP_PASS, "alternating calibration: verdict {}", cal.verdict);
        expect_delta("alternating calibration", &before, &fx.stats()?, &[])?;
        samples.entry("wrap_mix").or_default().push(r.ns as f64);
        samples.entry("wrap_mix_empty").or_default().push(cal.ns as f64);

        // Method check: the hit through the restoring wrapper (no bump).
        let before = fx.stats()?;
        let r = fx.wrapped("xlb", &hit_frame, false, n)?;
        ensure!(r.verdict == XDP_TX && r.out == fwd(&hit_frame, established[0]), "hit through the wrapper: verdict or output differs");
        expect_delta("hit through the wrapper", &before, &fx.stats()?, &scale(&per_packet_fwd, n as u64))?;
        let before = fx.stats()?;
        let cal = fx.wrapped("bench_empty", &hit_frame, false, n)?;
        ensure!(cal.verdict == XDP_PASS && cal.out == hit_frame, "restore calibration: verdict or output differs");
        expect_delta("restore calibration", &before, &fx.stats()?, &[])?;
        samples.entry("wrap_hit").or_default().push(r.ns as f64);
        samples.entry("wrap_hit_empty").or_default().push(cal.ns as f64);

        // Tunnels: the established flow's packet wrapped in IPIP (through the wrapper, which
        // also takes back each iteration's 20-byte growth), and new flows to the tunnelled
        // service (calibrated like the plain ones).
        let before = fx.stats()?;
        let r = fx.wrapped("xlb", &tunnel_hit_frame, false, n)?;
        ensure!(r.verdict == XDP_TX && r.out == ipip(&tunnel_hit_frame), "tunnelled hit: verdict {} or output differs", r.verdict);
        let per_tunnelled = [(stat::VERDICT_TX, n as u64), (stat::EVENT_FLOW_HIT, n as u64), (stat::EVENT_ENCAPSULATED, n as u64)];
        expect_delta("tunnelled hit", &before, &fx.stats()?, &per_tunnelled)?;
        samples.entry("wrap_tunnel_hit").or_default().push(r.ns as f64);
        let s0 = fx.seq()?;
        let before = fx.stats()?;
        let r = fx.wrapped("xlb", &tunnel_new_frame, true, n)?;
        let mut last = tunnel_new_frame.clone();
        last[V4_SRC_OFFSET..V4_SRC_OFFSET + 4].copy_from_slice(&NEW_FLOW_BASE.wrapping_add(s0 + n - 1).to_be_bytes());
        ensure!(r.verdict == XDP_TX && r.out == ipip(&last), "tunnelled new flow: verdict {} or output differs", r.verdict);
        let per_new = [(stat::VERDICT_TX, n as u64), (stat::EVENT_FLOW_NEW, n as u64), (stat::EVENT_ENCAPSULATED, n as u64)];
        expect_delta("tunnelled new flow", &before, &fx.stats()?, &per_new)?;
        let tunnel_key = |seq: u32| FlowKey::new(PROTO_TCP, Ipv4Addr::from(NEW_FLOW_BASE.wrapping_add(seq)).into(), 40000, VIP4.into(), TUNNEL_PORT);
        let missing = (0..n).filter(|i| fx.flows.remove(&tunnel_key(s0.wrapping_add(*i))).is_err()).count();
        ensure!(missing == 0, "tunnelled new flow: {missing} of {n} flows not in the flow table");
        samples.entry("wrap_tunnel_new").or_default().push(r.ns as f64);
        if round == 0 {
            checks.push(format!(
                "tunnels: {n} iterations of the established flow's packet and {n} new flows (distinct sources) to the IPIP backend through bench_wrap: output = the frame in IPIP (outer header built independently) to the router's MAC; tx, flow_hit or flow_new, and encapsulated each +{n}; every new flow in (and deleted from) the table"
            ));
        }
        if round == 0 {
            checks.push(format!(
                "new flow: {n} iterations through bench_wrap, each with a distinct source address (10.0.0.0 + sequence); flow_new+{n} tx+{n} flow_hit+0; all {n} keys found in (and deleted from) the flow table with their Maglev backend; verdict XDP_TX at repeat 1 and {n}; output = the last 5-tuple's frame with its Maglev backend's MAC"
            ));
            checks.push("wrapper calibration (bench_empty in the slot): verdict XDP_PASS, output = restored frame, no xlb counter moved".to_owned());
            checks.push(format!(
                "insert skipped: {n} SYNs (tx+{n} only, flow_new+0) and {n} ACKs past a new-flow limit of 1/s (tx+{n}, flow_unrecorded+{n} less the at most 2 recorded when a 1-s window ends, which are removed), each a distinct 5-tuple; output = the last 5-tuple's frame with its Maglev backend's MAC"
            ));
            checks.push(format!(
                "hit during a SYN flood: {n} iterations alternating a new SYN and the established flow's frame: tx+{n}, flow_hit = the hit iterations, flow_new+0; calibration with bench_empty alternating the same frames"
            ));
        }
    }

    let m = |k: &str| median(&samples[k]);
    let per_round = |a: &str, b: &str| -> Vec<f64> {
        samples[a].iter().zip(&samples[b]).zip(&samples["empty"]).map(|((x, c), e)| x - c + e).collect()
    };
    let new_flow = per_round("wrap_new", "wrap_new_empty");
    let hit_wrapped = per_round("wrap_hit", "wrap_hit_empty");
    let tunnel_hit = per_round("wrap_tunnel_hit", "wrap_hit_empty");
    let tunnel_new = per_round("wrap_tunnel_new", "wrap_new_empty");
    let syn_skip = per_round("wrap_syn", "wrap_new_empty");
    let limited_skip = per_round("wrap_limited", "wrap_new_empty");
    // Alternating flood SYNs and hits: the mean of the two, so the hit is twice the mean less
    // the SYN's own cost (measured in the same round).
    let mix = per_round("wrap_mix", "wrap_mix_empty");
    let hit_in_flood: Vec<f64> = mix.iter().zip(&syn_skip).map(|(m, syn)| 2.0 * m - syn).collect();
    let base = m("baseline");
    let base_floor = floor(&samples["baseline"]);
    let empty = m("empty");
    // Per path: its per-round figures, judged on the median of per-round ratios to the
    // baseline measured in the same round, and on the floors (minimum over the rounds),
    // which move far less between invocations than medians.
    // The targets are the benchmark issue's, each an anchor divided by the MAC-swap floor of the
    // run it was measured in (7 ns), as the issue itself states the hit's (45 ns there, 6.5x):
    // a new flow at most Katran's 451 ns there, 64x.
    let results: [(&str, Vec<f64>, Option<f64>); 7] = [
        ("new flow: a connection's first ACK to a VIP of 100 backends (insert)", new_flow.clone(), Some(64.0)),
        ("flow-table hit: same TCP flow again", samples["hit"].clone(), Some(6.5)),
        ("UDP v4, established flow", samples["udp"].clone(), None),
        ("IPv6 TCP, established flow", samples["ipv6"].clone(), None),
        ("non-VIP packet (XDP_PASS)", samples["pass"].clone(), Some(3.0)),
        ("tunnelled hit: same TCP flow again, wrapped in IPIP (via the wrapper)", tunnel_hit, None),
        ("tunnelled new flow: first ACK, recorded and wrapped in IPIP", tunnel_new, None),
    ];
    let mut rows = vec![Row::new(PART, "baseline: MAC swap + XDP_TX", format!("{base:.0} ns/pkt (floor {base_floor:.0})"))];
    let mut per_path = serde_json::Map::new();
    for (kind, per_run, target) in &results {
        let ratios: Vec<f64> = per_run.iter().zip(&samples["baseline"]).map(|(x, b)| x / b).collect();
        let (r_med, r_min, r_max) = spread(&ratios);
        let (ns, ns_floor) = (median(per_run), floor(per_run));
        let floor_ratio = ns_floor / base_floor;
        let row = Row::new(PART, *kind, format!("{ns:.0} ns/pkt (floor {ns_floor:.0}, {:.0} net of the empty program)", ns - empty))
            .reference(format!("{base:.0} ns; per round {r_min:.2}-{r_max:.2}x"), Some(r_med));
        rows.push(match target {
            Some(t) => row.target(format!("<= {t}x (median {r_med:.2}, floor {floor_ratio:.2})"), Some(r_med <= *t && floor_ratio <= *t)),
            None => row.target(format!("(none; floor {floor_ratio:.2}x)"), None),
        });
        per_path.insert(
            kind.to_string(),
            json!({ "median_ns": ns, "floor_ns": ns_floor, "net_of_empty_ns": ns - empty, "ratio_median": r_med, "ratio_min": r_min, "ratio_max": r_max, "floor_ratio": floor_ratio }),
        );
    }
    // Under a flood: each figure against the hit of the same round.
    let hit = &samples["hit"];
    let against_hit = |v: &[f64]| -> (f64, f64, f64, f64) {
        let r: Vec<f64> = v.iter().zip(hit).map(|(x, h)| x / h).collect();
        let (r_med, r_min, r_max) = spread(&r);
        (r_med, r_min, r_max, floor(v) / floor(hit))
    };
    let mut flood = serde_json::Map::new();
    for (kind, key, per_run, target) in [
        ("new flow, insert skipped: a SYN (flood bypass), new 5-tuple each", "syn_skipped", &syn_skip, Some(2.0)),
        ("new flow, insert skipped: an ACK past new_flow_rate, new 5-tuple each", "rate_limited", &limited_skip, Some(2.0)),
        ("flow-table hit during a SYN flood (1:1 with flood SYNs)", "hit_during_syn_flood", &hit_in_flood, None),
    ] {
        let (r_med, r_min, r_max, floor_ratio) = against_hit(per_run);
        let (ns, ns_floor) = (median(per_run), floor(per_run));
        let row = Row::new(PART, kind, format!("{ns:.0} ns/pkt (floor {ns_floor:.0})"))
            .reference(format!("hit {:.0} ns; per round {r_min:.2}-{r_max:.2}x", m("hit")), Some(r_med));
        rows.push(match target {
            Some(t) => row.target(format!("<= {t}x hit (median {r_med:.2}, floor {floor_ratio:.2})"), Some(r_med <= t && floor_ratio <= t)),
            None => row.target(format!("(none; floor {floor_ratio:.2}x hit)"), None),
        });
        flood.insert(
            key.to_owned(),
            json!({ "median_ns": ns, "floor_ns": ns_floor, "ratio_to_hit_median": r_med, "ratio_to_hit_min": r_min, "ratio_to_hit_max": r_max, "floor_ratio_to_hit": floor_ratio, "per_run_ns": per_run }),
        );
    }
    // Where a hit's nanoseconds go: each step against the one before, paired by round.
    let mut steps = serde_json::Map::new();
    let mut previous = ("the empty program", "empty");
    let last = LADDER.len() - 1;
    let ladder: Vec<(&str, &str, &str)> = LADDER[..last]
        .iter()
        .zip(["step 1", "step 2", "step 3", "step 4", "step 5"])
        .map(|(s, short)| (s.kind, s.name, short))
        .chain([("hit path, step 6: + counters (= xlb's hit)", "hit", "step 6"), (LADDER[last].kind, LADDER[last].name, "")])
        .collect();
    for (kind, name, short) in ladder {
        // The hit without refresh is set against the whole hit: what the refresh costs there.
        let (against, against_name) = if name == LADDER[last].name { ("xlb's hit", "hit") } else { previous };
        let diff: Vec<f64> = samples[name].iter().zip(&samples[against_name]).map(|(a, b)| a - b).collect();
        let (ns, ns_floor) = (median(&samples[name]), floor(&samples[name]));
        let (d, d_floor) = (median(&diff), ns_floor - floor(&samples[against_name]));
        rows.push(
            Row::new(PART, kind, format!("{ns:.0} ns/pkt (floor {ns_floor:.0})"))
                .reference(format!("{d:+.1} ns against {against} (floors {d_floor:+.0})"), Some(ns / base))
                .target("(breakdown; ratio to baseline)", None),
        );
        steps.insert(
            name.to_owned(),
            json!({ "kind": kind, "median_ns": ns, "floor_ns": ns_floor, "against": against_name, "difference_median_of_rounds_ns": d, "difference_of_floors_ns": d_floor }),
        );
        previous = (short, name);
    }
    let hw = median(&hit_wrapped);
    rows.push(
        Row::new(PART, "method check: hit via restore wrapper", format!("{hw:.0} ns/pkt"))
            .reference(format!("direct hit {:.0} ns", m("hit")), Some(hw / m("hit")))
            .target("~1.0 (restore/subtraction is sound)", None),
    );
    let json = json!({
        "part": "program cost (BPF_PROG_TEST_RUN)",
        "repeat": n,
        "runs": opts.runs,
        "cpu": cpu,
        "unit": "ns per packet, kernel-reported average per iteration (whole ns); medians and floors (minimum) over the interleaved rounds; ratios per round, to that round's baseline",
        "backends": BACKENDS,
        "table_size": TABLE_SIZE,
        "flow_table_entries": FLOW_TABLE,
        "baseline_ns": base,
        "results": {
            "new_flow_ns": median(&new_flow),
            "hit_ns": m("hit"),
            "udp_ns": m("udp"),
            "ipv6_ns": m("ipv6"),
            "pass_ns": m("pass"),
            "empty_program_ns": m("empty"),
            "hit_via_restore_wrapper_ns": hw,
            "wrapper_own_cost_new_flow_ns": m("wrap_new_empty") - m("empty"),
            "wrapper_own_cost_restore_ns": m("wrap_hit_empty") - m("empty"),
        },
        "ratios_to_baseline": {
            "new_flow": median(&new_flow) / base,
            "hit": m("hit") / base,
            "udp": m("udp") / base,
            "ipv6": m("ipv6") / base,
            "pass": m("pass") / base,
        },
        "raw_ns_per_run": samples.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "new_flow_per_run_ns": new_flow,
        "method": {
            "new_flow": "bench_wrap restores the frame and writes 10.0.0.0+n into the IPv4 source before each iteration, then tail-calls xlb; cost = wrap(xlb) - wrap(empty) + direct(empty)",
            "established": "run directly: xlb only rewrites MACs, which it does not read, so every iteration takes the same path",
            "flow_table": format!("LRU hash of {FLOW_TABLE} entries; one run inserts N new flows, all of which are verified present and deleted afterwards (no eviction)"),
        },
        "checks": checks,
        "per_path": per_path,
        "under_flood": flood,
        "hit_path_steps": steps,
        "baseline_floor_ns": base_floor,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let path = write_json("program", &json)?;
    say!("program cost: wrote {}", path.display());
    Ok(rows)
}
