//! `sg import aws` (SPEC 9.2): AWS CLI JSON → an sg config with the same
//! meaning. Each AWS rule (one peer of one permission) becomes one sg rule,
//! so descriptions and `SecurityGroupRuleId`s stay with their peer.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::model::{
    IpPermission, ManagedPrefixList, PrefixListEntries, PrefixListEntry, SecurityGroup,
    SecurityGroupRule,
};
use super::proto::{ports_from_aws, proto_from_aws};
use super::toml_out::{comment, inline, key, list, quote};
use crate::config::{self, PortMatch, Proto};

/// One input file: its name (for messages) and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Source> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Source {
            name: path.display().to_string(),
            text,
        })
    }
}

/// Everything `sg import aws` reads.
#[derive(Debug, Clone)]
pub struct ImportInput {
    /// `describe-security-groups` output (it may also hold the
    /// `SecurityGroupRules` of `describe-security-group-rules`, or be only
    /// that).
    pub groups: Source,
    /// More `describe-security-group-rules` outputs, for rule IDs.
    pub rules: Vec<Source>,
    /// `describe-network-acls` output.
    pub nacls: Option<Source>,
    /// `get-managed-prefix-list-entries` outputs, by prefix list ID.
    pub prefix_lists: Vec<(String, Source)>,
}

/// The config text and what the import had to adjust on the way.
#[derive(Debug, Clone)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<String>,
}

/// Reads the files named on the command line and imports them.
pub fn import_files(
    groups: &Path,
    rules: &[PathBuf],
    nacls: Option<&Path>,
    prefix_lists: &[(String, PathBuf)],
) -> Result<Imported> {
    let input = ImportInput {
        groups: Source::read(groups)?,
        rules: rules
            .iter()
            .map(|p| Source::read(p))
            .collect::<Result<_>>()?,
        nacls: nacls.map(Source::read).transpose()?,
        prefix_lists: prefix_lists
            .iter()
            .map(|(id, p)| Ok((id.clone(), Source::read(p)?)))
            .collect::<Result<_>>()?,
    };
    import(&input)
}

/// A peer of an imported rule, before groups get their sg names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AwsPeer {
    Cidr(IpNet),
    Group(String),
    PrefixList(String),
}

/// One AWS rule: one peer of one permission.
#[derive(Debug, Clone)]
struct AwsRule {
    group_id: String,
    egress: bool,
    proto: Proto,
    ports: PortMatch,
    peer: AwsPeer,
    description: Option<String>,
    id: Option<String>,
}

impl AwsRule {
    fn same_rule(&self, other: &AwsRule) -> bool {
        self.group_id == other.group_id
            && self.egress == other.egress
            && self.proto == other.proto
            && self.ports == other.ports
            && self.peer == other.peer
    }
}

struct ImportedGroup {
    aws_name: String,
    group_id: String,
    description: Option<String>,
    rules: Vec<AwsRule>,
}

/// Parses JSON text, with the file and position in the error.
pub(super) fn parse_json(src: &Source) -> Result<Value> {
    serde_json::from_str(&src.text).map_err(|e| anyhow!("{}: malformed JSON: {e}", src.name))
}

/// The top-level object of `src`, with only `allowed` keys.
pub(super) fn top_object<'v>(
    src: &Source,
    v: &'v Value,
    allowed: &[&str],
    what: &str,
) -> Result<&'v serde_json::Map<String, Value>> {
    let Some(obj) = v.as_object() else {
        bail!(
            "{}: not {what}: expected a JSON object with {} (the whole output, not a \
             --query selection)",
            src.name,
            allowed[0]
        );
    };
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            bail!(
                "{}: not {what}: unexpected top-level key `{k}` (expected {}){}",
                src.name,
                allowed.join(" or "),
                other_output_hint(k)
            );
        }
    }
    if !allowed.iter().any(|k| obj.contains_key(*k)) {
        bail!("{}: not {what}: no {} key", src.name, allowed.join(" or "));
    }
    Ok(obj)
}

