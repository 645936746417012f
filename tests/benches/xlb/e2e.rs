//! Part 3: end to end. Three backends run nginx serving a 1 KiB file; wrk in the client
//! namespace measures requests per second and latency through
//!
//! - xlb: direct routing, the client talks to the VIP, the backends answer it directly;
//! - HAProxy 2.6 in TCP mode on lb1 (`mode tcp`, round robin, 2 threads);
//! - nginx `stream` proxy on lb1 (2 workers);
//! - the limit: the client straight to the backends' own addresses, one wrk per backend at the
//!   same time, summed;
//! - the forwarding-path limit: `bench_minimal` (lb-ebpf/src/bench.rs), a minimal XDP forwarder
//!   (a hash of the 5-tuple mod 3 picks one of the three backends' MACs, XDP_TX, no other map),
//!   swapped into the agent's own XDP link on lb1's eth0 in xlb's place while the agent keeps
//!   running: the same veth and XDP path, VIP and background work as xlb, with nothing of xlb's
//!   own per-packet work.
//!
//! Same backends, same client, one invocation: a phase with keep-alive, then one with
//! `Connection: close` ([`PHASES`]). Every round of a phase runs xlb and the minimal forwarder
//! back to back, in an order alternating with the round (every few rounds also the limit and
//! the proxies), and xlb's rows are judged on the median of per-round ratios (xlb against the
//! same round's minimal forwarder or limit), shown with their spread. The proxies listen on
//! lb1's own address while the agent keeps running, so their packets cross xlb's XDP program
//! as non-VIP traffic (XDP_PASS; part 1 gives its cost).
//!
//! Latency: a wrk Lua `done()` hook prints 999 quantiles of each run; runs are merged as the
//! union of those quantiles weighted by each run's request count (the only way to combine the
//! three wrk processes of the limit, and the rounds). CPU: the whole machine's busy time from
//! /proc/stat across each run, per 100 000 requests.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;
use xlb_tests::plan;

use crate::{
    lab::BenchLab,
    report::{spread, write_json, Row},
    say, Settings,
};

const PART: &str = "3 end-to-end";
const HAPROXY_PORT: u16 = 8081;
const NGINX_PORT: u16 = 8082;
const FILE: &str = "1k";
/// Total connections and client threads for every target (the limit splits them across its
/// three wrk processes).
const CONNECTIONS: usize = 60;
const THREADS: usize = 3;
/// Per mode, in order: rounds, and every how many rounds the limit, HAProxy and nginx run too
/// (xlb and the minimal forwarder run in every round). Three runs of each of the others per
/// mode; the rest of the time goes to the pair, most of it with `Connection: close`.
const PHASES: [(Mode, usize, usize); 2] = [(Mode::KeepAlive, 9, 3), (Mode::Close, 15, 5)];
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("XLBBENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  local q = {}
  for i = 1, 999 do q[i] = string.format("%d", latency:percentile(i / 10.0)) end
  io.write("XLBBENCH quantiles " .. table.concat(q, " ") .. "\n")
end
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    KeepAlive,
    Close,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::Close => "Connection: close",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keepalive",
            Mode::Close => "close",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Limit,
    Minimal,
    Xlb,
    Haproxy,
    Nginx,
}

/// In the order of the table.
const ALL_TARGETS: [Target; 5] = [Target::Limit, Target::Minimal, Target::Xlb, Target::Haproxy, Target::Nginx];

impl Target {
    fn label(self) -> &'static str {
        match self {
            Target::Limit => "limit (client -> backends, 3 wrk)",
            Target::Minimal => "minimal XDP forwarder (hash mod 3, XDP_TX)",
            Target::Xlb => "xlb (direct routing)",
            Target::Haproxy => "HAProxy 2.6 tcp mode",
            Target::Nginx => "nginx stream proxy",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Target::Limit => "limit",
            Target::Minimal => "minimal_xdp",
            Target::Xlb => "xlb",
            Target::Haproxy => "haproxy",
            Target::Nginx => "nginx_stream",
        }
    }
}

