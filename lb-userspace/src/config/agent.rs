//! `[agent]`: how the agent runs on this host, read into an [`AgentDraft`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lb_common::MAX_SERVICES;
use toml::de::{DeTable, DeValue};

use super::reader::{Located, Report, TableReader};
use super::{
    AgentConfig, TunnelSource, XdpMode, DEFAULT_CONTROL_SOCKET, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_NEW_FLOW_RATE, DEFAULT_RUNTIME_FILE,
    DEFAULT_MAX_SERVICES, DEFAULT_PIN_PATH, FLOW_TABLE_SIZE_RANGE, FLOW_TIMEOUT_RANGE, MAX_INTERFACE_NAME_LEN,
};
use crate::flowscan::FlowTimeouts;

/// Names of the values of `xdp_mode`.
const XDP_MODES: &[(&str, XdpMode)] = &[("native", XdpMode::Native), ("generic", XdpMode::Generic)];

/// `[agent]` as read: `None` for a value that was missing or wrong (and reported).
pub(super) struct AgentDraft {
    /// Line of the `[agent]` header.
    pub(super) line: usize,
    interfaces: Option<Located<Vec<Located<String>>>>,
    xdp_mode: Option<Located<XdpMode>>,
    pin_path: Option<Located<PathBuf>>,
    control_socket: Option<Located<PathBuf>>,
    runtime_file: Option<Located<PathBuf>>,
    flow_table_size: Option<Located<u32>>,
    new_flow_rate: Option<Located<u32>>,
    tcp_timeout: Option<Located<Duration>>,
    tcp_fin_timeout: Option<Located<Duration>>,
    udp_timeout: Option<Located<Duration>>,
    pub(super) max_services: Option<Located<u32>>,
    /// `None` when absent (the default then depends on VRRP).
    pub(super) assign_vips: Option<Located<Option<bool>>>,
    script_user: Option<Located<Option<String>>>,
    http: Option<Located<Option<std::net::SocketAddr>>>,
    pub(super) tunnel_source: Option<Located<Option<TunnelSource>>>,
    pub(super) tunnel_source6: Option<Located<Option<TunnelSource>>>,
}

pub(super) fn read_agent(report: &mut Report, table: Located<&DeTable<'_>>) -> AgentDraft {
    let mut t = TableReader::new(report, table, "[agent]");
    let agent = AgentDraft {
        line: table.line,
        interfaces: t.required_string_array("interfaces"),
        xdp_mode: t.choice_or("xdp_mode", XDP_MODES, XdpMode::Native),
        pin_path: t.absolute_path_or("pin_path", DEFAULT_PIN_PATH),
        control_socket: t.absolute_path_or("control_socket", DEFAULT_CONTROL_SOCKET),
        runtime_file: t.absolute_path_or("runtime_file", DEFAULT_RUNTIME_FILE),
        flow_table_size: t.integer_or("flow_table_size", FLOW_TABLE_SIZE_RANGE, DEFAULT_FLOW_TABLE_SIZE),
        new_flow_rate: t.integer_or("new_flow_rate", 0..=u32::MAX, DEFAULT_NEW_FLOW_RATE),
        tcp_timeout: timeout(&mut t, "tcp_timeout", FlowTimeouts::DEFAULT.tcp),
        tcp_fin_timeout: timeout(&mut t, "tcp_fin_timeout", FlowTimeouts::DEFAULT.tcp_fin),
        udp_timeout: timeout(&mut t, "udp_timeout", FlowTimeouts::DEFAULT.udp),
        max_services: t.integer_or("max_services", 1..=MAX_SERVICES, DEFAULT_MAX_SERVICES),
        assign_vips: t.optional("assign_vips", |r, key, v, line| match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => r.wrong_type(key, line, "a boolean (true or false)", other),
        }),
        script_user: t.optional_user("script_user"),
        http: t.optional("http", |r, key, v, line| {
            let s = r.string_value(key, v, line)?;
            match s.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    r.error(line, format!("invalid http = \"{s}\": an address and port such as \"127.0.0.1:9480\" or \"[::1]:9480\""));
                    None
                }
            }
        }),
        tunnel_source: t.optional("tunnel_source", |r, key, v, line| tunnel_source(r, key, v, line, false)),
        tunnel_source6: t.optional("tunnel_source6", |r, key, v, line| tunnel_source(r, key, v, line, true)),
    };

    if let Some(interfaces) = &agent.interfaces {
        if interfaces.value.is_empty() {
            t.error(interfaces.line, "interfaces must name at least one interface");
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for name in &interfaces.value {
            if let Err(problem) = valid_interface_name(&name.value) {
                t.error(name.line, format!("invalid interface name \"{}\" in interfaces: {problem}", name.value));
            }
            match seen.get(name.value.as_str()) {
                Some(first) => {
                    let message = format!("interface \"{}\" is listed twice in interfaces (also line {first})", name.value);
                    t.error(name.line, message);
                }
                None => {
                    seen.insert(&name.value, name.line);
                }
            }
        }
    }
    if let (Some(fin), Some(tcp)) = (&agent.tcp_fin_timeout, &agent.tcp_timeout) {
        if fin.value > tcp.value {
            t.error(fin.line, format!("tcp_fin_timeout ({:?}) must not exceed tcp_timeout ({:?})", fin.value, tcp.value));
        }
    }
    if let Some(mode) = &agent.xdp_mode {
        if mode.value == XdpMode::Generic {
            t.warning(
                mode.line,
                "xdp_mode = \"generic\" is slow (the kernel builds an skb for every packet first); \
                 use \"native\" where the driver supports XDP",
            );
        }
    }
    t.finish();
    agent
}

