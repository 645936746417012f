//! What the control socket reports: the model, what the agent learnt, and the counters.

use lb_common::stat;

use super::{Agent, Result};
use crate::{
    control::{BackendStatus, CheckerStatus, ServiceStatus, Status},
    flowscan::{FlowScanner, Tally},
    health::MonitorStats,
    model::TableMode,
    net::format_mac,
    vrrp::Vrrp,
};

impl Agent {
    fn backend_status(&self, slot: u32, stats: &MonitorStats, tally: Option<&Tally>) -> Result<BackendStatus> {
        let b = &self.model.backends[&slot];
        let state = &self.backends[&slot];
        let counters = state.check.and_then(|c| stats.counters.get(c)).copied().unwrap_or_default();
        let service = self.model.service(b.service).map(|s| s.name.as_str()).unwrap_or("");
        Ok(BackendStatus {
            address: b.address().to_string(),
            runtime: self.runtime_note(service, b.address()),
            slot,
            weight: b.weight,
            mac: state.mac.as_ref().map(format_mac),
            interface: state.ifname.clone(),
            state: if state.mac.is_none() {
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
            checks: counters.checks,
            check_failures: counters.failures,
            transitions: state.transitions,
            counters: self.dp.backend_counters(slot)?.into(),
            flows: tally.map(|t| t.per_backend.get(&slot).copied().unwrap_or(0)),
        })
    }

    pub(super) fn status(&self) -> Result<Status> {
        let names = stat::NAMES.iter().map(|n| n.to_string());
        let counters = names.zip(self.dp.stats()?).collect();
        let stats = self.check_stats.lock().expect("not poisoned").clone();
        let tally = self.scanner.as_ref().map(FlowScanner::tally);
        let mut services = Vec::new();
        for svc in &self.model.services {
            let backends = svc.members.iter().map(|&slot| self.backend_status(slot, &stats, tally.as_ref())).collect::<Result<_>>()?;
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
                sorry: svc.sorry.map(|slot| self.backend_status(slot, &stats, tally.as_ref())).transpose()?,
                counters: self.dp.service_counters(svc.id)?.into(),
                backends,
            });
        }
        Ok(Status {
            faults: lb_common::status::FaultStatus {
                check_local_errors: stats.counters.iter().map(|c| c.local_errors).sum(),
                ..self.faults.clone()
            },
            runtime_changes: self.effective_changes().map(|c| c.to_string()).collect(),
            interfaces: self.attached.iter().map(|i| i.name.clone()).collect(),
            services,
            counters,
            flows: tally.as_ref().map_or_else(|| self.dp.flow_count(), |t| t.entries),
            flows_expired: tally.as_ref().map_or(0, |t| t.expired),
            vrrp: self.vrrp.as_ref().map(Vrrp::status).unwrap_or_default(),
            checker: CheckerStatus {
                checks: self.checked.len(),
                late_max_ms: stats.lateness.max.as_secs_f64() * 1e3,
                late_mean_ms: stats.lateness.mean().as_secs_f64() * 1e3,
                starts: stats.lateness.starts,
                skipped: stats.skipped,
            },
        })
    }
}
