//! Classification: two steps whatever the number of rules.
//! 1. (policy, peer address) -> class, the set of rules whose peer covers
//!    it: a hash of hosts, then a binary search on prefix lengths (at most
//!    8 hash lookups).
//! 2. (class, protocol, port) -> the rule that allows it: a hash names the
//!    class's port intervals for the protocol, and a binary search over
//!    them (at most 16 probes of an array) finds the port's.

use sg_common::{
    FAMILY_V4, PEER_F_LONGER, PEER_SEARCH_STEPS, PeerKeyV4, PeerKeyV6, PeerLengthsKey,
    PeerNetKeyV4, PeerNetKeyV6, RULE_SEARCH_STEPS, RuleRef, RuleSetKey, RuleSpan,
};

use crate::{
    maps::{
        PEER_HOSTS_V4, PEER_HOSTS_V6, PEER_LENGTHS, PEER_NETS_V4, PEER_NETS_V6, RULE_INTERVALS,
        RULE_SETS,
    },
    parse::Packet,
};

/// Keys of the peer search, kept in per-CPU scratch rather than on the
/// stack.
pub struct LookupKeys {
    pub net_v4: PeerNetKeyV4,
    pub net_v6: PeerNetKeyV6,
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
    let class = peer_class(keys, policy, pkt.family, peer)?;
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

/// The class of the longest peer prefix of `policy` that holds `peer`: a
/// host first, then a binary search on the policy's prefix lengths. A hit
/// on a marker (or a prefix with longer ones inside) goes on to longer
/// lengths, a miss to shorter ones; each hit carries the class of the
/// longest real prefix that holds it, so the last one seen is the answer.
#[inline(always)]
fn peer_class(keys: &mut LookupKeys, policy: u32, family: u8, peer: &[u8; 16]) -> Option<u32> {
    let policy_be = policy.to_be_bytes();
    let v4 = family == FAMILY_V4;
    let mut addr4 = [0u8; 4];
    addr4.copy_from_slice(&peer[..4]);
    let host = if v4 {
        let key = PeerKeyV4 {
            policy: policy_be,
            addr: addr4,
        };
        unsafe { PEER_HOSTS_V4.get(&key) }
    } else {
        let key = PeerKeyV6 {
            policy: policy_be,
            addr: *peer,
        };
        unsafe { PEER_HOSTS_V6.get(&key) }
    };
    if let Some(class) = host {
        return Some(*class);
    }
    let lens = unsafe {
        PEER_LENGTHS.get(&PeerLengthsKey {
            policy,
            family,
            _pad: [0; 3],
        })
    }?;
    let count = lens.count;
    let v4_addr = u32::from_be_bytes(addr4);
    let mut half = [0u8; 8];
    half.copy_from_slice(&peer[..8]);
    let hi = u64::from_be_bytes(half);
    half.copy_from_slice(&peer[8..]);
    let lo = u64::from_be_bytes(half);
    let mut best = 0u32;
    let mut node = 1u32;
    for _ in 0..PEER_SEARCH_STEPS {
        if node > count {
            break;
        }
        let len = *lens.lens.get((node - 1) as usize)? as u32;
        let found = if v4 {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            keys.net_v4 = PeerNetKeyV4 {
                policy: policy_be,
                len: len as u8,
                _pad: [0; 3],
                addr: (v4_addr & mask).to_be_bytes(),
            };
            unsafe { PEER_NETS_V4.get(&keys.net_v4) }
        } else {
            let (mask_hi, mask_lo) = if len >= 64 {
                (u64::MAX, u64::MAX.checked_shl(128 - len).unwrap_or(0))
            } else {
                (u64::MAX.checked_shl(64 - len).unwrap_or(0), 0)
            };
            let mut addr = [0u8; 16];
            addr[..8].copy_from_slice(&(hi & mask_hi).to_be_bytes());
            addr[8..].copy_from_slice(&(lo & mask_lo).to_be_bytes());
            keys.net_v6 = PeerNetKeyV6 {
                policy: policy_be,
                len: len as u8,
                _pad: [0; 3],
                addr,
            };
            unsafe { PEER_NETS_V6.get(&keys.net_v6) }
        };
        match found {
            Some(net) => {
                if net.class != 0 {
                    best = net.class;
                }
                if net.flags & PEER_F_LONGER == 0 {
                    break;
                }
                node = 2 * node + 1;
            }
            None => node *= 2,
        }
    }
    if best == 0 { None } else { Some(best) }
}
