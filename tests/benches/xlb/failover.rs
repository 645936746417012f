//! Part 6: failover. The blackout a client sees when the VRRP master fails, for xlb's own
//! VRRP and for keepalived in the same two-node lab (`xlb_tests::pair`), and whether xlb keeps
//! its adverts on time when both nodes' CPUs are saturated.
//!
//! The client probes the IPv4 VIP (UDP, port 53, echoed by the backends) every 10 ms. The
//! blackout of a run is the longest gap between consecutive replies from the fault to
//! Master_Down_Interval + 1 s after it (`Probes::blackout_in`, the window's edges counting as
//! replies): the last reply through the old master to the first through the new one.
//!
//! lb1 (priority 150) is master, lb2 (100) backup, preempting, with the same settings for
//! both implementations: VRID 51, the IPv4 VIP alone, v2 with 1 s adverts (no
//! authentication) and v3 with 100 ms adverts. One lab per implementation and setting, one
//! after the other in the same run. Two faults on lb1:
//!
//! - vanish: its switch port drops everything both ways (`Pair::vanish`); neither node sees a
//!   carrier change. Afterwards the link comes back and lb1 must be sole master again.
//! - SIGTERM: xlb resigns (priority-0 advert), removes the VIP and detaches its XDP program.
//!   keepalived gets SIGTERM and, at the same instant, so does the node's data plane (xlb
//!   without VRRP): keepalived with IPVS removes its virtual servers on SIGTERM, and without
//!   that the old master's XDP program would go on forwarding and the client would see no
//!   blackout at all. Afterwards the node is started again and preempts.
//!
//! The fault is timed to the master's adverts: a raw socket in the client's namespace (which
//! the multicast adverts reach) waits for one from lb1 and the fault follows at once. Every
//! run so has the same phase, the worst one for a vanish (the backup waits a whole
//! Master_Down_Interval after the last advert it heard); otherwise a run's blackout would
//! vary by up to one advert interval with the phase, more than the difference measured.
//!
//! Before every run the client's ARP entry for the VIP is removed and the part waits until
//! the probes go through lb1 alone (its dns4 counter moves, lb2's does not): keepalived 2.2.7
//! does not re-announce when it wins back mastership after a vanish, and a client still
//! sending to lb2 would see no blackout at the next fault.
//!
//! The load run: xlb at 20 ms v3 adverts, both nodes forwarding the forwarding part's UDP
//! flood (`forwarding::Flood`, 60-byte frames to a `flood` service on port 9, XDP_TX to the
//! backends): one generator addressed to lb1's MAC pinned to CPU 0, one to lb2's MAC pinned to
//! CPU 1. A veth runs its peer's XDP program in the sender's softirq, so each node's data
//! plane runs on its generator's CPU and both CPUs are busy. The part counts the VRRP state
//! changes of both nodes (`xlb stats --json`) over the run; any is a spurious failover.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use lb_common::status::InstanceStatus;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use xlb_tests::pair::{vip4, KeepalivedInstance, Node, Options, Pair, Prober};

use crate::{
    forwarding::{cpu_times, flood_frames, tx_packets, Flood},
    lab::{BenchLab, FLOOD_PORT},
    report::{median, write_json, Row},
    say, Settings,
};

const PART: &str = "6 failover";
const VRID: u8 = 51;
const MASTER: u8 = 150;
const BACKUP: u8 = 100;
/// The probe interval, and the tolerance of the xlb-versus-keepalived comparison.
const PROBE: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Xlb,
    Keepalived,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Xlb => "xlb",
            Impl::Keepalived => "keepalived",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Vanish,
    Sigterm,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Vanish => "vanish",
            Fault::Sigterm => "SIGTERM",
        }
    }
}

/// VRRP settings shared by both implementations.
#[derive(Clone, Copy, Debug)]
struct Vrrp {
    version: u8,
    interval: Duration,
}

impl Vrrp {
    fn label(self) -> String {
        format!("v{} {}", self.version, fmt_ms(self.interval))
    }

    /// The backup's Master_Down_Interval (priority 100).
    fn mdi(self) -> Duration {
        self.keepalived(BACKUP).master_down_interval()
    }

    fn keepalived(self, priority: u8) -> KeepalivedInstance {
        let base = if self.version == 2 { KeepalivedInstance::v2(VRID, priority, None) } else { KeepalivedInstance::v3(VRID, priority, self.interval) };
        KeepalivedInstance { virtual_addresses: vec![vip4()], ..base }
    }

