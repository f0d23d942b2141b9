//! The parsed configuration: groups, rules, interfaces, conntrack and
//! events settings, and the located error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::rule_id;

pub use sg_common::Direction;

/// A parsed, validated configuration and the warnings produced on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    /// `FILE:LINE:COL: message`, in file order.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub groups: BTreeMap<String, Group>,
    /// `[prefix_lists.NAME]` (SPEC 9.1), named by `pl:NAME` peers.
    pub prefix_lists: BTreeMap<String, PrefixList>,
    pub interfaces: BTreeMap<String, InterfaceConfig>,
    pub conntrack: ConntrackConfig,
    pub events: EventsConfig,
    /// `[nacls.NAME]` (SPEC 2).
    pub nacls: BTreeMap<String, Nacl>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Group names, in file order, without duplicates. Never empty.
    pub groups: Vec<String>,
    /// The interface's network ACL (`nacl = "NAME"`), if any.
    pub nacl: Option<String>,
    /// `mode = "audit"` on the interface itself (SPEC 10.2); see
    /// [`Config::iface_mode`] for the mode in force.
    pub mode: Mode,
}

/// `mode` of a group or an interface (SPEC 10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Drop what the policy does not allow (the default).
    #[default]
    Enforce,
    /// Let the policy's would-be drops pass, counted and reported as such.
    Audit,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }
}

impl Config {
    /// The mode in force on interface `iface` with groups `groups`: audit
    /// when the interface or any of its groups is in audit mode (a group's
    /// policy is the union of the interface's groups, so a group cannot be
    /// audited on an interface that enforces the others).
    pub fn iface_mode(&self, iface: &str, groups: &[String]) -> Mode {
        let own = self.interfaces.get(iface).map(|i| i.mode);
        let by_group = groups
            .iter()
            .any(|g| self.groups.get(g).is_some_and(|g| g.mode == Mode::Audit));
        if own == Some(Mode::Audit) || by_group {
            Mode::Audit
        } else {
            Mode::Enforce
        }
    }
}

/// A network ACL (SPEC 2): numbered, stateless allow/deny rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nacl {
    pub name: String,
    /// Sorted by rule number, numbers unique. A direction the file does
    /// not write is empty: only the implicit `*` rule, which denies.
    pub ingress: Vec<NaclRule>,
    pub egress: Vec<NaclRule>,
}

