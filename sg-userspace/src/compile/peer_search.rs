//! Peer prefixes → the kernel's peer search tables.
//!
//! Hosts go to an exact-match hash. Shorter prefixes are found by a binary
//! search on prefix lengths (Waldvogel, Varghese, Turner, Plattner:
//! "Scalable High Speed IP Routing Lookups", 1997): per policy and family,
//! the distinct lengths form a balanced tree; each prefix is a hash entry
//! keyed by (policy, length, masked address), and leaves a *marker* at
//! every tree node where the search for it turns to longer lengths. A
//! marker carries the class of the longest real prefix that holds it, so
//! a search that follows a marker and then misses still has its answer.
//! A lookup costs at most one probe per tree level (8 for IPv6), whatever
//! the number of prefixes.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;

use sg_common::{PEER_F_LONGER, PEER_MAX_LENGTHS, PeerLengths, PeerNet};

use super::{Family, resolve::mask};

/// A family's prefixes of one policy: `(length, address in the low bits)`
/// -> class.
pub(super) type Prefixes = HashMap<(u8, u128), u32>;

/// Prefixes and markers of one policy and family: `(length, address)` ->
/// their `PEER_NETS` value.
pub(super) type Nets = BTreeMap<(u8, u128), PeerNet>;

/// `addr` with only its first `len` bits.
fn masked(addr: u128, len: u8, family: Family) -> u128 {
    addr & mask(family, len)
}

/// The lengths of `sorted` as a tree in an array (node `i` at `i - 1`,
/// children `2i` and `2i + 1`), filled in order so it is a search tree.
fn tree(sorted: &[u8]) -> Vec<u8> {
    fn fill(sorted: &[u8], out: &mut [u8], next: &mut usize, node: usize) {
        if node > out.len() {
            return;
        }
        fill(sorted, out, next, 2 * node);
        out[node - 1] = sorted[*next];
        *next += 1;
        fill(sorted, out, next, 2 * node + 1);
    }
    let mut out = vec![0; sorted.len()];
    fill(sorted, &mut out, &mut 0, 1);
    out
}

/// The length tree and the hash entries (prefixes and markers) of one
/// policy's prefixes of one family.
pub(super) fn search_tables(prefixes: &Prefixes, family: Family) -> (PeerLengths, Nets) {
    let sorted: Vec<u8> = prefixes
        .keys()
        .map(|&(len, _)| len)
        .collect::<BTreeSet<u8>>()
        .into_iter()
        .collect();
    debug_assert!(sorted.len() <= PEER_MAX_LENGTHS);
    let order = tree(&sorted);
    // The class of the longest prefix that holds all of `(len, addr)`.
    let best = |len: u8, addr: u128| -> u32 {
        sorted
            .iter()
            .rev()
            .filter(|&&l| l <= len)
            .find_map(|&l| prefixes.get(&(l, masked(addr, l, family))).copied())
            .unwrap_or(0)
    };
    let mut nets: Nets = prefixes
        .iter()
        .map(|(&key, &class)| (key, PeerNet { class, flags: 0 }))
        .collect();
    for &(len, addr) in prefixes.keys() {
        // Walk from the root to this prefix's length; where the walk turns
        // to longer lengths, the search must find something to follow.
        let mut node = 1;
        while order[node - 1] != len {
            let here = order[node - 1];
            if len > here {
                let at = (here, masked(addr, here, family));
                nets.entry(at)
                    .or_insert_with(|| PeerNet {
                        class: best(at.0, at.1),
                        flags: 0,
                    })
                    .flags |= PEER_F_LONGER;
                node = 2 * node + 1;
            } else {
                node *= 2;
            }
        }
    }
    let mut lengths = PeerLengths {
        count: order.len() as u32,
        ..PeerLengths::default()
    };
    lengths.lens[..order.len()].copy_from_slice(&order);
    (lengths, nets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::tests::Rng;
    use sg_common::{PEER_SEARCH_STEPS, search::longest_prefix_class};

    /// The kernel's search, over the tables.
    fn search(lengths: &PeerLengths, nets: &Nets, addr: u128) -> u32 {
        longest_prefix_class(lengths, |len| {
            nets.get(&(len, masked(addr, len, Family::V4)))
        })
    }

    /// The longest prefix that holds `addr`, by brute force.
    fn longest(prefixes: &Prefixes, addr: u128) -> u32 {
        prefixes
            .iter()
            .filter(|&(&(len, a), _)| masked(addr, len, Family::V4) == a)
            .max_by_key(|&(&(len, _), _)| len)
            .map(|(_, &class)| class)
            .unwrap_or(0)
    }

    #[test]
    fn tree_is_a_search_tree_of_every_length() {
        let sorted: Vec<u8> = (0..32).collect();
        let order = tree(&sorted);
        let mut seen = order.clone();
        seen.sort();
        assert_eq!(seen, sorted);
        for node in 1..=order.len() {
            if 2 * node <= order.len() {
                assert!(order[2 * node - 1] < order[node - 1]);
            }
            if 2 * node < order.len() {
                assert!(order[2 * node] > order[node - 1]);
            }
        }
        // 128 lengths fit in the kernel's 8 steps.
        let deep = tree(&(0..128).collect::<Vec<u8>>());
        assert_eq!(deep.len(), 128);
        assert!(128usize.ilog2() < PEER_SEARCH_STEPS);
    }

    /// Random nested and disjoint IPv4 prefixes of many lengths: the search
    /// finds the longest match for addresses in, around and between them.
    #[test]
    fn search_finds_the_longest_prefix() {
        let mut rng = Rng::new(0x1234_5678);
        let mut next = move |n: u64| rng.below(n);
        for round in 0..400 {
            let mut prefixes = Prefixes::default();
            let base = next(1 << 32) as u128;
            for class in 1..=next(40) as u32 + 1 {
                let len = next(32) as u8;
                // Near one base address, so prefixes nest and collide.
                let addr = base ^ (next(1 << 12) as u128) << next(20);
                prefixes.insert((len, masked(addr, len, Family::V4)), class);
            }
            let (lengths, nets) = search_tables(&prefixes, Family::V4);
            let mut probes: Vec<u128> = (0..200).map(|_| base ^ next(1 << 16) as u128).collect();
            for &(len, a) in prefixes.keys() {
                let size = 1u128 << (32 - len);
                probes.extend([a, a + size - 1, a.wrapping_sub(1), a + size]);
            }
            for addr in probes.into_iter().map(|a| a & 0xffff_ffff) {
                assert_eq!(
                    search(&lengths, &nets, addr),
                    longest(&prefixes, addr),
                    "round {round}, address {addr:#x}, prefixes {prefixes:?}"
                );
            }
        }
    }
}
