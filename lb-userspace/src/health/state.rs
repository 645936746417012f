//! The rise/fall state machine of one backend, and the outcomes it is fed.
//!
//! A backend is [`Health::Up`] or [`Health::Down`]. It flips only after `fall` consecutive
//! failed checks (Up to Down) or `rise` consecutive passed checks (Down to Up), as HAProxy's
//! `rise`/`fall` and keepalived's `retry` do; one outcome that agrees with the current state
//! resets the count. Between the first contrary outcome and the flip the backend is
//! *changing* ([`BackendHealth::is_changing`]), which is when the scheduler uses the fast
//! interval (HAProxy's `fastinter`).
//!
//! The count itself is [`RiseFall`], which knows only pass or fail: [`BackendHealth`] adds
//! the outcomes, times and counters around it, and VRRP's track scripts use it alone.
//!
//! Pure: no I/O, no clock. Time comes in as an argument.

use std::{fmt, time::Duration, time::Instant};

/// Whether a backend takes new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Health {
    Up,
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// Why a check failed, in words an operator reads in a log line or `xlb stats`.
///
/// `Display` gives the sentence (`"connect refused"`, `"timeout after 500 ms"`, `"HTTP 503"`,
/// `"body does not contain \"ok\""`, `"script exit 2"`, ...); the variants let code tell the
/// cases apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The backend answered the SYN with a RST: nothing listens on the port.
    #[error("connect refused")]
    ConnectRefused,
    /// The whole check (connect, request, reply, or script run) did not finish in time.
    #[error("timeout after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// No route to the backend's network (ENETUNREACH).
    #[error("network unreachable")]
    NetworkUnreachable,
    /// The backend's address did not resolve on the link, or an ICMP host unreachable came
    /// back (EHOSTUNREACH).
    #[error("host unreachable")]
    HostUnreachable,
    /// The backend reset the connection before the check was done.
    #[error("connection reset")]
    ConnectionReset,
    /// The HTTP status is not one of the accepted ones.
    #[error("HTTP {0}")]
    HttpStatus(u16),
    /// The HTTP body (its first [`super::probe::HTTP_BODY_CAP`] bytes) lacks the expected text.
    #[error("body does not contain {0:?}")]
    BodyMissing(String),
    /// The reply is not HTTP, or breaks off before its header ends.
    #[error("bad HTTP response: {0}")]
    BadHttp(String),
    /// An ICMP port unreachable came back for the UDP datagram.
    #[error("UDP port unreachable")]
    UdpUnreachable,
    /// No datagram came back before the timeout.
    #[error("no UDP reply")]
    NoUdpReply,
    /// Datagrams came back, but none contained the expected bytes.
    #[error("UDP reply does not contain the expected bytes")]
    UnexpectedUdpReply,
    /// The script exited with a non-zero status.
    #[error("script exit {0}")]
    ScriptExit(i32),
    /// The script was killed by a signal (not by the checker's timeout).
    #[error("script killed by signal {0}")]
    ScriptSignal(i32),
    /// The script could not be started (missing, not executable, ...).
    #[error("cannot run {0}")]
    ScriptStart(String),
    /// Any other I/O error, with what was being done: `"connect: Permission denied (os error 13)"`.
    #[error("{0}")]
    Io(String),
    /// The check failed on this node, not on the backend: no descriptor (EMFILE, ENFILE), no
    /// buffer or memory (ENOBUFS, ENOMEM), no source address (EADDRNOTAVAIL). Not a backend
    /// failure: counted apart, the backend's state does not change.
    #[error("local error: {0}")]
    Local(String),
    /// The check itself is unusable (empty command, bad HTTP path); configuration validation
    /// should have refused it.
    #[error("invalid check: {0}")]
    InvalidCheck(String),
    /// The check task ended without an outcome (it panicked or was cancelled).
    #[error("check did not complete: {0}")]
    Aborted(String),
}

