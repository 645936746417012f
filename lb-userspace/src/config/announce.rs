//! `[announce]`: active-active behind a router's ECMP. This node announces the VIPs it can
//! serve over BGP (through BIRD), and every node announcing a VIP takes a share of its flows.
//!
//! The agent tells BIRD what to announce with routes: each VIP it announces is a host route
//! (`VIP/32`, `VIP/128`) in kernel routing table `table`, through `interface`, a tun device the
//! agent creates and holds open. BIRD's kernel protocol (`kernel table N; learn;`) imports them
//! and BGP exports them. No routing rule looks at that table, so the node's own routing does not
//! change, and the VIP is not an address of the node. When the agent dies, the kernel removes
//! the tun device with the process, the routes with the device, and BIRD withdraws them.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use toml::de::DeTable;

use super::agent::valid_interface_name;
use super::reader::{Located, Report, TableReader};

/// Default `interface`.
pub const DEFAULT_INTERFACE: &str = "xlb-announce";
/// Default `table`.
pub const DEFAULT_TABLE: u32 = 100;
/// Default `drain_quiet`.
pub const DEFAULT_DRAIN_QUIET: Duration = Duration::from_secs(1);
/// Default `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Routing tables the kernel gives a meaning of its own: 0 (unspecified), 253 (default), 254
/// (main), 255 (local). A VIP route there would route the node's own traffic into the device.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// The `[announce]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// `vips`: the VIPs this node announces, each the VIP of some `[[service]]`. `None`
    /// (absent): every VIP of the configuration, as services come and go.
    pub vips: Option<Vec<IpAddr>>,
    /// `interface`: the tun device the agent creates and holds open for as long as it runs;
    /// the VIP routes go through it. Default `xlb-announce`. Not an interface of `[agent]`.
    pub interface: String,
    /// `table`: the kernel routing table of the VIP routes, which BIRD's kernel protocol
    /// imports (`kernel table N; learn;`). 1 ..= 4294967295 but 253, 254, 255. Default 100.
    pub table: u32,
    /// `drain_quiet`: a node being drained (`xlb drain-node`, SIGTERM) stops once no packet
    /// for a VIP arrived for this long after its withdrawal: the router has moved its flows.
    /// Default 1 s.
    pub drain_quiet: Duration,
    /// `drain_timeout`: ... or this long after the withdrawal at the latest. Default 20 s,
    /// within the shipped unit's `TimeoutStopSec` (30 s), which ends a stop that takes longer.
    pub drain_timeout: Duration,
    /// Line of the `[announce]` header.
    pub line: usize,
}

impl AnnounceConfig {
    /// The VIPs to announce: `vips`, or every VIP in `all` (a model's VIPs) without it.
    pub fn vips_of(&self, all: &[IpAddr]) -> Vec<IpAddr> {
        match &self.vips {
            Some(listed) => listed.clone(),
            None => all.to_vec(),
        }
    }
}

/// Reads `[announce]`. `vips` are the services' VIPs with their lines (a listed VIP must be
/// one of them); `agent_interfaces` the interfaces of `[agent]` (the tun device must not be one).
pub(super) fn read_announce(
    report: &mut Report,
    table: Located<&DeTable<'_>>,
    service_vips: &[(IpAddr, usize)],
    agent_interfaces: &[String],
) -> Option<AnnounceConfig> {
    let mut t = TableReader::new(report, table, "[announce]");
    let vips = t.optional("vips", |r, key, v, line| {
        let items = r.string_array_value(key, v, line)?;
        if items.is_empty() {
            r.error(line, "vips must name at least one VIP (leave it out to announce every VIP)");
            return None;
        }
        let mut vips: Vec<IpAddr> = Vec::new();
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        let mut ok = true;
        for item in items {
            let Ok(vip) = item.value.parse::<IpAddr>() else {
                r.error(item.line, format!("invalid IP address \"{}\" in vips", item.value));
                ok = false;
                continue;
            };
            if let Some(first) = seen.insert(vip, item.line) {
                r.error(item.line, format!("VIP {vip} is listed twice in vips (also line {first})"));
                ok = false;
            } else if !service_vips.iter().any(|(v, _)| *v == vip) {
                r.error(item.line, format!("{vip} in vips is no service's VIP: only a VIP this node balances can be announced"));
                ok = false;
            }
            vips.push(vip);
        }
        ok.then_some(vips)
    });
    let interface = t.take("interface", Some(DEFAULT_INTERFACE.to_owned()), TableReader::string_value);
    let interface = interface.and_then(|i| {
        t.check(i, |name| {
            valid_interface_name(name).map_err(|problem| format!("invalid interface name \"{name}\" in [announce]: {problem}"))?;
            if agent_interfaces.iter().any(|a| a == name) {
                return Err(format!(
                    "[announce] interface \"{name}\" is one of [agent] interfaces: it names the device the agent creates for the VIP routes"
                ));
            }
            Ok(())
        })
    });
    let table_number = t.integer_or("table", 1..=u32::MAX, DEFAULT_TABLE);
    let table_number = table_number.and_then(|n| {
        t.check(n, |n| {
            if RESERVED_TABLES.contains(n) {
                Err(format!("table = {n} is the kernel's own (253 default, 254 main, 255 local): use a table of its own, such as 100"))
            } else {
                Ok(())
            }
        })
    });
    let drain_quiet = t.duration_or("drain_quiet", DEFAULT_DRAIN_QUIET);
    let drain_timeout = t.duration_or("drain_timeout", DEFAULT_DRAIN_TIMEOUT);
    t.finish();
    if let Some(Located { value, line }) = &drain_quiet {
        if value.is_zero() {
            report.error(*line, "drain_quiet must be more than 0");
        }
    }
    if let (Some(quiet), Some(timeout)) = (&drain_quiet, &drain_timeout) {
        if timeout.value < quiet.value {
            report.error(timeout.line, format!("drain_timeout ({:?}) must be at least drain_quiet ({:?})", timeout.value, quiet.value));
        }
    }
    Some(AnnounceConfig {
        vips: vips?.value,
        interface: interface?.value,
        table: table_number?.value,
        drain_quiet: drain_quiet?.value,
        drain_timeout: drain_timeout?.value,
        line: table.line,
    })
}

#[cfg(test)]
mod tests;
