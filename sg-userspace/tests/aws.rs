//! `sg import aws` and `sg export aws` (SPEC 9.2, 9.3), through the real
//! `sg` binary, on real AWS CLI outputs (tests/data/aws, origins in its
//! README) and hand-made files. The imported configs are read back with
//! sg's own parser and checked for meaning, not text.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sg::config::{self, Config, Direction, ICMP, ICMPV6, Peer, PortMatch, Proto, TCP, UDP};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/aws")
        .join(name)
}

fn sg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sg"))
        .args(args)
        .current_dir(data(""))
        .output()
        .expect("run sg")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory of this test, removed on drop (also on panic).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("sg-aws-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// Imports with `args`, checks the output with `sg validate`, and parses it.
#[track_caller]
fn import_ok(name: &str, args: &[&str]) -> (Config, String, String) {
    let dir = scratch(name);
    let out = dir.join("out.toml");
    let mut all = vec!["import", "aws"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let o = sg(&all);
    assert!(o.status.success(), "import failed: {}", stderr(&o));
    let v = sg(&["validate", "-c", out.to_str().unwrap()]);
    assert!(v.status.success(), "validate failed: {}", stderr(&v));
    let text = std::fs::read_to_string(&out).unwrap();
    let cfg = config::parse(&text, "out.toml")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .config;
    (cfg, text, stderr(&o))
}

#[track_caller]
fn import_fails(args: &[&str], needles: &[&str]) {
    let mut all = vec!["import", "aws"];
    all.extend_from_slice(args);
    let o = sg(&all);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.stdout.is_empty(), "no config on failure");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn cidr(s: &str) -> Peer {
    Peer::Cidr(s.parse().unwrap())
}

/// (proto, ports, peers, description, id) of a group's rules.
fn rules(
    cfg: &Config,
    group: &str,
    d: Direction,
) -> Vec<(Proto, PortMatch, Vec<Peer>, Option<String>)> {
    cfg.groups[group]
        .rules(d)
        .iter()
        .map(|r| (r.proto, r.ports, r.peers.clone(), r.description.clone()))
        .collect()
}

#[test]
fn awscli_example_keeps_self_reference_description_and_ipv4_only_egress() {
    let (cfg, _, _) = import_ok("awscli", &["awscli-describe-security-groups.json"]);
    let g = &cfg.groups["MySecurityGroup"];
    assert_eq!(g.description.as_deref(), Some("My security group"));
    assert_eq!(
        rules(&cfg, "MySecurityGroup", Direction::Ingress),
        vec![
            (
                Proto::All,
                PortMatch::All,
                vec![Peer::Group("MySecurityGroup".into())],
                None
            ),
            (
                TCP,
                PortMatch::Range { from: 22, to: 22 },
                vec![cidr("203.0.113.0/24")],
                Some("Access from NY office".into())
            ),
        ]
    );
    // Egress -1 to 0.0.0.0/0 only: not sg's dual-stack default.
    assert_eq!(
        rules(&cfg, "MySecurityGroup", Direction::Egress),
        vec![(Proto::All, PortMatch::All, vec![cidr("0.0.0.0/0")], None)]
    );
}

#[test]
fn the_published_example_with_its_trailing_comma_is_refused_cleanly() {
    import_fails(
        &["awscli-describe-security-groups.verbatim.json"],
        &["malformed JSON", "trailing comma", "line 53"],
    );
}

#[test]
fn json_that_is_not_describe_security_groups_is_refused() {
    import_fails(
        &["awscli-describe-security-groups-query-output.json"],
        &["not the output of `aws ec2 describe-security-groups`"],
    );
    // Another command's output in the wrong place is told its place.
    import_fails(
        &["awscli-describe-network-acls.json"],
        &["unexpected top-level key `NetworkAcls`", "--nacls FILE"],
    );
    import_fails(
        &["awscli-get-managed-prefix-list-entries.json"],
        &[
            "unexpected top-level key `Entries`",
            "--prefix-list PL_ID=FILE",
        ],
    );
    import_fails(
        &[
            "awscli-describe-security-groups.json",
            "--nacls",
            "awscli-describe-security-groups.json",
        ],
        &[
            "unexpected top-level key `SecurityGroups`",
            "as the FILE argument",
        ],
    );
    import_fails(&["no-such-file.json"], &["cannot read no-such-file.json"]);
}

#[test]
fn cloudmapper_groups_with_spaces_pairs_and_a_non_canonical_cidr() {
    let (cfg, _, err) = import_ok(
        "cm",
        &["cloudmapper-demo-ec2-describe-security-groups.json"],
    );
    assert_eq!(cfg.groups.len(), 8);
    // "Internal web": one permission with two group pairs -> two rules.
    assert_eq!(
        rules(&cfg, "Internal_web", Direction::Ingress),
        vec![
            (
                TCP,
                PortMatch::Range {
                    from: 8000,
                    to: 8000
                },
                vec![Peer::Group("Public_web".into())],
                None
            ),
            (
                TCP,
                PortMatch::Range {
                    from: 8000,
                    to: 8000
                },
                vec![Peer::Group("Bastion".into())],
                None
            ),
        ]
    );
    assert!(err.contains("normalized 2.2.2.2/28 to 2.2.2.0/28"), "{err}");
    assert!(
        cfg.groups["Bastion"]
            .ingress
            .iter()
            .any(|r| r.peers == vec![cidr("2.2.2.0/28")])
    );
}

#[test]
fn a_name_two_groups_share_is_disambiguated_by_group_id() {
    let (cfg, text, _) = import_ok(
        "collide",
        &["cloudmapper-demo-ec2-describe-security-groups@395418e.json"],
    );
    assert!(cfg.groups.contains_key("Endpint_sg-00000006"));
    assert!(cfg.groups.contains_key("Endpint_sg-00000007"));
    assert!(!cfg.groups.contains_key("Endpint"));
    assert!(text.contains("# GroupName \"Endpint\", GroupId sg-00000006"));
}

#[test]
fn recent_cli_output_with_icmp_all_and_tcp_all_ports() {
    let (cfg, _, _) = import_ok("lab", &["aws-lab-security_groups.json"]);
    let all: Vec<_> = cfg.all_rules().collect();
    assert!(all.iter().any(|r| r.proto == ICMP
        && r.ports
            == PortMatch::Icmp {
                icmp_type: None,
                icmp_code: None
            }));
    assert!(
        all.iter()
            .any(|r| r.proto == TCP && r.ports == PortMatch::All)
    );
}

#[test]
fn security_group_rule_ids_are_kept() {
    let (cfg, _, _) = import_ok("ids", &["awscli-describe-security-group-rules.json"]);
    let g = "sg-1234567890abcdef0";
    let ids: Vec<&str> = cfg.groups[g]
        .ingress
        .iter()
        .chain(&cfg.groups[g].egress)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "sgr-abcdef01234567890",
            "sgr-bcdef01234567890a",
            "sgr-cdef01234567890ab"
        ]
    );
    assert_eq!(cfg.groups[g].ingress[0].peers, vec![Peer::Group(g.into())]);
}

