//! The conntrack model: flows, their TCP state and sequence windows.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use sg::config::{ConntrackConfig, Direction};

use super::*;
use crate::packet::{ACK, FIN, RST, SYN, TcpSeg};

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

    pub(super) fn timeout(&self, proto: u8, tcp: Option<TcpState>, udp_stream: bool) -> Duration {
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
pub(super) fn seq_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

pub(super) fn seq_lt(a: u32, b: u32) -> bool {
    a != b && seq_le(a, b)
}

/// Judges a TCP segment of a tracked flow against the window of its
/// direction and records it there. `false`: a RST or FIN out of window,
/// to be dropped with nothing changed. Other segments always pass, but
/// only in-window ones are recorded.
pub(super) fn seq_window(flow: &mut FlowState, from_opener: bool, flags: u8, seg: &TcpSeg) -> bool {
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
pub(super) fn opening_windows(flags: u8, seg: &TcpSeg) -> [SeqWindow; 2] {
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
