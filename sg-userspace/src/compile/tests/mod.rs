//! Compiler tests. The compiled tables are queried through
//! `sg_common::search`, the code the kernel runs.

use super::*;
use crate::config::{self, Config, Direction, Peer, PortMatch, Proto, Rule};
use sg_common::{
    FAMILY_V4, FAMILY_V6, PeerKeyV4, PeerKeyV6, PeerNetKeyV4, PeerNetKeyV6, RuleRef,
    search::{interval_rule, longest_prefix_class},
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

mod classes;
mod ids;
mod nacl;
mod ports;
mod prefix_lists;
mod random;
mod scale;
mod scope;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The tests' one generator (`sg_lab::rng`, SplitMix64), drawn in `u64`
/// ranges as these tests count.
pub(crate) struct Rng(sg_lab::rng::Rng);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(sg_lab::rng::Rng(seed))
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        self.0.pick(items)
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
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

fn compile_at(src: &str, atts: &[Attachment], first: u32) -> (Config, Compiled) {
    let cfg = parse(src);
    let c = compile(&cfg, atts, first).unwrap();
    check_invariants(&c, first);
    (cfg, c)
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

    // Peer prefixes: sorted, unique, no host bits, lengths in range, known
    // classes of the right family.
    let family_of: HashMap<u32, Family> = c.classes.iter().map(|k| (k.id, k.family)).collect();
    for p in &c.policies {
        let mut seen = HashSet::new();
        assert!(p.peers.windows(2).all(|w| w[0] < w[1]), "sorted");
        for peer in &p.peers {
            assert!(peer.len <= peer.family.bits());
            let m = resolve::mask(peer.family, peer.len);
            assert_eq!(peer.addr & !m, 0, "{peer:?} has host bits");
            assert!(
                seen.insert((peer.family, peer.len, peer.addr)),
                "{peer:?} twice"
            );
            assert_eq!(family_of.get(&peer.class), Some(&peer.family));
        }
    }
    // Port sets: sorted by protocol, the fallback first; intervals sorted,
    // disjoint, merged, naming rules of their class.
    for class in &c.classes {
        assert!(class.port_sets.windows(2).all(|w| w[0].proto < w[1].proto));
        for s in &class.port_sets {
            assert!(!s.intervals.is_empty());
            for w in s.intervals.windows(2) {
                assert!(w[0].hi < w[1].lo, "{s:?}");
                assert!(
                    w[0].hi + 1 < w[1].lo || w[0].rule != w[1].rule,
                    "unmerged neighbours: {s:?}"
                );
            }
            for i in &s.intervals {
                assert!(i.lo <= i.hi);
                assert!(
                    class.rules.contains(&i.rule.rule),
                    "an interval names a rule outside its class"
                );
            }
        }
    }
    for p in &c.policies {
        assert_eq!(p.rule_count, p.rules.len());
        assert!(p.rules.windows(2).all(|w| w[0] < w[1]));
        for &r in &p.rules {
            let rule = &c.rules[r as usize];
            assert_eq!(rule.direction, p.direction);
            match &p.nacl {
                Some(nacl) => assert!(rule.nacl.is_some() && &rule.group == nacl),
                None => assert!(rule.nacl.is_none() && p.groups.contains(&rule.group)),
            }
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

/// The kernel's classification over the map entries: the host hash, else
/// the binary search on prefix lengths; then the class's rule set for the
/// protocol, else its fallback, and the binary search over its intervals
/// (laid out between other runs, as in `RULE_INTERVALS`).
fn lookup_ref(t: &KernelTables, policy: u32, p: &Packet) -> Option<RuleRef> {
    let pid = policy.to_be_bytes();
    let lengths = |family: u8| {
        t.peers
            .lengths
            .iter()
            .find(|(k, _)| k.policy == policy && k.family == family)
            .map(|(_, l)| l)
    };
    let class = match p.addr {
        IpAddr::V4(a) => {
            let host = PeerKeyV4 {
                policy: pid,
                addr: a.octets(),
            };
            match t.peers.hosts_v4.iter().find(|(k, _)| *k == host) {
                Some(&(_, class)) => class,
                None => longest_prefix_class(lengths(FAMILY_V4)?, |len| {
                    let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    let key = PeerNetKeyV4 {
                        policy: pid,
                        len,
                        _pad: [0; 3],
                        addr: (u32::from(a) & m).to_be_bytes(),
                    };
                    t.peers
                        .nets_v4
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, n)| n)
                }),
            }
        }
        IpAddr::V6(a) => {
            let host = PeerKeyV6 {
                policy: pid,
                addr: a.octets(),
            };
            match t.peers.hosts_v6.iter().find(|(k, _)| *k == host) {
                Some(&(_, class)) => class,
                None => longest_prefix_class(lengths(FAMILY_V6)?, |len| {
                    let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    let key = PeerNetKeyV6 {
                        policy: pid,
                        len,
                        _pad: [0; 3],
                        addr: (u128::from(a) & m).to_be_bytes(),
                    };
                    t.peers
                        .nets_v6
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, n)| n)
                }),
            }
        }
    };
    if class == 0 {
        return None;
    }
    let set = |proto: u8, any: u8| {
        t.rule_sets
            .iter()
            .find(|s| s.key.class == class && s.key.proto == proto && s.key.any == any)
    };
    let set = set(p.proto, 0).or_else(|| set(0, 1))?;
    let fence = sg_common::RuleInterval {
        lo: 0,
        hi: 65535,
        rule: RuleRef {
            rule: u32::MAX,
            flags: 0,
        },
    };
    let mut array = vec![fence; 3];
    array.extend(&set.intervals);
    array.extend([fence; 3]);
    let span = sg_common::RuleSpan {
        first: 3,
        len: set.intervals.len() as u32,
    };
    interval_rule(span, p.slot(), |i| array.get(i as usize))
}

