//! The verdict for one packet on one interface in one direction.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use sg_common::{
    BENCH_STOP_AFTER_CLASSIFY, BENCH_STOP_AFTER_CONNTRACK, BENCH_STOP_AFTER_IFACE,
    BENCH_STOP_AFTER_PARSE, CFG_F_REVOKE_ESTABLISHED, Direction, FAMILY_V6, FragKey, IFACE_F_AUDIT,
    IFACE_F_EGRESS_HOSTS_ONLY_V4, IFACE_F_EGRESS_HOSTS_ONLY_V6, IFACE_F_INGRESS_HOSTS_ONLY_V4,
    IFACE_F_INGRESS_HOSTS_ONLY_V6, IFACE_F_L3, IfacePolicy, NO_RULE, PROTO_ICMPV6, PROTO_TCP,
    PROTO_UDP, Reason, RuntimeConfig,
};

use crate::{
    bench,
    conntrack::{self, Flow, Kind, Lookup},
    counters::{AUDITED, code, count_drop, count_hit},
    events::emit_drop,
    fragments,
    maps::{CONFIG, IFACE_FAST, IFACE_POLICY, SCRATCH},
    nacl,
    parse::{self, Bytes, Packet, Parsed},
    policy::{LookupKeys, Prefixes, allowing_rule},
    related,
};

pub(crate) enum Verdict {
    Pass,
    Drop,
}

/// Per-CPU working memory for one packet.
pub(crate) struct Scratch {
    pub pkt: Packet,
    pub flow: Flow,
    pub frag: FragKey,
    pub keys: LookupKeys,
    /// A second packet: the one quoted by an ICMP error, or the one that
    /// opened a connection (revocation).
    pub inner: Packet,
    /// `counters::AUDITED` when the interface is in audit mode
    /// (`IFACE_F_AUDIT`), else 0: policy verdicts count and report as
    /// audited drops, and pass.
    pub audit: u8,
}

/// ICMPv6 that always passes (SPEC 1.10): multicast listener discovery
/// (130-132, 143; MLD-snooping switches deliver neighbour solicitations
/// only to listeners they have heard) and router/neighbour discovery
/// (133-137). IPv6 cannot work without them.
#[inline(always)]
fn is_exempt_icmpv6(pkt: &Packet) -> bool {
    pkt.family == FAMILY_V6
        && pkt.proto == PROTO_ICMPV6
        && pkt.has_l4
        && ((pkt.icmp_type >= 130 && pkt.icmp_type <= 137) || pkt.icmp_type == 143)
}

/// Every drop is counted exactly; its event may be held back (rate limit).
/// `code` is the reason, with `AUDITED` when the interface is in audit
/// mode and audits this reason: counted and reported apart, and passed.
#[inline(always)]
fn record_drop(
    pkt: &Packet,
    ifindex: u32,
    direction: Direction,
    code: u8,
    len: u32,
    now: u64,
) -> Verdict {
    count_drop(ifindex, direction, code);
    emit_drop(pkt, ifindex, direction, code, len, now, NO_RULE);
    if code & AUDITED != 0 {
        Verdict::Pass
    } else {
        Verdict::Drop
    }
}

/// The interface's policy: by index if it is in force there, else by
/// hash (large ifindexes, pins from before `IFACE_FAST`).
#[inline(always)]
fn iface_policy(ifindex: u32) -> Option<IfacePolicy> {
    if let Some(policy) = IFACE_FAST.get(ifindex).and_then(|e| e.current()) {
        return Some(policy);
    }
    unsafe { IFACE_POLICY.get(&ifindex) }.copied()
}

/// Whether sg enforces `ifindex` and, if so, whether it is an L3 link
/// (`IFACE_F_L3`: no link header).
#[inline(always)]
pub(crate) fn is_l3_link(ifindex: u32) -> Option<bool> {
    iface_policy(ifindex).map(|iface| iface.flags & IFACE_F_L3 != 0)
}

