//! TCP sequence windows (SPEC 1.6): netfilter's `tcp_in_window`,
//! simplified. Each side keeps how far it has sent (`end`), how far the
//! other side lets it send (`maxend`) and the largest window it advertised
//! (`maxwin`). A RST or FIN outside the window of its direction is refused,
//! so a blind attacker cannot close or shorten a connection. Other segments
//! are never refused (no ACK checks, no SACK), but only in-window ones move
//! the window: otherwise one spoofed data segment far ahead would open the
//! way for a RST there.

use sg_common::{
    CT_F_ADOPTED, CT_SIDE_OPENER, CT_SIDE_RESPONDER, CtValue, TCP_WSCALE_UNKNOWN, TcpWindow,
};

use crate::parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// `a` comes after `b` in sequence space (netfilter's `after()`).
#[inline(always)]
fn after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

/// `a` comes before `b` in sequence space.
#[inline(always)]
fn before(a: u32, b: u32) -> bool {
    after(b, a)
}

/// The sequence number just past the segment: SYN and FIN count one.
#[inline(always)]
fn seg_end(pkt: &Packet) -> u32 {
    let mut end = pkt.tcp_seq.wrapping_add(pkt.tcp_len);
    if pkt.tcp_flags & TCP_SYN != 0 {
        end = end.wrapping_add(1);
    }
    if pkt.tcp_flags & TCP_FIN != 0 {
        end = end.wrapping_add(1);
    }
    end
}

/// The shift for `s`'s windows: only when both SYNs offered scaling.
#[inline(always)]
fn shift(s: &TcpWindow, r: &TcpWindow) -> u32 {
    if s.wscale == TCP_WSCALE_UNKNOWN || r.wscale == TCP_WSCALE_UNKNOWN {
        0
    } else {
        s.wscale as u32
    }
}

/// The window `pkt` advertises; a SYN's own window is never scaled.
#[inline(always)]
fn window(pkt: &Packet, s: &TcpWindow, r: &TcpWindow) -> u32 {
    let win = pkt.tcp_win as u32;
    if pkt.tcp_flags & TCP_SYN != 0 {
        win
    } else {
        win << shift(s, r)
    }
}

/// A side's first segment: it has sent up to its end and may send a
/// window beyond. Mid-stream, the side keeps the scale it already has:
/// unknown for a responder first seen without its SYN-ACK, the one the
/// handshake agreed for an adopted connection (userspace read it through
/// sock_diag), which is picked up from its first packets this way.
#[inline(always)]
fn init(s: &mut TcpWindow, r: &TcpWindow, pkt: &Packet) {
    if pkt.tcp_flags & TCP_SYN != 0 {
        s.wscale = pkt.tcp_wscale;
    }
    let win = window(pkt, s, r);
    s.end = seg_end(pkt);
    s.maxwin = if win == 0 { 1 } else { win };
    s.maxend = s.end.wrapping_add(s.maxwin);
}

/// The opener's SYN starts the connection's window data.
#[inline(always)]
pub(crate) fn open(value: &mut CtValue, pkt: &Packet) {
    // Until its SYN-ACK shows otherwise, the responder offers no scaling.
    value.tcp[CT_SIDE_RESPONDER].wscale = TCP_WSCALE_UNKNOWN;
    let responder = value.tcp[CT_SIDE_RESPONDER];
    init(&mut value.tcp[CT_SIDE_OPENER], &responder, pkt);
}

/// Checks `pkt` against the window of its direction and, when it lies
/// inside, records it. Returns false for a RST or FIN outside the window:
/// the caller drops it and must change nothing else.
#[inline(always)]
pub(crate) fn advance(value: &mut CtValue, from_opener: bool, pkt: &Packet) -> bool {
    let (si, ri) = if from_opener {
        (CT_SIDE_OPENER, CT_SIDE_RESPONDER)
    } else {
        (CT_SIDE_RESPONDER, CT_SIDE_OPENER)
    };
    let mut s = value.tcp[si];
    let mut r = value.tcp[ri];
    let flags = pkt.tcp_flags;
    let closing = flags & (TCP_RST | TCP_FIN) != 0;
    let end = seg_end(pkt);
    if s.maxwin == 0 {
        // First segment from this side. Only a RST answering the opener's
        // SYN may close (RFC 793, SYN-SENT: its ACK acknowledges exactly
        // what the opener sent), or a FIN of an adopted connection, whose
        // sides are first seen mid-stream (an idle one may well close
        // first): never a RST there, which would cut it in seconds.
        if closing
            && !(flags & (TCP_RST | TCP_ACK) == TCP_RST | TCP_ACK
                && r.maxwin != 0
                && pkt.tcp_ack == r.end)
            && !(flags & TCP_RST == 0 && value.flags & CT_F_ADOPTED != 0)
        {
            return false;
        }
        init(&mut s, &r, pkt);
    } else {
        let below_max = !after(pkt.tcp_seq, s.maxend);
        // A receiver not seen yet has no window to bound retransmissions.
        let above_min = r.maxwin == 0 || !before(end, s.end.wrapping_sub(r.maxwin));
        if !(below_max && above_min) {
            return !closing;
        }
    }
    let win = window(pkt, &s, &r);
    if win > s.maxwin {
        s.maxwin = win;
    }
    if after(end, s.end) {
        s.end = end;
    }
    if flags & TCP_ACK != 0 {
        // A zero window still lets the other side probe one byte.
        let reach = pkt.tcp_ack.wrapping_add(if win == 0 { 1 } else { win });
        if after(reach, r.maxend) {
            r.maxend = reach;
        }
    }
    value.tcp[si] = s;
    value.tcp[ri] = r;
    true
}
