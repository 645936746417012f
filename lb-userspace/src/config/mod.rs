//! The agent's configuration: a TOML file parsed into a [`Config`], with every problem reported
//! as `file:line: message` (like `keepalived -t`), not only the first one.
//!
//! The text is parsed with `toml`'s span-keeping document parser ([`DeTable::parse`]) and the
//! tree is walked by hand, so every diagnostic carries the line of the key or table header it is
//! about. Each table is read through a `TableReader`: the walker takes the keys it knows, with
//! their types, ranges and defaults; the reader reports wrong types, missing required keys and,
//! when the walker is done, every key nobody took. Adding a key to a section is one line in that
//! section's walker.
//!
//! This file holds the public types, [`load`] and [`parse`]; the rest is one job a file:
//!
//! - `reader.rs`: the span-keeping table reader and the diagnostics of one file;
//! - `agent.rs`: `[agent]` (`read_agent`);
//! - `services.rs`: `[[service]]` and `[[service.backend]]` (`read_service`, `read_backend`),
//!   and the checks within a service and across services;
//! - `check.rs`: `[service.check]` and `[service.backend.check]` (`read_check`);
//! - `vrrp.rs`: `[[vrrp_instance]]` (`read_instance`);
//! - `announce.rs`: `[announce]` (`read_announce`), BGP scale-out instead of VRRP;
//! - `host.rs`: [`check_environment`], which checks a configuration against this host's
//!   interfaces (pure logic: the caller lists the interfaces), and [`egress_interface`], which
//!   tells which attached interface reaches a backend.
//!
//! # Reference of `[agent]` and `[[service]]` (defaults shown)
//!
//! `[service.check]` and `[[vrrp_instance]]` are described in `check.rs` and `vrrp.rs`; the
//! README's configuration reference shows every section in one file.
//!
//! ```toml
//! [agent]
//! interfaces = ["eth0"]          # required, non-empty, unique names of 1..=15 characters
//! xdp_mode = "native"            # "native" | "generic" (generic: warning, it is slow)
//! pin_path = "/sys/fs/bpf/xlb"   # absolute path
//! control_socket = "/run/xlb/xlb.sock"  # absolute path
//! flow_table_size = 1048576      # 1024 ..= 16777216
//! new_flow_rate = 50000          # 0 ..= 4294967295 new flows recorded per CPU per second; 0 = no limit
//! tcp_timeout = "15m"            # flow entries idle this long are removed; 2s ..= 7 days
//! tcp_fin_timeout = "10s"        # ... after the client's FIN; at most tcp_timeout
//! udp_timeout = "5m"
//! max_services = 64              # 1 ..= lb_common::MAX_SERVICES, at least the number of [[service]]
//! assign_vips = true             # add each VIP to the first interface while running; the
//!                                # default without [[vrrp_instance]], an error with one
//! script_user = "xlb-script"     # optional: the user scripts run as (default root); an
//!                                # existing user of this host
//! http = "127.0.0.1:9480"        # optional: /metrics, / (status page), /status.json; read-only
//!
//! [[service]]
//! name = "web"                   # required, unique, 1..=32 characters of [A-Za-z0-9_.-]
//! vip = "203.0.113.100"          # required, IPv4 or IPv6; not unspecified, multicast, loopback, broadcast
//! port = 80                      # required, 0 ..= 65535; 0 = every port of the VIP
//! protocol = "tcp"               # "tcp" | "udp"
//! scheduler = "maglev"           # "maglev" (5-tuple hash) | "sh" (source hash)
//! table_size = 65537             # a prime, 7 ..= lb_common::MAX_RING_SIZE
//! quorum = 1                     # 1 ..= lb_common::MAX_BACKENDS; fewer usable backends: `sorry`
//! sorry = "203.0.113.50"         # optional; takes all new flows below quorum; not health-checked
//!
//!   [[service.backend]]
//!   address = "203.0.113.11"     # required; the VIP's family; not the VIP; unique in the service
//!   weight = 1                   # 0 ..= 1000; 0 = drained (no new flows)
//! ```
//!
//! Warnings (which do not make parsing fail): a service without backends (its traffic is
//! dropped), a `table_size` below 100 x the number of backends (Maglev's imbalance can then
//! exceed 1 %), `xdp_mode = "generic"`, an http-only key in a check of another type, and, with
//! `[[vrrp_instance]]` tables, a VIP that no instance holds.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use lb_common::{PROTO_TCP, PROTO_UDP};
use toml::de::DeTable;

