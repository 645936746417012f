//! The routed lab: backends beyond the segment, behind a router, reached through tunnels.
//!
//! Two segments on the lab's switch:
//!
//! - `br0`, the client segment (203.0.113.0/24, 2001:db8:0:1::/64): the client (.10), the
//!   load-balancer node `lb1` (.2), optionally the direct-routing backend `b1` (.11), and the
//!   router's `eth0` (.1);
//! - `br1`, the backend network (198.51.100.0/24, 2001:db8:0:2::/64): the router's `eth1`
//!   (.1) and the tunnel backends `t1`..`t3` (.11-.13).
//!
//! `lb1` routes the backend network through the router. Each tunnel backend holds both VIPs
//! ([`plan::VIP4`], [`plan::VIP6`]) on `lo`, has its default routes through the router,
//! `rp_filter` 0, and runs `lab_decap` (lb-ebpf/src/decap.rs, a tc program standing in for the
//! ipip/ip6tnl/fou devices this kernel lacks) on its `eth0` ingress: it takes IPIP, IP6IP6,
//! 4-in-6, 6-in-4 and GUE (UDP port [`Options::gue_port`]) from anyone and answers the client
//! from the VIP through the router, never through `lb1`. The router has `rp_filter` 0 too: the
//! replies' source, the VIP, is routed to the client segment, not to where they come from.
//!
//! Every backend serves like [`SingleNode`]'s: TCP port 80 ([`Serve`]), UDP port 53 on the
//! VIPs answering with its name.
//!
//! The lab is a [`SingleNode`] (`Routed::node`: its lab, client, `lb1`, DR backends, servers,
//! and the agent's control) plus the router and the tunnel backends. Everything goes with it
//! on drop, also on panic.

use std::{
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    programs::{tc::TcAttachType, SchedClassifier},
    Ebpf, EbpfLoader,
};

use crate::{
    in_netns, ip, link_mac, plan,
    scenario::{agent_config, lab_agent_section, xlb_bin, Serve, SingleNode, BACKEND_NAMES},
    traffic::{HttpServer, Servers},
    Host, Lab,
};

/// The router's host number on both networks.
pub const ROUTER: u8 = 1;
/// The tunnel backends, .11-.13 on the backend network.
pub const TUNNEL_NAMES: [&str; 3] = ["t1", "t2", "t3"];
/// The backend network, routed by `lb1` through the router.
pub const BACKEND_NET4: &str = "198.51.100.0/24";
pub const BACKEND_NET6: &str = "2001:db8:0:2::/64";
/// The GUE port `lab_decap` accepts unless told otherwise.
pub const DEFAULT_GUE_PORT: u16 = 6080;
/// The decapsulating program in the xlb object.
pub const DECAP_PROGRAM: &str = "lab_decap";

/// Address `.host` on the backend network.
pub fn backend_v4(host: u8) -> String {
    format!("198.51.100.{host}")
}

/// IPv6 address `::host` on the backend network (written like [`plan::v6`]).
pub fn backend_v6(host: u8) -> String {
    format!("2001:db8:0:2::{host}")
}

/// What [`Routed::start`] builds.
#[derive(Clone, Debug)]
pub struct Options {
    /// The direct-routing backend `b1` (.11) on the client segment. Default true.
    pub dr_backend: bool,
    /// What every backend runs on TCP port 80. Default [`Serve::Name`].
    pub serve: Serve,
    /// The UDP port `lab_decap` takes GUE on. Default [`DEFAULT_GUE_PORT`].
    pub gue_port: u16,
    /// A configuration to start xlb on `lb1` with (see [`SingleNode::start_with`]); `None`
    /// leaves the agent to the caller ([`SingleNode::start_agent`] after writing
    /// `node.config`). Default `None`.
    pub config: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { dr_backend: true, serve: Serve::Name, gue_port: DEFAULT_GUE_PORT, config: None }
    }
}

/// The lab. Fields drop in order: the decapsulating programs, then the node (its servers,
/// then its lab).
pub struct Routed {
    pub decap: Decap,
    /// `lb1`, the client, `b1` (in `node.backends`, if asked for), the servers and the agent.
    pub node: SingleNode,
    /// The router: `v4`/`v6` are its addresses on the client segment (`eth0`); on the
    /// backend network (`eth1`) it is [`backend_v4`]`(ROUTER)`.
    pub router: Host,
    /// `t1`..`t3`; `v4`/`v6` are their addresses on the backend network.
    pub tunnels: Vec<Host>,
}

