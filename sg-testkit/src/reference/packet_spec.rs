//! The packets the evaluator judges, and its verdicts.

use std::net::IpAddr;

use sg_common::Reason;

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
    pub(super) fn ports(&self) -> (u16, u16) {
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
    pub(super) const PASS: Outcome = Outcome {
        allowed: true,
        reason: None,
    };

    pub(super) const fn drop(reason: Reason) -> Outcome {
        Outcome {
            allowed: false,
            reason: Some(reason),
        }
    }
}
