//! Commit confirmed (SPEC 10.3): `sg apply --confirm DUR` and `sg confirm`.
//!
//! The rollback must not depend on the `sg` that applied staying alive (an
//! operator who locked themselves out loses that session). So, before the
//! new policy goes in, `apply --confirm` saves the policy in force (a copy
//! of its config, `confirm-previous.toml`) and a pending record
//! (`confirm.json`: deadline, token) in the metadata dir, and starts a
//! detached process (`sg confirm-watch`, its own session) that applies the
//! saved config through the normal apply path at the deadline.
//!
//! Whoever renames `confirm.json` first wins: `sg confirm` (the policy
//! stays) or the watcher (it rolls back). A rename is atomic, so exactly one
//! of them acts. The watcher also ends as soon as the record is gone or
//! names another token (confirmed, detached, or superseded).
//!
//! While a confirmation is pending, another `sg apply` is refused: it would
//! be undone by the rollback, or move the rollback point. Confirm first.
//! A reboot clears enforcement and the pending record alike (both live
//! until reboot), and `sg-apply.service` then applies /etc/sg/sg.toml.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    enforcer::{self, ApplyReport},
    state::StateDir,
};

/// A pending `sg apply --confirm`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    /// Names this confirmation; the watcher serves only its own.
    pub token: String,
    /// The config applied, waiting for `sg confirm`.
    pub config: PathBuf,
    /// The copy of the config in force before, which the rollback applies.
    pub rollback_config: PathBuf,
    /// Where the config in force before came from.
    pub previous_config: Option<PathBuf>,
    /// Milliseconds since the Unix epoch.
    pub applied_at_ms: u64,
    pub deadline_ms: u64,
    /// The detached rollback process.
    pub watcher_pid: Option<u32>,
}

impl Pending {
    pub fn deadline_rfc3339(&self) -> String {
        rfc3339(self.deadline_ms)
    }

    /// Time left before the rollback (zero once due).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(now_ms()))
    }
}

fn pending_file(dir: &StateDir) -> PathBuf {
    dir.meta.join("confirm.json")
}

fn rollback_copy(dir: &StateDir) -> PathBuf {
    dir.meta.join("confirm-previous.toml")
}

/// The copy of the config last attached or applied (the policy in force),
/// kept so a rollback finds it even after its file was edited in place.
fn in_force_copy(dir: &StateDir) -> PathBuf {
    dir.meta.join("in-force.toml")
}

/// Where the watcher's messages go.
pub fn log_file(dir: &StateDir) -> PathBuf {
    dir.meta.join("confirm.log")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{ms} ms after the epoch"))
}

/// Records `path` as the config in force (after a successful attach or
/// apply). A failure only warns: it costs a later `--confirm` its
/// snapshot, not the apply that already succeeded.
pub fn record_in_force(dir: &StateDir, path: &Path) {
    let copy = in_force_copy(dir);
    let tmp = copy.with_extension("toml.tmp");
    if let Err(e) = fs::copy(path, &tmp).and_then(|_| fs::rename(&tmp, &copy)) {
        eprintln!(
            "warning: cannot keep a copy of {} in {}: {e}",
            path.display(),
            dir.meta.display()
        );
    }
}

/// The config in force, as a TOML file: the copy kept at the last attach
/// or apply, else the file it came from.
pub fn config_in_force(dir: &StateDir) -> Result<Option<PathBuf>> {
    let copy = in_force_copy(dir);
    if copy.exists() {
        return Ok(Some(copy));
    }
    Ok(dir.load()?.and_then(|s| s.config_path))
}

/// The pending confirmation, if any.
pub fn pending(dir: &StateDir) -> Result<Option<Pending>> {
    let path = pending_file(dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("corrupt {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_pending(dir: &StateDir, p: &Pending) -> Result<()> {
    let tmp = dir.meta.join("confirm.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(p)?)?;
    fs::rename(&tmp, pending_file(dir))?;
    Ok(())
}

/// Refuses an apply while a confirmation is pending (and sees to it that
/// its rollback still comes: [`revive_watcher`]).
pub fn refuse_if_pending(dir: &StateDir) -> Result<()> {
    revive_watcher(dir)?;
    if let Some(p) = pending(dir)? {
        bail!(
            "a confirmation is pending: {} rolls back to {} at {} unless confirmed; \
             run `sg confirm` (keep it) before applying again, or wait for the rollback",
            p.config.display(),
            p.previous_config
                .as_deref()
                .unwrap_or(&p.rollback_config)
                .display(),
            p.deadline_rfc3339()
        );
    }
    Ok(())
}

/// `sg apply -c FILE --confirm DUR`: saves the rollback point, starts the
/// detached watcher, then applies. If the apply fails nothing changed, and
/// the pending record is withdrawn.
pub fn apply_confirmed(
    dir: &StateDir,
    config_path: &Path,
    within: Duration,
) -> Result<(ApplyReport, Pending)> {
    refuse_if_pending(dir)?;
    let Some(previous) = config_in_force(dir)? else {
        bail!(
            "nothing is attached under {}; run `sg attach IFACE -c FILE` first",
            dir.pins.display()
        );
    };
    let previous_source = dir.load()?.and_then(|s| s.config_path);
    fs::create_dir_all(&dir.meta)?;
    let copy = rollback_copy(dir);
    fs::copy(&previous, &copy).with_context(|| {
        format!(
            "cannot save the policy in force ({}) for the rollback",
            previous.display()
        )
    })?;
    let now = now_ms();
    let mut pending = Pending {
        token: format!("{}-{now}", std::process::id()),
        config: std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf()),
        rollback_config: copy,
        previous_config: previous_source,
        applied_at_ms: now,
        deadline_ms: now + within.as_millis() as u64,
        watcher_pid: None,
    };
    // The record and the watcher come first: if this process dies during
    // the apply, the rollback still happens.
    write_pending(dir, &pending)?;
    match spawn_watcher(dir, &pending.token) {
        Ok(pid) => {
            pending.watcher_pid = Some(pid);
            write_pending(dir, &pending)?;
        }
        Err(e) => {
            let _ = fs::remove_file(pending_file(dir));
            return Err(e.context("cannot start the rollback process; nothing was applied"));
        }
    }
    match enforcer::apply_checked(dir, config_path, false, Some(true)) {
        Ok(report) => Ok((report, pending)),
        Err(e) => {
            // Nothing changed: the watcher sees the record gone and ends.
            let _ = fs::remove_file(pending_file(dir));
            Err(e)
        }
    }
}

/// Starts `sg confirm-watch` in a session of its own, outliving this
/// process and its terminal; it inherits our network and mount namespaces.
fn spawn_watcher(dir: &StateDir, token: &str) -> Result<u32> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("cannot find the sg binary")?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(dir))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--state-dir")
        .arg(&dir.pins)
        .args(["confirm-watch", "--token", token])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot spawn sg confirm-watch")?;
    Ok(child.id())
}

