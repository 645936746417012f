//! The lab: network namespaces joined by a Linux bridge: a "switch" namespace holding the
//! bridge, and every host (clients, load-balancer nodes, backends) a namespace of its own with
//! a veth leg on it, addressed from 203.0.113.0/24 and 2001:db8:0:1::/64. Tests, the
//! `cargo xtask lab` demo and the benchmarks all build on it.
//!
//! Every namespace a [`Lab`] creates carries the lab's prefix and is deleted when the lab is
//! dropped, also when a test panics. Processes started with [`Lab::spawn`] are killed first.

use std::{
    fs::File,
    io::Write as _,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nix::sched::{setns, unshare, CloneFlags};

pub mod ecmp;
pub mod flood;
pub mod frames;
pub mod pair;
pub mod reference;
pub mod routed;
pub mod scenario;
pub mod traffic;
pub mod unit;

/// Prefix of every namespace the lab creates; `cargo xtask test` removes leftovers with it.
pub const NS_PREFIX: &str = "xlbt-";

/// Whether a privileged test may run. As root: yes. Otherwise, with `XLB_SKIP_PRIVILEGED=1`,
/// the skip is printed and recorded (see `XLB_SKIP_LOG`) and the test returns early; without
/// it the test fails, saying why.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("XLB_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root (XLB_SKIP_PRIVILEGED=1)");
        if let Ok(log) = std::env::var("XLB_SKIP_LOG") {
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
                let _ = writeln!(f, "{test}");
            }
        }
        return false;
    }
    panic!(
        "{test} needs root: it creates network namespaces and loads XDP programs. \
         Run as root, or set XLB_SKIP_PRIVILEGED=1 to skip the privileged tests."
    );
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// `ip` with arguments, checked.
pub fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// Runs `f` on a thread inside network namespace `ns` (a name under /run/netns). Sockets `f`
/// opens live in that namespace; processes it spawns start there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let file = File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening netns {ns}"))?;
    thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {ns}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {ns} panicked"))?
    })
}

/// Starts a thread that lives in namespace `ns` until `f` returns (servers).
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<T>> {
    let file = File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening netns {ns}"))?;
    let ns = ns.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = thread::spawn(move || {
        let entered = setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("entering netns {ns}: {e}"));
        let ok = entered.is_ok();
        tx.send(entered).expect("spawner waits");
        assert!(ok);
        f()
    });
    rx.recv()?.map_err(|e| anyhow::anyhow!(e))?;
    Ok(handle)
}

/// Runs `f` on a thread in a fresh, anonymous network namespace that vanishes with the thread:
/// for tests that need interfaces (BPF_PROG_TEST_RUN's ingress and redirect targets) and must
/// not touch the host's.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in private netns panicked"))?
    })
}

/// Index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).with_context(|| format!("interface {name} not found"))
}

/// The MAC of `ifname` in namespace `ns`.
pub fn link_mac(ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let out = ip(&["-n", ns, "-j", "link", "show", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let text = v[0]["address"].as_str().with_context(|| format!("no address on {ifname} in {ns}"))?;
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<std::result::Result<_, _>>()?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("MAC {text}"))
}

/// A host of the lab: a namespace with `eth0` on the switch.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub v4: IpAddr,
    pub v6: IpAddr,
}

/// Addresses of the lab segment (203.0.113.0/24 and 2001:db8:0:1::/64).
pub mod plan {
    pub const V4_PREFIX: u8 = 24;
    pub const V6_PREFIX: u8 = 64;
    pub const VIP4: &str = "203.0.113.100";
    pub const VIP6: &str = "2001:db8:0:1::100";
    pub fn v4(host: u8) -> String {
        format!("203.0.113.{host}")
    }
    /// The IPv6 address whose last group reads like the IPv4 host number (.11 -> ::11).
    pub fn v6(host: u8) -> String {
        format!("2001:db8:0:1::{host}")
    }
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    pub prefix: String,
    /// Namespaces in creation order (the switch first).
    namespaces: Vec<String>,
    /// Processes started with `spawn`, by log name.
    children: Vec<(String, Child)>,
    /// XDP_PASS programs on switch ports (held open: closing detaches them).
    xdp_links: Vec<OwnedFd>,
    bpffs: Option<PathBuf>,
    pub dir: PathBuf,
}