    /// xlb's `[[vrrp_instance]]`, and `extra` TOML after it.
    fn xlb(self, priority: u8, extra: &str) -> String {
        format!(
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = {VRID}\npriority = {priority}\nversion = {}\n\
             advert_interval = \"{}ms\"\nvirtual_addresses = [\"{}\"]\n{extra}",
            self.version,
            self.interval.as_millis(),
            vip4()
        )
    }
}

fn fmt_ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.0} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A service for the flood (UDP port 9 on the VIP), so that the nodes forward it.
fn flood_service(pair: &Pair) -> String {
    let mut s = format!("\n[[service]]\nname = \"flood\"\nvip = \"{}\"\nport = {FLOOD_PORT}\nprotocol = \"udp\"\n", vip4());
    for b in &pair.backends {
        s.push_str(&format!("[[service.backend]]\naddress = \"{}\"\n", b.v4));
    }
    s
}

/// One lab, one implementation, one setting; lb1 master, the prober running.
struct Run {
    pair: Pair,
    imp: Impl,
    vrrp: Vrrp,
    extra: String,
    prober: Prober,
    adverts: AdvertWatch,
}

impl Run {
    fn start(imp: Impl, vrrp: Vrrp, with_flood: bool) -> Result<Run> {
        let tag = format!("fo{}{}", &imp.name()[..2], vrrp.interval.as_millis());
        let mut pair = Pair::start(&tag, Options { xlb: imp == Impl::Keepalived, ..Options::default() })?;
        let extra = if with_flood { flood_service(&pair) } else { String::new() };
        // The backup first: the master wins by priority, not by starting first.
        match imp {
            Impl::Xlb => {
                pair.start_xlb(Node::Lb2, &vrrp.xlb(BACKUP, &extra))?;
                pair.start_xlb(Node::Lb1, &vrrp.xlb(MASTER, &extra))?;
            }
            Impl::Keepalived => {
                pair.start_keepalived(Node::Lb2, &vrrp.keepalived(BACKUP))?;
                pair.start_keepalived(Node::Lb1, &vrrp.keepalived(MASTER))?;
            }
        }
        pair.wait_sole_holder(Node::Lb1, vrrp.mdi() + Duration::from_secs(5))?;
        let adverts = AdvertWatch::open(&pair.client.ns)?;
        let prober = pair.prober()?;
        prober.wait_replies_after(Instant::now(), 30, Duration::from_secs(3))?;
        Ok(Run { pair, imp, vrrp, extra, prober, adverts })
    }