impl Reason {
    /// Names an I/O error. The well-known network errors get their own variant; anything else
    /// becomes [`Reason::Io`] prefixed with `doing` (`"connect"`, `"reading HTTP response"`).
    pub fn from_io(e: &std::io::Error, doing: &str) -> Reason {
        use std::io::ErrorKind as K;
        if let Some(code) = e.raw_os_error() {
            if [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM, libc::EADDRNOTAVAIL].contains(&code) {
                return Reason::Local(format!("{doing}: {e}"));
            }
        }
        match e.kind() {
            K::ConnectionRefused => Reason::ConnectRefused,
            K::NetworkUnreachable => Reason::NetworkUnreachable,
            K::HostUnreachable => Reason::HostUnreachable,
            K::ConnectionReset | K::ConnectionAborted => Reason::ConnectionReset,
            _ => Reason::Io(format!("{doing}: {e}")),
        }
    }
}

impl Reason {
    /// Whether the failure is this node's (no route from here counts: the backend may be fine,
    /// this node cannot tell), not the backend's.
    pub fn is_local(&self) -> bool {
        matches!(self, Reason::Local(_) | Reason::NetworkUnreachable)
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(Reason),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The failure's reason, if any.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Outcome::Ok => None,
            Outcome::Failed(r) => Some(r),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Failed(r) => r.fmt(f),
        }
    }
}

/// A change of a backend's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: Health,
    /// For a fall, the last failed check's reason (`"connect refused"`); for a rise, how many
    /// checks passed in a row (`"2 checks passed"`).
    pub reason: String,
    /// When the deciding outcome was recorded.
    pub at: Instant,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.to, self.reason)
    }
}

/// How many consecutive contrary outcomes flip a backend. Both are at least 1 (a 0 is taken as 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Consecutive passed checks that bring a Down backend Up (HAProxy `rise`).
    pub rise: u32,
    /// Consecutive failed checks that take an Up backend Down (HAProxy `fall`; keepalived
    /// `retry` + 1).
    pub fall: u32,
}

impl Default for Params {
    /// HAProxy's defaults: `rise 2 fall 3`.
    fn default() -> Params {
        Params { rise: 2, fall: 3 }
    }
}

/// Per-backend counters, for `xlb stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Outcomes recorded.
    pub checks: u64,
    /// Of which failed.
    pub failures: u64,
    /// State changes.
    pub transitions: u64,
    /// Outcomes that were this node's errors, not the backend's: left out of rise/fall.
    pub local_errors: u64,
}

/// The rise/fall count: a state that flips after `params.fall` consecutive failures (Up to
/// Down) or `params.rise` consecutive passes (Down to Up); a result that agrees with the state
/// starts the count again.
#[derive(Clone, Copy, Debug)]
pub struct RiseFall {
    params: Params,
    state: Health,
    /// Consecutive results contrary to `state` (failures while Up, passes while Down).
    streak: u32,
    /// Until the first result: a single contrary result flips the state.
    provisional: bool,
}

impl RiseFall {
    /// Starts in `initial`; a `rise` or `fall` of 0 is taken as 1.
    pub fn new(params: Params, initial: Health) -> RiseFall {
        let params = Params { rise: params.rise.max(1), fall: params.fall.max(1) };
        RiseFall { params, state: initial, streak: 0, provisional: false }
    }

    /// Makes the next result decide on its own (see [`BackendHealth::first_check_decides`]).
    pub fn first_check_decides(mut self) -> RiseFall {
        self.provisional = true;
        self
    }

