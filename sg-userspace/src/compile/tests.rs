use super::*;
use crate::config::{self, Group, ICMP, ICMPV6, TCP, UDP, tests::SPEC_EXAMPLE};
use std::net::{Ipv4Addr, Ipv6Addr};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// xorshift64*: deterministic randomness without a dependency.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn parse(src: &str) -> Config {
    config::parse(src, "t.toml")
        .unwrap_or_else(|e| panic!("{e}\n---\n{src}"))
        .config
}

fn att(iface: &str, groups: &[&str], addrs: &[&str]) -> Attachment {
    Attachment {
        iface: iface.to_string(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        addrs: addrs.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

fn build(src: &str, atts: &[Attachment]) -> (Config, Compiled) {
    let c = parse(src);
    let out = compile(&c, atts, 1).unwrap_or_else(|e| panic!("{e}"));
    check_invariants(&out, 1);
    (c, out)
}

fn v4_bytes(k: &PeerKeyV4) -> Vec<u8> {
    [&k.policy[..], &k.addr[..]].concat()
}

fn v6_bytes(k: &PeerKeyV6) -> Vec<u8> {
    [&k.policy[..], &k.addr[..]].concat()
}

fn rule_bytes(k: &RuleKey) -> Vec<u8> {
    let mut v = k.class.to_vec();
    v.push(k.proto);
    v.extend_from_slice(&k.port);
    v.push(k._pad);
    v
}

/// The first `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    let rem = bits % 8;
    a[..full] == b[..full] && (rem == 0 || (a[full] ^ b[full]) & (0xffu8 << (8 - rem)) == 0)
}

/// Every bit of `key` from `bits` on is zero.
fn tail_zero(key: &[u8], bits: u32) -> bool {
    (bits as usize..key.len() * 8).all(|i| key[i / 8] & (0x80 >> (i % 8)) == 0)
}

/// Invariants every compile must hold.
fn check_invariants(c: &Compiled, first_id: u32) {
    let first = first_id.max(1);
    let policy_ids: BTreeSet<u32> = c.policies.iter().map(|p| p.id).collect();
    assert_eq!(
        policy_ids.len(),
        c.policies.len(),
        "policy IDs are distinct"
    );
    let class_ids: BTreeSet<u32> = c.classes.iter().map(|k| k.id).collect();
    assert_eq!(class_ids.len(), c.classes.len(), "class IDs are distinct");
    for id in c.ids() {
        assert!(
            id >= first && id < c.next_id && id != 0,
            "id {id} out of range"
        );
    }
    assert!(policy_ids.is_disjoint(&class_ids));

    // Peer entries: unique keys, zero tails, lengths in range, known classes
    // of the right family, known policies.
    let family_of: HashMap<u32, Family> = c.classes.iter().map(|k| (k.id, k.family)).collect();
    let mut seen = HashSet::new();
    for (l, k, class) in &c.peers_v4 {
        assert!((32..=64).contains(l));
        let b = v4_bytes(k);
        assert!(tail_zero(&b, *l), "v4 key {k:?}/{l} has host bits");
        assert!(seen.insert((*l, b)), "duplicate v4 entry {k:?}/{l}");
        assert_eq!(family_of.get(class), Some(&Family::V4));
        assert!(policy_ids.contains(&u32::from_be_bytes(k.policy)));
    }
    for (l, k, class) in &c.peers_v6 {
        assert!((32..=160).contains(l));
        let b = v6_bytes(k);
        assert!(tail_zero(&b, *l), "v6 key {k:?}/{l} has host bits");
        assert!(seen.insert((*l, b)), "duplicate v6 entry {k:?}/{l}");
        assert_eq!(family_of.get(class), Some(&Family::V6));
        assert!(policy_ids.contains(&u32::from_be_bytes(k.policy)));
    }
    let mut seen = HashSet::new();
    for (l, k, r) in &c.rule_entries {
        assert!((32..=56).contains(l));
        let b = rule_bytes(k);
        assert!(
            tail_zero(&b, *l),
            "rule key {k:?}/{l} has bits past the prefix"
        );
        assert!(seen.insert((*l, b)), "duplicate rule entry {k:?}/{l}");
        assert!(class_ids.contains(&u32::from_be_bytes(k.class)));
        assert!((r.rule as usize) < c.rules.len());
        let class = c
            .classes
            .iter()
            .find(|x| x.id == u32::from_be_bytes(k.class))
            .unwrap();
        assert!(
            class.rules.contains(&r.rule),
            "entry names a rule outside its class"
        );
    }
    for p in &c.policies {
        assert_eq!(p.rule_count, p.rules.len());
        assert!(p.rules.windows(2).all(|w| w[0] < w[1]));
        for &r in &p.rules {
            let rule = &c.rules[r as usize];
            assert_eq!(rule.direction, p.direction);
            assert!(p.groups.contains(&rule.group));
        }
    }
    for (iface, b) in &c.ifaces {
        for d in Direction::ALL {
            let p = c.policies.iter().find(|p| p.id == b.policy(d));
            assert_eq!(p.map(|p| p.direction), Some(d), "{iface}");
        }
    }
}

/// A packet as the classifier sees it.
#[derive(Debug, Clone, Copy)]
struct Packet {
    addr: IpAddr,
    proto: u8,
    port: u16,
    icmp_type: u8,
    icmp_code: u8,
}

impl Packet {
    /// The rule-key port slot the kernel fills in.
    fn slot(&self) -> u16 {
        match self.proto {
            6 | 17 => self.port,
            1 | 58 => u16::from(self.icmp_type) << 8 | u16::from(self.icmp_code),
            _ => 0,
        }
    }
}

/// Simulates the kernel's two LPM lookups over the emitted entries.
fn lookup(c: &Compiled, policy: u32, p: &Packet) -> Option<u32> {
    let pid = policy.to_be_bytes();
    let class = match p.addr {
        IpAddr::V4(a) => {
            let probe = [&pid[..], &a.octets()[..]].concat();
            c.peers_v4
                .iter()
                .filter(|(l, k, _)| prefix_eq(&v4_bytes(k), &probe, *l))
                .max_by_key(|(l, _, _)| *l)
                .map(|e| e.2)
        }
        IpAddr::V6(a) => {
            let probe = [&pid[..], &a.octets()[..]].concat();
            c.peers_v6
                .iter()
                .filter(|(l, k, _)| prefix_eq(&v6_bytes(k), &probe, *l))
                .max_by_key(|(l, _, _)| *l)
                .map(|e| e.2)
        }
    }?;
    let probe = rule_bytes(&RuleKey {
        class: class.to_be_bytes(),
        proto: p.proto,
        port: p.slot().to_be_bytes(),
        _pad: 0,
    });
    c.rule_entries
        .iter()
        .filter(|(l, k, _)| prefix_eq(&rule_bytes(k), &probe, *l))
        .max_by_key(|(l, _, _)| *l)
        .map(|e| e.2.rule)
}

/// SPEC 1.3 read directly: does `rule` allow `p`?
fn reference_rule(cfg: &Config, atts: &[Attachment], rule: &Rule, p: &Packet) -> bool {
    // ICMP is IPv4's, ICMPv6 IPv6's (SPEC 1.3).
    let proto_ok = match rule.proto {
        Proto::All => true,
        Proto::Number(1) => p.proto == 1 && p.addr.is_ipv4(),
        Proto::Number(58) => p.proto == 58 && p.addr.is_ipv6(),
        Proto::Number(n) => n == p.proto,
    };
    let ports_ok = match rule.ports {
        PortMatch::All => true,
        PortMatch::Range { from, to } => (from..=to).contains(&p.port),
        PortMatch::Icmp {
            icmp_type,
            icmp_code,
        } => {
            icmp_type.is_none_or(|t| t == p.icmp_type) && icmp_code.is_none_or(|c| c == p.icmp_code)
        }
    };
    let peer_ok = rule.peers.iter().any(|peer| match peer {
        Peer::Cidr(n) => n.contains(&p.addr),
        Peer::Group(g) => {
            cfg.groups[g].members.iter().any(|m| m.contains(&p.addr))
                || atts
                    .iter()
                    .any(|a| a.groups.contains(g) && a.addrs.contains(&p.addr))
        }
    });
    proto_ok && ports_ok && peer_ok
}

/// IDs of the rules of `groups` in `direction` that allow `p`.
fn reference(
    cfg: &Config,
    atts: &[Attachment],
    groups: &[String],
    direction: Direction,
    p: &Packet,
) -> BTreeSet<String> {
    groups
        .iter()
        .flat_map(|g| cfg.groups[g].rules(direction))
        .filter(|r| reference_rule(cfg, atts, r, p))
        .map(|r| r.id.clone())
        .collect()
}

fn pkt(addr: &str, proto: u8, port: u16) -> Packet {
    Packet {
        addr: addr.parse().unwrap(),
        proto,
        port,
        icmp_type: 0,
        icmp_code: 0,
    }
}

fn icmp(addr: &str, proto: u8, t: u8, c: u8) -> Packet {
    Packet {
        addr: addr.parse().unwrap(),
        proto,
        port: 0,
        icmp_type: t,
        icmp_code: c,
    }
}

/// The ID of rule `index` of `group`'s `direction` list.
fn rid(cfg: &Config, group: &str, direction: Direction, index: usize) -> String {
    cfg.groups[group].rules(direction)[index].id.clone()
}

/// Verdict of the compiled maps, as a rule ID.
fn verdict(c: &Compiled, iface: &str, d: Direction, p: &Packet) -> Option<String> {
    lookup(c, c.ifaces[iface].policy(d), p).map(|r| c.rules[r as usize].id.clone())
}

/// Peer entries of a policy as (CIDR text, class rule IDs).
fn classes_of(c: &Compiled, policy: u32) -> BTreeMap<String, BTreeSet<String>> {
    let class_rules = |id: u32| -> BTreeSet<String> {
        c.classes
            .iter()
            .find(|k| k.id == id)
            .unwrap()
            .rules
            .iter()
            .map(|&r| c.rules[r as usize].id.clone())
            .collect()
    };
    let mut out = BTreeMap::new();
    for (l, k, class) in &c.peers_v4 {
        if u32::from_be_bytes(k.policy) == policy {
            let n = format!("{}/{}", Ipv4Addr::from(k.addr), l - 32);
            out.insert(n, class_rules(*class));
        }
    }
    for (l, k, class) in &c.peers_v6 {
        if u32::from_be_bytes(k.policy) == policy {
            let n = format!("{}/{}", Ipv6Addr::from(k.addr), l - 32);
            out.insert(n, class_rules(*class));
        }
    }
    out
}

fn ids(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Port ranges
// ---------------------------------------------------------------------------

/// Independent reference: split the port space recursively.
fn prefixes_by_recursion(from: u16, to: u16) -> Vec<(u16, u32)> {
    fn go(lo: u32, bits: u32, from: u32, to: u32, out: &mut Vec<(u16, u32)>) {
        let size = 1u32 << (16 - bits);
        let hi = lo + size - 1;
        if hi < from || lo > to {
            return;
        }
        if from <= lo && hi <= to {
            out.push((lo as u16, bits));
            return;
        }
        go(lo, bits + 1, from, to, out);
        go(lo + size / 2, bits + 1, from, to, out);
    }
    let mut out = Vec::new();
    go(0, 0, u32::from(from), u32::from(to), &mut out);
    out
}

/// The blocks are aligned, in order, contiguous, and cover exactly
/// `from..=to`.
fn check_cover(from: u16, to: u16, blocks: &[(u16, u32)]) {
    let mut next = u32::from(from);
    for &(start, bits) in blocks {
        assert!(bits <= 16);
        let size = 1u32 << (16 - bits);
        assert_eq!(
            u32::from(start) % size,
            0,
            "{from}-{to}: {start}/{bits} is not aligned"
        );
        assert_eq!(
            u32::from(start),
            next,
            "{from}-{to}: gap or overlap at {start}"
        );
        next += size;
    }
    assert_eq!(next, u32::from(to) + 1, "{from}-{to}: cover ends at {next}");
}

#[test]
fn port_prefixes_known_counts() {
    assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
    assert_eq!(port_prefixes(22, 22), vec![(22, 16)]);
    assert_eq!(port_prefixes(1024, 65535).len(), 6);
    assert_eq!(port_prefixes(1, 65535).len(), 16);
    assert_eq!(port_prefixes(0, 65534).len(), 16);
    assert_eq!(port_prefixes(1, 65534).len(), 30);
    assert_eq!(port_prefixes(0, 0), vec![(0, 16)]);
    assert_eq!(port_prefixes(65535, 65535), vec![(65535, 16)]);
    assert_eq!(port_prefixes(65534, 65535), vec![(65534, 15)]);
    assert_eq!(port_prefixes(0, 1), vec![(0, 15)]);
    assert_eq!(port_prefixes(32768, 65535), vec![(32768, 1)]);
}

#[test]
fn port_prefixes_cover_exactly_and_minimally() {
    let edges = [0u16, 1, 2, 3, 1023, 1024, 32767, 32768, 65533, 65534, 65535];
    let mut ranges = Vec::new();
    for &a in &edges {
        for &b in &edges {
            if a <= b {
                ranges.push((a, b));
            }
        }
    }
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        let a = rng.below(65536) as u16;
        let b = if rng.chance(30) {
            a.saturating_add(rng.below(64) as u16)
        } else {
            rng.below(65536) as u16
        };
        ranges.push((a.min(b), a.max(b)));
    }
    let mut worst = 0;
    for (from, to) in ranges {
        let blocks = port_prefixes(from, to);
        check_cover(from, to, &blocks);
        assert_eq!(blocks, prefixes_by_recursion(from, to), "{from}-{to}");
        assert!(blocks.len() <= 30, "{from}-{to}: {} blocks", blocks.len());
        worst = worst.max(blocks.len());
    }
    assert_eq!(worst, 30);
}

#[test]
fn port_prefixes_bitmap_check_for_edge_ranges() {
    for (from, to) in [
        (0u16, 0u16),
        (0, 65535),
        (1, 65535),
        (65535, 65535),
        (1, 65534),
        (7, 9000),
    ] {
        let blocks = port_prefixes(from, to);
        for port in 0..=65535u16 {
            let hits = blocks
                .iter()
                .filter(|&&(start, bits)| {
                    let m = if bits == 0 {
                        0
                    } else {
                        u16::MAX << (16 - bits)
                    };
                    port & m == start
                })
                .count();
            let want = usize::from((from..=to).contains(&port));
            assert_eq!(hits, want, "{from}-{to} port {port}");
        }
    }
}

#[test]
fn match_entries_shapes() {
    assert_eq!(match_entries(Proto::All, &PortMatch::All), vec![(32, 0, 0)]);
    assert_eq!(match_entries(TCP, &PortMatch::All), vec![(40, 6, 0)]);
    assert_eq!(
        match_entries(Proto::Number(47), &PortMatch::All),
        vec![(40, 47, 0)]
    );
    assert_eq!(
        match_entries(UDP, &PortMatch::Range { from: 53, to: 53 }),
        vec![(56, 17, 53)]
    );
    assert_eq!(
        match_entries(
            TCP,
            &PortMatch::Range {
                from: 1024,
                to: 65535
            }
        ),
        vec![
            (46, 6, 1024),
            (45, 6, 2048),
            (44, 6, 4096),
            (43, 6, 8192),
            (42, 6, 16384),
            (41, 6, 32768)
        ]
    );
    let none = PortMatch::Icmp {
        icmp_type: None,
        icmp_code: None,
    };
    let t = PortMatch::Icmp {
        icmp_type: Some(8),
        icmp_code: None,
    };
    let tc = PortMatch::Icmp {
        icmp_type: Some(3),
        icmp_code: Some(4),
    };
    assert_eq!(match_entries(ICMP, &none), vec![(40, 1, 0)]);
    assert_eq!(match_entries(ICMP, &t), vec![(48, 1, 8 << 8)]);
    assert_eq!(match_entries(ICMPV6, &tc), vec![(56, 58, 3 << 8 | 4)]);
}

// ---------------------------------------------------------------------------
// Classes
// ---------------------------------------------------------------------------

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
    assert!(c.peers_v6.is_empty(), "IPv4 peers never make IPv6 entries");
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
    // An IPv6 packet finds nothing: the v6 trie has no entry.
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
    assert_eq!(c.peers_v4.len(), 2);
    assert_eq!(c.peers_v6.len(), 1);
    assert_eq!(c.peers_v4[0].2, c.peers_v4[1].2);
    // IPv4 and IPv6 classes with the same rules still get distinct IDs.
    assert_ne!(c.peers_v4[0].2, c.peers_v6[0].2);
    assert_eq!(c.classes.len(), 2);
    assert_eq!(c.rule_entries.len(), 4);
}

#[test]
fn anywhere_and_slash_zero() {
    let src = r#"
[groups.g]
ingress = [{ proto = "icmpv6", from = "anywhere" }]
"#;
    let (cfg, c) = build(src, &[att("eth0", &["g"], &[])]);
    let pi = c.ifaces["eth0"].ingress_policy;
    let v4: Vec<_> = c
        .peers_v4
        .iter()
        .filter(|e| u32::from_be_bytes(e.1.policy) == pi)
        .collect();
    let v6: Vec<_> = c
        .peers_v6
        .iter()
        .filter(|e| u32::from_be_bytes(e.1.policy) == pi)
        .collect();
    assert_eq!(v4.len(), 1);
    assert_eq!(v4[0].0, 32);
    assert_eq!(v4[0].1.addr, [0; 4]);
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0].0, 32);
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
    // One class per family, each with a single any-protocol entry.
    assert_eq!(c.classes.len(), 2);
    assert_eq!(c.rule_entries.len(), 2);
    for (l, k, _) in &c.rule_entries {
        assert_eq!(*l, RULE_PREFIX_ANY_PROTO);
        assert_eq!((k.proto, k.port), (0, [0, 0]));
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
    // Both default egress rules are the same key: one entry per class, and
    // the class holds both rules; the lower index wins the entry.
    let class = c
        .classes
        .iter()
        .find(|k| k.rules.len() == 2 && k.family == Family::V4)
        .unwrap();
    let entries: Vec<_> = c
        .rule_entries
        .iter()
        .filter(|e| u32::from_be_bytes(e.1.class) == class.id)
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].2.rule, class.rules[0]);
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
    let lens: BTreeSet<u32> = c.rule_entries.iter().map(|e| e.0).collect();
    assert_eq!(lens, [40, 48, 56].into_iter().collect());
    // Keys are big-endian type<<8|code.
    assert!(
        c.rule_entries
            .iter()
            .any(|e| e.0 == 48 && e.1.port == [8, 0] && e.1.proto == 1)
    );
    assert!(
        c.rule_entries
            .iter()
            .any(|e| e.0 == 56 && e.1.port == [3, 4] && e.1.proto == 1)
    );
}

