//! Step 4 of the compiler: each class's rules → the port intervals the
//! kernel searches, per protocol.
//!
//! A packet's port slot is its destination port for TCP and UDP,
//! `type << 8 | code` for ICMP and ICMPv6, and zero for every other
//! protocol. For each protocol a class's rules name, the slots become
//! sorted, disjoint intervals, each naming one rule; the class's
//! protocol-`all` rule also gets a set of its own ([`PortSet::proto`]
//! `None`) for the protocols the class has no set for.
//!
//! Where rules overlap, the interval names the most specific match: a
//! port range counts as the minimal cover of aligned power-of-two blocks
//! ([`aligned_blocks`]), and the longer-prefix block wins, then the lower
//! rule index. This only decides which rule a packet is counted toward
//! (any of them allows it); it is the attribution sg has always had.

use std::collections::BTreeMap;

use foldhash::{HashSet, HashSetExt as _};

use sg_common::{RULE_F_ANYWHERE, RuleInterval, RuleRef};

use super::{
    ClassInfo, Family,
    resolve::{Net, anywhere},
};
use crate::config::{PortMatch, Proto};

/// One protocol's intervals of a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet {
    /// `None`: every protocol the class has no set for.
    pub proto: Option<u8>,
    /// Sorted, disjoint, never empty; neighbours naming the same rule are
    /// merged.
    pub intervals: Vec<RuleInterval>,
}

/// Rank of a protocol-`all` match, below every one-protocol match.
pub(super) const RANK_ANY_PROTO: u32 = 0;
/// Rank of a one-protocol match of every port; a block of the first `n`
/// bits of the port ranks `RANK_PROTO + n`.
pub(super) const RANK_PROTO: u32 = 1;

/// Slots `lo..=hi` of protocol `proto` (0 with [`RANK_ANY_PROTO`]: all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Match {
    pub(super) rank: u32,
    pub(super) proto: u8,
    pub(super) lo: u32,
    pub(super) hi: u32,
}

impl Match {
    fn contains(&self, inner: &Match) -> bool {
        self.rank <= inner.rank
            && (self.rank == RANK_ANY_PROTO || self.proto == inner.proto)
            && self.lo <= inner.lo
            && inner.hi <= self.hi
    }
}

/// The minimal set of aligned blocks that covers `from..=to` exactly, as
/// `(first port, prefix bits)`: the block is the ports whose first `bits`
/// bits equal those of `first`. At most 30 blocks (for 1-65534).
pub(super) fn aligned_blocks(from: u16, to: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(from), u32::from(to));
    while lo <= hi {
        let mut k = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1u32 << k) - 1 > hi {
            k -= 1;
        }
        out.push((lo as u16, 16 - k));
        lo += 1u32 << k;
    }
    out
}

/// What one rule's protocol and ports match, ranked.
pub(super) fn rule_matches(proto: Proto, ports: &PortMatch) -> Vec<Match> {
    let whole = |rank, proto| Match {
        rank,
        proto,
        lo: 0,
        hi: 0xffff,
    };
    let p = match proto {
        Proto::All => return vec![whole(RANK_ANY_PROTO, 0)],
        Proto::Number(p) => p,
    };
    let slot = |rank, lo: u16, hi: u16| Match {
        rank,
        proto: p,
        lo: lo.into(),
        hi: hi.into(),
    };
    match *ports {
        PortMatch::All
        | PortMatch::Icmp {
            icmp_type: None, ..
        } => vec![whole(RANK_PROTO, p)],
        PortMatch::Range { from, to } => aligned_blocks(from, to)
            .into_iter()
            .map(|(first, bits)| {
                let last = u32::from(first) | 0xffff >> bits;
                slot(RANK_PROTO + bits, first, last as u16)
            })
            .collect(),
        PortMatch::Icmp {
            icmp_type: Some(t),
            icmp_code: None,
        } => vec![slot(
            RANK_PROTO + 8,
            u16::from(t) << 8,
            u16::from(t) << 8 | 0xff,
        )],
        PortMatch::Icmp {
            icmp_type: Some(t),
            icmp_code: Some(c),
        } => {
            let s = u16::from(t) << 8 | u16::from(c);
            vec![slot(RANK_PROTO + 16, s, s)]
        }
    }
}

/// ICMP is IPv4's and ICMPv6 IPv6's: an `icmp` rule never matches an IPv6
/// packet whose next header is 1, nor `icmpv6` IPv4 protocol 58 (those are
/// just other protocols there, matched by `all` only).
pub(super) fn proto_in_family(proto: u8, family: Family) -> bool {
    match proto {
        sg_common::PROTO_ICMP => family == Family::V4,
        sg_common::PROTO_ICMPV6 => family == Family::V6,
        _ => true,
    }
}

/// A ranked match naming its rule.
#[derive(Clone, Copy)]
struct Block {
    m: Match,
    rule: RuleRef,
}

/// The port sets of `class`, from each rule's matches and peers (indexed
/// by rule).
pub(super) fn port_sets(
    class: &ClassInfo,
    matches: &[Vec<Match>],
    nets: &[Vec<Net>],
) -> Vec<PortSet> {
    // Matches of the class's rules whose peer is everywhere: an interval
    // inside one of them carries RULE_F_ANYWHERE, whichever rule it names.
    let everywhere: Vec<Match> = class
        .rules
        .iter()
        .filter(|&&r| anywhere(&nets[r as usize], class.family))
        .flat_map(|&r| matches[r as usize].iter().copied())
        .collect();
    // On an equal match the lower rule index wins.
    let mut taken = HashSet::new();
    let mut any: Option<Block> = None;
    let mut by_proto: BTreeMap<u8, Vec<Block>> = BTreeMap::new();
    for &r in &class.rules {
        for m in &matches[r as usize] {
            if !proto_in_family(m.proto, class.family) || !taken.insert((m.rank, m.proto, m.lo)) {
                continue;
            }
            let flags = if everywhere.iter().any(|e| e.contains(m)) {
                RULE_F_ANYWHERE
            } else {
                0
            };
            let b = Block {
                m: *m,
                rule: RuleRef { rule: r, flags },
            };
            if m.rank == RANK_ANY_PROTO {
                any = Some(b);
            } else {
                by_proto.entry(m.proto).or_default().push(b);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(b) = any {
        out.push(PortSet {
            proto: None,
            intervals: flatten(vec![b]),
        });
    }
    for (proto, mut blocks) in by_proto {
        blocks.extend(any);
        out.push(PortSet {
            proto: Some(proto),
            intervals: flatten(blocks),
        });
    }
    out
}

/// Disjoint intervals from nested-or-disjoint blocks (aligned blocks are
/// one or the other), the higher rank winning where they nest.
fn flatten(mut blocks: Vec<Block>) -> Vec<RuleInterval> {
    // Outer blocks before the blocks inside them.
    blocks.sort_by_key(|b| (b.m.lo, std::cmp::Reverse(b.m.hi), b.m.rank));
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
            if top.m.hi >= b.m.lo {
                break;
            }
            emit(next, top.m.hi, top.rule);
            next = next.max(top.m.hi + 1);
            open.pop();
        }
        if let (Some(top), Some(before)) = (open.last(), b.m.lo.checked_sub(1)) {
            emit(next, before, top.rule);
        }
        next = next.max(b.m.lo);
        open.push(b);
    }
    while let Some(top) = open.pop() {
        emit(next, top.m.hi, top.rule);
        next = next.max(top.m.hi + 1);
    }
    out
}
