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
//! Expiry is modeled from `now`, which the caller controls; the
//! kernel's clock is its own, so the differential test keeps every run far
//! shorter than the shortest timeout.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use sg_common::Reason;

use sg::config::{Config, ConntrackConfig, Direction, Peer, PortMatch, Proto, Rule};

use crate::packet::{self, Ext, TcpSeg};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// The L4 part of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP for IPv4, ICMPv6 for IPv6. `id` is the echo identifier.
    Icmp {
        icmp_type: u8,
        code: u8,
        id: u16,
    },
    /// Any other protocol, with an opaque payload.
    Other {
        proto: u8,
    },
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Frag {
    Whole,
    /// Offset 0, more fragments follow; carries the L4 header.
    First {
        id: u32,
    },
    /// A non-zero offset; carries no L4 header.
    Later {
        id: u32,
    },
}

/// How the packet is framed; classification must not depend on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Framing {
    /// (TPID, TCI) VLAN tags, outermost first (at most two).
    pub tags: Vec<(u16, u16)>,
    /// IPv4 options, in 4-byte words of NOPs (IPv4 only).
    pub v4_option_words: u8,
    /// IPv6 extension headers before the L4 header (IPv6 only; a
    /// fragment header is added from [`Frag`]).
    pub v6_exts: Vec<Ext>,
    /// No link header (an L3 interface: tun, WireGuard, ...): the frame
    /// starts with the IP header; `tags` are then left out.
    pub l3: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PacketSpec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub frag: Frag,
    pub framing: Framing,
    /// An ICMP error's quoted packet (its IP header on), or `None`: the
    /// ICMP message carries a plain payload.
    pub quote: Option<Box<PacketSpec>>,
    /// The frame (as sent: without a link header on L3) is cut to this
    /// many bytes, fewer than it has: truncated.
    pub cut: Option<usize>,
    /// Which of the caller's interfaces the packet is on: each interface
    /// tracks its own connections and fragments, in one table.
    pub iface: usize,
    /// TCP only: sequence, acknowledgement, window, payload, options.
    pub seg: TcpSeg,
}

impl PacketSpec {
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> PacketSpec {
        PacketSpec {
            src,
            dst,
            l4,
            frag: Frag::Whole,
            framing: Framing::default(),
            quote: None,
            cut: None,
            iface: 0,
            seg: TcpSeg::default(),
        }
    }

    /// The same flow's packet from the other side (TCP/UDP ports swapped).
    pub fn reversed(&self) -> PacketSpec {
        let mut r = self.clone();
        (r.src, r.dst) = (self.dst, self.src);
        r.l4 = match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => L4::Tcp {
                sport: dport,
                dport: sport,
                flags,
            },
            L4::Udp { sport, dport } => L4::Udp {
                sport: dport,
                dport: sport,
            },
            other => other,
        };
        r
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => TCP,
            L4::Udp { .. } => UDP,
            L4::Icmp { .. } if self.src.is_ipv4() => ICMP,
            L4::Icmp { .. } => ICMPV6,
            L4::Other { proto } => proto,
        }
    }

    /// The ports of the flow: TCP/UDP ports, the echo identifier on both
    /// sides for ICMP, zero for anything else.
    fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
            L4::Icmp { id, .. } => (id, id),
            L4::Other { .. } => (0, 0),
        }
    }

    /// The frame for this packet: Ethernet, or the bare IP datagram with
    /// `framing.l3`.
    pub fn frame(&self) -> Vec<u8> {
        let mut frame = self.ethernet_frame();
        if self.framing.l3 {
            let link = 14 + 4 * self.framing.tags.len();
            frame.drain(..link);
        }
        if let Some(n) = self.cut {
            frame.truncate(n);
        }
        frame
    }

    /// The Ethernet frame for this packet.
    fn ethernet_frame(&self) -> Vec<u8> {
        let l4 = match self.frag {
            // Fragment data, not a header.
            Frag::Later { .. } => vec![0xa5; 16],
            _ => match self.l4 {
                L4::Tcp {
                    sport,
                    dport,
                    flags,
                } => {
                    let mut b = packet::tcp_seg_header(sport, dport, flags, &self.seg);
                    b.resize(b.len() + usize::from(self.seg.payload), b'x');
                    b
                }
                L4::Udp { sport, dport } => {
                    let mut b = packet::udp_header(sport, dport, 7);
                    b.extend_from_slice(b"sg-test");
                    b
                }
                L4::Icmp {
                    icmp_type,
                    code,
                    id,
                } => {
                    let [hi, lo] = id.to_be_bytes();
                    let mut b = packet::icmp_header(icmp_type, code, [hi, lo, 0, 1]);
                    match &self.quote {
                        // The quoted IP packet, without its Ethernet header.
                        Some(q) => b.extend_from_slice(&q.frame()[14 + 4 * q.framing.tags.len()..]),
                        None => b.extend_from_slice(b"sg-test"),
                    }
                    b
                }
                L4::Other { .. } => b"opaque-payload".to_vec(),
            },
        };
        let proto = self.proto();
        let tags = &self.framing.tags;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let (id, field) = match self.frag {
                    Frag::Whole => (0x1234, packet::IP_DF),
                    Frag::First { id } => (id as u16, packet::IP_MF),
                    Frag::Later { id } => (id as u16, 3),
                };
                let mut options = vec![1u8; 4 * usize::from(self.framing.v4_option_words)];
                if let Some(last) = options.last_mut() {
                    *last = 0; // end of option list
                }
                let ip = packet::ipv4(s.octets(), d.octets(), proto, id, field, &options, &l4);
                packet::ethernet(packet::ETH_P_IP, tags, &ip)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut exts = self.framing.v6_exts.clone();
                match self.frag {
                    Frag::Whole => {}
                    Frag::First { id } => exts.push(Ext::Fragment {
                        offset: 0,
                        more: true,
                        id,
                    }),
                    Frag::Later { id } => exts.push(Ext::Fragment {
                        offset: 3,
                        more: false,
                        id,
                    }),
                }
                let ip = packet::ipv6(s.octets(), d.octets(), &exts, proto, &l4);
                packet::ethernet(packet::ETH_P_IPV6, tags, &ip)
            }
            _ => panic!("mixed address families: {} -> {}", self.src, self.dst),
        }
    }
}