mod agent;
mod announce;
mod check;
pub mod edit;
mod host;
pub mod keepalived;
mod reader;
mod services;
mod vrrp;
pub use announce::AnnounceConfig;
pub use check::CheckConfig;
pub use host::{check_environment, egress_interface, environment_errors};
pub use reader::parse_duration;
pub use vrrp::{TrackScript, VrrpConfig};

use agent::read_agent;
use reader::{syntax_error, Located, Report, TableReader};
use services::{check_services, read_service, ServiceDraft};

/// Default `[agent] pin_path`.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/xlb";
/// Default `[agent] control_socket`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xlb/xlb.sock";
/// Default `[agent] runtime_file`.
pub const DEFAULT_RUNTIME_FILE: &str = "/var/lib/xlb/runtime.json";
/// Default `[agent] flow_table_size`.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Accepted `[agent] flow_table_size` values.
pub const FLOW_TABLE_SIZE_RANGE: RangeInclusive<u32> = 1024..=(1 << 24);
/// Default `[agent] new_flow_rate`: new flows each CPU records per second.
pub const DEFAULT_NEW_FLOW_RATE: u32 = 50_000;
/// Accepted flow timeouts (`[agent] tcp_timeout`, `tcp_fin_timeout`, `udp_timeout`).
pub const FLOW_TIMEOUT_RANGE: RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(2)..=std::time::Duration::from_secs(7 * 24 * 3600);
/// Default `[agent] max_services`.
pub const DEFAULT_MAX_SERVICES: u32 = 64;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;
/// Longest `[[service]] name`.
pub const MAX_SERVICE_NAME_LEN: usize = 32;
/// Smallest `[[service]] table_size`.
pub const MIN_TABLE_SIZE: u32 = 7;
/// Default `[[service.backend]] weight`.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest `[[service.backend]] weight`.
pub const MAX_WEIGHT: u32 = 1000;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file name given to [`parse`] (the path for [`load`]); [`check_environment`] names it
    /// in its diagnostics.
    pub file: String,
    /// The `[agent]` section.
    pub agent: AgentConfig,
    /// The `[[service]]` tables, in file order.
    pub services: Vec<ServiceConfig>,
    /// The `[[vrrp_instance]]` tables, in file order.
    pub vrrp: Vec<VrrpConfig>,
    /// The `[announce]` table (BGP scale-out), if any; never beside `[[vrrp_instance]]`.
    pub announce: Option<AnnounceConfig>,
    /// How the file was read, and for a keepalived.conf where each line of its TOML came from.
    pub source: Source,
}

