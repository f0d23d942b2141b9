//! Match blocks → the kernel's rule sets.
//!
//! For each class and protocol, the ports become sorted, disjoint
//! intervals, each naming the rule of the longest block that covers it:
//! the answer an LPM lookup over the blocks would give, found in the
//! kernel by a binary search over one class's intervals. Protocol-`all`
//! blocks are folded into every protocol set of their class, and also get
//! a set of their own (`any = 1`) for the protocols the class has no set
//! for.

use std::collections::BTreeMap;

use sg_common::{RuleInterval, RuleRef, RuleSetKey};

use super::{RULE_PREFIX_ANY_PROTO, RULE_PREFIX_PROTO, RuleKey};

/// One `RULE_SETS` entry and the intervals it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub key: RuleSetKey,
    /// Sorted, disjoint, never empty; neighbours naming the same rule are
    /// merged.
    pub intervals: Vec<RuleInterval>,
}

/// A block as a port range with its priority (the prefix length).
#[derive(Clone, Copy)]
struct Block {
    lo: u32,
    hi: u32,
    prefix: u32,
    rule: RuleRef,
}

fn block(prefix: u32, key: &RuleKey, rule: RuleRef) -> Block {
    let bits = prefix.saturating_sub(RULE_PREFIX_PROTO).min(16);
    let port = u32::from(u16::from_be_bytes(key.port));
    let host_bits = 0xffff_u32 >> bits;
    Block {
        lo: port & !host_bits,
        hi: (port & !host_bits) | host_bits,
        prefix,
        rule,
    }
}

/// The rule sets of `entries` (any order), sorted by key.
pub fn rule_sets(entries: &[(u32, RuleKey, RuleRef)]) -> Vec<RuleSet> {
    // class -> (its protocol-`all` block, its blocks by protocol)
    type ClassBlocks = (Option<Block>, BTreeMap<u8, Vec<Block>>);
    let mut classes: BTreeMap<u32, ClassBlocks> = BTreeMap::new();
    for (prefix, key, rule) in entries {
        let (any, by_proto) = classes.entry(u32::from_be_bytes(key.class)).or_default();
        let b = block(*prefix, key, *rule);
        if *prefix <= RULE_PREFIX_ANY_PROTO {
            *any = Some(b);
        } else {
            by_proto.entry(key.proto).or_default().push(b);
        }
    }
    let mut out = Vec::new();
    for (class, (any, by_proto)) in classes {
        let key = |proto: u8, any: u8| RuleSetKey {
            class,
            proto,
            any,
            _pad: [0; 2],
        };
        if let Some(b) = any {
            out.push(RuleSet {
                key: key(0, 1),
                intervals: flatten(vec![b]),
            });
        }
        for (proto, mut blocks) in by_proto {
            blocks.extend(any);
            out.push(RuleSet {
                key: key(proto, 0),
                intervals: flatten(blocks),
            });
        }
    }
    out.sort_by_key(|s| s.key);
    out
}

