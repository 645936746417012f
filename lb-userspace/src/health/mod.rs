//! Active health checks: from this node to each backend's own address, as keepalived's
//! checkers (`TCP_CHECK`, `HTTP_GET`, `UDP_CHECK`, `MISC_CHECK`) and HAProxy's
//! `check inter 2s rise 2 fall 3 fastinter 500ms` do.
//!
//! Three layers, each usable alone:
//!
//! - [`state`]: [`BackendHealth`], the pure rise/fall state machine of one backend. It takes
//!   [`Outcome`]s and returns a [`Transition`] when the backend goes [`Health::Up`] or
//!   [`Health::Down`], with the operator-readable [`Reason`].
//! - [`schedule`]: [`Schedule`], the pure drift-free timetable of many checks: initial starts
//!   spread over the first interval, each next start on its own fixed grid, rounds skipped
//!   (and counted) while a run is still in flight, the fast interval while a backend is
//!   changing state, and start [`Lateness`] statistics.
//! - [`probe`]: the async probes (tokio) that produce outcomes: [`tcp_connect`],
//!   [`http_get`], [`udp_exchange`], [`script`]; [`run`] dispatches a [`CheckKind`] to them.
//!
//! [`Checker`] ties them together for the agent: one check per backend, run on the agent's
//! runtime, handing out transitions from a cancel-safe `async fn` that fits a `select!` loop.
//!
//! Checks go to the backend's own address (not the VIP). The XDP program only forwards
//! packets addressed to a configured VIP and port, so the checks and their replies take the
//! kernel's ordinary path. Tokio features used: `rt`, `macros`, `net`, `time`, `io-util`,
//! `process`.

pub mod monitor;
pub mod probe;
pub mod schedule;
pub mod state;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use tracing::debug;

pub use monitor::{Monitor, MonitorStats};

/// The checker wakes this long after the earliest due check and starts every check due by
/// then together: at 1000 checks a second one wake-up starts ten of them instead of one,
/// which is most of the checker's cost, for at most this much start lateness.
pub const START_SLACK: Duration = Duration::from_millis(10);
pub use probe::{http_get, script, script_as, tcp_connect, udp_exchange, HttpCheck};
pub use schedule::{CheckId, Intervals, Lateness, Schedule};
pub use state::{BackendHealth, Counters, Health, Outcome, Params, Reason, Transition};

/// What a check does. The target address and port come with each run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP handshake ([`tcp_connect`]).
    Tcp,
    /// An HTTP/1.1 GET ([`http_get`]).
    Http(HttpCheck),
    /// A datagram and its reply ([`udp_exchange`]): `expect`, if set, must be contained in
    /// the reply.
    Udp { payload: Vec<u8>, expect: Option<Vec<u8>> },
    /// A command, run without a shell ([`script`]), as `user` if set; exit 0 passes.
    Script { argv: Vec<String>, user: Option<String> },
}

impl CheckKind {
    /// A short name for logs and status: `tcp`, `http`, `udp`, `script`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(_) => "http",
            CheckKind::Udp { .. } => "udp",
            CheckKind::Script { .. } => "script",
        }
    }
}

/// Runs one check of `kind` against `target`, bounded by `timeout`.
pub async fn run(kind: &CheckKind, target: SocketAddr, timeout: Duration) -> Outcome {
    match kind {
        CheckKind::Tcp => tcp_connect(target, timeout).await,
        CheckKind::Http(check) => http_get(target, check, timeout).await,
        CheckKind::Udp { payload, expect } => udp_exchange(target, payload, expect.as_deref(), timeout).await,
        CheckKind::Script { argv, user } => script_as(argv, user.as_deref(), target, timeout).await,
    }
}

/// One backend's check, as the agent configures it.
#[derive(Clone, Debug)]
pub struct CheckSpec {
    pub kind: CheckKind,
    /// The backend's own address and the port to check.
    pub target: SocketAddr,
    /// Bounds each run; best below the fast interval, or rounds get skipped.
    pub timeout: Duration,
    pub intervals: Intervals,
    pub params: Params,
    pub initial: Health,
    /// See [`BackendHealth::first_check_decides`].
    pub first_check_decides: bool,
}

struct Check {
    kind: Arc<CheckKind>,
    target: SocketAddr,
    timeout: Duration,
    health: BackendHealth,
    durations: Durations,
}

/// Upper bounds of [`Durations`]' buckets, in seconds (Prometheus' default buckets, 1 ms to
/// 10 s).
pub const DURATION_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// How long a check's runs took, from the probe's start to its outcome: a histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Durations {
    /// Runs per bucket of [`DURATION_BUCKETS`] (not cumulative); the last counts what took
    /// longer than every bound.
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub count: u64,
    /// Seconds, summed.
    pub sum: f64,
}

impl Durations {
    pub fn record(&mut self, took: Duration) {
        let s = took.as_secs_f64();
        let i = DURATION_BUCKETS.iter().position(|&b| s <= b).unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += s;
    }

