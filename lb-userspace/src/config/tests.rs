use std::time::Duration;

use lb_common::{DEFAULT_RING_SIZE, MAX_BACKENDS};

use crate::flowscan::FlowTimeouts;

use super::*;

/// The README's configuration reference is a configuration this parser accepts as it
/// stands (its every key documented and valid), so the manual cannot drift from the code.
#[test]
fn the_readme_reference_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("## Configuration reference").expect("section");
    let block = &readme[start..];
    let from = block.find("```toml\n").expect("toml block") + "```toml\n".len();
    let to = from + block[from..].find("```").expect("block end");
    let (cfg, _) = parse("README.md", &block[from..to]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cfg.services.len(), cfg.vrrp.len()), (1, 1));
    assert_eq!(cfg.vrrp[0].track_scripts.len(), 1);
    // The [announce] block, which takes the place of the [[vrrp_instance]] tables.
    let rest = &block[to + 3..];
    let from2 = rest.find("```toml\n").expect("the [announce] block") + "```toml\n".len();
    let to2 = from2 + rest[from2..].find("```").expect("block end");
    let without_vrrp = &block[from..from + block[from..].find("\n[[vrrp_instance]]").expect("vrrp") + 1];
    let text = format!("{without_vrrp}{}", &rest[from2..to2]);
    let (cfg, _) = parse("README.md", &text).unwrap_or_else(|e| panic!("{e}"));
    let announce = cfg.announce.expect("[announce]");
    assert_eq!((announce.table, announce.vips.map(|v| v.len())), (100, Some(1)));
}

const AGENT: &str = "[agent]\ninterfaces = [\"eth0\"]\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// 1-based line of the `n`-th (0-based) line of `text` containing `needle`.
fn nth_line_of(text: &str, needle: &str, n: usize) -> usize {
    let found = text.lines().enumerate().filter(|(_, line)| line.contains(needle)).nth(n);
    found.unwrap_or_else(|| panic!("{needle:?} not in the text")).0 + 1
}

fn line_of(text: &str, needle: &str) -> usize {
    nth_line_of(text, needle, 0)
}

