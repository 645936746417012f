//! When each check runs: a drift-free timetable for many checks on one thread.
//!
//! Every check has its own grid of start times. The next start is the previous *scheduled*
//! start plus the interval, never the completion time plus the interval, so a check at 1 s
//! runs at exactly `first + k * 1 s` however long its runs take and however late the runner
//! wakes up: lateness does not accumulate into drift.
//!
//! - **Spread.** [`Schedule::new`] places the first starts evenly over each check's first
//!   interval (check `i` of `n` at `start + interval * i / n`), deterministically, so 1000
//!   checks at 1 s start one per millisecond rather than in one burst.
//! - **No stacking.** A round that comes due while the check's previous run is still in
//!   flight is skipped and counted ([`Schedule::skipped`]); the check keeps its grid and runs
//!   at the first round after it completes. After a stall of the runner (a check due
//!   several rounds ago and not in flight), the check runs once, late, and the rounds it
//!   missed are counted as skipped.
//! - **Fast interval.** While the backend is *changing* (an outcome contrary to its state,
//!   not yet enough to flip it; see [`super::BackendHealth::is_changing`]) the check runs at
//!   its fast interval (HAProxy's `fastinter`), otherwise at its normal one. The caller says
//!   which on [`Schedule::completed`]; the grid then continues from the last scheduled round
//!   with the new interval.
//!
//! Pure: no clock, no I/O. Time comes in as arguments, so tests run on synthetic `Instant`s.

use std::{collections::BTreeSet, time::Duration, time::Instant};

/// Index of a check in its [`Schedule`]: `0..len`, in the order given to [`Schedule::new`].
pub type CheckId = usize;

/// A check's normal and fast intervals. Both are at least [`Intervals::MIN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    normal: Duration,
    fast: Duration,
}

impl Intervals {
    /// The shortest interval: shorter ones (0 included) are raised to it.
    pub const MIN: Duration = Duration::from_millis(1);

    /// Checks every `normal`, also while the backend is changing.
    pub fn new(normal: Duration) -> Intervals {
        let normal = normal.max(Self::MIN);
        Intervals { normal, fast: normal }
    }

    /// Checks every `fast` while the backend is changing (HAProxy `fastinter`).
    pub fn with_fast(self, fast: Duration) -> Intervals {
        Intervals { fast: fast.max(Self::MIN), ..self }
    }

    pub fn normal(&self) -> Duration {
        self.normal
    }

    pub fn fast(&self) -> Duration {
        self.fast
    }

    /// The interval to use: fast while changing, normal otherwise.
    pub fn pick(&self, changing: bool) -> Duration {
        if changing {
            self.fast
        } else {
            self.normal
        }
    }
}

/// Start lateness statistics: how long after its scheduled time each run started.
///
/// [`Schedule`] keeps one, measured when [`Schedule::pop_due`] hands a run out; a runner can
/// keep its own, measured when the probe actually starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lateness {
    /// Runs measured.
    pub starts: u64,
    /// The largest lateness.
    pub max: Duration,
    /// The sum of all latenesses (for the mean).
    pub total: Duration,
}

impl Lateness {
    pub fn record(&mut self, late: Duration) {
        self.starts += 1;
        self.total += late;
        self.max = self.max.max(late);
    }

    /// The mean lateness (zero when nothing was measured).
    pub fn mean(&self) -> Duration {
        match self.starts {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.total.as_nanos() / n as u128) as u64),
        }
    }

    /// Adds another period's statistics to these.
    pub fn merge(&mut self, other: &Lateness) {
        self.starts += other.starts;
        self.total += other.total;
        self.max = self.max.max(other.max);
    }
}

#[derive(Clone, Debug)]
struct Slot {
    intervals: Intervals,
    /// Use the fast interval (the backend was changing at the last completion).
    fast: bool,
    /// The next scheduled round; `(due, id)` is in the queue.
    due: Instant,
    /// The latest round that came due (run or skipped): the grid continues from it.
    last_round: Option<Instant>,
    /// The scheduled time of the latest run started.
    run_scheduled: Option<Instant>,
    in_flight: bool,
    started: u64,
    skipped: u64,
}

/// The timetable of a fixed set of checks. See the module documentation.
#[derive(Clone, Debug)]
pub struct Schedule {
    slots: Vec<Slot>,
    /// Every check exactly once, by next due time.
    queue: BTreeSet<(Instant, CheckId)>,
    lateness: Lateness,
    skipped: u64,
}

/// `d * num / den`, exactly (to the nanosecond, rounding down).
fn scale(d: Duration, num: u128, den: u128) -> Duration {
    Duration::from_nanos((d.as_nanos() * num / den) as u64)
}

