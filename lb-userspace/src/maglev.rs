//! Maglev consistent hashing with weights (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! A service's lookup table has `M` slots, `M` prime. Each backend `i` has a preference list,
//! the permutation `(offset_i + j * skip_i) mod M` for `j = 0, 1, 2, ...` (a full permutation
//! of the slots because `M` is prime and `1 <= skip_i < M`). Backends take turns; on its turn a
//! backend claims the first slot of its preference list that is still free. The result spreads
//! slots evenly, and removing or adding one backend moves few slots that belonged to others.
//!
//! Weights: backends take turns in proportion to their weight (a deterministic weighted round
//! robin, see [`build`]); every turn claims exactly one slot, so a backend's share of the table
//! is its share of the total weight, to within a slot or two.
//!
//! Everything here is deterministic: offsets and skips come from a fixed-seed hash of the
//! backend's name. [`build`] populates in the order of its entries; [`build_for_set`] first
//! sorts the backends by name, so **the table depends only on the set of (name, weight)**: not
//! on the order a configuration file lists them in, nor on which node or process builds it.
//! Every node of a cluster given the same backends computes the identical table, and a flow
//! that moves between nodes (a VRRP failover, an ECMP change) keeps its backend.

use std::{cmp::Reverse, collections::BinaryHeap, fmt};

use lb_common::{hash::hash_bytes, DEFAULT_RING_SIZE, MAX_RING_SIZE, RING_EMPTY};

/// Seed of the hash that gives a backend's offset (first preferred slot).
pub const OFFSET_SEED: u32 = 0x6d61_676c;
/// Seed of the hash that gives a backend's skip (stride through the table). Distinct from
/// [`OFFSET_SEED`] so that offset and skip are independent.
pub const SKIP_SEED: u32 = 0x2f3b_a4c7;

/// Why a table could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size is not a prime (preference lists would not cover every slot).
    NotPrime(u32),
    /// The table size exceeds [`MAX_RING_SIZE`].
    TooLarge(u32),
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaglevError::NotPrime(m) => write!(f, "Maglev table size {m} is not a prime"),
            MaglevError::TooLarge(m) => {
                write!(f, "Maglev table size {m} exceeds the maximum of {MAX_RING_SIZE}")
            }
        }
    }
}

impl std::error::Error for MaglevError {}

/// Whether `n` is a prime (trial division; `n` is at most a few hundred thousand in practice,
/// and even `u32::MAX` takes only ~33k divisions).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// Checks that `table_size` can be used for a Maglev table: a prime no larger than
/// [`MAX_RING_SIZE`].
pub fn validate_table_size(table_size: u32) -> Result<(), MaglevError> {
    if table_size as usize > MAX_RING_SIZE {
        return Err(MaglevError::TooLarge(table_size));
    }
    if !is_prime(table_size) {
        return Err(MaglevError::NotPrime(table_size));
    }
    Ok(())
}

/// One backend as Maglev sees it: where its preference list starts, its stride, and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// First slot of the preference list, in `0..M`.
    pub offset: u32,
    /// Stride of the preference list, in `1..M`.
    pub skip: u32,
    /// Relative share of the table; 0 means the backend gets no slot.
    pub weight: u32,
}

impl Entry {
    /// The entry of the backend called `name` (e.g. its address as text) in a table of
    /// `table_size` slots: `offset = h1(name) % M`, `skip = h2(name) % (M - 1) + 1`, with
    /// `h1`, `h2` MurmurHash3 under [`OFFSET_SEED`] and [`SKIP_SEED`].
    ///
    /// Never panics: for a degenerate `table_size` below 2 (which [`build`] rejects anyway)
    /// it returns offset 0 and skip 1.
    pub fn for_name(name: &[u8], weight: u32, table_size: u32) -> Entry {
        if table_size < 2 {
            return Entry { offset: 0, skip: 1, weight };
        }
        let offset = hash_bytes(OFFSET_SEED, name) % table_size;
        let skip = hash_bytes(SKIP_SEED, name) % (table_size - 1) + 1;
        Entry { offset, skip, weight }
    }
}

/// Population state of one backend with a non-zero weight.
struct Turn {
    /// Next slot of its preference list to try (`next[i]` in the paper, as a slot number).
    pos: u32,
    skip: u32,
    /// Index into the caller's entries: what goes into the table.
    index: u32,
    weight: u32,
}

