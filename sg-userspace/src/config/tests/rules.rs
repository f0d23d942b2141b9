//! Protocols, ports, presets, names and descriptions of rules.

use super::*;

// ---------------------------------------------------------------------------
// Protocols and ports
// ---------------------------------------------------------------------------

#[test]
fn proto_names_and_numbers() {
    for (text, proto) in [
        (r#""tcp""#, TCP),
        (r#""udp""#, UDP),
        ("6", TCP),
        (r#""6""#, TCP),
        ("17", UDP),
        (r#""17""#, UDP),
    ] {
        let r = rule_of(&format!(
            r#"{{ proto = {text}, ports = "53", from = "10.0.0.0/8" }}"#
        ));
        assert_eq!(r.proto, proto, "{text}");
        assert_eq!(r.ports, PortMatch::Range { from: 53, to: 53 });
    }
    for (text, proto) in [
        (r#""icmp""#, ICMP),
        ("1", ICMP),
        (r#""icmpv6""#, ICMPV6),
        ("58", ICMPV6),
        (r#""58""#, ICMPV6),
    ] {
        let r = rule_of(&format!(
            r#"{{ proto = {text}, icmp_type = 3, from = "::/0" }}"#
        ));
        assert_eq!(r.proto, proto, "{text}");
    }
    for (text, proto) in [
        (r#""all""#, Proto::All),
        ("47", Proto::Number(47)),
        (r#""47""#, Proto::Number(47)),
        ("0", Proto::Number(0)),
        ("255", Proto::Number(255)),
        ("0x2f", Proto::Number(47)),
    ] {
        let r = rule_of(&format!(r#"{{ proto = {text}, from = "10.0.0.0/8" }}"#));
        assert_eq!(r.proto, proto, "{text}");
        assert_eq!(r.ports, PortMatch::All);
    }
}

#[test]
fn named_and_numbered_protocols_are_the_same_rule() {
    let a = rule_of(r#"{ proto = "tcp", ports = "22", from = "10.0.0.0/8" }"#);
    let b = rule_of(r#"{ proto = 6, ports = 22, from = "10.0.0.0/8" }"#);
    let c = rule_of(r#"{ type = "ssh", from = "10.0.0.0/8" }"#);
    assert_eq!(a.id, b.id);
    assert_eq!(a.id, c.id);
}

#[test]
fn bad_protocols() {
    let r = r#"{ proto = 256, from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "protocol number 256 is out of range 0-255",
        col(r, "256"),
    );
    let r = r#"{ proto = -1, from = "10.0.0.0/8" }"#;
    rule_fails(r, "protocol number -1 is out of range 0-255", col(r, "-1"));
    let r = r#"{ proto = "300", from = "10.0.0.0/8" }"#;
    rule_fails(r, "protocol number 300 is out of range", col(r, "\"300"));
    let r = r#"{ proto = "sctp", from = "10.0.0.0/8" }"#;
    rule_fails(r, "unknown proto `sctp`", col(r, "\"sctp"));
    let r = r#"{ proto = "TCP", ports = "1", from = "10.0.0.0/8" }"#;
    rule_fails(r, "unknown proto `TCP`", col(r, "\"TCP"));
    let r = r#"{ from = "10.0.0.0/8" }"#;
    rule_fails(r, "rule needs `proto`", 1);
}

#[test]
fn port_forms() {
    for (text, want) in [
        (r#""22""#, PortMatch::Range { from: 22, to: 22 }),
        ("22", PortMatch::Range { from: 22, to: 22 }),
        (
            r#""1024-65535""#,
            PortMatch::Range {
                from: 1024,
                to: 65535,
            },
        ),
        (r#""0""#, PortMatch::Range { from: 0, to: 0 }),
        (
            r#""65535""#,
            PortMatch::Range {
                from: 65535,
                to: 65535,
            },
        ),
        (r#""7-7""#, PortMatch::Range { from: 7, to: 7 }),
        (r#""all""#, PortMatch::All),
        (r#""0-65535""#, PortMatch::All),
    ] {
        let r = rule_of(&format!(
            r#"{{ proto = "udp", ports = {text}, from = "10.0.0.0/8" }}"#
        ));
        assert_eq!(r.ports, want, "{text}");
    }
    let a = rule_of(r#"{ proto = "udp", ports = "all", from = "10.0.0.0/8" }"#);
    let b = rule_of(r#"{ proto = "udp", ports = "0-65535", from = "10.0.0.0/8" }"#);
    assert_eq!(a.id, b.id);
}

#[test]
fn bad_ports() {
    let r = r#"{ proto = "tcp", ports = "65536", from = "10.0.0.0/8" }"#;
    rule_fails(r, "port 65536 is out of range 0-65535", col(r, "\"65536"));
    let r = r#"{ proto = "tcp", ports = 70000, from = "10.0.0.0/8" }"#;
    rule_fails(r, "port 70000 is out of range 0-65535", col(r, "70000"));
    let r = r#"{ proto = "tcp", ports = -1, from = "10.0.0.0/8" }"#;
    rule_fails(r, "port -1 is out of range 0-65535", col(r, "-1"));
    let r = r#"{ proto = "tcp", ports = "1024-70000", from = "10.0.0.0/8" }"#;
    rule_fails(r, "port 70000 is out of range", col(r, "\"1024"));
    let r = r#"{ proto = "tcp", ports = "100-20", from = "10.0.0.0/8" }"#;
    rule_fails(r, "reversed port range 100-20", col(r, "\"100"));
    let r = r#"{ proto = "tcp", ports = "http", from = "10.0.0.0/8" }"#;
    rule_fails(r, "invalid port `http`", col(r, "\"http"));
    let r = r#"{ proto = "tcp", ports = "1-2-3", from = "10.0.0.0/8" }"#;
    rule_fails(r, "invalid port `2-3`", col(r, "\"1-2"));
    let r = r#"{ proto = "tcp", ports = "", from = "10.0.0.0/8" }"#;
    rule_fails(r, "invalid port ``", col(r, "\"\""));
    let r = r#"{ proto = "tcp", from = "10.0.0.0/8" }"#;
    rule_fails(r, "proto tcp needs `ports`", 1);
    let r = r#"{ proto = 17, from = "10.0.0.0/8" }"#;
    rule_fails(r, "proto udp needs `ports`", 1);
}

#[test]
fn ports_on_a_protocol_without_ports() {
    let r = r#"{ proto = "all", ports = "22", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "`ports` on proto all, which has no ports",
        col(r, "\"22"),
    );
    let r = r#"{ proto = 47, ports = "all", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "`ports` on proto 47, which has no ports",
        col(r, "\"all"),
    );
    let r = r#"{ proto = "icmp", ports = "8", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "`ports` on proto icmp, which has no ports; use `icmp_type`",
        col(r, "\"8"),
    );
    let r = r#"{ proto = "icmpv6", ports = "all", from = "::/0" }"#;
    rule_fails(r, "`ports` on proto icmpv6", col(r, "\"all"));
}

#[test]
fn icmp_type_and_code() {
    let r = rule_of(r#"{ proto = "icmp", from = "10.0.0.0/8" }"#);
    assert_eq!(r.ports, ICMP_ALL);
    let r = rule_of(r#"{ proto = "icmp", icmp_type = 3, from = "10.0.0.0/8" }"#);
    assert_eq!(
        r.ports,
        PortMatch::Icmp {
            icmp_type: Some(3),
            icmp_code: None
        }
    );
    let r = rule_of(r#"{ proto = "icmpv6", icmp_type = 128, icmp_code = 0, from = "::/0" }"#);
    assert_eq!(
        r.ports,
        PortMatch::Icmp {
            icmp_type: Some(128),
            icmp_code: Some(0)
        }
    );
    let r = rule_of(r#"{ proto = "icmp", icmp_type = 255, icmp_code = 255, from = "10.0.0.0/8" }"#);
    assert_eq!(
        r.ports,
        PortMatch::Icmp {
            icmp_type: Some(255),
            icmp_code: Some(255)
        }
    );
}

#[test]
fn bad_icmp_fields() {
    let r = r#"{ proto = "icmp", icmp_code = 0, from = "10.0.0.0/8" }"#;
    rule_fails(r, "`icmp_code` needs `icmp_type`", col(r, "0,"));
    let r = r#"{ proto = "icmp", icmp_type = 256, from = "10.0.0.0/8" }"#;
    rule_fails(r, "icmp_type 256 is out of range 0-255", col(r, "256"));
    let r = r#"{ proto = "icmp", icmp_type = 3, icmp_code = 300, from = "10.0.0.0/8" }"#;
    rule_fails(r, "icmp_code 300 is out of range 0-255", col(r, "300"));
    let r = r#"{ proto = "icmp", icmp_type = "8", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "expected an integer for icmp_type, found a string",
        col(r, "\"8"),
    );
    let r = r#"{ proto = "tcp", ports = "22", icmp_type = 8, from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "`icmp_type` is only valid for proto icmp or icmpv6, not tcp",
        col(r, "8,"),
    );
    let r = r#"{ proto = "all", icmp_code = 8, from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "`icmp_code` is only valid for proto icmp or icmpv6, not all",
        col(r, "8,"),
    );
    let r = r#"{ type = "ssh", icmp_type = 8, from = "10.0.0.0/8" }"#;
    rule_fails(r, "`icmp_type` is only valid", col(r, "8,"));
}

// ---------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------

#[test]
fn every_preset() {
    let want: &[(&str, Proto, PortMatch)] = &[
        ("ssh", TCP, port(22)),
        ("rdp", TCP, port(3389)),
        ("http", TCP, port(80)),
        ("https", TCP, port(443)),
        ("smtp", TCP, port(25)),
        ("smtps", TCP, port(465)),
        ("dns-udp", UDP, port(53)),
        ("dns-tcp", TCP, port(53)),
        ("mysql", TCP, port(3306)),
        ("postgresql", TCP, port(5432)),
        ("mssql", TCP, port(1433)),
        ("oracle", TCP, port(1521)),
        ("redis", TCP, port(6379)),
        ("nfs", TCP, port(2049)),
        ("ldap", TCP, port(389)),
        ("imap", TCP, port(143)),
        ("imaps", TCP, port(993)),
        ("pop3", TCP, port(110)),
        ("pop3s", TCP, port(995)),
        ("all-tcp", TCP, PortMatch::All),
        ("all-udp", UDP, PortMatch::All),
        ("all-icmp", ICMP, ICMP_ALL),
        ("all-icmpv6", ICMPV6, ICMP_ALL),
        ("all-traffic", Proto::All, PortMatch::All),
    ];
    assert_eq!(want.len(), PRESETS.len());
    for &(name, proto, ports) in want {
        let r = rule_of(&format!(r#"{{ type = "{name}", from = "anywhere" }}"#));
        assert_eq!((r.proto, r.ports), (proto, ports), "{name}");
        // The same rule written out has the same ID.
        let explicit = match (proto, ports) {
            (Proto::All, _) => r#"proto = "all""#.to_string(),
            (p, PortMatch::Icmp { .. }) => format!(r#"proto = "{p}""#),
            (p, m) => format!(r#"proto = "{p}", ports = "{m}""#),
        };
        let e = rule_of(&format!(r#"{{ {explicit}, from = "anywhere" }}"#));
        assert_eq!(e.id, r.id, "{name}");
        // And an agreeing explicit proto/ports next to the type is fine.
        let both = rule_of(&format!(
            r#"{{ type = "{name}", {explicit}, from = "anywhere" }}"#
        ));
        assert_eq!(both.id, r.id, "{name}");
    }
}

#[test]
fn contradicting_presets() {
    let r = r#"{ type = "ssh", proto = "udp", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "proto udp contradicts type `ssh`, which means proto tcp",
        col(r, "\"udp"),
    );
    let r = r#"{ type = "ssh", ports = "23", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "23 contradicts type `ssh`, which means 22",
        col(r, "\"23"),
    );
    let r = r#"{ type = "all-tcp", ports = "22", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "22 contradicts type `all-tcp`, which means all",
        col(r, "\"22"),
    );
    let r = r#"{ type = "all-icmp", icmp_type = 8, from = "10.0.0.0/8" }"#;
    rule_fails(r, "contradicts type `all-icmp`", col(r, "8,"));
    let r = r#"{ type = "all-traffic", ports = "22", from = "10.0.0.0/8" }"#;
    rule_fails(r, "`ports` on proto all", col(r, "\"22"));
    let r = r#"{ type = "all-traffic", proto = "tcp", ports = "all", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "proto tcp contradicts type `all-traffic`",
        col(r, "\"tcp"),
    );
    let r = r#"{ type = "dns-udp", proto = 6, ports = "53", from = "10.0.0.0/8" }"#;
    rule_fails(r, "proto tcp contradicts type `dns-udp`", col(r, "6,"));
}

#[test]
fn unknown_preset_lists_the_valid_ones() {
    let r = r#"{ type = "telnet", from = "10.0.0.0/8" }"#;
    let e = rule_fails(
        r,
        "unknown type `telnet`; valid types: ssh, rdp,",
        col(r, "\"telnet"),
    );
    assert!(e.message.ends_with("all-icmpv6, all-traffic"), "{e}");
}

// ---------------------------------------------------------------------------
// Names and descriptions
// ---------------------------------------------------------------------------

#[test]
fn name_and_description_lengths() {
    let long = "x".repeat(255);
    let r = rule_of(&format!(
        r#"{{ type = "ssh", from = "10.0.0.0/8", name = "{long}", description = "{long}" }}"#
    ));
    assert_eq!(r.name.as_deref(), Some(long.as_str()));
    assert_eq!(r.description.as_deref(), Some(long.as_str()));
    // 255 multi-byte characters are fine too.
    let wide = "é".repeat(255);
    let r = rule_of(&format!(
        r#"{{ type = "ssh", from = "10.0.0.0/8", name = "{wide}" }}"#
    ));
    assert_eq!(r.name.as_deref(), Some(wide.as_str()));

    let too_long = "x".repeat(256);
    let r = format!(r#"{{ type = "ssh", from = "10.0.0.0/8", name = "{too_long}" }}"#);
    rule_fails(
        &r,
        "`name` is 256 characters long; at most 255",
        col(&r, "\"xxx"),
    );
    let r = format!(r#"{{ type = "ssh", from = "10.0.0.0/8", description = "{too_long}" }}"#);
    rule_fails(&r, "`description` is 256 characters long", col(&r, "\"xxx"));
    let src = format!("[groups.g]\ndescription = \"{too_long}\"\n");
    fails(
        &src,
        2,
        15,
        "the group's `description` is 256 characters long",
    );
}

#[test]
fn group_names_are_validated() {
    fails("[groups.\"a b\"]\n", 1, 9, "invalid group name `a b`");
    fails("[groups.\"a,b\"]\n", 1, 9, "character ','");
    fails("[groups.\"\"]\n", 1, 9, "empty group name");
    let c = cfg("[groups.\"web-1_x.y\"]\n");
    assert!(c.groups.contains_key("web-1_x.y"));
}