impl Routed {
    /// Builds the lab with the `lab_decap` program of `object` (the xlb object,
    /// `lb_userspace::dataplane::OBJECT`); starts xlb if `options.config` says so.
    pub fn start(tag: &str, object: &[u8], options: Options) -> Result<Routed> {
        let mut lab = Lab::new(tag)?;
        lab.add_bridge("br1")?;
        let client = lab.host("client", 10)?;
        let lb = lab.host("lb1", 2)?;
        // The switch side of lb1's veth must run XDP for XDP_TX frames to arrive.
        lab.attach_xdp_pass(&format!("p-{}", lb.name))?;
        let router = lab.host("router", ROUTER)?;
        let router_legs = [format!("{}/24", backend_v4(ROUTER)), format!("{}/64", backend_v6(ROUTER))];
        lab.leg(&router.ns, "p-router1", "br1", "eth1", &router_legs)?;
        // Replies come from the backends with the VIP as source, which the router routes to
        // the client segment.
        lab.make_router(&router.ns, &["eth0", "eth1"])?;
        ip(&["-n", &lb.ns, "route", "add", BACKEND_NET4, "via", &plan::v4(ROUTER)])?;
        ip(&["-n", &lb.ns, "-6", "route", "add", BACKEND_NET6, "via", &plan::v6(ROUTER)])?;
        let mut backends = Vec::new();
        if options.dr_backend {
            backends.push(lab.backend(BACKEND_NAMES[0], 11, &[plan::VIP4, plan::VIP6])?);
        }
        for b in &backends {
            ip(&["-n", &b.ns, "route", "add", "default", "via", &plan::v4(ROUTER)])?;
            ip(&["-n", &b.ns, "-6", "route", "add", "default", "via", &plan::v6(ROUTER)])?;
        }
        let mut decap = Decap::load(object, options.gue_port)?;
        let mut tunnels = Vec::new();
        for (i, name) in TUNNEL_NAMES.iter().enumerate() {
            let t = add_tunnel_backend(&mut lab, name, 11 + i as u8)?;
            decap.attach(&t.ns, "eth0")?;
            tunnels.push(t);
        }
        let socket = lab.dir.join("xlb.sock");
        let config = lab.dir.join("xlb.toml");
        let pins = lab.bpffs()?.join("xlb");
        let (mut servers, mut http) = (Servers::default(), Vec::new());
        for b in backends.iter().chain(&tunnels) {
            match options.serve {
                Serve::Name => servers.tcp(&b.ns, &b.name, 80)?,
                Serve::Http => http.push(HttpServer::start(&b.ns, &b.name, 80)?),
            }
            servers.udp(&b.ns, &b.name, &[format!("{}:53", plan::VIP4).parse()?, format!("[{}]:53", plan::VIP6).parse()?])?;
        }
        let xlb = match &options.config {
            Some(text) => {
                std::fs::write(&config, agent_config(text, &pins, &socket))?;
                xlb_bin()?
            }
            // Not needed until the caller starts the agent.
            None => xlb_bin().unwrap_or_else(|_| PathBuf::from("xlb")),
        };
        let node = SingleNode { servers, http, lab, client, lb, backends, xlb, config, socket, pins };
        let mut routed = Routed { decap, node, router, tunnels };
        if options.config.is_some() {
            routed.node.start_agent()?;
        }
        Ok(routed)
    }

    /// [`Routed::start`] with xlb running `config` on `lb1` (its pin path and control socket,
    /// those of config/lab.toml, made the lab's; see [`mixed_config`]) and backends serving
    /// `serve`; returns once the agent reports every backend up.
    pub fn start_with(tag: &str, object: &[u8], config: &str, serve: Serve) -> Result<Routed> {
        Self::start(tag, object, Options { serve, config: Some(config.to_owned()), ..Options::default() })
    }

    pub fn lab(&mut self) -> &mut Lab {
        &mut self.node.lab
    }

