//! `[nacls.NAME]` (SPEC 2.4): numbered `ingress`/`egress` rules with an
//! `action`. A rule's protocol, ports, ICMP fields and peer are walked by
//! the security-group rule walker (`rule`), so both layers read them the
//! same way; this adds the number, the action and the one-peer check (a
//! CIDR, `anywhere` or `pl:NAME`).

use std::collections::{BTreeSet, HashMap};

use crate::config::toml_tree::{Spanned, Table, Value};

use super::{Ctx, Val};
use crate::config::{ConfigError, Direction, Nacl, NaclAction, NaclRule, Peer};

/// Keys of a NACL rule: the SG rule's keys plus `rule` and `action`.
const NACL_RULE_KEYS: &[&str] = &[
    "rule",
    "action",
    "type",
    "proto",
    "ports",
    "icmp_type",
    "icmp_code",
    "from",
    "to",
    "name",
    "description",
];

impl Ctx<'_> {
    pub(super) fn nacl(&mut self, name: &str, t: &Table<'_>) -> Result<Nacl, ConfigError> {
        let what = format!("NACL `{name}`");
        let f = self.fields(t, &["ingress", "egress"], &what)?;
        let mut nacl = Nacl {
            name: name.to_string(),
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        for direction in Direction::ALL {
            let key = direction.as_str();
            // A direction the file does not write denies everything.
            let Some(v) = f.get(key) else { continue };
            let items = self.array(v, &format!("`{key}` (a list of NACL rules)"))?;
            let mut rules: Vec<NaclRule> = Vec::with_capacity(items.len());
            let mut seen: HashMap<u16, usize> = HashMap::new();
            for (index, item) in items.iter().enumerate() {
                let rule = self.nacl_rule(name, direction, index, item)?;
                if let Some(&prev) = seen.get(&rule.number) {
                    let (line, col) = self.position(items[prev].span().start);
                    return Err(self.err(
                        item.span(),
                        format!(
                            "duplicate rule number {} in {key} of NACL `{name}` (also at \
                             {line}:{col}); each number may appear once per direction",
                            rule.number
                        ),
                    ));
                }
                seen.insert(rule.number, index);
                rules.push(rule);
            }
            rules.sort_by_key(|r| r.number);
            match direction {
                Direction::Ingress => nacl.ingress = rules,
                Direction::Egress => nacl.egress = rules,
            }
        }
        Ok(nacl)
    }

    fn nacl_rule(
        &mut self,
        nacl: &str,
        direction: Direction,
        index: usize,
        v: &Val<'_>,
    ) -> Result<NaclRule, ConfigError> {
        let what = format!("{direction} rule {index} of NACL `{nacl}`");
        let t = self.table(v, &what)?;
        let f = self.fields(t, NACL_RULE_KEYS, "a NACL rule")?;
        let Some(nv) = f.get("rule") else {
            return Err(self.err(
                v.span(),
                format!(
                    "NACL rule needs a number: add `rule = N` (1-{})",
                    sg_common::NACL_RULE_MAX
                ),
            ));
        };
        let number =
            self.int_in(nv, "rule number", 1, i128::from(sg_common::NACL_RULE_MAX))? as u16;
        let Some(av) = f.get("action") else {
            return Err(self.err(
                v.span(),
                format!("NACL rule {number} needs `action = \"allow\"` or `action = \"deny\"`"),
            ));
        };
        let action = match self.string(av, "`action`")? {
            "allow" => NaclAction::Allow,
            "deny" => NaclAction::Deny,
            other => {
                return Err(self.err(
                    av.span(),
                    format!("unknown action `{other}`; expected \"allow\" or \"deny\""),
                ));
            }
        };
        // Exactly one CIDR peer, checked on the text before the SG walker
        // (which would take `sg:` as an unknown group).
        let peer_key = direction.peer_key();
        if let Some(pv) = f.get(peer_key) {
            let items = self.strings(pv, &format!("`{peer_key}`"))?;
            if items.len() > 1 {
                return Err(self.err(
                    pv.span(),
                    format!(
                        "a NACL rule has exactly one peer, found {}: write one rule per CIDR",
                        items.len()
                    ),
                ));
            }
            for (s, span) in items {
                if s.trim_start().starts_with("sg:") {
                    return Err(self.err(
                        span,
                        format!(
                            "`{s}`: NACL rules take CIDRs, `anywhere` or `pl:NAME`, not \
                             security-group references (as in AWS)"
                        ),
                    ));
                }
            }
        }
        // The SG walker on the same table without `rule` and `action`.
        let mut rest = Table::new();
        for (k, val) in t.iter() {
            if !matches!(k.get_ref().as_ref(), "rule" | "action") {
                rest.insert(k.clone(), val.clone());
            }
        }
        let rest = Spanned::new(v.span(), Value::Table(rest));
        let raw = self.rule(nacl, direction, index, &rest, &BTreeSet::new())?;
        // CIDRs and `pl:` stay as written (the compiler resolves a list,
        // so a changed list changes the NACL); a group cannot get here.
        let mut peers: Vec<Peer> = Vec::new();
        for p in raw.rule.peers {
            match p {
                Peer::Cidr(_) | Peer::PrefixList(_) => peers.push(p),
                other => {
                    return Err(self.err(
                        v.span(),
                        format!("`{other}`: NACL rules take CIDRs, `anywhere` or `pl:NAME` only"),
                    ));
                }
            }
        }
        Ok(NaclRule {
            nacl: nacl.to_string(),
            direction,
            number,
            action,
            proto: raw.rule.proto,
            ports: raw.rule.ports,
            peers,
            name: raw.rule.name,
            description: raw.rule.description,
        })
    }
}