#[test]
fn handmade_ipv6_protocol_numbers_pairs_prefix_lists_and_rule_ids() {
    let (cfg, _, _) = import_ok(
        "handmade",
        &[
            "handmade-ipv6-protocols.json",
            "--rules",
            "handmade-rules-ids.json",
            "--prefix-list",
            "pl-0123456abcabcabc1=awscli-get-managed-prefix-list-entries.json",
        ],
    );
    let web = "web_tier_prod";
    let r = |i: usize| cfg.groups[web].ingress[i].clone();
    assert_eq!(r(1).peers, vec![cidr("::/0")]);
    assert_eq!(r(1).id, "sgr-0123456789abcdef0");
    assert_eq!(r(1).description.as_deref(), Some("https v6"));
    assert_eq!(
        (r(2).proto, r(2).peers.clone()),
        (TCP, vec![Peer::Group("bastion".into())])
    );
    assert_eq!(r(2).id, "sgr-0123456789abcdef1");
    assert_eq!(
        r(3).peers,
        vec![Peer::PrefixList("pl-0123456abcabcabc1".into())]
    );
    assert_eq!(
        (r(4).proto, r(4).ports),
        (
            ICMPV6,
            PortMatch::Icmp {
                icmp_type: Some(128),
                icmp_code: Some(0)
            }
        )
    );
    assert_eq!(
        (r(5).proto, r(5).ports),
        (
            ICMP,
            PortMatch::Icmp {
                icmp_type: Some(3),
                icmp_code: None
            }
        )
    );
    assert_eq!(
        (r(6).proto, r(6).ports),
        (Proto::Number(50), PortMatch::All)
    );
    assert_eq!(
        (r(7).proto, r(7).ports),
        (
            UDP,
            PortMatch::Range {
                from: 1024,
                to: 65535
            }
        )
    );
    let e = &cfg.groups[web].egress;
    assert_eq!(
        (e[0].proto, e[0].peers.clone()),
        (Proto::All, vec![cidr("::/0")])
    );
    assert_eq!((e[1].proto, e[1].ports), (TCP, PortMatch::All));
    assert_eq!(e[2].proto, ICMPV6);
    assert!(
        cfg.groups["bastion"].egress.is_empty(),
        "IpPermissionsEgress [] is no egress"
    );
    assert_eq!(cfg.groups["bastion"].ingress[0].id, "sgr-0123456789abcdef2");
    let pl = &cfg.prefix_lists["pl-0123456abcabcabc1"];
    assert_eq!(pl.entries.len(), 2);
    assert_eq!(pl.entries[1].description.as_deref(), Some("vpc-b"));
}

