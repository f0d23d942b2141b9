//! Rule compiler: configuration → the exact BPF map entries.
//!
//! A pure function with no kernel and no root. The shape follows Cilium's
//! policy path (DESIGN-NOTES "Classification"): two steps per packet,
//! whatever the number of rules, each a hash and a bounded search rather
//! than an LPM trie (a trie gets deeper with every entry).
//!
//! 1. **Peer → class.** For each policy and address family, the distinct
//!    peer CIDRs of its rules are split into classes: the class of CIDR `c`
//!    is the set of rules with a peer CIDR that contains `c`. The longest
//!    match for an address then carries every rule whose peer covers the
//!    address (prefixes that contain one address are nested, so the longest
//!    one is inside every other). Identical rule sets share one class ID.
//!    Entry: `{prefix_len = 32 + cidr_len, policy (BE), addr (masked)}`;
//!    [`peer_tables`] turns them into the kernel's host hash and binary
//!    search on prefix lengths.
//! 2. **(class, proto, port) → rule.** Each rule of a class becomes match
//!    blocks, prefixes over `{class (BE), proto, port (BE)}` ([`RuleKey`]):
//!    - all protocols: prefix 32, proto and port zero;
//!    - one protocol, every port (or a protocol without ports, or ICMP with
//!      no type): prefix 40, port zero;
//!    - a port range: its minimal cover by aligned blocks, prefix 40 + bits;
//!    - ICMP/ICMPv6: the port slot holds `type << 8 | code`; type only is
//!      prefix 48, type and code 56.
//!
//!    The longest block that covers a packet names its rule, an index into
//!    [`Compiled::rules`]. The kernel does not walk blocks: [`rule_sets`]
//!    flattens each class's blocks, per protocol, into sorted disjoint
//!    port intervals that give the same answer.
//!
//! **What the kernel must use as the port for a packet:** the destination
//! port for TCP (6) and UDP (17); `type << 8 | code` for ICMP (1) and
//! ICMPv6 (58); zero for every other protocol.
//!
//! Policy and class IDs come from one counter that starts at `first_id`, so
//! a later compile can use fresh IDs: the loader writes the new entries,
//! switches each interface's `IfacePolicy` with one map update, then deletes
//! the old entries.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use sg_common::{
    ID_PREFIX_BITS, IFACE_F_EGRESS_ALL_V4, IFACE_F_EGRESS_ALL_V6, IFACE_F_INGRESS_ALL_V4,
    IFACE_F_INGRESS_ALL_V6, PeerKeyV4, PeerKeyV6, RULE_F_ANYWHERE, RuleRef,
};

use crate::config::{Config, Direction, Peer, PortMatch, Proto, Rule};

mod peer_search;
mod rule_sets;
#[cfg(test)]
mod tests;

pub use peer_search::{PeerTables, peer_tables};
pub use rule_sets::{RuleSet, rule_sets};

/// Exactly what goes into the kernel's policy maps for a compiled policy
/// set (or the part of one an apply writes), derived once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelTables {
    pub peers: PeerTables,
    pub rule_sets: Vec<RuleSet>,
}

impl KernelTables {
    pub fn of(compiled: &Compiled) -> KernelTables {
        KernelTables {
            peers: peer_tables(&compiled.peers_v4, &compiled.peers_v6),
            rule_sets: rule_sets(&compiled.rule_entries),
        }
    }

    /// Map entries: peer hosts, prefixes and markers, length trees, rule
    /// sets and their intervals.
    pub fn entries(&self) -> usize {
        let p = &self.peers;
        let intervals: usize = self.rule_sets.iter().map(|s| s.intervals.len()).sum();
        p.hosts_v4.len()
            + p.hosts_v6.len()
            + p.nets_v4.len()
            + p.nets_v6.len()
            + p.lengths.len()
            + self.rule_sets.len()
            + intervals
    }
}

/// A rule's match block, as a prefix over (class, protocol, port): class ID
/// (big endian), protocol, destination port (big endian; for ICMP
/// `type << 8 | code`). The kernel gets the blocks of each class flattened
/// into port intervals ([`rule_sets`]), with the longest block winning.
///
/// Prefix lengths: 32 = any protocol, 40 = one protocol and any port,
/// 40 + n = the first n bits of the port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub class: [u8; 4],
    pub proto: u8,
    pub port: [u8; 2],
    pub _pad: u8,
}

