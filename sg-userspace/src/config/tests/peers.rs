//! Peers and members.

use super::*;

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

#[test]
fn peer_forms() {
    let r = rule_of(r#"{ type = "ssh", from = "10.0.0.0/8" }"#);
    assert_eq!(r.peers, vec![cidr("10.0.0.0/8")]);
    let r = rule_of(r#"{ type = "ssh", from = ["10.0.0.1", "2001:db8::1"] }"#);
    assert_eq!(r.peers, vec![cidr("10.0.0.1/32"), cidr("2001:db8::1/128")]);
    let r = rule_of(r#"{ type = "ssh", from = "anywhere" }"#);
    assert_eq!(r.peers, vec![cidr("0.0.0.0/0"), cidr("::/0")]);
    let r = rule_of(r#"{ type = "ssh", from = "anywhere-ipv4" }"#);
    assert_eq!(r.peers, vec![cidr("0.0.0.0/0")]);
    let r = rule_of(r#"{ type = "ssh", from = "anywhere-ipv6" }"#);
    assert_eq!(r.peers, vec![cidr("::/0")]);
    let r = rule_of(r#"{ type = "ssh", from = ["sg:g", "2001:db8::/32", "198.18.0.0/15"] }"#);
    assert_eq!(
        r.peers,
        vec![
            cidr("198.18.0.0/15"),
            cidr("2001:db8::/32"),
            Peer::Group("g".into())
        ]
    );
}

#[test]
fn peers_are_sorted_and_deduplicated() {
    let r =
        rule_of(r#"{ type = "ssh", from = ["::/0", "anywhere", "0.0.0.0/0", "anywhere-ipv4"] }"#);
    assert_eq!(r.peers, vec![cidr("0.0.0.0/0"), cidr("::/0")]);
}

#[test]
fn non_canonical_cidrs_are_normalized_with_a_warning() {
    let src = one_rule(r#"{ type = "ssh", from = ["10.1.2.3/8", "2001:db8::1/32"] }"#);
    let l = ok(&src);
    let r = &l.config.groups["g"].ingress[0];
    assert_eq!(r.peers, vec![cidr("10.0.0.0/8"), cidr("2001:db8::/32")]);
    assert_eq!(
        l.warnings,
        vec![
            "t.toml:3:27: normalized 10.1.2.3/8 to 10.0.0.0/8".to_string(),
            "t.toml:3:41: normalized 2001:db8::1/32 to 2001:db8::/32".to_string(),
        ]
    );
    // The normalized rule is the same rule as the canonical one.
    let canon = rule_of(r#"{ type = "ssh", from = ["10.0.0.0/8", "2001:db8::/32"] }"#);
    assert_eq!(r.id, canon.id);
}

#[test]
fn members_are_normalized_and_deduplicated() {
    let l = ok(
        "[groups.g]\nmembers = [\"10.0.0.9/24\", \"10.0.0.0/24\", \"2001:db8::5\", \"198.18.0.1\"]\n",
    );
    assert_eq!(
        l.config.groups["g"].members,
        vec![
            net("10.0.0.0/24"),
            net("198.18.0.1/32"),
            net("2001:db8::5/128")
        ]
    );
    assert_eq!(
        l.warnings,
        vec!["t.toml:2:12: normalized 10.0.0.9/24 to 10.0.0.0/24"]
    );
    let l = ok("[groups.g]\nmembers = \"10.0.0.1\"\n");
    assert_eq!(l.config.groups["g"].members, vec![net("10.0.0.1/32")]);
}

#[test]
fn bad_members() {
    fails(
        "[groups.g]\nmembers = [\"10.0.0.0/33\"]\n",
        2,
        12,
        "invalid CIDR `10.0.0.0/33`",
    );
    fails(
        "[groups.g]\nmembers = [\"sg:g\"]\n",
        2,
        12,
        "invalid address `sg:g`",
    );
    fails(
        "[groups.g]\nmembers = [\"anywhere\"]\n",
        2,
        12,
        "expected a CIDR or an address",
    );
}

#[test]
fn bad_peers() {
    let r = r#"{ type = "ssh", from = ["10.0.0.0/8", "10.0.0.300"] }"#;
    rule_fails(r, "invalid peer `10.0.0.300`", col(r, "\"10.0.0.300"));
    let r = r#"{ type = "ssh", from = "10.0.0.0/33" }"#;
    rule_fails(r, "invalid peer `10.0.0.0/33`", col(r, "\"10.0"));
    let r = r#"{ type = "ssh", from = "2001:db8::/129" }"#;
    rule_fails(r, "invalid peer", col(r, "\"2001"));
    let r = r#"{ type = "ssh", from = "everywhere" }"#;
    rule_fails(r, "invalid peer `everywhere`", col(r, "\"every"));
    let r = r#"{ type = "ssh", from = "sg:" }"#;
    rule_fails(r, "empty group name", col(r, "\"sg:"));
}

#[test]
fn unknown_sg_reference_is_an_error() {
    let r = r#"{ type = "ssh", from = ["10.0.0.0/8", "sg:nope"] }"#;
    rule_fails(r, "unknown group `nope`", col(r, "\"sg:nope"));
}

#[test]
fn self_and_forward_references_are_fine() {
    let c = cfg(r#"
[groups.a]
ingress = [{ proto = "all", from = ["sg:a", "sg:b"] }]
[groups.b]
ingress = [{ proto = "all", from = "sg:a" }]
"#);
    assert_eq!(
        c.groups["a"].ingress[0].peers,
        vec![Peer::Group("a".into()), Peer::Group("b".into())]
    );
}

#[test]
fn ingress_needs_from_and_egress_needs_to() {
    let r = r#"{ type = "ssh" }"#;
    rule_fails(r, "ingress rule has no peer: add `from`", 1);
    let r = r#"{ type = "ssh", to = "10.0.0.0/8" }"#;
    rule_fails(r, "ingress rules use `from`, not `to`", col(r, "to ="));
    let r = r#"{ type = "ssh", from = "10.0.0.0/8", to = "10.0.0.0/8" }"#;
    rule_fails(r, "ingress rules use `from`, not `to`", col(r, "to ="));
    let r = r#"{ type = "ssh", from = [] }"#;
    rule_fails(r, "`from` is empty", col(r, "[]"));

    let src = "[groups.g]\negress = [\n  { type = \"ssh\", from = \"10.0.0.0/8\" },\n]\n";
    fails(src, 3, 19, "egress rules use `to`, not `from`");
    let src = "[groups.g]\negress = [\n  { type = \"ssh\" },\n]\n";
    fails(src, 3, 3, "egress rule has no peer: add `to`");
}
