//! `[[service]]` and `[[service.backend]]`: the virtual services and their real servers,
//! with the checks within one service (backends against the VIP and each other) and across
//! services (unique names and keys, the limits on services and backends).

use std::collections::HashMap;
use std::net::IpAddr;

use lb_common::{DEFAULT_RING_SIZE, MAX_BACKENDS, MAX_RING_SIZE};
use toml::de::DeTable;

use super::agent::AgentDraft;
use super::check;
use super::reader::{Located, Report, TableReader};
use super::{
    BackendConfig, CheckConfig, Forward, Protocol, Scheduler, ServiceConfig, DEFAULT_WEIGHT, MAX_SERVICE_NAME_LEN, MAX_WEIGHT,
    MIN_TABLE_SIZE,
};
use crate::maglev::{self, MaglevError};

/// Names of the values of `protocol` and `scheduler`.
const PROTOCOLS: &[(&str, Protocol)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
const SCHEDULERS: &[(&str, Scheduler)] = &[("maglev", Scheduler::Maglev), ("sh", Scheduler::SourceHash)];
/// Names of the values of `forward`; GUE's port comes from `gue_port`.
const FORWARDS: &[(&str, Method)] = &[("dr", Method::Dr), ("ipip", Method::Ipip), ("gue", Method::Gue)];
/// `gue_port` when not given: Katran's GUE port.
pub const DEFAULT_GUE_PORT: u16 = 6080;

/// `forward` as written, before `gue_port` joins it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Dr,
    Ipip,
    Gue,
}

/// A `[[service]]` as read: `None` for a value that was missing or wrong (and reported).
pub(super) struct ServiceDraft {
    line: usize,
    name: Option<Located<String>>,
    pub(super) vip: Option<Located<IpAddr>>,
    port: Option<Located<u16>>,
    protocol: Option<Located<Protocol>>,
    scheduler: Option<Located<Scheduler>>,
    table_size: Option<Located<u32>>,
    quorum: Option<Located<u32>>,
    sorry: Option<Located<Option<IpAddr>>>,
    backends: Vec<BackendDraft>,
}

pub(super) fn read_service(report: &mut Report, table: Located<&DeTable<'_>>) -> ServiceDraft {
    let mut t = TableReader::new(report, table, "[[service]]");
    let name = t.required_string("name");
    let name = name.and_then(|name| t.check(name, valid_service_name));
    let vip = t.required_ip("vip");
    let vip = vip.and_then(|vip| t.check(vip, |a| usable_unicast("vip", a)));
    let port = t.required_integer("port", 0..=u16::MAX);
    let protocol = t.choice_or("protocol", PROTOCOLS, Protocol::Tcp);
    let scheduler = t.choice_or("scheduler", SCHEDULERS, Scheduler::Maglev);
    let table_size = t.integer_or("table_size", MIN_TABLE_SIZE..=MAX_RING_SIZE as u32, DEFAULT_RING_SIZE);
    let table_size = table_size.and_then(|size| t.check(size, valid_table_size));
    let quorum = t.integer_or("quorum", 1..=MAX_BACKENDS, 1);
    let sorry = t.optional_ip("sorry");
    let sorry = sorry.and_then(|s| t.check(s, |a| a.as_ref().map_or(Ok(()), |a| usable_unicast("sorry", a))));
    let forward = t.choice_or("forward", FORWARDS, Method::Dr);
    let gue_port = t.integer_or("gue_port", 1..=u16::MAX, DEFAULT_GUE_PORT);
    let check_table = t.optional_table("check");
    let backend_tables = t.table_array("backend");
    t.finish();

    let service_check = check_table
        .and_then(|c| c.value.map(|value| check::read_check(report, Located { value, line: c.line }, "[service.check]")));
    let mut backends: Vec<BackendDraft> = backend_tables.into_iter().map(|b| read_backend(report, b)).collect();
    for b in &mut backends {
        let what = match &b.address {
            Some(a) => format!("backend {}", a.value),
            None => "this backend".to_string(),
        };
        b.resolved_check =
            check::resolve(report, service_check.as_ref(), b.check.as_ref(), port.as_ref().map(|p| p.value), &what);
    }
    for b in &mut backends {
        if let (Some(method), Some(port)) = (&forward, &gue_port) {
            b.inherit(method.value, port.value);
        }
    }
    let svc =
        ServiceDraft { line: table.line, name, vip, port, protocol, scheduler, table_size, quorum, sorry, backends };
    check_backends(report, &svc);
    svc
}

