//! keepalived.conf samples shaped like keepalived's documentation and the common LVS-DR,
//! HAProxy and nginx guides (in `samples/`), and the diagnostics of what xlb ignores, refuses
//! or does not know, each at its file and line.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;
use crate::config::{parse, CheckConfig, Config, Forward, InterfaceInfo, Scheduler};
use crate::health::{CheckKind, Health};

const MAIN: &str = "/etc/keepalived/keepalived.conf";

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/keepalived/samples")
}

/// Every sample, with the name tests call it by.
const SAMPLES: &[&str] = &[
    "lvs-dr-master.conf",
    "lvs-dr-backup.conf",
    "http-get-digest.conf",
    "misc-check.conf",
    "haproxy-keepalived.conf",
    "nginx-unicast-v3.conf",
    "include/keepalived.conf",
    "vs-group.conf",
    "ipv6.conf",
];

fn load_sample(name: &str) -> Loaded {
    let path = samples().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    read(&Disk, &path, &text, None).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

/// `text` as /etc/keepalived/keepalived.conf, with `more` files beside it.
fn files(text: &str, more: &[(&str, &str)]) -> InMemory {
    let mut f = InMemory::default();
    f.0.insert(PathBuf::from(MAIN), text.to_string());
    for (path, text) in more {
        f.0.insert(PathBuf::from(path), text.to_string());
    }
    f
}

fn read_text(text: &str) -> Result<Loaded, ConfigError> {
    read(&files(text, &[]), Path::new(MAIN), text, None)
}

fn errors_of(text: &str) -> Vec<Diagnostic> {
    match read_text(text) {
        Ok(l) => panic!("accepted, but should have been refused:\n{}", l.toml),
        Err(e) => e.diagnostics,
    }
}

fn warnings_of(text: &str) -> Vec<Diagnostic> {
    read_text(text).unwrap_or_else(|e| panic!("{e}")).warnings
}

#[track_caller]
fn assert_has(diagnostics: &[Diagnostic], severity: Severity, line: usize, fragment: &str) {
    assert!(
        diagnostics.iter().any(|d| d.severity == severity && d.line == line && d.file == MAIN && d.message.contains(fragment)),
        "no {severity:?} at {MAIN}:{line} containing {fragment:?} in:\n{}",
        diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
    );
}

/// The configuration with what says where it came from taken out.
fn model(mut c: Config) -> Config {
    c.file = String::new();
    c.source = Source::default();
    c
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const INSTANCE: &str = "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        192.0.2.100\n    }\n}\n";

// ---------------------------------------------------------------------------------------------
// The samples
// ---------------------------------------------------------------------------------------------

#[test]
fn every_sample_converts_and_its_toml_reads_back_as_the_same_configuration() {
    for name in SAMPLES {
        let loaded = load_sample(name);
        assert!(loaded.warnings.iter().all(|d| d.severity == Severity::Warning));
        // What `xlb convert` prints passes check-config (offline) and is the same model.
        let (again, toml_warnings) = parse("converted.toml", &loaded.toml).unwrap_or_else(|e| panic!("{name}: the TOML is refused:\n{e}\n{}", loaded.toml));
        assert_eq!(model(again.clone()), model(loaded.config.clone()), "{name}");
        let m1 = crate::model::Model::new(&loaded.config, &Default::default()).unwrap();
        let m2 = crate::model::Model::new(&again, &Default::default()).unwrap();
        assert_eq!(format!("{m1:?}"), format!("{m2:?}"), "{name}: the models differ");
        // Every warning the TOML reader has, placed, is among the keepalived ones.
        for w in toml_warnings {
            let placed = loaded.config.source.place(w.clone());
            assert!(loaded.warnings.contains(&Diagnostic { file: placed.file.clone(), ..placed.clone() }), "{name}: {w} not reported as {placed}");
        }
        assert_eq!(loaded.config.source.read_as.format, Some(Format::Keepalived));
    }
}

#[test]
fn lvs_dr_master_and_backup_pair_up() {
    let master = load_sample("lvs-dr-master.conf").config;
    let backup = load_sample("lvs-dr-backup.conf").config;
    for (cfg, priority) in [(&master, 150), (&backup, 100)] {
        assert_eq!(cfg.agent.interfaces, ["eth0"]);
        let v = &cfg.vrrp[0];
        assert_eq!((v.name.as_str(), v.vrid, v.priority, v.version), ("VI_1", 51, priority, 2), "keepalived's default is VRRPv2");
        assert_eq!((v.advert_interval, v.auth_pass.as_deref(), v.preempt), (Duration::from_secs(1), Some("s3cret"), true));
        assert_eq!(v.virtual_addresses, [ip("192.0.2.100")]);
        let s = &cfg.services[0];
        assert_eq!((s.vip, s.port, s.scheduler), (ip("192.0.2.100"), 80, Scheduler::Maglev));
        let weights: Vec<(IpAddr, u32)> = s.backends.iter().map(|b| (b.address, b.weight)).collect();
        assert_eq!(weights, [(ip("192.0.2.11"), 3), (ip("192.0.2.12"), 1)]);
        let c = s.backends[0].check.as_ref().unwrap();
        assert_eq!((c.kind.clone(), c.port, c.interval, c.timeout, c.fast_interval), (CheckKind::Tcp, 80, Duration::from_secs(6), Duration::from_secs(3), Duration::from_secs(2)));
        assert_eq!((c.rise, c.fall, c.initial), (1, 3, Health::Up), "retry 2: down after 3 failures, up after one pass");
    }
    // The two nodes build the same tables: the same services and backends.
    assert_eq!(master.services, backup.services);
    let warnings = load_sample("lvs-dr-master.conf").warnings;
    let wrr: Vec<_> = warnings.iter().filter(|d| d.message.contains("weighted Maglev")).collect();
    assert_eq!(wrr.len(), 1, "the wrr approximation is said once: {warnings:?}");
    assert_eq!(wrr[0].line, 31);
    assert!(warnings.iter().any(|d| d.line == 9 && d.message.contains("\"smtp_server\" in global_defs is ignored")));
}

#[test]
fn http_get_with_digest_status_virtualhost_quorum_and_sorry_server() {
    let loaded = load_sample("http-get-digest.conf");
    let s = &loaded.config.services[0];
    assert_eq!(s.scheduler, Scheduler::Maglev, "mh with mh-port hashes the 5-tuple");
    assert_eq!((s.quorum, s.sorry), (2, Some(ip("198.51.100.99"))));
    let checks: Vec<&CheckConfig> = s.backends.iter().map(|b| b.check.as_ref().unwrap()).collect();
    for c in &checks {
        let CheckKind::Http(http) = &c.kind else { panic!("{c:?}") };
        assert_eq!((http.path.as_str(), http.host.as_deref()), ("/health", Some("www.example.org")));
        assert_eq!((c.interval, c.timeout, c.fast_interval, c.rise, c.fall), (Duration::from_secs(3), Duration::from_secs(2), Duration::from_secs(1), 1, 4));
        assert_eq!(http.expect_body, None, "a digest is not faked as a body check");
    }
    let CheckKind::Http(first) = &checks[0].kind else { unreachable!() };
    assert_eq!(first.expect_status, [(200, 299), (304, 304)]);
    assert_eq!(checks[2].port, 8080, "the real server's port is its check's");
    assert_eq!(loaded.config.vrrp[0].version, 3, "global_defs vrrp_version 3");
    assert_eq!(loaded.config.vrrp[0].advert_interval, Duration::from_millis(100));
    assert!(!loaded.config.vrrp[0].preempt);
    let digest: Vec<_> = loaded.warnings.iter().filter(|d| d.message.contains("MD5 digest")).map(|d| d.line).collect();
    assert_eq!(digest, [37, 51], "each digest is a warning at its line");
    assert!(loaded.toml.contains("# note: digest 9b3a0c85a887a256d6939da88aabd8cd: xlb's HTTP check cannot compare an MD5 digest"), "{}", loaded.toml);
    assert!(loaded.warnings.iter().any(|d| d.line == 33 && d.message.contains("inhibit_on_failure")));
}

#[test]
fn misc_check_runs_the_script_as_its_user() {
    let loaded = load_sample("misc-check.conf");
    let cfg = &loaded.config;
    assert_eq!(cfg.agent.interfaces, ["eth1"]);
    assert_eq!(cfg.agent.script_user.as_deref(), Some("keepalived_script"));
    let s = &cfg.services[0];
    assert_eq!(s.scheduler, Scheduler::SourceHash, "IPVS sh hashes the client address");
    let c = s.backends[1].check.as_ref().unwrap();
    assert_eq!(
        c.kind,
        CheckKind::Script { argv: vec!["/usr/local/bin/pg_isready_check".into(), "203.0.113.32".into(), "5432".into()], user: Some("postgres".into()) }
    );
    assert_eq!((c.interval, c.timeout, c.rise, c.fall, c.initial), (Duration::from_secs(10), Duration::from_secs(5), 1, 1, Health::Down), "alpha: down until checked");
    assert_eq!(cfg.vrrp[0].advert_interval, Duration::from_secs(2));
}

#[test]
fn haproxy_guide_track_script_unicast_and_notify() {
    let loaded = load_sample("haproxy-keepalived.conf");
    let v = &loaded.config.vrrp[0];
    assert!(loaded.config.services.is_empty());
    assert_eq!(v.unicast_peers, [ip("192.0.2.3")]);
    assert_eq!(v.auth_pass.as_deref(), Some("haproxyp"), "keepalived uses the first 8 characters");
    assert_eq!(v.priority, 101);
    assert_eq!(v.garp_interval, Duration::from_millis(10));
    assert_eq!(v.notify_master.as_deref(), Some(&["/etc/keepalived/notify.sh".to_string(), "MASTER".to_string()][..]));
    let t = &v.track_scripts[0];
    assert_eq!(t.command, ["/usr/bin/killall", "-0", "haproxy"]);
    assert_eq!((t.interval, t.timeout, t.weight, t.rise, t.fall), (Duration::from_secs(2), Duration::from_secs(2), 2, 2, 2));
    for (line, fragment) in [(26, "unicast_src_ip 192.0.2.2"), (28, "with TTL 255 (peers on the link)"), (32, "first 8 characters"), (35, "label eth0:vip"), (35, "/24 subnet route")] {
        assert!(loaded.warnings.iter().any(|d| d.line == line && d.message.contains(fragment)), "{fragment} at {line}: {:?}", loaded.warnings);
    }
}

#[test]
fn nginx_guide_v3_unicast_with_min_ttl_and_a_weighted_script() {
    let cfg = load_sample("nginx-unicast-v3.conf").config;
    let v = &cfg.vrrp[0];
    assert_eq!((v.version, v.advert_interval, v.preempt_delay), (3, Duration::from_millis(500), Duration::from_secs(10)));
    assert_eq!((v.unicast_peers.as_slice(), v.min_ttl), (&[ip("203.0.113.2")][..], 254));
    assert_eq!(v.track_interfaces, ["ens4"]);
    assert_eq!((v.garp_count, v.garp_repeat_delay), (3, Duration::from_secs(2)));
    assert_eq!(v.notify_user.as_deref(), Some("nginx-check"));
    let t = &v.track_scripts[0];
    assert_eq!((t.weight, t.rise, t.fall, t.user.as_deref()), (-30, 2, 3, Some("nginx-check")), "the instance's weight wins; script_user is every script's");
    assert_eq!(cfg.agent.interfaces, ["ens3"]);
}

#[test]
fn includes_with_globs_are_read_relative_to_the_including_file() {
    let loaded = load_sample("include/keepalived.conf");
    let cfg = &loaded.config;
    assert_eq!(cfg.vrrp[0].name, "VI_INC");
    assert_eq!(cfg.services[0].port, 443);
    assert_eq!(cfg.services[0].backends[0].check.as_ref().unwrap().kind, CheckKind::Tcp, "SSL_GET as a TCP check");
    let main = samples().join("include/keepalived.conf").display().to_string();
    let web = samples().join("include/conf.d/20-web.conf").display().to_string();
    assert!(loaded.warnings.iter().any(|d| d.file == main && d.line == 7 && d.message.contains("no file matches")), "{:?}", loaded.warnings);
    assert!(loaded.warnings.iter().any(|d| d.file == web && d.line == 7 && d.message.contains("no TLS check")), "{:?}", loaded.warnings);
    // A diagnostic of the TOML reader names the included file's line.
    let text = "include conf.d/*.conf\n";
    let f = files(text, &[("/etc/keepalived/conf.d/a.conf", INSTANCE), ("/etc/keepalived/conf.d/b.conf", "virtual_server 192.0.2.100 80 {\n  lb_kind DR\n  real_server 192.0.2.11 80 {\n    weight 5000\n  }\n}\n")]);
    let e = read(&f, Path::new(MAIN), text, None).unwrap_err();
    assert!(e.diagnostics.iter().any(|d| d.file == "/etc/keepalived/conf.d/b.conf" && d.line == 4 && d.message.contains("weight = 5000 is out of range")), "{e}");
    // {a,b} braces, and an include loop.
    let f = files("include conf.d/{a,b}.conf\n", &[("/etc/keepalived/conf.d/a.conf", INSTANCE), ("/etc/keepalived/conf.d/b.conf", "include /etc/keepalived/keepalived.conf\n")]);
    let e = read(&f, Path::new(MAIN), "include conf.d/{a,b}.conf\n", None).unwrap_err();
    assert!(e.diagnostics.iter().any(|d| d.file == "/etc/keepalived/conf.d/b.conf" && d.line == 1 && d.message.contains("includes itself (an include loop)")), "{e}");
    // A file that includes itself twice is one loop each time, not an explosion.
    let text = "include *.conf\ninclude *.conf\n";
    let e = read(&files(text, &[]), Path::new(MAIN), text, None).unwrap_err();
    assert_eq!(e.diagnostics.iter().filter(|d| d.message.contains("include loop")).count(), 2, "{e}");
}

#[test]
fn virtual_server_groups_make_a_service_of_each_address_and_port() {
    let cfg = load_sample("vs-group.conf").config;
    let keys: Vec<(String, IpAddr, u16, crate::config::Protocol, Scheduler)> =
        cfg.services.iter().map(|s| (s.name.clone(), s.vip, s.port, s.protocol, s.scheduler)).collect();
    use crate::config::Protocol::{Tcp, Udp};
    assert_eq!(
        keys,
        [
            ("198.51.100.53_53_udp".into(), ip("198.51.100.53"), 53, Udp, Scheduler::Maglev),
            ("198.51.100.54_53_udp".into(), ip("198.51.100.54"), 53, Udp, Scheduler::Maglev),
            ("198.51.100.53_80".into(), ip("198.51.100.53"), 80, Tcp, Scheduler::SourceHash),
            ("198.51.100.54_80".into(), ip("198.51.100.54"), 80, Tcp, Scheduler::SourceHash),
        ]
    );
    assert!(cfg.services.iter().all(|s| s.backends.len() == 2));
    assert_eq!(cfg.vrrp[0].virtual_addresses, [ip("198.51.100.53"), ip("198.51.100.54")]);
}

#[test]
fn ipv6_instances_are_version_3_and_mh_hashes_the_client_address() {
    let cfg = load_sample("ipv6.conf").config;
    let v = &cfg.vrrp[0];
    assert_eq!((v.version, v.use_vmac), (3, true));
    assert_eq!(cfg.services[0].scheduler, Scheduler::SourceHash);
}

// ---------------------------------------------------------------------------------------------
// Refused, ignored and unknown keywords, each at its line
// ---------------------------------------------------------------------------------------------

#[test]
fn nat_and_other_tunnels_are_refused_at_their_lines() {
    let text = format!(
        "{INSTANCE}virtual_server 192.0.2.100 80 {{\n    lb_kind NAT\n    real_server 192.0.2.11 80 {{\n    }}\n}}\n\
         virtual_server 192.0.2.100 443 {{\n    lb_kind DR\n    real_server 192.0.2.11 443 {{\n        lvs_method TUN\n        tun_type gre\n    }}\n}}\n\
         virtual_server 192.0.2.100 53 {{\n    real_server 192.0.2.11 53 {{\n    }}\n}}\n\
         virtual_server 192.0.2.100 25 {{\n    lb_kind TUN\n    tun_type gue\n    real_server 192.0.2.11 25 {{\n    }}\n}}\n"
    );
    let e = errors_of(&text);
    assert_has(&e, Severity::Error, 9, "lb_kind NAT (real_server 192.0.2.11) is not supported: xlb forwards by direct routing");
    assert_has(&e, Severity::Error, 17, "tun_type gre (real_server 192.0.2.11) is not supported");
    assert_has(&e, Severity::Error, 20, "has no lb_kind, and keepalived's default is NAT");
    assert_has(&e, Severity::Error, 26, "tun_type gue (real_server 192.0.2.11) needs a tun_port");
}

#[test]
fn lb_kind_tun_is_an_ipip_or_gue_tunnel() {
    let agent = "[agent]\ntunnel_source = \"192.0.2.2\"\n";
    let text = format!(
        "{INSTANCE}virtual_server 192.0.2.100 80 {{\n    lb_kind TUN\n    real_server 198.51.100.11 80 {{\n    }}\n\
         real_server 198.51.100.12 80 {{\n        tun_type gue\n        tun_port 5555\n        tun_flags csum\n    }}\n\
         real_server 192.0.2.13 80 {{\n        lb_kind DR\n    }}\n}}\n"
    );
    let f = files(&text, &[("/etc/xlb/agent.toml", agent)]);
    let loaded = read(&f, Path::new(MAIN), &text, Some(Path::new("/etc/xlb/agent.toml"))).unwrap_or_else(|e| panic!("{e}"));
    let forwards: Vec<Forward> = loaded.config.services[0].backends.iter().map(|b| b.forward).collect();
    assert_eq!(forwards, [Forward::Ipip, Forward::Gue { port: 5555 }, Forward::Dr]);
    assert_has(&loaded.warnings, Severity::Warning, 15, "tun_flags csum: xlb sends GUE without a checksum");
    // Without the node's tunnel source, check-config says what to add.
    let e = errors_of(&text);
    assert!(e.iter().any(|d| d.message.contains("set [agent] tunnel_source")), "{e:?}");
}

#[test]
fn vrrp_sync_group_is_refused_at_its_line() {
    let text = format!("{INSTANCE}vrrp_sync_group G1 {{\n    group {{\n        VI_1\n    }}\n}}\n");
    assert_has(&errors_of(&text), Severity::Error, 8, "\"vrrp_sync_group\" in the top level is not supported: xlb's vrrp_instances fail over each on its own");
}

#[test]
fn unknown_keywords_are_errors_at_their_lines() {
    let text =
        "global_defs {\n    routr_id x\n}\nvrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    priorty 100\n    virtual_ipaddress {\n        192.0.2.100\n    }\n}\n\
         virtual_server 192.0.2.100 80 {\n    lb_kind DR\n    bogus 1\n    real_server 192.0.2.11 80 {\n        TCP_CHECK {\n            conect_port 80\n        }\n    }\n}\nvirtual_servr 192.0.2.1 80 {\n}\n";
    let e = errors_of(text);
    assert_has(&e, Severity::Error, 2, "unknown keyword \"routr_id\" in global_defs");
    assert_has(&e, Severity::Error, 7, "unknown keyword \"priorty\" in vrrp_instance");
    assert_has(&e, Severity::Error, 14, "unknown keyword \"bogus\" in virtual_server");
    assert_has(&e, Severity::Error, 17, "unknown keyword \"conect_port\" in TCP_CHECK");
    assert_has(&e, Severity::Error, 21, "unknown keyword \"virtual_servr\" in the top level");
}

#[test]
fn ignored_keywords_are_warnings_at_their_lines() {
    let text = format!(
        "global_defs {{\n    lvs_id LVS1\n    vrrp_strict\n    enable_script_security\n}}\n{}\
         virtual_server 192.0.2.100 80 {{\n    lb_algo mh\n    lb_kind DR\n    ha_suspend\n    real_server 192.0.2.11 80 {{\n        uthreshold 100\n        TCP_CHECK {{\n            bindto 192.0.2.2\n        }}\n    }}\n}}\n",
        INSTANCE.replace("    interface eth0\n", "    interface eth0\n    smtp_alert\n    debug 2\n")
    );
    let w = warnings_of(&text);
    assert_has(&w, Severity::Warning, 2, "\"lvs_id\" in global_defs is ignored");
    assert_has(&w, Severity::Warning, 3, "vrrp_strict");
    assert_has(&w, Severity::Warning, 8, "\"smtp_alert\" in vrrp_instance is ignored: xlb sends no e-mail");
    assert_has(&w, Severity::Warning, 9, "\"debug\" in vrrp_instance is ignored");
    assert_has(&w, Severity::Warning, 18, "\"ha_suspend\" in virtual_server is ignored");
    assert_has(&w, Severity::Warning, 20, "\"uthreshold\" in real_server is ignored");
    assert_has(&w, Severity::Warning, 22, "\"bindto\" in TCP_CHECK is ignored");
    assert!(!w.iter().any(|d| d.line == 4), "enable_script_security is xlb's behaviour: {w:?}");
}

#[test]
fn what_xlb_cannot_do_is_refused_at_its_line() {
    let refused = [
        ("    track_interface {\n        eth1 weight -10\n    }\n", 7, "track_interface with a weight is not supported"),
        ("    track_file {\n        f\n    }\n", 6, "\"track_file\" in vrrp_instance is not supported"),
        ("    virtual_routes {\n        0.0.0.0/0 via 192.0.2.1\n    }\n", 6, "\"virtual_routes\" in vrrp_instance is not supported"),
        ("    authentication {\n        auth_type AH\n        auth_pass x\n    }\n", 7, "auth_type AH is not supported"),
        ("    no_accept\n", 6, "\"no_accept\" in vrrp_instance is not supported"),
        ("    mcast_dst_ip 224.0.0.19\n", 6, "\"mcast_dst_ip\" in vrrp_instance is not supported"),
    ];
    for (extra, line, fragment) in refused {
        let text = INSTANCE.replace("    virtual_ipaddress", &format!("{extra}    virtual_ipaddress")).replacen("    interface eth0\n", "    interface eth0\n    priority 100\n    state BACKUP\n", 1);
        assert_has(&errors_of(&text), Severity::Error, line, fragment);
    }
    let dev = INSTANCE.replace("192.0.2.100\n", "192.0.2.100 dev eth1\n");
    assert_has(&errors_of(&dev), Severity::Error, 5, "dev eth1: xlb adds an instance's addresses to its interface (eth0)");
    let rs = |body: &str| format!("{INSTANCE}virtual_server 192.0.2.100 80 {{\n    lb_kind DR\n    real_server 192.0.2.11 80 {{\n{body}    }}\n}}\n");
    let two_checks = rs("        TCP_CHECK {\n        }\n        HTTP_GET {\n            url {\n                path /\n            }\n        }\n");
    assert_has(&errors_of(&two_checks), Severity::Error, 13, "xlb runs one check per backend");
    let dynamic = rs("        MISC_CHECK {\n            misc_path /bin/true\n            misc_dynamic\n        }\n");
    assert_has(&errors_of(&dynamic), Severity::Error, 13, "misc_dynamic is not supported");
    let ping = rs("        PING_CHECK {\n        }\n");
    assert_has(&errors_of(&ping), Severity::Error, 11, "\"PING_CHECK\" in real_server is not supported");
    let algo = format!("{INSTANCE}virtual_server 192.0.2.100 80 {{\n    lb_kind DR\n    lb_algo lblc\n}}\n");
    assert_has(&errors_of(&algo), Severity::Error, 10, "lb_algo lblc is not supported");
    let fwmark = format!("{INSTANCE}virtual_server fwmark 1 {{\n    lb_kind DR\n}}\n");
    assert_has(&errors_of(&fwmark), Severity::Error, 8, "virtual_server fwmark is not supported");
}

#[test]
fn syntax_errors_name_their_lines() {
    let e = errors_of("vrrp_instance VI_1 {\n    interface eth0\n");
    assert_has(&e, Severity::Error, 1, "the block of vrrp_instance is not closed");
    let e = errors_of(&format!("{INSTANCE}}}\n"));
    assert_has(&e, Severity::Error, 8, "'}' closes no block");
    let e = errors_of(&INSTANCE.replace("interface eth0", "interface \"eth0"));
    assert_has(&e, Severity::Error, 2, "unterminated \" quote");
    let e = errors_of(&format!("@main {INSTANCE}"));
    assert_has(&e, Severity::Error, 1, "conditional configuration");
    let e = errors_of(&format!("$IF=eth0\n{INSTANCE}"));
    assert_has(&e, Severity::Error, 1, "parameter definitions");
}

/// What the TOML reader finds is reported at the keepalived line the key came from.
#[test]
fn toml_reader_diagnostics_name_the_keepalived_lines() {
    let text = INSTANCE.replace("virtual_router_id 51", "virtual_router_id 300").replace("192.0.2.100\n", "192.0.2.100\n        224.0.0.5\n")
        + "virtual_server 192.0.2.100 80 {\n    lb_kind DR\n    real_server 192.0.2.11 80 {\n    }\n    real_server 192.0.2.11 80 {\n    }\n}\n";
    let e = errors_of(&text);
    assert_has(&e, Severity::Error, 3, "vrid = 300 is out of range");
    assert_has(&e, Severity::Error, 6, "virtual address 224.0.0.5 is a multicast address");
    assert_has(&e, Severity::Error, 13, "duplicate backend address 192.0.2.11");
    assert!(e.iter().all(|d| d.file == MAIN && d.line > 0), "{e:?}");
    // A service without real servers: the TOML reader's warning, at the virtual_server line.
    let w = warnings_of(&format!("{INSTANCE}virtual_server 192.0.2.100 80 {{\n    lb_kind DR\n}}\n"));
    assert_has(&w, Severity::Warning, 8, "has no backends");
}

#[test]
fn keepalived_rules_between_keywords_are_kept() {
    let cfg = |text: &str| read_text(text).unwrap_or_else(|e| panic!("{e}")).config;
    // state MASTER without priority is the address owner.
    let owner = cfg(&INSTANCE.replace("interface eth0", "interface eth0\n    state MASTER"));
    assert_eq!(owner.vrrp[0].priority, 255);
    let backup = cfg(&INSTANCE.replace("interface eth0", "interface eth0\n    state BACKUP"));
    assert_eq!(backup.vrrp[0].priority, 100);
    // nopreempt with state MASTER is cleared (keepalived says so too).
    let text = INSTANCE.replace("interface eth0", "interface eth0\n    state MASTER\n    priority 150\n    nopreempt");
    let loaded = read_text(&text).unwrap();
    assert!(loaded.config.vrrp[0].preempt);
    assert_has(&loaded.warnings, Severity::Warning, 5, "nopreempt is ignored with state MASTER");
    // A v3 instance ignores authentication.
    let text = INSTANCE.replace("interface eth0", "interface eth0\n    version 3\n    authentication {\n        auth_type PASS\n        auth_pass x\n    }");
    let loaded = read_text(&text).unwrap();
    assert_eq!(loaded.config.vrrp[0].auth_pass, None);
    assert_has(&loaded.warnings, Severity::Warning, 6, "VRRP version 3 has none");
    // Quorum counts weight in keepalived: weights 2, 2, 1 and quorum 3 need any 2 backends.
    let text = format!(
        "{INSTANCE}virtual_server 192.0.2.100 80 {{\n    lb_kind DR\n    quorum 3\n    real_server 192.0.2.11 80 {{\n        weight 2\n    }}\n    real_server 192.0.2.12 80 {{\n        weight 2\n    }}\n    real_server 192.0.2.13 80 {{\n        weight 1\n    }}\n}}\n"
    );
    assert_eq!(cfg(&text).services[0].quorum, 2);
}

#[test]
fn the_agent_file_gives_the_agent_table() {
    let agent = "# node settings\n[agent]\nxdp_mode = \"generic\"\ncontrol_socket = \"/run/xlb/k.sock\"\n";
    let text = INSTANCE;
    let f = files(text, &[("/etc/xlb/agent.toml", agent)]);
    let loaded = read(&f, Path::new(MAIN), text, Some(Path::new("/etc/xlb/agent.toml"))).unwrap();
    assert_eq!(loaded.config.agent.interfaces, ["eth0"], "from the instance");
    assert_eq!(loaded.config.agent.control_socket, PathBuf::from("/run/xlb/k.sock"));
    assert_has_file(&loaded.warnings, "/etc/xlb/agent.toml", 3, "generic");
    // Its own interfaces win; its errors name its lines.
    let agent = "[agent]\ninterfaces = [\"eth9\"]\nflow_table_size = 3\n";
    let f = files(text, &[("/etc/xlb/agent.toml", agent)]);
    let e = read(&f, Path::new(MAIN), text, Some(Path::new("/etc/xlb/agent.toml"))).unwrap_err();
    assert_has_file(&e.diagnostics, "/etc/xlb/agent.toml", 3, "flow_table_size = 3 is out of range");
    let f = files(text, &[("/etc/xlb/agent.toml", "[agent]\ninterfaces = [\"eth9\"]\n[[service]]\n")]);
    let e = read(&f, Path::new(MAIN), text, Some(Path::new("/etc/xlb/agent.toml"))).unwrap_err();
    assert_has_file(&e.diagnostics, "/etc/xlb/agent.toml", 3, "is for the [agent] table alone");
    // Without an instance and without an agent file there is no interface: say what to do.
    let e = errors_of("virtual_server 192.0.2.100 80 {\n    lb_kind DR\n}\n");
    assert_has(&e, Severity::Error, 0, "--agent-config FILE");
    assert_eq!(e.iter().filter(|d| d.severity == Severity::Error).count(), 1, "said once: {e:?}");
}

#[track_caller]
fn assert_has_file(diagnostics: &[Diagnostic], file: &str, line: usize, fragment: &str) {
    assert!(
        diagnostics.iter().any(|d| d.file == file && d.line == line && d.message.contains(fragment)),
        "nothing at {file}:{line} containing {fragment:?} in {diagnostics:?}"
    );
}

/// The host checks of a keepalived configuration name its lines too.
#[test]
fn host_checks_name_the_keepalived_lines() {
    let text = format!("{INSTANCE}virtual_server 192.0.2.100 80 {{\n    lb_kind DR\n    real_server 198.51.100.11 80 {{\n    }}\n}}\n");
    let cfg = read_text(&text).unwrap().config;
    let eth0 = InterfaceInfo { name: "eth0".into(), ifindex: 2, mac: [2, 0, 0, 0, 0, 1], mtu: 1500, addrs: vec![(ip("192.0.2.2"), 24)] };
    let problems = crate::config::check_environment(&cfg, &[eth0]);
    assert!(problems.iter().any(|d| d.file == MAIN && d.line == 10 && d.message.contains("198.51.100.11")), "{problems:?}");
    let problems = crate::config::check_environment(&cfg, &[]);
    assert!(problems.iter().any(|d| d.file == MAIN && d.line == 2 && d.message.contains("eth0")), "{problems:?}");
}

// ---------------------------------------------------------------------------------------------
// The pieces
// ---------------------------------------------------------------------------------------------

#[test]
fn format_is_told_by_content() {
    for text in ["global_defs {\n}\n", "! comment\nvrrp_instance X {\n}", "# c\ninclude /etc/keepalived/*.conf\n", "virtual_server 192.0.2.1 80 {"] {
        assert!(looks_like_keepalived(text), "{text:?}");
    }
    for text in ["", "# only a comment\n", "[agent]\ninterfaces = []\n", "# c\nagent.interfaces = [\"eth0\"]\n", "\"agent\" = {}\n"] {
        assert!(!looks_like_keepalived(text), "{text:?}");
    }
}

#[test]
fn the_lexer_splits_as_keepalived_does() {
    let mut diags = Diags::default();
    let mut names = Vec::new();
    let text = "a \"b c\"d 'e # f' # comment\nx { y } ! z\nlong \\\n  continued\nvirtual_ipaddress {192.0.2.1}\n";
    let lines = lexer::read(&InMemory::default(), Path::new("f"), text, &mut names, &mut diags);
    use lexer::Item::{Close, Open, Word};
    let w = |s: &str| Word(s.to_string());
    let items: Vec<(usize, Vec<lexer::Item>)> = lines.into_iter().map(|l| (l.at.line, l.items)).collect();
    assert_eq!(
        items,
        [
            (1, vec![w("a"), w("b cd"), w("e # f")]),
            (2, vec![w("x"), Open, w("y"), Close]),
            (3, vec![w("long"), w("continued")]),
            (5, vec![w("virtual_ipaddress"), Open, w("192.0.2.1"), Close]),
        ]
    );
    assert_eq!(lexer::expand_braces("a{b,c}d{e,f{g,h}}"), ["abde", "abdfg", "abdfh", "acde", "acdfg", "acdfh"]);
    assert_eq!(lexer::script_words("/bin/x 'a b' \"c d\" e").unwrap(), ["/bin/x", "a b", "c d", "e"]);
}

#[test]
fn one_line_blocks_and_braces_on_the_next_line() {
    let text = "vrrp_instance VI_1\n{\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress { 192.0.2.100 }\n}\n";
    let cfg = read_text(text).unwrap().config;
    assert_eq!(cfg.vrrp[0].virtual_addresses, [ip("192.0.2.100")]);
}

#[test]
fn generated_strings_are_valid_toml_whatever_they_hold() {
    let text = INSTANCE.replace("    interface eth0\n", "    interface eth0\n    notify_master \"/bin/echo 'a \\\"b\\\\' \\t\"\n");
    let loaded = read_text(&text).unwrap();
    assert_eq!(loaded.config.vrrp[0].notify_master.as_deref(), Some(&["/bin/echo".to_string(), "a \"b\\".to_string()][..]));
    assert!(toml::de::DeTable::parse(&loaded.toml).is_ok());
    // Found by fuzzing: a control character in a word that a comment quotes.
    let text = INSTANCE.replace("    interface eth0\n", "    interface eth0\n    unicast_src_ip 192.0.2.2\u{0}\u{7f}\n");
    let loaded = read_text(&text).unwrap();
    assert!(loaded.toml.contains("make sure that is 192.0.2.2\\u{0}\\u{7f},"), "{}", loaded.toml);
    assert!(toml::de::DeTable::parse(&loaded.toml).is_ok());
}
