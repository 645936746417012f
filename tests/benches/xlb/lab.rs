//! The lab the forwarding and end-to-end parts share: a client (.10), the load-balancer node
//! lb1 (.2) running the release agent, and three direct-routing backends b1..b3 (.11-.13)
//! holding the VIP on `lo`, all on one bridge (tests/src/lib.rs builds it; the lab removes
//! every namespace and process it made when dropped).
//!
//! One difference from the tests' `SingleNode`: the switch side of lb1's veth gets
//! `bench_sink` instead of a bare XDP_PASS program. Like XDP_PASS it lets everything through
//! (a veth peer needs an XDP program for XDP_TX frames to arrive at all), except the
//! forwarding benchmark's flood (IPv4 UDP to port 9), which it drops and counts: the wire,
//! which on a real NIC costs the node nothing after transmission.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader, Pod,
};
use aya_obj::programs::XdpAttachType;
use lb_common::{maps, status::Status};
use lb_userspace::dataplane::OBJECT;
use xlb_tests::{plan, Host, Lab};

pub const BACKEND_NAMES: [&str; 3] = ["b1", "b2", "b3"];
/// UDP port of the flood (discard); a service of its own on the VIP.
pub const FLOOD_PORT: u16 = 9;
/// The flood's port on the service whose backends (`TUNNEL_BACKENDS`) are reached in IPIP.
pub const TUNNEL_FLOOD_PORT: u16 = 10;
/// Tunnelled backends, routed through b1 (the sink drops their frames before it).
const TUNNEL_BACKENDS: &str = "198.51.100.0/24";

pub struct BenchLab {
    // Dropped first: detaches the bench programs before the namespaces go.
    ebpf: Ebpf,
    sink: Option<XdpLinkId>,
    macswap: Option<XdpLinkId>,
    pub agent_running: bool,
    pub lab: Lab,
    pub client: Host,
    pub lb: Host,
    pub backends: Vec<Host>,
    pub xlb: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// The agent's pin directory (its maps, program and XDP links).
    pins: PathBuf,
}

fn agent_config(pins: &Path, socket: &Path, backends: &[Host]) -> String {
    let mut s = format!(
        "[agent]\ninterfaces = [\"eth0\"]\nxdp_mode = \"native\"\npin_path = \"{}\"\ncontrol_socket = \"{}\"\n\
         flow_table_size = 1048576\nmax_services = 4\nassign_vips = true\ntunnel_source = \"{}\"\n",
        pins.display(),
        socket.display(),
        plan::v4(2)
    );
    for (name, port, proto) in [("web", 80, "tcp"), ("flood", FLOOD_PORT, "udp")] {
        s.push_str(&format!("\n[[service]]\nname = \"{name}\"\nvip = \"{}\"\nport = {port}\nprotocol = \"{proto}\"\n", plan::VIP4));
        for b in backends {
            s.push_str(&format!("[[service.backend]]\naddress = \"{}\"\n", b.v4));
        }
    }
    s.push_str(&format!(
        "\n[[service]]\nname = \"flood-ipip\"\nvip = \"{}\"\nport = {TUNNEL_FLOOD_PORT}\nprotocol = \"udp\"\nforward = \"ipip\"\n",
        plan::VIP4
    ));
    for host in 11..=13 {
        s.push_str(&format!("[[service.backend]]\naddress = \"198.51.100.{host}\"\n"));
    }
    s
}

/// Mirror of `lb-ebpf/src/bench.rs::MinimalMacs`: what `bench_minimal` writes into the frames
/// it forwards.
#[repr(C)]
#[derive(Clone, Copy)]
struct MinimalMacs {
    src: [u8; 6],
    backends: [[u8; 6]; 3],
}
// SAFETY: repr(C), bytes only, no padding.
unsafe impl Pod for MinimalMacs {}

/// The bench programs (`bench_sink`, `bench_macswap`, `bench_minimal`) loaded from xlb's object, not attached.
pub fn bench_programs() -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    // Only the bench programs are loaded from this instance; keep the unused maps small.
    loader.map_max_entries(maps::FLOWS, 1024).map_max_entries(maps::RINGS, 2).map_max_entries(maps::SERVICES, 4);
    let mut ebpf = loader.load(OBJECT).context("loading the object")?;
    for name in ["bench_sink", "bench_macswap", "bench_minimal"] {
        let prog: &mut Xdp = ebpf.program_mut(name).with_context(|| format!("program {name}"))?.try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(ebpf)
}