    /// lb1 sole holder and the client's probes through lb1 alone.
    fn settle(&self) -> Result<()> {
        self.pair.wait_sole_holder(Node::Lb1, self.vrrp.mdi() + Duration::from_secs(5))?;
        xlb_tests::run(Command::new("ip").args(["-n", &self.pair.client.ns, "neigh", "del", &vip4().to_string(), "dev", "eth0"])).ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (a, b) = (self.pair.forwarded(Node::Lb1, "dns4")?, self.pair.forwarded(Node::Lb2, "dns4")?);
            thread::sleep(Duration::from_millis(200));
            let (a2, b2) = (self.pair.forwarded(Node::Lb1, "dns4")?, self.pair.forwarded(Node::Lb2, "dns4")?);
            if a2 >= a + 10 && b2 == b {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the probes do not go through lb1 alone (lb1 +{}, lb2 +{} in 200 ms)", a2 - a, b2 - b);
            }
        }
    }

    /// One fault on lb1; returns the run's figures and leaves lb1 master again.
    fn fault(&mut self, fault: Fault) -> Result<Value> {
        self.settle()?;
        let window = self.vrrp.mdi() + Duration::from_secs(1);
        let lb1 = match self.pair.lb(Node::Lb1).v4 {
            IpAddr::V4(a) => a,
            other => bail!("lb1's address {other}"),
        };
        self.adverts.wait_from(lb1, self.vrrp.interval * 3 + Duration::from_secs(1))?;
        let t0 = Instant::now();
        match (fault, self.imp) {
            (Fault::Vanish, _) => self.pair.vanish(Node::Lb1)?,
            (Fault::Sigterm, Impl::Xlb) => self.pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?,
            (Fault::Sigterm, Impl::Keepalived) => {
                // keepalived and the node's data plane at the same instant (see the top);
                // both are reaped below, after the takeover is timed.
                nix::sys::signal::kill(keepalived_pid(&self.pair, Node::Lb1)?, Signal::SIGTERM)?;
                nix::sys::signal::kill(agent_pid(&self.pair, Node::Lb1)?, Signal::SIGTERM)?;
            }
        }
        let signalled = t0.elapsed();
        let took_over = self.pair.wait_holder(Node::Lb2, window)? - t0;
        if (fault, self.imp) == (Fault::Sigterm, Impl::Keepalived) {
            self.pair.stop_keepalived(Node::Lb1, Signal::SIGTERM)?;
            self.pair.stop_xlb(Node::Lb1, Signal::SIGTERM)?;
        }
        let end = t0 + window;
        if let Some(rest) = end.checked_duration_since(Instant::now()) {
            thread::sleep(rest);
        }
        let probes = self.prober.snapshot();
        let b = probes.blackout_in(t0, end);
        let resumed = probes.replies.iter().flatten().filter(|r| r.0 > b.from + b.longest && r.0 <= end).count();
        // Back to lb1 as master.
        match (fault, self.imp) {
            (Fault::Vanish, _) => self.pair.restore(Node::Lb1)?,
            (Fault::Sigterm, Impl::Xlb) => self.pair.start_xlb(Node::Lb1, &self.vrrp.xlb(MASTER, &self.extra))?,
            (Fault::Sigterm, Impl::Keepalived) => {
                self.pair.start_xlb(Node::Lb1, "")?;
                self.pair.start_keepalived(Node::Lb1, &self.vrrp.keepalived(MASTER))?;
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        say!(
            "failover: {} {} {}: blackout {:.0} ms (lost {} of {}), lb2 holds the VIP after {:.0} ms",
            self.imp.name(),
            self.vrrp.label(),
            fault.name(),
            ms(b.longest),
            b.lost,
            b.sent,
            ms(took_over)
        );
        // Nothing lost: the longest gap is ordinary jitter and may fall at the window's end,
        // with nothing to resume from.
        ensure!(b.lost == 0 || resumed >= 5, "{} {} {}: the probes did not resume within {window:?} ({b:?})", self.imp.name(), self.vrrp.label(), fault.name());
        Ok(json!({
            "implementation": self.imp.name(),
            "version": self.vrrp.version,
            "advert_interval_ms": ms(self.vrrp.interval),
            "fault": fault.name(),
            "blackout_ms": ms(b.longest),
            "blackout_starts_after_fault_ms": ms(b.from.saturating_duration_since(t0)),
            "probes_sent": b.sent,
            "probes_lost": b.lost,
            "lb2_holds_vip_after_ms": ms(took_over),
            "fault_applied_in_ms": ms(signalled),
            "window_ms": ms(window),
            "master_down_interval_ms": ms(self.vrrp.mdi()),
        }))
    }
}

/// Drop counters where adverts could be lost under the flood: `ethtool -S` of both nodes'
/// eth0 and their switch ports, and the per-CPU backlog drops of /proc/net/softnet_stat.
fn drop_counters(pair: &Pair) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut out = std::collections::BTreeMap::new();
    for node in Node::BOTH {
        for (ns, ifname, label) in [(pair.lb(node).ns.as_str(), "eth0".to_owned(), format!("{} eth0", node.name())), (pair.lab.switch_ns(), format!("p-{}", node.name()), format!("switch p-{}", node.name()))] {
            for (k, v) in BenchLab::ethtool(ns, &ifname)? {
                if k.contains("drop") || k.contains("err") || k.contains("full") {
                    out.insert(format!("{label} {k}"), v);
                }
            }
        }
    }
    for node in Node::BOTH {
        for (ns, ifname, label) in [(pair.lb(node).ns.as_str(), "eth0".to_owned(), format!("{} eth0", node.name())), (pair.lab.switch_ns(), format!("p-{}", node.name()), format!("switch p-{}", node.name()))] {
            let link = xlb_tests::run(Command::new("ip").args(["-n", ns, "-j", "-s", "link", "show", &ifname]))?;
            let v: Value = serde_json::from_slice(&link.stdout)?;
            for dir in ["rx", "tx"] {
                out.insert(format!("{label} {dir}_dropped"), v[0]["stats64"][dir]["dropped"].as_u64().unwrap_or(0));
            }
        }
    }
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat")?;
    for (cpu, line) in softnet.lines().enumerate() {
        if let Some(d) = line.split_whitespace().nth(1).and_then(|h| u64::from_str_radix(h, 16).ok()) {
            out.insert(format!("softnet backlog cpu{cpu}"), d);
        }
    }
    Ok(out)
}

