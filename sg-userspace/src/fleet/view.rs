//! What an agent knows of the fleet (the policy, live hosts, registered
//! members), kept from one read plus the watch events after it, and its
//! composition with this host's interfaces into one config (SPEC 8.3).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use anyhow::{Context as _, Result};

use super::keys::{HostRecord, Key, MemberRecord, Prefix};

/// The policy text and its revision (the policy key's `mod_revision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub text: String,
    pub revision: i64,
}

#[derive(Clone, Debug, Default)]
pub struct View {
    pub policy: Option<Policy>,
    pub hosts: BTreeMap<String, HostRecord>,
    /// group -> host -> addresses.
    pub members: BTreeMap<String, BTreeMap<String, MemberRecord>>,
    /// The etcd revision this view is at.
    pub revision: i64,
}

/// A change read from etcd (a read's key-value or a watch event).
pub enum Change<'a> {
    Put {
        key: &'a [u8],
        value: &'a [u8],
        mod_revision: i64,
    },
    Delete {
        key: &'a [u8],
    },
}

impl View {
    /// Applies one change; returns whether it concerns the fleet.
    pub fn apply(&mut self, prefix: &Prefix, change: Change<'_>) -> bool {
        match change {
            Change::Put {
                key,
                value,
                mod_revision,
            } => match prefix.parse(key) {
                Key::Policy => {
                    self.policy = Some(Policy {
                        text: String::from_utf8_lossy(value).into_owned(),
                        revision: mod_revision,
                    });
                    true
                }
                Key::Host(host) => {
                    let record = serde_json::from_slice(value).unwrap_or_default();
                    self.hosts.insert(host, record);
                    true
                }
                Key::Member { group, host } => {
                    // A value that is not a list of addresses (written by
                    // hand, by another version) adds nobody.
                    let addrs: MemberRecord = serde_json::from_slice(value).unwrap_or_default();
                    self.members.entry(group).or_default().insert(host, addrs);
                    true
                }
                Key::Other => false,
            },
            Change::Delete { key } => match prefix.parse(key) {
                Key::Policy => {
                    self.policy = None;
                    true
                }
                Key::Host(host) => {
                    self.hosts.remove(&host);
                    true
                }
                Key::Member { group, host } => {
                    if let Some(hosts) = self.members.get_mut(&group) {
                        hosts.remove(&host);
                        if hosts.is_empty() {
                            self.members.remove(&group);
                        }
                    }
                    true
                }
                Key::Other => false,
            },
        }
    }

    /// Registered addresses per group, every host's.
    pub fn group_members(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        self.members
            .iter()
            .map(|(g, hosts)| (g.clone(), hosts.values().flatten().copied().collect()))
            .collect()
    }
}

/// The config an agent enforces: the fleet policy (its `[interfaces]`
/// dropped), this host's interfaces and groups, and each group's registered
/// members added to its static `members`. Groups the policy does not define
/// get no members (and an interface naming one fails to compile, as in a
/// file).
pub fn compose(
    policy: &str,
    ifaces: &BTreeMap<String, Vec<String>>,
    members: &BTreeMap<String, BTreeSet<IpAddr>>,
) -> Result<String> {
    compose_host(policy, ifaces, &BTreeMap::new(), members)
}

