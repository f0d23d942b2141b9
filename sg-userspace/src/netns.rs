//! Network namespace handling: `--netns NAME` runs a command inside a named
//! namespace while keeping the host's mount namespace, so pins persist.

use std::{fs::File, os::fd::AsFd as _};

use anyhow::{Context as _, Result};
use nix::sched::{CloneFlags, setns};

/// Moves the calling thread into `/run/netns/NAME`. Call it before any other
/// thread starts: namespaces are per thread.
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).with_context(|| {
        format!("network namespace {name:?} not found ({path}); list them with `ip netns list`")
    })?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter network namespace {name:?}"))?;
    Ok(())
}

/// Identifies the current network namespace (its inode number).
pub fn current_id() -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata("/proc/self/ns/net").context("cannot read /proc/self/ns/net")?;
    Ok(meta.ino())
}
