//! Failure injection, for tests only: `SG_FAILPOINT=map-write:N` makes the
//! Nth kernel or state write of this process fail (a policy map update or
//! delete, the runtime config, an interface switch, a state file save).
//! The all-or-nothing tests run a failing `sg apply`/`attach` for every N
//! and check that nothing changed. Operators never set it.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

use anyhow::{Result, bail};

const VAR: &str = "SG_FAILPOINT";
const PREFIX: &str = "map-write:";

static WRITES: AtomicU64 = AtomicU64::new(0);

fn target() -> Option<u64> {
    static TARGET: OnceLock<Option<u64>> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let value = std::env::var(VAR).ok()?;
        let n = value.strip_prefix(PREFIX).and_then(|n| n.parse().ok());
        if n.is_none() {
            eprintln!("warning: ignoring {VAR}={value:?}: expected {PREFIX}N");
        }
        n
    })
}

/// Counts one write, `what`; fails it if it is the one `SG_FAILPOINT` names.
pub fn write(what: &str) -> Result<()> {
    let Some(n) = target() else {
        return Ok(());
    };
    let count = WRITES.fetch_add(1, Ordering::Relaxed) + 1;
    if count == n {
        bail!("injected failure ({VAR}={PREFIX}{n}) at {what}");
    }
    Ok(())
}
