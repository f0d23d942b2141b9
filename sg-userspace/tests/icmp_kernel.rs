//! ICMP in the real programs, through BPF_PROG_TEST_RUN: errors related to
//! untracked flows and quoted IPv6 extension headers (SPEC 1.6), echo
//! identifiers that the other side reuses, MLD (SPEC 1.10), and ICMP
//! rules that belong to one address family (SPEC 1.3). Needs root and BPF;
//! never skipped.

use std::net::IpAddr;

use sg::config;
use sg_testkit::{
    packet::{self, ACK, Ext, PSH, SYN},
    testrun::{
        TestBed,
        Verdict::{Drop, Pass},
    },
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bed(toml: &str) -> TestBed {
    let c = config::parse(toml, "test.toml")
        .expect("valid config")
        .config;
    TestBed::new(&c, &["g"]).expect("programs load and policy installs")
}

const LOCAL4: &str = "198.18.0.1";
const LOCAL6: &str = "2001:db8::1";
const REMOTE4: &str = "198.19.1.1";
const REMOTE6: &str = "2001:db8:1::1";

/// (local, remote, router) of each family.
fn families() -> [(IpAddr, IpAddr, IpAddr); 2] {
    [
        (ip(LOCAL4), ip(REMOTE4), ip("198.19.0.254")),
        (ip(LOCAL6), ip(REMOTE6), ip("2001:db8:ff::1")),
    ]
}

/// Fragmentation needed (v4) or packet too big (v6) from `src` to `dst`,
/// quoting `frame` (an Ethernet frame; the quote starts at its IP header).
fn too_big(src: IpAddr, dst: IpAddr, frame: &[u8]) -> Vec<u8> {
    let (t, c) = if src.is_ipv4() { (3, 4) } else { (2, 0) };
    packet::icmp_error(src, dst, t, c, [0, 0, 0x05, 0x00], &frame[14..])
}

/// A web server the AWS way: HTTP from anywhere and the default egress
/// rule, so its connections are untracked (SPEC 1.8).
const WEB: &str = r#"
[groups.g]
ingress = [{ type = "http", from = "anywhere" }]
"#;

#[test]
fn errors_about_untracked_flows_are_related_both_ways() {
    for (local, remote, router) in families() {
        let mut b = bed(WEB);
        // The client's SYN and the server's data: no entry is made.
        let syn = packet::tcp(remote, local, 40000, 80, SYN);
        assert_eq!(b.ingress(&syn).unwrap(), Pass);
        let data = packet::tcp(local, remote, 80, 40000, ACK | PSH);
        assert_eq!(b.egress(&data).unwrap(), Pass);
        assert!(b.conntrack_entries().unwrap().is_empty(), "untracked");
        // PMTU: a router on the way back says the server's data is too big.
        assert_eq!(
            b.ingress(&too_big(router, local, &data)).unwrap(),
            Pass,
            "{local}: too big about an untracked flow"
        );
        // Time exceeded and unreachable about it are related as well.
        let (t, c) = if local.is_ipv4() { (11, 0) } else { (3, 0) };
        let exceeded = packet::icmp_error(router, local, t, c, [0; 4], &data[14..]);
        assert_eq!(b.ingress(&exceeded).unwrap(), Pass);
        // The server tells a client something about its inbound packet.
        let unreach = too_big(local, remote, &syn);
        assert_eq!(b.egress(&unreach).unwrap(), Pass, "{local}: outbound");
        // A flow the rules do not allow (port 81) has nothing to relate to.
        let other = packet::tcp(local, remote, 81, 40000, ACK);
        assert_eq!(b.ingress(&too_big(router, local, &other)).unwrap(), Drop);
        let udp = packet::udp(local, remote, 80, 40000);
        assert_eq!(b.ingress(&too_big(router, local, &udp)).unwrap(), Drop);
        // The quoted packet must have been sent by the error's destination.
        let spoofed = packet::tcp(remote, local, 80, 40000, ACK);
        assert_eq!(b.ingress(&too_big(router, local, &spoofed)).unwrap(), Drop);
    }
}

#[test]
fn errors_about_flows_the_rules_do_not_leave_untracked_are_dropped() {
    // HTTP from one network only: tracked, not untracked. Without the
    // connection, an error about it is not related.
    let narrow = "[groups.g]\ningress = [{ type = \"http\", from = [\"198.19.0.0/16\", \"2001:db8:1::/48\"] }]\n";
    // HTTP from anywhere, but egress restricted: tracked too.
    let restricted = "[groups.g]\ningress = [{ type = \"http\", from = \"anywhere\" }]\negress = [{ proto = \"udp\", ports = \"53\", to = \"anywhere\" }]\n";
    for toml in [narrow, restricted] {
        for (local, remote, router) in families() {
            let mut b = bed(toml);
            let data = packet::tcp(local, remote, 80, 40000, ACK | PSH);
            assert_eq!(
                b.ingress(&too_big(router, local, &data)).unwrap(),
                Drop,
                "{toml} {local}: no connection"
            );
            // Once the connection is tracked, the error is related.
            let syn = packet::tcp(remote, local, 40000, 80, SYN);
            assert_eq!(b.ingress(&syn).unwrap(), Pass);
            assert_eq!(b.conntrack_entries().unwrap().len(), 1);
            assert_eq!(
                b.ingress(&too_big(router, local, &data)).unwrap(),
                Pass,
                "{toml} {local}: tracked"
            );
        }
    }
}

/// Egress to 443 only, no ingress rule, no ICMP rule.
const CLIENT: &str = r#"
[groups.g]
egress = [
  { proto = "tcp", ports = "443", to = "anywhere" },
  { proto = "icmp", icmp_type = 8, to = "anywhere" },
  { proto = "icmpv6", icmp_type = 128, to = "anywhere" },
]
"#;

#[test]
fn quoted_ipv6_extension_headers_are_walked() {
    let mut b = bed(CLIENT);
    let (local, remote, router) = (ip(LOCAL6), ip(REMOTE6), ip("2001:db8:ff::1"));
    let [l, r] = [local, remote].map(|a| match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    });
    let syn = packet::tcp(local, remote, 40000, 443, SYN);
    assert_eq!(b.egress(&syn).unwrap(), Pass);
    let segment = packet::tcp_header(40000, 443, ACK | PSH);
    let quote = |exts: &[Ext]| {
        let inner = packet::ipv6(l, r, exts, 6, &segment);
        packet::icmp_error(router, local, 2, 0, [0, 0, 0x05, 0x00], &inner)
    };
    let first = Ext::Fragment {
        offset: 0,
        more: true,
        id: 7,
    };
    let dest = Ext::DestOpts { units: 1 };
    for exts in [
        vec![first],
        vec![dest],
        vec![Ext::HopByHop { units: 0 }, dest, first],
        vec![Ext::Routing { units: 0 }, first, dest],
    ] {
        assert_eq!(b.ingress(&quote(&exts)).unwrap(), Pass, "{exts:?}");
    }
    // A quoted later fragment has no TCP header: nothing to relate to.
    let later = Ext::Fragment {
        offset: 5,
        more: false,
        id: 7,
    };
    assert_eq!(b.ingress(&quote(&[later])).unwrap(), Drop);
    assert_eq!(b.ingress(&quote(&[dest, later])).unwrap(), Drop);
    // The same headers quoting another connection are not related.
    let other = packet::ipv6(
        l,
        r,
        &[dest, first],
        6,
        &packet::tcp_header(40001, 443, ACK),
    );
    let err = packet::icmp_error(router, local, 2, 0, [0; 4], &other);
    assert_eq!(b.ingress(&err).unwrap(), Drop);
}

