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

pub fn demo() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and loads XDP programs: run it as root");
    }
    setup::packages(setup::LAB_PACKAGES)?;
    let bin = build(true)?;
    std::env::set_var("XLB_BIN", &bin);
    for ns in xlb_tests::remove_stale_namespaces()? {
        println!("removed namespace {ns} left by an earlier run");
    }
    println!("lab: client 203.0.113.10, xlb on lb1 203.0.113.2, backends b1-b3 203.0.113.11-13 (and 2001:db8:0:1::/64)");
    println!("lab: starting xlb with config/lab.toml; VIPs {} and {}", plan::VIP4, plan::VIP6);
    let node = SingleNode::start("lab").context("bringing up the lab")?;
    let runs: [(&str, SocketAddr, bool); 4] = [
        ("TCP  IPv4", format!("{}:80", plan::VIP4).parse()?, true),
        ("TCP  IPv6", format!("[{}]:80", plan::VIP6).parse()?, true),
        ("UDP  IPv4", format!("{}:53", plan::VIP4).parse()?, false),
        ("UDP  IPv6", format!("[{}]:53", plan::VIP6).parse()?, false),
    ];
    println!();
    println!("{:<10} {:>6}   {}", "traffic", "total", BACKEND_NAMES.map(|b| format!("{b:>12}")).join(""));
    for (label, target, tcp) in runs {
        let tally: Tally = in_netns(&node.client.ns, || {
            if tcp {
                traffic::tcp_connections(target, CONNECTIONS)
            } else {
                traffic::udp_exchanges(target, CONNECTIONS)
            }
        })??;
        let cells: String = BACKEND_NAMES
            .iter()
            .map(|b| {
                let n = tally.get(*b).copied().unwrap_or(0);
                format!("{:>6} ({:>3.0}%)", n, 100.0 * n as f64 / CONNECTIONS as f64)
            })
            .collect();
        println!("{label:<10} {CONNECTIONS:>6}   {cells}");
    }
    println!();
    println!("xlb stats (as `ipvsadm -ln --stats` shows it):");
    let out = Command::new(&node.xlb).arg("stats").arg("--socket").arg(&node.socket).output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    drop(node);
    println!("lab: removed every namespace, link and program it created");
    Ok(())
}
