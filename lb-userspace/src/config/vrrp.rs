//! `[[vrrp_instance]]`: which node of a pair holds the VIPs (keepalived's `vrrp_instance`).
//!
//! What an instance trusts: without `unicast_peers`, adverts from anyone on the link, sent to
//! the VRRP group with TTL / hop limit 255; with them, adverts from those addresses alone
//! (keepalived's `check_unicast_src`), with a TTL / hop limit of at least `min_ttl` (255
//! unless lowered for peers across routers). Its scripts (`notify*`, `track_script`) must be
//! root's and writable by root alone (checked against this host, keepalived's
//! `enable_script_security`); they run as `notify_user` / `user`, else `[agent]
//! script_user`, else root, and are killed with their process group past `notify_timeout` /
//! `timeout`.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use toml::de::DeTable;

use super::reader::{Located, Report, TableReader};
use super::services::usable_unicast;
use crate::vrrp::packet;

/// Default `notify_timeout`.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `[[vrrp_instance]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    /// `name` (required, unique): passed to notify scripts, as keepalived does.
    pub name: String,
    /// `interface` (required): where adverts are sent and the addresses are added.
    pub interface: String,
    /// `vrid` (required): 1 ..= 255, the same on every node of the pair.
    pub vrid: u8,
    /// `priority`: 1 ..= 255, default 100; 255 only for the node that owns the addresses.
    pub priority: u8,
    /// `version`: 3 (RFC 5798, default) or 2 (RFC 3768, IPv4 only).
    pub version: u8,
    /// `advert_interval`: default 1 s; v3 in steps of 10 ms (10 ms ..= 40.95 s), v2 in whole
    /// seconds (1 ..= 255 s).
    pub advert_interval: Duration,
    /// `preempt`: a higher priority backup takes over from a live master. Default true
    /// (`nopreempt` is `preempt = false`).
    pub preempt: bool,
    /// `preempt_delay`: after start-up, wait this long before preempting. Default 0.
    pub preempt_delay: Duration,
    /// `auth_pass`: v2 simple password (up to 8 characters); adverts without it are refused.
    pub auth_pass: Option<String>,
    /// `unicast_peers`: send adverts to these addresses instead of the multicast group (for
    /// networks without multicast), and accept adverts from these addresses only (keepalived's
    /// `check_unicast_src`; for IPv6, list the peers' link-local addresses, which their adverts
    /// come from). Empty (default): multicast 224.0.0.18 / ff02::12, adverts accepted from
    /// anyone on the link but only when sent to the group.
    pub unicast_peers: Vec<IpAddr>,
    /// `min_ttl`: with `unicast_peers`, the lowest TTL / hop limit a received advert may have
    /// (keepalived's `min_ttl` of a `unicast_peer`). Default 255: the peers are on the link,
    /// like multicast peers, and an advert from further away is dropped. Lower it by one per
    /// router between the nodes (254 across one router); 1 turns the check off. Multicast
    /// instances always require 255 (an error to set it there).
    pub min_ttl: u8,
    /// `checksum`: how v3 IPv4 adverts are checksummed when sent: `"pseudo-header"` (RFC 5798,
    /// default) or `"no-pseudo-header"` (some deployed peers). Both are accepted on receive.
    pub checksum_pseudo_header: bool,
    /// `virtual_addresses` (required): the addresses the master holds; all of one family
    /// (IPv4 for v2).
    pub virtual_addresses: Vec<IpAddr>,
    /// `garp_count`: gratuitous ARPs / unsolicited neighbour advertisements sent per address on
    /// becoming master. Default 5.
    pub garp_count: u32,
    /// `garp_interval`: between the packets of one burst. Default 10 ms.
    pub garp_interval: Duration,
    /// `garp_repeat_delay`: a second burst this long after becoming master (keepalived's
    /// garp_master_delay); 0 for none. Default 5 s.
    pub garp_repeat_delay: Duration,
    /// `use_vmac`: hold the addresses on a macvlan with the virtual MAC 00-00-5E-00-01-{vrid}
    /// (IPv4) or 00-00-5E-00-02-{vrid} (IPv6). Default false.
    pub use_vmac: bool,
    /// `track_interfaces`: any of them down puts the instance in FAULT.
    pub track_interfaces: Vec<String>,
    /// `[[vrrp_instance.track_script]]` tables.
    pub track_scripts: Vec<TrackScript>,
    /// `notify`: run on every state change with keepalived's arguments
    /// ("INSTANCE", name, state, priority).
    pub notify: Option<Vec<String>>,
    /// `notify_master`, `notify_backup`, `notify_fault`, `notify_stop`: run on entering that
    /// state (same arguments).
    pub notify_master: Option<Vec<String>>,
    pub notify_backup: Option<Vec<String>>,
    pub notify_fault: Option<Vec<String>>,
    pub notify_stop: Option<Vec<String>>,
    /// `notify_timeout`: a notify script still running after this long is killed (its whole
    /// process group) and logged. Default 10 s.
    pub notify_timeout: Duration,
    /// `notify_user`: the user the notify scripts run as; default `[agent] script_user` (or
    /// root without it).
    pub notify_user: Option<String>,
    /// Line of the `[[vrrp_instance]]` header.
    pub line: usize,
}

