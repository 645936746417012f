//! Checks of a configuration against this host: the interfaces it names exist, and each
//! backend is on the subnet of an attached interface, the one [`egress_interface`] picks to
//! reach it. Pure logic: the caller lists the host's interfaces ([`InterfaceInfo`]).

use std::net::IpAddr;

use super::services::family;
use super::{Config, Diagnostic, InterfaceInfo, Severity};

/// Checks `cfg` against this host's interfaces `ifaces`: every interface of `[agent]
/// interfaces` exists, and every backend is on the subnet of an address of one of them (which
/// is how [`egress_interface`] finds the interface that reaches it). Returns errors only.
/// [`check_environment`]'s errors one per line, or `None` when `cfg` fits this host.
pub fn environment_errors(cfg: &Config, ifaces: &[InterfaceInfo]) -> Option<String> {
    let problems = check_environment(cfg, ifaces);
    (!problems.is_empty()).then(|| problems.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))
}

pub fn check_environment(cfg: &Config, ifaces: &[InterfaceInfo]) -> Vec<Diagnostic> {
    let error = |line: usize, message: String| Diagnostic {
        file: cfg.file.clone(),
        line,
        severity: Severity::Error,
        message,
    };
    let mut out = Vec::new();
    for name in &cfg.agent.interfaces {
        if !ifaces.iter().any(|i| &i.name == name) {
            let existing: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
            out.push(error(
                cfg.agent.interfaces_line,
                format!("interface \"{name}\" does not exist on this host (it has: {})", existing.join(", ")),
            ));
        }
    }
    for i in &cfg.vrrp {
        for name in std::iter::once(&i.interface).chain(&i.track_interfaces) {
            if !ifaces.iter().any(|f| &f.name == name) {
                out.push(error(i.line, format!("interface \"{name}\" of vrrp_instance \"{}\" does not exist on this host", i.name)));
            }
        }
    }
    for svc in &cfg.services {
        let backends = svc.backends.iter().map(|b| ("backend", b.address, b.line));
        for (what, address, line) in backends.chain(svc.sorry.map(|a| ("sorry backend", a, svc.line))) {
            if egress_interface(address, ifaces, &cfg.agent.interfaces).is_none() {
                out.push(error(
                    line,
                    format!(
                        "{what} {address} of service \"{}\" is not on the subnet of any attached interface ({})",
                        svc.name,
                        describe_subnets(address, ifaces, &cfg.agent.interfaces)
                    ),
                ));
            }
        }
    }
    out
}

/// The interface, among those named in `allowed`, that has an address whose subnet contains
/// `addr`; the longest prefix wins, and between equal prefixes the interface listed first in
/// `allowed`.
pub fn egress_interface<'a>(
    addr: IpAddr,
    ifaces: &'a [InterfaceInfo],
    allowed: &[String],
) -> Option<&'a InterfaceInfo> {
    let mut best: Option<(&'a InterfaceInfo, u8)> = None;
    for name in allowed {
        let Some(iface) = ifaces.iter().find(|i| &i.name == name) else {
            continue;
        };
        for &(net, prefix) in &iface.addrs {
            let longer = best.is_none_or(|(_, best_prefix)| prefix > best_prefix);
            if longer && in_subnet(addr, net, prefix) {
                best = Some((iface, prefix));
            }
        }
    }
    best.map(|(iface, _)| iface)
}

/// Whether `addr` is inside `net/prefix` (false across families or for an invalid prefix).
fn in_subnet(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// "eth0: 203.0.113.2/24, eth1: no IPv4 address": the addresses of `addr`'s family on the
/// existing interfaces of `allowed`.
fn describe_subnets(addr: IpAddr, ifaces: &[InterfaceInfo], allowed: &[String]) -> String {
    let mut parts = Vec::new();
    for name in allowed {
        let Some(iface) = ifaces.iter().find(|i| &i.name == name) else {
            continue;
        };
        let before = parts.len();
        for (net, prefix) in &iface.addrs {
            if net.is_ipv4() == addr.is_ipv4() {
                parts.push(format!("{name}: {net}/{prefix}"));
            }
        }
        if parts.len() == before {
            parts.push(format!("{name}: no {} address", family(addr)));
        }
    }
    if parts.is_empty() {
        "none of them exists".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn subnet_edges() {
        let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert!(in_subnet(ip("192.0.2.1"), any4, 0));
        assert!(in_subnet(ip("192.0.2.1"), ip("192.0.2.1"), 32));
        assert!(!in_subnet(ip("192.0.2.2"), ip("192.0.2.1"), 32));
        assert!(!in_subnet(ip("192.0.2.1"), ip("192.0.2.1"), 33), "invalid prefix");
        assert!(in_subnet(ip("2001:db8::1"), IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
        assert!(in_subnet(ip("2001:db8::1"), ip("2001:db8::1"), 128));
        assert!(!in_subnet(ip("2001:db8::1"), any4, 0), "families differ");
    }
}