pub const RULE_PREFIX_ANY_PROTO: u32 = ID_PREFIX_BITS;
pub const RULE_PREFIX_PROTO: u32 = ID_PREFIX_BITS + 8;
pub const RULE_PREFIX_FULL: u32 = RULE_PREFIX_PROTO + 16;

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
}

/// One policy: the union of the rules of `groups` in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub id: u32,
    pub direction: Direction,
    /// Sorted, without duplicates.
    pub groups: Vec<String>,
    pub rule_count: usize,
    /// Indexes into [`Compiled::rules`], ascending.
    pub rules: Vec<u32>,
}

/// A peer class: the set of rules that cover some addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassInfo {
    pub id: u32,
    pub family: Family,
    /// Indexes into [`Compiled::rules`], ascending.
    pub rules: Vec<u32>,
}

/// What goes into `IFACE_POLICY` for an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceBinding {
    pub ingress_policy: u32,
    pub egress_policy: u32,
    /// `IFACE_F_*`: which directions allow all traffic everywhere, per
    /// family (for the untracked-flow rule, SPEC 1.8).
    pub flags: u32,
}

impl IfaceBinding {
    pub fn policy(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Ingress => self.ingress_policy,
            Direction::Egress => self.egress_policy,
        }
    }
}

/// The compiled policy: exactly the entries to write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compiled {
    /// Every rule of every group, in group-name order, ingress before egress.
    pub rules: Vec<CompiledRule>,
    /// In ID order.
    pub policies: Vec<PolicyInfo>,
    /// In ID order.
    pub classes: Vec<ClassInfo>,
    pub ifaces: BTreeMap<String, IfaceBinding>,
    /// `(prefix_len, key, class id)`, sorted, each `(prefix_len, key)` once.
    pub peers_v4: Vec<(u32, PeerKeyV4, u32)>,
    pub peers_v6: Vec<(u32, PeerKeyV6, u32)>,
    /// Match blocks: `(prefix_len, key, rule)`, sorted, each
    /// `(prefix_len, key)` once.
    pub rule_entries: Vec<(u32, RuleKey, RuleRef)>,
    /// The first ID not used: pass it as `first_id` to the next compile.
    pub next_id: u32,
    /// Groups in the configuration.
    pub group_count: usize,
}

/// Counts for `sg validate` and `sg status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub groups: usize,
    pub rules: usize,
    pub interfaces: usize,
    pub policies: usize,
    pub classes: usize,
    pub peer_entries_v4: usize,
    pub peer_entries_v6: usize,
    pub rule_entries: usize,
    /// What the kernel holds: port intervals over all rule sets.
    pub rule_intervals: usize,
}

impl Compiled {
    pub fn summary(&self) -> Summary {
        Summary {
            groups: self.group_count,
            rules: self.rules.len(),
            interfaces: self.ifaces.len(),
            policies: self.policies.len(),
            classes: self.classes.len(),
            peer_entries_v4: self.peers_v4.len(),
            peer_entries_v6: self.peers_v6.len(),
            rule_entries: self.rule_entries.len(),
            rule_intervals: rule_sets(&self.rule_entries)
                .iter()
                .map(|s| s.intervals.len())
                .sum(),
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
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "groups:            {}", self.groups)?;
        writeln!(f, "rules:             {}", self.rules)?;
        writeln!(f, "interfaces:        {}", self.interfaces)?;
        writeln!(f, "policies:          {}", self.policies)?;
        writeln!(f, "peer classes:      {}", self.classes)?;
        writeln!(f, "peer entries v4:   {}", self.peer_entries_v4)?;
        writeln!(f, "peer entries v6:   {}", self.peer_entries_v6)?;
        writeln!(f, "rule entries:      {}", self.rule_entries)?;
        write!(f, "rule intervals:    {}", self.rule_intervals)
    }
}

// ---------------------------------------------------------------------------
// Match entries of one rule
// ---------------------------------------------------------------------------

/// The minimal set of aligned blocks that covers `from..=to` exactly, as
/// `(first port, prefix bits)`: the block is the ports whose first `bits`
/// bits equal those of `first`. At most 30 blocks (for 1-65534).
pub fn port_prefixes(from: u16, to: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(from), u32::from(to));
    while lo <= hi {
        let mut k = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        while lo + (1u32 << k) - 1 > hi {
            k -= 1;
        }
        out.push((lo as u16, 16 - k));
        lo += 1u32 << k;
    }
    out
}

