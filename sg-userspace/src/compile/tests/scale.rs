//! Scale, and the untracked-flow flags.

use super::*;
use crate::config::{Group, ICMP, ICMPV6, TCP, UDP};
use ipnet::IpNet;
use sg_common::{
    IFACE_F_EGRESS_ALL_V4, IFACE_F_EGRESS_ALL_V6, IFACE_F_EGRESS_HOSTS_ONLY_V4,
    IFACE_F_EGRESS_HOSTS_ONLY_V6, IFACE_F_INGRESS_ALL_V6, IFACE_F_INGRESS_HOSTS_ONLY_V4,
    IFACE_F_INGRESS_HOSTS_ONLY_V6, RULE_F_ANYWHERE,
};

/// A config of `n` rules, each with its own /32 (IPv4) or /128 (IPv6) peer,
/// built without TOML.
fn big_config(n: u32) -> Config {
    let mut ingress = Vec::with_capacity(n as usize);
    for i in 0..n {
        let peer = if i % 4 == 3 {
            Peer::Cidr(IpNet::from(IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8u128 << 96 | u128::from(i),
            ))))
        } else {
            Peer::Cidr(IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))))
        };
        let ports = match i % 3 {
            0 => PortMatch::Range {
                from: (i % 60000) as u16,
                to: (i % 60000) as u16,
            },
            1 => PortMatch::Range {
                from: 1024,
                to: 65535,
            },
            _ => PortMatch::All,
        };
        let proto = if i % 2 == 0 { TCP } else { UDP };
        let peers = vec![peer];
        ingress.push(Rule {
            id: config::rule_id("big", Direction::Ingress, proto, &ports, &peers),
            group: "big".into(),
            direction: Direction::Ingress,
            index: i as usize,
            proto,
            ports,
            peers,
            name: None,
            description: None,
        });
    }
    // Two broad rules that every class includes.
    let any = vec![
        Peer::Cidr("0.0.0.0/0".parse().unwrap()),
        Peer::Cidr("::/0".parse().unwrap()),
    ];
    for (k, proto) in [ICMP, ICMPV6].into_iter().enumerate() {
        let ports = PortMatch::Icmp {
            icmp_type: Some(8),
            icmp_code: None,
        };
        ingress.push(Rule {
            id: config::rule_id("big", Direction::Ingress, proto, &ports, &any),
            group: "big".into(),
            direction: Direction::Ingress,
            index: n as usize + k,
            proto,
            ports,
            peers: any.clone(),
            name: None,
            description: None,
        });
    }
    let mut cfg = Config::default();
    cfg.groups.insert(
        "big".into(),
        Group {
            name: "big".into(),
            description: None,
            members: Vec::new(),
            ingress,
            egress: vec![config::default_egress_rule("big")],
            mode: config::Mode::Enforce,
        },
    );
    cfg
}

#[test]
fn hundred_thousand_rules_compile() {
    // Not a timing test (SPEC 6): this checks the compiler is not
    // quadratic. In a debug build it takes a few seconds; in release,
    // well under one.
    let n = 100_000;
    let cfg = big_config(n);
    let c = compile(&cfg, &[att("eth0", &["big"], &[])], 1).unwrap();
    assert_eq!(c.rules.len(), n as usize + 3);
    // One peer prefix per distinct CIDR, plus the /0s.
    let peers: usize = c.policies.iter().map(|p| p.peers.len()).sum();
    assert_eq!(peers, n as usize + 2 + 2);
    let tables = KernelTables::of(&c);
    // Spot checks against the reference.
    let mut rng = Rng::new(99);
    let atts = [att("eth0", &["big"], &[])];
    let policy = c.ifaces["eth0"].ingress_policy;
    // The test's lookup scans the entries, so only a few.
    for _ in 0..20 {
        let i = rng.below(u64::from(n)) as u32;
        let addr = if i % 4 == 3 {
            IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(i)))
        } else {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
        };
        let p = Packet {
            addr,
            proto: if i.is_multiple_of(2) { 6 } else { 17 },
            port: (i % 60000) as u16,
            icmp_type: 8,
            icmp_code: 0,
        };
        let want = reference(&cfg, &atts, &["big".to_string()], Direction::Ingress, &p);
        let got = lookup_ref(&tables, policy, &p).map(|r| c.rules[r.rule as usize].id.clone());
        assert_eq!(got.is_some(), !want.is_empty());
        if let Some(id) = got {
            assert!(want.contains(&id));
        }
    }
}

// ---------------------------------------------------------------------------
// Untracked flows (SPEC 1.8): rule and interface flags
// ---------------------------------------------------------------------------

/// The flags of the interval the kernel's tables find for `p`.
fn lookup_flags(c: &Compiled, policy: u32, p: &Packet) -> Option<u32> {
    lookup_ref(&KernelTables::of(c), policy, p).map(|r| r.flags)
}

