//! The agent's one model of the desired state, built from a configuration: the services, their
//! backends (identity, weight, health check, drain), the VRRP instances, and where each service
//! and backend lives in the data plane's maps. Pure: no I/O.
//!
//! **Identity.** A service is identified by (VIP, port, protocol), its [`ServiceKey`]; a backend
//! by its service, its address and its role (member or sorry server), a [`BackendId`]. A
//! service keeps its id (its counters, its ring slots) and a backend its slot (its entry in
//! `BACKENDS`, its counters, what flow entries record) for as long as it is in the
//! configuration: reordering the file, adding or removing others, renaming the service or
//! changing a weight leaves both where they are. New services and backends take ids and slots
//! nothing holds, so no flow recorded for one backend can ever be read as another's.
//!
//! **Change.** A change is a [`Diff`] between two models, and the agent applies the diff to the
//! maps. At start the agent adopts the maps an earlier agent pinned: [`Slots::adopt`] reads
//! from them who holds which id and slot, the new model keeps those, and it is diffed against
//! what the maps hold ([`Model::adopted`]).

mod diff;
mod slots;

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{Service, ServiceKey, MAX_BACKENDS, SERVICE_F_FRAGMENTS_ONLY, SERVICE_F_HASH_SOURCE};

pub use diff::Diff;
pub use slots::{BackendId, Slots};

use crate::{
    config::{AgentConfig, CheckConfig, Config, Forward, Protocol, Scheduler, VrrpConfig},
    flowscan::FlowFilter,
    maglev,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("no free service id: {held} held by services of the earlier configuration, max_services is {max}")]
    NoServiceId { held: usize, max: u32 },
    #[error("no free backend slot: {held} held, at most {max}")]
    NoBackendSlot { held: usize, max: u32 },
}

/// One service as the data plane holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceModel {
    /// Stable id: index of its counters and of its ring slots.
    pub id: u32,
    pub name: String,
    pub key: ServiceKey,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub table_size: u32,
    /// Below this many usable backends with a weight, new flows go to `sorry`.
    pub quorum: u32,
    /// Slots of its backends, in configuration order.
    pub members: Vec<u32>,
    /// Slot of its sorry backend, if it has one.
    pub sorry: Option<u32>,
}

impl ServiceModel {
    pub fn flags(&self) -> u32 {
        match self.scheduler {
            Scheduler::SourceHash => SERVICE_F_HASH_SOURCE,
            Scheduler::Maglev => 0,
        }
    }
}

/// One backend: a (service, address, role) with its slot.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendModel {
    pub slot: u32,
    pub id: BackendId,
    /// Id of its service.
    pub service: u32,
    /// Weight in the table; 0 drains (no new flows, flows stay). The operator can change it.
    pub weight: u32,
    /// Its health check (a sorry backend has none).
    pub check: Option<CheckConfig>,
    /// How frames reach it (a sorry backend: direct routing).
    pub forward: Forward,
}

impl BackendModel {
    pub fn address(&self) -> IpAddr {
        self.id.address
    }

    pub fn is_sorry(&self) -> bool {
        self.id.sorry
    }

    /// Drained: a member with weight 0 takes no new flow; its flows stay until they end.
    pub fn drained(&self) -> bool {
        self.weight == 0 && !self.id.sorry
    }
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

/// A port-0 entry that lets fragments of a VIP and protocol find a table: it points at the
/// table of `service`, the first service of that VIP and protocol in the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct FragmentEntry {
    pub key: ServiceKey,
    pub service: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// How the agent runs (interfaces, pin path, map sizes, ...).
    pub agent: AgentConfig,
    /// Services in configuration order.
    pub services: Vec<ServiceModel>,
    /// Backends by slot.
    pub backends: BTreeMap<u32, BackendModel>,
    pub fragments: Vec<FragmentEntry>,
    pub vrrp: Vec<VrrpConfig>,
}

