//! Part 2: forwarding rate in the lab. A generator in the client namespace (an AF_PACKET
//! sender; see [`Flood`] for why not trafgen) floods the VIP with 60-byte UDP frames (256
//! flows, to the `flood` service, port 9); lb1 forwards them with XDP_TX; the switch side of
//! lb1's veth drops them (`bench_sink`, the wire). The node's forwarding rate is read from its
//! own counters over a fixed window: xlb's `tx` counter (`xlb stats --json`) and, for xlb and
//! the baseline alike, the veth's `xdp_tx` counter (`ethtool -S eth0` on lb1). The baseline
//! is `bench_macswap` attached to the same interface in place of xlb (the agent stopped): the
//! same path, with only the program changed. Windows alternate xlb, baseline, xlb, ...
//!
//! CPU placement (2 CPUs here): the generator runs on CPU 0. lb1's eth0 runs its NAPI poll in
//! a kernel thread (threaded NAPI) pinned to the other CPU, so the XDP program does not share
//! a CPU with the generator; without that a veth polls on the sender's CPU, and the figure
//! would be the generator's and the program's costs in series. The generator cannot saturate
//! the node here, so next to the forwarded rate the part reports the rate per busy CPU of the
//! node (forwarded pps / busy share of its CPU, from /proc/stat).

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::json;
pub(crate) use xlb_tests::flood::Flood;
use xlb_tests::frames;

use lb_userspace::config::DEFAULT_NEW_FLOW_RATE;

use crate::{
    lab::{BenchLab, FLOOD_PORT, TUNNEL_FLOOD_PORT},
    report::{median, write_json, Row},
    say, Settings,
};

const PART: &str = "2 forwarding";
pub(crate) const FLOWS: u16 = 256;
/// Distinct 5-tuples of the new-flow flood.
const NEW_FLOWS: u32 = 256 * 1024;

/// The flood: `FLOWS` 60-byte frames, client -> VIP:9, source ports 10000..
pub(crate) fn flood_frames(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<Vec<u8>> {
    flood_frames_to(FLOOD_PORT, dst_mac, src_mac)
}

/// The flood to VIP:`port`.
fn flood_frames_to(port: u16, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let client = std::net::IpAddr::from([203u8, 0, 113, 10]);
    let vip: std::net::IpAddr = xlb_tests::plan::VIP4.parse().expect("VIP");
    (0..FLOWS)
        .map(|i| {
            let mut f = frames::flow_frame(frames::PROTO_UDP, client, 10000 + i, vip, port, &[0x5a; 18]);
            f[..6].copy_from_slice(&dst_mac);
            f[6..12].copy_from_slice(&src_mac);
            f
        })
        .collect()
}

/// Every frame a new flow: `NEW_FLOWS` 60-byte frames to VIP:9, from 198.51.100.0/24 (spoofed
/// clients) and source ports 10000.., each 5-tuple once. The generator cycles through them; a
/// flow recorded on the first pass is a hit on the next, so the window counts the program's
/// own `flow_new` and `flow_unrecorded`.
fn new_flow_frames(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let vip: std::net::IpAddr = xlb_tests::plan::VIP4.parse().expect("VIP");
    (0..NEW_FLOWS)
        .map(|i| {
            let client = std::net::IpAddr::from([198, 51, 100, (i % 256) as u8]);
            let mut f = frames::flow_frame(frames::PROTO_UDP, client, 10000 + (i / 256) as u16, vip, FLOOD_PORT, &[0x5a; 18]);
            f[..6].copy_from_slice(&dst_mac);
            f[6..12].copy_from_slice(&src_mac);
            f
        })
        .collect()
}

/// Busy and total jiffies per CPU from /proc/stat.
pub(crate) fn cpu_times() -> Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string("/proc/stat")?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(|c| c.is_ascii_digit()))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total)
        })
        .collect())
}

/// PIDs of kernel threads named `napi/<dev>-*`.
pub(crate) fn napi_threads(dev: &str) -> Vec<i32> {
    let prefix = format!("napi/{dev}-");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim().starts_with(&prefix)))
        .collect()
}

