//! Reference evaluator: the verdict SPEC 1 gives one packet, written as
//! plainly as possible and without the compiler's classes or tries, so that
//! it can disagree with them. The differential test runs it side by side
//! with the kernel.
//!
//! What it models:
//! - rules (1.1-1.5): the union of every rule of every attached group, a
//!   rule matching on protocol, destination port or ICMP type/code, and a
//!   peer (CIDR or `sg:` members) covering the remote address;
//! - connection tracking (1.6) as a map keyed by the flow's two endpoints
//!   and protocol, whichever side sends: TCP opens only on a bare SYN (SYN
//!   without ACK, RST or FIN), UDP, ICMP echo and other protocols open on
//!   any allowed packet (echo on a request), anything of a live flow passes
//!   (of an echo flow, only requests from its opener and replies to them);
//!   a bare SYN from either side on a closing (FIN/RST) flow is a new
//!   connection and goes to the rules;
//! - TCP sequence windows (1.6): a RST or FIN whose sequence number lies
//!   outside the window of its direction is dropped as
//!   `tcp_out_of_window` and changes nothing (see [`SeqWindow`]);
//! - untracked flows (1.8): TCP and UDP allowed by a rule from everywhere,
//!   on an interface whose other direction allows everything everywhere,
//!   open no flow;
//! - related ICMP errors (1.6): destination unreachable, time exceeded and
//!   packet too big pass when their quoted packet was sent by the error's
//!   destination, carries its L4 header, and belongs to a live flow or to
//!   a flow the rules leave untracked;
//! - ICMP belongs to IPv4 and ICMPv6 to IPv6: IPv6 next header 1 and IPv4
//!   protocol 58 are other protocols; an IPv4 peer never covers an IPv6
//!   address, IPv4-mapped ones included (1.3);
//! - always allowed (1.10): ICMPv6 130-137 and 143; non-IP frames are not
//!   packets here;
//! - hostile packets (1.11): a truncated frame is dropped as `malformed`;
//! - fragments (1.11): a non-first fragment passes only after a first
//!   fragment of the same (src, dst, proto, id) passed in the same
//!   direction, else it is dropped with reason `fragment`;
//! - revocation (1.8): with `revoke_established`, a packet of a live flow
//!   whose opening packet (opener to responder, in the direction it was
//!   first seen; an echo request of code 0 for ICMP) no rule allows any
//!   more is dropped as `revoked` and the flow forgotten;
//! - a full table (1.9): `max_entries` flows at most, dead ones included
//!   until they are swept; a packet that would open one more is dropped as
//!   `conntrack_full`, and nothing is evicted;
//! - framing: Ethernet (VLAN tags, options) or none at all (L3
//!   interfaces) never changes a verdict; flows and fragments are kept
//!   per interface, in one table whose `max_entries` all interfaces share,
//!   as in the kernel.
//!
//! - network ACLs (SPEC 2, [`verdict_with_nacl`]): on ingress the NACL
//!   first, then the groups; on egress the groups, then the NACL (a packet
//!   the groups allow has already advanced or opened its flow when the
//!   NACL drops it, as the groups' layer sits before the NACL's); every
//!   packet is judged, tracked, related or not; always-allowed packets
//!   skip it; a first fragment counts as passed only if it passed both.
//!
//! Expiry is modeled from `now`, which the caller controls; the
//! kernel's clock is its own, so the differential test keeps every run far
//! shorter than the shortest timeout.

mod flows;
mod nacl;
mod packet_spec;
mod rules;

use std::{net::IpAddr, time::Duration};

use sg::config::{Config, Direction};
use sg_common::Reason;

use crate::packet::{ACK, FIN, RST, SYN};

pub use flows::*;
pub use nacl::nacl_decision;
pub use packet_spec::*;
pub use rules::allowing_rule;
use rules::*;

/// The verdict SPEC 1 gives `pkt` travelling in `direction` through an
/// interface with `groups` attached and `local_addrs` as its addresses.
/// Advances `state` as the kernel must.
pub fn verdict(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    state: &mut ConntrackModel,
    pkt: &PacketSpec,
    direction: Direction,
    now: Duration,
) -> Outcome {
    verdict_with_nacl(
        config,
        groups,
        None,
        local_addrs,
        state,
        pkt,
        direction,
        now,
    )
}

