//! `virtual_server` and `virtual_server_group` as `[[service]]` tables: the scheduler, the
//! forwarding method (direct routing only), quorum and sorry server, and each real server's
//! checker as the backend's check. Settings cascade as keepalived's do: a virtual server's
//! (`delay_loop`, `retry`, `alpha`, ...) are the defaults of its real servers, whose own are the
//! defaults of their checkers.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use super::convert::{Block, Cx, Service, Table, Value};
use super::keywords::{CHECKER_IGNORED, RS_IGNORED, RS_REFUSED, VS_IGNORED};
use super::parse::Node;
use super::Pos;
use crate::config::Forward;

/// keepalived's defaults for checkers.
const DELAY_LOOP: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many addresses from one range of a virtual_server_group.
const MAX_RANGE: u128 = 256;

/// A `virtual_server_group`: its (address, port) entries.
pub(super) struct Group {
    at: Pos,
    entries: Vec<(IpAddr, u16, Pos)>,
}

pub(super) fn group(cx: &mut Cx, n: &Node, groups: &mut HashMap<String, Group>) {
    let Some(name) = cx.arg(n, 0) else { return };
    let mut entries = Vec::new();
    for e in n.children() {
        if e.keyword() == "fwmark" {
            cx.diags.error(e.at, "fwmark in virtual_server_group is not supported: xlb matches the VIP and port itself; list them");
            continue;
        }
        let port = match e.args().first() {
            Some(p) => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    cx.diags.error(e.at, format!("\"{p}\" is not a port"));
                    continue;
                }
            },
            None => 0,
        };
        cx.rest_ignored(e, 1);
        match addresses(e.keyword()) {
            Ok(list) => entries.extend(list.into_iter().map(|a| (a, port, e.at))),
            Err(problem) => cx.diags.error(e.at, problem),
        }
    }
    if let Some(first) = groups.get(name) {
        cx.diags.error(n.at, format!("virtual_server_group {name} is defined twice (first at line {})", first.at.line));
        return;
    }
    groups.insert(name.to_string(), Group { at: n.at, entries });
}

/// An address, a range (`192.0.2.1-10`, `192.0.2.250-192.0.3.5`, `2001:db8::1-1f`) or a prefix
/// (`192.0.2.0/29`), as its addresses.
fn addresses(word: &str) -> Result<Vec<IpAddr>, String> {
    let bad = || format!("\"{word}\" is not an address, range or prefix");
    let (first, last): (IpAddr, IpAddr) = if let Some((addr, prefix)) = word.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u32 = prefix.parse().ok().filter(|p| *p <= bits).ok_or_else(bad)?;
        let host_bits = bits - prefix;
        let n = to_u128(addr);
        let mask = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        (from_u128(n & !mask, addr.is_ipv4()), from_u128(n | mask, addr.is_ipv4()))
    } else if let Some((from, to)) = word.split_once('-') {
        let from: IpAddr = from.parse().map_err(|_| bad())?;
        let to = match to.parse::<IpAddr>() {
            Ok(to) => to,
            // The last byte (IPv4) or group (IPv6) alone.
            Err(_) => {
                let (radix, shift) = if from.is_ipv4() { (10, 8) } else { (16, 16) };
                let last = u128::from_str_radix(to, radix).ok().filter(|v| *v < 1 << shift).ok_or_else(bad)?;
                from_u128((to_u128(from) >> shift << shift) | last, from.is_ipv4())
            }
        };
        (from, to)
    } else {
        let a: IpAddr = word.parse().map_err(|_| bad())?;
        (a, a)
    };
    let (a, b) = (to_u128(first), to_u128(last));
    if first.is_ipv4() != last.is_ipv4() || b < a {
        return Err(bad());
    }
    if b - a >= MAX_RANGE {
        return Err(format!("{word} holds more than {MAX_RANGE} addresses: xlb makes a service of each; list fewer"));
    }
    Ok((a..=b).map(|n| from_u128(n, first.is_ipv4())).collect())
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

