//! Whole files, unknown keys and wrong types.

use super::*;

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
        "[groups.g]\n[interfaces.eth0]\ngroups = [\"g\"]\nxdp_mode = \"native\"\n",
        4,
        1,
        "unknown key `xdp_mode` in interface `eth0`",
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

/// The README's TOML blocks are configs an operator will copy: they must
/// parse, as `examples/sg.toml` does.
#[test]
fn readme_and_example_configs_parse() {
    let readme = include_str!("../../../../README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty(), "the README shows no TOML config");
    for (i, block) in blocks.iter().enumerate() {
        if let Err(e) = crate::config::parse(block, "README.md") {
            panic!("README TOML block {i} does not parse: {e}\n{block}");
        }
    }
    let example = include_str!("../../../../examples/sg.toml");
    let loaded = crate::config::parse(example, "examples/sg.toml").expect("example parses");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.groups.len(), 2);
}