impl Nacl {
    pub fn rules(&self, direction: Direction) -> &[NaclRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NaclAction {
    Allow,
    Deny,
}

impl NaclAction {
    pub const fn name(self) -> &'static str {
        match self {
            NaclAction::Allow => "allow",
            NaclAction::Deny => "deny",
        }
    }
}

/// One numbered NACL rule: the SG rule fields, one peer (a CIDR;
/// `anywhere`, which is two: `0.0.0.0/0` and `::/0`; or `pl:NAME`) and an
/// action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaclRule {
    pub nacl: String,
    pub direction: Direction,
    /// 1-32766.
    pub number: u16,
    pub action: NaclAction,
    pub proto: Proto,
    pub ports: PortMatch,
    /// `Peer::Cidr`s (one, or one per family for `anywhere`) or one
    /// `Peer::PrefixList`, never a group; resolved to CIDRs by
    /// [`Config::static_peer_cidrs`], like an SG rule's.
    pub peers: Vec<Peer>,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// How status, stats and events write a NACL rule number: the implicit
/// final rule is `*`.
pub fn nacl_rule_label(number: u16) -> String {
    if number == sg_common::NACL_RULE_IMPLICIT {
        "*".to_string()
    } else {
        number.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    /// Canonical CIDRs, sorted, without duplicates.
    pub members: Vec<IpNet>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    /// `mode = "audit"` (SPEC 10.2): puts every interface of the group in
    /// audit mode.
    pub mode: Mode,
}

impl Group {
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `sgr-` + 17 lowercase hex digits; see [`rule_id`].
    pub id: String,
    pub group: String,
    pub direction: Direction,
    /// Position in the group's `ingress` or `egress` list, from 0.
    pub index: usize,
    pub proto: Proto,
    /// For tcp and udp: `All` or `Range`. For icmp and icmpv6: always
    /// `Icmp`. For every other protocol: `All`.
    pub ports: PortMatch,
    /// Sorted, without duplicates, never empty.
    pub peers: Vec<Peer>,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// IP protocol of a rule. The named protocols are stored as their numbers:
/// `tcp` is `Number(6)`, `udp` 17, `icmp` 1, `icmpv6` 58.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    All,
    Number(u8),
}

pub const TCP: Proto = Proto::Number(sg_common::PROTO_TCP);
pub const UDP: Proto = Proto::Number(sg_common::PROTO_UDP);
pub const ICMP: Proto = Proto::Number(sg_common::PROTO_ICMP);
pub const ICMPV6: Proto = Proto::Number(sg_common::PROTO_ICMPV6);

impl Proto {
    /// tcp or udp: the rule names destination ports.
    pub fn has_ports(self) -> bool {
        self == TCP || self == UDP
    }

    /// icmp or icmpv6: the rule names an ICMP type and code.
    pub fn is_icmp(self) -> bool {
        self == ICMP || self == ICMPV6
    }

    /// The protocol number, or `None` for all protocols.
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::All => None,
            Proto::Number(n) => Some(n),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Proto::All => f.write_str("all"),
            Proto::Number(sg_common::PROTO_TCP) => f.write_str("tcp"),
            Proto::Number(sg_common::PROTO_UDP) => f.write_str("udp"),
            Proto::Number(sg_common::PROTO_ICMP) => f.write_str("icmp"),
            Proto::Number(sg_common::PROTO_ICMPV6) => f.write_str("icmpv6"),
            Proto::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// Every port (or, for a protocol without ports, the whole protocol).
    All,
    /// Destination ports `from..=to`, `from <= to`, never `0..=65535`
    /// (that is normalized to `All`).
    Range { from: u16, to: u16 },
    /// ICMP type and code; `None` means all. `icmp_code` is only set when
    /// `icmp_type` is.
    Icmp {
        icmp_type: Option<u8>,
        icmp_code: Option<u8>,
    },
}

impl PortMatch {
    pub fn matches_port(&self, port: u16) -> bool {
        match *self {
            PortMatch::All => true,
            PortMatch::Range { from, to } => from <= port && port <= to,
            PortMatch::Icmp { .. } => false,
        }
    }
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PortMatch::All => f.write_str("all"),
            PortMatch::Range { from, to } if from == to => write!(f, "{from}"),
            PortMatch::Range { from, to } => write!(f, "{from}-{to}"),
            PortMatch::Icmp {
                icmp_type,
                icmp_code,
            } => {
                match icmp_type {
                    Some(t) => write!(f, "type {t}")?,
                    None => f.write_str("type all")?,
                }
                match icmp_code {
                    Some(c) => write!(f, " code {c}"),
                    None => f.write_str(" code all"),
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A canonical CIDR (host bits zero).
    Cidr(IpNet),
    /// `sg:NAME`: the current members of group NAME.
    Group(String),
    /// `pl:NAME`: the current entries of prefix list NAME (SPEC 9.1).
    PrefixList(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Cidr(net) => write!(f, "{net}"),
            Peer::Group(g) => write!(f, "sg:{g}"),
            Peer::PrefixList(p) => write!(f, "pl:{p}"),
        }
    }
}

/// `[prefix_lists.NAME]` (SPEC 9.1): a named set of CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixList {
    pub name: String,
    /// Canonical CIDRs in file order, without duplicates.
    pub entries: Vec<PrefixListEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixListEntry {
    pub cidr: IpNet,
    pub description: Option<String>,
}

/// `[conntrack]` (SPEC 1.7, 1.8, 1.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackConfig {
    pub tcp_established: Duration,
    pub tcp_syn: Duration,
    pub tcp_fin: Duration,
    pub tcp_rst: Duration,
    pub udp: Duration,
    pub udp_stream: Duration,
    pub icmp: Duration,
    pub other: Duration,
    pub max_entries: u32,
    pub revoke_established: bool,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            tcp_established: Duration::from_secs(432_000),
            tcp_syn: Duration::from_secs(120),
            tcp_fin: Duration::from_secs(120),
            tcp_rst: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_stream: Duration::from_secs(180),
            icmp: Duration::from_secs(30),
            other: Duration::from_secs(600),
            max_entries: sg_common::DEFAULT_CT_CAPACITY,
            revoke_established: false,
        }
    }
}