    /// Adds `other`'s runs to these.
    pub fn merge(&mut self, other: &Durations) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    /// (upper bound, runs in that bucket and above the previous bound), the form
    /// prometheus-client's encoder takes (it writes them cumulated); the last bound is +Inf.
    pub fn per_bound(&self) -> Vec<(f64, u64)> {
        DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]).zip(self.buckets).collect()
    }
}

/// Runs a fixed set of checks on the current tokio runtime, one task per run, and reports
/// health transitions.
///
/// Drive it with [`Checker::next_transition`], typically as one branch of the agent's
/// `select!` loop. Dropping the checker aborts the runs in flight (and kills their scripts).
pub struct Checker {
    checks: Vec<Check>,
    schedule: Schedule,
    running: JoinSet<(Instant, Outcome)>,
    tasks: HashMap<tokio::task::Id, CheckId>,
    /// Lateness of the probes' actual starts (inside their tasks).
    started: Lateness,
}

impl Checker {
    /// Checks `specs` (check `i` is `specs[i]`), the first runs spread over their first
    /// interval from `start`.
    pub fn new(specs: Vec<CheckSpec>, start: Instant) -> Checker {
        let schedule = Schedule::new(start, specs.iter().map(|s| s.intervals));
        let checks = specs
            .into_iter()
            .map(|s| {
                let health = BackendHealth::new(s.params, s.initial);
                let health = if s.first_check_decides { health.first_check_decides() } else { health };
                Check { kind: Arc::new(s.kind), target: s.target, timeout: s.timeout, health, durations: Durations::default() }
            })
            .collect();
        Checker { checks, schedule, running: JoinSet::new(), tasks: HashMap::new(), started: Lateness::default() }
    }

