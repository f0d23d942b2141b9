//! Guards of the fast config parse (issue 14): rule IDs pinned to the
//! values of the original encoder, and the chunked (parallel) parse giving
//! the same config, warnings and errors as the whole-file parse.

use super::*;

/// Rules covering every branch of the canonical encoding, with the IDs
/// (as ingress, then as egress rules) the original `rule_id` (Strings, then SHA-256) gave them. Never edit an ID:
/// they are recorded in live state and shown to operators.
const PINNED: &[(&str, &str, &str)] = &[
    (
        r#"{ proto = "tcp", ports = "1024", from = "198.18.0.0" }"#,
        "sgr-2c6a254fc4e026dc9",
        "sgr-7be96fdb6cf8550e6",
    ),
    (
        r#"{ proto = "tcp", ports = "1024-65535", from = "198.18.0.0/16" }"#,
        "sgr-f12474f63b3456148",
        "sgr-9a9125cc90908ea7c",
    ),
    (
        r#"{ proto = "tcp", ports = "all", from = "198.18.0.0/15" }"#,
        "sgr-b50cdbf1c871e6f11",
        "sgr-d83a1b7728268f7fa",
    ),
    (
        r#"{ proto = "udp", ports = 53, from = ["198.19.0.0/16", "198.18.0.0/16", "198.19.0.0/16"] }"#,
        "sgr-a4bf4312a4f9c0dec",
        "sgr-1bdf6aa7bfe4460be",
    ),
    (
        r#"{ proto = "icmp", from = "198.18.1.0/24" }"#,
        "sgr-32eb0c5694e28a764",
        "sgr-7178183457a76680f",
    ),
    (
        r#"{ proto = "icmp", icmp_type = 8, from = "198.18.1.0/24" }"#,
        "sgr-524f9f0e5461e001f",
        "sgr-c987a2510da157c78",
    ),
    (
        r#"{ proto = "icmp", icmp_type = 3, icmp_code = 4, from = "198.18.1.0/24" }"#,
        "sgr-29a6e1bcf1e63a4f9",
        "sgr-af06b276e2db7da08",
    ),
    (
        r#"{ proto = "icmpv6", icmp_type = 128, from = "2001:db8::/32" }"#,
        "sgr-9ad34a73dd00079bf",
        "sgr-22272813ec8110417",
    ),
    (
        r#"{ proto = 47, from = "2001:db8::1" }"#,
        "sgr-d8516fe9e08cd288b",
        "sgr-9e1eb25ee05e6b984",
    ),
    (
        r#"{ proto = "all", from = "anywhere" }"#,
        "sgr-9f8e1878ac3fcc036",
        "sgr-cdab8540912db4acb",
    ),
    (
        r#"{ type = "ssh", from = ["sg:g", "pl:office", "anywhere-ipv6"] }"#,
        "sgr-f15ab0f527abd9c4d",
        "sgr-bed2a76d8dc4095c6",
    ),
    (
        r#"{ type = "https", from = ["sg:a-much-longer-group-name.with_dots", "198.18.255.255", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128"] }"#,
        "sgr-a637d9bcc48257c29",
        "sgr-09e65f4541146c704",
    ),
];

#[test]
fn rule_ids_are_pinned() {
    let mut src = String::from("[prefix_lists.office]\nentries = [\"198.18.9.0/24\"]\n");
    src.push_str("[groups.\"a-much-longer-group-name.with_dots\"]\n");
    src.push_str("[groups.g]\ningress = [\n");
    for (rule, _, _) in PINNED {
        src.push_str(&format!("  {rule},\n"));
    }
    src.push_str("]\negress = [\n");
    for (rule, _, _) in PINNED {
        src.push_str(&format!("  {},\n", rule.replace("from =", "to =")));
    }
    src.push_str("]\n");
    let c = cfg(&src);
    let g = &c.groups["g"];
    let want_in: Vec<&str> = PINNED.iter().map(|p| p.1).collect();
    let want_eg: Vec<&str> = PINNED.iter().map(|p| p.2).collect();
    let got_in: Vec<&str> = g.ingress.iter().map(|r| r.id.as_str()).collect();
    let got_eg: Vec<&str> = g.egress.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got_in, want_in);
    assert_eq!(got_eg, want_eg);
}

