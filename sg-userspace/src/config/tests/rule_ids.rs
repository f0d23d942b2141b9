//! Rule IDs, duplicates, display forms and the runtime config.

use super::*;

// ---------------------------------------------------------------------------
// Rule IDs
// ---------------------------------------------------------------------------

fn is_rule_id(id: &str) -> bool {
    id.len() == 4 + RULE_ID_HEX_DIGITS
        && id.starts_with("sgr-")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn rule_id_format() {
    let c = cfg(SPEC_EXAMPLE);
    for r in c.all_rules() {
        assert!(is_rule_id(&r.id), "{}", r.id);
    }
    let ids: BTreeSet<&str> = c.all_rules().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), c.all_rules().count(), "IDs are distinct");
    assert_eq!(
        c.rule_by_id(&c.groups["web"].ingress[1].id).unwrap().index,
        1
    );
    assert_eq!(c.rule_index().len(), ids.len());
}

#[test]
fn rule_ids_survive_reordering_and_text_edits() {
    let a = cfg(r#"
[groups.g]
ingress = [
  { type = "ssh", from = ["10.0.0.0/8", "sg:g"], description = "one" },
  { proto = "udp", ports = "53", from = "anywhere", name = "dns" },
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/15" },
]
"#);
    let b = cfg(r#"
# A comment moves everything down a line.
[groups.g]
ingress = [
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/15", description = "ping" },
  { proto = "udp", ports = "53", from = ["::/0", "0.0.0.0/0"], name = "renamed" },
  { proto = "tcp", ports = 22, from = ["sg:g", "10.9.9.9/8"], description = "two" },
]
"#);
    let ga = &a.groups["g"].ingress;
    let gb = &b.groups["g"].ingress;
    assert_eq!(ga[0].id, gb[2].id);
    assert_eq!(ga[1].id, gb[1].id);
    assert_eq!(ga[2].id, gb[0].id);
    assert_eq!(gb[2].index, 2);
}

#[test]
fn rule_ids_depend_on_content_group_and_direction() {
    let base = rule_of(r#"{ type = "ssh", from = "10.0.0.0/8" }"#);
    for other in [
        r#"{ type = "rdp", from = "10.0.0.0/8" }"#,
        r#"{ proto = "tcp", ports = "22-23", from = "10.0.0.0/8" }"#,
        r#"{ proto = "udp", ports = "22", from = "10.0.0.0/8" }"#,
        r#"{ type = "ssh", from = "10.0.0.0/9" }"#,
        r#"{ type = "ssh", from = ["10.0.0.0/8", "sg:g"] }"#,
        r#"{ type = "ssh", from = "11.0.0.0/8" }"#,
    ] {
        assert_ne!(rule_of(other).id, base.id, "{other}");
    }
    let in_h = cfg("[groups.h]\ningress = [{ type = \"ssh\", from = \"10.0.0.0/8\" }]\n");
    assert_ne!(in_h.groups["h"].ingress[0].id, base.id);
    let egress = cfg("[groups.g]\negress = [{ type = \"ssh\", to = \"10.0.0.0/8\" }]\n");
    assert_ne!(egress.groups["g"].egress[0].id, base.id);
    // ICMP type vs type+code vs all.
    let i1 = rule_of(r#"{ proto = "icmp", icmp_type = 8, from = "10.0.0.0/8" }"#);
    let i2 = rule_of(r#"{ proto = "icmp", icmp_type = 8, icmp_code = 0, from = "10.0.0.0/8" }"#);
    let i3 = rule_of(r#"{ proto = "icmp", from = "10.0.0.0/8" }"#);
    let i4 = rule_of(r#"{ proto = "icmpv6", icmp_type = 8, from = "10.0.0.0/8" }"#);
    let ids: BTreeSet<String> = [i1.id, i2.id, i3.id, i4.id].into_iter().collect();
    assert_eq!(ids.len(), 4);
}

#[test]
fn rule_id_is_a_known_value() {
    // Pins the encoding: changing it changes every rule ID in the field.
    let id = rule_id(
        "web",
        Direction::Ingress,
        TCP,
        &PortMatch::Range { from: 22, to: 22 },
        &[cidr("10.0.0.0/8")],
    );
    assert!(is_rule_id(&id));
    // SHA-256 of the length-prefixed fields, computed apart from sg.
    assert_eq!(id, "sgr-1cf0abfbe334c7bbf");
    assert_eq!(
        id,
        rule_id(
            "web",
            Direction::Ingress,
            TCP,
            &PortMatch::Range { from: 22, to: 22 },
            &[cidr("10.0.0.0/8"), cidr("10.0.0.0/8")],
        )
    );
    let again = rule_id(
        "web",
        Direction::Ingress,
        Proto::Number(6),
        &PortMatch::Range { from: 22, to: 22 },
        &[cidr("10.0.0.0/8")],
    );
    assert_eq!(id, again);
}

#[test]
fn duplicate_rules_are_an_error() {
    let src = r#"[groups.g]
ingress = [
  { type = "ssh", from = "10.0.0.0/8" },
  { proto = "udp", ports = "53", from = "10.0.0.0/8" },
  { proto = "tcp", ports = "22", from = "10.0.0.0/8", description = "same thing" },
]
"#;
    let e = fails(src, 5, 3, "duplicate rule sgr-");
    assert!(
        e.message
            .contains("same as rule 0 of ingress in group `g` (at 3:3)"),
        "{e}"
    );
    // The same rule in two groups, or in both directions, is fine.
    cfg(r#"
[groups.a]
ingress = [{ type = "ssh", from = "10.0.0.0/8" }]
[groups.b]
ingress = [{ type = "ssh", from = "10.0.0.0/8" }]
"#);
}

#[test]
fn display_forms() {
    assert_eq!(TCP.to_string(), "tcp");
    assert_eq!(UDP.to_string(), "udp");
    assert_eq!(ICMP.to_string(), "icmp");
    assert_eq!(ICMPV6.to_string(), "icmpv6");
    assert_eq!(Proto::All.to_string(), "all");
    assert_eq!(Proto::Number(47).to_string(), "47");
    assert_eq!(PortMatch::All.to_string(), "all");
    assert_eq!(port(22).to_string(), "22");
    assert_eq!(PortMatch::Range { from: 1, to: 9 }.to_string(), "1-9");
    assert_eq!(Peer::Group("web".into()).to_string(), "sg:web");
    assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(Direction::Ingress.as_str(), "ingress");
    assert_eq!(Direction::Egress.as_str(), "egress");
    assert_eq!(Direction::Ingress.code(), sg_common::DIR_INGRESS);
    assert_eq!(Direction::Egress.code(), sg_common::DIR_EGRESS);
}

#[test]
fn large_group_parses_quickly_enough() {
    // Duplicate detection must not be quadratic.
    let mut src = String::from("[groups.g]\ningress = [\n");
    for i in 0..20_000u32 {
        src.push_str(&format!(
            "  {{ proto = \"tcp\", ports = \"{}\", from = \"10.{}.{}.0/24\" }},\n",
            i % 1000,
            i / 256,
            i % 256
        ));
    }
    src.push_str("]\n");
    let c = cfg(&src);
    assert_eq!(c.groups["g"].ingress.len(), 20_000);
}

#[test]
fn runtime_config() {
    let c =
        cfg("[conntrack]\nudp = \"45s\"\nrevoke_established = true\n[events]\nper_second = 7\n");
    let rc = c.runtime_config();
    assert_eq!(rc.timeouts_ns, c.conntrack.timeouts_ns());
    assert_eq!(rc.timeouts_ns[sg_common::TO_UDP], 45_000_000_000);
    assert_eq!(rc.events_per_sec, 7);
    assert_eq!(rc.flags, sg_common::CFG_F_REVOKE_ESTABLISHED);
    assert_eq!(Config::default().runtime_config().flags, 0);
    assert_eq!(Config::default().runtime_config().events_per_sec, 1000);
}
