//! Step 1 of the compiler: names → addresses. Rules get their global
//! index, interfaces their sorted group lists, groups their members (listed
//! `members` and the addresses of their interfaces), and every rule's peers
//! become canonical CIDRs.

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{Attachment, CompileError, CompiledRule, Family};
use crate::config::{Config, Direction, Peer, Rule};

/// A canonical CIDR: the address in the low bits of a u128 (IPv4 in the low
/// 32), host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Net {
    pub(super) family: Family,
    pub(super) len: u8,
    pub(super) addr: u128,
}

/// The first `len` bits of a `family` address, as a mask over the low bits.
pub(super) fn mask(family: Family, len: u8) -> u128 {
    let all = u128::MAX >> (128 - u32::from(family.bits()));
    all & !all.checked_shr(u32::from(len)).unwrap_or(0)
}

impl Net {
    pub(super) fn from_ipnet(net: &IpNet) -> Net {
        let (family, addr) = match net.network() {
            IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (Family::V6, u128::from(a)),
        };
        let len = net.prefix_len();
        Net {
            family,
            len,
            addr: addr & mask(family, len),
        }
    }

    fn host(addr: &IpAddr) -> Net {
        Net::from_ipnet(&IpNet::from(*addr))
    }
}

/// Every rule of the configuration, globally indexed: the index is what
/// the maps name (`RuleRef.rule`).
pub(super) struct RuleIndex<'c> {
    pub(super) all: Vec<&'c Rule>,
    /// First global index of each (group, direction).
    base: HashMap<(&'c str, Direction), u32>,
}

impl<'c> RuleIndex<'c> {
    pub(super) fn new(config: &'c Config) -> Result<RuleIndex<'c>, CompileError> {
        let all: Vec<&Rule> = config.all_rules().collect();
        if all.len() > u32::MAX as usize {
            return Err(CompileError::TooManyRules {
                count: all.len(),
                max: u32::MAX as usize,
            });
        }
        let mut base = HashMap::new();
        let mut i = 0u32;
        for g in config.groups.values() {
            for d in Direction::ALL {
                base.insert((g.name.as_str(), d), i);
                i += g.rules(d).len() as u32;
            }
        }
        Ok(RuleIndex { all, base })
    }

    /// The global indexes of `group`'s rules in `direction`.
    pub(super) fn of(&self, config: &Config, group: &str, d: Direction) -> std::ops::Range<u32> {
        let b = self.base[&(group, d)];
        b..b + config.groups[group].rules(d).len() as u32
    }

    pub(super) fn compiled(&self) -> Vec<CompiledRule> {
        self.all
            .iter()
            .map(|r| CompiledRule {
                id: r.id.clone(),
                group: r.group.clone(),
                direction: r.direction,
                index: r.index,
                name: r.name.clone(),
                description: r.description.clone(),
                nacl: None,
            })
            .collect()
    }
}

/// The interfaces to enforce on, resolved.
pub(super) struct Attached<'a> {
    /// Each interface and its group list, sorted, without duplicates.
    pub(super) lists: Vec<(&'a str, Vec<String>)>,
    /// The addresses each group gets from its interfaces.
    pub(super) local: HashMap<&'a str, Vec<Net>>,
}

/// The attachments, checked: each interface once, with at least one known
/// group.
pub(super) fn resolve_attachments<'a>(
    config: &'a Config,
    attachments: &'a [Attachment],
) -> Result<Attached<'a>, CompileError> {
    let mut seen = HashSet::new();
    let mut lists = Vec::new();
    let mut local: HashMap<&str, Vec<Net>> = HashMap::new();
    for a in attachments {
        if !seen.insert(a.iface.as_str()) {
            return Err(CompileError::DuplicateInterface {
                iface: a.iface.clone(),
            });
        }
        if a.groups.is_empty() {
            return Err(CompileError::NoGroups {
                iface: a.iface.clone(),
            });
        }
        let mut list: Vec<String> = Vec::new();
        for g in &a.groups {
            let Some((name, _)) = config.groups.get_key_value(g) else {
                return Err(CompileError::UnknownGroup {
                    iface: a.iface.clone(),
                    group: g.clone(),
                });
            };
            list.push(g.clone());
            local
                .entry(name.as_str())
                .or_default()
                .extend(a.addrs.iter().map(Net::host));
        }
        list.sort();
        list.dedup();
        lists.push((a.iface.as_str(), list));
    }
    Ok(Attached { lists, local })
}

/// Each rule's peer CIDRs, with `sg:` references resolved to the group's
/// members and interface addresses; sorted and deduplicated.
pub(super) fn rule_nets(
    config: &Config,
    rules: &[&Rule],
    local: &HashMap<&str, Vec<Net>>,
) -> Vec<Vec<Net>> {
    let members: HashMap<&str, Vec<Net>> = config
        .groups
        .values()
        .map(|g| {
            let mut m: Vec<Net> = g.members.iter().map(Net::from_ipnet).collect();
            if let Some(l) = local.get(g.name.as_str()) {
                m.extend(l.iter().copied());
            }
            m.sort();
            m.dedup();
            (g.name.as_str(), m)
        })
        .collect();
    rules
        .iter()
        .map(|r| {
            let mut nets = Vec::new();
            for p in &r.peers {
                match (p, config.static_peer_cidrs(p)) {
                    (_, Some(cidrs)) => nets.extend(cidrs.iter().map(Net::from_ipnet)),
                    (Peer::Group(g), None) => {
                        nets.extend(members.get(g.as_str()).into_iter().flatten().copied());
                    }
                    (_, None) => {}
                }
            }
            nets.sort();
            nets.dedup();
            nets
        })
        .collect()
}

/// Does a rule with peers `nets` cover the whole address space of `family`?
pub(super) fn anywhere(nets: &[Net], family: Family) -> bool {
    nets.iter().any(|n| n.family == family && n.len == 0)
}
