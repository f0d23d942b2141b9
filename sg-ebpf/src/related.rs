//! Related ICMP (SPEC 1.6): an ICMP or ICMPv6 error passes when the packet
//! it quotes belongs to a live tracked connection of this interface, or to
//! a flow the current rules leave untracked.
//!
//! Errors: ICMPv4 destination unreachable (3, fragmentation needed is its
//! code 4) and time exceeded (11); ICMPv6 destination unreachable (1),
//! packet too big (2) and time exceeded (3). The quoted packet is one that
//! the error's destination sent, so its source must be the error's
//! destination; its canonical conntrack key is the connection's key
//! whichever way the connection was opened. A quoted IPv6 packet's
//! extension headers are walked as the packet's own are; a quoted later
//! fragment carries no L4 header and is related to nothing.
//!
//! An error about a flow the rules leave untracked (SPEC 1.8) is related
//! too (see `verdict::is_related`): PMTU discovery must work for it.

use sg_common::{FAMILY_V4, PROTO_TCP, PROTO_UDP};

use crate::{
    conntrack::{self, Flow},
    parse::{Bytes, MAX_L4_OFFSET, Packet, walk_v6_exts},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEEDED: u8 = 3;

/// ICMP header before the quoted packet: type, code, checksum, 4 more.
const ICMP_HDR_LEN: usize = 8;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;

/// Is this an ICMP error that may be related to a connection?
#[inline(always)]
pub(crate) fn is_error(pkt: &Packet) -> bool {
    if !pkt.has_l4 || !pkt.is_icmp() {
        return false;
    }
    if pkt.family == FAMILY_V4 {
        pkt.icmp_type == ICMP_DEST_UNREACH || pkt.icmp_type == ICMP_TIME_EXCEEDED
    } else {
        pkt.icmp_type == ICMPV6_DEST_UNREACH
            || pkt.icmp_type == ICMPV6_PACKET_TOO_BIG
            || pkt.icmp_type == ICMPV6_TIME_EXCEEDED
    }
}

#[inline(always)]
fn same_addr(x: &[u8; 16], y: &[u8; 16]) -> bool {
    let mut diff = 0u8;
    for i in 0..16 {
        diff |= x[i] ^ y[i];
    }
    diff == 0
}

/// Reads the packet quoted by the ICMP error `pkt` (see [`is_error`]) into
/// `inner`. False when it cannot be read, carries no L4 header (a later
/// fragment), or was not sent by the error's destination.
#[inline(always)]
pub(crate) fn quoted_packet(bytes: Bytes, pkt: &Packet, inner: &mut Packet) -> bool {
    let l4 = pkt.l4_off as usize;
    if l4 > MAX_L4_OFFSET {
        return false;
    }
    parse_inner(bytes, l4 + ICMP_HDR_LEN, pkt.family, inner) && same_addr(&inner.src, &pkt.dst)
}

/// Does the quoted packet `inner` belong to a live connection on
/// `ifindex`? `flow` is scratch space.
#[inline(always)]
pub(crate) fn is_tracked(inner: &Packet, ifindex: u32, flow: &mut Flow, now: u64) -> bool {
    conntrack::flow_of(inner, ifindex, flow);
    conntrack::is_live(&flow.key, now)
}

/// Reads the quoted IP header and the first 8 bytes of its L4 header.
#[inline(always)]
fn parse_inner(bytes: Bytes, l3: usize, family: u8, inner: &mut Packet) -> bool {
    *inner = Packet::EMPTY;
    inner.family = family;
    let l4 = if family == FAMILY_V4 {
        let Some(h) = bytes.ptr_at::<[u8; IPV4_HDR_LEN]>(l3) else {
            return false;
        };
        let h = unsafe { *h };
        if h[0] >> 4 != 4 {
            return false;
        }
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        if ihl < IPV4_HDR_LEN {
            return false;
        }
        // A later fragment quotes no L4 header.
        if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
            return false;
        }
        inner.proto = h[9];
        inner.src[..4].copy_from_slice(&h[12..16]);
        inner.dst[..4].copy_from_slice(&h[16..20]);
        l3 + ihl
    } else {
        let Some(h) = bytes.ptr_at::<[u8; IPV6_HDR_LEN]>(l3) else {
            return false;
        };
        let h = unsafe { &*h };
        if h[0] >> 4 != 6 {
            return false;
        }
        inner.src.copy_from_slice(&h[8..24]);
        inner.dst.copy_from_slice(&h[24..40]);
        // The quote is cut short and its payload length is the original
        // packet's: only the frame bounds the walk (ptr_at checks them).
        let end = usize::MAX / 2;
        let Some((proto, off)) = walk_v6_exts(bytes, h[6], l3 + IPV6_HDR_LEN, end, inner) else {
            return false;
        };
        // A later fragment quotes no L4 header.
        if inner.is_later_fragment {
            return false;
        }
        inner.proto = proto;
        off
    };
    match inner.proto {
        PROTO_TCP | PROTO_UDP => {
            let Some(p) = bytes.ptr_at::<[u8; 4]>(l4) else {
                return false;
            };
            let p = unsafe { *p };
            inner.src_port = u16::from_be_bytes([p[0], p[1]]);
            inner.dst_port = u16::from_be_bytes([p[2], p[3]]);
        }
        // IPv6 next header 1 and IPv4 protocol 58 are other protocols.
        _ if inner.is_icmp() => {
            let Some(p) = bytes.ptr_at::<[u8; 8]>(l4) else {
                return false;
            };
            let p = unsafe { *p };
            inner.icmp_type = p[0];
            // Only echo is tracked; an error never relates to an error.
            if !conntrack::is_echo(inner) {
                return false;
            }
            let id = u16::from_be_bytes([p[4], p[5]]);
            inner.src_port = id;
            inner.dst_port = id;
        }
        _ => {}
    }
    inner.has_l4 = true;
    true
}
