//! What packaging needs from the binary (SPEC 10.4): the version naming the
//! embedded eBPF object's build, shell completions and man pages, all made
//! from the clap definitions so they never drift from `--help`.

use std::{io::Write, path::Path};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::Cli;

/// `sg --version`: the crate version, the first 12 hex digits of the
/// embedded object's sha256 and the eBPF toolchain (set by build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (eBPF object sha256:",
    env!("SG_EBPF_SHA256_SHORT"),
    ", built with ",
    env!("SG_EBPF_TOOLCHAIN"),
    ")"
);

/// The full sha256 of the embedded eBPF object, as build.rs computed it.
pub const EBPF_SHA256: &str = env!("SG_EBPF_SHA256");

/// Writes completions for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "sg", out);
}

/// Writes `sg.8` and one `sg-CMD.8` per visible subcommand (and nested
/// ones, `sg-conntrack-list.8`) into `dir`; returns the file names.
pub fn man_pages(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Built, so that subcommands carry their display names (sg-apply).
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(dir, &cmd, &mut written)?;
    Ok(written)
}

fn write_pages(dir: &Path, cmd: &clap::Command, written: &mut Vec<String>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let path = man
        .generate_to(dir)
        .with_context(|| format!("cannot write {}", dir.join(man.get_filename()).display()))?;
    written.push(man.get_filename());
    debug_assert!(path.starts_with(dir));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(dir, sub, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_embedded_object() {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(crate::EBPF_OBJ);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(EBPF_SHA256, hex);
        assert!(
            VERSION.contains(&format!("sha256:{}", &hex[..12])),
            "{VERSION}"
        );
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(VERSION.contains("nightly-"), "{VERSION}");
    }

    #[test]
    fn completions_cover_every_visible_command() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, &mut out);
        let text = String::from_utf8(out).unwrap();
        for cmd in ["attach", "apply", "confirm", "completions", "status"] {
            assert!(text.contains(cmd), "bash completions lack {cmd}");
        }
    }

    #[test]
    fn man_pages_one_per_command() {
        let dir = std::env::temp_dir().join(format!("sg-man-{}", std::process::id()));
        let files = man_pages(&dir).unwrap();
        let page = std::fs::read_to_string(dir.join("sg-apply.8")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for f in ["sg.8", "sg-attach.8", "sg-apply.8", "sg-conntrack-list.8"] {
            assert!(files.iter().any(|x| x == f), "{f} missing from {files:?}");
        }
        assert!(
            !files
                .iter()
                .any(|f| f.contains("confirm-watch") || f == "sg-man.8")
        );
        assert!(page.contains(".TH") && page.contains("confirm"), "{page}");
    }
}
