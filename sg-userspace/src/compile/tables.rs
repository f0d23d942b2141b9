//! The one place a compiled policy set becomes kernel map entries: peer
//! prefixes → `PEER_HOSTS_*` (hosts), `PEER_NETS_*` (shorter prefixes and
//! their markers) and `PEER_LENGTHS` (see [`super::peer_search`]); port
//! sets → `RULE_SETS` and the runs of `RULE_INTERVALS` they point at.

use std::collections::BTreeMap;

use sg_common::{
    PeerKeyV4, PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet, PeerNetKeyV4, PeerNetKeyV6,
    RuleInterval, RuleSetKey,
};

use super::{
    ClassInfo, Compiled, Family, PolicyInfo,
    peer_search::{Prefixes, search_tables},
};

/// Everything the kernel's peer lookup reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTables {
    pub hosts_v4: Vec<(PeerKeyV4, u32)>,
    pub hosts_v6: Vec<(PeerKeyV6, u32)>,
    pub nets_v4: Vec<(PeerNetKeyV4, PeerNet)>,
    pub nets_v6: Vec<(PeerNetKeyV6, PeerNet)>,
    pub lengths: Vec<(PeerLengthsKey, PeerLengths)>,
}

/// One `RULE_SETS` entry and the intervals it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub key: RuleSetKey,
    pub intervals: Vec<RuleInterval>,
}

/// Exactly what goes into the kernel's policy maps for a compiled policy
/// set (or the part of one an apply writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTables {
    pub peers: PeerTables,
    /// Sorted by key.
    pub rule_sets: Vec<RuleSet>,
}

impl KernelTables {
    /// The tables of every policy and class of `compiled`.
    pub fn of(compiled: &Compiled) -> KernelTables {
        KernelTables::build(&compiled.policies, &compiled.classes)
    }

    /// The tables of `policies` (their peers) and `classes` (their port
    /// sets); each class ID must come once.
    pub fn build<'a>(
        policies: impl IntoIterator<Item = &'a PolicyInfo>,
        classes: impl IntoIterator<Item = &'a ClassInfo>,
    ) -> KernelTables {
        let mut t = KernelTables::default();
        // Lengths of IPv4 before IPv6, each by policy ID.
        let mut lengths: BTreeMap<(Family, u32), PeerLengths> = BTreeMap::new();
        for policy in policies {
            let id = policy.id.to_be_bytes();
            for family in [Family::V4, Family::V6] {
                let mut prefixes = Prefixes::default();
                for p in policy.peers.iter().filter(|p| p.family == family) {
                    if p.len == family.bits() {
                        match family {
                            Family::V4 => t.peers.hosts_v4.push((host_v4(id, p.addr), p.class)),
                            Family::V6 => t.peers.hosts_v6.push((host_v6(id, p.addr), p.class)),
                        }
                    } else {
                        prefixes.insert((p.len, p.addr), p.class);
                    }
                }
                if prefixes.is_empty() {
                    continue;
                }
                let (tree, nets) = search_tables(&prefixes, family);
                lengths.insert((family, policy.id), tree);
                for ((len, addr), net) in nets {
                    match family {
                        Family::V4 => t.peers.nets_v4.push((net_v4(id, len, addr), net)),
                        Family::V6 => t.peers.nets_v6.push((net_v6(id, len, addr), net)),
                    }
                }
            }
        }
        let p = &mut t.peers;
        p.hosts_v4.sort_unstable_by_key(|(k, _)| (k.policy, k.addr));
        p.hosts_v6.sort_unstable_by_key(|(k, _)| (k.policy, k.addr));
        p.nets_v4.sort_unstable_by_key(|(k, _)| *k);
        p.nets_v6.sort_unstable_by_key(|(k, _)| *k);
        p.lengths = lengths
            .into_iter()
            .map(|((family, policy), tree)| {
                let key = PeerLengthsKey {
                    policy,
                    family: family.code(),
                    _pad: [0; 3],
                };
                (key, tree)
            })
            .collect();
        for class in classes {
            for set in &class.port_sets {
                let key = RuleSetKey {
                    class: class.id,
                    proto: set.proto.unwrap_or(0),
                    any: u8::from(set.proto.is_none()),
                    _pad: [0; 2],
                };
                t.rule_sets.push(RuleSet {
                    key,
                    intervals: set.intervals.clone(),
                });
            }
        }
        t.rule_sets.sort_by_key(|s| s.key);
        t
    }

    /// Map entries: peer hosts, prefixes and markers, length trees, rule
    /// sets and their intervals.
    pub fn entries(&self) -> usize {
        let p = &self.peers;
        p.hosts_v4.len()
            + p.hosts_v6.len()
            + p.nets_v4.len()
            + p.nets_v6.len()
            + p.lengths.len()
            + self.rule_sets.len()
            + self.intervals()
    }

    /// Intervals over all rule sets.
    pub fn intervals(&self) -> usize {
        self.rule_sets.iter().map(|s| s.intervals.len()).sum()
    }
}

fn host_v4(policy: [u8; 4], addr: u128) -> PeerKeyV4 {
    PeerKeyV4 {
        policy,
        addr: (addr as u32).to_be_bytes(),
    }
}

fn host_v6(policy: [u8; 4], addr: u128) -> PeerKeyV6 {
    PeerKeyV6 {
        policy,
        addr: addr.to_be_bytes(),
    }
}

fn net_v4(policy: [u8; 4], len: u8, addr: u128) -> PeerNetKeyV4 {
    PeerNetKeyV4 {
        policy,
        len,
        _pad: [0; 3],
        addr: (addr as u32).to_be_bytes(),
    }
}

fn net_v6(policy: [u8; 4], len: u8, addr: u128) -> PeerNetKeyV6 {
    PeerNetKeyV6 {
        policy,
        len,
        _pad: [0; 3],
        addr: addr.to_be_bytes(),
    }
}
