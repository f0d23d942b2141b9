//! The NACL step of `sg explain` (SPEC 2.3, 10.1): the interface's NACL
//! policy for the flow's direction, searched like the datapath's
//! `nacl::passes` (the SG classification over the NACL policy; the rule it
//! finds decides, `RULE_F_NACL_DENY` saying it denies; none is `*`).

use serde::Serialize;
use sg_common::{Direction, NACL_RULE_IMPLICIT, RULE_F_NACL_DENY, RuleRef};

use super::{
    Flow,
    search::{PolicyTables, classify},
};
use crate::{
    compile::{Compiled, nacl_rule_id},
    config::nacl_rule_label,
    state::State,
};

/// What the NACL says about a new packet of the flow.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NaclStep {
    /// The interface's NACL.
    pub name: String,
    /// The number of the rule that decided, `*` for the implicit deny.
    pub rule: String,
    /// "allow" or "deny".
    pub action: &'static str,
    /// `nacl:NAME:DIRECTION:NUMBER`, as `sg stats` names it.
    pub id: String,
    pub description: Option<String>,
    /// False on egress when the security groups drop the packet first: the
    /// NACL is not reached (SPEC 2.3).
    pub reached: bool,
}

impl NaclStep {
    pub fn denies(&self) -> bool {
        self.action == "deny"
    }
}

/// `None`: the interface has no NACL (or no policy at all); otherwise the
/// deciding rule of its NACL (`None` inside: no rule matched, which the
/// datapath takes as the implicit deny).
pub(super) fn lookup(
    t: &dyn PolicyTables,
    ifindex: u32,
    flow: &Flow,
) -> anyhow::Result<Option<Option<RuleRef>>> {
    let Some(iface) = t.iface(ifindex, &flow.iface)? else {
        return Ok(None);
    };
    let policy = match flow.direction {
        Direction::Ingress => iface.ingress_nacl,
        Direction::Egress => iface.egress_nacl,
    };
    if policy == 0 {
        return Ok(None);
    }
    Ok(Some(
        classify(t, policy, flow.peer(), flow.proto, flow.slot())?.rule,
    ))
}

fn action(rule: Option<RuleRef>) -> &'static str {
    match rule {
        Some(r) if r.flags & RULE_F_NACL_DENY == 0 => "allow",
        _ => "deny",
    }
}

/// The kernel's answer named through the state's rule records.
pub(super) fn describe_kernel(state: &State, flow: &Flow, rule: Option<RuleRef>) -> NaclStep {
    let name = state
        .iface_nacls
        .get(&flow.iface)
        .cloned()
        .unwrap_or_default();
    let by_slot = state.rules_by_slot();
    let record = rule.and_then(|r| by_slot.get(&r.rule).copied());
    let (number, id, description) = match (record, rule) {
        (Some(rec), _) => (rec.index as u16, rec.id.clone(), rec.description.clone()),
        (None, Some(r)) => (0, format!("slot {} (not in the state file)", r.rule), None),
        (None, None) => (
            NACL_RULE_IMPLICIT,
            nacl_rule_id(&name, flow.direction, NACL_RULE_IMPLICIT),
            None,
        ),
    };
    NaclStep {
        rule: if number == 0 {
            "?".into()
        } else {
            nacl_rule_label(number)
        },
        name: record.map(|r| r.group.clone()).unwrap_or(name),
        action: action(rule),
        id,
        description,
        reached: true,
    }
}

/// The ID of the rule the compiled config in force would decide by.
pub(super) fn config_rule_id(
    compiled: &Compiled,
    state: &State,
    flow: &Flow,
    rule: Option<RuleRef>,
) -> String {
    match rule.and_then(|r| compiled.rules.get(r.rule as usize)) {
        Some(r) => r.id.clone(),
        None => nacl_rule_id(
            state
                .iface_nacls
                .get(&flow.iface)
                .map_or("", String::as_str),
            flow.direction,
            NACL_RULE_IMPLICIT,
        ),
    }
}