impl Model {
    /// The model of `cfg`, where every service and backend `held` names keeps its id and slot,
    /// and the others take the lowest ones `held` does not name.
    pub fn new(cfg: &Config, held: &Slots) -> Result<Model, ModelError> {
        let mut next = slots::Allocator::new(held, cfg.agent.max_services, MAX_BACKENDS);
        let mut model = Model {
            agent: cfg.agent.clone(),
            services: Vec::new(),
            backends: BTreeMap::new(),
            fragments: Vec::new(),
            vrrp: cfg.vrrp.clone(),
        };
        for svc in &cfg.services {
            let key = ServiceKey::new(svc.vip, svc.port, svc.protocol.number());
            let id = next.service(key)?;
            let mut add = |address: IpAddr, sorry: bool, weight: u32, check: Option<CheckConfig>, forward: Forward| {
                let bid = BackendId { service: key, address, sorry };
                let slot = next.backend(bid)?;
                model.backends.insert(slot, BackendModel { slot, id: bid, service: id, weight, check, forward });
                Ok::<u32, ModelError>(slot)
            };
            let members =
                svc.backends.iter().map(|b| add(b.address, false, b.weight, b.check.clone(), b.forward)).collect::<Result<_, _>>()?;
            let sorry = svc.sorry.map(|address| add(address, true, 1, None, Forward::Dr)).transpose()?;
            model.services.push(ServiceModel {
                id,
                name: svc.name.clone(),
                key,
                vip: svc.vip,
                port: svc.port,
                protocol: svc.protocol,
                scheduler: svc.scheduler,
                table_size: svc.table_size,
                quorum: svc.quorum,
                members,
                sorry,
            });
        }
        model.fragments = fragments(&model.services);
        Ok(model)
    }

    /// What the maps of an earlier agent hold, as far as they tell: the services and backends
    /// `held` names, with their ids and slots. Their other attributes are unknown (empty), so a
    /// diff against this model rewrites everything that is kept.
    pub fn adopted(agent: &AgentConfig, held: &Slots) -> Model {
        let mut services: Vec<ServiceModel> = held
            .services()
            .map(|(key, id)| ServiceModel {
                id,
                name: String::new(),
                key,
                vip: slots::ip(&key.addr, key.family),
                port: u16::from_be(key.port),
                protocol: if key.proto == lb_common::PROTO_UDP { Protocol::Udp } else { Protocol::Tcp },
                scheduler: Scheduler::Maglev,
                table_size: 0,
                quorum: 0,
                members: Vec::new(),
                sorry: None,
            })
            .collect();
        services.sort_by_key(|s| s.id);
        let mut backends = BTreeMap::new();
        for (id, slot) in held.backends() {
            let Some(svc) = services.iter_mut().find(|s| s.key == id.service) else { continue };
            if id.sorry {
                svc.sorry = Some(slot);
            } else {
                svc.members.push(slot);
            }
            backends.insert(slot, BackendModel { slot, id, service: svc.id, weight: 0, check: None, forward: Forward::Dr });
        }
        Model { agent: agent.clone(), services, backends, fragments: Vec::new(), vrrp: Vec::new() }
    }

    /// The ids and slots this model holds (what the next model must keep).
    pub fn slots(&self) -> Slots {
        Slots::adopt(
            self.services.iter().map(|s| (s.key, s.id)),
            self.backends.values().map(|b| (b.slot, b.id)),
        )
    }

    pub fn service(&self, id: u32) -> Option<&ServiceModel> {
        self.services.iter().find(|s| s.id == id)
    }

    pub fn service_named(&self, name: &str) -> Option<&ServiceModel> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn backend(&self, slot: u32) -> Option<&BackendModel> {
        self.backends.get(&slot)
    }

    pub fn backend_mut(&mut self, slot: u32) -> Option<&mut BackendModel> {
        self.backends.get_mut(&slot)
    }

    /// The slot of service `id`'s member at `address`.
    pub fn member(&self, id: u32, address: IpAddr) -> Option<u32> {
        let svc = self.service(id)?;
        svc.members.iter().copied().find(|&slot| self.backends.get(&slot).is_some_and(|b| b.address() == address))
    }

