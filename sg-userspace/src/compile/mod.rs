//! Rule compiler: configuration → the kernel's policy tables.
//!
//! A pure function with no kernel and no root. Classification takes two
//! steps per packet, whatever the number of rules, each a hash lookup and
//! a bounded search (no LPM trie, which gets deeper with every entry):
//!
//! 1. **Peer → class.** Each policy (the rules of one group list in one
//!    direction) has its peers as prefixes `(length, address)`, each
//!    naming a class: the set of rules whose peers cover it
//!    ([`policies`]). The longest prefix that holds the packet's address
//!    gives the class.
//! 2. **(class, protocol, port) → rule.** Each class has, per protocol, the
//!    sorted disjoint port intervals of its rules, each naming the rule
//!    that allows it ([`port_sets`]); a binary search finds the packet's.
//!
//! [`compile`] runs the steps in order: rules and peers resolved
//! ([`resolve`]), policies and classes built, port sets built. Kernel map
//! entries are derived from the result in one place, [`KernelTables`].
//!
//! Policy and class IDs come from one counter that starts at `first_id`, so
//! a later compile can use fresh IDs: the loader writes the new entries,
//! switches each interface's `IfacePolicy` with one map update, then deletes
//! the old entries.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use sg_common::RuleRef;

use crate::config::{Config, Direction, NaclAction};

mod audit;
mod nacl;
mod peer_search;
mod policies;
mod port_sets;
mod resolve;
mod scope;
mod tables;
#[cfg(test)]
mod tests;

pub use nacl::nacl_rule_id;
pub use port_sets::PortSet;
pub use tables::{KernelTables, PeerTables, RuleSet};

/// A local interface to enforce: its groups and its addresses. The
/// addresses make the interface a member of each of its groups (SPEC 1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub groups: Vec<String>,
    pub addrs: Vec<IpAddr>,
}

/// The interfaces of `[interfaces.*]`, with no addresses: enough for
/// `sg validate`, which runs without looking at the machine.
pub fn attachments_from_config(config: &Config) -> Vec<Attachment> {
    config
        .interfaces
        .iter()
        .map(|(iface, i)| Attachment {
            iface: iface.clone(),
            groups: i.groups.clone(),
            addrs: Vec::new(),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("interface `{iface}`: unknown group `{group}`")]
    UnknownGroup { iface: String, group: String },
    #[error("interface `{iface}` has no security group; give it at least one")]
    NoGroups { iface: String },
    #[error("interface `{iface}` is listed twice")]
    DuplicateInterface { iface: String },
    #[error(
        "policy and class IDs exhausted: {needed} IDs needed from {first_id}; \
         detach and attach again to start over"
    )]
    IdsExhausted { first_id: u32, needed: u64 },
    #[error("too many rules: {count} (at most {max})")]
    TooManyRules { count: usize, max: usize },
    #[error("unknown NACL `{nacl}`")]
    UnknownNacl { nacl: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `sg_common::FAMILY_*`.
    pub const fn code(self) -> u8 {
        match self {
            Family::V4 => sg_common::FAMILY_V4,
            Family::V6 => sg_common::FAMILY_V6,
        }
    }

    /// Address length in bits.
    pub const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A rule as the maps name it: `RuleRef.rule` indexes [`Compiled::rules`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    pub id: String,
    pub group: String,
    pub direction: Direction,
    pub index: usize,
    pub name: Option<String>,
    pub description: Option<String>,
    /// A NACL rule (`group` is then the NACL's name, `index` its number).
    pub nacl: Option<NaclRuleInfo>,
}

/// What a NACL rule is beyond an SG rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NaclRuleInfo {
    /// 1-32766, or `sg_common::NACL_RULE_IMPLICIT` for `*`.
    pub number: u16,
    pub action: NaclAction,
}

/// One policy: the union of the rules of `groups` in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub id: u32,
    pub direction: Direction,
    /// Sorted, without duplicates (empty for a NACL).
    pub groups: Vec<String>,
    /// The NACL this policy judges by (then `groups` is empty).
    pub nacl: Option<String>,
    pub rule_count: usize,
    /// Indexes into [`Compiled::rules`], ascending.
    pub rules: Vec<u32>,
    /// Its peers, sorted, each `(family, length, address)` once.
    pub peers: Vec<PeerPrefix>,
}

/// A peer prefix of a policy: the `family` addresses whose first `len`
/// bits are those of `addr` (in the low bits, host bits zero) are in
/// `class`, unless a longer prefix of the policy holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerPrefix {
    pub family: Family,
    pub len: u8,
    pub addr: u128,
    pub class: u32,
}

