//! Packet parsing: Ethernet (with up to two VLAN tags) or no link header
//! at all (L3 interfaces), IPv4/IPv6 (with options and extension headers),
//! and the first bytes of the L4 header.
//!
//! Everything is read through bounds-checked pointers at offsets the
//! verifier can bound. A header that does not fit is `Malformed`, never
//! guessed at.

use core::mem::size_of;

use crate::maps::{TCP_OPTIONS, TcpOptions};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use sg_common::{
    FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, TCP_WSCALE_MAX,
    TCP_WSCALE_UNKNOWN,
};

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86DD;
pub(crate) const ETH_P_8021Q: u16 = 0x8100;
pub(crate) const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;

/// IPv6 extension headers walked before giving up on the packet.
const MAX_V6_EXT_HEADERS: usize = 6;
/// No header may start further in than this; keeps offsets verifier-bounded.
pub(crate) const MAX_L4_OFFSET: usize = 512;

pub(crate) const IPPROTO_HOPOPTS: u8 = 0;
pub(crate) const IPPROTO_ROUTING: u8 = 43;
pub(crate) const IPPROTO_FRAGMENT: u8 = 44;
pub(crate) const IPPROTO_AH: u8 = 51;
pub(crate) const IPPROTO_DSTOPTS: u8 = 60;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// What the parser learned about an IP packet.
pub(crate) struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub family: u8,
    pub proto: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub tcp_flags: u8,
    /// L4 header present: ports / ICMP fields / TCP flags are valid.
    pub has_l4: bool,
    /// Part of a fragmented datagram (first or later).
    pub is_fragment: bool,
    /// A fragment with a non-zero offset: it carries no L4 header.
    pub is_later_fragment: bool,
    /// IPv4 identification or IPv6 fragment identification.
    pub frag_id: u32,
    /// Offset of the L4 header in the frame (valid with `has_l4`).
    pub l4_off: u16,
    /// TCP sequence and acknowledgement numbers, raw window, payload bytes
    /// (the datagram after the TCP header), and the window-scale option of
    /// a SYN (`TCP_WSCALE_UNKNOWN` without one, or on any other segment).
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    pub tcp_len: u32,
    pub tcp_win: u16,
    pub tcp_wscale: u8,
}

impl Packet {
    pub(crate) const EMPTY: Packet = Packet {
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        family: 0,
        proto: 0,
        icmp_type: 0,
        icmp_code: 0,
        tcp_flags: 0,
        has_l4: false,
        is_fragment: false,
        is_later_fragment: false,
        frag_id: 0,
        l4_off: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        tcp_len: 0,
        tcp_win: 0,
        tcp_wscale: TCP_WSCALE_UNKNOWN,
    };

    pub(crate) fn is_icmp(&self) -> bool {
        (self.family == FAMILY_V4 && self.proto == PROTO_ICMP)
            || (self.family == FAMILY_V6 && self.proto == PROTO_ICMPV6)
    }
}

pub(crate) enum Parsed {
    /// Not IP (ARP, LLDP, ...): always passes (SPEC 1.10).
    NotIp,
    Ip,
    /// Broken or truncated; whatever was learned is in the packet.
    Malformed,
}

/// A bounds-checked view of `[data, data_end)`.
#[derive(Clone, Copy)]
pub(crate) struct Bytes {
    pub data: usize,
    pub data_end: usize,
}

impl Bytes {
    #[inline(always)]
    pub(crate) fn ptr_at<T>(&self, offset: usize) -> Option<*const T> {
        let start = self.data + offset;
        if start + size_of::<T>() > self.data_end {
            return None;
        }
        Some(start as *const T)
    }

    #[inline(always)]
    fn be16_at(&self, offset: usize) -> Option<u16> {
        self.ptr_at::<[u8; 2]>(offset)
            .map(|p| u16::from_be_bytes(unsafe { *p }))
    }
}