/// One wrk process's result.
#[derive(Clone, Debug, Default)]
struct Wrk {
    requests: u64,
    seconds: f64,
    errors: u64,
    /// 999 latency quantiles (0.1% .. 99.9%), microseconds.
    quantiles: Vec<f64>,
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    let mut seen = false;
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("XLBBENCH ") else { continue };
        if let Some(q) = rest.strip_prefix("quantiles ") {
            w.quantiles = q.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        } else {
            seen = true;
            for kv in rest.split_whitespace() {
                let (k, v) = kv.split_once('=').context("wrk summary")?;
                let v: u64 = v.parse()?;
                match k {
                    "requests" => w.requests = v,
                    "duration_us" => w.seconds = v as f64 / 1e6,
                    _ => w.errors += v,
                }
            }
        }
    }
    if !seen || w.quantiles.len() != 999 {
        bail!("no summary from wrk's done() hook in its output:\n{out}");
    }
    Ok(w)
}

/// Quantile `q` (0..1) of the union of runs, each quantile point weighted by its run's
/// requests / 999.
fn merged_quantile(runs: &[&Wrk], q: f64) -> f64 {
    let mut points: Vec<(f64, f64)> = runs
        .iter()
        .filter(|r| r.requests > 0)
        .flat_map(|r| r.quantiles.iter().map(move |&v| (v, r.requests as f64 / 999.0)))
        .collect();
    if points.is_empty() {
        return f64::NAN;
    }
    points.sort_by(|a, b| a.0.partial_cmp(&b.0).expect("no NaN"));
    let total: f64 = points.iter().map(|p| p.1).sum();
    let mut acc = 0.0;
    for (v, w) in &points {
        acc += w;
        if acc >= q * total {
            return *v;
        }
    }
    points.last().expect("non-empty").0
}

/// Whole-machine busy CPU time from /proc/stat, in seconds.
fn machine_cpu_seconds() -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    // SAFETY: sysconf takes no pointer and only reads a system value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((total - idle) as f64 / hz)
}

/// One measured run of one target: its wrk processes, and the machine's CPU time.
#[derive(Clone, Debug)]
struct Run {
    target: Target,
    mode: Mode,
    round: usize,
    wrks: Vec<Wrk>,
    cpu_seconds: f64,
}

impl Run {
    fn requests(&self) -> u64 {
        self.wrks.iter().map(|w| w.requests).sum()
    }
    /// Requests per second: the sum of the wrk processes' rates.
    fn rps(&self) -> f64 {
        self.wrks.iter().map(|w| w.requests as f64 / w.seconds.max(1e-9)).sum()
    }
    fn errors(&self) -> u64 {
        self.wrks.iter().map(|w| w.errors).sum()
    }
}

struct Services {
    www: PathBuf,
    script: PathBuf,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn nginx_backend_conf(dir: &Path, name: &str, www: &Path) -> Result<PathBuf> {
    let tmp = dir.join(format!("nginx-{name}"));
    std::fs::create_dir_all(&tmp)?;
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {t}/nginx.pid;\nerror_log {t}/error.log warn;\n\
         worker_rlimit_nofile 16000;\nevents {{ worker_connections 8000; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n  keepalive_timeout 65;\n  keepalive_requests 100000000;\n\
           client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n\
           server {{\n    listen 80 backlog=4096;\n    root {www};\n    location / {{ }}\n  }}\n}}\n",
        t = tmp.display(),
        www = www.display()
    );
    let path = tmp.join("nginx.conf");
    write(&path, &conf)?;
    Ok(path)
}

fn nginx_stream_conf(dir: &Path, backends: &[String]) -> Result<PathBuf> {
    let tmp = dir.join("nginx-stream");
    std::fs::create_dir_all(&tmp)?;
    let servers: String = backends.iter().map(|b| format!("    server {b}:80;\n")).collect();
    let conf = format!(
        "load_module {STREAM_MODULE};\ndaemon off;\nmaster_process on;\nworker_processes 2;\nuser root;\npid {t}/nginx.pid;\nerror_log {t}/error.log warn;\n\
         worker_rlimit_nofile 16000;\nevents {{ worker_connections 8000; }}\n\
         stream {{\n  upstream be {{\n{servers}  }}\n  server {{\n    listen {lb}:{NGINX_PORT} backlog=4096;\n    proxy_pass be;\n  }}\n}}\n",
        t = tmp.display(),
        lb = plan::v4(2),
    );
    let path = tmp.join("nginx.conf");
    write(&path, &conf)?;
    Ok(path)
}