fn ok(text: &str) -> (Config, Vec<Diagnostic>) {
    match parse("test.toml", text) {
        Ok(ok) => ok,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// The errors (not warnings) reported for `text`, which must fail.
fn errors(text: &str) -> Vec<Diagnostic> {
    let Err(e) = parse("test.toml", text) else { panic!("parsed, but should have failed:\n{text}") };
    e.diagnostics.into_iter().filter(|d| d.severity == Severity::Error).collect()
}

#[track_caller]
fn assert_has(diagnostics: &[Diagnostic], line: usize, fragment: &str) {
    assert!(
        diagnostics.iter().any(|d| d.line == line && d.message.contains(fragment)),
        "no diagnostic at line {line} containing {fragment:?} in:\n{}",
        one_per_line(diagnostics)
    );
}

const FULL: &str = r#"# every key set
[agent]
interfaces = ["eth0", "eth1"]
xdp_mode = "native"
pin_path = "/sys/fs/bpf/xlb-test"
control_socket = "/run/xlb/test.sock"
flow_table_size = 65536
new_flow_rate = 1000
tcp_timeout = "10m"
tcp_fin_timeout = "5s"
udp_timeout = "1m"
max_services = 8
assign_vips = false

[[service]]
name = "web"
vip = "203.0.113.100"
port = 80
protocol = "tcp"
scheduler = "sh"
table_size = 251

  [[service.backend]]
  address = "203.0.113.11"
  weight = 0

  [[service.backend]]
  address = "203.0.113.12"
  weight = 1_000

[[service]]
name = "dns6.v2-b_c"
vip = "2001:db8::100"
port = 0
protocol = "udp"
scheduler = "maglev"
table_size = 65537

  [[service.backend]]
  address = "2001:db8::11"
"#;

#[test]
fn full_config_parses_to_expected_values() {
    let (cfg, warnings) = ok(FULL);
    assert_eq!(warnings, []);
    let expected = Config {
        file: "test.toml".to_string(),
        agent: AgentConfig {
            interfaces: vec!["eth0".to_string(), "eth1".to_string()],
            interfaces_line: 3,
            xdp_mode: XdpMode::Native,
            pin_path: PathBuf::from("/sys/fs/bpf/xlb-test"),
            control_socket: PathBuf::from("/run/xlb/test.sock"),
            runtime_file: PathBuf::from(DEFAULT_RUNTIME_FILE),
            flow_table_size: 65536,
            new_flow_rate: 1000,
            flow_timeouts: FlowTimeouts { tcp: Duration::from_secs(600), tcp_fin: Duration::from_secs(5), udp: Duration::from_secs(60) },
            max_services: 8,
            assign_vips: false,
            script_user: None,
            script_user_line: 2,
            http: None,
            tunnel_source: None,
            tunnel_source6: None,
        },
        vrrp: vec![],
        announce: None,
        source: Source::default(),
        services: vec![
            ServiceConfig {
                name: "web".to_string(),
                vip: ip("203.0.113.100"),
                port: 80,
                protocol: Protocol::Tcp,
                scheduler: Scheduler::SourceHash,
                table_size: 251,
                backends: vec![
                    BackendConfig { address: ip("203.0.113.11"), weight: 0, check: None, forward: Forward::Dr, line: 23 },
                    BackendConfig { address: ip("203.0.113.12"), weight: 1000, check: None, forward: Forward::Dr, line: 27 },
                ],
                quorum: 1,
                sorry: None,
                line: 15,
            },
            ServiceConfig {
                name: "dns6.v2-b_c".to_string(),
                vip: ip("2001:db8::100"),
                port: 0,
                protocol: Protocol::Udp,
                scheduler: Scheduler::Maglev,
                table_size: 65537,
                backends: vec![BackendConfig { address: ip("2001:db8::11"), weight: 1, check: None, forward: Forward::Dr, line: 39 }],
                quorum: 1,
                sorry: None,
                line: 31,
            },
        ],
    };
    assert_eq!(cfg, expected);
}

#[test]
fn defaults_apply() {
    let text = "[agent]\ninterfaces = [\"eth0\"]\n\n[[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 443\n[[service.backend]]\naddress = \"203.0.113.11\"\n";
    let (cfg, warnings) = ok(text);
    assert_eq!(warnings, []);
    let agent = &cfg.agent;
    assert_eq!(agent.interfaces, ["eth0"]);
    assert_eq!(agent.interfaces_line, 2);
    assert_eq!(agent.xdp_mode, XdpMode::Native);
    assert_eq!(agent.pin_path, Path::new("/sys/fs/bpf/xlb"));
    assert_eq!(agent.control_socket, Path::new("/run/xlb/xlb.sock"));
    assert_eq!(agent.flow_table_size, 1_048_576);
    assert_eq!(agent.max_services, 64);
    assert!(agent.assign_vips);
    let svc = &cfg.services[0];
    assert_eq!((svc.protocol, svc.scheduler, svc.table_size), (Protocol::Tcp, Scheduler::Maglev, DEFAULT_RING_SIZE));
    assert_eq!(svc.backends[0].weight, 1);
    assert_eq!((svc.line, svc.backends[0].line), (4, 8));
}

#[test]
fn no_services_is_valid() {
    let (cfg, warnings) = ok(AGENT);
    assert!(cfg.services.is_empty());
    assert_eq!(warnings, []);
}

#[test]
fn lab_config_is_valid() {
    let (cfg, warnings) = ok(include_str!("../../../config/lab.toml"));
    assert_eq!(warnings, []);
    assert!(!cfg.services.is_empty());
}

#[test]
fn syntax_error_is_reported_at_its_line() {
    let text = "[agent]\ninterfaces = [\"eth0\"]\nflow_table_size = 10x24\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    assert_has(&errs, 3, "syntax error");
    assert_has(&errs, 3, "10x24");
}

#[test]
fn duplicate_key_is_a_syntax_error_naming_the_key() {
    let text = format!("{AGENT}[[service]]\nname = \"a\"\nport = 1\nport = 2\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert_has(&errs, 6, "duplicate key (at \"port\")");
}

#[test]
fn unknown_keys_are_reported_in_every_table() {
    let text = format!(
        "{AGENT}xdp_mod = \"native\"\ncolour = \"blue\"\n\n[vrrp]\nstate = \"MASTER\"\n\n[[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 80\nprotcol = \"tcp\"\n[[service.backend]]\naddress = \"203.0.113.11\"\nport = 8080\n\n[[real_server]]\nx = 1\n"
    );
    let text = format!("stray = 1\n{text}");
    let errs = errors(&text);
    assert_has(&errs, 1, "unknown key \"stray\" at the top level");
    assert_has(&errs, line_of(&text, "xdp_mod"), "unknown key \"xdp_mod\" in [agent] (did you mean \"xdp_mode\"?)");
    assert_has(&errs, line_of(&text, "colour"), "unknown key \"colour\" in [agent]");
    assert_has(&errs, line_of(&text, "[vrrp]"), "unknown section [vrrp]");
    assert_has(&errs, line_of(&text, "protcol"), "unknown key \"protcol\" in [[service]] (did you mean \"protocol\"?)");
    assert_has(&errs, line_of(&text, "port = 8080"), "unknown key \"port\" in [[service.backend]]");
    assert_has(&errs, line_of(&text, "[[real_server]]"), "unknown section [[real_server]]");
    // Keys of unknown sections are not reported one by one.
    assert_eq!(errs.len(), 7, "{}", one_per_line(&errs));
    let colour = errs.iter().find(|d| d.message.contains("colour")).unwrap();
    assert!(!colour.message.contains("did you mean"), "no hint for a key far from every known one");
}

#[test]
fn wrong_types_name_the_key() {
    let text = r#"[agent]
interfaces = "eth0"
assign_vips = "yes"
max_services = 1.5
[[service]]
name = "web"
vip = 203
port = "80"
backend = 3
"#;
    let errs = errors(text);
    assert_has(&errs, 2, "expected an array of strings for key \"interfaces\", found a string");
    assert_has(&errs, 3, "expected a boolean (true or false) for key \"assign_vips\", found a string");
    assert_has(&errs, 4, "expected an integer for key \"max_services\", found a float");
    assert_has(&errs, 7, "expected a string for key \"vip\", found an integer");
    assert_has(&errs, 8, "expected an integer for key \"port\", found a string");
    assert_has(&errs, 9, "expected an array of tables ([[backend]]) for key \"backend\", found an integer");
    assert_eq!(errs.len(), 6, "{}", one_per_line(&errs));
}

#[test]
fn wrong_types_inside_arrays_are_reported_at_the_element() {
    let text = "service = [3]\n[agent]\ninterfaces = [\n  \"eth0\",\n  7,\n]\n";
    let errs = errors(text);
    assert_has(&errs, 1, "expected a table in array \"service\", found an integer");
    assert_has(&errs, 5, "expected a string in array \"interfaces\", found an integer");
    assert_eq!(errs.len(), 2, "{}", one_per_line(&errs));
}

#[test]
fn missing_required_keys_are_reported_at_the_header() {
    let text = "\n[agent]\nxdp_mode = \"native\"\n\n[[service]]\nprotocol = \"udp\"\n[[service.backend]]\nweight = 2\n";
    let errs = errors(text);
    assert_has(&errs, 2, "missing required key \"interfaces\" in [agent]");
    assert_has(&errs, 5, "missing required key \"name\" in [[service]]");
    assert_has(&errs, 5, "missing required key \"vip\" in [[service]]");
    assert_has(&errs, 5, "missing required key \"port\" in [[service]]");
    assert_has(&errs, 7, "missing required key \"address\" in [[service.backend]]");
    assert_eq!(errs.len(), 5, "{}", one_per_line(&errs));
}

#[test]
fn missing_agent_section() {
    let errs = errors("# nothing\n");
    assert_eq!(errs.len(), 1);
    assert_has(&errs, 1, "missing required section [agent]");
}

#[test]
fn invalid_addresses_are_reported() {
    let text = format!(
        "{AGENT}[[service]]\nname = \"web\"\nvip = \"203.0.113.300\"\nport = 80\n[[service.backend]]\naddress = \"backend-1\"\n[[service.backend]]\naddress = \"203.0.113.12\"\n"
    );
    let errs = errors(&text);
    assert_has(&errs, 5, "invalid IP address \"203.0.113.300\" for vip");
    assert_has(&errs, 8, "invalid IP address \"backend-1\" for address");
    assert_eq!(errs.len(), 2, "{}", one_per_line(&errs));
}

#[test]
fn unusable_vips_and_backends_are_refused() {
    let cases = [
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("224.0.0.18", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("255.255.255.255", "the broadcast address"),
    ];
    for (addr, kind) in cases {
        let text = format!("{AGENT}[[service]]\nname = \"s\"\nvip = \"{addr}\"\nport = 80\n");
        assert_has(&errors(&text), 5, &format!("vip {addr} is {kind}"));
        let text = format!(
            "{AGENT}[[service]]\nname = \"s\"\nvip = \"192.0.2.1\"\nport = 80\n[[service.backend]]\naddress = \"{addr}\"\n"
        );
        assert_has(&errors(&text), 8, &format!("backend address {addr} is {kind}"));
    }
}

#[test]
fn backend_of_the_other_family_or_equal_to_the_vip() {
    let text = format!(
        "{AGENT}[[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 80\n[[service.backend]]\naddress = \"2001:db8::11\"\n[[service.backend]]\naddress = \"203.0.113.100\"\n[[service.backend]]\naddress = \"203.0.113.12\"\n"
    );
    let errs = errors(&text);
    assert_has(&errs, 8, "backend address 2001:db8::11 of service \"web\": it is IPv6 but the vip 203.0.113.100 is IPv4");
    assert_has(&errs, 10, "backend address 203.0.113.100 is the vip of service \"web\"");
    assert_eq!(errs.len(), 2, "{}", one_per_line(&errs));
}

fn service(name: &str, vip: &str, port: u16, protocol: &str) -> String {
    format!(
        "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = {port}\nprotocol = \"{protocol}\"\n[[service.backend]]\naddress = \"203.0.113.11\"\n"
    )
}

#[test]
fn duplicate_service_names_the_other_one_and_its_line() {
    let text = [
        AGENT.to_string(),
        service("web", "203.0.113.100", 80, "tcp"),
        service("dns", "203.0.113.100", 80, "udp"),
        service("web-all", "203.0.113.100", 0, "tcp"),
        service("web-again", "203.0.113.100", 80, "tcp"),
    ]
    .concat();
    let errs = errors(&text);
    let first = line_of(&text, "name = \"web\"") - 1;
    let dup = line_of(&text, "web-again") - 1;
    assert_has(
        &errs,
        dup,
        &format!("service \"web-again\" has the same vip 203.0.113.100, port 80 and protocol tcp as service \"web\" at line {first}"),
    );
    assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));
}

#[test]
fn duplicate_service_name() {
    let text = [AGENT.to_string(), service("web", "203.0.113.100", 80, "tcp"), service("web", "203.0.113.100", 443, "tcp")].concat();
    let errs = errors(&text);
    let first = line_of(&text, "name = \"web\"");
    let again = nth_line_of(&text, "name = \"web\"", 1);
    assert_has(&errs, again, &format!("duplicate service name \"web\" (also used at line {first})"));
    assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));
}

