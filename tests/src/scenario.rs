//! Ready-made labs shared by the tests and `cargo xtask lab`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_common::status::Status;

use crate::{
    plan,
    traffic::{HttpServer, Servers},
    Host, Lab,
};

/// The configuration the demo ships (config/lab.toml).
pub const LAB_CONFIG: &str = include_str!("../../config/lab.toml");

/// The `[agent]` section of config/lab.toml, for tests that write their own services. Its
/// pin path and control socket are replaced with the lab's own when the node starts.
pub fn lab_agent_section() -> &'static str {
    let end = LAB_CONFIG.find("[[service]]").expect("lab config has services");
    &LAB_CONFIG[..end]
}

/// config/lab.toml's `[agent]` with one TCP service, `web4`, on the IPv4 VIP's port 80 over
/// `backends`: (last octet on 203.0.113.0/24, weight), in this order.
pub fn web4_config(backends: &[(u8, u32)]) -> String {
    let mut text = format!("{}[[service]]\nname = \"web4\"\nvip = \"{}\"\nport = 80\n", lab_agent_section(), plan::VIP4);
    for (octet, weight) in backends {
        text += &format!("[[service.backend]]\naddress = \"203.0.113.{octet}\"\nweight = {weight}\n");
    }
    text
}

/// What the backends run on TCP port 80.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// A server that writes its name and closes.
    Name,
    /// A keep-alive HTTP server answering with its name ([`HttpServer`]), controllable.
    Http,
}

/// The `xlb` binary under test: `$XLB_BIN` (set by `cargo xtask test`), else the workspace's
/// debug build.
pub fn xlb_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("XLB_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/xlb"),
    };
    if !path.exists() {
        bail!("{} does not exist: build it first (cargo xtask build), or run the suite with cargo xtask test", path.display());
    }
    Ok(path)
}

