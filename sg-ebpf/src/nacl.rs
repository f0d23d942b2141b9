//! Network ACLs (SPEC 2): stateless, numbered allow/deny rules, judged for
//! every packet (tracked or not, related ICMP errors too). A NACL is a
//! policy in the SG tables whose intervals name the lowest-numbered
//! matching rule, with `RULE_F_NACL_DENY` when it denies, so the same
//! bounded classification judges it (`policy::allowing_rule`). Every NACL
//! direction ends in the implicit `*` deny, compiled as a real rule, so
//! every packet matches a rule and each rule has an exact counter (hits of
//! an allow rule are allows, of a deny rule denies).

use sg_common::{Direction, NO_RULE, RULE_F_NACL_DENY, Reason};

use crate::{
    counters::{AUDITED, code, count_drop, count_hit},
    events::emit_drop,
    policy::{Prefixes, allowing_rule},
    verdict::Scratch,
};

/// [`passes`] on ingress, inlined: as a BPF-to-BPF call its frame came on
/// top of the verdict's, past the verifier's 512-byte combined stack limit;
/// inlined, the verifier walks ~490k instructions of its 1M budget.
#[inline(always)]
pub(crate) fn passes_ingress(s: &mut Scratch, nacl: u32, ifindex: u32, len: u32, now: u64) -> bool {
    passes(s, nacl, ifindex, Direction::Ingress, len, now)
}

/// [`passes`] on egress, inlined: it runs at the end of the verdict, where
/// a call would be walked once per path that reaches it.
#[inline(always)]
pub(crate) fn passes_egress(s: &mut Scratch, nacl: u32, ifindex: u32, len: u32, now: u64) -> bool {
    passes(s, nacl, ifindex, Direction::Egress, len, now)
}

/// Judges `pkt` by the NACL policy `nacl` (0: the interface has none,
/// everything passes). An allowed packet counts toward its NACL rule; a
/// denied one toward its rule and the reason `nacl_deny`, with an event
/// naming the rule. Returns whether the packet passes this layer (a deny
/// passes on an interface in audit mode, `Scratch::audit`).
#[inline(always)]
fn passes(
    s: &mut Scratch,
    nacl: u32,
    ifindex: u32,
    direction: Direction,
    len: u32,
    now: u64,
) -> bool {
    if nacl == 0 {
        return true;
    }
    let (keys, pkt) = (&mut s.keys, &s.pkt);
    let peer = if direction == Direction::Ingress {
        &pkt.src
    } else {
        &pkt.dst
    };
    // No rule at all cannot happen (`*` covers every address); if it did,
    // the implicit deny is what it means.
    let (slot, deny) = match allowing_rule(keys, nacl, pkt, peer, Prefixes::Search) {
        Some(r) => (r.rule, r.flags & RULE_F_NACL_DENY != 0),
        None => (NO_RULE, true),
    };
    count_hit(slot, len);
    if deny {
        // Audit mode (SPEC 10.2): counted and reported apart, and passed.
        let code = code(Reason::NaclDeny) | s.audit;
        count_drop(ifindex, direction, code);
        emit_drop(pkt, ifindex, direction, code, len, now, slot);
        return code & AUDITED != 0;
    }
    true
}