/// A peer class: the set of rules that cover some addresses, and what
/// they allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassInfo {
    pub id: u32,
    pub family: Family,
    /// Indexes into [`Compiled::rules`], ascending.
    pub rules: Vec<u32>,
    /// Per protocol, the port intervals and the rule each names (by
    /// index into [`Compiled::rules`], or by slot once
    /// [`Compiled::renumber_rules`] ran); sorted, `None` first.
    pub port_sets: Vec<PortSet>,
}

/// What goes into `IFACE_POLICY` for an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceBinding {
    pub ingress_policy: u32,
    pub egress_policy: u32,
    /// `IFACE_F_*`: which directions allow all traffic everywhere, per
    /// family (for the untracked-flow rule, SPEC 1.8).
    pub flags: u32,
    /// NACL policies (SPEC 2); 0: the interface has no NACL.
    pub ingress_nacl: u32,
    pub egress_nacl: u32,
}

impl IfaceBinding {
    /// The interface's `IFACE_POLICY` entry: SG and NACL policies and flags,
    /// switched together in one map update.
    pub fn kernel_value(&self) -> sg_common::IfacePolicy {
        sg_common::IfacePolicy {
            ingress_policy: self.ingress_policy,
            egress_policy: self.egress_policy,
            flags: self.flags,
            _pad: 0,
            ingress_nacl: self.ingress_nacl,
            egress_nacl: self.egress_nacl,
        }
    }

    pub fn policy(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Ingress => self.ingress_policy,
            Direction::Egress => self.egress_policy,
        }
    }
}

/// The compiled policy set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compiled {
    /// Every rule of every group, in group-name order, ingress before egress.
    pub rules: Vec<CompiledRule>,
    /// In ID order.
    pub policies: Vec<PolicyInfo>,
    /// In ID order.
    pub classes: Vec<ClassInfo>,
    pub ifaces: BTreeMap<String, IfaceBinding>,
    /// The first ID not used: pass it as `first_id` to the next compile.
    pub next_id: u32,
    /// Groups in the configuration.
    pub group_count: usize,
    /// NACLs in the configuration.
    pub nacl_count: usize,
}

/// Counts for `sg validate`: the configuration, and the entries the
/// kernel's maps will hold for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub groups: usize,
    pub rules: usize,
    /// NACLs in the configuration and their numbered rules.
    pub nacls: usize,
    pub nacl_rules: usize,
    pub interfaces: usize,
    pub policies: usize,
    pub classes: usize,
    /// `PEER_HOSTS_V4` / `_V6`.
    pub peer_hosts_v4: usize,
    pub peer_hosts_v6: usize,
    /// `PEER_NETS_V4` / `_V6`: prefixes shorter than a host, and markers.
    pub peer_prefixes_v4: usize,
    pub peer_prefixes_v6: usize,
    /// `PEER_LENGTHS`: one per policy and family with prefixes.
    pub length_trees: usize,
    /// `RULE_SETS`.
    pub rule_sets: usize,
    /// `RULE_INTERVALS` in use.
    pub rule_intervals: usize,
}

impl Compiled {
    pub fn summary(&self) -> Summary {
        let t = KernelTables::of(self);
        Summary {
            groups: self.group_count,
            rules: self.rules.iter().filter(|r| r.nacl.is_none()).count(),
            nacls: self.nacl_count,
            nacl_rules: self
                .rules
                .iter()
                .filter(|r| {
                    r.nacl
                        .is_some_and(|n| n.number != sg_common::NACL_RULE_IMPLICIT)
                })
                .count(),
            interfaces: self.ifaces.len(),
            policies: self.policies.len(),
            classes: self.classes.len(),
            peer_hosts_v4: t.peers.hosts_v4.len(),
            peer_hosts_v6: t.peers.hosts_v6.len(),
            peer_prefixes_v4: t.peers.nets_v4.len(),
            peer_prefixes_v6: t.peers.nets_v6.len(),
            length_trees: t.peers.lengths.len(),
            rule_sets: t.rule_sets.len(),
            rule_intervals: t.intervals(),
        }
    }

    /// The rule that a `RuleRef` names.
    pub fn rule(&self, r: RuleRef) -> Option<&CompiledRule> {
        self.rules.get(r.rule as usize)
    }