/// PIDs of threads whose name is exactly `name`.
pub(crate) fn thread_by_name(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

/// Time a thread has spent on a CPU, in ns (first field of /proc/<pid>/schedstat).
pub(crate) fn runtime_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pin(pid: i32, cpu: usize) -> Result<()> {
    xlb_tests::run(Command::new("taskset").args(["-p", "-c", &cpu.to_string(), &pid.to_string()]))?;
    Ok(())
}

/// Counters of one moment.
struct Snapshot {
    at: Instant,
    xlb_tx: Option<u64>,
    xdp_tx: u64,
    xdp_tx_errors: u64,
    sink: u64,
    offered: u64,
    cpus: Vec<(u64, u64)>,
    /// CPU time of the node's forwarding threads (ns, from /proc/<pid>/schedstat).
    node_ns: u64,
    /// xlb's `flow_new` and `flow_unrecorded` counters (0 for the baseline).
    flow_new: u64,
    flow_unrecorded: u64,
}

fn snapshot(bl: &BenchLab, with_agent: bool, node_threads: &[i32]) -> Result<Snapshot> {
    let at = Instant::now();
    let counters = if with_agent { Some(bl.status()?.counters) } else { None };
    let counter = |name: &str| -> Result<u64> {
        counters.as_ref().map_or(Ok(0), |c| c.get(name).copied().with_context(|| format!("xlb counter {name}")))
    };
    let xlb_tx = if with_agent { Some(counter("tx")?) } else { None };
    let eth = BenchLab::ethtool(&bl.lb.ns, "eth0")?;
    let sum = |suffix: &str| eth.iter().filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with(suffix)).map(|(_, v)| v).sum::<u64>();
    Ok(Snapshot {
        at,
        xlb_tx,
        xdp_tx: sum("_xdp_tx"),
        xdp_tx_errors: sum("_xdp_tx_errors"),
        sink: bl.sink_dropped()?,
        offered: tx_packets(&bl.client.ns)?,
        cpus: cpu_times()?,
        node_ns: node_threads.iter().map(|pid| runtime_ns(*pid)).sum(),
        flow_new: counter("flow_new")?,
        flow_unrecorded: counter("flow_unrecorded")?,
    })
}

pub(crate) fn tx_packets(ns: &str) -> Result<u64> {
    let out = xlb_tests::run(Command::new("ip").args(["-n", ns, "-j", "-s", "link", "show", "eth0"]))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    v[0]["stats64"]["tx"]["packets"].as_u64().context("tx packets")
}

struct Window {
    program: &'static str,
    seconds: f64,
    /// From the node's own counters (xlb: its `tx`; baseline: the veth's xdp_tx - errors).
    mpps: f64,
    veth_mpps: f64,
    xlb_mpps: Option<f64>,
    sink_mpps: f64,
    offered_mpps: f64,
    cpu_busy: Vec<f64>,
    /// CPU time of lb1's NAPI thread and its CPU's softirq thread per second of the window
    /// (0..1); without threaded NAPI, the busy share of the last CPU.
    node_busy: f64,
    /// `mpps / node_busy`: what one fully busy CPU would forward at this cost per packet.
    capacity_mpps: f64,
    /// New flows a second: recorded (`flow_new`) and forwarded unrecorded past the limit.
    recorded_per_s: f64,
    unrecorded_per_s: f64,
}