/// Replaces the program in the XDP link pinned at `link` with `prog`. The link stays
/// attached through its pin (and the agent's own fd) when ours is closed.
fn swap_into_link(prog: &mut Xdp, link: &Path) -> Result<()> {
    let pinned = PinnedLink::from_pin(link).with_context(|| format!("reading the pinned link {}", link.display()))?;
    let id = prog.attach_to_link(XdpLink::try_from(FdLink::from(pinned))?)?;
    drop(prog.take_link(id)?);
    Ok(())
}

/// Attaches `bench_sink` of `ebpf` to switch port `port` of `lab`.
pub fn attach_sink(ebpf: &mut Ebpf, lab: &Lab, port: &str) -> Result<XdpLinkId> {
    let sw = lab.switch_ns().to_owned();
    let sink: &mut Xdp = ebpf.program_mut("bench_sink").expect("loaded").try_into()?;
    xlb_tests::in_netns(&sw, || sink.attach(port, XdpMode::Driver))?.with_context(|| format!("attaching bench_sink to {port}"))
}

/// Frames `bench_sink` of `ebpf` dropped so far, on every port it is attached to.
pub fn sink_dropped(ebpf: &Ebpf) -> Result<u64> {
    let map = ebpf.map("BENCH_SINK").context("map BENCH_SINK")?;
    let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    Ok(counters.get(&0, 0)?.iter().sum())
}

impl BenchLab {
    pub fn start(tag: &str) -> Result<BenchLab> {
        let xlb = xlb_tests::scenario::xlb_bin()?;
        let mut lab = Lab::new(tag)?;
        let client = lab.host("client", 10)?;
        let lb = lab.host("lb1", 2)?;
        let mut backends = Vec::new();
        for (i, name) in BACKEND_NAMES.iter().enumerate() {
            backends.push(lab.backend(name, 11 + i as u8, &[plan::VIP4, plan::VIP6])?);
        }
        let ebpf = bench_programs()?;
        let socket = lab.dir.join("xlb.sock");
        let config = lab.dir.join("xlb.toml");
        let pins = lab.bpffs()?.join("xlb");
        std::fs::write(&config, agent_config(&pins, &socket, &backends))?;
        xlb_tests::ip(&["-n", &lb.ns, "route", "add", TUNNEL_BACKENDS, "via", &backends[0].v4.to_string()])?;
        let mut bl = BenchLab {
            ebpf,
            sink: None,
            macswap: None,
            pins,
            agent_running: false,
            lab,
            client,
            lb,
            backends,
            xlb,
            config,
            socket,
        };
        let port = format!("p-{}", bl.lb.name);
        bl.sink = Some(attach_sink(&mut bl.ebpf, &bl.lab, &port)?);
        bl.write_minimal_macs()?;
        Ok(bl)
    }

    /// Frames the sink dropped (the flood, after the node sent it) so far.
    pub fn sink_dropped(&self) -> Result<u64> {
        sink_dropped(&self.ebpf)
    }

    pub fn status(&self) -> Result<Status> {
        xlb_tests::scenario::status(&self.xlb, &self.socket)
    }

    /// Starts the agent on lb1 and waits until every backend is up.
    pub fn start_agent(&mut self) -> Result<()> {
        if self.agent_running {
            return Ok(());
        }
        let (ns, xlb, config) = (self.lb.ns.clone(), self.xlb.clone(), self.config.display().to_string());
        self.lab.spawn(&ns, "xlb", &xlb, &["run", "--config", &config])?;
        self.agent_running = true;
        wait_all_up(&self.lab, &self.xlb, &self.socket, None, Duration::from_secs(20))?;
        Ok(())
    }

    pub fn stop_agent(&mut self) -> Result<()> {
        if !self.agent_running {
            return Ok(());
        }
        self.agent_running = false;
        let status = self.lab.signal("xlb", nix::sys::signal::Signal::SIGTERM)?;
        if !status.success() {
            bail!("xlb exited with {status} on SIGTERM\n{}", self.lab.log("xlb"));
        }
        Ok(())
    }

