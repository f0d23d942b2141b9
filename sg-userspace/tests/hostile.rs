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

// A test crate root finds modules beside it, so the paths are spelled out.
#[path = "hostile/fragments.rs"]
mod fragments;
#[path = "hostile/headers.rs"]
mod headers;