#[test]
fn key_byte_order() {
    let src = r#"
[groups.g]
ingress = [{ proto = "tcp", ports = "443", from = "198.18.1.0/24" }]
egress = []
"#;
    let (_, c) = compile_at(src, &[att("eth0", &["g"], &[])], 0x0102_0300);
    let pi = c.ifaces["eth0"].ingress_policy;
    assert_eq!(pi, 0x0102_0300);
    assert_eq!(c.peers_v4.len(), 1);
    let (l, k, class) = c.peers_v4[0];
    assert_eq!(l, 32 + 24);
    assert_eq!(k.policy, [1, 2, 3, 0]);
    assert_eq!(k.addr, [198, 18, 1, 0]);
    assert_eq!(c.rule_entries.len(), 1);
    let (l, k, r) = c.rule_entries[0];
    assert_eq!(l, 56);
    assert_eq!(k.class, class.to_be_bytes());
    assert_eq!(k.proto, 6);
    assert_eq!(k.port, [1, 187]);
    assert_eq!(k._pad, 0);
    assert_eq!(r.rule, 0);
}

fn compile_at(src: &str, atts: &[Attachment], first: u32) -> (Config, Compiled) {
    let cfg = parse(src);
    let c = compile(&cfg, atts, first).unwrap();
    check_invariants(&c, first);
    (cfg, c)
}

