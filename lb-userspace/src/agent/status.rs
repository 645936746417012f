//! What the agent reports: the [`View`] of what it knows (rebuilt from the model and what it
//! learnt, no map read), filled with the live figures when someone asks (`xlb stats` here,
//! on the loop; the HTTP listener on its own threads, from the view the agent published).

use std::sync::Arc;

use lb_common::status::{AgentInfo, TransitionCount};

use super::{Agent, Result};
use crate::{
    config::Forward,
    control::{BackendStatus, CheckerStatus, ServiceStatus, Status},
    health::Health,
    model::TableMode,
    net::format_mac,
    view::View,
};

impl Agent {
    /// A backend as the view shows it (live figures left at zero), and its check's index.
    fn backend_view(&self, slot: u32) -> (BackendStatus, Option<usize>) {
        let b = &self.model.backends[&slot];
        let state = &self.backends[&slot];
        let service = self.model.service(b.service).map(|s| s.name.as_str()).unwrap_or("");
        let status = BackendStatus {
            address: b.address().to_string(),
            runtime: self.runtime_note(service, b.address()),
            slot,
            weight: b.weight,
            mac: state.mac.as_ref().map(format_mac),
            interface: state.ifname.clone(),
            forward: match b.forward {
                Forward::Dr => "dr".into(),
                Forward::Ipip => "ipip".into(),
                Forward::Gue { port } => format!("gue:{port}"),
            },
            next_hop: state.next_hop.filter(|_| b.forward != Forward::Dr).map(|h| h.to_string()),
            state: if state.next_hop.is_none() {
                "no-route"
            } else if state.mac.is_none() {
                "no-mac"
            } else if !state.healthy {
                "down"
            } else if b.drained() {
                "drained"
            } else {
                "up"
            }
            .into(),
            health: match (state.check, state.healthy) {
                (None, _) => "unchecked",
                (Some(_), true) => "up",
                (Some(_), false) => "down",
            }
            .into(),
            reason: state.reason.clone(),
            transitions: state.transitions,
            transitions_by_reason: state
                .transitions_by
                .iter()
                .map(|((to, reason), &count)| TransitionCount {
                    to: if *to == Health::Up { "up" } else { "down" }.into(),
                    reason: reason.clone(),
                    count,
                })
                .collect(),
            ..Default::default()
        };
        (status, state.check)
    }

    /// What the agent knows now, without the live figures.
    pub(super) fn view(&self) -> View {
        let mut services = Vec::new();
        let mut checks = Vec::new();
        for svc in &self.model.services {
            let (backends, mut service_checks): (Vec<BackendStatus>, Vec<Option<usize>>) =
                svc.members.iter().map(|&slot| self.backend_view(slot)).unzip();
            let sorry = svc.sorry.map(|slot| self.backend_view(slot));
            if let Some((_, check)) = &sorry {
                service_checks.push(*check);
            }
            checks.push(service_checks);
            services.push(ServiceStatus {
                name: svc.name.clone(),
                id: svc.id,
                vip: svc.vip.to_string(),
                port: svc.port,
                protocol: svc.protocol.to_string(),
                scheduler: svc.scheduler.to_string(),
                mode: match self.modes.get(&svc.id).copied().unwrap_or(TableMode::Normal) {
                    TableMode::Normal => "normal",
                    TableMode::Sorry => "sorry",
                    TableMode::Degraded => "degraded",
                }
                .into(),
                quorum: svc.quorum,
                sorry: sorry.map(|(b, _)| b),
                counters: Default::default(),
                backends,
            });
        }
        View {
            status: Status {
                agent: AgentInfo {
                    version: env!("CARGO_PKG_VERSION").into(),
                    hostname: crate::view::hostname(),
                    flow_table_size: self.model.agent.flow_table_size,
                    ..Default::default()
                },
                faults: self.faults.clone(),
                runtime_changes: self.effective_changes().map(|c| c.to_string()).collect(),
                interfaces: self.attached.iter().map(|i| i.name.clone()).collect(),
                services,
                checker: CheckerStatus { checks: self.checked.len(), ..Default::default() },
                announce: self.announce.as_ref().map(|a| a.status()),
                ..Default::default()
            },
            checks,
            monitor: self.check_stats.clone(),
            tally: self.scanner.as_ref().map(|s| s.shared()),
            vrrp: self.vrrp.as_ref().map(|v| v.shared()).unwrap_or_default(),
        }
    }

    /// The full status, read now (the control socket's `xlb stats`).
    pub(super) fn status(&self) -> Result<Status> {
        let mut status = self.view().fill(&self.dp)?;
        if self.scanner.is_none() {
            status.flows = self.dp.flow_count();
        }
        Ok(status)
    }

    /// Publishes the view to the HTTP listener when it changed since the last time.
    pub(super) fn publish_view(&mut self) {
        let Some(tx) = &self.view_tx else { return };
        if !self.view_dirty && tx.borrow().status.faults == self.faults {
            return;
        }
        self.view_dirty = false;
        let view = Arc::new(self.view());
        if let Some(tx) = &self.view_tx {
            tx.send_replace(view);
        }
    }
}
