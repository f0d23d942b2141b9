//! The real XDP and TC programs, loaded into the kernel, judged through
//! BPF_PROG_TEST_RUN on crafted frames. Needs root and BPF: without them
//! these tests fail, they are never skipped.

use std::net::IpAddr;

use sg::config;
use sg_testkit::{
    packet::{self, ACK, FIN, PSH, RST, SYN},
    testrun::{
        TestBed,
        Verdict::{Drop, Pass},
    },
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bed(toml: &str, groups: &[&str]) -> TestBed {
    let loaded = config::parse(toml, "test.toml").expect("valid config");
    TestBed::new(&loaded.config, groups).expect("programs load and policy installs")
}

const WEB: &str = r#"
[groups.web]
ingress = [
  { proto = "tcp", ports = "80", from = "anywhere" },
  { proto = "tcp", ports = "22", from = "198.18.5.0/24" },
  { proto = "tcp", ports = "22", from = "2001:db8:5::/48" },
  { proto = "udp", ports = "1024-65535", from = "198.18.0.0/15" },
  { proto = "icmp", icmp_type = 8, from = "198.18.5.0/24" },
  { proto = "icmpv6", icmp_type = 128, from = "2001:db8:5::/48" },
]
egress = []
"#;

const LOCAL4: &str = "198.18.0.1";
const LOCAL6: &str = "2001:db8::1";

#[test]
fn ingress_tcp_follows_ports_and_peers_v4() {
    let mut b = bed(WEB, &["web"]);
    let outsider = ip("198.19.9.9");
    let admin = ip("198.18.5.7");
    let local = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::tcp(outsider, local, 40000, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(outsider, local, 40001, 22, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(admin, local, 40002, 22, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(admin, local, 40003, 23, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(admin, local, 40004, 81, SYN))
            .unwrap(),
        Drop
    );
}

#[test]
fn ingress_tcp_follows_ports_and_peers_v6() {
    let mut b = bed(WEB, &["web"]);
    let outsider = ip("2001:db8:9::9");
    let admin = ip("2001:db8:5::7");
    let local = ip(LOCAL6);
    assert_eq!(
        b.ingress(&packet::tcp(outsider, local, 40000, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(outsider, local, 40001, 22, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(admin, local, 40002, 22, SYN))
            .unwrap(),
        Pass
    );
    // A v4 peer never matches a v6 packet: 198.18.5.0/24 covers nothing here.
    assert_eq!(
        b.ingress(&packet::tcp(ip("::ffff:198.18.5.7"), local, 40003, 22, SYN))
            .unwrap(),
        Drop
    );
}

#[test]
fn port_range_edges() {
    let mut b = bed(WEB, &["web"]);
    let peer = ip("198.18.1.1");
    let local = ip(LOCAL4);
    for (port, want) in [
        (0, Drop),
        (1023, Drop),
        (1024, Pass),
        (1025, Pass),
        (65534, Pass),
        (65535, Pass),
    ] {
        assert_eq!(
            b.ingress(&packet::udp(peer, local, 5000, port)).unwrap(),
            want,
            "udp port {port}"
        );
    }
    // Outside 198.18.0.0/15 the UDP rule does not apply.
    assert_eq!(
        b.ingress(&packet::udp(ip("198.20.0.1"), local, 5000, 2000))
            .unwrap(),
        Drop
    );
}

#[test]
fn replies_of_allowed_connections_pass_both_ways() {
    let mut b = bed(WEB, &["web"]);
    let client = ip("198.19.1.1");
    let local = ip(LOCAL4);
    // Inbound connection to :80, while egress allows nothing at all.
    assert_eq!(
        b.ingress(&packet::tcp(client, local, 41000, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::tcp(local, client, 80, 41000, SYN | ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(client, local, 41000, 80, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::tcp(local, client, 80, 41000, ACK | PSH))
            .unwrap(),
        Pass
    );
    // Another egress flow to the same client is still denied.
    assert_eq!(
        b.egress(&packet::tcp(local, client, 80, 41001, SYN | ACK))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.egress(&packet::tcp(local, client, 45000, 80, SYN))
            .unwrap(),
        Drop
    );
}

#[test]
fn egress_connections_get_their_replies_in() {
    let cfg = r#"
[groups.client]
egress = [{ proto = "tcp", ports = "443", to = "198.18.7.0/24" }, { proto = "udp", ports = "53", to = "anywhere" }, { proto = "icmp", to = "anywhere" }]
"#;
    let mut b = bed(cfg, &["client"]);
    let server = ip("198.18.7.7");
    let local = ip(LOCAL4);
    assert_eq!(
        b.egress(&packet::tcp(local, server, 50000, 443, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(server, local, 443, 50000, SYN | ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::tcp(local, server, 50000, 444, SYN))
            .unwrap(),
        Drop
    );
    // No ingress rules: an unsolicited SYN-ACK or SYN is dropped.
    assert_eq!(
        b.ingress(&packet::tcp(server, local, 443, 50001, SYN | ACK))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(server, local, 443, 22, SYN))
            .unwrap(),
        Drop
    );
    // UDP request and reply.
    assert_eq!(
        b.egress(&packet::udp(local, server, 33000, 53)).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::udp(server, local, 53, 33000)).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::udp(server, local, 53, 33001)).unwrap(),
        Drop
    );
    // Ping out, reply in; an echo request in is not a reply.
    assert_eq!(
        b.egress(&packet::echo(local, server, 7, true)).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::echo(server, local, 7, false)).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::echo(server, local, 8, false)).unwrap(),
        Drop
    );
}

#[test]
fn non_syn_tcp_is_judged_by_rules_and_never_creates_state() {
    let mut b = bed(WEB, &["web"]);
    let scanner = ip("198.19.3.3");
    let local = ip(LOCAL4);
    for flags in [
        ACK,
        ACK | PSH,
        FIN,
        FIN | ACK,
        RST,
        0,
        FIN | PSH | 0x20,
        SYN | FIN,
    ] {
        // Port 22 is closed to this peer, whatever the flags.
        assert_eq!(
            b.ingress(&packet::tcp(scanner, local, 1234, 22, flags))
                .unwrap(),
            Drop,
            "flags {flags:#x}"
        );
    }
    // Port 80 is allowed by rule, but an ACK creates no entry...
    assert_eq!(
        b.ingress(&packet::tcp(scanner, local, 1234, 80, ACK))
            .unwrap(),
        Pass
    );
    assert!(
        b.conntrack_entries().unwrap().is_empty(),
        "an ACK must not open a connection"
    );
    // ...so the reply on an egress-less interface is dropped.
    assert_eq!(
        b.egress(&packet::tcp(local, scanner, 80, 1234, RST))
            .unwrap(),
        Drop
    );
}

#[test]
fn icmp_type_rules_and_echo_state_v4_and_v6() {
    let mut b = bed(WEB, &["web"]);
    let admin4 = ip("198.18.5.9");
    let admin6 = ip("2001:db8:5::9");
    assert_eq!(
        b.ingress(&packet::echo(admin4, ip(LOCAL4), 99, true))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::echo(ip(LOCAL4), admin4, 99, false))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::echo(ip("198.19.0.1"), ip(LOCAL4), 99, true))
            .unwrap(),
        Drop
    );
    // Type 13 (timestamp) is not type 8.
    assert_eq!(
        b.ingress(&packet::icmp(admin4, ip(LOCAL4), 13, 0, [0; 4]))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::echo(admin6, ip(LOCAL6), 5, true))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::echo(ip(LOCAL6), admin6, 5, false))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::echo(ip("2001:db8:6::1"), ip(LOCAL6), 5, true))
            .unwrap(),
        Drop
    );
}