/// Settings a virtual server passes to its real servers and a real server to its checkers.
#[derive(Debug, Clone, Default)]
struct Defaults {
    delay_loop: Option<(Duration, Pos)>,
    connect_timeout: Option<(Duration, Pos)>,
    retry: Option<(u32, Pos)>,
    delay_before_retry: Option<(Duration, Pos)>,
    virtualhost: Option<(String, Pos)>,
    alpha: Option<(bool, Pos)>,
    inhibit: Option<(bool, Pos)>,
}

impl Defaults {
    /// `inner`'s settings, and ours where it has none.
    fn under(&self, inner: &Defaults) -> Defaults {
        Defaults {
            delay_loop: inner.delay_loop.or(self.delay_loop),
            connect_timeout: inner.connect_timeout.or(self.connect_timeout),
            retry: inner.retry.or(self.retry),
            delay_before_retry: inner.delay_before_retry.or(self.delay_before_retry),
            virtualhost: inner.virtualhost.clone().or(self.virtualhost.clone()),
            alpha: inner.alpha.or(self.alpha),
            inhibit: inner.inhibit.or(self.inhibit),
        }
    }

    /// Reads a keyword of the cascade; false when `c` is none.
    fn read(&mut self, cx: &mut Cx, c: &Node) -> bool {
        match c.keyword() {
            "delay_loop" => self.delay_loop = cx.seconds(c),
            "connect_timeout" => self.connect_timeout = cx.seconds(c),
            "retry" | "nb_get_retry" => self.retry = cx.located_number(c),
            "delay_before_retry" => self.delay_before_retry = cx.seconds(c),
            "virtualhost" => {
                cx.rest_ignored(c, 1);
                self.virtualhost = cx.arg(c, 0).map(|h| (h.to_string(), c.at));
            }
            "alpha" => self.alpha = cx.flag(c).map(|b| (b, c.at)),
            "inhibit_on_failure" => self.inhibit = cx.flag(c).map(|b| (b, c.at)),
            "warmup" => cx.diags.warning(c.at, "\"warmup\" is ignored: xlb starts every backend's first check at once"),
            _ => return false,
        }
        true
    }
}

/// A checker as read.
struct Checker {
    at: Pos,
    kind: &'static str,
    label: String,
    defaults: Defaults,
    connect_port: Option<(u16, Pos)>,
    /// HTTP_GET's one url: path, statuses, body text.
    path: Option<(String, Pos)>,
    status: Vec<(String, Pos)>,
    body: Option<(String, Pos)>,
    command: Option<(Vec<String>, Pos)>,
    script_timeout: Option<(Duration, Pos)>,
    user: Option<(String, Pos)>,
    notes: Vec<String>,
}

