//! Port ranges, rule matches and port sets.

use super::*;
use crate::compile::port_sets::{aligned_blocks, port_sets, rule_matches};
use crate::config::{ICMP, ICMPV6, TCP, UDP};

/// Independent reference: split the port space recursively.
fn prefixes_by_recursion(from: u16, to: u16) -> Vec<(u16, u32)> {
    fn go(lo: u32, bits: u32, from: u32, to: u32, out: &mut Vec<(u16, u32)>) {
        let size = 1u32 << (16 - bits);
        let hi = lo + size - 1;
        if hi < from || lo > to {
            return;
        }
        if from <= lo && hi <= to {
            out.push((lo as u16, bits));
            return;
        }
        go(lo, bits + 1, from, to, out);
        go(lo + size / 2, bits + 1, from, to, out);
    }
    let mut out = Vec::new();
    go(0, 0, u32::from(from), u32::from(to), &mut out);
    out
}

/// The blocks are aligned, in order, contiguous, and cover exactly
/// `from..=to`.
fn check_cover(from: u16, to: u16, blocks: &[(u16, u32)]) {
    let mut next = u32::from(from);
    for &(start, bits) in blocks {
        assert!(bits <= 16);
        let size = 1u32 << (16 - bits);
        assert_eq!(
            u32::from(start) % size,
            0,
            "{from}-{to}: {start}/{bits} is not aligned"
        );
        assert_eq!(
            u32::from(start),
            next,
            "{from}-{to}: gap or overlap at {start}"
        );
        next += size;
    }
    assert_eq!(next, u32::from(to) + 1, "{from}-{to}: cover ends at {next}");
}

#[test]
fn aligned_blocks_known_counts() {
    assert_eq!(aligned_blocks(0, 65535), vec![(0, 0)]);
    assert_eq!(aligned_blocks(22, 22), vec![(22, 16)]);
    assert_eq!(aligned_blocks(1024, 65535).len(), 6);
    assert_eq!(aligned_blocks(1, 65535).len(), 16);
    assert_eq!(aligned_blocks(0, 65534).len(), 16);
    assert_eq!(aligned_blocks(1, 65534).len(), 30);
    assert_eq!(aligned_blocks(0, 0), vec![(0, 16)]);
    assert_eq!(aligned_blocks(65535, 65535), vec![(65535, 16)]);
    assert_eq!(aligned_blocks(65534, 65535), vec![(65534, 15)]);
    assert_eq!(aligned_blocks(0, 1), vec![(0, 15)]);
    assert_eq!(aligned_blocks(32768, 65535), vec![(32768, 1)]);
}

#[test]
fn aligned_blocks_cover_exactly_and_minimally() {
    let edges = [0u16, 1, 2, 3, 1023, 1024, 32767, 32768, 65533, 65534, 65535];
    let mut ranges = Vec::new();
    for &a in &edges {
        for &b in &edges {
            if a <= b {
                ranges.push((a, b));
            }
        }
    }
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        let a = rng.below(65536) as u16;
        let b = if rng.chance(30) {
            a.saturating_add(rng.below(64) as u16)
        } else {
            rng.below(65536) as u16
        };
        ranges.push((a.min(b), a.max(b)));
    }
    let mut worst = 0;
    for (from, to) in ranges {
        let blocks = aligned_blocks(from, to);
        check_cover(from, to, &blocks);
        assert_eq!(blocks, prefixes_by_recursion(from, to), "{from}-{to}");
        assert!(blocks.len() <= 30, "{from}-{to}: {} blocks", blocks.len());
        worst = worst.max(blocks.len());
    }
    assert_eq!(worst, 30);
}

#[test]
fn aligned_blocks_bitmap_check_for_edge_ranges() {
    for (from, to) in [
        (0u16, 0u16),
        (0, 65535),
        (1, 65535),
        (65535, 65535),
        (1, 65534),
        (7, 9000),
    ] {
        let blocks = aligned_blocks(from, to);
        for port in 0..=65535u16 {
            let hits = blocks
                .iter()
                .filter(|&&(start, bits)| {
                    let m = if bits == 0 {
                        0
                    } else {
                        u16::MAX << (16 - bits)
                    };
                    port & m == start
                })
                .count();
            let want = usize::from((from..=to).contains(&port));
            assert_eq!(hits, want, "{from}-{to} port {port}");
        }
    }
}

/// `(rank, proto, lo, hi)` of each match of a rule.
fn shapes(proto: Proto, ports: &PortMatch) -> Vec<(u32, u8, u32, u32)> {
    rule_matches(proto, ports)
        .into_iter()
        .map(|m| (m.rank, m.proto, m.lo, m.hi))
        .collect()
}

#[test]
fn rule_matches_shapes() {
    assert_eq!(shapes(Proto::All, &PortMatch::All), vec![(0, 0, 0, 65535)]);
    assert_eq!(shapes(TCP, &PortMatch::All), vec![(1, 6, 0, 65535)]);
    assert_eq!(
        shapes(Proto::Number(47), &PortMatch::All),
        vec![(1, 47, 0, 65535)]
    );
    assert_eq!(
        shapes(UDP, &PortMatch::Range { from: 53, to: 53 }),
        vec![(17, 17, 53, 53)]
    );
    assert_eq!(
        shapes(
            TCP,
            &PortMatch::Range {
                from: 1024,
                to: 65535
            }
        ),
        vec![
            (7, 6, 1024, 2047),
            (6, 6, 2048, 4095),
            (5, 6, 4096, 8191),
            (4, 6, 8192, 16383),
            (3, 6, 16384, 32767),
            (2, 6, 32768, 65535)
        ]
    );
    let none = PortMatch::Icmp {
        icmp_type: None,
        icmp_code: None,
    };
    let t = PortMatch::Icmp {
        icmp_type: Some(8),
        icmp_code: None,
    };
    let tc = PortMatch::Icmp {
        icmp_type: Some(3),
        icmp_code: Some(4),
    };
    assert_eq!(shapes(ICMP, &none), vec![(1, 1, 0, 65535)]);
    assert_eq!(shapes(ICMP, &t), vec![(9, 1, 8 << 8, 8 << 8 | 255)]);
    assert_eq!(shapes(ICMPV6, &tc), vec![(17, 58, 3 << 8 | 4, 3 << 8 | 4)]);
}