/// `[[vrrp_instance.track_script]]`: a command run periodically; its result moves the
/// priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackScript {
    /// `command` (required): argv, exit status 0 means success.
    pub command: Vec<String>,
    /// `interval`: default 2 s. `timeout`: default 2 s (a timeout is a failure).
    pub interval: Duration,
    pub timeout: Duration,
    /// `weight`: -254 ..= 254, default 0. Positive: added to the priority while the script
    /// succeeds. Negative: added (subtracted) while it fails. 0: a failure means FAULT.
    pub weight: i32,
    /// `rise`, `fall`: consecutive results needed to change its state. Default 1 each.
    pub rise: u32,
    pub fall: u32,
    /// `user`: the user it runs as; default `[agent] script_user` (or root without it).
    pub user: Option<String>,
    pub line: usize,
}

pub(super) fn read_instance(report: &mut Report, table: Located<&DeTable<'_>>) -> Option<VrrpConfig> {
    let mut t = TableReader::new(report, table, "[[vrrp_instance]]");
    let name = t.required_string("name");
    let interface = t.required_string("interface");
    let vrid = t.required_integer("vrid", 1..=255u8);
    let priority = t.integer_or("priority", 1..=255u8, 100);
    let version = t.integer_or("version", 2..=3u8, 3);
    let advert_interval = t.duration_or("advert_interval", Duration::from_secs(1));
    let preempt = t.bool_or("preempt", true);
    let preempt_delay = t.duration_or("preempt_delay", Duration::ZERO);
    let auth_pass = t.optional_string("auth_pass");
    let unicast_peers = t.optional("unicast_peers", |r, key, v, line| {
        let items = r.string_array_value(key, v, line)?;
        let mut peers = Vec::new();
        for item in items {
            match item.value.parse::<IpAddr>() {
                Ok(a) => peers.push(a),
                Err(_) => {
                    r.error(item.line, format!("invalid IP address \"{}\" in unicast_peers", item.value));
                    return None;
                }
            }
        }
        Some(peers)
    });
    let min_ttl = t.optional_integer("min_ttl", 1..=255u8);
    let checksum = t.choice_or("checksum", &[("pseudo-header", true), ("no-pseudo-header", false)], true);
    let virtual_addresses = t.required_string_array("virtual_addresses");
    let garp_count = t.integer_or("garp_count", 0..=100u32, 5);
    let garp_interval = t.duration_or("garp_interval", Duration::from_millis(10));
    let garp_repeat_delay = t.duration_or("garp_repeat_delay", Duration::from_secs(5));
    let use_vmac = t.bool_or("use_vmac", false);
    let track_interfaces = t.optional("track_interfaces", TableReader::string_array_value);
    let notify = t.optional("notify", argv);
    let notify_master = t.optional("notify_master", argv);
    let notify_backup = t.optional("notify_backup", argv);
    let notify_fault = t.optional("notify_fault", argv);
    let notify_stop = t.optional("notify_stop", argv);
    let notify_timeout = t.duration_or("notify_timeout", DEFAULT_NOTIFY_TIMEOUT);
    let notify_user = t.optional_user("notify_user");
    let track_tables = t.table_array("track_script");
    t.finish();

    let track_scripts: Vec<Option<TrackScript>> = track_tables.into_iter().map(|s| read_track_script(report, s)).collect();

    // Values that depend on each other.
    let version_v = version.as_ref().map(|v| v.value);
    let mut addresses = Vec::new();
    if let Some(list) = &virtual_addresses {
        if list.value.is_empty() {
            report.error(list.line, "virtual_addresses must name at least one address");
        }
        for item in &list.value {
            match item.value.parse::<IpAddr>() {
                Ok(a) => match usable_unicast("virtual address", &a) {
                    Ok(()) => addresses.push(a),
                    Err(e) => report.error(item.line, e),
                },
                Err(_) => report.error(item.line, format!("invalid IP address \"{}\" in virtual_addresses", item.value)),
            }
        }
        if addresses.iter().any(|a| a.is_ipv4() != addresses[0].is_ipv4()) {
            report.error(list.line, "virtual_addresses mixes IPv4 and IPv6: use one instance per family, as VRRP does");
        }
        if version_v == Some(2) && addresses.iter().any(IpAddr::is_ipv6) {
            report.error(list.line, "VRRP version 2 carries IPv4 addresses only: use version = 3 for IPv6");
        }
        if let (Some(Located { value: Some(peers), line }), Some(first)) = (&unicast_peers, addresses.first()) {
            if let Some(p) = peers.iter().find(|p| p.is_ipv4() != first.is_ipv4()) {
                report.error(*line, format!("unicast peer {p} is not of the virtual addresses' family: adverts of one instance go over one family"));
            }
        }
    }
    if let (Some(interval), Some(v)) = (&advert_interval, version_v) {
        let d = interval.value;
        if v == 2 && (d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > Duration::from_secs(255)) {
            report.error(interval.line, "advert_interval for version 2 is whole seconds, 1s ..= 255s");
        }
        if v == 3 && (d.as_millis() % 10 != 0 || d < Duration::from_millis(10) || d > Duration::from_millis(40950)) {
            report.error(interval.line, "advert_interval for version 3 is in steps of 10ms, 10ms ..= 40.95s");
        }
    }
    if let (Some(Located { value: Some(_), line }), Some(Located { value: None, .. })) = (&min_ttl, &unicast_peers) {
        report.error(*line, "min_ttl applies to unicast_peers only: multicast adverts must arrive with TTL / hop limit 255");
    }
    if let Some(Located { value, line }) = &notify_timeout {
        if value.is_zero() {
            report.error(*line, "notify_timeout must be more than 0");
        }
    }
    if let Some(Located { value: Some(pass), line }) = &auth_pass {
        if version_v == Some(3) {
            report.error(*line, "auth_pass is VRRP version 2 only (RFC 5798 removed authentication)");
        }
        if pass.is_empty() || pass.len() > 8 {
            report.error(*line, "auth_pass must be 1 to 8 characters");
        }
    }
    Some(VrrpConfig {
        name: name?.value,
        interface: interface?.value,
        vrid: vrid?.value,
        priority: priority?.value,
        version: version_v?,
        advert_interval: advert_interval?.value,
        preempt: preempt?.value,
        preempt_delay: preempt_delay?.value,
        auth_pass: auth_pass?.value,
        unicast_peers: unicast_peers?.value.unwrap_or_default(),
        min_ttl: min_ttl?.value.unwrap_or(packet::TTL),
        checksum_pseudo_header: checksum?.value,
        virtual_addresses: addresses,
        garp_count: garp_count?.value,
        garp_interval: garp_interval?.value,
        garp_repeat_delay: garp_repeat_delay?.value,
        use_vmac: use_vmac?.value,
        track_interfaces: track_interfaces?.value.unwrap_or_default().into_iter().map(|l| l.value).collect(),
        track_scripts: track_scripts.into_iter().collect::<Option<Vec<_>>>()?,
        notify: notify?.value,
        notify_master: notify_master?.value,
        notify_backup: notify_backup?.value,
        notify_fault: notify_fault?.value,
        notify_stop: notify_stop?.value,
        notify_timeout: notify_timeout?.value,
        notify_user: notify_user?.value,
        line: table.line,
    })
}