    /// Takes in whether a check passed; returns the new state when this result flips it.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        let provisional = std::mem::replace(&mut self.provisional, false);
        let contrary = match self.state {
            Health::Up => !ok,
            Health::Down => ok,
        };
        if !contrary {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = match (provisional, self.state) {
            (true, _) => 1,
            (false, Health::Up) => self.params.fall,
            (false, Health::Down) => self.params.rise,
        };
        if self.streak < needed {
            return None;
        }
        self.state = if ok { Health::Up } else { Health::Down };
        self.streak = 0;
        Some(self.state)
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Consecutive results contrary to the current state so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn params(&self) -> Params {
        self.params
    }
}

/// The health of one backend: its rise/fall count, its last outcome, and counters.
#[derive(Clone, Debug)]
pub struct BackendHealth {
    count: RiseFall,
    last: Option<Outcome>,
    since: Option<Instant>,
    counters: Counters,
}

impl BackendHealth {
    /// A backend in state `initial` that flips after `params.rise` / `params.fall` contrary
    /// outcomes, the first check included.
    ///
    /// Which initial state to choose is the caller's policy: `Up` is keepalived's default (and
    /// the one that keeps traffic flowing across an agent restart); `Down` is keepalived's
    /// `alpha` (no traffic until the backend has passed `rise` checks).
    pub fn new(params: Params, initial: Health) -> BackendHealth {
        BackendHealth { count: RiseFall::new(params, initial), last: None, since: None, counters: Counters::default() }
    }

    /// Makes the first outcome decide on its own: a first failure takes an initially Up
    /// backend Down at once, a first pass brings an initially Down one Up at once; from the
    /// second outcome on, `rise` and `fall` apply. This is HAProxy's `init-state up` / `down`
    /// (as opposed to `fully-up` / `fully-down`, which [`BackendHealth::new`] alone gives).
    pub fn first_check_decides(mut self) -> BackendHealth {
        if self.counters.checks == 0 {
            self.count = self.count.first_check_decides();
        }
        self
    }

    /// Takes in one outcome; returns the transition it causes, if any.
    pub fn record(&mut self, outcome: &Outcome, now: Instant) -> Option<Transition> {
        if outcome.reason().is_some_and(Reason::is_local) {
            self.counters.local_errors += 1;
            self.last = Some(outcome.clone());
            return None;
        }
        self.counters.checks += 1;
        if !outcome.is_ok() {
            self.counters.failures += 1;
        }
        self.last = Some(outcome.clone());
        // A flip comes on a contrary outcome: the run so far and this one.
        let run = self.count.streak() + 1;
        let to = self.count.record(outcome.is_ok())?;
        let reason = match outcome {
            Outcome::Failed(r) => r.to_string(),
            Outcome::Ok => format!("{run} check{} passed", if run == 1 { "" } else { "s" }),
        };
        self.since = Some(now);
        self.counters.transitions += 1;
        Some(Transition { to, reason, at: now })
    }

    pub fn state(&self) -> Health {
        self.count.state()
    }

    pub fn is_up(&self) -> bool {
        self.state() == Health::Up
    }

    /// Whether the backend has had at least one outcome contrary to its state but not yet
    /// enough to flip: the scheduler then checks it at the fast interval.
    pub fn is_changing(&self) -> bool {
        self.count.streak() > 0
    }

    /// Consecutive outcomes contrary to the current state so far.
    pub fn streak(&self) -> u32 {
        self.count.streak()
    }

    pub fn params(&self) -> Params {
        self.count.params()
    }

    /// The last recorded outcome (`None` before the first check completes).
    pub fn last_outcome(&self) -> Option<&Outcome> {
        self.last.as_ref()
    }

    /// When the state last changed (`None` if it never did).
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(r: Reason) -> Outcome {
        Outcome::Failed(r)
    }

    #[test]
    fn reasons_read_as_documented() {
        let cases: Vec<(Reason, &str)> = vec![
            (Reason::ConnectRefused, "connect refused"),
            (Reason::Timeout(Duration::from_millis(500)), "timeout after 500 ms"),
            (Reason::Timeout(Duration::from_secs(2)), "timeout after 2000 ms"),
            (Reason::HttpStatus(503), "HTTP 503"),
            (Reason::BodyMissing("ok".into()), "body does not contain \"ok\""),
            (Reason::ScriptExit(2), "script exit 2"),
            (Reason::ScriptSignal(9), "script killed by signal 9"),
            (Reason::NoUdpReply, "no UDP reply"),
            (Reason::UdpUnreachable, "UDP port unreachable"),
            (Reason::NetworkUnreachable, "network unreachable"),
            (Reason::HostUnreachable, "host unreachable"),
            (Reason::ConnectionReset, "connection reset"),
            (Reason::UnexpectedUdpReply, "UDP reply does not contain the expected bytes"),
            (Reason::BadHttp("no status line".into()), "bad HTTP response: no status line"),
            (Reason::ScriptStart("/x: No such file".into()), "cannot run /x: No such file"),
            (Reason::InvalidCheck("empty command".into()), "invalid check: empty command"),
        ];
        for (r, text) in cases {
            assert_eq!(r.to_string(), text);
        }
        assert_eq!(Outcome::Ok.to_string(), "ok");
        assert_eq!(fail(Reason::HttpStatus(404)).to_string(), "HTTP 404");
    }

