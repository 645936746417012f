//! Part 7: aggregate forwarding of a BGP scale-out, three xlb nodes against one, in the ECMP
//! lab (`xlb_tests::ecmp`: a router running BIRD, nodes announcing the VIP through BIRD).
//!
//! The flood does what the router's ECMP does with many flows: the generator (the forwarding
//! part's AF_PACKET sender) runs in the router's namespace and sends 60-byte UDP frames of
//! 256 flows to the VIP's port 9 out of the router's segment interface, each flow to the MAC
//! of the node its index picks (flow i to node i mod n), as a hardware router's ECMP would
//! spread them (the frames of one node back to back, as each node's own link carries them).
//! The router's own kernel forwarding stays out of the figure: in production it
//! is a router's ASIC, here it would be one more consumer of the same two CPUs. Each node
//! forwards with XDP_TX; `bench_sink` on the switch side of each node's veth drops the flood
//! (the wire). Each node's eth0 polls in a threaded NAPI thread pinned to the last CPU, the
//! generator runs on CPU 0, as in the forwarding part. Forwarded packets are the sum of the
//! nodes' own `tx` counters over the window.

use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use xlb_tests::ecmp::{Ecmp, Options, NODE_CONFIG, VIP4};

use xlb_tests::frames;

use crate::{
    forwarding::{cpu_times, napi_threads, pin_new_napi, runtime_ns, thread_by_name, tx_packets, Flood, FLOWS},
    lab::{attach_sink, bench_programs, FLOOD_PORT},
    report::{median, write_json, Row},
    say, Settings,
};

const PART: &str = "7 scale-out";

/// config/ecmp.toml with the flood's service (UDP port 9 on the IPv4 VIP, the same backends).
fn config() -> String {
    let mut s = format!("{NODE_CONFIG}\n[[service]]\nname = \"flood\"\nvip = \"{VIP4}\"\nport = {FLOOD_PORT}\nprotocol = \"udp\"\n");
    for i in 11..=13 {
        s.push_str(&format!("[[service.backend]]\naddress = \"203.0.113.{i}\"\n"));
    }
    s
}

/// One window's figures for `n` nodes.
struct Window {
    nodes: usize,
    per_node_mpps: Vec<f64>,
    total_mpps: f64,
    offered_mpps: f64,
    /// CPU time of the nodes' NAPI threads and the last CPU's softirq thread, per second.
    node_busy: f64,
    cpu_busy: Vec<f64>,
}

/// Counters of one moment.
struct Snapshot {
    at: Instant,
    /// Each node's xlb `tx` counter.
    per_node: Vec<u64>,
    /// Frames the generator sent (the router's eth0).
    offered: u64,
    /// CPU time of the nodes' forwarding threads (ns).
    threads_ns: u64,
    cpus: Vec<(u64, u64)>,
}

fn measure(lab: &Ecmp, frames: &[Vec<u8>], napi: &[i32], warm: Duration, window: Duration) -> Result<Window> {
    let n = lab.nodes.len();
    let cpus = thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let mut threads = napi.to_vec();
    threads.extend(thread_by_name(&format!("ksoftirqd/{}", cpus - 1)));
    let tx = |i: usize| -> Result<u64> { lab.status(i)?.counters.get("tx").copied().context("xlb tx counter") };
    let snapshot = || -> Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            per_node: (0..n).map(tx).collect::<Result<Vec<_>>>()?,
            offered: tx_packets(&lab.router)?,
            threads_ns: threads.iter().map(|p| runtime_ns(*p)).sum(),
            cpus: cpu_times()?,
        })
    };
    let flood = Flood::start(&lab.router, frames.to_vec(), 0)?;
    thread::sleep(warm);
    let a = snapshot()?;
    thread::sleep(window);
    let b = snapshot()?;
    flood.stop()?;
    let secs = (b.at - a.at).as_secs_f64();
    let rate = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs / 1e6;
    let per_node: Vec<f64> = a.per_node.iter().zip(&b.per_node).map(|(x, y)| rate(*x, *y)).collect();
    let w = Window {
        nodes: n,
        total_mpps: per_node.iter().sum(),
        per_node_mpps: per_node,
        offered_mpps: rate(a.offered, b.offered),
        node_busy: (b.threads_ns - a.threads_ns) as f64 / 1e9 / secs,
        cpu_busy: a.cpus.iter().zip(&b.cpus).map(|(x, y)| 100.0 * (y.0 - x.0) as f64 / (y.1 - x.1).max(1) as f64).collect(),
    };
    say!(
        "scale-out: {n} node(s): {:.3} Mpps forwarded ({}), offered {:.3} Mpps, nodes' forwarding threads {:.0}% of a CPU, CPUs {:?}",
        w.total_mpps,
        w.per_node_mpps.iter().map(|m| format!("{m:.3}")).collect::<Vec<_>>().join(" + "),
        w.offered_mpps,
        w.node_busy * 100.0,
        w.cpu_busy.iter().map(|c| format!("{c:.0}%")).collect::<Vec<_>>()
    );
    Ok(w)
}

