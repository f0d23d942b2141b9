//! IDs, errors and summaries.

use super::*;
use crate::config::tests::SPEC_EXAMPLE;

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
    assert_eq!(c1.summary(), c2.summary());

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
    assert_eq!(KernelTables::of(&c), KernelTables::default());
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
    // What the maps will hold. Hosts: sg:bastion's two in web's ingress,
    // sg:web's one in bastion's egress; the rest are prefixes.
    let t = KernelTables::of(&c);
    assert_eq!(s.peer_hosts_v4, t.peers.hosts_v4.len());
    assert_eq!(s.peer_hosts_v6, t.peers.hosts_v6.len());
    assert_eq!(s.peer_prefixes_v4, t.peers.nets_v4.len());
    assert_eq!(s.peer_prefixes_v6, t.peers.nets_v6.len());
    assert_eq!(s.length_trees, t.peers.lengths.len());
    assert_eq!(s.rule_sets, t.rule_sets.len());
    assert_eq!(s.rule_intervals, t.intervals());
    assert_eq!(s.peer_hosts_v4, 3, "{t:?}");
    let text = s.to_string();
    for line in [
        "peer hosts v4:     3",
        "peer prefixes v4:  ",
        "length trees:      ",
        "rule sets:         ",
        "rule intervals:    ",
    ] {
        assert!(text.contains(line), "{text}");
    }
    assert!(!text.contains("entries"), "no format no map holds: {text}");
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

/// Slots replace compile positions in every interval, and nowhere else.
#[test]
fn renumbered_rules_name_their_slots() {
    let src = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "22", from = "198.18.0.0/16" },
  { proto = "udp", ports = "53", from = "2001:db8::/32" },
]
"#;
    let (_, c) = build(src, &[att("eth0", &["g"], &[])]);
    let mut renumbered = c.clone();
    renumbered.renumber_rules(|r| 100 + r);
    assert_eq!(renumbered.policies, c.policies);
    let pi = c.ifaces["eth0"].ingress_policy;
    let pe = c.ifaces["eth0"].egress_policy;
    for (policy, p, rule) in [
        (pi, pkt("198.18.1.1", 6, 22), 0),
        (pi, pkt("2001:db8::1", 17, 53), 1),
        (pe, pkt("198.19.0.1", 47, 0), 2),
    ] {
        assert_eq!(lookup(&c, policy, &p), Some(rule));
        assert_eq!(lookup(&renumbered, policy, &p), Some(100 + rule));
    }
}
