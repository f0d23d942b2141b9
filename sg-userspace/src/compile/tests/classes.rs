//! Peer classes and the verdicts they give.

use super::*;

#[test]
fn nested_cidrs_make_nested_classes() {
    let src = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "1", from = "10.0.0.0/8" },
  { proto = "tcp", ports = "2", from = "10.1.0.0/16" },
  { proto = "tcp", ports = "3", from = "10.1.2.0/24" },
  { proto = "tcp", ports = "4", from = "0.0.0.0/0" },
  { proto = "tcp", ports = "5", from = ["10.1.2.3", "192.168.0.0/16"] },
]
egress = []
"#;
    let (cfg, c) = build(src, &[att("eth0", &["g"], &[])]);
    let r = |i| rid(&cfg, "g", Direction::Ingress, i);
    let (r0, r1, r2, r3, r4) = (r(0), r(1), r(2), r(3), r(4));
    let got = classes_of(&c, c.ifaces["eth0"].ingress_policy);
    let want: BTreeMap<String, BTreeSet<String>> = [
        ("0.0.0.0/0", ids(&[&r3])),
        ("10.0.0.0/8", ids(&[&r0, &r3])),
        ("10.1.0.0/16", ids(&[&r0, &r1, &r3])),
        ("10.1.2.0/24", ids(&[&r0, &r1, &r2, &r3])),
        ("10.1.2.3/32", ids(&[&r0, &r1, &r2, &r3, &r4])),
        ("192.168.0.0/16", ids(&[&r3, &r4])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
    assert!(
        c.policies
            .iter()
            .flat_map(|p| &p.peers)
            .all(|p| p.family == Family::V4),
        "IPv4 peers never make IPv6 prefixes"
    );
    assert!(c.classes.iter().all(|k| k.family == Family::V4));

    let v = |a: &str, port| verdict(&c, "eth0", Direction::Ingress, &pkt(a, 6, port));
    assert_eq!(v("10.1.2.3", 1), Some(r0.clone()));
    assert_eq!(v("10.1.2.3", 5), Some(r4.clone()));
    assert_eq!(v("10.1.2.4", 5), None);
    assert_eq!(v("10.1.2.4", 3), Some(r2.clone()));
    assert_eq!(v("10.1.3.4", 3), None);
    assert_eq!(v("10.1.3.4", 2), Some(r1.clone()));
    assert_eq!(v("11.0.0.1", 4), Some(r3.clone()));
    assert_eq!(v("11.0.0.1", 1), None);
    assert_eq!(v("192.168.9.9", 5), Some(r4.clone()));
    assert_eq!(v("192.168.9.9", 6), None);
    // An IPv6 packet finds nothing: the policy has no IPv6 prefix.
    assert_eq!(v("2001:db8::1", 4), None);
    // The egress policy is empty.
    assert_eq!(
        verdict(&c, "eth0", Direction::Egress, &pkt("10.1.2.3", 6, 1)),
        None
    );
}

#[test]
fn identical_rule_sets_share_a_class() {
    let src = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "1", from = ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"] },
  { proto = "udp", ports = "2", from = ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"] },
]
egress = []
"#;
    let (_, c) = build(src, &[att("eth0", &["g"], &[])]);
    let peers = &c.policies[0].peers;
    let v4: Vec<_> = peers.iter().filter(|p| p.family == Family::V4).collect();
    let v6: Vec<_> = peers.iter().filter(|p| p.family == Family::V6).collect();
    assert_eq!((v4.len(), v6.len()), (2, 1));
    assert_eq!(v4[0].class, v4[1].class);
    // IPv4 and IPv6 classes with the same rules still get distinct IDs.
    assert_ne!(v4[0].class, v6[0].class);
    assert_eq!(c.classes.len(), 2);
    // Each class: a TCP set and a UDP set of one interval.
    let t = KernelTables::of(&c);
    assert_eq!(t.rule_sets.len(), 4);
    assert_eq!(t.intervals(), 4);
}

#[test]
fn anywhere_and_slash_zero() {
    let src = r#"
[groups.g]
ingress = [{ proto = "icmpv6", from = "anywhere" }]
"#;
    let (cfg, c) = build(src, &[att("eth0", &["g"], &[])]);
    let pi = c.ifaces["eth0"].ingress_policy;
    let peers = &c.policies.iter().find(|p| p.id == pi).unwrap().peers;
    let class_v4 = c
        .classes
        .iter()
        .find(|k| k.family == Family::V4)
        .unwrap()
        .id;
    let class_v6 = c
        .classes
        .iter()
        .find(|k| k.family == Family::V6)
        .unwrap()
        .id;
    let prefix = |family, class| PeerPrefix {
        family,
        len: 0,
        addr: 0,
        class,
    };
    assert_eq!(
        peers,
        &vec![prefix(Family::V4, class_v4), prefix(Family::V6, class_v6)]
    );
    // A /0 is a prefix like any other: a length tree of one, no host.
    let t = KernelTables::of(&c);
    let ingress_lengths: Vec<_> = t
        .peers
        .lengths
        .iter()
        .filter(|(k, _)| k.policy == pi)
        .collect();
    assert_eq!(ingress_lengths.len(), 2);
    assert!(
        ingress_lengths
            .iter()
            .all(|(_, l)| l.count == 1 && l.lens[0] == 0)
    );
    let r = rid(&cfg, "g", Direction::Ingress, 0);
    assert_eq!(
        verdict(
            &c,
            "eth0",
            Direction::Ingress,
            &icmp("2001:db8::9", 58, 128, 0)
        ),
        Some(r.clone())
    );
    // IPv4 protocol 58 is not ICMPv6: an `icmpv6` rule never matches it,
    // even from `anywhere` (whose 0.0.0.0/0 half has no ICMPv6 to allow).
    assert_eq!(
        verdict(
            &c,
            "eth0",
            Direction::Ingress,
            &icmp("198.18.0.1", 58, 1, 1)
        ),
        None
    );
    let _ = r;
    assert_eq!(
        verdict(&c, "eth0", Direction::Ingress, &icmp("198.18.0.1", 1, 8, 0)),
        None
    );
}

#[test]
fn default_egress_allows_everything_everywhere() {
    let (cfg, c) = build("[groups.g]\n", &[att("eth0", &["g"], &[])]);
    let pe = c.ifaces["eth0"].egress_policy;
    let classes = classes_of(&c, pe);
    let d = rid(&cfg, "g", Direction::Egress, 0);
    assert_eq!(
        classes,
        [("0.0.0.0/0", ids(&[&d])), ("::/0", ids(&[&d]))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    );
    // One class per family, each with only the fallback set: every port
    // of every protocol.
    assert_eq!(c.classes.len(), 2);
    for class in &c.classes {
        assert_eq!(class.port_sets.len(), 1);
        assert_eq!(class.port_sets[0].proto, None);
        let i = &class.port_sets[0].intervals;
        assert_eq!((i.len(), i[0].lo, i[0].hi), (1, 0, 65535));
    }
    for p in [
        pkt("8.8.8.8", 6, 443),
        pkt("2001:db8::1", 17, 53),
        icmp("1.1.1.1", 1, 8, 0),
        pkt("198.18.0.1", 47, 0),
    ] {
        assert_eq!(verdict(&c, "eth0", Direction::Egress, &p), Some(d.clone()));
        assert_eq!(verdict(&c, "eth0", Direction::Ingress, &p), None);
    }
    // The ingress policy has no entries at all.
    assert!(classes_of(&c, c.ifaces["eth0"].ingress_policy).is_empty());
}

#[test]
fn sg_references_include_members_and_attachment_addresses() {
    let src = r#"
[groups.web]
members = ["198.18.0.10", "2001:db8:1::/48"]
ingress = [{ type = "http", from = "anywhere" }]
[groups.db]
ingress = [{ type = "postgresql", from = "sg:web" }]
egress = []
"#;
    let atts = [
        att("veth-web", &["web"], &["198.18.1.1", "2001:db8::1"]),
        att("veth-db", &["db"], &["198.18.2.1"]),
    ];
    let (cfg, c) = build(src, &atts);
    let r = rid(&cfg, "db", Direction::Ingress, 0);
    let got = classes_of(&c, c.ifaces["veth-db"].ingress_policy);
    let want: BTreeMap<String, BTreeSet<String>> = [
        "198.18.0.10/32",
        "198.18.1.1/32",
        "2001:db8::1/128",
        "2001:db8:1::/48",
    ]
    .into_iter()
    .map(|k| (k.to_string(), ids(&[&r])))
    .collect();
    assert_eq!(got, want);
    let v = |a: &str| verdict(&c, "veth-db", Direction::Ingress, &pkt(a, 6, 5432));
    assert_eq!(v("198.18.1.1"), Some(r.clone()));
    assert_eq!(v("198.18.0.10"), Some(r.clone()));
    assert_eq!(v("2001:db8::1"), Some(r.clone()));
    assert_eq!(v("2001:db8:1:2::3"), Some(r.clone()));
    assert_eq!(v("198.18.2.1"), None, "db's own address is not in sg:web");
    assert_eq!(v("198.18.1.2"), None);
}

#[test]
fn self_reference() {
    let src = r#"
[groups.cluster]
ingress = [{ proto = "all", from = "sg:cluster" }]
"#;
    let atts = [
        att("a", &["cluster"], &["198.18.0.1"]),
        att("b", &["cluster"], &["198.18.0.2"]),
    ];
    let (cfg, c) = build(src, &atts);
    let r = rid(&cfg, "cluster", Direction::Ingress, 0);
    for iface in ["a", "b"] {
        for addr in ["198.18.0.1", "198.18.0.2"] {
            assert_eq!(
                verdict(&c, iface, Direction::Ingress, &pkt(addr, 17, 9)),
                Some(r.clone())
            );
        }
        assert_eq!(
            verdict(&c, iface, Direction::Ingress, &pkt("198.18.0.3", 17, 9)),
            None
        );
    }
    // A group with no members makes no entries for its reference.
    let (_, c) = build(src, &[att("a", &["cluster"], &[])]);
    assert!(classes_of(&c, c.ifaces["a"].ingress_policy).is_empty());
}

#[test]
fn interfaces_with_the_same_groups_share_policies() {
    let src = "[groups.x]\n[groups.y]\n";
    let atts = [
        att("a", &["x", "y"], &[]),
        att("b", &["y", "x", "x"], &[]),
        att("c", &["x"], &[]),
    ];
    let (_, c) = build(src, &atts);
    assert_eq!(c.ifaces["a"], c.ifaces["b"]);
    assert_ne!(c.ifaces["a"], c.ifaces["c"]);
    assert_eq!(c.policies.len(), 4);
    let p = c
        .policies
        .iter()
        .find(|p| p.id == c.ifaces["b"].egress_policy)
        .unwrap();
    assert_eq!(p.groups, vec!["x", "y"]);
    assert_eq!(p.rule_count, 2, "two default egress rules");
    assert_eq!(p.direction, Direction::Egress);
    // Both default egress rules match the same: the class holds both
    // rules, and its one interval names the lower index.
    let class = c
        .classes
        .iter()
        .find(|k| k.rules.len() == 2 && k.family == Family::V4)
        .unwrap();
    assert_eq!(class.port_sets.len(), 1);
    let intervals = &class.port_sets[0].intervals;
    assert_eq!(intervals.len(), 1);
    assert_eq!(intervals[0].rule.rule, class.rules[0]);
}

#[test]
fn lower_rule_index_wins_a_shared_key() {
    let src = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "22", from = "10.0.0.0/8" },
  { proto = "tcp", ports = "22", from = "10.0.0.0/16" },
  { proto = "tcp", ports = "20-23", from = "10.0.0.0/16" },
]
"#;
    let (cfg, c) = build(src, &[att("eth0", &["g"], &[])]);
    let v = |a: &str, port| verdict(&c, "eth0", Direction::Ingress, &pkt(a, 6, port));
    assert_eq!(
        v("10.0.0.1", 22),
        Some(rid(&cfg, "g", Direction::Ingress, 0))
    );
    assert_eq!(
        v("10.0.0.1", 21),
        Some(rid(&cfg, "g", Direction::Ingress, 2))
    );
    assert_eq!(
        v("10.9.0.1", 22),
        Some(rid(&cfg, "g", Direction::Ingress, 0))
    );
    assert_eq!(v("10.9.0.1", 21), None);
}

