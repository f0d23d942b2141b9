//! Builds Ethernet frames for test runs and benchmarks (with etherparse).
//! The IP version follows the addresses.

use std::net::IpAddr;

use etherparse::{IpHeaders, IpNumber, PacketBuilder, PacketBuilderStep};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const PAYLOAD: &[u8] = b"sg-test";

fn ip(src: IpAddr, dst: IpAddr) -> PacketBuilderStep<IpHeaders> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
}

/// A TCP segment with the given flag bits.
pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut b = ip(src, dst).tcp(sport, dport, 1000, 64240);
    if flags & SYN != 0 {
        b = b.syn();
    }
    if flags & ACK != 0 {
        b = b.ack(1);
    }
    if flags & FIN != 0 {
        b = b.fin();
    }
    if flags & RST != 0 {
        b = b.rst();
    }
    if flags & PSH != 0 {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, PAYLOAD).expect("valid TCP frame");
    out
}

pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    ip(src, dst)
        .udp(sport, dport)
        .write(&mut out, PAYLOAD)
        .expect("valid UDP frame");
    out
}

/// An ICMP (v4) or ICMPv6 message of any type and code.
pub fn icmp(src: IpAddr, dst: IpAddr, icmp_type: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    let b = ip(src, dst);
    let written = if src.is_ipv4() {
        b.icmpv4_raw(icmp_type, code, rest).write(&mut out, PAYLOAD)
    } else {
        b.icmpv6_raw(icmp_type, code, rest).write(&mut out, PAYLOAD)
    };
    written.expect("valid ICMP frame");
    out
}

/// Echo request (or reply) with identifier `id`.
pub fn echo(src: IpAddr, dst: IpAddr, id: u16, request: bool) -> Vec<u8> {
    let icmp_type = match (src.is_ipv4(), request) {
        (true, true) => 8,
        (true, false) => 0,
        (false, true) => 128,
        (false, false) => 129,
    };
    let [hi, lo] = id.to_be_bytes();
    icmp(src, dst, icmp_type, 0, [hi, lo, 0, 1])
}

/// An IP packet of any protocol number, with an opaque payload.
pub fn ip_proto(src: IpAddr, dst: IpAddr, proto: u8) -> Vec<u8> {
    let mut out = Vec::new();
    ip(src, dst)
        .write(&mut out, IpNumber(proto), PAYLOAD)
        .expect("valid IP frame");
    out
}

/// An ARP request: not IP, so it always passes.
pub fn arp() -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&[0x08, 0x06]); // ARP
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&[198, 18, 0, 1]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&[198, 18, 0, 2]);
    frame
}

/// An ICMP (v4) or ICMPv6 error quoting `quoted`, an IP packet without its
/// Ethernet header (for example `&tcp(..)[14..]`).
pub fn icmp_error(
    src: IpAddr,
    dst: IpAddr,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let b = ip(src, dst);
    let written = if src.is_ipv4() {
        b.icmpv4_raw(icmp_type, code, rest).write(&mut out, quoted)
    } else {
        b.icmpv6_raw(icmp_type, code, rest).write(&mut out, quoted)
    };
    written.expect("valid ICMP error frame");
    out
}

// ---------------------------------------------------------------------------
// Raw frame builders: every header field under the caller's control, for the
// differential test and the hostile-packet corpus. Checksums of L4 headers
// are left zero (the datapath never reads them); the IPv4 header checksum is
// computed so that a real stack would accept the frame.
// ---------------------------------------------------------------------------

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// IPv4 flags-and-offset field: more fragments.
pub const IP_MF: u16 = 0x2000;
/// IPv4 flags-and-offset field: don't fragment.
pub const IP_DF: u16 = 0x4000;

