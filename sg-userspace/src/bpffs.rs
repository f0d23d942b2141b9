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
