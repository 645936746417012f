//! `[announce]`: what it reads, its defaults, and every diagnostic with its line.

use std::time::Duration;

use super::super::{parse, Config, Diagnostic, Severity};
use super::{AnnounceConfig, DEFAULT_DRAIN_QUIET, DEFAULT_DRAIN_TIMEOUT, DEFAULT_INTERFACE, DEFAULT_TABLE};

/// An agent and two services on two VIPs, then `extra`.
fn with(extra: &str) -> String {
    format!(
        "[agent]\ninterfaces = [\"eth0\"]\n\
         [[service]]\nname = \"web4\"\nvip = \"192.0.2.100\"\nport = 80\n[[service.backend]]\naddress = \"203.0.113.11\"\n\
         [[service]]\nname = \"web6\"\nvip = \"2001:db8:100::100\"\nport = 80\n[[service.backend]]\naddress = \"2001:db8:0:1::11\"\n\
         {extra}"
    )
}

fn ok(text: &str) -> Config {
    parse("test.toml", text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}")).0
}

/// The errors of `text` as `line: message`.
fn errors(text: &str) -> Vec<(usize, String)> {
    let Err(e) = parse("test.toml", text) else { panic!("parsed, but should have failed:\n{text}") };
    e.diagnostics.into_iter().filter(|d: &Diagnostic| d.severity == Severity::Error).map(|d| (d.line, d.message)).collect()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in the text")) + 1
}

#[test]
fn defaults_announce_every_vip_through_table_100() {
    let text = with("[announce]\n");
    let cfg = ok(&text);
    let a = cfg.announce.expect("announce");
    assert_eq!(
        a,
        AnnounceConfig {
            vips: None,
            interface: DEFAULT_INTERFACE.into(),
            table: DEFAULT_TABLE,
            drain_quiet: DEFAULT_DRAIN_QUIET,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            line: line_of(&text, "[announce]"),
        }
    );
    let all = ["192.0.2.100".parse().unwrap(), "2001:db8:100::100".parse().unwrap()];
    assert_eq!(a.vips_of(&all), all);
    // The router routes the VIPs to the node: the node must not hold them.
    assert!(!cfg.agent.assign_vips);
}

#[test]
fn every_key_is_read() {
    let cfg = ok(&with(
        "[announce]\nvips = [\"2001:db8:100::100\"]\ninterface = \"vips0\"\ntable = 4242\ndrain_quiet = \"500ms\"\ndrain_timeout = \"10s\"\n",
    ));
    let a = cfg.announce.expect("announce");
    assert_eq!(a.vips, Some(vec!["2001:db8:100::100".parse().unwrap()]));
    assert_eq!((a.interface.as_str(), a.table), ("vips0", 4242));
    assert_eq!((a.drain_quiet, a.drain_timeout), (Duration::from_millis(500), Duration::from_secs(10)));
    assert_eq!(a.vips_of(&["192.0.2.100".parse().unwrap()]), vec!["2001:db8:100::100".parse::<std::net::IpAddr>().unwrap()]);
}

#[test]
fn without_the_table_nothing_is_announced() {
    assert_eq!(ok(&with("")).announce, None);
}

#[test]
fn listed_vips_must_be_service_vips_once_each() {
    let text = with("[announce]\nvips = [\n\"192.0.2.100\",\n\"192.0.2.7\",\n\"192.0.2.100\",\n\"nonsense\",\n]\n");
    let first = line_of(&text, "\"192.0.2.100\",");
    assert_eq!(
        errors(&text),
        vec![
            (first + 1, "192.0.2.7 in vips is no service's VIP: only a VIP this node balances can be announced".into()),
            (first + 2, format!("VIP 192.0.2.100 is listed twice in vips (also line {first})")),
            (first + 3, "invalid IP address \"nonsense\" in vips".into()),
        ]
    );
    let text = with("[announce]\nvips = []\n");
    assert_eq!(errors(&text), vec![(line_of(&text, "vips"), "vips must name at least one VIP (leave it out to announce every VIP)".into())]);
}

#[test]
fn conflicts_with_vrrp_and_assign_vips() {
    let vrrp = "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 1\nvirtual_addresses = [\"192.0.2.100\"]\n";
    let text = with(&format!("[announce]\n{vrrp}"));
    let errs = errors(&text);
    assert!(
        errs.contains(&(
            line_of(&text, "[announce]"),
            "[announce] conflicts with [[vrrp_instance]]: both decide whether this node serves the VIPs; use one".into()
        )),
        "{errs:?}"
    );
    let text = with("[announce]\n").replace("interfaces = [\"eth0\"]\n", "interfaces = [\"eth0\"]\nassign_vips = true\n");
    assert_eq!(
        errors(&text),
        vec![(
            line_of(&text, "assign_vips"),
            "assign_vips = true conflicts with [announce]: the router routes the VIPs to this node, which must not hold them".into()
        )]
    );
}

#[test]
fn bad_interface_table_and_drain_times_are_refused() {
    let cases: [(&str, &str, &str); 7] = [
        ("interface = \"eth0\"", "interface", "[announce] interface \"eth0\" is one of [agent] interfaces: it names the device the agent creates for the VIP routes"),
        ("interface = \"a/b\"", "interface", "invalid interface name \"a/b\" in [announce]: must not contain '/', ':' or white space"),
        ("table = 254", "table", "table = 254 is the kernel's own (253 default, 254 main, 255 local): use a table of its own, such as 100"),
        ("table = 0", "table", "table = 0 is out of range 1..=4294967295"),
        ("drain_quiet = \"0s\"", "drain_quiet", "drain_quiet must be more than 0"),
        ("drain_quiet = \"5s\"\ndrain_timeout = \"2s\"", "drain_timeout", "drain_timeout (2s) must be at least drain_quiet (5s)"),
        ("drain = \"5s\"", "drain", "unknown key \"drain\" in [announce]"),
    ];
    for (lines, key, message) in cases {
        let text = with(&format!("[announce]\n{lines}\n"));
        let line = text.lines().position(|l| l.starts_with(&format!("{key} "))).unwrap() + 1;
        assert_eq!(errors(&text), vec![(line, message.to_owned())], "{lines}");
    }
}

#[test]
fn the_shipped_node_configuration_announces_every_vip() {
    let cfg = ok(include_str!("../../../../config/ecmp.toml"));
    let a = cfg.announce.expect("[announce] in config/ecmp.toml");
    assert_eq!((a.vips, a.table), (None, DEFAULT_TABLE));
    assert!(cfg.vrrp.is_empty() && !cfg.agent.assign_vips);
}

/// The README shows the BIRD configurations as they are shipped (and run in the lab).
#[test]
fn the_readme_shows_the_shipped_bird_configurations() {
    let readme = include_str!("../../../../README.md");
    for (name, conf) in [
        ("config/bird-node.conf", include_str!("../../../../config/bird-node.conf")),
        ("config/bird-router.conf", include_str!("../../../../config/bird-router.conf")),
    ] {
        assert!(readme.contains(conf.trim_end()), "the README's copy of {name} differs from the file");
    }
}
