//! The agent's report (`fleet.json` in the state dir's metadata dir), which
//! `sg status` shows: connected or not and since when, the policy revision
//! in force, members per group, the last refused revision.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::state::StateDir;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub host: String,
    pub etcd: Vec<String>,
    pub prefix: String,
    pub connected: bool,
    /// RFC 3339: since when connected, or disconnected.
    pub since: String,
    /// The agent's process, to tell a report from a stopped agent.
    pub pid: u32,
    /// Policy revision (etcd `mod_revision` of the policy) in force.
    pub revision: Option<i64>,
    /// etcd revision of the last membership change applied.
    pub applied_at: Option<i64>,
    /// Registered members per group, every host's.
    pub members: BTreeMap<String, usize>,
    pub lease: Option<i64>,
    /// The last policy revision refused, and why (SPEC 8.4).
    pub refused: Option<Refused>,
    /// The last error (etcd unreachable, an apply that failed).
    pub last_error: Option<String>,
    /// Warnings of the last apply (e.g. the policy blocks etcd).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub revision: i64,
    pub error: String,
}

/// The lease an agent keeps, so a restarted one takes it over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLease {
    pub id: i64,
    pub host: String,
    pub prefix: String,
}

fn path(dir: &StateDir, name: &str) -> PathBuf {
    dir.meta.join(name)
}

fn write_json<T: Serialize>(dir: &StateDir, name: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(&dir.meta)
        .with_context(|| format!("cannot create {}", dir.meta.display()))?;
    let tmp = path(dir, &format!("{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path(dir, name))?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(dir: &StateDir, name: &str) -> Option<T> {
    let bytes = std::fs::read(path(dir, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn save(dir: &StateDir, status: &FleetStatus) -> Result<()> {
    write_json(dir, "fleet.json", status)
}

/// The agent's last report, if an agent ever ran on this state dir.
pub fn load(dir: &StateDir) -> Option<FleetStatus> {
    read_json(dir, "fleet.json")
}

pub fn save_lease(dir: &StateDir, lease: &SavedLease) -> Result<()> {
    write_json(dir, "fleet-lease.json", lease)
}

pub fn load_lease(dir: &StateDir) -> Option<SavedLease> {
    read_json(dir, "fleet-lease.json")
}

/// Where the agent writes the config it composed (and applies from).
pub fn composed_config(dir: &StateDir) -> PathBuf {
    path(dir, "fleet-config.toml")
}

/// The candidate an agent checks before it replaces the composed config.
pub fn candidate_config(dir: &StateDir) -> PathBuf {
    path(dir, "fleet-candidate.toml")
}

/// Is the process that wrote `status` still running?
pub fn agent_alive(status: &FleetStatus) -> bool {
    status.pid != 0 && std::path::Path::new(&format!("/proc/{}", status.pid)).exists()
}

/// One line for `sg status`.
pub fn summary(s: &FleetStatus) -> String {
    let state = if !agent_alive(s) {
        format!("agent not running (last report: {})", connection(s))
    } else {
        connection(s)
    };
    let revision = s
        .revision
        .map_or("none".to_string(), |r| format!("revision {r}"));
    let mut out = format!("fleet: host {} {state}; policy {revision} in force", s.host);
    if !s.members.is_empty() {
        let members: Vec<String> = s.members.iter().map(|(g, n)| format!("{g}={n}")).collect();
        out.push_str(&format!("; members {}", members.join(" ")));
    }
    if let Some(r) = &s.refused {
        out.push_str(&format!(
            "\nfleet: refused policy revision {}: {}",
            r.revision, r.error
        ));
    }
    if let Some(e) = &s.last_error {
        out.push_str(&format!("\nfleet: last error: {e}"));
    }
    for w in &s.warnings {
        out.push_str(&format!("\nfleet: warning: {w}"));
    }
    out
}

fn connection(s: &FleetStatus) -> String {
    if s.connected {
        format!("connected to etcd since {}", s.since)
    } else {
        format!("fleet disconnected since {}", s.since)
    }
}

/// Now, RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
