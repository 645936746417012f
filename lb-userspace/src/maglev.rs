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
    /// First slot of the preference list.
    offset: u32,
    skip: u32,
    /// `skip`'s inverse modulo `m`, once the endgame needs it (0: not yet computed).
    inverse: u32,
    /// Index into the caller's entries: what goes into the table.
    index: u32,
    weight: u32,
}

/// Free slots from which [`Fill`] stops walking preference lists. A walk costs about `m / f`
/// probes with `f` slots free, so the last slots cost the most: with `m` = 65537, the walk
/// spends nearly half of its 0.77 million probes on the last 128 slots, where a direct search
/// costs `f` multiplications. Measured with 1000 backends at `m` = 65537: 1.03 ms without the
/// endgame, 0.85 ms from 128 free slots, 0.86 ms from 256, 0.87 ms from 64.
const ENDGAME: u32 = 128;

/// The table being populated, and how many of its slots are still free.
///
/// A turn claims the first free slot of the backend's preference list from where its last
/// turn stopped. While many slots are free the backend walks its list. In the endgame (at most
/// [`ENDGAME`] slots free) it looks the answer up instead: slot `s` is at position
/// `j(s) = (s - offset) * skip^-1 mod m` of the list, every slot the backend walked past is
/// taken and stays taken, so the free slot with the smallest `j(s)` is exactly the slot the
/// walk would reach. Same table, fewer steps.
struct Fill<'a> {
    table: &'a mut [u32],
    free: u32,
    /// In the endgame, the free slots (unordered); empty before.
    endgame: Vec<u32>,
}

impl<'a> Fill<'a> {
    fn new(table: &'a mut [u32]) -> Fill<'a> {
        let free = table.len() as u32;
        Fill { table, free, endgame: Vec::new() }
    }

    fn full(&self) -> bool {
        self.free == 0
    }

    /// One turn of `t`. The table must not be full; then this ends, because the preference
    /// list visits every slot (`m` prime, `0 < skip < m`).
    #[inline(always)]
    fn claim(&mut self, t: &mut Turn, m: u32) {
        let slot = if self.endgame.is_empty() {
            // Checking the table itself is faster here than a separate bitmap of taken slots:
            // the walk is bound by branch mispredictions, not by the 256 KiB table's cache misses.
            let mut pos = t.pos;
            while self.table[pos as usize] != RING_EMPTY {
                pos = step(pos, t.skip, m);
            }
            t.pos = step(pos, t.skip, m);
            pos
        } else {
            if t.inverse == 0 {
                t.inverse = inverse_mod(t.skip, m);
            }
            let (offset, inverse, m64) = (u64::from(t.offset), u64::from(t.inverse), u64::from(m));
            let place = |s: u32| (u64::from(s) + m64 - offset) * inverse % m64;
            let (i, _) = self.endgame.iter().enumerate().min_by_key(|&(_, &s)| place(s)).expect("the table is not full");
            self.endgame.swap_remove(i)
        };
        self.table[slot as usize] = t.index;
        self.free -= 1;
        if self.free == ENDGAME.min(m - 1) && self.free > 0 {
            self.endgame = (0..m).filter(|&s| self.table[s as usize] == RING_EMPTY).collect();
        }
    }
}

/// The inverse of `a` modulo the prime `m` (`0 < a < m`), by the extended Euclidean algorithm.
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i64::from(m)) as u32
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
/// Cost: walking the preference lists takes about `M (ln M + 0.58)` probes in all (0.77
/// million at `M = 65537`), nearly half of them for the last 128 slots, which [`Fill`] finds
/// directly instead (about 0.4 million probes remain). Scheduling the turns costs `N` credit
/// updates per round when weights are similar; when they are very unequal (many rounds in
/// which most backends have no turn) the turns are drawn from a priority queue of due rounds
/// instead, in exactly the same order, so the cost stays near `M log N` rather than growing
/// towards `N * M`.
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
            let offset = e.offset % m;
            Turn { pos: offset, offset, skip: if skip == 0 { 1 } else { skip }, inverse: 0, index, weight: e.weight }
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
    let mut fill = Fill::new(table);
    loop {
        for (t, credit) in turns.iter_mut().zip(credits.iter_mut()) {
            *credit += u64::from(t.weight);
            if *credit < max_weight {
                continue;
            }
            *credit -= max_weight;
            fill.claim(t, m);
            if fill.full() {
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
    let mut fill = Fill::new(table);
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
            fill.claim(t, m);
            if fill.full() {
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
mod tests;