// ---------------------------------------------------------------------------
// IDs and errors
// ---------------------------------------------------------------------------

#[test]
fn ids_are_sequential_from_first_id() {
    let src = r#"
[groups.a]
ingress = [{ type = "ssh", from = ["10.0.0.0/8", "2001:db8::/32"] }]
[groups.b]
ingress = [{ type = "ssh", from = "198.18.0.0/15" }]
"#;
    let atts = [att("x", &["a"], &[]), att("y", &["a", "b"], &[])];
    let (_, c1) = compile_at(src, &atts, 0);
    let all: Vec<u32> = c1.ids().collect();
    assert_eq!(all, (1..c1.next_id).collect::<Vec<_>>(), "dense from 1");
    let (_, c2) = compile_at(src, &atts, c1.next_id);
    let first: BTreeSet<u32> = c1.ids().collect();
    let second: BTreeSet<u32> = c2.ids().collect();
    assert!(first.is_disjoint(&second));
    assert_eq!(second.len(), first.len());
    assert_eq!(c2.next_id - c1.next_id, c1.next_id - 1);
    // Same shape, shifted IDs.
    assert_eq!(c1.rule_entries.len(), c2.rule_entries.len());
    assert_eq!(c1.peers_v4.len(), c2.peers_v4.len());

    // Running out of IDs is an error, not a wrap to 0.
    let e = compile(&parse(src), &atts, u32::MAX - 2).unwrap_err();
    assert!(matches!(e, CompileError::IdsExhausted { .. }), "{e}");
}