/// `[agent]`: how the agent runs on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// `interfaces` (required): the interfaces XDP is attached to, in file order. Not empty,
    /// no name twice, each name 1..=15 characters without `/`, `:` or white space.
    pub interfaces: Vec<String>,
    /// Line of the `interfaces` key (for diagnostics about an interface).
    pub interfaces_line: usize,
    /// `xdp_mode`: `"native"` (default) or `"generic"` (works with any driver, but slow; a
    /// warning).
    pub xdp_mode: XdpMode,
    /// `pin_path`: absolute path where the program, its links and its maps are pinned.
    /// Default `/sys/fs/bpf/xlb`.
    pub pin_path: PathBuf,
    /// `control_socket`: absolute path of the control socket (`xlb stats`). Default
    /// `/run/xlb/xlb.sock`.
    pub control_socket: PathBuf,
    /// `runtime_file`: absolute path where the changes made at run time (`xlb backend ...`,
    /// `xlb service ...` without `--save`) are kept, so that they survive a restart. Default
    /// `/var/lib/xlb/runtime.json`.
    pub runtime_file: PathBuf,
    /// `flow_table_size`: entries of the LRU flow table, 1024 ..= 16777216. Default 1048576.
    pub flow_table_size: u32,
    /// `new_flow_rate`: new flows each CPU records in the flow table per second; past it a
    /// new flow is forwarded by the Maglev table without an entry. 0: no limit. Default 50000.
    pub new_flow_rate: u32,
    /// `tcp_timeout` (default "15m"), `tcp_fin_timeout` ("10s", at most `tcp_timeout`),
    /// `udp_timeout` ("5m"): how long a flow entry outlives the flow's last packet (after the
    /// client's FIN for `tcp_fin_timeout`). Each 2s ..= 7 days.
    pub flow_timeouts: crate::flowscan::FlowTimeouts,
    /// `max_services`: capacity of the service maps, 1 ..= `lb_common::MAX_SERVICES`; the
    /// number of `[[service]]` tables must not exceed it. Default 64.
    pub max_services: u32,
    /// `assign_vips`: add each VIP to the first interface while the agent runs. Default true
    /// without `[[vrrp_instance]]` tables, false with them (VRRP adds and removes the VIPs;
    /// setting it true with them is an error).
    pub assign_vips: bool,
    /// `script_user`: the user scripts run as (keepalived's `script_user`): health-check
    /// scripts, track scripts and notify scripts that name no `user` (`notify_user`) of their
    /// own. The child takes its uid and primary gid, without supplementary groups. Default:
    /// none, scripts run as the agent (root). [`parse`] copies it into every such script, so
    /// this is for diagnostics.
    pub script_user: Option<String>,
    /// Line of the `script_user` key (of `[agent]` without one).
    pub script_user_line: usize,
    /// `http`: where the read-only HTTP listener serves `/metrics` (Prometheus), `/` (the
    /// status page) and `/status.json`. Default: none (off). Nothing there changes anything;
    /// bind it to loopback or a management network.
    pub http: Option<std::net::SocketAddr>,
    /// `tunnel_source`, `tunnel_source6`: the outer source of tunnels over IPv4 and IPv6;
    /// required when a backend is reached by a tunnel of that family.
    pub tunnel_source: Option<TunnelSource>,
    pub tunnel_source6: Option<TunnelSource>,
}

/// `[agent] tunnel_source` (IPv4) or `tunnel_source6`: the outer source address of tunnels.
/// With a prefix shorter than the address (`"192.0.2.0/24"`), the host bits come from each
/// flow's hash, so that a backend's receive hashing (RSS) spreads the flows over its queues;
/// for IPv6 the prefix is at least /96 (the hash fills the last 32 bits at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSource {
    pub address: IpAddr,
    pub prefix: u8,
}

impl TunnelSource {
    /// The mask (network order) of the address's last 4 bytes that the flow's hash fills in.
    pub fn hash_mask(&self) -> [u8; 4] {
        let bits = u32::from(if self.address.is_ipv4() { 32 } else { 128 } - self.prefix);
        (u32::MAX.checked_shr(32 - bits.min(32)).filter(|_| bits > 0).unwrap_or(0)).to_be_bytes()
    }
}

impl std::fmt::Display for TunnelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = if self.address.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.address)
        } else {
            write!(f, "{}/{}", self.address, self.prefix)
        }
    }
}

/// `forward`, of a `[[service]]` (its backends' default) or a `[[service.backend]]`: how
/// frames reach the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Forward {
    /// `"dr"`: direct routing; the backend is on an attached subnet and only the Ethernet
    /// addresses change (the default).
    #[default]
    Dr,
    /// `"ipip"`: an IPIP, IP6IP6 or (an IPv4 VIP to an IPv6 backend) 4-in-6 tunnel to the
    /// backend's address, through the next hop the kernel's routes name.
    Ipip,
    /// `"gue"`: GUE (variant 1) over IPv4 UDP to the backend's fou port `gue_port` (default
    /// 6080).
    Gue { port: u16 },
}

