//! Active-active behind a router: the lab for BGP scale-out (`[announce]`) and its demo.
//!
//! Two segments on the lab's switch. The client network (`br1`, 198.51.100.0/24 and
//! 2001:db8:0:2::/64) holds the client (.10). The nodes' segment (`br0`, 203.0.113.0/24 and
//! 2001:db8:0:1::/64) holds the router (.1), the xlb nodes `lb1`.. (.2, .3, .4) and the
//! backends `b1`..`b3` (.11-.13), which hold the VIPs (192.0.2.100, 2001:db8:100::100) on `lo`
//! and answer the client through the router. The router runs BIRD with
//! config/bird-router.conf and installs one ECMP route per VIP; each node runs xlb with
//! config/ecmp.toml and BIRD with config/bird-node.conf (each with the node's own addresses),
//! and announces the VIPs over BGP with BFD.
//!
//! Everything (namespaces, BIRD and xlb processes, nft tables) goes with the lab on drop, also
//! on panic.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use lb_common::status::Status;
use nix::sys::signal::Signal;

use crate::{
    ip, run,
    scenario::{agent_config, status, wait_agent_ready, xlb_bin},
    traffic::{HttpServer, Servers},
    Host, Lab,
};

/// The shipped configurations the lab runs.
pub const NODE_CONFIG: &str = include_str!("../../config/ecmp.toml");
pub const BIRD_NODE: &str = include_str!("../../config/bird-node.conf");
pub const BIRD_ROUTER: &str = include_str!("../../config/bird-router.conf");

/// The VIPs of config/ecmp.toml.
pub const VIP4: &str = "192.0.2.100";
pub const VIP6: &str = "2001:db8:100::100";
/// The client, on its own network behind the router.
pub const CLIENT4: &str = "198.51.100.10";
pub const CLIENT6: &str = "2001:db8:0:2::10";
/// The router's address on the nodes' segment (host number).
const ROUTER: u8 = 1;
/// The first node's host number; node `i` (0-based) is `FIRST_NODE + i`.
const FIRST_NODE: u8 = 2;
/// Routers configured in config/bird-router.conf.
pub const MAX_NODES: usize = 3;

pub const BACKEND_NAMES: [&str; 3] = ["b1", "b2", "b3"];

/// What [`Ecmp::start`] sets up.
#[derive(Clone, Debug)]
pub struct Options {
    /// xlb nodes, 1 ..= [`MAX_NODES`]. Default 3.
    pub nodes: usize,
    /// Backends serve keep-alive HTTP on port 80 ([`HttpServer`]) and echo UDP on port 53
    /// (`Servers::udp_echo`). Default true; the benchmark brings its own.
    pub serve: bool,
    /// The configuration every node's xlb runs (its pin path and control socket made the
    /// node's). Default config/ecmp.toml.
    pub config: String,
    /// An XDP_PASS program on each node's switch port (XDP_TX frames arrive only with one).
    /// Default true; false leaves it to the caller (the benchmark's sink).
    pub switch_xdp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { nodes: MAX_NODES, serve: true, config: NODE_CONFIG.to_owned(), switch_xdp: true }
    }
}

/// The lab. Node `i` is `lb{i+1}`.
pub struct Ecmp {
    // Dropped first: server threads leave the namespaces before they are deleted.
    pub servers: Servers,
    pub http: Vec<HttpServer>,
    pub lab: Lab,
    pub client: Host,
    /// The router's namespace.
    pub router: String,
    pub nodes: Vec<Host>,
    pub backends: Vec<Host>,
    pub xlb: PathBuf,
    /// The configuration every node's xlb runs (config/ecmp.toml unless [`Options::config`]).
    config: String,
    /// Each node's current xlb run (log name), if it runs.
    xlb_runs: Vec<Option<String>>,
    runs: u32,
}

/// The address of the node `i` on the segment.
pub fn node_v4(i: usize) -> String {
    crate::plan::v4(FIRST_NODE + i as u8)
}