/// Where the output of another AWS command goes, told by its top-level
/// key: a file given in the wrong place gets told its place.
fn other_output_hint(key: &str) -> &'static str {
    match key {
        "NetworkAcls" => {
            "; this is `aws ec2 describe-network-acls` output: give it with --nacls FILE, \
             beside the security groups"
        }
        "Entries" => {
            "; this is `aws ec2 get-managed-prefix-list-entries` output: give it with \
             --prefix-list PL_ID=FILE"
        }
        "SecurityGroups" => {
            "; this is `aws ec2 describe-security-groups` output: give it as the FILE argument"
        }
        _ => "",
    }
}

/// The items of array `key`, each deserialized, with `label` naming an
/// item in errors.
pub(super) fn items<T: DeserializeOwned>(
    src: &Source,
    obj: &serde_json::Map<String, Value>,
    key: &str,
    label: impl Fn(&Value) -> String,
) -> Result<Vec<T>> {
    let Some(v) = obj.get(key) else {
        return Ok(Vec::new());
    };
    let Some(arr) = v.as_array() else {
        bail!("{}: `{key}` must be an array", src.name);
    };
    arr.iter()
        .map(|item| {
            serde_json::from_value(item.clone())
                .map_err(|e| anyhow!("{}: {}: {e}", src.name, label(item)))
        })
        .collect()
}

fn str_field<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

fn group_label(v: &Value) -> String {
    format!(
        "group `{}` ({})",
        str_field(v, "GroupName"),
        str_field(v, "GroupId")
    )
}