/// Parses one frame. `wire_len` is the full packet length, which on TC can
/// exceed the linear bytes in `bytes`. `l3`: the interface has no link
/// header, so the frame starts with the IP header.
#[inline(always)]
pub(crate) fn parse(bytes: Bytes, wire_len: usize, l3: bool, pkt: &mut Packet) -> Parsed {
    *pkt = Packet::EMPTY;
    let parsed = if l3 {
        parse_l3(bytes, wire_len, pkt)
    } else {
        parse_ethernet(bytes, wire_len, pkt)
    };
    if let Parsed::Ip = parsed
        && pkt.has_l4
        && pkt.proto == PROTO_TCP
        && pkt.tcp_flags & TCP_SYN != 0
    {
        // One call site, after every path of the IP parsers, L3 framing
        // included: inlined into each, the walk multiplies the states the
        // verifier explores.
        tcp_wscale(bytes, pkt);
    }
    parsed
}

/// An Ethernet frame, with up to two VLAN tags.
#[inline(always)]
fn parse_ethernet(bytes: Bytes, wire_len: usize, pkt: &mut Packet) -> Parsed {
    let Some(eth) = bytes.ptr_at::<EthHdr>(0) else {
        return Parsed::Malformed;
    };
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3 = EthHdr::LEN;
    // 802.1ad outer tag, then 802.1Q: classify the inner packet.
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let Some(inner) = bytes.be16_at(l3 + 2) else {
            return Parsed::Malformed;
        };
        ether_type = inner;
        l3 += VLAN_HLEN;
    }
    match ether_type {
        ETH_P_IP => parse_v4(bytes, l3, wire_len, pkt),
        ETH_P_IPV6 => parse_v6(bytes, l3, wire_len, pkt),
        ETH_P_8021Q | ETH_P_8021AD => Parsed::Malformed, // a third tag
        _ => Parsed::NotIp,
    }
}

/// A packet with no link header: the version nibble picks the family.
/// Anything else is broken, never "not IP": every packet of an L3
/// interface is an IP packet.
#[inline(always)]
fn parse_l3(bytes: Bytes, wire_len: usize, pkt: &mut Packet) -> Parsed {
    // Every IP header is at least 20 bytes; one check of that many also
    // keeps the verifier's range simple (a 1-byte check compiles to a
    // comparison it cannot use).
    let Some(first) = bytes.ptr_at::<[u8; Ipv4Hdr::LEN]>(0) else {
        return Parsed::Malformed;
    };
    match unsafe { (*first)[0] } >> 4 {
        4 => parse_v4(bytes, 0, wire_len, pkt),
        6 => parse_v6(bytes, 0, wire_len, pkt),
        _ => Parsed::Malformed,
    }
}

#[inline(always)]
fn parse_v4(bytes: Bytes, l3: usize, wire_len: usize, pkt: &mut Packet) -> Parsed {
    pkt.family = FAMILY_V4;
    let Some(ip) = bytes.ptr_at::<Ipv4Hdr>(l3) else {
        return Parsed::Malformed;
    };
    let ip = unsafe { &*ip };
    pkt.src[..4].copy_from_slice(&ip.src_addr);
    pkt.dst[..4].copy_from_slice(&ip.dst_addr);
    pkt.proto = ip.proto;
    if ip.vihl >> 4 != 4 {
        return Parsed::Malformed;
    }
    let header_len = ((ip.vihl & 0x0f) as usize) * 4;
    if header_len < Ipv4Hdr::LEN {
        return Parsed::Malformed;
    }
    let mut total_len = u16::from_be_bytes(ip.tot_len) as usize;
    // IPv4 BIG TCP: a GSO packet longer than 64 KiB carries a total length
    // of 0 and runs to the end of the frame. Only a frame that long may.
    if total_len == 0 && wire_len > 0xffff + l3 {
        total_len = wire_len - l3;
    }
    if total_len < header_len || l3 + total_len > wire_len {
        return Parsed::Malformed;
    }
    let frags = u16::from_be_bytes(ip.frags);
    let more_fragments = frags & 0x2000 != 0;
    let offset = frags & 0x1fff;
    pkt.is_fragment = more_fragments || offset != 0;
    pkt.is_later_fragment = offset != 0;
    pkt.frag_id = u16::from_be_bytes(ip.id) as u32;
    if pkt.is_later_fragment {
        return Parsed::Ip;
    }
    // The L4 header must lie inside the datagram, not in frame padding.
    parse_l4(bytes, l3 + header_len, l3 + total_len, pkt)
}