fn measure(bl: &mut BenchLab, program: &'static str, frames: &[Vec<u8>], napi: &[i32], warm: Duration, window: Duration) -> Result<Window> {
    let with_agent = program.starts_with("xlb");
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // The node's forwarding CPU time: its NAPI thread(s), plus the softirq thread of that CPU
    // (softirq work deferred there).
    let mut node_threads = napi.to_vec();
    node_threads.extend(thread_by_name(&format!("ksoftirqd/{}", cpus - 1)));
    let flood = Flood::start(&bl.client.ns, frames.to_vec(), 0)?;
    thread::sleep(warm);
    let a = snapshot(bl, with_agent, &node_threads)?;
    thread::sleep(window);
    let b = snapshot(bl, with_agent, &node_threads)?;
    flood.stop()?;
    if b.offered == a.offered {
        bail!("the generator sent nothing ({program})");
    }
    let secs = (b.at - a.at).as_secs_f64();
    let rate = |x: u64, y: u64| (y.saturating_sub(x)) as f64 / secs / 1e6;
    let veth = rate(a.xdp_tx - a.xdp_tx_errors, b.xdp_tx - b.xdp_tx_errors);
    let xlb = match (a.xlb_tx, b.xlb_tx) {
        (Some(x), Some(y)) => Some(rate(x, y)),
        _ => None,
    };
    let cpu_busy: Vec<f64> = a.cpus.iter().zip(&b.cpus).map(|(x, y)| 100.0 * (y.0 - x.0) as f64 / ((y.1 - x.1).max(1)) as f64).collect();
    let node_busy = if napi.is_empty() {
        cpu_busy.last().copied().unwrap_or(100.0) / 100.0
    } else {
        (b.node_ns - a.node_ns) as f64 / 1e9 / secs
    };
    let mpps = xlb.unwrap_or(veth);
    let w = Window {
        node_busy,
        capacity_mpps: if node_busy > 0.0 { mpps / node_busy } else { f64::NAN },
        program,
        seconds: secs,
        mpps,
        veth_mpps: veth,
        xlb_mpps: xlb,
        sink_mpps: rate(a.sink, b.sink),
        offered_mpps: rate(a.offered, b.offered),
        cpu_busy,
        recorded_per_s: rate(a.flow_new, b.flow_new) * 1e6,
        unrecorded_per_s: rate(a.flow_unrecorded, b.flow_unrecorded) * 1e6,
    };
    say!(
        "forwarding: {program}: {:.3} Mpps forwarded (veth xdp_tx {:.3}, sink {:.3}), offered {:.3} Mpps, CPU busy {:?} -> {:.2} Mpps per busy CPU",
        w.mpps,
        w.veth_mpps,
        w.sink_mpps,
        w.offered_mpps,
        w.cpu_busy.iter().map(|c| format!("{c:.0}%")).collect::<Vec<_>>(),
        w.capacity_mpps
    );
    if with_agent {
        say!("forwarding: {program}: new flows {:.0}/s recorded, {:.0}/s unrecorded", w.recorded_per_s, w.unrecorded_per_s);
    }
    Ok(w)
}

/// Enables threaded NAPI on lb1's eth0 and pins its thread(s), created since `before`, to the
/// last CPU. Returns how many threads were pinned.
pub(crate) fn pin_new_napi(ns: &str, before: &[i32]) -> Result<Vec<i32>> {
    // A veth has NAPI only while an XDP program is attached; enable the threads now.
    xlb_tests::run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", "echo 1 > /sys/class/net/eth0/threaded"]))
        .context("enabling threaded NAPI on lb1's eth0")?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut pinned = Vec::new();
    for pid in napi_threads("eth0") {
        if !before.contains(&pid) {
            pin(pid, cpus - 1)?;
            pinned.push(pid);
        }
    }
    ensure!(!pinned.is_empty(), "no NAPI thread appeared for lb1's eth0");
    Ok(pinned)
}

