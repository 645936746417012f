//! Part 5 (issue 5's figures): the health checker.
//!
//! a. CPU: the release agent checks 1000 backends with TCP connects every second: ten
//!    services of 100 backends each, the backends 1000 IPv6 addresses of one namespace where
//!    one listener on [::]:80 accepts every check. Over a window (20 s, 5 s with --quick) after
//!    every backend is up, the agent's CPU time is utime + stime of /proc/<pid>/stat (every
//!    thread); the checks started and the start lateness come from the agent's own
//!    `xlb stats --json` (`checker`). Lateness is the worst since the agent started (its own
//!    figure; it includes the start-up).
//!
//!    One machine plays both sides here, and over veth the receiving side of a packet is
//!    processed in the sender's context: without care, the backend's half of every handshake
//!    (its SYN-ACK, its accept) is billed to the agent as system time. On a real network that
//!    work happens on the backends. So the agent's threads are pinned to CPU 0 and receive
//!    processing of every interface on the path (the node's eth0, the backend's eth0 and their
//!    switch ports) is steered to CPU 1 with RPS; the agent's figure is then its own work:
//!    user time, its system calls, and the transmit half of its packets. (With one CPU there
//!    is nothing to steer to; the figure then includes the backend's side, and says so.)
//! b. Detection: xlb and keepalived's TCP_CHECK check the same backend from the load-balancer
//!    node with the same timing (every 1 s, connect timeout 1 s, down after 3 failures: xlb
//!    `fall = 3`, keepalived `retry 2`; the retries after a first failure 250 ms apart: xlb
//!    `fast_interval`, keepalived `delay_before_retry`). The backend's listener is closed
//!    (connections are refused from then on) and each one's verdict is timed from that moment
//!    to the line it logs ("backend ... is down", "Removing service ..."), the logs polled
//!    every 5 ms. Each trial stops the server at a random point of the checkers' rounds.
//!
//!    keepalived's checker refuses to run without IPVS, which this kernel lacks; a small
//!    LD_PRELOAD shim (compiled here with gcc) answers its IPVS socket options with success,
//!    so its checker runs unchanged and only the kernel table updates are skipped.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    os::fd::{AsRawFd, FromRawFd},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use lb_common::status::CheckerStatus;
use serde_json::json;
use xlb_tests::{plan, Lab};

use crate::{
    lab::{backend_states, wait_all_up},
    report::{median, write_json, Row},
    say, Settings,
};

const PART: &str = "5 health";
/// Backends checked in the CPU measurement, and per service (the Maglev table stays above
/// 100 x backends).
const CHECKED: usize = 1000;
const PER_SERVICE: usize = 100;
const CHECK_PORT: u16 = 80;

/// A TCP listener in a namespace accepting and closing every connection until stopped.
/// Stopping closes the socket: the port then refuses connections.
struct Listener {
    stop: Arc<AtomicBool>,
    fd: i32,
    handle: Option<thread::JoinHandle<()>>,
}

impl Listener {
    fn start(ns: &str, addr: SocketAddr) -> Result<Listener> {
        let listener = xlb_tests::in_netns(ns, || listen(addr))??;
        let fd = listener.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // Accept and drop: the check only needs the handshake.
                if listener.accept().is_err() && flag.load(Ordering::Relaxed) {
                    break;
                }
            }
        });
        Ok(Listener { stop, fd, handle: Some(handle) })
    }

    fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.stop.store(true, Ordering::Relaxed);
            // Wakes the blocked accept(2) (EINVAL); the thread then drops (closes) the socket.
            // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
            let _ = h.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listening socket with a backlog of 4096 (std's is 128, too short for a round of 1000
/// checks arriving at once).
fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // Owned from here: closed on every error path.
    // SAFETY: the descriptor was just returned by the system and nothing else owns it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: i32 = 1;
    // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
    unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one as *const i32 as *const libc::c_void, 4) };
    let r = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: a C struct of integers and arrays, for which all zeros is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_port = a.port().to_be();
            sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
            unsafe { libc::bind(fd, &sa as *const _ as *const libc::sockaddr, std::mem::size_of_val(&sa) as u32) }
        }
        SocketAddr::V6(a) => {
            // SAFETY: a C struct of integers and arrays, for which all zeros is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as u16;
            sa.sin6_port = a.port().to_be();
            sa.sin6_addr.s6_addr = a.ip().octets();
            // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
            unsafe { libc::bind(fd, &sa as *const _ as *const libc::sockaddr, std::mem::size_of_val(&sa) as u32) }
        }
    };
    ensure!(r == 0, "bind {addr}: {}", std::io::Error::last_os_error());
    // SAFETY: a system call on a descriptor this code owns; every pointer passed points at a live local of the size given.
    ensure!(unsafe { libc::listen(fd, 4096) } == 0, "listen {addr}: {}", std::io::Error::last_os_error());
    Ok(listener)
}