impl Ecmp {
    /// The lab with `options.nodes` nodes, each running BIRD and xlb; returns once the router
    /// has an ECMP route over every node for both VIPs.
    pub fn start(tag: &str, options: Options) -> Result<Ecmp> {
        ensure!((1..=MAX_NODES).contains(&options.nodes), "1 to {MAX_NODES} nodes, not {}", options.nodes);
        let xlb = xlb_bin()?;
        let mut lab = Lab::new(tag)?;
        let router = lab.host("router", ROUTER)?;
        lab.add_bridge("br1")?;
        lab.leg(&router.ns, "p-router1", "br1", "eth1", &["198.51.100.1/24".into(), "2001:db8:0:2::1/64".into()])?;
        // Replies come from the backends with the VIP as source, which the router routes to
        // the nodes.
        lab.make_router(&router.ns, &["eth0"])?;
        for (key, value) in [
            // ECMP by the 5-tuple, read from the headers (see the README's lab notes: policy 1
            // would take a veth sender's socket hash, which TCP changes on retransmission).
            ("net.ipv4.fib_multipath_hash_policy", "3"),
            ("net.ipv4.fib_multipath_hash_fields", "0x0037"),
            ("net.ipv6.fib_multipath_hash_policy", "3"),
            ("net.ipv6.fib_multipath_hash_fields", "0x0037"),
        ] {
            lab.sysctl(&router.ns, key, value)?;
        }
        let client_ns = lab.add_namespace("client")?;
        lab.sysctl(&client_ns, "net.ipv6.conf.all.accept_dad", "0")?;
        lab.sysctl(&client_ns, "net.ipv6.conf.default.accept_dad", "0")?;
        lab.leg(&client_ns, "p-client", "br1", "eth0", &[format!("{CLIENT4}/24"), format!("{CLIENT6}/64")])?;
        ip(&["-n", &client_ns, "route", "add", "default", "via", "198.51.100.1"])?;
        ip(&["-n", &client_ns, "-6", "route", "add", "default", "via", "2001:db8:0:2::1"])?;
        let client = Host { name: "client".into(), ns: client_ns, v4: CLIENT4.parse()?, v6: CLIENT6.parse()? };
        let mut nodes = Vec::new();
        for i in 0..options.nodes {
            let node = lab.host(&format!("lb{}", i + 1), FIRST_NODE + i as u8)?;
            // The switch side of a node's veth must run XDP for XDP_TX frames to arrive.
            if options.switch_xdp {
                lab.attach_xdp_pass(&format!("p-{}", node.name))?;
            }
            nodes.push(node);
        }
        let mut backends = Vec::new();
        for (i, name) in BACKEND_NAMES.iter().enumerate() {
            backends.push(Self::add_backend_host(&mut lab, name, 11 + i as u8)?);
        }
        let (mut servers, mut http) = (Servers::default(), Vec::new());
        if options.serve {
            for b in &backends {
                http.push(HttpServer::start(&b.ns, &b.name, 80)?);
                servers.udp_echo(&b.ns, &b.name, &[format!("{VIP4}:53").parse()?, format!("[{VIP6}]:53").parse()?])?;
            }
        }
        let mut ecmp = Ecmp {
            servers,
            http,
            lab,
            client,
            router: router.ns,
            nodes,
            backends,
            xlb,
            config: options.config,
            xlb_runs: vec![None; options.nodes],
            runs: 0,
        };
        ecmp.start_bird_router()?;
        for i in 0..options.nodes {
            ecmp.start_bird(i)?;
            ecmp.spawn_xlb(i)?;
        }
        for i in 0..options.nodes {
            ecmp.wait_xlb_ready(i)?;
        }
        let all: Vec<usize> = (0..options.nodes).collect();
        for vip in [VIP4, VIP6] {
            ecmp.wait_next_hops(vip.parse()?, &all, Duration::from_secs(15))?;
        }
        Ok(ecmp)
    }

    /// A direct-routing backend on the segment holding both VIPs on `lo` (arp_ignore,
    /// arp_announce), answering the client through the router.
    fn add_backend_host(lab: &mut Lab, name: &str, host: u8) -> Result<Host> {
        let b = lab.backend(name, host, &[VIP4, VIP6])?;
        ip(&["-n", &b.ns, "route", "add", "default", "via", &crate::plan::v4(ROUTER)])?;
        ip(&["-n", &b.ns, "-6", "route", "add", "default", "via", &crate::plan::v6(ROUTER)])?;
        Ok(b)
    }

    /// Adds backend `name` (.host) serving like the others, on no node's configuration yet.
    pub fn add_backend(&mut self, name: &str, host: u8) -> Result<&Host> {
        let b = Self::add_backend_host(&mut self.lab, name, host)?;
        self.http.push(HttpServer::start(&b.ns, &b.name, 80)?);
        self.servers.udp_echo(&b.ns, &b.name, &[format!("{VIP4}:53").parse()?, format!("[{VIP6}]:53").parse()?])?;
        self.backends.push(b);
        Ok(self.backends.last().expect("just pushed"))
    }

