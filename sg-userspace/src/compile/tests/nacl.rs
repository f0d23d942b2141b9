//! NACLs compiled into the SG tables: the tables' answer (through the
//! kernel's searches) is the lowest-numbered matching rule and its action,
//! for random NACLs with overlapping CIDRs, port ranges and ICMP.

use super::*;
use crate::config::{NaclAction, NaclRule};
use sg_common::{NACL_RULE_IMPLICIT, RULE_F_NACL_DENY};

/// SPEC 2.1 read directly: the number and action of the first match.
fn first_match(cfg: &Config, rules: &[NaclRule], p: &Packet) -> (u16, NaclAction) {
    let mut sorted: Vec<&NaclRule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.number);
    for r in sorted {
        let peer_ok = r.peers.iter().any(|peer| match peer {
            Peer::Cidr(n) => n.contains(&p.addr),
            Peer::PrefixList(l) => cfg.prefix_lists[l]
                .entries
                .iter()
                .any(|e| e.cidr.contains(&p.addr)),
            Peer::Group(_) => panic!("a NACL rule with a group peer"),
        });
        if proto_and_ports_match(r.proto, r.ports, p) && peer_ok {
            return (r.number, r.action);
        }
    }
    (NACL_RULE_IMPLICIT, NaclAction::Deny)
}

const CIDRS: &[&str] = &[
    "anywhere",
    "anywhere-ipv4",
    "anywhere-ipv6",
    "198.18.0.0/15",
    "198.18.0.0/16",
    "198.18.2.0/24",
    "198.18.2.128/25",
    "198.18.2.7",
    "2001:db8::/32",
    "2001:db8:2::/48",
    "2001:db8:2::7",
    // The lists of `PREFIX_LISTS`.
    "pl:mixed",
    "pl:empty",
];
/// Prefix lists for `pl:` peers: overlapping the CIDRs above, both
/// families, and one empty (matches nothing).
const PREFIX_LISTS: &str = "[prefix_lists.mixed]\nentries = [\"198.18.2.0/25\", \"198.19.0.0/16\", \"2001:db8:2::/64\"]\n\
                            [prefix_lists.empty]\nentries = []\n";
const ADDRS: &[&str] = &[
    "198.18.2.7",
    "198.18.2.200",
    "198.18.9.9",
    "198.19.1.1",
    "10.1.1.1",
    "2001:db8:2::7",
    "2001:db8:2::8",
    "2001:db8:9::1",
    "2001:db9::1",
];

fn random_rule(rng: &mut Rng, number: u16, direction: Direction) -> String {
    let action = if rng.chance(50) { "allow" } else { "deny" };
    let what = match rng.below(6) {
        0 => "proto = \"all\"".to_string(),
        1 => "proto = 47".to_string(),
        2 => format!("proto = \"icmp\", icmp_type = {}", rng.pick(&[0u8, 3, 8])),
        3 => "proto = \"icmpv6\", icmp_type = 128, icmp_code = 0".to_string(),
        _ => {
            let proto = rng.pick(&["tcp", "udp"]);
            let lo = rng.pick(&[0u16, 22, 80, 1000, 1024, 5000]);
            let hi = lo.saturating_add(rng.pick(&[0u16, 1, 100, 60000]));
            format!("proto = \"{proto}\", ports = \"{lo}-{hi}\"")
        }
    };
    let peer = rng.pick(CIDRS);
    format!(
        "{{ rule = {number}, action = \"{action}\", {what}, {} = \"{peer}\" }}",
        direction.peer_key()
    )
}

#[test]
fn random_nacls_decide_by_the_lowest_numbered_match() {
    let mut rng = Rng::new(0x9ac1);
    for round in 0..60 {
        let mut src = String::from(
            "[groups.g]\ningress = []\n[interfaces.eth0]\ngroups = [\"g\"]\nnacl = \"n\"\n[nacls.n]\n",
        );
        for d in Direction::ALL {
            if rng.chance(10) {
                continue; // a missing direction denies everything
            }
            let count = rng.below(9) as usize; // at most the 9 numbers below
            let mut numbers: Vec<u16> = Vec::new();
            while numbers.len() < count {
                let n = rng.pick(&[1u16, 5, 10, 50, 90, 100, 110, 200, 32766]);
                if !numbers.contains(&n) {
                    numbers.push(n);
                }
            }
            let rules: Vec<String> = numbers
                .iter()
                .map(|&n| random_rule(&mut rng, n, d))
                .collect();
            src += &format!("{d} = [\n  {}\n]\n", rules.join(",\n  "));
        }
        src.insert_str(0, PREFIX_LISTS);
        let (cfg, c) = build(&src, &[att("eth0", &["g"], &[])]);
        let tables = KernelTables::of(&c);
        let b = c.ifaces["eth0"];
        for d in Direction::ALL {
            let policy = match d {
                Direction::Ingress => b.ingress_nacl,
                Direction::Egress => b.egress_nacl,
            };
            assert_ne!(policy, 0);
            let rules = cfg.nacls["n"].rules(d);
            for _ in 0..200 {
                let addr: IpAddr = rng.pick(ADDRS).parse().unwrap();
                let proto = rng.pick(&[1u8, 6, 17, 47, 58, 50]);
                let p = Packet {
                    addr,
                    proto,
                    port: rng.pick(&[0u16, 22, 80, 1023, 1024, 1100, 5000, 65535]),
                    icmp_type: rng.pick(&[0u8, 3, 8, 128]),
                    icmp_code: rng.pick(&[0u8, 1]),
                };
                let want = first_match(&cfg, rules, &p);
                let got = lookup_ref(&tables, policy, &p).map(|r| {
                    let info = c.rules[r.rule as usize].nacl.expect("a NACL rule");
                    let action = if r.flags & RULE_F_NACL_DENY != 0 {
                        NaclAction::Deny
                    } else {
                        NaclAction::Allow
                    };
                    assert_eq!(info.action, action, "the flag carries the rule's action");
                    (info.number, action)
                });
                assert_eq!(got, Some(want), "round {round} {d} {p:?}\n{src}");
            }
        }
    }
}