/// `[agent] xdp_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// `"native"`: in the driver, before any allocation.
    Native,
    /// `"generic"`: after the kernel built an skb; any driver, but slow.
    Generic,
}

/// A `[[service]]` table: one virtual service (VIP, port, protocol) and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `name` (required): unique, 1..=32 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// `vip` (required): the virtual IP, IPv4 or IPv6; not unspecified, multicast or loopback.
    pub vip: IpAddr,
    /// `port` (required): 0 ..= 65535; 0 means every port of the VIP for `protocol`.
    pub port: u16,
    /// `protocol`: `"tcp"` (default) or `"udp"`. No two services share (vip, port, protocol).
    pub protocol: Protocol,
    /// `scheduler`: `"maglev"` (default; 5-tuple hash) or `"sh"` (source hash: a client sticks
    /// to its backend, like LVS `sh` or keepalived's `persistence_timeout`).
    pub scheduler: Scheduler,
    /// `table_size`: size M of the Maglev table, a prime in 7 ..= `lb_common::MAX_RING_SIZE`.
    /// Default `lb_common::DEFAULT_RING_SIZE`. Below 100 x the number of backends, a warning.
    pub table_size: u32,
    /// The `[[service.backend]]` tables, in file order. May be empty (a warning): the
    /// service's traffic is then dropped.
    pub backends: Vec<BackendConfig>,
    /// `quorum`: below this many healthy backends the service goes to its `sorry` backend,
    /// if it has one (keepalived's quorum and sorry_server). 1 ..= 16384, default 1.
    pub quorum: u32,
    /// `sorry`: the backend that takes all new flows when fewer than `quorum` backends are
    /// healthy. It should be of the VIP's family (not verified); like a backend it must be on
    /// the subnet of an attached interface (see [`check_environment`]). It is not health-checked.
    pub sorry: Option<IpAddr>,
    /// Line of the `[[service]]` header.
    pub line: usize,
}

/// `[[service]] protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// `[[service]] scheduler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// `"maglev"`: Maglev consistent hashing of the 5-tuple.
    Maglev,
    /// `"sh"`: Maglev consistent hashing of the source address only.
    SourceHash,
}

/// A `[[service.backend]]` table: a real server, reached by direct routing or a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// `address` (required): not the VIP, unique within its service. Direct routing: of the
    /// VIP's family and (see [`check_environment`]) on the subnet of an attached interface.
    /// A tunnel: anywhere the kernel has a route to through an attached interface; IPv6 for
    /// an IPv6 VIP, either family for an IPv4 VIP (4-in-6), IPv4 for GUE.
    pub address: IpAddr,
    /// `weight`: 0 ..= 1000, default 1. 0 drains the backend: no new flows, flows stay.
    pub weight: u32,
    /// Its health check: `[service.check]` with `[service.backend.check]` over it; `None`
    /// when neither exists (the backend is taken as healthy).
    pub check: Option<CheckConfig>,
    /// `forward`: how frames reach it; default the service's `forward` (itself default
    /// `"dr"`), and `gue_port` likewise.
    pub forward: Forward,
    /// Line of the `[[service.backend]]` header.
    pub line: usize,
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based line; 0 when it is about the whole file (it could not be read).
    pub line: usize,
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// Why a configuration was refused: its errors, with any warnings, sorted by line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", one_per_line(.diagnostics))]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

/// What [`check_environment`] and [`egress_interface`] need to know of a host interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Addresses with their prefix lengths.
    pub addrs: Vec<(IpAddr, u8)>,
}

impl Protocol {
    /// The IP protocol number (`lb_common::PROTO_TCP` or `PROTO_UDP`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheduler::Maglev => "maglev",
            Scheduler::SourceHash => "sh",
        })
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line: message`, or `file:line: warning: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

fn one_per_line(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// Reads and parses the configuration file at `path`, TOML or keepalived.conf as its content
/// says. A read failure is one diagnostic at line 0.
pub fn load(path: &Path) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
    load_as(path, &ReadAs::default()).map(|loaded| (loaded.config, loaded.warnings))
}

