//! Network ACLs (SPEC 2) in the SG tables.
//!
//! First match over numbered rules is "the matching rule with the lowest
//! number", so a NACL direction compiles exactly like an SG policy: its
//! rules get global indexes after every SG rule, in number order (the
//! implicit `*` deny last, as a real rule so it has a counter), the
//! peer → class step is the SG one ([`super::policies::build_classes`]),
//! and each class's port intervals name the lowest-numbered rule that
//! matches each port ([`nacl_port_sets`]), with its action in
//! `RULE_F_NACL_DENY`. The kernel then judges a NACL in the same bounded
//! number of probes as an SG policy, whatever the rule count.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sg_common::{NACL_RULE_IMPLICIT, RULE_F_NACL_DENY, RuleInterval, RuleRef};

use super::{
    ClassInfo, CompileError, CompiledRule, Ids, IfaceBinding, NaclRuleInfo, PolicyInfo, PortSet,
    port_sets::{Match, RANK_ANY_PROTO, proto_in_family, rule_matches},
    resolve::Net,
};
use crate::config::{Config, Direction, NaclAction, Peer, PortMatch, Proto};

/// Every NACL rule of the configuration, indexed after the SG rules.
pub(super) struct NaclRules {
    pub(super) rules: Vec<CompiledRule>,
    pub(super) nets: Vec<Vec<Net>>,
    pub(super) matches: Vec<Vec<Match>>,
    /// (NACL, direction) -> its global indexes, ascending by rule number.
    ranges: BTreeMap<(String, Direction), std::ops::Range<u32>>,
}

/// The stable ID of a NACL rule: its NACL, direction and number (`*` for
/// the implicit rule). Hit counters follow the number, as in AWS.
pub fn nacl_rule_id(nacl: &str, direction: Direction, number: u16) -> String {
    format!(
        "nacl:{nacl}:{direction}:{}",
        crate::config::nacl_rule_label(number)
    )
}

pub(super) fn nacl_rules(config: &Config, first_index: u32) -> NaclRules {
    let mut out = NaclRules {
        rules: Vec::new(),
        nets: Vec::new(),
        matches: Vec::new(),
        ranges: BTreeMap::new(),
    };
    let anywhere = vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())];
    for nacl in config.nacls.values() {
        for d in Direction::ALL {
            let start = first_index + out.rules.len() as u32;
            let implicit = (
                NACL_RULE_IMPLICIT,
                NaclAction::Deny,
                Proto::All,
                PortMatch::All,
                anywhere.clone(),
                None,
                None,
            );
            let rules = nacl
                .rules(d)
                .iter()
                .map(|r| {
                    (
                        r.number,
                        r.action,
                        r.proto,
                        r.ports,
                        nacl_rule_cidrs(config, &r.peers),
                        r.name.clone(),
                        r.description.clone(),
                    )
                })
                .chain(std::iter::once(implicit));
            for (number, action, proto, ports, peers, name, description) in rules {
                out.rules.push(CompiledRule {
                    id: nacl_rule_id(&nacl.name, d, number),
                    group: nacl.name.clone(),
                    direction: d,
                    index: usize::from(number),
                    name,
                    description,
                    nacl: Some(NaclRuleInfo { number, action }),
                });
                let mut nets: Vec<Net> = peers.iter().map(Net::from_ipnet).collect();
                nets.sort();
                nets.dedup();
                out.nets.push(nets);
                out.matches.push(rule_matches(proto, &ports));
            }
            let end = first_index + out.rules.len() as u32;
            out.ranges.insert((nacl.name.clone(), d), start..end);
        }
    }
    out
}

/// The CIDRs of a NACL rule's peer, `pl:` lists resolved where the SG
/// rules' are ([`Config::static_peer_cidrs`]): an empty list matches
/// nothing.
fn nacl_rule_cidrs(config: &Config, peers: &[Peer]) -> Vec<IpNet> {
    peers
        .iter()
        .flat_map(|p| config.static_peer_cidrs(p).unwrap_or_default())
        .collect()
}

