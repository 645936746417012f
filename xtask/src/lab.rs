//! `cargo xtask lab`: the product doing its main job in namespaces it creates, then gone.

use std::{net::SocketAddr, process::Command};

use anyhow::{bail, Context as _, Result};
use xlb_tests::{
    in_netns, plan,
    scenario::{SingleNode, BACKEND_NAMES},
    traffic::{self, Tally},
};

use crate::{build, setup};

const CONNECTIONS: usize = 300;

/// What both demos need first: root, `packages`, the release agent (as `XLB_BIN`), and no
/// namespace an earlier run left.
fn prepare(packages: &[&[(&str, &str, &str)]]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and loads XDP programs: run it as root");
    }
    for p in packages {
        setup::packages(p)?;
    }
    let bin = build(true)?;
    std::env::set_var("XLB_BIN", &bin);
    for ns in xlb_tests::remove_stale_namespaces()? {
        println!("removed namespace {ns} left by an earlier run");
    }
    Ok(())
}

pub fn demo() -> Result<()> {
    prepare(&[setup::LAB_PACKAGES])?;
    println!("lab: client 203.0.113.10, xlb on lb1 203.0.113.2, backends b1-b3 203.0.113.11-13 (and 2001:db8:0:1::/64)");
    println!("lab: starting xlb with config/lab.toml; VIPs {} and {}", plan::VIP4, plan::VIP6);
    let node = SingleNode::start("lab").context("bringing up the lab")?;
    spread(&node.client.ns, &BACKEND_NAMES)?;
    println!();
    println!("xlb stats (as `ipvsadm -ln --stats` shows it):");
    let out = Command::new(&node.xlb).arg("stats").arg("--socket").arg(&node.socket).output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    drop(node);
    println!("lab: removed every namespace, link and program it created");
    Ok(())
}

/// TCP connections and UDP exchanges to both VIPs from the client (namespace `client`), and
/// which of `backends` answered how many.
fn spread(client: &str, backends: &[&str]) -> Result<()> {
    let runs: [(&str, SocketAddr, bool); 4] = [
        ("TCP  IPv4", format!("{}:80", plan::VIP4).parse()?, true),
        ("TCP  IPv6", format!("[{}]:80", plan::VIP6).parse()?, true),
        ("UDP  IPv4", format!("{}:53", plan::VIP4).parse()?, false),
        ("UDP  IPv6", format!("[{}]:53", plan::VIP6).parse()?, false),
    ];
    println!();
    println!("{:<10} {:>6}   {}", "traffic", "total", backends.iter().map(|b| format!("{b:>12}")).collect::<String>());
    for (label, target, tcp) in runs {
        let tally: Tally = in_netns(client, || {
            if tcp {
                traffic::tcp_connections(target, CONNECTIONS)
            } else {
                traffic::udp_exchanges(target, CONNECTIONS)
            }
        })??;
        let cells: String = backends
            .iter()
            .map(|b| {
                let n = tally.get(*b).copied().unwrap_or(0);
                format!("{:>6} ({:>3.0}%)", n, 100.0 * n as f64 / CONNECTIONS as f64)
            })
            .collect();
        println!("{label:<10} {CONNECTIONS:>6}   {cells}");
    }
    Ok(())
}

/// `cargo xtask lab --tunnel`: backends beyond the segment. xlb on lb1 reaches t1..t3 behind a
/// router by IPIP, 4-in-6, IP6IP6 and GUE, beside b1 on the segment by direct routing; the
/// replies go from the backends through the router, never through lb1.
pub fn tunnel_demo() -> Result<()> {
    use xlb_tests::routed::{mixed_config, Routed, Sniffer, TUNNEL_NAMES};

    prepare(&[setup::LAB_PACKAGES])?;
    println!("lab --tunnel: client 203.0.113.10, xlb on lb1 203.0.113.2, b1 203.0.113.11 on the segment (direct routing)");
    println!("              router 203.0.113.1 -> 198.51.100.0/24: t1-t3 198.51.100.11-13 (and 2001:db8:0:1::/64, 2001:db8:0:2::/64)");
    println!("lab --tunnel: web4 (TCP 80): t1 by IPIP, t2 by 4-in-6, t3 by GUE; web6, dns4, dns6: b1 by DR and t1-t3 by IPIP/IP6IP6");
    println!("              (the lab kernel has no ipip/ip6tnl/fou: t1-t3 unwrap with the lab_decap tc program)");
    let object = built_object()?;
    let r = Routed::start_with("tunnel", &object, &mixed_config(), xlb_tests::scenario::Serve::Name).context("bringing up the lab")?;
    let vips = [plan::VIP4.parse()?, plan::VIP6.parse()?];
    let (at_lb1, at_router) = (Sniffer::open(&r.node.lb.ns, "eth0")?, Sniffer::open(&r.router.ns, "eth0")?);
    let names: Vec<&str> = std::iter::once("b1").chain(TUNNEL_NAMES).collect();
    spread(&r.node.client.ns, &names)?;
    println!();
    println!(
        "TCP and UDP frames from a VIP (the replies): through the router {}, through lb1 {} (the capture holds the last few hundred)",
        at_router.count_from(&vips),
        at_lb1.count_from(&vips)
    );
    println!();
    println!("xlb stats (as `ipvsadm -ln --stats` shows it):");
    let out = Command::new(&r.node.xlb).arg("stats").arg("--socket").arg(&r.node.socket).output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    drop(r);
    println!("lab --tunnel: removed every namespace, link and program it created");
    Ok(())
}

