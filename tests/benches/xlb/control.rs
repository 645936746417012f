//! Part 4: the control plane. Maglev table build time at M = 65537 for 10, 100 and 1000
//! backends (`lb_userspace::maglev::build`, the function the agent calls); the share of table
//! entries that move when one backend of N leaves, against the ideal 1/N; the resident
//! memory of the release agent running 100 services of 100 backends each in a lab namespace;
//! and what a Prometheus scrape of that agent costs: its latency, the agent's CPU time (all
//! threads, from /proc) per scrape, and how late the agent's loop answers a control request
//! while scrapes run back to back (the scrape must not block the loop).

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_userspace::maglev::{self, Entry};
use serde_json::json;
use xlb_tests::{plan, Lab};

use crate::{
    lab::wait_all_up,
    report::{median, write_json, Row},
    say, Settings,
};

const PART: &str = "4 control plane";
const M: u32 = 65537;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256)).collect()
}

fn entries(names: &[String]) -> Vec<Entry> {
    names.iter().map(|n| Entry::for_name(n.as_bytes(), 1, M)).collect()
}

fn build(e: &[Entry]) -> Result<Vec<u32>> {
    maglev::build(e, M).map_err(|e| anyhow::anyhow!("{e}"))
}

/// (median, min) build time in ms over `reps` builds, after 3 unmeasured ones.
fn build_time(n: usize, reps: usize) -> Result<(f64, f64)> {
    let e = entries(&names(n));
    for _ in 0..3 {
        std::hint::black_box(build(&e)?);
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let table = build(std::hint::black_box(&e))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(table);
    }
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok((median(&times), min))
}

/// Share of the table's entries that change owner when one backend of `n` leaves, averaged
/// over several choices of the leaving backend; and the share that moved between backends that
/// stayed (ideally 0).
fn disruption(n: usize) -> Result<(f64, f64, usize)> {
    let all = names(n);
    let ids: Vec<u32> = (0..n as u32).collect();
    let full = maglev::relabel(&build(&entries(&all))?, &ids);
    let trials: Vec<usize> = (0..n.min(10)).map(|k| k * n / n.min(10)).collect();
    let (mut moved, mut collateral) = (0.0, 0.0);
    for &gone in &trials {
        let rest: Vec<String> = all.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, s)| s.clone()).collect();
        let rest_ids: Vec<u32> = ids.iter().copied().filter(|&i| i != gone as u32).collect();
        let after = maglev::relabel(&build(&entries(&rest))?, &rest_ids);
        let changed = maglev::disruption(&full, &after);
        let lost = full.iter().filter(|&&b| b == gone as u32).count();
        moved += changed as f64 / M as f64;
        collateral += (changed - lost) as f64 / M as f64;
    }
    Ok((moved / trials.len() as f64, collateral / trials.len() as f64, trials.len()))
}

/// kB value of `key` in /proc/<pid>/status.
fn proc_status_kb(pid: u32, key: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("{key} in /proc/{pid}/status"))
}

struct Rss {
    rss_kb: u64,
    hwm_kb: u64,
    ready_seconds: f64,
    backends_up: usize,
    map_bytes: Option<u64>,
    scrape: Scrapes,
}

/// What scrapes of `/metrics` cost the agent.
#[derive(Debug, Default)]
struct Scrapes {
    count: usize,
    /// Median latency of one scrape, ms.
    latency_ms: f64,
    /// The exposition's size.
    bytes: usize,
    series: usize,
    /// The agent's CPU time (user + system, every thread) per scrape, beyond its idle rate, ms.
    cpu_ms: f64,
    /// Control-socket status requests answered by the loop: median latency idle and while
    /// scrapes run (one every 50 ms plus its own time), ms.
    loop_idle_ms: f64,
    loop_scraping_ms: f64,
}

const HTTP: &str = "127.0.0.1:9480";

/// CPU time (user + system) of process `pid`, in ms.
fn cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("/proc/pid/stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks as f64 * 1000.0 / hz)
}