#[test]
fn attachment_errors() {
    let cfg = parse("[groups.a]\n");
    let e = compile(&cfg, &[att("eth0", &["a", "nope"], &[])], 1).unwrap_err();
    assert_eq!(
        e,
        CompileError::UnknownGroup {
            iface: "eth0".into(),
            group: "nope".into()
        }
    );
    assert_eq!(e.to_string(), "interface `eth0`: unknown group `nope`");
    let e = compile(&cfg, &[att("eth0", &[], &[])], 1).unwrap_err();
    assert!(matches!(e, CompileError::NoGroups { .. }));
    let e = compile(
        &cfg,
        &[att("eth0", &["a"], &[]), att("eth0", &["a"], &[])],
        1,
    )
    .unwrap_err();
    assert!(matches!(e, CompileError::DuplicateInterface { .. }));
}

#[test]
fn no_attachments_compiles_nothing() {
    let cfg = parse(SPEC_EXAMPLE);
    let c = compile(&cfg, &[], 5).unwrap();
    assert_eq!(c.rules.len(), 6);
    assert!(c.policies.is_empty() && c.classes.is_empty());
    assert!(c.peers_v4.is_empty() && c.peers_v6.is_empty() && c.rule_entries.is_empty());
    assert_eq!(c.next_id, 5);
}