#[test]
fn nacl_policies_follow_their_interfaces_and_reuse_keeps_them() {
    let src = r#"
[groups.g]
ingress = []
[interfaces.a]
groups = ["g"]
nacl = "n"
[interfaces.b]
groups = ["g"]
[nacls.n]
ingress = [{ rule = 1, action = "allow", proto = "all", from = "anywhere" }]
"#;
    let atts = [att("a", &["g"], &[]), att("b", &["g"], &[])];
    let (_, c) = build(src, &atts);
    assert_ne!(c.ifaces["a"].ingress_nacl, 0);
    assert_ne!(c.ifaces["a"].egress_nacl, 0);
    assert_eq!(
        (c.ifaces["b"].ingress_nacl, c.ifaces["b"].egress_nacl),
        (0, 0)
    );
    assert_eq!(c.ifaces["a"].ingress_policy, c.ifaces["b"].ingress_policy);
    let s = c.summary();
    assert_eq!((s.nacls, s.nacl_rules), (1, 1));
    // Compiled again under fresh IDs, the plan maps the NACL IDs back.
    let first = crate::reuse::plan(&c, &Default::default());
    let again = compile(&parse(src), &atts, first.write.next_id).unwrap();
    let second = crate::reuse::plan(&again, &first.installed);
    assert_eq!(second.entries_written(), 0);
    assert_eq!(second.write.ifaces, first.write.ifaces);
}

/// SPEC 9.1: a changed prefix list changes the NACL rules that name it, as
/// an ordinary recompile: the next plan writes a new NACL policy and
/// switches the interface to it, the SG policy untouched.
#[test]
fn a_changed_prefix_list_changes_the_nacl_that_names_it() {
    let src = |office: &str| {
        format!(
            r#"
[prefix_lists.office]
entries = ["{office}"]
[groups.g]
ingress = [{{ proto = "tcp", ports = "22", from = "anywhere" }}]
[interfaces.a]
groups = ["g"]
nacl = "n"
[nacls.n]
ingress = [
  {{ rule = 10, action = "deny", proto = "tcp", ports = "22", from = "pl:office" }},
  {{ rule = 20, action = "allow", proto = "all", from = "anywhere" }},
]
"#
        )
    };
    let atts = [att("a", &["g"], &[])];
    let ssh = |a: &str| Packet {
        addr: a.parse().unwrap(),
        proto: 6,
        port: 22,
        icmp_type: 0,
        icmp_code: 0,
    };
    let verdict = |c: &Compiled, a: &str| {
        let t = KernelTables::of(c);
        let r = lookup_ref(&t, c.ifaces["a"].ingress_nacl, &ssh(a)).expect("a NACL rule");
        let info = c.rules[r.rule as usize].nacl.expect("a NACL rule");
        (info.number, r.flags & RULE_F_NACL_DENY != 0)
    };
    let (_, c1) = build(&src("198.18.5.0/24"), &atts);
    assert_eq!(verdict(&c1, "198.18.5.9"), (10, true));
    assert_eq!(verdict(&c1, "198.18.6.9"), (20, false));
    let first = crate::reuse::plan(&c1, &Default::default());

    let c2 = compile(&parse(&src("198.18.6.0/24")), &atts, first.write.next_id).unwrap();
    let second = crate::reuse::plan(&c2, &first.installed);
    assert_eq!(verdict(&second.write, "198.18.5.9"), (20, false));
    assert_eq!(verdict(&second.write, "198.18.6.9"), (10, true));
    let (b1, b2) = (first.write.ifaces["a"], second.write.ifaces["a"]);
    assert_ne!(b1.ingress_nacl, b2.ingress_nacl, "a new NACL policy");
    assert_eq!(b1.ingress_policy, b2.ingress_policy, "the SGs are reused");
    assert!(second.entries_written() > 0);
}