/// One policy per NACL that an interface names and direction, and the
/// interfaces' bindings updated with them.
pub(super) fn build_nacl_policies(
    config: &Config,
    nacl: &NaclRules,
    ifaces: &mut BTreeMap<String, IfaceBinding>,
    ids: &mut Ids,
) -> Result<Vec<PolicyInfo>, CompileError> {
    let used: BTreeSet<&str> = ifaces
        .keys()
        .filter_map(|i| config.interfaces.get(i)?.nacl.as_deref())
        .collect();
    let mut policies = Vec::new();
    let mut ids_of: BTreeMap<(&str, Direction), u32> = BTreeMap::new();
    for name in used {
        for d in Direction::ALL {
            let Some(range) = nacl.ranges.get(&(name.to_string(), d)) else {
                return Err(CompileError::UnknownNacl {
                    nacl: name.to_string(),
                });
            };
            let id = ids.alloc()?;
            ids_of.insert((name, d), id);
            policies.push(PolicyInfo {
                id,
                direction: d,
                groups: Vec::new(),
                nacl: Some(name.to_string()),
                // The implicit `*` included: it is a rule of the tables.
                rule_count: range.len(),
                rules: range.clone().collect(),
                peers: Vec::new(),
            });
        }
    }
    for (iface, b) in ifaces.iter_mut() {
        if let Some(name) = config.interfaces.get(iface).and_then(|i| i.nacl.as_deref()) {
            b.ingress_nacl = ids_of[&(name, Direction::Ingress)];
            b.egress_nacl = ids_of[&(name, Direction::Egress)];
        }
    }
    Ok(policies)
}

/// The port sets of a NACL class: per protocol, each slot names the
/// lowest-numbered rule of the class that matches it (the class's rules
/// ascend by number); the protocol-`all` rules also make the set for
/// every other protocol. The implicit `*` rule makes every set whole.
pub(super) fn nacl_port_sets(
    class: &ClassInfo,
    matches: &[Vec<Match>],
    deny: impl Fn(u32) -> bool,
) -> Vec<PortSet> {
    let protos: BTreeSet<u8> = class
        .rules
        .iter()
        .flat_map(|&r| matches[r as usize].iter())
        .filter(|m| m.rank != RANK_ANY_PROTO && proto_in_family(m.proto, class.family))
        .map(|m| m.proto)
        .collect();
    let paint_for = |proto: Option<u8>| {
        let mut painter = Painter::default();
        for &r in &class.rules {
            let rule = RuleRef {
                rule: r,
                flags: if deny(r) { RULE_F_NACL_DENY } else { 0 },
            };
            for m in &matches[r as usize] {
                let hit = m.rank == RANK_ANY_PROTO || Some(m.proto) == proto;
                if hit {
                    painter.paint(m.lo, m.hi, rule);
                }
            }
        }
        painter.intervals()
    };
    let mut out = Vec::new();
    let any = paint_for(None);
    if !any.is_empty() {
        out.push(PortSet {
            proto: None,
            intervals: any,
        });
    }
    for p in protos {
        let intervals = paint_for(Some(p));
        if !intervals.is_empty() {
            out.push(PortSet {
                proto: Some(p),
                intervals,
            });
        }
    }
    out
}

/// Disjoint intervals painted first come, first served: a later paint
/// fills only the slots no earlier one took.
#[derive(Default)]
struct Painter {
    /// lo -> (hi, rule).
    taken: BTreeMap<u32, (u32, RuleRef)>,
}

impl Painter {
    fn paint(&mut self, lo: u32, hi: u32, rule: RuleRef) {
        let mut cursor = lo;
        // A taken interval that starts before `lo` may cover it.
        if let Some((_, &(h, _))) = self.taken.range(..lo).next_back()
            && h >= lo
        {
            cursor = h + 1;
        }
        while cursor <= hi {
            match self
                .taken
                .range(cursor..)
                .next()
                .map(|(&l, &(h, _))| (l, h))
            {
                Some((l, h)) if l <= hi => {
                    if l > cursor {
                        self.taken.insert(cursor, (l - 1, rule));
                    }
                    cursor = h + 1;
                }
                _ => {
                    self.taken.insert(cursor, (hi, rule));
                    break;
                }
            }
        }
    }

    /// Sorted, with neighbours naming the same rule merged.
    fn intervals(&self) -> Vec<RuleInterval> {
        let mut out: Vec<RuleInterval> = Vec::new();
        for (&lo, &(hi, rule)) in &self.taken {
            if let Some(last) = out.last_mut()
                && u32::from(last.hi) + 1 == lo
                && last.rule == rule
            {
                last.hi = hi as u16;
                continue;
            }
            out.push(RuleInterval {
                lo: lo as u16,
                hi: hi as u16,
                rule,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_paint_wins_and_later_ones_fill_gaps() {
        let r = |rule| RuleRef { rule, flags: 0 };
        let mut p = Painter::default();
        p.paint(100, 200, r(1));
        p.paint(0, 0xffff, r(2));
        p.paint(150, 300, r(3));
        let got: Vec<(u16, u16, u32)> = p
            .intervals()
            .iter()
            .map(|i| (i.lo, i.hi, i.rule.rule))
            .collect();
        assert_eq!(got, vec![(0, 99, 2), (100, 200, 1), (201, 0xffff, 2)]);
    }
}
