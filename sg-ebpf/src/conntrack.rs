//! Connection tracking (SPEC 1.6, 1.7).
//!
//! One entry per flow and interface, keyed canonically so both directions
//! find it. The opener is remembered, which tells replies from requests.

use aya_ebpf::bindings::BPF_ANY;
use sg_common::{
    CT_F_OPENED_BY_B, CT_F_OPENED_EGRESS, CT_F_REPLIED, CT_ICMP, CT_OTHER, CT_TCP_ESTABLISHED,
    CT_TCP_FIN, CT_TCP_RST, CT_TCP_SYN_RECV, CT_TCP_SYN_SENT, CT_UDP, CT_UDP_STREAM, CtKey,
    CtValue, Direction, FAMILY_V4, IFACE_F_EGRESS_ALL_V4, IFACE_F_EGRESS_ALL_V6,
    IFACE_F_INGRESS_ALL_V4, IFACE_F_INGRESS_ALL_V6, PROTO_TCP, PROTO_UDP, RULE_F_ANYWHERE, RuleRef,
    RuntimeConfig, TO_ICMP, TO_OTHER, TO_TCP_ESTABLISHED, TO_TCP_FIN, TO_TCP_RST, TO_TCP_SYN,
    TO_UDP, TO_UDP_STREAM,
};

use crate::{
    maps::CONNTRACK,
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    tcpwin,
};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// How a packet relates to connection tracking.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// TCP, UDP, ICMP echo, or another protocol: has a flow.
    Flow,
    /// Can be judged by rules but never opens or joins a flow
    /// (ICMP other than echo).
    Stateless,
}

/// A packet's flow and which side of it sent the packet.
pub(crate) struct Flow {
    pub key: CtKey,
    /// The packet was sent by endpoint `a` of the key.
    pub from_a: bool,
}

/// An ICMP echo request or reply of the packet's family: the only ICMP
/// that is tracked.
#[inline(always)]
pub(crate) fn is_echo(pkt: &Packet) -> bool {
    if pkt.family == FAMILY_V4 {
        pkt.icmp_type == ICMP_ECHO_REQUEST || pkt.icmp_type == ICMP_ECHO_REPLY
    } else {
        pkt.icmp_type == ICMPV6_ECHO_REQUEST || pkt.icmp_type == ICMPV6_ECHO_REPLY
    }
}

#[inline(always)]
fn is_echo_request(pkt: &Packet) -> bool {
    pkt.icmp_type == ICMP_ECHO_REQUEST && pkt.family == FAMILY_V4
        || pkt.icmp_type == ICMPV6_ECHO_REQUEST && pkt.family != FAMILY_V4
}

#[inline(always)]
pub(crate) fn kind(pkt: &Packet) -> Kind {
    if pkt.is_icmp() && !is_echo(pkt) {
        Kind::Stateless
    } else {
        Kind::Flow
    }
}

/// Orders two endpoints; any total order works as long as both
/// directions agree.
#[inline(always)]
fn endpoint_le(addr_x: &[u8; 16], port_x: u16, addr_y: &[u8; 16], port_y: u16) -> bool {
    let hi_x = u64::from_be_bytes([
        addr_x[0], addr_x[1], addr_x[2], addr_x[3], addr_x[4], addr_x[5], addr_x[6], addr_x[7],
    ]);
    let hi_y = u64::from_be_bytes([
        addr_y[0], addr_y[1], addr_y[2], addr_y[3], addr_y[4], addr_y[5], addr_y[6], addr_y[7],
    ]);
    if hi_x != hi_y {
        return hi_x < hi_y;
    }
    let lo_x = u64::from_be_bytes([
        addr_x[8], addr_x[9], addr_x[10], addr_x[11], addr_x[12], addr_x[13], addr_x[14],
        addr_x[15],
    ]);
    let lo_y = u64::from_be_bytes([
        addr_y[8], addr_y[9], addr_y[10], addr_y[11], addr_y[12], addr_y[13], addr_y[14],
        addr_y[15],
    ]);
    if lo_x != lo_y {
        return lo_x < lo_y;
    }
    port_x <= port_y
}