/// [`compose`] with this host's `--nacl IFACE=NACL` flags: each becomes
/// `nacl = "NACL"` in its interface's section (a name the policy does not
/// define fails to compile, as in a file).
pub fn compose_host(
    policy: &str,
    ifaces: &BTreeMap<String, Vec<String>>,
    nacls: &BTreeMap<String, String>,
    members: &BTreeMap<String, BTreeSet<IpAddr>>,
) -> Result<String> {
    let mut table: toml::Table = toml::from_str(policy).context("the fleet policy is not TOML")?;
    table.remove("interfaces");
    if let Some(toml::Value::Table(groups)) = table.get_mut("groups") {
        for (name, group) in groups.iter_mut() {
            let Some(addrs) = members.get(name) else {
                continue;
            };
            let toml::Value::Table(group) = group else {
                continue;
            };
            let list = group
                .entry("members")
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            if let toml::Value::Array(list) = list {
                list.extend(addrs.iter().map(|a| toml::Value::String(a.to_string())));
            }
        }
    }
    let mut interfaces = toml::Table::new();
    for (iface, groups) in ifaces {
        let mut section = toml::Table::new();
        section.insert(
            "groups".into(),
            toml::Value::Array(groups.iter().cloned().map(toml::Value::String).collect()),
        );
        if let Some(nacl) = nacls.get(iface) {
            section.insert("nacl".into(), toml::Value::String(nacl.clone()));
        }
        interfaces.insert(iface.clone(), toml::Value::Table(section));
    }
    table.insert("interfaces".into(), toml::Value::Table(interfaces));
    Ok(toml::to_string(&table)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[groups.db]
members = ["198.18.9.9"]
ingress = [{ proto = "tcp", ports = "1433", from = "sg:app" }]

[groups.app]

[interfaces.eth9]
groups = ["db"]
"#;

    #[test]
    fn composition_adds_members_and_this_hosts_interfaces() {
        let ifaces = BTreeMap::from([("veth0".to_string(), vec!["db".to_string()])]);
        let members = BTreeMap::from([
            (
                "app".to_string(),
                BTreeSet::from([
                    "198.18.1.2".parse().unwrap(),
                    "2001:db8::2".parse().unwrap(),
                ]),
            ),
            (
                "db".to_string(),
                BTreeSet::from(["198.18.2.2".parse().unwrap()]),
            ),
            (
                "gone".to_string(),
                BTreeSet::from(["198.18.3.2".parse().unwrap()]),
            ),
        ]);
        let text = compose(POLICY, &ifaces, &members).unwrap();
        let loaded = crate::config::parse(&text, "composed").unwrap();
        let c = loaded.config;
        assert_eq!(
            c.interfaces.keys().collect::<Vec<_>>(),
            ["veth0"],
            "the policy's [interfaces] is dropped"
        );
        let app: Vec<String> = c.groups["app"]
            .members
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(app, ["198.18.1.2/32", "2001:db8::2/128"]);
        let db: Vec<String> = c.groups["db"]
            .members
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(db, ["198.18.2.2/32", "198.18.9.9/32"]);
        assert!(!c.groups.contains_key("gone"));
    }

    #[test]
    fn composition_gives_an_interface_its_nacl() {
        let policy = format!(
            "{POLICY}\n[nacls.edge]\ningress = [{{ rule = 10, action = \"allow\", proto = \"all\", from = \"anywhere\" }}]\n"
        );
        let ifaces = BTreeMap::from([
            ("veth0".to_string(), vec!["db".to_string()]),
            ("veth1".to_string(), vec!["app".to_string()]),
        ]);
        let nacls = BTreeMap::from([("veth0".to_string(), "edge".to_string())]);
        let text = compose_host(&policy, &ifaces, &nacls, &BTreeMap::new()).unwrap();
        let c = crate::config::parse(&text, "composed").unwrap().config;
        assert_eq!(c.interfaces["veth0"].nacl.as_deref(), Some("edge"));
        assert_eq!(c.interfaces["veth1"].nacl, None);
        // A NACL the policy lacks: the composed config is refused.
        let nacls = BTreeMap::from([("veth0".to_string(), "nope".to_string())]);
        let text = compose_host(POLICY, &ifaces, &nacls, &BTreeMap::new()).unwrap();
        let e = crate::config::parse(&text, "composed").unwrap_err();
        assert!(e.message.contains("unknown NACL `nope`"), "{e}");
    }

    #[test]
    fn view_follows_puts_and_deletes() {
        let p = Prefix::new("/sg").unwrap();
        let mut v = View::default();
        let key = p.member("app", "h1");
        assert!(v.apply(
            &p,
            Change::Put {
                key: key.as_bytes(),
                value: br#"["198.18.1.2"]"#,
                mod_revision: 5
            }
        ));
        assert_eq!(v.group_members()["app"].len(), 1);
        assert!(v.apply(
            &p,
            Change::Delete {
                key: key.as_bytes()
            }
        ));
        assert!(v.group_members().is_empty());
        assert!(!v.apply(&p, Change::Delete { key: b"/other/x" }));
    }
}
