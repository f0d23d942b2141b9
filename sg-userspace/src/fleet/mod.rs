//! Fleet mode (SPEC 8): the policy and every group's members live in etcd,
//! and each host runs `sg agent`.
//!
//! One job per module: `keys` (the key layout), `store` (the etcd
//! connection, TLS, auth), `commands` (`sg fleet push|show|leave`), `agent`
//! (the agent loop), `view` (what the fleet holds, composed with this
//! host's interfaces into a config), `addrs` (this host's addresses from
//! rtnetlink), `reach` (does the policy block etcd?), `status_file` (the
//! agent's report that `sg status` reads).

pub mod addrs;
pub mod agent;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod keys;
pub mod reach;
pub mod status_file;
pub mod store;
pub mod view;

use std::collections::BTreeMap;

use anyhow::{Result, bail};

/// Parses `--iface IFACE=GROUP[,GROUP...]` flags into interface -> groups.
pub fn parse_ifaces(flags: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for flag in flags {
        let Some((iface, groups)) = flag.split_once('=') else {
            bail!(
                "invalid --iface {flag:?}: expected IFACE=GROUP[,GROUP...], e.g. --iface eth0=app"
            );
        };
        crate::config::validate_iface_name(iface)
            .map_err(|e| anyhow::anyhow!("invalid --iface {flag:?}: {e}"))?;
        let groups: Vec<String> = groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        if groups.is_empty() {
            bail!("invalid --iface {flag:?}: name at least one group, e.g. --iface {iface}=app");
        }
        if out.contains_key(iface) {
            bail!("--iface {iface} is given twice; list its groups once: --iface {iface}=a,b");
        }
        out.insert(iface.to_string(), groups);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iface_flags_parse_or_say_why() {
        let m = super::parse_ifaces(&["eth0=app,web".into(), "eth1=db".into()]).unwrap();
        assert_eq!(m["eth0"], ["app", "web"]);
        assert_eq!(m["eth1"], ["db"]);
        let e = super::parse_ifaces(&["eth0".into()]).unwrap_err();
        assert!(e.to_string().contains("IFACE=GROUP"), "{e}");
        assert!(super::parse_ifaces(&["eth0=".into()]).is_err());
        assert!(super::parse_ifaces(&["eth0=a".into(), "eth0=b".into()]).is_err());
    }
}