/// GET `path` from the agent's listener (from inside its namespace): the body.
fn get(path: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(HTTP)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {HTTP}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// Scrapes the agent `pid` (listening in namespace `ns`) `n` times, and times `xlb stats`
/// requests to its loop idle and while scrapes run.
fn scrapes(ns: &str, pid: u32, xlb: &Path, socket: &Path, n: usize) -> Result<Scrapes> {
    let status_ms = |xlb: &Path, socket: &Path, k: usize| -> Result<Vec<f64>> {
        (0..k)
            .map(|_| {
                let t = Instant::now();
                xlb_tests::scenario::status(xlb, socket)?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    };
    let loop_idle = median(&status_ms(xlb, socket, 10)?);
    // The agent's idle CPU rate, then the same time with scrapes.
    let idle_from = (cpu_ms(pid)?, Instant::now());
    thread::sleep(Duration::from_secs(2));
    let idle_rate = (cpu_ms(pid)? - idle_from.0) / idle_from.1.elapsed().as_secs_f64();
    let started = (cpu_ms(pid)?, Instant::now());
    let latencies = xlb_tests::spawn_in_netns(ns, move || -> Result<(Vec<f64>, usize, usize)> {
        let (mut ms, mut bytes, mut series) = (Vec::new(), 0, 0);
        for _ in 0..n {
            let t = Instant::now();
            let body = get("/metrics")?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            bytes = body.len();
            series = body.lines().filter(|l| !l.starts_with('#')).count();
        }
        Ok((ms, bytes, series))
    })?
    .join()
    .map_err(|_| anyhow::anyhow!("scraper panicked"))??;
    let spent = cpu_ms(pid)? - started.0 - idle_rate * started.1.elapsed().as_secs_f64();
    // The loop while a scrape is under way most of the time (one every 50 ms beyond the
    // scrape itself: back to back, a scraper would take a whole CPU of two from everything).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let scraper = xlb_tests::spawn_in_netns(ns, move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = get("/metrics");
            thread::sleep(Duration::from_millis(50));
        }
    })?;
    thread::sleep(Duration::from_millis(200));
    let loop_scraping = median(&status_ms(xlb, socket, 10)?);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = scraper.join();
    Ok(Scrapes {
        count: n,
        latency_ms: median(&latencies.0),
        bytes: latencies.1,
        series: latencies.2,
        cpu_ms: spent.max(0.0) / n as f64,
        loop_idle_ms: loop_idle,
        loop_scraping_ms: loop_scraping,
    })
}

const SERVICES: usize = 100;
/// Scrapes timed.
const SCRAPES: usize = 20;
const BACKENDS: usize = 100;

/// The agent with 100 services x 100 backends. The backends (203.0.113.101-200, the same in
/// every service) do not exist; permanent neighbour entries give them MACs, so the agent
/// builds and publishes all 100 full tables, as it would with live backends.
fn agent_rss() -> Result<Rss> {
    let xlb = xlb_tests::scenario::xlb_bin()?;
    let mut lab = Lab::new("brss")?;
    let node = lab.host("lb1", 2)?;
    let mut batch = String::new();
    for i in 0..BACKENDS {
        batch.push_str(&format!("neigh replace {} lladdr 02:00:00:00:02:{:02x} dev eth0 nud permanent\n", plan::v4(101 + i as u8), i));
    }
    let batch_path = lab.dir.join("neigh.batch");
    std::fs::write(&batch_path, batch)?;
    xlb_tests::run(Command::new("ip").args(["-n", &node.ns, "-batch"]).arg(&batch_path))?;
    let socket = lab.dir.join("xlb.sock");
    let pins = lab.bpffs()?.join("xlb");
    let mut config = format!(
        "[agent]\ninterfaces = [\"eth0\"]\nxdp_mode = \"native\"\npin_path = \"{}\"\ncontrol_socket = \"{}\"\nmax_services = {SERVICES}\nassign_vips = true\nhttp = \"{HTTP}\"\n",
        pins.display(),
        socket.display()
    );
    for s in 0..SERVICES {
        config.push_str(&format!(
            "\n[[service]]\nname = \"svc{s:03}\"\nvip = \"{}\"\nport = {}\nprotocol = \"tcp\"\ntable_size = {M}\n",
            plan::VIP4,
            10000 + s
        ));
        for b in 0..BACKENDS {
            config.push_str(&format!("[[service.backend]]\naddress = \"{}\"\n", plan::v4(101 + b as u8)));
        }
    }
    let path = lab.dir.join("xlb.toml");
    std::fs::write(&path, config)?;
    let pid = lab.spawn(&node.ns, "xlb", &xlb, &["run", "--config", &path.display().to_string()])?.id();
    let up = wait_all_up(&lab, &xlb, &socket, Some(SERVICES * BACKENDS), Duration::from_secs(60))?;
    let ready_seconds = up.as_secs_f64();
    // Let it settle (one neighbour re-confirmation round), then read its memory.
    thread::sleep(Duration::from_secs(2));
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "xlb" {
        bail!("pid {pid} is {:?}, not the agent", comm.trim());
    }
    let rss_kb = proc_status_kb(pid, "VmRSS:")?;
    let hwm_kb = proc_status_kb(pid, "VmHWM:")?;
    let map_bytes = pinned_map_bytes(&pins);
    let scrape = scrapes(&node.ns, pid, &xlb, &socket, SCRAPES)?;
    lab.signal("xlb", nix::sys::signal::Signal::SIGTERM)?;
    Ok(Rss { rss_kb, hwm_kb, ready_seconds, backends_up: SERVICES * BACKENDS, map_bytes, scrape })
}

/// Kernel memory of the agent's pinned maps, as bpftool reports it (`bytes_memlock`).
fn pinned_map_bytes(dir: &Path) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        let name = path.file_name()?.to_str()?.to_owned();
        if name == "prog" || name.starts_with("link_") {
            continue;
        }
        let out = Command::new("bpftool").args(["-j", "map", "show", "pinned"]).arg(&path).output().ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        total += v["bytes_memlock"].as_u64()?;
    }
    Some(total)
}