/// The verdict for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Why it was dropped; `None` when allowed.
    pub reason: Option<Reason>,
}

impl Outcome {
    const PASS: Outcome = Outcome {
        allowed: true,
        reason: None,
    };

    const fn drop(reason: Reason) -> Outcome {
        Outcome {
            allowed: false,
            reason: Some(reason),
        }
    }
}

/// TCP states that matter to a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    Fin,
    Rst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// The endpoint that opened the flow.
    pub opener: (IpAddr, u16),
    /// TCP only.
    pub tcp: Option<TcpState>,
    /// TCP only: what each side sent and may send, opener first.
    pub windows: [SeqWindow; 2],
    /// Packets seen from the responder; a UDP flow with more than one is a
    /// stream (its own timeout, SPEC 1.7).
    pub replies: u32,
    /// When the entry dies.
    pub expires: Duration,
    /// The direction the opening packet travelled in.
    pub opened: Direction,
}

/// A flow: the interface (each tracks its own, as the kernel keys its
/// table by interface), the protocol and the two endpoints, smaller first,
/// so that both directions of the flow find it.
pub type FlowKey = (usize, u8, (IpAddr, u16), (IpAddr, u16));

/// (interface, src, dst, proto, id, direction) of a first fragment that
/// passed.
pub type FragKey = (usize, IpAddr, IpAddr, u8, u32, Direction);

/// The evaluator's connection tracking state.
#[derive(Clone, Debug, Default)]
pub struct ConntrackModel {
    pub flows: HashMap<FlowKey, FlowState>,
    /// First fragments that passed, with their expiry.
    pub fragments: HashMap<FragKey, Duration>,
    pub timeouts: ConntrackConfig,
}

/// Fragments of one datagram must follow the first within this time.
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(30);

impl ConntrackModel {
    pub fn new(timeouts: ConntrackConfig) -> ConntrackModel {
        ConntrackModel {
            timeouts,
            ..ConntrackModel::default()
        }
    }

    pub fn clear(&mut self) {
        self.flows.clear();
        self.fragments.clear();
    }

    fn timeout(&self, proto: u8, tcp: Option<TcpState>, udp_stream: bool) -> Duration {
        let t = &self.timeouts;
        match (proto, tcp) {
            (UDP, _) if udp_stream => t.udp_stream,
            (_, Some(TcpState::SynSent | TcpState::SynRecv)) => t.tcp_syn,
            (_, Some(TcpState::Established)) => t.tcp_established,
            (_, Some(TcpState::Fin)) => t.tcp_fin,
            (_, Some(TcpState::Rst)) => t.tcp_rst,
            (UDP, _) => t.udp,
            (ICMP | ICMPV6, _) => t.icmp,
            _ => t.other,
        }
    }
}