/// Imports AWS CLI outputs into an sg config.
pub fn import(input: &ImportInput) -> Result<Imported> {
    let mut warnings = Vec::new();
    let src = &input.groups;
    let root = parse_json(src)?;
    let what = "the output of `aws ec2 describe-security-groups`";
    let obj = top_object(
        src,
        &root,
        &["SecurityGroups", "SecurityGroupRules", "ManagedPrefixLists"],
        what,
    )?;
    if !obj.contains_key("SecurityGroups") && !obj.contains_key("SecurityGroupRules") {
        bail!("{}: not {what}: no SecurityGroups key", src.name);
    }
    let aws_groups: Vec<SecurityGroup> = items(src, obj, "SecurityGroups", group_label)?;
    let mut id_rules = rules_with_ids(src, obj, &mut warnings)?;
    for r in &input.rules {
        let v = parse_json(r)?;
        let o = top_object(
            r,
            &v,
            &["SecurityGroupRules"],
            "the output of `aws ec2 describe-security-group-rules`",
        )?;
        id_rules.extend(rules_with_ids(r, o, &mut warnings)?);
    }

    // Groups, from SecurityGroups or else from the rules alone.
    let mut groups: Vec<ImportedGroup> = Vec::new();
    if obj.contains_key("SecurityGroups") {
        for g in &aws_groups {
            let label = format!("{}: group `{}` ({})", src.name, g.group_name, g.group_id);
            let mut rules = Vec::new();
            for (egress, perms) in [(false, &g.ip_permissions), (true, &g.ip_permissions_egress)] {
                for (i, p) in perms.iter().enumerate() {
                    let dir = if egress {
                        "IpPermissionsEgress"
                    } else {
                        "IpPermissions"
                    };
                    let ctx = format!("{label}: {dir}[{i}]");
                    permission_rules(
                        &g.group_id,
                        egress,
                        p,
                        &aws_groups,
                        &mut rules,
                        &ctx,
                        &mut warnings,
                    )?;
                }
            }
            groups.push(ImportedGroup {
                aws_name: g.group_name.clone(),
                group_id: g.group_id.clone(),
                description: g.description.clone().filter(|d| !d.is_empty()),
                rules,
            });
        }
        // Rule IDs go to the permissions' rules they describe.
        for r in id_rules {
            let slot = groups
                .iter_mut()
                .flat_map(|g| g.rules.iter_mut())
                .find(|x| x.id.is_none() && x.same_rule(&r));
            match slot {
                Some(x) => x.id = r.id,
                None => warnings.push(format!(
                    "rule {} of {} matches no permission of the security groups; its ID is \
                     not used",
                    r.id.unwrap_or_default(),
                    r.group_id
                )),
            }
        }
    } else {
        for r in id_rules {
            let i = match groups.iter().position(|g| g.group_id == r.group_id) {
                Some(i) => i,
                None => {
                    groups.push(ImportedGroup {
                        aws_name: r.group_id.clone(),
                        group_id: r.group_id.clone(),
                        description: None,
                        rules: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            groups[i].rules.push(r);
        }
    }
    for g in &groups {
        for r in &g.rules {
            if let AwsPeer::Group(id) = &r.peer
                && !groups.iter().any(|x| &x.group_id == id)
            {
                bail!(
                    "{}: group `{}` ({}) references group {id}, which is not in the file: \
                     add it (aws ec2 describe-security-groups --group-ids {id} ...)",
                    src.name,
                    g.aws_name,
                    g.group_id
                );
            }
        }
    }

    let names = sg_names(&groups)?;
    let prefix_lists = prefix_lists(input, obj, &groups, &mut warnings)?;

    let mut out = String::new();
    comment(
        &mut out,
        &format!("Imported by `sg import aws` from {}.", src.name),
    );
    out.push('\n');
    for (id, entries) in &prefix_lists {
        let _ = writeln!(out, "[prefix_lists.{}]", key(id));
        let items: Vec<String> = entries
            .iter()
            .map(|(cidr, d)| match d {
                Some(d) => inline(&[
                    ("cidr", quote(&cidr.to_string())),
                    ("description", quote(d)),
                ]),
                None => quote(&cidr.to_string()),
            })
            .collect();
        list(&mut out, "entries", &items);
        out.push('\n');
    }
    for (g, name) in groups.iter().zip(&names) {
        comment(
            &mut out,
            &format!("GroupName {}, GroupId {}", quote(&g.aws_name), g.group_id),
        );
        let _ = writeln!(out, "[groups.{}]", key(name));
        if let Some(d) = &g.description {
            let _ = writeln!(out, "description = {}", quote(d));
        }
        for egress in [false, true] {
            let items: Vec<String> = g
                .rules
                .iter()
                .filter(|r| r.egress == egress)
                .map(|r| render_rule(r, &groups, &names))
                .collect();
            list(&mut out, if egress { "egress" } else { "ingress" }, &items);
        }
        out.push('\n');
    }

    // The output must be a valid config; a failure here is a bug of the import.
    let loaded = config::parse(&out, "imported.toml")
        .map_err(|e| anyhow!("internal error: the imported config does not validate: {e}"))?;
    warnings.extend(loaded.warnings);

    if let Some(n) = &input.nacls {
        out.push_str(&super::nacl::import_nacls(n, &mut warnings)?);
    }
    Ok(Imported {
        toml: out,
        warnings,
    })
}

/// The rules of `SecurityGroupRules` (describe-security-group-rules).
fn rules_with_ids(
    src: &Source,
    obj: &serde_json::Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<Vec<AwsRule>> {
    let label = |v: &Value| format!("rule {}", str_field(v, "SecurityGroupRuleId"));
    let raw: Vec<SecurityGroupRule> = items(src, obj, "SecurityGroupRules", label)?;
    raw.into_iter()
        .map(|r| {
            let ctx = format!("{}: rule {}", src.name, r.security_group_rule_id);
            config::validate_rule_id(&r.security_group_rule_id)
                .map_err(|m| anyhow!("{ctx}: {m}"))?;
            let proto = proto_from_aws(&r.ip_protocol).map_err(|m| anyhow!("{ctx}: {m}"))?;
            let ports =
                ports_from_aws(proto, r.from_port, r.to_port).map_err(|m| anyhow!("{ctx}: {m}"))?;
            let mut peers = Vec::new();
            if let Some(c) = &r.cidr_ipv4 {
                peers.push(AwsPeer::Cidr(cidr(c, true, &ctx, warnings)?));
            }
            if let Some(c) = &r.cidr_ipv6 {
                peers.push(AwsPeer::Cidr(cidr(c, false, &ctx, warnings)?));
            }
            if let Some(p) = &r.prefix_list_id {
                peers.push(AwsPeer::PrefixList(p.clone()));
            }
            if let Some(g) = &r.referenced_group_info {
                peers.push(AwsPeer::Group(g.group_id.clone()));
            }
            if peers.len() != 1 {
                bail!(
                    "{ctx}: expected exactly one of CidrIpv4, CidrIpv6, PrefixListId and \
                     ReferencedGroupInfo, found {}",
                    peers.len()
                );
            }
            Ok(AwsRule {
                group_id: r.group_id,
                egress: r.is_egress,
                proto,
                ports,
                peer: peers.remove(0),
                description: r.description.filter(|d| !d.is_empty()),
                id: Some(r.security_group_rule_id),
            })
        })
        .collect()
}

/// A CIDR of the expected family, canonical.
fn cidr(text: &str, v4: bool, ctx: &str, warnings: &mut Vec<String>) -> Result<IpNet> {
    let (net, normalized) = config::parse_cidr(text).map_err(|m| anyhow!("{ctx}: {m}"))?;
    if normalized {
        warnings.push(format!("{ctx}: normalized {text} to {net}"));
    }
    if matches!(net, IpNet::V4(_)) != v4 {
        bail!(
            "{ctx}: `{text}` is not an {} CIDR",
            if v4 { "IPv4" } else { "IPv6" }
        );
    }
    Ok(net)
}

/// The AWS rules of one permission: one per range, group pair and prefix
/// list.
fn permission_rules(
    group_id: &str,
    egress: bool,
    p: &IpPermission,
    groups: &[SecurityGroup],
    out: &mut Vec<AwsRule>,
    ctx: &str,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let proto = proto_from_aws(&p.ip_protocol).map_err(|m| anyhow!("{ctx}: {m}"))?;
    let ports = ports_from_aws(proto, p.from_port, p.to_port).map_err(|m| anyhow!("{ctx}: {m}"))?;
    let mut push = |peer, description: &Option<String>| {
        out.push(AwsRule {
            group_id: group_id.to_string(),
            egress,
            proto,
            ports,
            peer,
            description: description.clone().filter(|d| !d.is_empty()),
            id: None,
        })
    };
    for r in &p.ip_ranges {
        push(
            AwsPeer::Cidr(cidr(&r.cidr_ip, true, ctx, warnings)?),
            &r.description,
        );
    }
    for r in &p.ipv6_ranges {
        push(
            AwsPeer::Cidr(cidr(&r.cidr_ipv6, false, ctx, warnings)?),
            &r.description,
        );
    }
    for pair in &p.user_id_group_pairs {
        let id = match (&pair.group_id, &pair.group_name) {
            (Some(id), _) => id.clone(),
            // Pairs that name the group only (EC2-Classic, default VPC).
            (None, Some(name)) => groups
                .iter()
                .find(|g| &g.group_name == name)
                .map(|g| g.group_id.clone())
                .ok_or_else(|| {
                    anyhow!("{ctx}: references group `{name}`, which is not in the file")
                })?,
            (None, None) => {
                bail!("{ctx}: a UserIdGroupPairs item has neither GroupId nor GroupName")
            }
        };
        push(AwsPeer::Group(id), &pair.description);
    }
    for pl in &p.prefix_list_ids {
        push(
            AwsPeer::PrefixList(pl.prefix_list_id.clone()),
            &pl.description,
        );
    }
    Ok(())
}

/// A valid sg group name for an AWS one: characters other than letters,
/// digits, `-`, `_` and `.` become `_`.
pub(super) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(config::MAX_GROUP_NAME_CHARS - 30)
        .collect();
    if s.is_empty() { "group".into() } else { s }
}

/// sg names of the groups, in order: the sanitized GroupName, and where two
/// groups would share one, the GroupId appended to each.
fn sg_names(groups: &[ImportedGroup]) -> Result<Vec<String>> {
    let mut count: HashMap<String, usize> = HashMap::new();
    for g in groups {
        *count.entry(sanitize(&g.aws_name)).or_default() += 1;
    }
    let names: Vec<String> = groups
        .iter()
        .map(|g| {
            let s = sanitize(&g.aws_name);
            if count[&s] > 1 {
                format!("{s}_{}", sanitize(&g.group_id))
            } else {
                s
            }
        })
        .collect();
    let mut seen = HashMap::new();
    for (g, n) in groups.iter().zip(&names) {
        if let Some(prev) = seen.insert(n.clone(), &g.group_id) {
            bail!(
                "groups {prev} and {} both become `{n}`: GroupIds must be unique",
                g.group_id
            );
        }
    }
    Ok(names)
}

/// A prefix list's CIDRs and their descriptions.
type ListEntries = Vec<(IpNet, Option<String>)>;

/// The prefix lists the rules name, with their entries: from
/// `--prefix-list ID=FILE` and from `ManagedPrefixLists` in the groups
/// file. A named list without entries is an error.
fn prefix_lists(
    input: &ImportInput,
    obj: &serde_json::Map<String, Value>,
    groups: &[ImportedGroup],
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, ListEntries>> {
    let mut lists: BTreeMap<String, Vec<PrefixListEntry>> = BTreeMap::new();
    let label = |v: &Value| format!("prefix list {}", str_field(v, "PrefixListId"));
    let managed: Vec<ManagedPrefixList> = items(&input.groups, obj, "ManagedPrefixLists", label)?;
    for m in managed {
        lists.insert(m.prefix_list_id, m.entries);
    }
    for (id, src) in &input.prefix_lists {
        let v = parse_json(src)?;
        let what = "the output of `aws ec2 get-managed-prefix-list-entries`";
        top_object(src, &v, &["Entries", "NextToken"], what)?;
        let e: PrefixListEntries =
            serde_json::from_value(v).map_err(|e| anyhow!("{}: {e}", src.name))?;
        lists.insert(id.clone(), e.entries);
    }
    for g in groups {
        for r in &g.rules {
            if let AwsPeer::PrefixList(id) = &r.peer
                && !lists.contains_key(id)
            {
                bail!(
                    "{}: group `{}` ({}) names prefix list {id}, whose entries are not given: \
                     add --prefix-list {id}=FILE with the output of `aws ec2 \
                     get-managed-prefix-list-entries --prefix-list-id {id}`",
                    input.groups.name,
                    g.aws_name,
                    g.group_id
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    for (id, entries) in lists {
        if let Err(m) = config::validate_group_name(&id) {
            bail!("prefix list ID `{id}`: {m}");
        }
        let mut cidrs: Vec<(IpNet, Option<String>)> = Vec::new();
        for e in entries {
            let (net, normalized) =
                config::parse_cidr(&e.cidr).map_err(|m| anyhow!("prefix list {id}: {m}"))?;
            if normalized {
                warnings.push(format!("prefix list {id}: normalized {} to {net}", e.cidr));
            }
            if !cidrs.iter().any(|(n, _)| *n == net) {
                cidrs.push((net, e.description.filter(|d| !d.is_empty())));
            }
        }
        out.insert(id, cidrs);
    }
    Ok(out)
}

/// The sg fields of a protocol and its ports.
pub(super) fn proto_fields(proto: Proto, ports: &PortMatch) -> Vec<(&'static str, String)> {
    let mut f = vec![("proto", quote(&proto.to_string()))];
    match *ports {
        PortMatch::All if proto.has_ports() => f.push(("ports", quote("all"))),
        PortMatch::Range { .. } => f.push(("ports", quote(&ports.to_string()))),
        PortMatch::Icmp {
            icmp_type,
            icmp_code,
        } => {
            if let Some(t) = icmp_type {
                f.push(("icmp_type", t.to_string()));
            }
            if let Some(c) = icmp_code {
                f.push(("icmp_code", c.to_string()));
            }
        }
        PortMatch::All => {}
    }
    f
}

fn render_rule(r: &AwsRule, groups: &[ImportedGroup], names: &[String]) -> String {
    let mut f = proto_fields(r.proto, &r.ports);
    let peer = match &r.peer {
        AwsPeer::Cidr(c) => c.to_string(),
        AwsPeer::PrefixList(p) => format!("pl:{p}"),
        AwsPeer::Group(id) => {
            let i = groups
                .iter()
                .position(|g| &g.group_id == id)
                .expect("group references are checked before rendering");
            format!("sg:{}", names[i])
        }
    };
    f.push((if r.egress { "to" } else { "from" }, quote(&peer)));
    if let Some(d) = &r.description {
        f.push(("description", quote(d)));
    }
    if let Some(id) = &r.id {
        f.push(("id", quote(id)));
    }
    inline(&f)
}