#[test]
fn spec_example_compiles_and_summarizes() {
    let cfg = parse(SPEC_EXAMPLE);
    let mut atts = attachments_from_config(&cfg);
    assert_eq!(atts, vec![att("eth0", &["web"], &[])]);
    atts[0].addrs = vec!["198.18.5.5".parse().unwrap()];
    atts.push(att("veth-b", &["bastion"], &["198.18.0.11"]));
    let c = compile(&cfg, &atts, 1).unwrap();
    check_invariants(&c, 1);
    let s = c.summary();
    assert_eq!(s.groups, 2);
    assert_eq!(s.rules, 6);
    assert_eq!(s.interfaces, 2);
    assert_eq!(s.policies, 4);
    assert_eq!(s.classes, c.classes.len());
    assert_eq!(s.peer_entries_v4, c.peers_v4.len());
    assert_eq!(s.peer_entries_v6, c.peers_v6.len());
    assert_eq!(s.rule_entries, c.rule_entries.len());
    let text = s.to_string();
    assert!(text.contains("rules:             6"), "{text}");

    let ssh = rid(&cfg, "web", Direction::Ingress, 1);
    let v = |a: &str| verdict(&c, "eth0", Direction::Ingress, &pkt(a, 6, 22));
    assert_eq!(v("198.18.0.10"), Some(ssh.clone()), "bastion member");
    assert_eq!(v("198.18.0.11"), Some(ssh), "bastion's interface address");
    assert_eq!(v("198.18.0.12"), None);
    // bastion's egress to sg:web reaches web's interface address.
    let to_web = rid(&cfg, "bastion", Direction::Egress, 0);
    assert_eq!(
        verdict(&c, "veth-b", Direction::Egress, &pkt("198.18.5.5", 6, 8080)),
        Some(to_web)
    );
    assert_eq!(
        verdict(&c, "veth-b", Direction::Egress, &pkt("198.18.5.6", 6, 8080)),
        None
    );
    assert_eq!(
        c.rule(RuleRef { rule: 0, flags: 0 })
            .map(|r| r.group.as_str()),
        Some("bastion")
    );
}

