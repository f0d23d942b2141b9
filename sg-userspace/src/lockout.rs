//! The SSH lockout warning (SPEC 10.3): before `sg apply` or `sg attach`
//! changes anything, would the new policy drop the SSH session running it?
//!
//! `SSH_CONNECTION` is "client_ip client_port server_ip server_port". The
//! interface holding server_ip is judged for a new ingress TCP connection
//! from client_ip to server_port (its replies are tracked, so that is the
//! whole question for new sessions), with the classification `sg explain`
//! runs, over the new config's compiled tables. The running session may
//! still survive a policy that refuses new ones: it does while it has a
//! tracked entry and `revoke_established` is off.

use std::net::IpAddr;

use anyhow::Result;
use sg_common::{Direction, PROTO_TCP};

use crate::{
    compile::{Attachment, Compiled, compile},
    config::Config,
    conntrack,
    explain::search::{CompiledTables, PolicyTables as _, classify},
    ifaces,
    state::StateDir,
};

/// The session of `SSH_CONNECTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SshSession {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
}

impl SshSession {
    /// Parses "client_ip client_port server_ip server_port"; `None` for
    /// anything else (a malformed variable is no reason to refuse).
    pub fn parse(text: &str) -> Option<SshSession> {
        let mut it = text.split_whitespace();
        let client = it.next()?.parse().ok()?;
        let client_port = it.next()?.parse().ok()?;
        // Scoped IPv6 (fe80::1%eth0): the zone is not part of the address.
        let server_text = it.next()?;
        let server = server_text.split('%').next()?.parse().ok()?;
        let server_port = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(SshSession {
            client,
            client_port,
            server,
            server_port,
        })
    }

    pub fn from_env() -> Option<SshSession> {
        SshSession::parse(&std::env::var("SSH_CONNECTION").ok()?)
    }
}

/// The warning for `session` if `config`, enforced on `interfaces` (name
/// and groups), would drop it; `None` when it is allowed or not on an
/// enforced interface. `confirm`: the change is already protected by
/// `--confirm`.
pub fn check(
    dir: &StateDir,
    session: &SshSession,
    config: &Config,
    interfaces: &[(String, Vec<String>)],
    confirm: bool,
) -> Result<Option<String>> {
    let mut attachments = Vec::new();
    let mut holder = None;
    for (name, groups) in interfaces {
        let addrs = ifaces::addresses(name)?;
        if addrs.contains(&session.server) {
            holder = Some(name.clone());
        }
        attachments.push(Attachment {
            iface: name.clone(),
            groups: groups.clone(),
            addrs,
        });
    }
    let Some(iface) = holder else {
        return Ok(None);
    };
    let compiled = compile(config, &attachments, 1)?;
    judge(dir, session, config, &compiled, &iface, confirm)
}

/// [`check`] over a compile the caller has already made of `config` for
/// every interface it enforces (`sg apply`'s own): no second compile.
pub fn check_compiled(
    dir: &StateDir,
    session: &SshSession,
    config: &Config,
    compiled: &Compiled,
    confirm: bool,
) -> Result<Option<String>> {
    for name in compiled.ifaces.keys() {
        if ifaces::addresses(name)?.contains(&session.server) {
            return judge(dir, session, config, compiled, name, confirm);
        }
    }
    Ok(None)
}

/// The warning for `session` on `iface`, the interface holding its server
/// address, under `compiled`.
fn judge(
    dir: &StateDir,
    session: &SshSession,
    config: &Config,
    compiled: &Compiled,
    iface: &str,
    confirm: bool,
) -> Result<Option<String>> {
    let tables = CompiledTables::new(compiled);
    let Some(policy) = tables.iface(0, iface)? else {
        return Ok(None);
    };
    let answer = classify(
        &tables,
        policy.ingress_policy,
        session.client,
        PROTO_TCP,
        session.server_port,
    )?;
    if answer.rule.is_some() {
        return Ok(None);
    }
    let tracked = conntrack::list(dir).unwrap_or_default().iter().any(|e| {
        e.proto == PROTO_TCP
            && e.iface == iface
            && e.direction == Direction::Ingress.as_str()
            && e.src == session.client
            && e.dst == session.server
            && e.src_port == Some(session.client_port)
            && e.dst_port == Some(session.server_port)
    });
    let this_one = if config.conntrack.revoke_established {
        "and, with revoke_established, cuts this session at its next packet"
    } else if tracked {
        "; this session survives while it stays tracked (no revoke_established), but a reconnect will fail"
    } else {
        "and this session has no tracked entry: its next packet is judged as new and dropped"
    };
    let advice = if confirm {
        "--confirm will roll it back unless `sg confirm` runs in time"
    } else {
        "use --confirm DURATION (e.g. --confirm 2m) so that it rolls back unless you run `sg confirm`"
    };
    Ok(Some(format!(
        "this policy drops new SSH connections from {} to {} port {} on {iface} (SSH_CONNECTION: no ingress tcp rule allows them) {this_one}; {advice}",
        session.client, session.server, session.server_port
    )))
}