/// Match blocks of one rule's protocol and ports, as
/// `(prefix_len, proto, port slot)`.
pub fn match_entries(proto: Proto, ports: &PortMatch) -> Vec<(u32, u8, u16)> {
    let p = match proto {
        Proto::All => return vec![(RULE_PREFIX_ANY_PROTO, 0, 0)],
        Proto::Number(p) => p,
    };
    match *ports {
        PortMatch::All => vec![(RULE_PREFIX_PROTO, p, 0)],
        PortMatch::Range { from, to } => port_prefixes(from, to)
            .into_iter()
            .map(|(port, bits)| (RULE_PREFIX_PROTO + bits, p, port))
            .collect(),
        PortMatch::Icmp {
            icmp_type: None, ..
        } => vec![(RULE_PREFIX_PROTO, p, 0)],
        PortMatch::Icmp {
            icmp_type: Some(t),
            icmp_code: None,
        } => vec![(RULE_PREFIX_PROTO + 8, p, u16::from(t) << 8)],
        PortMatch::Icmp {
            icmp_type: Some(t),
            icmp_code: Some(c),
        } => vec![(RULE_PREFIX_PROTO + 16, p, u16::from(t) << 8 | u16::from(c))],
    }
}

// ---------------------------------------------------------------------------
// Addresses as integers
// ---------------------------------------------------------------------------

/// A canonical CIDR: the address in the low bits of a u128 (IPv4 in the low
/// 32), host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Net {
    family: Family,
    len: u8,
    addr: u128,
}

fn mask(family: Family, len: u8) -> u128 {
    let all = u128::MAX >> (128 - u32::from(family.bits()));
    all & !all.checked_shr(u32::from(len)).unwrap_or(0)
}