#[test]
fn invalid_service_names() {
    for name in ["", "has space", "a/b", "x23456789012345678901234567890123"] {
        let text = format!("{AGENT}[[service]]\nname = \"{name}\"\nvip = \"192.0.2.1\"\nport = 80\n");
        assert_has(&errors(&text), 4, &format!("invalid name \"{name}\""));
    }
}

#[test]
fn duplicate_backend_within_a_service() {
    // The same address in two services is fine; twice in one service is not.
    let mut text = [AGENT.to_string(), service("web", "203.0.113.100", 80, "tcp"), service("tls", "203.0.113.100", 443, "tcp")].concat();
    text.push_str("[[service.backend]]\naddress = \"203.0.113.11\"\n");
    let errs = errors(&text);
    let first = nth_line_of(&text, "address", 1);
    let again = nth_line_of(&text, "address", 2);
    assert_has(&errs, again, &format!("duplicate backend address 203.0.113.11 in service \"tls\" (first at line {first})"));
    assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));

    // A third one still names the first.
    text.push_str("[[service.backend]]\naddress = \"203.0.113.11\"\n");
    let errs = errors(&text);
    let third = nth_line_of(&text, "address", 3);
    assert_has(&errs, third, &format!("(first at line {first})"));
    assert_eq!(errs.len(), 2, "{}", one_per_line(&errs));
}

