//! The JSON the AWS CLI prints, as serde types: `describe-security-groups`,
//! `describe-security-group-rules`, `describe-network-acls` and
//! `get-managed-prefix-list-entries`. Fields that could change a rule's
//! meaning and that sg cannot express are left out of the types, so
//! `deny_unknown_fields` refuses them by name; fields that are only
//! metadata (tags, owners, VPCs, ARNs) are accepted and ignored.

use serde::{Deserialize, Serialize};

/// Metadata that is read and ignored.
type Ignored = Option<serde_json::Value>;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SecurityGroup {
    pub group_name: String,
    pub group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub ip_permissions: Vec<IpPermission>,
    #[serde(default)]
    pub ip_permissions_egress: Vec<IpPermission>,
    #[serde(default, skip_serializing)]
    pub owner_id: Ignored,
    #[serde(default, skip_serializing)]
    pub vpc_id: Ignored,
    #[serde(default, skip_serializing)]
    pub tags: Ignored,
    #[serde(default, skip_serializing)]
    pub security_group_arn: Ignored,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpPermission {
    pub ip_protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<i64>,
    #[serde(default)]
    pub ip_ranges: Vec<IpRange>,
    #[serde(default)]
    pub ipv6_ranges: Vec<Ipv6Range>,
    #[serde(default)]
    pub user_id_group_pairs: Vec<UserIdGroupPair>,
    #[serde(default)]
    pub prefix_list_ids: Vec<PrefixListId>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpRange {
    pub cidr_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Ipv6Range {
    pub cidr_ipv6: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A reference to another group. Cross-VPC peering fields
/// (`VpcPeeringConnectionId`, `PeeringStatus`) are not accepted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UserIdGroupPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub vpc_id: Ignored,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PrefixListId {
    pub prefix_list_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One entry of `describe-security-group-rules`: one peer, with its ID.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SecurityGroupRule {
    pub security_group_rule_id: String,
    pub group_id: String,
    pub is_egress: bool,
    pub ip_protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_list_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referenced_group_info: Option<ReferencedGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing)]
    pub group_owner_id: Ignored,
    #[serde(default, skip_serializing)]
    pub tags: Ignored,
    #[serde(default, skip_serializing)]
    pub security_group_rule_arn: Ignored,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReferencedGroup {
    pub group_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub vpc_id: Ignored,
}

/// `get-managed-prefix-list-entries` output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PrefixListEntries {
    pub entries: Vec<PrefixListEntry>,
    #[serde(default, skip_serializing)]
    pub next_token: Ignored,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PrefixListEntry {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A prefix list with its entries, as `sg export aws` writes them beside
/// the groups (`ManagedPrefixLists`, an sg addition) so that import finds
/// them without `--prefix-list`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ManagedPrefixList {
    pub prefix_list_id: String,
    pub entries: Vec<PrefixListEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NetworkAcl {
    pub network_acl_id: String,
    #[serde(default)]
    pub entries: Vec<NaclEntry>,
    #[serde(default)]
    pub is_default: Option<bool>,
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    #[serde(default)]
    pub associations: Ignored,
    #[serde(default)]
    pub vpc_id: Ignored,
    #[serde(default)]
    pub owner_id: Ignored,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NaclEntry {
    pub rule_number: i64,
    pub rule_action: String,
    pub egress: bool,
    pub protocol: String,
    #[serde(default)]
    pub cidr_block: Option<String>,
    #[serde(default)]
    pub ipv6_cidr_block: Option<String>,
    #[serde(default)]
    pub port_range: Option<PortRange>,
    #[serde(default)]
    pub icmp_type_code: Option<IcmpTypeCode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PortRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IcmpTypeCode {
    pub r#type: Option<i64>,
    pub code: Option<i64>,
}
