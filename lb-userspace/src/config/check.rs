//! `[service.check]` and `[service.backend.check]`: active health checks.
//!
//! A service's check applies to each of its backends; a backend's own check table overrides
//! it key by key (a different port, path or even type for one backend). Defaults follow
//! HAProxy's `check inter 2s rise 2 fall 3`.

use std::{net::IpAddr, time::Duration};

use toml::de::DeTable;

use super::reader::{Located, Report, TableReader};
use crate::health::{CheckKind, Health, HttpCheck};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Timeout when none is given: one second, or the interval if that is shorter.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
const CHECK_TYPES: &[&str] = &["tcp", "http", "udp", "script"];
const INITIAL: &[(&str, Health)] = &[("up", Health::Up), ("down", Health::Down)];

/// A backend's health check, resolved: service keys, then the backend's overrides, then
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// `type` (required): `"tcp"` (connect), `"http"` (GET), `"udp"` (send and expect a reply)
    /// or `"script"` (exit status 0 means up, keepalived's MISC_CHECK): `command` (argv, no
    /// shell), run as `user` (default `[agent] script_user`, else root). The program must be
    /// owned by root and writable by root alone (checked against this host).
    pub kind: CheckKind,
    /// `port`: where to check; default the service's port (required when that is 0, except for
    /// scripts). Checks go to the backend's own address, never to the VIP.
    pub port: u16,
    /// `interval`: time between checks, default 2 s.
    pub interval: Duration,
    /// `fast_interval`: time between checks while a backend is changing state (a check
    /// disagreed with its state but not yet `rise`/`fall` times). Default a quarter of
    /// `interval`.
    pub fast_interval: Duration,
    /// `timeout`: a check that takes longer fails ("timeout after 500 ms"). Default 1 s or the
    /// interval if shorter.
    pub timeout: Duration,
    /// `rise`: consecutive passes that bring a down backend up. Default 2.
    pub rise: u32,
    /// `fall`: consecutive failures that take an up backend down. Default 3.
    pub fall: u32,
    /// `initial`: `"up"` (default; the first check decides at once) or `"down"` (the backend
    /// waits for `rise` passes, like keepalived's `alpha`).
    pub initial: Health,
    /// Line of the backend's check table, or of the service's when the backend has none (for
    /// diagnostics).
    pub line: usize,
}

/// A check table as read: every key optional, so a backend's table can override a service's.
#[derive(Default)]
pub(super) struct CheckDraft {
    line: usize,
    kind: Option<Located<String>>,
    /// The table has a `type` key, valid or not (an invalid one is reported once).
    has_type: bool,
    port: Option<Located<u16>>,
    interval: Option<Located<Duration>>,
    fast_interval: Option<Located<Duration>>,
    timeout: Option<Located<Duration>>,
    rise: Option<Located<u32>>,
    fall: Option<Located<u32>>,
    initial: Option<Located<Health>>,
    path: Option<Located<String>>,
    host: Option<Located<String>>,
    expect_status: Option<Located<Vec<(u16, u16)>>>,
    expect_body: Option<Located<String>>,
    send: Option<Located<String>>,
    expect: Option<Located<String>>,
    command: Option<Located<Vec<String>>>,
    user: Option<Located<String>>,
}

/// `Some(Located(Some(x)))` becomes `Some(Located(x))`.
fn present<T>(item: Option<Located<Option<T>>>) -> Option<Located<T>> {
    item.and_then(|l| l.value.map(|value| Located { value, line: l.line }))
}