/// Checks within one service: backends against the VIP and each other, and the table size
/// against the number of backends.
fn check_backends(report: &mut Report, svc: &ServiceDraft) {
    let called = service_called(svc);
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    for b in &svc.backends {
        let Some(address) = &b.address else { continue };
        if let Some(first) = seen.get(&address.value) {
            report.error(
                address.line,
                format!("duplicate backend address {} in {called} (first at line {first})", address.value),
            );
        } else {
            seen.insert(address.value, address.line);
        }
        let Some(vip) = &svc.vip else { continue };
        if address.value == vip.value {
            report.error(address.line, format!("backend address {} is the vip of {called}", address.value));
        } else if let Some(problem) = b.forward.and_then(|f| family_problem(f, address.value, vip.value)) {
            report.error(address.line, format!("backend address {} of {called}: {problem}", address.value));
        }
    }

    let n = svc.backends.len();
    if n == 0 {
        report.warning(svc.line, format!("{called} has no backends: its traffic is dropped"));
    } else if let Some(size) = &svc.table_size {
        let wanted = 100 * n as u64;
        if u64::from(size.value) < wanted {
            let advice = match u32::try_from(wanted).ok().and_then(next_prime).filter(|&p| p as usize <= MAX_RING_SIZE) {
                Some(p) => format!("use a prime table_size of at least {wanted}, such as {p}"),
                None => format!("{n} backends need more than the largest table_size, {MAX_RING_SIZE}"),
            };
            report.warning(
                size.line,
                format!(
                    "table_size {} of {called} is below 100 x its {n} backends: \
                     Maglev's imbalance can exceed 1% ({advice})",
                    size.value
                ),
            );
        }
    }
}

/// Checks across services: unique names, unique (vip, port, protocol), and the limits on
/// services and backends.
pub(super) fn check_services(report: &mut Report, agent: Option<&AgentDraft>, services: &[ServiceDraft]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut keys: HashMap<(IpAddr, u16, Protocol), &ServiceDraft> = HashMap::new();
    for svc in services {
        if let Some(name) = &svc.name {
            if let Some(first) = names.get(name.value.as_str()) {
                let message = format!("duplicate service name \"{}\" (also used at line {first})", name.value);
                report.error(name.line, message);
            } else {
                names.insert(&name.value, name.line);
            }
        }
        if let (Some(vip), Some(port), Some(protocol)) = (&svc.vip, &svc.port, &svc.protocol) {
            let key = (vip.value, port.value, protocol.value);
            if let Some(other) = keys.get(&key) {
                report.error(
                    svc.line,
                    format!(
                        "{} has the same vip {}, port {} and protocol {} as {} at line {}",
                        service_called(svc),
                        key.0,
                        key.1,
                        key.2,
                        service_called(other),
                        other.line
                    ),
                );
            } else {
                keys.insert(key, svc);
            }
        }
    }

    if let Some(agent) = agent {
        if let Some(max) = &agent.max_services {
            if services.len() > max.value as usize {
                let set_where = if max.line == agent.line { "by default".to_string() } else { format!("at line {}", max.line) };
                report.error(
                    services[max.value as usize].line,
                    format!(
                        "too many services: {} [[service]] tables, but max_services is {} ({set_where})",
                        services.len(),
                        max.value,
                    ),
                );
            }
        }
    }

    if let Some(agent) = agent {
        check_tunnel_sources(report, agent, services);
    }

    let total: usize = services.iter().map(|s| s.backends.len()).sum();
    if let Some(first_over) = services.iter().flat_map(|s| &s.backends).nth(MAX_BACKENDS as usize) {
        report.error(
            first_over.line,
            format!("too many backends: {total} over all services, at most {MAX_BACKENDS}"),
        );
    }
}