/// A config of many groups and rules of every kind, with warnings
/// (normalized CIDRs, a group listed twice), after the SPEC example.
pub(super) fn big_config(groups: usize, rules: usize) -> String {
    let mut s = String::from(SPEC_EXAMPLE);
    s.push('\n');
    for g in 0..groups {
        s.push_str(&format!("[groups.bulk{g}]\ndescription = \"bulk {g}\"\n"));
        s.push_str(&format!(
            "members = [\"198.18.{g}.1/24\", \"198.19.{g}.0/24\"]\n"
        ));
        s.push_str("ingress = [\n");
        for r in 0..rules {
            let (a, b) = (r / 256, r % 256);
            let rule = match r % 6 {
                0 => format!(
                    "{{ proto = \"tcp\", ports = \"{}\", from = \"198.18.{a}.{b}\" }}",
                    1024 + r
                ),
                1 => format!(
                    "{{ proto = \"udp\", ports = \"{}-{}\", from = [\"198.19.{a}.{b}/31\", \"sg:bulk0\"], name = \"n{r}\" }}",
                    2000 + r,
                    3000 + r
                ),
                2 => format!(
                    "{{ proto = \"icmp\", icmp_type = {}, from = \"198.18.{a}.{b}\", description = \"d\" }}",
                    r % 256
                ),
                3 => format!(
                    "{{ proto = \"icmpv6\", icmp_type = 128, icmp_code = {}, from = \"2001:db8::{r:x}/128\" }}",
                    r % 256
                ),
                4 => format!(
                    "{{ type = \"ssh\", from = [\"2001:db8:{r:x}::/48\", \"198.18.{a}.{b}/32\"] }}"
                ),
                _ => format!("{{ proto = {}, from = \"198.18.{a}.{b}\" }}", 47 + r % 50),
            };
            s.push_str(&format!("  {rule},\n"));
        }
        s.push_str("]\n");
        s.push_str(&format!(
            "egress = [{{ proto = \"tcp\", ports = 443, to = \"198.18.{g}.0/24\" }}]\n"
        ));
    }
    s.push_str("[interfaces.bulk0]\ngroups = [\"bulk0\", \"bulk1\", \"bulk0\"]\n");
    s
}