#[test]
fn icmp_rules_use_type_and_code() {
    let src = r#"
[groups.g]
ingress = [
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/15" },
  { proto = "icmp", icmp_type = 3, icmp_code = 4, from = "198.18.0.0/15" },
  { proto = "icmpv6", from = "2001:db8::/32" },
]
egress = []
"#;
    let (cfg, c) = build(src, &[att("eth0", &["g"], &[])]);
    let r = |i| Some(rid(&cfg, "g", Direction::Ingress, i));
    let v = |p: Packet| verdict(&c, "eth0", Direction::Ingress, &p);
    assert_eq!(v(icmp("198.18.0.1", 1, 8, 0)), r(0));
    assert_eq!(v(icmp("198.18.0.1", 1, 8, 7)), r(0));
    assert_eq!(v(icmp("198.18.0.1", 1, 0, 0)), None);
    assert_eq!(v(icmp("198.18.0.1", 1, 3, 4)), r(1));
    assert_eq!(v(icmp("198.18.0.1", 1, 3, 3)), None);
    assert_eq!(v(icmp("2001:db8::1", 58, 200, 9)), r(2));
    assert_eq!(v(icmp("2001:db8::1", 1, 8, 0)), None);
    // The slot is type << 8 | code: a type is 256 slots, a code one.
    let sets = |family| {
        let class = c.classes.iter().find(|k| k.family == family).unwrap();
        class
            .port_sets
            .iter()
            .map(|s| {
                let runs: Vec<_> = s
                    .intervals
                    .iter()
                    .map(|i| (i.lo, i.hi, i.rule.rule))
                    .collect();
                (s.proto, runs)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sets(Family::V4),
        vec![(
            Some(1),
            vec![(3 << 8 | 4, 3 << 8 | 4, 1), (8 << 8, 8 << 8 | 255, 0)]
        )]
    );
    assert_eq!(sets(Family::V6), vec![(Some(58), vec![(0, 65535, 2)])]);
}

#[test]
fn map_keys_byte_order() {
    let src = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "443", from = "198.18.1.0/24" },
  { proto = "udp", ports = "53", from = "198.18.1.1" },
]
egress = []
"#;
    let (_, c) = compile_at(src, &[att("eth0", &["g"], &[])], 0x0102_0300);
    let pi = c.ifaces["eth0"].ingress_policy;
    assert_eq!(pi, 0x0102_0300);
    let t = KernelTables::of(&c);
    let p = &t.peers;
    // Keys: policy big endian, addresses in network order.
    assert_eq!(p.hosts_v4.len(), 1);
    let (host, host_class) = p.hosts_v4[0];
    assert_eq!(host.policy, [1, 2, 3, 0]);
    assert_eq!(host.addr, [198, 18, 1, 1]);
    assert_eq!(p.nets_v4.len(), 1);
    let (net, value) = p.nets_v4[0];
    assert_eq!(
        (net.policy, net.len, net.addr),
        ([1, 2, 3, 0], 24, [198, 18, 1, 0])
    );
    assert_eq!(value.flags, 0, "one length: no marker to follow");
    assert_ne!(value.class, host_class);
    assert_eq!(p.lengths.len(), 1);
    assert_eq!((p.lengths[0].0.policy, p.lengths[0].0.family), (pi, 4));
    assert_eq!(p.lengths[0].1.count, 1);
    // The /24's class has tcp 443; the host's also udp 53.
    let keys: Vec<_> = t
        .rule_sets
        .iter()
        .map(|s| (s.key.class, s.key.proto, s.key.any))
        .collect();
    assert_eq!(
        keys,
        vec![(value.class, 6, 0), (host_class, 6, 0), (host_class, 17, 0)]
    );
    let i = t.rule_sets[0].intervals[0];
    assert_eq!((i.lo, i.hi, i.rule.rule), (443, 443, 0));
}