/// One side of a TCP connection, as SPEC 1.6 describes netfilter's
/// `tcp_in_window` (simplified: no ACK checks, no SACK).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqWindow {
    /// Some segment of this side has been recorded.
    pub seen: bool,
    /// Highest sequence number sent plus one (SYN and FIN count one).
    pub end: u32,
    /// How far the other side's acknowledgements and windows let it send.
    pub maxend: u32,
    /// The largest window it advertised, scaled.
    pub maxwin: u32,
    /// The shift its SYN offered.
    pub wscale: Option<u8>,
}

/// Sequence-space order: `a <= b` modulo 2^32 (RFC 793 arithmetic).
fn seq_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

fn seq_lt(a: u32, b: u32) -> bool {
    a != b && seq_le(a, b)
}

/// Judges a TCP segment of a tracked flow against the window of its
/// direction and records it there. `false`: a RST or FIN out of window,
/// to be dropped with nothing changed. Other segments always pass, but
/// only in-window ones are recorded.
fn seq_window(flow: &mut FlowState, from_opener: bool, flags: u8, seg: &TcpSeg) -> bool {
    let (sender, receiver) = if from_opener { (0, 1) } else { (1, 0) };
    let mut s = flow.windows[sender];
    let mut r = flow.windows[receiver];
    let syn = flags & SYN != 0;
    let closes = flags & (RST | FIN) != 0;
    let len = u32::from(seg.payload) + u32::from(syn) + u32::from(flags & FIN != 0);
    let seg_end = seg.seq.wrapping_add(len);
    // Windows scale only when both SYNs offered it; a SYN's window never.
    let scaled = |s: &SeqWindow, r: &SeqWindow| -> u32 {
        let shift = match (s.wscale, r.wscale) {
            (Some(x), Some(_)) if !syn => u32::from(x.min(14)),
            _ => 0,
        };
        u32::from(seg.win) << shift
    };
    if s.seen {
        let within =
            seq_le(seg.seq, s.maxend) && (!r.seen || seq_le(s.end.wrapping_sub(r.maxwin), seg_end));
        if !within {
            return !closes;
        }
    } else {
        // The first we hear of this side. Closing is allowed only to a RST
        // answering the opener's SYN: its ACK names exactly what was sent.
        let answers_syn = flags & RST != 0 && flags & ACK != 0 && r.seen && seg.ack == r.end;
        if closes && !answers_syn {
            return false;
        }
        s.seen = true;
        s.wscale = if syn { seg.wscale } else { None };
        s.end = seg_end;
        s.maxwin = scaled(&s, &r).max(1);
        s.maxend = s.end.wrapping_add(s.maxwin);
    }
    let win = scaled(&s, &r);
    s.maxwin = s.maxwin.max(win);
    if seq_lt(s.end, seg_end) {
        s.end = seg_end;
    }
    if flags & ACK != 0 {
        let reach = seg.ack.wrapping_add(win.max(1));
        if seq_lt(r.maxend, reach) {
            r.maxend = reach;
        }
    }
    flow.windows[sender] = s;
    flow.windows[receiver] = r;
    true
}

/// The opener's SYN: the first window data of a new TCP flow.
fn opening_windows(flags: u8, seg: &TcpSeg) -> [SeqWindow; 2] {
    let mut flow = FlowState {
        opener: (IpAddr::from([0, 0, 0, 0]), 0),
        tcp: None,
        windows: [SeqWindow::default(); 2],
        replies: 0,
        expires: Duration::ZERO,
        opened: Direction::Ingress,
    };
    seq_window(&mut flow, true, flags, seg);
    flow.windows
}

const SYN: u8 = packet::SYN;
const ACK: u8 = packet::ACK;
const FIN: u8 = packet::FIN;
const RST: u8 = packet::RST;

fn is_echo_request(pkt: &PacketSpec) -> bool {
    matches!(
        (pkt.src.is_ipv4(), pkt.l4),
        (true, L4::Icmp { icmp_type: 8, .. }) | (false, L4::Icmp { icmp_type: 128, .. })
    )
}