pub fn run(s: &Settings, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let (warm, window, rounds) =
        if s.quick { (Duration::from_millis(500), Duration::from_secs(2), 1) } else { (Duration::from_secs(1), Duration::from_secs(5), 3) };
    let threaded = std::env::var("XLB_BENCH_NAPI").as_deref() != Ok("softirq");
    let mut bl = BenchLab::start("bfwd")?;
    let lb_mac = xlb_tests::link_mac(&bl.lb.ns, "eth0")?;
    let client_mac = xlb_tests::link_mac(&bl.client.ns, "eth0")?;
    let frames = flood_frames(lb_mac, client_mac);
    let new_frames = new_flow_frames(lb_mac, client_mac);
    let tunnel_frames = flood_frames_to(TUNNEL_FLOOD_PORT, lb_mac, client_mac);
    let mut windows: Vec<Window> = Vec::new();
    for round in 0..rounds {
        say!("forwarding: round {}/{rounds} ({} s windows)", round + 1, window.as_secs());
        // xlb
        let before = napi_threads("eth0");
        bl.start_agent()?;
        let napi = if threaded { pin_new_napi(&bl.lb.ns, &before)? } else { Vec::new() };
        windows.push(measure(&mut bl, "xlb", &frames, &napi, warm, window)?);
        // The same node under a flood of new flows (its default new_flow_rate).
        windows.push(measure(&mut bl, "xlb-new", &new_frames, &napi, warm, window)?);
        // The same flood to the service whose backends are reached in IPIP.
        windows.push(measure(&mut bl, "xlb-ipip", &tunnel_frames, &napi, warm, window)?);
        bl.stop_agent()?;
        // baseline
        let before = napi_threads("eth0");
        bl.attach_macswap()?;
        let napi = if threaded { pin_new_napi(&bl.lb.ns, &before)? } else { Vec::new() };
        windows.push(measure(&mut bl, "baseline", &frames, &napi, warm, window)?);
        bl.detach_macswap()?;
    }
    let med = |p: &str, f: fn(&Window) -> f64| median(&windows.iter().filter(|w| w.program == p).map(f).collect::<Vec<_>>());
    let xlb = med("xlb", |w| w.mpps);
    let base = med("baseline", |w| w.mpps);
    let xlb_cap = med("xlb", |w| w.capacity_mpps);
    let base_cap = med("baseline", |w| w.capacity_mpps);
    let xlb_busy = med("xlb", |w| w.node_busy);
    let base_busy = med("baseline", |w| w.node_busy);
    let offered = med("baseline", |w| w.offered_mpps).max(med("xlb", |w| w.offered_mpps));
    let new_mpps = med("xlb-new", |w| w.mpps);
    let new_cap = med("xlb-new", |w| w.capacity_mpps);
    let new_busy = med("xlb-new", |w| w.node_busy);
    let (ipip_mpps, ipip_cap, ipip_busy) = (med("xlb-ipip", |w| w.mpps), med("xlb-ipip", |w| w.capacity_mpps), med("xlb-ipip", |w| w.node_busy));
    if xlb <= 0.0 || base <= 0.0 {
        bail!("nothing was forwarded (xlb {xlb:.3} Mpps, baseline {base:.3} Mpps); see the lab logs");
    }
    // The node is the bottleneck only if its CPU is (nearly) saturated; otherwise both figures
    // are the generator's rate and only the CPU each program needed for it tells them apart.
    let saturated = xlb_busy > 0.95 && base_busy > 0.95;
    let ratio = xlb / base;
    let cap_ratio = xlb_cap / base_cap;
    let placement = if threaded {
        "generator on CPU 0; lb1's NAPI poll (the XDP program, then the sink) in a kernel thread pinned to the other CPU"
    } else {
        "generator and lb1's NAPI share the sender's CPU (softirq)"
    };
    notes.push(format!(
        "forwarding: 60-byte UDP frames, {FLOWS} flows, {} s windows x {rounds} rounds each, medians; offered {offered:.2} Mpps by one AF_PACKET sender; {placement}. \
         2 CPUs: the generator (and the bridge it drives) fills CPU 0 and caps the offered rate{}; the per-CPU figure is forwarded pps / busy share of the node's CPU \
         (it includes the veth's skb-to-XDP conversion and the sink, the same for both programs, and the node's wakeups at partial load)",
        window.as_secs(),
        if saturated { "" } else { ", so the node's CPU was not saturated: the forwarded rates equal the offered rate and the ratio of raw rates says nothing about cost" }
    ));
    let rows = vec![
        Row::new(PART, "baseline: MAC swap + XDP_TX on lb1, forwarded", format!("{base:.2} Mpps @ {:.0}% CPU", base_busy * 100.0)),
        Row::new(PART, "xlb forwarded (UDP flood, established flows)", format!("{xlb:.2} Mpps @ {:.0}% CPU", xlb_busy * 100.0))
            .reference(format!("{base:.2} Mpps"), Some(ratio))
            .target(if saturated { ">= 0.8x baseline" } else { "(offered-limited, see next row)" }, if saturated { Some(ratio >= 0.8) } else { None }),
        Row::new(PART, "xlb forwarding per busy CPU (Mpps / CPU share)", format!("{xlb_cap:.2} Mpps/CPU"))
            .reference(format!("{base_cap:.2} Mpps/CPU"), Some(cap_ratio))
            .target(">= 0.8x baseline", Some(cap_ratio >= 0.8)),
        Row::new(
            PART,
            &format!("xlb under a new-flow flood (every 5-tuple new; new_flow_rate {DEFAULT_NEW_FLOW_RATE}/CPU/s)"),
            format!(
                "{new_mpps:.2} Mpps @ {:.0}% CPU: {:.0}/s recorded, {:.0}/s unrecorded",
                new_busy * 100.0,
                med("xlb-new", |w| w.recorded_per_s),
                med("xlb-new", |w| w.unrecorded_per_s)
            ),
        )
        .reference(format!("established {xlb_cap:.2} Mpps/CPU"), Some(new_cap / xlb_cap))
        .target(&format!("(reported: {new_cap:.2} Mpps/CPU)"), None),
        Row::new(PART, "xlb forwarding in IPIP (backends behind a router; established flows)", format!("{ipip_mpps:.2} Mpps @ {:.0}% CPU", ipip_busy * 100.0))
            .reference(format!("direct routing {xlb_cap:.2} Mpps/CPU"), Some(ipip_cap / xlb_cap))
            .target(&format!("(reported: {ipip_cap:.2} Mpps/CPU)"), None),
    ];
    let by_window: Vec<serde_json::Value> = windows
        .iter()
        .map(|w| {
            json!({
                "program": w.program, "seconds": w.seconds, "forwarded_mpps": w.mpps, "veth_xdp_tx_mpps": w.veth_mpps,
                "xlb_tx_mpps": w.xlb_mpps, "sink_mpps": w.sink_mpps, "offered_mpps": w.offered_mpps, "cpu_busy_percent": w.cpu_busy,
                "node_cpu_busy": w.node_busy, "mpps_per_busy_cpu": w.capacity_mpps,
                "new_flows_recorded_per_s": w.recorded_per_s, "new_flows_unrecorded_per_s": w.unrecorded_per_s,
            })
        })
        .collect();
    let json = json!({
        "part": "forwarding rate in the lab",
        "frame_bytes": 60,
        "flows": FLOWS,
        "window_seconds": window.as_secs_f64(),
        "rounds": rounds,
        "placement": placement,
        "xlb_mpps": xlb,
        "baseline_mpps": base,
        "ratio": ratio,
        "node_cpu_saturated": saturated,
        "xlb_node_cpu_busy": xlb_busy,
        "baseline_node_cpu_busy": base_busy,
        "xlb_mpps_per_busy_cpu": xlb_cap,
        "baseline_mpps_per_busy_cpu": base_cap,
        "ratio_per_busy_cpu": cap_ratio,
        "offered_mpps": offered,
        "new_flow_flood": {
            "frames": "xlb-new windows: 60-byte UDP to VIP:9 from 198.51.100.0/24 x source ports 10000.., NEW_FLOWS distinct 5-tuples cycled; forwarded, recorded and unrecorded per second from xlb's own counters",
            "distinct_flows": NEW_FLOWS,
            "mpps": new_mpps,
            "mpps_per_busy_cpu": new_cap,
            "node_cpu_busy": new_busy,
            "ratio_per_busy_cpu_to_established": new_cap / xlb_cap,
        },
        "windows": by_window,
        "counters": "xlb: its own tx counter (xlb stats --json); baseline: rx_queue_*_xdp_tx - xdp_tx_errors of lb1's eth0 (ethtool -S); sink: frames dropped by bench_sink on the switch side",
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let path = write_json("forwarding", &json)?;
    say!("forwarding: wrote {}", path.display());
    drop(bl);
    Ok(rows)
}