    /// Every policy and class ID this compile uses, for deleting the
    /// entries of an old generation.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.policies
            .iter()
            .map(|p| p.id)
            .chain(self.classes.iter().map(|c| c.id))
    }

    /// Makes the intervals name `slot(index)` instead of each rule's index
    /// into [`Compiled::rules`] (`slot` must not map two rules to one).
    pub fn renumber_rules(&mut self, slot: impl Fn(u32) -> u32) {
        let intervals = self
            .classes
            .iter_mut()
            .flat_map(|c| c.port_sets.iter_mut())
            .flat_map(|s| s.intervals.iter_mut());
        for i in intervals {
            i.rule.rule = slot(i.rule.rule);
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "groups:            {}", self.groups)?;
        writeln!(f, "rules:             {}", self.rules)?;
        if self.nacls > 0 {
            writeln!(f, "nacls:             {}", self.nacls)?;
            writeln!(f, "nacl rules:        {}", self.nacl_rules)?;
        }
        writeln!(f, "interfaces:        {}", self.interfaces)?;
        writeln!(f, "policies:          {}", self.policies)?;
        writeln!(f, "peer classes:      {}", self.classes)?;
        writeln!(f, "peer hosts v4:     {}", self.peer_hosts_v4)?;
        writeln!(f, "peer hosts v6:     {}", self.peer_hosts_v6)?;
        writeln!(f, "peer prefixes v4:  {}", self.peer_prefixes_v4)?;
        writeln!(f, "peer prefixes v6:  {}", self.peer_prefixes_v6)?;
        writeln!(f, "length trees:      {}", self.length_trees)?;
        writeln!(f, "rule sets:         {}", self.rule_sets)?;
        write!(f, "rule intervals:    {}", self.rule_intervals)
    }
}

// ---------------------------------------------------------------------------
// The compiler
// ---------------------------------------------------------------------------

pub(super) struct Ids {
    first: u32,
    next: u64,
}

impl Ids {
    pub(super) fn alloc(&mut self) -> Result<u32, CompileError> {
        let id = u32::try_from(self.next).map_err(|_| CompileError::IdsExhausted {
            first_id: self.first,
            needed: self.next - u64::from(self.first) + 1,
        })?;
        self.next += 1;
        Ok(id)
    }
}

/// Compiles `config` for the interfaces in `attachments`.
pub fn compile(
    config: &Config,
    attachments: &[Attachment],
    first_id: u32,
) -> Result<Compiled, CompileError> {
    compile_scoped(config, attachments, first_id, false)
}

/// [`compile`] of only what `attachments` enforce (`scope`): the groups of
/// attached interfaces, what their rules name, their NACLs. What attach,
/// apply and detach install: a config's rules for interfaces not attached
/// here are neither compiled nor recorded (issue 14).
pub fn compile_attached(
    config: &Config,
    attachments: &[Attachment],
    first_id: u32,
) -> Result<Compiled, CompileError> {
    compile_scoped(config, attachments, first_id, true)
}

fn compile_scoped(
    config: &Config,
    attachments: &[Attachment],
    first_id: u32,
    scoped: bool,
) -> Result<Compiled, CompileError> {
    let (group_count, nacl_count) = (config.groups.len(), config.nacls.len());
    let config = &*if scoped {
        scope::in_scope(config, attachments)
    } else {
        std::borrow::Cow::Borrowed(config)
    };
    let first = first_id.max(1);
    let mut ids = Ids {
        first,
        next: u64::from(first),
    };
    let index = resolve::RuleIndex::new(config)?;
    let attached = resolve::resolve_attachments(config, attachments)?;
    let mut rule_nets = resolve::rule_nets(config, &index.all, &attached.local);
    let (mut policies, mut ifaces) =
        policies::build_policies(config, &index, &rule_nets, &attached.lists, &mut ids)?;
    // NACL rules come after every SG rule, in the same tables.
    let sg_rules = index.all.len() as u32;
    let nacl = nacl::nacl_rules(config, sg_rules);
    policies.extend(nacl::build_nacl_policies(
        config,
        &nacl,
        &mut ifaces,
        &mut ids,
    )?);
    rule_nets.extend(nacl.nets.iter().cloned());
    audit::mark(config, attachments, &mut ifaces);
    let mut classes = policies::build_classes(&mut policies, &rule_nets, &mut ids)?;
    policies::mark_hosts_only(&policies, &mut ifaces);
    let mut matches: Vec<_> = index
        .all
        .iter()
        .map(|r| port_sets::rule_matches(r.proto, &r.ports))
        .collect();
    matches.extend(nacl.matches.iter().cloned());
    let mut rules = index.compiled();
    rules.extend(nacl.rules);
    let deny = |r: u32| {
        rules[r as usize]
            .nacl
            .is_some_and(|n| n.action == NaclAction::Deny)
    };
    for class in &mut classes {
        // A class holds the rules of one policy: SG rules or NACL rules.
        class.port_sets = if class.rules.first().is_some_and(|&r| r >= sg_rules) {
            nacl::nacl_port_sets(class, &matches, deny)
        } else {
            port_sets::port_sets(class, &matches, &rule_nets)
        };
    }
    let next_id = u32::try_from(ids.next).map_err(|_| CompileError::IdsExhausted {
        first_id: ids.first,
        needed: ids.next - u64::from(ids.first),
    })?;
    Ok(Compiled {
        rules,
        policies,
        classes,
        ifaces,
        next_id,
        group_count,
        nacl_count,
    })
}