    #[test]
    fn io_errors_map_to_reasons() {
        use std::io::{Error, ErrorKind};
        assert_eq!(Reason::from_io(&Error::from(ErrorKind::ConnectionRefused), "connect"), Reason::ConnectRefused);
        assert_eq!(Reason::from_io(&Error::from(ErrorKind::NetworkUnreachable), "connect"), Reason::NetworkUnreachable);
        assert_eq!(Reason::from_io(&Error::from(ErrorKind::HostUnreachable), "connect"), Reason::HostUnreachable);
        assert_eq!(Reason::from_io(&Error::from(ErrorKind::ConnectionReset), "reading"), Reason::ConnectionReset);
        assert_eq!(
            Reason::from_io(&Error::from_raw_os_error(13), "connect").to_string(),
            "connect: Permission denied (os error 13)"
        );
    }

    #[test]
    fn up_falls_after_fall_consecutive_failures() {
        let t0 = Instant::now();
        let mut h = BackendHealth::new(Params { rise: 2, fall: 3 }, Health::Up);
        assert!(!h.is_changing());
        assert_eq!(h.record(&fail(Reason::ConnectRefused), t0), None);
        assert!(h.is_changing());
        assert_eq!(h.record(&fail(Reason::Timeout(Duration::from_millis(500))), t0), None);
        assert_eq!(h.streak(), 2);
        let at = t0 + Duration::from_secs(3);
        let t = h.record(&fail(Reason::HttpStatus(503)), at).expect("third failure falls");
        assert_eq!(t, Transition { to: Health::Down, reason: "HTTP 503".into(), at });
        assert_eq!(t.to_string(), "down: HTTP 503");
        assert_eq!(h.state(), Health::Down);
        assert!(!h.is_changing());
        assert_eq!(h.since(), Some(at));
        assert_eq!(h.counters(), Counters { checks: 3, failures: 3, transitions: 1, local_errors: 0 });
        // Further failures agree with Down: nothing changes.
        assert_eq!(h.record(&fail(Reason::ConnectRefused), at), None);
        assert!(!h.is_changing());
    }

    #[test]
    fn a_pass_resets_the_failure_run() {
        let t0 = Instant::now();
        let mut h = BackendHealth::new(Params { rise: 2, fall: 3 }, Health::Up);
        h.record(&fail(Reason::ConnectRefused), t0);
        h.record(&fail(Reason::ConnectRefused), t0);
        assert_eq!(h.record(&Outcome::Ok, t0), None);
        assert!(!h.is_changing());
        h.record(&fail(Reason::ConnectRefused), t0);
        h.record(&fail(Reason::ConnectRefused), t0);
        assert!(h.is_up());
        assert!(h.record(&fail(Reason::ConnectRefused), t0).is_some());
        assert_eq!(h.counters(), Counters { checks: 6, failures: 5, transitions: 1, local_errors: 0 });
    }

