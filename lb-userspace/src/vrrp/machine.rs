//! The VRRP state machine of RFC 5798 section 6.4 (and RFC 3768 for version 2), without I/O.
//!
//! The instance runner feeds it events (start-up, a valid advert, the clock, fault changes,
//! priority changes, shutdown) with the current time; it answers with [`Action`]s for the
//! runner to carry out and keeps its own timers, which the runner reads through
//! [`Machine::deadline`]. Nothing here sleeps, sends or reads the clock, so every transition
//! is unit-tested with made-up instants.
//!
//! Beyond the RFC, as keepalived does:
//! - FAULT: a tracked interface is down, a weight-0 track script fails, or the node's own data
//!   plane is not forwarding. A node in FAULT sends nothing and holds no address; leaving
//!   MASTER for FAULT sends a priority-0 advert first, so the backup takes over after its skew
//!   time instead of Master_Down_Interval.
//! - `preempt_delay`: for this long after start-up, and after a fault clears, a backup does
//!   not preempt a live master of lower priority.
//! - Split brain healing: a master that hears a lower-priority master (the other side of a
//!   healed partition, which did not see us) answers at once with an advert, so the other
//!   steps down now rather than at our next interval, and announces its addresses again
//!   (gratuitous ARP / unsolicited NA), since the other master's announcements may have
//!   moved the neighbours' caches. Whichever advert crosses first, the winner learns of the
//!   split: a master that steps down for a better one sends a last advert at its own
//!   priority (keepalived masters re-announce on it too).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

/// The RFC's states, plus keepalived's FAULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    /// Upper case, as keepalived passes it to notify scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What the runner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority (0 on shutdown and when leaving MASTER for FAULT).
    SendAdvert { priority: u8 },
    /// Add the virtual addresses (and the virtual MAC's interface) and announce them with a
    /// gratuitous ARP / unsolicited NA burst, repeated after the configured delay.
    TakeAddresses,
    /// Announce the addresses again (after a split brain healed), without re-adding them.
    Announce,
    /// Remove the virtual addresses.
    ReleaseAddresses,
    /// The state changed: log it, run notify scripts, count it.
    Transition { from: State, to: State, reason: Reason },
}

/// Why a transition happened (logged and shown in the status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Start-up as the address owner (priority 255).
    Owner,
    /// Start-up (or leaving FAULT) as a backup.
    Startup,
    /// No advert from a master for Master_Down_Interval.
    MasterDown,
    /// The master sent priority 0 (it is shutting down): we waited skew time only.
    MasterResigned,
    /// A master with higher priority (or equal priority and a higher address) is advertising.
    Preempted,
    /// The fault condition began or ended.
    Fault,
    FaultCleared,
    /// The agent is stopping.
    Shutdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Owner => "address owner (priority 255)",
            Reason::Startup => "start-up",
            Reason::MasterDown => "no advert within Master_Down_Interval",
            Reason::MasterResigned => "master sent priority 0",
            Reason::Preempted => "higher priority master advertising",
            Reason::Fault => "fault",
            Reason::FaultCleared => "fault cleared",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// The fixed parameters of one instance.
#[derive(Debug, Clone)]
pub struct Params {
    /// 2 or 3.
    pub version: u8,
    /// Configured priority, 1 ..= 255.
    pub priority: u8,
    /// Our Advertisement_Interval.
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Our primary address on the interface (IPv6: the link-local one): the tie-breaker.
    pub primary: IpAddr,
}

/// A valid advert as the machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub src: IpAddr,
    pub priority: u8,
    /// The advertised interval (v3; for v2 the runner passes the configured one).
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    /// Priority after tracking adjustments; `params.priority` when nothing adjusts it.
    priority: u8,
    /// Master_Adver_Interval: the master's interval as last heard (v3), else ours.
    master_interval: Duration,
    adver_timer: Option<Instant>,
    master_down_timer: Option<Instant>,
    /// Preemption is held off until then.
    preempt_after: Option<Instant>,
    faulted: bool,
    /// Source of the last advert that kept us in BACKUP, for the status.
    master: Option<IpAddr>,
    /// The running Master_Down_Timer was shortened to skew time by a priority-0 advert.
    master_down_after_resign: bool,
}