#[test]
fn import_errors_name_the_group_and_field() {
    import_fails(
        &["handmade-unknown-group.json"],
        &[
            "group `app` (sg-0ccccccccccccccc1)",
            "sg-0ddddddddddddddd9",
            "not in the file",
        ],
    );
    import_fails(
        &["handmade-unsupported-field.json"],
        &["group `peered`", "unknown field `PeeringStatus`"],
    );
    import_fails(
        &["handmade-bad-protocol.json"],
        &[
            "group `tunnels`",
            "IpPermissions[0]",
            "unsupported IpProtocol `gre`",
        ],
    );
    import_fails(
        &["handmade-ipv6-protocols.json"],
        &[
            "names prefix list pl-0123456abcabcabc1",
            "--prefix-list pl-0123456abcabcabc1=FILE",
        ],
    );
    let o = sg(&["import", "aws", "x.json", "--prefix-list", "nofile"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("expected ID=FILE"));
}

/// The `[nacls]` output as TOML; `imported_nacls_validate_and_compile`
/// reads it with sg's parser and compiler.
#[test]
fn nacls_map_to_numbered_rules_without_the_default_star_rules() {
    let o = sg(&[
        "import",
        "aws",
        "awscli-describe-security-groups.json",
        "--nacls",
        "awscli-describe-network-acls.json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: toml::Table = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    let nacls = doc["nacls"].as_table().unwrap();
    assert_eq!(nacls.len(), 2);
    let n = nacls["acl-0e2a78e4e2EXAMPLE"].as_table().unwrap();
    for (dir, peer_key) in [("ingress", "from"), ("egress", "to")] {
        let rules = n[dir].as_array().unwrap();
        let got: Vec<(i64, &str, &str, &str)> = rules
            .iter()
            .map(|r| {
                (
                    r["rule"].as_integer().unwrap(),
                    r["action"].as_str().unwrap(),
                    r["proto"].as_str().unwrap(),
                    r[peer_key].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (100, "allow", "all", "0.0.0.0/0"),
                (101, "allow", "all", "::/0")
            ],
            "{dir}"
        );
    }
    let o = sg(&[
        "import",
        "aws",
        "awscli-describe-security-groups.json",
        "--nacls",
        "botocore-examples-describe-network-acls.json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: toml::Table = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    let n = doc["nacls"]["acl-5fb85d36"].as_table().unwrap();
    assert_eq!(
        n["ingress"].as_array().unwrap().len(),
        0,
        "only `*`: deny all"
    );
    assert_eq!(n["egress"].as_array().unwrap().len(), 0);
}

#[test]
fn nacl_ports_icmp_and_errors() {
    let dir = scratch("nacl");
    let f = dir.join("n.json");
    let write = |entries: &str| {
        std::fs::write(
            &f,
            format!(r#"{{"NetworkAcls": [{{"NetworkAclId": "acl-1", "Entries": [{entries}]}}]}}"#),
        )
        .unwrap()
    };
    write(
        r#"{"RuleNumber": 120, "RuleAction": "allow", "Egress": false, "Protocol": "6",
            "PortRange": {"From": 1024, "To": 65535}, "CidrBlock": "198.18.0.0/15"},
           {"RuleNumber": 90, "RuleAction": "deny", "Egress": false, "Protocol": "1",
            "IcmpTypeCode": {"Type": 8, "Code": -1}, "CidrBlock": "198.18.2.0/24"}"#,
    );
    let o = sg(&[
        "import",
        "aws",
        "awscli-describe-security-groups.json",
        "--nacls",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: toml::Table = toml::from_str(&String::from_utf8(o.stdout).unwrap()).unwrap();
    let ing = doc["nacls"]["acl-1"]["ingress"].as_array().unwrap();
    assert_eq!(ing[0]["rule"].as_integer(), Some(90));
    assert_eq!(ing[0]["action"].as_str(), Some("deny"));
    assert_eq!(ing[0]["proto"].as_str(), Some("icmp"));
    assert_eq!(ing[0]["icmp_type"].as_integer(), Some(8));
    assert!(ing[0].get("icmp_code").is_none());
    assert_eq!(ing[1]["ports"].as_str(), Some("1024-65535"));
    assert_eq!(ing[1]["proto"].as_str(), Some("tcp"));

    write(r#"{"RuleNumber": 100, "RuleAction": "allow", "Egress": true, "Protocol": "-1"}"#);
    let args = [
        "import",
        "aws",
        "awscli-describe-security-groups.json",
        "--nacls",
        f.to_str().unwrap(),
    ];
    let o = sg(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("network ACL acl-1 egress rule 100: expected exactly one of CidrBlock")
    );
    write(
        r#"{"RuleNumber": 100, "RuleAction": "allow", "Egress": true, "Protocol": "-1", "CidrBlock": "0.0.0.0/0", "Bogus": 1}"#,
    );
    let o = sg(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("network ACL acl-1: unknown field `Bogus`"),
        "{}",
        stderr(&o)
    );
}

/// `--nacls` output goes through `sg validate` (the real config parser) and
/// compiles: rule numbers, actions, protocols, ports, ICMP, both families,
/// and AWS's default rules 32767/32768 as sg's one implicit `*` deny.
#[test]
fn imported_nacls_validate_and_compile() {
    use sg::compile::{attachments_from_config, compile};
    use sg::config::NaclAction::{Allow, Deny};

    let v4 = |s: &str| Peer::Cidr(s.parse().unwrap());
    let sgs = "awscli-describe-security-groups.json";
    let mut imported = Vec::new();
    for file in [
        "awscli-describe-network-acls.json",
        "botocore-examples-describe-network-acls.json",
        "handmade-network-acls.json",
    ] {
        let (cfg, text, _) = import_ok(file, &[sgs, "--nacls", file]);
        imported.push((file, cfg, text));
    }
    // The real samples: allow all from/to each family, or nothing at all.
    let real = &imported[0].1.nacls["acl-0e2a78e4e2EXAMPLE"];
    for rules in [&real.ingress, &real.egress] {
        let got: Vec<_> = rules
            .iter()
            .map(|r| (r.number, r.action, r.proto, r.ports, r.peers.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    100,
                    Allow,
                    Proto::All,
                    PortMatch::All,
                    vec![v4("0.0.0.0/0")]
                ),
                (101, Allow, Proto::All, PortMatch::All, vec![v4("::/0")]),
            ]
        );
    }
    let deny_all = &imported[1].1.nacls["acl-5fb85d36"];
    assert!(deny_all.ingress.is_empty() && deny_all.egress.is_empty());

    // The hand-made one: every field form.
    let (_, cfg, text) = &imported[2];
    let n = &cfg.nacls["acl-0handmade1"];
    let range = |from, to| PortMatch::Range { from, to };
    let icmp = |t, c| PortMatch::Icmp {
        icmp_type: t,
        icmp_code: c,
    };
    let got: Vec<_> = n
        .ingress
        .iter()
        .map(|r| (r.number, r.action, r.proto, r.ports, r.peers.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                90,
                Deny,
                Proto::All,
                PortMatch::All,
                vec![v4("198.18.2.0/24")]
            ),
            (100, Allow, TCP, range(443, 443), vec![v4("0.0.0.0/0")]),
            (
                110,
                Allow,
                TCP,
                range(1024, 65535),
                vec![v4("2001:db8::/32")]
            ),
            (120, Allow, UDP, range(53, 53), vec![v4("198.18.0.0/15")]),
            (130, Allow, ICMP, icmp(None, None), vec![v4("0.0.0.0/0")]),
            (
                140,
                Allow,
                ICMPV6,
                icmp(Some(128), Some(0)),
                vec![v4("::/0")]
            ),
            (
                150,
                Allow,
                Proto::Number(47),
                PortMatch::All,
                vec![v4("198.18.9.0/24")]
            ),
        ],
        "{text}"
    );
    let got: Vec<_> = n
        .egress
        .iter()
        .map(|r| (r.number, r.action, r.proto, r.ports, r.peers.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (100, Allow, TCP, range(1024, 65535), vec![v4("0.0.0.0/0")]),
            (101, Allow, Proto::All, PortMatch::All, vec![v4("::/0")]),
        ],
        "{text}"
    );

    // Named by an interface, it compiles: one rule per AWS rule and one
    // `*` per direction (32767 and 32768 are both that rule).
    let group = cfg.groups.keys().next().expect("a group").clone();
    let with_iface =
        format!("{text}\n[interfaces.eth0]\ngroups = [\"{group}\"]\nnacl = \"acl-0handmade1\"\n");
    let cfg = config::parse(&with_iface, "out.toml")
        .unwrap_or_else(|e| panic!("{e}\n{with_iface}"))
        .config;
    let c = compile(&cfg, &attachments_from_config(&cfg), 1).expect("compiles");
    let mut ids: Vec<(&str, u16, bool)> = c
        .rules
        .iter()
        .filter_map(|r| {
            let info = r.nacl?;
            Some((r.id.as_str(), info.number, info.action == Allow))
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("nacl:acl-0handmade1:egress:*", 32767, false),
            ("nacl:acl-0handmade1:egress:100", 100, true),
            ("nacl:acl-0handmade1:egress:101", 101, true),
            ("nacl:acl-0handmade1:ingress:*", 32767, false),
            ("nacl:acl-0handmade1:ingress:100", 100, true),
            ("nacl:acl-0handmade1:ingress:110", 110, true),
            ("nacl:acl-0handmade1:ingress:120", 120, true),
            ("nacl:acl-0handmade1:ingress:130", 130, true),
            ("nacl:acl-0handmade1:ingress:140", 140, true),
            ("nacl:acl-0handmade1:ingress:150", 150, true),
            ("nacl:acl-0handmade1:ingress:90", 90, false),
        ]
    );
    assert_ne!(c.ifaces["eth0"].ingress_nacl, 0);
    assert_ne!(c.ifaces["eth0"].egress_nacl, 0);
}

/// Export, then import: the same rules (CLI level; the random property test
/// is in the library, `aws::tests`).
#[test]
fn export_then_import_gives_back_the_same_rules() {
    let dir = scratch("roundtrip");
    let src = dir.join("sg.toml");
    std::fs::write(
        &src,
        r#"[prefix_lists.office]
entries = [{ cidr = "198.18.1.0/24", description = "hq" }, "2001:db8:1::/48"]

[groups.web]
description = "web tier"
ingress = [
  { type = "https", from = "anywhere", description = "public" },
  { type = "ssh", from = "sg:bastion" },
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/15" },
  { proto = "tcp", ports = "8080", from = "pl:office", id = "sgr-abcdef01234567890" },
]

[groups.bastion]
members = ["198.18.0.10"]
ingress = [{ type = "ssh", from = "198.19.0.0/16" }]
egress = [{ proto = "tcp", ports = "all", to = "sg:web" }]
"#,
    )
    .unwrap();
    let o = sg(&["export", "aws", "-c", src.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("group `bastion`: its members are not exported"));
    let json = dir.join("sgs.json");
    std::fs::write(&json, &o.stdout).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let web = &doc["SecurityGroups"][1];
    assert_eq!(web["GroupName"], "web");
    assert_eq!(web["GroupId"], sg::aws::group_id("web"));
    // https from anywhere: one permission holding both ranges.
    assert_eq!(web["IpPermissions"][0]["IpProtocol"], "tcp");
    assert_eq!(
        web["IpPermissions"][0]["IpRanges"][0]["CidrIp"],
        "0.0.0.0/0"
    );
    assert_eq!(web["IpPermissions"][0]["Ipv6Ranges"][0]["CidrIpv6"], "::/0");

    let (back, _, _) = import_ok("roundtrip-import", &[json.to_str().unwrap()]);
    let orig = config::load(&src).unwrap().config;
    assert_eq!(
        sg::aws::export::rule_set(&back),
        sg::aws::export::rule_set(&orig)
    );
    let pl_rule = back.groups["web"]
        .ingress
        .iter()
        .find(|r| r.peers == vec![Peer::PrefixList("office".into())])
        .expect("the pl:office rule");
    assert_eq!(pl_rule.id, "sgr-abcdef01234567890");
    assert_eq!(back.prefix_lists["office"], orig.prefix_lists["office"]);
}
