//! What the end-to-end test binaries share: the real `sg` binary bound to a
//! state dir of its own and one namespace, and temp files removed on drop.
// Each test binary uses a subset of this module.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use sg::lab::{Host, unique_name};

/// The `sg` binary with its own `--state-dir`, acting inside one namespace
/// (`--netns`). Drop detaches everything it attached.
pub struct Sg {
    pub state_dir: PathBuf,
    pub netns: String,
}

impl Sg {
    pub fn new(host: &Host) -> Sg {
        Sg {
            state_dir: PathBuf::from(format!("/sys/fs/bpf/{}", unique_name("sgt"))),
            netns: host.ns.clone(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sg"));
        c.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--netns")
            .arg(&self.netns)
            .args(args)
            .env_remove("NO_COLOR");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("sg runs")
    }

    /// Runs `sg ARGS`, which must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sg {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    pub fn stats(&self) -> serde_json::Value {
        self.json(&["stats", "--json"])
    }
}

impl Drop for Sg {
    fn drop(&mut self) {
        let _ = self.run(&["detach", "--all"]);
    }
}

/// A file under the temp dir, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(ext: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("{}.{ext}", unique_name("sgtmp")));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