impl Lab {
    /// A new lab whose namespaces are named `xlbt-<tag>-<pid>-<n>-...`: unique per test even
    /// when tests run in parallel. Creates the switch namespace with bridge `br0`.
    pub fn new(tag: &str) -> Result<Lab> {
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{NS_PREFIX}{tag}-{}-{seq}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab { prefix, namespaces: Vec::new(), children: Vec::new(), xdp_links: Vec::new(), bpffs: None, dir };
        let sw = lab.add_namespace("sw")?;
        // br_netfilter would drop malformed frames and trim padding before they reach a node.
        for table in ["iptables", "ip6tables", "arptables"] {
            let _ = lab.sysctl(&sw, &format!("net.bridge.bridge-nf-call-{table}"), "0");
        }
        lab.add_bridge("br0")?;
        Ok(lab)
    }

    /// Adds another segment: a bridge in the switch namespace.
    pub fn add_bridge(&mut self, bridge: &str) -> Result<()> {
        let sw = self.switch_ns().to_owned();
        ip(&["-n", &sw, "link", "add", bridge, "type", "bridge"])?;
        // No STP delays, no multicast snooping surprises.
        ip(&["-n", &sw, "link", "set", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"])?;
        ip(&["-n", &sw, "link", "set", bridge, "up"])?;
        Ok(())
    }

    /// A bpf filesystem mounted in the lab's directory, in the host's mount namespace: pins
    /// placed there outlive the agent process (`ip netns exec` gives each process a /sys of
    /// its own, so pins under /sys/fs/bpf would vanish with it). Unmounted at teardown.
    pub fn bpffs(&mut self) -> Result<PathBuf> {
        if let Some(path) = &self.bpffs {
            return Ok(path.clone());
        }
        let path = self.dir.join("bpffs");
        std::fs::create_dir_all(&path)?;
        nix::mount::mount(Some("bpf"), &path, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .with_context(|| format!("mounting bpffs at {}", path.display()))?;
        self.bpffs = Some(path.clone());
        Ok(path)
    }

    pub fn switch_ns(&self) -> &str {
        &self.namespaces[0]
    }

    /// A new namespace `<prefix>-<name>` with `lo` up, deleted at teardown.
    pub fn add_namespace(&mut self, name: &str) -> Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Makes the lab delete namespace `ns` (created by the caller) at teardown.
    pub fn adopt_namespace(&mut self, ns: &str) {
        self.namespaces.push(ns.to_owned());
    }

    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", &format!("{key}={value}")]))?;
        Ok(())
    }

    /// Makes namespace `ns` a router: forwarding on for both families, and `rp_filter` 0 (all,
    /// default and each of `interfaces`). Replies from direct-routing or tunnel backends come
    /// with the VIP as source from a network the router does not route the VIP to; a real
    /// router needs the same.
    pub fn make_router(&self, ns: &str, interfaces: &[&str]) -> Result<()> {
        self.sysctl(ns, "net.ipv4.ip_forward", "1")?;
        self.sysctl(ns, "net.ipv6.conf.all.forwarding", "1")?;
        for key in ["all", "default"].iter().chain(interfaces) {
            self.sysctl(ns, &format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
        }
        Ok(())
    }

    /// Adds host `name` (at most 13 characters) with `eth0` on `br0` holding the lab addresses
    /// `.host` of both prefixes. Its switch port is `p-<name>`.
    pub fn host(&mut self, name: &str, host: u8) -> Result<Host> {
        let ns = self.add_namespace(name)?;
        // No DAD delays; no router advertisements here.
        self.sysctl(&ns, "net.ipv6.conf.all.accept_dad", "0")?;
        self.sysctl(&ns, "net.ipv6.conf.default.accept_dad", "0")?;
        let (v4, v6) = (plan::v4(host), plan::v6(host));
        let addrs = [format!("{v4}/{}", plan::V4_PREFIX), format!("{v6}/{}", plan::V6_PREFIX)];
        self.leg(&ns, &format!("p-{name}"), "br0", "eth0", &addrs)?;
        Ok(Host { name: name.to_owned(), ns, v4: v4.parse()?, v6: v6.parse()? })
    }

    /// Connects namespace `ns` to `bridge`: a veth with `ifname` (holding `addrs`, CIDR) in
    /// `ns` and `port` in the switch.
    pub fn leg(&mut self, ns: &str, port: &str, bridge: &str, ifname: &str, addrs: &[String]) -> Result<()> {
        let sw = self.switch_ns().to_owned();
        ip(&["-n", &sw, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns])?;
        ip(&["-n", &sw, "link", "set", port, "master", bridge, "up"])?;
        for addr in addrs {
            let mut args = vec!["-n", ns, "addr", "add", addr, "dev", ifname];
            if addr.contains(':') {
                args.push("nodad");
            }
            ip(&args)?;
        }
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        // A veth leaves checksums to be filled in later (CHECKSUM_PARTIAL). XDP forwards the
        // bare frame and that promise is lost, so a backend would see a bad TCP checksum and
        // drop the packet. A real NIC fills the checksum on transmit; here the sender must.
        run(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", ifname, "tx", "off"]))?;
        Ok(())
    }

    /// Adds a direct-routing backend: the VIPs on `lo`, and the LVS-DR ARP settings so that it
    /// never answers ARP for them (`arp_ignore=1`, `arp_announce=2`).
    pub fn backend(&mut self, name: &str, host: u8, vips: &[&str]) -> Result<Host> {
        let h = self.host(name, host)?;
        for key in ["all", "eth0"] {
            self.sysctl(&h.ns, &format!("net.ipv4.conf.{key}.arp_ignore"), "1")?;
            self.sysctl(&h.ns, &format!("net.ipv4.conf.{key}.arp_announce"), "2")?;
        }
        for vip in vips {
            let plen = if vip.contains(':') { 128 } else { 32 };
            let addr = format!("{vip}/{plen}");
            let mut args = vec!["-n", &h.ns, "addr", "add", &addr, "dev", "lo"];
            // Without it the address stays tentative until a kernel worker runs (no DAD on
            // `lo`, but still a pass through the workqueue): a server binding it at once can
            // fail with EADDRNOTAVAIL on a busy machine.
            if vip.contains(':') {
                args.push("nodad");
            }
            ip(&args)?;
        }
        Ok(h)
    }

    /// Attaches an XDP_PASS program to switch port `port`. A veth drops frames sent with
    /// XDP_TX or XDP_REDIRECT unless its peer has an XDP program (the peer counts them as
    /// `rx_queue_0_xdp_tx_errors`), so every port of a load-balancer node gets one.
    pub fn attach_xdp_pass(&mut self, port: &str) -> Result<()> {
        let sw = self.switch_ns().to_owned();
        let link = in_netns(&sw, || xdp_pass::attach(port))??;
        self.xdp_links.push(link);
        Ok(())
    }

    /// Runs `nft -f` with `script` in namespace `ns`.
    pub fn nft(&self, ns: &str, script: &str) -> Result<()> {
        let path = self.dir.join("nft-script");
        std::fs::write(&path, script)?;
        run(Command::new("ip").args(["netns", "exec", ns, "nft", "-f"]).arg(&path))?;
        Ok(())
    }

    /// A host's link vanishes: its switch port `port` drops every frame, both ways (an nft
    /// bridge table in the switch). Neither the host nor the bridge sees a carrier change: the
    /// host's daemons keep running as if nothing happened (as when a cable breaks beyond the
    /// PHY or the host hangs), and the bridge keeps the host's MAC, so frames for it are
    /// dropped rather than flooded to the other ports. (Taking the port down would flush that
    /// MAC and flood frames for it to every port.)
    pub fn vanish_port(&self, port: &str) -> Result<()> {
        let script = format!(
            "table bridge xlb_vanish_{t} {{ chain forward {{ type filter hook forward priority 0; iifname \"{port}\" drop; oifname \"{port}\" drop; }}; }}",
            t = port.replace('-', "_")
        );
        self.nft(self.switch_ns(), &script)
    }

    /// Undoes [`Lab::vanish_port`].
    pub fn restore_port(&self, port: &str) -> Result<()> {
        let table = format!("xlb_vanish_{}", port.replace('-', "_"));
        run(Command::new("ip").args(["netns", "exec", self.switch_ns(), "nft", "delete", "table", "bridge", &table]))?;
        Ok(())
    }

    /// Starts `program args...` inside `host`'s namespace; killed when the lab is dropped.
    /// Output goes to `<lab dir>/<log>.log`.
    pub fn spawn(&mut self, ns: &str, log: &str, program: &Path, args: &[&str]) -> Result<&mut Child> {
        self.spawn_with_env(ns, log, program, args, &[])
    }

    /// [`Lab::spawn`] with extra environment variables.
    pub fn spawn_with_env(&mut self, ns: &str, log: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<&mut Child> {
        let log_path = self.dir.join(format!("{log}.log"));
        let out = File::create(&log_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} in {ns}", program.display()))?;
        self.children.push((log.to_owned(), child));
        Ok(&mut self.children.last_mut().expect("just pushed").1)
    }

    /// Sends `signal` to the process logging to `log` (the latest started under that name) and
    /// leaves it running (SIGHUP, say).
    pub fn notify(&self, log: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        let (_, child) = self.children.iter().rfind(|(name, _)| name == log).with_context(|| format!("no process {log}"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)?;
        Ok(())
    }

    /// The process id of the process logging to `log` (the latest started under that name).
    pub fn pid(&self, log: &str) -> Option<u32> {
        self.children.iter().rfind(|(name, _)| name == log).map(|(_, c)| c.id())
    }

    /// Whether the process logging to `log` still runs.
    pub fn running(&mut self, log: &str) -> bool {
        self.children.iter_mut().rfind(|(name, _)| name == log).is_some_and(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for the process logging to `log` to exit by itself; its exit
    /// status, or an error if it still runs (it is left running).
    pub fn wait_exit(&mut self, log: &str, timeout: Duration) -> Result<std::process::ExitStatus> {
        let (_, child) = self.children.iter_mut().rfind(|(name, _)| name == log).with_context(|| format!("no process {log}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{log} still runs after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the process started as `log` and waits up to 10 s for it to exit.
    pub fn signal(&mut self, log: &str, signal: nix::sys::signal::Signal) -> Result<std::process::ExitStatus> {
        let pos = self.children.iter().rposition(|(name, _)| name == log).with_context(|| format!("no process {log}"))?;
        let (_, mut child) = self.children.remove(pos);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{log} did not exit within 10 s of {signal}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{log}.log"))).unwrap_or_default()
    }

    /// Stops the processes the lab started: SIGTERM, then SIGKILL after 5 s.
    pub fn teardown_processes(&mut self) {
        for (_, child) in &mut self.children {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    /// Removes everything the lab made: processes, XDP programs, namespaces, its directory.
    pub fn teardown(&mut self) {
        self.teardown_processes();
        self.xdp_links.clear();
        if let Some(path) = self.bpffs.take() {
            // Dropping the pins releases whatever a killed agent left attached.
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Deletes namespaces left by labs of processes that no longer exist (a test killed hard).
pub fn remove_stale_namespaces() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix(NS_PREFIX) {
            let pid: Option<u32> = rest.split('-').nth(1).and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = ip(&["netns", "del", name]);
                removed.push(name.to_owned());
            }
        }
    }
    Ok(removed)
}

/// A two-instruction XDP program (`r0 = XDP_PASS; exit`) loaded with the bpf(2) syscall and
/// attached with a BPF link: all the switch side of a veth needs, without any toolchain.
mod xdp_pass {
    use super::*;

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_XDP: u32 = 37;

    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 8],
    }

    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
        // SAFETY: the attribute is a live struct of the size passed, laid out as the kernel's bpf_attr.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just returned by the system and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    pub fn attach(ifname: &str) -> Result<OwnedFd> {
        // mov64 r0, 2 (XDP_PASS); exit
        let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]), u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0])];
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..8].copy_from_slice(b"xlb_pass");
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..Default::default()
        };
        let prog = bpf(BPF_PROG_LOAD, &mut load).context("loading the XDP_PASS program")?;
        let mut link = LinkCreate {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex(ifname)?,
            attach_type: BPF_XDP,
            ..Default::default()
        };
        bpf(BPF_LINK_CREATE, &mut link).with_context(|| format!("attaching XDP_PASS to {ifname}"))
    }
}