#[test]
fn numbers_out_of_range() {
    let text = "[agent]\ninterfaces = [\"eth0\"]\nflow_table_size = 1000\nmax_services = 513\n[[service]]\nname = \"a\"\nvip = \"192.0.2.1\"\nport = 65536\n[[service.backend]]\naddress = \"192.0.2.11\"\nweight = 1001\n[[service.backend]]\naddress = \"192.0.2.12\"\nweight = -1\n[[service]]\nname = \"b\"\nvip = \"192.0.2.1\"\nport = 0x1_0000_0000_0000_0000\n";
    let errs = errors(text);
    assert_has(&errs, 3, "flow_table_size = 1000 is out of range 1024..=16777216");
    assert_has(&errs, 4, "max_services = 513 is out of range 1..=512");
    assert_has(&errs, 8, "port = 65536 is out of range 0..=65535");
    assert_has(&errs, 11, "weight = 1001 is out of range 0..=1000");
    assert_has(&errs, 14, "weight = -1 is out of range 0..=1000");
    assert_has(&errs, 18, "port = ");
    assert_eq!(errs.len(), 6, "{}", one_per_line(&errs));
}

#[test]
fn table_size_must_be_a_prime_in_range() {
    let cases = [
        ("1000", "table_size 1000 is not a prime (nearest: 997 or 1009)"),
        ("65536", "table_size 65536 is not a prime (nearest: 65521 or 65537)"),
        ("5", "table_size = 5 is out of range 7..=65537"),
        ("65539", "table_size = 65539 is out of range 7..=65537"),
    ];
    for (size, message) in cases {
        let text = format!("{AGENT}[[service]]\nname = \"a\"\nvip = \"192.0.2.1\"\nport = 1\ntable_size = {size}\n");
        let errs = errors(&text);
        assert_has(&errs, 7, message);
        assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));
    }
}