/// Groups of the interfaces `apply` would enforce `config` on: the
/// attached ones, `[interfaces.NAME]` first, else their `--groups`.
pub fn interfaces_for_apply(dir: &StateDir, config: &Config) -> Result<Vec<(String, Vec<String>)>> {
    let Some(state) = dir.load()? else {
        return Ok(Vec::new());
    };
    Ok(state
        .interfaces
        .iter()
        .map(|(name, i)| {
            let groups = config
                .interfaces
                .get(name)
                .map_or_else(|| i.groups.clone(), |s| s.groups.clone());
            (name.clone(), groups)
        })
        .collect())
}

/// Prints the warning of [`check`] for the session running this command,
/// if any. Never fails the command: a check that cannot run says so.
pub fn warn(dir: &StateDir, config: &Config, interfaces: &[(String, Vec<String>)], confirm: bool) {
    let Some(session) = SshSession::from_env() else {
        return;
    };
    match check(dir, &session, config, interfaces, confirm) {
        Ok(Some(warning)) => eprintln!("warning: {warning}"),
        Ok(None) => {}
        Err(e) => eprintln!("warning: cannot check whether this SSH session stays allowed: {e:#}"),
    }
}

/// [`warn`] inside `sg apply`, over what the apply already holds (its
/// parsed config and its compile for every attached interface): over SSH,
/// an apply parses, loads and compiles once.
pub fn warn_compiled(dir: &StateDir, config: &Config, compiled: &Compiled, confirm: bool) {
    let Some(session) = SshSession::from_env() else {
        return;
    };
    match check_compiled(dir, &session, config, compiled, confirm) {
        Ok(Some(warning)) => eprintln!("warning: {warning}"),
        Ok(None) => {}
        Err(e) => eprintln!("warning: cannot check whether this SSH session stays allowed: {e:#}"),
    }
}

/// [`warn`] for `sg attach` of `iface` (with `--groups`), or of every
/// interface of the file (`--all`, `iface` None).
pub fn warn_for_attach(
    dir: &StateDir,
    path: &std::path::Path,
    iface: Option<&str>,
    groups: Option<&[String]>,
) {
    if SshSession::from_env().is_none() {
        return;
    }
    let Ok(loaded) = crate::config::load(path) else {
        return;
    };
    let config = &loaded.config;
    let mut ifaces = match interfaces_for_apply(dir, config) {
        Ok(ifaces) => ifaces,
        Err(e) => {
            eprintln!("warning: cannot check whether this SSH session stays allowed: {e:#}");
            return;
        }
    };
    let new: Vec<(String, Vec<String>)> = match iface {
        Some(name) => {
            let groups = groups
                .map(<[String]>::to_vec)
                .or_else(|| config.interfaces.get(name).map(|s| s.groups.clone()));
            groups.map(|g| (name.to_string(), g)).into_iter().collect()
        }
        None => config
            .interfaces
            .iter()
            .map(|(n, s)| (n.clone(), s.groups.clone()))
            .collect(),
    };
    for (name, groups) in new {
        ifaces.retain(|(n, _)| *n != name);
        ifaces.push((name, groups));
    }
    warn(dir, config, &ifaces, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_connection_parses() {
        let s = SshSession::parse("198.18.0.1 51234 198.18.0.2 22").unwrap();
        assert_eq!(s.client, "198.18.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((s.client_port, s.server_port), (51234, 22));
        let s = SshSession::parse("2001:db8::1 1 fe80::2%eth0 2222").unwrap();
        assert_eq!(s.server, "fe80::2".parse::<IpAddr>().unwrap());
        for bad in [
            "",
            "198.18.0.1 x 198.18.0.2 22",
            "a b c d",
            "1.2.3.4 1 5.6.7.8 22 x",
        ] {
            assert_eq!(SshSession::parse(bad), None, "{bad:?}");
        }
    }
}