pub(super) fn read_check(report: &mut Report, table: Located<&DeTable<'_>>, section: &str) -> CheckDraft {
    let has_type = table.value.contains_key("type");
    let mut t = TableReader::new(report, table, section);
    let kind = present(t.optional("type", |r, key, v, line| {
        let s = r.string_value(key, v, line)?;
        if CHECK_TYPES.contains(&s.as_str()) {
            Some(s)
        } else {
            r.error(line, format!("invalid check type \"{s}\": expected \"tcp\", \"http\", \"udp\" or \"script\""));
            None
        }
    }));
    let port = present(t.optional_integer("port", 1..=u16::MAX));
    let interval = present(t.optional_duration("interval"));
    let fast_interval = present(t.optional_duration("fast_interval"));
    let timeout = present(t.optional_duration("timeout"));
    let rise = present(t.optional_integer("rise", 1..=100));
    let fall = present(t.optional_integer("fall", 1..=100));
    let initial = t.optional("initial", |r, key, v, line| {
        let s = r.string_value(key, v, line)?;
        match INITIAL.iter().find(|(name, _)| *name == s) {
            Some((_, h)) => Some(*h),
            None => {
                r.error(line, format!("invalid initial \"{s}\": expected \"up\" or \"down\""));
                None
            }
        }
    });
    let initial = present(initial);
    let path = present(t.optional_string("path"));
    let host = present(t.optional_string("host"));
    let expect_status = present(t.optional("expect_status", |r, key, v, line| {
        let items = r.string_or_integer_array(key, v, line)?;
        let mut ranges = Vec::new();
        for (item, item_line) in items {
            match parse_status_range(&item) {
                Ok(range) => ranges.push(range),
                Err(problem) => {
                    r.error(item_line, format!("invalid status \"{item}\" in expect_status: {problem}"));
                    return None;
                }
            }
        }
        Some(ranges)
    }));
    let expect_body = present(t.optional_string("expect_body"));
    let send = present(t.optional_string("send"));
    let expect = present(t.optional_string("expect"));
    let command = present(t.optional("command", |r, key, v, line| {
        let argv: Vec<String> = r.string_array_value(key, v, line)?.into_iter().map(|s| s.value).collect();
        if argv.is_empty() {
            r.error(line, "command must name a program: [\"/path/to/check\", \"arg\", ...]");
            return None;
        }
        Some(argv)
    }));
    let user = present(t.optional_user("user"));
    t.finish();
    if let Some(path) = &path {
        if !path.value.starts_with('/') {
            report.error(path.line, format!("path \"{}\" must start with /", path.value));
        }
    }
    if let Some(interval) = &interval {
        if interval.value < Duration::from_millis(10) {
            report.error(interval.line, "interval must be at least 10ms");
        }
    }
    CheckDraft {
        line: table.line,
        kind,
        has_type,
        port,
        interval,
        fast_interval,
        timeout,
        rise,
        fall,
        initial,
        path,
        host,
        expect_status,
        expect_body,
        send,
        expect,
        command,
        user,
    }
}

/// "200", "200-399" or an integer.
fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let (low, high) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let parse = |x: &str| x.parse::<u16>().ok().filter(|n| (100..=599).contains(n));
    match (parse(low), parse(high)) {
        (Some(a), Some(b)) if a <= b => Ok((a, b)),
        (Some(_), Some(_)) => Err("the range runs backwards".into()),
        _ => Err("statuses are 100..=599, single (\"200\") or a range (\"200-399\")".into()),
    }
}

/// A key from the backend's table if it set it, else from the service's.
fn pick<T: Clone>(service: Option<&CheckDraft>, backend: Option<&CheckDraft>, get: impl Fn(&CheckDraft) -> &Option<T>) -> Option<T> {
    backend.and_then(|b| get(b).clone()).or_else(|| service.and_then(|s| get(s).clone()))
}