#[inline(always)]
fn parse_v6(bytes: Bytes, l3: usize, wire_len: usize, pkt: &mut Packet) -> Parsed {
    pkt.family = FAMILY_V6;
    let Some(ip) = bytes.ptr_at::<Ipv6Hdr>(l3) else {
        return Parsed::Malformed;
    };
    let ip = unsafe { &*ip };
    pkt.src = ip.src_addr;
    pkt.dst = ip.dst_addr;
    if ip.vcf[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    // A zero payload length is a jumbogram or a big-TCP GSO packet.
    if payload_len != 0 && l3 + Ipv6Hdr::LEN + payload_len > wire_len {
        return Parsed::Malformed;
    }
    // Where the datagram ends: headers past it are not part of it.
    let end = if payload_len == 0 {
        wire_len
    } else {
        l3 + Ipv6Hdr::LEN + payload_len
    };
    let Some((next, off)) = walk_v6_exts(bytes, ip.next_hdr, l3 + Ipv6Hdr::LEN, end, pkt) else {
        return Parsed::Malformed;
    };
    pkt.proto = next;
    if pkt.is_later_fragment {
        return Parsed::Ip;
    }
    parse_l4(bytes, off, end, pkt)
}

/// Walks an IPv6 extension-header chain whose first header is `next` at
/// `off`, up to `end`: returns the upper-layer protocol and its offset,
/// and records a Fragment header in `pkt`. `None` for a broken chain or
/// one longer than the walk (SPEC 1.11: drop rather than guess; `pkt.proto`
/// then holds the header the walk stopped at). Used for packets and for
/// the packets quoted by ICMPv6 errors.
#[inline(always)]
pub(crate) fn walk_v6_exts(
    bytes: Bytes,
    mut next: u8,
    mut off: usize,
    end: usize,
    pkt: &mut Packet,
) -> Option<(u8, usize)> {
    for _ in 0..MAX_V6_EXT_HEADERS {
        if !matches!(
            next,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
        ) {
            return Some((next, off));
        }
        if off + 8 > end {
            return None;
        }
        // Every extension header starts with next-header and a length, and
        // is at least 8 bytes long. One bounds check covers all we read.
        let hdr = bytes.ptr_at::<[u8; 8]>(off)?;
        let hdr = unsafe { *hdr };
        let len = match next {
            IPPROTO_AH => (hdr[1] as usize + 2) * 4,
            IPPROTO_FRAGMENT => {
                let frag = u16::from_be_bytes([hdr[2], hdr[3]]);
                pkt.is_fragment = true;
                pkt.is_later_fragment = frag & 0xfff8 != 0;
                pkt.frag_id = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
                8
            }
            _ => (hdr[1] as usize + 1) * 8,
        };
        next = hdr[0];
        off += len;
        if off > MAX_L4_OFFSET {
            return None;
        }
    }
    pkt.proto = next;
    None
}

#[inline(always)]
fn parse_l4(bytes: Bytes, l4: usize, end: usize, pkt: &mut Packet) -> Parsed {
    if l4 > MAX_L4_OFFSET {
        return Parsed::Malformed;
    }
    // The whole fixed header of TCP (20 bytes), UDP and ICMP (8 bytes)
    // must be inside the datagram: a cut header is never guessed at.
    let need = match pkt.proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ if pkt.is_icmp() => 8,
        _ => 0,
    };
    if l4 + need > end {
        return Parsed::Malformed;
    }
    // One bounds check per header: the verifier cannot carry a check of a
    // later byte back to an earlier one.
    match pkt.proto {
        PROTO_TCP => {
            // The fixed header: ports, sequence numbers, data offset, and
            // the flags byte at 13.
            let Some(hdr) = bytes.ptr_at::<[u8; 20]>(l4) else {
                return Parsed::Malformed;
            };
            let hdr = unsafe { *hdr };
            if hdr[12] >> 4 < 5 {
                // A data offset below the fixed header's 20 bytes.
                return Parsed::Malformed;
            }
            pkt.src_port = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dst_port = u16::from_be_bytes([hdr[2], hdr[3]]);
            pkt.tcp_flags = hdr[13];
            pkt.tcp_seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            pkt.tcp_ack = u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
            pkt.tcp_win = u16::from_be_bytes([hdr[14], hdr[15]]);
            let header_len = ((hdr[12] >> 4) as usize) * 4;
            pkt.tcp_len = end.saturating_sub(l4 + header_len) as u32;
        }
        PROTO_UDP => {
            let Some(hdr) = bytes.ptr_at::<[u8; 8]>(l4) else {
                return Parsed::Malformed;
            };
            let hdr = unsafe { *hdr };
            pkt.src_port = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dst_port = u16::from_be_bytes([hdr[2], hdr[3]]);
        }
        _ if pkt.is_icmp() => {
            // Type, code, checksum, and the echo identifier.
            let Some(hdr) = bytes.ptr_at::<[u8; 8]>(l4) else {
                return Parsed::Malformed;
            };
            let hdr = unsafe { *hdr };
            pkt.icmp_type = hdr[0];
            pkt.icmp_code = hdr[1];
            // The echo identifier doubles as both "ports" of the flow.
            let id = u16::from_be_bytes([hdr[4], hdr[5]]);
            pkt.src_port = id;
            pkt.dst_port = id;
        }
        _ => {}
    }
    pkt.has_l4 = true;
    pkt.l4_off = l4 as u16;
    Parsed::Ip
}