impl Schedule {
    /// A schedule with one check per element of `intervals`; check `i` of `n` first comes due
    /// at `start + intervals[i].normal() * i / n`.
    pub fn new(start: Instant, intervals: impl IntoIterator<Item = Intervals>) -> Schedule {
        let intervals: Vec<Intervals> = intervals.into_iter().collect();
        let n = intervals.len() as u128;
        let slots: Vec<Slot> = intervals
            .into_iter()
            .enumerate()
            .map(|(i, intervals)| Slot {
                intervals,
                fast: false,
                due: start + scale(intervals.normal, i as u128, n),
                last_round: None,
                run_scheduled: None,
                in_flight: false,
                started: 0,
                skipped: 0,
            })
            .collect();
        let queue = slots.iter().enumerate().map(|(id, s)| (s.due, id)).collect();
        Schedule { slots, queue, lateness: Lateness::default(), skipped: 0 }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// When the earliest round comes due (`None` for an empty schedule). A runner sleeps
    /// until then and calls [`Schedule::pop_due`]. Rounds of checks in flight count too: they
    /// are skipped when they come due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.first().map(|&(due, _)| due)
    }

    /// Takes every round due at `now` or before, in due order, and returns the checks to
    /// start now. Each returned check is in flight until [`Schedule::completed`]; rounds of
    /// checks already in flight are skipped and counted.
    pub fn pop_due(&mut self, now: Instant) -> Vec<CheckId> {
        let mut run = Vec::new();
        while let Some(&(due, id)) = self.queue.first() {
            if due > now {
                break;
            }
            self.queue.pop_first();
            let slot = &mut self.slots[id];
            let interval = slot.intervals.pick(slot.fast);
            // Further rounds of this check that are also due by `now` (after a stall of the
            // runner, or a run longer than the interval): all skipped, the grid kept.
            let behind = (now - due).as_nanos() / interval.as_nanos();
            let mut skipped = behind as u64;
            if slot.in_flight {
                skipped += 1;
            } else {
                slot.in_flight = true;
                slot.run_scheduled = Some(due);
                slot.started += 1;
                self.lateness.record(now - due);
                run.push(id);
            }
            slot.skipped += skipped;
            self.skipped += skipped;
            let last = due + scale(interval, behind, 1);
            slot.last_round = Some(last);
            slot.due = last + interval;
            self.queue.insert((slot.due, id));
        }
        run
    }

    /// Check `id`'s run finished at `now`; `changing` says whether its backend is now
    /// changing state (the next rounds then come at the fast interval). On a switch between
    /// the intervals the grid continues from the last scheduled round with the new interval,
    /// from its first point not before `now`.
    pub fn completed(&mut self, id: CheckId, now: Instant, changing: bool) {
        let slot = &mut self.slots[id];
        slot.in_flight = false;
        if slot.fast == changing {
            return;
        }
        slot.fast = changing;
        let Some(last) = slot.last_round else { return };
        let interval = slot.intervals.pick(changing);
        let mut next = last + interval;
        if next < now {
            let rounds = (now - next).as_nanos().div_ceil(interval.as_nanos());
            next += scale(interval, rounds, 1);
        }
        if next != slot.due {
            self.queue.remove(&(slot.due, id));
            slot.due = next;
            self.queue.insert((next, id));
        }
    }

    /// When check `id` next comes due.
    pub fn due(&self, id: CheckId) -> Instant {
        self.slots[id].due
    }

    /// The scheduled time of check `id`'s latest run (the one in flight, if any).
    pub fn run_scheduled(&self, id: CheckId) -> Option<Instant> {
        self.slots[id].run_scheduled
    }

    pub fn in_flight(&self, id: CheckId) -> bool {
        self.slots[id].in_flight
    }

    pub fn intervals(&self, id: CheckId) -> Intervals {
        self.slots[id].intervals
    }

    /// Whether check `id` runs at its fast interval.
    pub fn is_fast(&self, id: CheckId) -> bool {
        self.slots[id].fast
    }

    /// Runs of check `id` started.
    pub fn started(&self, id: CheckId) -> u64 {
        self.slots[id].started
    }

    /// Rounds of check `id` skipped because its previous run was still in flight.
    pub fn skipped(&self, id: CheckId) -> u64 {
        self.slots[id].skipped
    }

    /// Rounds skipped, all checks together.
    pub fn total_skipped(&self) -> u64 {
        self.skipped
    }

    /// Start lateness of every run handed out so far (measured at [`Schedule::pop_due`]).
    pub fn lateness(&self) -> Lateness {
        self.lateness
    }

