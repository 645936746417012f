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
                if shape < 3 {
                    assert_eq!(a, build_walking(&entries, m), "m={m} n={n}: the endgame changed the table");
                }
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

/// The weighted population computed the plain way, independently of `build`: credits per
/// round, every turn walking the preference list with `%` to the end, no endgame.
fn build_walking(entries: &[Entry], m: u32) -> Vec<u32> {
    let mut table = vec![RING_EMPTY; m as usize];
    let max = entries.iter().map(|e| u64::from(e.weight)).max().unwrap_or(0);
    if max == 0 {
        return table;
    }
    let (mut next, mut credit) = (vec![0u64; entries.len()], vec![0u64; entries.len()]);
    let mut filled = 0;
    loop {
        for (i, en) in entries.iter().enumerate() {
            credit[i] += u64::from(en.weight);
            if en.weight == 0 || credit[i] < max {
                continue;
            }
            credit[i] -= max;
            let slot = |j: u64| ((u64::from(en.offset) + j * u64::from(en.skip)) % u64::from(m)) as usize;
            while table[slot(next[i])] != RING_EMPTY {
                next[i] += 1;
            }
            table[slot(next[i])] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                return table;
            }
        }
    }
}

/// The endgame (the last free slots found by inverting each preference list instead of
/// walking it) gives the walk's table, with few and many backends, at every size.
#[test]
fn the_endgame_gives_the_walks_table() {
    let names = names(1000);
    for m in [3u32, 7, 131, 257, 4099, M] {
        for n in [1usize, 2, 5, 130, 1000] {
            let entries: Vec<Entry> = names[..n].iter().enumerate().map(|(i, s)| Entry::for_name(s.as_bytes(), 1 + (i as u32 % 3), m)).collect();
            assert_eq!(build(&entries, m).unwrap(), build_walking(&entries, m), "m={m} n={n}");
        }
    }
}

#[test]
fn inverses_modulo_a_prime() {
    for m in [2u32, 3, 7, 13, 65537, 131071] {
        for a in (1..m).step_by((m as usize / 50).max(1)) {
            let inv = inverse_mod(a, m);
            assert!(inv < m);
            assert_eq!(u64::from(a) * u64::from(inv) % u64::from(m), 1, "{a}^-1 mod {m}");
        }
    }
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
