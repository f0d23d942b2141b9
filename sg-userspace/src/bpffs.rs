//! Makes sure the state dir sits on a bpf filesystem, mounting one if needed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// Where bpffs is conventionally mounted.
const BPFFS_ROOT: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Creates `state_dir` on a bpffs. A state dir under /sys/fs/bpf gets bpffs
/// mounted at /sys/fs/bpf (sysfs itself refuses new directories); any other
/// state dir gets its own bpffs mount.
pub fn ensure_state_dir(state_dir: &Path) -> Result<()> {
    if is_bpffs(state_dir) {
        return Ok(());
    }
    let root = Path::new(BPFFS_ROOT);
    let mount_point: PathBuf = if state_dir.starts_with(root) {
        root.to_path_buf()
    } else {
        state_dir.to_path_buf()
    };
    if !is_bpffs(&mount_point) {
        fs::create_dir_all(&mount_point)
            .with_context(|| format!("cannot create {}", mount_point.display()))?;
        mount(
            Some("bpf"),
            &mount_point,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "cannot mount bpffs at {} (sg needs root, or CAP_SYS_ADMIN)",
                mount_point.display()
            )
        })?;
        tracing::info!(path = %mount_point.display(), "mounted bpffs");
    }
    fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
    Ok(())
}

/// Refuses to work on pins that would vanish when this process exits.
///
/// `ip netns exec` runs its command in a mount namespace of its own, and a
/// bpffs mounted there (by it, or by sg) dies with the last process in it:
/// an attach would report enforcement that is gone a moment later. So when
/// an ancestor process lives in another mount namespace, the state dir must
/// be a bpffs that the ancestor sees too (the same filesystem object), or
/// sg stops here and points to `--netns`, which keeps the host's mounts.
pub fn ensure_pins_outlive_process(state_dir: &Path) -> Result<()> {
    let Some(outer) = outer_mount_ns_ancestor() else {
        return Ok(());
    };
    let ours = fs::metadata(state_dir).ok().filter(|_| is_bpffs(state_dir));
    let outer_path = Path::new("/proc")
        .join(outer.to_string())
        .join("root")
        .join(state_dir.strip_prefix("/").unwrap_or(state_dir));
    let theirs = fs::metadata(&outer_path).ok();
    use std::os::unix::fs::MetadataExt as _;
    let shared = match (ours, theirs) {
        (Some(a), Some(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if shared {
        return Ok(());
    }
    let netns = crate::netns::current_name().unwrap_or_else(|| "NAME".to_string());
    anyhow::bail!(
        "sg runs in a private mount namespace (as under `ip netns exec`): pins under {} would \
         vanish when it exits, and nothing would be enforced. Run `sg --netns {netns} ...` \
         instead: it enters the network namespace and keeps the host's bpffs",
        state_dir.display()
    )
}

/// The nearest ancestor process in another mount namespace than this one,
/// if any can be seen (a container's processes see none above their own).
fn outer_mount_ns_ancestor() -> Option<u32> {
    let mount_ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let ours = mount_ns("self")?;
    let mut pid = parent_of("self")?;
    // Bounded: a process tree deeper than this is not a real one.
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        let theirs = mount_ns(&pid.to_string())?;
        if theirs != ours {
            return Some(pid);
        }
        pid = parent_of(&pid.to_string())?;
    }
    None
}

/// The parent PID from `/proc/PID/stat` (the field after the command name,
/// which may itself hold spaces and parentheses).
fn parent_of(pid: &str) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_self_is_this_process_parent() {
        let expected = std::os::unix::process::parent_id();
        assert_eq!(parent_of("self"), Some(expected));
    }
}
