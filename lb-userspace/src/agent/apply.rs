//! Bringing the maps to a model: the agent applies the [`Diff`] from the model it runs to a
//! new one, and keeps each backend's entry and each service's table in step with what it
//! learns (MACs, health, weights).

use lb_common::{
    addr16, family, Backend, Settings, BACKEND_F_ASSIGNED, BACKEND_F_SORRY, BACKEND_F_USABLE, FORWARD_DR, FORWARD_GUE, FORWARD_IPIP,
};
use tracing::{info, warn};

use super::{Agent, BackendState, Placement, Result};
use crate::{
    config::{self, Forward, InterfaceInfo},
    flowscan::Doomed,
    health::Health,
    model::{Diff, Model, TableMode},
    net::{format_mac, Neighbour, Path},
};

/// The kernel's routes to the tunnelled backends, by address (see `Agent::tunnel_paths`).
pub(super) type Paths = std::collections::HashMap<std::net::IpAddr, Path>;

/// The data plane's `Backend::method` of a method, and its GUE port (host order; 0 if none).
fn forward_method(forward: Forward) -> (u8, u16) {
    match forward {
        Forward::Dr => (FORWARD_DR, 0),
        Forward::Ipip => (FORWARD_IPIP, 0),
        Forward::Gue { port } => (FORWARD_GUE, port),
    }
}

impl Agent {
    /// Makes `new` the model the agent runs and brings the maps to it, touching only what the
    /// diff from the current model names. `interfaces` are this host's (a new backend's
    /// egress), `neighbours` the kernel's table (a new backend's MAC, known at once).
    ///
    /// Order, so that no packet meets a half-made state: entries of new backends are complete
    /// before a table names them; tables stop naming a backend before its entry goes; flows of
    /// what left are removed last.
    pub(super) fn apply(&mut self, new: Model, interfaces: &[InterfaceInfo], neighbours: &[Neighbour], paths: &Paths) -> Result<Diff> {
        let diff = Diff::between(&self.model, &new);
        self.view_dirty = true;
        let timeouts_changed = self.model.agent.flow_timeouts != new.agent.flow_timeouts;
        self.model = new;
        self.write_settings()?;
        if let (true, Some(scanner)) = (timeouts_changed, &self.scanner) {
            scanner.set_timeouts(self.model.agent.flow_timeouts);
        }
        for slot in &diff.backends_removed {
            self.backends.remove(slot);
        }
        let fresh: Vec<u32> = self.model.backends.keys().filter(|s| !self.backends.contains_key(s)).copied().collect();
        // A backend that changed its method, or whose tunnel takes another path, is placed
        // again (its MAC learnt again if its next hop changed).
        for slot in &diff.backends_changed {
            let placement = self.placed(*slot, interfaces, paths);
            if let Some(state) = self.backends.get_mut(slot).filter(|s| s.placement() != placement) {
                state.place(placement);
            }
        }
        for &slot in &fresh {
            let b = &self.model.backends[&slot];
            let mut state = BackendState::new(self.placed(slot, interfaces, paths), b.check.as_ref().is_none_or(|c| c.initial == Health::Up));
            let method = forward_method(b.forward).0;
            // A backend an earlier agent knew goes on as it was (its MAC, its health) until
            // this agent learns otherwise: its flows must not move, nor its health flap, on a
            // restart. Its entry was usable when its MAC was known and it was healthy.
            let inherited = self.inherited.remove(&slot);
            if let Some(old) = inherited.filter(|e| e.ifindex == state.ifindex && e.method == method && e.dst_mac != [0; 6]) {
                state.mac = Some(old.dst_mac);
                state.healthy = old.flags & BACKEND_F_USABLE != 0 || b.check.is_none();
                self.carried.insert(slot);
            }
            self.backends.insert(slot, state);
        }
        self.inherited.clear();
        self.index_checks();
        for n in neighbours {
            self.learn(n);
        }
        for &slot in &diff.backends_added {
            self.dp.clear_backend_counters(slot)?;
        }
        for slot in fresh.iter().chain(&diff.backends_changed) {
            self.write_backend(*slot)?;
        }
        for &id in &diff.services_added {
            self.dp.clear_service_counters(id)?;
        }
        for &id in diff.services_added.iter().chain(&diff.services_changed) {
            self.publish(id)?;
        }
        if diff.fragments_changed {
            // A fragment entry may now follow a service whose table did not change.
            self.write_fragments()?;
        }
        self.modes.retain(|id, _| self.model.service(*id).is_some());
        self.remove_stale_services()?;
        for &slot in &diff.backends_removed {
            self.dp.set_backend(slot, &Backend::default())?;
        }
        if diff.removes_anything() {
            self.sweep_flows(&diff.backends_removed)?;
        }
        if diff.vips_changed {
            self.dp.set_vips(&self.model.vips())?;
        }
        Ok(diff)
    }