#[test]
fn interface_list_checks() {
    let text = "[agent]\ninterfaces = []\n";
    assert_has(&errors(text), 2, "interfaces must name at least one interface");
    let text = "[agent]\ninterfaces = [\n  \"eth0\",\n  \"eth0\",\n  \"a-very-long-name0\",\n  \"eth0:1\",\n  \"\",\n]\n";
    let errs = errors(text);
    assert_has(&errs, 4, "interface \"eth0\" is listed twice in interfaces (also line 3)");
    assert_has(&errs, 5, "invalid interface name \"a-very-long-name0\" in interfaces: must be 1 to 15 characters long");
    assert_has(&errs, 6, "invalid interface name \"eth0:1\"");
    assert_has(&errs, 7, "invalid interface name \"\"");
    assert_eq!(errs.len(), 4, "{}", one_per_line(&errs));
}

#[test]
fn choices_and_paths() {
    let text = "[agent]\ninterfaces = [\"eth0\"]\nxdp_mode = \"offload\"\npin_path = \"bpf/xlb\"\ncontrol_socket = \"xlb.sock\"\n[[service]]\nname = \"a\"\nvip = \"192.0.2.1\"\nport = 1\nprotocol = \"sctp\"\nscheduler = \"wrr\"\n";
    let errs = errors(text);
    assert_has(&errs, 3, "invalid xdp_mode \"offload\": expected \"native\" or \"generic\"");
    assert_has(&errs, 4, "pin_path must be an absolute path, not \"bpf/xlb\"");
    assert_has(&errs, 5, "control_socket must be an absolute path");
    assert_has(&errs, 10, "invalid protocol \"sctp\": expected \"tcp\" or \"udp\"");
    assert_has(&errs, 11, "invalid scheduler \"wrr\": expected \"maglev\" or \"sh\"");
    assert_eq!(errs.len(), 5, "{}", one_per_line(&errs));
}

#[test]
fn too_many_services_for_max_services() {
    let text = [
        "[agent]\ninterfaces = [\"eth0\"]\nmax_services = 2\n".to_string(),
        service("a", "203.0.113.100", 1, "tcp"),
        service("b", "203.0.113.100", 2, "tcp"),
        service("c", "203.0.113.100", 3, "tcp"),
    ]
    .concat();
    let errs = errors(&text);
    let third = line_of(&text, "name = \"c\"") - 1;
    assert_has(&errs, third, "too many services: 3 [[service]] tables, but max_services is 2 (at line 3)");
    assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));

    let mut text = AGENT.to_string();
    for port in 1..=DEFAULT_MAX_SERVICES as u16 + 1 {
        text.push_str(&service(&format!("s{port}"), "203.0.113.100", port, "tcp"));
    }
    let errs = errors(&text);
    let over = line_of(&text, "name = \"s65\"") - 1;
    assert_has(&errs, over, "too many services: 65 [[service]] tables, but max_services is 64 (by default)");
    assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));
}

#[test]
fn too_many_backends_over_all_services() {
    let per_service = 3277; // 5 x 3277 = 16385 > MAX_BACKENDS
    let mut text = AGENT.to_string();
    for s in 0..5 {
        text.push_str(&format!("[[service]]\nname = \"s{s}\"\nvip = \"10.{s}.255.1\"\nport = 80\n"));
        for i in 0..per_service {
            text.push_str(&format!("[[service.backend]]\naddress = \"10.{s}.{}.{}\"\n", i / 200, i % 200 + 1));
        }
    }
    let errs = errors(&text);
    // The 16385th backend: the last of the fifth service.
    let header = nth_line_of(&text, "[[service.backend]]", MAX_BACKENDS as usize);
    assert_has(&errs, header, "too many backends: 16385 over all services, at most 16384");
    assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));
}

#[test]
fn several_errors_are_all_reported_in_line_order() {
    let text = r#"[agent]
interfaces = ["eth0"]
xdp_mode = "fast"
flow_table_size = 12

[[service]]
name = "web"
vip = "203.0.113.300"
port = 80
protocol = "tcp"
timeout = 30

  [[service.backend]]
  address = "203.0.113.11"
  weight = 5000

[[service]]
name = "web"
vip = "2001:db8::1"
port = 80

  [[service.backend]]
  address = "203.0.113.12"
"#;
    let errs = errors(text);
    let lines: Vec<usize> = errs.iter().map(|d| d.line).collect();
    assert_eq!(lines, [3, 4, 8, 11, 15, 18, 23], "{}", one_per_line(&errs));
    assert_has(&errs, 11, "unknown key \"timeout\" in [[service]]");
    assert_has(&errs, 15, "weight = 5000");
    assert_has(&errs, 18, "duplicate service name \"web\"");
    assert_has(&errs, 23, "is IPv4 but the vip 2001:db8::1");
    assert!(errs.iter().all(|d| d.file == "test.toml"));
}