impl Net {
    fn from_ipnet(net: &IpNet) -> Net {
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

// ---------------------------------------------------------------------------
// The compiler
// ---------------------------------------------------------------------------

struct Ids {
    first: u32,
    next: u64,
}

impl Ids {
    fn alloc(&mut self) -> Result<u32, CompileError> {
        let id = u32::try_from(self.next).map_err(|_| CompileError::IdsExhausted {
            first_id: self.first,
            needed: self.next - u64::from(self.first) + 1,
        })?;
        self.next += 1;
        Ok(id)
    }
}

/// ICMP is IPv4's and ICMPv6 IPv6's: an `icmp` rule never matches an IPv6
/// packet whose next header is 1, nor `icmpv6` IPv4 protocol 58 (those are
/// just other protocols there, matched by `all` only).
fn proto_in_family(proto: u8, family: Family) -> bool {
    match proto {
        sg_common::PROTO_ICMP => family == Family::V4,
        sg_common::PROTO_ICMPV6 => family == Family::V6,
        _ => true,
    }
}

/// Does a rule with peers `nets` cover the whole address space of `family`?
fn anywhere(nets: &[Net], family: Family) -> bool {
    nets.iter().any(|n| n.family == family && n.len == 0)
}

/// Is the match block `inner` (`(prefix_len, proto, port)`) inside the
/// block `outer`?
fn block_contains(outer: (u32, u8, u16), inner: (u32, u8, u16)) -> bool {
    let (po, proto_o, port_o) = outer;
    let (pi, proto_i, port_i) = inner;
    if po > pi {
        return false;
    }
    if po <= RULE_PREFIX_ANY_PROTO {
        return true;
    }
    if proto_o != proto_i {
        return false;
    }
    let bits = po - RULE_PREFIX_PROTO;
    if bits == 0 {
        return true;
    }
    let mask = u16::MAX << (16 - bits);
    port_o & mask == port_i & mask
}

/// Compiles `config` for the interfaces in `attachments`.
pub fn compile(
    config: &Config,
    attachments: &[Attachment],
    first_id: u32,
) -> Result<Compiled, CompileError> {
    let first = first_id.max(1);
    let mut ids = Ids {
        first,
        next: u64::from(first),
    };

    // Rules, globally indexed.
    let all: Vec<&Rule> = config.all_rules().collect();
    if all.len() > u32::MAX as usize {
        return Err(CompileError::TooManyRules {
            count: all.len(),
            max: u32::MAX as usize,
        });
    }
    let rules: Vec<CompiledRule> = all
        .iter()
        .map(|r| CompiledRule {
            id: r.id.clone(),
            group: r.group.clone(),
            direction: r.direction,
            index: r.index,
            name: r.name.clone(),
            description: r.description.clone(),
        })
        .collect();
    // First global index of each (group, direction).
    let mut base: HashMap<(&str, Direction), u32> = HashMap::new();
    {
        let mut i = 0u32;
        for g in config.groups.values() {
            for d in Direction::ALL {
                base.insert((g.name.as_str(), d), i);
                i += g.rules(d).len() as u32;
            }
        }
    }

    // Attachments → sorted group lists; members from local addresses.
    let mut seen_ifaces = HashSet::new();
    let mut iface_lists: Vec<(&str, Vec<String>)> = Vec::new();
    let mut local_members: HashMap<&str, Vec<Net>> = HashMap::new();
    for a in attachments {
        if !seen_ifaces.insert(a.iface.as_str()) {
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
            local_members
                .entry(name.as_str())
                .or_default()
                .extend(a.addrs.iter().map(Net::host));
        }
        list.sort();
        list.dedup();
        iface_lists.push((a.iface.as_str(), list));
    }

    // Members of every group: `members` and local interface addresses.
    let members: HashMap<&str, Vec<Net>> = config
        .groups
        .values()
        .map(|g| {
            let mut m: Vec<Net> = g.members.iter().map(Net::from_ipnet).collect();
            if let Some(local) = local_members.get(g.name.as_str()) {
                m.extend(local.iter().copied());
            }
            m.sort();
            m.dedup();
            (g.name.as_str(), m)
        })
        .collect();

    // Each rule's peer CIDRs, resolved, sorted and deduplicated.
    let rule_nets: Vec<Vec<Net>> = all
        .iter()
        .map(|r| {
            let mut nets = Vec::new();
            for p in &r.peers {
                match p {
                    Peer::Cidr(c) => nets.push(Net::from_ipnet(c)),
                    Peer::Group(g) => {
                        nets.extend(members.get(g.as_str()).into_iter().flatten().copied());
                    }
                }
            }
            nets.sort();
            nets.dedup();
            nets
        })
        .collect();
    let rule_matches: Vec<Vec<(u32, u8, u16)>> = all
        .iter()
        .map(|r| match_entries(r.proto, &r.ports))
        .collect();

    // Policies: one pair per distinct group list.
    let lists: BTreeSet<&Vec<String>> = iface_lists.iter().map(|(_, l)| l).collect();
    let mut policies = Vec::new();
    let mut pair_of: HashMap<&Vec<String>, IfaceBinding> = HashMap::new();
    for list in lists {
        let mut binding = IfaceBinding {
            ingress_policy: 0,
            egress_policy: 0,
            flags: 0,
        };
        for d in Direction::ALL {
            let id = ids.alloc()?;
            let mut prules = Vec::new();
            for g in list {
                let b = base[&(g.as_str(), d)];
                let n = config.groups[g].rules(d).len() as u32;
                prules.extend(b..b + n);
            }
            // All traffic, everywhere: a rule of protocol `all` whose peers
            // include the whole address space of a family.
            let all_to = |family: Family| {
                prules.iter().any(|&r| {
                    all[r as usize].proto == Proto::All && anywhere(&rule_nets[r as usize], family)
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
                rule_count: prules.len(),
                rules: prules,
            });
        }
        pair_of.insert(list, binding);
    }
    let ifaces: BTreeMap<String, IfaceBinding> = iface_lists
        .iter()
        .map(|(iface, list)| (iface.to_string(), pair_of[list]))
        .collect();

    // Peer classes, hash-consed per family across all policies.
    let mut classes: Vec<ClassInfo> = Vec::new();
    let mut class_ids: HashMap<(Family, Vec<u32>), u32> = HashMap::new();
    let mut peers_v4: Vec<(u32, PeerKeyV4, u32)> = Vec::new();
    let mut peers_v6: Vec<(u32, PeerKeyV6, u32)> = Vec::new();
    for policy in &policies {
        let pkey = policy.id.to_be_bytes();
        for family in [Family::V4, Family::V6] {
            // CIDR → the rules that name it, ascending.
            let mut by_cidr: HashMap<(u8, u128), Vec<u32>> = HashMap::new();
            for &r in &policy.rules {
                for n in rule_nets[r as usize].iter().filter(|n| n.family == family) {
                    let v = by_cidr.entry((n.len, n.addr)).or_default();
                    if v.last() != Some(&r) {
                        v.push(r);
                    }
                }
            }
            if by_cidr.is_empty() {
                continue;
            }
            // Only probe the prefix lengths that exist.
            let lens: Vec<u8> = by_cidr
                .keys()
                .map(|&(l, _)| l)
                .collect::<BTreeSet<u8>>()
                .into_iter()
                .collect();
            let mut cidrs: Vec<(u8, u128)> = by_cidr.keys().copied().collect();
            cidrs.sort_unstable_by_key(|&(l, a)| (a, l));
            let mut set: Vec<u32> = Vec::new();
            for (len, addr) in cidrs {
                set.clear();
                for &l in lens.iter().take_while(|&&l| l <= len) {
                    if let Some(v) = by_cidr.get(&(l, addr & mask(family, l))) {
                        set.extend_from_slice(v);
                    }
                }
                set.sort_unstable();
                set.dedup();
                let class = match class_ids.get(&(family, set.clone())) {
                    Some(&id) => id,
                    None => {
                        let id = ids.alloc()?;
                        class_ids.insert((family, set.clone()), id);
                        classes.push(ClassInfo {
                            id,
                            family,
                            rules: set.clone(),
                        });
                        id
                    }
                };
                let prefix_len = ID_PREFIX_BITS + u32::from(len);
                match family {
                    Family::V4 => peers_v4.push((
                        prefix_len,
                        PeerKeyV4 {
                            policy: pkey,
                            addr: (addr as u32).to_be_bytes(),
                        },
                        class,
                    )),
                    Family::V6 => peers_v6.push((
                        prefix_len,
                        PeerKeyV6 {
                            policy: pkey,
                            addr: addr.to_be_bytes(),
                        },
                        class,
                    )),
                }
            }
        }
    }
    drop(class_ids);

    // Rule entries of every class; on a tie the lower rule index wins.
    let mut rule_entries: Vec<(u32, RuleKey, RuleRef)> = Vec::new();
    let mut taken: HashSet<(u32, u8, u16)> = HashSet::new();
    for class in &classes {
        taken.clear();
        let ckey = class.id.to_be_bytes();
        // Match blocks of the class's rules whose peer is everywhere: an
        // entry inside one of them carries RULE_F_ANYWHERE, whichever rule
        // it names (the longest match is inside every block that covers
        // the packet).
        let anywhere_blocks: Vec<(u32, u8, u16)> = class
            .rules
            .iter()
            .filter(|&&r| anywhere(&rule_nets[r as usize], class.family))
            .flat_map(|&r| rule_matches[r as usize].iter().copied())
            .collect();
        for &r in &class.rules {
            for &(prefix_len, proto, port) in &rule_matches[r as usize] {
                if !proto_in_family(proto, class.family) {
                    continue;
                }
                if taken.insert((prefix_len, proto, port)) {
                    let entry = (prefix_len, proto, port);
                    let flags = if anywhere_blocks.iter().any(|b| block_contains(*b, entry)) {
                        RULE_F_ANYWHERE
                    } else {
                        0
                    };
                    rule_entries.push((
                        prefix_len,
                        RuleKey {
                            class: ckey,
                            proto,
                            port: port.to_be_bytes(),
                            _pad: 0,
                        },
                        RuleRef { rule: r, flags },
                    ));
                }
            }
        }
    }

    peers_v4.sort_unstable_by_key(|&(l, k, _)| (k.policy, k.addr, l));
    peers_v6.sort_unstable_by_key(|&(l, k, _)| (k.policy, k.addr, l));
    rule_entries.sort_unstable_by_key(|&(l, k, _)| (k.class, k.proto, k.port, l));

    let next_id = u32::try_from(ids.next).map_err(|_| CompileError::IdsExhausted {
        first_id: ids.first,
        needed: ids.next - u64::from(ids.first),
    })?;
    Ok(Compiled {
        rules,
        policies,
        classes,
        ifaces,
        peers_v4,
        peers_v6,
        rule_entries,
        next_id,
        group_count: config.groups.len(),
    })
}