    /// Returns the lateness statistics and starts a new period.
    pub fn take_lateness(&mut self) -> Lateness {
        std::mem::take(&mut self.lateness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{cmp::Reverse, collections::BinaryHeap};

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    #[test]
    fn empty_schedule_has_nothing_due() {
        let mut s = Schedule::new(Instant::now(), Vec::new());
        assert!(s.is_empty());
        assert_eq!(s.next_due(), None);
        assert!(s.pop_due(Instant::now() + S).is_empty());
    }

    #[test]
    fn intervals_are_at_least_a_millisecond() {
        let i = Intervals::new(Duration::ZERO).with_fast(Duration::from_nanos(5));
        assert_eq!((i.normal(), i.fast()), (MS, MS));
        let i = Intervals::new(2 * S).with_fast(500 * MS);
        assert_eq!((i.pick(false), i.pick(true)), (2 * S, 500 * MS));
        assert_eq!(Intervals::new(S).fast(), S);
    }

    #[test]
    fn first_runs_are_spread_evenly_over_the_first_interval() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, vec![Intervals::new(S); 1000]);
        for id in 0..1000 {
            assert_eq!(s.due(id), t0 + MS * id as u32);
        }
        // Different intervals: each spread over its own.
        let s = Schedule::new(t0, vec![Intervals::new(S), Intervals::new(4 * S), Intervals::new(3 * S)]);
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(1), t0 + Duration::from_nanos(4_000_000_000 / 3));
        assert_eq!(s.due(2), t0 + 2 * S);
        assert_eq!(s.next_due(), Some(t0));
    }

    #[test]
    fn pop_due_hands_out_due_checks_in_order_and_keeps_the_grid() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, vec![Intervals::new(S); 4]); // due at 0, 250, 500, 750 ms
        assert_eq!(s.pop_due(t0 + 600 * MS), vec![0, 1, 2]);
        assert_eq!(s.next_due(), Some(t0 + 750 * MS));
        assert_eq!(s.run_scheduled(1), Some(t0 + 250 * MS));
        assert!(s.in_flight(1) && !s.in_flight(3));
        let late = s.lateness();
        assert_eq!((late.starts, late.max, late.mean()), (3, 600 * MS, 350 * MS));
        // Completion time does not move the grid.
        s.completed(0, t0 + 900 * MS, false);
        assert_eq!(s.due(0), t0 + S);
        assert_eq!(s.pop_due(t0 + S), vec![3, 0]);
        assert_eq!(s.take_lateness().starts, 5);
        assert_eq!(s.lateness(), Lateness::default());
    }

    #[test]
    fn a_round_due_while_in_flight_is_skipped_not_stacked() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, vec![Intervals::new(S)]);
        assert_eq!(s.pop_due(t0), vec![0]);
        assert!(s.pop_due(t0 + S).is_empty());
        assert!(s.pop_due(t0 + 2 * S).is_empty());
        assert_eq!(s.skipped(0), 2);
        s.completed(0, t0 + 2500 * MS, false);
        assert_eq!(s.next_due(), Some(t0 + 3 * S));
        assert_eq!(s.pop_due(t0 + 3 * S), vec![0]);
        assert_eq!(s.run_scheduled(0), Some(t0 + 3 * S));
        assert_eq!((s.started(0), s.skipped(0), s.total_skipped()), (2, 2, 2));
    }

    #[test]
    fn a_stalled_runner_runs_each_check_once_and_counts_the_missed_rounds() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, vec![Intervals::new(S)]);
        assert_eq!(s.pop_due(t0), vec![0]);
        s.completed(0, t0 + 5 * MS, false);
        // The runner wakes 9.5 s late: the round at 1 s runs, those at 2..=10 s are skipped.
        assert_eq!(s.pop_due(t0 + 10500 * MS), vec![0]);
        assert_eq!(s.run_scheduled(0), Some(t0 + S));
        assert_eq!(s.skipped(0), 9);
        assert_eq!(s.lateness().max, 9500 * MS);
        assert_eq!(s.due(0), t0 + 11 * S);
    }

    #[test]
    fn changing_backends_are_checked_at_the_fast_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, vec![Intervals::new(2 * S).with_fast(500 * MS)]);
        assert_eq!(s.pop_due(t0), vec![0]);
        assert_eq!(s.due(0), t0 + 2 * S);
        // First failure: the next round comes at the fast interval from the scheduled start.
        s.completed(0, t0 + 10 * MS, true);
        assert!(s.is_fast(0));
        assert_eq!(s.next_due(), Some(t0 + 500 * MS));
        assert_eq!(s.pop_due(t0 + 500 * MS), vec![0]);
        s.completed(0, t0 + 510 * MS, true);
        assert_eq!(s.due(0), t0 + S);
        assert_eq!(s.pop_due(t0 + S), vec![0]);
        // Settled (flipped, or back to agreeing): normal interval again, from the last round.
        s.completed(0, t0 + S + 10 * MS, false);
        assert!(!s.is_fast(0));
        assert_eq!(s.due(0), t0 + 3 * S);
        assert_eq!(s.next_due(), Some(t0 + 3 * S));
        assert_eq!(s.total_skipped(), 0);
    }

    #[test]
    fn switching_to_fast_after_a_long_run_continues_the_grid_from_now() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, vec![Intervals::new(2 * S).with_fast(500 * MS)]);
        assert_eq!(s.pop_due(t0), vec![0]);
        // The run took 800 ms (a timeout): the fast grid's point at 500 ms is past, so the
        // next round is at 1 s.
        s.completed(0, t0 + 800 * MS, true);
        assert_eq!(s.due(0), t0 + S);
        // Exactly on a grid point: that point is kept.
        let mut s = Schedule::new(t0, vec![Intervals::new(2 * S).with_fast(500 * MS)]);
        s.pop_due(t0);
        s.completed(0, t0 + S, true);
        assert_eq!(s.due(0), t0 + S);
        assert_eq!(s.pop_due(t0 + S), vec![0]);
        assert_eq!(s.lateness().max, Duration::ZERO);
    }

    /// Rounds `t` up to the runner's next timer tick (ticks at `t0 + phase + k * tick`).
    fn next_tick(t: Instant, t0: Instant, phase: Duration, tick: Duration) -> Instant {
        let base = t0 + phase;
        if t <= base {
            return base;
        }
        let k = (t - base).as_nanos().div_ceil(tick.as_nanos());
        base + scale(tick, k, 1)
    }

    /// 1000 checks at 1 s for 60 simulated seconds on one simulated core: the runner wakes on
    /// 1 ms timer ticks, spends 20 us starting each check and 5 us taking in each completion,
    /// and every run takes 5 ms.
    #[test]
    fn thousand_checks_at_one_second_for_a_minute() {
        const N: usize = 1000;
        const ROUNDS: usize = 60;
        let tick = MS;
        let phase = Duration::from_micros(300);
        let run_time = 5 * MS;
        let start_cost = Duration::from_micros(20);
        let done_cost = Duration::from_micros(5);

        let t0 = Instant::now();
        let end = t0 + S * ROUNDS as u32;
        let mut s = Schedule::new(t0, vec![Intervals::new(S); N]);
        let mut running: BinaryHeap<Reverse<(Instant, CheckId)>> = BinaryHeap::new();
        let mut scheduled: Vec<Vec<Instant>> = vec![Vec::new(); N];
        let mut actual = Lateness::default();
        let mut clock = t0;
        loop {
            let wake_due = next_tick(s.next_due().unwrap(), t0, phase, tick);
            let wake = match running.peek() {
                Some(Reverse((done, _))) => wake_due.min(*done),
                None => wake_due,
            };
            if wake >= end {
                break;
            }
            clock = clock.max(wake);
            while let Some(&Reverse((done, id))) = running.peek() {
                if done > clock {
                    break;
                }
                running.pop();
                s.completed(id, clock, false);
                clock += done_cost;
            }
            for id in s.pop_due(clock) {
                let at = s.run_scheduled(id).unwrap();
                scheduled[id].push(at);
                actual.record(clock - at);
                running.push(Reverse((clock + run_time, id)));
                clock += start_cost;
            }
        }

        assert_eq!(s.total_skipped(), 0);
        assert_eq!(actual.starts, (N * ROUNDS) as u64);
        for (id, times) in scheduled.iter().enumerate() {
            let first = t0 + MS * id as u32;
            assert_eq!(times.len(), ROUNDS, "check {id}");
            for (k, &t) in times.iter().enumerate() {
                assert_eq!(t, first + S * k as u32, "check {id} round {k} drifted");
            }
            // No drift after a minute either: the next round is exactly 60 intervals on.
            assert_eq!(s.due(id), first + S * ROUNDS as u32);
        }
        // Spread 1 ms apart, the checks never queue behind each other: lateness stays within
        // one timer tick plus the cost of one start, far below the 50 ms target.
        assert!(actual.max <= tick + start_cost + done_cost, "max lateness {:?}", actual.max);
        assert!(s.lateness().max <= tick, "{:?}", s.lateness());
        assert!(actual.mean() < tick, "mean lateness {:?}", actual.mean());
    }
}