#[test]
fn warnings_do_not_fail() {
    let text = r#"[agent]
interfaces = ["eth0"]
xdp_mode = "generic"

[[service]]
name = "empty"
vip = "203.0.113.100"
port = 80

[[service]]
name = "small"
vip = "203.0.113.100"
port = 443
table_size = 251
[[service.backend]]
address = "203.0.113.11"
[[service.backend]]
address = "203.0.113.12"
[[service.backend]]
address = "203.0.113.13"
"#;
    let (cfg, warnings) = ok(text);
    assert_eq!(cfg.services.len(), 2);
    assert!(cfg.services[0].backends.is_empty());
    assert_eq!(warnings.len(), 3, "{}", one_per_line(&warnings));
    assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
    assert_has(&warnings, 3, "xdp_mode = \"generic\" is slow");
    assert_has(&warnings, 5, "service \"empty\" has no backends: its traffic is dropped");
    assert_has(&warnings, 14, "table_size 251 of service \"small\" is below 100 x its 3 backends");
    assert_has(&warnings, 14, "such as 307");
    assert_eq!(warnings[0].to_string(), "test.toml:3: warning: xdp_mode = \"generic\" is slow (the kernel builds an skb for every packet first); use \"native\" where the driver supports XDP");
}

#[test]
fn default_table_size_warns_at_the_service_header() {
    let mut text = format!("{AGENT}[[service]]\nname = \"big\"\nvip = \"10.0.0.1\"\nport = 80\n");
    for i in 0..700 {
        text.push_str(&format!("[[service.backend]]\naddress = \"10.1.{}.{}\"\n", i / 200, i % 200 + 1));
    }
    let (_, warnings) = ok(&text);
    assert_eq!(warnings.len(), 1);
    assert_has(&warnings, 3, "table_size 65537 of service \"big\" is below 100 x its 700 backends");
    assert_has(&warnings, 3, "700 backends need more than the largest table_size, 65537");
}

#[test]
fn errors_come_with_the_warnings() {
    let text = "[agent]\ninterfaces = [\"eth0\"]\nxdp_mode = \"generic\"\nbogus = 1\n";
    let e = parse("x.toml", text).unwrap_err();
    assert_eq!(e.diagnostics.len(), 2);
    assert_eq!(e.diagnostics[0].severity, Severity::Warning);
    assert_eq!(e.diagnostics[1].severity, Severity::Error);
    assert_eq!(
        e.to_string(),
        "x.toml:3: warning: xdp_mode = \"generic\" is slow (the kernel builds an skb for every packet first); use \"native\" where the driver supports XDP\n\
         x.toml:4: unknown key \"bogus\" in [agent]"
    );
}

#[test]
fn diagnostic_display() {
    let d = Diagnostic { file: "xlb.toml".into(), line: 7, severity: Severity::Error, message: "boom".into() };
    assert_eq!(d.to_string(), "xlb.toml:7: boom");
    let w = Diagnostic { severity: Severity::Warning, ..d };
    assert_eq!(w.to_string(), "xlb.toml:7: warning: boom");
}

