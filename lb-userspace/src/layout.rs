//! Where each configured service and backend lives in the data plane's maps, and the Maglev
//! table each service should have given which of its backends are usable. Pure: the agent
//! feeds it the configuration and backend states and writes what it returns.

use std::net::IpAddr;

use lb_common::{Flow, FlowKey, Service, ServiceKey, SERVICE_F_FRAGMENTS_ONLY, SERVICE_F_HASH_SOURCE};

use crate::{
    config::{Config, Scheduler},
    maglev,
};

/// A service's place in the maps.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSlot {
    /// Service id: index of the service in the configuration, and of its counters.
    pub id: u32,
    pub name: String,
    pub key: ServiceKey,
    pub flags: u32,
    pub table_size: u32,
    /// Indices into [`Layout::backends`] (and into the `BACKENDS` map) of its backends.
    pub backends: Vec<u32>,
    /// Below this many usable backends with a weight, new flows go to `sorry`.
    pub quorum: u32,
    /// Index of its sorry backend, if it has one.
    pub sorry: Option<u32>,
}

/// Which backends a service's table holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableMode {
    /// Its usable backends with a weight, at least `quorum` of them.
    Normal,
    /// Fewer than `quorum` usable backends: everything to the sorry backend.
    Sorry,
    /// Fewer than `quorum` usable backends and no usable sorry backend: what is left (perhaps
    /// nothing, and then its packets are dropped and counted).
    Degraded,
}

/// A backend's place in the maps: one entry per (service, real server).
#[derive(Clone, Debug, PartialEq)]
pub struct BackendSlot {
    pub index: u32,
    pub service: u32,
    pub address: IpAddr,
    /// Weight in the table; the operator can change it at run time (0 drains).
    pub weight: u32,
    /// The service's sorry backend (not health checked, not in the table unless the service
    /// lost its quorum).
    pub sorry: bool,
}

/// A port-0 entry that lets fragments of a VIP and protocol find a table: it points at the
/// table of `service`, the first service of that VIP and protocol in the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct FragmentEntry {
    pub key: ServiceKey,
    pub service: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layout {
    pub services: Vec<ServiceSlot>,
    pub backends: Vec<BackendSlot>,
    pub fragments: Vec<FragmentEntry>,
}

impl Layout {
    /// Services get ids in configuration order; backends get indices in the same order.
    pub fn new(cfg: &Config) -> Layout {
        let mut layout = Layout::default();
        for (id, svc) in cfg.services.iter().enumerate() {
            let id = id as u32;
            let flags = match svc.scheduler {
                Scheduler::SourceHash => SERVICE_F_HASH_SOURCE,
                Scheduler::Maglev => 0,
            };
            let mut backends = Vec::new();
            for b in &svc.backends {
                backends.push(layout.push_backend(id, b.address, b.weight, false));
            }
            let sorry = svc.sorry.map(|address| layout.push_backend(id, address, 1, true));
            layout.services.push(ServiceSlot {
                id,
                name: svc.name.clone(),
                key: ServiceKey::new(svc.vip, svc.port, svc.protocol.number()),
                flags,
                table_size: svc.table_size,
                backends,
                quorum: svc.quorum,
                sorry,
            });
        }
        for svc in &layout.services {
            let key = ServiceKey { port: 0, ..svc.key };
            let taken = layout.services.iter().any(|s| s.key == key) || layout.fragments.iter().any(|f| f.key == key);
            if !taken {
                layout.fragments.push(FragmentEntry { key, service: svc.id });
            }
        }
        layout
    }

    fn push_backend(&mut self, service: u32, address: IpAddr, weight: u32, sorry: bool) -> u32 {
        let index = self.backends.len() as u32;
        self.backends.push(BackendSlot { index, service, address, weight, sorry });
        index
    }

    /// The map value for service `id` (ring slot and size are set when it is published).
    pub fn service_value(&self, id: u32) -> Service {
        let s = &self.services[id as usize];
        Service { id, flags: s.flags, ..Default::default() }
    }