impl Machine {
    pub fn new(params: Params) -> Machine {
        Machine {
            priority: params.priority,
            master_interval: params.advert_interval,
            params,
            state: State::Initialize,
            adver_timer: None,
            master_down_timer: None,
            preempt_after: None,
            faulted: false,
            master: None,
            master_down_after_resign: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority we advertise now.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The master we last heard (BACKUP), or None.
    pub fn master(&self) -> Option<IpAddr> {
        if self.state == State::Master {
            Some(self.params.primary)
        } else {
            self.master
        }
    }

    pub fn master_interval(&self) -> Duration {
        self.master_interval
    }

    /// Skew_Time: RFC 5798 `((256 - Priority) * Master_Adver_Interval) / 256`; RFC 3768
    /// `(256 - Priority) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let base = if self.params.version == 2 { Duration::from_secs(1) } else { self.master_interval };
        base * (256 - u32::from(self.priority)) / 256
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        self.master_interval * 3 + self.skew_time()
    }

    /// When the runner must call [`Machine::tick`] next.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.adver_timer, self.master_down_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Startup event.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        self.preempt_after = (!self.params.preempt_delay.is_zero()).then(|| now + self.params.preempt_delay);
        if self.faulted {
            return self.enter(State::Fault, Reason::Fault, now);
        }
        self.initialize(now, Reason::Startup)
    }

    /// Leaves Initialize: master straight away as the address owner, else backup.
    fn initialize(&mut self, now: Instant, reason: Reason) -> Vec<Action> {
        if self.priority == 255 {
            self.enter(State::Master, Reason::Owner, now)
        } else {
            self.master_interval = self.params.advert_interval;
            self.enter(State::Backup, reason, now)
        }
    }

    /// Moves to `to`, setting the timers and producing the actions of the RFC's transition.
    fn enter(&mut self, to: State, reason: Reason, now: Instant) -> Vec<Action> {
        let from = self.state;
        let mut actions = Vec::new();
        if from == State::Master && to != State::Master {
            let resign = matches!(to, State::Fault | State::Initialize);
            if resign {
                actions.push(Action::SendAdvert { priority: 0 });
            }
            actions.push(Action::ReleaseAddresses);
        }
        self.state = to;
        self.adver_timer = None;
        self.master_down_timer = None;
        match to {
            State::Master => {
                self.master = None;
                actions.push(Action::SendAdvert { priority: self.priority });
                actions.push(Action::TakeAddresses);
                self.adver_timer = Some(now + self.params.advert_interval);
            }
            State::Backup => {
                self.master_down_after_resign = false;
                self.master_down_timer = Some(now + self.master_down_interval());
            }
            State::Fault | State::Initialize => self.master = None,
        }
        if from != to {
            actions.push(Action::Transition { from, to, reason });
        }
        actions
    }