    /// Writes every map for the model as it stands (after a failure: each write is
    /// idempotent).
    pub(super) fn write_all(&mut self) -> Result<()> {
        self.write_settings()?;
        let slots: Vec<u32> = self.model.backends.keys().copied().collect();
        for slot in slots {
            self.write_backend(slot)?;
        }
        let ids: Vec<u32> = self.model.services.iter().map(|s| s.id).collect();
        // Publishing a service writes its fragment entries too.
        for id in ids {
            self.publish(id)?;
        }
        self.remove_stale_services()?;
        // Entries of backends that left, if clearing them failed.
        for (slot, b) in self.dp.assigned_backends()? {
            if !self.model.backends.contains_key(&slot) {
                self.dp.set_backend(slot, &Backend { flags: 0, ..b })?;
            }
        }
        self.sweep_flows(&[])?;
        self.dp.set_vips(&self.model.vips())?;
        Ok(())
    }

    /// The program's settings from `[agent]` (one small entry, written whole).
    fn write_settings(&mut self) -> Result<()> {
        let agent = &self.model.agent;
        let mut settings = Settings { new_flows_per_cpu: agent.new_flow_rate, ..Default::default() };
        if let Some(source) = agent.tunnel_source {
            settings.tunnel_src4.copy_from_slice(&addr16(source.address)[..4]);
            settings.tunnel_src4_hash_mask = source.hash_mask();
        }
        if let Some(source) = agent.tunnel_source6 {
            settings.tunnel_src6 = addr16(source.address);
            settings.tunnel_src6_hash_mask = source.hash_mask();
        }
        self.dp.set_settings(settings)?;
        Ok(())
    }

    /// Removes every flow entry that does not fit the model (its backend or service left, or
    /// an earlier agent left it for something this model does not have). `freed` are the
    /// slots of backends that left: no new backend takes them until their flows are gone.
    /// Once the agent runs, the flow scanner does it off the loop.
    pub(super) fn sweep_flows(&mut self, freed: &[u32]) -> Result<()> {
        let filter = self.model.flow_filter();
        match &self.scanner {
            Some(scanner) => {
                self.purging.extend(freed);
                scanner.remove(Doomed::NotFitting { filter: std::sync::Arc::new(filter), freed: freed.to_vec() });
            }
            None => {
                let stale = self.dp.purge_flows(|k, f| !filter.fits(k, f))?;
                if stale > 0 {
                    info!("removed {stale} flows that no longer fit the configuration");
                }
            }
        }
        Ok(())
    }

    /// Numbers the health checks in configuration order and tells each backend its check.
    fn index_checks(&mut self) {
        self.checked = self.model.checks().into_iter().map(|(slot, _)| slot).collect();
        for state in self.backends.values_mut() {
            state.check = None;
        }
        for (i, slot) in self.checked.iter().enumerate() {
            if let Some(state) = self.backends.get_mut(slot) {
                state.check = Some(i);
            }
        }
    }

    /// Where backend `slot`'s frames go by its method: direct routing to its address on the
    /// attached subnet it is on; a tunnel to the next hop of its route in `paths`, if that
    /// leaves through an attached interface. `Err`: why nowhere (the backend is unusable), for
    /// the caller to log when it matters.
    pub(super) fn placement(&self, slot: u32, interfaces: &[InterfaceInfo], paths: &Paths) -> std::result::Result<Placement, String> {
        let b = self.model.backend(slot).ok_or_else(|| format!("backend slot {slot} is not in the configuration"))?;
        let attached = &self.model.agent.interfaces;
        if b.forward == Forward::Dr {
            let iface = config::egress_interface(b.address(), interfaces, attached).expect("checked by check_environment");
            return Ok(Placement::new(iface, b.address(), 0));
        }
        let path = paths
            .get(&b.address())
            .ok_or_else(|| format!("backend {} (a tunnel): the kernel has no route to it; unusable until it has", b.address()))?;
        let iface = interfaces.iter().find(|i| i.ifindex == path.ifindex && attached.contains(&i.name)).ok_or_else(|| {
            format!(
                "backend {} (a tunnel): its route leaves through interface {}, which xlb is not attached to; unusable",
                b.address(),
                path.ifindex
            )
        })?;
        Ok(Placement::new(iface, path.next_hop, path.mtu.unwrap_or(iface.mtu)))
    }

    /// [`Agent::placement`], its `Err` logged.
    fn placed(&self, slot: u32, interfaces: &[InterfaceInfo], paths: &Paths) -> Option<Placement> {
        self.placement(slot, interfaces, paths).inspect_err(|why| warn!("{why}")).ok()
    }

    /// Whether a backend may receive packets: its MAC is known and it is healthy.
    pub(super) fn usable(&self, slot: u32) -> bool {
        self.backends.get(&slot).is_some_and(|b| b.mac.is_some() && b.healthy)
    }

