//! Configuration file (SPEC 3).
//!
//! The file is parsed into a span-carrying TOML tree (`toml::de::DeTable`)
//! and walked by hand, so that every error, whether TOML syntax, an unknown
//! key, a wrong type or a bad value, names the file, line and column of the
//! offending text. Nothing here touches the kernel.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sha2::{Digest, Sha256};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

#[cfg(test)]
pub(crate) mod tests;

/// Longest `name` or `description`, in characters (SPEC 1.3).
pub const MAX_TEXT_CHARS: usize = 255;
/// Longest group name, in characters.
pub const MAX_GROUP_NAME_CHARS: usize = 255;
/// Hex digits after `sgr-` in a rule ID.
pub const RULE_ID_HEX_DIGITS: usize = 17;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFACE_NAME_BYTES: usize = 15;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

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
    pub interfaces: BTreeMap<String, InterfaceConfig>,
    pub conntrack: ConntrackConfig,
    pub events: EventsConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Group names, in file order, without duplicates. Never empty.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    /// Canonical CIDRs, sorted, without duplicates.
    pub members: Vec<IpNet>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl Group {
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

pub use sg_common::Direction;

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
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Cidr(net) => write!(f, "{net}"),
            Peer::Group(g) => write!(f, "sg:{g}"),
        }
    }
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

    fn duration_mut(&mut self, key: &str) -> Option<&mut Duration> {
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

// ---------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------

const fn port(p: u16) -> PortMatch {
    PortMatch::Range { from: p, to: p }
}

const ICMP_ALL: PortMatch = PortMatch::Icmp {
    icmp_type: None,
    icmp_code: None,
};

/// The `type` presets of SPEC 1.3: name, protocol, ports.
pub const PRESETS: &[(&str, Proto, PortMatch)] = &[
    ("ssh", TCP, port(22)),
    ("rdp", TCP, port(3389)),
    ("http", TCP, port(80)),
    ("https", TCP, port(443)),
    ("smtp", TCP, port(25)),
    ("smtps", TCP, port(465)),
    ("dns-udp", UDP, port(53)),
    ("dns-tcp", TCP, port(53)),
    ("mysql", TCP, port(3306)),
    ("postgresql", TCP, port(5432)),
    ("mssql", TCP, port(1433)),
    ("oracle", TCP, port(1521)),
    ("redis", TCP, port(6379)),
    ("nfs", TCP, port(2049)),
    ("ldap", TCP, port(389)),
    ("imap", TCP, port(143)),
    ("imaps", TCP, port(993)),
    ("pop3", TCP, port(110)),
    ("pop3s", TCP, port(995)),
    ("all-tcp", TCP, PortMatch::All),
    ("all-udp", UDP, PortMatch::All),
    ("all-icmp", ICMP, ICMP_ALL),
    ("all-icmpv6", ICMPV6, ICMP_ALL),
    ("all-traffic", Proto::All, PortMatch::All),
];

pub fn preset(name: &str) -> Option<(Proto, PortMatch)> {
    PRESETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, p, m)| (p, m))
}

// ---------------------------------------------------------------------------
// Rule IDs
// ---------------------------------------------------------------------------