    /// Attaches the MAC-swap baseline to lb1's eth0 (the agent must be stopped).
    pub fn attach_macswap(&mut self) -> Result<()> {
        let ns = self.lb.ns.clone();
        let prog: &mut Xdp = self.ebpf.program_mut("bench_macswap").expect("loaded").try_into()?;
        self.macswap = Some(xlb_tests::in_netns(&ns, || prog.attach("eth0", XdpMode::Driver))?.context("attaching bench_macswap to lb1's eth0")?);
        Ok(())
    }

    pub fn detach_macswap(&mut self) -> Result<()> {
        if let Some(link) = self.macswap.take() {
            let prog: &mut Xdp = self.ebpf.program_mut("bench_macswap").expect("loaded").try_into()?;
            prog.detach(link)?;
        }
        Ok(())
    }

    /// Writes `bench_minimal` the MACs it forwards with: lb1's and the three backends'.
    fn write_minimal_macs(&mut self) -> Result<()> {
        let mut macs = MinimalMacs { src: xlb_tests::link_mac(&self.lb.ns, "eth0")?, backends: [[0; 6]; 3] };
        for (slot, b) in macs.backends.iter_mut().zip(&self.backends) {
            *slot = xlb_tests::link_mac(&b.ns, "eth0")?;
        }
        let mut table: Array<_, MinimalMacs> = Array::try_from(self.ebpf.map_mut("BENCH_MINIMAL").context("map BENCH_MINIMAL")?)?;
        table.set(0, macs, 0)?;
        Ok(())
    }

    /// Puts the minimal XDP forwarder in xlb's place on lb1's eth0 while the agent runs: the
    /// agent's pinned XDP link gets `bench_minimal` (bpf_link_update, atomic: no frame meets eth0
    /// without a program). The VIP, the neighbours and the agent's own work stay as they are,
    /// so runs through either program differ only in the program. [`Self::use_xlb`] puts xlb's
    /// program back.
    pub fn use_minimal(&mut self) -> Result<()> {
        let link = self.pins.join("link_eth0");
        let prog: &mut Xdp = self.ebpf.program_mut("bench_minimal").expect("loaded").try_into()?;
        swap_into_link(prog, &link).context("putting bench_minimal into the agent's XDP link on lb1's eth0")
    }

    /// Puts the agent's own program (its pin) back into its XDP link on lb1's eth0.
    pub fn use_xlb(&mut self) -> Result<()> {
        let mut prog = Xdp::from_pin(self.pins.join("prog"), XdpAttachType::Interface).context("xlb's pinned program")?;
        swap_into_link(&mut prog, &self.pins.join("link_eth0")).context("putting xlb's program back into its XDP link on lb1's eth0")
    }

    /// `ethtool -S` of `ifname` in `ns`: counter name -> value.
    pub fn ethtool(ns: &str, ifname: &str) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = xlb_tests::run(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-S", ifname]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect())
    }
}

/// Every backend of every service in an agent's status, as (address, state).
pub fn backend_states(status: &Status) -> Vec<(String, String)> {
    status.backends().map(|b| (b.address.clone(), b.state.clone())).collect()
}

/// Waits until the agent answering on `socket` reports its backends (`count` of them, when
/// given) all up; returns how long that took. The error carries the end of its log (`xlb`).
pub fn wait_all_up(lab: &Lab, xlb: &Path, socket: &Path, count: Option<usize>, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut last = String::from("no answer on the control socket");
    while started.elapsed() < timeout {
        if let Ok(status) = xlb_tests::scenario::status(xlb, socket) {
            let states = backend_states(&status);
            let up = states.iter().filter(|(_, s)| s == "up").count();
            if !states.is_empty() && up == states.len() && count.is_none_or(|c| c == up) {
                return Ok(started.elapsed());
            }
            last = format!("{up} of {} backends up", states.len());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let log = lab.log("xlb");
    let lines: Vec<&str> = log.lines().collect();
    bail!("xlb not ready after {timeout:?}: {last}; the end of its log:\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
}

impl Drop for BenchLab {
    fn drop(&mut self) {
        // Processes first (the agent detaches itself on SIGTERM), then the bench programs'
        // links (dropping `ebpf`), then the lab's namespaces.
        self.lab.teardown_processes();
        let _ = self.detach_macswap();
    }
}