impl ConntrackConfig {
    /// Timeouts in nanoseconds, indexed by `sg_common::TO_*`.
    pub fn timeouts_ns(&self) -> [u64; sg_common::TIMEOUT_COUNT] {
        let mut out = [0u64; sg_common::TIMEOUT_COUNT];
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        out[sg_common::TO_TCP_ESTABLISHED] = ns(self.tcp_established);
        out[sg_common::TO_TCP_SYN] = ns(self.tcp_syn);
        out[sg_common::TO_TCP_FIN] = ns(self.tcp_fin);
        out[sg_common::TO_TCP_RST] = ns(self.tcp_rst);
        out[sg_common::TO_UDP] = ns(self.udp);
        out[sg_common::TO_UDP_STREAM] = ns(self.udp_stream);
        out[sg_common::TO_ICMP] = ns(self.icmp);
        out[sg_common::TO_OTHER] = ns(self.other);
        out
    }

    pub(super) fn duration_mut(&mut self, key: &str) -> Option<&mut Duration> {
        Some(match key {
            "tcp_established" => &mut self.tcp_established,
            "tcp_syn" => &mut self.tcp_syn,
            "tcp_fin" => &mut self.tcp_fin,
            "tcp_rst" => &mut self.tcp_rst,
            "udp" => &mut self.udp,
            "udp_stream" => &mut self.udp_stream,
            "icmp" => &mut self.icmp,
            "other" => &mut self.other,
            _ => return None,
        })
    }
}

/// `[events]` (SPEC 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Drop events per second per CPU that reach the ring buffer.
    pub per_second: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { per_second: 1000 }
    }
}

/// A configuration error, located in the file. `line` and `column` start at
/// 1 (the column counts characters); both are 0 when the error is about the
/// file as a whole (it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_error(.file, *.line, *.column, .message))]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn render_error(file: &str, line: usize, column: usize, message: &str) -> String {
    if line == 0 {
        format!("{file}: {message}")
    } else {
        format!("{file}:{line}:{column}: {message}")
    }
}

/// AWS's default egress rule (SPEC 1.4): all protocols to 0.0.0.0/0 and ::/0.
pub fn default_egress_rule(group: &str) -> Rule {
    let peers = vec![
        Peer::Cidr(IpNet::V4(Ipv4Net::default())),
        Peer::Cidr(IpNet::V6(Ipv6Net::default())),
    ];
    Rule {
        id: rule_id(
            group,
            Direction::Egress,
            Proto::All,
            &PortMatch::All,
            &peers,
        ),
        group: group.to_string(),
        direction: Direction::Egress,
        index: 0,
        proto: Proto::All,
        ports: PortMatch::All,
        peers,
        name: None,
        description: None,
    }
}

impl Config {
    /// Every rule of every group, in group-name order, ingress before egress.
    pub fn all_rules(&self) -> impl Iterator<Item = &Rule> {
        self.groups
            .values()
            .flat_map(|g| g.ingress.iter().chain(g.egress.iter()))
    }

    /// Finds a rule by its ID.
    pub fn rule_by_id(&self, id: &str) -> Option<&Rule> {
        self.all_rules().find(|r| r.id == id)
    }

    /// The single entry of the kernel's `CONFIG` map.
    pub fn runtime_config(&self) -> sg_common::RuntimeConfig {
        sg_common::RuntimeConfig {
            timeouts_ns: self.conntrack.timeouts_ns(),
            events_per_sec: self.events.per_second,
            flags: if self.conntrack.revoke_established {
                sg_common::CFG_F_REVOKE_ESTABLISHED
            } else {
                0
            },
        }
    }

    /// The CIDRs a peer stands for, when they do not depend on attachments:
    /// a CIDR itself, or a prefix list's entries. `None` for `sg:` peers,
    /// whose members come from the interfaces (the compiler resolves them).
    /// The one place `pl:` is resolved, for SG and NACL rules alike.
    pub fn static_peer_cidrs(&self, peer: &Peer) -> Option<Vec<IpNet>> {
        match peer {
            Peer::Cidr(c) => Some(vec![*c]),
            Peer::PrefixList(p) => Some(
                self.prefix_lists
                    .get(p)
                    .map(|l| l.entries.iter().map(|e| e.cidr).collect())
                    .unwrap_or_default(),
            ),
            Peer::Group(_) => None,
        }
    }

    /// Rule IDs mapped to their rules, for lookups in bulk.
    pub fn rule_index(&self) -> HashMap<&str, &Rule> {
        self.all_rules().map(|r| (r.id.as_str(), r)).collect()
    }
}