/// Parses `text`, the contents of `file` (used in diagnostics only). On success returns the
/// configuration and its warnings; otherwise every error found, with the warnings, sorted by
/// line.
pub fn parse(file: &str, text: &str) -> Result<(Config, Vec<Diagnostic>), ConfigError> {
    let mut report = Report::new(file, text);
    let config = match DeTable::parse(text) {
        Ok(root) => read_config(&mut report, root.get_ref()),
        Err(e) => {
            let line = e.span().map_or(1, |span| report.line_of(span.start));
            report.error(line, syntax_error(&e, text));
            None
        }
    };
    let has_errors = report.has_errors();
    let diagnostics = report.finish();
    match config {
        Some(config) if !has_errors => Ok((config, diagnostics)),
        _ => {
            debug_assert!(has_errors, "a configuration was refused without an error");
            Err(ConfigError { diagnostics })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a file as TOML or as keepalived.conf
// ---------------------------------------------------------------------------------------------

/// How a configuration file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// xlb's own TOML.
    Toml,
    /// keepalived.conf, converted to xlb's TOML as it is read ([`keepalived`]).
    Keepalived,
}

impl Format {
    /// The format `text` is written in: keepalived.conf when its first significant line is
    /// neither a TOML table header nor a `key = value`.
    pub fn detect(text: &str) -> Format {
        if keepalived::looks_like_keepalived(text) {
            Format::Keepalived
        } else {
            Format::Toml
        }
    }
}

/// How to read a configuration file (the command line's `--format` and `--agent-config`); a
/// reload reads it the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadAs {
    /// `None`: as its content says ([`Format::detect`]).
    pub format: Option<Format>,
    /// For a keepalived.conf: a TOML file with the `[agent]` table it lacks.
    pub agent_config: Option<PathBuf>,
}

/// Where a [`Config`] came from, as far as diagnostics and a reload need to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// How it was read, its format settled ([`load_as`]); the default for [`parse`].
    pub read_as: ReadAs,
    /// For a keepalived.conf: the keepalived file and line of each line of the TOML it became,
    /// so that later diagnostics (this host's checks) name those.
    pub origins: Option<std::sync::Arc<keepalived::Origins>>,
}

impl Source {
    /// `d`, about a line of the configuration's TOML, about the line it came from.
    pub fn place(&self, d: Diagnostic) -> Diagnostic {
        match &self.origins {
            Some(origins) => origins.place(d),
            None => d,
        }
    }
}

/// A configuration read from a file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    /// The TOML the configuration was read from: the file's own text, or what a keepalived.conf
    /// converts to (what `xlb convert` prints; runtime changes edit it).
    pub toml: String,
}