// ---------------------------------------------------------------------------
// Differential test against the reference reading of SPEC 1.3
// ---------------------------------------------------------------------------

fn rand_v4(rng: &mut Rng) -> Ipv4Addr {
    let a = rng.pick(&[0u8, 1, 2, 128]);
    let b = rng.pick(&[0u8, 1, 128, 255]);
    let c = rng.pick(&[0u8, 1, 2, 255]);
    if rng.chance(10) {
        Ipv4Addr::from(rng.next() as u32)
    } else {
        Ipv4Addr::new(10, a, b, c)
    }
}

fn rand_v6(rng: &mut Rng) -> Ipv6Addr {
    let hi = rng.pick(&[0u16, 1, 0x8000]);
    let lo = rng.pick(&[0u16, 1, 2, 0xffff]);
    if rng.chance(10) {
        Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()))
    } else {
        Ipv6Addr::new(0x2001, 0xdb8, hi, 0, 0, 0, 0, lo)
    }
}

fn rand_addr(rng: &mut Rng) -> IpAddr {
    if rng.chance(60) {
        IpAddr::V4(rand_v4(rng))
    } else {
        IpAddr::V6(rand_v6(rng))
    }
}

fn rand_cidr(rng: &mut Rng) -> String {
    if rng.chance(60) {
        let len = rng.pick(&[0u8, 8, 9, 16, 23, 24, 25, 31, 32, 32]);
        format!("{}/{len}", rand_v4(rng))
    } else {
        let len = rng.pick(&[0u8, 32, 47, 48, 64, 112, 127, 128, 128]);
        format!("{}/{len}", rand_v6(rng))
    }
}

fn rand_peer(rng: &mut Rng, groups: usize) -> String {
    match rng.below(10) {
        0 => rng
            .pick(&["anywhere", "anywhere-ipv4", "anywhere-ipv6"])
            .to_string(),
        1 | 2 => format!("sg:g{}", rng.below(groups as u64)),
        3 => rand_addr(rng).to_string(),
        _ => rand_cidr(rng),
    }
}

const EDGE_PORTS: [u16; 10] = [0, 1, 22, 53, 1023, 1024, 32768, 65534, 65535, 443];

fn rand_port(rng: &mut Rng) -> u16 {
    if rng.chance(50) {
        rng.pick(&EDGE_PORTS)
    } else {
        rng.below(65536) as u16
    }
}