/// Fills `flow` with the packet's canonical conntrack key.
#[inline(always)]
pub(crate) fn flow_of(pkt: &Packet, ifindex: u32, flow: &mut Flow) {
    let (sport, dport) = if pkt.proto == PROTO_TCP || pkt.proto == PROTO_UDP || pkt.is_icmp() {
        (pkt.src_port, pkt.dst_port)
    } else {
        (0, 0)
    };
    flow.from_a = endpoint_le(&pkt.src, sport, &pkt.dst, dport);
    let key = &mut flow.key;
    key.ifindex = ifindex;
    key.proto = pkt.proto;
    key.family = pkt.family;
    key._pad = [0; 2];
    if flow.from_a {
        key.addr_a = pkt.src;
        key.addr_b = pkt.dst;
        key.port_a = sport;
        key.port_b = dport;
    } else {
        key.addr_a = pkt.dst;
        key.addr_b = pkt.src;
        key.port_a = dport;
        key.port_b = sport;
    }
}

/// May this packet, once a rule allows it, open a tracked connection?
/// A TCP packet that is not a bare SYN never does (SPEC 1.6).
#[inline(always)]
pub(crate) fn may_open(pkt: &Packet) -> bool {
    if pkt.proto == PROTO_TCP {
        return pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
    }
    if pkt.is_icmp() {
        return is_echo_request(pkt);
    }
    true
}

#[inline(always)]
fn timeout(cfg: &RuntimeConfig, state: u8) -> u64 {
    let idx = match state {
        CT_TCP_SYN_SENT | CT_TCP_SYN_RECV => TO_TCP_SYN,
        CT_TCP_ESTABLISHED => TO_TCP_ESTABLISHED,
        CT_TCP_FIN => TO_TCP_FIN,
        CT_TCP_RST => TO_TCP_RST,
        CT_UDP => TO_UDP,
        CT_UDP_STREAM => TO_UDP_STREAM,
        CT_ICMP => TO_ICMP,
        _ => TO_OTHER,
    };
    cfg.timeouts_ns[idx]
}

pub(crate) enum Lookup {
    /// A live entry covers the packet; it has been advanced. Carries the
    /// entry's `CT_F_*` flags (who opened it, in which direction) and the
    /// rule that opened the connection, for hit counters.
    Tracked { flags: u8, rule: u32 },
    /// No live entry: judge the packet by the rules.
    Untracked,
    /// A RST or FIN outside the connection's window: drop it; the entry
    /// is unchanged (SPEC 1.6).
    OutOfWindow,
}

/// Finds the packet's connection and advances its state machine.
///
/// TCP: SYN-sent (the opener's SYN) -> SYN-received (the responder's
/// SYN-ACK) -> established (the opener's ACK); a FIN from either side moves
/// to FIN seen, an RST to RST seen, from any state. A bare SYN on a closing
/// entry is a new connection reusing the tuple: the rules decide. UDP turns
/// into a stream once replies have been seen more than once. An echo
/// entry covers only requests from its opener and replies to them. A TCP
/// RST or FIN outside its direction's window changes nothing (`tcpwin`).
/// Every packet re-arms the state's timeout (SPEC 1.7).
#[inline(always)]
pub(crate) fn track(flow: &Flow, pkt: &Packet, cfg: &RuntimeConfig, now: u64) -> Lookup {
    let Some(entry) = CONNTRACK.get_ptr_mut(&flow.key) else {
        return Lookup::Untracked;
    };
    let entry = unsafe { &mut *entry };
    if now > entry.expires_ns {
        return Lookup::Untracked;
    }
    let opened_by_b = entry.flags & CT_F_OPENED_BY_B != 0;
    let from_opener = flow.from_a != opened_by_b;
    if pkt.is_icmp() && is_echo_request(pkt) != from_opener {
        // Echo: requests only from the opener, replies only to it. A peer's
        // request reusing our identifier is new traffic (GHSA-c66w-hq56-4q97).
        return Lookup::Untracked;
    }
    let mut state = entry.state;
    if pkt.proto == PROTO_TCP {
        let flags = pkt.tcp_flags;
        let bare_syn = flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
        if bare_syn && (state == CT_TCP_FIN || state == CT_TCP_RST) {
            // The tuple is being reused for a new connection: rules decide.
            return Lookup::Untracked;
        }
        if !tcpwin::advance(entry, from_opener, pkt) {
            return Lookup::OutOfWindow;
        }
        if from_opener {
            entry.tcp_flags_opener |= flags;
        } else {
            entry.tcp_flags_responder |= flags;
        }
        if flags & TCP_RST != 0 {
            state = CT_TCP_RST;
        } else if flags & TCP_FIN != 0 {
            if state != CT_TCP_RST {
                state = CT_TCP_FIN;
            }
        } else if state == CT_TCP_SYN_SENT
            && !from_opener
            && flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        {
            state = CT_TCP_SYN_RECV;
        } else if state == CT_TCP_SYN_RECV && from_opener && flags & (TCP_SYN | TCP_ACK) == TCP_ACK
        {
            state = CT_TCP_ESTABLISHED;
        }
    }
    if !from_opener {
        entry.flags |= CT_F_REPLIED;
        entry.replies = entry.replies.saturating_add(1);
    }
    if pkt.proto == PROTO_UDP && entry.replies > 1 {
        state = CT_UDP_STREAM;
    }
    entry.state = state;
    entry.expires_ns = now + timeout(cfg, state);
    Lookup::Tracked {
        flags: entry.flags,
        rule: entry.rule,
    }
}