/// Is a watcher of `p` running? Any process running `sg confirm-watch`
/// for this very token will do (the pid recorded at apply time may have
/// been reused, or the watcher revived under another pid).
fn watcher_alive(p: &Pending) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|entry| {
        fs::read(entry.path().join("cmdline")).is_ok_and(|cmd| {
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            args.contains(&&b"confirm-watch"[..]) && args.contains(&p.token.as_bytes())
        })
    })
}

/// Starts the watcher of a pending confirmation again if it is gone (killed,
/// say): the rollback must still come, at once when its deadline has
/// passed. Run by `sg status` and `sg apply`. The pending record is left
/// as it is, so a `sg confirm` racing with this still wins. Returns the new
/// watcher's pid.
pub fn revive_watcher(dir: &StateDir) -> Result<Option<u32>> {
    let Some(p) = pending(dir)? else {
        return Ok(None);
    };
    if watcher_alive(&p) {
        return Ok(None);
    }
    let pid = spawn_watcher(dir, &p.token)?;
    eprintln!(
        "the rollback watcher of {} was gone: started it again (pid {pid}){}",
        p.config.display(),
        if p.remaining().is_zero() {
            "; its deadline has passed: it rolls back now"
        } else {
            ""
        }
    );
    Ok(Some(pid))
}

/// `sg confirm`: keeps the pending policy. Returns what was confirmed.
pub fn confirm(dir: &StateDir) -> Result<Pending> {
    let Some(p) = pending(dir)? else {
        bail!("{}", nothing_pending(dir));
    };
    let done = dir.meta.join("confirm.json.confirmed");
    match fs::rename(pending_file(dir), &done) {
        Ok(()) => {
            let _ = fs::remove_file(&done);
            Ok(p)
        }
        // The watcher claimed it first: the rollback is under way or done.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{}", nothing_pending(dir)),
        Err(e) => Err(e).context("cannot confirm"),
    }
}

fn nothing_pending(dir: &StateDir) -> String {
    let last = fs::read_to_string(log_file(dir))
        .ok()
        .and_then(|log| log.lines().last().map(str::to_string));
    match last {
        Some(line) => format!("no confirmation is pending; last: {line}"),
        None => "no confirmation is pending".to_string(),
    }
}

/// `sg confirm-watch`: waits for the deadline of confirmation `token`, then
/// rolls back unless it was confirmed (or withdrawn) first.
pub fn watch(dir: &StateDir, token: &str) -> Result<()> {
    loop {
        let Some(p) = pending(dir)? else {
            return Ok(());
        };
        if p.token != token {
            return Ok(());
        }
        let left = p.remaining();
        if left.is_zero() {
            return roll_back(dir, &p);
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

fn roll_back(dir: &StateDir, p: &Pending) -> Result<()> {
    let claimed = dir.meta.join("confirm.json.rollback");
    match fs::rename(pending_file(dir), &claimed) {
        Ok(()) => {}
        // `sg confirm` won the race.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("cannot claim the rollback"),
    }
    let stamp = rfc3339(now_ms());
    let result = enforcer::apply(dir, &p.rollback_config, false);
    let _ = fs::remove_file(&claimed);
    match result {
        Ok(report) => {
            println!(
                "{stamp}: not confirmed by {}: rolled back from {} to the policy in force before ({}); {} rules in force",
                p.deadline_rfc3339(),
                p.config.display(),
                p.previous_config
                    .as_deref()
                    .unwrap_or(&p.rollback_config)
                    .display(),
                report.rule_count
            );
            Ok(())
        }
        Err(e) => {
            println!("{stamp}: rollback of {} failed: {e:#}", p.config.display());
            Err(e)
        }
    }
}

/// For `sg status`: the pending confirmation as JSON (null when none).
pub fn status_json(dir: &StateDir) -> Result<serde_json::Value> {
    Ok(match pending(dir)? {
        Some(p) => serde_json::json!({
            "config": p.config,
            "previous_config": p.previous_config,
            "deadline": p.deadline_rfc3339(),
            "seconds_left": p.remaining().as_secs_f64(),
            "watcher_pid": p.watcher_pid,
        }),
        None => serde_json::Value::Null,
    })
}

/// For `sg status`: one line on the pending confirmation, if any.
pub fn status_line(dir: &StateDir) -> Result<Option<String>> {
    Ok(pending(dir)?.map(|p| {
        format!(
            "pending confirmation: {} rolls back at {} ({}s left) unless `sg confirm`",
            p.config.display(),
            p.deadline_rfc3339(),
            p.remaining().as_secs()
        )
    }))
}