/// Most TCP option bytes (a 60-byte header less the fixed 20).
const TCP_MAX_OPTION_BYTES: usize = 40;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;

/// Records in `pkt.tcp_wscale` the window-scale shift a SYN offers. Walks
/// the options at most 40 steps; EOL, a length below 2, or an option that
/// overruns the header ends the walk.
///
/// Verifier cost: the options are first copied to the per-CPU
/// `TCP_OPTIONS` map by one fixed-size read, then walked there by a cursor
/// that is itself kept in map memory. Every step then ends in the same
/// verifier state and the loop is checked once; a walk over the packet with
/// the cursor in a register made the verifier explore each layout of
/// options separately, past its limit.
#[inline(always)]
fn tcp_wscale(bytes: Bytes, pkt: &mut Packet) {
    let l4 = pkt.l4_off as usize;
    if l4 > MAX_L4_OFFSET {
        return;
    }
    let Some(hdr) = bytes.ptr_at::<[u8; 20]>(l4) else {
        return;
    };
    let words = (unsafe { *hdr }[12] >> 4) as usize;
    let at = l4 + 20;
    if words > 5
        && let Some(shift) = common_layout_wscale(bytes, at, (words - 5) * 4)
    {
        pkt.tcp_wscale = clamp_wscale(shift);
        return;
    }
    let Some(buf) = TCP_OPTIONS.get_ptr_mut(0) else {
        return;
    };
    let buf = unsafe { &mut *buf };
    // Options come in 4-byte words: header words 6-15.
    let copied = match words {
        6 => copy_options::<4>(bytes, at, buf),
        7 => copy_options::<8>(bytes, at, buf),
        8 => copy_options::<12>(bytes, at, buf),
        9 => copy_options::<16>(bytes, at, buf),
        10 => copy_options::<20>(bytes, at, buf),
        11 => copy_options::<24>(bytes, at, buf),
        12 => copy_options::<28>(bytes, at, buf),
        13 => copy_options::<32>(bytes, at, buf),
        14 => copy_options::<36>(bytes, at, buf),
        15 => copy_options::<40>(bytes, at, buf),
        _ => false,
    };
    if !copied {
        return;
    }
    let opts = (words - 5) * 4;
    buf.cursor = 0;
    buf.wscale = TCP_WSCALE_UNKNOWN;
    for pos in 0..TCP_MAX_OPTION_BYTES {
        // Past `opts` the bytes are another packet's.
        if pos < opts && unsafe { core::ptr::read_volatile(&buf.cursor) } as usize == pos {
            let next = tcp_option_step(buf, pos, opts);
            unsafe { core::ptr::write_volatile(&mut buf.cursor, next) };
        }
    }
    pkt.tcp_wscale = unsafe { core::ptr::read_volatile(&buf.wscale) };
}

