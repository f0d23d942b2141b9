//! The key layout of a fleet under its prefix (SPEC 8):
//!
//! - `PREFIX/policy`: the pushed policy, TOML text as the operator wrote it;
//!   its etcd `mod_revision` is the policy revision;
//! - `PREFIX/hosts/HOST`: the host's agent (JSON [`HostRecord`]), on its lease;
//! - `PREFIX/members/GROUP/HOST`: the host's addresses in GROUP (a JSON
//!   list), on the same lease, so a dead agent's members go with it.
//!
//! One watch on `PREFIX/` sees every change in order.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The default prefix.
pub const DEFAULT_PREFIX: &str = "/sg";

/// A checked prefix: starts with `/`, no trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn new(text: &str) -> Result<Prefix> {
        let trimmed = text.trim_end_matches('/');
        if !trimmed.starts_with('/') || trimmed.len() < 2 {
            bail!("invalid --prefix {text:?}: expected a path such as /sg");
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("invalid --prefix {text:?}: no spaces or control characters");
        }
        Ok(Prefix(trimmed.to_string()))
    }

    /// Everything of the fleet: `PREFIX/`.
    pub fn all(&self) -> String {
        format!("{}/", self.0)
    }

    pub fn policy(&self) -> String {
        format!("{}/policy", self.0)
    }

    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.0)
    }

    pub fn host(&self, host: &str) -> String {
        format!("{}/hosts/{host}", self.0)
    }

    pub fn members(&self) -> String {
        format!("{}/members/", self.0)
    }

    pub fn member(&self, group: &str, host: &str) -> String {
        format!("{}/members/{group}/{host}", self.0)
    }

    /// What a key under the prefix is.
    pub fn parse(&self, key: &[u8]) -> Key {
        let Ok(key) = std::str::from_utf8(key) else {
            return Key::Other;
        };
        let Some(rest) = key.strip_prefix(&self.all()) else {
            return Key::Other;
        };
        if rest == "policy" {
            return Key::Policy;
        }
        if let Some(host) = rest.strip_prefix("hosts/")
            && !host.is_empty()
            && !host.contains('/')
        {
            return Key::Host(host.to_string());
        }
        if let Some(rest) = rest.strip_prefix("members/")
            && let Some((group, host)) = rest.split_once('/')
            && !group.is_empty()
            && !host.is_empty()
            && !host.contains('/')
        {
            return Key::Member {
                group: group.to_string(),
                host: host.to_string(),
            };
        }
        Key::Other
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Policy,
    Host(String),
    Member { group: String, host: String },
    Other,
}

/// Host names are key segments: letters, digits, `.`, `_`, `-`.
pub fn check_host(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 253
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        bail!(
            "invalid host name {name:?}: use letters, digits, '.', '_' and '-' (at most 253), e.g. --host db-1"
        );
    }
    Ok(())
}

/// `PREFIX/hosts/HOST`: what the agent of HOST enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Interface -> its groups.
    pub ifaces: BTreeMap<String, Vec<String>>,
    /// The lease the host's keys live on.
    #[serde(default)]
    pub lease: i64,
}

/// `PREFIX/members/GROUP/HOST`.
pub type MemberRecord = Vec<IpAddr>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let p = Prefix::new("/sg/").unwrap();
        assert_eq!(p.policy(), "/sg/policy");
        assert_eq!(p.parse(p.policy().as_bytes()), Key::Policy);
        assert_eq!(p.parse(p.host("db-1").as_bytes()), Key::Host("db-1".into()));
        assert_eq!(
            p.parse(p.member("app", "h1").as_bytes()),
            Key::Member {
                group: "app".into(),
                host: "h1".into()
            }
        );
        assert_eq!(p.parse(b"/sg/members/app"), Key::Other);
        assert_eq!(p.parse(b"/sgx/policy"), Key::Other);
        assert!(Prefix::new("sg").is_err());
        assert!(check_host("db/1").is_err());
        assert!(check_host("db-1.example").is_ok());
    }
}
