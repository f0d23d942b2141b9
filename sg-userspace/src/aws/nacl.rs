//! `--nacls FILE`: `describe-network-acls` → `[nacls.NAME]` tables in
//! SPEC 2.4's syntax. The AWS default rules 32767 and 32768 (`*`) are sg's
//! implicit final deny and are left out.

use std::fmt::Write;

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

use super::import::{Source, items, parse_json, proto_fields, sanitize, top_object};
use super::model::{NaclEntry, NetworkAcl};
use super::proto::{ports_from_aws, proto_from_aws};
use super::toml_out::{comment, inline, key, list, quote};
use ipnet::IpNet;

use crate::config;

/// Highest rule number a NACL rule may have; 32767 and 32768 are `*`.
const MAX_RULE: i64 = 32766;

pub(super) fn import_nacls(src: &Source, warnings: &mut Vec<String>) -> Result<String> {
    let v = parse_json(src)?;
    let obj = top_object(
        src,
        &v,
        &["NetworkAcls"],
        "the output of `aws ec2 describe-network-acls`",
    )?;
    let label = |v: &Value| {
        format!(
            "network ACL {}",
            v.get("NetworkAclId").and_then(Value::as_str).unwrap_or("?")
        )
    };
    let acls: Vec<NetworkAcl> = items(src, obj, "NetworkAcls", label)?;
    let mut out = String::new();
    let mut seen = Vec::new();
    for acl in &acls {
        let name = sanitize(&acl.network_acl_id);
        if seen.contains(&name) {
            bail!(
                "{}: network ACL {} appears twice",
                src.name,
                acl.network_acl_id
            );
        }
        seen.push(name.clone());
        let tag = acl
            .tags
            .iter()
            .flatten()
            .find(|t| t.key == "Name")
            .map(|t| format!(", Name {}", quote(&t.value)))
            .unwrap_or_default();
        let default = if acl.is_default == Some(true) {
            " (the VPC's default NACL)"
        } else {
            ""
        };
        comment(
            &mut out,
            &format!("NetworkAclId {}{tag}{default}", acl.network_acl_id),
        );
        let _ = writeln!(out, "[nacls.{}]", key(&name));
        for egress in [false, true] {
            let mut entries: Vec<&NaclEntry> =
                acl.entries.iter().filter(|e| e.egress == egress).collect();
            entries.sort_by_key(|e| e.rule_number);
            let mut rules = Vec::new();
            for e in entries {
                let ctx = format!(
                    "{}: network ACL {} {} rule {}",
                    src.name,
                    acl.network_acl_id,
                    if egress { "egress" } else { "ingress" },
                    e.rule_number
                );
                if let Some(r) = entry(e, egress, &ctx, warnings)? {
                    rules.push(r);
                }
            }
            list(&mut out, if egress { "egress" } else { "ingress" }, &rules);
        }
        out.push('\n');
    }
    Ok(out)
}

/// One entry as an inline table, or `None` for the default `*` rules.
fn entry(
    e: &NaclEntry,
    egress: bool,
    ctx: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<String>> {
    let action = match e.rule_action.to_ascii_lowercase().as_str() {
        "allow" => "allow",
        "deny" => "deny",
        other => bail!("{ctx}: unsupported RuleAction `{other}` (expected allow or deny)"),
    };
    if e.rule_number == 32767 || e.rule_number == 32768 {
        if action != "deny" {
            bail!("{ctx}: the default rule `*` must deny; sg's implicit final rule denies");
        }
        return Ok(None);
    }
    if !(1..=MAX_RULE).contains(&e.rule_number) {
        bail!("{ctx}: RuleNumber must be 1-{MAX_RULE}");
    }
    let proto = proto_from_aws(&e.protocol).map_err(|m| anyhow!("{ctx}: {m}"))?;
    let (from, to) = if proto.is_icmp() {
        let t = e.icmp_type_code.as_ref();
        (t.and_then(|t| t.r#type), t.and_then(|t| t.code))
    } else {
        let p = e.port_range.as_ref();
        (p.and_then(|p| p.from), p.and_then(|p| p.to))
    };
    let ports = ports_from_aws(proto, from, to).map_err(|m| anyhow!("{ctx}: {m}"))?;
    let peer = match (&e.cidr_block, &e.ipv6_cidr_block) {
        (Some(c), None) | (None, Some(c)) => {
            let (net, normalized) = config::parse_cidr(c).map_err(|m| anyhow!("{ctx}: {m}"))?;
            if normalized {
                warnings.push(format!("{ctx}: normalized {c} to {net}"));
            }
            let v4 = matches!(net, IpNet::V4(_));
            if v4 != e.cidr_block.is_some() {
                bail!("{ctx}: `{c}` is in the wrong field for its IP version");
            }
            net
        }
        _ => bail!("{ctx}: expected exactly one of CidrBlock and Ipv6CidrBlock"),
    };
    let mut f = vec![
        ("rule", e.rule_number.to_string()),
        ("action", quote(action)),
    ];
    f.extend(proto_fields(proto, &ports));
    f.push((if egress { "to" } else { "from" }, quote(&peer.to_string())));
    Ok(Some(inline(&f)))
}