fn is_echo(pkt: &PacketSpec) -> bool {
    is_echo_request(pkt)
        || matches!(
            (pkt.src.is_ipv4(), pkt.l4),
            (true, L4::Icmp { icmp_type: 0, .. }) | (false, L4::Icmp { icmp_type: 129, .. })
        )
}

/// Does `addr` belong to the members of group `name` (SPEC 1.5)?
fn is_member(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    name: &str,
    addr: IpAddr,
) -> bool {
    let listed = config
        .groups
        .get(name)
        .is_some_and(|g| g.members.iter().any(|net| net.contains(&addr)));
    let local = groups.iter().any(|g| g == name) && local_addrs.contains(&addr);
    listed || local
}

/// The rules of the attached `groups` that allow `pkt` in `direction`.
fn allowing_rules<'c>(
    config: &'c Config,
    groups: &'c [String],
    local_addrs: &'c [IpAddr],
    pkt: &'c PacketSpec,
    direction: Direction,
) -> impl Iterator<Item = &'c Rule> + 'c {
    let remote = match direction {
        Direction::Ingress => pkt.src,
        Direction::Egress => pkt.dst,
    };
    let proto = pkt.proto();
    groups
        .iter()
        .filter_map(|name| config.groups.get(name))
        .flat_map(move |group| group.rules(direction))
        .filter(move |rule| {
            let proto_ok = match rule.proto {
                Proto::All => true,
                Proto::Number(n) => n == proto,
            };
            let l4_ok = match (rule.ports, pkt.l4) {
                (PortMatch::All, _) => true,
                (PortMatch::Range { from, to }, L4::Tcp { dport, .. } | L4::Udp { dport, .. }) => {
                    from <= dport && dport <= to
                }
                (PortMatch::Range { .. }, _) => false,
                (
                    PortMatch::Icmp {
                        icmp_type,
                        icmp_code,
                    },
                    L4::Icmp {
                        icmp_type: t,
                        code: c,
                        ..
                    },
                ) => {
                    icmp_type.is_none_or(|want| want == t) && icmp_code.is_none_or(|want| want == c)
                }
                (PortMatch::Icmp { .. }, _) => false,
            };
            proto_ok
                && l4_ok
                && rule.peers.iter().any(|peer| match peer {
                    Peer::Cidr(net) => net.contains(&remote),
                    Peer::Group(g) => is_member(config, groups, local_addrs, g, remote),
                })
        })
}

/// Does any rule of the attached `groups` allow `pkt` in `direction`?
/// Answers with the allowing rule's ID.
pub fn allowing_rule<'c>(
    config: &'c Config,
    groups: &'c [String],
    local_addrs: &'c [IpAddr],
    pkt: &'c PacketSpec,
    direction: Direction,
) -> Option<&'c str> {
    allowing_rules(config, groups, local_addrs, pkt, direction)
        .next()
        .map(|r| r.id.as_str())
}

/// Does `rule` name the whole address space of `v4`'s family as a peer
/// (directly, or through a group listing a /0 member)?
fn peer_is_everywhere(config: &Config, rule: &Rule, v4: bool) -> bool {
    let everywhere = |net: &ipnet::IpNet| net.prefix_len() == 0 && net.addr().is_ipv4() == v4;
    rule.peers.iter().any(|peer| match peer {
        Peer::Cidr(net) => everywhere(net),
        Peer::Group(g) => config
            .groups
            .get(g)
            .is_some_and(|g| g.members.iter().any(everywhere)),
    })
}

/// SPEC 1.8, AWS's untracked flows: TCP or UDP allowed by a rule whose peer
/// is everywhere, on an interface whose other direction allows every
/// protocol to everywhere, is not tracked (so removing the rule cuts it).
fn untracked(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    pkt: &PacketSpec,
    direction: Direction,
) -> bool {
    if !matches!(pkt.l4, L4::Tcp { .. } | L4::Udp { .. }) {
        return false;
    }
    let v4 = pkt.src.is_ipv4();
    let by_anywhere_rule = allowing_rules(config, groups, local_addrs, pkt, direction)
        .any(|rule| peer_is_everywhere(config, rule, v4));
    let other = match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    let other_allows_all = groups
        .iter()
        .filter_map(|name| config.groups.get(name))
        .flat_map(|group| group.rules(other))
        .any(|rule| rule.proto == Proto::All && peer_is_everywhere(config, rule, v4));
    by_anywhere_rule && other_allows_all
}

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

    let outcome = judge_whole(config, groups, local_addrs, state, pkt, direction, now);
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