/// Resolves the check of one backend (`what`, as messages name it). A missing type is reported
/// at the line of the backend's check table, or of the service's when the backend has none;
/// other missing pieces at the line of the `type` key.
pub(super) fn resolve(
    report: &mut Report,
    service: Option<&CheckDraft>,
    backend: Option<&CheckDraft>,
    service_port: Option<u16>,
    what: &str,
) -> Option<CheckConfig> {
    if service.is_none() && backend.is_none() {
        return None;
    }
    let line = backend.or(service).map(|d| d.line).unwrap_or(0);
    macro_rules! key {
        ($field:ident) => {
            pick(service, backend, |d| &d.$field)
        };
    }
    let Some(kind_name) = key!(kind) else {
        // An invalid type was reported where it stands; only a type written nowhere is new.
        if !(backend.is_some_and(|d| d.has_type) || service.is_some_and(|d| d.has_type)) {
            report.error(line, format!("missing required key \"type\" in the check of {what}"));
        }
        return None;
    };
    let kind = match kind_name.value.as_str() {
        "tcp" => CheckKind::Tcp,
        "http" => {
            let mut http = HttpCheck::new(key!(path).map(|p| p.value).unwrap_or_else(|| "/".into()));
            http.host = key!(host).map(|h| h.value);
            http.expect_status = key!(expect_status).map(|s| s.value).unwrap_or_default();
            http.expect_body = key!(expect_body).map(|b| b.value);
            CheckKind::Http(http)
        }
        "udp" => {
            let Some(send) = key!(send) else {
                report.error(kind_name.line, format!("a udp check needs \"send\" (the datagram to send) in the check of {what}"));
                return None;
            };
            CheckKind::Udp { payload: send.value.into_bytes(), expect: key!(expect).map(|e| e.value.into_bytes()) }
        }
        _ => {
            let Some(command) = key!(command) else {
                report.error(kind_name.line, format!("a script check needs \"command\" in the check of {what}"));
                return None;
            };
            CheckKind::Script { argv: command.value, user: key!(user).map(|u| u.value) }
        }
    };
    for (name, set) in [
        ("path", key!(path).is_some()),
        ("host", key!(host).is_some()),
        ("expect_status", key!(expect_status).is_some()),
        ("expect_body", key!(expect_body).is_some()),
    ] {
        if set && !matches!(kind, CheckKind::Http(_)) {
            report.warning(kind_name.line, format!("{name} is only used by http checks (the check of {what} is {})", kind.name()));
        }
    }
    if key!(user).is_some() && !matches!(kind, CheckKind::Script { .. }) {
        report.warning(kind_name.line, format!("user is only used by script checks (the check of {what} is {})", kind.name()));
    }
    let port = match (key!(port), service_port) {
        (Some(p), _) => p.value,
        (None, Some(p)) if p != 0 => p,
        _ if matches!(kind, CheckKind::Script { .. }) => 0,
        _ => {
            report.error(kind_name.line, format!("the check of {what} needs a port: the service takes every port (port = 0)"));
            return None;
        }
    };
    let interval = key!(interval).map(|d| d.value).unwrap_or(DEFAULT_INTERVAL);
    let fast_interval = key!(fast_interval).map(|d| d.value).unwrap_or(interval / 4).min(interval);
    let timeout = key!(timeout).map(|d| d.value).unwrap_or(DEFAULT_TIMEOUT.min(interval));
    Some(CheckConfig {
        kind,
        port,
        interval,
        fast_interval,
        timeout,
        rise: key!(rise).map(|r| r.value).unwrap_or(DEFAULT_RISE),
        fall: key!(fall).map(|f| f.value).unwrap_or(DEFAULT_FALL),
        initial: key!(initial).map(|i| i.value).unwrap_or(Health::Up),
        line,
    })
}