pub fn run(s: &Settings, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let reps = if s.quick { 10 } else { 100 };
    let mut rows = Vec::new();
    let mut builds = serde_json::Map::new();
    for n in [10usize, 100, 1000] {
        let (med, min) = build_time(n, reps)?;
        say!("control: Maglev build, {n} backends, M = {M}: median {med:.3} ms, min {min:.3} ms");
        let row = Row::new(PART, format!("Maglev build, {n} backends, M = {M}"), format!("{med:.2} ms (min {min:.2})"));
        // The target, judged like part 1's on the floor (the fastest build).
        rows.push(if n == 1000 { row.target(format!("< 1 ms (floor {min:.2})"), Some(min < 1.0)) } else { row });
        builds.insert(n.to_string(), json!({ "median_ms": med, "min_ms": min, "builds": reps }));
    }
    let mut moves = serde_json::Map::new();
    for n in [10usize, 100, 1000] {
        let (moved, collateral, trials) = disruption(n)?;
        let ideal = 1.0 / n as f64;
        say!("control: one of {n} backends leaves: {:.4}% of entries move (ideal {:.4}%), {:.4}% between backends that stayed", moved * 100.0, ideal * 100.0, collateral * 100.0);
        rows.push(
            Row::new(PART, format!("entries moved when 1 of {n} backends leaves"), format!("{:.3}% ({:.3}% among the others)", moved * 100.0, collateral * 100.0))
                .reference(format!("ideal 1/N = {:.3}%", ideal * 100.0), Some(moved / ideal))
                .target("(ideal 1.00)", None),
        );
        moves.insert(n.to_string(), json!({ "moved_share": moved, "ideal_share": ideal, "ratio_to_ideal": moved / ideal, "moved_between_remaining_share": collateral, "trials": trials }));
    }
    let rss = agent_rss().context("agent memory with 100 services x 100 backends")?;
    say!("control: agent with {SERVICES} x {BACKENDS}: VmRSS {} kB, VmHWM {} kB, ready in {:.1} s", rss.rss_kb, rss.hwm_kb, rss.ready_seconds);
    rows.push(Row::new(
        PART,
        format!("agent resident memory, {SERVICES} services x {BACKENDS} backends"),
        format!("{:.1} MiB RSS (peak {:.1} MiB)", rss.rss_kb as f64 / 1024.0, rss.hwm_kb as f64 / 1024.0),
    ));
    let sc = &rss.scrape;
    say!("control: scrape: {sc:?}");
    rows.push(
        Row::new(
            PART,
            format!("/metrics scrape, {SERVICES} services x {BACKENDS} backends ({} series, {:.1} MiB)", sc.series, sc.bytes as f64 / (1 << 20) as f64),
            format!("{:.1} ms per scrape, {:.1} ms agent CPU (all threads)", sc.latency_ms, sc.cpu_ms),
        )
        .reference(format!("loop answers in {:.1} ms idle", sc.loop_idle_ms), Some(sc.loop_scraping_ms / sc.loop_idle_ms))
        .target(
            &format!("loop not blocked: {:.1} ms while scraping (<= 1.5x idle)", sc.loop_scraping_ms),
            Some(sc.loop_scraping_ms <= 1.5 * sc.loop_idle_ms),
        ),
    );
    notes.push(format!(
        "control plane: Maglev builds timed in this process (release build), median of {reps}; disruption averaged over up to 10 choices of the leaving backend; \
         the agent (release) started with {SERVICES} services x {BACKENDS} backends (M = {M}) was ready with all {} backends up in {:.1} s{}",
        rss.backends_up,
        rss.ready_seconds,
        match rss.map_bytes {
            Some(b) => format!("; its BPF maps hold {:.0} MiB of kernel memory (not in RSS)", b as f64 / (1 << 20) as f64),
            None => String::new(),
        }
    ));
    let json = json!({
        "part": "control plane",
        "table_size": M,
        "maglev_build": builds,
        "disruption_one_backend_leaves": moves,
        "agent": {
            "services": SERVICES, "backends_per_service": BACKENDS, "vm_rss_kb": rss.rss_kb, "vm_hwm_kb": rss.hwm_kb,
            "ready_seconds": rss.ready_seconds, "backends_up": rss.backends_up, "bpf_map_bytes_memlock": rss.map_bytes,
        },
        "scrape": {
            "scrapes": sc.count, "latency_ms_median": sc.latency_ms, "bytes": sc.bytes, "series": sc.series,
            "agent_cpu_ms_per_scrape": sc.cpu_ms, "loop_status_ms_idle": sc.loop_idle_ms, "loop_status_ms_while_scraping": sc.loop_scraping_ms,
            "method": "20 sequential GET /metrics from the agent's namespace; CPU from /proc/<pid>/stat (utime+stime, all threads) minus the idle rate measured over 2 s before; loop latency = median of 10 `xlb stats` requests (answered on the agent's loop) idle, then while another thread scrapes with 50 ms pauses",
        },
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let path = write_json("control", &json)?;
    say!("control: wrote {}", path.display());
    Ok(rows)
}