fn agent_section(lab: &mut Lab, max_services: usize) -> Result<String> {
    Ok(format!(
        "[agent]\ninterfaces = [\"eth0\"]\nxdp_mode = \"native\"\npin_path = \"{}\"\ncontrol_socket = \"{}\"\n\
         flow_table_size = 65536\nmax_services = {max_services}\nassign_vips = true\n",
        lab.bpffs()?.join("xlb").display(),
        lab.dir.join("xlb.sock").display()
    ))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// (utime, stime) of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &text[text.rfind(')').context("/proc/<pid>/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    // SAFETY: sysconf takes no pointer and only reads a system value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[11].parse::<u64>()? as f64 / hz, f[12].parse::<u64>()? as f64 / hz))
}

struct CpuShare {
    window: f64,
    cpu_share: f64,
    user_share: f64,
    checks_per_second: f64,
    late_max_ms: f64,
    late_mean_ms: f64,
    skipped: u64,
    ready_seconds: f64,
    checks: u64,
    /// The backend's receive processing was steered off the agent's CPU.
    steered: bool,
}

/// Pins every thread of `pid` to CPU 0.
fn pin_to_cpu0(pid: u32) -> Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it for the call only.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        ensure!(rc == 0, "pinning thread {tid} of the agent: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn cpu_share(window: Duration) -> Result<CpuShare> {
    let xlb = xlb_tests::scenario::xlb_bin()?;
    let mut lab = Lab::new("bhcpu")?;
    let node = lab.host("lb1", 2)?;
    let bk = lab.host("bk", 20)?;
    let addrs: Vec<String> = (0..CHECKED).map(|i| format!("2001:db8:0:1::1:{i:x}")).collect();
    let batch: String = addrs.iter().map(|a| format!("addr add {a}/64 dev eth0 nodad\n")).collect();
    let batch_path = lab.dir.join("addrs.batch");
    std::fs::write(&batch_path, batch)?;
    xlb_tests::run(Command::new("ip").args(["-n", &bk.ns, "-batch"]).arg(&batch_path))?;
    let _server = Listener::start(&bk.ns, format!("[::]:{CHECK_PORT}").parse()?)?;
    let services = CHECKED / PER_SERVICE;
    let mut config = agent_section(&mut lab, services)?;
    for (s, chunk) in addrs.chunks(PER_SERVICE).enumerate() {
        config.push_str(&format!(
            "\n[[service]]\nname = \"hc{s}\"\nvip = \"{}\"\nport = {}\nprotocol = \"tcp\"\n[service.check]\ntype = \"tcp\"\nport = {CHECK_PORT}\ninterval = \"1s\"\n",
            plan::VIP6,
            10000 + s
        ));
        for a in chunk {
            config.push_str(&format!("[[service.backend]]\naddress = \"{a}\"\n"));
        }
    }
    let path = lab.dir.join("xlb.toml");
    std::fs::write(&path, config)?;
    let pid = lab.spawn(&node.ns, "xlb", &xlb, &["run", "--config", &path.display().to_string()])?.id();
    let ready = wait_all_up(&lab, &xlb, &lab.dir.join("xlb.sock"), Some(CHECKED), Duration::from_secs(60))?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    ensure!(comm.trim() == "xlb", "pid {pid} is {:?}, not the agent", comm.trim());
    let steered = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2;
    if steered {
        let sw = lab.switch_ns().to_owned();
        for (ns, ifname) in [(&node.ns, "eth0"), (&bk.ns, "eth0"), (&sw, "p-lb1"), (&sw, "p-bk")] {
            let path = format!("/sys/class/net/{ifname}/queues/rx-0/rps_cpus");
            xlb_tests::run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &format!("echo 2 > {path}")]))
                .with_context(|| format!("steering {ifname}'s receive processing to CPU 1"))?;
        }
        pin_to_cpu0(pid)?;
    }
    say!("health: {CHECKED} backends up after {:.1} s; measuring the agent for {} s", ready.as_secs_f64(), window.as_secs());
    // Past the start-up: a few rounds in the steady state first.
    thread::sleep(Duration::from_secs(2));
    let socket = lab.dir.join("xlb.sock");
    let s0 = xlb_tests::scenario::status(&xlb, &socket)?.checker.starts;
    let (c0, t0) = (cpu_seconds(pid)?, Instant::now());
    let skipped0 = xlb_tests::scenario::status(&xlb, &socket)?.checker.skipped;
    thread::sleep(window);
    let (c1, t1) = (cpu_seconds(pid)?, Instant::now());
    let status = xlb_tests::scenario::status(&xlb, &socket)?;
    let CheckerStatus { starts: s1, late_max_ms, late_mean_ms, skipped: skipped1, checks } = status.checker.clone();
    let down: Vec<_> = backend_states(&status).into_iter().filter(|(_, s)| s != "up").collect();
    ensure!(down.is_empty(), "{} backends went down during the measurement (first: {:?})", down.len(), down.first());
    let elapsed = (t1 - t0).as_secs_f64();
    lab.signal("xlb", nix::sys::signal::Signal::SIGTERM)?;
    Ok(CpuShare {
        window: elapsed,
        cpu_share: (c1.0 + c1.1 - c0.0 - c0.1) / elapsed,
        user_share: (c1.0 - c0.0) / elapsed,
        checks_per_second: (s1 - s0) as f64 / elapsed,
        late_max_ms,
        late_mean_ms,
        skipped: skipped1 - skipped0,
        ready_seconds: ready.as_secs_f64(),
        checks: checks as u64,
        steered,
    })
}

