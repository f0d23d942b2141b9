//! Steps 2 and 3 of the compiler: policies, then peer classes.
//!
//! A policy is the union of the rules of one group list in one direction;
//! interfaces with the same groups share it. For each policy and address
//! family, the distinct peer CIDRs of its rules are split into classes:
//! the class of CIDR `c` is the set of rules with a peer CIDR that contains
//! `c`. The longest prefix that holds an address then carries every rule
//! whose peer covers the address (prefixes that hold one address are
//! nested, so the longest one is inside every other). Identical rule sets
//! of a family share one class.

use std::collections::{BTreeMap, BTreeSet};

use foldhash::{HashMap, HashMapExt as _};

use sg_common::{
    IFACE_F_EGRESS_ALL_V4, IFACE_F_EGRESS_ALL_V6, IFACE_F_EGRESS_HOSTS_ONLY_V4,
    IFACE_F_EGRESS_HOSTS_ONLY_V6, IFACE_F_INGRESS_ALL_V4, IFACE_F_INGRESS_ALL_V6,
    IFACE_F_INGRESS_HOSTS_ONLY_V4, IFACE_F_INGRESS_HOSTS_ONLY_V6,
};

use super::{
    ClassInfo, CompileError, Family, Ids, IfaceBinding, PeerPrefix, PolicyInfo,
    resolve::{Net, RuleIndex, anywhere, mask},
};
use crate::config::{Config, Direction, Proto};

/// One policy per distinct group list and direction (peers not yet
/// filled in), and each interface's binding to its pair.
pub(super) fn build_policies(
    config: &Config,
    index: &RuleIndex<'_>,
    rule_nets: &[Vec<Net>],
    iface_lists: &[(&str, Vec<String>)],
    ids: &mut Ids,
) -> Result<(Vec<PolicyInfo>, BTreeMap<String, IfaceBinding>), CompileError> {
    let lists: BTreeSet<&Vec<String>> = iface_lists.iter().map(|(_, l)| l).collect();
    let mut policies = Vec::new();
    let mut pair_of: HashMap<&Vec<String>, IfaceBinding> = HashMap::new();
    for list in lists {
        let mut binding = IfaceBinding {
            ingress_policy: 0,
            egress_policy: 0,
            flags: 0,
            ingress_nacl: 0,
            egress_nacl: 0,
        };
        for d in Direction::ALL {
            let id = ids.alloc()?;
            let rules: Vec<u32> = list.iter().flat_map(|g| index.of(config, g, d)).collect();
            // All traffic, everywhere: a rule of protocol `all` whose peers
            // include the whole address space of a family.
            let all_to = |family: Family| {
                rules.iter().any(|&r| {
                    index.all[r as usize].proto == Proto::All
                        && anywhere(&rule_nets[r as usize], family)
                })
            };
            let (v4_bit, v6_bit) = match d {
                Direction::Ingress => (IFACE_F_INGRESS_ALL_V4, IFACE_F_INGRESS_ALL_V6),
                Direction::Egress => (IFACE_F_EGRESS_ALL_V4, IFACE_F_EGRESS_ALL_V6),
            };
            if all_to(Family::V4) {
                binding.flags |= v4_bit;
            }
            if all_to(Family::V6) {
                binding.flags |= v6_bit;
            }
            match d {
                Direction::Ingress => binding.ingress_policy = id,
                Direction::Egress => binding.egress_policy = id,
            }
            policies.push(PolicyInfo {
                id,
                direction: d,
                groups: list.clone(),
                nacl: None,
                rule_count: rules.len(),
                rules,
                peers: Vec::new(),
            });
        }
        pair_of.insert(list, binding);
    }
    let ifaces = iface_lists
        .iter()
        .map(|(iface, list)| (iface.to_string(), pair_of[list]))
        .collect();
    Ok((policies, ifaces))
}

