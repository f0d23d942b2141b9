//! Classification: two lookups whatever the number of rules, each an
//! exact-match hash, then the LPM trie when the hash misses.
//! 1. (policy, peer address) -> class: the set of rules whose peer covers it.
//! 2. (class, protocol, port) -> the rule that allows it.

use aya_ebpf::maps::lpm_trie::Key;
use sg_common::{
    FAMILY_V4, ID_PREFIX_BITS, PeerKeyV4, PeerKeyV6, RULE_PREFIX_FULL, RuleKey, RuleRef,
};

use crate::{
    maps::{PEER_HOSTS_V4, PEER_HOSTS_V6, PEERS_V4, PEERS_V6, RULES, RULES_EXACT},
    parse::Packet,
};

/// LPM keys, kept in per-CPU scratch rather than on the stack.
pub struct LookupKeys {
    pub peer_v4: Key<PeerKeyV4>,
    pub peer_v6: Key<PeerKeyV6>,
    pub rule: Key<RuleKey>,
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
    keys.rule = Key::new(
        RULE_PREFIX_FULL,
        RuleKey {
            class: class.to_be_bytes(),
            proto: pkt.proto,
            port: port.to_be_bytes(),
            _pad: 0,
        },
    );
    match unsafe { RULES_EXACT.get(&keys.rule.data) } {
        Some(r) => Some(*r),
        None => RULES.get(&keys.rule).copied(),
    }
}
