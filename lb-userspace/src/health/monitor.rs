//! Runs a [`Checker`] on a task of its own, so that nothing the agent's loop does (a long
//! flow-table purge, a burst of control requests) delays a check's start. Transitions go to
//! the agent over a channel; counters and start lateness are published for `xlb stats`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{CheckId, CheckSpec, Checker, Counters, Lateness, Transition};

/// What the checker task publishes about itself (refreshed every second).
#[derive(Clone, Debug, Default)]
pub struct MonitorStats {
    /// Per check, in spec order.
    pub counters: Vec<Counters>,
    /// Start lateness since the agent started.
    pub lateness: Lateness,
    /// Rounds skipped because the previous run was still going.
    pub skipped: u64,
}

pub struct Monitor {
    pub transitions: mpsc::Receiver<(CheckId, Transition)>,
    pub stats: Arc<Mutex<MonitorStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    /// Starts checking `specs` now.
    pub fn spawn(specs: Vec<CheckSpec>) -> Monitor {
        let (tx, transitions) = mpsc::channel(1024);
        let stats = Arc::new(Mutex::new(MonitorStats::default()));
        let published = stats.clone();
        let task = tokio::spawn(async move {
            let mut checker = Checker::new(specs, Instant::now());
            let mut lateness = Lateness::default();
            let mut publish = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    (id, transition) = checker.next_transition() => {
                        if tx.send((id, transition)).await.is_err() {
                            return;
                        }
                    }
                    _ = publish.tick() => {
                        lateness.merge(&checker.take_lateness());
                        let snapshot = MonitorStats {
                            counters: (0..checker.len()).map(|id| checker.health(id).counters()).collect(),
                            lateness,
                            skipped: checker.schedule().total_skipped(),
                        };
                        *published.lock().expect("not poisoned") = snapshot;
                    }
                }
            }
        });
        Monitor { transitions, stats, task }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // Dropping the checker with the task aborts runs in flight and kills their scripts.
        self.task.abort();
    }
}