/// The stable rule ID: `sgr-` and the first 17 hex digits of SHA-256 over a
/// canonical encoding of the group, direction, protocol, ports and the
/// (sorted, deduplicated) peers. Name, description and position are left
/// out, so the ID survives reordering, reloads and description edits.
pub fn rule_id(
    group: &str,
    direction: Direction,
    proto: Proto,
    ports: &PortMatch,
    peers: &[Peer],
) -> String {
    let mut canon: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    canon.sort();
    canon.dedup();
    let proto = match proto {
        Proto::All => "all".to_string(),
        Proto::Number(n) => n.to_string(),
    };
    let ports = match *ports {
        PortMatch::All => "all".to_string(),
        PortMatch::Range { from, to } => format!("{from}-{to}"),
        PortMatch::Icmp {
            icmp_type,
            icmp_code,
        } => format!(
            "icmp:{}:{}",
            icmp_type.map_or("*".to_string(), |t| t.to_string()),
            icmp_code.map_or("*".to_string(), |c| c.to_string())
        ),
    };
    let mut h = Sha256::new();
    // Each field is length-prefixed, so no two encodings collide.
    for field in [
        "sg-rule-v1",
        group,
        direction.as_str(),
        proto.as_str(),
        ports.as_str(),
    ]
    .into_iter()
    .chain(canon.iter().map(String::as_str))
    {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    let digest = h.finalize();
    let mut hex = String::with_capacity(4 + RULE_ID_HEX_DIGITS);
    hex.push_str("sgr-");
    for b in digest.iter() {
        hex.push_str(&format!("{b:02x}"));
        if hex.len() >= 4 + RULE_ID_HEX_DIGITS {
            break;
        }
    }
    hex.truncate(4 + RULE_ID_HEX_DIGITS);
    hex
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse(&source, &name)
}

/// Parses configuration text; `file_name` is used in errors and warnings.
pub fn parse(source: &str, file_name: &str) -> Result<Loaded, ConfigError> {
    let mut cx = Ctx::new(source, file_name);
    let root = DeTable::parse(source).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, format!("TOML syntax error: {}", e.message().trim()))
    })?;
    let config = cx.config(root.get_ref())?;
    Ok(Loaded {
        config,
        warnings: cx.warnings,
    })
}

/// Parses one peer item as written in `from`/`to`: a CIDR, an address,
/// `sg:NAME`, `anywhere`, `anywhere-ipv4` or `anywhere-ipv6`. Returns the
/// peers and, for a non-canonical CIDR, the normalized form. Does not check
/// that a named group exists.
pub fn parse_peer(text: &str) -> Result<(Vec<Peer>, Option<IpNet>), String> {
    let any4 = IpNet::V4(Ipv4Net::default());
    let any6 = IpNet::V6(Ipv6Net::default());
    match text {
        "anywhere" => return Ok((vec![Peer::Cidr(any4), Peer::Cidr(any6)], None)),
        "anywhere-ipv4" => return Ok((vec![Peer::Cidr(any4)], None)),
        "anywhere-ipv6" => return Ok((vec![Peer::Cidr(any6)], None)),
        _ => {}
    }
    if let Some(name) = text.strip_prefix("sg:") {
        validate_group_name(name)?;
        return Ok((vec![Peer::Group(name.to_string())], None));
    }
    let (net, normalized) = parse_cidr(text).map_err(|_| {
        format!(
            "invalid peer `{text}`: expected a CIDR, an address, `sg:NAME`, \
             `anywhere`, `anywhere-ipv4` or `anywhere-ipv6`"
        )
    })?;
    Ok((vec![Peer::Cidr(net)], normalized.then_some(net)))
}

/// Parses a CIDR or a bare address (/32 or /128). Returns the canonical
/// network and whether it had to be normalized (host bits were set).
pub fn parse_cidr(text: &str) -> Result<(IpNet, bool), String> {
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| format!("invalid CIDR `{text}`"))?;
        let canon = net.trunc();
        Ok((canon, canon != net))
    } else {
        let addr: IpAddr = text
            .parse()
            .map_err(|_| format!("invalid address `{text}`"))?;
        Ok((IpNet::from(addr), false))
    }
}

pub fn validate_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty group name".into());
    }
    if name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(format!(
            "group name is longer than {MAX_GROUP_NAME_CHARS} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "invalid group name `{name}`: character {c:?} is not allowed \
             (use letters, digits, `-`, `_` and `.`)"
        ));
    }
    Ok(())
}

/// Linux's rules for interface names (`dev_valid_name`).
pub fn validate_iface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty interface name".into());
    }
    if name.len() > MAX_IFACE_NAME_BYTES {
        return Err(format!(
            "interface name `{name}` is longer than {MAX_IFACE_NAME_BYTES} bytes"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "invalid interface name `{name}`: character {c:?} is not allowed"
        ));
    }
    Ok(())
}

/// Parses a duration such as `90s`, `2m`, `1h`, `5d`, `500ms` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{text}`: expected a number and a unit (ms, s, m, h, d), \
             such as \"90s\", \"2m\", \"1h\" or \"5d\""
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ns: u128 = match &rest[..unit_len] {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ns)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
    }
    if total == 0 {
        return Err(format!("duration `{text}` must be greater than zero"));
    }
    if total > u128::from(u64::MAX) {
        return Err(format!("duration `{text}` is too long"));
    }
    let total = total as u64;
    Ok(Duration::new(
        total / 1_000_000_000,
        (total % 1_000_000_000) as u32,
    ))
}