#[test]
fn icmp_code_rules_match_exactly() {
    let cfg = r#"
[groups.g]
ingress = [{ proto = "icmp", icmp_type = 3, icmp_code = 4, from = "anywhere" }, { proto = "icmpv6", icmp_type = 2, from = "anywhere" }]
"#;
    let mut b = bed(cfg, &["g"]);
    let (p4, l4) = (ip("198.18.1.1"), ip(LOCAL4));
    assert_eq!(
        b.ingress(&packet::icmp(p4, l4, 3, 4, [0; 4])).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::icmp(p4, l4, 3, 3, [0; 4])).unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::icmp(p4, l4, 4, 4, [0; 4])).unwrap(),
        Drop
    );
    let (p6, l6) = (ip("2001:db8::2"), ip(LOCAL6));
    assert_eq!(
        b.ingress(&packet::icmp(p6, l6, 2, 0, [0; 4])).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::icmp(p6, l6, 2, 9, [0; 4])).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::icmp(p6, l6, 1, 0, [0; 4])).unwrap(),
        Drop
    );
}

#[test]
fn protocol_numbers_and_all() {
    let cfg = r#"
[groups.gre]
ingress = [{ proto = 47, from = "198.18.0.0/16" }]
[groups.any]
ingress = [{ proto = "all", from = "198.19.0.0/16" }]
"#;
    let mut b = bed(cfg, &["gre", "any"]);
    let l = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::ip_proto(ip("198.18.3.3"), l, 47))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::ip_proto(ip("198.18.3.3"), l, 50))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.3.3"), l, 1, 80, SYN))
            .unwrap(),
        Drop
    );
    // `all` from 198.19/16: any protocol, any port.
    assert_eq!(
        b.ingress(&packet::ip_proto(ip("198.19.3.3"), l, 50))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.19.3.3"), l, 1, 65535, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::udp(ip("198.19.3.3"), l, 1, 0)).unwrap(),
        Pass
    );
}

