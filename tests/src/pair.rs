//! Two load-balancer nodes sharing the VIPs: the lab for VRRP (keepalived, and xlb's own) and
//! for the failover-blackout benchmark.
//!
//! One [`Lab`] with a client (.10), `lb1` (.2) and `lb2` (.3), and the backends `b1`..`b3`
//! (.11-.13, the VIPs on `lo`). Each node runs xlb as its data plane (config/lab.toml with the
//! node's own pins and control socket, and `assign_vips = false`: whoever runs VRRP holds the
//! VIPs). On top: keepalived per node ([`KeepalivedInstance`]), who holds the VIP
//! ([`Pair::holders`]), faults ([`Pair::vanish`], [`Pair::partition`]), a client that probes the
//! VIP every 10 ms and measures the blackout ([`Prober`]), and packet captures read back with
//! tshark's VRRP dissector ([`vrrp_adverts`]).
//!
//! Everything lives in the lab's namespaces (nft tables included) and goes with them on drop,
//! also on panic.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_common::status::{InstanceStatus, Status};
use nix::{sys::signal::Signal, unistd::Pid};

use crate::{
    in_netns, ip, plan, run,
    scenario::{add_backends, agent_config, runtime_file, status, wait_agent_ready, xlb_bin, LAB_CONFIG},
    traffic::{HttpServer, Servers},
    Host, Lab,
};

/// One of the two load-balancer nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Lb1,
    Lb2,
}

impl Node {
    pub const BOTH: [Node; 2] = [Node::Lb1, Node::Lb2];

    pub fn index(self) -> usize {
        match self {
            Node::Lb1 => 0,
            Node::Lb2 => 1,
        }
    }

    pub fn other(self) -> Node {
        match self {
            Node::Lb1 => Node::Lb2,
            Node::Lb2 => Node::Lb1,
        }
    }

    /// Its host name (`lb1`, `lb2`): namespace suffix, switch port `p-<name>`.
    pub fn name(self) -> &'static str {
        match self {
            Node::Lb1 => "lb1",
            Node::Lb2 => "lb2",
        }
    }
}

/// What [`Pair::start`] sets up besides the hosts.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backends answer UDP on the VIPs' port 53 with the datagram followed by their name
    /// (what [`Prober`] needs). Default true.
    pub udp_echo: bool,
    /// Backends serve TCP port 80 with their name ([`Servers::tcp`]). Default false.
    pub tcp: bool,
    /// Backends serve keep-alive HTTP on port 80, answering with their name ([`HttpServer`]).
    /// Default false; not with `tcp`.
    pub http: bool,
    /// Start xlb on both nodes without extra configuration. Default true; false leaves it to
    /// [`Pair::start_xlb`] (to add a `[[vrrp_instance]]`, say).
    pub xlb: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { udp_echo: true, tcp: false, http: false, xlb: true }
    }
}

/// A keepalived `vrrp_instance` (always `state BACKUP` on start, on `eth0`).
#[derive(Clone, Debug)]
pub struct KeepalivedInstance {
    pub vrid: u8,
    pub priority: u8,
    /// 2 (RFC 3768) or 3 (RFC 5798).
    pub version: u8,
    /// v2: whole seconds; v3: steps of 10 ms.
    pub advert_interval: Duration,
    /// v2 simple password authentication.
    pub auth_pass: Option<String>,
    pub nopreempt: bool,
    pub preempt_delay: Duration,
    /// The VIPs. Those of the first one's family are advertised (`virtual_ipaddress`); the
    /// others follow the instance unadvertised (`virtual_ipaddress_excluded`).
    pub virtual_addresses: Vec<IpAddr>,
    /// Empty: multicast adverts.
    pub unicast_peers: Vec<IpAddr>,
    /// More lines for the `vrrp_instance` block, as keepalived reads them (e.g.
    /// `garp_lower_prio_repeat 5`).
    pub extra: Vec<String>,
}

