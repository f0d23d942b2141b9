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

/// Does the network namespace with inode `id` still exist? Looks at the
/// named namespaces and at every process's. A namespace held only by a
/// bind mount elsewhere or an open file is not seen.
pub fn exists(id: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("ns/net"));
    named
        .chain(processes)
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == id))
}

/// The name (under /run/netns) of the current network namespace, if it has
/// one.
pub fn current_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let id = current_id().ok()?;
    std::fs::read_dir("/run/netns")
        .ok()?
        .flatten()
        .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == id))
        .map(|e| e.file_name().to_string_lossy().into_owned())
}
