//! `[prefix_lists]`, `pl:` peers and explicit rule `id`s (SPEC 9.1, 1.3).

use super::*;

const LISTS: &str = r#"[prefix_lists.office]
entries = ["198.18.1.0/24", { cidr = "2001:db8:1::/48", description = "v6 office" }, "198.18.1.7/24"]

[prefix_lists.empty]
entries = []
"#;

#[test]
fn prefix_lists_parse_with_descriptions_and_normalize() {
    let l = ok(&format!(
        "{LISTS}[groups.g]\ningress = [{{ type = \"ssh\", from = [\"pl:office\", \"pl:empty\"] }}]\n"
    ));
    let office = &l.config.prefix_lists["office"];
    assert_eq!(
        office.entries,
        vec![
            PrefixListEntry {
                cidr: net("198.18.1.0/24"),
                description: None
            },
            PrefixListEntry {
                cidr: net("2001:db8:1::/48"),
                description: Some("v6 office".into())
            },
        ]
    );
    assert!(l.config.prefix_lists["empty"].entries.is_empty());
    // 198.18.1.7/24 normalizes to a duplicate: a warning, not a second entry.
    assert!(
        l.warnings.iter().any(|w| w.contains("listed twice")),
        "{:?}",
        l.warnings
    );
    let r = &l.config.groups["g"].ingress[0];
    assert_eq!(
        r.peers,
        vec![
            Peer::PrefixList("empty".into()),
            Peer::PrefixList("office".into())
        ]
    );
    assert_eq!(r.peers[1].to_string(), "pl:office");
    assert_eq!(
        l.config.static_peer_cidrs(&r.peers[1]).unwrap(),
        vec![net("198.18.1.0/24"), net("2001:db8:1::/48")]
    );
}

#[test]
fn the_rule_id_names_the_list_not_its_entries() {
    let with = |entries: &str| {
        cfg(&format!(
            "[prefix_lists.p]\nentries = [{entries}]\n[groups.g]\ningress = [{{ type = \"ssh\", from = \"pl:p\" }}]\n"
        ))
        .groups["g"]
            .ingress[0]
            .id
            .clone()
    };
    assert_eq!(with("\"198.18.0.0/24\""), with("\"198.18.9.0/24\""));
}

#[test]
fn prefix_list_errors_are_located() {
    fails(
        "[groups.g]\ningress = [{ type = \"ssh\", from = \"pl:nope\" }]\n",
        2,
        35,
        "unknown prefix list `nope`",
    );
    fails(
        "[prefix_lists.p]\nentries = [\"198.18.0.0/33\"]\n",
        2,
        12,
        "invalid CIDR `198.18.0.0/33` in prefix list `p`",
    );
    fails(
        "[prefix_lists.p]\nentries = [{ cidr = \"nope\" }]\n",
        2,
        21,
        "invalid address `nope`",
    );
    fails(
        "[prefix_lists.p]\nentries = [{ cider = \"198.18.0.0/24\" }]\n",
        2,
        14,
        "unknown key `cider`",
    );
    fails("[prefix_lists.p]\n", 1, 1, "needs `entries");
    fails(
        "[prefix_lists.\"a b\"]\nentries = []\n",
        1,
        15,
        "invalid prefix list name",
    );
}

#[test]
fn explicit_rule_ids_are_kept_checked_and_unique() {
    let r = rule_of(r#"{ type = "ssh", from = "198.18.0.0/15", id = "sgr-abcdef01234567890" }"#);
    assert_eq!(r.id, "sgr-abcdef01234567890");
    let rule = r#"{ type = "ssh", from = "198.18.0.0/15", id = "sgr-ABC" }"#;
    rule_fails(rule, "invalid rule id `sgr-ABC`", col(rule, "\"sgr-ABC"));
    fails(
        "[groups.a]\ningress = [{ type = \"ssh\", from = \"198.18.0.0/15\", id = \"sgr-abcdef01234567890\" }]\n\
         [groups.b]\ningress = [{ type = \"http\", from = \"198.18.0.0/15\", id = \"sgr-abcdef01234567890\" }]\n",
        4,
        12,
        "duplicate rule id sgr-abcdef01234567890: already used by the rule at 2:12",
    );
}
