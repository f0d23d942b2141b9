use super::*;

fn ok(src: &str) -> Loaded {
    parse(src, "t.toml").unwrap_or_else(|e| panic!("unexpected error: {e}\n---\n{src}"))
}

fn cfg(src: &str) -> Config {
    ok(src).config
}

/// Asserts that `src` fails at `line:col` with a message containing `needle`.
#[track_caller]
fn fails(src: &str, line: usize, col: usize, needle: &str) -> ConfigError {
    let e = match parse(src, "t.toml") {
        Ok(l) => panic!("expected an error containing {needle:?}, got {l:#?}"),
        Err(e) => e,
    };
    assert!(
        e.message.contains(needle),
        "message {:?} does not contain {needle:?}",
        e.message
    );
    assert_eq!(
        (e.line, e.column),
        (line, col),
        "wrong position for error: {e}"
    );
    assert_eq!(e.file, "t.toml");
    assert_eq!(e.to_string(), format!("t.toml:{line}:{col}: {}", e.message));
    e
}

/// A group `g` with one ingress rule written inline as `rule`.
fn one_rule(rule: &str) -> String {
    format!("[groups.g]\ningress = [\n  {rule},\n]\n")
}

/// The single ingress rule of group `g`.
fn rule_of(rule: &str) -> Rule {
    let c = cfg(&one_rule(rule));
    assert_eq!(c.groups["g"].ingress.len(), 1);
    c.groups["g"].ingress[0].clone()
}

/// Error in the one-rule config: the rule starts on line 3, column 3.
#[track_caller]
fn rule_fails(rule: &str, needle: &str, col_in_rule: usize) -> ConfigError {
    fails(&one_rule(rule), 3, 2 + col_in_rule, needle)
}