#[test]
fn groups_combine_as_a_union_and_sg_peers_follow_members() {
    let cfg = r#"
[groups.web]
ingress = [{ proto = "tcp", ports = "80", from = "anywhere" }]
[groups.ssh]
ingress = [{ proto = "tcp", ports = "22", from = "sg:admins" }]
[groups.admins]
members = ["198.18.9.1", "2001:db8:9::1"]
"#;
    let mut b = bed(cfg, &["web", "ssh"]);
    let l = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.9.1"), l, 1000, 22, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.9.2"), l, 1000, 22, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.9.2"), l, 1000, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("2001:db8:9::1"), ip(LOCAL6), 1000, 22, SYN))
            .unwrap(),
        Pass
    );
    // Only web: ssh is gone.
    b.apply(&config::parse(cfg, "t").unwrap().config, &["web"])
        .unwrap();
    b.flush_conntrack().unwrap();
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.9.1"), l, 1001, 22, SYN))
            .unwrap(),
        Drop
    );
}

#[test]
fn default_egress_allows_everything_out() {
    let cfg = "[groups.g]\ningress = []\n";
    let mut b = bed(cfg, &["g"]);
    let l = ip(LOCAL4);
    assert_eq!(
        b.egress(&packet::tcp(l, ip("198.19.1.1"), 1000, 25, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::ip_proto(ip(LOCAL6), ip("2001:db8:1::1"), 132))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.19.1.1"), l, 25, 1000, SYN | ACK))
            .unwrap(),
        Pass,
        "reply"
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.19.1.1"), l, 1000, 25, SYN))
            .unwrap(),
        Drop,
        "no ingress"
    );
}

#[test]
fn arp_and_neighbour_discovery_always_pass() {
    let cfg = "[groups.closed]\negress = []\n";
    let mut b = bed(cfg, &["closed"]);
    assert_eq!(b.ingress(&packet::arp()).unwrap(), Pass);
    assert_eq!(b.egress(&packet::arp()).unwrap(), Pass);
    let (a, l) = (ip("fe80::1"), ip("fe80::2"));
    for t in 133..=137 {
        assert_eq!(
            b.ingress(&packet::icmp(a, l, t, 0, [0; 4])).unwrap(),
            Pass,
            "ICMPv6 type {t} in"
        );
        assert_eq!(
            b.egress(&packet::icmp(l, a, t, 0, [0; 4])).unwrap(),
            Pass,
            "ICMPv6 type {t} out"
        );
    }
    // Only 133-137 are exempt.
    assert_eq!(
        b.ingress(&packet::icmp(a, l, 138, 0, [0; 4])).unwrap(),
        Drop
    );
    assert_eq!(b.ingress(&packet::echo(a, l, 1, true)).unwrap(), Drop);
}

#[test]
fn truncated_and_broken_headers_are_dropped() {
    let mut b = bed(WEB, &["web"]);
    let good = packet::tcp(ip("198.19.1.1"), ip(LOCAL4), 1000, 80, SYN);
    assert_eq!(b.ingress(&good).unwrap(), Pass);
    // Cut inside the IPv4 header and inside the TCP header.
    for len in [14, 20, 33, 34, 40, 47] {
        assert_eq!(b.ingress(&good[..len]).unwrap(), Drop, "truncated at {len}");
    }
    // IHL below 5.
    let mut bad = good.clone();
    bad[14] = 0x44;
    assert_eq!(b.ingress(&bad).unwrap(), Drop);
    // Total length shorter than the header.
    let mut bad = good.clone();
    bad[16..18].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(b.ingress(&bad).unwrap(), Drop);
}

#[test]
fn live_apply_switches_rules() {
    // `egress = []`: with the default allow-all egress, flows from anywhere
    // would be untracked (SPEC 1.8) and cut by the change.
    let before = "[groups.g]\negress = []\ningress = [{ proto = \"tcp\", ports = \"80\", from = \"anywhere\" }]\n";
    let after = "[groups.g]\negress = []\ningress = [{ proto = \"tcp\", ports = \"443\", from = \"anywhere\" }]\n";
    let mut b = bed(before, &["g"]);
    let (p, l) = (ip("198.19.1.1"), ip(LOCAL4));
    assert_eq!(b.ingress(&packet::tcp(p, l, 1000, 80, SYN)).unwrap(), Pass);
    assert_eq!(b.ingress(&packet::tcp(p, l, 1000, 443, SYN)).unwrap(), Drop);
    b.apply(&config::parse(after, "t").unwrap().config, &["g"])
        .unwrap();
    assert_eq!(b.ingress(&packet::tcp(p, l, 1001, 80, SYN)).unwrap(), Drop);
    assert_eq!(b.ingress(&packet::tcp(p, l, 1001, 443, SYN)).unwrap(), Pass);
    // The connection opened before the change goes on (SPEC 1.8).
    assert_eq!(b.ingress(&packet::tcp(p, l, 1000, 80, ACK)).unwrap(), Pass);
}

/// One rule per prefix length, all nested around one address: the binary
/// search on prefix lengths must find the longest prefix (and so every
/// rule of the shorter ones) at each depth, for IPv4's 32 lengths and a
/// tree of 97 IPv6 lengths.
#[test]
fn every_prefix_length_nests_v4_and_v6() {
    use ipnet::IpNet;
    /// An address that shares exactly `depth` leading bits with `centre`.
    fn at(centre: IpAddr, depth: u8) -> IpAddr {
        let flip = |bits: u32| 1u128.checked_shl(bits - u32::from(depth)).unwrap_or(0) >> 1;
        match centre {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) ^ flip(32) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) ^ flip(128)).into()),
        }
    }
    struct Family {
        centre: IpAddr,
        lens: Vec<u8>,
        first_port: u16,
        local: &'static str,
        /// Addresses at these depths stay inside the test ranges.
        depths: Vec<u8>,
    }
    let families = [
        Family {
            centre: ip("198.18.85.170"),
            lens: (0..=32).collect(),
            first_port: 1000,
            local: LOCAL4,
            depths: (15..=32).collect(),
        },
        Family {
            centre: ip("2001:db8:5555:aaaa:5555:aaaa:5555:aaaa"),
            lens: std::iter::once(0).chain(32..=128).collect(),
            first_port: 2000,
            local: LOCAL6,
            depths: vec![32, 33, 47, 63, 64, 65, 96, 100, 126, 127, 128],
        },
    ];
    let mut toml = String::from("[groups.deep]\negress = []\ningress = [\n");
    for f in &families {
        for &len in &f.lens {
            let net = IpNet::new(f.centre, len).unwrap().trunc();
            let port = f.first_port + u16::from(len);
            toml += &format!("  {{ proto = \"tcp\", ports = \"{port}\", from = \"{net}\" }},\n");
        }
    }
    toml += "]\n";
    let mut b = bed(&toml, &["deep"]);
    let mut checked = 0;
    for f in &families {
        for &depth in &f.depths {
            let src = at(f.centre, depth);
            for &len in &f.lens {
                let want = if len <= depth { Pass } else { Drop };
                let port = f.first_port + u16::from(len);
                let got = b
                    .ingress(&packet::tcp(src, ip(f.local), 40000, port, ACK))
                    .unwrap();
                assert_eq!(got, want, "{src} to port {port} (a /{len} rule)");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 18 * 33 + 11 * 98);
}
