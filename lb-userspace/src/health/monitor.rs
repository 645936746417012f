//! Runs a [`Checker`] on a thread of its own, so that nothing the agent's loop does (a long
//! flow-table purge, a burst of control requests) delays a check's start. Transitions go to
//! the agent over a channel; counters and start lateness are published for `xlb stats`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

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
    /// Per check, in spec order: how long its runs took.
    pub durations: Vec<super::Durations>,
}

pub struct Monitor {
    pub transitions: mpsc::Receiver<(CheckId, Transition)>,
    pub stats: Arc<Mutex<MonitorStats>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts checking `specs` now, on a thread of its own with a single-threaded runtime:
    /// a check's start, its socket's readiness and its outcome stay on one thread, with no
    /// hand-over between worker threads (which cost more than the checks themselves at 1000
    /// checks a second).
    pub fn spawn(specs: Vec<CheckSpec>) -> std::io::Result<Monitor> {
        let (tx, transitions) = mpsc::channel(1024);
        let stats = Arc::new(Mutex::new(MonitorStats::default()));
        let published = stats.clone();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("xlb-health".into()).spawn(move || {
            runtime.block_on(async move {
                let mut checker = Checker::new(specs, Instant::now());
                let mut lateness = Lateness::default();
                let mut publish = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
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
                                durations: (0..checker.len()).map(|id| checker.durations(id).clone()).collect(),
                            };
                            *published.lock().expect("not poisoned") = snapshot;
                        }
                    }
                }
            });
            // Dropping the runtime aborts runs in flight and kills their scripts.
        })?;
        Ok(Monitor { transitions, stats, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