pub(super) fn virtual_server(cx: &mut Cx, n: &Node, groups: &HashMap<String, Group>) -> Vec<Service> {
    let label = n.words.join(" ");
    let targets: Vec<(IpAddr, u16, Pos)> = match n.args().first().map(String::as_str) {
        None => {
            cx.diags.error(n.at, "virtual_server needs an address and port, or group NAME");
            return Vec::new();
        }
        Some("fwmark") => {
            cx.diags.error(n.at, "virtual_server fwmark is not supported: xlb matches the VIP and port itself: write virtual_server ADDRESS PORT (port 0: every port)");
            return Vec::new();
        }
        Some("group") => {
            let Some(name) = cx.arg(n, 1) else { return Vec::new() };
            match groups.get(name) {
                Some(g) => g.entries.clone(),
                None => {
                    cx.diags.error(n.at, format!("virtual_server group {name}: no virtual_server_group of that name"));
                    return Vec::new();
                }
            }
        }
        Some(addr) => {
            let Some(vip) = cx.ip(n.at, "virtual_server", addr) else { return Vec::new() };
            let port = match n.args().get(1) {
                None => 0,
                Some(p) => match p.parse() {
                    Ok(p) => p,
                    Err(_) => {
                        cx.diags.error(n.at, format!("virtual_server: \"{p}\" is not a port"));
                        return Vec::new();
                    }
                },
            };
            cx.rest_ignored(n, 2);
            vec![(vip, port, n.at)]
        }
    };

    // The virtual server's own keywords, then its real servers.
    let mut defaults = Defaults::default();
    let mut algo: Option<(String, Pos)> = None;
    let (mut mh_port, mut sh_port) = (false, false);
    let mut method: Option<(String, Pos)> = None;
    let mut tunnel = TunnelKeys::default();
    let mut persistence: Option<(Duration, Pos)> = None;
    let mut udp = false;
    let mut quorum: Option<(u32, Pos)> = None;
    let mut sorry: Option<(IpAddr, Pos)> = None;
    let mut sorry_method: Option<(String, Pos)> = None;
    let mut notes: Vec<String> = Vec::new();
    let mut reals = Vec::new();
    for c in n.children() {
        if defaults.read(cx, c) {
            continue;
        }
        match c.keyword() {
            "lb_algo" | "lvs_sched" => {
                cx.rest_ignored(c, 1);
                algo = cx.arg(c, 0).map(|a| (a.to_string(), c.at));
            }
            "mh-port" => mh_port = true,
            "sh-port" => sh_port = true,
            "lb_kind" | "lvs_method" => method = cx.arg(c, 0).map(|m| (m.to_string(), c.at)),
            "tun_type" | "tun_port" | "tun_flags" => tunnel.read(cx, c),
            "persistence_timeout" => {
                persistence = match c.args().first() {
                    None => Some((Duration::from_secs(360), c.at)),
                    Some(_) => cx.seconds(c),
                }
            }
            "protocol" => {
                cx.rest_ignored(c, 1);
                match cx.arg(c, 0).map(str::to_ascii_uppercase).as_deref() {
                    Some("TCP") => udp = false,
                    Some("UDP") => udp = true,
                    Some(other) => cx.diags.error(c.at, format!("protocol {other} is not supported: xlb balances TCP and UDP")),
                    None => {}
                }
            }
            "quorum" => quorum = cx.located_number(c),
            "quorum_up" | "quorum_down" => {
                let note = cx.approx(c, "xlb runs no script when the quorum changes (xlb stats shows a service below its quorum)");
                notes.push(note);
            }
            "sorry_server" => {
                if let Some(a) = cx.arg(c, 0) {
                    sorry = cx.ip(c.at, "sorry_server", a).map(|a| (a, c.at));
                }
                cx.rest_ignored(c, 2);
            }
            "sorry_server_lvs_method" => sorry_method = cx.arg(c, 0).map(|m| (m.to_string(), c.at)),
            "real_server" => {
                if cx.wants_block(c, true) {
                    reals.extend(real_server(cx, c));
                }
            }
            _ => cx.other(c, "virtual_server", VS_IGNORED, &[]),
        }
    }

    // Forwarding: direct routing, or a tunnel (IPIP, or GUE with tun_type gue). keepalived's
    // default is NAT, which xlb does not do.
    let forward = |cx: &mut Cx, method: &Option<(String, Pos)>, tunnel: &TunnelKeys, what: &str, at: Pos| -> Option<Forward> {
        match method {
            Some((m, _)) if m == "DR" => Some(Forward::Dr),
            Some((m, _)) if m == "TUN" => tunnel.forward(cx, what),
            Some((m, mat)) => {
                cx.diags.error(
                    *mat,
                    format!("lb_kind {m} ({what}) is not supported: xlb forwards by direct routing (lb_kind DR: the backends hold the VIP on lo and answer the clients themselves) or a tunnel (lb_kind TUN)"),
                );
                None
            }
            None => {
                cx.diags.error(
                    at,
                    format!("{what} has no lb_kind, and keepalived's default is NAT, which xlb does not do: write lb_kind DR if the real servers are set up for direct routing (the VIP on lo, arp_ignore), or TUN for a tunnel"),
                );
                None
            }
        }
    };
    let mut forwarding_ok = true;
    let mut forwards = Vec::new();
    for r in &reals {
        let m = r.method.clone().or(method.clone());
        let f = forward(cx, &m, &r.tunnel.under(&tunnel), &format!("real_server {}", r.addr), if r.method.is_some() { r.at } else { n.at });
        forwarding_ok &= f.is_some();
        forwards.push(f.unwrap_or(Forward::Dr));
    }
    if let Some((_, at)) = &sorry {
        match forward(cx, &sorry_method.clone().or(method.clone()), &tunnel, "sorry_server", *at) {
            Some(Forward::Dr) => {}
            Some(_) => {
                cx.diags.error(*at, "sorry_server by a tunnel is not supported: xlb reaches the sorry server by direct routing (sorry_server_lvs_method DR)");
                forwarding_ok = false;
            }
            None => forwarding_ok = false,
        }
    }
    if reals.is_empty() && sorry.is_none() {
        if let Some((m, _)) = &method {
            forwarding_ok &= m == "DR" || forward(cx, &method, &tunnel, "virtual_server", n.at).is_some();
        }
    }
    if !forwarding_ok {
        return Vec::new();
    }

    let scheduler = scheduler(cx, algo.as_ref(), persistence, mh_port, sh_port, n.at);
    let mut services = Vec::new();
    for (vip, port, at) in targets {
        let name = service_name(cx, vip, port, udp);
        let mut block = Block::new(at, label.clone());
        block.notes.extend(notes.iter().cloned());
        let t = &mut block.table;
        t.set("name", Value::string(&name), at);
        t.set("vip", Value::string(&vip.to_string()), at);
        t.set("port", Value::number(port), at);
        t.set("protocol", Value::string(if udp { "udp" } else { "tcp" }), at);
        if let Some((s, sat, note)) = &scheduler {
            let e = t.set("scheduler", Value::string(s), *sat);
            e.notes.extend(note.clone());
        }
        if let Some((q, qat)) = quorum {
            quorum_key(t, q, qat, &reals);
        }
        if let Some((addr, sat)) = sorry {
            t.set("sorry", Value::string(&addr.to_string()), sat);
        }
        let mut backends: Vec<(Block, Option<Block>)> = Vec::new();
        for (r, f) in reals.iter().zip(&forwards) {
            let mut b = Block::new(r.at, format!("real_server {}{}", r.addr, r.port.map(|p| format!(" {p}")).unwrap_or_default()));
            b.notes.extend(r.notes.iter().cloned());
            b.table.set("address", Value::string(&r.addr.to_string()), r.at);
            let mat = r.method.as_ref().or(method.as_ref()).map_or(r.at, |(_, at)| *at);
            match f {
                Forward::Dr => {}
                Forward::Ipip => {
                    b.table.set("forward", Value::string("ipip"), mat);
                }
                Forward::Gue { port } => {
                    b.table.set("forward", Value::string("gue"), mat);
                    b.table.set("gue_port", Value::number(*port), mat);
                }
            }
            if let Some((w, wat)) = r.weight {
                b.table.set("weight", Value::number(w), wat);
            }
            let check = r.checker.as_ref().map(|c| check_block(c, &defaults.under(&r.defaults).under(&c.defaults), r, port));
            if let (Some(p), true) = (r.port, port != 0) {
                if p != port && r.checker.is_none() {
                    b.notes.push(format!("port {p}: direct routing and tunnels keep the VIP's port {port} (as LVS-DR and LVS-TUN do)"));
                }
            }
            let inhibit = defaults.under(&r.defaults).inhibit;
            if let (Some((true, iat)), true) = (inhibit, r.checker.is_some()) {
                let note = format!(
                    "inhibit_on_failure (line {}): a failed backend leaves xlb's table and its flows move (keepalived sets its weight 0 and keeps its connections)",
                    iat.line
                );
                cx.warn_once("inhibit", iat, note.clone());
                b.notes.push(note);
            }
            backends.push((b, check));
        }
        let (check, backends) = factor_checks(backends);
        services.push(Service { block, check, backends });
    }
    services
}