    pub fn len(&self) -> usize {
        self.checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Check `id`'s backend state, last outcome and counters.
    pub fn health(&self, id: CheckId) -> &BackendHealth {
        &self.checks[id].health
    }

    /// How long check `id`'s runs took.
    pub fn durations(&self, id: CheckId) -> &Durations {
        &self.checks[id].durations
    }

    pub fn target(&self, id: CheckId) -> SocketAddr {
        self.checks[id].target
    }

    /// The timetable: skipped rounds, intervals in use, lateness as handed out.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Lateness of the probes' actual starts against their schedule, since the last
    /// [`Checker::take_lateness`].
    pub fn lateness(&self) -> Lateness {
        self.started
    }

    /// Returns [`Checker::lateness`] and starts a new period.
    pub fn take_lateness(&mut self) -> Lateness {
        self.schedule.take_lateness();
        std::mem::take(&mut self.started)
    }

    /// Runs checks as they come due until one causes a transition, and returns it. Never
    /// returns for an empty checker.
    ///
    /// Cancel-safe: dropping the future loses nothing (runs in flight go on, and their
    /// outcomes are taken in by the next call), so it can be a `select!` branch.
    pub async fn next_transition(&mut self) -> (CheckId, Transition) {
        loop {
            self.start_due(Instant::now());
            let due = self.schedule.next_due();
            let sleep = async move {
                match due {
                    Some(due) => tokio::time::sleep_until((due + START_SLACK).into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(done) = self.running.join_next_with_id() => {
                    let (id, started, outcome) = match done {
                        Ok((task, (started, outcome))) => (self.tasks.remove(&task), Some(started), outcome),
                        Err(e) => (self.tasks.remove(&e.id()), None, Outcome::Failed(Reason::Aborted(e.to_string()))),
                    };
                    let Some(id) = id else { continue };
                    if let Some(transition) = self.take_outcome(id, started, outcome) {
                        return (id, transition);
                    }
                }
                _ = sleep => {}
            }
        }
    }

    fn start_due(&mut self, now: Instant) {
        for id in self.schedule.pop_due(now) {
            let check = &self.checks[id];
            let (kind, target, timeout) = (check.kind.clone(), check.target, check.timeout);
            let task = self.running.spawn(async move {
                let started = Instant::now();
                (started, run(&kind, target, timeout).await)
            });
            self.tasks.insert(task.id(), id);
        }
    }

    fn take_outcome(&mut self, id: CheckId, started: Option<Instant>, outcome: Outcome) -> Option<Transition> {
        let now = Instant::now();
        if let (Some(started), Some(scheduled)) = (started, self.schedule.run_scheduled(id)) {
            self.started.record(started.saturating_duration_since(scheduled));
        }
        let check = &mut self.checks[id];
        if let Some(started) = started {
            check.durations.record(now.saturating_duration_since(started));
        }
        if let Outcome::Failed(reason) = &outcome {
            debug!("{} check of {}: {reason}", check.kind.name(), check.target);
        }
        let transition = check.health.record(&outcome, now);
        self.schedule.completed(id, now, check.health.is_changing());
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpSocket};

    #[test]
    fn durations_fall_in_their_buckets_and_add_up() {
        let mut d = Durations::default();
        for ms in [0, 1, 2, 30, 30, 20_000] {
            d.record(Duration::from_millis(ms));
        }
        let c = d.per_bound();
        assert_eq!(c.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(c[0], (0.001, 2)); // 0 and 1 ms: the bound is inclusive
        assert_eq!(c[1], (0.0025, 1));
        assert_eq!(c[4], (0.025, 0));
        assert_eq!(c[5], (0.05, 2));
        assert_eq!(c[DURATION_BUCKETS.len()], (f64::INFINITY, 1));
        assert_eq!(d.count, 6);
        assert!((d.sum - 20.063).abs() < 1e-9);
        let mut total = d.clone();
        total.merge(&d);
        assert_eq!(total.count, 12);
        assert_eq!(total.per_bound()[5].1, 4);
    }

    fn tcp_spec(target: SocketAddr, intervals: Intervals, params: Params, initial: Health) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Tcp,
            target,
            timeout: Duration::from_millis(100),
            intervals,
            params,
            initial,
            first_check_decides: false,
        }
    }

    fn reusable_listener(addr: SocketAddr) -> TcpListener {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        socket.listen(1024).unwrap()
    }

    #[tokio::test]
    async fn run_dispatches_to_the_probes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let t = Duration::from_millis(200);
        assert_eq!(run(&CheckKind::Tcp, addr, t).await, Outcome::Ok);
        let script = CheckKind::Script { argv: vec!["sh".into(), "-c".into(), "exit 3".into()], user: None };
        assert_eq!(run(&script, addr, t).await, Outcome::Failed(Reason::ScriptExit(3)));
        let udp = CheckKind::Udp { payload: b"x".to_vec(), expect: None };
        assert_eq!(run(&udp, addr, t).await, Outcome::Failed(Reason::UdpUnreachable));
        drop(l);
        let http = CheckKind::Http(HttpCheck::new("/"));
        assert_eq!(run(&http, addr, t).await, Outcome::Failed(Reason::ConnectRefused));
        assert_eq!([CheckKind::Tcp.name(), http.name(), udp.name(), script.name()], ["tcp", "http", "udp", "script"]);
    }

    #[tokio::test]
    async fn checker_reports_a_backend_going_down_and_coming_back() {
        let listener = reusable_listener("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let intervals = Intervals::new(Duration::from_millis(200)).with_fast(Duration::from_millis(50));
        let spec = tcp_spec(addr, intervals, Params { rise: 2, fall: 2 }, Health::Up);
        let mut checker = Checker::new(vec![spec], Instant::now());
        let limit = Duration::from_secs(3);

        // Up and healthy: no transition for a while.
        let quiet = tokio::time::timeout(Duration::from_millis(500), checker.next_transition()).await;
        assert!(quiet.is_err(), "unexpected transition {quiet:?}");
        assert!(checker.health(0).counters().checks >= 2);

        drop(listener);
        let (id, down) = tokio::time::timeout(limit, checker.next_transition()).await.expect("goes down");
        assert_eq!((id, down.to, down.reason.as_str()), (0, Health::Down, "connect refused"));

        let _listener = reusable_listener(addr);
        let (_, up) = tokio::time::timeout(limit, checker.next_transition()).await.expect("comes back");
        assert_eq!((up.to, up.reason.as_str()), (Health::Up, "2 checks passed"));
        let c = checker.health(0).counters();
        assert_eq!(c.transitions, 2);
        assert!(c.failures >= 2);
        assert_eq!(checker.schedule().total_skipped(), 0);
    }

    #[tokio::test]
    async fn checker_first_check_decides() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let spec = CheckSpec {
            first_check_decides: true,
            ..tcp_spec(closed, Intervals::new(Duration::from_secs(10)), Params::default(), Health::Up)
        };
        let mut checker = Checker::new(vec![spec], Instant::now());
        let (_, t) = tokio::time::timeout(Duration::from_secs(1), checker.next_transition()).await.unwrap();
        assert_eq!(t.to, Health::Down);
        assert_eq!(checker.health(0).counters().checks, 1);
    }

    /// 1000 backends checked every second on one core (this test runs on a current-thread
    /// runtime): every check runs each round and stays up. How late they start is printed; the
    /// target (within 50 ms) is measured by `cargo xtask bench` (its health part), not asserted
    /// here, where a loaded machine would make it fail.
    #[tokio::test]
    async fn thousand_tcp_checks_a_second_all_run() {
        const N: usize = 1000;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                drop(s);
            }
        });
        let intervals = Intervals::new(Duration::from_secs(1)).with_fast(Duration::from_millis(250));
        let specs = vec![tcp_spec(addr, intervals, Params::default(), Health::Up); N];
        let mut checker = Checker::new(specs, Instant::now());
        let end = tokio::time::Instant::now() + Duration::from_millis(3500);
        tokio::select! {
            (id, t) = checker.next_transition() => panic!("check {id}: unexpected {t}"),
            _ = tokio::time::sleep_until(end) => {}
        }
        let late = checker.lateness();
        eprintln!(
            "{} starts: max lateness {:?}, mean {:?}; skipped {}",
            late.starts,
            late.max,
            late.mean(),
            checker.schedule().total_skipped()
        );
        for id in 0..N {
            let h = checker.health(id);
            assert!(h.counters().checks >= 2, "check {id} ran {} times in 3.5 s", h.counters().checks);
            assert!(h.is_up() && h.counters().failures == 0, "check {id}: {:?}", h.last_outcome());
        }
    }
}