/// Hosts go to the exact hash, shorter prefixes to the length search, and
/// each policy has its own.
#[test]
fn hosts_go_to_the_exact_hash_and_policies_stay_apart() {
    let prefix = |len, addr: [u8; 4], class| PeerPrefix {
        family: Family::V4,
        len,
        addr: u128::from(u32::from_be_bytes(addr)),
        class,
    };
    let policy = |id, peers| PolicyInfo {
        id,
        direction: Direction::Ingress,
        groups: Vec::new(),
        nacl: None,
        rule_count: 0,
        rules: Vec::new(),
        peers,
    };
    let policies = [
        policy(
            1,
            vec![
                prefix(24, [198, 18, 0, 0], 11),
                prefix(32, [198, 18, 0, 1], 10),
            ],
        ),
        policy(2, vec![prefix(16, [198, 18, 0, 0], 12)]),
    ];
    let t = KernelTables::build(&policies, &[]);
    let host = PeerKeyV4 {
        policy: 1u32.to_be_bytes(),
        addr: [198, 18, 0, 1],
    };
    assert_eq!(t.peers.hosts_v4, vec![(host, 10)]);
    assert_eq!(t.peers.nets_v4.len(), 2);
    assert_eq!(t.peers.lengths.len(), 2);
    assert!(t.peers.lengths.iter().all(|(_, l)| l.count == 1));
    assert_eq!(t.peers.lengths[0].0.policy, 1);
    assert_eq!(t.peers.lengths[0].1.lens[0], 24);
    assert_eq!(t.peers.lengths[1].1.lens[0], 16);
    assert!(t.rule_sets.is_empty());
}
