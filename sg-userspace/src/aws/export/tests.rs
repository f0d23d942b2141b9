//! Property: for random configs, export then import gives back the same
//! rules (compared as AWS rule sets: group, direction, protocol, ports,
//! peer, description and rule ID), the same prefix lists and groups.

use sg_lab::rng::Rng;

use super::*;
use crate::aws::import::{ImportInput, Source, import};
use crate::config;

const V4: &[&str] = &[
    "198.18.0.0/15",
    "198.18.1.0/24",
    "198.18.2.7",
    "0.0.0.0/0",
    "198.19.128.0/17",
];
const V6: &[&str] = &["2001:db8::/32", "2001:db8:1::/48", "::/0", "2001:db8::7"];
const GROUPS: &[&str] = &["web", "db.main", "bastion", "cache_1"];
const LISTS: &[&str] = &["office", "pl-0123456abcabcabc1"];

fn peer(rng: &mut Rng) -> String {
    match rng.next_u64() % 6 {
        0 | 1 => rng.pick(V4).to_string(),
        2 => rng.pick(V6).to_string(),
        3 => format!("sg:{}", rng.pick(GROUPS)),
        4 => format!("pl:{}", rng.pick(LISTS)),
        _ => rng
            .pick(&["anywhere", "anywhere-ipv4", "anywhere-ipv6"])
            .to_string(),
    }
}

fn rule(rng: &mut Rng, peer_key: &str, n: &mut u64) -> String {
    let mut f = match rng.next_u64() % 7 {
        0 => "proto = \"tcp\", ports = \"22\"".to_string(),
        1 => {
            let a = rng.next_u64() % 65536;
            let b = a + rng.next_u64() % (65536 - a);
            format!("proto = \"udp\", ports = \"{a}-{b}\"")
        }
        2 => "proto = \"tcp\", ports = \"all\"".to_string(),
        3 => match rng.next_u64() % 3 {
            0 => "proto = \"icmp\"".to_string(),
            1 => format!("proto = \"icmp\", icmp_type = {}", rng.next_u64() % 256),
            _ => format!(
                "proto = \"icmpv6\", icmp_type = {}, icmp_code = {}",
                rng.next_u64() % 256,
                rng.next_u64() % 256
            ),
        },
        4 => "proto = \"all\"".to_string(),
        5 => format!("proto = {}", rng.pick(&[50u64, 47, 132, 0, 255])),
        _ => "type = \"https\"".to_string(),
    };
    let peers: Vec<String> = (0..1 + rng.next_u64() % 3)
        .map(|_| format!("\"{}\"", peer(rng)))
        .collect();
    f.push_str(&format!(", {peer_key} = [{}]", peers.join(", ")));
    if rng.next_u64().is_multiple_of(3) {
        f.push_str(&format!(
            ", description = \"d{} \\\"q\\\" é\"",
            rng.next_u64() % 100
        ));
    }
    if rng.next_u64().is_multiple_of(5) {
        *n += 1;
        f.push_str(&format!(", id = \"sgr-{:017x}\"", 0xabc0_0000_0000u64 + *n));
    }
    format!("  {{ {f} }},\n")
}

fn random_config(rng: &mut Rng) -> String {
    let mut s = String::new();
    let mut n = 0;
    for l in LISTS {
        let entries: Vec<String> = (0..rng.next_u64() % 3)
            .map(|i| {
                let c = if i == 0 { rng.pick(V6) } else { rng.pick(V4) };
                format!("{{ cidr = \"{c}\", description = \"e{i}\" }}")
            })
            .collect();
        s.push_str(&format!(
            "[prefix_lists.{l}]\nentries = [{}]\n",
            entries.join(", ")
        ));
    }
    for g in GROUPS {
        s.push_str(&format!("[groups.\"{g}\"]\n"));
        if rng.next_u64().is_multiple_of(2) {
            s.push_str("description = \"group d\"\n");
        }
        for (key, peer_key) in [("ingress", "from"), ("egress", "to")] {
            let k = rng.next_u64() % 5;
            if key == "egress" && k == 0 {
                continue; // AWS's default egress rule
            }
            s.push_str(&format!("{key} = [\n"));
            for _ in 0..k {
                s.push_str(&rule(rng, peer_key, &mut n));
            }
            s.push_str("]\n");
        }
    }
    s
}

#[test]
fn export_then_import_keeps_the_rules_of_random_configs() {
    let mut rng = Rng(0x5eed_a115);
    let mut checked = 0;
    for _ in 0..300 {
        let text = random_config(&mut rng);
        // Generated duplicates are config errors: skip those configs.
        let Ok(loaded) = config::parse(&text, "random.toml") else {
            continue;
        };
        let orig = loaded.config;
        let (doc, _) = export_json(&orig);
        let input = ImportInput {
            groups: Source {
                name: "export.json".into(),
                text: serde_json::to_string_pretty(&doc).unwrap(),
            },
            rules: Vec::new(),
            nacls: None,
            prefix_lists: Vec::new(),
        };
        let imported = import(&input).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        let back = config::parse(&imported.toml, "imported.toml")
            .unwrap_or_else(|e| panic!("{e}\n{}", imported.toml))
            .config;
        assert_eq!(
            rule_set(&back),
            rule_set(&orig),
            "\n--- config\n{text}\n--- imported\n{}",
            imported.toml
        );
        assert_eq!(back.prefix_lists, orig.prefix_lists);
        assert_eq!(
            back.groups.keys().collect::<Vec<_>>(),
            orig.groups.keys().collect::<Vec<_>>()
        );
        for (name, g) in &orig.groups {
            assert_eq!(back.groups[name].description, g.description);
        }
        checked += 1;
    }
    assert!(checked >= 150, "only {checked} random configs were valid");
}

#[test]
fn group_ids_are_stable_and_aws_shaped() {
    assert_eq!(group_id("web"), group_id("web"));
    assert_ne!(group_id("web"), group_id("db"));
    let id = group_id("web");
    assert_eq!(id.len(), 3 + 17);
    assert!(id.starts_with("sg-"));
}