fn haproxy_conf(dir: &Path, backends: &[String]) -> Result<PathBuf> {
    let servers: String = backends.iter().enumerate().map(|(i, b)| format!("    server b{} {b}:80\n", i + 1)).collect();
    let conf = format!(
        "global\n    nbthread 2\n    maxconn 8000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n    maxconn 8000\n\n\
         frontend fe\n    bind {lb}:{HAPROXY_PORT}\n    default_backend be\n\nbackend be\n    balance roundrobin\n{servers}",
        lb = plan::v4(2),
    );
    let path = dir.join("haproxy.cfg");
    write(&path, &conf)?;
    Ok(path)
}

/// Waits until `addr` accepts a TCP connection from namespace `ns`.
fn wait_listening(ns: &str, addr: SocketAddr, what: &str, lab: &xlb_tests::Lab, log: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = xlb_tests::in_netns(ns, || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())?;
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} does not accept connections on {addr}; its log:\n{}", lab.log(log));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_wrk(ns: &str, script: &Path, url: &str, threads: usize, connections: usize, seconds: u64, mode: Mode) -> Result<Child> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "wrk"])
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "--latency", "-s"])
        .arg(script);
    if mode == Mode::Close {
        c.args(["-H", "Connection: close"]);
    }
    c.arg(url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().context("starting wrk")
}

fn run_once(bl: &BenchLab, svc: &Services, target: Target, mode: Mode, round: usize, seconds: u64) -> Result<Run> {
    let urls: Vec<(String, usize, usize)> = match target {
        Target::Limit => bl
            .backends
            .iter()
            .map(|b| (format!("http://{}/{FILE}", b.v4), 1, CONNECTIONS / bl.backends.len()))
            .collect(),
        Target::Xlb | Target::Minimal => vec![(format!("http://{}/{FILE}", plan::VIP4), THREADS, CONNECTIONS)],
        Target::Haproxy => vec![(format!("http://{}:{HAPROXY_PORT}/{FILE}", plan::v4(2)), THREADS, CONNECTIONS)],
        Target::Nginx => vec![(format!("http://{}:{NGINX_PORT}/{FILE}", plan::v4(2)), THREADS, CONNECTIONS)],
    };
    let cpu0 = machine_cpu_seconds()?;
    let children: Vec<Child> = urls
        .iter()
        .map(|(url, t, c)| spawn_wrk(&bl.client.ns, &svc.script, url, *t, *c, seconds, mode))
        .collect::<Result<_>>()?;
    let mut wrks = Vec::new();
    for child in children {
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("wrk failed ({}): {}{}", out.status, text, String::from_utf8_lossy(&out.stderr));
        }
        wrks.push(parse_wrk(&text)?);
    }
    let cpu_seconds = machine_cpu_seconds()? - cpu0;
    let run = Run { target, mode, round, wrks, cpu_seconds };
    say!(
        "e2e: {:<18} {:<36} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  errors {}  CPU {:.1} s",
        mode.label(),
        target.label(),
        run.rps(),
        merged_quantile(&run.wrks.iter().collect::<Vec<_>>(), 0.5),
        merged_quantile(&run.wrks.iter().collect::<Vec<_>>(), 0.99),
        run.errors(),
        run.cpu_seconds
    );
    Ok(run)
}

/// Aggregate of one (target, mode) over the rounds.
struct Summary {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_per_100k: f64,
    requests: u64,
    errors: u64,
}