/// A policy whose peers of a family are all hosts (`/32`, `/128`, group
/// members) is flagged so the datapath skips the prefix search, which
/// has no tables for it; one prefix anywhere in it clears the flag.
#[test]
fn hosts_only_policies_are_flagged_per_direction_and_family() {
    let (_, c) = build(
        r#"
[groups.hosts]
ingress = [
  { proto = "tcp", ports = "22", from = "198.19.0.7" },
  { proto = "tcp", ports = "22", from = "2001:db8::7/128" },
  { proto = "udp", ports = "53", from = "sg:peers" },
]
egress = [{ proto = "tcp", ports = "443", to = "198.19.0.0/24" }]
[groups.peers]
ingress = []
egress = []
[groups.mixed]
ingress = [
  { proto = "tcp", ports = "22", from = "198.19.0.7" },
  { proto = "tcp", ports = "80", from = "2001:db8::/64" },
]
"#,
        &[
            att("a", &["hosts"], &[]),
            att("p", &["peers"], &["198.19.0.9", "2001:db8::9"]),
            att("m", &["mixed"], &[]),
        ],
    );
    let a = c.ifaces["a"].flags;
    let both_in = IFACE_F_INGRESS_HOSTS_ONLY_V4 | IFACE_F_INGRESS_HOSTS_ONLY_V6;
    assert_eq!(a & both_in, both_in, "{a:#x}");
    // Egress names a /24 (v4) and nothing of v6.
    assert_eq!(a & IFACE_F_EGRESS_HOSTS_ONLY_V4, 0, "{a:#x}");
    assert_ne!(a & IFACE_F_EGRESS_HOSTS_ONLY_V6, 0, "{a:#x}");
    let m = c.ifaces["m"].flags;
    assert_ne!(m & IFACE_F_INGRESS_HOSTS_ONLY_V4, 0, "{m:#x}");
    assert_eq!(m & IFACE_F_INGRESS_HOSTS_ONLY_V6, 0, "{m:#x}");
    // Default egress is anywhere: prefixes of both families.
    assert_eq!(
        m & (IFACE_F_EGRESS_HOSTS_ONLY_V4 | IFACE_F_EGRESS_HOSTS_ONLY_V6),
        0
    );
    // Whenever a flag is set, the tables hold no prefix search for it.
    let tables = KernelTables::of(&c);
    for binding in c.ifaces.values() {
        for (policy, bit, family) in [
            (binding.ingress_policy, IFACE_F_INGRESS_HOSTS_ONLY_V4, 4),
            (binding.ingress_policy, IFACE_F_INGRESS_HOSTS_ONLY_V6, 6),
            (binding.egress_policy, IFACE_F_EGRESS_HOSTS_ONLY_V4, 4),
            (binding.egress_policy, IFACE_F_EGRESS_HOSTS_ONLY_V6, 6),
        ] {
            let searched = tables
                .peers
                .lengths
                .iter()
                .any(|(k, _)| k.policy == policy && k.family == family);
            assert_eq!(binding.flags & bit != 0, !searched, "policy {policy}");
        }
    }
}

#[test]
fn anywhere_rules_and_allow_all_directions_are_flagged() {
    let (_, c) = build(
        r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "22", from = "198.19.0.0/16" },
  { proto = "tcp", ports = "0-1023", from = "anywhere-ipv4" },
  { proto = "udp", ports = "53", from = "198.19.0.0/16" },
]
[groups.h]
egress = [{ proto = "tcp", ports = "all", to = "anywhere" }]
ingress = [{ proto = "all", from = "::/0" }]
"#,
        &[att("a", &["g"], &[]), att("b", &["h"], &[])],
    );
    let a = c.ifaces["a"];
    let b = c.ifaces["b"];
    // Default egress: all traffic to 0.0.0.0/0 and ::/0. No IPv6 peer on
    // ingress: no prefix search there.
    assert_eq!(
        a.flags,
        IFACE_F_EGRESS_ALL_V4 | IFACE_F_EGRESS_ALL_V6 | IFACE_F_INGRESS_HOSTS_ONLY_V6
    );
    // All protocols from ::/0 only; tcp-only egress is not "all traffic".
    assert_eq!(
        b.flags,
        IFACE_F_INGRESS_ALL_V6 | IFACE_F_INGRESS_HOSTS_ONLY_V4
    );
    let pol = a.ingress_policy;
    // Port 22 from 198.19/16 names the narrower rule, but a rule from
    // anywhere covers it too.
    assert_eq!(lookup(&c, pol, &pkt("198.19.1.1", 6, 22)), Some(0));
    assert_eq!(
        lookup_flags(&c, pol, &pkt("198.19.1.1", 6, 22)),
        Some(RULE_F_ANYWHERE)
    );
    assert_eq!(
        lookup_flags(&c, pol, &pkt("203.0.113.1", 6, 80)),
        Some(RULE_F_ANYWHERE)
    );
    assert_eq!(lookup_flags(&c, pol, &pkt("198.19.1.1", 17, 53)), Some(0));
    assert_eq!(lookup_flags(&c, pol, &pkt("198.19.1.1", 6, 2000)), None);
}