#[inline(always)]
pub(crate) fn judge(bytes: Bytes, wire_len: usize, ifindex: u32, direction: Direction) -> Verdict {
    let Some(iface) = iface_policy(ifindex) else {
        // Not enforced here (yet, or any more).
        return Verdict::Pass;
    };
    let stop = bench::stop();
    if stop == BENCH_STOP_AFTER_IFACE {
        return Verdict::Pass;
    }
    let (Some(scratch), Some(cfg)) = (SCRATCH.get_ptr_mut(0), CONFIG.get(0)) else {
        return Verdict::Drop;
    };
    let s = unsafe { &mut *scratch };
    s.audit = if iface.flags & IFACE_F_AUDIT != 0 {
        AUDITED
    } else {
        0
    };
    // The coarse clock (one tick's resolution) costs a fraction of the
    // precise one; timeouts are seconds (SPEC 1.7).
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let len = wire_len as u32;
    let l3 = iface.flags & IFACE_F_L3 != 0;
    match parse::parse(bytes, wire_len, l3, &mut s.pkt) {
        Parsed::NotIp => return Verdict::Pass,
        // Hostile or broken packets stay dropped in audit mode: they
        // guard the enforcer itself, not a policy.
        Parsed::Malformed => {
            return record_drop(
                &s.pkt,
                ifindex,
                direction,
                code(Reason::Malformed),
                len,
                now,
            );
        }
        Parsed::Ip => {}
    }
    if stop == BENCH_STOP_AFTER_PARSE {
        return Verdict::Pass;
    }
    if is_exempt_icmpv6(&s.pkt) {
        fragments::remember_first(&mut s.frag, &s.pkt, ifindex, direction, now);
        return Verdict::Pass;
    }
    if s.pkt.is_later_fragment {
        // Follows its first fragment, which was judged on its L4 header.
        return if fragments::follows_first(&mut s.frag, &s.pkt, ifindex, direction, now) {
            Verdict::Pass
        } else {
            record_drop(&s.pkt, ifindex, direction, code(Reason::Fragment), len, now)
        };
    }
    // NACLs (SPEC 2.3): ingress judges the NACL before the SGs, egress
    // after them; a denied packet is counted and reported there.
    let ingress = direction == Direction::Ingress;
    if ingress
        && iface.ingress_nacl != 0
        && !nacl::passes_ingress(s, iface.ingress_nacl, ifindex, len, now)
    {
        return Verdict::Drop;
    }
    let verdict = judge_first(s, bytes, ifindex, direction, &iface, cfg, now);
    if stop >= BENCH_STOP_AFTER_CONNTRACK {
        // Bench variants without accounting.
        return if verdict.is_ok() {
            Verdict::Pass
        } else {
            Verdict::Drop
        };
    }
    match verdict {
        Ok(rule) => {
            if !ingress
                && iface.egress_nacl != 0
                && !nacl::passes_egress(s, iface.egress_nacl, ifindex, len, now)
            {
                return Verdict::Drop;
            }
            count_hit(rule, len);
            fragments::remember_first(&mut s.frag, &s.pkt, ifindex, direction, now);
            Verdict::Pass
        }
        // Audit mode passes a policy verdict without tracking its flow:
        // the replies are judged too, and show as would-be drops where the
        // other direction would refuse them.
        Err(reason) => {
            let audit = if reason.is_audited() { s.audit } else { 0 };
            record_drop(&s.pkt, ifindex, direction, code(reason) | audit, len, now)
        }
    }
}

/// Conntrack first, then the rules. Returns the rule to credit the packet
/// to: the one that allows it, or the one that opened its connection.
#[inline(always)]
fn judge_first(
    s: &mut Scratch,
    bytes: Bytes,
    ifindex: u32,
    direction: Direction,
    iface: &IfacePolicy,
    cfg: &RuntimeConfig,
    now: u64,
) -> Result<u32, Reason> {
    let policy = if direction == Direction::Ingress {
        iface.ingress_policy
    } else {
        iface.egress_policy
    };
    let prefixes = prefix_search(iface.flags, direction, s.pkt.family);
    if conntrack::kind(&s.pkt) == Kind::Stateless {
        if related::is_error(&s.pkt) && is_related(s, bytes, ifindex, iface, direction, now) {
            return Ok(NO_RULE);
        }
        let pkt = &s.pkt;
        let peer = if direction == Direction::Ingress {
            &pkt.src
        } else {
            &pkt.dst
        };
        return allowing_rule(&mut s.keys, policy, pkt, peer, prefixes)
            .map(|r| r.rule)
            .ok_or(Reason::NoRule);
    }
    let pkt = &s.pkt;
    let peer = if direction == Direction::Ingress {
        &pkt.src
    } else {
        &pkt.dst
    };
    conntrack::flow_of(pkt, ifindex, &mut s.flow);
    let stop = bench::stop();
    match conntrack::track(&s.flow, pkt, cfg, now) {
        Lookup::Tracked { flags, rule } => {
            if cfg.flags & CFG_F_REVOKE_ESTABLISHED != 0 && !still_allowed(s, iface, flags) {
                conntrack::forget(&s.flow.key);
                return Err(Reason::Revoked);
            }
            return Ok(rule);
        }
        Lookup::OutOfWindow => return Err(Reason::TcpOutOfWindow),
        Lookup::Untracked if stop == BENCH_STOP_AFTER_CONNTRACK => return Ok(NO_RULE),
        Lookup::Untracked => {}
    }
    let rule = allowing_rule(&mut s.keys, policy, pkt, peer, prefixes).ok_or(Reason::NoRule)?;
    if stop == BENCH_STOP_AFTER_CLASSIFY {
        return Ok(rule.rule);
    }
    if conntrack::may_open(pkt) && !conntrack::untracked(pkt, &rule, iface.flags, direction) {
        conntrack::open(&s.flow, pkt, direction, rule.rule, cfg, now)
            .map_err(|()| Reason::ConntrackFull)?;
    }
    Ok(rule.rule)
}

