use super::*;
use crate::config;

const FILE: &str = r#"# The web tier.
[agent]
interfaces = ["eth0"]

[[service]]
name = "web"          # the public site
vip = "203.0.113.100"
port = 80
[[service.backend]]
address = "203.0.113.11"
weight = 2            # the big one
[[service.backend]]
address = "203.0.113.12"

[[service]]
name = "dns"
vip = "203.0.113.100"
port = 53
protocol = "udp"
[[service.backend]]
address = "203.0.113.13"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn parsed(text: &str) -> config::Config {
    config::parse("edited.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}")).0
}

fn weights(cfg: &config::Config, service: &str) -> Vec<(IpAddr, u32)> {
    cfg.services.iter().find(|s| s.name == service).unwrap().backends.iter().map(|b| (b.address, b.weight)).collect()
}

#[test]
fn a_weight_change_keeps_comments_and_layout() {
    let edited = apply(FILE, &[Change::BackendWeight { service: "web".into(), address: ip("203.0.113.12"), weight: 5 }]).unwrap();
    assert!(edited.starts_with("# The web tier.\n[agent]"), "{edited}");
    assert!(edited.contains("name = \"web\"          # the public site"), "{edited}");
    assert!(edited.contains("weight = 2            # the big one"), "{edited}");
    // Only the edited backend changed: every other line stands as it was.
    let added: Vec<&str> = edited.lines().filter(|l| !FILE.lines().any(|f| f == *l)).collect();
    assert_eq!(added, ["weight = 5"], "{edited}");
    assert_eq!(weights(&parsed(&edited), "web"), [(ip("203.0.113.11"), 2), (ip("203.0.113.12"), 5)]);
}

#[test]
fn backends_and_services_come_and_go() {
    let changes = [
        Change::BackendAdd { service: "web".into(), address: ip("203.0.113.14"), weight: 3 },
        Change::BackendRemove { service: "web".into(), address: ip("203.0.113.11") },
        Change::ServiceAdd {
            name: "mail".into(),
            vip: ip("203.0.113.101"),
            port: 25,
            protocol: "tcp".into(),
            backends: vec![ip("203.0.113.15"), ip("203.0.113.16")],
        },
        Change::ServiceRemove { name: "dns".into() },
    ];
    let cfg = parsed(&apply(FILE, &changes).unwrap());
    assert_eq!(weights(&cfg, "web"), [(ip("203.0.113.12"), 1), (ip("203.0.113.14"), 3)]);
    assert_eq!(weights(&cfg, "mail"), [(ip("203.0.113.15"), 1), (ip("203.0.113.16"), 1)]);
    assert!(cfg.services.iter().all(|s| s.name != "dns"));
}

#[test]
fn a_drain_holds_until_its_enable() {
    let web11 = || ("web".to_string(), ip("203.0.113.11"));
    let (s, a) = web11();
    let drained = [Change::BackendWeight { service: s.clone(), address: a, weight: 7 }, Change::BackendDrain { service: s.clone(), address: a }];
    assert_eq!(weights(&parsed(&apply(FILE, &drained).unwrap()), "web")[0], (a, 0));
    let mut enabled = drained.to_vec();
    enabled.push(Change::BackendEnable { service: s, address: a });
    // The weight set before the drain applies again.
    assert_eq!(weights(&parsed(&apply(FILE, &enabled).unwrap()), "web")[0], (a, 7));
    assert_eq!(effective(&enabled).len(), 1);
}

#[test]
fn a_change_that_does_not_fit_is_refused_by_name() {
    let err = apply(FILE, &[Change::BackendWeight { service: "www".into(), address: ip("203.0.113.11"), weight: 1 }]).unwrap_err();
    assert!(err.contains("no service \"www\""), "{err}");
    let err = apply(FILE, &[Change::BackendRemove { service: "web".into(), address: ip("203.0.113.99") }]).unwrap_err();
    assert!(err.contains("web 203.0.113.99: removed: the service has no backend 203.0.113.99"), "{err}");
    let err = apply(FILE, &[Change::BackendAdd { service: "web".into(), address: ip("203.0.113.11"), weight: 1 }]).unwrap_err();
    assert!(err.contains("already has backend"), "{err}");
    let err = apply(FILE, &[Change::ServiceAdd { name: "dns".into(), vip: ip("203.0.113.1"), port: 1, protocol: "tcp".into(), backends: vec![] }])
        .unwrap_err();
    assert!(err.contains("already a service \"dns\""), "{err}");
    // What the reader checks, the edited text fails: a weight beyond the range.
    let edited = apply(FILE, &[Change::BackendWeight { service: "web".into(), address: ip("203.0.113.11"), weight: 5000 }]).unwrap();
    assert!(config::parse("edited.toml", &edited).is_err());
}

#[test]
fn the_subject_of_a_change_is_what_the_file_says_of_it() {
    let change = Change::BackendWeight { service: "web".into(), address: ip("203.0.113.12"), weight: 5 };
    let before = change.subject_in(FILE).expect("the file has the backend");
    assert!(before.contains("203.0.113.12"));
    // Another backend edited in the file: this one's subject is the same.
    let other = FILE.replace("weight = 2            # the big one", "weight = 3");
    assert_eq!(change.subject_in(&other), Some(before.clone()));
    // This backend edited in the file: its subject changed.
    let same = FILE.replace("address = \"203.0.113.12\"\n", "address = \"203.0.113.12\"\nweight = 4\n");
    assert_ne!(change.subject_in(&same), Some(before));
    let add = Change::BackendAdd { service: "web".into(), address: ip("203.0.113.14"), weight: 1 };
    assert_eq!(add.subject_in(FILE), None);
    let svc = Change::ServiceRemove { name: "dns".into() };
    assert!(svc.subject_in(FILE).unwrap().contains("203.0.113.13"));
}

/// Found by fuzzing: a service added after a file whose last service has another table
/// between its backends must not take that service's later backends.
#[test]
fn a_service_added_goes_after_every_table_of_the_file() {
    let text = "[agent]\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 80\n\
                [[service.backend]]\naddress = \"203.0.113.11\"\n[service.check]\ntype = \"tcp\"\n\
                [[service.backend]]\naddress = \"203.0.113.12\"\n";
    let add = Change::ServiceAdd {
        name: "new".into(),
        vip: ip("203.0.113.101"),
        port: 80,
        protocol: "tcp".into(),
        backends: vec![ip("203.0.113.13")],
    };
    let cfg = parsed(&apply(text, &[add]).unwrap());
    assert_eq!(weights(&cfg, "web"), [(ip("203.0.113.11"), 1), (ip("203.0.113.12"), 1)]);
    assert_eq!(weights(&cfg, "new"), [(ip("203.0.113.13"), 1)]);
}