/// The pid of the node's xlb, from the process table (its config file is the lab's own).
fn agent_pid(pair: &Pair, node: Node) -> Result<nix::unistd::Pid> {
    let config = pair.xlb_config(node).display().to_string();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&c| c == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"xlb")) && args.contains(&config.as_bytes()) {
            return Ok(nix::unistd::Pid::from_raw(pid));
        }
    }
    bail!("no xlb process with {config}")
}

/// The pid of the node's keepalived (its parent process), from the pid file its command
/// line names.
fn keepalived_pid(pair: &Pair, node: Node) -> Result<nix::unistd::Pid> {
    let conf = format!("keepalived-{}.", node.name());
    let dir = pair.lab.dir.display().to_string();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
        let args: Vec<&str> = cmdline.split('\0').collect();
        let ours = args.iter().any(|a| a.starts_with(&dir) && a.contains(&conf) && a.ends_with(".conf"));
        if let (true, Some(i)) = (ours, args.iter().position(|a| *a == "--pid")) {
            let path = args.get(i + 1).context("--pid without a path")?;
            let pid: i32 = std::fs::read_to_string(path)?.trim().parse()?;
            return Ok(nix::unistd::Pid::from_raw(pid));
        }
    }
    bail!("no keepalived process on {}", node.name())
}

/// A raw IP socket (protocol 112) in a namespace, joined to 224.0.0.18: sees the adverts.
struct AdvertWatch {
    fd: OwnedFd,
}

impl AdvertWatch {
    fn open(ns: &str) -> Result<AdvertWatch> {
        let fd = xlb_tests::in_netns(ns, || -> Result<OwnedFd> {
            // SAFETY: the descriptor was just returned by the system and nothing else owns it.
            let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 112) };
            ensure!(raw >= 0, "socket(AF_INET, SOCK_RAW, 112): {}", std::io::Error::last_os_error());
            // SAFETY: the descriptor was just returned by the system and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr { s_addr: u32::from(Ipv4Addr::new(224, 0, 0, 18)).to_be() },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: xlb_tests::ifindex("eth0")? as i32,
            };
            // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
            let r = unsafe {
                libc::setsockopt(
                    raw,
                    libc::IPPROTO_IP,
                    libc::IP_ADD_MEMBERSHIP,
                    &mreq as *const libc::ip_mreqn as *const libc::c_void,
                    std::mem::size_of::<libc::ip_mreqn>() as u32,
                )
            };
            ensure!(r == 0, "IP_ADD_MEMBERSHIP 224.0.0.18: {}", std::io::Error::last_os_error());
            let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
            // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
            let r = unsafe {
                libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv as *const libc::timeval as *const libc::c_void, std::mem::size_of::<libc::timeval>() as u32)
            };
            ensure!(r == 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
            let on: i32 = 1;
            // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
            let r = unsafe { libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on as *const i32 as *const libc::c_void, 4) };
            ensure!(r == 0, "SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
            Ok(fd)
        })??;
        Ok(AdvertWatch { fd })
    }

    /// Discards what is queued.
    fn drain(&self) {
        let mut buf = [0u8; 256];
        // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
        while unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), libc::MSG_DONTWAIT) } > 0 {}
    }

    /// The next advert within the socket's 50 ms timeout: its source and the kernel's receive
    /// time (SO_TIMESTAMPNS, CLOCK_REALTIME, in seconds), so that a late reader does not
    /// show as a late advert.
    fn next(&self) -> Option<(Ipv4Addr, f64)> {
        let mut buf = [0u8; 256];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: a C struct of integers and arrays, for which all zeros is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
        if n < 20 {
            return None;
        }
        let mut at = f64::NAN;
        // SAFETY: walking the control buffer the kernel filled, with the libc macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    at = ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Some((Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]), at))
    }

    /// Discards what is queued, then waits for the next advert from `src`.
    fn wait_from(&self, src: Ipv4Addr, timeout: Duration) -> Result<()> {
        let mut buf = [0u8; 256];
        // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
        let recv = |flags: i32, buf: &mut [u8]| unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), flags) };
        while recv(libc::MSG_DONTWAIT, &mut buf) > 0 {}
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let n = recv(0, &mut buf);
            if n >= 20 && buf[12..16] == src.octets() {
                return Ok(());
            }
        }
        bail!("no advert from {src} within {timeout:?}")
    }
}

