//! Incremental updates: an apply rewrites only what changed.
//!
//! Every compile hands out fresh policy and class IDs, which is what makes
//! a switch atomic. Before writing, the new classes and policies are
//! matched by content against what is installed: a class whose port
//! sets are the same as an installed class takes that class's ID and is
//! not written again; a policy whose peer prefixes (naming classes by
//! content) are the same takes the installed policy's ID, and neither its
//! peer entries nor its interfaces' switch are written. Only what changed
//! gets fresh IDs, so a packet still sees one whole policy or the other.

use foldhash::{HashMap, HashMapExt as _, HashSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::compile::{Compiled, KernelTables};

mod hex_keys;

/// A class's or policy's content digest: the first 128 bits of a SHA-256
/// (enough against collisions, half the state file's hex). Bytes inside
/// the plan; lower-case hex only in the state file.
pub type Digest = [u8; 16];

/// A whole SHA-256: policies name their classes by its hex, as they did
/// before digests were cut, so an upgrade keeps its policies.
type Sha256Bytes = [u8; 32];

fn cut(sha: &Sha256Bytes) -> Digest {
    let mut d = [0u8; 16];
    d.copy_from_slice(&sha[..16]);
    d
}

/// Digest -> installed ID.
pub type DigestIds = HashMap<Digest, u32>;

/// Content digests of what is installed, each naming its ID. Kept in the
/// state file as `{"<32 hex digits>": id}` maps; a state of an earlier
/// version has the whole SHA-256 (64 digits): its first 128 bits are read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    #[serde(with = "hex_keys")]
    pub classes: DigestIds,
    #[serde(with = "hex_keys")]
    pub policies: DigestIds,
}

impl Installed {
    /// Every class and policy ID in force.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.classes.values().chain(self.policies.values()).copied()
    }
}

/// What to write, and what is in force once it is.
pub struct Plan {
    /// `compiled` with IDs mapped to installed ones.
    pub write: Compiled,
    /// The kernel's entries of what in `write` is not installed yet.
    pub tables: KernelTables,
    /// Every policy and class ID in force after the switch.
    pub live: HashSet<u32>,
    /// The digests to record once the switch is done.
    pub installed: Installed,
    pub classes_reused: usize,
    pub policies_reused: usize,
}

impl Plan {
    /// Map entries the plan writes (interfaces' switches aside).
    pub fn entries_written(&self) -> usize {
        self.tables.entries()
    }
}

/// Digest of each class's port sets (its family aside: classes of both
/// families with the same sets share one ID), in `compiled.classes` order.
fn class_digests(compiled: &Compiled) -> Vec<Sha256Bytes> {
    compiled
        .classes
        .iter()
        .map(|c| {
            let mut h = Sha256::new();
            for set in &c.port_sets {
                // Protocol, or 256 for the fallback set.
                h.update(set.proto.map_or(256u16, u16::from).to_be_bytes());
                h.update((set.intervals.len() as u32).to_be_bytes());
                for i in &set.intervals {
                    // One update per interval, not four (same bytes).
                    let mut b = [0u8; 12];
                    b[..2].copy_from_slice(&i.lo.to_be_bytes());
                    b[2..4].copy_from_slice(&i.hi.to_be_bytes());
                    b[4..8].copy_from_slice(&i.rule.rule.to_be_bytes());
                    b[8..].copy_from_slice(&i.rule.flags.to_be_bytes());
                    h.update(b);
                }
            }
            h.finalize().into()
        })
        .collect()
}

/// Digest of each policy's peer prefixes, naming classes by digest (as
/// hex text: the digests of earlier versions, so an upgrade keeps its
/// policies), in `compiled.policies` order.
fn policy_digests(compiled: &Compiled, class_hex: &HashMap<u32, [u8; 64]>) -> Vec<Digest> {
    compiled
        .policies
        .iter()
        .map(|p| {
            let mut h = Sha256::new();
            for peer in &p.peers {
                h.update([peer.family.code(), peer.len]);
                h.update(peer.addr.to_be_bytes());
                h.update(class_hex[&peer.class]);
            }
            cut(&h.finalize().into())
        })
        .collect()
}