    /// The router's MAC on the client segment: where `lb1` sends tunnelled frames.
    pub fn router_mac(&self) -> Result<[u8; 6]> {
        link_mac(&self.router.ns, "eth0")
    }

    /// The tunnel backend `name` (`t1`..`t3`).
    pub fn tunnel(&self, name: &str) -> Result<&Host> {
        self.tunnels.iter().find(|t| t.name == name).with_context(|| format!("no tunnel backend {name}"))
    }
}

/// A tunnel backend on `br1`: the VIPs on `lo`, default routes through the router,
/// `rp_filter` 0, the LVS ARP settings (it must not answer for the VIPs on its network).
fn add_tunnel_backend(lab: &mut Lab, name: &str, host: u8) -> Result<Host> {
    let ns = lab.add_namespace(name)?;
    lab.sysctl(&ns, "net.ipv6.conf.all.accept_dad", "0")?;
    lab.sysctl(&ns, "net.ipv6.conf.default.accept_dad", "0")?;
    let (v4, v6) = (backend_v4(host), backend_v6(host));
    lab.leg(&ns, &format!("p-{name}"), "br1", "eth0", &[format!("{v4}/24"), format!("{v6}/64")])?;
    // The decapsulated packet arrives on eth0 from a client the routes send elsewhere.
    for key in ["all", "default", "eth0", "lo"] {
        lab.sysctl(&ns, &format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
    }
    for key in ["all", "eth0"] {
        lab.sysctl(&ns, &format!("net.ipv4.conf.{key}.arp_ignore"), "1")?;
        lab.sysctl(&ns, &format!("net.ipv4.conf.{key}.arp_announce"), "2")?;
    }
    ip(&["-n", &ns, "addr", "add", &format!("{}/32", plan::VIP4), "dev", "lo"])?;
    // nodad: see `Lab::backend`.
    ip(&["-n", &ns, "addr", "add", &format!("{}/128", plan::VIP6), "dev", "lo", "nodad"])?;
    ip(&["-n", &ns, "route", "add", "default", "via", &backend_v4(ROUTER)])?;
    ip(&["-n", &ns, "-6", "route", "add", "default", "via", &backend_v6(ROUTER)])?;
    Ok(Host { name: name.to_owned(), ns, v4: v4.parse()?, v6: v6.parse()? })
}

/// `lab_decap` loaded from the xlb object, attached to interfaces' ingress (TCX links, held
/// here: dropping the `Decap` detaches them).
pub struct Decap {
    ebpf: Ebpf,
}

impl Decap {
    /// Loads the program, taking GUE on UDP port `gue_port`. The object's XDP maps are
    /// created too (aya creates every map of an object), made as small as they can be.
    pub fn load(object: &[u8], gue_port: u16) -> Result<Decap> {
        use lb_common::maps;
        let mut loader = EbpfLoader::new();
        for name in [maps::FLOWS, maps::RINGS, maps::SERVICES] {
            loader.map_max_entries(name, 1);
        }
        loader.override_global("LAB_DECAP_GUE_PORT", &gue_port, true);
        let mut ebpf = loader.load(object).context("loading the xlb object for lab_decap")?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(DECAP_PROGRAM)
            .with_context(|| format!("{DECAP_PROGRAM} is not in the object"))?
            .try_into()?;
        program.load().context("loading lab_decap")?;
        Ok(Decap { ebpf })
    }

    /// Attaches to the ingress of `ifname` in namespace `ns`.
    pub fn attach(&mut self, ns: &str, ifname: &str) -> Result<()> {
        let program: &mut SchedClassifier = self.ebpf.program_mut(DECAP_PROGRAM).expect("checked at load").try_into()?;
        in_netns(ns, || program.attach(ifname, TcAttachType::Ingress))?
            .with_context(|| format!("attaching lab_decap to {ifname} in {ns}"))?;
        Ok(())
    }
}

/// A `[[service]]` table: `name` on `vip`:`port`/`protocol` over `backends`, each (address,
/// forward); a forward of `"dr"` writes no `forward` key (the default).
pub fn service_toml(name: &str, vip: &str, port: u16, protocol: &str, backends: &[(String, &str)]) -> String {
    let mut text = format!("[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = {port}\nprotocol = \"{protocol}\"\n");
    for (address, forward) in backends {
        text += &format!("[[service.backend]]\naddress = \"{address}\"\n");
        if *forward != "dr" {
            text += &format!("forward = \"{forward}\"\n");
        }
    }
    text
}

/// The node's tunnel sources: its own addresses on the client segment.
pub fn tunnel_sources() -> String {
    format!("tunnel_source = \"{}\"\ntunnel_source6 = \"{}\"\n", plan::v4(2), plan::v6(2))
}

/// config/lab.toml's `[agent]` (with [`tunnel_sources`]) and its four services, each method
/// at work: web4 (TCP 80): t1 by IPIP, t2 by 4-in-6 (its IPv6 address), t3 by GUE; dns4 (UDP
/// 53), web6 (TCP 80) and dns6 (UDP 53): b1 by direct routing and t1..t3 by IPIP / IP6IP6.
pub fn mixed_config() -> String {
    let mut text = lab_agent_section().to_owned() + &tunnel_sources();
    let web4 = [(backend_v4(11), "ipip"), (backend_v6(12), "ipip"), (backend_v4(13), "gue")];
    text += &service_toml("web4", plan::VIP4, 80, "tcp", &web4);
    let mixed = |dr: String, tunnel: fn(u8) -> String| -> Vec<(String, &str)> {
        std::iter::once((dr, "dr")).chain((11..=13).map(|h| (tunnel(h), "ipip"))).collect()
    };
    text += &service_toml("dns4", plan::VIP4, 53, "udp", &mixed(plan::v4(11), backend_v4));
    text += &service_toml("web6", plan::VIP6, 80, "tcp", &mixed(plan::v6(11), backend_v6));
    text += &service_toml("dns6", plan::VIP6, 53, "udp", &mixed(plan::v6(11), backend_v6));
    text
}

/// Frames on an interface of a namespace, both directions (an AF_PACKET socket).
pub struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    /// Starts capturing on `ifname` in namespace `ns`.
    pub fn open(ns: &str, ifname: &str) -> Result<Sniffer> {
        in_netns(ns, || Self::open_here(ifname))?
    }

    fn open_here(ifname: &str) -> Result<Sniffer> {
        let ifindex = crate::ifindex(ifname)?;
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: a system call with integer arguments.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(all)) };
        if fd < 0 {
            bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just returned by the system and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a C struct of integers and arrays, for which all zeros is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = all;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a system call on a descriptor this code owns; the address points at a live local of the size given.
        let r = unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32) };
        if r != 0 {
            bail!("bind(AF_PACKET, {ifname}): {}", std::io::Error::last_os_error());
        }
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 20_000 };
        // SAFETY: a system call on a descriptor this code owns; the option points at a live local of the size given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if r != 0 {
            bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        }
        Ok(Sniffer { fd })
    }

    /// The next frame, if one comes within 20 ms.
    pub fn next(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: a system call on a descriptor this code owns, into a live buffer of the size given.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        (n > 0).then(|| {
            buf.truncate(n as usize);
            buf
        })
    }

    /// How many TCP and UDP frames come (until 20 ms pass without one) whose IP source is one
    /// of `sources` (a host's own neighbour discovery from such an address does not count).
    pub fn count_from(&self, sources: &[IpAddr]) -> usize {
        let mut n = 0;
        while let Some(frame) = self.next() {
            if ip_of(&frame).is_some_and(|(src, _, proto, _)| sources.contains(&src) && (proto == 6 || proto == 17)) {
                n += 1;
            }
        }
        n
    }

    /// Waits up to `timeout` for a frame `wanted` accepts (frames before it are dropped).
    pub fn wait_for(&self, timeout: Duration, wanted: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(frame) = self.next() {
                if wanted(&frame) {
                    return Ok(frame);
                }
            }
        }
        bail!("no such frame within {timeout:?}")
    }
}

/// The source and destination addresses of the IP packet in Ethernet frame `frame`, with its
/// protocol (next header) and transport header onwards; `None` for anything else.
pub fn ip_of(frame: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    let packet = frame.get(crate::frames::ETH_LEN..)?;
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst), packet[9], packet.get(ihl..)?))
        }
        0x86dd if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst), packet[6], &packet[40..]))
        }
        _ => None,
    }
}
