//! Classification: two steps whatever the number of rules.
//! 1. (policy, peer address) -> class, the set of rules whose peer covers
//!    it: a hash of hosts, then a binary search on prefix lengths (at most
//!    8 hash lookups).
//! 2. (class, protocol, port) -> the rule that allows it: a hash names the
//!    class's port intervals for the protocol, and a binary search over
//!    them (at most 16 probes of an array) finds the port's.

use sg_common::{
    FAMILY_V4, PeerKeyV4, PeerKeyV6, PeerLengthsKey, PeerNetKeyV4, PeerNetKeyV6, RuleRef,
    RuleSetKey,
    search::{interval_rule, longest_prefix_class},
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
pub(crate) struct LookupKeys {
    pub net_v4: PeerNetKeyV4,
    pub net_v6: PeerNetKeyV6,
}

/// Whether a peer search must probe the prefix lengths (`PEER_LENGTHS`)
/// after a host miss: always, but for a policy known to name only hosts
/// in that family (`IFACE_F_*_HOSTS_ONLY_*`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefixes {
    Search,
    None,
}

/// Returns the rule of `policy` that allows `pkt`, whose remote
/// end is `peer` (the source on ingress, the destination on egress).
#[inline(always)]
pub(crate) fn allowing_rule(
    keys: &mut LookupKeys,
    policy: u32,
    pkt: &Packet,
    peer: &[u8; 16],
    prefixes: Prefixes,
) -> Option<RuleRef> {
    let class = peer_class(keys, policy, pkt.family, peer, prefixes)?;
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
    interval_rule(span, port, |i| RULE_INTERVALS.get(i))
}

/// The class of the longest peer prefix of `policy` that holds `peer`: a
/// host first, then a binary search on the policy's prefix lengths.
#[inline(always)]
fn peer_class(
    keys: &mut LookupKeys,
    policy: u32,
    family: u8,
    peer: &[u8; 16],
    prefixes: Prefixes,
) -> Option<u32> {
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
    if prefixes == Prefixes::None {
        return None;
    }
    let lens = unsafe {
        PEER_LENGTHS.get(&PeerLengthsKey {
            policy,
            family,
            _pad: [0; 3],
        })
    }?;
    let v4_addr = u32::from_be_bytes(addr4);
    let mut half = [0u8; 8];
    half.copy_from_slice(&peer[..8]);
    let hi = u64::from_be_bytes(half);
    half.copy_from_slice(&peer[8..]);
    let lo = u64::from_be_bytes(half);
    let best = longest_prefix_class(lens, |len| {
        let len = len as u32;
        if v4 {
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
        }
    });
    if best == 0 { None } else { Some(best) }
}
