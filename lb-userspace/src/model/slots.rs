//! Who holds which service id and backend slot, and how new ones are handed out.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::{Backend, ServiceKey, BACKEND_F_ASSIGNED, BACKEND_F_SORRY, FAMILY_V4};

use super::ModelError;

/// A backend's identity: its service, its address, its role. Two services with the same
/// backend address have two backends; a sorry server with a member's address is a backend of
/// its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendId {
    pub service: ServiceKey,
    pub address: IpAddr,
    pub sorry: bool,
}

/// Service ids by key, backend slots by identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Slots {
    services: HashMap<ServiceKey, u32>,
    backends: HashMap<BackendId, u32>,
    /// Backend slots nobody holds that must not be handed out yet (their flows are still
    /// being removed).
    reserved: HashSet<u32>,
}

impl Slots {
    /// The slots named by `services` (key, id) and `backends` (slot, identity), as an earlier
    /// agent's maps hold them. An id or slot named twice keeps its first holder; a backend
    /// whose service is not among `services` is left out (its flows then fit nothing and go).
    pub fn adopt(
        services: impl IntoIterator<Item = (ServiceKey, u32)>,
        backends: impl IntoIterator<Item = (u32, BackendId)>,
    ) -> Slots {
        let mut slots = Slots::default();
        let mut ids = HashSet::new();
        for (key, id) in services {
            if ids.insert(id) {
                slots.services.entry(key).or_insert(id);
            }
        }
        let mut taken = HashSet::new();
        for (slot, id) in backends {
            if slots.services.contains_key(&id.service) && taken.insert(slot) {
                slots.backends.entry(id).or_insert(slot);
            }
        }
        slots
    }

    /// The identities in the `BACKENDS` entries `entries` (slot, entry) of the services
    /// `services` (key, id): what [`Slots::adopt`] takes from the maps.
    pub fn from_maps(services: Vec<(ServiceKey, u32)>, entries: impl IntoIterator<Item = (u32, Backend)>) -> Slots {
        let by_id: HashMap<u32, ServiceKey> = services.iter().map(|(k, id)| (*id, *k)).collect();
        let backends: Vec<(u32, BackendId)> = entries
            .into_iter()
            .filter(|(_, b)| b.flags & BACKEND_F_ASSIGNED != 0)
            .filter_map(|(slot, b)| {
                let service = *by_id.get(&b.service)?;
                let address = ip(&b.addr, service.family);
                Some((slot, BackendId { service, address, sorry: b.flags & BACKEND_F_SORRY != 0 }))
            })
            .collect();
        Slots::adopt(services, backends)
    }

    pub fn service(&self, key: &ServiceKey) -> Option<u32> {
        self.services.get(key).copied()
    }

    pub fn backend(&self, id: &BackendId) -> Option<u32> {
        self.backends.get(id).copied()
    }

    pub fn services(&self) -> impl Iterator<Item = (ServiceKey, u32)> + '_ {
        self.services.iter().map(|(k, v)| (*k, *v))
    }

    pub fn backends(&self) -> impl Iterator<Item = (BackendId, u32)> + '_ {
        self.backends.iter().map(|(k, v)| (*k, *v))
    }

    /// These slots too are not to be handed out (see [`Slots::reserved`]).
    pub fn with_reserved(mut self, slots: impl IntoIterator<Item = u32>) -> Slots {
        self.reserved.extend(slots);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.backends.is_empty()
    }
}

/// An address from its 16-byte map form and family tag.
pub fn ip(addr: &[u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

/// Hands out ids and slots for a new model: what `held` names keeps its number; anything new
/// takes the lowest number that `held` does not name and that is not handed out yet. A number
/// freed by this change is not reused by it, so an entry the data plane still holds for a
/// removed backend is never read as a new one's.
pub(super) struct Allocator<'a> {
    held: &'a Slots,
    held_ids: HashSet<u32>,
    held_slots: HashSet<u32>,
    /// Every number below these is held or given (the lowest free one only grows).
    next_id: u32,
    next_slot: u32,
    max_services: u32,
    max_backends: u32,
}

impl<'a> Allocator<'a> {
    pub(super) fn new(held: &'a Slots, max_services: u32, max_backends: u32) -> Self {
        Allocator {
            held,
            held_ids: held.services.values().copied().collect(),
            held_slots: held.backends.values().chain(&held.reserved).copied().collect(),
            next_id: 0,
            next_slot: 0,
            max_services,
            max_backends,
        }
    }

    pub(super) fn service(&mut self, key: ServiceKey) -> Result<u32, ModelError> {
        if let Some(id) = self.held.service(&key).filter(|id| *id < self.max_services) {
            return Ok(id);
        }
        lowest_free(&self.held_ids, &mut self.next_id, self.max_services)
            .ok_or(ModelError::NoServiceId { held: self.held_ids.len(), max: self.max_services })
    }

    pub(super) fn backend(&mut self, id: BackendId) -> Result<u32, ModelError> {
        if let Some(slot) = self.held.backend(&id).filter(|s| *s < self.max_backends) {
            return Ok(slot);
        }
        lowest_free(&self.held_slots, &mut self.next_slot, self.max_backends)
            .ok_or(ModelError::NoBackendSlot { held: self.held_slots.len(), max: self.max_backends })
    }
}

/// The lowest number from `*next` on that `held` does not name; `*next` moves past it.
fn lowest_free(held: &HashSet<u32>, next: &mut u32, max: u32) -> Option<u32> {
    let n = (*next..max).find(|n| !held.contains(n))?;
    *next = n + 1;
    Some(n)
}
