//! What the end-to-end test binaries share: the real `sg` binary bound to a
//! state dir of its own and one namespace, and temp files removed on drop.
// Each test binary uses a subset of this module.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use sg_lab::{Host, Lab, Link, SgCli, unique_name};

/// The `sg` binary built for these tests, as [`SgCli`], with answers a
/// test can assert on.
pub(crate) struct Sg(SgCli);

impl std::ops::Deref for Sg {
    type Target = SgCli;
    fn deref(&self) -> &SgCli {
        &self.0
    }
}

impl Sg {
    pub(crate) fn new(host: &Host) -> Sg {
        Sg(SgCli::new(
            PathBuf::from(env!("CARGO_BIN_EXE_sg")),
            host,
            "sgt",
        ))
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.0.cmd(args);
        c.env_remove("NO_COLOR");
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("sg runs")
    }

    /// Runs `sg ARGS`, which must succeed; returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sg {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    pub(crate) fn stats(&self) -> serde_json::Value {
        self.json(&["stats", "--json"])
    }
}

/// A file under the temp dir, removed on drop.
pub(crate) struct TempFile(PathBuf);

impl TempFile {
    pub(crate) fn new(ext: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("{}.{ext}", unique_name("sgtmp")));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    pub(crate) fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A client and a server joined by one link; sg goes on the server's end.
pub(crate) struct Pair {
    _lab: Lab,
    pub client: Host,
    pub server: Host,
    pub c: Link,
    pub s: Link,
}

pub(crate) fn pair() -> Pair {
    let mut lab = Lab::new();
    let client = lab.host("client");
    let server = lab.host("server");
    let (c, s) = lab.link(&client, &server, 1);
    Pair {
        _lab: lab,
        client,
        server,
        c,
        s,
    }
}
