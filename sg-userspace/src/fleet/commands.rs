//! `sg fleet push`, `show` and `leave` (SPEC 8.1, 8.3).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use anyhow::{Result, bail};
use etcd_client::{GetOptions, Txn, TxnOp};
use serde::Serialize;

use super::{
    keys::{HostRecord, Key, Prefix},
    store::{EtcdOptions, runtime},
    view::{Change, View},
};

/// `sg fleet push`: validates FILE and stores it as the fleet policy in one
/// transaction. Returns the new revision.
pub fn push(etcd: &EtcdOptions, prefix: &Prefix, file: &Path) -> Result<i64> {
    // Nothing is stored unless the file parses and compiles.
    let loaded = crate::config::load(file)?;
    for w in &loaded.warnings {
        // In a fleet, agents name NACLs (`--nacl IFACE=NACL`), not the file.
        if w.contains("is named by no interface") {
            continue;
        }
        eprintln!("warning: {w}");
    }
    if !loaded.config.interfaces.is_empty() {
        eprintln!(
            "warning: {}: [interfaces] is per host and is ignored by the fleet; each agent's --iface IFACE=GROUP,... says which groups its interfaces enforce",
            file.display()
        );
    }
    crate::compile::compile(&loaded.config, &[], 1)?;
    let text = std::fs::read_to_string(file)?;
    runtime()?.block_on(async {
        let mut client = etcd.connect().await?;
        let resp = client
            .txn(Txn::new().and_then([TxnOp::put(prefix.policy(), text, None)]))
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    })
}

/// What `sg fleet show` prints.
#[derive(Debug, Serialize)]
pub struct FleetShow {
    pub prefix: String,
    /// The policy's revision (none before the first push).
    pub revision: Option<i64>,
    /// etcd's revision when read.
    pub etcd_revision: i64,
    /// Hosts whose agents are alive (their lease holds their keys).
    pub hosts: BTreeMap<String, HostRecord>,
    pub groups: BTreeMap<String, GroupShow>,
}

#[derive(Debug, Serialize)]
pub struct GroupShow {
    /// `members` in the policy.
    pub static_members: Vec<String>,
    /// host -> registered addresses.
    pub registered: BTreeMap<String, Vec<IpAddr>>,
}

pub fn show(etcd: &EtcdOptions, prefix: &Prefix) -> Result<FleetShow> {
    let view = runtime()?.block_on(read(etcd, prefix))?;
    let mut groups: BTreeMap<String, GroupShow> = BTreeMap::new();
    if let Some(policy) = &view.policy
        && let Ok(loaded) = crate::config::parse(&policy.text, "fleet policy")
    {
        for (name, g) in loaded.config.groups {
            groups.insert(
                name,
                GroupShow {
                    static_members: g.members.iter().map(|m| m.to_string()).collect(),
                    registered: BTreeMap::new(),
                },
            );
        }
    }
    for (group, hosts) in &view.members {
        groups
            .entry(group.clone())
            .or_insert_with(|| GroupShow {
                static_members: Vec::new(),
                registered: BTreeMap::new(),
            })
            .registered = hosts.clone();
    }
    Ok(FleetShow {
        prefix: prefix.to_string(),
        revision: view.policy.as_ref().map(|p| p.revision),
        etcd_revision: view.revision,
        hosts: view.hosts,
        groups,
    })
}

pub fn print_show(s: &FleetShow) {
    match s.revision {
        Some(r) => println!("fleet {}: policy revision {r}", s.prefix),
        None => println!("fleet {}: no policy yet (sg fleet push -c FILE)", s.prefix),
    }
    if s.hosts.is_empty() {
        println!("hosts: none alive");
    } else {
        println!("hosts ({} alive):", s.hosts.len());
        for (host, record) in &s.hosts {
            let ifaces: Vec<String> = record
                .ifaces
                .iter()
                .map(|(i, g)| format!("{i}={}", g.join(",")))
                .collect();
            println!("  {host:<24} {}", ifaces.join(" "));
        }
    }
    println!("groups:");
    for (name, g) in &s.groups {
        let mut members: BTreeSet<String> = g.static_members.iter().cloned().collect();
        for (host, addrs) in &g.registered {
            for a in addrs {
                members.insert(format!("{a} ({host})"));
            }
        }
        let list: Vec<String> = members.into_iter().collect();
        println!(
            "  {name:<16} {} members: {}",
            list.len(),
            if list.is_empty() {
                "-".to_string()
            } else {
                list.join(", ")
            }
        );
    }
}

async fn read(etcd: &EtcdOptions, prefix: &Prefix) -> Result<View> {
    let mut client = etcd.connect().await?;
    let resp = client
        .get(prefix.all(), Some(GetOptions::new().with_prefix()))
        .await?;
    let mut view = View {
        revision: resp.header().map_or(0, |h| h.revision()),
        ..View::default()
    };
    for kv in resp.kvs() {
        view.apply(
            prefix,
            Change::Put {
                key: kv.key(),
                value: kv.value(),
                mod_revision: kv.mod_revision(),
            },
        );
    }
    Ok(view)
}

/// `sg fleet leave`: removes HOST's keys at once (one transaction) and
/// Returns how many keys went.
pub fn leave(etcd: &EtcdOptions, prefix: &Prefix, host: &str) -> Result<usize> {
    super::keys::check_host(host)?;
    runtime()?.block_on(async {
        let mut client = etcd.connect().await?;
        let resp = client
            .get(prefix.all(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut keys = Vec::new();
        let mut hosts = BTreeSet::new();
        for kv in resp.kvs() {
            match prefix.parse(kv.key()) {
                Key::Host(h) => {
                    if h == host {
                        keys.push(kv.key().to_vec());
                    }
                    hosts.insert(h);
                }
                Key::Member { host: h, .. } if h == host => keys.push(kv.key().to_vec()),
                _ => {}
            }
        }
        if keys.is_empty() {
            let hosts: Vec<String> = hosts.into_iter().collect();
            bail!(
                "host {host:?} is not in the fleet {prefix}; live hosts: {}",
                if hosts.is_empty() {
                    "none".to_string()
                } else {
                    hosts.join(", ")
                }
            );
        }
        let n = keys.len();
        // The host key last: its agent takes that deletion as its leave.
        keys.sort_by_key(|k| prefix.parse(k) != Key::Host(host.to_string()));
        keys.reverse();
        let ops: Vec<TxnOp> = keys.into_iter().map(|k| TxnOp::delete(k, None)).collect();
        client.txn(Txn::new().and_then(ops)).await?;
        // The lease stays: its agent, if alive, sees its host key deleted
        // while the lease lives, and takes it as the leave (and exits).
        Ok(n)
    })
}
