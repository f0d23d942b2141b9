//! One rule of a group: its keys, peers, protocol and ports.

use std::collections::BTreeSet;
use std::ops::Range;

use crate::config::toml_tree::Value;

use super::{Ctx, Val, str_of, type_name};
use crate::config::ConfigError;
use crate::config::{
    Direction, ICMP, ICMPV6, PRESETS, Peer, PortMatch, Proto, Rule, TCP, UDP, preset,
    presets::ICMP_ALL, rule_id, validate_rule_id, values::parse_peer_into,
};

pub(super) struct RawRule {
    pub(super) rule: Rule,
    pub(super) span: Range<usize>,
}

impl Ctx<'_> {
    pub(super) fn rule<'t, 'i>(
        &mut self,
        group: &str,
        direction: Direction,
        index: usize,
        v: &'t Val<'i>,
        names: &BTreeSet<String>,
    ) -> Result<RawRule, ConfigError> {
        // `what` only for the error: a `format!` per rule is ~5% of a parse.
        let t = match v.get_ref() {
            Value::Table(t) => t,
            _ => {
                let what = format!("{direction} rule {index} of group `{group}`");
                return Err(self.table(v, &what).err().unwrap_or_else(|| {
                    self.err(v.span(), format!("expected a table for {what}"))
                }));
            }
        };
        let [
            type_kv,
            proto_kv,
            ports_kv,
            icmp_type_kv,
            icmp_code_kv,
            from_kv,
            to_kv,
            name_kv,
            description_kv,
            id_kv,
        ] = self.slots(
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
        let val = |kv: Option<(_, &'t Val<'i>)>| kv.map(|(_, v)| v);

        // Protocol: from `type`, from `proto`, and they must agree.
        let preset_val = val(type_kv);
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
        let explicit_proto = val(proto_kv).map(|v| self.proto(v)).transpose()?;
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
        let ports_val = val(ports_kv);
        let type_val = val(icmp_type_kv);
        let code_val = val(icmp_code_kv);
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
        let (other_key, peer_kv, other_kv) = match direction {
            Direction::Ingress => ("to", from_kv, to_kv),
            Direction::Egress => ("from", to_kv, from_kv),
        };
        if let Some((k, _)) = other_kv {
            return Err(self.err(
                k.span(),
                format!("{direction} rules use `{peer_key}`, not `{other_key}`"),
            ));
        }
        let Some(pv) = val(peer_kv) else {
            return Err(self.err(
                v.span(),
                format!("{direction} rule has no peer: add `{peer_key}`"),
            ));
        };
        let items = self.string_list(pv, &format_args!("`{peer_key}`"))?;
        if items.is_empty() {
            return Err(self.err(
                pv.span(),
                format!("`{peer_key}` is empty: a rule needs at least one peer"),
            ));
        }
        let mut peers = Vec::with_capacity(items.len());
        for item in items {
            let (s, span) = (str_of(item), item.span());
            let first = peers.len();
            let normalized =
                parse_peer_into(s, &mut peers).map_err(|m| self.err(span.clone(), m))?;
            if let Some(net) = normalized {
                self.warn(span.clone(), format_args!("normalized {s} to {net}"));
            }
            for p in &peers[first..] {
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
        }
        peers.sort();
        peers.dedup();

        let name = val(name_kv).map(|v| self.text(v, "`name`")).transpose()?;
        let description = val(description_kv)
            .map(|v| self.text(v, "`description`"))
            .transpose()?;

        let id = match val(id_kv) {
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
            Value::Integer(_) => num(self.integer(v, "protocol number")?.unwrap_or(-1))?,
            Value::String(s) => match s.as_ref() {
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
            Value::Integer(_) => {
                let n = self.int_in(v, "port", 0, 65535)? as u16;
                (n, n)
            }
            Value::String(s) if s.trim() == "all" => return Ok(PortMatch::All),
            Value::String(s) => match s.split_once('-') {
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