/// The scheduler key: its value, origin and note; `None` for xlb's default with nothing to say.
fn scheduler(
    cx: &mut Cx,
    algo: Option<&(String, Pos)>,
    persistence: Option<(Duration, Pos)>,
    mh_port: bool,
    sh_port: bool,
    at: Pos,
) -> Option<(&'static str, Pos, Option<String>)> {
    if let Some((d, pat)) = persistence.filter(|(d, _)| !d.is_zero()) {
        let note = format!(
            "persistence_timeout {}: source hashing keeps each client address on its backend for as long as the backends stay, without a timeout",
            d.as_secs()
        );
        cx.diags.warning(pat, note.clone());
        return Some(("sh", pat, Some(note)));
    }
    let (name, aat) = match algo {
        Some((name, aat)) => (name.as_str(), *aat),
        None => ("wlc", at),
    };
    match name {
        // IPVS's mh and sh hash the client's address (and its port with mh-port / sh-port).
        "mh" | "sh" if (name == "mh" && mh_port) || (name == "sh" && sh_port) => {
            Some(("maglev", aat, Some(format!("lb_algo {name} with {name}-port: Maglev over the 5-tuple"))))
        }
        "mh" | "sh" => Some(("sh", aat, Some(format!("lb_algo {name}: IPVS hashes the client's address; xlb's sh is Maglev over the client's address")))),
        "rr" | "wrr" | "lc" | "wlc" | "sed" | "nq" | "twos" => {
            let what = if algo.is_none() { "no lb_algo (keepalived's default: wlc)".to_string() } else { format!("lb_algo {name}") };
            let note = format!("{what}: weighted Maglev, which spreads connections by weight without counting them");
            cx.warn_once(
                "lb_algo",
                aat,
                format!("{what}: xlb has no round-robin or least-connection scheduling; weighted Maglev hashing of the 5-tuple takes its place, spreading connections by weight (said once for every such virtual_server)"),
            );
            Some(("maglev", aat, Some(note)))
        }
        "dh" | "lblc" | "lblcr" | "fo" | "ovf" => {
            cx.diags.error(aat, format!("lb_algo {name} is not supported: xlb schedules by Maglev over the 5-tuple (mh with mh-port, rr, wlc, ...) or the client address (mh, sh)"));
            None
        }
        other => {
            cx.diags.error(aat, format!("unknown lb_algo \"{other}\""));
            None
        }
    }
}

