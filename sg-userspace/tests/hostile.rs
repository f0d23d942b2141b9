//! Hostile and broken packets (SPEC 1.11) through the real programs, via
//! BPF_PROG_TEST_RUN: truncation at every length of every header kind,
//! IPv4 options and broken IPv4 lengths, IPv6 extension chains, VLAN tags,
//! fragments and odd TCP flags. Every drop must be counted under exactly
//! the right reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sg::config;
use sg_common::{DIR_EGRESS, DIR_INGRESS, Reason};
use sg_testkit::{
    packet::{
        self, ACK, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, Ext, FIN, IP_DF, IP_MF, PSH,
        RST, SYN,
    },
    testrun::{
        TestBed,
        Verdict::{self, Drop, Pass},
    },
};

const URG: u8 = 0x20;

const REMOTE4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 7);
const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 7);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

/// Ingress allows TCP 22, UDP 53, ICMP echo and ICMPv6 echo from anywhere;
/// nothing leaves except replies.
const SSH: &str = r#"
[groups.ssh]
ingress = [
  { proto = "tcp", ports = "22", from = "anywhere" },
  { proto = "udp", ports = "53", from = "anywhere" },
  { proto = "icmp", icmp_type = 8, from = "anywhere" },
  { proto = "icmpv6", icmp_type = 128, from = "anywhere" },
]
egress = []
"#;

/// Everything passes both ways: only malformed packets are dropped.
const OPEN: &str = r#"
[groups.open]
ingress = [{ proto = "all", from = "anywhere" }]
"#;

/// Every config here has one group.
fn bed(toml: &str) -> TestBed {
    let loaded = config::parse(toml, "hostile.toml").expect("valid config");
    TestBed::with_every_group(&loaded.config).expect("programs load")
}

/// Drop counters of one direction: (malformed, fragment, no_rule).
fn drops(b: &mut TestBed, dir: u8) -> [u64; 3] {
    [Reason::Malformed, Reason::Fragment, Reason::NoRule]
        .map(|r| b.drop_count(dir, r).expect("drop counters"))
}

fn run(b: &mut TestBed, dir: u8, frame: &[u8]) -> Verdict {
    if dir == DIR_INGRESS {
        b.ingress(frame).unwrap()
    } else {
        b.egress(frame).unwrap()
    }
}

/// Runs `frame` and checks the verdict and that exactly the expected
/// counter rose by one (or none, for a pass).
#[track_caller]
fn expect(b: &mut TestBed, dir: u8, frame: &[u8], want: Result<(), Reason>, what: &str) {
    let before = drops(b, dir);
    let got = run(b, dir, frame);
    let after = drops(b, dir);
    let rose: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let want_rose = match want {
        Ok(()) => vec![0, 0, 0],
        Err(Reason::Malformed) => vec![1, 0, 0],
        Err(Reason::Fragment) => vec![0, 1, 0],
        Err(Reason::NoRule) => vec![0, 0, 1],
        Err(r) => panic!("unexpected reason {r:?}"),
    };
    let want_verdict = if want.is_ok() { Pass } else { Drop };
    assert_eq!(
        (got, &rose),
        (want_verdict, &want_rose),
        "{what}: verdict and (malformed, fragment, no_rule) counter increments; frame {frame:02x?}"
    );
}

fn v4_frame(tags: &[(u16, u16)], options: &[u8], proto: u8, l4: &[u8]) -> Vec<u8> {
    let ip = packet::ipv4(
        LOCAL4.octets(),
        REMOTE4.octets(),
        proto,
        7,
        IP_DF,
        options,
        l4,
    );
    packet::ethernet(ETH_P_IP, tags, &ip)
}

fn tcp_l4(dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = packet::tcp_header(40000, dport, flags);
    l4.extend_from_slice(b"payload");
    l4
}

/// A frame, where its IP header starts, and where its last header ends.
struct Shape {
    name: &'static str,
    frame: Vec<u8>,
    l3: usize,
    headers_end: usize,
    v6: bool,
}