    pub(super) fn write_backend(&mut self, slot: u32) -> Result<()> {
        self.view_dirty = true;
        let (Some(b), Some(model)) = (self.backends.get(&slot), self.model.backend(slot)) else { return Ok(()) };
        let mut flags = BACKEND_F_ASSIGNED;
        if self.usable(slot) {
            flags |= BACKEND_F_USABLE;
        }
        if model.is_sorry() {
            flags |= BACKEND_F_SORRY;
        }
        let (method, gue_port) = forward_method(model.forward);
        let entry = Backend {
            dst_mac: b.mac.unwrap_or([0; 6]),
            src_mac: b.src_mac,
            ifindex: b.ifindex,
            flags,
            service: model.service,
            addr: addr16(model.address()),
            method,
            family: family(model.address()),
            mtu: if method == FORWARD_DR { 0 } else { b.mtu.min(u32::from(u16::MAX)) as u16 },
            gue_port: gue_port.to_be(),
            _pad: 0,
        };
        Ok(self.dp.set_backend(slot, &entry)?)
    }

    /// Writes service `id`'s table and moves its fragment entries along with it.
    pub(super) fn publish(&mut self, id: u32) -> Result<()> {
        self.view_dirty = true;
        let Some(svc) = self.model.service(id) else { return Ok(()) };
        let (mode, members) = self.model.members(svc, |b| self.usable(b));
        let previous = self.modes.insert(id, mode).unwrap_or(TableMode::Normal);
        if previous != mode {
            match mode {
                TableMode::Normal => info!("service {}: quorum of {} usable backends restored", svc.name, svc.quorum),
                TableMode::Sorry => warn!("service {}: fewer than {} usable backends, new flows go to the sorry backend", svc.name, svc.quorum),
                TableMode::Degraded if members.is_empty() => {
                    warn!("service {}: no usable backend and no usable sorry backend, its packets are dropped", svc.name)
                }
                TableMode::Degraded => warn!("service {}: fewer than {} usable backends", svc.name, svc.quorum),
            }
        }
        let table = self.model.table(svc, &members);
        let key = svc.key;
        self.dp.publish_service(&key, self.model.service_value(svc), &table)?;
        let live = self.dp.service_entry(&key).expect("just published");
        for frag in self.model.fragments.iter().filter(|f| f.service == id) {
            self.dp.set_service_entry(&frag.key, self.model.fragment_value(live))?;
        }
        Ok(())
    }

    /// Points every fragment entry at its service's live table.
    fn write_fragments(&mut self) -> Result<()> {
        for frag in &self.model.fragments {
            let Some(svc) = self.model.service(frag.service) else { continue };
            if let Some(live) = self.dp.service_entry(&svc.key) {
                self.dp.set_service_entry(&frag.key, self.model.fragment_value(live))?;
            }
        }
        Ok(())
    }

    /// Drops service entries the model does not have (a removed service, a fragment entry that
    /// moved, what an earlier agent left).
    fn remove_stale_services(&mut self) -> Result<()> {
        let wanted: Vec<_> = self
            .model
            .services
            .iter()
            .map(|s| s.key)
            .chain(self.model.fragments.iter().map(|f| f.key))
            .collect();
        for key in self.dp.service_keys() {
            if !wanted.contains(&key) {
                self.dp.remove_service(&key)?;
            }
        }
        Ok(())
    }

    /// Takes in a neighbour entry; returns the backends whose MAC changed.
    pub(super) fn learn(&mut self, n: &Neighbour) -> Vec<u32> {
        let mut changed = Vec::new();
        for (slot, b) in &self.model.backends {
            let Some(state) = self.backends.get_mut(slot) else { continue };
            if state.next_hop != Some(n.address) || state.ifindex != n.ifindex {
                continue;
            }
            state.confirmed = n.confirmed();
            // A deleted or failed entry keeps the last MAC: forwarding goes on, and health
            // checks, not ARP, decide whether a backend is alive.
            if let Some(mac) = n.mac {
                if state.mac != Some(mac) {
                    info!(
                        "backend {}{} is at {} on {} (was {})",
                        b.address(),
                        if n.address == b.address() { String::new() } else { format!(" (next hop {})", n.address) },
                        format_mac(&mac),
                        state.ifname,
                        state.mac.as_ref().map(format_mac).unwrap_or_else(|| "unknown".into())
                    );
                    state.mac = Some(mac);
                    changed.push(*slot);
                }
            }
        }
        changed
    }

    pub(super) fn apply_neighbour(&mut self, n: &Neighbour) -> Result<()> {
        let changed = self.learn(n);
        self.rewrite_backends(changed)
    }

    /// Writes the entries of backends whose MAC or place changed, then their services'
    /// tables (each once).
    pub(super) fn rewrite_backends(&mut self, mut slots: Vec<u32>) -> Result<()> {
        slots.sort_unstable();
        slots.dedup();
        let mut services: Vec<u32> = Vec::new();
        for slot in &slots {
            self.write_backend(*slot)?;
            services.extend(self.model.backend(*slot).map(|b| b.service));
        }
        services.sort_unstable();
        services.dedup();
        for id in services {
            self.publish(id)?;
        }
        Ok(())
    }
}