/// Is there a live entry under `key`? Looks only; related ICMP errors do
/// not keep a connection alive.
#[inline(always)]
pub(crate) fn is_live(key: &CtKey, now: u64) -> bool {
    match unsafe { CONNTRACK.get(key) } {
        Some(entry) => now <= entry.expires_ns,
        None => false,
    }
}

/// Deletes a connection (revocation).
#[inline(always)]
pub(crate) fn forget(key: &CtKey) {
    let _ = CONNTRACK.remove(key);
}

/// Fills `out` with the packet that opened the connection under `key`: from
/// the opener to the responder, an echo request for ICMP. Returns the
/// direction it was seen in. Revocation judges this packet by the rules of
/// that direction (SPEC 1.8).
#[inline(always)]
pub(crate) fn opened_as(key: &CtKey, flags: u8, out: &mut Packet) -> Direction {
    *out = Packet::EMPTY;
    if flags & CT_F_OPENED_BY_B != 0 {
        out.src = key.addr_b;
        out.dst = key.addr_a;
        out.src_port = key.port_b;
        out.dst_port = key.port_a;
    } else {
        out.src = key.addr_a;
        out.dst = key.addr_b;
        out.src_port = key.port_a;
        out.dst_port = key.port_b;
    }
    out.family = key.family;
    out.proto = key.proto;
    out.has_l4 = true;
    out.icmp_type = if key.family == FAMILY_V4 {
        ICMP_ECHO_REQUEST
    } else {
        ICMPV6_ECHO_REQUEST
    };
    if flags & CT_F_OPENED_EGRESS != 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// The AWS untracked-flow rule (SPEC 1.8): a TCP or UDP flow allowed by a
/// rule whose peer is everywhere, on an interface whose other direction
/// allows all traffic everywhere, is not tracked.
#[inline(always)]
pub(crate) fn untracked(
    pkt: &Packet,
    rule: &RuleRef,
    iface_flags: u32,
    direction: Direction,
) -> bool {
    if pkt.proto != PROTO_TCP && pkt.proto != PROTO_UDP {
        return false;
    }
    if rule.flags & RULE_F_ANYWHERE == 0 {
        return false;
    }
    let other_all = match (direction == Direction::Ingress, pkt.family == FAMILY_V4) {
        (true, true) => IFACE_F_EGRESS_ALL_V4,
        (true, false) => IFACE_F_EGRESS_ALL_V6,
        (false, true) => IFACE_F_INGRESS_ALL_V4,
        (false, false) => IFACE_F_INGRESS_ALL_V6,
    };
    iface_flags & other_all != 0
}

/// Records a new connection opened by this packet. Fails when the table is
/// full; nothing is evicted (SPEC 1.9), and nothing is swept here: the
/// sweep timer reclaims expired entries off the packet path (SPEC 1.13).
#[inline(always)]
pub(crate) fn open(
    flow: &Flow,
    pkt: &Packet,
    direction: Direction,
    rule: u32,
    cfg: &RuntimeConfig,
    now: u64,
) -> Result<(), ()> {
    let state = if pkt.proto == PROTO_TCP {
        CT_TCP_SYN_SENT
    } else if pkt.proto == PROTO_UDP {
        CT_UDP
    } else if pkt.is_icmp() {
        CT_ICMP
    } else {
        CT_OTHER
    };
    let mut flags = if flow.from_a { 0 } else { CT_F_OPENED_BY_B };
    if direction == Direction::Egress {
        flags |= CT_F_OPENED_EGRESS;
    }
    let mut value = CtValue {
        expires_ns: now + timeout(cfg, state),
        state,
        flags,
        tcp_flags_opener: pkt.tcp_flags,
        rule,
        ..CtValue::default()
    };
    if pkt.proto == PROTO_TCP {
        tcpwin::open(&mut value, pkt);
    }
    CONNTRACK
        .insert(&flow.key, &value, BPF_ANY as u64)
        .map_err(|_| ())
}
