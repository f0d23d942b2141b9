//! NACLs compiled into the SG tables: the tables' answer (through the
//! kernel's searches) is the lowest-numbered matching rule and its action,
//! for random NACLs with overlapping CIDRs, port ranges and ICMP.

use super::*;
use crate::config::{NaclAction, NaclRule};
use sg_common::{NACL_RULE_IMPLICIT, RULE_F_NACL_DENY};

/// SPEC 2.1 read directly: the number and action of the first match.
fn first_match(rules: &[NaclRule], p: &Packet) -> (u16, NaclAction) {
    let mut sorted: Vec<&NaclRule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.number);
    for r in sorted {
        let proto_ok = match r.proto {
            Proto::All => true,
            Proto::Number(1) => p.proto == 1 && p.addr.is_ipv4(),
            Proto::Number(58) => p.proto == 58 && p.addr.is_ipv6(),
            Proto::Number(n) => n == p.proto,
        };
        let ports_ok = match r.ports {
            PortMatch::All => true,
            PortMatch::Range { from, to } => (from..=to).contains(&p.port),
            PortMatch::Icmp {
                icmp_type,
                icmp_code,
            } => {
                icmp_type.is_none_or(|t| t == p.icmp_type)
                    && icmp_code.is_none_or(|c| c == p.icmp_code)
            }
        };
        if proto_ok && ports_ok && r.peers.iter().any(|n| n.contains(&p.addr)) {
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
];
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
                let want = first_match(rules, &p);
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
