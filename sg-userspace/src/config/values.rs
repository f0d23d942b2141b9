//! Parsers and checks of single values: peers, CIDRs, group and interface
//! names, durations. They return plain messages; the walker locates them.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{MAX_GROUP_NAME_CHARS, MAX_IFACE_NAME_BYTES, Peer};

/// Parses one peer item as written in `from`/`to`: a CIDR, an address,
/// `sg:NAME`, `pl:NAME`, `anywhere`, `anywhere-ipv4` or `anywhere-ipv6`.
/// Returns the peers and, for a non-canonical CIDR, the normalized form.
/// Does not check that a named group or prefix list exists.
pub fn parse_peer(text: &str) -> Result<(Vec<Peer>, Option<IpNet>), String> {
    let mut peers = Vec::new();
    let normalized = parse_peer_into(text, &mut peers)?;
    Ok((peers, normalized))
}

/// [`parse_peer`] appending to `peers`: no Vec per item in the walk.
pub(super) fn parse_peer_into(text: &str, peers: &mut Vec<Peer>) -> Result<Option<IpNet>, String> {
    let any4 = IpNet::V4(Ipv4Net::default());
    let any6 = IpNet::V6(Ipv6Net::default());
    match text {
        "anywhere" => {
            peers.extend([Peer::Cidr(any4), Peer::Cidr(any6)]);
            return Ok(None);
        }
        "anywhere-ipv4" => {
            peers.push(Peer::Cidr(any4));
            return Ok(None);
        }
        "anywhere-ipv6" => {
            peers.push(Peer::Cidr(any6));
            return Ok(None);
        }
        _ => {}
    }
    if let Some(name) = text.strip_prefix("sg:") {
        validate_group_name(name)?;
        peers.push(Peer::Group(name.to_string()));
        return Ok(None);
    }
    if let Some(name) = text.strip_prefix("pl:") {
        validate_group_name(name).map_err(|m| m.replace("group name", "prefix list name"))?;
        peers.push(Peer::PrefixList(name.to_string()));
        return Ok(None);
    }
    let (net, normalized) = parse_cidr(text).map_err(|_| {
        format!(
            "invalid peer `{text}`: expected a CIDR, an address, `sg:NAME`, `pl:NAME`, \
             `anywhere`, `anywhere-ipv4` or `anywhere-ipv6`"
        )
    })?;
    peers.push(Peer::Cidr(net));
    Ok(normalized.then_some(net))
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

/// `sgr-` and 17 lowercase hex digits: the form of an explicit rule `id`
/// (SPEC 1.3), as AWS writes `SecurityGroupRuleId`.
pub fn validate_rule_id(id: &str) -> Result<(), String> {
    let ok = id.strip_prefix("sgr-").is_some_and(|hex| {
        hex.len() == super::RULE_ID_HEX_DIGITS
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid rule id `{id}`: expected `sgr-` and {} lowercase hex digits",
            super::RULE_ID_HEX_DIGITS
        ))
    }
}