/// SHA-256 of the parsed config and warnings, in hex.
fn digest(l: &Loaded) -> String {
    use sha2::{Digest, Sha256};
    let text = format!("{:?}\n{:?}", l.config, l.warnings);
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn big_config_parses_to_the_pinned_result() {
    // Pinned from the original (one-thread, allocating) walk.
    let l = ok(&big_config(12, 300));
    assert_eq!(l.config.groups["bulk3"].ingress.len(), 300);
    assert_eq!(l.warnings.len(), 12 + 12 * 50 + 1, "{:?}", &l.warnings[..3]);
    assert_eq!(
        digest(&l),
        "d2462f8217bcc163eaaffcf4456c26b727dde0173be16790f559e7f55d28317e"
    );
}

/// The config, warnings or error of `src` parsed whole and cut into up to
/// `parts` chunks; asserts they are the same and returns them.
#[track_caller]
fn same_as_whole(src: &str, parts: usize) -> Result<Loaded, ConfigError> {
    let whole = super::super::parse_in(src, "t.toml", 1);
    let cut = super::super::parse_in(src, "t.toml", parts);
    match (&whole, &cut) {
        (Ok(w), Ok(c)) => {
            assert_eq!(w.config, c.config);
            assert_eq!(w.warnings, c.warnings);
        }
        (Err(w), Err(c)) => assert_eq!(w.to_string(), c.to_string()),
        _ => panic!("whole: {whole:?}\ncut in {parts}: {cut:?}"),
    }
    cut
}

/// The chunked tree of `src` cut at `cuts` (`None`: it gave up).
fn chunked_at(src: &str, cuts: &[usize]) -> bool {
    let padded = chunked::padded_chunks(src, cuts);
    chunked::parse(src, cuts, &padded).is_some()
}

/// Offset of the line holding `needle`.
fn line_of(src: &str, needle: &str) -> usize {
    let at = src.find(needle).expect("needle");
    src[..at].rfind('\n').map_or(0, |i| i + 1)
}

#[test]
fn a_big_config_cut_in_chunks_parses_as_the_whole() {
    let src = big_config(12, 300);
    for parts in 2..=4 {
        let cuts = chunked::cut_points(&src, parts);
        assert_eq!(cuts.len(), parts - 1, "{parts} parts");
        assert!(chunked_at(&src, &cuts), "cut in {parts} gave up");
        let l = same_as_whole(&src, parts).expect("valid");
        assert_eq!(
            digest(&l),
            "d2462f8217bcc163eaaffcf4456c26b727dde0173be16790f559e7f55d28317e"
        );
    }
}

#[test]
fn cuts_fall_where_only_section_tables_follow() {
    let src = "[conntrack]\nudp = \"30s\"\n[groups.a]\n[groups.b]\n  [groups.c]\n\
               [groups.d]\n[groups.e] # e\n[groups.\"f\"]\n[groups.g]\n[interfaces.x]\ngroups = [\"g\"]\n";
    // Indented and quoted headers rule out the cuts before them.
    let c = chunked::cut_points(src, 4);
    let (g, x) = (line_of(src, "[groups.g]"), line_of(src, "[interfaces.x]"));
    assert_eq!(c, vec![g, x]);
    assert!(chunked_at(src, &c));
    same_as_whole(src, 4).expect("valid");
    // A header the scan cannot read leaves nothing to cut.
    assert!(chunked::cut_points("[groups.a]\n[groups.b]\n[[x]]\n", 2).is_empty());
    assert!(chunked::cut_points("[groups.a]\n[groups.b]\n[x]\n", 2).is_empty());
}

#[test]
fn chunks_that_interact_fall_back_to_the_whole_parse() {
    let big = big_config(4, 20);
    let tail = |extra: &str| format!("{big}{extra}");
    // The same group table in two chunks: the whole parse's error.
    let src = tail("[groups.bulk1]\ningress = []\n");
    let cut = line_of(&src, "[interfaces.bulk0]");
    assert!(!chunked_at(&src, &[cut]));
    let e = same_as_whole(&src, 2).expect_err("duplicate table");
    assert!(e.message.starts_with("TOML syntax error"), "{e}");
    // A sub-table in one chunk, its table in another: valid TOML.
    let src = format!("{big}[groups.zz.ingress]\n[groups.zz]\ndescription = \"z\"\n");
    assert!(!chunked_at(&src, &[line_of(&src, "[groups.zz]\n")]));
    let e = same_as_whole(&src, 2).expect_err("rules are a list");
    assert!(e.message.contains("expected an array"), "{e}");
    // A cut inside a multi-line string: the text before it is unterminated.
    let src = tail("[groups.s]\ndescription = \"\"\"\n[groups.x]\n\"\"\"\n[groups.t]\n");
    assert!(!chunked_at(&src, &[line_of(&src, "[groups.x]")]));
    let l = same_as_whole(&src, 2).expect("valid");
    assert_eq!(
        l.config.groups["s"].description.as_deref(),
        Some("[groups.x]\n")
    );
    assert!(!l.config.groups.contains_key("x"));
    // `groups` inline or dotted in the first chunk cannot be extended.
    for head in [
        "groups = { a = { ingress = [] } }\n",
        "groups.a.ingress = []\n",
    ] {
        let src = format!("{head}[groups.b]\ningress = []\n[groups.c]\ningress = []\n");
        let cut = line_of(&src, "[groups.c]");
        assert!(!chunked_at(&src, &[cut]), "{head}");
        let whole = super::super::parse_in(&src, "t.toml", 1);
        assert_eq!(
            format!("{:?}", same_as_whole(&src, 2)),
            format!("{whole:?}")
        );
    }
    // `[groups]` opened by its header, then extended: fine.
    let src = "[groups]\n[groups.a]\ningress = []\n[groups.b]\ningress = []\n";
    assert!(chunked_at(src, &[line_of(src, "[groups.b]")]));
}

#[test]
fn errors_in_a_late_chunk_carry_whole_file_positions() {
    let big = big_config(6, 40);
    // A TOML syntax error in the last chunk.
    let src = format!(
        "{big}[groups.late]\ningress = [\n  {{ proto = \"tcp\", ports = 22 from = \"198.18.0.1\" }},\n]\n"
    );
    let cut = line_of(&src, "[groups.late]");
    assert!(!chunked_at(&src, &[cut]));
    let e = same_as_whole(&src, 2).expect_err("syntax");
    let line = src[..cut].lines().count() + 3;
    assert_eq!(
        (e.line, e.message.starts_with("TOML syntax error")),
        (line, true),
        "{e}"
    );
    // A walk error (the chunks parse) in the last chunk, and a warning.
    let src = format!(
        "{big}[groups.late]\ningress = [\n  {{ proto = \"tcp\", ports = 22, from = \"198.18.0.1/24\" }},\n  {{ proto = \"tcp\", porst = 22, from = \"198.18.0.1\" }},\n]\n"
    );
    let cut = line_of(&src, "[groups.late]");
    assert!(chunked_at(&src, &[cut]));
    let e = same_as_whole(&src, 2).expect_err("unknown key");
    let line = src[..cut].lines().count() + 4;
    assert_eq!((e.line, e.column), (line, 20), "{e}");
    assert!(
        e.message.starts_with("unknown key `porst` in a rule"),
        "{e}"
    );
    let src = src.replace("porst", "ports");
    let l = same_as_whole(&src, 2).expect("valid");
    let want = format!(
        "t.toml:{}:39: normalized 198.18.0.1/24 to 198.18.0.0/24",
        line - 1
    );
    assert!(l.warnings.contains(&want), "{:?}", l.warnings);
    // A rule ID used again in a later chunk names the first one's place.
    let first = "{ proto = \"tcp\", ports = \"1024\", from = \"198.18.0.0\" }";
    let id = cfg(&big).groups["bulk0"].ingress[0].id.clone();
    let dup = big.replace(
        "[interfaces.bulk0]",
        &format!("[groups.late]\ningress = [{{ proto = 6, ports = 9, from = \"198.18.0.9\", id = \"{id}\" }}]\n[interfaces.bulk0]"),
    );
    let cut = line_of(&dup, "[groups.late]");
    assert!(chunked_at(&dup, &[cut]));
    let Err(e) = same_as_whole(&dup, 2) else {
        panic!("a duplicate id passed")
    };
    let line = dup[..dup.find(first).expect("bulk0's first rule")]
        .lines()
        .count();
    assert_eq!(
        (e.line, e.message.clone()),
        (
            dup[..cut].lines().count() + 2,
            format!(
                "duplicate rule id {id}: already used by the rule at {line}:3; rule IDs must be unique"
            )
        ),
        "{e}"
    );
}

#[test]
fn the_parallel_walk_reports_the_first_error_in_file_order() {
    let big = big_config(4, 20);
    let bad = |src: &str, group: &str| {
        let at = src.find(&format!("[groups.{group}]")).expect("group");
        let rule = at + src[at..].find("ports = \"1024\"").expect("rule");
        format!("{}ports = \"1024-1\"{}", &src[..rule], &src[rule + 14..])
    };
    let late = bad(&big, "bulk3");
    let e = same_as_whole(&late, 2).err().expect("bad port in bulk3");
    let both = bad(&late, "bulk0");
    let first = same_as_whole(&both, 2).err().expect("bad ports");
    assert!(
        first.message.starts_with("reversed port range 1024-1"),
        "{first}"
    );
    assert!(first.line < e.line, "{first} should come before {e}");
    assert_eq!(
        first.line,
        both[..both.find("1024-1").expect("bad")].lines().count()
    );
}