/// Does the SG policy of `direction` search peer prefixes in `family`?
/// Not when the compiler marked it hosts-only there.
#[inline(always)]
fn prefix_search(flags: u32, direction: Direction, family: u8) -> Prefixes {
    let hosts_only = match (direction == Direction::Ingress, family == FAMILY_V6) {
        (true, false) => IFACE_F_INGRESS_HOSTS_ONLY_V4,
        (true, true) => IFACE_F_INGRESS_HOSTS_ONLY_V6,
        (false, false) => IFACE_F_EGRESS_HOSTS_ONLY_V4,
        (false, true) => IFACE_F_EGRESS_HOSTS_ONLY_V6,
    };
    if flags & hosts_only != 0 {
        Prefixes::None
    } else {
        Prefixes::Search
    }
}

/// Would the current rules still open the tracked connection in `s.flow`?
/// Judges the opening packet by the policy of the direction it came in.
#[inline(always)]
fn still_allowed(s: &mut Scratch, iface: &IfacePolicy, flags: u8) -> bool {
    let opened = conntrack::opened_as(&s.flow.key, flags, &mut s.inner);
    let (policy, peer) = if opened == Direction::Ingress {
        (iface.ingress_policy, &s.inner.src)
    } else {
        (iface.egress_policy, &s.inner.dst)
    };
    allowing_rule(&mut s.keys, policy, &s.inner, peer, Prefixes::Search).is_some()
}

/// Is the ICMP error in `s.pkt` related (SPEC 1.6)? Its quoted packet must
/// belong to a live tracked connection, or to a flow the current rules
/// leave untracked (1.8).
#[inline(always)]
fn is_related(
    s: &mut Scratch,
    bytes: Bytes,
    ifindex: u32,
    iface: &IfacePolicy,
    direction: Direction,
    now: u64,
) -> bool {
    if !related::quoted_packet(bytes, &s.pkt, &mut s.inner) {
        return false;
    }
    related::is_tracked(&s.inner, ifindex, &mut s.flow, now)
        || quoted_flow_untracked(s, iface, direction)
}

/// Is the flow of `s.inner`, the packet quoted by an ICMP error seen in
/// `direction`, one the current rules leave untracked? The quoted packet
/// was sent by the error's destination, so it travelled the other way: it
/// is judged by that direction's policy, and its reverse by this
/// direction's. Either one allowed by an untracked-flow rule will do.
#[inline(always)]
fn quoted_flow_untracked(s: &mut Scratch, iface: &IfacePolicy, direction: Direction) -> bool {
    if s.inner.proto != PROTO_TCP && s.inner.proto != PROTO_UDP {
        return false;
    }
    let (policy, q_policy, q_dir) = if direction == Direction::Ingress {
        (iface.ingress_policy, iface.egress_policy, Direction::Egress)
    } else {
        (
            iface.egress_policy,
            iface.ingress_policy,
            Direction::Ingress,
        )
    };
    for round in 0..2 {
        let (policy, dir) = if round == 0 {
            (q_policy, q_dir)
        } else {
            // The reverse of the quoted packet, as its peer would send it.
            core::mem::swap(&mut s.inner.src, &mut s.inner.dst);
            core::mem::swap(&mut s.inner.src_port, &mut s.inner.dst_port);
            (policy, direction)
        };
        let q = &s.inner;
        let peer = if dir == Direction::Ingress {
            &q.src
        } else {
            &q.dst
        };
        if let Some(rule) = allowing_rule(&mut s.keys, policy, q, peer, Prefixes::Search)
            && conntrack::untracked(q, &rule, iface.flags, dir)
        {
            return true;
        }
    }
    false
}