/// One frame per header kind, each a packet the OPEN config passes.
/// Built from LOCAL to REMOTE, for egress; `swap` flips them for ingress.
fn shapes() -> Vec<Shape> {
    let l = IpAddr::V4(LOCAL4);
    let r = IpAddr::V4(REMOTE4);
    let (l6, r6) = (LOCAL6.octets(), REMOTE6.octets());
    let tcp = tcp_l4(22, SYN);
    let mut udp = packet::udp_header(5353, 53, 4);
    udp.extend_from_slice(b"data");
    let mut icmp = packet::icmp_header(8, 0, [0, 9, 0, 1]);
    icmp.extend_from_slice(b"ping");
    let mut out = vec![
        Shape {
            name: "ipv4/tcp",
            frame: packet::ip_frame(l, r, 6, &tcp),
            l3: 14,
            headers_end: 14 + 20 + 20,
            v6: false,
        },
        Shape {
            name: "ipv4/udp",
            frame: packet::ip_frame(l, r, 17, &udp),
            l3: 14,
            headers_end: 14 + 20 + 8,
            v6: false,
        },
        Shape {
            name: "ipv4/icmp",
            frame: packet::ip_frame(l, r, 1, &icmp),
            l3: 14,
            headers_end: 14 + 20 + 8,
            v6: false,
        },
        Shape {
            name: "ipv4 with options/tcp",
            frame: v4_frame(&[], &[1, 1, 1, 0, 0x94, 4, 0, 0], 6, &tcp),
            l3: 14,
            headers_end: 14 + 28 + 20,
            v6: false,
        },
        Shape {
            name: "802.1Q/ipv4/tcp",
            frame: v4_frame(&[(ETH_P_8021Q, 5)], &[], 6, &tcp),
            l3: 18,
            headers_end: 18 + 20 + 20,
            v6: false,
        },
        Shape {
            name: "802.1ad+802.1Q/ipv6/udp",
            frame: packet::ethernet(
                ETH_P_IPV6,
                &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 5)],
                &packet::ipv6(l6, r6, &[], 17, &udp),
            ),
            l3: 22,
            headers_end: 22 + 40 + 8,
            v6: true,
        },
        Shape {
            name: "ipv6/tcp",
            frame: packet::ethernet(ETH_P_IPV6, &[], &packet::ipv6(l6, r6, &[], 6, &tcp)),
            l3: 14,
            headers_end: 14 + 40 + 20,
            v6: true,
        },
    ];
    let mut icmp6 = packet::icmp_header(128, 0, [0, 9, 0, 1]);
    icmp6.extend_from_slice(b"ping");
    out.push(Shape {
        name: "ipv6/icmpv6",
        frame: packet::ethernet(ETH_P_IPV6, &[], &packet::ipv6(l6, r6, &[], 58, &icmp6)),
        l3: 14,
        headers_end: 14 + 40 + 8,
        v6: true,
    });
    let chain = [
        Ext::HopByHop { units: 0 },
        Ext::DestOpts { units: 1 },
        Ext::Routing { units: 0 },
        Ext::Fragment {
            offset: 0,
            more: true,
            id: 77,
        },
    ];
    out.push(Shape {
        name: "ipv6 hop-by-hop/dest-opts/routing/fragment/udp",
        frame: packet::ethernet(ETH_P_IPV6, &[], &packet::ipv6(l6, r6, &chain, 17, &udp)),
        l3: 14,
        headers_end: 14 + 40 + 8 + 16 + 8 + 8 + 8,
        v6: true,
    });
    out
}

/// Swaps source and destination of an untagged-or-tagged IP frame, for
/// the ingress direction.
fn swap(shape: &Shape) -> Vec<u8> {
    let mut f = shape.frame.clone();
    let (s, n) = if shape.v6 {
        (shape.l3 + 8, 16)
    } else {
        (shape.l3 + 12, 4)
    };
    let (src, dst) = (f[s..s + n].to_vec(), f[s + n..s + 2 * n].to_vec());
    f[s..s + n].copy_from_slice(&dst);
    f[s + n..s + 2 * n].copy_from_slice(&src);
    f
}

/// Truncates `frame` to `len` bytes and, if `fix`, rewrites the IP length
/// field to match, so that only the per-header checks can catch it.
fn truncate(shape: &Shape, frame: &[u8], len: usize, fix: bool) -> Vec<u8> {
    let mut f = frame[..len].to_vec();
    if fix {
        let l3 = shape.l3;
        if shape.v6 && len >= l3 + 6 {
            let payload = len.saturating_sub(l3 + 40) as u16;
            f[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
        } else if !shape.v6 && len >= l3 + 4 {
            f[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            if len >= l3 + 20 {
                packet::fix_ipv4_checksum(&mut f[l3..]);
            }
        }
    }
    f
}

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