    fn next_log(&mut self, what: &str, i: usize) -> String {
        self.runs += 1;
        format!("{what}-lb{}.{}", i + 1, self.runs)
    }

    /// A BIRD of the lab: `config` written to the lab directory, the log through stderr.
    fn spawn_bird(&mut self, ns: &str, name: &str, config: &str) -> Result<()> {
        let conf = self.lab.dir.join(format!("bird-{name}.conf"));
        std::fs::write(&conf, config.replace("log syslog all;", "log stderr all;"))?;
        let socket = self.bird_socket(name);
        let pid = self.lab.dir.join(format!("bird-{name}.pid"));
        let args = ["-f", "-c", &conf.display().to_string(), "-s", &socket.display().to_string(), "-P", &pid.display().to_string()];
        self.lab.spawn(ns, &format!("bird-{name}"), std::path::Path::new("bird"), &args)?;
        Ok(())
    }

    fn bird_socket(&self, name: &str) -> PathBuf {
        self.lab.dir.join(format!("bird-{name}.ctl"))
    }

    fn start_bird_router(&mut self) -> Result<()> {
        let ns = self.router.clone();
        self.spawn_bird(&ns, "router", BIRD_ROUTER)
    }

    /// Starts BIRD on node `i` with config/bird-node.conf, its addresses made the node's.
    pub fn start_bird(&mut self, i: usize) -> Result<()> {
        let ns = self.nodes[i].ns.clone();
        let config = BIRD_NODE.replace("203.0.113.2;", &format!("{};", node_v4(i)));
        self.spawn_bird(&ns, &format!("lb{}", i + 1), &config)
    }