fn rand_match(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => r#"proto = "all""#.to_string(),
        1 => format!("proto = {}", rng.pick(&[0u8, 47, 132, 255])),
        2 => format!(
            r#"type = "{}""#,
            rng.pick(&["ssh", "dns-udp", "all-tcp", "all-icmp", "https"])
        ),
        3 | 4 => {
            let t = rng.pick(&[0u8, 3, 8, 128, 255]);
            let proto = rng.pick(&["icmp", "icmpv6"]);
            match rng.below(3) {
                0 => format!(r#"proto = "{proto}""#),
                1 => format!(r#"proto = "{proto}", icmp_type = {t}"#),
                _ => format!(
                    r#"proto = "{proto}", icmp_type = {t}, icmp_code = {}"#,
                    rng.pick(&[0u8, 1, 4, 255])
                ),
            }
        }
        _ => {
            let proto = rng.pick(&["tcp", "udp"]);
            let ports = match rng.below(4) {
                0 => "all".to_string(),
                1 => rand_port(rng).to_string(),
                _ => {
                    let (a, b) = (rand_port(rng), rand_port(rng));
                    format!("{}-{}", a.min(b), a.max(b))
                }
            };
            format!(r#"proto = "{proto}", ports = "{ports}""#)
        }
    }
}

fn rand_rules(rng: &mut Rng, groups: usize, key: &str) -> String {
    let n = rng.below(7);
    let mut s = String::from("[\n");
    for _ in 0..n {
        let peers: Vec<String> = (0..1 + rng.below(3))
            .map(|_| format!("\"{}\"", rand_peer(rng, groups)))
            .collect();
        s.push_str(&format!(
            "  {{ {}, {key} = [{}] }},\n",
            rand_match(rng),
            peers.join(", ")
        ));
    }
    s.push(']');
    s
}

fn rand_config(rng: &mut Rng) -> String {
    let groups = 1 + rng.below(4) as usize;
    let mut s = String::new();
    for g in 0..groups {
        s.push_str(&format!("[groups.g{g}]\n"));
        if rng.chance(50) {
            let members: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    if rng.chance(50) {
                        format!("\"{}\"", rand_addr(rng))
                    } else {
                        format!("\"{}\"", rand_cidr(rng))
                    }
                })
                .collect();
            s.push_str(&format!("members = [{}]\n", members.join(", ")));
        }
        if rng.chance(85) {
            s.push_str(&format!("ingress = {}\n", rand_rules(rng, groups, "from")));
        }
        if rng.chance(70) {
            s.push_str(&format!("egress = {}\n", rand_rules(rng, groups, "to")));
        }
    }
    s
}

fn rand_packet(rng: &mut Rng, cfg: &Config, atts: &[Attachment]) -> Packet {
    // Bias addresses towards the ones the config and attachments name.
    let addr = match rng.below(4) {
        0 => {
            let nets: Vec<IpNet> = cfg
                .all_rules()
                .flat_map(|r| r.peers.iter())
                .filter_map(|p| match p {
                    Peer::Cidr(n) => Some(*n),
                    Peer::Group(_) => None,
                })
                .chain(cfg.groups.values().flat_map(|g| g.members.iter().copied()))
                .collect();
            if nets.is_empty() {
                rand_addr(rng)
            } else {
                let n = nets[rng.below(nets.len() as u64) as usize];
                // The network address, the last address, or one inside.
                match (n, rng.below(3)) {
                    (n, 0) => n.network(),
                    (n, 1) => n.broadcast(),
                    (IpNet::V4(n), _) => IpAddr::V4(Ipv4Addr::from(
                        u32::from(n.network()) | (rng.next() as u32 & !u32::from(n.netmask())),
                    )),
                    (IpNet::V6(n), _) => IpAddr::V6(Ipv6Addr::from(
                        u128::from(n.network())
                            | (u128::from(rng.next()) & !u128::from(n.netmask())),
                    )),
                }
            }
        }
        1 => {
            let addrs: Vec<IpAddr> = atts.iter().flat_map(|a| a.addrs.iter().copied()).collect();
            if addrs.is_empty() {
                rand_addr(rng)
            } else {
                addrs[rng.below(addrs.len() as u64) as usize]
            }
        }
        _ => rand_addr(rng),
    };
    let proto = rng.pick(&[6u8, 6, 17, 17, 1, 58, 47, 0, 132]);
    Packet {
        addr,
        proto,
        port: rand_port(rng),
        icmp_type: rng.pick(&[0u8, 3, 8, 128, 255, 9]),
        icmp_code: rng.pick(&[0u8, 1, 4, 255]),
    }
}

fn rand_attachments(rng: &mut Rng, cfg: &Config) -> Vec<Attachment> {
    let names: Vec<&String> = cfg.groups.keys().collect();
    (0..1 + rng.below(3))
        .map(|i| {
            let groups: Vec<String> = (0..1 + rng.below(3))
                .map(|_| names[rng.below(names.len() as u64) as usize].clone())
                .collect();
            let addrs: Vec<IpAddr> = (0..rng.below(3)).map(|_| rand_addr(rng)).collect();
            Attachment {
                iface: format!("veth{i}"),
                groups,
                addrs,
            }
        })
        .collect()
}

