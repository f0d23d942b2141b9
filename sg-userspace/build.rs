//! Builds the eBPF programs with the pinned nightly and bpf-linker, so that
//! `include_bytes_aligned!` in the loader can embed them.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Newer nightlies emit LLVM bitcode that bpf-linker (llvm-22) cannot read.
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-25";

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|p| p.name.as_str() == "sg-ebpf")
        .ok_or_else(|| anyhow!("sg-ebpf package not found"))?;
    let root_dir = ebpf_package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf_package.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf_package.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(EBPF_TOOLCHAIN))
}