/// keepalived's quorum is a total weight of live real servers; xlb's is a number of usable
/// backends: the fewest backends whose weights always reach it.
fn quorum_key(t: &mut Table, q: u32, at: Pos, reals: &[Real]) {
    let mut weights: Vec<u32> = reals.iter().map(|r| r.weight.map_or(1, |(w, _)| w)).collect();
    weights.sort_unstable();
    let mut sum = 0u64;
    let count = weights.iter().position(|w| {
        sum += u64::from(*w);
        sum >= u64::from(q)
    });
    let backends = count.map_or(weights.len() + 1, |i| i + 1).max(1);
    let e = t.set("quorum", Value::number(backends), at);
    if weights.iter().any(|w| *w != 1) || backends as u32 != q {
        e.notes.push(format!(
            "quorum {q}: keepalived counts the weight of the live real servers, xlb counts backends: any {backends} of them weigh at least {q}"
        ));
    }
}

/// `192.0.2.100_80`, `2001_db8__100_443`, `..._53_udp`; `vsN` where that is too long; unique.
fn service_name(cx: &mut Cx, vip: IpAddr, port: u16, udp: bool) -> String {
    let mut base = format!("{}_{port}{}", vip.to_string().replace(':', "_"), if udp { "_udp" } else { "" });
    if base.len() > crate::config::MAX_SERVICE_NAME_LEN - 3 {
        base = format!("vs{}", cx.service_names.len() + 1);
    }
    let mut name = base.clone();
    let mut n = 2;
    while cx.service_names.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    cx.service_names.insert(name.clone());
    name
}

/// A real server as read.
struct Real {
    at: Pos,
    addr: IpAddr,
    port: Option<u16>,
    weight: Option<(u32, Pos)>,
    method: Option<(String, Pos)>,
    tunnel: TunnelKeys,
    defaults: Defaults,
    checker: Option<Checker>,
    notes: Vec<String>,
}

/// `tun_type` and `tun_port` of a virtual_server or real_server (keepalived's LVS-TUN
/// encapsulations).
#[derive(Clone, Default)]
struct TunnelKeys {
    kind: Option<(String, Pos)>,
    port: Option<(u32, Pos)>,
}

