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