    /// `birdc -s <socket of BIRD name> args...` (name: `router`, `lb1`, ...).
    pub fn birdc(&self, name: &str, args: &[&str]) -> Result<String> {
        let out = run(Command::new("birdc").arg("-s").arg(self.bird_socket(name)).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The node's xlb control socket and configuration file.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.lab.dir.join(format!("xlb-lb{}.sock", i + 1))
    }

    pub fn xlb_config(&self, i: usize) -> PathBuf {
        self.lab.dir.join(format!("xlb-lb{}.toml", i + 1))
    }

    fn spawn_xlb(&mut self, i: usize) -> Result<()> {
        self.spawn_xlb_env(i, &[])
    }

    fn spawn_xlb_env(&mut self, i: usize, env: &[(&str, &str)]) -> Result<()> {
        ensure!(self.xlb_runs[i].is_none(), "xlb already runs on lb{}", i + 1);
        let pins = self.lab.bpffs()?.join(format!("xlb-lb{}", i + 1));
        let path = self.xlb_config(i);
        if !path.exists() {
            std::fs::write(&path, agent_config(&self.config, &pins, &self.socket(i)))?;
        }
        let log = self.next_log("xlb", i);
        let (ns, xlb, config) = (self.nodes[i].ns.clone(), self.xlb.clone(), path.display().to_string());
        self.lab.spawn_with_env(&ns, &log, &xlb, &["run", "--config", &config], env)?;
        self.xlb_runs[i] = Some(log);
        Ok(())
    }

    fn wait_xlb_ready(&self, i: usize) -> Result<()> {
        wait_agent_ready(&self.xlb, &self.socket(i), Duration::from_secs(15), || self.xlb_log(i)).with_context(|| format!("xlb on lb{}", i + 1))
    }

    /// Starts xlb on node `i` (again: after a `kill -9` it adopts the pins the last run left)
    /// and waits until it is ready.
    pub fn start_xlb(&mut self, i: usize) -> Result<()> {
        self.spawn_xlb(i)?;
        self.wait_xlb_ready(i)
    }

    /// [`Ecmp::start_xlb`] with extra environment variables for the agent.
    pub fn start_xlb_env(&mut self, i: usize, env: &[(&str, &str)]) -> Result<()> {
        self.spawn_xlb_env(i, env)?;
        self.wait_xlb_ready(i)
    }

    /// The process id of node `i`'s xlb, if it runs.
    pub fn xlb_pid(&self, i: usize) -> Option<u32> {
        self.lab.pid(self.xlb_runs[i].as_deref()?)
    }

    /// Sends `signal` to node `i`'s xlb and waits (10 s at most) for it to exit.
    pub fn stop_xlb(&mut self, i: usize, signal: Signal) -> Result<()> {
        let log = self.xlb_runs[i].take().with_context(|| format!("xlb does not run on lb{}", i + 1))?;
        self.lab.signal(&log, signal)?;
        Ok(())
    }

    /// Marks node `i`'s xlb as stopped by itself (after `xlb drain-node`); waits for it to exit.
    pub fn xlb_exited(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let log = self.xlb_runs[i].clone().with_context(|| format!("xlb does not run on lb{}", i + 1))?;
        let deadline = Instant::now() + timeout;
        while self.lab.running(&log) {
            ensure!(Instant::now() < deadline, "xlb on lb{} still runs after {timeout:?}", i + 1);
            thread::sleep(Duration::from_millis(20));
        }
        self.xlb_runs[i] = None;
        Ok(())
    }

    /// The log of node `i`'s current (or last) xlb run.
    pub fn xlb_log(&self, i: usize) -> String {
        let prefix = format!("xlb-lb{}.", i + 1);
        (1..=self.runs)
            .rev()
            .map(|n| format!("{prefix}{n}"))
            .find(|l| self.lab.dir.join(format!("{l}.log")).exists())
            .map(|l| self.lab.log(&l))
            .unwrap_or_default()
    }

    /// Node `i`'s xlb status.
    pub fn status(&self, i: usize) -> Result<Status> {
        status(&self.xlb, &self.socket(i))
    }

    /// Runs `xlb args... --socket <node i's socket>` in node `i`'s namespace; its stdout.
    pub fn xlb_command(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = run(Command::new("ip")
            .args(["netns", "exec", &self.nodes[i].ns])
            .arg(&self.xlb)
            .args(args)
            .arg("--socket")
            .arg(self.socket(i)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The nodes (indices) the router's route to `vip` leads to now.
    pub fn next_hops(&self, vip: IpAddr) -> Result<Vec<usize>> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = ip(&["-n", &self.router, family, "-j", "route", "show", &vip.to_string()])?;
        let routes: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j route")?;
        let mut gateways = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            gateways.extend(r["gateway"].as_str().map(str::to_owned));
            for nh in r["nexthops"].as_array().into_iter().flatten() {
                gateways.extend(nh["gateway"].as_str().map(str::to_owned));
            }
        }
        let mut nodes: Vec<usize> = gateways
            .iter()
            .filter_map(|g| g.parse::<IpAddr>().ok())
            .filter_map(|g| self.nodes.iter().position(|n| n.v4 == g || n.v6 == g))
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// Waits until the router's route to `vip` leads to exactly `nodes`; returns when it was
    /// seen (polled every millisecond or so).
    pub fn wait_next_hops(&self, vip: IpAddr, nodes: &[usize], timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.next_hops(vip)?;
            if now == nodes {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "the router's route to {vip} leads to nodes {now:?}, not {nodes:?}, after {timeout:?}\nrouter's BIRD:\n{}\n{}",
                    self.birdc("router", &["show", "protocols"]).unwrap_or_default(),
                    self.tail_logs()
                );
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn tail_logs(&self) -> String {
        let tail = |s: String| s.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        (0..self.nodes.len()).map(|i| format!("lb{} xlb:\n{}", i + 1, tail(self.xlb_log(i)))).collect::<Vec<_>>().join("\n")
    }

    /// Node `i`'s link vanishes: its switch port drops every frame both ways (see
    /// [`Lab::vanish_port`]); nobody sees a carrier change.
    pub fn vanish(&self, i: usize) -> Result<()> {
        self.lab.vanish_port(&format!("p-{}", self.nodes[i].name))
    }

    /// Undoes [`Ecmp::vanish`].
    pub fn restore(&self, i: usize) -> Result<()> {
        self.lab.restore_port(&format!("p-{}", self.nodes[i].name))
    }

    /// Someone detaches node `i`'s XDP program (its pinned link).
    pub fn detach(&self, i: usize) -> Result<()> {
        let link = self.lab.dir.join("bpffs").join(format!("xlb-lb{}", i + 1)).join("link_eth0");
        run(Command::new("bpftool").args(["link", "detach", "pinned"]).arg(&link))?;
        Ok(())
    }

    /// New flows node `i`'s xlb recorded so far, per service name.
    pub fn flows(&self, i: usize, service: &str) -> Result<u64> {
        let status = self.status(i)?;
        Ok(status.service(service).with_context(|| format!("service {service} on lb{}", i + 1))?.counters.flows)
    }

    /// The TCP service's address for `vip` (port 80) and the UDP one's (port 53).
    pub fn web(vip: &str) -> SocketAddr {
        SocketAddr::new(vip.parse().expect("a VIP"), 80)
    }

    pub fn dns(vip: &str) -> SocketAddr {
        SocketAddr::new(vip.parse().expect("a VIP"), 53)
    }
}