impl KeepalivedInstance {
    /// VRRPv3 for both lab VIPs (the IPv4 one advertised).
    pub fn v3(vrid: u8, priority: u8, advert_interval: Duration) -> KeepalivedInstance {
        KeepalivedInstance {
            vrid,
            priority,
            version: 3,
            advert_interval,
            auth_pass: None,
            nopreempt: false,
            preempt_delay: Duration::ZERO,
            virtual_addresses: vec![plan::VIP4.parse().expect("VIP4"), plan::VIP6.parse().expect("VIP6")],
            unicast_peers: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// VRRPv2 with 1 s adverts and password `auth_pass`.
    pub fn v2(vrid: u8, priority: u8, auth_pass: Option<&str>) -> KeepalivedInstance {
        KeepalivedInstance {
            version: 2,
            auth_pass: auth_pass.map(str::to_owned),
            ..Self::v3(vrid, priority, Duration::from_secs(1))
        }
    }

    /// RFC 5798's Master_Down_Interval: 3 adverts plus the skew time.
    pub fn master_down_interval(&self) -> Duration {
        let skew = if self.version == 2 {
            Duration::from_secs_f64((256 - self.priority as u32) as f64 / 256.0)
        } else {
            self.advert_interval * (256 - self.priority as u32) / 256
        };
        self.advert_interval * 3 + skew
    }

    /// keepalived.conf for this instance, with `router_id`.
    pub fn config(&self, router_id: &str) -> String {
        let mut c = String::new();
        let _ = writeln!(c, "global_defs {{\n    router_id {router_id}\n}}\n");
        let _ = writeln!(c, "vrrp_instance VI_{} {{", self.vrid);
        let _ = writeln!(c, "    state BACKUP\n    interface eth0");
        let _ = writeln!(c, "    virtual_router_id {}\n    priority {}\n    version {}", self.vrid, self.priority, self.version);
        let _ = writeln!(c, "    advert_int {}", fmt_seconds(self.advert_interval));
        if self.nopreempt {
            let _ = writeln!(c, "    nopreempt");
        }
        if !self.preempt_delay.is_zero() {
            let _ = writeln!(c, "    preempt_delay {}", fmt_seconds(self.preempt_delay));
        }
        if let Some(pass) = &self.auth_pass {
            let _ = writeln!(c, "    authentication {{\n        auth_type PASS\n        auth_pass {pass}\n    }}");
        }
        if !self.unicast_peers.is_empty() {
            let peers: Vec<String> = self.unicast_peers.iter().map(|p| format!("        {p}")).collect();
            let _ = writeln!(c, "    unicast_peer {{\n{}\n    }}", peers.join("\n"));
        }
        let family = self.virtual_addresses.first().map(IpAddr::is_ipv4);
        let with_prefix = |a: &IpAddr| format!("        {a}/{}", if a.is_ipv4() { 32 } else { 128 });
        let (advertised, excluded): (Vec<&IpAddr>, Vec<&IpAddr>) =
            self.virtual_addresses.iter().partition(|a| Some(a.is_ipv4()) == family);
        for (key, list) in [("virtual_ipaddress", advertised), ("virtual_ipaddress_excluded", excluded)] {
            if !list.is_empty() {
                let lines: Vec<String> = list.into_iter().map(with_prefix).collect();
                let _ = writeln!(c, "    {key} {{\n{}\n    }}", lines.join("\n"));
            }
        }
        for line in &self.extra {
            let _ = writeln!(c, "    {line}");
        }
        c.push_str("}\n");
        c
    }
}

/// Seconds as keepalived reads them: `1`, `0.1`, `0.02`.
fn fmt_seconds(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A keepalived run on a node.
struct Keepalived {
    log: String,
    pid: PathBuf,
    vrrp_pid: PathBuf,
}

/// Where [`Pair::start_capture`] listens.
#[derive(Clone, Copy, Debug)]
pub enum Tap {
    /// The node's `eth0`: everything it sends and receives.
    Node(Node),
    /// The client's `eth0`: multicast adverts and gratuitous ARPs reach it, unicast adverts
    /// between the nodes do not.
    Client,
    /// The switch's bridge `br0`: multicast and broadcast frames of every port.
    Switch,
}

pub struct Pair {
    // Dropped first: server threads leave the namespaces before they are deleted.
    pub servers: Servers,
    /// With [`Options::http`]: b1..b3's HTTP servers.
    pub http: Vec<HttpServer>,
    pub lab: Lab,
    pub client: Host,
    /// lb1, lb2 (index with [`Node::index`], or use [`Pair::lb`]).
    pub lbs: [Host; 2],
    pub backends: Vec<Host>,
    pub xlb: PathBuf,
    keepalived: [Option<Keepalived>; 2],
    /// The current xlb run's log name per node.
    xlb_logs: [Option<String>; 2],
    /// Runs started so far (log names stay unique, so earlier logs survive a restart).
    runs: u32,
}

/// A host in another network, behind a router on the segment: see [`Pair::add_routed_host`].
#[derive(Clone, Debug)]
pub struct Routed {
    /// The host: `eth0` with [`Routed::HOST`] on its own segment, default route via the router.
    pub ns: String,
    pub v4: IpAddr,
    /// The router: `eth0` on the lab segment at [`Routed::ROUTER_ON_SEGMENT`], `eth1` at
    /// 198.51.100.1 on the host's segment, forwarding between them.
    pub router_ns: String,
}

impl Routed {
    pub const HOST: &'static str = "198.51.100.10";
    pub const NETWORK: &'static str = "198.51.100.0/24";
    pub const ROUTER_ON_SEGMENT: u8 = 254;
}

/// The VIP the lab's services (config/lab.toml) and [`Pair::holders`] use.
pub fn vip4() -> IpAddr {
    plan::VIP4.parse().expect("VIP4")
}

impl Pair {
    /// The lab with both nodes; backends serving per `options`; xlb on both nodes unless
    /// `options.xlb` is false.
    pub fn start(tag: &str, options: Options) -> Result<Pair> {
        let xlb = xlb_bin()?;
        let mut lab = Lab::new(tag)?;
        let client = lab.host("client", 10)?;
        let lbs = [lab.host(Node::Lb1.name(), 2)?, lab.host(Node::Lb2.name(), 3)?];
        let backends = add_backends(&mut lab)?;
        for lb in &lbs {
            // The switch side of a node's veth must run XDP for XDP_TX frames to arrive.
            lab.attach_xdp_pass(&format!("p-{}", lb.name))?;
        }
        let mut servers = Servers::default();
        let mut http = Vec::new();
        for b in &backends {
            if options.tcp {
                servers.tcp(&b.ns, &b.name, 80)?;
            }
            if options.http {
                http.push(HttpServer::start(&b.ns, &b.name, 80)?);
            }
            if options.udp_echo {
                let addrs = [format!("{}:53", plan::VIP4).parse()?, format!("[{}]:53", plan::VIP6).parse()?];
                servers.udp_echo(&b.ns, &b.name, &addrs)?;
            }
        }
        let mut pair = Pair { servers, http, lab, client, lbs, backends, xlb, keepalived: [None, None], xlb_logs: [None, None], runs: 0 };
        if options.xlb {
            // Both start at once; then both must be ready.
            for node in Node::BOTH {
                pair.spawn_xlb(node, LAB_CONFIG, "", &[])?;
            }
            for node in Node::BOTH {
                pair.wait_xlb_ready(node, Duration::from_secs(15))?;
            }
        }
        Ok(pair)
    }

    pub fn lb(&self, node: Node) -> &Host {
        &self.lbs[node.index()]
    }

    /// Adds a host in a network of its own (198.51.100.0/24 on a second bridge) behind a
    /// router on the lab segment (.254), and routes to that network on both nodes: what the
    /// host sends to the segment arrives with its TTL decremented once.
    pub fn add_routed_host(&mut self) -> Result<Routed> {
        let router = self.lab.host("router", Routed::ROUTER_ON_SEGMENT)?;
        self.lab.add_bridge("br1")?;
        self.lab.leg(&router.ns, "p-router1", "br1", "eth1", &["198.51.100.1/24".to_owned()])?;
        self.lab.sysctl(&router.ns, "net.ipv4.ip_forward", "1")?;
        let ns = self.lab.add_namespace("far")?;
        self.lab.leg(&ns, "p-far", "br1", "eth0", &[format!("{}/24", Routed::HOST)])?;
        ip(&["-n", &ns, "route", "add", "default", "via", "198.51.100.1"])?;
        let via = router.v4.to_string();
        for node in Node::BOTH {
            ip(&["-n", &self.lb(node).ns, "route", "add", Routed::NETWORK, "via", &via])?;
        }
        Ok(Routed { ns, v4: Routed::HOST.parse()?, router_ns: router.ns })
    }

    fn next_log(&mut self, what: &str, node: Node) -> String {
        self.runs += 1;
        format!("{what}-{}.{}", node.name(), self.runs)
    }

    /// The node's xlb control socket.
    pub fn socket(&self, node: Node) -> PathBuf {
        self.lab.dir.join(format!("xlb-{}.sock", node.name()))
    }

    /// The node's configuration file (written by [`Pair::start_xlb`]).
    pub fn xlb_config(&self, node: Node) -> PathBuf {
        self.lab.dir.join(format!("xlb-{}.toml", node.name()))
    }

    /// Starts xlb on `node` with config/lab.toml (`assign_vips = false`, the node's own pins and
    /// socket) followed by `extra` (TOML, e.g. a `[[vrrp_instance]]` table), and waits until it
    /// is ready. After a `kill -9` it adopts the pins the last run left.
    pub fn start_xlb(&mut self, node: Node, extra: &str) -> Result<()> {
        self.start_xlb_with(node, LAB_CONFIG, extra)
    }

    /// [`Pair::start_xlb`] with `config` (written like config/lab.toml) in place of
    /// config/lab.toml.
    pub fn start_xlb_with(&mut self, node: Node, config: &str, extra: &str) -> Result<()> {
        self.start_xlb_env(node, config, extra, &[])
    }

    /// [`Pair::start_xlb_with`] with extra environment variables for the agent.
    pub fn start_xlb_env(&mut self, node: Node, config: &str, extra: &str, env: &[(&str, &str)]) -> Result<()> {
        self.spawn_xlb(node, config, extra, env)?;
        self.wait_xlb_ready(node, Duration::from_secs(15))
    }

    fn spawn_xlb(&mut self, node: Node, config: &str, extra: &str, env: &[(&str, &str)]) -> Result<()> {
        let base = config.replace("assign_vips = true", "assign_vips = false");
        let text = format!("{}\n{extra}\n", agent_config(&base, &self.pins(node)?, &self.socket(node)));
        let path = self.xlb_config(node);
        std::fs::write(&path, text)?;
        self.spawn_xlb_run(node, &["--config", &path.display().to_string()], env)
    }

    /// The node's pin path, on the lab's own bpffs.
    fn pins(&mut self, node: Node) -> Result<PathBuf> {
        Ok(self.lab.bpffs()?.join(format!("xlb-{}", node.name())))
    }

    /// Starts `xlb run` with `args` on `node`.
    fn spawn_xlb_run(&mut self, node: Node, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
        if self.xlb_logs[node.index()].is_some() {
            bail!("xlb already runs on {}", node.name());
        }
        let log = self.next_log("xlb", node);
        let (ns, xlb) = (self.lb(node).ns.clone(), self.xlb.clone());
        let mut argv = vec!["run"];
        argv.extend(args);
        self.lab.spawn_with_env(&ns, &log, &xlb, &argv, env)?;
        self.xlb_logs[node.index()] = Some(log);
        Ok(())
    }

    /// Starts xlb on `node` from the keepalived.conf `conf` (`xlb run --config
    /// keepalived.conf`), with an agent file (`--agent-config`) giving the node's own pins,
    /// control socket and runtime file, and waits until it is ready. Returns the
    /// keepalived.conf's path.
    pub fn start_xlb_keepalived(&mut self, node: Node, conf: &str) -> Result<PathBuf> {
        let path = self.lab.dir.join(format!("xlb-{}.keepalived.conf", node.name()));
        std::fs::write(&path, conf)?;
        let agent = self.lab.dir.join(format!("xlb-{}.agent.toml", node.name()));
        let socket = self.socket(node);
        let text = format!(
            "[agent]\npin_path = \"{}\"\ncontrol_socket = \"{}\"\nruntime_file = \"{}\"\nflow_table_size = 65536\nmax_services = 8\n",
            self.pins(node)?.display(),
            socket.display(),
            runtime_file(&socket).display()
        );
        std::fs::write(&agent, text)?;
        let (conf_arg, agent_arg) = (path.display().to_string(), agent.display().to_string());
        self.spawn_xlb_run(node, &["--config", &conf_arg, "--agent-config", &agent_arg], &[])?;
        self.wait_xlb_ready(node, Duration::from_secs(15))?;
        Ok(path)
    }

    fn wait_xlb_ready(&self, node: Node, timeout: Duration) -> Result<()> {
        wait_agent_ready(&self.xlb, &self.socket(node), timeout, || self.xlb_log(node))
            .with_context(|| format!("xlb on {}", node.name()))
    }

    /// Sends `signal` to the node's xlb (SIGKILL: `kill -9`) and waits for it to exit.
    pub fn stop_xlb(&mut self, node: Node, signal: Signal) -> Result<()> {
        let log = self.xlb_logs[node.index()].take().with_context(|| format!("xlb does not run on {}", node.name()))?;
        self.lab.signal(&log, signal)?;
        Ok(())
    }

    /// The log of the node's current (or last) xlb run.
    pub fn xlb_log(&self, node: Node) -> String {
        self.last_log("xlb", node)
    }

    /// The log of the node's current (or last) keepalived run.
    pub fn keepalived_log(&self, node: Node) -> String {
        self.last_log("keepalived", node)
    }

    fn last_log(&self, what: &str, node: Node) -> String {
        let prefix = format!("{what}-{}.", node.name());
        let last = (1..=self.runs).rev().map(|n| format!("{prefix}{n}")).find(|l| self.lab.dir.join(format!("{l}.log")).exists());
        last.map(|l| self.lab.log(&l)).unwrap_or_default()
    }

    /// Waits until the node's xlb forwards the prober's packets through `service` (its packet
    /// counter moves); returns when.
    pub fn wait_forwarding(&self, node: Node, service: &str, timeout: Duration) -> Result<Instant> {
        let before = self.forwarded(node, service)?;
        let deadline = Instant::now() + timeout;
        loop {
            if self.forwarded(node, service)? >= before + 3 {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("{} forwarded no probes through {service} within {timeout:?}\n{}", node.name(), self.tail_logs(node));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The node's xlb status (`xlb stats --json`).
    pub fn status(&self, node: Node) -> Result<Status> {
        status(&self.xlb, &self.socket(node))
    }

    /// The status of the node's xlb VRRP instance (the first, where it has several).
    pub fn vrrp_status(&self, node: Node) -> Result<InstanceStatus> {
        let status = self.status(node)?;
        status.vrrp.first().cloned().with_context(|| format!("no vrrp status on {}: {status:?}", node.name()))
    }

    /// Packets the node's xlb forwarded for service `service` (e.g. `dns4`).
    pub fn forwarded(&self, node: Node, service: &str) -> Result<u64> {
        let status = self.status(node)?;
        let svc = status.service(service).with_context(|| format!("service {service} on {}", node.name()))?;
        Ok(svc.counters.packets)
    }

    /// Starts keepalived (VRRP only) on `node` with `instance`, logging to the lab directory,
    /// and waits until its VRRP process runs. It runs in the node's namespace (`ip netns
    /// exec`), not with keepalived's own `--namespace`.
    pub fn start_keepalived(&mut self, node: Node, instance: &KeepalivedInstance) -> Result<()> {
        let conf = instance.config(&format!("xlbt-{}", node.name()));
        self.start_keepalived_conf(node, &conf)
    }

    /// [`Pair::start_keepalived`] with the keepalived.conf `conf` as it is (keepalived runs its
    /// VRRP part alone: `virtual_server` blocks are read and not acted on).
    pub fn start_keepalived_conf(&mut self, node: Node, conf_text: &str) -> Result<()> {
        if self.keepalived[node.index()].is_some() {
            bail!("keepalived already runs on {}", node.name());
        }
        let log = self.next_log("keepalived", node);
        let conf = self.lab.dir.join(format!("{log}.conf"));
        std::fs::write(&conf, conf_text)?;
        let pid = self.lab.dir.join(format!("{log}.pid"));
        let vrrp_pid = self.lab.dir.join(format!("{log}.vrrp.pid"));
        let args: Vec<String> = [
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
            "--use-file",
            &conf.display().to_string(),
            "--pid",
            &pid.display().to_string(),
            "--vrrp_pid",
            &vrrp_pid.display().to_string(),
        ]
        .map(str::to_owned)
        .into();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ns = self.lb(node).ns.clone();
        self.lab.spawn(&ns, &log, Path::new("keepalived"), &args)?;
        self.keepalived[node.index()] = Some(Keepalived { log: log.clone(), pid, vrrp_pid: vrrp_pid.clone() });
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_pid(&vrrp_pid).is_none() {
            if Instant::now() > deadline {
                bail!("keepalived on {} did not start its VRRP process:\n{}", node.name(), self.lab.log(&log));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops keepalived on `node` with `signal`. SIGTERM: it sends priority 0 and removes its
    /// VIPs. SIGKILL: a crash, `kill -9` of both its processes (the parent stopped first, so
    /// that it neither respawns the VRRP process nor passes a signal on); the VIPs stay on the
    /// node's interface, as after a real crash.
    pub fn stop_keepalived(&mut self, node: Node, signal: Signal) -> Result<()> {
        let run = self.keepalived[node.index()].take().with_context(|| format!("keepalived does not run on {}", node.name()))?;
        if signal == Signal::SIGKILL {
            let parent = read_pid(&run.pid).context("keepalived's pid file")?;
            nix::sys::signal::kill(parent, Signal::SIGSTOP)?;
            if let Some(child) = read_pid(&run.vrrp_pid) {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
        }
        self.lab.signal(&run.log, signal)?;
        Ok(())
    }

    /// Which nodes hold `vip` on `eth0`.
    pub fn holders_of(&self, vip: IpAddr) -> Result<Vec<Node>> {
        holders_in(&self.node_namespaces(), vip)
    }

    fn node_namespaces(&self) -> [String; 2] {
        Node::BOTH.map(|node| self.lb(node).ns.clone())
    }

    /// Samples who holds the IPv4 VIP every few milliseconds until [`HolderWatch::finish`].
    pub fn watch_holders(&self) -> HolderWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, namespaces) = (stop.clone(), self.node_namespaces());
        let thread = thread::spawn(move || {
            let mut seen = HolderSpans::default();
            let (mut both_since, mut none_since) = (None::<Instant>, None::<Instant>);
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                let n = holders_in(&namespaces, vip4()).map(|h| h.len()).unwrap_or(1);
                seen.samples += 1;
                both_since = if n == 2 { both_since.or(Some(now)) } else { None };
                none_since = if n == 0 { none_since.or(Some(now)) } else { None };
                seen.longest_both = seen.longest_both.max(both_since.map_or(Duration::ZERO, |t| now - t + Duration::from_millis(1)));
                seen.longest_none = seen.longest_none.max(none_since.map_or(Duration::ZERO, |t| now - t + Duration::from_millis(1)));
                thread::sleep(Duration::from_millis(2));
            }
            seen
        });
        HolderWatch { stop, thread: Some(thread) }
    }

    /// Which nodes hold the IPv4 VIP.
    pub fn holders(&self) -> Result<Vec<Node>> {
        self.holders_of(vip4())
    }

    /// The node that holds the IPv4 VIP, if exactly one does.
    pub fn holder(&self) -> Result<Option<Node>> {
        let holders = self.holders()?;
        Ok(if holders.len() == 1 { Some(holders[0]) } else { None })
    }

    /// Waits until `node` holds the IPv4 VIP (the other may hold it too: a crashed keepalived
    /// leaves it behind). Returns when it was seen.
    pub fn wait_holder(&self, node: Node, timeout: Duration) -> Result<Instant> {
        self.wait_holders(timeout, |h| h.contains(&node)).with_context(|| format!("waiting for {} to hold the VIP", node.name()))
    }

    /// Waits until `node` and only it holds the IPv4 VIP.
    pub fn wait_sole_holder(&self, node: Node, timeout: Duration) -> Result<Instant> {
        self.wait_holders(timeout, |h| h == [node]).with_context(|| format!("waiting for {} alone to hold the VIP", node.name()))
    }

    /// Waits until the holders of the IPv4 VIP satisfy `ok`; polls every 5 ms.
    pub fn wait_holders(&self, timeout: Duration, ok: impl Fn(&[Node]) -> bool) -> Result<Instant> {
        self.wait_holders_of(vip4(), timeout, ok)
    }

    /// Waits until the holders of `vip` satisfy `ok`; polls every 5 ms.
    pub fn wait_holders_of(&self, vip: IpAddr, timeout: Duration, ok: impl Fn(&[Node]) -> bool) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let holders = self.holders_of(vip)?;
            if ok(&holders) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("holders after {timeout:?}: {holders:?}\nlb1:\n{}\nlb2:\n{}", self.tail_logs(Node::Lb1), self.tail_logs(Node::Lb2));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn tail_logs(&self, node: Node) -> String {
        let tail = |s: String| s.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("keepalived:\n{}\nxlb:\n{}", tail(self.keepalived_log(node)), tail(self.xlb_log(node)))
    }

    /// The node's link vanishes (see [`Lab::vanish_port`]): frames for it are dropped rather
    /// than flooded to the other node, whose XDP program would forward them.
    pub fn vanish(&self, node: Node) -> Result<()> {
        self.lab.vanish_port(&format!("p-{}", node.name()))
    }

    /// Undoes [`Pair::vanish`].
    pub fn restore(&self, node: Node) -> Result<()> {
        self.lab.restore_port(&format!("p-{}", node.name()))
    }

    /// Drops VRRP (IP protocol 112, IPv4 and IPv6) in and out of both nodes; everything else
    /// still flows.
    pub fn partition(&self) -> Result<()> {
        let script = "table inet xlb_partition { \
            chain input { type filter hook input priority -300; meta l4proto 112 drop; }; \
            chain output { type filter hook output priority -300; meta l4proto 112 drop; }; }";
        for node in Node::BOTH {
            self.lab.nft(&self.lb(node).ns, script)?;
        }
        Ok(())
    }

    /// Undoes [`Pair::partition`].
    pub fn heal(&self) -> Result<()> {
        for node in Node::BOTH {
            run(Command::new("ip").args(["netns", "exec", &self.lb(node).ns, "nft", "delete", "table", "inet", "xlb_partition"]))?;
        }
        Ok(())
    }

    /// A [`Prober`] from the client to the IPv4 VIP's port 53 every 10 ms.
    pub fn prober(&self) -> Result<Prober> {
        Prober::start(&self.client.ns, SocketAddr::new(vip4(), 53), Duration::from_millis(10))
    }

    /// Starts capturing on `tap` (tcpdump, full frames); [`Capture::finish`] after `duration`.
    pub fn start_capture(&self, tap: Tap, duration: Duration) -> Result<Capture> {
        let (ns, iface, name) = match tap {
            Tap::Node(n) => (self.lb(n).ns.clone(), "eth0", n.name()),
            Tap::Client => (self.client.ns.clone(), "eth0", "client"),
            Tap::Switch => (self.lab.switch_ns().to_owned(), "br0", "switch"),
        };
        let seq = CAPTURES.fetch_add(1, Ordering::SeqCst);
        let path = self.lab.dir.join(format!("capture-{name}-{seq}.pcap"));
        let err_path = self.lab.dir.join(format!("capture-{name}-{seq}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-s", "0", "-w"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .context("starting tcpdump")?;
        let mut capture = Capture { child: Some(child), path, until: Instant::now() + duration };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&err_path).unwrap_or_default().contains("listening on") {
            if Instant::now() > deadline || capture.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                bail!("tcpdump did not start: {}", std::fs::read_to_string(&err_path).unwrap_or_default());
            }
            thread::sleep(Duration::from_millis(10));
        }
        capture.until = Instant::now() + duration;
        Ok(capture)
    }

    /// Captures on `tap` for `duration`; the pcap file (in the lab directory, gone with it).
    pub fn capture(&self, tap: Tap, duration: Duration) -> Result<PathBuf> {
        self.start_capture(tap, duration)?.finish()
    }
}

static CAPTURES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn read_pid(path: &Path) -> Option<Pid> {
    let pid: i32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then(|| Pid::from_raw(pid))
}

/// A running tcpdump; stopped on drop.
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    until: Instant,
}

impl Capture {
    /// Waits out the capture's duration, stops tcpdump (flushing the file) and returns the
    /// pcap's path.
    pub fn finish(mut self) -> Result<PathBuf> {
        let now = Instant::now();
        if self.until > now {
            thread::sleep(self.until - now);
        }
        self.stop()?;
        Ok(self.path.clone())
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("tcpdump did not stop");
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A VRRP advert as tshark's dissector reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub src: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    /// Advert interval: v2 in seconds, v3 in centiseconds.
    pub interval: u16,
    /// tshark's `vrrp.checksum.status`: "Good", "Bad" or "Unverified".
    pub checksum: String,
    /// v2 auth type (0 none, 1 simple password) and string.
    pub auth: Option<(u8, String)>,
    pub addresses: Vec<IpAddr>,
}

/// Which of the nodes in `namespaces` (lb1's, lb2's) hold `vip` on `eth0`.
fn holders_in(namespaces: &[String; 2], vip: IpAddr) -> Result<Vec<Node>> {
    let mut holders = Vec::new();
    for (node, ns) in Node::BOTH.into_iter().zip(namespaces) {
        let out = ip(&["-n", ns, "-j", "addr", "show", "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let has = v[0]["addr_info"].as_array().into_iter().flatten().any(|a| a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) == Some(vip));
        if has {
            holders.push(node);
        }
    }
    Ok(holders)
}

/// How long, at the longest, both nodes or neither held the VIP while watched.
#[derive(Clone, Copy, Debug, Default)]
pub struct HolderSpans {
    pub longest_both: Duration,
    pub longest_none: Duration,
    pub samples: usize,
}

/// See [`Pair::watch_holders`].
pub struct HolderWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<HolderSpans>>,
}

impl HolderWatch {
    pub fn finish(mut self) -> HolderSpans {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for HolderWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every VRRP packet in `pcap`, parsed by tshark (`tshark -Y vrrp -T fields`).
pub fn vrrp_adverts(pcap: &Path) -> Result<Vec<Advert>> {
    let fields = [
        "ip.src",
        "ipv6.src",
        "ip.ttl",
        "ipv6.hlim",
        "vrrp.version",
        "vrrp.virt_rtr_id",
        "vrrp.prio",
        "vrrp.adver_int",
        "vrrp.short_adver_int",
        "vrrp.checksum.status",
        "vrrp.auth_type",
        "vrrp.auth_string",
        "vrrp.ip_addr",
        "vrrp.ipv6_addr",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(["-n", "-Y", "vrrp", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut adverts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("").trim();
        let num = |i: usize| -> Result<u16> {
            let s = get(i);
            if let Some(hex) = s.strip_prefix("0x") {
                Ok(u16::from_str_radix(hex, 16)?)
            } else {
                s.parse().with_context(|| format!("field {} = {s:?} in {line:?}", fields[i]))
            }
        };
        let either = |a: usize, b: usize| if get(a).is_empty() { b } else { a };
        let src = get(either(0, 1)).split(',').next().unwrap_or("").parse().with_context(|| format!("source in {line:?}"))?;
        let checksum = match get(9) {
            "0" => "Bad",
            "1" => "Good",
            "2" => "Unverified",
            other => other,
        }
        .to_owned();
        let auth = if get(10).is_empty() { None } else { Some((num(10)? as u8, get(11).to_owned())) };
        let addresses = [get(12), get(13)].iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()).map(|s| s.parse()).collect::<Result<_, _>>()?;
        adverts.push(Advert {
            src,
            ttl: num(either(2, 3))? as u8,
            version: num(4)? as u8,
            vrid: num(5)? as u8,
            priority: num(6)? as u8,
            interval: num(either(7, 8))?,
            checksum,
            auth,
            addresses,
        });
    }
    Ok(adverts)
}

/// What the probes of a [`Prober`] saw: per probe, when it was sent and when (and from which
/// backend) its answer came.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    pub sent: Vec<Instant>,
    pub replies: Vec<Option<(Instant, String)>>,
}

/// The longest silence a client saw.
#[derive(Clone, Debug)]
pub struct Blackout {
    /// The longest gap between consecutive replies (the window's edges count as replies).
    pub longest: Duration,
    /// The last reply before that gap (or the window's start).
    pub from: Instant,
    /// Probes sent in the window that got no answer.
    pub lost: usize,
    pub sent: usize,
    pub received: usize,
}

impl Probes {
    /// The blackout over the whole run (from the first probe to the last).
    pub fn blackout(&self) -> Blackout {
        match (self.sent.first(), self.sent.last()) {
            (Some(&a), Some(&b)) => self.blackout_in(a, b),
            _ => {
                let now = Instant::now();
                Blackout { longest: Duration::ZERO, from: now, lost: 0, sent: 0, received: 0 }
            }
        }
    }

    /// The blackout of probes sent in `[from, to]`: the longest gap between answers that
    /// arrived in it, counting `from` and `to` as answers.
    pub fn blackout_in(&self, from: Instant, to: Instant) -> Blackout {
        let in_window: Vec<usize> = (0..self.sent.len()).filter(|&i| self.sent[i] >= from && self.sent[i] <= to).collect();
        let mut times: Vec<Instant> = self.replies.iter().flatten().map(|r| r.0).filter(|&t| t >= from && t <= to).collect();
        times.sort();
        let mut edges = vec![from];
        edges.extend(times);
        edges.push(to);
        let (mut longest, mut start) = (Duration::ZERO, from);
        for w in edges.windows(2) {
            if w[1] - w[0] > longest {
                longest = w[1] - w[0];
                start = w[0];
            }
        }
        let received = in_window.iter().filter(|&&i| self.replies[i].is_some()).count();
        Blackout { longest, from: start, lost: in_window.len() - received, sent: in_window.len(), received }
    }

    /// Answers that arrived after `t`.
    pub fn replies_after(&self, t: Instant) -> usize {
        self.replies.iter().flatten().filter(|r| r.0 > t).count()
    }

    /// Who answered the probes, in order, with repeats folded: `["b2"]` when one backend
    /// answered throughout.
    pub fn responders(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, name) in self.replies.iter().flatten() {
            if names.last() != Some(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

/// A client that sends a small UDP datagram (an 8-byte sequence number) to a target every
/// interval from one socket (one flow), and records the answers of a [`Servers::udp_echo`].
pub struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Probes>>,
    threads: Vec<JoinHandle<()>>,
}

impl Prober {
    /// Starts probing `target` from namespace `ns`.
    pub fn start(ns: &str, target: SocketAddr, interval: Duration) -> Result<Prober> {
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
        let socket = in_netns(ns, || -> Result<UdpSocket> {
            let s = UdpSocket::bind(bind)?;
            s.connect(target)?;
            Ok(s)
        })??;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let receiver = socket.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Probes::default()));
        let (flag, log) = (stop.clone(), probes.clone());
        let send = thread::spawn(move || {
            let mut next = Instant::now();
            let mut seq: u64 = 0;
            while !flag.load(Ordering::Relaxed) {
                {
                    let mut p = log.lock().expect("probes");
                    p.sent.push(Instant::now());
                    p.replies.push(None);
                }
                // A send error (no route, no neighbour yet) is a lost probe.
                let _ = socket.send(&seq.to_be_bytes());
                seq += 1;
                next += interval;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        });
        let (flag, log) = (stop.clone(), probes.clone());
        let recv = thread::spawn(move || {
            let mut buf = [0u8; 512];
            // Keep reading a little after the last probe for its answer.
            let mut linger: Option<Instant> = None;
            loop {
                if flag.load(Ordering::Relaxed) {
                    let end = *linger.get_or_insert_with(|| Instant::now() + Duration::from_millis(200));
                    if Instant::now() > end {
                        break;
                    }
                }
                let Ok(n) = receiver.recv(&mut buf) else { continue };
                let at = Instant::now();
                if n < 8 {
                    continue;
                }
                let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
                let name = String::from_utf8_lossy(&buf[8..n]).into_owned();
                let mut p = log.lock().expect("probes");
                if let Some(slot) = p.replies.get_mut(seq) {
                    slot.get_or_insert((at, name));
                }
            }
        });
        Ok(Prober { stop, probes, threads: vec![send, recv] })
    }

    /// What the probes saw so far.
    pub fn snapshot(&self) -> Probes {
        self.probes.lock().expect("probes").clone()
    }

    /// Waits until `count` answers arrived after `t`.
    pub fn wait_replies_after(&self, t: Instant, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.snapshot().replies_after(t);
            if got >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{got} of {count} probe answers within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops probing (answers to the last probes are awaited 200 ms) and returns what was seen.
    pub fn stop(mut self) -> Probes {
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}