#[test]
fn compiled_maps_agree_with_the_reference_on_random_policies() {
    let mut configs = 0;
    let mut allowed = 0u64;
    let mut denied = 0u64;
    for seed in 0..400u64 {
        let mut rng = Rng::new(seed);
        let src = rand_config(&mut rng);
        let cfg = match config::parse(&src, "rand.toml") {
            Ok(l) => l.config,
            // A random config may repeat a rule; that is an error by design.
            Err(e) if e.message.contains("duplicate rule") => continue,
            Err(e) => panic!("seed {seed}: {e}\n{src}"),
        };
        configs += 1;
        let atts = rand_attachments(&mut rng, &cfg);
        let first = 1 + rng.below(1000) as u32;
        let c = compile(&cfg, &atts, first).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        check_invariants(&c, first);
        for a in &atts {
            let mut groups = a.groups.clone();
            groups.sort();
            groups.dedup();
            for d in Direction::ALL {
                let policy = c.ifaces[&a.iface].policy(d);
                for _ in 0..150 {
                    let p = rand_packet(&mut rng, &cfg, &atts);
                    let want = reference(&cfg, &atts, &groups, d, &p);
                    let got = lookup(&c, policy, &p).map(|r| c.rules[r as usize].id.clone());
                    match &got {
                        Some(id) => {
                            allowed += 1;
                            assert!(
                                want.contains(id),
                                "seed {seed}: {} {d} {p:?}: compiled allows by {id}, \
                                 reference allows by {want:?}\n{src}",
                                a.iface
                            );
                        }
                        None => {
                            denied += 1;
                            assert!(
                                want.is_empty(),
                                "seed {seed}: {} {d} {p:?}: compiled denies, reference \
                                 allows by {want:?}\n{src}",
                                a.iface
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(configs > 300, "only {configs} usable configs");
    // Both verdicts are well represented.
    assert!(
        allowed > 10_000 && denied > 10_000,
        "allowed {allowed}, denied {denied}"
    );
}

// ---------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------

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
    // One peer entry per distinct CIDR, plus the /0s.
    assert_eq!(c.peers_v4.len() + c.peers_v6.len(), n as usize + 2 + 2);
    // Spot checks against the reference.
    let mut rng = Rng::new(99);
    let atts = [att("eth0", &["big"], &[])];
    let policy = c.ifaces["eth0"].ingress_policy;
    // The brute-force lookup is linear in the entries, so only a few.
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
        let got = lookup(&c, policy, &p).map(|r| c.rules[r as usize].id.clone());
        assert_eq!(got.is_some(), !want.is_empty());
        if let Some(id) = got {
            assert!(want.contains(&id));
        }
    }
}

// ---------------------------------------------------------------------------
// Untracked flows (SPEC 1.8): rule and interface flags
// ---------------------------------------------------------------------------

/// Like `lookup`, but returns the flags of the longest rule match.
fn lookup_flags(c: &Compiled, policy: u32, p: &Packet) -> Option<u32> {
    let rule = lookup(c, policy, p)?;
    let class = match p.addr {
        IpAddr::V4(a) => {
            let probe = [&policy.to_be_bytes()[..], &a.octets()[..]].concat();
            c.peers_v4
                .iter()
                .filter(|(l, k, _)| prefix_eq(&v4_bytes(k), &probe, *l))
                .max_by_key(|(l, _, _)| *l)?
                .2
        }
        IpAddr::V6(a) => {
            let probe = [&policy.to_be_bytes()[..], &a.octets()[..]].concat();
            c.peers_v6
                .iter()
                .filter(|(l, k, _)| prefix_eq(&v6_bytes(k), &probe, *l))
                .max_by_key(|(l, _, _)| *l)?
                .2
        }
    };
    let probe = rule_bytes(&RuleKey {
        class: class.to_be_bytes(),
        proto: p.proto,
        port: p.slot().to_be_bytes(),
        _pad: 0,
    });
    let (_, _, r) = c
        .rule_entries
        .iter()
        .filter(|(l, k, _)| prefix_eq(&rule_bytes(k), &probe, *l))
        .max_by_key(|(l, _, _)| *l)?;
    assert_eq!(r.rule, rule);
    Some(r.flags)
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
    // Default egress: all traffic to 0.0.0.0/0 and ::/0.
    assert_eq!(a.flags, IFACE_F_EGRESS_ALL_V4 | IFACE_F_EGRESS_ALL_V6);
    // All protocols from ::/0 only; tcp-only egress is not "all traffic".
    assert_eq!(b.flags, IFACE_F_INGRESS_ALL_V6);
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