/// Median and max of a list of milliseconds, as text.
fn med_max(v: &[f64]) -> String {
    format!("{:.0} ms (max {:.0}, n={})", median(v), v.iter().cloned().fold(f64::NAN, f64::max), v.len())
}

fn blackouts(runs: &[Value], imp: Impl, vrrp: Vrrp, fault: Fault) -> Vec<f64> {
    runs.iter()
        .filter(|r| r["implementation"] == imp.name() && r["version"] == vrrp.version && r["advert_interval_ms"].as_f64() == Some(vrrp.interval.as_secs_f64() * 1e3) && r["fault"] == fault.name())
        .filter_map(|r| r["blackout_ms"].as_f64())
        .collect()
}

/// Each node's forwarding capacity (Mpps) with both floods unpaced, over `window`.
fn capacity(run: &Run, window: Duration) -> Result<[f64; 2]> {
    let pair = &run.pair;
    let tx_of = |node: Node| -> Result<u64> { pair.status(node)?.counters.get("tx").copied().context("xlb tx counter") };
    let client_mac = xlb_tests::link_mac(&pair.client.ns, "eth0")?;
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut floods = Vec::new();
    for (i, node) in Node::BOTH.into_iter().enumerate() {
        let mac = xlb_tests::link_mac(&pair.lb(node).ns, "eth0")?;
        floods.push(Flood::start(&pair.client.ns, flood_frames(mac, client_mac), i % cpus)?);
    }
    thread::sleep(Duration::from_millis(500));
    let (a, t) = ([tx_of(Node::Lb1)?, tx_of(Node::Lb2)?], Instant::now());
    thread::sleep(window);
    let b = [tx_of(Node::Lb1)?, tx_of(Node::Lb2)?];
    let secs = t.elapsed().as_secs_f64();
    for f in floods {
        f.stop()?;
    }
    Ok([0, 1].map(|i| b[i].saturating_sub(a[i]) as f64 / secs / 1e6))
}