impl AgentDraft {
    /// The names in `interfaces`, as far as they could be read.
    pub(super) fn interface_names(&self) -> Vec<String> {
        self.interfaces.iter().flat_map(|i| &i.value).map(|name| name.value.clone()).collect()
    }

    pub(super) fn build(self) -> Option<AgentConfig> {
        let interfaces = self.interfaces?;
        Some(AgentConfig {
            interfaces_line: interfaces.line,
            interfaces: interfaces.value.into_iter().map(|name| name.value).collect(),
            xdp_mode: self.xdp_mode?.value,
            pin_path: self.pin_path?.value,
            control_socket: self.control_socket?.value,
            runtime_file: self.runtime_file?.value,
            flow_table_size: self.flow_table_size?.value,
            new_flow_rate: self.new_flow_rate?.value,
            flow_timeouts: FlowTimeouts {
                tcp: self.tcp_timeout?.value,
                tcp_fin: self.tcp_fin_timeout?.value,
                udp: self.udp_timeout?.value,
            },
            max_services: self.max_services?.value,
            assign_vips: self.assign_vips?.value.unwrap_or(true),
            script_user: self.script_user.as_ref()?.value.clone(),
            script_user_line: self.script_user?.line,
            http: self.http?.value,
            tunnel_source: self.tunnel_source?.value,
            tunnel_source6: self.tunnel_source6?.value,
        })
    }
}

/// `tunnel_source = "192.0.2.1"` or `"192.0.2.0/24"` (`tunnel_source6`: IPv6, /96 ..= /128).
fn tunnel_source<'t>(
    r: &mut TableReader<'_, 't>,
    key: &str,
    v: &'t toml::Spanned<DeValue<'t>>,
    line: usize,
    v6: bool,
) -> Option<TunnelSource> {
    let s = r.string_value(key, v, line)?;
    let (family, example, shortest, full) = if v6 { ("IPv6", "2001:db8::1", 96, 128) } else { ("IPv4", "192.0.2.1", 0, 32) };
    let parsed = match s.split_once('/') {
        Some((a, p)) => a.parse::<IpAddr>().ok().zip(p.parse::<u8>().ok()),
        None => s.parse::<IpAddr>().ok().map(|a| (a, full)),
    };
    match parsed {
        Some((address, prefix)) if address.is_ipv6() == v6 && (shortest..=full).contains(&prefix) => {
            Some(TunnelSource { address, prefix })
        }
        _ => {
            r.error(
                line,
                format!(
                    "invalid {key} = \"{s}\": an {family} address such as \"{example}\", or a prefix /{shortest} ..= /{full} \
                     whose host bits each flow's hash fills in"
                ),
            );
            None
        }
    }
}

/// A flow timeout: a duration within `FLOW_TIMEOUT_RANGE` (the program refreshes a flow's
/// last-seen time once a second, so shorter ones would end flows that are alive).
fn timeout(t: &mut TableReader<'_, '_>, key: &str, default: Duration) -> Option<Located<Duration>> {
    let d = t.duration_or(key, default)?;
    t.check(d, |v| {
        if FLOW_TIMEOUT_RANGE.contains(v) {
            Ok(())
        } else {
            Err(format!("{key} = {v:?} is out of range {:?}..={:?}", FLOW_TIMEOUT_RANGE.start(), FLOW_TIMEOUT_RANGE.end()))
        }
    })
}

/// The kernel's rules for a device name (`dev_valid_name`).
pub(super) fn valid_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_INTERFACE_NAME_LEN {
        Err(format!("must be 1 to {MAX_INTERFACE_NAME_LEN} characters long"))
    } else if name == "." || name == ".." {
        Err("\".\" and \"..\" are not interface names".to_string())
    } else if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        Err("must not contain '/', ':' or white space".to_string())
    } else {
        Ok(())
    }
}