    #[test]
    fn down_rises_after_rise_consecutive_passes() {
        let t0 = Instant::now();
        let mut h = BackendHealth::new(Params { rise: 2, fall: 3 }, Health::Down);
        assert_eq!(h.record(&Outcome::Ok, t0), None);
        assert!(h.is_changing());
        // A failure in between starts the count again.
        assert_eq!(h.record(&fail(Reason::ConnectRefused), t0), None);
        assert!(!h.is_changing());
        assert_eq!(h.record(&Outcome::Ok, t0), None);
        let t = h.record(&Outcome::Ok, t0).expect("second pass rises");
        assert_eq!(t.to, Health::Up);
        assert_eq!(t.reason, "2 checks passed");
        assert!(h.is_up());
        assert_eq!(h.last_outcome(), Some(&Outcome::Ok));
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let t0 = Instant::now();
        let mut h = BackendHealth::new(Params { rise: 1, fall: 1 }, Health::Up);
        assert!(!h.is_changing());
        assert_eq!(h.record(&fail(Reason::NoUdpReply), t0).unwrap().reason, "no UDP reply");
        assert_eq!(h.record(&Outcome::Ok, t0).unwrap().reason, "1 check passed");
        assert_eq!(h.counters().transitions, 2);
    }

    #[test]
    fn zero_params_count_as_one() {
        let mut h = BackendHealth::new(Params { rise: 0, fall: 0 }, Health::Up);
        assert_eq!(h.params(), Params { rise: 1, fall: 1 });
        assert!(h.record(&fail(Reason::ConnectRefused), Instant::now()).is_some());
    }

    #[test]
    fn first_check_decides_then_rise_and_fall_apply() {
        let t0 = Instant::now();
        let mut up = BackendHealth::new(Params { rise: 2, fall: 3 }, Health::Up).first_check_decides();
        let t = up.record(&fail(Reason::ConnectRefused), t0).expect("first failure decides");
        assert_eq!((t.to, t.reason.as_str()), (Health::Down, "connect refused"));
        assert_eq!(up.record(&Outcome::Ok, t0), None, "now rise 2 applies");
        assert!(up.record(&Outcome::Ok, t0).is_some());

        let mut down = BackendHealth::new(Params { rise: 2, fall: 3 }, Health::Down).first_check_decides();
        assert_eq!(down.record(&Outcome::Ok, t0).unwrap().reason, "1 check passed");
        for _ in 0..2 {
            assert_eq!(down.record(&fail(Reason::ConnectRefused), t0), None, "now fall 3 applies");
        }
        assert!(down.record(&fail(Reason::ConnectRefused), t0).is_some());

        // A first outcome that agrees with the initial state ends the provisional period too.
        let mut ok = BackendHealth::new(Params { rise: 2, fall: 3 }, Health::Up).first_check_decides();
        assert_eq!(ok.record(&Outcome::Ok, t0), None);
        assert_eq!(ok.record(&fail(Reason::ConnectRefused), t0), None);
    }
}

#[cfg(test)]
mod local_error_tests {
    use super::*;

    /// EMFILE, ENOBUFS or no route from this node say nothing of the backend: they neither
    /// take it down nor break a run of passes or failures.
    #[test]
    fn local_errors_leave_the_state_alone() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let local = Outcome::Failed(Reason::from_io(&emfile, "connect"));
        assert!(matches!(local.reason(), Some(Reason::Local(m)) if m.contains("connect")), "{local:?}");
        let noroute = Outcome::Failed(Reason::from_io(&std::io::Error::from(std::io::ErrorKind::NetworkUnreachable), "connect"));
        let now = Instant::now();
        let mut h = BackendHealth::new(Params { rise: 2, fall: 2 }, Health::Up);
        for _ in 0..10 {
            assert_eq!(h.record(&local, now), None);
            assert_eq!(h.record(&noroute, now), None);
        }
        assert_eq!(h.state(), Health::Up);
        assert_eq!(h.counters().local_errors, 20);
        assert_eq!(h.counters().checks, 0);
        // A real failure still counts, and a local error between two does not reset the run.
        let refused = Outcome::Failed(Reason::ConnectRefused);
        assert_eq!(h.record(&refused, now), None);
        assert_eq!(h.record(&local, now), None);
        assert!(h.record(&refused, now).is_some_and(|t| t.to == Health::Down));
    }
}