/// The lab with `n` nodes, sinks on their switch ports, their NAPI threads pinned; the
/// flood's frames spread over their MACs.
fn windows(n: usize, warm: Duration, window: Duration, rounds: usize) -> Result<Vec<Window>> {
    let mut ebpf = bench_programs()?;
    let lab = Ecmp::start(&format!("bsc{n}"), Options { nodes: n, serve: false, switch_xdp: false, config: config() })?;
    let mut sinks = Vec::new();
    let mut napi = Vec::new();
    for node in &lab.nodes {
        sinks.push(attach_sink(&mut ebpf, &lab.lab, &format!("p-{}", node.name))?);
        let before = napi_threads("eth0");
        napi.extend(pin_new_napi(&node.ns, &before)?);
    }
    let router_mac = xlb_tests::link_mac(&lab.router, "eth0")?;
    let macs = lab.nodes.iter().map(|node| xlb_tests::link_mac(&node.ns, "eth0")).collect::<Result<Vec<_>>>()?;
    let (client, vip): (std::net::IpAddr, std::net::IpAddr) = ("198.51.100.10".parse()?, VIP4.parse()?);
    // Flow i goes to node i mod n; the frames of one node follow each other, as each node's
    // link receives its own stream (interleaved one by one, three NAPI threads sharing a CPU
    // would wake for a frame each).
    let mut frames: Vec<(usize, Vec<u8>)> = (0..FLOWS)
        .map(|i| {
            let node = i as usize % n;
            let mut f = frames::flow_frame(frames::PROTO_UDP, client, 10000 + i, vip, FLOOD_PORT, &[0x5a; 18]);
            f[..6].copy_from_slice(&macs[node]);
            f[6..12].copy_from_slice(&router_mac);
            (node, f)
        })
        .collect();
    frames.sort_by_key(|(node, _)| *node);
    let frames: Vec<Vec<u8>> = frames.into_iter().map(|(_, f)| f).collect();
    let mut out = Vec::new();
    for _ in 0..rounds {
        out.push(measure(&lab, &frames, &napi, warm, window)?);
    }
    // The sinks detach with their programs, before the namespaces go.
    drop(sinks);
    drop(ebpf);
    drop(lab);
    Ok(out)
}

