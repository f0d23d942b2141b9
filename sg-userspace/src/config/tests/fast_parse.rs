//! Guards of the fast config walk (issue 14): rule IDs and a large
//! config's parse pinned to the values of the original, allocating walk.

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
    // One peer too long for the stack buffer (computed apart from sg).
    (
        r#"{ type = "ssh", from = "sg:a-very-long-group-name-that-does-not-fit-in-the-stack-buffer-of-sixty-four-bytes" }"#,
        "sgr-6b309556b8b6c5902",
        "sgr-f184ee30c9488e80a",
    ),
];

#[test]
fn rule_ids_are_pinned() {
    let mut src = String::from("[prefix_lists.office]\nentries = [\"198.18.9.0/24\"]\n");
    src.push_str("[groups.\"a-much-longer-group-name.with_dots\"]\n");
    src.push_str("[groups.a-very-long-group-name-that-does-not-fit-in-the-stack-buffer-of-sixty-four-bytes]\n");
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