    /// Which backends service `id`'s table should hold, given which are `usable` (MAC known,
    /// healthy): its usable backends with a weight if there are at least `quorum` of them;
    /// otherwise its sorry backend if usable; otherwise whatever usable backends remain.
    /// Whether an entry of the flow table (one an earlier agent left, say) fits this layout:
    /// its service exists and takes its destination, and its backend is one of that
    /// service's. The program forwards a known flow without looking at the service again.
    pub fn flow_belongs(&self, key: &FlowKey, flow: &Flow) -> bool {
        let (Some(svc), Some(backend)) = (self.services.get(flow.service as usize), self.backends.get(flow.backend as usize)) else {
            return false;
        };
        let k = &svc.key;
        k.addr == key.dst
            && k.family == key.family
            && k.proto == key.proto
            && (k.port == key.dport || k.port == 0)
            && backend.service == flow.service
    }

    pub fn members(&self, id: u32, usable: impl Fn(u32) -> bool) -> (TableMode, Vec<u32>) {
        let svc = &self.services[id as usize];
        let live: Vec<u32> =
            svc.backends.iter().copied().filter(|&i| usable(i) && self.backends[i as usize].weight > 0).collect();
        if live.len() >= svc.quorum as usize {
            return (TableMode::Normal, live);
        }
        match svc.sorry.filter(|&s| usable(s)) {
            Some(sorry) => (TableMode::Sorry, vec![sorry]),
            None => (TableMode::Degraded, live),
        }
    }

    /// The Maglev table of service `id` over `members` (backend indices), holding backend
    /// indices. Every node computes the same table for the same members: a backend's place
    /// depends only on its address and weight.
    pub fn table(&self, id: u32, members: &[u32]) -> Vec<u32> {
        let svc = &self.services[id as usize];
        let entries: Vec<maglev::Entry> = members
            .iter()
            .map(|&i| {
                let b = &self.backends[i as usize];
                maglev::Entry::for_name(b.address.to_string().as_bytes(), b.weight, svc.table_size)
            })
            .collect();
        let table = maglev::build(&entries, svc.table_size).expect("table size validated by the configuration");
        table.into_iter().map(|local| if local == lb_common::RING_EMPTY { local } else { members[local as usize] }).collect()
    }

    /// The fragment entry's map value: the service it follows, flagged fragments-only.
    pub fn fragment_value(&self, live: Service) -> Service {
        Service { flags: live.flags | SERVICE_F_FRAGMENTS_ONLY, ..live }
    }
}

#[cfg(test)]
mod tests {
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

    fn layout() -> Layout {
        let (cfg, _) = config::parse("test.toml", CFG).expect("valid");
        Layout::new(&cfg)
    }

    #[test]
    fn a_flow_belongs_when_service_destination_and_backend_agree() {
        let l = layout();
        let vip: IpAddr = "203.0.113.100".parse().unwrap();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let key = FlowKey::new(lb_common::PROTO_TCP, client, 40000, vip, 80);
        assert!(l.flow_belongs(&key, &Flow { backend: 1, service: 0 }));
        // Backend 2 is the dns service's; service 7 does not exist; port 443 is web-tls's.
        assert!(!l.flow_belongs(&key, &Flow { backend: 2, service: 0 }));
        assert!(!l.flow_belongs(&key, &Flow { backend: 1, service: 7 }));
        assert!(!l.flow_belongs(&FlowKey::new(lb_common::PROTO_TCP, client, 40000, vip, 443), &Flow { backend: 1, service: 0 }));
        assert!(!l.flow_belongs(&FlowKey::new(lb_common::PROTO_UDP, client, 40000, vip, 80), &Flow { backend: 1, service: 0 }));
        let other: IpAddr = "203.0.113.101".parse().unwrap();
        assert!(!l.flow_belongs(&FlowKey::new(lb_common::PROTO_TCP, client, 40000, other, 80), &Flow { backend: 1, service: 0 }));
    }