/// A class of `rules` (`(proto, ports)`, indexed from 0), no peer
/// everywhere.
fn class_sets(family: Family, rules: &[(Proto, PortMatch)]) -> Vec<PortSet> {
    let class = ClassInfo {
        id: 7,
        family,
        rules: (0..rules.len() as u32).collect(),
        port_sets: Vec::new(),
    };
    let matches: Vec<_> = rules.iter().map(|(p, m)| rule_matches(*p, m)).collect();
    port_sets(&class, &matches, &vec![Vec::new(); rules.len()])
}

fn runs(set: &PortSet) -> Vec<(u16, u16, u32)> {
    set.intervals
        .iter()
        .map(|i| (i.lo, i.hi, i.rule.rule))
        .collect()
}

#[test]
fn a_range_inside_a_wider_range_splits_it() {
    let range = |from, to| PortMatch::Range { from, to };
    let sets = class_sets(
        Family::V4,
        &[
            (TCP, range(1000, 1999)),
            (TCP, range(1500, 1500)),
            (UDP, PortMatch::All),
        ],
    );
    assert_eq!(sets.len(), 2, "no protocol-all rule, so no fallback set");
    assert_eq!(sets[0].proto, Some(6));
    assert_eq!(
        runs(&sets[0]),
        vec![(1000, 1499, 0), (1500, 1500, 1), (1501, 1999, 0)]
    );
    assert_eq!(sets[1].proto, Some(17));
    assert_eq!(runs(&sets[1]), vec![(0, 65535, 2)]);
}

#[test]
fn protocol_all_is_the_fallback_and_loses_to_any_protocol_rule() {
    let sets = class_sets(
        Family::V6,
        &[
            (Proto::All, PortMatch::All),
            (TCP, PortMatch::Range { from: 22, to: 22 }),
            // IPv4's ICMP is no protocol of an IPv6 class.
            (ICMP, PortMatch::All),
        ],
    );
    assert_eq!(sets.len(), 2);
    assert_eq!((sets[0].proto, runs(&sets[0])), (None, vec![(0, 65535, 0)]));
    assert_eq!(
        (sets[1].proto, runs(&sets[1])),
        (Some(6), vec![(0, 21, 0), (22, 22, 1), (23, 65535, 0)])
    );
}

/// Random rules of one class: each port's interval names the best match
/// (highest rank, then lowest rule index), found by brute force.
#[test]
fn intervals_name_the_best_match() {
    let mut rng = Rng::new(0x5eed);
    for round in 0..300 {
        let rules: Vec<(Proto, PortMatch)> = (0..rng.below(8) + 1)
            .map(|_| {
                let proto = Proto::Number(rng.pick(&[6u8, 17, 1]));
                match rng.below(5) {
                    0 => (Proto::All, PortMatch::All),
                    1 => (proto, PortMatch::All),
                    2 => {
                        let p = rng.below(65536) as u16;
                        (proto, PortMatch::Range { from: p, to: p })
                    }
                    _ => {
                        let a = rng.below(65536) as u16;
                        let b = a.saturating_add(rng.below(3000) as u16);
                        (proto, PortMatch::Range { from: a, to: b })
                    }
                }
            })
            .collect();
        let sets = class_sets(Family::V4, &rules);
        let matches: Vec<_> = rules.iter().map(|(p, m)| rule_matches(*p, m)).collect();
        let best = |proto: u8, port: u32| {
            (0..rules.len() as u32)
                .flat_map(|r| matches[r as usize].iter().map(move |m| (m, r)))
                .filter(|(m, _)| (m.rank == 0 || m.proto == proto) && m.lo <= port && port <= m.hi)
                .max_by_key(|(m, r)| (m.rank, std::cmp::Reverse(*r)))
                .map(|(_, r)| r)
        };
        let lookup = |proto: u8, port: u16| {
            let set = sets
                .iter()
                .find(|s| s.proto == Some(proto))
                .or_else(|| sets.iter().find(|s| s.proto.is_none()))?;
            set.intervals
                .iter()
                .find(|i| i.lo <= port && port <= i.hi)
                .map(|i| i.rule.rule)
        };
        // Every match edge and its neighbours, and a sample between.
        let mut ports: Vec<u32> = (0..=65535u32).step_by(997).chain([65535]).collect();
        for m in matches.iter().flatten() {
            ports.extend([m.lo.saturating_sub(1), m.lo, m.hi, (m.hi + 1).min(65535)]);
        }
        for proto in [6u8, 17, 1, 47] {
            for &port in &ports {
                assert_eq!(
                    lookup(proto, port as u16),
                    best(proto, port),
                    "round {round}: proto {proto} port {port}: {rules:?}"
                );
            }
        }
    }
}