#[test]
fn load_reads_a_file_and_reports_a_read_failure_at_line_0() {
    let dir = std::env::temp_dir().join(format!("xlb-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xlb.toml");
    std::fs::write(&path, FULL).unwrap();
    let (cfg, _) = load(&path).unwrap();
    assert_eq!(cfg.file, path.display().to_string());
    assert_eq!(cfg.services.len(), 2);

    let missing = dir.join("missing.toml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.diagnostics.len(), 1);
    let d = &e.diagnostics[0];
    assert_eq!((d.line, d.severity), (0, Severity::Error));
    assert!(d.message.contains(&missing.display().to_string()), "{d}");
    assert!(d.message.contains("No such file"), "{d}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn protocol_numbers_and_names() {
    assert_eq!((Protocol::Tcp.number(), Protocol::Udp.number()), (6, 17));
    assert_eq!((Protocol::Tcp.to_string(), Protocol::Udp.to_string()), ("tcp".into(), "udp".into()));
    assert_eq!((Scheduler::Maglev.to_string(), Scheduler::SourceHash.to_string()), ("maglev".into(), "sh".into()));
}

fn iface(name: &str, ifindex: u32, addrs: &[(&str, u8)]) -> InterfaceInfo {
    InterfaceInfo {
        name: name.to_string(),
        ifindex,
        mac: [2, 0, 0, 0, 0, ifindex as u8],
        mtu: 1500,
        addrs: addrs.iter().map(|&(a, p)| (ip(a), p)).collect(),
    }
}

fn host() -> Vec<InterfaceInfo> {
    vec![
        iface("lo", 1, &[("127.0.0.1", 8), ("::1", 128)]),
        iface("eth0", 2, &[("203.0.113.2", 24), ("2001:db8::2", 64)]),
        iface("eth1", 3, &[("198.51.100.2", 24)]),
    ]
}

#[test]
fn environment_ok() {
    let (cfg, _) = ok(FULL);
    assert_eq!(check_environment(&cfg, &host()), []);
}

#[test]
fn environment_missing_interface() {
    let text = "[agent]\ninterfaces = [\"eth0\", \"eth9\"]\n";
    let (cfg, _) = ok(text);
    let diags = check_environment(&cfg, &host());
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].to_string(), "test.toml:2: interface \"eth9\" does not exist on this host (it has: lo, eth0, eth1)");
}

#[test]
fn environment_backend_off_subnet() {
    let text = r#"[agent]
interfaces = ["eth0", "eth1"]
[[service]]
name = "web"
vip = "203.0.113.100"
port = 80
[[service.backend]]
address = "203.0.113.11"
[[service.backend]]
address = "192.0.2.7"
[[service]]
name = "web6"
vip = "2001:db8::100"
port = 80
[[service.backend]]
address = "2001:db8:1::7"
"#;
    let (cfg, _) = ok(text);
    let diags = check_environment(&cfg, &host());
    assert_eq!(diags.len(), 2, "{}", one_per_line(&diags));
    assert_has(
        &diags,
        9,
        "backend 192.0.2.7 of service \"web\" is not on the subnet of any attached interface (eth0: 203.0.113.2/24, eth1: 198.51.100.2/24)",
    );
    assert_has(
        &diags,
        15,
        "backend 2001:db8:1::7 of service \"web6\" is not on the subnet of any attached interface (eth0: 2001:db8::2/64, eth1: no IPv6 address)",
    );
    assert!(diags.iter().all(|d| d.severity == Severity::Error));
}

#[test]
fn environment_ignores_interfaces_that_are_not_attached() {
    // 198.51.100.7 is on eth1's subnet, but XDP is only attached to eth0.
    let text = "[agent]\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"web\"\nvip = \"198.51.100.100\"\nport = 80\n[[service.backend]]\naddress = \"198.51.100.7\"\n";
    let (cfg, _) = ok(text);
    let diags = check_environment(&cfg, &host());
    assert_has(&diags, 7, "(eth0: 203.0.113.2/24)");
}

#[test]
fn egress_interface_longest_prefix_wins() {
    let ifaces = vec![
        iface("eth0", 2, &[("10.0.0.1", 8), ("2001:db8::1", 32)]),
        iface("eth1", 3, &[("10.1.0.1", 16), ("2001:db8:1::1", 48)]),
        iface("eth2", 4, &[("10.1.2.1", 24)]),
        iface("eth3", 5, &[("10.0.0.2", 8)]),
    ];
    let all: Vec<String> = ["eth0", "eth1", "eth2", "eth3"].map(String::from).to_vec();
    let via = |addr: &str, allowed: &[String]| egress_interface(ip(addr), &ifaces, allowed).map(|i| i.name.as_str());
    assert_eq!(via("10.1.2.3", &all), Some("eth2"));
    assert_eq!(via("10.1.9.9", &all), Some("eth1"));
    assert_eq!(via("10.9.9.9", &all), Some("eth0"), "equal prefixes: the first allowed");
    assert_eq!(via("2001:db8:1::9", &all), Some("eth1"));
    assert_eq!(via("2001:db8:2::9", &all), Some("eth0"));
    assert_eq!(via("192.0.2.1", &all), None);
    assert_eq!(via("2001:db9::1", &all), None);
    let some: Vec<String> = ["eth3", "eth1"].map(String::from).to_vec();
    assert_eq!(via("10.1.2.3", &some), Some("eth1"), "eth2 is not allowed");
    assert_eq!(via("10.9.9.9", &some), Some("eth3"));
    assert_eq!(egress_interface(ip("10.1.2.3"), &ifaces, &[]), None);
    // An IPv4-mapped address is not inside an IPv4 subnet.
    assert_eq!(via("::ffff:10.1.2.3", &all), None);
}

#[test]
fn flow_timeouts_are_checked_against_their_range_and_each_other() {
    let text = "[agent]\ninterfaces = [\"eth0\"]\ntcp_timeout = \"1s\"\nudp_timeout = \"8d\"\n";
    let errs = errors(text);
    assert_has(&errs, 3, "tcp_timeout = 1s is out of range 2s..=604800s");
    assert_has(&errs, 4, "invalid duration \"8d\" for udp_timeout");
    let errs = errors("[agent]\ninterfaces = [\"eth0\"]\ntcp_timeout = \"30s\"\ntcp_fin_timeout = \"1m\"\n");
    assert_has(&errs, 4, "tcp_fin_timeout (60s) must not exceed tcp_timeout (30s)");
    assert_eq!(errs.len(), 1, "{}", one_per_line(&errs));
    let (cfg, _) = ok("[agent]\ninterfaces = [\"eth0\"]\n");
    assert_eq!(cfg.agent.flow_timeouts, FlowTimeouts::DEFAULT);
    assert_eq!(cfg.agent.new_flow_rate, crate::config::DEFAULT_NEW_FLOW_RATE);
}

const TUNNELS: &str = r#"
[agent]
interfaces = ["eth0"]
tunnel_source = "198.51.100.0/24"
tunnel_source6 = "2001:db8:0:1::2"

[[service]]
name = "web"
vip = "203.0.113.100"
port = 80
forward = "ipip"

  [[service.backend]]
  address = "198.51.100.11"

  [[service.backend]]
  address = "2001:db8:0:2::12"

  [[service.backend]]
  address = "198.51.100.13"
  forward = "gue"
  gue_port = 5555

  [[service.backend]]
  address = "203.0.113.11"
  forward = "dr"

[[service]]
name = "dns"
vip = "203.0.113.100"
port = 53
protocol = "udp"
forward = "gue"

  [[service.backend]]
  address = "198.51.100.11"
"#;

#[test]
fn forward_methods_resolve_over_the_service() {
    let (cfg, warnings) = ok(TUNNELS);
    assert_eq!(warnings, []);
    let forwards: Vec<Forward> = cfg.services[0].backends.iter().map(|b| b.forward).collect();
    assert_eq!(forwards, [Forward::Ipip, Forward::Ipip, Forward::Gue { port: 5555 }, Forward::Dr]);
    assert_eq!(cfg.services[1].backends[0].forward, Forward::Gue { port: 6080 }, "the default GUE port");
    let v4 = cfg.agent.tunnel_source.unwrap();
    assert_eq!((v4.address, v4.prefix, v4.hash_mask()), (ip("198.51.100.0"), 24, [0, 0, 0, 0xff]));
    let v6 = cfg.agent.tunnel_source6.unwrap();
    assert_eq!((v6.prefix, v6.hash_mask()), (128, [0; 4]));
    assert_eq!(TunnelSource { address: ip("2001:db8::"), prefix: 96 }.hash_mask(), [0xff; 4]);
    assert_eq!(TunnelSource { address: ip("0.0.0.0"), prefix: 0 }.hash_mask(), [0xff; 4]);
    assert_eq!(v4.to_string(), "198.51.100.0/24");
}

#[test]
fn tunnels_need_their_family_s_source_and_a_family_they_can_carry() {
    let without_v6 = TUNNELS.replace("tunnel_source6 = \"2001:db8:0:1::2\"\n", "");
    let e = errors(&without_v6);
    assert_has(&e, 16, "set [agent] tunnel_source6");
    assert_eq!(e.len(), 1, "{e:?}");
    let e = errors(&TUNNELS.replace("address = \"203.0.113.11\"\n  forward = \"dr\"", "address = \"2001:db8:0:1::11\"\n  forward = \"dr\""));
    assert_has(&e, 25, "a direct-routing backend must be of the vip's address family");
    let e = errors(&TUNNELS.replace("address = \"198.51.100.13\"", "address = \"2001:db8::13\""));
    assert_has(&e, 20, "GUE runs over IPv4 only");
    let v6_vip = TUNNELS.replace("vip = \"203.0.113.100\"\nport = 80", "vip = \"2001:db8:0:1::100\"\nport = 80");
    let e = errors(&v6_vip);
    assert_has(&e, 14, "an IPv6 vip (2001:db8:0:1::100) is not carried over IPv4");
    for bad in ["\"198.51.100.0/33\"", "\"2001:db8::1\"", "\"x\"", "1"] {
        let e = errors(&TUNNELS.replace("tunnel_source = \"198.51.100.0/24\"", &format!("tunnel_source = {bad}")));
        assert!(e.iter().any(|d| d.line == 4 && d.message.contains("tunnel_source")), "{bad}: {e:?}");
    }
    let e = errors(&TUNNELS.replace("tunnel_source6 = \"2001:db8:0:1::2\"", "tunnel_source6 = \"2001:db8::/64\""));
    assert_has(&e, 5, "a prefix /96 ..= /128");
    let e = errors(&TUNNELS.replace("forward = \"ipip\"", "forward = \"tun\""));
    assert_has(&e, 11, "invalid forward \"tun\": expected \"dr\" or \"ipip\" or \"gue\"");
}

#[test]
fn tunnelled_backends_need_no_attached_subnet() {
    let (cfg, _) = ok(TUNNELS);
    let diags = check_environment(&cfg, &[iface("eth0", 2, &[("203.0.113.2", 24)])]);
    assert_eq!(diags, [], "only the direct-routing backend must be on a subnet, and it is");
}
