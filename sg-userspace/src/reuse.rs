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

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::compile::{Compiled, KernelTables};

/// Content digests of what is installed, each naming its ID. Kept in the
/// state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub classes: BTreeMap<String, u32>,
    pub policies: BTreeMap<String, u32>,
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

fn hex(digest: impl AsRef<[u8]>) -> String {
    // By table: a `format!` per byte was a visible share of an apply
    // (two digests per class and policy, 10,000s of them).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bytes = digest.as_ref();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Digest of each class's port sets (its family aside: classes of both
/// families with the same sets share one ID), by class ID.
fn class_digests(compiled: &Compiled) -> HashMap<u32, String> {
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
                    h.update(i.lo.to_be_bytes());
                    h.update(i.hi.to_be_bytes());
                    h.update(i.rule.rule.to_be_bytes());
                    h.update(i.rule.flags.to_be_bytes());
                }
            }
            (c.id, hex(h.finalize()))
        })
        .collect()
}

/// Digest of each policy's peer prefixes, naming classes by digest.
fn policy_digests(compiled: &Compiled, classes: &HashMap<u32, String>) -> HashMap<u32, String> {
    compiled
        .policies
        .iter()
        .map(|p| {
            let mut h = Sha256::new();
            for peer in &p.peers {
                h.update([peer.family.code(), peer.len]);
                h.update(peer.addr.to_be_bytes());
                h.update(classes[&peer.class].as_bytes());
            }
            (p.id, hex(h.finalize()))
        })
        .collect()
}

pub fn plan(compiled: &Compiled, installed: &Installed) -> Plan {
    plan_owned(compiled.clone(), installed)
}

/// [`plan`] of a compiled set the caller gives up: its IDs are mapped in
/// place, sparing a copy of the whole set (10,000s of rules).
pub fn plan_owned(mut write: Compiled, installed: &Installed) -> Plan {
    let class_digest = class_digests(&write);
    let policy_digest = policy_digests(&write, &class_digest);

    // One ID per class content: the installed one, else the first new one.
    let mut class_of_digest: HashMap<&str, u32> = installed
        .classes
        .iter()
        .map(|(digest, id)| (digest.as_str(), *id))
        .collect();
    let mut class_id: HashMap<u32, u32> = HashMap::with_capacity(write.classes.len());
    let mut classes_reused = 0;
    for c in &write.classes {
        let digest = class_digest[&c.id].as_str();
        let id = *class_of_digest.entry(digest).or_insert(c.id);
        classes_reused += usize::from(id != c.id);
        class_id.insert(c.id, id);
    }
    let mut policy_id: HashMap<u32, u32> = HashMap::with_capacity(write.policies.len());
    let mut policies_reused = 0;
    for p in &write.policies {
        let id = installed
            .policies
            .get(&policy_digest[&p.id])
            .copied()
            .unwrap_or(p.id);
        policies_reused += usize::from(id != p.id);
        policy_id.insert(p.id, id);
    }
    let installed = Installed {
        classes: write
            .classes
            .iter()
            .map(|c| (class_digest[&c.id].clone(), class_id[&c.id]))
            .collect(),
        policies: write
            .policies
            .iter()
            .map(|p| (policy_digest[&p.id].clone(), policy_id[&p.id]))
            .collect(),
    };
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
        installed,
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

    #[test]
    fn digests_are_lower_case_hex_as_recorded() {
        // The state records digests: their text must not change.
        assert_eq!(hex([0x00u8, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let d = Sha256::digest(b"sg");
        let by_format: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(d), by_format);
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