    /// Timers: call at or after [`Machine::deadline`].
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Master if self.adver_timer.is_some_and(|t| t <= now) => {
                // From the deadline, not from now: a timer that fires a little late must not
                // stretch every interval after it (unless it is so late it missed one).
                let interval = self.params.advert_interval;
                let next = self.adver_timer.map(|t| t + interval).filter(|t| *t > now);
                self.adver_timer = Some(next.unwrap_or(now + interval));
                vec![Action::SendAdvert { priority: self.priority }]
            }
            State::Backup if self.master_down_timer.is_some_and(|t| t <= now) => {
                let reason = if self.master_down_after_resign { Reason::MasterResigned } else { Reason::MasterDown };
                self.enter(State::Master, reason, now)
            }
            _ => Vec::new(),
        }
    }

    /// A valid advert for our VRID.
    pub fn advert(&mut self, heard: Heard, now: Instant) -> Vec<Action> {
        match self.state {
            State::Backup => {
                if heard.priority == 0 {
                    self.master_down_timer = Some(now + self.skew_time());
                    self.master_down_after_resign = true;
                    return Vec::new();
                }
                let preempting = self.params.preempt && self.preempt_after.is_none_or(|t| t <= now);
                if !preempting || heard.priority >= self.priority {
                    if self.params.version == 3 {
                        self.master_interval = heard.interval;
                    }
                    self.master = Some(heard.src);
                    self.master_down_after_resign = false;
                    self.master_down_timer = Some(now + self.master_down_interval());
                }
                // Else: a lower-priority master and we preempt: let Master_Down_Timer run out.
                Vec::new()
            }
            State::Master => {
                if heard.priority == 0 {
                    self.adver_timer = Some(now + self.params.advert_interval);
                    return vec![Action::SendAdvert { priority: self.priority }];
                }
                let they_win = heard.priority > self.priority
                    || (heard.priority == self.priority && address_greater(heard.src, self.params.primary));
                if they_win {
                    if self.params.version == 3 {
                        self.master_interval = heard.interval;
                    }
                    // One last advert at our priority before stepping down: if this is a
                    // partition healing, the winner never heard us and would not know that
                    // neighbours may point at us; this tells it to announce itself again.
                    let mut actions = vec![Action::SendAdvert { priority: self.priority }];
                    actions.extend(self.enter(State::Backup, Reason::Preempted, now));
                    self.master = Some(heard.src);
                    actions
                } else {
                    // Another master that loses to us: it did not hear us (a partition healed).
                    // Answer now so it steps down, and re-announce our addresses.
                    self.adver_timer = Some(now + self.params.advert_interval);
                    vec![Action::SendAdvert { priority: self.priority }, Action::Announce]
                }
            }
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    /// The fault condition (tracked interface, weight-0 script, data plane) began or ended.
    pub fn set_fault(&mut self, faulted: bool, now: Instant) -> Vec<Action> {
        if faulted == self.faulted {
            return Vec::new();
        }
        self.faulted = faulted;
        match (faulted, self.state) {
            (true, State::Initialize) => Vec::new(),
            (true, _) => self.enter(State::Fault, Reason::Fault, now),
            (false, State::Fault) => {
                // Back from a fault (a link flap, the data plane restored): hold preemption
                // off again, as after start-up.
                self.preempt_after = (!self.params.preempt_delay.is_zero()).then(|| now + self.params.preempt_delay);
                self.initialize(now, Reason::FaultCleared)
            }
            (false, _) => Vec::new(),
        }
    }

    /// Tracking moved the effective priority (clamped by the runner to 1 ..= 254, or 255 for
    /// the owner). A master advertises the new value at once, so a backup that now outranks
    /// it preempts without waiting for the next interval.
    pub fn set_priority(&mut self, priority: u8, now: Instant) -> Vec<Action> {
        if priority == self.priority {
            return Vec::new();
        }
        self.priority = priority;
        match self.state {
            State::Master => {
                self.adver_timer = Some(now + self.params.advert_interval);
                vec![Action::SendAdvert { priority }]
            }
            _ => Vec::new(),
        }
    }

    /// Shutdown event: a master resigns with a priority-0 advert and releases the addresses.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        self.enter(State::Initialize, Reason::Shutdown, now)
    }
}

