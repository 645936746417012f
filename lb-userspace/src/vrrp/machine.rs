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
//! - Such answers (to a lower-priority master, and to a master resigning with priority 0) are
//!   rate-limited: at most one per advert interval, the others counted ([`Answers`]). A flood
//!   of forged lower-priority adverts would otherwise make the master send an advert and a
//!   gratuitous ARP / NA burst for each; one per interval keeps the healing prompt.

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

/// What a master answered at once, out of its advert timetable (see the module
/// documentation), and what it left out under the rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Answers {
    pub sent: u64,
    /// Answers not sent: one went out less than an advert interval before.
    pub suppressed: u64,
    /// Of those, the ones that would have announced the addresses again (a burst each).
    pub announcements_suppressed: u64,
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
    /// When the last answer went out (the rate limit's clock).
    last_answer: Option<Instant>,
    answers: Answers,
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
            last_answer: None,
            answers: Answers::default(),
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

    /// The answers sent and suppressed so far.
    pub fn answers(&self) -> Answers {
        self.answers
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
                    // RFC 5798 6.4.3: send an advert and reset Adver_Timer.
                    return self.answer(now, false);
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
                    self.answer(now, true)
                }
            }
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    /// A master's answer: an advert now (Adver_Timer restarts from it) and, with `announce`,
    /// the addresses announced again; nothing, and counted, when the last answer went out
    /// less than an advert interval ago.
    fn answer(&mut self, now: Instant, announce: bool) -> Vec<Action> {
        if self.last_answer.is_some_and(|t| now < t + self.params.advert_interval) {
            self.answers.suppressed += 1;
            self.answers.announcements_suppressed += u64::from(announce);
            return Vec::new();
        }
        self.last_answer = Some(now);
        self.answers.sent += 1;
        self.adver_timer = Some(now + self.params.advert_interval);
        let mut actions = vec![Action::SendAdvert { priority: self.priority }];
        if announce {
            actions.push(Action::Announce);
        }
        actions
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
mod tests;
