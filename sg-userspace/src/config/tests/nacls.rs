//! `[nacls.NAME]` and `nacl = "NAME"` (SPEC 2.4): what parses, and every
//! error with its position.

use super::*;

/// Group `g`, interface `eth0` naming NACL `edge`, and `edge` with
/// `body` (its `ingress`/`egress` lines). `[nacls.edge]` is on line 5.
fn with_nacl(body: &str) -> String {
    format!(
        "[groups.g]\ningress = []\n[interfaces.eth0]\ngroups = [\"g\"]\nnacl = \"edge\"\n\
         [nacls.edge]\n{body}"
    )
}

#[test]
fn the_spec_example_parses_sorted_by_number() {
    let c = cfg(&with_nacl(
        r#"ingress = [
  { rule = 100, action = "allow", type = "http", from = "anywhere" },
  { rule = 110, action = "allow", proto = "tcp", ports = "1024-65535", from = "0.0.0.0/0" },
  { rule = 90,  action = "deny",  proto = "all", from = "198.18.2.0/24", description = "quarantine" },
]
egress = [{ rule = 100, action = "allow", proto = "all", to = "anywhere" }]
"#,
    ));
    assert_eq!(c.interfaces["eth0"].nacl.as_deref(), Some("edge"));
    let n = &c.nacls["edge"];
    let numbers: Vec<u16> = n.ingress.iter().map(|r| r.number).collect();
    assert_eq!(numbers, vec![90, 100, 110]);
    assert_eq!(n.ingress[0].action, NaclAction::Deny);
    assert_eq!(n.ingress[0].peers, vec![cidr("198.18.2.0/24")]);
    assert_eq!(n.ingress[0].description.as_deref(), Some("quarantine"));
    assert_eq!(n.ingress[1].proto, TCP);
    assert_eq!(n.ingress[1].ports, port(80));
    assert_eq!(
        n.ingress[1].peers,
        vec![cidr("0.0.0.0/0"), cidr("::/0")],
        "anywhere is both families"
    );
    assert_eq!(n.egress.len(), 1);
}

#[test]
fn a_missing_direction_is_empty_and_an_unused_nacl_warns() {
    let src = "[groups.g]\ningress = []\n[nacls.lonely]\ningress = []\n";
    let l = ok(src);
    assert!(l.config.nacls["lonely"].egress.is_empty());
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(
        l.warnings[0].starts_with("t.toml:3:8: NACL `lonely` is named by no interface"),
        "{:?}",
        l.warnings
    );
    let used = ok(&with_nacl(""));
    assert!(used.warnings.is_empty(), "{:?}", used.warnings);
    assert!(used.config.nacls["edge"].ingress.is_empty());
}

