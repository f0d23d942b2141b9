//! Failure injection, for tests only: `SG_FAILPOINT=map-write:N` makes the
//! Nth kernel or state write of this process fail (a policy map update or
//! delete, the runtime config, an interface switch, a state file save).
//! The all-or-nothing tests run a failing `sg apply`/`attach` for every N
//! and check that nothing changed. `SG_FAILPOINT=kill-at-write:N` instead
//! ends the process at once before the Nth write, as `kill -9` would
//! (nothing undone, no clean-up). Operators never set it.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use anyhow::{Result, bail};

const VAR: &str = "SG_FAILPOINT";
const PREFIX: &str = "map-write:";
const KILL_PREFIX: &str = "kill-at-write:";

static WRITES: AtomicU64 = AtomicU64::new(0);

/// The write to fail (or to die at: `true`).
fn target() -> Option<(u64, bool)> {
    static TARGET: OnceLock<Option<(u64, bool)>> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let value = std::env::var(VAR).ok()?;
        let n = |p: &str| value.strip_prefix(p).and_then(|n| n.parse().ok());
        let target = n(PREFIX)
            .map(|n| (n, false))
            .or_else(|| n(KILL_PREFIX).map(|n| (n, true)));
        if target.is_none() {
            eprintln!("warning: ignoring {VAR}={value:?}: expected {PREFIX}N or {KILL_PREFIX}N");
        }
        target
    })
}

/// Counts one write, `what`; fails it if it is the one `SG_FAILPOINT` names.
pub fn write(what: &str) -> Result<()> {
    let Some((n, kill)) = target() else {
        return Ok(());
    };
    let count = WRITES.fetch_add(1, Ordering::Relaxed) + 1;
    if count == n && kill {
        // SAFETY: _exit(2) ends the process; nothing runs after it.
        unsafe { libc::_exit(137) };
    }
    if count == n {
        bail!("injected failure ({VAR}={PREFIX}{n}) at {what}");
    }
    Ok(())
}