#[test]
fn a_peer_reusing_our_echo_identifier_is_judged_by_the_rules() {
    for (local, remote, _) in families() {
        let mut b = bed(CLIENT);
        assert_eq!(
            b.egress(&packet::echo(local, remote, 7, true)).unwrap(),
            Pass
        );
        // The peer's request with the same identifier: no rule allows
        // inbound ICMP, so it is dropped, and so is our reply to it.
        assert_eq!(
            b.ingress(&packet::echo(remote, local, 7, true)).unwrap(),
            Drop,
            "{local}: inbound request reusing id 7"
        );
        assert_eq!(
            b.egress(&packet::echo(local, remote, 7, false)).unwrap(),
            Drop,
            "{local}: reply from the opener"
        );
        // The reply to our own request still passes, again and again.
        for _ in 0..2 {
            assert_eq!(
                b.ingress(&packet::echo(remote, local, 7, false)).unwrap(),
                Pass
            );
        }
        assert_eq!(
            b.egress(&packet::echo(local, remote, 7, true)).unwrap(),
            Pass
        );
    }
}

#[test]
fn mld_and_neighbour_discovery_pass_both_ways_with_no_rules() {
    let mut b = bed("[groups.g]\ningress = []\negress = []\n");
    let (local, remote) = (ip(LOCAL6), ip("ff02::16"));
    for t in [130, 131, 132, 143, 133, 134, 135, 136, 137] {
        let report = packet::icmp(local, remote, t, 0, [0; 4]);
        assert_eq!(b.egress(&report).unwrap(), Pass, "egress type {t}");
        let query = packet::icmp(ip("fe80::1"), local, t, 0, [0; 4]);
        assert_eq!(b.ingress(&query).unwrap(), Pass, "ingress type {t}");
    }
    for t in [128, 129, 138, 142, 144] {
        let other = packet::icmp(ip("fe80::1"), local, t, 0, [0; 4]);
        assert_eq!(b.ingress(&other).unwrap(), Drop, "type {t}");
    }
    // ICMP (v4) of the same numbers is nothing special.
    let v4 = packet::icmp(ip(REMOTE4), ip(LOCAL4), 130, 0, [0; 4]);
    assert_eq!(b.ingress(&v4).unwrap(), Drop);
}

#[test]
fn icmp_rules_match_their_own_family_only() {
    let icmp = r#"
[groups.g]
egress = []
ingress = [
  { proto = "icmp", from = "anywhere" },
  { proto = "icmpv6", icmp_type = 0, from = "anywhere" },
]
"#;
    let mut b = bed(icmp);
    let (l4, r4, l6, r6) = (ip(LOCAL4), ip(REMOTE4), ip(LOCAL6), ip(REMOTE6));
    let icmp_header = packet::icmp_header(0, 0, [0; 4]);
    // IPv6 next header 1 is not ICMP; IPv4 protocol 58 is not ICMPv6.
    assert_eq!(
        b.ingress(&packet::ip_frame(r6, l6, 1, &icmp_header))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::ip_frame(r4, l4, 58, &icmp_header))
            .unwrap(),
        Drop
    );
    // Each in its own family passes.
    assert_eq!(
        b.ingress(&packet::icmp(r4, l4, 0, 0, [0; 4])).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::icmp(r6, l6, 0, 0, [0; 4])).unwrap(),
        Pass
    );
    // `all` matches them, as any protocol.
    let mut b =
        bed("[groups.g]\negress = []\ningress = [{ proto = \"all\", from = \"anywhere\" }]\n");
    assert_eq!(
        b.ingress(&packet::ip_frame(r6, l6, 1, &icmp_header))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::ip_frame(r4, l4, 58, &icmp_header))
            .unwrap(),
        Pass
    );
}
