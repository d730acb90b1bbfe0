//! Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, section 3.4), with weights.
//!
//! A service's table has `M` slots (`M` prime). The data plane hashes a flow to a slot and sends
//! it to the backend id stored there. Each backend walks its own permutation of the slots,
//! `(offset + j·skip) mod M`, where `offset` and `skip` come from two fixed hashes of the
//! backend's key (its IP address); backends take turns claiming the next still-free slot of
//! their permutation until every slot is taken.
//!
//! * **Determinism.** The two hashes are implemented here (FNV-1a 64 with two different bases,
//!   each followed by the murmur3 `fmix64` finaliser), so they are the same on every machine
//!   and Rust version, and the backends are sorted by key before anything else. Every LB given
//!   the same set of backends therefore builds the same table, whatever the order of its
//!   configuration.
//! * **Minimal disruption.** A backend's permutation and the times of its turns depend only on
//!   its own key and weight. Removing a backend leaves every other backend's claims where they
//!   were, except where one now gets a slot the removed backend used to hold first (and the
//!   few knock-on moves that causes).
//! * **Weights.** Backend `i`'s `k`-th claim happens at virtual time `k / weight_i`; claims are
//!   made in order of virtual time, ties going to the backend first in key order. A backend
//!   thus claims slots at a rate proportional to its weight, equal weights reduce to the
//!   paper's round robin, and one backend's schedule does not depend on the other backends'
//!   weights (so reweighting or removing the heaviest backend does not reshuffle the rest).

use std::{
    cmp::{Ordering, Reverse},
    collections::BinaryHeap,
};

/// One backend as Maglev sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend<'a> {
    /// The value written into the table's slots for this backend (the data plane's backend id).
    pub id: u32,
    /// Stable identity the permutation is derived from (the agent passes the backend's IP address bytes);
    /// never the id or the position in the config, so every LB builds the same table.
    pub key: &'a [u8],
    /// Relative weight; 0 = gets no slot.
    pub weight: u32,
}