/// [`verdict`] on an interface that also has NACL `nacl` (SPEC 2).
#[allow(clippy::too_many_arguments)]
pub fn verdict_with_nacl(
    config: &Config,
    groups: &[String],
    nacl: Option<&str>,
    local_addrs: &[IpAddr],
    state: &mut ConntrackModel,
    pkt: &PacketSpec,
    direction: Direction,
    now: Duration,
) -> Outcome {
    let proto = pkt.proto();

    // 1.11: a truncated packet is malformed, whatever it carries.
    if pkt.cut.is_some() {
        return Outcome::drop(Reason::Malformed);
    }

    // 1.10: MLD, neighbour and router discovery always pass.
    if let (false, L4::Icmp { icmp_type, .. }, false) = (
        pkt.src.is_ipv4(),
        pkt.l4,
        matches!(pkt.frag, Frag::Later { .. }),
    ) && matches!(icmp_type, 130..=137 | 143)
    {
        // A first fragment that passed lets its followers pass (1.11).
        if let Frag::First { id } = pkt.frag {
            state.fragments.insert(
                (pkt.iface, pkt.src, pkt.dst, proto, id, direction),
                now + FRAGMENT_TIMEOUT,
            );
        }
        return Outcome::PASS;
    }

    // 1.11: a non-first fragment follows its first fragment.
    if let Frag::Later { id } = pkt.frag {
        let key = (pkt.iface, pkt.src, pkt.dst, proto, id, direction);
        return match state.fragments.get(&key) {
            Some(&expires) if now <= expires => Outcome::PASS,
            _ => Outcome::drop(Reason::Fragment),
        };
    }

    let nacl_allows = |pkt: &PacketSpec| match nacl {
        Some(n) => nacl_decision(config, n, pkt, direction).1,
        None => true,
    };
    if direction == Direction::Ingress && !nacl_allows(pkt) {
        return Outcome::drop(Reason::NaclDeny);
    }
    let mut outcome = judge_whole(config, groups, local_addrs, state, pkt, direction, now);
    if direction == Direction::Egress && outcome.allowed && !nacl_allows(pkt) {
        outcome = Outcome::drop(Reason::NaclDeny);
    }
    if outcome.allowed
        && let Frag::First { id } = pkt.frag
    {
        state.fragments.insert(
            (pkt.iface, pkt.src, pkt.dst, proto, id, direction),
            now + FRAGMENT_TIMEOUT,
        );
    }
    outcome
}

fn judge_whole(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    state: &mut ConntrackModel,
    pkt: &PacketSpec,
    direction: Direction,
    now: Duration,
) -> Outcome {
    let proto = pkt.proto();
    let by_rules = allowing_rule(config, groups, local_addrs, pkt, direction).is_some();

    // ICMP other than echo has no flow of its own: a related error passes,
    // anything else goes by the rules.
    if matches!(pkt.l4, L4::Icmp { .. }) && !is_echo(pkt) {
        if related(config, groups, local_addrs, state, pkt, direction, now) {
            return Outcome::PASS;
        }
        return if by_rules {
            Outcome::PASS
        } else {
            Outcome::drop(Reason::NoRule)
        };
    }

    let key = flow_key(pkt);
    let this = (pkt.src, pkt.ports().0);
    let flags = match pkt.l4 {
        L4::Tcp { flags, .. } => flags,
        _ => 0,
    };

    // A live flow covers the packet, whichever side sent it.
    // An echo flow covers requests from its opener and replies to them
    // only: the other side's request is new traffic (1.6).
    let live = state
        .flows
        .get(&key)
        .copied()
        .filter(|f| now <= f.expires)
        .filter(|f| !is_echo(pkt) || is_echo_request(pkt) == (f.opener == this));
    if let Some(mut flow) = live {
        let from_opener = flow.opener == this;
        // A bare SYN from either side on a closing flow reuses the tuple.
        let reused = flags & (SYN | ACK | RST | FIN) == SYN
            && matches!(flow.tcp, Some(TcpState::Fin | TcpState::Rst));
        if !reused {
            if flow.tcp.is_some() && !seq_window(&mut flow, from_opener, flags, &pkt.seg) {
                return Outcome::drop(Reason::TcpOutOfWindow);
            }
            if let Some(tcp) = flow.tcp {
                flow.tcp = Some(if flags & RST != 0 {
                    TcpState::Rst
                } else if flags & FIN != 0 {
                    // Once reset, a late FIN does not reopen the wait.
                    if tcp == TcpState::Rst {
                        TcpState::Rst
                    } else {
                        TcpState::Fin
                    }
                } else if tcp == TcpState::SynSent
                    && !from_opener
                    && flags & (SYN | ACK) == SYN | ACK
                {
                    TcpState::SynRecv
                } else if tcp == TcpState::SynRecv && from_opener && flags & (SYN | ACK) == ACK {
                    TcpState::Established
                } else {
                    tcp
                });
            }
            if !from_opener {
                flow.replies += 1;
            }
            let stream = proto == UDP && flow.replies > 1;
            flow.expires = now + state.timeout(proto, flow.tcp, stream);
            if config.conntrack.revoke_established
                && !still_allowed(config, groups, local_addrs, &key, &flow)
            {
                state.flows.remove(&key);
                return Outcome::drop(Reason::Revoked);
            }
            state.flows.insert(key, flow);
            return Outcome::PASS;
        }
        // A closing tuple is reused: a new connection, for the rules.
    }

    if !by_rules {
        return Outcome::drop(Reason::NoRule);
    }
    let opens = match pkt.l4 {
        L4::Tcp { flags, .. } => flags & (SYN | ACK | RST | FIN) == SYN,
        L4::Icmp { .. } => is_echo_request(pkt),
        _ => true,
    } && !untracked(config, groups, local_addrs, pkt, direction);
    if opens {
        // 1.9: a full table refuses a new entry; an existing one (dead, or
        // a closing tuple reused) is overwritten in place.
        let capacity = state.timeouts.max_entries as usize;
        if !state.flows.contains_key(&key) && state.flows.len() >= capacity {
            return Outcome::drop(Reason::ConntrackFull);
        }
        let tcp = matches!(pkt.l4, L4::Tcp { .. }).then_some(TcpState::SynSent);
        let expires = now + state.timeout(proto, tcp, false);
        state.flows.insert(
            key,
            FlowState {
                opener: this,
                tcp,
                windows: if tcp.is_some() {
                    opening_windows(flags, &pkt.seg)
                } else {
                    [SeqWindow::default(); 2]
                },
                replies: 0,
                expires,
                opened: direction,
            },
        );
    }
    Outcome::PASS
}