fn summarize(runs: &[Run], target: Target, mode: Mode) -> Summary {
    let mine: Vec<&Run> = runs.iter().filter(|r| r.target == target && r.mode == mode).collect();
    let wrks: Vec<&Wrk> = mine.iter().flat_map(|r| r.wrks.iter()).collect();
    let requests: u64 = mine.iter().map(|r| r.requests()).sum();
    let cpu: f64 = mine.iter().map(|r| r.cpu_seconds).sum();
    Summary {
        rps: mine.iter().map(|r| r.rps()).sum::<f64>() / mine.len().max(1) as f64,
        p50_us: merged_quantile(&wrks, 0.5),
        p99_us: merged_quantile(&wrks, 0.99),
        cpu_per_100k: if requests > 0 { cpu / requests as f64 * 1e5 } else { f64::NAN },
        requests,
        errors: mine.iter().map(|r| r.errors()).sum(),
    }
}

/// Packets xlb's web service has forwarded so far (its data-plane counters, read by the agent).
fn web_packets(bl: &BenchLab) -> Result<u64> {
    let status = bl.status()?;
    status.service("web").map(|web| web.counters.packets).context("no web service in xlb's status")
}

/// Per round that ran both, `target`'s requests per second over `reference`'s in the same
/// round and mode.
fn per_round_ratios(runs: &[Run], target: Target, reference: Target, mode: Mode) -> Vec<f64> {
    let find = |t: Target, round: usize| runs.iter().find(|r| r.target == t && r.mode == mode && r.round == round).map(Run::rps);
    let rounds = runs.iter().map(|r| r.round).max().map_or(0, |m| m + 1);
    (0..rounds).filter_map(|round| Some(find(target, round)? / find(reference, round)?)).collect()
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

pub fn run(s: &Settings, notes: &mut Vec<String>) -> Result<Vec<Row>> {
    let (seconds, warmup) = if s.quick { (2u64, false) } else { (5, true) };
    if !Path::new(STREAM_MODULE).exists() {
        bail!("{STREAM_MODULE} is missing: install libnginx-mod-stream (cargo xtask bench does)");
    }
    let mut bl = BenchLab::start("be2e")?;
    for ns in [bl.client.ns.clone(), bl.lb.ns.clone()] {
        bl.lab.sysctl(&ns, "net.ipv4.ip_local_port_range", "1024 65535")?;
        bl.lab.sysctl(&ns, "net.ipv4.tcp_tw_reuse", "1")?;
    }
    bl.start_agent()?;
    let dir = bl.lab.dir.clone();
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    write(&www.join(FILE), &"x".repeat(1024))?;
    let script = dir.join("report.lua");
    write(&script, WRK_SCRIPT)?;
    let svc = Services { www: www.clone(), script };
    let backend_addrs: Vec<String> = bl.backends.iter().map(|b| b.v4.to_string()).collect();
    let backends = bl.backends.clone();
    for b in &backends {
        let conf = nginx_backend_conf(&dir, &b.name, &svc.www)?;
        bl.lab.spawn(&b.ns, &format!("nginx-{}", b.name), Path::new("nginx"), &["-c", &conf.display().to_string()])?;
    }
    let lb_ns = bl.lb.ns.clone();
    let hap = haproxy_conf(&dir, &backend_addrs)?;
    bl.lab.spawn(&lb_ns, "haproxy", Path::new("haproxy"), &["-db", "-f", &hap.display().to_string()])?;
    let ngx = nginx_stream_conf(&dir, &backend_addrs)?;
    bl.lab.spawn(&lb_ns, "nginx-stream", Path::new("nginx"), &["-c", &ngx.display().to_string()])?;
    let client_ns = bl.client.ns.clone();
    for b in &backends {
        wait_listening(&client_ns, SocketAddr::new(b.v4, 80), &format!("nginx on {}", b.name), &bl.lab, &format!("nginx-{}", b.name))?;
    }
    wait_listening(&client_ns, format!("{}:{HAPROXY_PORT}", plan::v4(2)).parse()?, "HAProxy", &bl.lab, "haproxy")?;
    wait_listening(&client_ns, format!("{}:{NGINX_PORT}", plan::v4(2)).parse()?, "nginx stream", &bl.lab, "nginx-stream")?;
    wait_listening(&client_ns, format!("{}:80", plan::VIP4).parse()?, "xlb's VIP", &bl.lab, "xlb")?;

    // One phase per mode, so that each mode is measured in the steady state of its own
    // traffic (with the modes interleaved, each round's runs of a mode came straight after
    // ten seconds of the other mode, on the flow table and caches it left). A round runs xlb
    // and the minimal forwarder back to back (swapped in the agent's XDP link), in an order
    // that alternates with the round so that a drift of the machine's speed falls on both alike; every few rounds it also runs
    // the limit and the proxies, through xlb. The pair gets the most rounds, and with
    // `Connection: close`, where its two figures lie closest to the target, more of them. Each
    // xlb and minimal run also proves which program forwarded it: xlb's web counters move by
    // the run's requests or more with xlb, and not at all with the minimal forwarder.
    let phases = if s.quick { [(Mode::KeepAlive, 1, 1), (Mode::Close, 1, 1)] } else { PHASES };
    let modes = phases.map(|(mode, _, _)| mode);
    let round = |bl: &mut BenchLab, mode: Mode, r: usize, others: bool, seconds: u64, runs: &mut Vec<Run>| -> Result<()> {
        let pair = if r % 2 == 0 { [Target::Minimal, Target::Xlb] } else { [Target::Xlb, Target::Minimal] };
        for target in pair {
            let minimal = target == Target::Minimal;
            if minimal {
                bl.use_minimal()?;
            }
            let before = web_packets(bl)?;
            let run = run_once(bl, &svc, target, mode, r, seconds)?;
            let moved = web_packets(bl)?.saturating_sub(before);
            if minimal {
                bl.use_xlb()?;
            }
            match target {
                Target::Minimal if moved != 0 => bail!("xlb's web service counted {moved} packets while the minimal forwarder was in its place"),
                Target::Xlb if moved < run.requests() => {
                    bail!("xlb's web service counted {moved} packets for {} requests: the run did not go through xlb", run.requests())
                }
                _ => {}
            }
            runs.push(run);
        }
        if others {
            for target in [Target::Limit, Target::Haproxy, Target::Nginx] {
                runs.push(run_once(bl, &svc, target, mode, r, seconds)?);
            }
        }
        Ok(())
    };
    let mut runs: Vec<Run> = Vec::new();
    for (mode, rounds, others_every) in phases {
        if warmup {
            say!("e2e: {}: warm-up, 1 s per target", mode.label());
            round(&mut bl, mode, 0, true, 1, &mut Vec::new())?;
        }
        for r in 0..rounds {
            say!("e2e: {}: round {}/{rounds} ({seconds} s per run)", mode.label(), r + 1);
            round(&mut bl, mode, r, r % others_every == 0, seconds, &mut runs)?;
        }
    }
    let mut rows = Vec::new();
    let mut results = serde_json::Map::new();
    for mode in modes {
        let limit = summarize(&runs, Target::Limit, mode);
        let minimal = summarize(&runs, Target::Minimal, mode);
        let mut mode_json = serde_json::Map::new();
        for target in ALL_TARGETS {
            let sm = summarize(&runs, target, mode);
            let ratio = sm.rps / limit.rps;
            let measured = format!(
                "{:.0} req/s, p50 {} p99 {}, {:.2} CPU-s/100k{}",
                sm.rps,
                ms(sm.p50_us),
                ms(sm.p99_us),
                sm.cpu_per_100k,
                if sm.errors > 0 { format!(", {} errors", sm.errors) } else { String::new() }
            );
            let kind = format!("{}: {}", mode.label(), target.label());
            let row = match target {
                Target::Limit => Row::new(PART, kind, measured),
                Target::Minimal => Row::new(PART, kind, measured)
                    .reference(format!("{:.0} req/s, p99 {}", limit.rps, ms(limit.p99_us)), Some(ratio))
                    .target(format!("(path limit; p99 {:.2}x limit)", sm.p99_us / limit.p99_us), None),
                Target::Xlb => {
                    // Judged on the median of per-round ratios (each round's xlb run against
                    // the same round's reference), printed with their spread.
                    let p99_ratio = sm.p99_us / limit.p99_us;
                    let (to_limit, lo, hi) = spread(&per_round_ratios(&runs, Target::Xlb, Target::Limit, mode));
                    rows.push(
                        Row::new(PART, kind.clone(), measured.clone())
                            .reference(format!("{:.0} req/s, p99 {}; per round {lo:.2}-{hi:.2}x", limit.rps, ms(limit.p99_us)), Some(to_limit))
                            .target(format!(">= 0.9x, p99 <= 1.1x limit (p99 {p99_ratio:.2}x)"), Some(to_limit >= 0.9 && p99_ratio <= 1.1)),
                    );
                    let (to_minimal, lo, hi) = spread(&per_round_ratios(&runs, Target::Xlb, Target::Minimal, mode));
                    Row::new(PART, format!("{}: xlb against the minimal XDP forwarder", mode.label()), format!("{:.0} req/s, p99 {}", sm.rps, ms(sm.p99_us)))
                        .reference(format!("{:.0} req/s, p99 {}; per round {lo:.2}-{hi:.2}x", minimal.rps, ms(minimal.p99_us)), Some(to_minimal))
                        .target(format!(">= 0.97x (p99 {:.2}x, CPU per request {:.2}x)", sm.p99_us / minimal.p99_us, sm.cpu_per_100k / minimal.cpu_per_100k), Some(to_minimal >= 0.97))
                }
                _ => Row::new(PART, kind, measured)
                    .reference(format!("{:.0} req/s", limit.rps), Some(ratio))
                    .target("(reported)", None),
            };
            rows.push(row);
            mode_json.insert(
                target.key().to_owned(),
                json!({
                    "rps": sm.rps, "ratio_to_limit": ratio, "p50_ms": sm.p50_us / 1000.0, "p99_ms": sm.p99_us / 1000.0,
                    "p99_ratio_to_limit": sm.p99_us / limit.p99_us, "cpu_seconds_per_100k_requests": sm.cpu_per_100k,
                    "requests": sm.requests, "errors": sm.errors,
                    "ratio_to_minimal_xdp": sm.rps / minimal.rps, "p99_ratio_to_minimal_xdp": sm.p99_us / minimal.p99_us,
                    "per_round_ratio_to_limit": per_round_ratios(&runs, target, Target::Limit, mode),
                    "per_round_ratio_to_minimal_xdp": per_round_ratios(&runs, target, Target::Minimal, mode),
                }),
            );
        }
        results.insert(mode.key().to_owned(), serde_json::Value::Object(mode_json));
    }
    notes.push(format!(
        "end-to-end: wrk, {CONNECTIONS} connections and {THREADS} threads per target (the limit: 3 wrk x 1 thread x {} connections, one per backend, summed), \
         {seconds} s runs, one phase per mode ({}), each round xlb and the minimal XDP forwarder back to back (swapped in the agent's XDP link, order alternating by round); nginx backends 1 worker each, HAProxy 2 threads, nginx stream 2 workers; \
         client, proxies, backends and wrk share the machine's 2 CPUs; CPU-s/100k is the whole machine's busy time",
        CONNECTIONS / 3,
        phases
            .iter()
            .map(|(mode, rounds, every)| format!("{}: {rounds} round(s), the limit, HAProxy and nginx in every {every}th from the first", mode.label()))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let per_run: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            json!({
                "target": r.target.key(), "mode": r.mode.key(), "round": r.round, "rps": r.rps(), "requests": r.requests(), "errors": r.errors(),
                "cpu_seconds": r.cpu_seconds,
                "p50_ms": merged_quantile(&r.wrks.iter().collect::<Vec<_>>(), 0.5) / 1000.0,
                "p99_ms": merged_quantile(&r.wrks.iter().collect::<Vec<_>>(), 0.99) / 1000.0,
            })
        })
        .collect();
    let json = json!({
        "part": "end to end (wrk, nginx backends serving 1 KiB)",
        "seconds_per_run": seconds,
        "phases": phases.iter().map(|(mode, rounds, every)| json!({"mode": mode.key(), "rounds": rounds, "others_every": every})).collect::<Vec<_>>(),
        "connections": CONNECTIONS,
        "threads": THREADS,
        "results": results,
        "runs": per_run,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    let path = write_json("e2e", &json)?;
    say!("e2e: wrote {}", path.display());
    drop(bl);
    Ok(rows)
}
