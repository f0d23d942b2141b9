//! Fragments, odd TCP flags, what is not IP, and IPv4 total length zero.

use super::*;

/// IPv4 fragment of a TCP packet to `dport` or of its later part.
fn v4_frag(src: Ipv4Addr, proto: u8, id: u16, field: u16, payload: &[u8]) -> Vec<u8> {
    packet::ethernet(
        ETH_P_IP,
        &[],
        &packet::ipv4(
            src.octets(),
            LOCAL4.octets(),
            proto,
            id,
            field,
            &[],
            payload,
        ),
    )
}

fn v6_frag(src: Ipv6Addr, proto: u8, id: u32, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let exts = [Ext::Fragment { offset, more, id }];
    packet::ethernet(
        ETH_P_IPV6,
        &[],
        &packet::ipv6(src.octets(), LOCAL6.octets(), &exts, proto, payload),
    )
}

#[test]
fn fragments_follow_their_first_fragment_v4() {
    let mut b = bed(SSH);
    let data = [0x5a; 24];
    let first = |dport, id| v4_frag(REMOTE4, 6, id, IP_MF, &tcp_l4(dport, SYN));
    let later =
        |src, proto, id, more| v4_frag(src, proto, id, 3 | if more { IP_MF } else { 0 }, &data);
    // Allowed first fragment; its followers pass, the last one too.
    expect(&mut b, DIR_INGRESS, &first(22, 100), Ok(()), "first to 22");
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 6, 100, true),
        Ok(()),
        "middle",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 6, 100, false),
        Ok(()),
        "last",
    );
    // The key is (src, dst, proto, id): change any and it is a stray.
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 6, 101, false),
        Err(Reason::Fragment),
        "other id",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 17, 100, false),
        Err(Reason::Fragment),
        "other proto",
    );
    let other = Ipv4Addr::new(198, 18, 7, 8);
    expect(
        &mut b,
        DIR_INGRESS,
        &later(other, 6, 100, false),
        Err(Reason::Fragment),
        "other src",
    );
    // A denied first fragment: it and its followers are dropped.
    expect(
        &mut b,
        DIR_INGRESS,
        &first(23, 200),
        Err(Reason::NoRule),
        "first to 23",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 6, 200, false),
        Err(Reason::Fragment),
        "after a denied first",
    );
    // A later fragment before (without) any first.
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 6, 300, true),
        Err(Reason::Fragment),
        "no first",
    );
    // A tiny first fragment that cuts the TCP header: never guessed.
    let tiny = v4_frag(
        REMOTE4,
        6,
        400,
        IP_MF,
        &packet::tcp_header(40000, 22, SYN)[..8],
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &tiny,
        Err(Reason::Malformed),
        "tiny first fragment",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 6, 400, false),
        Err(Reason::Fragment),
        "after a tiny first",
    );
    // The overlapping-fragment trick: a "later" fragment at offset 1 (8
    // bytes) cannot carry a header, so it is not judged on one.
    let overlap = v4_frag(REMOTE4, 6, 500, 1, &packet::tcp_header(40000, 22, SYN));
    expect(
        &mut b,
        DIR_INGRESS,
        &overlap,
        Err(Reason::Fragment),
        "offset-1 fragment with no first",
    );
    // UDP and ICMP first fragments follow the same rule.
    let mut udp = packet::udp_header(5000, 53, 16);
    udp.extend_from_slice(&[0; 16]);
    expect(
        &mut b,
        DIR_INGRESS,
        &v4_frag(REMOTE4, 17, 600, IP_MF, &udp),
        Ok(()),
        "udp first",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 17, 600, false),
        Ok(()),
        "udp last",
    );
    let icmp = packet::icmp_header(8, 0, [0, 1, 0, 1]);
    expect(
        &mut b,
        DIR_INGRESS,
        &v4_frag(REMOTE4, 1, 700, IP_MF, &icmp),
        Ok(()),
        "echo first",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE4, 1, 700, false),
        Ok(()),
        "echo last",
    );
}