/// A tunnel over IPv4 needs `tunnel_source`, over IPv6 `tunnel_source6`: reported once
/// each, at the first backend that needs it.
fn check_tunnel_sources(report: &mut Report, agent: &AgentDraft, services: &[ServiceDraft]) {
    let tunnelled = services.iter().flat_map(|s| &s.backends).filter(|b| b.forward.is_some_and(|f| f != Forward::Dr));
    let mut reported = [false, false];
    for b in tunnelled {
        let Some(address) = &b.address else { continue };
        let (v6, source, key) = match address.value {
            IpAddr::V4(_) => (0, &agent.tunnel_source, "tunnel_source"),
            IpAddr::V6(_) => (1, &agent.tunnel_source6, "tunnel_source6"),
        };
        if !reported[v6] && source.as_ref().is_some_and(|s| s.value.is_none()) {
            reported[v6] = true;
            report.error(
                address.line,
                format!(
                    "backend {} is reached by a tunnel over {}: set [agent] {key}, the tunnel's outer source address",
                    address.value,
                    family(address.value)
                ),
            );
        }
    }
}

/// Why a backend at `address` cannot be reached by `forward` for `vip`, if it cannot.
fn family_problem(forward: Forward, address: IpAddr, vip: IpAddr) -> Option<String> {
    let (a, v) = (family(address), family(vip));
    match forward {
        Forward::Dr if address.is_ipv4() != vip.is_ipv4() => Some(format!(
            "it is {a} but the vip {vip} is {v}: a direct-routing backend must be of the vip's address family \
             (a tunnel, forward = \"ipip\", carries an IPv4 vip to an IPv6 backend)"
        )),
        Forward::Ipip if vip.is_ipv6() && address.is_ipv4() => {
            Some(format!("an IPv6 vip ({vip}) is not carried over IPv4: give the backend an IPv6 address"))
        }
        Forward::Gue { .. } if address.is_ipv6() => {
            Some("GUE runs over IPv4 only: use forward = \"ipip\" (IP6IP6 or 4-in-6) for an IPv6 backend".to_string())
        }
        _ => None,
    }
}

/// `service "web"`, or `this service` when its name is missing or invalid.
fn service_called(svc: &ServiceDraft) -> String {
    match &svc.name {
        Some(name) => format!("service \"{}\"", name.value),
        None => "this service".to_string(),
    }
}

impl ServiceDraft {
    pub(super) fn build(self) -> Option<ServiceConfig> {
        Some(ServiceConfig {
            name: self.name?.value,
            vip: self.vip?.value,
            port: self.port?.value,
            protocol: self.protocol?.value,
            scheduler: self.scheduler?.value,
            table_size: self.table_size?.value,
            backends: self.backends.into_iter().map(BackendDraft::build).collect::<Option<Vec<_>>>()?,
            quorum: self.quorum?.value,
            sorry: self.sorry?.value,
            line: self.line,
        })
    }
}

/// A `[[service.backend]]` as read: `None` for a value that was missing or wrong (and
/// reported).
struct BackendDraft {
    line: usize,
    address: Option<Located<IpAddr>>,
    weight: Option<Located<u32>>,
    /// Its own `[service.backend.check]` table.
    check: Option<check::CheckDraft>,
    /// The check resolved against the service's.
    resolved_check: Option<CheckConfig>,
    /// Its own `forward` and `gue_port`, if given ...
    own_method: Option<Located<Option<Method>>>,
    own_gue_port: Option<Located<Option<u16>>>,
    /// ... and over the service's (`None` until resolved, or after an error).
    forward: Option<Forward>,
}

