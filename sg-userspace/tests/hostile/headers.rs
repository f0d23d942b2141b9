//! Headers: truncation, IPv4 options and lengths, IPv6 extension chains,
//! VLAN tags.

use super::*;

#[test]
fn truncation_at_every_length_of_every_header_is_malformed() {
    let mut b = bed(OPEN);
    let mut checked = 0;
    for shape in shapes() {
        for (dir, frame) in [
            (DIR_EGRESS, shape.frame.clone()),
            (DIR_INGRESS, swap(&shape)),
        ] {
            // The whole frame passes: the config allows everything.
            expect(&mut b, dir, &frame, Ok(()), shape.name);
            for len in 0..frame.len() {
                for fix in [false, true] {
                    let cut = truncate(&shape, &frame, len, fix);
                    let what = format!("{} cut to {len} bytes (lengths fixed: {fix})", shape.name);
                    if len < 14 {
                        // The kernel refuses to run a frame shorter than an
                        // Ethernet header: no such frame reaches the program.
                        let r = if dir == DIR_INGRESS {
                            b.ingress(&cut)
                        } else {
                            b.egress(&cut)
                        };
                        assert!(r.is_err(), "{what}: test run accepted it");
                        continue;
                    }
                    // With the length fields fixed, a cut after the last
                    // header is a shorter, valid packet; anything else is
                    // a truncated header, or a frame shorter than its IP
                    // length says.
                    let fixed_ip = if shape.v6 { 40 } else { 20 };
                    if dir == DIR_EGRESS && shape.l3 == 14 && len < 14 + fixed_ip {
                        // TC test runs refuse an untagged IP frame shorter
                        // than the fixed IP header (the skb path pulls it);
                        // the XDP side checks these lengths.
                        assert!(b.egress(&cut).is_err(), "{what}: TC test run accepted it");
                        continue;
                    }
                    let want = if fix && len >= shape.headers_end {
                        Ok(())
                    } else {
                        Err(Reason::Malformed)
                    };
                    expect(&mut b, dir, &cut, want, &what);
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} truncated frames checked");
    assert!(checked > 1000);
}

#[test]
fn ipv4_options_are_skipped_and_the_real_ports_judged() {
    let mut b = bed(SSH);
    let (src, dst) = (REMOTE4.octets(), LOCAL4.octets());
    // Options that look like a TCP header to port 22 where one would start
    // without options: the real header (after IHL*4) says port 23.
    let decoy = {
        let mut d = packet::tcp_header(40000, 22, SYN);
        d.truncate(20);
        d
    };
    for words in 1..=10usize {
        let mut options = decoy.clone();
        options.resize(4 * words, 1); // NOP padding
        let real = |dport| {
            packet::ethernet(
                ETH_P_IP,
                &[],
                &packet::ipv4(src, dst, 6, 9, IP_DF, &options, &tcp_l4(dport, SYN)),
            )
        };
        expect(&mut b, DIR_INGRESS, &real(22), Ok(()), "options, port 22");
        expect(
            &mut b,
            DIR_INGRESS,
            &real(23),
            Err(Reason::NoRule),
            "options, port 23",
        );
    }
}

#[test]
fn broken_ipv4_lengths_and_versions_are_malformed() {
    let mut b = bed(SSH);
    let good = packet::ipv4(
        REMOTE4.octets(),
        LOCAL4.octets(),
        6,
        9,
        IP_DF,
        &[],
        &tcp_l4(22, SYN),
    );
    let frame = |ip: &[u8]| packet::ethernet(ETH_P_IP, &[], ip);
    expect(&mut b, DIR_INGRESS, &frame(&good), Ok(()), "intact");
    for ihl in 0..5u8 {
        let mut ip = good.clone();
        ip[0] = 0x40 | ihl;
        packet::fix_ipv4_checksum(&mut ip);
        expect(
            &mut b,
            DIR_INGRESS,
            &frame(&ip),
            Err(Reason::Malformed),
            &format!("IHL {ihl}"),
        );
    }
    for total in [0u16, 1, 19] {
        let mut ip = good.clone();
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        packet::fix_ipv4_checksum(&mut ip);
        expect(
            &mut b,
            DIR_INGRESS,
            &frame(&ip),
            Err(Reason::Malformed),
            &format!("total length {total}"),
        );
    }
    // IHL 6 (24 bytes of header) but a total length of 20..23.
    let with_opt = packet::ipv4(
        REMOTE4.octets(),
        LOCAL4.octets(),
        6,
        9,
        IP_DF,
        &[1, 1, 1, 0],
        &tcp_l4(22, SYN),
    );
    for total in 20u16..24 {
        let mut ip = with_opt.clone();
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        packet::fix_ipv4_checksum(&mut ip);
        expect(
            &mut b,
            DIR_INGRESS,
            &frame(&ip),
            Err(Reason::Malformed),
            &format!("IHL 6, total {total}"),
        );
    }
    // A total length longer than the frame.
    let mut ip = good.clone();
    ip[2..4].copy_from_slice(&((good.len() + 1) as u16).to_be_bytes());
    packet::fix_ipv4_checksum(&mut ip);
    expect(
        &mut b,
        DIR_INGRESS,
        &frame(&ip),
        Err(Reason::Malformed),
        "total length past the frame",
    );
    // Version 6 in an IPv4 ethertype, and version 4 in an IPv6 one.
    let mut ip = good.clone();
    ip[0] = 0x65;
    expect(
        &mut b,
        DIR_INGRESS,
        &frame(&ip),
        Err(Reason::Malformed),
        "version 6 in 0x0800",
    );
    let mut ip6 = packet::ipv6(REMOTE6.octets(), LOCAL6.octets(), &[], 6, &tcp_l4(22, SYN));
    ip6[0] = 0x40;
    expect(
        &mut b,
        DIR_INGRESS,
        &packet::ethernet(ETH_P_IPV6, &[], &ip6),
        Err(Reason::Malformed),
        "version 4 in 0x86dd",
    );
}

#[test]
fn l4_header_past_the_ip_length_is_never_read() {
    // The IP length ends inside the TCP header; Ethernet padding after it
    // holds the rest of a header to port 22. Judging on the padding would
    // be a guess: it is malformed.
    let mut b = bed(SSH);
    let tcp = packet::tcp_header(40000, 22, SYN);
    for kept in [0usize, 4, 8, 13, 14, 19] {
        let mut ip = packet::ipv4(
            REMOTE4.octets(),
            LOCAL4.octets(),
            6,
            9,
            IP_DF,
            &[],
            &tcp[..kept],
        );
        ip.extend_from_slice(&tcp[kept..]);
        ip.extend_from_slice(&[0; 8]);
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::ethernet(ETH_P_IP, &[], &ip),
            Err(Reason::Malformed),
            &format!("v4: {kept} TCP bytes inside the IP length"),
        );
        if kept == 0 {
            // A payload length of 0 means a jumbogram (or a big-TCP GSO
            // packet on egress): the frame length bounds it instead.
            continue;
        }
        let mut ip6 = packet::ipv6(REMOTE6.octets(), LOCAL6.octets(), &[], 6, &tcp[..kept]);
        ip6.extend_from_slice(&tcp[kept..]);
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::ethernet(ETH_P_IPV6, &[], &ip6),
            Err(Reason::Malformed),
            &format!("v6: {kept} TCP bytes inside the payload length"),
        );
    }
    // Padding after a complete packet is fine (short frames are padded).
    let mut ip = packet::ipv4(REMOTE4.octets(), LOCAL4.octets(), 6, 9, IP_DF, &[], &tcp);
    ip.extend_from_slice(&[0; 12]);
    expect(
        &mut b,
        DIR_INGRESS,
        &packet::ethernet(ETH_P_IP, &[], &ip),
        Ok(()),
        "padded frame",
    );
}

fn v6_frame(exts: &[Ext], dport: u16) -> Vec<u8> {
    packet::ethernet(
        ETH_P_IPV6,
        &[],
        &packet::ipv6(
            REMOTE6.octets(),
            LOCAL6.octets(),
            exts,
            6,
            &tcp_l4(dport, SYN),
        ),
    )
}

#[test]
fn ipv6_extension_chains_are_walked_and_long_ones_dropped() {
    let mut b = bed(SSH);
    let kinds = [
        Ext::HopByHop { units: 0 },
        Ext::Routing { units: 1 },
        Ext::DestOpts { units: 2 },
        Ext::Fragment {
            offset: 0,
            more: false,
            id: 5,
        },
    ];
    let mut checked = 0;
    // Every sequence of up to 5 headers of these kinds (RFC 8200 allows
    // repeats of destination options; the parser walks whatever comes).
    let mut chains: Vec<Vec<Ext>> = vec![vec![]];
    for _ in 0..5 {
        let longer: Vec<Vec<Ext>> = chains
            .iter()
            .filter(|c| c.len() == chains.last().unwrap().len())
            .flat_map(|c| {
                kinds.iter().map(move |k| {
                    let mut c = c.clone();
                    c.push(*k);
                    c
                })
            })
            .collect();
        chains.extend(longer);
    }
    for chain in &chains {
        let what = format!("chain {chain:?}");
        expect(&mut b, DIR_INGRESS, &v6_frame(chain, 22), Ok(()), &what);
        expect(
            &mut b,
            DIR_INGRESS,
            &v6_frame(chain, 23),
            Err(Reason::NoRule),
            &what,
        );
        checked += 2;
    }
    // One more header than the walk handles: dropped, never guessed, even
    // towards the allowed port.
    for k in kinds {
        let chain = vec![k; 6];
        let what = format!("chain of 6 {k:?}");
        expect(
            &mut b,
            DIR_INGRESS,
            &v6_frame(&chain, 22),
            Err(Reason::Malformed),
            &what,
        );
    }
    let long = [
        Ext::HopByHop { units: 0 },
        Ext::DestOpts { units: 0 },
        Ext::Routing { units: 0 },
        Ext::Fragment {
            offset: 0,
            more: false,
            id: 1,
        },
        Ext::DestOpts { units: 0 },
        Ext::DestOpts { units: 0 },
        Ext::DestOpts { units: 0 },
    ];
    expect(
        &mut b,
        DIR_INGRESS,
        &v6_frame(&long, 22),
        Err(Reason::Malformed),
        "chain of 7",
    );
    // Headers so long that the L4 header lies beyond what is walked.
    let huge = [Ext::DestOpts { units: 40 }, Ext::DestOpts { units: 40 }];
    expect(
        &mut b,
        DIR_INGRESS,
        &v6_frame(&huge, 22),
        Err(Reason::Malformed),
        "650 bytes of options",
    );
    assert!(checked > 1000, "{checked}");
}

#[test]
fn vlan_tags_classify_the_inner_packet() {
    let mut b = bed(SSH);
    let ip = |dport| {
        packet::ipv4(
            REMOTE4.octets(),
            LOCAL4.octets(),
            6,
            9,
            IP_DF,
            &[],
            &tcp_l4(dport, SYN),
        )
    };
    let ip6 = |dport| {
        packet::ipv6(
            REMOTE6.octets(),
            LOCAL6.octets(),
            &[],
            6,
            &tcp_l4(dport, SYN),
        )
    };
    for tags in [
        vec![(ETH_P_8021Q, 10)],
        vec![(ETH_P_8021AD, 10)],
        vec![(ETH_P_8021AD, 10), (ETH_P_8021Q, 20)],
        vec![(ETH_P_8021Q, 10), (ETH_P_8021Q, 20)],
    ] {
        let what = format!("tags {tags:x?}");
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::ethernet(ETH_P_IP, &tags, &ip(22)),
            Ok(()),
            &what,
        );
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::ethernet(ETH_P_IP, &tags, &ip(23)),
            Err(Reason::NoRule),
            &what,
        );
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::ethernet(ETH_P_IPV6, &tags, &ip6(22)),
            Ok(()),
            &what,
        );
        expect(
            &mut b,
            DIR_INGRESS,
            &packet::ethernet(ETH_P_IPV6, &tags, &ip6(23)),
            Err(Reason::NoRule),
            &what,
        );
        // Egress allows nothing: the tagged SYN out is dropped, not passed
        // as "not IP".
        let out = packet::ipv4(
            LOCAL4.octets(),
            REMOTE4.octets(),
            6,
            9,
            IP_DF,
            &[],
            &tcp_l4(22, SYN),
        );
        expect(
            &mut b,
            DIR_EGRESS,
            &packet::ethernet(ETH_P_IP, &tags, &out),
            Err(Reason::NoRule),
            &what,
        );
    }
    // A third tag is more than the parser classifies: dropped.
    let three = [(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)];
    expect(
        &mut b,
        DIR_INGRESS,
        &packet::ethernet(ETH_P_IP, &three, &ip(22)),
        Err(Reason::Malformed),
        "three tags",
    );
    // A tagged frame that is not IP inside passes like any non-IP frame.
    let arp = packet::arp();
    let tagged_arp = packet::ethernet(0x0806, &[(ETH_P_8021Q, 10)], &arp[14..]);
    expect(&mut b, DIR_INGRESS, &tagged_arp, Ok(()), "tagged ARP");
    expect(&mut b, DIR_INGRESS, &arp, Ok(()), "ARP");
}