    #[test]
    fn ids_and_indices_follow_the_configuration() {
        let l = layout();
        assert_eq!(l.services.iter().map(|s| s.id).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(l.services[0].backends, [0, 1]);
        assert_eq!(l.services[1].backends, [2]);
        assert_eq!(l.services[2].backends, [3]);
        assert_eq!(l.backends[3].address, "203.0.113.11".parse::<IpAddr>().unwrap());
        assert_eq!(l.services[1].flags, SERVICE_F_HASH_SOURCE);
        assert_eq!(l.services[0].key.port, 80u16.to_be());
        assert_eq!(l.services[1].key.proto, lb_common::PROTO_UDP);
    }

    #[test]
    fn one_fragment_entry_per_vip_and_protocol_following_the_first_service() {
        let l = layout();
        assert_eq!(l.fragments.len(), 2, "{:?}", l.fragments);
        assert_eq!(l.fragments[0].service, 0);
        assert_eq!(l.fragments[0].key.port, 0);
        assert_eq!(l.fragments[0].key.proto, lb_common::PROTO_TCP);
        assert_eq!(l.fragments[1].service, 1);
    }

    fn table(l: &Layout, id: u32, usable: impl Fn(u32) -> bool) -> Vec<u32> {
        l.table(id, &l.members(id, usable).1)
    }

    #[test]
    fn tables_hold_backend_indices_of_usable_backends_only() {
        let l = layout();
        let all = table(&l, 0, |_| true);
        assert_eq!(all.len(), 65537);
        let ones = all.iter().filter(|&&b| b == 0).count();
        let twos = all.iter().filter(|&&b| b == 1).count();
        assert_eq!(ones + twos, 65537);
        assert!((twos as f64 / ones as f64 - 2.0).abs() < 0.02, "weights 1:2 give {ones}:{twos}");
        let without_first = table(&l, 0, |b| b != 0);
        assert!(without_first.iter().all(|&b| b == 1));
        let none = table(&l, 0, |_| false);
        assert!(none.iter().all(|&b| b == lb_common::RING_EMPTY));
        let dns = table(&l, 1, |_| true);
        assert_eq!(dns.len(), 251);
        assert!(dns.iter().all(|&b| b == 2));
    }

    #[test]
    fn below_quorum_the_sorry_backend_takes_everything() {
        let text = CFG.replace("name = \"web\"", "name = \"web\"\nquorum = 2\nsorry = \"203.0.113.50\"");
        let (cfg, _) = config::parse("test.toml", &text).expect("valid");
        let l = Layout::new(&cfg);
        let sorry = l.services[0].sorry.expect("sorry slot");
        assert!(l.backends[sorry as usize].sorry);
        assert!(!l.services[0].backends.contains(&sorry), "the sorry backend is not a member");
        assert_eq!(l.members(0, |_| true), (TableMode::Normal, vec![0, 1]));
        assert_eq!(l.members(0, |b| b != 1), (TableMode::Sorry, vec![sorry]));
        // The sorry backend itself unusable (no MAC yet): what is left keeps serving.
        assert_eq!(l.members(0, |b| b == 0), (TableMode::Degraded, vec![0]));
        assert_eq!(l.members(0, |_| false), (TableMode::Degraded, vec![]));
    }

    #[test]
    fn drained_backends_leave_the_table() {
        let (cfg, _) = config::parse("test.toml", CFG).expect("valid");
        let mut l = Layout::new(&cfg);
        l.backends[0].weight = 0;
        assert_eq!(l.members(0, |_| true), (TableMode::Normal, vec![1]));
        assert!(table(&l, 0, |_| true).iter().all(|&b| b == 1));
    }

    #[test]
    fn the_same_address_gets_the_same_place_in_every_service() {
        // Nodes agree on a table; so do two services with the same backends.
        let l = layout();
        let web = table(&l, 0, |b| b == 0);
        let tls = table(&l, 2, |_| true);
        assert!(web.iter().all(|&b| b == 0) && tls.iter().all(|&b| b == 3));
    }
}
