//! `sg export aws` (SPEC 9.3): a config's groups as `describe-security-groups`
//! JSON, with permissions merged the AWS way (one per protocol and port
//! range, listing every peer), plus the `describe-security-group-rules`
//! view (`SecurityGroupRules`, one per peer, carrying the rule IDs) and
//! the prefix lists' entries (`ManagedPrefixLists`) so that `sg import
//! aws` gives back the same rules.

use sha2::{Digest, Sha256};

use super::model::{
    IpPermission, IpRange, Ipv6Range, ManagedPrefixList, PrefixListEntry, PrefixListId,
    ReferencedGroup, SecurityGroup, SecurityGroupRule, UserIdGroupPair,
};
use super::proto::to_aws;
use ipnet::IpNet;

use std::collections::BTreeMap;

use crate::config::{Config, Direction, Peer, PortMatch, Proto, RULE_ID_HEX_DIGITS, Rule, rule_id};

/// A stable GroupId for a group name: `sg-` and 17 hex digits of SHA-256.
pub fn group_id(name: &str) -> String {
    let digest = Sha256::digest(format!("sg-group-v1\0{name}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sg-{}", &hex[..RULE_ID_HEX_DIGITS])
}

/// The JSON document and the notes on what AWS cannot hold.
pub fn export_json(cfg: &Config) -> (serde_json::Value, Vec<String>) {
    let mut notes = Vec::new();
    let mut groups = Vec::new();
    let mut rules = Vec::new();
    for g in cfg.groups.values() {
        if !g.members.is_empty() {
            notes.push(format!(
                "group `{}`: its members are not exported (AWS groups get members by \
                 attaching them to instances)",
                g.name
            ));
        }
        let gid = group_id(&g.name);
        let mut perms = [Vec::new(), Vec::new()];
        let mut seen = Vec::new();
        for r in g.ingress.iter().chain(&g.egress) {
            if r.name.is_some() && r.description.is_some() {
                notes.push(format!(
                    "rule {} of group `{}`: its name is not exported (AWS rules have a \
                     description only)",
                    r.id, g.name
                ));
            }
            for peer in &r.peers {
                let key = (r.direction, r.proto, r.ports, peer.clone());
                if seen.contains(&key) {
                    continue; // AWS holds one rule per protocol, ports and peer.
                }
                seen.push(key);
                let egress = r.direction == Direction::Egress;
                let perm = permission(&mut perms[usize::from(egress)], r);
                let description = r.description.clone().or_else(|| r.name.clone());
                let aws = add_peer(perm, peer, description.clone());
                let (proto, from, to) = to_aws(r.proto, &r.ports);
                rules.push(SecurityGroupRule {
                    security_group_rule_id: peer_rule_id(r, peer),
                    group_id: gid.clone(),
                    is_egress: egress,
                    ip_protocol: proto,
                    from_port: from,
                    to_port: to,
                    description,
                    ..aws
                });
            }
        }
        let [ingress, egress] = perms;
        groups.push(SecurityGroup {
            group_name: g.name.clone(),
            group_id: gid,
            description: Some(g.description.clone().unwrap_or_default()),
            ip_permissions: ingress,
            ip_permissions_egress: egress,
            ..SecurityGroup::default()
        });
    }
    if !cfg.interfaces.is_empty() {
        notes.push("[interfaces] are not exported (AWS attaches groups to instances)".into());
    }
    let lists: Vec<ManagedPrefixList> = cfg
        .prefix_lists
        .values()
        .map(|l| ManagedPrefixList {
            prefix_list_id: l.name.clone(),
            entries: l
                .entries
                .iter()
                .map(|e| PrefixListEntry {
                    cidr: e.cidr.to_string(),
                    description: e.description.clone(),
                })
                .collect(),
        })
        .collect();
    let mut doc = serde_json::json!({
        "SecurityGroups": groups,
        "SecurityGroupRules": rules,
    });
    if !lists.is_empty() {
        doc["ManagedPrefixLists"] = serde_json::json!(lists);
    }
    (doc, notes)
}

/// The rule ID of one peer of `r`: `r`'s own for a one-peer rule (explicit
/// or derived), else the ID sg derives for that peer alone.
fn peer_rule_id(r: &Rule, peer: &Peer) -> String {
    if r.peers.len() == 1 {
        r.id.clone()
    } else {
        rule_id(
            &r.group,
            r.direction,
            r.proto,
            &r.ports,
            std::slice::from_ref(peer),
        )
    }
}

/// The permission of `r`'s protocol and ports, made if new.
fn permission<'p>(perms: &'p mut Vec<IpPermission>, r: &Rule) -> &'p mut IpPermission {
    let (proto, from, to) = to_aws(r.proto, &r.ports);
    let i = match perms
        .iter()
        .position(|p| p.ip_protocol == proto && p.from_port == from && p.to_port == to)
    {
        Some(i) => i,
        None => {
            perms.push(IpPermission {
                ip_protocol: proto,
                from_port: from,
                to_port: to,
                ..IpPermission::default()
            });
            perms.len() - 1
        }
    };
    &mut perms[i]
}

/// Adds `peer` to `perm`; returns the peer fields of its
/// `SecurityGroupRules` entry.
fn add_peer(
    perm: &mut IpPermission,
    peer: &Peer,
    description: Option<String>,
) -> SecurityGroupRule {
    let mut rule = SecurityGroupRule::default();
    match peer {
        Peer::Cidr(IpNet::V4(n)) => {
            perm.ip_ranges.push(IpRange {
                cidr_ip: n.to_string(),
                description,
            });
            rule.cidr_ipv4 = Some(n.to_string());
        }
        Peer::Cidr(IpNet::V6(n)) => {
            perm.ipv6_ranges.push(Ipv6Range {
                cidr_ipv6: n.to_string(),
                description,
            });
            rule.cidr_ipv6 = Some(n.to_string());
        }
        Peer::Group(g) => {
            perm.user_id_group_pairs.push(UserIdGroupPair {
                group_id: Some(group_id(g)),
                group_name: Some(g.clone()),
                description,
                user_id: None,
                vpc_id: None,
            });
            rule.referenced_group_info = Some(ReferencedGroup {
                group_id: group_id(g),
                user_id: None,
                vpc_id: None,
            });
        }
        Peer::PrefixList(p) => {
            perm.prefix_list_ids.push(PrefixListId {
                prefix_list_id: p.clone(),
                description,
            });
            rule.prefix_list_id = Some(p.clone());
        }
    }
    rule
}

/// One AWS rule: group, direction, protocol, ports and peer.
pub type AwsRuleKey = (String, &'static str, Proto, PortMatch, Peer);

/// The rules of `cfg` as AWS holds them, one per peer, with their
/// description and the rule ID the export gives them; what an
/// export/import round trip must keep.
pub fn rule_set(cfg: &Config) -> BTreeMap<AwsRuleKey, (Option<String>, String)> {
    let mut set = BTreeMap::new();
    for r in cfg.all_rules() {
        for peer in &r.peers {
            let key = (
                r.group.clone(),
                r.direction.as_str(),
                r.proto,
                r.ports,
                peer.clone(),
            );
            let description = r.description.clone().or_else(|| r.name.clone());
            set.entry(key)
                .or_insert_with(|| (description, peer_rule_id(r, peer)));
        }
    }
    set
}

#[cfg(test)]
mod tests;