#[test]
fn fragments_follow_their_first_fragment_v6() {
    let mut b = bed(SSH);
    let data = [0x5a; 24];
    let first = |dport, id| v6_frag(REMOTE6, 6, id, 0, true, &tcp_l4(dport, SYN));
    let later = |src, proto, id| v6_frag(src, proto, id, 3, false, &data);
    expect(
        &mut b,
        DIR_INGRESS,
        &first(22, 0x1_0000),
        Ok(()),
        "first to 22",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE6, 6, 0x1_0000),
        Ok(()),
        "last",
    );
    // IDs are 32 bits: one that only matches in its low 16 is a stray.
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE6, 6, 0x2_0000),
        Err(Reason::Fragment),
        "other id",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE6, 17, 0x1_0000),
        Err(Reason::Fragment),
        "other proto",
    );
    let other = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 8);
    expect(
        &mut b,
        DIR_INGRESS,
        &later(other, 6, 0x1_0000),
        Err(Reason::Fragment),
        "other src",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &first(23, 9),
        Err(Reason::NoRule),
        "first to 23",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &later(REMOTE6, 6, 9),
        Err(Reason::Fragment),
        "after a denied first",
    );
    // An atomic fragment (offset 0, no more) is a whole packet.
    expect(
        &mut b,
        DIR_INGRESS,
        &v6_frag(REMOTE6, 6, 11, 0, false, &tcp_l4(22, SYN)),
        Ok(()),
        "atomic to 22",
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &v6_frag(REMOTE6, 6, 12, 0, false, &tcp_l4(23, SYN)),
        Err(Reason::NoRule),
        "atomic to 23",
    );
    // The first fragment behind other extension headers.
    let exts = [
        Ext::HopByHop { units: 0 },
        Ext::Fragment {
            offset: 0,
            more: true,
            id: 13,
        },
    ];
    let f = packet::ethernet(
        ETH_P_IPV6,
        &[],
        &packet::ipv6(
            REMOTE6.octets(),
            LOCAL6.octets(),
            &exts,
            6,
            &tcp_l4(22, SYN),
        ),
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &f,
        Ok(()),
        "hop-by-hop then first fragment",
    );
    let exts = [
        Ext::HopByHop { units: 0 },
        Ext::Fragment {
            offset: 3,
            more: false,
            id: 13,
        },
    ];
    let f = packet::ethernet(
        ETH_P_IPV6,
        &[],
        &packet::ipv6(REMOTE6.octets(), LOCAL6.octets(), &exts, 6, &data),
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &f,
        Ok(()),
        "hop-by-hop then last fragment",
    );
    // Tiny first fragment.
    let tiny = v6_frag(
        REMOTE6,
        6,
        14,
        0,
        true,
        &packet::tcp_header(40000, 22, SYN)[..8],
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &tiny,
        Err(Reason::Malformed),
        "tiny first fragment",
    );
}

#[test]
fn odd_tcp_flags_never_create_state() {
    // Ingress allows TCP 22; egress allows nothing, so a reply passes only
    // if the inbound packet created a connection.
    let mut b = bed(SSH);
    let (r, l) = (IpAddr::V4(REMOTE4), IpAddr::V4(LOCAL4));
    for (i, flags) in [
        0u8,                         // null
        FIN | PSH | URG,             // xmas
        SYN | FIN,                   //
        SYN | RST,                   //
        SYN | ACK,                   //
        ACK,                         //
        FIN,                         //
        RST,                         //
        0xff,                        // everything
        FIN | SYN | RST | PSH | ACK, //
    ]
    .into_iter()
    .enumerate()
    {
        let sport = 41000 + i as u16;
        let what = format!("flags {flags:#04x}");
        // The rule allows the packet itself...
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::tcp(r, l, sport, 22, flags),
            Ok(()),
            &what,
        );
        // ...but it opened nothing: the answer is judged by egress rules.
        expect(
            &mut b,
            DIR_EGRESS,
            &packet::tcp(l, r, 22, sport, SYN | ACK),
            Err(Reason::NoRule),
            &what,
        );
        expect(
            &mut b,
            DIR_EGRESS,
            &packet::tcp(l, r, 22, sport, RST | ACK),
            Err(Reason::NoRule),
            &what,
        );
        // To a port no rule allows, it is dropped.
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::tcp(r, l, sport, 23, flags),
            Err(Reason::NoRule),
            &what,
        );
    }
    assert!(
        b.conntrack_entries().unwrap().is_empty(),
        "odd flags created state"
    );
    // A bare SYN, with or without ECN and PSH bits, does open.
    expect(
        &mut b,
        DIR_INGRESS,
        &packet::tcp(r, l, 42000, 22, SYN | PSH),
        Ok(()),
        "SYN|PSH",
    );
    expect(
        &mut b,
        DIR_EGRESS,
        &packet::tcp(l, r, 22, 42000, SYN | ACK),
        Ok(()),
        "its SYN-ACK",
    );
    assert_eq!(b.conntrack_entries().unwrap().len(), 1);
}