    /// Every VIP, once, sorted.
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut vips: Vec<IpAddr> = self.services.iter().map(|s| s.vip).collect();
        vips.sort();
        vips.dedup();
        vips
    }

    /// The checked backends in configuration order: (slot, check).
    pub fn checks(&self) -> Vec<(u32, &CheckConfig)> {
        self.services
            .iter()
            .flat_map(|s| &s.members)
            .filter_map(|slot| Some((*slot, self.backends.get(slot)?.check.as_ref()?)))
            .collect()
    }

    /// The map value for service `id` (ring slot and size are set when it is published).
    pub fn service_value(&self, svc: &ServiceModel) -> Service {
        Service { id: svc.id, flags: svc.flags(), ..Default::default() }
    }

    /// The fragment entry's map value: the service it follows, flagged fragments-only.
    pub fn fragment_value(&self, live: Service) -> Service {
        Service { flags: live.flags | SERVICE_F_FRAGMENTS_ONLY, ..live }
    }

    /// Which flow-table entries fit this model (one an earlier agent left, say): its service
    /// exists and takes its destination, and its backend slot belongs to that service. A slot
    /// belongs to the backend whose address the earlier agent's `BACKENDS` entry named (see
    /// [`Slots::adopt`]), so a flow kept here goes on to the same address. The program
    /// forwards a known flow without looking at the service again.
    pub fn flow_filter(&self) -> FlowFilter {
        FlowFilter {
            services: self.services.iter().map(|s| (s.id, s.key)).collect(),
            backends: self.backends.values().map(|b| (b.slot, b.service)).collect(),
        }
    }

    /// Which backends service `svc`'s table should hold, given which are `usable` (MAC known,
    /// healthy): its usable backends with a weight if there are at least `quorum` of them;
    /// otherwise its sorry backend if usable; otherwise whatever usable backends remain.
    pub fn members(&self, svc: &ServiceModel, usable: impl Fn(u32) -> bool) -> (TableMode, Vec<u32>) {
        let live: Vec<u32> = svc
            .members
            .iter()
            .copied()
            .filter(|&slot| usable(slot) && self.backends.get(&slot).is_some_and(|b| b.weight > 0))
            .collect();
        if live.len() >= svc.quorum as usize {
            return (TableMode::Normal, live);
        }
        match svc.sorry.filter(|&s| usable(s)) {
            Some(sorry) => (TableMode::Sorry, vec![sorry]),
            None => (TableMode::Degraded, live),
        }
    }

    /// The Maglev table of `svc` over `members` (slots), holding slots. It depends only on the
    /// set of (address, weight) of the members ([`maglev::build_for_set`]): every node, and
    /// every order of the file, gives the same address in every table slot.
    pub fn table(&self, svc: &ServiceModel, members: &[u32]) -> Vec<u32> {
        let names: Vec<(String, u32)> = members
            .iter()
            .map(|slot| {
                let b = &self.backends[slot];
                (b.address().to_string(), b.weight)
            })
            .collect();
        let set: Vec<(&[u8], u32)> = names.iter().map(|(n, w)| (n.as_bytes(), *w)).collect();
        let table = maglev::build_for_set(&set, svc.table_size).expect("table size validated by the configuration");
        table.into_iter().map(|i| if i == lb_common::RING_EMPTY { i } else { members[i as usize] }).collect()
    }
}

/// A service's configured table (every backend usable) as operators compare it between nodes:
/// a fingerprint of the address in every slot, and each address's share of the slots.
#[derive(Clone, Debug, PartialEq)]
pub struct TableSummary {
    pub fingerprint: u32,
    pub slots: u32,
    pub shares: Vec<(IpAddr, usize)>,
}

impl Model {
    /// The summary of `svc`'s table with every backend usable. Two nodes given the same set of
    /// (address, weight) print the same fingerprint, whatever their files' order.
    pub fn table_summary(&self, svc: &ServiceModel) -> TableSummary {
        let (_, members) = self.members(svc, |_| true);
        let table = self.table(svc, &members);
        let mut text = Vec::with_capacity(table.len() * 16);
        let mut shares: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for slot in &table {
            match self.backends.get(slot) {
                Some(b) => {
                    text.extend_from_slice(b.address().to_string().as_bytes());
                    *shares.entry(b.address()).or_default() += 1;
                }
                None => text.extend_from_slice(b"-"),
            }
            text.push(b'\n');
        }
        TableSummary {
            fingerprint: lb_common::hash::hash_bytes(0, &text),
            slots: table.len() as u32,
            shares: shares.into_iter().collect(),
        }
    }
}

/// One fragment entry per VIP and protocol without an all-ports service, following the first
/// service of that VIP and protocol.
fn fragments(services: &[ServiceModel]) -> Vec<FragmentEntry> {
    let mut out: Vec<FragmentEntry> = Vec::new();
    for svc in services {
        let key = ServiceKey { port: 0, ..svc.key };
        let taken = services.iter().any(|s| s.key == key) || out.iter().any(|f| f.key == key);
        if !taken {
            out.push(FragmentEntry { key, service: svc.id });
        }
    }
    out
}

#[cfg(test)]
mod tests;