/// Fills a table of `size` slots (size is prime, checked by the caller; return an error-free result
/// for any size >= 1 anyway without panicking). Returns an empty Vec when no backend has a weight > 0.
///
/// The table depends only on the set of backends, not on their order in `backends`. Backends
/// with weight 0 are dropped first. If several of the remaining backends share a key, only the
/// first after sorting by `(key, id, weight)` (the lowest id, then the lowest weight) is used and
/// the others are ignored. Two backends with different keys may share an id; their slots then
/// hold the same value.
///
/// For a `size` that is not prime, a backend's `skip` is moved up to the next value coprime with
/// `size` so that its permutation still covers every slot (for a prime size every skip already
/// is). A `size` of 0 gives an empty table. When there are more backends than slots, some
/// backends get no slot.
///
/// Cost: about `M·ln M` slot probes into a bitmap of taken slots, plus `O(P log N)` to order the
/// claims, `P` being the sum of the weights divided by their gcd, capped at `M` (`P = N` for equal
/// weights). Besides the table it allocates only the bitmap, one cursor per backend and the
/// `P`-entry claim order; nothing per slot.
pub fn build_table(backends: &[MaglevBackend<'_>], size: u32) -> Vec<u32> {
    let mut live: Vec<&MaglevBackend<'_>> = backends.iter().filter(|b| b.weight > 0).collect();
    live.sort_unstable_by(|a, b| {
        a.key
            .cmp(b.key)
            .then(a.id.cmp(&b.id))
            .then(a.weight.cmp(&b.weight))
    });
    // `dedup_by` passes (later, earlier) and removes the later one.
    live.dedup_by(|later, earlier| later.key == earlier.key);
    if live.is_empty() || size == 0 {
        return Vec::new();
    }

    let m = u64::from(size);
    let order = claim_order(&live, m);
    let mut cursors: Vec<Cursor> = live.iter().map(|b| Cursor::new(b, m)).collect();

    let slots = size as usize;
    let mut table = vec![0u32; slots];
    let mut taken = vec![0u64; slots.div_ceil(64)];
    let mut filled = 0usize;
    // Every pass over `order` claims at least one slot, so this ends after at most M passes.
    // (`order` is never empty: there is a live backend and M >= 1.)
    while filled < slots && !order.is_empty() {
        for &rank in &order {
            let cursor = &mut cursors[rank];
            // The cursor's permutation visits every slot once per cycle (skip is coprime with
            // M), every slot it has visited so far is taken, and at least one slot is free: the
            // walk ends within M steps.
            loop {
                let slot = cursor.pos as usize;
                cursor.pos += cursor.skip;
                if cursor.pos >= m {
                    cursor.pos -= m;
                }
                let (word, bit) = (slot / 64, 1u64 << (slot % 64));
                if taken[word] & bit == 0 {
                    taken[word] |= bit;
                    table[slot] = cursor.id;
                    break;
                }
            }
            filled += 1;
            if filled == slots {
                break;
            }
        }
    }
    table
}

/// The order in which backends (by rank in `live`) claim slots: claim `k` of backend `i` at
/// virtual time `k / weight_i`, earlier first, ties to the lower rank.
///
/// With weights divided by their gcd, every unit of virtual time holds exactly `weight_i` claims
/// of each backend `i`, in the same relative order each time, so the order repeats with a period
/// of the sum of the reduced weights. Only one period is computed (or the first `m` claims when
/// a period is longer than the table), and the table is filled by cycling through it.
fn claim_order(live: &[&MaglevBackend<'_>], m: u64) -> Vec<usize> {
    let common = live.iter().fold(0, |g, b| gcd(g, u64::from(b.weight)));
    let weights: Vec<u64> = live
        .iter()
        .map(|b| u64::from(b.weight) / common.max(1))
        .collect();
    let period = weights
        .iter()
        .fold(0u64, |sum, &w| sum.saturating_add(w))
        .min(m);
    let mut turns: BinaryHeap<Reverse<Turn>> = weights
        .iter()
        .enumerate()
        .map(|(rank, &weight)| {
            Reverse(Turn {
                next_claim: 1,
                weight,
                rank,
            })
        })
        .collect();
    let mut order = Vec::with_capacity(usize::try_from(period).unwrap_or(0));
    for _ in 0..period {
        let Some(mut turn) = turns.peek_mut() else {
            break;
        };
        order.push(turn.0.rank);
        turn.0.next_claim += 1;
        // Dropping `turn` moves it to its place for its next claim.
    }
    order
}

/// A backend's next claim in the claim order.
#[derive(Debug)]
struct Turn {
    /// Number (1-based) of the claim this backend makes next, at virtual time
    /// `next_claim / weight`.
    next_claim: u64,
    /// Reduced weight (> 0).
    weight: u64,
    /// Position in key order: breaks ties between claims at the same virtual time.
    rank: usize,
}

impl Ord for Turn {
    /// Earlier claims order first: by virtual time, compared exactly by cross-multiplying (the
    /// products of two values below 2^33 fit in a u128 with room to spare), then by key order.
    fn cmp(&self, other: &Turn) -> Ordering {
        let mine = u128::from(self.next_claim) * u128::from(other.weight);
        let theirs = u128::from(other.next_claim) * u128::from(self.weight);
        mine.cmp(&theirs).then(self.rank.cmp(&other.rank))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Turn) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Turn) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

/// A backend's position in its permutation `(offset + j·skip) mod M`.
#[derive(Debug)]
struct Cursor {
    id: u32,
    /// The next slot of the permutation to look at.
    pos: u64,
    skip: u64,
}

impl Cursor {
    fn new(backend: &MaglevBackend<'_>, m: u64) -> Cursor {
        let offset = key_hash(SEED_OFFSET, backend.key) % m;
        let skip = if m == 1 {
            1
        } else {
            coprime_skip(key_hash(SEED_SKIP, backend.key) % (m - 1) + 1, m)
        };
        Cursor {
            id: backend.id,
            pos: offset,
            skip,
        }
    }
}

/// Moves `skip` (in `1..m`) up to the next value coprime with `m`, wrapping to 1, which always
/// is. For a prime `m` every value in `1..m` already is, and `skip` is returned unchanged.
fn coprime_skip(mut skip: u64, m: u64) -> u64 {
    while gcd(skip, m) != 1 {
        skip = if skip + 1 >= m { 1 } else { skip + 1 };
    }
    skip
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Seeds of the two key hashes. Part of the table's definition: changing either changes every
/// table, so LBs running different versions would stop agreeing on where flows go.
const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032; // "maglev02"

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, starting from `basis`.
fn fnv1a64(basis: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(basis, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The murmur3 64-bit finaliser: spreads every input bit over the whole output.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// One of the two key hashes: FNV-1a 64 from a seeded basis, then `fmix64`.
fn key_hash(seed: u64, key: &[u8]) -> u64 {
    fmix64(fnv1a64(FNV_OFFSET_BASIS ^ seed, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, time::Instant};

    /// IPv4-style keys 10.x.y.z for `n` backends, numbered from `first`.
    fn ipv4_keys(first: u32, n: u32) -> Vec<[u8; 4]> {
        (first..first + n)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                [10, a, b, c]
            })
            .collect()
    }

    /// Backends with the given keys, ids 100, 101, … and one weight each.
    fn backends<'a>(keys: &'a [[u8; 4]], weights: &[u32]) -> Vec<MaglevBackend<'a>> {
        keys.iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (key, &weight))| MaglevBackend {
                id: 100 + i as u32,
                key,
                weight,
            })
            .collect()
    }

    fn equal(keys: &[[u8; 4]]) -> Vec<MaglevBackend<'_>> {
        backends(keys, &vec![1; keys.len()])
    }

    fn shares(table: &[u32]) -> HashMap<u32, usize> {
        let mut counts = HashMap::new();
        for &id in table {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    /// A fixed-seed Fisher–Yates shuffle (splitmix64 as the generator), so tests are repeatable.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            fmix64(state)
        };
        for i in (1..items.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    /// Slots whose owner changed between two tables although the old owner was not `removed`.
    fn moved_except(before: &[u32], after: &[u32], removed: Option<u32>) -> usize {
        before
            .iter()
            .zip(after)
            .filter(|&(b, a)| b != a && Some(*b) != removed)
            .count()
    }

    const M: u32 = 65537;

    #[test]
    fn every_slot_holds_a_backend_with_weight() {
        let keys = ipv4_keys(1, 8);
        let weights = [3, 0, 1, 7, 0, 2, 1, 5];
        let set = backends(&keys, &weights);
        let live: Vec<u32> = set.iter().filter(|b| b.weight > 0).map(|b| b.id).collect();
        for size in [1, 2, 3, 7, 13, 251, 4099, M] {
            let table = build_table(&set, size);
            assert_eq!(table.len(), size as usize);
            assert!(table.iter().all(|id| live.contains(id)), "size {size}");
        }
    }

    #[test]
    fn equal_weights_spread_evenly() {
        for n in 2..=10 {
            let keys = ipv4_keys(1, n);
            let table = build_table(&equal(&keys), M);
            let counts = shares(&table);
            assert_eq!(counts.len(), n as usize);
            let ideal = f64::from(M) / f64::from(n);
            for (id, count) in counts {
                let error = (count as f64 - ideal).abs() / ideal;
                assert!(
                    error <= 0.05,
                    "n {n}: backend {id} has {count}, ideal {ideal}"
                );
            }
        }
    }

    #[test]
    fn weights_are_honoured() {
        let keys = ipv4_keys(1, 2);
        let table = build_table(&backends(&keys, &[2, 1]), M);
        let counts = shares(&table);
        let ratio = counts[&100] as f64 / counts[&101] as f64;
        assert!((ratio - 2.0).abs() / 2.0 <= 0.05, "ratio {ratio}");

        let keys = ipv4_keys(1, 6);
        let weights = [1, 2, 3, 5, 8, 13];
        let table = build_table(&backends(&keys, &weights), M);
        let counts = shares(&table);
        let total: u32 = weights.iter().sum();
        for (i, &weight) in weights.iter().enumerate() {
            let ideal = f64::from(M) * f64::from(weight) / f64::from(total);
            let count = counts[&(100 + i as u32)] as f64;
            assert!(
                (count - ideal).abs() / ideal <= 0.05,
                "weight {weight}: {count} slots, ideal {ideal}"
            );
        }
    }

    #[test]
    fn weight_zero_gets_no_slot() {
        let keys = ipv4_keys(1, 4);
        let table = build_table(&backends(&keys, &[1, 0, 1, 1]), M);
        assert!(!table.contains(&101));
        assert_eq!(shares(&table).len(), 3);
        // A weight-0 backend is exactly as if it were absent.
        let without = [&keys[0], &keys[2], &keys[3]]
            .iter()
            .zip([100, 102, 103])
            .map(|(key, id)| MaglevBackend {
                id,
                key: &key[..],
                weight: 1,
            })
            .collect::<Vec<_>>();
        assert_eq!(table, build_table(&without, M));
    }

    #[test]
    fn no_backend_with_weight_gives_an_empty_table() {
        assert!(build_table(&[], M).is_empty());
        let keys = ipv4_keys(1, 3);
        assert!(build_table(&backends(&keys, &[0, 0, 0]), M).is_empty());
        assert!(build_table(&equal(&keys), 0).is_empty());
    }

    #[test]
    fn order_of_the_backends_does_not_matter() {
        let keys = ipv4_keys(1, 12);
        let weights = [1, 4, 0, 2, 2, 9, 1, 1, 3, 0, 5, 1];
        let mut set = backends(&keys, &weights);
        // A duplicate key with another id: only the lowest id may count, in any order.
        set.push(MaglevBackend {
            id: 7,
            key: &keys[3],
            weight: 6,
        });
        let reference = build_table(&set, M);
        set.reverse();
        assert_eq!(build_table(&set, M), reference);
        for seed in 1..=8 {
            shuffle(&mut set, seed);
            assert_eq!(build_table(&set, M), reference, "shuffle {seed}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_lowest_id() {
        let keys = ipv4_keys(1, 3);
        let mut set = equal(&keys);
        let alone = build_table(&set, 251);
        // Same key as backend 101, higher id: ignored entirely.
        set.insert(
            0,
            MaglevBackend {
                id: 900,
                key: &keys[1],
                weight: 50,
            },
        );
        assert_eq!(build_table(&set, 251), alone);
        // Same key, lower id: replaces backend 101 (same permutation, same weight).
        set.push(MaglevBackend {
            id: 5,
            key: &keys[1],
            weight: 1,
        });
        let replaced: Vec<u32> = alone
            .iter()
            .map(|&id| if id == 101 { 5 } else { id })
            .collect();
        assert_eq!(build_table(&set, 251), replaced);
        // A weight-0 entry never shadows a live backend with the same key.
        let set = [
            MaglevBackend {
                id: 1,
                key: &keys[0],
                weight: 0,
            },
            MaglevBackend {
                id: 2,
                key: &keys[0],
                weight: 1,
            },
        ];
        assert_eq!(build_table(&set, 7), vec![2; 7]);
    }

    /// First addresses of the key sets the disruption tests run on.
    const KEY_SETS: [u32; 4] = [1, 1000, 40_000, 77_777];

    #[test]
    fn removing_a_backend_moves_little_else() {
        // Beyond the removed backend's own slots, at most this share of M may change owner.
        for (n, bound) in [(3, BOUND_3), (5, BOUND_5), (10, BOUND_10)] {
            let mut worst = 0;
            for first in KEY_SETS {
                let keys = ipv4_keys(first, n);
                let set = equal(&keys);
                let before = build_table(&set, M);
                for removed in 0..n as usize {
                    let mut rest = set.clone();
                    let gone = rest.remove(removed).id;
                    let after = build_table(&rest, M);
                    assert!(!after.contains(&gone));
                    worst = worst.max(moved_except(&before, &after, Some(gone)));
                }
            }
            let fraction = worst as f64 / f64::from(M);
            println!("remove 1 of {n}: at most {worst} other slots moved ({fraction:.4} of M)");
            assert!(fraction < bound, "n {n}: {fraction}");
        }
    }

    // Measured on `KEY_SETS`: 0.0006, 0.0017 and 0.0033 of M; the worst of 40 other key sets
    // was 0.0029, 0.0040 and 0.0086.
    const BOUND_3: f64 = 0.005;
    const BOUND_5: f64 = 0.006;
    const BOUND_10: f64 = 0.01;

    #[test]
    fn removing_a_weighted_backend_moves_little_else() {
        let keys = ipv4_keys(1, 6);
        let set = backends(&keys, &[1, 2, 3, 4, 5, 10]);
        let before = build_table(&set, M);
        for removed in 0..set.len() {
            let mut rest = set.clone();
            let gone = rest.remove(removed).id;
            let after = build_table(&rest, M);
            let fraction = moved_except(&before, &after, Some(gone)) as f64 / f64::from(M);
            println!("weighted: remove {gone}: {fraction:.4} of M moved besides its own");
            // Measured at most 0.0013 of M.
            assert!(fraction < 0.005, "removed {gone}: {fraction}");
        }
    }

    #[test]
    fn adding_a_backend_moves_about_its_share() {
        for n in [3, 5, 10] {
            let share = 1.0 / f64::from(n + 1);
            let (mut most_moved, mut worst_extra) = (0.0f64, 0.0f64);
            for first in KEY_SETS {
                let keys = ipv4_keys(first, n + 1);
                let set = equal(&keys);
                let before = build_table(&set[..n as usize], M);
                let after = build_table(&set, M);
                let new_id = set[n as usize].id;
                let moved = moved_except(&before, &after, None) as f64 / f64::from(M);
                let to_new = after.iter().filter(|&&id| id == new_id).count() as f64;
                let to_new = to_new / f64::from(M);
                // The new backend takes its fair share of slots...
                assert!((to_new - share).abs() / share < 0.01, "n {n}: {to_new}");
                most_moved = most_moved.max(moved);
                // ...and few other slots change owner.
                worst_extra = worst_extra.max(moved - to_new);
            }
            println!(
                "add 1 to {n}: at most {most_moved:.4} of M moved (1/(n+1) = {share:.4}), \
                 at most {worst_extra:.4} of M to an old backend"
            );
            assert!(worst_extra < ADD_EXTRA_BOUND, "n {n}: {worst_extra}");
        }
    }

    /// Measured on `KEY_SETS`: 0.0011, 0.0035 and 0.0029 of M for n = 3, 5, 10; the worst of
    /// 40 other key sets was 0.0100.
    const ADD_EXTRA_BOUND: f64 = 0.015;

    #[test]
    fn tiny_and_edge_sizes() {
        let keys = ipv4_keys(1, 20);
        // Size 1: the one slot goes to some live backend.
        let table = build_table(&equal(&keys[..3]), 1);
        assert_eq!(table.len(), 1);
        assert!((100..103).contains(&table[0]));
        // Size 7, three backends: all present, 2 or 3 slots each.
        let table = build_table(&equal(&keys[..3]), 7);
        let counts = shares(&table);
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&c| (2..=3).contains(&c)), "{counts:?}");
        // A single backend fills everything.
        let table = build_table(&equal(&keys[..1]), 251);
        assert_eq!(table, vec![100; 251]);
        // More backends than slots: every slot filled, no panic.
        let table = build_table(&equal(&keys), 7);
        assert_eq!(table.len(), 7);
        assert!(table.iter().all(|id| (100..120).contains(id)));
        // Non-prime sizes still fill every slot.
        for size in (1..=64).chain([1000, 65536]) {
            let table = build_table(&equal(&keys[..5]), size);
            assert_eq!(table.len(), size as usize);
            assert!(
                table.iter().all(|id| (100..105).contains(id)),
                "size {size}"
            );
        }
        // The largest id is a value like any other.
        let set = [MaglevBackend {
            id: u32::MAX,
            key: &keys[0],
            weight: 1,
        }];
        assert_eq!(build_table(&set, 13), vec![u32::MAX; 13]);
    }

    #[test]
    fn large_weights_on_a_small_table_terminate() {
        let keys = ipv4_keys(1, 5);
        let weights = [1000, 1, 999, 500, 7];
        let table = build_table(&backends(&keys, &weights), 251);
        assert_eq!(table.len(), 251);
        let counts = shares(&table);
        // 1000 : 999 : 500 share almost all of it.
        assert!(counts[&100].abs_diff(counts[&102]) <= 1, "{counts:?}");
        assert!(counts[&100].abs_diff(2 * counts[&103]) <= 2, "{counts:?}");
        // Extreme ratios and weights do not loop or overflow either.
        let table = build_table(&backends(&keys, &[u32::MAX, 1, u32::MAX, 1, 1]), 251);
        assert_eq!(table.len(), 251);
        assert!(table.iter().all(|&id| id == 100 || id == 102));
    }

    #[test]
    fn key_hashes_are_fixed() {
        // FNV-1a 64 test vectors (Fowler/Noll/Vo reference).
        assert_eq!(fnv1a64(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
        // The composed hashes are part of the table's definition: every LB of a fleet must
        // compute the same ones, whatever its version. These values must never change.
        assert_eq!(key_hash(SEED_OFFSET, &[10, 0, 0, 1]), PINNED_OFFSET_HASH);
        assert_eq!(key_hash(SEED_SKIP, &[10, 0, 0, 1]), PINNED_SKIP_HASH);
        assert_ne!(PINNED_OFFSET_HASH, PINNED_SKIP_HASH);
    }

    const PINNED_OFFSET_HASH: u64 = 0x9d1e_f3d6_35ff_4467;
    const PINNED_SKIP_HASH: u64 = 0x1413_f68f_4ae5_b5de;

    /// Build time benchmark: `cargo test -p xdp-lb --release --lib maglev -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; run in release with --nocapture"]
    fn build_time() {
        for (size, n) in [(65537u32, 100u32), (655_373, 1000)] {
            let keys = ipv4_keys(1, n);
            let set = equal(&keys);
            let weights: Vec<u32> = (0..n).map(|i| 1 + i % 7).collect();
            let weighted = backends(&keys, &weights);
            for (label, set) in [("equal", &set), ("weights 1..7", &weighted)] {
                let mut best = f64::MAX;
                for _ in 0..10 {
                    let start = Instant::now();
                    let table = build_table(set, size);
                    best = best.min(start.elapsed().as_secs_f64());
                    assert_eq!(table.len(), size as usize);
                }
                println!("M {size}, N {n}, {label}: best of 10 {:.3} ms", best * 1e3);
            }
        }
    }
}