const SHIM_C: &str = r#"
/* keepalived's checker needs IPVS, which this kernel lacks: answer its IPVS socket options
 * (IP_VS_BASE_CTL .. +15 at level IPPROTO_IP) with success; everything else goes through.
 * Also line-buffers stdout so that each log line reaches the log file as it is written. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#define BASE (64 + 1024 + 64)
static int ipvs(int level, int opt) { return level == IPPROTO_IP && opt >= BASE && opt <= BASE + 15; }
__attribute__((constructor)) static void init(void) { setvbuf(stdout, NULL, _IOLBF, 0); setvbuf(stderr, NULL, _IONBF, 0); }
int setsockopt(int fd, int level, int opt, const void *val, socklen_t len) {
    static int (*real)(int, int, int, const void *, socklen_t);
    if (ipvs(level, opt)) return 0;
    if (!real) real = dlsym(RTLD_NEXT, "setsockopt");
    return real(fd, level, opt, val, len);
}
int getsockopt(int fd, int level, int opt, void *val, socklen_t *len) {
    static int (*real)(int, int, int, void *, socklen_t *);
    if (ipvs(level, opt)) {
        if (val && len) memset(val, 0, *len);
        if (opt == BASE + 1 && val && len && *len >= 12) { ((unsigned *)val)[0] = 0x010201; ((unsigned *)val)[1] = 4096; }
        if (opt == BASE && val && len) strncpy(val, "IP Virtual Server version 1.2.1 (size=4096)", *len);
        return 0;
    }
    if (!real) real = dlsym(RTLD_NEXT, "getsockopt");
    return real(fd, level, opt, val, len);
}
"#;

fn keepalived_conf(backends: &[IpAddr]) -> String {
    let reals: String = backends
        .iter()
        .map(|b| {
            format!(
                "  real_server {b} {CHECK_PORT} {{\n    weight 1\n    TCP_CHECK {{\n      connect_port {CHECK_PORT}\n      connect_timeout 1\n      retry 2\n      delay_before_retry 0.25\n    }}\n  }}\n"
            )
        })
        .collect();
    format!(
        "global_defs {{\n  router_id xlbbench\n}}\nvirtual_server {} {CHECK_PORT} {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind DR\n  protocol TCP\n{reals}}}\n",
        plan::VIP4
    )
}

/// Occurrences of `needle` in a log.
fn count(lab: &Lab, log: &str, needle: &str) -> usize {
    lab.log(log).matches(needle).count()
}

struct Detection {
    xlb: Vec<f64>,
    keepalived: Vec<f64>,
}

/// Waits until both logs hold more than the given counts of their needles; returns the time
/// from `since` at which each was first seen.
fn wait_both(lab: &Lab, since: Instant, xlb: (&str, usize), ka: (&str, usize), timeout: Duration) -> Result<(f64, f64)> {
    let (mut tx, mut tk) = (None, None);
    while since.elapsed() < timeout {
        if tx.is_none() && count(lab, "xlb", xlb.0) > xlb.1 {
            tx = Some(since.elapsed().as_secs_f64());
        }
        if tk.is_none() && count(lab, "keepalived", ka.0) > ka.1 {
            tk = Some(since.elapsed().as_secs_f64());
        }
        if let (Some(x), Some(k)) = (tx, tk) {
            return Ok((x, k));
        }
        thread::sleep(Duration::from_millis(5));
    }
    bail!(
        "after {timeout:?}: xlb {} \"{}\", keepalived {} \"{}\"\nxlb log:\n{}\nkeepalived log:\n{}",
        if tx.is_some() { "logged" } else { "did not log" },
        xlb.0,
        if tk.is_some() { "logged" } else { "did not log" },
        ka.0,
        tail(&lab.log("xlb"), 15),
        tail(&lab.log("keepalived"), 15)
    )
}

fn detection(trials: usize) -> Result<Detection> {
    let xlb = xlb_tests::scenario::xlb_bin()?;
    let mut lab = Lab::new("bhdet")?;
    let node = lab.host("lb1", 2)?;
    let b1 = lab.backend("b1", 11, &[plan::VIP4])?;
    let b2 = lab.backend("b2", 12, &[plan::VIP4])?;
    let mut config = agent_section(&mut lab, 1)?;
    config.push_str(&format!(
        "\n[[service]]\nname = \"web\"\nvip = \"{}\"\nport = {CHECK_PORT}\nprotocol = \"tcp\"\n[service.check]\ntype = \"tcp\"\n\
         interval = \"1s\"\nfast_interval = \"250ms\"\ntimeout = \"1s\"\nrise = 2\nfall = 3\n",
        plan::VIP4
    ));
    for b in [&b1, &b2] {
        config.push_str(&format!("[[service.backend]]\naddress = \"{}\"\n", b.v4));
    }
    let path = lab.dir.join("xlb.toml");
    std::fs::write(&path, config)?;
    let mut server = Listener::start(&b1.ns, SocketAddr::new(b1.v4, CHECK_PORT))?;
    let _other = Listener::start(&b2.ns, SocketAddr::new(b2.v4, CHECK_PORT))?;

    let shim_c = lab.dir.join("ipvs-shim.c");
    let shim = lab.dir.join("ipvs-shim.so");
    std::fs::write(&shim_c, SHIM_C)?;
    xlb_tests::run(Command::new("gcc").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&shim).arg(&shim_c).arg("-ldl"))
        .context("compiling the IPVS shim for keepalived")?;
    let ka_conf = lab.dir.join("keepalived.conf");
    std::fs::write(&ka_conf, keepalived_conf(&[b1.v4, b2.v4]))?;
    let d = lab.dir.clone();
    let pidfile = |n: &str| d.join(n).display().to_string();
    let preload = format!("LD_PRELOAD={}", shim.display());
    let ka_args = [
        preload.as_str(),
        "keepalived",
        "-f",
        &ka_conf.display().to_string(),
        "-l",
        "-D",
        "-n",
        "--log-detail",
        "-C",
        "-p",
        &pidfile("keepalived.pid"),
        "-c",
        &pidfile("keepalived-checkers.pid"),
        "-r",
        &pidfile("keepalived-vrrp.pid"),
    ]
    .map(|s| s.to_owned());
    let ka_args: Vec<&str> = ka_args.iter().map(String::as_str).collect();
    lab.spawn(&node.ns, "keepalived", Path::new("env"), &ka_args)?;
    lab.spawn(&node.ns, "xlb", &xlb, &["run", "--config", &path.display().to_string()])?;
    wait_all_up(&lab, &xlb, &lab.dir.join("xlb.sock"), Some(2), Duration::from_secs(20))?;

    let rs = format!("[{}]:tcp:{CHECK_PORT}", b1.v4);
    let ka_down = format!("Removing service {rs}");
    let ka_up = format!("Adding service {rs}");
    let ka_ok = format!("TCP connection to {rs} success");
    let xlb_down = format!("backend {} of service web is down", b1.v4);
    let xlb_up = format!("backend {} of service web is up", b1.v4);
    // keepalived starts with the backend up; wait for its first good check.
    wait_both(&lab, Instant::now(), ("", 0), (&ka_ok, 0), Duration::from_secs(10)).context("keepalived's first check")?;
    let mut result = Detection { xlb: Vec::new(), keepalived: Vec::new() };
    for trial in 0..trials {
        // A random phase of both timetables: the trial follows a log line of one of them
        // (keepalived's first check, or the last trial's recovery), so a fixed wait would
        // always stop the server at the same point of that checker's round.
        let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos() % 1_000_000_000;
        thread::sleep(Duration::from_millis(1000) + Duration::from_nanos(jitter.into()));
        let (nx, nk) = (count(&lab, "xlb", &xlb_down), count(&lab, "keepalived", &ka_down));
        server.stop();
        let t0 = Instant::now();
        let (x, k) = wait_both(&lab, t0, (&xlb_down, nx), (&ka_down, nk), Duration::from_secs(10))
            .with_context(|| format!("trial {}: backend down", trial + 1))?;
        say!("health: trial {}/{trials}: server stopped; xlb marked it down after {:.0} ms, keepalived after {:.0} ms", trial + 1, x * 1e3, k * 1e3);
        result.xlb.push(x);
        result.keepalived.push(k);
        let (ux, uk) = (count(&lab, "xlb", &xlb_up), count(&lab, "keepalived", &ka_up));
        server = Listener::start(&b1.ns, SocketAddr::new(b1.v4, CHECK_PORT))?;
        wait_both(&lab, Instant::now(), (&xlb_up, ux), (&ka_up, uk), Duration::from_secs(10))
            .with_context(|| format!("trial {}: backend back up", trial + 1))?;
    }
    lab.signal("keepalived", nix::sys::signal::Signal::SIGTERM)?;
    lab.signal("xlb", nix::sys::signal::Signal::SIGTERM)?;
    Ok(result)
}

pub fn run(s: &Settings, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let (window, trials) = if s.quick { (Duration::from_secs(5), 1) } else { (Duration::from_secs(20), 7) };
    let cpu = cpu_share(window).context("checker CPU with 1000 backends")?;
    say!(
        "health: {CHECKED} backends: {:.2}% of one core, {:.0} checks/s, start lateness max {:.1} ms (mean {:.2} ms), {} rounds skipped",
        cpu.cpu_share * 100.0,
        cpu.checks_per_second,
        cpu.late_max_ms,
        cpu.late_mean_ms,
        cpu.skipped
    );
    let det = detection(trials).context("detection time beside keepalived")?;
    let (x, k) = (median(&det.xlb), median(&det.keepalived));
    let bound = 3.0 * 1.0 + 1.0;
    let rows = vec![
        Row::new(PART, format!("agent CPU, TCP checks of {CHECKED} backends every 1 s"), format!(
            "{:.2}% of one core ({:.2}% user, {:.2}% system)",
            cpu.cpu_share * 100.0,
            cpu.user_share * 100.0,
            (cpu.cpu_share - cpu.user_share) * 100.0
        ))
            .reference(format!("{:.0} checks/s, {} skipped", cpu.checks_per_second, cpu.skipped), None)
            .target("< 2.5% of one core", Some(cpu.cpu_share < 0.025)),
        Row::new(PART, "check start lateness (worst since agent start)", format!("{:.1} ms (mean {:.2} ms)", cpu.late_max_ms, cpu.late_mean_ms))
            .target("< 50 ms", Some(cpu.late_max_ms < 50.0)),
        Row::new(PART, "detection: TCP server stopped -> xlb marks down", format!("{:.0} ms median of {trials}", x * 1e3))
            .reference(format!("keepalived TCP_CHECK {:.0} ms", k * 1e3), Some(x / k))
            .target(format!("<= interval x fall + timeout = {bound:.0} s"), Some(det.xlb.iter().all(|&d| d <= bound))),
    ];
    notes.push(format!(
        "health: CPU = the agent's utime+stime over {:.0} s with {CHECKED} backends ({} services x {PER_SERVICE}, IPv6 addresses of one namespace, TCP checks every 1 s; \
         all up {:.1} s after start; the agent reported {} checks); lateness is the agent's own figure since it started; \
         {}. \
         Detection: interval 1 s, fall 3 / retry 2, retries 250 ms apart, timeout 1 s, both checkers on lb1 checking the same backend; \
         times from closing the listener to each one's log line (5 ms polling); xlb {:?} ms, keepalived {:?} ms; \
         keepalived runs with an LD_PRELOAD shim that answers its IPVS calls (no IPVS in this kernel)",
        cpu.window,
        CHECKED / PER_SERVICE,
        cpu.ready_seconds,
        cpu.checks,
        if cpu.steered {
            "the agent pinned to CPU 0, receive processing of the path steered to CPU 1 (RPS), so the backend's side of each handshake is not billed to the agent as it would be over veth"
        } else {
            "one CPU: the system share includes the backend's side of each handshake, which over veth runs in the agent's calls"
        },
        det.xlb.iter().map(|d| (d * 1e3).round()).collect::<Vec<_>>(),
        det.keepalived.iter().map(|d| (d * 1e3).round()).collect::<Vec<_>>(),
    ));
    let json = json!({
        "part": "health checker",
        "cpu": {
            "backends": CHECKED, "services": CHECKED / PER_SERVICE, "interval_s": 1, "window_s": cpu.window,
            "cpu_share_of_one_core": cpu.cpu_share, "user_share_of_one_core": cpu.user_share, "checks_per_second": cpu.checks_per_second,
            "late_max_ms_since_start": cpu.late_max_ms, "late_mean_ms_since_start": cpu.late_mean_ms,
            "skipped_in_window": cpu.skipped, "ready_seconds": cpu.ready_seconds, "backend_rx_steered_off_agent_cpu": cpu.steered,
        },
        "detection": {
            "interval_s": 1, "fall": 3, "keepalived_retry": 2, "retry_spacing_ms": 250, "timeout_s": 1,
            "xlb_s": det.xlb, "keepalived_s": det.keepalived, "xlb_median_s": x, "keepalived_median_s": k,
        },
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let path = write_json("health", &json)?;
    say!("health: wrote {}", path.display());
    Ok(rows)
}
