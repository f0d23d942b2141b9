//! Classification: two steps whatever the number of rules.
//! 1. (policy, peer address) -> class, the set of rules whose peer covers
//!    it: an exact-match hash, then the LPM trie when the hash misses.
//! 2. (class, protocol, port) -> the rule that allows it: a hash names the
//!    class's port intervals for the protocol, and a binary search over
//!    them (at most 16 probes of an array) finds the port's.

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    FAMILY_V4, ID_PREFIX_BITS, PeerKeyV4, PeerKeyV6, RULE_SEARCH_STEPS, RuleRef, RuleSetKey,
    RuleSpan,
};

use crate::{
    maps::{PEER_HOSTS_V4, PEER_HOSTS_V6, PEERS_V4, PEERS_V6, RULE_INTERVALS, RULE_SETS},
    parse::Packet,
};

/// LPM keys, kept in per-CPU scratch rather than on the stack.
pub struct LookupKeys {
    pub peer_v4: Key<PeerKeyV4>,
    pub peer_v6: Key<PeerKeyV6>,
}

/// Returns the rule of `policy` that allows `pkt`, whose remote
/// end is `peer` (the source on ingress, the destination on egress).
#[inline(always)]
pub fn allowing_rule(
    keys: &mut LookupKeys,
    policy: u32,
    pkt: &Packet,
    peer: &[u8; 16],
) -> Option<RuleRef> {
    let policy = policy.to_be_bytes();
    let class = if pkt.family == FAMILY_V4 {
        let mut addr = [0u8; 4];
        addr.copy_from_slice(&peer[..4]);
        keys.peer_v4 = Key::new(ID_PREFIX_BITS + 32, PeerKeyV4 { policy, addr });
        match unsafe { PEER_HOSTS_V4.get(&keys.peer_v4.data) } {
            Some(class) => *class,
            None => *PEERS_V4.get(&keys.peer_v4)?,
        }
    } else {
        keys.peer_v6 = Key::new(
            ID_PREFIX_BITS + 128,
            PeerKeyV6 {
                policy,
                addr: *peer,
            },
        );
        match unsafe { PEER_HOSTS_V6.get(&keys.peer_v6.data) } {
            Some(class) => *class,
            None => *PEERS_V6.get(&keys.peer_v6)?,
        }
    };
    // ICMP rules match on type and code where other protocols have a port.
    let port = if pkt.is_icmp() {
        (pkt.icmp_type as u16) << 8 | pkt.icmp_code as u16
    } else {
        pkt.dst_port
    };
    let mut key = RuleSetKey {
        class,
        proto: pkt.proto,
        any: 0,
        _pad: [0; 2],
    };
    let span = match unsafe { RULE_SETS.get(&key) } {
        Some(span) => *span,
        None => {
            // No rule names this protocol: only rules of protocol `all`.
            key.proto = 0;
            key.any = 1;
            *unsafe { RULE_SETS.get(&key) }?
        }
    };
    search(span, port)
}

/// The interval of `span` that holds `port`, by binary search. Each step
/// adds `half` or nothing through a mask rather than a branch, so the
/// verifier sees one path per step, and the step count is bounded.
#[inline(always)]
fn search(span: RuleSpan, port: u16) -> Option<RuleRef> {
    if span.len == 0 {
        return None;
    }
    let port = port as u32;
    let mut base = span.first;
    let mut n = span.len;
    for _ in 0..RULE_SEARCH_STEPS {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        let probe = RULE_INTERVALS.get(base.wrapping_add(half))?;
        // All ones when the probe starts after `port` (both are 16-bit, so
        // the subtraction borrows exactly then).
        let after = ((port.wrapping_sub(probe.lo as u32)) as i32 >> 31) as u32;
        base = base.wrapping_add(half & !after);
        n -= half;
    }
    let found = RULE_INTERVALS.get(base)?;
    if found.lo as u32 <= port && port <= found.hi as u32 {
        Some(found.rule)
    } else {
        None
    }
}