impl BackendDraft {
    /// Resolves `forward` over the service's method and GUE port.
    fn inherit(&mut self, method: Method, port: u16) {
        let (Some(own), Some(own_port)) = (&self.own_method, &self.own_gue_port) else { return };
        let port = own_port.value.unwrap_or(port);
        self.forward = Some(match own.value.unwrap_or(method) {
            Method::Dr => Forward::Dr,
            Method::Ipip => Forward::Ipip,
            Method::Gue => Forward::Gue { port },
        });
    }
}

fn read_backend(report: &mut Report, table: Located<&DeTable<'_>>) -> BackendDraft {
    let mut t = TableReader::new(report, table, "[[service.backend]]");
    let address = t.required_ip("address");
    let address = address.and_then(|a| t.check(a, |a| usable_unicast("backend address", a)));
    let weight = t.integer_or("weight", 0..=MAX_WEIGHT, DEFAULT_WEIGHT);
    let own_method = t.optional_choice("forward", FORWARDS);
    let own_gue_port = t.optional_integer("gue_port", 1..=u16::MAX);
    let check_table = t.optional_table("check");
    t.finish();
    let check = check_table
        .and_then(|c| c.value.map(|value| check::read_check(report, Located { value, line: c.line }, "[service.backend.check]")));
    BackendDraft { line: table.line, address, weight, check, resolved_check: None, own_method, own_gue_port, forward: None }
}

impl BackendDraft {
    fn build(self) -> Option<BackendConfig> {
        Some(BackendConfig {
            address: self.address?.value,
            weight: self.weight?.value,
            check: self.resolved_check,
            forward: self.forward?,
            line: self.line,
        })
    }
}

fn valid_service_name(name: &String) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > MAX_SERVICE_NAME_LEN || !name.chars().all(allowed) {
        Err(format!(
            "invalid name \"{name}\": use 1 to {MAX_SERVICE_NAME_LEN} letters, digits, '_', '.' or '-'"
        ))
    } else {
        Ok(())
    }
}

/// Refuses addresses that cannot be a VIP, a real server or a VRRP virtual address.
pub(super) fn usable_unicast(what: &str, addr: &IpAddr) -> Result<(), String> {
    let kind = if addr.is_unspecified() {
        "the unspecified address"
    } else if addr.is_multicast() {
        "a multicast address"
    } else if addr.is_loopback() {
        "a loopback address"
    } else if matches!(addr, IpAddr::V4(v4) if v4.is_broadcast()) {
        "the broadcast address"
    } else {
        return Ok(());
    };
    Err(format!("{what} {addr} is {kind}"))
}

/// A size Maglev builds a table of (its range is checked before); otherwise the nearest primes
/// in range.
fn valid_table_size(size: &u32) -> Result<(), String> {
    let size = *size;
    match maglev::validate_table_size(size) {
        Ok(()) => Ok(()),
        Err(MaglevError::NotPrime(_)) => {
            let below = (MIN_TABLE_SIZE..size).rev().find(|&n| maglev::is_prime(n));
            let above = next_prime(size).filter(|&p| p as usize <= MAX_RING_SIZE);
            let nearest: Vec<String> = below.into_iter().chain(above).map(|p| p.to_string()).collect();
            Err(format!("table_size {size} is not a prime (nearest: {})", nearest.join(" or ")))
        }
        Err(other) => Err(other.to_string()),
    }
}

/// The smallest prime at least `n`, if `u32` has one.
fn next_prime(n: u32) -> Option<u32> {
    (n..=u32::MAX).find(|&p| maglev::is_prime(p))
}

/// "IPv4" or "IPv6", for messages.
pub(super) fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::is_prime;

    #[test]
    fn primes() {
        let primes: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537) && is_prime(251) && !is_prime(65535));
        assert_eq!(next_prime(300), Some(307));
    }
}