/// 1.8: would the current rules still allow the packet that opened `flow`,
/// rebuilt from its key as the kernel rebuilds it?
fn still_allowed(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    key: &FlowKey,
    flow: &FlowState,
) -> bool {
    let (_, proto, x, y) = *key;
    let (opener, responder) = if flow.opener == x { (x, y) } else { (y, x) };
    let l4 = match proto {
        TCP => L4::Tcp {
            sport: opener.1,
            dport: responder.1,
            flags: SYN,
        },
        UDP => L4::Udp {
            sport: opener.1,
            dport: responder.1,
        },
        p if p == if opener.0.is_ipv4() { ICMP } else { ICMPV6 } => L4::Icmp {
            icmp_type: if opener.0.is_ipv4() { 8 } else { 128 },
            code: 0,
            id: opener.1,
        },
        other => L4::Other { proto: other },
    };
    let opening = PacketSpec::new(opener.0, responder.0, l4);
    allowing_rule(config, groups, local_addrs, &opening, flow.opened).is_some()
}

/// The flow of `pkt`: protocol and both endpoints, smaller first.
fn flow_key(pkt: &PacketSpec) -> FlowKey {
    let (sport, dport) = pkt.ports();
    let this = (pkt.src, sport);
    let other = (pkt.dst, dport);
    (pkt.iface, pkt.proto(), this.min(other), this.max(other))
}

/// Is `pkt` an ICMP error of SPEC 1.6: destination unreachable (with
/// fragmentation needed) or time exceeded, and for IPv6 packet too big?
fn is_error(pkt: &PacketSpec) -> bool {
    matches!(
        (pkt.src.is_ipv4(), pkt.l4),
        (
            true,
            L4::Icmp {
                icmp_type: 3 | 11,
                ..
            }
        ) | (
            false,
            L4::Icmp {
                icmp_type: 1..=3,
                ..
            }
        )
    )
}

/// SPEC 1.6: is the ICMP error `pkt`, seen in `direction`, related? Its
/// quoted packet must have been sent by the error's destination, carry
/// its L4 header (not a later fragment), and belong to a live tracked flow
/// or to a flow the rules leave untracked (1.8). An error quoting ICMP
/// other than echo relates to nothing.
fn related(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    state: &ConntrackModel,
    pkt: &PacketSpec,
    direction: Direction,
    now: Duration,
) -> bool {
    let Some(q) = pkt.quote.as_deref() else {
        return false;
    };
    if !is_error(pkt)
        || q.src != pkt.dst
        || q.src.is_ipv4() != pkt.src.is_ipv4()
        || q.cut.is_some()
        || matches!(q.frag, Frag::Later { .. })
        || (matches!(q.l4, L4::Icmp { .. }) && !is_echo(q))
    {
        return false;
    }
    let tracked = state
        .flows
        .get(&flow_key(&PacketSpec {
            iface: pkt.iface,
            ..q.clone()
        }))
        .is_some_and(|f| now <= f.expires);
    // The quote travelled the other way; its reverse would travel this way.
    let other = match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    tracked
        || untracked(config, groups, local_addrs, q, other)
        || untracked(config, groups, local_addrs, &q.reversed(), direction)
}
