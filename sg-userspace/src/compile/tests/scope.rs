//! Issue 14: a compile covers only what the attached interfaces enforce.

use super::*;

/// `web` (attached to `a`) names `sg:db` and `pl:office`; `db` and `other`
/// hold `idle` rules each that no attached interface enforces; `m` is the
/// NACL of `x`, which is not attached.
fn config_text(idle: usize) -> String {
    let rules = |port: usize| -> String {
        (0..idle)
            .map(|i| {
                format!(
                    "  {{ proto = \"tcp\", ports = \"{}\", from = \"198.19.{}.{}\" }},\n",
                    port + i,
                    i / 250,
                    i % 250 + 1
                )
            })
            .collect()
    };
    format!(
        r#"
[prefix_lists.office]
entries = ["198.18.9.0/24"]
[groups.web]
ingress = [
  {{ proto = "tcp", ports = "443", from = "sg:db" }},
  {{ proto = "tcp", ports = "22", from = "pl:office" }},
]
[groups.db]
members = ["198.18.5.0/24"]
ingress = [
{}]
[groups.other]
ingress = [
{}]
[interfaces.a]
groups = ["web"]
nacl = "n"
[interfaces.x]
groups = ["other"]
nacl = "m"
[nacls.n]
ingress = [{{ rule = 1, action = "allow", proto = "all", from = "anywhere" }}]
[nacls.m]
ingress = [{{ rule = 1, action = "deny", proto = "tcp", ports = "80", from = "198.18.7.0/24" }}]
"#,
        rules(1000),
        rules(20000)
    )
}

#[test]
fn only_what_the_attached_interfaces_enforce_is_compiled() {
    let atts = [att("a", &["web"], &["198.18.0.1"])];
    let scoped = |idle: usize| {
        let c = compile_attached(&parse(&config_text(idle)), &atts, 1).unwrap();
        check_invariants(&c, 1);
        c
    };
    let (big, none) = (scoped(2000), scoped(0));
    // Compiled in full, the idle rules are there (what `sg validate`
    // counts): 2,000 each, and each group's default egress rule.
    let (_, full) = build(&config_text(2000), &atts);
    assert_eq!(full.summary().rules, big.summary().rules + 4002);
    // The idle groups' rules are neither compiled nor recorded...
    for r in &big.rules {
        match r.nacl {
            None => assert_eq!(r.group, "web", "{}", r.id),
            Some(_) => assert!(r.id.starts_with("nacl:n:"), "{}", r.id),
        }
    }
    assert_eq!(big.rules.len(), none.rules.len());
    let s = big.summary();
    assert_eq!(format!("{s:?}"), format!("{:?}", none.summary()));
    // ...nor written: the tables are those of a config without them.
    let plan = crate::reuse::plan(&big, &Default::default());
    let plan_none = crate::reuse::plan(&none, &Default::default());
    assert_eq!(plan.entries_written(), plan_none.entries_written());
    assert_eq!(
        format!("{:?}", KernelTables::of(&big)),
        format!("{:?}", KernelTables::of(&none))
    );
    // `sg:db` still resolves to db's members, `pl:office` to its entries.
    let t = KernelTables::of(&big);
    let prefixes = format!("{:?}", t.peers.nets_v4);
    assert!(!t.peers.nets_v4.is_empty(), "{prefixes}");
    // The counts of the configuration are still its own.
    assert_eq!((s.groups, s.nacls), (3, 2));
}