pub fn run(s: &Settings, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let (warm, window, rounds) =
        if s.quick { (Duration::from_millis(500), Duration::from_secs(2), 1) } else { (Duration::from_secs(1), Duration::from_secs(5), 3) };
    let one = windows(1, warm, window, rounds)?;
    let three = windows(3, warm, window, rounds)?;
    let med = |w: &[Window], f: fn(&Window) -> f64| median(&w.iter().map(f).collect::<Vec<_>>());
    let (one_mpps, three_mpps) = (med(&one, |w| w.total_mpps), med(&three, |w| w.total_mpps));
    if one_mpps <= 0.0 || three_mpps <= 0.0 {
        bail!("nothing was forwarded (1 node {one_mpps:.3} Mpps, 3 nodes {three_mpps:.3} Mpps)");
    }
    let (one_busy, three_busy) = (med(&one, |w| w.node_busy), med(&three, |w| w.node_busy));
    let (one_offered, three_offered) = (med(&one, |w| w.offered_mpps), med(&three, |w| w.offered_mpps));
    let shares: Vec<f64> = (0..3).map(|i| median(&three.iter().map(|w| w.per_node_mpps[i]).collect::<Vec<_>>())).collect();
    let ratio = three_mpps / one_mpps;
    let per_cpu = |mpps: f64, busy: f64| if busy > 0.0 { mpps / busy } else { f64::NAN };
    // The nodes are the limit only if their CPU is (nearly) saturated; otherwise the generator
    // is, and both figures are what it offered.
    let saturated = three_busy > 0.95;
    notes.push(format!(
        "scale-out: 60-byte UDP frames of {FLOWS} flows sent from the router's namespace straight to the nodes' MACs (flow i to node i mod n, as ECMP spreads them), \
         {} s windows x {rounds}, medians; every node's NAPI thread on the last CPU, the generator on CPU 0. Offered {one_offered:.2} Mpps (1 node) and \
         {three_offered:.2} Mpps (3 nodes). With 2 CPUs the three nodes share one CPU, so their aggregate cannot exceed what one CPU forwards{}; \
         on machines of their own each node brings its own CPUs",
        window.as_secs(),
        if saturated {
            ""
        } else {
            ", and here the one generator could not even fill that CPU: both figures are the offered rate, and the cost per packet (per busy CPU) compares them"
        }
    ));
    let rows = vec![
        Row::new(PART, "1 node behind the router's ECMP: forwarded", format!("{one_mpps:.2} Mpps @ {:.0}% of a CPU", one_busy * 100.0)),
        Row::new(
            PART,
            "3 nodes behind the router's ECMP: aggregate forwarded",
            format!(
                "{three_mpps:.2} Mpps ({}) @ {:.0}% of a CPU",
                shares.iter().map(|m| format!("{m:.2}")).collect::<Vec<_>>().join(" + "),
                three_busy * 100.0
            ),
        )
        .reference(format!("1 node {one_mpps:.2} Mpps"), Some(ratio))
        .target(if saturated { "(reported: 2 CPUs, the nodes share one)" } else { "(reported: offered-limited)" }, None),
        Row::new(PART, "3 nodes: aggregate per busy CPU (Mpps / CPU share)", format!("{:.2} Mpps/CPU", per_cpu(three_mpps, three_busy)))
            .reference(format!("1 node {:.2} Mpps/CPU", per_cpu(one_mpps, one_busy)), Some(per_cpu(three_mpps, three_busy) / per_cpu(one_mpps, one_busy))),
    ];
    let as_json = |w: &[Window]| -> Vec<serde_json::Value> {
        w.iter()
            .map(|w| {
                json!({
                    "nodes": w.nodes, "forwarded_mpps": w.total_mpps, "per_node_mpps": w.per_node_mpps, "offered_mpps": w.offered_mpps,
                    "node_threads_cpu": w.node_busy, "cpu_busy_percent": w.cpu_busy,
                })
            })
            .collect()
    };
    let path = write_json(
        "scaleout",
        &json!({
            "part": "aggregate forwarding of 3 xlb nodes behind ECMP against 1",
            "frame_bytes": 60, "flows": FLOWS, "window_seconds": window.as_secs_f64(), "rounds": rounds,
            "one_node_mpps": one_mpps, "three_nodes_mpps": three_mpps, "ratio": ratio, "three_nodes_per_node_mpps": shares,
            "windows": { "one": as_json(&one), "three": as_json(&three) },
            "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        }),
    )?;
    say!("scale-out: wrote {}", path.display());
    Ok(rows)
}