pub fn plan(compiled: &Compiled, installed: &Installed) -> Plan {
    plan_owned(compiled.clone(), installed)
}

/// [`plan`] of a compiled set the caller gives up: its IDs are mapped in
/// place, sparing a copy of the whole set (10,000s of rules).
pub fn plan_owned(mut write: Compiled, installed: &Installed) -> Plan {
    let class_sha = class_digests(&write);
    let class_hex: HashMap<u32, [u8; 64]> = write
        .classes
        .iter()
        .zip(&class_sha)
        .map(|(c, d)| (c.id, hex_keys::encode(d)))
        .collect();
    let policy_digest = policy_digests(&write, &class_hex);
    drop(class_hex);
    let class_digest: Vec<Digest> = class_sha.iter().map(cut).collect();
    drop(class_sha);

    // One ID per class content: the installed one, else the first new one.
    let mut class_of_digest: HashMap<&Digest, u32> =
        HashMap::with_capacity(installed.classes.len() + write.classes.len());
    class_of_digest.extend(installed.classes.iter().map(|(d, id)| (d, *id)));
    let mut class_id: HashMap<u32, u32> = HashMap::with_capacity(write.classes.len());
    let mut classes_reused = 0;
    for (c, digest) in write.classes.iter().zip(&class_digest) {
        let id = *class_of_digest.entry(digest).or_insert(c.id);
        classes_reused += usize::from(id != c.id);
        class_id.insert(c.id, id);
    }
    drop(class_of_digest);
    let mut policy_id: HashMap<u32, u32> = HashMap::with_capacity(write.policies.len());
    let mut policies_reused = 0;
    for (p, digest) in write.policies.iter().zip(&policy_digest) {
        let id = installed.policies.get(digest).copied().unwrap_or(p.id);
        policies_reused += usize::from(id != p.id);
        policy_id.insert(p.id, id);
    }
    // As a map, the later of two equal digests names the ID (as before).
    let mut recorded = Installed {
        classes: HashMap::with_capacity(write.classes.len()),
        policies: HashMap::with_capacity(write.policies.len()),
    };
    for (c, digest) in write.classes.iter().zip(class_digest) {
        recorded.classes.insert(digest, class_id[&c.id]);
    }
    for (p, digest) in write.policies.iter().zip(policy_digest) {
        recorded.policies.insert(digest, policy_id[&p.id]);
    }
    // Only what keeps its fresh ID is written; a class's sets once, under
    // the ID it keeps.
    let fresh_policies: Vec<bool> = write
        .policies
        .iter()
        .map(|p| policy_id[&p.id] == p.id)
        .collect();
    let fresh_classes: Vec<bool> = write
        .classes
        .iter()
        .map(|c| class_id[&c.id] == c.id)
        .collect();

    for p in &mut write.policies {
        p.id = policy_id[&p.id];
        for peer in &mut p.peers {
            peer.class = class_id[&peer.class];
        }
    }
    for c in &mut write.classes {
        c.id = class_id[&c.id];
    }
    for b in write.ifaces.values_mut() {
        b.ingress_policy = policy_id[&b.ingress_policy];
        b.egress_policy = policy_id[&b.egress_policy];
        // NACL policies (0: none) switch in the same entry.
        for nacl in [&mut b.ingress_nacl, &mut b.egress_nacl] {
            if *nacl != 0 {
                *nacl = policy_id[nacl];
            }
        }
    }
    let tables = KernelTables::build(
        write
            .policies
            .iter()
            .zip(&fresh_policies)
            .filter(|(_, fresh)| **fresh)
            .map(|(p, _)| p),
        write
            .classes
            .iter()
            .zip(&fresh_classes)
            .filter(|(_, fresh)| **fresh)
            .map(|(c, _)| c),
    );

    let live: HashSet<u32> = policy_id
        .values()
        .chain(class_id.values())
        .copied()
        .collect();
    Plan {
        tables,
        write,
        live,
        installed: recorded,
        classes_reused,
        policies_reused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::{Attachment, compile},
        config,
    };

    const CFG: &str = r#"
[groups.web]
ingress = [{ type = "http", from = "anywhere" }, { type = "ssh", from = "198.18.0.0/24" }]
[groups.db]
ingress = [{ type = "postgresql", from = "sg:web" }, { type = "ssh", from = "198.18.0.0/24" }]
"#;

    fn attachments() -> Vec<Attachment> {
        vec![
            Attachment {
                iface: "a".into(),
                groups: vec!["web".into()],
                addrs: vec!["198.18.1.1".parse().unwrap()],
            },
            Attachment {
                iface: "b".into(),
                groups: vec!["db".into()],
                addrs: vec!["198.18.2.1".parse().unwrap()],
            },
        ]
    }

    fn compiled(text: &str, first_id: u32) -> Compiled {
        let cfg = config::parse(text, "t.toml").unwrap().config;
        compile(&cfg, &attachments(), first_id).unwrap()
    }

    /// `Installed` of `plan(CFG)` as the previous version (digests as
    /// `BTreeMap<String, u32>`) wrote it into the state file.
    const OLD_INSTALLED: &str = r#"{"classes":{"21f84afc0807a64a36205773601bba640c8ce962b9afcaff75cc64a843a16638":12,"2907dbe44a77c6a051bbf28ec2e57447be2188b9d81f2ac62b58e96bdfc60ea3":5,"492670c58127694d22d0247a6919c7b1974e80b3fac0d283a2ede75a777affe4":7,"53fe282666e27c5b8e1bfaf2dd53cb0b7309d2d5e751830ae474a4bd8a0c43c9":6,"7c62c37e893926bfbc8e6d06b0596e7a91a363e01862429cd577f60e9b6f1210":10,"87bbdcd9ea481d7727e76396f13adb9a8adad5e0245d3cb8d7b1e1fac375ea76":9},"policies":{"3b2c285b4568e66f3071c5110b0f256cb70d7b235657ab9510ae41e4e8078f3c":2,"7d65acea867c41b33b1db77c9d917a952283fbd0b485a66900af92f05ced7415":4,"97893ec80cb93000945982497a2c9c6d97335f5f604b00dad2c290069a6ec21b":1,"b97c835dc58ef2af41c50499c25aec1dcd746fed33b74aabfe152c266b1b8aba":3}}"#;

    #[test]
    fn digests_of_the_previous_version_load_and_are_reused() {
        // An upgrade happens with policy live: the digests a state of the
        // previous version holds must still name the same content.
        let old: Installed = serde_json::from_str(OLD_INSTALLED).unwrap();
        let first = plan(&compiled(CFG, 1), &Installed::default());
        assert_eq!(first.installed, old);
        // Written back with the first 32 digits of each digest, sorted.
        type Text = std::collections::BTreeMap<String, std::collections::BTreeMap<String, u32>>;
        let mut cut_old: Text = serde_json::from_str(OLD_INSTALLED).unwrap();
        for map in cut_old.values_mut() {
            *map = std::mem::take(map)
                .into_iter()
                .map(|(k, v)| (k[..32].to_string(), v))
                .collect();
        }
        let text = serde_json::to_string(&old).unwrap();
        assert_eq!(serde_json::from_str::<Text>(&text).unwrap(), cut_old);
        assert_eq!(serde_json::to_string(&cut_old).unwrap(), text, "sorted");
        let back: Installed = serde_json::from_str(&text).unwrap();
        assert_eq!(back, old);
        let again = compiled(CFG, 100);
        let second = plan(&again, &old);
        assert_eq!(second.entries_written(), 0);
        assert_eq!(second.policies_reused, again.policies.len());
    }

    #[test]
    fn bad_digests_are_refused() {
        for key in [
            "21f8",
            &"G".repeat(64),
            &"A".repeat(32),
            &"0".repeat(33),
            &"0".repeat(66),
        ] {
            let text = format!(r#"{{"classes":{{"{key}":1}},"policies":{{}}}}"#);
            assert!(serde_json::from_str::<Installed>(&text).is_err(), "{key}");
        }
    }

    #[test]
    fn equal_classes_share_a_digest_and_different_ones_do_not() {
        let c = compiled(CFG, 1);
        let d = class_digests(&c);
        let equal_pairs = (0..d.len())
            .flat_map(|i| (0..i).map(move |j| (i, j)))
            .filter(|&(i, j)| d[i] == d[j])
            .count();
        assert!(equal_pairs > 0, "CFG has a v4 and a v6 class alike");
        for (i, a) in c.classes.iter().enumerate() {
            for (j, b) in c.classes.iter().enumerate() {
                assert_eq!(d[i] == d[j], a.port_sets == b.port_sets, "{i} {j}");
            }
        }
    }

    #[test]
    fn the_same_config_writes_nothing_and_keeps_every_id() {
        let first = plan(&compiled(CFG, 1), &Installed::default());
        assert!(first.entries_written() > 0);
        let again = compiled(CFG, first.write.next_id);
        let second = plan(&again, &first.installed);
        assert_eq!(second.entries_written(), 0);
        assert_eq!(second.live, first.live);
        assert_eq!(second.write.ifaces, first.write.ifaces);
        assert_eq!(second.installed, first.installed);
        assert_eq!(second.policies_reused, again.policies.len());
    }

    #[test]
    fn a_change_to_one_group_rewrites_only_its_policy() {
        let first = plan(&compiled(CFG, 1), &Installed::default());
        let changed = CFG.replace(
            r#"{ type = "postgresql", from = "sg:web" }"#,
            r#"{ type = "mysql", from = "sg:web" }"#,
        );
        let next = compiled(&changed, first.write.next_id);
        let second = plan(&next, &first.installed);
        // Interface a (web) keeps both its policies; b's ingress is new.
        assert_eq!(second.write.ifaces["a"], first.write.ifaces["a"]);
        assert_ne!(
            second.write.ifaces["b"].ingress_policy,
            first.write.ifaces["b"].ingress_policy
        );
        assert_eq!(
            second.write.ifaces["b"].egress_policy,
            first.write.ifaces["b"].egress_policy
        );
        // Written: only the peer entries of b's new ingress policy and the
        // rule sets of classes whose content changed.
        let new_ingress = second.write.ifaces["b"].ingress_policy;
        let p = &second.tables.peers;
        assert!(!p.hosts_v4.is_empty());
        assert!(
            p.hosts_v4
                .iter()
                .all(|(k, _)| k.policy == new_ingress.to_be_bytes())
        );
        assert!(
            p.hosts_v6
                .iter()
                .all(|(k, _)| k.policy == new_ingress.to_be_bytes())
        );
        assert!(
            p.nets_v4
                .iter()
                .all(|(k, _)| k.policy == new_ingress.to_be_bytes())
        );
        assert!(p.lengths.iter().all(|(k, _)| k.policy == new_ingress));
        assert!(second.entries_written() < first.entries_written());
        assert!(second.classes_reused > 0);
        // Every ID in use is live, and the old ingress policy of b is not.
        let old_ingress = first.write.ifaces["b"].ingress_policy;
        assert!(!second.live.contains(&old_ingress));
        for (_, class) in second.tables.peers.hosts_v4.iter() {
            assert!(second.live.contains(class));
        }
    }

    #[test]
    fn a_membership_change_touches_only_policies_that_name_the_group() {
        let first = plan(&compiled(CFG, 1), &Installed::default());
        // web's members change (an interface address); db names sg:web.
        let cfg = config::parse(CFG, "t.toml").unwrap().config;
        let mut atts = attachments();
        atts[0].addrs = vec!["198.18.1.9".parse().unwrap()];
        let next = compile(&cfg, &atts, first.write.next_id).unwrap();
        let second = plan(&next, &first.installed);
        assert_eq!(
            second.write.ifaces["a"], first.write.ifaces["a"],
            "web names no sg:"
        );
        assert_ne!(
            second.write.ifaces["b"].ingress_policy,
            first.write.ifaces["b"].ingress_policy
        );
        assert!(
            second.tables.rule_sets.is_empty(),
            "no class content changed"
        );
    }
}