/// The eBPF object the release build of the agent embeds (what `Routed` loads `lab_decap`
/// from): the newest one cargo's build script wrote.
fn built_object() -> Result<Vec<u8>> {
    let build = crate::root().join("target/release/build");
    let newest = std::fs::read_dir(&build)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("lb-userspace-"))
        .map(|e| e.path().join("out/xlb-ebpf"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max()
        .with_context(|| format!("no eBPF object under {}", build.display()))?;
    Ok(std::fs::read(&newest.1)?)
}

/// Long-lived connections of the ECMP demo.
const HELD: usize = 300;

/// `cargo xtask lab --ecmp`: three xlb nodes behind a router's ECMP; how the flows spread over
/// the nodes and the backends; then one node's link vanishes and the flows carry on.
pub fn ecmp_demo() -> Result<()> {
    use std::time::{Duration, Instant};
    use xlb_tests::ecmp::{Ecmp, Options, VIP4, VIP6};

    prepare(&[setup::LAB_PACKAGES, setup::ECMP_PACKAGES])?;
    println!("lab --ecmp: client 198.51.100.10 -> router 203.0.113.1 (BIRD, ECMP) -> xlb on lb1-lb3 203.0.113.2-4 (each with BIRD)");
    println!("            -> backends b1-b3 203.0.113.11-13, answering the client directly (and the same over 2001:db8::/32)");
    println!("lab --ecmp: starting BIRD (config/bird-router.conf, config/bird-node.conf) and xlb (config/ecmp.toml); VIPs {VIP4} and {VIP6}");
    let started = Instant::now();
    let lab = Ecmp::start("ecmp", Options::default()).context("bringing up the lab")?;
    println!("lab --ecmp: the router has an ECMP route over the three nodes after {:.1} s:", started.elapsed().as_secs_f64());
    for vip in [VIP4, VIP6] {
        let family = if vip.contains(':') { "-6" } else { "-4" };
        let out = Command::new("ip").args(["-n", &lab.router, family, "route", "show", vip]).output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("    {line}");
        }
    }
    let target = Ecmp::web(VIP4);
    let held = traffic::HeldConnections::open(&lab.client.ns, target, HELD)?;
    let flows = |lab: &Ecmp| -> Result<Vec<u64>> { (0..3).map(|i| lab.flows(i, "web4")).collect() };
    let per_node = flows(&lab)?;
    println!();
    println!("{HELD} keep-alive HTTP connections from the client to {target}:");
    println!("  per node (flows each xlb recorded): {}", shares(&["lb1", "lb2", "lb3"], &per_node));
    let tally = held.tally();
    let per_backend: Vec<u64> = BACKEND_NAMES.iter().map(|b| tally.get(*b).copied().unwrap_or(0) as u64).collect();
    println!("  per backend (who answered):          {}", shares(&BACKEND_NAMES, &per_backend));
    let chatter = held.chatter(Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(1));
    println!();
    println!("lb1's link vanishes (its switch port drops everything; lb1 itself notices nothing)...");
    let vanished = Instant::now();
    lab.vanish(0)?;
    let dropped = lab.wait_next_hops(VIP4.parse()?, &[1, 2], Duration::from_secs(5))?;
    println!("  the router dropped lb1's next hop after {:.0} ms (BFD, 3 x 100 ms)", (dropped - vanished).as_secs_f64() * 1e3);
    std::thread::sleep(Duration::from_secs(3));
    let (seen, exchanges) = chatter.finish();
    let after: Vec<u64> = flows(&lab)?.iter().zip(&per_node).map(|(now, before)| now - before).collect();
    println!(
        "  the {HELD} connections, each sending a request every 50 ms ({exchanges} requests): {} kept their backend, {} changed backend, {} broke",
        seen.kept,
        seen.moved.len(),
        seen.broken.len()
    );
    println!(
        "  flows new to lb2 and lb3 (lb1's, and some ECMP moved between them; no state shared, the same backend chosen): lb2 {}, lb3 {}",
        after[1], after[2]
    );
    println!();
    println!("lb2's status (xlb stats):");
    print!("{}", lab.xlb_command(1, &["stats"])?);
    drop(lab);
    println!("lab --ecmp: removed every namespace, process and program it created");
    Ok(())
}

/// `name count (share%)` for each.
fn shares(names: &[&str], counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum::<u64>().max(1);
    names.iter().zip(counts).map(|(n, c)| format!("{n} {c:>4} ({:>3.0}%)", 100.0 * *c as f64 / total as f64)).collect::<Vec<_>>().join("   ")
}