impl Turn {
    /// One turn: claim the first free slot of the preference list, starting where the last
    /// turn stopped. The table must not be full; then this ends, because the preference list
    /// visits every slot (`m` prime, `0 < skip < m`).
    #[inline(always)]
    fn claim(&mut self, table: &mut [u32], m: u32) {
        // Checking the table itself is faster here than a separate bitmap of taken slots: the
        // walk is bound by branch mispredictions, not by the 256 KiB table's cache misses.
        let mut pos = self.pos;
        while table[pos as usize] != RING_EMPTY {
            pos = step(pos, self.skip, m);
        }
        table[pos as usize] = self.index;
        self.pos = step(pos, self.skip, m);
    }
}

/// `(pos + skip) mod m` for `pos, skip < m` (their sum is below `2m <= 2^18`).
#[inline(always)]
fn step(pos: u32, skip: u32, m: u32) -> u32 {
    let next = pos + skip;
    if next >= m {
        next - m
    } else {
        next
    }
}

/// Builds the Maglev table of `table_size` slots for `entries`: slot `s` holds the index into
/// `entries` of the backend that owns it, or [`RING_EMPTY`] when no entry has a weight.
///
/// Population (the paper's algorithm, weighted): the backends with a non-zero weight take
/// turns in rounds. Each round, in entry order, every backend adds its weight to its credit and,
/// if the credit reaches the largest weight, spends that much for one turn (so a backend of
/// weight `w` has had `floor(r * w / max_weight)` turns after `r` rounds). On its turn a backend
/// walks its preference list from where it last stopped and claims the first free slot. With
/// equal weights this is exactly the paper's algorithm (one turn each per round, in index
/// order). Population stops as soon as every slot is taken.
///
/// Offsets and skips are taken modulo `table_size` (a skip of 0 becomes 1), so hand-made
/// entries cannot make the walk loop forever; entries from [`Entry::for_name`] with the same
/// `table_size` are already in range.
///
/// Errors if `table_size` is not a prime or is larger than [`MAX_RING_SIZE`].
///
/// Cost: fewer than `M ln M` probes in all (about 0.7 million at `M = 65537`, roughly 1 ms for
/// 1000 backends). Scheduling the turns costs `N` credit updates per round when weights are
/// similar; when they are very unequal (many rounds in which most backends have no turn) the
/// turns are drawn from a priority queue of due rounds instead, in exactly the same order, so
/// the cost stays near `M log N` rather than growing towards `N * M`.
pub fn build(entries: &[Entry], table_size: u32) -> Result<Vec<u32>, MaglevError> {
    build_scheduled(entries, table_size, None)
}

/// The table for a set of named backends, `(name, weight)`: slot `s` holds the index into
/// `backends` of the backend that owns it, or [`RING_EMPTY`]. The backends are placed in the
/// order of their names (byte-wise), so any order of the same set gives the same owner in
/// every slot. Names must be distinct (a service's backend addresses are).
pub fn build_for_set(backends: &[(&[u8], u32)], table_size: u32) -> Result<Vec<u32>, MaglevError> {
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by(|&a, &b| backends[a].0.cmp(backends[b].0));
    let entries: Vec<Entry> =
        order.iter().map(|&i| Entry::for_name(backends[i].0, backends[i].1, table_size)).collect();
    let table = build(&entries, table_size)?;
    Ok(table.into_iter().map(|k| if k == RING_EMPTY { k } else { order[k as usize] as u32 }).collect())
}

/// How [`build`] hands out turns. Both give the same order of turns, hence the same table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schedule {
    /// Visit every backend every round, keeping credits.
    Rounds,
    /// Keep the backends lighter than the heaviest in a queue ordered by their next due round.
    Due,
}

