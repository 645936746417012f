use std::net::Ipv4Addr;

use super::*;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
const LOWER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
const HIGHER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 3));
const MS: Duration = Duration::from_millis(1);
/// The advert interval of [`params`].
const INTERVAL: Duration = Duration::from_millis(100);

fn params(priority: u8) -> Params {
    Params {
        version: 3,
        priority,
        advert_interval: INTERVAL,
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
    // Lower priority: the same (an advert interval later: answers are rate-limited).
    let a = m.advert(heard(HIGHER, 99), t + INTERVAL);
    assert_eq!(a, vec![Action::SendAdvert { priority: 100 }, Action::Announce]);
}

#[test]
fn a_master_answers_a_flood_of_lower_priority_adverts_once_per_interval() {
    let t0 = Instant::now();
    let mut m = master(params(100), t0);
    let start = t0 + Duration::from_secs(1);
    // 1000 adverts at priority 50 in one second, one every millisecond, between the
    // master's own timer ticks.
    let (mut answers, mut announces, mut periodic) = (0, 0, 0);
    let mut t = start;
    for _ in 0..1000 {
        if m.deadline().is_some_and(|d| d <= t) {
            periodic += m.tick(t).iter().filter(|a| matches!(a, Action::SendAdvert { .. })).count();
        }
        let a = m.advert(heard(LOWER, 50), t);
        answers += a.iter().filter(|a| matches!(a, Action::SendAdvert { priority: 100 })).count();
        announces += a.iter().filter(|a| **a == Action::Announce).count();
        t += MS;
    }
    assert_eq!(m.state(), State::Master);
    // One answer per 100 ms interval (each with its burst), and the timetable moved with
    // them: an advert interval after each answer, one periodic advert before the next.
    assert_eq!((answers, announces), (10, 10));
    assert!(periodic <= 10, "{periodic} periodic adverts");
    let counted = m.answers();
    assert_eq!(counted, Answers { sent: 10, suppressed: 990, announcements_suppressed: 990 });
    // A priority-0 advert counts against the same limit (no announcement then).
    let a = m.advert(heard(LOWER, 0), t);
    assert!(a.is_empty() || a == [Action::SendAdvert { priority: 100 }], "{a:?}");
    let t = t + INTERVAL;
    assert_eq!(m.advert(heard(LOWER, 0), t), vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(m.deadline(), Some(t + INTERVAL), "Adver_Timer restarts from the answer");
    assert!(m.advert(heard(LOWER, 0), t + INTERVAL - MS).is_empty());
    assert_eq!(m.answers().announcements_suppressed, 990, "a priority-0 answer carries no burst");
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