/// 1-based column of `needle` within `hay`.
fn col(hay: &str, needle: &str) -> usize {
    hay.find(needle).expect("needle in rule") + 1
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Peer {
    Peer::Cidr(net(s))
}

/// The config example of SPEC 2, with every optional section.
pub(crate) const SPEC_EXAMPLE: &str = r#"
[groups.web]
description = "web tier"
ingress = [
  { proto = "tcp", ports = "80", from = ["0.0.0.0/0", "::/0"], description = "http" },
  { proto = "tcp", ports = "22", from = "sg:bastion" },
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/15" },
]
# no `egress` key: the AWS default allow-all egress rule

[groups.bastion]
members = ["198.18.0.10"]
ingress = [{ proto = "tcp", ports = "22", from = "198.19.0.0/16" }]
egress = [{ proto = "tcp", ports = "all", to = "sg:web" }]

[interfaces.eth0]
groups = ["web"]

[conntrack]            # optional; every key has the default of 1.7 / 1.9
tcp_established = "5d" # also: tcp_syn, tcp_fin, tcp_rst, udp_stream, icmp, other
udp = "30s"            # durations: "90s", "2m", "1h", "5d"
max_entries = 262144
revoke_established = false

[events]               # optional
per_second = 1000      # drop events per second per CPU (SPEC 5); counters are never limited
"#;

// ---------------------------------------------------------------------------
// Whole files
// ---------------------------------------------------------------------------

#[test]
fn spec_example_parses() {
    let l = ok(SPEC_EXAMPLE);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!(c.groups.len(), 2);
    let web = &c.groups["web"];
    assert_eq!(web.name, "web");
    assert_eq!(web.description.as_deref(), Some("web tier"));
    assert!(web.members.is_empty());
    assert_eq!(web.ingress.len(), 3);
    let r0 = &web.ingress[0];
    assert_eq!(r0.proto, TCP);
    assert_eq!(r0.ports, PortMatch::Range { from: 80, to: 80 });
    assert_eq!(r0.peers, vec![cidr("0.0.0.0/0"), cidr("::/0")]);
    assert_eq!(r0.description.as_deref(), Some("http"));
    assert_eq!(r0.group, "web");
    assert_eq!(r0.direction, Direction::Ingress);
    assert_eq!(r0.index, 0);
    let r1 = &web.ingress[1];
    assert_eq!(r1.peers, vec![Peer::Group("bastion".into())]);
    assert_eq!(r1.index, 1);
    let r2 = &web.ingress[2];
    assert_eq!(r2.proto, ICMP);
    assert_eq!(
        r2.ports,
        PortMatch::Icmp {
            icmp_type: Some(8),
            icmp_code: None
        }
    );
    // Default egress.
    assert_eq!(web.egress, vec![default_egress_rule("web")]);

    let bastion = &c.groups["bastion"];
    assert_eq!(bastion.members, vec![net("198.18.0.10/32")]);
    assert_eq!(bastion.egress.len(), 1);
    assert_eq!(bastion.egress[0].ports, PortMatch::All);
    assert_eq!(bastion.egress[0].direction, Direction::Egress);
    assert_eq!(bastion.egress[0].peers, vec![Peer::Group("web".into())]);

    assert_eq!(c.interfaces["eth0"].groups, vec!["web".to_string()]);
    assert_eq!(c.conntrack, ConntrackConfig::default());
    assert_eq!(c.events.per_second, 1000);
}

#[test]
fn empty_file_is_an_empty_config() {
    let c = cfg("");
    assert_eq!(c, Config::default());
    assert_eq!(c.conntrack.max_entries, 262_144);
}

#[test]
fn array_of_tables_syntax_works() {
    let c = cfg(r#"
[[groups.g.ingress]]
proto = "tcp"
ports = "443"
from = "anywhere"

[[groups.g.ingress]]
type = "ssh"
from = "10.0.0.0/8"
"#);
    let g = &c.groups["g"];
    assert_eq!(g.ingress.len(), 2);
    assert_eq!(g.ingress[1].index, 1);
    assert_eq!(g.ingress[1].ports, PortMatch::Range { from: 22, to: 22 });
}

#[test]
fn syntax_error_is_located() {
    fails(
        "[groups.g]\ndescription = \"x\nfoo = 1\n",
        2,
        17,
        "TOML syntax error",
    );
    let e = fails(
        "[groups.g]\ningress = [\n  { proto = tcp },\n]\n",
        3,
        13,
        "TOML syntax error",
    );
    assert!(!e.message.contains('\n'), "{e}");
}

#[test]
fn duplicate_toml_key_is_an_error() {
    fails(
        "[groups.g]\ndescription = \"a\"\ndescription = \"b\"\n",
        3,
        1,
        "duplicate key",
    );
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("sg-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sg.toml");
    std::fs::write(&path, SPEC_EXAMPLE).unwrap();
    let l = load(&path).unwrap();
    assert_eq!(l.config.groups.len(), 2);

    std::fs::write(&path, "[groups.g]\nbogus = 1\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.file, path.display().to_string());
    assert_eq!((e.line, e.column), (2, 1));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:1: ", path.display()))
    );

    let missing = dir.join("missing.toml");
    let e = load(&missing).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn columns_count_characters_not_bytes() {
    // "é" is two bytes, but one column: `bogus` is at column 27.
    let src = "[groups]\ng = { description = \"éé\", bogus = 1 }\n";
    fails(src, 2, 27, "unknown key `bogus`");
}

// ---------------------------------------------------------------------------
// Unknown keys and types
// ---------------------------------------------------------------------------

#[test]
fn unknown_top_level_key() {
    let e = fails("[groups.g]\n\n[grups.h]\n", 3, 2, "unknown key `grups`");
    assert!(
        e.message.contains("groups, interfaces, conntrack, events"),
        "{e}"
    );
    fails("nacl = 1\n", 1, 1, "unknown key `nacl` in the top level");
}

#[test]
fn unknown_group_key() {
    fails(
        "[groups.g]\ningres = []\n",
        2,
        1,
        "unknown key `ingres` in group `g`",
    );
}

#[test]
fn unknown_rule_key() {
    let r = r#"{ proto = "tcp", port = "22", from = "10.0.0.0/8" }"#;
    let e = rule_fails(r, "unknown key `port` in a rule", col(r, "port"));
    assert!(e.message.contains("ports"), "{e}");
}

#[test]
fn unknown_interface_conntrack_events_keys() {
    fails(
        "[groups.g]\n[interfaces.eth0]\ngroups = [\"g\"]\nmode = \"native\"\n",
        4,
        1,
        "unknown key `mode` in interface `eth0`",
    );
    fails(
        "[conntrack]\ntcp_estab = \"1s\"\n",
        2,
        1,
        "unknown key `tcp_estab` in `[conntrack]`",
    );
    fails(
        "[events]\nrate = 5\n",
        2,
        1,
        "unknown key `rate` in `[events]`",
    );
}

#[test]
fn wrong_types() {
    fails(
        "groups = 1\n",
        1,
        10,
        "expected a table for `groups`, found an integer",
    );
    fails(
        "[groups]\ng = \"x\"\n",
        2,
        5,
        "expected a table for group `g`, found a string",
    );
    fails(
        "[groups.g]\ningress = { a = 1 }\n",
        2,
        11,
        "expected an array for `ingress`",
    );
    fails(
        "[groups.g]\ningress = [1]\n",
        2,
        12,
        "expected a table for ingress rule 0 of group `g`",
    );
    fails("[groups.g]\ndescription = 5\n", 2, 15, "expected a string");
    fails(
        "[groups.g]\nmembers = 5\n",
        2,
        11,
        "expected a string or an array of strings",
    );
    fails(
        "[groups.g]\nmembers = [5]\n",
        2,
        12,
        "expected a string for `members`",
    );
    let r = r#"{ proto = "tcp", ports = 2.5, from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "expected a string or an integer for `ports`, found a float",
        col(r, "2.5"),
    );
    let r = r#"{ proto = true, ports = "1", from = "10.0.0.0/8" }"#;
    rule_fails(
        r,
        "expected a string or an integer for `proto`, found a boolean",
        col(r, "true"),
    );
    let r = r#"{ proto = "tcp", ports = "1", from = 1979-05-27 }"#;
    rule_fails(r, "found a datetime", col(r, "1979"));
    let r = r#"{ type = 22, from = "10.0.0.0/8" }"#;
    rule_fails(r, "expected a string for `type`", col(r, "22"));
    let r = r#"{ type = "ssh", from = "10.0.0.0/8", name = 1 }"#;
    rule_fails(r, "expected a string for `name`", col(r, "1 }"));
}

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

// ---------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------

#[test]
fn default_egress_and_empty_lists() {
    let c = cfg("[groups.a]\n[groups.b]\negress = []\n[groups.c]\ningress = []\n");
    let a = &c.groups["a"];
    assert!(a.ingress.is_empty());
    assert_eq!(a.egress.len(), 1);
    let d = &a.egress[0];
    assert_eq!(d.proto, Proto::All);
    assert_eq!(d.ports, PortMatch::All);
    assert_eq!(d.peers, vec![cidr("0.0.0.0/0"), cidr("::/0")]);
    assert_eq!(d.direction, Direction::Egress);
    assert_eq!(d.group, "a");
    assert_eq!(d.index, 0);
    assert!(c.groups["b"].egress.is_empty());
    assert!(c.groups["b"].ingress.is_empty());
    assert_eq!(c.groups["c"].egress.len(), 1);

    // The default rule and the same rule written out have the same ID.
    let w = cfg("[groups.a]\negress = [{ proto = \"all\", to = \"anywhere\" }]\n");
    assert_eq!(w.groups["a"].egress[0].id, d.id);
}

#[test]
fn conntrack_and_events_defaults() {
    let c = ConntrackConfig::default();
    assert_eq!(c.tcp_established, Duration::from_secs(432_000));
    assert_eq!(c.tcp_syn, Duration::from_secs(120));
    assert_eq!(c.tcp_fin, Duration::from_secs(120));
    assert_eq!(c.tcp_rst, Duration::from_secs(10));
    assert_eq!(c.udp, Duration::from_secs(30));
    assert_eq!(c.udp_stream, Duration::from_secs(180));
    assert_eq!(c.icmp, Duration::from_secs(30));
    assert_eq!(c.other, Duration::from_secs(600));
    assert_eq!(c.max_entries, 262_144);
    assert!(!c.revoke_established);
    let t = c.timeouts_ns();
    const S: u64 = 1_000_000_000;
    assert_eq!(t[sg_common::TO_TCP_ESTABLISHED], 432_000 * S);
    assert_eq!(t[sg_common::TO_TCP_SYN], 120 * S);
    assert_eq!(t[sg_common::TO_TCP_FIN], 120 * S);
    assert_eq!(t[sg_common::TO_TCP_RST], 10 * S);
    assert_eq!(t[sg_common::TO_UDP], 30 * S);
    assert_eq!(t[sg_common::TO_UDP_STREAM], 180 * S);
    assert_eq!(t[sg_common::TO_ICMP], 30 * S);
    assert_eq!(t[sg_common::TO_OTHER], 600 * S);
    assert_eq!(EventsConfig::default().per_second, 1000);
}

// ---------------------------------------------------------------------------
// Interfaces
// ---------------------------------------------------------------------------

#[test]
fn interfaces() {
    let l = ok(
        "[groups.a]\n[groups.b]\n[interfaces.veth-sg0]\ngroups = [\"b\", \"a\", \"b\"]\n[interfaces.\"eth0.100\"]\ngroups = \"a\"\n",
    );
    assert_eq!(l.config.interfaces["veth-sg0"].groups, vec!["b", "a"]);
    assert_eq!(l.config.interfaces["eth0.100"].groups, vec!["a"]);
    assert_eq!(l.warnings, vec!["t.toml:4:21: group `b` is listed twice"]);
}

#[test]
fn bad_interfaces() {
    fails(
        "[groups.a]\n[interfaces.eth0]\ngroups = [\"a\", \"zz\"]\n",
        3,
        16,
        "unknown group `zz`",
    );
    fails(
        "[groups.a]\n[interfaces.eth0]\ngroups = []\n",
        3,
        10,
        "needs at least one group",
    );
    fails(
        "[groups.a]\n[interfaces.eth0]\n",
        2,
        1,
        "interface `eth0` needs `groups",
    );
    fails(
        "[groups.a]\n[interfaces.abcdefghijklmnop]\ngroups = [\"a\"]\n",
        2,
        13,
        "longer than 15 bytes",
    );
    fails(
        "[groups.a]\n[interfaces.\"a/b\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "character '/'",
    );
    fails(
        "[groups.a]\n[interfaces.\"a b\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "character ' '",
    );
    fails(
        "[groups.a]\n[interfaces.\"..\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "not a valid interface name",
    );
    fails(
        "[groups.a]\n[interfaces.\"\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "empty interface name",
    );
    // 15 bytes is the limit and fine.
    cfg("[groups.a]\n[interfaces.abcdefghijklmno]\ngroups = [\"a\"]\n");
}

// ---------------------------------------------------------------------------
// Conntrack and events
// ---------------------------------------------------------------------------

#[test]
fn conntrack_settings() {
    let c = cfg(r#"
[conntrack]
tcp_established = "1h"
tcp_syn = "90s"
tcp_fin = "2m"
tcp_rst = "500ms"
udp = "45s"
udp_stream = "1h30m"
icmp = "5s"
other = "5d"
max_entries = 1000
revoke_established = true
"#)
    .conntrack;
    assert_eq!(c.tcp_established, Duration::from_secs(3600));
    assert_eq!(c.tcp_syn, Duration::from_secs(90));
    assert_eq!(c.tcp_fin, Duration::from_secs(120));
    assert_eq!(c.tcp_rst, Duration::from_millis(500));
    assert_eq!(c.udp, Duration::from_secs(45));
    assert_eq!(c.udp_stream, Duration::from_secs(5400));
    assert_eq!(c.icmp, Duration::from_secs(5));
    assert_eq!(c.other, Duration::from_secs(5 * 86400));
    assert_eq!(c.max_entries, 1000);
    assert!(c.revoke_established);
    assert_eq!(c.timeouts_ns()[sg_common::TO_TCP_RST], 500_000_000);
}

#[test]
fn bad_conntrack_settings() {
    fails(
        "[conntrack]\nudp = \"0s\"\n",
        2,
        7,
        "must be greater than zero",
    );
    fails("[conntrack]\nudp = \"30\"\n", 2, 7, "invalid duration `30`");
    fails("[conntrack]\nudp = \"30 s\"\n", 2, 7, "invalid duration");
    fails("[conntrack]\nudp = \"1w\"\n", 2, 7, "invalid duration `1w`");
    fails("[conntrack]\nudp = \"\"\n", 2, 7, "invalid duration");
    fails(
        "[conntrack]\nudp = 30\n",
        2,
        7,
        "expected a duration string such as \"90s\" for `udp`",
    );
    fails(
        "[conntrack]\nother = \"99999999999999999999d\"\n",
        2,
        9,
        "too long",
    );
    fails(
        "[conntrack]\nmax_entries = 0\n",
        2,
        15,
        "max_entries 0 is out of range 1-4294967295",
    );
    fails(
        "[conntrack]\nmax_entries = 4294967296\n",
        2,
        15,
        "out of range",
    );
    fails(
        "[conntrack]\nmax_entries = \"10\"\n",
        2,
        15,
        "expected an integer for max_entries",
    );
    fails(
        "[conntrack]\nrevoke_established = \"yes\"\n",
        2,
        22,
        "expected a boolean",
    );
    fails("conntrack = 1\n", 1, 13, "expected a table for `conntrack`");
}

#[test]
fn events_settings() {
    assert_eq!(cfg("[events]\nper_second = 50\n").events.per_second, 50);
    assert_eq!(cfg("[events]\nper_second = 0\n").events.per_second, 0);
    fails(
        "[events]\nper_second = -5\n",
        2,
        14,
        "per_second -5 is out of range",
    );
    fails(
        "[events]\nper_second = 1.5\n",
        2,
        14,
        "expected an integer for per_second",
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(432_000)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    for bad in ["", "s", "10", "1x", "-1s", "1.5s", "0ms", "ms5"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

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