impl TunnelKeys {
    fn read(&mut self, cx: &mut Cx, c: &Node) {
        match c.keyword() {
            "tun_type" => self.kind = cx.arg(c, 0).map(|k| (k.to_string(), c.at)),
            "tun_port" => self.port = cx.located_number(c),
            _ => {
                cx.approx(c, "xlb sends GUE without a checksum (allowed over IPv4) and without remote checksum offload");
            }
        }
    }

    /// A real server's keys over its virtual server's.
    fn under(&self, outer: &TunnelKeys) -> TunnelKeys {
        TunnelKeys { kind: self.kind.clone().or(outer.kind.clone()), port: self.port.or(outer.port) }
    }

    /// The tunnel they name: IPIP (the default), or GUE to `tun_port`.
    fn forward(&self, cx: &mut Cx, what: &str) -> Option<Forward> {
        match self.kind.as_ref().map(|(k, at)| (k.as_str(), *at)) {
            None | Some(("ipip", _)) => Some(Forward::Ipip),
            Some(("gue", kat)) => match self.port {
                Some((p, _)) if (1..=u32::from(u16::MAX)).contains(&p) => Some(Forward::Gue { port: p as u16 }),
                Some((p, pat)) => {
                    cx.diags.error(pat, format!("tun_port {p} ({what}) is not a port"));
                    None
                }
                None => {
                    cx.diags.error(kat, format!("tun_type gue ({what}) needs a tun_port, the real server's fou port"));
                    None
                }
            },
            Some((other, kat)) => {
                cx.diags.error(kat, format!("tun_type {other} ({what}) is not supported: xlb tunnels by IPIP (IP6IP6, 4-in-6) or GUE"));
                None
            }
        }
    }
}

fn real_server(cx: &mut Cx, n: &Node) -> Option<Real> {
    let addr = cx.arg(n, 0)?;
    let addr = cx.ip(n.at, "real_server", addr)?;
    let port = match n.args().get(1) {
        None => None,
        Some(p) => match p.parse() {
            Ok(p) => Some(p),
            Err(_) => {
                cx.diags.error(n.at, format!("real_server: \"{p}\" is not a port"));
                return None;
            }
        },
    };
    cx.rest_ignored(n, 2);
    let mut r = Real {
        at: n.at,
        addr,
        port,
        weight: None,
        method: None,
        tunnel: TunnelKeys::default(),
        defaults: Defaults::default(),
        checker: None,
        notes: Vec::new(),
    };
    for c in n.children() {
        if r.defaults.read(cx, c) {
            continue;
        }
        match c.keyword() {
            "weight" => r.weight = cx.located_number(c),
            "lb_kind" | "lvs_method" => r.method = cx.arg(c, 0).map(|m| (m.to_string(), c.at)),
            "tun_type" | "tun_port" | "tun_flags" => r.tunnel.read(cx, c),
            "notify_up" | "notify_down" => {
                let note = cx.approx(c, "xlb runs no script when a backend changes state: it logs every change with its reason");
                r.notes.push(note);
            }
            "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" => {
                if !cx.wants_block(c, true) {
                    continue;
                }
                if let Some(first) = &r.checker {
                    cx.diags.error(
                        c.at,
                        format!("{}: xlb runs one check per backend (this one has {} at line {})", c.keyword(), first.label, first.at.line),
                    );
                    continue;
                }
                r.checker = checker(cx, c);
            }
            _ => cx.other(c, "real_server", RS_IGNORED, RS_REFUSED),
        }
    }
    Some(r)
}