// ---------------------------------------------------------------------------
// The walker
// ---------------------------------------------------------------------------

type Key<'i> = Spanned<DeString<'i>>;
type Val<'i> = Spanned<DeValue<'i>>;

struct Ctx<'s> {
    file: &'s str,
    src: &'s str,
    line_starts: Vec<usize>,
    warnings: Vec<String>,
}

/// The entries of a table, in file order, after checking the keys.
struct Fields<'t, 'i> {
    entries: Vec<(&'t Key<'i>, &'t Val<'i>)>,
}

impl<'t, 'i> Fields<'t, 'i> {
    fn get(&self, key: &str) -> Option<&'t Val<'i>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| *v)
    }

    fn key(&self, key: &str) -> Option<&'t Key<'i>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| *k)
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Entries of a table sorted by position in the file.
fn sorted_entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Val<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

struct RawRule {
    rule: Rule,
    span: Range<usize>,
}

impl<'s> Ctx<'s> {
    fn new(src: &'s str, file: &'s str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Ctx {
            file,
            src,
            line_starts,
            warnings: Vec::new(),
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self.src[start..offset].chars().count() + 1;
        (line, column)
    }

    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn warn(&mut self, span: Range<usize>, message: impl fmt::Display) {
        let (line, column) = self.position(span.start);
        self.warnings
            .push(format!("{}:{line}:{column}: {message}", self.file));
    }

    fn fields<'t, 'i>(
        &self,
        table: &'t DeTable<'i>,
        allowed: &[&str],
        what: &str,
    ) -> Result<Fields<'t, 'i>, ConfigError> {
        let entries = sorted_entries(table);
        for (k, _) in &entries {
            if !allowed.contains(&k.get_ref().as_ref()) {
                return Err(self.err(
                    k.span(),
                    format!(
                        "unknown key `{}` in {what}; expected one of: {}",
                        k.get_ref(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        Ok(Fields { entries })
    }

    fn table<'t, 'i>(&self, v: &'t Val<'i>, what: &str) -> Result<&'t DeTable<'i>, ConfigError> {
        match v.get_ref() {
            DeValue::Table(t) => Ok(t),
            other => Err(self.err(
                v.span(),
                format!("expected a table for {what}, found {}", type_name(other)),
            )),
        }
    }

    fn array<'t, 'i>(
        &self,
        v: &'t Val<'i>,
        what: &str,
    ) -> Result<&'t [Spanned<DeValue<'i>>], ConfigError> {
        match v.get_ref() {
            DeValue::Array(a) => Ok(a),
            other => Err(self.err(
                v.span(),
                format!("expected an array for {what}, found {}", type_name(other)),
            )),
        }
    }

    fn string<'t>(&self, v: &'t Val<'_>, what: &str) -> Result<&'t str, ConfigError> {
        match v.get_ref() {
            DeValue::String(s) => Ok(s),
            other => Err(self.err(
                v.span(),
                format!("expected a string for {what}, found {}", type_name(other)),
            )),
        }
    }

    /// One string or an array of strings.
    fn strings<'t>(
        &self,
        v: &'t Val<'_>,
        what: &str,
    ) -> Result<Vec<(&'t str, Range<usize>)>, ConfigError> {
        match v.get_ref() {
            DeValue::String(s) => Ok(vec![(s.as_ref(), v.span())]),
            DeValue::Array(items) => items
                .iter()
                .map(|item| Ok((self.string(item, what)?, item.span())))
                .collect(),
            other => Err(self.err(
                v.span(),
                format!(
                    "expected a string or an array of strings for {what}, found {}",
                    type_name(other)
                ),
            )),
        }
    }

    fn integer(&self, v: &Val<'_>, what: &str) -> Result<Option<i128>, ConfigError> {
        match v.get_ref() {
            DeValue::Integer(i) => Ok(Some(
                i128::from_str_radix(i.as_str(), i.radix())
                    .map_err(|_| self.err(v.span(), format!("{what} is out of range")))?,
            )),
            _ => Ok(None),
        }
    }

    fn int_in(&self, v: &Val<'_>, what: &str, min: i128, max: i128) -> Result<i128, ConfigError> {
        match self.integer(v, what)? {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(n) => Err(self.err(v.span(), format!("{what} {n} is out of range {min}-{max}"))),
            None => Err(self.err(
                v.span(),
                format!(
                    "expected an integer for {what}, found {}",
                    type_name(v.get_ref())
                ),
            )),
        }
    }

    fn text(&self, v: &Val<'_>, what: &str) -> Result<String, ConfigError> {
        let s = self.string(v, what)?;
        let n = s.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(self.err(
                v.span(),
                format!("{what} is {n} characters long; at most {MAX_TEXT_CHARS} are allowed"),
            ));
        }
        Ok(s.to_string())
    }

    // -- top level ----------------------------------------------------------

    fn config(&mut self, root: &DeTable<'_>) -> Result<Config, ConfigError> {
        let top = self.fields(
            root,
            &["groups", "interfaces", "conntrack", "events"],
            "the top level",
        )?;
        let mut config = Config::default();

        // Group names first: rules may reference groups defined later.
        let mut group_tables = Vec::new();
        if let Some(v) = top.get("groups") {
            let t = self.table(v, "`groups`")?;
            for (k, v) in sorted_entries(t) {
                validate_group_name(k.get_ref()).map_err(|m| self.err(k.span(), m))?;
                let gt = self.table(v, &format!("group `{}`", k.get_ref()))?;
                group_tables.push((k.get_ref().to_string(), gt));
            }
        }
        let names: BTreeSet<String> = group_tables.iter().map(|(n, _)| n.clone()).collect();
        for (name, t) in group_tables {
            let group = self.group(&name, t, &names)?;
            config.groups.insert(name, group);
        }

        if let Some(v) = top.get("interfaces") {
            let t = self.table(v, "`interfaces`")?;
            for (k, v) in sorted_entries(t) {
                let name = k.get_ref().to_string();
                validate_iface_name(&name).map_err(|m| self.err(k.span(), m))?;
                let iface = self.interface(&name, v, &names)?;
                config.interfaces.insert(name, iface);
            }
        }
        if let Some(v) = top.get("conntrack") {
            config.conntrack = self.conntrack(v)?;
        }
        if let Some(v) = top.get("events") {
            config.events = self.events(v)?;
        }
        Ok(config)
    }

    fn group(
        &mut self,
        name: &str,
        t: &DeTable<'_>,
        names: &BTreeSet<String>,
    ) -> Result<Group, ConfigError> {
        let what = format!("group `{name}`");
        let f = self.fields(t, &["description", "members", "ingress", "egress"], &what)?;
        let description = f
            .get("description")
            .map(|v| self.text(v, "the group's `description`"))
            .transpose()?;
        let mut members = Vec::new();
        if let Some(v) = f.get("members") {
            for (s, span) in self.strings(v, "`members`")? {
                let (net, normalized) = parse_cidr(s).map_err(|m| {
                    self.err(
                        span.clone(),
                        format!("{m} in `members`: expected a CIDR or an address"),
                    )
                })?;
                if normalized {
                    self.warn(span, format_args!("normalized {s} to {net}"));
                }
                members.push(net);
            }
        }
        members.sort();
        members.dedup();

        let mut group = Group {
            name: name.to_string(),
            description,
            members,
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        for direction in Direction::ALL {
            let key = direction.as_str();
            let rules = match f.get(key) {
                Some(v) => {
                    let items = self.array(v, &format!("`{key}` (a list of rules)"))?;
                    let mut rules: Vec<RawRule> = Vec::with_capacity(items.len());
                    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
                    for (index, item) in items.iter().enumerate() {
                        let raw = self.rule(name, direction, index, item, names)?;
                        if let Some(&prev) = seen.get(&raw.rule.id) {
                            let prev = &rules[prev];
                            let (line, col) = self.position(prev.span.start);
                            return Err(self.err(
                                raw.span,
                                format!(
                                    "duplicate rule {}: same as rule {} of {key} in group \
                                     `{name}` (at {line}:{col}); remove one of them",
                                    raw.rule.id, prev.rule.index
                                ),
                            ));
                        }
                        seen.insert(raw.rule.id.clone(), rules.len());
                        rules.push(raw);
                    }
                    rules.into_iter().map(|r| r.rule).collect()
                }
                None if direction == Direction::Egress => vec![default_egress_rule(name)],
                None => Vec::new(),
            };
            match direction {
                Direction::Ingress => group.ingress = rules,
                Direction::Egress => group.egress = rules,
            }
        }
        Ok(group)
    }

    fn rule(
        &mut self,
        group: &str,
        direction: Direction,
        index: usize,
        v: &Val<'_>,
        names: &BTreeSet<String>,
    ) -> Result<RawRule, ConfigError> {
        let what = format!("{direction} rule {index} of group `{group}`");
        let t = self.table(v, &what)?;
        let f = self.fields(
            t,
            &[
                "type",
                "proto",
                "ports",
                "icmp_type",
                "icmp_code",
                "from",
                "to",
                "name",
                "description",
            ],
            "a rule",
        )?;

        // Protocol: from `type`, from `proto`, and they must agree.
        let preset_val = f.get("type");
        let preset = match preset_val {
            Some(tv) => {
                let name = self.string(tv, "`type`")?;
                let (p, m) = preset(name).ok_or_else(|| {
                    let valid: Vec<&str> = PRESETS.iter().map(|(n, _, _)| *n).collect();
                    self.err(
                        tv.span(),
                        format!("unknown type `{name}`; valid types: {}", valid.join(", ")),
                    )
                })?;
                Some((name, p, m))
            }
            None => None,
        };
        let explicit_proto = f.get("proto").map(|v| self.proto(v)).transpose()?;
        let proto = match (explicit_proto, preset) {
            (Some((p, span)), Some((tname, tp, _))) if p != tp => {
                return Err(self.err(
                    span,
                    format!("proto {p} contradicts type `{tname}`, which means proto {tp}"),
                ));
            }
            (Some((p, _)), _) => p,
            (None, Some((_, tp, _))) => tp,
            (None, None) => {
                return Err(self.err(
                    v.span(),
                    "rule needs `proto` (tcp, udp, icmp, icmpv6, all or a number) or `type`",
                ));
            }
        };

        // Ports, or ICMP type and code.
        let ports_val = f.get("ports");
        let type_val = f.get("icmp_type");
        let code_val = f.get("icmp_code");
        if !proto.is_icmp() {
            for (key, val) in [("icmp_type", type_val), ("icmp_code", code_val)] {
                if let Some(val) = val {
                    return Err(self.err(
                        val.span(),
                        format!("`{key}` is only valid for proto icmp or icmpv6, not {proto}"),
                    ));
                }
            }
        }
        let explicit_ports: Option<(PortMatch, Range<usize>)> = if proto.is_icmp() {
            if let Some(pv) = ports_val {
                return Err(self.err(
                    pv.span(),
                    format!(
                        "`ports` on proto {proto}, which has no ports; \
                         use `icmp_type` and `icmp_code`"
                    ),
                ));
            }
            let icmp_type = type_val
                .map(|v| self.int_in(v, "icmp_type", 0, 255))
                .transpose()?
                .map(|n| n as u8);
            let icmp_code = code_val
                .map(|v| self.int_in(v, "icmp_code", 0, 255))
                .transpose()?
                .map(|n| n as u8);
            if let (None, Some(cv)) = (icmp_type, code_val) {
                return Err(self.err(cv.span(), "`icmp_code` needs `icmp_type`"));
            }
            let span = type_val.or(code_val).map(|v| v.span());
            span.map(|span| {
                (
                    PortMatch::Icmp {
                        icmp_type,
                        icmp_code,
                    },
                    span,
                )
            })
        } else if proto.has_ports() {
            ports_val
                .map(|pv| self.ports(pv).map(|m| (m, pv.span())))
                .transpose()?
        } else {
            if let Some(pv) = ports_val {
                return Err(self.err(
                    pv.span(),
                    format!("`ports` on proto {proto}, which has no ports"),
                ));
            }
            None
        };
        let ports = match (explicit_ports, preset) {
            (Some((m, span)), Some((tname, _, tm))) if m != tm => {
                return Err(self.err(
                    span,
                    format!("{m} contradicts type `{tname}`, which means {tm}"),
                ));
            }
            (Some((m, _)), _) => m,
            (None, Some((_, _, tm))) => tm,
            (None, None) if proto.has_ports() => {
                return Err(self.err(
                    v.span(),
                    format!("proto {proto} needs `ports`: \"22\", \"1024-65535\" or \"all\""),
                ));
            }
            (None, None) if proto.is_icmp() => ICMP_ALL,
            (None, None) => PortMatch::All,
        };

        // Peers.
        let peer_key = direction.peer_key();
        let other_key = match direction {
            Direction::Ingress => "to",
            Direction::Egress => "from",
        };
        if let Some(k) = f.key(other_key) {
            return Err(self.err(
                k.span(),
                format!("{direction} rules use `{peer_key}`, not `{other_key}`"),
            ));
        }
        let Some(pv) = f.get(peer_key) else {
            return Err(self.err(
                v.span(),
                format!("{direction} rule has no peer: add `{peer_key}`"),
            ));
        };
        let items = self.strings(pv, &format!("`{peer_key}`"))?;
        if items.is_empty() {
            return Err(self.err(
                pv.span(),
                format!("`{peer_key}` is empty: a rule needs at least one peer"),
            ));
        }
        let mut peers = Vec::new();
        for (s, span) in items {
            let (mut ps, normalized) = parse_peer(s).map_err(|m| self.err(span.clone(), m))?;
            if let Some(net) = normalized {
                self.warn(span.clone(), format_args!("normalized {s} to {net}"));
            }
            for p in &ps {
                if let Peer::Group(g) = p
                    && !names.contains(g)
                {
                    return Err(self.err(span.clone(), format!("unknown group `{g}` in `{s}`")));
                }
            }
            peers.append(&mut ps);
        }
        peers.sort();
        peers.dedup();

        let name = f.get("name").map(|v| self.text(v, "`name`")).transpose()?;
        let description = f
            .get("description")
            .map(|v| self.text(v, "`description`"))
            .transpose()?;

        let id = rule_id(group, direction, proto, &ports, &peers);
        Ok(RawRule {
            rule: Rule {
                id,
                group: group.to_string(),
                direction,
                index,
                proto,
                ports,
                peers,
                name,
                description,
            },
            span: v.span(),
        })
    }

    fn proto(&self, v: &Val<'_>) -> Result<(Proto, Range<usize>), ConfigError> {
        let num = |n: i128| -> Result<Proto, ConfigError> {
            u8::try_from(n).map(Proto::Number).map_err(|_| {
                self.err(
                    v.span(),
                    format!("protocol number {n} is out of range 0-255"),
                )
            })
        };
        let p = match v.get_ref() {
            DeValue::Integer(_) => num(self.integer(v, "protocol number")?.unwrap_or(-1))?,
            DeValue::String(s) => match s.as_ref() {
                "tcp" => TCP,
                "udp" => UDP,
                "icmp" => ICMP,
                "icmpv6" => ICMPV6,
                "all" => Proto::All,
                other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_digit()) => {
                    num(other.parse::<i128>().unwrap_or(i128::MAX))?
                }
                other => {
                    return Err(self.err(
                        v.span(),
                        format!(
                            "unknown proto `{other}`; expected tcp, udp, icmp, icmpv6, all \
                             or a number 0-255"
                        ),
                    ));
                }
            },
            other => {
                return Err(self.err(
                    v.span(),
                    format!(
                        "expected a string or an integer for `proto`, found {}",
                        type_name(other)
                    ),
                ));
            }
        };
        Ok((p, v.span()))
    }

    fn ports(&self, v: &Val<'_>) -> Result<PortMatch, ConfigError> {
        let one = |text: &str| -> Result<u16, ConfigError> {
            let t = text.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(self.err(
                    v.span(),
                    format!("invalid port `{t}`: expected \"22\", \"1024-65535\" or \"all\""),
                ));
            }
            match t.parse::<u32>() {
                Ok(n) if n <= 65535 => Ok(n as u16),
                _ => Err(self.err(v.span(), format!("port {t} is out of range 0-65535"))),
            }
        };
        let (from, to) = match v.get_ref() {
            DeValue::Integer(_) => {
                let n = self.int_in(v, "port", 0, 65535)? as u16;
                (n, n)
            }
            DeValue::String(s) if s.trim() == "all" => return Ok(PortMatch::All),
            DeValue::String(s) => match s.split_once('-') {
                Some((a, b)) => (one(a)?, one(b)?),
                None => {
                    let n = one(s)?;
                    (n, n)
                }
            },
            other => {
                return Err(self.err(
                    v.span(),
                    format!(
                        "expected a string or an integer for `ports`, found {}",
                        type_name(other)
                    ),
                ));
            }
        };
        if from > to {
            return Err(self.err(
                v.span(),
                format!("reversed port range {from}-{to}: write {to}-{from}"),
            ));
        }
        if from == 0 && to == u16::MAX {
            return Ok(PortMatch::All);
        }
        Ok(PortMatch::Range { from, to })
    }

    fn interface(
        &mut self,
        name: &str,
        v: &Val<'_>,
        names: &BTreeSet<String>,
    ) -> Result<InterfaceConfig, ConfigError> {
        let t = self.table(v, &format!("interface `{name}`"))?;
        let f = self.fields(t, &["groups"], &format!("interface `{name}`"))?;
        let Some(gv) = f.get("groups") else {
            return Err(self.err(
                v.span(),
                format!("interface `{name}` needs `groups = [...]`"),
            ));
        };
        let items = self.strings(gv, "`groups`")?;
        if items.is_empty() {
            return Err(self.err(
                gv.span(),
                format!("interface `{name}` needs at least one group"),
            ));
        }
        let mut groups: Vec<String> = Vec::new();
        for (g, span) in items {
            if !names.contains(g) {
                return Err(self.err(span, format!("unknown group `{g}`")));
            }
            if groups.iter().any(|x| x == g) {
                self.warn(span, format_args!("group `{g}` is listed twice"));
                continue;
            }
            groups.push(g.to_string());
        }
        Ok(InterfaceConfig { groups })
    }

    fn conntrack(&self, v: &Val<'_>) -> Result<ConntrackConfig, ConfigError> {
        let t = self.table(v, "`conntrack`")?;
        let f = self.fields(
            t,
            &[
                "tcp_established",
                "tcp_syn",
                "tcp_fin",
                "tcp_rst",
                "udp",
                "udp_stream",
                "icmp",
                "other",
                "max_entries",
                "revoke_established",
            ],
            "`[conntrack]`",
        )?;
        let mut c = ConntrackConfig::default();
        for (k, v) in &f.entries {
            let key = k.get_ref().as_ref();
            match key {
                "max_entries" => {
                    c.max_entries = self.int_in(v, "max_entries", 1, i128::from(u32::MAX))? as u32;
                }
                "revoke_established" => match v.get_ref() {
                    DeValue::Boolean(b) => c.revoke_established = *b,
                    other => {
                        return Err(self.err(
                            v.span(),
                            format!(
                                "expected a boolean for `revoke_established`, found {}",
                                type_name(other)
                            ),
                        ));
                    }
                },
                _ => {
                    let s = match v.get_ref() {
                        DeValue::String(s) => s,
                        other => {
                            return Err(self.err(
                                v.span(),
                                format!(
                                    "expected a duration string such as \"90s\" for `{key}`, \
                                     found {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    };
                    let d = parse_duration(s).map_err(|m| self.err(v.span(), m))?;
                    if let Some(slot) = c.duration_mut(key) {
                        *slot = d;
                    }
                }
            }
        }
        Ok(c)
    }

    fn events(&self, v: &Val<'_>) -> Result<EventsConfig, ConfigError> {
        let t = self.table(v, "`events`")?;
        let f = self.fields(t, &["per_second"], "`[events]`")?;
        let mut e = EventsConfig::default();
        if let Some(v) = f.get("per_second") {
            e.per_second = self.int_in(v, "per_second", 0, i128::from(u32::MAX))? as u32;
        }
        Ok(e)
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

    /// Rule IDs mapped to their rules, for lookups in bulk.
    pub fn rule_index(&self) -> HashMap<&str, &Rule> {
        self.all_rules().map(|r| (r.id.as_str(), r)).collect()
    }
}
