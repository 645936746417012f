use std::net::IpAddr;

use lb_common::{Backend, Flow, FlowKey, BACKEND_F_ASSIGNED, BACKEND_F_SORRY, BACKEND_F_USABLE, SERVICE_F_HASH_SOURCE};

use super::*;
use crate::config;

const CFG: &str = r#"
[agent]
interfaces = ["eth0"]

[[service]]
name = "web"
vip = "203.0.113.100"
port = 80
[[service.backend]]
address = "203.0.113.11"
[[service.backend]]
address = "203.0.113.12"
weight = 2

[[service]]
name = "dns"
vip = "203.0.113.100"
port = 53
protocol = "udp"
scheduler = "sh"
table_size = 251
[[service.backend]]
address = "203.0.113.13"

[[service]]
name = "web-tls"
vip = "203.0.113.100"
port = 443
[[service.backend]]
address = "203.0.113.11"
"#;

fn cfg(text: &str) -> Config {
    config::parse("test.toml", text).expect("valid").0
}

fn model(text: &str, held: &Slots) -> Model {
    Model::new(&cfg(text), held).expect("slots")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Slot of `address` among service `name`'s members.
fn slot(m: &Model, name: &str, address: &str) -> u32 {
    m.member(m.service_named(name).unwrap().id, ip(address)).unwrap()
}

#[test]
fn a_fresh_model_numbers_services_and_backends_in_file_order() {
    let m = model(CFG, &Slots::default());
    assert_eq!(m.services.iter().map(|s| s.id).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(m.services[0].members, [0, 1]);
    assert_eq!(m.services[1].members, [2]);
    assert_eq!(m.services[2].members, [3]);
    assert_eq!(m.backends[&3].address(), ip("203.0.113.11"));
    assert_eq!(m.services[1].flags(), SERVICE_F_HASH_SOURCE);
    assert_eq!(m.services[0].key.port, 80u16.to_be());
    assert_eq!(m.services[1].key.proto, lb_common::PROTO_UDP);
}

/// The edit of the issue that motivated identities: a backend inserted before the others,
/// another removed, a third's weight changed, services reordered and renamed.
#[test]
fn backends_and_services_keep_their_slots_across_edits() {
    let before = model(CFG, &Slots::default());
    let edited = CFG
        .replace(
            "[[service.backend]]\naddress = \"203.0.113.11\"\n[[service.backend]]\naddress = \"203.0.113.12\"\nweight = 2",
            "[[service.backend]]\naddress = \"203.0.113.20\"\n[[service.backend]]\naddress = \"203.0.113.12\"\nweight = 5",
        )
        .replace("name = \"web-tls\"", "name = \"tls\"");
    // dns moves to the end of the file.
    let (head, dns_and_rest) = edited.split_at(edited.find("[[service]]\nname = \"dns\"").unwrap());
    let (dns, rest) = dns_and_rest.split_at(dns_and_rest.find("[[service]]\nname = \"tls\"").unwrap());
    let edited = format!("{head}{rest}\n{dns}");
    let after = model(&edited, &before.slots());
    assert_eq!(after.service_named("web").unwrap().id, 0);
    assert_eq!(after.service_named("tls").unwrap().id, 2, "renamed: same (vip, port, protocol), same id");
    assert_eq!(after.service_named("dns").unwrap().id, 1, "moved in the file, same id");
    assert_eq!(slot(&after, "web", "203.0.113.12"), slot(&before, "web", "203.0.113.12"));
    assert_eq!(slot(&after, "tls", "203.0.113.11"), slot(&before, "web-tls", "203.0.113.11"));
    assert_eq!(slot(&after, "dns", "203.0.113.13"), slot(&before, "dns", "203.0.113.13"));
    // The new backend takes a slot nobody held; the removed one's slot is not reused at once.
    assert_eq!(slot(&after, "web", "203.0.113.20"), 4);
    assert_eq!(after.backends[&1].weight, 5);
    assert!(after.backend(0).is_none());

    let diff = Diff::between(&before, &after);
    assert_eq!(diff.backends_added, [4]);
    assert_eq!(diff.backends_removed, [0]);
    assert_eq!(diff.backends_changed, [1]);
    assert_eq!(diff.services_changed, [0]);
    assert_eq!(diff.services_kept, [2, 1], "in the order of the new file");
    assert!(diff.services_added.is_empty() && diff.services_removed.is_empty());
    assert!(!diff.vips_changed && diff.removes_anything());
    assert!(Diff::between(&after, &after).is_empty());

    // The next change may reuse slot 0: nothing holds it any more.
    let again = model(&edited.replace("address = \"203.0.113.20\"", "address = \"203.0.113.21\""), &after.slots());
    assert_eq!(slot(&again, "web", "203.0.113.21"), 0);
}

#[test]
fn the_same_address_is_a_backend_per_service_and_per_role() {
    let text = CFG.replace("name = \"web\"", "name = \"web\"\nsorry = \"203.0.113.11\"");
    let m = model(&text, &Slots::default());
    let web = m.service_named("web").unwrap();
    let sorry = web.sorry.unwrap();
    assert_ne!(sorry, slot(&m, "web", "203.0.113.11"));
    assert!(m.backends[&sorry].is_sorry());
    assert_ne!(slot(&m, "web", "203.0.113.11"), slot(&m, "web-tls", "203.0.113.11"));
}

/// What a restarted agent reads from the maps gives every backend its slot back, by address.
#[test]
fn slots_read_from_the_maps_are_kept() {
    let before = model(CFG, &Slots::default());
    let services: Vec<(lb_common::ServiceKey, u32)> = before.services.iter().map(|s| (s.key, s.id)).collect();
    let entries: Vec<(u32, Backend)> = before
        .backends
        .values()
        .map(|b| {
            let flags = BACKEND_F_ASSIGNED | BACKEND_F_USABLE | if b.is_sorry() { BACKEND_F_SORRY } else { 0 };
            (b.slot, Backend { flags, service: b.service, addr: lb_common::addr16(b.address()), ..Default::default() })
        })
        // An unassigned entry, and one of a service the maps do not hold, are nobody's.
        .chain([(9, Backend::default())])
        .chain([(10, Backend { flags: BACKEND_F_ASSIGNED, service: 40, ..Default::default() })])
        .collect();
    let held = Slots::from_maps(services, entries);
    assert_eq!(held, before.slots());
    // The file reversed: same slots.
    let reversed = CFG.replace(
        "[[service.backend]]\naddress = \"203.0.113.11\"\n[[service.backend]]\naddress = \"203.0.113.12\"\nweight = 2",
        "[[service.backend]]\naddress = \"203.0.113.12\"\nweight = 2\n[[service.backend]]\naddress = \"203.0.113.11\"",
    );
    let after = model(&reversed, &held);
    assert_eq!(after.services[0].members, [1, 0]);
    assert_eq!(after.backends, before.backends);
    // Against what the maps held, everything kept is written again.
    let diff = Diff::between(&Model::adopted(&after.agent, &held), &after);
    assert_eq!(diff.services_changed, [0, 1, 2]);
    assert!(diff.backends_added.is_empty() && diff.backends_removed.is_empty());
}

#[test]
fn a_flow_belongs_when_service_destination_and_backend_agree() {
    let m = model(CFG, &Slots::default());
    let vip = ip("203.0.113.100");
    let client = ip("198.51.100.7");
    let key = FlowKey::new(lb_common::PROTO_TCP, client, 40000, vip, 80);
    assert!(m.flow_filter().fits(&key, &Flow { backend: 1, service: 0, ..Flow::default() }));
    // Slot 2 is the dns service's; service 7 does not exist; port 443 is web-tls's.
    assert!(!m.flow_filter().fits(&key, &Flow { backend: 2, service: 0, ..Flow::default() }));
    assert!(!m.flow_filter().fits(&key, &Flow { backend: 1, service: 7, ..Flow::default() }));
    assert!(!m.flow_filter().fits(&FlowKey::new(lb_common::PROTO_TCP, client, 40000, vip, 443), &Flow { backend: 1, service: 0, ..Flow::default() }));
    assert!(!m.flow_filter().fits(&FlowKey::new(lb_common::PROTO_UDP, client, 40000, vip, 80), &Flow { backend: 1, service: 0, ..Flow::default() }));
    let other = ip("203.0.113.101");
    assert!(!m.flow_filter().fits(&FlowKey::new(lb_common::PROTO_TCP, client, 40000, other, 80), &Flow { backend: 1, service: 0, ..Flow::default() }));
    // A flow of a backend the edited file no longer has fits nothing.
    let edited = model(&CFG.replace("address = \"203.0.113.11\"\n[[service.backend]]", "address = \"203.0.113.20\"\n[[service.backend]]"), &m.slots());
    assert!(!edited.flow_filter().fits(&key, &Flow { backend: 0, service: 0, ..Flow::default() }));
    assert!(edited.flow_filter().fits(&key, &Flow { backend: 1, service: 0, ..Flow::default() }));
}

#[test]
fn one_fragment_entry_per_vip_and_protocol_following_the_first_service() {
    let m = model(CFG, &Slots::default());
    assert_eq!(m.fragments.len(), 2, "{:?}", m.fragments);
    assert_eq!(m.fragments[0].service, 0);
    assert_eq!(m.fragments[0].key.port, 0);
    assert_eq!(m.fragments[0].key.proto, lb_common::PROTO_TCP);
    assert_eq!(m.fragments[1].service, 1);
}

fn table(m: &Model, id: u32, usable: impl Fn(u32) -> bool) -> Vec<u32> {
    let svc = m.service(id).unwrap();
    m.table(svc, &m.members(svc, usable).1)
}

#[test]
fn tables_hold_slots_of_usable_backends_only() {
    let m = model(CFG, &Slots::default());
    let all = table(&m, 0, |_| true);
    assert_eq!(all.len(), 65537);
    let ones = all.iter().filter(|&&b| b == 0).count();
    let twos = all.iter().filter(|&&b| b == 1).count();
    assert_eq!(ones + twos, 65537);
    assert!((twos as f64 / ones as f64 - 2.0).abs() < 0.02, "weights 1:2 give {ones}:{twos}");
    let without_first = table(&m, 0, |b| b != 0);
    assert!(without_first.iter().all(|&b| b == 1));
    let none = table(&m, 0, |_| false);
    assert!(none.iter().all(|&b| b == lb_common::RING_EMPTY));
    let dns = table(&m, 1, |_| true);
    assert_eq!(dns.len(), 251);
    assert!(dns.iter().all(|&b| b == 2));
}

/// Two nodes whose files list the same backends in other orders (so with other slots) put the
/// same address in every slot of the table.
#[test]
fn tables_name_the_same_addresses_whatever_the_file_order() {
    let backends = ["203.0.113.11", "203.0.113.12", "203.0.113.13", "203.0.113.14", "203.0.113.15"];
    let text = |order: &[usize]| {
        let mut t = String::from("[agent]\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"web\"\nvip = \"203.0.113.100\"\nport = 80\n");
        for &i in order {
            t += &format!("[[service.backend]]\naddress = \"{}\"\nweight = {}\n", backends[i], 1 + i % 3);
        }
        t
    };
    let addresses = |m: &Model| -> Vec<IpAddr> { table(m, 0, |_| true).iter().map(|s| m.backends[s].address()).collect() };
    let reference = addresses(&model(&text(&[0, 1, 2, 3, 4]), &Slots::default()));
    for order in [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [1, 2, 3, 4, 0]] {
        assert_eq!(addresses(&model(&text(&order), &Slots::default())), reference, "order {order:?}");
    }
}

#[test]
fn below_quorum_the_sorry_backend_takes_everything() {
    let text = CFG.replace("name = \"web\"", "name = \"web\"\nquorum = 2\nsorry = \"203.0.113.50\"");
    let m = model(&text, &Slots::default());
    let web = m.service(0).unwrap();
    let sorry = web.sorry.expect("sorry slot");
    assert!(m.backends[&sorry].is_sorry());
    assert!(!web.members.contains(&sorry), "the sorry backend is not a member");
    assert_eq!(m.members(web, |_| true), (TableMode::Normal, vec![0, 1]));
    assert_eq!(m.members(web, |b| b != 1), (TableMode::Sorry, vec![sorry]));
    // The sorry backend itself unusable (no MAC yet): what is left keeps serving.
    assert_eq!(m.members(web, |b| b == 0), (TableMode::Degraded, vec![0]));
    assert_eq!(m.members(web, |_| false), (TableMode::Degraded, vec![]));
}

#[test]
fn drained_backends_leave_the_table() {
    let mut m = model(CFG, &Slots::default());
    m.backend_mut(0).unwrap().weight = 0;
    assert!(m.backends[&0].drained());
    let web = m.service(0).unwrap();
    assert_eq!(m.members(web, |_| true), (TableMode::Normal, vec![1]));
    assert!(table(&m, 0, |_| true).iter().all(|&b| b == 1));
}

#[test]
fn the_same_address_gets_the_same_place_in_every_service() {
    // Nodes agree on a table; so do two services with the same backends.
    let m = model(CFG, &Slots::default());
    let web = table(&m, 0, |b| b == 0);
    let tls = table(&m, 2, |_| true);
    assert!(web.iter().all(|&b| b == 0) && tls.iter().all(|&b| b == 3));
}

#[test]
fn running_out_of_ids_or_slots_is_an_error() {
    let text = CFG.replace("[agent]\n", "[agent]\nmax_services = 3\n");
    let first = model(&text, &Slots::default());
    // Replace every service at once: the three old ids stay held during the change.
    let other = text.replace("203.0.113.100", "203.0.113.101");
    assert_eq!(Model::new(&cfg(&other), &first.slots()), Err(ModelError::NoServiceId { held: 3, max: 3 }));
}

#[test]
fn removing_the_first_service_of_a_vip_moves_its_fragment_entry() {
    let before = model(CFG, &Slots::default());
    let start = CFG.find("[[service]]\nname = \"web\"").unwrap();
    let end = CFG.find("[[service]]\nname = \"dns\"").unwrap();
    let without_web = format!("{}{}", &CFG[..start], &CFG[end..]);
    let after = model(&without_web, &before.slots());
    let tcp = |m: &Model| m.fragments.iter().find(|f| f.key.proto == lb_common::PROTO_TCP).map(|f| f.service);
    assert_eq!((tcp(&before), tcp(&after)), (Some(0), Some(2)));
    let diff = Diff::between(&before, &after);
    assert!(diff.fragments_changed && diff.services_changed.is_empty(), "{diff:?}");
    assert_eq!(diff.services_removed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [0]);
}

/// A slot whose flows are still being removed is not handed to a new backend.
#[test]
fn reserved_slots_are_not_handed_out() {
    let before = model(CFG, &Slots::default());
    // 203.0.113.11 leaves web (slot 0), 203.0.113.20 comes.
    let edited = CFG.replace("address = \"203.0.113.11\"\n[[service.backend]]", "address = \"203.0.113.20\"\n[[service.backend]]");
    let after = model(&edited, &before.slots());
    assert_eq!(slot(&after, "web", "203.0.113.20"), 4, "not slot 0, freed by this change");
    // The next change would reuse slot 0, unless its flows are still going.
    let next = edited.replace("address = \"203.0.113.20\"", "address = \"203.0.113.21\"");
    assert_eq!(slot(&model(&next, &after.slots()), "web", "203.0.113.21"), 0);
    assert_eq!(slot(&model(&next, &after.slots().with_reserved([0])), "web", "203.0.113.21"), 5);
}

/// A check that moves in the file but stays the same is kept; a changed one is not.
#[test]
fn checks_kept_are_those_unchanged_wherever_written() {
    let checked = CFG.replace("port = 80\n", "port = 80\n[service.check]\ntype = \"tcp\"\ninterval = \"1s\"\n");
    let before = model(&checked, &Slots::default());
    // The same check a few lines lower (a comment above it), b2's weight changed.
    let moved = checked.replace("[service.check]", "# health\n[service.check]").replace("weight = 2", "weight = 3");
    let diff = Diff::between(&before, &model(&moved, &before.slots()));
    assert_eq!(diff.checks_kept, [0, 1]);
    assert!(!diff.checks_changed);
    let slower = checked.replace("interval = \"1s\"", "interval = \"2s\"");
    let diff = Diff::between(&before, &model(&slower, &before.slots()));
    assert!(diff.checks_kept.is_empty() && diff.checks_changed);
}