/// Reads the configuration file at `path` as `read_as` says.
pub fn load_as(path: &Path, read_as: &ReadAs) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let fail = |message: String| ConfigError { diagnostics: vec![Diagnostic { file: file.clone(), line: 0, severity: Severity::Error, message }] };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {file}: {e}")))?;
    match read_as.format.unwrap_or_else(|| Format::detect(&text)) {
        Format::Keepalived => keepalived::read(&keepalived::Disk, path, &text, read_as.agent_config.as_deref()),
        Format::Toml => {
            if let Some(agent) = &read_as.agent_config {
                return Err(fail(format!(
                    "--agent-config {} is for a keepalived.conf; a TOML configuration has its own [agent]",
                    agent.display()
                )));
            }
            let (mut config, warnings) = parse(&file, &text)?;
            config.source.read_as = ReadAs { format: Some(Format::Toml), agent_config: None };
            Ok(Loaded { config, warnings, toml: text })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Walking the document
// ---------------------------------------------------------------------------------------------

/// The root: `[agent]`, `[[service]]`, `[[vrrp_instance]]` and `[announce]`, and the checks
/// between them.
/// Returns a configuration if every required part could be read (the caller still refuses it
/// when any error was reported).
fn read_config(report: &mut Report, root: &DeTable<'_>) -> Option<Config> {
    let mut top = TableReader::new(report, Located { value: root, line: 1 }, "");
    let agent = top.required_table("agent");
    let services = top.table_array("service");
    let vrrp = top.table_array("vrrp_instance");
    let announce = top.optional_table("announce");
    top.finish();

    let agent = agent.map(|table| read_agent(report, table));
    let services: Vec<ServiceDraft> = services.into_iter().map(|table| read_service(report, table)).collect();
    check_services(report, agent.as_ref(), &services);
    let vrrp: Vec<Option<VrrpConfig>> = vrrp.into_iter().map(|table| vrrp::read_instance(report, table)).collect();
    let vrrp: Option<Vec<VrrpConfig>> = vrrp.into_iter().collect();
    if let Some(instances) = &vrrp {
        let vips: Vec<(IpAddr, usize)> = services.iter().filter_map(|s| s.vip.as_ref().map(|v| (v.value, v.line))).collect();
        vrrp::check_instances(report, instances, &vips);
        if let Some(Located { value: Some(true), line }) = agent.as_ref().and_then(|a| a.assign_vips) {
            if !instances.is_empty() {
                report.error(line, "assign_vips = true conflicts with [[vrrp_instance]]: VRRP adds and removes the VIPs");
            }
        }
    }

    let announce = announce.map(|a| read_announce_section(report, a, &services, agent.as_ref(), vrrp.as_deref()));

    let mut vrrp = vrrp?;
    let announce = announce??;
    let mut agent = agent?.build()?;
    agent.assign_vips = agent.assign_vips && vrrp.is_empty() && announce.is_none();
    let mut services = services.into_iter().map(ServiceDraft::build).collect::<Option<Vec<_>>>()?;
    default_script_user(agent.script_user.as_deref(), &mut services, &mut vrrp);
    Some(Config { file: report.file.clone(), agent, services, vrrp, announce, source: Source::default() })
}

/// `[announce]` if present (`Some(None)` when absent; `None` after an error), and what it
/// conflicts with: VRRP and `assign_vips`, which decide about the VIPs in other ways.
fn read_announce_section(
    report: &mut Report,
    table: Located<Option<&DeTable<'_>>>,
    services: &[ServiceDraft],
    agent: Option<&agent::AgentDraft>,
    vrrp: Option<&[VrrpConfig]>,
) -> Option<Option<AnnounceConfig>> {
    let Located { value: Some(table), line } = table else { return Some(None) };
    let vips: Vec<(IpAddr, usize)> = services.iter().filter_map(|s| s.vip.as_ref().map(|v| (v.value, v.line))).collect();
    let interfaces = agent.map(|a| a.interface_names()).unwrap_or_default();
    let announce = announce::read_announce(report, Located { value: table, line }, &vips, &interfaces);
    if vrrp.is_some_and(|v| !v.is_empty()) {
        report.error(line, "[announce] conflicts with [[vrrp_instance]]: both decide whether this node serves the VIPs; use one");
    }
    if let Some(Located { value: Some(true), line }) = agent.and_then(|a| a.assign_vips) {
        report.error(line, "assign_vips = true conflicts with [announce]: the router routes the VIPs to this node, which must not hold them");
    }
    announce.map(Some)
}

/// Gives every script without a user of its own `[agent] script_user`, so that the parts that
/// run scripts need no `[agent]`.
fn default_script_user(user: Option<&str>, services: &mut [ServiceConfig], vrrp: &mut [VrrpConfig]) {
    let Some(user) = user else { return };
    let fill = |u: &mut Option<String>| {
        u.get_or_insert_with(|| user.to_owned());
    };
    for b in services.iter_mut().flat_map(|s| &mut s.backends) {
        if let Some(CheckConfig { kind: crate::health::CheckKind::Script { user, .. }, .. }) = &mut b.check {
            fill(user);
        }
    }
    for v in vrrp {
        fill(&mut v.notify_user);
        v.track_scripts.iter_mut().for_each(|t| fill(&mut t.user));
    }
}

#[cfg(test)]
mod tests;