fn checker(cx: &mut Cx, n: &Node) -> Option<Checker> {
    let kind = match n.keyword() {
        "TCP_CHECK" => "tcp",
        "HTTP_GET" => "http",
        "SSL_GET" => "tcp",
        _ => "script",
    };
    let mut c = Checker {
        at: n.at,
        kind,
        label: n.keyword().to_string(),
        defaults: Defaults::default(),
        connect_port: None,
        path: None,
        status: Vec::new(),
        body: None,
        command: None,
        script_timeout: None,
        user: None,
        notes: Vec::new(),
    };
    if n.keyword() == "SSL_GET" {
        let note = cx.approx(n, "xlb has no TLS check: a TCP connect to the same port takes its place (the handshake, status_code and digest are not checked)");
        c.notes.push(note);
    }
    let mut urls = 0;
    for k in n.children() {
        if c.defaults.read(cx, k) {
            continue;
        }
        match (kind, n.keyword(), k.keyword()) {
            ("tcp" | "http", _, "connect_port") => c.connect_port = cx.located_number(k),
            ("tcp" | "http", _, "connect_ip") => {
                cx.diags.error(k.at, "connect_ip is not supported: xlb checks each backend at its own address");
            }
            (_, "HTTP_GET" | "SSL_GET", "url") if cx.wants_block(k, true) => {
                urls += 1;
                if urls > 1 {
                    cx.diags.error(k.at, "a second url: xlb's HTTP check asks for one path; keep the url that tells best whether the backend serves");
                    continue;
                }
                if n.keyword() == "HTTP_GET" {
                    url(cx, k, &mut c);
                }
            }
            ("script", _, "misc_path") => {
                if let Some((argv, user)) = cx.script(k) {
                    c.command = Some((argv, k.at));
                    if user.is_some() {
                        c.user = user;
                    }
                }
            }
            ("script", _, "misc_timeout") => c.script_timeout = cx.seconds(k),
            ("script", _, "user") => {
                c.user = cx.arg(k, 0).map(|u| (u.to_string(), k.at));
                if k.args().len() > 1 {
                    cx.diags.warning(k.at, "user: the group is ignored: xlb runs a script with its user's primary group");
                }
            }
            ("script", _, "misc_dynamic") => {
                cx.diags.error(
                    k.at,
                    "misc_dynamic is not supported: xlb's script checks take exit status 0 as up and any other as down, \
                     so the exit statuses 2-255 that set a weight would take the backend down",
                );
            }
            _ => cx.other(k, n.keyword(), CHECKER_IGNORED, &[]),
        }
    }
    if kind == "script" && c.command.is_none() {
        cx.diags.error(n.at, "MISC_CHECK needs misc_path");
    }
    Some(c)
}

fn url(cx: &mut Cx, n: &Node, c: &mut Checker) {
    for k in n.children() {
        match k.keyword() {
            "path" => {
                cx.rest_ignored(k, 1);
                c.path = cx.arg(k, 0).map(|p| (p.to_string(), k.at));
            }
            "status_code" => {
                if k.args().is_empty() {
                    cx.diags.error(k.at, "status_code needs a value");
                }
                c.status = k.args().iter().map(|s| (s.clone(), k.at)).collect();
            }
            "digest" => {
                let note = cx.approx(
                    k,
                    "xlb's HTTP check cannot compare an MD5 digest of the body: it checks the status alone; \
                     to check the content, set expect_body to a text the page contains",
                );
                c.notes.push(note);
            }
            "virtualhost" => {
                cx.rest_ignored(k, 1);
                c.defaults.virtualhost = cx.arg(k, 0).map(|h| (h.to_string(), k.at));
            }
            "regex" => {
                let Some(re) = cx.arg(k, 0) else { continue };
                if re.chars().any(|ch| "\\^$.|?*+()[]{}".contains(ch)) {
                    cx.diags.error(k.at, "regex is not supported: xlb's HTTP check looks for a literal text in the body (expect_body)");
                } else {
                    c.body = Some((re.to_string(), k.at));
                }
            }
            "regex_no_match" => cx.diags.error(k.at, "regex_no_match is not supported: xlb's HTTP check needs a text to be present"),
            _ => cx.other(
                k,
                "url",
                &[
                    ("regex_options", "xlb's HTTP check looks for a literal text"),
                    ("regex_stack", "xlb's HTTP check looks for a literal text"),
                    ("regex_min_offset", "xlb's HTTP check looks for a literal text"),
                    ("regex_max_offset", "xlb's HTTP check looks for a literal text"),
                    ("tls_compliant", "xlb has no TLS check"),
                ],
                &[],
            ),
        }
    }
}

