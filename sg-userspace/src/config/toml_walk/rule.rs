//! One rule of a group: its keys, peers, protocol and ports.

use std::collections::BTreeSet;
use std::ops::Range;

use toml::de::DeValue;

use super::{Ctx, Val, type_name};
use crate::config::ConfigError;
use crate::config::{
    Direction, ICMP, ICMPV6, PRESETS, Peer, PortMatch, Proto, Rule, TCP, UDP, parse_peer, preset,
    presets::ICMP_ALL, rule_id, validate_rule_id,
};

pub(super) struct RawRule {
    pub(super) rule: Rule,
    pub(super) span: Range<usize>,
}

impl Ctx<'_> {
    pub(super) fn rule(
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
                "id",
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
                if let Peer::PrefixList(l) = p
                    && !self.prefix_list_names.contains(l)
                {
                    return Err(self.err(
                        span.clone(),
                        format!("unknown prefix list `{l}` in `{s}`: define [prefix_lists.{l}]"),
                    ));
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

        let id = match f.get("id") {
            Some(iv) => {
                let id = self.string(iv, "`id`")?;
                validate_rule_id(id).map_err(|m| self.err(iv.span(), m))?;
                id.to_string()
            }
            None => rule_id(group, direction, proto, &ports, &peers),
        };
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

    pub(super) fn proto(&self, v: &Val<'_>) -> Result<(Proto, Range<usize>), ConfigError> {
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

    pub(super) fn ports(&self, v: &Val<'_>) -> Result<PortMatch, ConfigError> {
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
}