/// [`build`] with the schedule forced (tests) or chosen from the weights (`None`).
fn build_scheduled(entries: &[Entry], table_size: u32, schedule: Option<Schedule>) -> Result<Vec<u32>, MaglevError> {
    validate_table_size(table_size)?;
    let m = table_size;
    let mut table = vec![RING_EMPTY; m as usize];

    let mut turns: Vec<Turn> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.weight > 0)
        // Indices that would collide with RING_EMPTY cannot be represented; skip them.
        .filter_map(|(i, e)| u32::try_from(i).ok().filter(|&i| i != RING_EMPTY).map(|i| (i, e)))
        .map(|(index, e)| {
            let skip = e.skip % m;
            Turn { pos: e.offset % m, skip: if skip == 0 { 1 } else { skip }, index, weight: e.weight }
        })
        .collect();
    let Some(max_weight) = turns.iter().map(|t| t.weight).max() else {
        return Ok(table);
    };

    // Rounds visits N backends per round, and there are about M * max / total rounds: N * max /
    // total visits per slot. Those are cheap; the queue costs a heap push and pop per turn of
    // a lighter backend instead. Measured crossover: about 50 visits per slot.
    let schedule = schedule.unwrap_or_else(|| {
        let total: u128 = turns.iter().map(|t| u128::from(t.weight)).sum();
        if turns.len() as u128 * u128::from(max_weight) <= 64 * total {
            Schedule::Rounds
        } else {
            Schedule::Due
        }
    });
    // The usual size gets its own copy of the loop with the size a constant (~10% faster).
    match (schedule, m == DEFAULT_RING_SIZE) {
        (Schedule::Rounds, true) => by_rounds::<DEFAULT_RING_SIZE>(&mut turns, max_weight, &mut table, m),
        (Schedule::Rounds, false) => by_rounds::<0>(&mut turns, max_weight, &mut table, m),
        (Schedule::Due, true) => by_due_round::<DEFAULT_RING_SIZE>(&mut turns, max_weight, &mut table, m),
        (Schedule::Due, false) => by_due_round::<0>(&mut turns, max_weight, &mut table, m),
    }
    Ok(table)
}

// Both population loops below take: `table` with `m` slots, all RING_EMPTY, `m` prime; `turns`
// in entry order, in range, with non-zero weights, `max_weight` the largest of them; `FIXED`,
// when not 0, is `m` known at compile time. They return when the table is full.

/// Population, visiting every backend every round with a credit each.
fn by_rounds<const FIXED: u32>(turns: &mut [Turn], max_weight: u32, table: &mut [u32], m: u32) {
    let m = if FIXED != 0 { FIXED } else { m };
    let max_weight = u64::from(max_weight);
    // credit < max_weight before each add, so at most one turn per round.
    let mut credits = vec![0u64; turns.len()];
    let mut filled: u32 = 0;
    loop {
        for (t, credit) in turns.iter_mut().zip(credits.iter_mut()) {
            *credit += u64::from(t.weight);
            if *credit < max_weight {
                continue;
            }
            *credit -= max_weight;
            t.claim(table, m);
            filled += 1;
            if filled == m {
                return;
            }
        }
    }
}

/// Population in the same order as [`by_rounds`], without visiting backends that have no turn:
/// the heaviest backends have a turn every round; each lighter one waits in a queue keyed by
/// (next round with a turn, entry order). After `r` rounds a backend of weight `w` has had
/// `floor(r * w / max)` turns, so after a turn in round `r` its next one is in round
/// `ceil((floor(r * w / max) + 1) * max / w)`.
fn by_due_round<const FIXED: u32>(turns: &mut [Turn], max_weight: u32, table: &mut [u32], m: u32) {
    let m = if FIXED != 0 { FIXED } else { m };
    let max = u64::from(max_weight);
    let next_due = |round: u64, weight: u32| {
        let w = u64::from(weight);
        // round <= m: each round at least one heaviest backend claims a slot. So no overflow.
        ((round * w / max + 1) * max).div_ceil(w)
    };
    let heavy: Vec<usize> = (0..turns.len()).filter(|&i| turns[i].weight == max_weight).collect();
    let mut light: BinaryHeap<Reverse<(u64, usize)>> = (0..turns.len())
        .filter(|&i| turns[i].weight != max_weight)
        .map(|i| Reverse((next_due(0, turns[i].weight), i)))
        .collect();
    let mut due: Vec<usize> = Vec::new();
    let mut filled: u32 = 0;
    for round in 1u64.. {
        due.clear();
        while let Some(&Reverse((r, i))) = light.peek() {
            if r != round {
                break;
            }
            light.pop();
            due.push(i);
        }
        // Merge the heavy backends and the due light ones in entry order (both are sorted).
        let (mut h, mut d) = (0, 0);
        while h < heavy.len() || d < due.len() {
            let i = if d == due.len() || (h < heavy.len() && heavy[h] < due[d]) {
                h += 1;
                heavy[h - 1]
            } else {
                d += 1;
                due[d - 1]
            };
            let t = &mut turns[i];
            t.claim(table, m);
            filled += 1;
            if filled == m {
                return;
            }
            if t.weight != max_weight {
                light.push(Reverse((next_due(round, t.weight), i)));
            }
        }
    }
}