/// The rule index the kernel's tables name for `p` under `policy`.
fn lookup(c: &Compiled, policy: u32, p: &Packet) -> Option<u32> {
    lookup_ref(&KernelTables::of(c), policy, p).map(|r| r.rule)
}

/// SPEC 1.3 read directly: do a rule's protocol and ports match `p`?
/// (ICMP is IPv4's, ICMPv6 IPv6's.) Shared by the SG and NACL oracles.
fn proto_and_ports_match(proto: Proto, ports: PortMatch, p: &Packet) -> bool {
    let proto_ok = match proto {
        Proto::All => true,
        Proto::Number(1) => p.proto == 1 && p.addr.is_ipv4(),
        Proto::Number(58) => p.proto == 58 && p.addr.is_ipv6(),
        Proto::Number(n) => n == p.proto,
    };
    let ports_ok = match ports {
        PortMatch::All => true,
        PortMatch::Range { from, to } => (from..=to).contains(&p.port),
        PortMatch::Icmp {
            icmp_type,
            icmp_code,
        } => {
            icmp_type.is_none_or(|t| t == p.icmp_type) && icmp_code.is_none_or(|c| c == p.icmp_code)
        }
    };
    proto_ok && ports_ok
}

/// SPEC 1.3 read directly: does `rule` allow `p`?
fn reference_rule(cfg: &Config, atts: &[Attachment], rule: &Rule, p: &Packet) -> bool {
    let peer_ok = rule.peers.iter().any(|peer| match peer {
        Peer::Cidr(n) => n.contains(&p.addr),
        Peer::PrefixList(l) => cfg.prefix_lists[l]
            .entries
            .iter()
            .any(|e| e.cidr.contains(&p.addr)),
        Peer::Group(g) => {
            cfg.groups[g].members.iter().any(|m| m.contains(&p.addr))
                || atts
                    .iter()
                    .any(|a| a.groups.contains(g) && a.addrs.contains(&p.addr))
        }
    });
    proto_and_ports_match(rule.proto, rule.ports, p) && peer_ok
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

/// Peer prefixes of a policy as (CIDR text, class rule IDs).
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
    let Some(p) = c.policies.iter().find(|p| p.id == policy) else {
        return BTreeMap::new();
    };
    p.peers
        .iter()
        .map(|peer| {
            let addr = match peer.family {
                Family::V4 => Ipv4Addr::from(peer.addr as u32).to_string(),
                Family::V6 => Ipv6Addr::from(peer.addr).to_string(),
            };
            (format!("{addr}/{}", peer.len), class_rules(peer.class))
        })
        .collect()
}

fn ids(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn audit_mode_sets_the_audit_flag_of_the_interfaces_it_covers() {
    use crate::config::parse;
    let c = parse(
        "[groups.a]\n[groups.b]\nmode = \"audit\"\n\
         [interfaces.eth0]\ngroups = [\"a\"]\n\
         [interfaces.eth1]\ngroups = [\"a\", \"b\"]\n\
         [interfaces.eth2]\ngroups = [\"a\"]\nmode = \"audit\"\n",
        "t.toml",
    )
    .unwrap()
    .config;
    let compiled = compile(
        &c,
        &[
            att("eth0", &["a"], &[]),
            att("eth1", &["a", "b"], &[]),
            att("eth2", &["a"], &[]),
        ],
        1,
    )
    .unwrap();
    let audit = |i: &str| compiled.ifaces[i].flags & sg_common::IFACE_F_AUDIT != 0;
    assert!(!audit("eth0"));
    assert!(audit("eth1"), "a group in audit mode");
    assert!(audit("eth2"), "the interface's own mode");
    // Same groups, same policies: only the flag tells them apart.
    assert_eq!(
        compiled.ifaces["eth0"].ingress_policy,
        compiled.ifaces["eth2"].ingress_policy
    );
}