/// The window-scale shift of a SYN whose options start the way the
/// common stacks write them, read at fixed offsets; `None` sends the
/// options to the full walk. A SYN flood is mostly such SYNs, and the walk
/// costs half a drop. Each layout is matched up to and including its
/// window-scale option, so the walk would find the same shift:
/// - MSS, NOP, WS (Windows, macOS, the BSDs);
/// - MSS, SACK permitted, timestamps, NOP, WS (Linux);
/// - MSS, NOP, NOP, SACK permitted, NOP, WS (Linux without timestamps).
#[inline(always)]
fn common_layout_wscale(bytes: Bytes, at: usize, opts: usize) -> Option<u8> {
    // Whole words compared, one branch each: the verifier walks every
    // comparison for every state that reaches it.
    let be = |o: &[u8], i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    if opts < 8 {
        return None;
    }
    let head = unsafe { *bytes.ptr_at::<[u8; 8]>(at)? };
    if head[..2] != [2, 4] {
        return None;
    }
    match be(&head, 4) {
        // NOP, WS: the shift is the next byte.
        w if w >> 8 == 0x01_0303 => Some(head[7]),
        0x0402_080a if opts >= 20 => {
            let o = unsafe { *bytes.ptr_at::<[u8; 20]>(at)? };
            (be(&o, 16) >> 8 == 0x01_0303).then_some(o[19])
        }
        0x0101_0402 if opts >= 12 => {
            let o = unsafe { *bytes.ptr_at::<[u8; 12]>(at)? };
            (be(&o, 8) >> 8 == 0x01_0303).then_some(o[11])
        }
        _ => None,
    }
}

/// RFC 7323: shifts above 14 are treated as 14.
#[inline(always)]
fn clamp_wscale(shift: u8) -> u8 {
    if shift > TCP_WSCALE_MAX {
        TCP_WSCALE_MAX
    } else {
        shift
    }
}

#[inline(always)]
fn copy_options<const N: usize>(bytes: Bytes, at: usize, buf: &mut TcpOptions) -> bool {
    let Some(src) = bytes.ptr_at::<[u8; N]>(at) else {
        return false;
    };
    let src = unsafe { &*src };
    buf.bytes[..N].copy_from_slice(src);
    true
}

/// Cursor value that matches no position: the walk is over.
const OPT_WALK_DONE: u8 = 0xff;

/// The option at `pos`: returns where the next one starts, or
/// `OPT_WALK_DONE`.
#[inline(always)]
fn tcp_option_step(buf: &mut TcpOptions, pos: usize, opts: usize) -> u8 {
    let kind = buf.bytes[pos];
    if kind == TCPOPT_NOP {
        return pos as u8 + 1;
    }
    // A kind in the last byte has no length byte: the walk ends.
    let len = if pos + 1 < opts {
        buf.bytes[pos + 1] as usize
    } else {
        0
    };
    if kind == TCPOPT_EOL || len < 2 || pos + len > opts {
        return OPT_WALK_DONE;
    }
    if kind == TCPOPT_WINDOW && len == 3 {
        buf.wscale = clamp_wscale(buf.bytes[pos + 2]);
        return OPT_WALK_DONE;
    }
    (pos + len) as u8
}