/// A checker as a backend's full check table (`d`: the cascade down to it).
fn check_block(c: &Checker, d: &Defaults, r: &Real, service_port: u16) -> Block {
    let mut b = Block::new(c.at, c.label.clone());
    b.notes.extend(c.notes.iter().cloned());
    let t = &mut b.table;
    t.set("type", Value::string(c.kind), c.at);
    let port = c.connect_port.or(r.port.map(|p| (p, r.at)));
    if let Some((p, pat)) = port {
        if p != service_port {
            t.set("port", Value::number(p), pat);
        }
    }
    let (interval, iat) = d.delay_loop.unwrap_or((DELAY_LOOP, c.at));
    let e = t.set("interval", Value::duration(interval), iat);
    if d.delay_loop.is_none() {
        e.notes.push("keepalived's default delay_loop".into());
    }
    let timeout = match c.kind {
        "script" => c.script_timeout.unwrap_or((interval, iat)),
        _ => d.connect_timeout.unwrap_or((CONNECT_TIMEOUT, c.at)),
    };
    t.set("timeout", Value::duration(timeout.0), timeout.1);
    let default_retry = if c.kind == "script" { 0 } else { 1 };
    let (retry, rat) = d.retry.unwrap_or((default_retry, c.at));
    if retry > 0 {
        let fast = if c.label == "HTTP_GET" || c.label == "SSL_GET" { 3 } else { 1 };
        let (delay, dat) = d.delay_before_retry.unwrap_or((Duration::from_secs(fast), c.at));
        t.set("fast_interval", Value::duration(delay), dat);
    }
    t.set("rise", Value::number(1), c.at);
    t.set("fall", Value::number(u64::from(retry) + 1), rat).notes.push(format!("retry {retry}: down after {} failures in a row", u64::from(retry) + 1));
    if let Some((true, aat)) = d.alpha {
        t.set("initial", Value::string("down"), aat);
    }
    if c.kind == "http" {
        if let Some((path, pat)) = &c.path {
            t.set("path", Value::string(path), *pat);
        }
        if let Some((host, hat)) = &d.virtualhost {
            t.set("host", Value::string(host), *hat);
        }
        if !c.status.is_empty() {
            t.set("expect_status", Value::strings(&c.status.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>()), c.status[0].1);
        }
        if let Some((body, bat)) = &c.body {
            t.set("expect_body", Value::string(body), *bat);
        }
    }
    if c.kind == "script" {
        if let Some((argv, aat)) = &c.command {
            t.set("command", Value::strings(argv), *aat);
        }
        if let Some((user, uat)) = &c.user {
            t.set("user", Value::string(user), *uat);
        }
    }
    b
}

/// With every backend checked, the keys all their checks share go to `[service.check]` (the
/// first backend's checker names it) and each backend keeps the rest.
fn factor_checks(backends: Vec<(Block, Option<Block>)>) -> (Option<Block>, Vec<(Block, Option<Block>)>) {
    if backends.is_empty() || backends.iter().any(|(_, c)| c.is_none()) {
        return (None, backends);
    }
    let checks: Vec<&Block> = backends.iter().filter_map(|(_, c)| c.as_ref()).collect();
    let first = checks[0];
    let mut service = Block::new(first.at, first.label.clone());
    service.notes = first.notes.clone();
    for e in &first.table.entries {
        if checks.iter().all(|c| c.table.get(e.key).is_some_and(|o| o.value == e.value)) {
            service.table.entries.push(e.clone());
        }
    }
    let shared: Vec<&str> = service.table.entries.iter().map(|e| e.key).collect();
    let backends = backends
        .into_iter()
        .map(|(b, c)| {
            let c = c.and_then(|mut c| {
                c.table.entries.retain(|e| !shared.contains(&e.key));
                if c.notes == service.notes {
                    c.notes.clear();
                }
                (!c.table.entries.is_empty() || !c.notes.is_empty()).then_some(c)
            });
            (b, c)
        })
        .collect();
    (Some(service), backends)
}