/// Disjoint intervals from nested-or-disjoint blocks (aligned blocks are
/// one or the other), the longest prefix winning where they nest.
fn flatten(mut blocks: Vec<Block>) -> Vec<RuleInterval> {
    // Outer blocks before the blocks inside them.
    blocks.sort_by_key(|b| (b.lo, std::cmp::Reverse(b.hi), b.prefix));
    let mut out: Vec<RuleInterval> = Vec::new();
    let mut emit = |lo: u32, hi: u32, rule: RuleRef| {
        if lo > hi {
            return;
        }
        if let Some(last) = out.last_mut()
            && u32::from(last.hi) + 1 == lo
            && last.rule == rule
        {
            last.hi = hi as u16;
            return;
        }
        out.push(RuleInterval {
            lo: lo as u16,
            hi: hi as u16,
            rule,
        });
    };
    // The blocks covering `next`, innermost last.
    let mut open: Vec<Block> = Vec::new();
    let mut next = 0u32;
    for b in blocks {
        while let Some(top) = open.last().copied() {
            if top.hi >= b.lo {
                break;
            }
            emit(next, top.hi, top.rule);
            next = next.max(top.hi + 1);
            open.pop();
        }
        if let (Some(top), Some(before)) = (open.last(), b.lo.checked_sub(1)) {
            emit(next, before, top.rule);
        }
        next = next.max(b.lo);
        open.push(b);
    }
    while let Some(top) = open.pop() {
        emit(next, top.hi, top.rule);
        next = next.max(top.hi + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{RULE_PREFIX_FULL, port_prefixes, tests::Rng};
    use sg_common::{RuleSpan, search::interval_rule};

    fn key(class: u32, proto: u8, port: u16) -> RuleKey {
        RuleKey {
            class: class.to_be_bytes(),
            proto,
            port: port.to_be_bytes(),
            _pad: 0,
        }
    }

    fn rule(r: u32) -> RuleRef {
        RuleRef { rule: r, flags: 0 }
    }

    /// What an LPM lookup over `entries` answers for one packet.
    fn lpm(entries: &[(u32, RuleKey, RuleRef)], class: u32, proto: u8, port: u16) -> Option<u32> {
        entries
            .iter()
            .filter(|(prefix, k, _)| {
                let b = block(*prefix, k, RuleRef::default());
                u32::from_be_bytes(k.class) == class
                    && (*prefix <= RULE_PREFIX_ANY_PROTO || k.proto == proto)
                    && (b.lo..=b.hi).contains(&u32::from(port))
            })
            .max_by_key(|(prefix, _, _)| *prefix)
            .map(|(_, _, r)| r.rule)
    }

    /// What the kernel answers: the protocol's set, else the `any` set,
    /// then its binary search over the set's intervals, placed in an array
    /// between other entries.
    fn kernel(sets: &[RuleSet], class: u32, proto: u8, port: u16) -> Option<u32> {
        let find = |proto, any| {
            sets.iter()
                .find(|s| s.key.class == class && s.key.proto == proto && s.key.any == any)
        };
        let set = find(proto, 0).or_else(|| find(0, 1))?;
        let fence = RuleInterval {
            lo: 0,
            hi: 65535,
            rule: rule(u32::MAX),
        };
        let mut array = vec![fence; 3];
        array.extend(&set.intervals);
        array.extend([fence; 3]);
        let span = RuleSpan {
            first: 3,
            len: set.intervals.len() as u32,
        };
        interval_rule(span, port, |i| array.get(i as usize)).map(|r| r.rule)
    }

    fn well_formed(sets: &[RuleSet]) {
        for s in sets {
            assert!(!s.intervals.is_empty());
            for w in s.intervals.windows(2) {
                assert!(w[0].hi < w[1].lo, "{s:?}");
                assert!(
                    w[0].hi + 1 < w[1].lo || w[0].rule != w[1].rule,
                    "unmerged neighbours: {s:?}"
                );
            }
        }
    }

    #[test]
    fn a_range_inside_a_wider_range_splits_it() {
        let mut entries: Vec<_> = port_prefixes(1000, 1999)
            .into_iter()
            .map(|(p, bits)| (RULE_PREFIX_PROTO + bits, key(7, 6, p), rule(1)))
            .collect();
        entries.push((RULE_PREFIX_FULL, key(7, 6, 1500), rule(2)));
        entries.push((RULE_PREFIX_PROTO, key(7, 17, 0), rule(3)));
        let sets = rule_sets(&entries);
        well_formed(&sets);
        let tcp: Vec<(u16, u16, u32)> = sets[0]
            .intervals
            .iter()
            .map(|i| (i.lo, i.hi, i.rule.rule))
            .collect();
        assert_eq!(tcp, vec![(1000, 1499, 1), (1500, 1500, 2), (1501, 1999, 1)]);
        assert_eq!(sets[1].key.proto, 17);
        assert_eq!(sets[1].intervals.len(), 1);
        assert_eq!(
            (sets[1].intervals[0].lo, sets[1].intervals[0].hi),
            (0, 65535)
        );
        assert_eq!(sets.len(), 2, "no protocol-all rule, so no fallback set");
    }

    #[test]
    fn protocol_all_is_the_fallback_and_loses_to_any_protocol_rule() {
        let entries = vec![
            (RULE_PREFIX_ANY_PROTO, key(3, 0, 0), rule(9)),
            (RULE_PREFIX_FULL, key(3, 6, 22), rule(4)),
        ];
        let sets = rule_sets(&entries);
        well_formed(&sets);
        assert_eq!(kernel(&sets, 3, 6, 22), Some(4));
        assert_eq!(kernel(&sets, 3, 6, 23), Some(9));
        assert_eq!(kernel(&sets, 3, 47, 0), Some(9));
        assert_eq!(kernel(&sets, 4, 6, 22), None);
    }

    /// Random laminar block sets (what the compiler makes: aligned blocks
    /// of port ranges, ICMP types and codes, whole protocols, `all`) give
    /// the LPM answer for every port.
    #[test]
    fn intervals_answer_like_longest_prefix_match() {
        let mut rng = Rng::new(0x5eed);
        let mut next = move |n: u64| rng.below(n);
        for round in 0..300 {
            let mut entries: Vec<(u32, RuleKey, RuleRef)> = Vec::new();
            let mut taken = std::collections::HashSet::new();
            for r in 0..next(8) + 1 {
                let class = next(2) as u32 + 1;
                let proto = [6u8, 17, 1][next(3) as usize];
                let blocks: Vec<(u32, u16)> = match next(5) {
                    0 => vec![(RULE_PREFIX_ANY_PROTO, 0)],
                    1 => vec![(RULE_PREFIX_PROTO, 0)],
                    2 => vec![(RULE_PREFIX_FULL, next(65536) as u16)],
                    _ => {
                        let a = next(65536) as u16;
                        let b = a.saturating_add(next(3000) as u16);
                        port_prefixes(a, b)
                            .into_iter()
                            .map(|(p, bits)| (RULE_PREFIX_PROTO + bits, p))
                            .collect()
                    }
                };
                for (prefix, port) in blocks {
                    let proto = if prefix == RULE_PREFIX_ANY_PROTO {
                        0
                    } else {
                        proto
                    };
                    if taken.insert((class, prefix, proto, port)) {
                        entries.push((prefix, key(class, proto, port), rule(r as u32)));
                    }
                }
            }
            let sets = rule_sets(&entries);
            well_formed(&sets);
            // Every block edge and its neighbours, and a sample between.
            let mut ports: Vec<u16> = (0..=65535u16).step_by(997).chain([65535]).collect();
            for (prefix, k, _) in &entries {
                let b = block(*prefix, k, RuleRef::default());
                for p in [b.lo.saturating_sub(1), b.lo, b.hi, (b.hi + 1).min(65535)] {
                    ports.push(p as u16);
                }
            }
            for class in 1..=3 {
                for proto in [6u8, 17, 1, 47] {
                    for &port in &ports {
                        assert_eq!(
                            kernel(&sets, class, proto, port),
                            lpm(&entries, class, proto, port),
                            "round {round}: class {class} proto {proto} port {port}"
                        );
                    }
                }
            }
        }
    }
}