impl CheckConfig {
    /// Where the check goes for a backend at `address`.
    pub fn target(&self, address: IpAddr) -> std::net::SocketAddr {
        std::net::SocketAddr::new(address, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Severity};
    use super::*;

    fn service(check: &str, backends: &str) -> String {
        format!(
            "[agent]\ninterfaces = [\"eth0\"]\n\n[[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 80\n{check}\n{backends}"
        )
    }

    #[test]
    fn service_check_applies_to_every_backend_with_defaults() {
        let text = service(
            "[service.check]\ntype = \"http\"\npath = \"/health\"\nexpect_status = [\"200-299\", 304]\nexpect_body = \"ok\"\n",
            "[[service.backend]]\naddress = \"203.0.113.11\"\n[[service.backend]]\naddress = \"203.0.113.12\"\n",
        );
        let (cfg, warnings) = parse("t.toml", &text).unwrap();
        assert_eq!(warnings, []);
        for b in &cfg.services[0].backends {
            let c = b.check.as_ref().expect("check");
            let CheckKind::Http(http) = &c.kind else { panic!("{c:?}") };
            assert_eq!(http.path, "/health");
            assert_eq!(http.expect_status, [(200, 299), (304, 304)]);
            assert_eq!(http.expect_body.as_deref(), Some("ok"));
            assert_eq!((c.port, c.interval, c.fast_interval, c.timeout), (80, DEFAULT_INTERVAL, DEFAULT_INTERVAL / 4, DEFAULT_TIMEOUT));
            assert_eq!((c.rise, c.fall, c.initial), (2, 3, Health::Up));
        }
    }

    #[test]
    fn backend_check_overrides_key_by_key() {
        let text = service(
            "[service.check]\ntype = \"tcp\"\ninterval = \"1s\"\nfall = 2\n",
            "[[service.backend]]\naddress = \"203.0.113.11\"\n[service.backend.check]\nport = 8080\ntimeout = \"300ms\"\n\
             [[service.backend]]\naddress = \"203.0.113.12\"\n[service.backend.check]\ntype = \"script\"\ncommand = [\"/bin/true\"]\n",
        );
        let (cfg, _) = parse("t.toml", &text).unwrap();
        let b = &cfg.services[0].backends;
        let first = b[0].check.as_ref().unwrap();
        assert_eq!((first.kind.clone(), first.port, first.timeout, first.interval, first.fall), (CheckKind::Tcp, 8080, Duration::from_millis(300), Duration::from_secs(1), 2));
        let second = b[1].check.as_ref().unwrap();
        assert_eq!(second.kind, CheckKind::Script { argv: vec!["/bin/true".into()], user: None });
        assert_eq!(second.interval, Duration::from_secs(1), "inherited");
    }

    #[test]
    fn no_check_table_means_no_checks() {
        let text = service("", "[[service.backend]]\naddress = \"203.0.113.11\"\n");
        let (cfg, _) = parse("t.toml", &text).unwrap();
        assert_eq!(cfg.services[0].backends[0].check, None);
    }

    #[test]
    fn check_errors_name_the_key_and_line() {
        let text = service(
            "[service.check]\ntype = \"smtp\"\ninterval = \"2 weeks\"\nrise = 0\nexpect_status = [\"700\"]\npath = \"health\"\nbogus = 1\n",
            "[[service.backend]]\naddress = \"203.0.113.11\"\n",
        );
        let e = parse("t.toml", &text).unwrap_err();
        let errors: Vec<_> = e.diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
        let has = |line: usize, frag: &str| errors.iter().any(|d| d.line == line && d.message.contains(frag));
        assert!(has(9, "invalid check type \"smtp\""), "{e}");
        assert!(has(10, "invalid duration \"2 weeks\" for interval"), "{e}");
        assert!(has(11, "rise = 0 is out of range"), "{e}");
        assert!(has(12, "invalid status \"700\""), "{e}");
        assert!(has(13, "must start with /"), "{e}");
        assert!(has(14, "unknown key \"bogus\" in [service.check]"), "{e}");
        assert_eq!(errors.len(), 6, "an invalid type is not also reported as missing: {e}");
    }

    #[test]
    fn missing_pieces_are_reported() {
        let port0 = "[agent]\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"all\"\nvip = \"203.0.113.100\"\nport = 0\n[service.check]\ntype = \"tcp\"\n[[service.backend]]\naddress = \"203.0.113.11\"\n";
        let e = parse("t.toml", port0).unwrap_err();
        assert!(e.to_string().contains("needs a port"), "{e}");
        let udp = service("[service.check]\ntype = \"udp\"\n", "[[service.backend]]\naddress = \"203.0.113.11\"\n");
        assert!(parse("t.toml", &udp).unwrap_err().to_string().contains("needs \"send\""));
        let script = service("[service.check]\ntype = \"script\"\n", "[[service.backend]]\naddress = \"203.0.113.11\"\n");
        assert!(parse("t.toml", &script).unwrap_err().to_string().contains("needs \"command\""));
        let untyped = service("", "[[service.backend]]\naddress = \"203.0.113.11\"\n[service.backend.check]\nport = 81\n");
        assert!(parse("t.toml", &untyped).unwrap_err().to_string().contains("missing required key \"type\""));
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200"), Ok((200, 200)));
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("99").is_err());
        assert!(parse_status_range("abc").is_err());
    }
}