#[test]
fn nacl_errors_name_line_and_column() {
    // Rules are on line 8 (after `ingress = [` on line 7), from column 3.
    let rule = |r: &str| with_nacl(&format!("ingress = [\n  {r},\n]\n"));
    let r = r#"{ rule = 100, action = "allow", proto = "all", from = "sg:g" }"#;
    fails(
        &rule(r),
        8,
        col(r, "\"sg:g\"") + 2,
        "not security-group references",
    );
    let r = r#"{ rule = 100, proto = "all", from = "anywhere" }"#;
    fails(&rule(r), 8, 3, "needs `action = \"allow\"`");
    let r = r#"{ action = "allow", proto = "all", from = "anywhere" }"#;
    fails(&rule(r), 8, 3, "NACL rule needs a number");
    let r = r#"{ rule = 0, action = "allow", proto = "all", from = "anywhere" }"#;
    fails(
        &rule(r),
        8,
        col(r, "0,") + 2,
        "rule number 0 is out of range 1-32766",
    );
    let r = r#"{ rule = 32767, action = "allow", proto = "all", from = "anywhere" }"#;
    fails(&rule(r), 8, col(r, "32767") + 2, "out of range 1-32766");
    let r = r#"{ rule = 1, action = "permit", proto = "all", from = "anywhere" }"#;
    fails(
        &rule(r),
        8,
        col(r, "\"permit\"") + 2,
        "unknown action `permit`",
    );
    let r = r#"{ rule = 1, action = "allow", proto = "all", from = ["198.18.0.0/16", "198.19.0.0/16"] }"#;
    fails(
        &rule(r),
        8,
        col(r, "[\"198") + 2,
        "exactly one peer, found 2",
    );
    let r = r#"{ rule = 1, action = "allow", proto = "all", from = "anywhere", groups = 1 }"#;
    fails(
        &rule(r),
        8,
        col(r, "groups") + 2,
        "unknown key `groups` in a NACL rule",
    );
    let r = r#"{ rule = 1, action = "allow", proto = "tcp", from = "anywhere" }"#;
    fails(&rule(r), 8, 3, "proto tcp needs `ports`");
    let r = r#"{ rule = 1, action = "allow", proto = "all", to = "anywhere" }"#;
    fails(&rule(r), 8, col(r, " to =") + 3, "ingress rules use `from`");
    // Duplicate numbers: the second names the first's position.
    let src = with_nacl(
        "ingress = [\n  { rule = 5, action = \"allow\", proto = \"all\", from = \"anywhere\" },\n  \
         { rule = 5, action = \"deny\", proto = \"tcp\", ports = \"22\", from = \"198.18.0.0/15\" },\n]\n",
    );
    fails(
        &src,
        9,
        3,
        "duplicate rule number 5 in ingress of NACL `edge` (also at 8:3)",
    );
    // The same number in both directions is fine.
    ok(&with_nacl(
        "ingress = [{ rule = 5, action = \"allow\", proto = \"all\", from = \"anywhere\" }]\n\
         egress = [{ rule = 5, action = \"allow\", proto = \"all\", to = \"anywhere\" }]\n",
    ));
    // Unknown NACL name under an interface, unknown key in a NACL.
    let src = "[groups.g]\ningress = []\n[interfaces.eth0]\ngroups = [\"g\"]\nnacl = \"nope\"\n";
    fails(src, 5, 8, "unknown NACL `nope`; defined NACLs: none");
    fails(
        &with_nacl("rules = []\n"),
        7,
        1,
        "unknown key `rules` in NACL `edge`",
    );
}

#[test]
fn a_nacl_rule_peer_may_be_a_prefix_list() {
    let src = format!(
        "{}[prefix_lists.office]\nentries = [\"198.18.5.0/24\", \"2001:db8:5::/48\"]\n",
        with_nacl(
            "ingress = [{ rule = 10, action = \"deny\", proto = \"tcp\", ports = \"22\", from = \"pl:office\" }]\n\
             egress = [{ rule = 20, action = \"allow\", proto = \"all\", to = [\"pl:office\"] }]\n",
        )
    );
    let l = ok(&src);
    let n = &l.config.nacls["edge"];
    assert_eq!(n.ingress[0].peers, vec![Peer::PrefixList("office".into())]);
    assert_eq!(n.egress[0].peers, vec![Peer::PrefixList("office".into())]);
    assert_eq!(
        l.config.static_peer_cidrs(&n.ingress[0].peers[0]).unwrap(),
        vec![net("198.18.5.0/24"), net("2001:db8:5::/48")]
    );
}

#[test]
fn a_nacl_prefix_list_peer_must_exist_and_be_alone() {
    let rule = |r: &str| {
        format!(
            "{}[prefix_lists.a]\nentries = [\"198.18.5.0/24\"]\n",
            with_nacl(&format!("ingress = [\n  {r},\n]\n"))
        )
    };
    let r = r#"{ rule = 1, action = "allow", proto = "all", from = "pl:nope" }"#;
    fails(
        &rule(r),
        8,
        col(r, "\"pl:nope\"") + 2,
        "unknown prefix list `nope` in `pl:nope`: define [prefix_lists.nope]",
    );
    let r = r#"{ rule = 1, action = "allow", proto = "all", from = ["pl:a", "198.18.0.0/16"] }"#;
    fails(
        &rule(r),
        8,
        col(r, "[\"pl") + 2,
        "exactly one peer, found 2",
    );
}