/// An Ethernet frame: `tags` are (TPID, TCI) pairs, outermost first.
pub fn ethernet(ether_type: u16, tags: &[(u16, u16)], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    out.extend_from_slice(&MAC_B);
    out.extend_from_slice(&MAC_A);
    for (tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&ether_type.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A 20-byte TCP header (data offset 5) with the given flags byte.
pub fn tcp_header(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&1000u32.to_be_bytes());
    if flags & ACK != 0 {
        h[8..12].copy_from_slice(&1u32.to_be_bytes());
    }
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

/// The sequence fields of a TCP segment, for window tracking (SPEC 1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpSeg {
    pub seq: u32,
    /// Written whatever the flags; read by the datapath only with ACK.
    pub ack: u32,
    pub win: u16,
    /// Payload bytes after the header.
    pub payload: u16,
    /// Window-scale option (shift) in the header, as a SYN offers it.
    pub wscale: Option<u8>,
}

impl Default for TcpSeg {
    /// What [`tcp`] and [`tcp_header`] write.
    fn default() -> TcpSeg {
        TcpSeg {
            seq: 1000,
            ack: 1,
            win: 64240,
            payload: PAYLOAD.len() as u16,
            wscale: None,
        }
    }
}

/// A TCP header with `seg`'s fields; with a window-scale option it carries
/// the options Linux puts in a SYN (MSS, SACK permitted, timestamps, NOP,
/// window scale), so the datapath walks past others to find it.
pub fn tcp_seg_header(sport: u16, dport: u16, flags: u8, seg: &TcpSeg) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&seg.seq.to_be_bytes());
    h[8..12].copy_from_slice(&seg.ack.to_be_bytes());
    h[13] = flags;
    h[14..16].copy_from_slice(&seg.win.to_be_bytes());
    if let Some(shift) = seg.wscale {
        h.extend_from_slice(&[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
        h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        h.extend_from_slice(&[1, 3, 3, shift]);
    }
    h[12] = ((h.len() / 4) as u8) << 4;
    h
}

/// A TCP segment with every sequence field chosen (see [`TcpSeg`]).
pub fn tcp_seg(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    seg: &TcpSeg,
) -> Vec<u8> {
    let mut l4 = tcp_seg_header(sport, dport, flags, seg);
    l4.resize(l4.len() + usize::from(seg.payload), b'x');
    ip_frame(src, dst, 6, &l4)
}

/// An 8-byte UDP header; the length covers `payload_len` more bytes.
pub fn udp_header(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h
}

/// An 8-byte ICMP or ICMPv6 header: type, code, checksum, then `rest`
/// (identifier and sequence for echo).
pub fn icmp_header(icmp_type: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let mut h = vec![icmp_type, code, 0, 0];
    h.extend_from_slice(&rest);
    h
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in header.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header and payload. `options` must be a multiple of 4 bytes
/// long; IHL and total length follow from it and from `payload`.
/// `frag` is the flags-and-offset field (offset in 8-byte units).
pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    id: u16,
    frag: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0, "IPv4 options come in 4-byte words");
    let header_len = 20 + options.len();
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | (header_len / 4) as u8;
    h[2..4].copy_from_slice(&((header_len + payload.len()) as u16).to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    h.extend_from_slice(options);
    let sum = ipv4_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// Recomputes the IPv4 header checksum of a packet whose fields a test
/// has edited by hand (the packet starts at the IPv4 header).
pub fn fix_ipv4_checksum(packet: &mut [u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let end = header_len.clamp(20, packet.len());
    packet[10] = 0;
    packet[11] = 0;
    let sum = ipv4_checksum(&packet[..end]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// One IPv6 extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ext {
    /// Hop-by-hop options, `units` 8-byte units beyond the first 8.
    HopByHop { units: u8 },
    /// Routing header (type 4, segments left 0), `units` as above.
    Routing { units: u8 },
    /// Destination options, `units` as above.
    DestOpts { units: u8 },
    /// Fragment header; `offset` in 8-byte units.
    Fragment { offset: u16, more: bool, id: u32 },
}

impl Ext {
    pub const fn number(self) -> u8 {
        match self {
            Ext::HopByHop { .. } => 0,
            Ext::Routing { .. } => 43,
            Ext::DestOpts { .. } => 60,
            Ext::Fragment { .. } => 44,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::HopByHop { units } | Ext::DestOpts { units } => {
                // PadN fills everything after the first two bytes.
                let len = 8 * (usize::from(units) + 1);
                let mut h = vec![next, units, 1, (len - 4) as u8];
                h.resize(len, 0);
                h
            }
            Ext::Routing { units } => {
                let len = 8 * (usize::from(units) + 1);
                let mut h = vec![next, units, 4, 0];
                h.resize(len, 0);
                h
            }
            Ext::Fragment { offset, more, id } => {
                let field = (offset << 3) | u16::from(more);
                let mut h = vec![next, 0];
                h.extend_from_slice(&field.to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h
            }
        }
    }
}

/// An IPv6 header, a chain of extension headers, then `payload` whose
/// protocol is `proto`. The payload length covers everything after the
/// fixed header.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], exts: &[Ext], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, ext) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(proto, |e| e.number());
        body.extend_from_slice(&ext.bytes(next));
    }
    body.extend_from_slice(payload);
    let first = exts.first().map_or(proto, |e| e.number());
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&body);
    h
}

/// An IP packet (v4 or v6 after the addresses) in an untagged Ethernet
/// frame, no options or extension headers.
pub fn ip_frame(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet(
            ETH_P_IP,
            &[],
            &ipv4(s.octets(), d.octets(), proto, 1, 0, &[], payload),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(
            ETH_P_IPV6,
            &[],
            &ipv6(s.octets(), d.octets(), &[], proto, payload),
        ),
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
}