/// The agent's status through `xlb stats --json`, which must parse as a [`Status`].
pub fn status(xlb: &Path, socket: &Path) -> Result<Status> {
    let out = Command::new(xlb).args(["stats", "--json", "--socket"]).arg(socket).output()?;
    if !out.status.success() {
        bail!("xlb stats ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("xlb stats --json: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A service's (packets, bytes), and each backend's (address, packets, bytes).
pub type ServiceCounters = ((u64, u64), Vec<(String, u64, u64)>);

/// One load-balancer node running xlb with config/lab.toml, three backends (`b1`..`b3`,
/// .11-.13) serving TCP port 80 and UDP port 53 on the VIPs, and a client (.10).
pub struct SingleNode {
    // Dropped first: server threads leave the namespaces before they are deleted.
    pub servers: Servers,
    /// With [`Serve::Http`]: b1..b3's HTTP servers.
    pub http: Vec<HttpServer>,
    pub lab: Lab,
    pub client: Host,
    pub lb: Host,
    pub backends: Vec<Host>,
    pub xlb: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    /// The agent's pin path (on the lab's own bpffs, so pins outlive a killed agent).
    pub pins: PathBuf,
}

pub const BACKEND_NAMES: [&str; 3] = ["b1", "b2", "b3"];

/// Adds the direct-routing backends `b1`..`b3` (.11-.13) holding both VIPs on `lo`.
pub fn add_backends(lab: &mut Lab) -> Result<Vec<Host>> {
    let mut backends = Vec::new();
    for (i, name) in BACKEND_NAMES.iter().enumerate() {
        backends.push(lab.backend(name, 11 + i as u8, &[plan::VIP4, plan::VIP6])?);
    }
    Ok(backends)
}

/// Configuration `config` (config/lab.toml or one written like it) with its pin path and
/// control socket replaced by `pins` and `socket`, and its runtime file put beside the socket.
pub fn agent_config(config: &str, pins: &Path, socket: &Path) -> String {
    config
        .replace("/sys/fs/bpf/xlb-lab", &pins.display().to_string())
        .replace("/run/xlb/lab.sock", &socket.display().to_string())
        .replace("/run/xlb/lab-runtime.json", &runtime_file(socket).display().to_string())
}

/// Where [`agent_config`] puts the runtime file of the agent on `socket`.
pub fn runtime_file(socket: &Path) -> PathBuf {
    socket.with_extension("runtime.json")
}

/// Waits until the agent behind `socket` answers and every backend of every service is up
/// (MAC learnt); on timeout the error carries `log()`, the agent's log.
pub fn wait_agent_ready(xlb: &Path, socket: &Path, timeout: Duration, log: impl Fn() -> String) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer on the control socket");
    while Instant::now() < deadline {
        match status(xlb, socket) {
            Ok(status) => {
                let states: Vec<String> = status.backends().map(|b| format!("{}={}", b.address, b.state)).collect();
                if !states.is_empty() && states.iter().all(|s| s.ends_with("=up")) {
                    return Ok(());
                }
                last = states.join(" ");
            }
            // Not up yet, or an answer that is no Status: the timeout says which.
            Err(e) => last = format!("{e:#}"),
        }
        thread::sleep(Duration::from_millis(100));
    }
    bail!("xlb not ready after {timeout:?}: {last}\nagent log:\n{}", log())
}

impl SingleNode {
    pub fn start(tag: &str) -> Result<SingleNode> {
        Self::start_with(tag, LAB_CONFIG, Serve::Name)
    }

    /// Like [`SingleNode::start`] with configuration `config` (its pin path and control socket,
    /// those of config/lab.toml, are replaced with the lab's) and backends serving `serve`.
    pub fn start_with(tag: &str, config: &str, serve: Serve) -> Result<SingleNode> {
        let xlb = xlb_bin()?;
        let mut lab = Lab::new(tag)?;
        let client = lab.host("client", 10)?;
        let lb = lab.host("lb1", 2)?;
        let backends = add_backends(&mut lab)?;
        lab.attach_xdp_pass(&format!("p-{}", lb.name))?;
        let socket = lab.dir.join("xlb.sock");
        let path = lab.dir.join("xlb.toml");
        let pins = lab.bpffs()?.join("xlb");
        std::fs::write(&path, agent_config(config, &pins, &socket))?;
        let config = path;
        let mut servers = Servers::default();
        let mut http = Vec::new();
        for b in &backends {
            match serve {
                Serve::Name => servers.tcp(&b.ns, &b.name, 80)?,
                Serve::Http => http.push(HttpServer::start(&b.ns, &b.name, 80)?),
            }
            servers.udp(&b.ns, &b.name, &[format!("{}:53", plan::VIP4).parse()?, format!("[{}]:53", plan::VIP6).parse()?])?;
        }
        let mut node = SingleNode { servers, http, lab, client, lb, backends, xlb, config, socket, pins };
        node.start_agent()?;
        Ok(node)
    }

    /// Starts xlb on the node (its log is `xlb`) and waits until it is ready.
    pub fn start_agent(&mut self) -> Result<()> {
        self.start_agent_with(&[], &[])
    }

    /// [`SingleNode::start_agent`] with extra environment variables, and run through
    /// `wrapper` (a program and its arguments, e.g. `prlimit --nofile=64:4096`) if given.
    pub fn start_agent_with(&mut self, env: &[(&str, &str)], wrapper: &[&str]) -> Result<()> {
        let config_arg = self.config.display().to_string();
        let (ns, xlb) = (self.lb.ns.clone(), self.xlb.display().to_string());
        let mut argv: Vec<&str> = wrapper.to_vec();
        argv.extend([xlb.as_str(), "run", "--config", &config_arg]);
        let program = std::path::PathBuf::from(argv[0]);
        self.lab.spawn_with_env(&ns, "xlb", &program, &argv[1..], env)?;
        self.wait_ready(Duration::from_secs(15))
    }

    pub fn status(&self) -> Result<Status> {
        status(&self.xlb, &self.socket)
    }

    /// Waits until the agent answers and every backend of every service is up (MAC learnt).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_agent_ready(&self.xlb, &self.socket, timeout, || self.lab.log("xlb"))
    }

    /// Counters of service `name` and of its backends, by address: (packets, bytes).
    pub fn service_counters(&self, name: &str) -> Result<ServiceCounters> {
        let status = self.status()?;
        let svc = status.service(name).with_context(|| format!("service {name} not in status"))?;
        let backends = svc.backends.iter().map(|b| (b.address.clone(), b.counters.packets, b.counters.bytes)).collect();
        Ok(((svc.counters.packets, svc.counters.bytes), backends))
    }

    /// `xlb ARGS --socket <the agent's>`, to run or to spawn.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.xlb);
        cmd.args(args).arg("--socket").arg(&self.socket);
        cmd
    }

    /// Runs `xlb ARGS --socket <the agent's>`: whether it succeeded, and its stdout and stderr.
    pub fn cli(&self, args: &[&str]) -> Result<(bool, String)> {
        let out = self.cli_command(args).output()?;
        Ok((out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))))
    }

    /// [`SingleNode::cli`] that must succeed; its output.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let (success, out) = self.cli(args)?;
        if !success {
            bail!("xlb {}: {out}", args.join(" "));
        }
        Ok(out)
    }

    /// Fails with the agent's log if it logged an error.
    pub fn no_agent_errors(&self) -> Result<()> {
        let log = self.lab.log("xlb");
        if log.lines().any(|l| l.contains(" ERROR ")) {
            bail!("the agent logged errors:\n{log}");
        }
        Ok(())
    }

    /// A global counter by name.
    pub fn counter(&self, name: &str) -> Result<u64> {
        self.status()?.counters.get(name).copied().with_context(|| format!("counter {name}"))
    }
}
