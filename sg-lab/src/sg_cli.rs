//! [`SgCli`]: the `sg` binary driven inside one lab namespace.

use std::path::PathBuf;
use std::process::Command;

use crate::{Host, unique_name};

/// The `sg` binary acting inside one lab namespace (`--netns`), with a
/// `--state-dir` of its own. Drop detaches whatever it attached.
pub struct SgCli {
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    pub netns: String,
}

impl SgCli {
    pub fn new(exe: PathBuf, host: &Host, tag: &str) -> SgCli {
        SgCli {
            exe,
            state_dir: PathBuf::from(format!("/sys/fs/bpf/{}", unique_name(tag))),
            netns: host.ns.clone(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--netns")
            .arg(&self.netns)
            .args(args);
        c
    }

    /// Runs `sg ARGS`; its stdout, or an error carrying its stderr.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cmd(args).output()?;
        if !out.status.success() {
            anyhow::bail!(
                "sg {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for SgCli {
    fn drop(&mut self) {
        let _ = self.cmd(&["detach", "--all"]).output();
    }
}