/// A command as argv: a non-empty array of strings.
fn argv<'t>(r: &mut TableReader<'_, 't>, key: &str, v: &'t toml::Spanned<toml::de::DeValue<'t>>, line: usize) -> Option<Vec<String>> {
    let argv: Vec<String> = r.string_array_value(key, v, line)?.into_iter().map(|s| s.value).collect();
    if argv.is_empty() {
        r.error(line, format!("{key} must name a program: [\"/path/to/script\", \"arg\", ...]"));
        return None;
    }
    Some(argv)
}

fn read_track_script(report: &mut Report, table: Located<&DeTable<'_>>) -> Option<TrackScript> {
    let mut t = TableReader::new(report, table, "[[vrrp_instance.track_script]]");
    let command = t.take("command", None, argv);
    let interval = t.duration_or("interval", Duration::from_secs(2));
    let timeout = t.duration_or("timeout", Duration::from_secs(2));
    let weight = t.integer_or("weight", -254..=254i32, 0);
    let rise = t.integer_or("rise", 1..=100u32, 1);
    let fall = t.integer_or("fall", 1..=100u32, 1);
    let user = t.optional_user("user");
    t.finish();
    for (key, d) in [("interval", &interval), ("timeout", &timeout)] {
        if let Some(Located { value, line }) = d {
            if value.is_zero() {
                report.error(*line, format!("track_script {key} must be more than 0"));
            }
        }
    }
    Some(TrackScript {
        command: command?.value,
        interval: interval?.value,
        timeout: timeout?.value,
        weight: weight?.value,
        rise: rise?.value,
        fall: fall?.value,
        user: user?.value,
        line: table.line,
    })
}