/// The load run: `duration` at 20 ms adverts with both nodes forwarding a flood, each paced
/// at `pace` Mpps (per node), or as fast as the generators go (overload) without.
fn under_load(run: &Run, duration: Duration, pace: Option<[f64; 2]>) -> Result<Value> {
    let pair = &run.pair;
    run.settle()?;
    let tx_of = |node: Node| -> Result<u64> { pair.status(node)?.counters.get("tx").copied().context("xlb tx counter") };
    let client_mac = xlb_tests::link_mac(&pair.client.ns, "eth0")?;
    let cpus = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let before: Vec<InstanceStatus> = Node::BOTH.iter().map(|&n| pair.vrrp_status(n)).collect::<Result<_>>()?;
    let mut floods = Vec::new();
    for (i, node) in Node::BOTH.into_iter().enumerate() {
        let mac = xlb_tests::link_mac(&pair.lb(node).ns, "eth0")?;
        floods.push(Flood::start_paced(&pair.client.ns, flood_frames(mac, client_mac), i % cpus, pace.map(|p| p[i] * 1e6))?);
    }
    // Let the flood settle, then measure over `duration`.
    thread::sleep(Duration::from_millis(500));
    let t_a = Instant::now();
    let (offered_a, cpu_a) = (tx_packets(&pair.client.ns)?, cpu_times()?);
    let fwd_a: Vec<u64> = Node::BOTH.iter().map(|&n| tx_of(n)).collect::<Result<_>>()?;
    let drops_a = drop_counters(pair)?;
    let log_from = pair.xlb_log(Node::Lb2).lines().count();
    // Meanwhile the client (a third vantage point, which the flood does not reach) times the
    // adverts of both nodes; the states are sampled every second.
    let addr = |node: Node| match pair.lb(node).v4 {
        IpAddr::V4(a) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let (lb1, lb2) = (addr(Node::Lb1), addr(Node::Lb2));
    let mut heard_lb1: Vec<f64> = Vec::new();
    let mut heard_lb2 = 0u64;
    let mut states: Vec<(f64, String, String)> = Vec::new();
    let mut next_sample = t_a + Duration::from_secs(1);
    run.adverts.drain();
    while t_a.elapsed() < duration {
        match run.adverts.next() {
            Some((src, at)) if src == lb1 => heard_lb1.push(at),
            Some((src, _)) if src == lb2 => heard_lb2 += 1,
            _ => {}
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(1);
            let s: Vec<String> = Node::BOTH.iter().map(|&n| pair.vrrp_status(n).map(|v| v.state)).collect::<Result<_>>()?;
            states.push((t_a.elapsed().as_secs_f64(), s[0].clone(), s[1].clone()));
        }
    }
    let drops_b = drop_counters(pair)?;
    let drops: serde_json::Map<String, Value> =
        drops_b.iter().filter_map(|(k, v)| { let d = v.saturating_sub(drops_a.get(k).copied().unwrap_or(0)); (d > 0).then(|| (k.clone(), json!(d))) }).collect();
    let gaps: Vec<f64> = heard_lb1.windows(2).map(|w| (w[1] - w[0]) * 1e3).collect();
    let max_gap = gaps.iter().cloned().fold(0.0, f64::max);
    let mdi_ms = run.vrrp.mdi().as_secs_f64() * 1e3;
    let late = gaps.iter().filter(|&&g| g > 2.0 * run.vrrp.interval.as_secs_f64() * 1e3).count();
    let lb2_log: Vec<String> = pair.xlb_log(Node::Lb2).lines().skip(log_from).filter(|l| l.contains("vrrp_instance")).map(str::to_owned).collect();
    let secs = t_a.elapsed().as_secs_f64();
    let (offered_b, cpu_b) = (tx_packets(&pair.client.ns)?, cpu_times()?);
    let fwd_b: Vec<u64> = Node::BOTH.iter().map(|&n| tx_of(n)).collect::<Result<_>>()?;
    for f in floods {
        f.stop()?;
    }
    let after: Vec<InstanceStatus> = Node::BOTH.iter().map(|&n| pair.vrrp_status(n)).collect::<Result<_>>()?;
    let delta = |i: usize, count: fn(&InstanceStatus) -> u64| count(&after[i]).saturating_sub(count(&before[i]));
    let transitions: Vec<u64> = (0..2).map(|i| delta(i, |s| s.transitions)).collect();
    let became_master: Vec<u64> = (0..2).map(|i| delta(i, |s| s.became_master)).collect();
    let cpu_busy: Vec<f64> = cpu_a.iter().zip(&cpu_b).map(|(x, y)| 100.0 * (y.0 - x.0) as f64 / ((y.1 - x.1).max(1)) as f64).collect();
    let offered_mpps = (offered_b - offered_a) as f64 / secs / 1e6;
    let forwarded_mpps: Vec<f64> = (0..2).map(|i| (fwd_b[i].saturating_sub(fwd_a[i])) as f64 / secs / 1e6).collect();
    let expected_adverts = (secs / run.vrrp.interval.as_secs_f64()).round() as u64;
    let sent = delta(0, |s| s.adverts_sent);
    let received = delta(1, |s| s.adverts_received);
    say!(
        "failover: under load {secs:.0} s: transitions lb1 {} lb2 {}, offered {offered_mpps:.2} Mpps, forwarded lb1 {:.2} lb2 {:.2} Mpps, CPU busy {:?}, adverts sent by lb1 {sent}, received by lb2 {received} (~{expected_adverts} expected)",
        transitions[0],
        transitions[1],
        forwarded_mpps[0],
        forwarded_mpps[1],
        cpu_busy.iter().map(|c| format!("{c:.0}%")).collect::<Vec<_>>()
    );
    say!(
        "failover: under load, the client heard {} adverts from lb1 (longest gap {max_gap:.1} ms, {late} gaps over two intervals; Master_Down_Interval {mdi_ms:.0} ms) and {heard_lb2} from lb2; drops {}",
        heard_lb1.len(),
        Value::Object(drops.clone())
    );
    let spurious = transitions.iter().sum::<u64>();
    if spurious > 0 {
        say!("failover: spurious transitions under load, lb2's log:\n{}", lb2_log.join("\n"));
    }
    Ok(json!({
        "seconds": secs,
        "advert_interval_ms": run.vrrp.interval.as_secs_f64() * 1e3,
        "transitions": {"lb1": transitions[0], "lb2": transitions[1]},
        "became_master": {"lb1": became_master[0], "lb2": became_master[1]},
        "adverts_sent_lb1": sent,
        "adverts_received_lb2": received,
        "adverts_expected": expected_adverts,
        "offered_mpps": offered_mpps,
        "forwarded_mpps": {"lb1": forwarded_mpps[0], "lb2": forwarded_mpps[1]},
        "cpu_busy_percent": cpu_busy,
        "states_each_second": states.iter().map(|(t, a, b)| json!({"t": t, "lb1": a, "lb2": b})).collect::<Vec<_>>(),
        "client_heard_adverts": {"lb1": heard_lb1.len(), "lb2": heard_lb2, "lb1_longest_gap_ms": max_gap, "lb1_gaps_over_two_intervals": late,
            "lb1_gaps_over_master_down_interval": gaps.iter().filter(|&&g| g >= mdi_ms).count()},
        "drops": drops,
        "lb2_vrrp_log": lb2_log,
        "load": "two AF_PACKET generators in the client's namespace (forwarding::Flood), 60-byte UDP frames, 256 flows to the VIP's port 9: one to lb1's MAC on CPU 0, one to lb2's MAC on CPU 1; each node's XDP program forwards its flood (XDP_TX) to the backends",
        "paced_mpps_per_node": pace.map(|p| json!(p)),
    }))
}

pub fn run(s: &Settings, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let v2 = Vrrp { version: 2, interval: Duration::from_secs(1) };
    let v3 = Vrrp { version: 3, interval: Duration::from_millis(100) };
    let fast = Vrrp { version: 3, interval: Duration::from_millis(20) };
    // (setting, faults, repetitions)
    let plan: Vec<(Vrrp, Vec<Fault>, usize)> = if s.quick {
        vec![(v3, vec![Fault::Vanish, Fault::Sigterm], 1), (v2, vec![Fault::Vanish], 1)]
    } else {
        vec![(v3, vec![Fault::Vanish, Fault::Sigterm], 5), (v2, vec![Fault::Vanish, Fault::Sigterm], 3)]
    };
    let (fast_reps, load_for) = if s.quick { (1, Duration::from_secs(10)) } else { (5, Duration::from_secs(60)) };
    let mut runs: Vec<Value> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for (vrrp, faults, reps) in &plan {
        for imp in [Impl::Xlb, Impl::Keepalived] {
            say!("failover: {} {}: {} x {reps}", imp.name(), vrrp.label(), faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "));
            let mut run = Run::start(imp, *vrrp, false)?;
            for _ in 0..*reps {
                for &fault in faults {
                    runs.push(run.fault(fault)?);
                }
            }
        }
        for &fault in faults {
            let x = blackouts(&runs, Impl::Xlb, *vrrp, fault);
            let k = blackouts(&runs, Impl::Keepalived, *vrrp, fault);
            let (xm, km) = (median(&x), median(&k));
            rows.push(
                Row::new(PART, format!("{}, master {}: client blackout", vrrp.label(), if fault == Fault::Vanish { "vanishes" } else { "gets SIGTERM" }), format!("xlb {}", med_max(&x)))
                    .reference(format!("keepalived {}", med_max(&k)), Some(xm / km))
                    .target("median <= keepalived + 10 ms", Some(xm <= km + PROBE.as_secs_f64() * 1e3)),
            );
        }
    }
    say!("failover: xlb {}: vanish x {fast_reps}, then {} s under load", fast.label(), load_for.as_secs());
    let mut run = Run::start(Impl::Xlb, fast, true)?;
    for _ in 0..fast_reps {
        runs.push(run.fault(Fault::Vanish)?);
    }
    let x = blackouts(&runs, Impl::Xlb, fast, Fault::Vanish);
    let worst = x.iter().cloned().fold(f64::NAN, f64::max);
    rows.push(
        Row::new(PART, format!("{}, master vanishes: client blackout", fast.label()), format!("xlb {}", med_max(&x)))
            .reference(format!("Master_Down_Interval {:.0} ms", fast.mdi().as_secs_f64() * 1e3), None)
            .target("< 100 ms, every run", Some(worst < 100.0)),
    );
    // Under load, twice: both nodes forwarding at 90% of what they forwarded flat out (CPUs
    // busy, rings not overflowing: does the agent keep its timing?), then flat out (offered
    // beyond capacity, frames dropped on the way in, adverts among them: reported, no target).
    let cap = capacity(&run, Duration::from_secs(3))?;
    say!("failover: the nodes forward {:.2} / {:.2} Mpps flat out; the judged load run paces each flood at 90% of that", cap[0], cap[1]);
    let load = under_load(&run, load_for, Some(cap.map(|c| c * 0.9)))?;
    let overload = under_load(&run, load_for / 2, None)?;
    drop(run);
    for (load, judged) in [(&load, true), (&overload, false)] {
    let spurious = load["transitions"]["lb1"].as_u64().unwrap_or(0) + load["transitions"]["lb2"].as_u64().unwrap_or(0);
    let busy: Vec<String> = load["cpu_busy_percent"].as_array().into_iter().flatten().filter_map(Value::as_f64).map(|c| format!("{c:.0}%")).collect();
    let dropped: u64 = load["drops"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_u64()).sum();
    rows.push(
        Row::new(
            PART,
            format!(
                "{}, {:.0} s, both nodes {}: state changes",
                fast.label(),
                load["seconds"].as_f64().unwrap_or(0.0),
                if judged { "forwarding at 90% of capacity" } else { "flooded beyond capacity" }
            ),
            format!(
                "{spurious} transitions, {} takeovers (lb1 sent {} adverts, lb2 heard {}; longest gap at the client {:.0} ms; {dropped} frames dropped on the links)",
                load["became_master"]["lb1"].as_u64().unwrap_or(0) + load["became_master"]["lb2"].as_u64().unwrap_or(0),
                load["adverts_sent_lb1"],
                load["adverts_received_lb2"],
                load["client_heard_adverts"]["lb1_longest_gap_ms"].as_f64().unwrap_or(f64::NAN)
            ),
        )
        .reference(
            format!(
                "{:.2} Mpps offered, lb1 {:.2} + lb2 {:.2} Mpps forwarded, CPUs {} busy",
                load["offered_mpps"].as_f64().unwrap_or(0.0),
                load["forwarded_mpps"]["lb1"].as_f64().unwrap_or(0.0),
                load["forwarded_mpps"]["lb2"].as_f64().unwrap_or(0.0),
                busy.join("/")
            ),
            None,
        )
        .target(
            if judged { "0 spurious failovers" } else { "(reported: adverts dropped with the flood)" },
            judged.then_some(spurious == 0),
        ),
    );
    }
    notes.push("failover: client blackout = longest gap between replies to UDP probes sent every 10 ms, from the fault to Master_Down_Interval + 1 s after; \
         lb1 (150) master, lb2 (100) backup, the fault timed just after an advert from lb1 (the worst phase for a vanish). \
         keepalived's SIGTERM stops the node's data plane with it, as keepalived with IPVS does. \
         Load: two AF_PACKET floods from the client (60-byte UDP, 256 flows), one to each node's MAC, pinned to CPU 0 and CPU 1; each node's XDP program forwards its flood in that CPU's softirq; \
         judged at 90% of each node's flat-out rate (measured first), then reported flat out, where a node's receive ring overflows and adverts are lost with the flood (a packet-loss failover any VRRP implementation takes; on a NIC, steer VRRP to a queue of its own with an ntuple rule). \
         xlb keeps its advert timing by running VRRP on a thread of its own under SCHED_FIFO (priority 10), apart from the agent's runtime.".to_string());
    let json = json!({
        "part": "failover blackout, xlb VRRP against keepalived",
        "quick": s.quick,
        "probe_interval_ms": 10,
        "blackout": "longest gap between consecutive probe replies from the fault to Master_Down_Interval + 1 s after (window edges count as replies)",
        "fault_timing": "right after an advert from the master, seen by a raw socket in the client's namespace",
        "keepalived_sigterm": "keepalived and the node's data plane (xlb without VRRP) get SIGTERM at the same instant",
        "runs": runs,
        "under_load": load,
        "under_overload": overload,
        "capacity_mpps": cap,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let path = write_json("failover", &json)?;
    say!("failover: wrote {}", path.display());
    Ok(rows)
}
