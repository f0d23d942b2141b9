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

/// Parses `--nacl IFACE=NACL` flags into interface -> NACL; each IFACE
/// must be one of the agent's `--iface` interfaces, once.
pub fn parse_nacls(
    flags: &[String],
    ifaces: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for flag in flags {
        let Some((iface, nacl)) = flag.split_once('=') else {
            bail!("invalid --nacl {flag:?}: expected IFACE=NACL, e.g. --nacl eth0=edge");
        };
        let nacl = nacl.trim();
        if nacl.is_empty() {
            bail!(
                "invalid --nacl {flag:?}: name a NACL of the fleet policy, e.g. --nacl {iface}=edge"
            );
        }
        crate::config::validate_group_name(nacl)
            .map_err(|e| anyhow::anyhow!("invalid --nacl {flag:?}: {e}"))?;
        if !ifaces.contains_key(iface) {
            bail!(
                "invalid --nacl {flag:?}: {iface} is not an --iface of this agent; give it \
                 --iface {iface}=GROUP too"
            );
        }
        if out.insert(iface.to_string(), nacl.to_string()).is_some() {
            bail!("--nacl {iface} is given twice: an interface has at most one NACL");
        }
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

    #[test]
    fn nacl_flags_name_an_iface_once() {
        let ifaces = super::parse_ifaces(&["eth0=app".into(), "eth1=db".into()]).unwrap();
        let m = super::parse_nacls(&["eth0=edge".into()], &ifaces).unwrap();
        assert_eq!(m["eth0"], "edge");
        assert!(!m.contains_key("eth1"));
        let err = |flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
            super::parse_nacls(&flags, &ifaces).unwrap_err().to_string()
        };
        assert!(err(&["eth0"]).contains("expected IFACE=NACL"));
        assert!(err(&["eth0="]).contains("name a NACL"));
        assert!(err(&["eth9=edge"]).contains("eth9 is not an --iface of this agent"));
        assert!(err(&["eth0=a", "eth0=b"]).contains("given twice"));
        assert!(err(&["eth0=a b"]).contains("invalid --nacl"));
    }
}