/// Number of slots whose owner differs between two tables (slots present in only one of them,
/// if the lengths differ, count as differing). Both tables must number backends the same way;
/// see [`relabel`] for tables built from different entry lists.
pub fn disruption(old: &[u32], new: &[u32]) -> usize {
    let differing = old.iter().zip(new).filter(|(a, b)| a != b).count();
    differing + old.len().abs_diff(new.len())
}

/// Rewrites a table of entry indices into a table of stable identifiers: slot `s` becomes
/// `labels[table[s]]`. [`RING_EMPTY`] and indices without a label become [`RING_EMPTY`].
///
/// Give each backend one identifier across configurations (e.g. its position in a list of all
/// names, or its index in the `BACKENDS` map) and relabel both tables before calling
/// [`disruption`].
pub fn relabel(table: &[u32], labels: &[u32]) -> Vec<u32> {
    table.iter().map(|&i| labels.get(i as usize).copied().unwrap_or(RING_EMPTY)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const M: u32 = 65537;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("203.0.{}.{}:80", 113 + i / 250, 11 + i % 250)).collect()
    }

    /// Entries for `names[ids[k]]` with `weights[k]`; returns the entries and their labels
    /// (the ids), for [`relabel`].
    fn entries_for(names: &[String], ids: &[usize], weights: &[u32], m: u32) -> (Vec<Entry>, Vec<u32>) {
        let entries = ids.iter().zip(weights).map(|(&id, &w)| Entry::for_name(names[id].as_bytes(), w, m)).collect();
        let labels = ids.iter().map(|&id| id as u32).collect();
        (entries, labels)
    }

    /// Table over `names[ids]`, relabelled with the ids.
    fn named_table(names: &[String], ids: &[usize], weights: &[u32], m: u32) -> Vec<u32> {
        let (entries, labels) = entries_for(names, ids, weights, m);
        relabel(&build(&entries, m).unwrap(), &labels)
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &s in table {
            c[s as usize] += 1;
        }
        c
    }

    fn e(offset: u32, skip: u32, weight: u32) -> Entry {
        Entry { offset, skip, weight }
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(65537));
        assert!(is_prime(251));
        assert!(is_prime(4_294_967_291)); // largest prime below 2^32
        assert!(!is_prime(65535));
        assert!(!is_prime(65539 * 3));
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65521 * 65519)); // product of two primes
    }

    #[test]
    fn hand_computed_equal_weights() {
        // M = 7, paper-style example. Preference lists (offset + j * skip) mod 7:
        //   B0 (offset 3, skip 4): 3, 0, 4, 1, 5, 2, 6
        //   B1 (offset 0, skip 2): 0, 2, 4, 6, 1, 3, 5
        //   B2 (offset 3, skip 1): 3, 4, 5, 6, 0, 1, 2
        // Round 1: B0 takes 3; B1 takes 0; B2: 3 taken, takes 4.
        // Round 2: B0: 0 taken, 4 taken, takes 1; B1 takes 2; B2 takes 5.
        // Round 3: B0: 5 taken, 2 taken, takes 6. Table full (7 slots).
        // Slots 0..7: [B1, B0, B1, B0, B2, B2, B0].
        let entries = [e(3, 4, 1), e(0, 2, 1), e(3, 1, 1)];
        assert_eq!(build(&entries, 7).unwrap(), [1, 0, 1, 0, 2, 2, 0]);
        // Equal weights of any size are the same algorithm.
        let heavy = [e(3, 4, 100), e(0, 2, 100), e(3, 1, 100)];
        assert_eq!(build(&heavy, 7).unwrap(), [1, 0, 1, 0, 2, 2, 0]);
    }

    #[test]
    fn hand_computed_weighted() {
        // Same preference lists as above, weights 2, 1, 1 (max weight 2). Credits start at 0;
        // each round a backend adds its weight and takes a turn when its credit reaches 2.
        // Round 1: credits 2,1,1 -> B0 turn: takes 3 (credit 0). B1, B2 wait.
        // Round 2: credits 2,2,2 -> B0: takes 0. B1: 0 taken, takes 2. B2: 3 taken, takes 4.
        // Round 3: credits 2,1,1 -> B0: 4 taken, takes 1. B1, B2 wait.
        // Round 4: credits 2,2,2 -> B0: takes 5. B1: 4 taken, takes 6. Table full (7 slots).
        // Slots 0..7: [B0, B0, B1, B0, B2, B0, B1]; B0 has 4 slots, B1 2, B2 1.
        let entries = [e(3, 4, 2), e(0, 2, 1), e(3, 1, 1)];
        assert_eq!(build(&entries, 7).unwrap(), [0, 0, 1, 0, 2, 0, 1]);
        for schedule in [Schedule::Rounds, Schedule::Due] {
            assert_eq!(build_scheduled(&entries, 7, Some(schedule)).unwrap(), [0, 0, 1, 0, 2, 0, 1]);
        }

        // Weights 1, 0, 1: B1 gets nothing; B0 and B2 alternate.
        // Round 1: B0 takes 3; B2 takes 4. Round 2: B0 takes 0; B2 takes 5.
        // Round 3: B0: 4 taken, takes 1; B2 takes 6. Round 4: B0: 5 taken, takes 2. Full.
        // Slots 0..7: [B0, B0, B0, B0, B2, B2, B2].
        let entries = [e(3, 4, 1), e(0, 2, 0), e(3, 1, 1)];
        assert_eq!(build(&entries, 7).unwrap(), [0, 0, 0, 0, 2, 2, 2]);
    }

    /// Tiny deterministic generator (xorshift32) for test inputs.
    fn rng(seed: u32) -> impl FnMut() -> u32 {
        let mut x = seed.max(1);
        move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        }
    }

    /// The queue schedule (used for very unequal weights) hands out turns in exactly the order
    /// of the round-robin one, so the tables are identical.
    #[test]
    fn schedules_agree() {
        let mut next = rng(12345);
        let names = names(400);
        let mut cases = 0;
        for m in [2u32, 7, 13, 251, 4099, M] {
            for n in [1usize, 2, 3, 10, 57, 400] {
                for shape in 0..4 {
                    let weights: Vec<u32> = (0..n)
                        .map(|i| match shape {
                            0 => 1 + next() % 4,
                            1 => next() % 3, // some zeros
                            2 => {
                                if i % 17 == 3 {
                                    1000
                                } else {
                                    1 + next() % 10
                                }
                            }
                            _ => {
                                if i == n / 2 {
                                    u32::MAX
                                } else {
                                    next() % 50_000
                                }
                            }
                        })
                        .collect();
                    let entries: Vec<Entry> =
                        names[..n].iter().zip(&weights).map(|(s, &w)| Entry::for_name(s.as_bytes(), w, m)).collect();
                    let a = build_scheduled(&entries, m, Some(Schedule::Rounds)).unwrap();
                    let b = build_scheduled(&entries, m, Some(Schedule::Due)).unwrap();
                    assert_eq!(a, b, "m={m} n={n} weights={weights:?}");
                    assert_eq!(a, build(&entries, m).unwrap());
                    cases += 1;
                }
            }
        }
        println!("schedules agree on {cases} weight sets");
    }

    #[test]
    fn out_of_range_entries_are_normalised() {
        // offset 10 = 3 mod 7, skip 11 = 4 mod 7, skip 7 = 0 mod 7 -> 1 (B2's list as before).
        let entries = [e(10, 11, 1), e(0, 2, 1), e(3, 7, 1)];
        assert_eq!(build(&entries, 7).unwrap(), [1, 0, 1, 0, 2, 2, 0]);
        let entries = [e(u32::MAX, 0, u32::MAX), e(0, u32::MAX, 1)];
        let t = build(&entries, 7).unwrap();
        assert!(t.iter().all(|&s| s < 2));
    }

    #[test]
    fn for_name_is_in_range() {
        for m in [2u32, 3, 7, 251, 65537] {
            for n in names(300) {
                let en = Entry::for_name(n.as_bytes(), 1, m);
                assert!(en.offset < m);
                assert!(en.skip >= 1 && en.skip < m);
            }
        }
        assert_eq!(Entry::for_name(b"x", 3, 0), e(0, 1, 3));
        assert_eq!(Entry::for_name(b"x", 3, 1), e(0, 1, 3));
        // Offset and skip come from different hashes.
        let same = names(300)
            .iter()
            .map(|n| Entry::for_name(n.as_bytes(), 1, M))
            .filter(|en| en.offset == en.skip - 1)
            .count();
        assert_eq!(same, 0);
    }

    fn check_shares(weights: &[u32]) {
        let n = weights.len();
        let names = names(n);
        let ids: Vec<usize> = (0..n).collect();
        let table = named_table(&names, &ids, weights, M);
        assert_eq!(table.len(), M as usize);
        let c = counts(&table, n);
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut worst: f64 = 0.0;
        for (i, (&got, &w)) in c.iter().zip(weights).enumerate() {
            let want = f64::from(M) * w as f64 / total as f64;
            let rel = (got as f64 - want).abs() / want;
            worst = worst.max(rel);
            assert!(rel <= 0.01, "weights {weights:?}: backend {i} has {got} slots, want {want:.1}");
        }
        println!("shares n={n} weights[..4]={:?}: worst relative error {:.5}", &weights[..n.min(4)], worst);
    }

    #[test]
    fn shares_follow_weights() {
        for n in [3usize, 10, 100] {
            check_shares(&vec![1; n]);
        }
        check_shares(&[1, 2, 3, 4]);
        check_shares(&[100, 100, 50, 10]);
        check_shares(&[7, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    }

    /// Removing each one of `n` equal-weight backends in turn: returns the worst and the mean
    /// number of slots that changed owner but did not belong to the removed backend.
    fn removal(n: usize) -> (usize, f64) {
        let names = names(n);
        let all: Vec<usize> = (0..n).collect();
        let before = named_table(&names, &all, &vec![1; n], M);
        let (mut worst, mut sum) = (0, 0);
        for k in 0..n {
            let rest: Vec<usize> = all.iter().copied().filter(|&i| i != k).collect();
            let after = named_table(&names, &rest, &vec![1; n - 1], M);
            let owned = before.iter().filter(|&&s| s == k as u32).count();
            // Every slot of the removed backend moves, so it is all in `disruption`.
            assert!(after.iter().all(|&s| s != k as u32));
            let extra = disruption(&before, &after) - owned;
            worst = worst.max(extra);
            sum += extra;
        }
        (worst, sum as f64 / n as f64)
    }

    /// Minimal disruption. Removing one of N equal-weight backends must move the ~`M / N` slots
    /// it owned; Maglev also moves some slots of other backends, because with one backend fewer
    /// the others claim slots in a different order, and an early difference cascades down their
    /// preference lists. The paper reports this extra disruption as small. Measured here, worst
    /// over every choice of removed backend: 180 slots (0.27% of M) for N = 10 and 391 slots
    /// (0.60% of M) for N = 100 (means 146 and 353 slots).
    ///
    /// Bound asserted, a little under twice the measured worst: extra disruption at most 0.5%
    /// of M for N = 10 (a twentieth of the removed backend's 10%) and at most 1% of M for
    /// N = 100 (its own 1% share: a backend leaving moves at most twice the slots it must).
    #[test]
    fn removing_a_backend_moves_few_other_slots() {
        for (n, bound) in [(10usize, 0.005f64), (100, 0.01)] {
            let (worst, mean) = removal(n);
            let frac = worst as f64 / f64::from(M);
            println!(
                "remove 1 of {n}: it owned ~{} slots ({:.2}% of M); extra disruption worst {worst} slots \
                 ({:.3}% of M), mean {mean:.0} slots ({:.3}% of M)",
                M as usize / n,
                100.0 / n as f64,
                100.0 * frac,
                100.0 * mean / f64::from(M)
            );
            assert!(frac <= bound, "n={n}: extra disruption {frac:.4} of M exceeds {bound}");
        }
    }

    /// Changing one backend's weight (100 -> 50 and 100 -> 150, among ten at 100) moves a
    /// limited share. Its ideal share change is 10% -> 5.26% (4.7% of M) or 10% -> 14.3% (4.3%
    /// of M); asserted: at most 4x that, and printed.
    #[test]
    fn changing_a_weight_moves_a_limited_share() {
        let n = 10;
        let names = names(n);
        let ids: Vec<usize> = (0..n).collect();
        let base = vec![100u32; n];
        let before = named_table(&names, &ids, &base, M);
        for new_weight in [50u32, 150] {
            let mut w = base.clone();
            w[3] = new_weight;
            let after = named_table(&names, &ids, &w, M);
            let moved = disruption(&before, &after) as f64 / f64::from(M);
            let ideal = (0.1 - f64::from(new_weight) / f64::from(100 * 9 + new_weight)).abs();
            println!(
                "weight of 1 of {n} from 100 to {new_weight}: {:.2}% of M moved (ideal {:.2}%)",
                100.0 * moved,
                100.0 * ideal
            );
            assert!(moved <= 4.0 * ideal, "moved {moved:.4}, ideal {ideal:.4}");
        }
    }

    #[test]
    fn zero_weights_own_nothing() {
        let names = names(6);
        let ids: Vec<usize> = (0..6).collect();
        let table = named_table(&names, &ids, &[1, 0, 2, 0, 1, 1], M);
        let c = counts(&table, 6);
        assert_eq!(c[1], 0);
        assert_eq!(c[3], 0);
        assert_eq!(c.iter().sum::<usize>(), M as usize);
        // A zero-weight backend does not change the table of the others.
        let without = named_table(&names, &[0, 2, 4, 5], &[1, 2, 1, 1], M);
        assert_eq!(table, without);
    }

    #[test]
    fn no_weight_means_empty_table() {
        for m in [2u32, 7, M] {
            let t = build(&[], m).unwrap();
            assert_eq!(t.len(), m as usize);
            assert!(t.iter().all(|&s| s == RING_EMPTY));
            let zeros = [e(1, 1, 0), e(0, 1, 0)];
            assert_eq!(build(&zeros, m).unwrap(), vec![RING_EMPTY; m as usize]);
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for m in [0u32, 1, 4, 65535, 65536, 100] {
            assert_eq!(build(&[e(0, 1, 1)], m), Err(MaglevError::NotPrime(m)));
        }
        for m in [65539u32, 65538, 131071, u32::MAX] {
            assert_eq!(build(&[e(0, 1, 1)], m), Err(MaglevError::TooLarge(m)));
        }
        assert!(validate_table_size(lb_common::DEFAULT_RING_SIZE).is_ok());
        assert!(validate_table_size(MAX_RING_SIZE as u32).is_ok());
        assert_eq!(MaglevError::NotPrime(4).to_string(), "Maglev table size 4 is not a prime");
        assert!(MaglevError::TooLarge(65539).to_string().contains("65537"));
    }

    #[test]
    fn full_tables_and_small_sizes() {
        // Every slot owned, for small primes and more backends than slots.
        for m in [2u32, 3, 5, 7, 13, 251] {
            for n in [1usize, 2, 5, 300] {
                let names = names(n);
                let entries: Vec<Entry> =
                    names.iter().enumerate().map(|(i, s)| Entry::for_name(s.as_bytes(), 1 + i as u32 % 3, m)).collect();
                let t = build(&entries, m).unwrap();
                assert_eq!(t.len(), m as usize);
                assert!(t.iter().all(|&s| (s as usize) < n), "m={m} n={n}");
            }
        }
    }

    #[test]
    fn deterministic() {
        let names = names(100);
        let ids: Vec<usize> = (0..100).collect();
        let weights: Vec<u32> = (0..100).map(|i| 1 + i % 7).collect();
        let a = named_table(&names, &ids, &weights, M);
        let b = named_table(&names, &ids, &weights, M);
        assert_eq!(a, b);
        assert_eq!(disruption(&a, &b), 0);
        // Pinned: the hash and the population order are part of the cluster-wide contract; a
        // change here means nodes running different versions would disagree.
        let small = named_table(&names, &[0, 1, 2], &[1, 1, 1], 13);
        println!("pinned M=13 table: {small:?}");
        assert_eq!(small, build_pinned_reference(&names));
    }

    /// The M = 13 table for the first three names, computed independently of `build` with a
    /// naive implementation (equal weights: one turn each per round, `%` for the walk).
    fn build_pinned_reference(names: &[String]) -> Vec<u32> {
        let m = 13u32;
        let entries: Vec<Entry> = names[..3].iter().map(|n| Entry::for_name(n.as_bytes(), 1, m)).collect();
        let mut table = vec![RING_EMPTY; m as usize];
        let mut next = vec![0u32; entries.len()];
        let mut filled = 0;
        'outer: loop {
            for (i, en) in entries.iter().enumerate() {
                let mut c = (en.offset + next[i] * en.skip) % m;
                while table[c as usize] != RING_EMPTY {
                    next[i] += 1;
                    c = (en.offset + next[i] * en.skip) % m;
                }
                table[c as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
        }
        table
    }

    /// The table of a set does not depend on the order it is given in: shuffled, the same
    /// backend owns every slot.
    #[test]
    fn the_table_of_a_set_does_not_depend_on_its_order() {
        let all = names(40);
        let mut next = rng(7);
        for round in 0..20 {
            let n = 1 + (next() as usize % all.len());
            let mut set: Vec<(String, u32)> = all[..n].iter().map(|a| (a.clone(), next() % 5)).collect();
            let m = if round % 2 == 0 { M } else { 251 };
            let owners = |set: &[(String, u32)]| -> Vec<Option<String>> {
                let named: Vec<(&[u8], u32)> = set.iter().map(|(a, w)| (a.as_bytes(), *w)).collect();
                let table = build_for_set(&named, m).unwrap();
                table.iter().map(|&i| (i != RING_EMPTY).then(|| set[i as usize].0.clone())).collect()
            };
            let reference = owners(&set);
            for _ in 0..5 {
                // Fisher-Yates with the test generator.
                for i in (1..set.len()).rev() {
                    set.swap(i, next() as usize % (i + 1));
                }
                assert_eq!(owners(&set), reference, "round {round}: a shuffle of {n} backends changed the table");
            }
        }
    }

    #[test]
    fn disruption_and_relabel() {
        assert_eq!(disruption(&[1, 2, 3], &[1, 2, 3]), 0);
        assert_eq!(disruption(&[1, 2, 3], &[1, 0, 3]), 1);
        assert_eq!(disruption(&[1, 2, 3], &[1, 2]), 1);
        assert_eq!(relabel(&[0, 1, RING_EMPTY, 5], &[10, 20]), [10, 20, RING_EMPTY, RING_EMPTY]);
    }

    fn time_build(n: usize, weights: impl Fn(usize) -> u32) -> (Duration, Duration) {
        let names: Vec<String> =
            (0..n).map(|i| format!("10.{}.{}.{}:80", i >> 16 & 255, i >> 8 & 255, i & 255)).collect();
        let entries: Vec<Entry> =
            names.iter().enumerate().map(|(i, s)| Entry::for_name(s.as_bytes(), weights(i), M)).collect();
        let mut times = Vec::new();
        for _ in 0..25 {
            let start = Instant::now();
            let t = build(&entries, M).unwrap();
            times.push(start.elapsed());
            assert_eq!(t.len(), M as usize);
        }
        times.sort();
        (times[0], times[times.len() / 2])
    }

    /// Prints build times (release mode is what matters; nothing is asserted about time).
    #[test]
    fn timing() {
        for n in [10usize, 100, 1000] {
            let (min, median) = time_build(n, |_| 1);
            println!("build M={M} N={n} equal weights: min {min:?}, median {median:?}");
        }
        let (min, median) = time_build(1000, |i| 1 + (i as u32 % 10));
        println!("build M={M} N=1000 weights 1..10: min {min:?}, median {median:?}");
        let (min, median) = time_build(1000, |i| if i % 100 == 0 { 20 } else { 1 });
        println!("build M={M} N=1000 every 100th at 20, rest 1: min {min:?}, median {median:?}");
        let (min, median) = time_build(1000, |i| if i == 0 { 1000 } else { 1 });
        println!("build M={M} N=1000 one at 1000, rest 1: min {min:?}, median {median:?}");
        let (min, median) = time_build(4096, |i| if i == 0 { u32::MAX } else { 1 });
        println!("build M={M} N=4096 one at u32::MAX, rest 1: min {min:?}, median {median:?}");
        let (min, median) = time_build(4096, |i| 1 + (i as u32 % 100) * 100);
        println!("build M={M} N=4096 weights 1..9901: min {min:?}, median {median:?}");
    }
}
