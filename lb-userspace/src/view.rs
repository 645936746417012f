//! The status in two halves: a [`View`] of what the agent knows (the model, what it learnt of
//! each backend, its faults), which it rebuilds only when that changes, and the figures that
//! change all the time (map counters, health-check counts, flow counts, VRRP instances),
//! read when someone asks. `xlb stats` fills a fresh view on the agent's loop; the HTTP
//! listener fills the last published view on its own threads, with its own handles on the
//! pinned maps, so a scrape never waits for the loop nor makes it wait.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use lb_common::{stat, Counters};

use crate::{
    control::{CheckerStatus, Status},
    dataplane::DataplaneError,
    flowscan::Tally,
    health::MonitorStats,
    vrrp::status::SharedStatus,
};

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// When this process started serving (the first call wins; the agent calls it at start).
pub fn started() -> SystemTime {
    *STARTED.get_or_init(SystemTime::now)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// This node's host name, for the status.
pub fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Where the data plane's counters are read from: the agent's own maps, or handles on the
/// pinned ones.
pub trait CounterSource {
    fn service_counters(&self, id: u32) -> Result<Counters, DataplaneError>;
    fn backend_counters(&self, slot: u32) -> Result<Counters, DataplaneError>;
    /// The global counters, indexed by `lb_common::stat`.
    fn stats(&self) -> Result<Vec<u64>, DataplaneError>;
}

/// What the agent publishes.
#[derive(Clone)]
pub struct View {
    /// Everything but the live figures (counters zero, `vrrp` empty, check counts zero).
    pub status: Status,
    /// Per service, per backend in `status` order (members, then the sorry backend): the
    /// index of its health check in `monitor`'s counters.
    pub checks: Vec<Vec<Option<usize>>>,
    /// The health checker's counters (replaced when a reload restarts the checker).
    pub monitor: Arc<Mutex<MonitorStats>>,
    /// The flow scanner's last walk (none when it does not run).
    pub tally: Option<Arc<Mutex<Tally>>>,
    pub vrrp: Vec<SharedStatus>,
}

impl View {
    /// The full status: this view with the figures read now.
    pub fn fill(&self, counters: &dyn CounterSource) -> Result<Status, DataplaneError> {
        let mut status = self.status.clone();
        status.agent.started = unix(started());
        status.agent.uptime_seconds = unix(SystemTime::now()) - status.agent.started;
        let monitor = self.monitor.lock().map(|m| m.clone()).unwrap_or_default();
        let tally = self.tally.as_ref().map(|t| t.lock().map(|t| t.clone()).unwrap_or_default());
        status.counters = stat::NAMES.iter().map(|n| n.to_string()).zip(counters.stats()?).collect();
        for (s, svc) in status.services.iter_mut().enumerate() {
            svc.counters = counters.service_counters(svc.id)?.into();
            let backends = svc.backends.iter_mut().chain(svc.sorry.as_mut());
            for (i, b) in backends.enumerate() {
                let slot = b.slot;
                b.counters = counters.backend_counters(slot)?.into();
                if let Some(c) = self.checks[s][i].and_then(|c| monitor.counters.get(c)) {
                    b.checks = c.checks;
                    b.check_failures = c.failures;
                }
                b.flows = tally.as_ref().map(|t| t.per_backend.get(&slot).copied().unwrap_or(0));
            }
        }
        if let Some(t) = &tally {
            status.flows = t.entries;
            status.flows_expired = t.expired;
        }
        status.faults.check_local_errors = monitor.counters.iter().map(|c| c.local_errors).sum();
        status.vrrp = self.vrrp.iter().map(SharedStatus::snapshot).collect();
        status.checker = CheckerStatus {
            checks: status.checker.checks,
            late_max_ms: monitor.lateness.max.as_secs_f64() * 1e3,
            late_mean_ms: monitor.lateness.mean().as_secs_f64() * 1e3,
            starts: monitor.lateness.starts,
            skipped: monitor.skipped,
        };
        Ok(status)
    }
}