/// RFC 5798 6.4.3: at equal priority the sender with the greater primary address wins.
fn address_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a > b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a > b,
        // Mixed families never meet in one instance.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
    const LOWER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    const HIGHER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 3));
    const MS: Duration = Duration::from_millis(1);

    fn params(priority: u8) -> Params {
        Params {
            version: 3,
            priority,
            advert_interval: Duration::from_millis(100),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary: ME,
        }
    }

    fn heard(src: IpAddr, priority: u8) -> Heard {
        Heard { src, priority, interval: Duration::from_millis(100) }
    }

    fn transition(actions: &[Action]) -> Option<(State, State, Reason)> {
        actions.iter().find_map(|a| match a {
            Action::Transition { from, to, reason } => Some((*from, *to, *reason)),
            _ => None,
        })
    }

    /// Runs the clock from `from` to `to` in 1 ms steps, calling tick at every deadline.
    fn run(m: &mut Machine, from: Instant, to: Instant) -> Vec<(Instant, Vec<Action>)> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            if m.deadline().is_some_and(|d| d <= t) {
                out.push((t, m.tick(t)));
            }
            t += MS;
        }
        out
    }

    #[test]
    fn timers_follow_the_rfc() {
        // Priority 100, interval 1 s (v3): skew = 156/256 s = 609.375 ms; MDI = 3.609375 s.
        let mut p = params(100);
        p.advert_interval = Duration::from_secs(1);
        let m = Machine::new(p.clone());
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
        // v2: skew = (256 - priority) / 256 s whatever the interval.
        p.version = 2;
        p.advert_interval = Duration::from_secs(3);
        let m = Machine::new(p);
        assert_eq!(m.skew_time(), Duration::from_micros(609_375));
        assert_eq!(m.master_down_interval(), Duration::from_micros(9_609_375));
        // Priority 254 at 100 ms: skew 0.78125 ms.
        let m = Machine::new(params(254));
        assert_eq!(m.skew_time(), Duration::from_nanos(781_250));
    }

    #[test]
    fn startup_as_owner_is_master_at_once() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        let a = m.start(t0);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 255 },
                Action::TakeAddresses,
                Action::Transition { from: State::Initialize, to: State::Master, reason: Reason::Owner }
            ]
        );
        assert_eq!(m.deadline(), Some(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn backup_becomes_master_after_master_down_interval() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        let a = m.start(t0);
        assert_eq!(transition(&a), Some((State::Initialize, State::Backup, Reason::Startup)));
        assert!(!a.contains(&Action::TakeAddresses));
        let mdi = m.master_down_interval();
        assert_eq!(mdi, Duration::from_micros(300_000 + 60_937) + Duration::from_nanos(500));
        // Adverts from a higher-priority master keep resetting the timer.
        for i in 1..=10u32 {
            assert!(m.advert(heard(HIGHER, 200), t0 + Duration::from_millis(100) * i).is_empty());
        }
        let last = t0 + Duration::from_secs(1);
        assert_eq!(m.master(), Some(HIGHER));
        assert_eq!(m.deadline(), Some(last + mdi));
        let events = run(&mut m, last, last + Duration::from_secs(1));
        assert_eq!(events.len(), 7, "{events:?}"); // takeover at 361 ms, then adverts every 100 ms
        let (at, actions) = &events[0];
        assert_eq!(*at, last + Duration::from_millis(361));
        assert_eq!(actions[0], Action::SendAdvert { priority: 100 });
        assert_eq!(actions[1], Action::TakeAddresses);
        assert_eq!(transition(actions), Some((State::Backup, State::Master, Reason::MasterDown)));
        assert_eq!(events[1].1, vec![Action::SendAdvert { priority: 100 }]);
        assert_eq!(events[1].0 - events[0].0, Duration::from_millis(100));
    }

    #[test]
    fn a_masters_adverts_keep_their_period_when_its_timer_fires_late() {
        const FAST: Duration = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        m.start(t0);
        // Each tick handled 3 ms late: the deadlines stay on the 100 ms grid.
        for i in 1..=10u32 {
            let due = t0 + FAST * i;
            assert_eq!(m.deadline(), Some(due));
            assert_eq!(m.tick(due + Duration::from_millis(3)), vec![Action::SendAdvert { priority: 255 }]);
        }
        // Later than a whole interval: the next one is an interval from now.
        let late = t0 + FAST * 11 + Duration::from_millis(250);
        m.tick(late);
        assert_eq!(m.deadline(), Some(late + FAST));
    }

    #[test]
    fn priority_zero_means_takeover_after_skew_time() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        m.start(t0);
        m.advert(heard(HIGHER, 200), t0);
        let t1 = t0 + Duration::from_millis(50);
        assert!(m.advert(heard(HIGHER, 0), t1).is_empty());
        assert_eq!(m.deadline(), Some(t1 + m.skew_time()));
        let a = m.tick(t1 + m.skew_time());
        assert_eq!(transition(&a), Some((State::Backup, State::Master, Reason::MasterResigned)));
    }

    #[test]
    fn shutdown_of_master_sends_priority_zero_and_releases() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(255));
        m.start(t0);
        let a = m.shutdown(t0 + MS);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 0 },
                Action::ReleaseAddresses,
                Action::Transition { from: State::Master, to: State::Initialize, reason: Reason::Shutdown }
            ]
        );
        assert_eq!(m.deadline(), None);
        // A backup shutting down sends nothing.
        let mut b = Machine::new(params(100));
        b.start(t0);
        assert_eq!(transition(&b.shutdown(t0)), Some((State::Backup, State::Initialize, Reason::Shutdown)));
        assert!(!b.shutdown(t0).iter().any(|a| matches!(a, Action::SendAdvert { .. })));
    }

    fn master(p: Params, t0: Instant) -> Machine {
        let mut m = Machine::new(p);
        m.start(t0);
        let t = t0 + m.master_down_interval();
        assert_eq!(m.tick(t).len(), 3);
        assert_eq!(m.state(), State::Master);
        m
    }

    #[test]
    fn master_yields_to_higher_priority_and_to_higher_address_at_equal_priority() {
        let t0 = Instant::now();
        let mut m = master(params(100), t0);
        let t = t0 + Duration::from_secs(1);
        let a = m.advert(heard(LOWER, 101), t);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 100 },
                Action::ReleaseAddresses,
                Action::Transition { from: State::Master, to: State::Backup, reason: Reason::Preempted }
            ]
        );
        assert_eq!(m.master(), Some(LOWER));

        let mut m = master(params(100), t0);
        let a = m.advert(heard(HIGHER, 100), t);
        assert_eq!(transition(&a), Some((State::Master, State::Backup, Reason::Preempted)));

        // Equal priority, lower address: we stay, answer at once and re-announce.
        let mut m = master(params(100), t0);
        let a = m.advert(heard(LOWER, 100), t);
        assert_eq!(a, vec![Action::SendAdvert { priority: 100 }, Action::Announce]);
        assert_eq!(m.state(), State::Master);
        // Lower priority: the same.
        let a = m.advert(heard(HIGHER, 99), t);
        assert_eq!(a, vec![Action::SendAdvert { priority: 100 }, Action::Announce]);
    }

    #[test]
    fn backup_preempts_a_lower_master_unless_nopreempt() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(150));
        m.start(t0);
        let mdi = m.master_down_interval();
        // Lower-priority adverts do not reset the timer: we take over at MDI.
        for i in 1..=3u32 {
            m.advert(heard(HIGHER, 100), t0 + Duration::from_millis(100) * i);
        }
        assert_eq!(m.deadline(), Some(t0 + mdi));

        let mut p = params(150);
        p.preempt = false;
        let mut m = Machine::new(p);
        m.start(t0);
        let t = t0 + Duration::from_millis(300);
        m.advert(heard(HIGHER, 100), t);
        assert_eq!(m.deadline(), Some(t + m.master_down_interval()));
    }

    #[test]
    fn preempt_delay_holds_off_preemption_after_startup() {
        let t0 = Instant::now();
        let mut p = params(150);
        p.preempt_delay = Duration::from_secs(2);
        let mut m = Machine::new(p);
        m.start(t0);
        // Within the delay a lower master is obeyed ...
        let mut t = t0;
        while t < t0 + Duration::from_secs(2) {
            t += Duration::from_millis(100);
            assert!(m.advert(heard(HIGHER, 100), t).is_empty());
            assert!(m.tick(t).is_empty(), "took over at {:?}", t - t0);
        }
        // ... after it, preemption: the timer is no longer reset and runs out.
        let last_reset = m.deadline().unwrap();
        let end = t0 + Duration::from_secs(4);
        while t < end {
            t += Duration::from_millis(100);
            m.advert(heard(HIGHER, 100), t);
            m.tick(t);
        }
        assert_eq!(m.state(), State::Master);
        assert!(last_reset <= end);
    }

    #[test]
    fn preempt_delay_applies_again_after_a_fault() {
        let t0 = Instant::now();
        let mut p = params(150);
        p.preempt_delay = Duration::from_secs(2);
        let mut m = Machine::new(p);
        m.start(t0);
        let t1 = t0 + Duration::from_secs(10);
        m.set_fault(true, t1);
        m.set_fault(false, t1);
        // A lower master heard right after the fault cleared is obeyed for 2 s.
        let mut t = t1;
        while t < t1 + Duration::from_millis(1900) {
            t += Duration::from_millis(100);
            m.advert(heard(HIGHER, 100), t);
            assert!(m.tick(t).is_empty(), "preempted {:?} after the fault cleared", t - t1);
        }
    }

    #[test]
    fn backup_adopts_the_masters_interval_in_v3_only() {
        let t0 = Instant::now();
        let mut m = Machine::new(params(100));
        m.start(t0);
        m.advert(Heard { src: HIGHER, priority: 200, interval: Duration::from_millis(20) }, t0);
        assert_eq!(m.master_interval(), Duration::from_millis(20));
        assert_eq!(m.master_down_interval(), Duration::from_millis(60) + Duration::from_micros(12_187) + Duration::from_nanos(500));

        let mut p = params(100);
        p.version = 2;
        p.advert_interval = Duration::from_secs(1);
        let mut m = Machine::new(p);
        m.start(t0);
        m.advert(Heard { src: HIGHER, priority: 200, interval: Duration::from_secs(3) }, t0);
        assert_eq!(m.master_interval(), Duration::from_secs(1));
    }

    #[test]
    fn fault_from_master_resigns_and_recovery_starts_as_backup() {
        let t0 = Instant::now();
        let mut m = master(params(100), t0);
        let t = t0 + Duration::from_secs(1);
        let a = m.set_fault(true, t);
        assert_eq!(
            a,
            vec![
                Action::SendAdvert { priority: 0 },
                Action::ReleaseAddresses,
                Action::Transition { from: State::Master, to: State::Fault, reason: Reason::Fault }
            ]
        );
        assert_eq!(m.deadline(), None);
        // Adverts and time do nothing in FAULT.
        assert!(m.advert(heard(LOWER, 50), t).is_empty());
        assert!(m.tick(t + Duration::from_secs(10)).is_empty());
        assert!(m.set_fault(true, t).is_empty());
        let a = m.set_fault(false, t + Duration::from_secs(11));
        assert_eq!(transition(&a), Some((State::Fault, State::Backup, Reason::FaultCleared)));
        // A fault before start-up: start goes straight to FAULT.
        let mut m = Machine::new(params(100));
        assert!(m.set_fault(true, t0).is_empty());
        assert_eq!(transition(&m.start(t0)), Some((State::Initialize, State::Fault, Reason::Fault)));
    }

    #[test]
    fn priority_change_is_advertised_at_once_by_a_master() {
        let t0 = Instant::now();
        let mut m = master(params(100), t0);
        let t = t0 + Duration::from_secs(1);
        assert_eq!(m.set_priority(80, t), vec![Action::SendAdvert { priority: 80 }]);
        assert_eq!(m.priority(), 80);
        assert!(m.set_priority(80, t).is_empty());
        // A backup's lowered priority changes its skew.
        let mut b = Machine::new(params(200));
        b.start(t0);
        let before = b.skew_time();
        assert!(b.set_priority(100, t0).is_empty());
        assert!(b.skew_time() > before);
    }
}