#[test]
fn non_ip_and_neighbour_discovery_always_pass() {
    // No ingress, no egress.
    let mut b = bed("[groups.none]\ningress = []\negress = []\n");
    let (r, l) = (IpAddr::V6(REMOTE6), IpAddr::V6(LOCAL6));
    for t in 133..=137u8 {
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::icmp(r, l, t, 0, [0; 4]),
            Ok(()),
            "ND in",
        );
        expect(
            &mut b,
            DIR_EGRESS,
            &packet::icmp(l, r, t, 0, [0; 4]),
            Ok(()),
            "ND out",
        );
    }
    for t in [129u8, 138, 128, 1, 144] {
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::icmp(r, l, t, 0, [0; 4]),
            Err(Reason::NoRule),
            "not ND",
        );
    }
    // ND behind a VLAN tag and behind a hop-by-hop header.
    let nd = packet::ipv6(
        REMOTE6.octets(),
        LOCAL6.octets(),
        &[],
        58,
        &packet::icmp_header(135, 0, [0; 4]),
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &packet::ethernet(ETH_P_IPV6, &[(ETH_P_8021Q, 3)], &nd),
        Ok(()),
        "tagged ND",
    );
    let nd_hbh = packet::ipv6(
        REMOTE6.octets(),
        LOCAL6.octets(),
        &[Ext::HopByHop { units: 0 }],
        58,
        &packet::icmp_header(143, 0, [0; 4]), // MLDv2 report
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &packet::ethernet(ETH_P_IPV6, &[], &nd_hbh),
        Ok(()),
        "MLD is exempt too (SPEC 1.10)",
    );
    // ICMPv6 type 135 inside IPv4 (protocol 58) is not neighbour discovery.
    let fake = packet::ethernet(
        ETH_P_IP,
        &[],
        &packet::ipv4(
            REMOTE4.octets(),
            LOCAL4.octets(),
            58,
            1,
            0,
            &[],
            &packet::icmp_header(135, 0, [0; 4]),
        ),
    );
    expect(
        &mut b,
        DIR_INGRESS,
        &fake,
        Err(Reason::NoRule),
        "ICMPv6 in IPv4",
    );
    // Non-IP of every common kind passes.
    for ether_type in [0x0806u16, 0x88cc, 0x8847, 0x22f0] {
        let f = packet::ethernet(ether_type, &[], &[0; 46]);
        expect(&mut b, DIR_INGRESS, &f, Ok(()), "non-IP in");
        expect(&mut b, DIR_EGRESS, &f, Ok(()), "non-IP out");
    }
}

/// An IPv4 total length of 0 is IPv4 BIG TCP's mark on a GSO packet past
/// 64 KiB (then the datagram runs to the end of the frame). On any shorter
/// frame it stays malformed, in both directions.
#[test]
fn ipv4_total_length_zero_is_only_big_tcp_past_64k() {
    let mut b = bed(OPEN);
    let mut ip = packet::ipv4(
        LOCAL4.octets(),
        REMOTE4.octets(),
        6,
        9,
        IP_DF,
        &[],
        &tcp_l4(22, ACK),
    );
    ip[2..4].copy_from_slice(&0u16.to_be_bytes());
    packet::fix_ipv4_checksum(&mut ip);
    let frame = packet::ethernet(ETH_P_IP, &[], &ip);
    for dir in [DIR_EGRESS, DIR_INGRESS] {
        expect(&mut b, dir, &frame, Err(Reason::Malformed), "short frame");
    }
    // The datagram's bytes cannot say where it ends: a longer frame of
    // ordinary size is no better.
    let mut padded = frame.clone();
    padded.resize(3000, 0);
    for dir in [DIR_EGRESS, DIR_INGRESS] {
        expect(
            &mut b,
            dir,
            &padded,
            Err(Reason::Malformed),
            "3000-byte frame",
        );
    }
    // (BPF_PROG_TEST_RUN refuses TC frames past a page, so the accepted
    // case, a real GSO packet past 64 KiB, cannot be run here.)
}