/// Checks across instances and against the services: unique names, one (interface, vrid,
/// family) each, one virtual MAC per (vrid, family), and every VIP held by some instance.
pub(super) fn check_instances(report: &mut Report, instances: &[VrrpConfig], vips: &[(IpAddr, usize)]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<(&str, u8, bool), usize> = HashMap::new();
    let mut vmacs: HashMap<(u8, bool), usize> = HashMap::new();
    let mut vmacs_on: HashMap<&str, usize> = HashMap::new();
    for i in instances {
        if let Some(first) = names.insert(&i.name, i.line) {
            report.error(i.line, format!("duplicate vrrp_instance name \"{}\" (also at line {first})", i.name));
        }
        let v4 = i.virtual_addresses.first().is_none_or(IpAddr::is_ipv4);
        if i.use_vmac {
            if let Some(first) = vmacs.insert((i.vrid, v4), i.line) {
                report.error(
                    i.line,
                    format!("use_vmac: vrid {} has a virtual MAC already (line {first}); one virtual MAC per vrid and family", i.vrid),
                );
            }
            // The data plane takes the interface's own MAC and at most MAX_LOCAL_MACS - 1
            // virtual ones as this node's: a further one would never be balanced.
            let on = vmacs_on.entry(&i.interface).or_default();
            *on += 1;
            if *on == lb_common::MAX_LOCAL_MACS {
                report.error(
                    i.line,
                    format!(
                        "use_vmac: {} instances with a virtual MAC on {}; at most {} fit beside the interface's own MAC",
                        *on,
                        i.interface,
                        lb_common::MAX_LOCAL_MACS - 1
                    ),
                );
            }
        }
        if let Some(first) = ids.insert((&i.interface, i.vrid, v4), i.line) {
            report.error(
                i.line,
                format!("vrid {} is used twice on {} for the same address family (also at line {first})", i.vrid, i.interface),
            );
        }
    }
    if instances.is_empty() {
        return;
    }
    for (vip, line) in vips {
        if !instances.iter().any(|i| i.virtual_addresses.contains(vip)) {
            report.warning(*line, format!("vip {vip} is in no vrrp_instance's virtual_addresses: no node will hold it"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Severity};
    use super::*;

    const SERVICES: &str = "[[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 80\n[[service.backend]]\naddress = \"203.0.113.11\"\n";

    fn with(instances: &str) -> String {
        format!("[agent]\ninterfaces = [\"eth0\"]\n{SERVICES}{instances}")
    }

    #[test]
    fn a_keepalived_like_instance_parses_with_defaults() {
        let text = with(
            "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\nvirtual_addresses = [\"203.0.113.100\"]\n\
             notify_master = [\"/etc/xlb/master.sh\"]\n[[vrrp_instance.track_script]]\ncommand = [\"pidof\", \"nginx\"]\nweight = -20\n",
        );
        let (cfg, warnings) = parse("t.toml", &text).unwrap();
        assert_eq!(warnings, []);
        assert!(!cfg.agent.assign_vips, "VRRP holds the VIPs");
        let i = &cfg.vrrp[0];
        assert_eq!((i.vrid, i.priority, i.version, i.advert_interval, i.preempt), (51, 100, 3, Duration::from_secs(1), true));
        assert_eq!((i.garp_count, i.garp_repeat_delay, i.checksum_pseudo_header, i.use_vmac), (5, Duration::from_secs(5), true, false));
        assert_eq!(i.notify_master.as_deref(), Some(&["/etc/xlb/master.sh".to_string()][..]));
        assert_eq!(i.track_scripts[0].weight, -20);
        assert_eq!(i.track_scripts[0].interval, Duration::from_secs(2));
        assert_eq!((i.min_ttl, i.notify_timeout, i.notify_user.as_deref()), (255, DEFAULT_NOTIFY_TIMEOUT, None));
        assert_eq!(i.track_scripts[0].user, None, "scripts run as the agent without script_user");
    }

    #[test]
    fn min_ttl_is_for_unicast_peers() {
        let unicast = |ttl: &str| {
            with(&format!(
                "[[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 7\nunicast_peers = [\"198.51.100.3\"]\n{ttl}\
                 virtual_addresses = [\"203.0.113.100\"]\n"
            ))
        };
        assert_eq!(parse("t.toml", &unicast("")).unwrap().0.vrrp[0].min_ttl, 255, "on the link by default");
        assert_eq!(parse("t.toml", &unicast("min_ttl = 254\n")).unwrap().0.vrrp[0].min_ttl, 254, "one router away");
        assert_eq!(parse("t.toml", &unicast("min_ttl = 1\n")).unwrap().0.vrrp[0].min_ttl, 1, "the check off");
        let e = parse("t.toml", &unicast("min_ttl = 0\n")).unwrap_err().to_string();
        assert!(e.contains("t.toml:14: min_ttl = 0 is out of range"), "{e}");
        let multicast = with("[[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 7\nmin_ttl = 254\nvirtual_addresses = [\"203.0.113.100\"]\n");
        let e = parse("t.toml", &multicast).unwrap_err().to_string();
        assert!(e.contains("t.toml:13: min_ttl applies to unicast_peers only"), "{e}");
    }

    #[test]
    fn scripts_take_a_timeout_and_a_user_with_script_user_as_default() {
        let instance = "[[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 7\nvirtual_addresses = [\"203.0.113.100\"]\n\
                        notify = [\"/usr/local/bin/notify\"]\nnotify_timeout = \"3s\"\n\
                        [[vrrp_instance.track_script]]\ncommand = [\"/usr/local/bin/a\"]\n\
                        [[vrrp_instance.track_script]]\ncommand = [\"/usr/local/bin/b\"]\nuser = \"checker\"\n";
        let (cfg, _) = parse("t.toml", &with(instance)).unwrap();
        let i = &cfg.vrrp[0];
        assert_eq!((i.notify_timeout, i.notify_user.as_deref()), (Duration::from_secs(3), None));
        assert_eq!((i.track_scripts[0].user.as_deref(), i.track_scripts[1].user.as_deref()), (None, Some("checker")));
        // [agent] script_user is every script's user unless it names its own.
        let text = format!("[agent]\ninterfaces = [\"eth0\"]\nscript_user = \"xlb-script\"\n{SERVICES}{instance}notify_user = \"root\"\n");
        let text = text.replace("notify_user = \"root\"\n", "").replace("notify_timeout = \"3s\"\n", "notify_timeout = \"3s\"\nnotify_user = \"root\"\n");
        let (cfg, _) = parse("t.toml", &text).unwrap();
        let i = &cfg.vrrp[0];
        assert_eq!((cfg.agent.script_user.as_deref(), cfg.agent.script_user_line), (Some("xlb-script"), 3));
        assert_eq!(i.notify_user.as_deref(), Some("root"));
        assert_eq!((i.track_scripts[0].user.as_deref(), i.track_scripts[1].user.as_deref()), (Some("xlb-script"), Some("checker")));
        // Errors at their lines.
        let bad = with(&instance.replace("\"3s\"", "\"0s\"").replace("\"checker\"", "\"bad user\""));
        let e = parse("t.toml", &bad).unwrap_err().to_string();
        assert!(e.contains("t.toml:15: notify_timeout must be more than 0"), "{e}");
        assert!(e.contains("t.toml:20: invalid user \"bad user\": expected a user name"), "{e}");
    }

    #[test]
    fn version_rules_are_enforced() {
        let text = with(
            "[[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 1\nversion = 2\nadvert_interval = \"100ms\"\n\
             virtual_addresses = [\"2001:db8::100\"]\n\
             [[vrrp_instance]]\nname = \"b\"\ninterface = \"eth0\"\nvrid = 2\nauth_pass = \"secret\"\nadvert_interval = \"15ms\"\n\
             virtual_addresses = [\"203.0.113.100\", \"2001:db8::100\"]\n",
        );
        let e = parse("t.toml", &text).unwrap_err().to_string();
        for fragment in [
            "whole seconds",
            "version 2 carries IPv4 addresses only",
            "auth_pass is VRRP version 2 only",
            "steps of 10ms",
            "mixes IPv4 and IPv6",
        ] {
            assert!(e.contains(fragment), "{fragment:?} missing in:\n{e}");
        }
    }

    #[test]
    fn peers_scripts_and_virtual_macs_are_checked() {
        let text = with(
            "[[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 7\nuse_vmac = true\nunicast_peers = [\"2001:db8::3\"]\n\
             virtual_addresses = [\"203.0.113.100\"]\n\
             [[vrrp_instance.track_script]]\ncommand = [\"true\"]\ninterval = \"0s\"\n\
             [[vrrp_instance]]\nname = \"b\"\ninterface = \"eth1\"\nvrid = 7\nuse_vmac = true\nvirtual_addresses = [\"203.0.113.101\"]\n",
        );
        let e = parse("t.toml", &text).unwrap_err().to_string();
        for fragment in ["unicast peer 2001:db8::3 is not of the virtual addresses' family", "track_script interval must be more than 0", "use_vmac: vrid 7 has a virtual MAC already"] {
            assert!(e.contains(fragment), "{fragment:?} missing in:\n{e}");
        }
    }

    #[test]
    fn conflicts_and_duplicates() {
        let text = "[agent]\ninterfaces = [\"eth0\"]\nassign_vips = true\n".to_string()
            + SERVICES
            + "[[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 1\nvirtual_addresses = [\"203.0.113.101\"]\n\
               [[vrrp_instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 1\nvirtual_addresses = [\"203.0.113.102\"]\n";
        let e = parse("t.toml", &text).unwrap_err();
        let all = e.to_string();
        assert!(all.contains("t.toml:3: assign_vips = true conflicts"), "{all}");
        assert!(all.contains("duplicate vrrp_instance name"), "{all}");
        assert!(all.contains("vrid 1 is used twice on eth0"), "{all}");
        let warning = e.diagnostics.iter().find(|d| d.severity == Severity::Warning && d.message.contains("no node will hold it"));
        assert!(warning.is_some(), "{all}");
    }
}

#[cfg(test)]
mod vmac_limit_tests {
    #[test]
    fn a_fourth_virtual_mac_on_one_interface_is_refused() {
        let instance = |n: u8| {
            format!(
                "[[vrrp_instance]]\nname = \"v{n}\"\ninterface = \"eth0\"\nvrid = {n}\nuse_vmac = true\nvirtual_addresses = [\"203.0.113.{}\"]\n",
                100 + n
            )
        };
        let head = "[agent]\ninterfaces = [\"eth0\"]\n";
        let three: String = (1..=3).map(instance).collect();
        assert!(crate::config::parse("t.toml", &format!("{head}{three}")).is_ok());
        let err = crate::config::parse("t.toml", &format!("{head}{three}{}", instance(4))).unwrap_err().to_string();
        assert!(err.contains("use_vmac: 4 instances with a virtual MAC on eth0; at most 3 fit"), "{err}");
    }
}
