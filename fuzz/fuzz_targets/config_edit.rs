//! `lb_userspace::config::edit::apply`, the runtime changes (`xlb backend ...`, `xlb service
//! ...`) made as edits of the configuration's text, on any text and any changes: it never
//! panics; what it writes reads back as TOML in which exactly the change happened (the
//! service or backend it names, and nothing else: no backend lands in another service); and
//! a list of changes gives what the changes made one at a time give.
//!
//! Input: a count, three 8-byte changes, then the text (UTF-8).
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | how many of the changes apply (`% 3 + 1`) |
//! | 1..25 | per change: kind (`% 7`), service name and address (indices into the lists below), weight (u16), port (u16), protocol (bits 0-1) and backends of a new service (bits 2-3: how many) |
#![no_main]

use std::net::IpAddr;

use lb_userspace::config::edit::{apply, effective, Change};
use libfuzzer_sys::fuzz_target;
use toml_edit::{DocumentMut, Table};

/// Names of the shipped configurations' services, and a few odd ones.
const NAMES: [&str; 9] = ["web4", "web6", "dns4", "dns6", "web", "dns", "new", "a \"quoted\" name", ""];
/// Addresses of the shipped configurations' backends, and a few others.
const ADDRESSES: [&str; 10] = [
    "203.0.113.11",
    "203.0.113.12",
    "203.0.113.14",
    "203.0.113.100",
    "2001:db8:0:1::11",
    "2001:db8:0:1::14",
    "192.0.2.11",
    "192.0.2.13",
    "2001:db8::11",
    "::ffff:203.0.113.11",
];
const PROTOCOLS: [&str; 4] = ["tcp", "udp", "sctp", ""];

fn change(b: &[u8]) -> Change {
    let service = NAMES[usize::from(b[1]) % NAMES.len()].to_owned();
    let pick = |i: usize| ADDRESSES[i % ADDRESSES.len()].parse::<IpAddr>().expect("an address");
    let address = pick(usize::from(b[2]));
    let weight = u32::from(u16::from_be_bytes([b[3], b[4]]));
    match b[0] % 7 {
        0 => Change::BackendAdd { service, address, weight },
        1 => Change::BackendRemove { service, address },
        2 => Change::BackendWeight { service, address, weight },
        3 => Change::BackendDrain { service, address },
        4 => Change::BackendEnable { service, address },
        5 => Change::ServiceAdd {
            name: service,
            vip: pick(usize::from(b[2]) + 3),
            port: u16::from_be_bytes([b[5], b[6]]),
            protocol: PROTOCOLS[usize::from(b[7] & 3)].to_owned(),
            backends: (0..usize::from(b[7] >> 2 & 3)).map(|i| pick(usize::from(b[2]) + i)).collect(),
        },
        _ => Change::ServiceRemove { name: service },
    }
}

/// A `[[service]]` as the agent reads it: its name, and its backends' addresses and weights
/// (`None`: absent, or not of the type the agent reads).
#[derive(Clone, Debug, PartialEq)]
struct Service {
    name: Option<String>,
    backends: Vec<(Option<IpAddr>, Option<i64>)>,
}

fn services(text: &str) -> Vec<Service> {
    let doc = text.parse::<DocumentMut>().expect("apply wrote TOML that does not parse");
    let Some(list) = doc.get("service").and_then(|s| s.as_array_of_tables()) else { return Vec::new() };
    list.iter().map(service).collect()
}

fn service(t: &Table) -> Service {
    let backends = t.get("backend").and_then(|b| b.as_array_of_tables()).map(|list| {
        list.iter()
            .map(|b| {
                let address = b.get("address").and_then(|a| a.as_str()).and_then(|a| a.parse().ok());
                (address, b.get("weight").and_then(|w| w.as_integer()))
            })
            .collect()
    });
    Service { name: t.get("name").and_then(|n| n.as_str()).map(String::from), backends: backends.unwrap_or_default() }
}

/// The services after `change` succeeded on `before`: what `apply` must have written.
fn expected(mut before: Vec<Service>, change: &Change) -> Vec<Service> {
    let named = |list: &[Service], name: &str| list.iter().position(|s| s.name.as_deref() == Some(name));
    match change {
        Change::ServiceAdd { name, backends, .. } => before.push(Service {
            name: Some(name.clone()),
            backends: backends.iter().map(|a| (Some(*a), None)).collect(),
        }),
        Change::ServiceRemove { name } => {
            before.remove(named(&before, name).expect("removed a service it has"));
        }
        _ => {
            let address = change.backend().expect("a backend change");
            let at = named(&before, change.service()).expect("changed a service it has");
            let s = &mut before[at].backends;
            let found = s.iter().position(|(a, _)| *a == Some(address));
            match (change, found) {
                (Change::BackendAdd { weight, .. }, None) => s.push((Some(address), Some(i64::from(*weight)))),
                (Change::BackendRemove { .. }, Some(i)) => {
                    s.remove(i);
                }
                (Change::BackendWeight { weight, .. }, Some(i)) => s[i].1 = Some(i64::from(*weight)),
                (Change::BackendDrain { .. }, Some(i)) => s[i].1 = Some(0),
                (Change::BackendEnable { .. }, Some(_)) => {}
                _ => panic!("{change} succeeded on services {before:?}"),
            }
        }
    }
    before
}

fuzz_target!(|data: &[u8]| {
    let Some((control, text)) = data.split_at_checked(25) else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let changes: Vec<Change> = control[1..].chunks(8).take(usize::from(control[0] % 3) + 1).map(change).collect();
    let together = apply(text, &changes);

    // One change at a time, each checked against what it must do.
    let mut step = apply(text, &[]);
    for c in effective(&changes) {
        let Ok(before) = step else { break };
        step = apply(&before, std::slice::from_ref(c));
        match &step {
            Ok(after) => assert_eq!(services(after), expected(services(&before), c), "after {c}"),
            Err(e) => assert!(e.starts_with("not TOML: ") || e.starts_with(&format!("{c}: ")), "{e}"),
        }
    }
    match (&together, &step) {
        (Ok(a), Ok(b)) => assert_eq!(services(a), services(b), "the changes together and one by one differ"),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("together: {together:?}, one by one: {step:?}"),
    }
});
