//! The rules that come closest to allowing a flow they do not allow: the
//! same port from another peer, and the same peer on another port (or
//! protocol). Read from the config in force: its compiled class for the
//! peer names the rules whose peer covers it.

use serde::Serialize;
use sg_common::Direction;

use super::{Flow, RuleInfo, search::Answer};
use crate::{
    compile::Compiled,
    config::{Config, PortMatch, Proto, Rule},
};

#[derive(Debug, Default, Serialize)]
pub struct Closest {
    /// Rules that allow this protocol and port, from or to other peers.
    pub same_port_other_peer: Vec<RuleInfo>,
    /// Rules whose peer covers this one, for other ports or protocols.
    pub same_peer_other_port: Vec<RuleInfo>,
}

fn config_rule<'a>(
    config: &'a Config,
    group: &str,
    dir: Direction,
    index: usize,
) -> Option<&'a Rule> {
    config.groups.get(group)?.rules(dir).get(index)
}

/// A rule as `sg explain` names it, with its match from the config.
pub(super) fn describe(
    config: &Config,
    id: &str,
    group: &str,
    direction: Direction,
    index: usize,
    description: Option<String>,
) -> RuleInfo {
    let rule = config_rule(config, group, direction, index).filter(|r| r.id == id);
    RuleInfo {
        id: id.to_string(),
        group: group.to_string(),
        direction,
        index,
        description,
        proto: rule.map(|r| r.proto.to_string()),
        ports: rule.map(|r| r.ports.to_string()),
        peers: rule
            .map(|r| r.peers.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
    }
}

/// Does `rule` allow the flow's protocol and port (type and code)?
fn matches_port(rule: &Rule, flow: &Flow) -> bool {
    let proto_ok = match rule.proto {
        Proto::All => true,
        Proto::Number(n) => n == flow.proto,
    };
    proto_ok
        && match rule.ports {
            PortMatch::All => true,
            PortMatch::Range { .. } => flow.to_port.is_some_and(|p| rule.ports.matches_port(p)),
            PortMatch::Icmp {
                icmp_type,
                icmp_code,
            } => {
                icmp_type.is_none_or(|t| Some(t) == flow.icmp_type)
                    && icmp_code.is_none_or(|c| Some(c) == flow.icmp_code)
            }
        }
}

pub(super) fn closest(
    config: &Config,
    compiled: &Compiled,
    answer: Option<Answer>,
    flow: &Flow,
) -> Closest {
    let mut out = Closest::default();
    let Some(answer) = answer else {
        return out;
    };
    let Some(binding) = compiled.ifaces.get(&flow.iface) else {
        return out;
    };
    let policy_id = binding.policy(flow.direction);
    let Some(policy) = compiled.policies.iter().find(|p| p.id == policy_id) else {
        return out;
    };
    let covering: &[u32] = compiled
        .classes
        .iter()
        .find(|c| c.id == answer.class)
        .map_or(&[], |c| &c.rules);
    let allowing = answer.rule.map(|r| r.rule);
    for &r in &policy.rules {
        if Some(r) == allowing {
            continue;
        }
        let Some(cr) = compiled.rules.get(r as usize) else {
            continue;
        };
        let Some(rule) = config_rule(config, &cr.group, cr.direction, cr.index) else {
            continue;
        };
        let info = || {
            describe(
                config,
                &cr.id,
                &cr.group,
                cr.direction,
                cr.index,
                cr.description.clone(),
            )
        };
        let peer_ok = covering.contains(&r);
        let port_ok = matches_port(rule, flow);
        if port_ok && !peer_ok {
            out.same_port_other_peer.push(info());
        } else if peer_ok && !port_ok {
            out.same_peer_other_port.push(info());
        }
    }
    out
}