/// Sets the `IFACE_F_*_HOSTS_ONLY_*` bits of each binding whose SG policy
/// names no peer prefix shorter than a host in a family: the tables then
/// hold no prefix search for it (`KernelTables` writes a `PEER_LENGTHS`
/// entry only for such prefixes), and the datapath skips that probe. Run
/// after `build_classes`, which fills in the peers.
pub(super) fn mark_hosts_only(
    policies: &[PolicyInfo],
    ifaces: &mut BTreeMap<String, IfaceBinding>,
) {
    let has_prefixes: HashMap<(u32, Family), bool> = policies
        .iter()
        .flat_map(|p| {
            [Family::V4, Family::V6].map(|family| {
                let prefixes = p
                    .peers
                    .iter()
                    .any(|peer| peer.family == family && peer.len < family.bits());
                ((p.id, family), prefixes)
            })
        })
        .collect();
    for binding in ifaces.values_mut() {
        let bits = [
            (
                binding.ingress_policy,
                Family::V4,
                IFACE_F_INGRESS_HOSTS_ONLY_V4,
            ),
            (
                binding.ingress_policy,
                Family::V6,
                IFACE_F_INGRESS_HOSTS_ONLY_V6,
            ),
            (
                binding.egress_policy,
                Family::V4,
                IFACE_F_EGRESS_HOSTS_ONLY_V4,
            ),
            (
                binding.egress_policy,
                Family::V6,
                IFACE_F_EGRESS_HOSTS_ONLY_V6,
            ),
        ];
        for (policy, family, bit) in bits {
            if has_prefixes.get(&(policy, family)) == Some(&false) {
                binding.flags |= bit;
            }
        }
    }
}

/// Fills in each policy's peer prefixes and returns the classes they name
/// (port sets not yet built), in ID order.
pub(super) fn build_classes(
    policies: &mut [PolicyInfo],
    rule_nets: &[Vec<Net>],
    ids: &mut Ids,
) -> Result<Vec<ClassInfo>, CompileError> {
    let mut classes: Vec<ClassInfo> = Vec::new();
    let mut class_ids: HashMap<(Family, Vec<u32>), u32> = HashMap::new();
    for policy in policies.iter_mut() {
        for family in [Family::V4, Family::V6] {
            // (CIDR, rule) pairs, sorted: each CIDR's rules are a run,
            // ascending (one flat vector, not a vector per CIDR).
            let mut pairs: Vec<(u8, u128, u32)> = Vec::new();
            for &r in &policy.rules {
                let nets = rule_nets[r as usize].iter().filter(|n| n.family == family);
                pairs.extend(nets.map(|n| (n.len, n.addr, r)));
            }
            if pairs.is_empty() {
                continue;
            }
            pairs.sort_unstable();
            pairs.dedup();
            // Each CIDR with its run in `pairs`.
            let mut cidrs: Vec<(u8, u128, usize, usize)> = Vec::with_capacity(pairs.len());
            let mut start = 0;
            for run in pairs.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
                cidrs.push((run[0].0, run[0].1, start, start + run.len()));
                start += run.len();
            }
            // Only probe the prefix lengths that exist (`cidrs` is by length).
            let mut lens: Vec<u8> = cidrs.iter().map(|&(l, ..)| l).collect();
            lens.dedup();
            // CIDR → its run, for the longer CIDRs inside it (none when
            // every CIDR has one length, e.g. a policy of hosts only).
            let by_cidr: HashMap<(u8, u128), (usize, usize)> = if lens.len() > 1 {
                cidrs.iter().map(|&(l, a, f, t)| ((l, a), (f, t))).collect()
            } else {
                HashMap::new()
            };
            cidrs.sort_unstable_by_key(|&(l, a, ..)| (a, l));
            let mut set: Vec<u32> = Vec::new();
            for (len, addr, own_from, own_to) in cidrs {
                set.clear();
                // Shorter prefixes that hold it are looked up; its own run
                // is known (a policy of hosts only looks up nothing).
                for &l in lens.iter().take_while(|&&l| l < len) {
                    if let Some(&(from, to)) = by_cidr.get(&(l, addr & mask(family, l))) {
                        set.extend(pairs[from..to].iter().map(|&(_, _, r)| r));
                    }
                }
                set.extend(pairs[own_from..own_to].iter().map(|&(_, _, r)| r));
                set.sort_unstable();
                set.dedup();
                // The key owns the set: looked up without a copy, copied
                // once into a new class.
                let key = (family, std::mem::take(&mut set));
                let class = match class_ids.get(&key) {
                    Some(&id) => {
                        set = key.1;
                        id
                    }
                    None => {
                        let id = ids.alloc()?;
                        classes.push(ClassInfo {
                            id,
                            family,
                            rules: key.1.clone(),
                            port_sets: Vec::new(),
                        });
                        class_ids.insert(key, id);
                        id
                    }
                };
                policy.peers.push(PeerPrefix {
                    family,
                    len,
                    addr,
                    class,
                });
            }
        }
        policy.peers.sort_unstable();
    }
    Ok(classes)
}
